"""Faults with real processes: disk full (a file-size limit), Ctrl-C, a killed convert and its rerun, two
writers, read-only writes.

Each runs ``python -m pyrawan convert tiny`` (a few seconds); marked slow (multi-process).
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
    proc = start("-o", "out", cwd=tmp_path)
    _wait_for_temp(proc, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "out").exists()
    assert ".out.lock" in leftovers(tmp_path) and any(".out.tmp-" in n for n in leftovers(tmp_path))
    rc, text = finish(start("-o", "out", cwd=tmp_path))
    assert rc == 0, text
    assert "the unfinished output of a run that was killed" in text and "took it over" in text
    assert leftovers(tmp_path) == [] and verify(tmp_path / "out") == []


def _wait_for_temp(proc: subprocess.Popen, folder: Path) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not any(".out.tmp-" in n for n in leftovers(folder)):
        time.sleep(0.05)


def test_ctrl_c_exits_130_saying_what_is_kept_and_leaves_nothing(tmp_path):
    proc = start("-o", "out", cwd=tmp_path)
    _wait_for_temp(proc, tmp_path)
    proc.send_signal(signal.SIGINT)
    rc, text = finish(proc)
    assert rc == 130 and "interrupted: convert: nothing was published" in text and "Traceback" not in text, text
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_two_writers_to_one_output_one_loses_cleanly(tmp_path):
    first, second = start("-o", "out", cwd=tmp_path), start("-o", "out", cwd=tmp_path)
    results = sorted([finish(first), finish(second)])
    (rc_ok, _), (rc_lost, lost) = results
    assert (rc_ok, rc_lost) == (0, 2), results
    assert "another pyrawan run" in lost or "already exists" in lost, lost
    assert "Traceback" not in lost
    assert verify(tmp_path / "out") == [] and leftovers(tmp_path) == []
    assert fsutil.read_claim(tmp_path / "out") is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; see test_hardening for the "
                    "in-process check of an unwritable output")
def test_read_only_output_folder_is_refused_before_loading(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        rc, text = finish(start("-o", str(locked / "out"), cwd=tmp_path))
    finally:
        locked.chmod(0o755)
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
