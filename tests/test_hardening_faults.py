"""Faults with real processes: disk full (a file-size limit), Ctrl-C, a killed convert and its rerun, two
writers, read-only writes.

Each runs ``python -m pyrawan convert tiny`` (a few seconds); the kill and Ctrl-C tests hold it just
before it publishes, so the signal always lands mid-run. Marked slow (multi-process).
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyrawan import fsutil
from pyrawan.manifest import MANIFEST, verify

pytestmark = pytest.mark.slow

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "PYTHONUNBUFFERED": "1"}
CONVERT = [sys.executable, "-m", "pyrawan", "convert", "tiny"]


def start(*args: str, cwd: Path, limit_bytes: int | None = None) -> subprocess.Popen:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return subprocess.Popen([*CONVERT, *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=limit if limit_bytes else None)


# The convert, held just before it publishes (``outputs._swap_in``) until a signal ends it: a fast machine
# could otherwise finish the run between the test seeing its temporary folder and sending the signal.
# Ctrl-C is made deliverable as from a terminal: Python's own handler and SIGINT unblocked, since a test
# worker may hand its children SIGINT ignored or blocked (one full-suite run did: the convert ran to the
# end). The marker records the signal masks the child started with.
HELD = ("import os, pathlib, signal, sys, time\n"
        "masks = [l for l in open('/proc/self/status') if l.startswith(('SigBlk', 'SigIgn'))]\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})\n"
        "import pyrawan.outputs as outputs\n"
        "real = outputs._swap_in\n"
        "def held(tmp, out):\n"
        "    pathlib.Path(os.environ['PYRAWAN_TEST_HELD']).write_text(''.join(masks))\n"
        "    time.sleep(240)\n"
        "    real(tmp, out)\n"
        "outputs._swap_in = held\n"
        "from pyrawan.cli import main\n"
        "main()\n")


def start_held(*args: str, cwd: Path, marker: Path) -> subprocess.Popen:
    """``convert tiny`` that stops before publishing; returns once it is there (``marker`` exists)."""
    proc = subprocess.Popen([sys.executable, "-c", HELD, "convert", "tiny", *args], cwd=cwd,
                            env={**ENV, "PYRAWAN_TEST_HELD": str(marker)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not marker.exists():
        time.sleep(0.05)
    assert marker.exists(), f"the convert ended before publishing: {finish(proc)}"
    return proc


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, " ".join((out + err).split())


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_disk_full_is_a_clear_exit_and_publishes_nothing(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: the transformer's safetensors write fails part-way."""
    rc, text = finish(start("-o", "out", cwd=tmp_path, limit_bytes=64 * 1024))
    assert rc == 1, text
    assert "cannot write" in text and "file-size limit" in text and "Traceback" not in text
    assert "unexpected" not in text
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_a_killed_convert_leaves_no_output_and_the_rerun_cleans_up(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = start_held("-o", "out", cwd=work, marker=tmp_path / "held")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (work / "out").exists()
    assert ".out.lock" in leftovers(work) and any(".out.tmp-" in n for n in leftovers(work))
    rc, text = finish(start("-o", "out", cwd=work))
    assert rc == 0, text
    assert "the unfinished output of a run that was killed" in text and "took it over" in text
    assert leftovers(work) == [] and verify(work / "out") == []


def test_ctrl_c_exits_130_saying_what_is_kept_and_leaves_nothing(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = start_held("-o", "out", cwd=work, marker=tmp_path / "held")
    proc.send_signal(signal.SIGINT)
    rc, text = finish(proc)
    masks = (tmp_path / "held").read_text()
    assert rc == 130 and "interrupted: convert: nothing was published" in text and "Traceback" not in text, (text, masks)
    assert not (work / "out").exists() and leftovers(work) == []


def test_two_writers_to_one_output_one_loses_cleanly(tmp_path):
    first, second = start("-o", "out", cwd=tmp_path), start("-o", "out", cwd=tmp_path)
    results = sorted([finish(first), finish(second)])
    (rc_ok, _), (rc_lost, lost) = results
    assert (rc_ok, rc_lost) == (0, 2), results
    assert "another pyrawan run" in lost or "already exists" in lost, lost
    assert "Traceback" not in lost
    assert verify(tmp_path / "out") == [] and leftovers(tmp_path) == []
    assert fsutil.read_claim(tmp_path / "out") is None


MOUNT_RO = 'mount --bind -o ro "$1" "$1" || exit 97; shift; exec "$@"'     # in a private mount namespace


@pytest.mark.parametrize("how", ["permissions", "immutable", "read-only mount"])
def test_read_only_output_folder_is_refused_before_loading(tmp_path, how):
    """A folder nobody may write into, root included (CI runs as root, which ignores permission bits):
    mode 0555 (as a normal user), the immutable attribute (``chattr +i``: CAP_LINUX_IMMUTABLE and ext4, xfs
    or btrfs; run in process, it is quick), or a read-only bind mount in a user + mount namespace (``unshare``:
    user namespaces allowed; a real process). Where none works, test_hardening's in-process check still
    refuses an unwritable output."""
    from typer.testing import CliRunner

    from pyrawan.cli import app

    locked = tmp_path / "locked"
    locked.mkdir()
    argv, undo = ["convert", "tiny", "-o", str(locked / "out")], None
    if how == "permissions":
        if os.geteuid() == 0:
            pytest.skip("root ignores permission bits; the immutable and read-only mount cases run instead")
        locked.chmod(0o555)
        undo = ["chmod", "755", str(locked)]
    elif how == "immutable":
        made = subprocess.run(["chattr", "+i", str(locked)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"chattr +i is refused here ({made.stderr.strip()}): it needs CAP_LINUX_IMMUTABLE and a file "
                        "system with the immutable attribute")
        undo = ["chattr", "-i", str(locked)]
    try:
        if how == "read-only mount":
            mount = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", MOUNT_RO, "sh", str(locked)]
            proc = subprocess.run([*mount, sys.executable, "-m", "pyrawan", *argv], cwd=tmp_path, env=ENV,
                                  capture_output=True, text=True, timeout=300)
            rc, text = proc.returncode, proc.stdout + proc.stderr
        else:
            result = CliRunner().invoke(app, argv)
            rc, text = result.exit_code, result.output
    finally:
        if undo:
            subprocess.run(undo, check=True)
    text = " ".join(text.split())
    if how == "read-only mount" and rc in (1, 97) and "pyrawan" not in text:
        pytest.skip(f"no read-only bind mount in a user namespace here: {text[:200]}")
    assert rc == 2 and "read-only or not writable" in text and "loading" not in text, text
    assert not (locked / "out").exists()


def test_read_only_mount_during_the_write_is_a_clear_exit(tmp_path):
    """EROFS raised by the write itself (as on a read-only mount), injected with sitecustomize."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import errno, safetensors.torch as st\n"
        "def refuse(*a, **k):\n"
        "    raise OSError(errno.EROFS, 'Read-only file system', a[1] if len(a) > 1 else None)\n"
        "st.save_file = refuse\n")
    proc = subprocess.run([*CONVERT, "-o", "out"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**ENV, "PYTHONPATH": str(hook)})
    text = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1 and "read-only" in text and "Traceback" not in text, text
    assert not (tmp_path / "out").exists() and not (tmp_path / "out" / MANIFEST).exists()
    assert [n for n in leftovers(tmp_path) if n != "hook"] == []
