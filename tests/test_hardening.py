"""Output safety, clear exits and integrity limits (issue: nothing lost, nothing half-done). All in-process, fast."""
from __future__ import annotations

import errno
import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyrawan import fsutil
from pyrawan import manifest as mf
from pyrawan import outputs
from pyrawan.cli import app
from pyrawan.errors import InputError, RunError, io_fault_message
from test_manifest import make_artifact


def cli(*args, code: int):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---- where an output may go ----------------------------------------------------------------------

def test_output_refuses_dot_cwd_parent_and_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    for out, words in ((".", "working folder"), (tmp_path.parent, "working folder"), ("afile", "is a file")):
        with pytest.raises(InputError, match=words):
            outputs.check_output(Path(out), overwrite=True)
    assert not list(tmp_path.glob(".*lock"))


def test_output_refuses_an_input_even_with_overwrite(tmp_path):
    art = make_artifact(tmp_path / "cal")
    with pytest.raises(InputError, match="is \\(or holds\\) an input"):
        outputs.check_output(art, overwrite=True, inputs=[art])
    with pytest.raises(InputError, match="is \\(or holds\\) an input"):
        outputs.check_output(tmp_path, overwrite=True, inputs=["tiny", art])     # a folder holding the input
    with pytest.raises(InputError, match="inside the input artifact"):
        outputs.check_output(art / "sub", overwrite=True, inputs=[art])
    assert mf.verify(art) == []


def test_overwrite_needs_an_artifact_of_the_same_kind_with_only_listed_files(tmp_path):
    art = make_artifact(tmp_path / "a")
    kind = mf.read_manifest(art)["kind"]
    with pytest.raises(InputError, match="artifact and this command writes 'finetune'"):
        outputs.check_output(art, overwrite=True, kind="finetune" if kind != "finetune" else "convert")
    (art / "notes.txt").write_text("my notes")
    (art / "more.txt").write_text("more")
    with pytest.raises(InputError, match=r"2 file\(s\) that its manifest.json does not list \(more.txt, notes.txt\)"):
        outputs.check_output(art, overwrite=True)
    outputs.check_output(art, overwrite=True, force=True, claim_it=False)
    outputs.check_output(art / "new", overwrite=False, claim_it=False)     # a new folder inside: fine, no input


def test_unwritable_output_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(fsutil.os, "access", lambda path, mode: False)
    with pytest.raises(InputError, match="read-only or not writable"):
        outputs.check_output(tmp_path / "out", overwrite=False)


def test_demo_folder_never_replaces_a_folder_it_did_not_write(tmp_path):
    """The demo once deleted any folder with a data/ subfolder; now only its own marked folder."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "README.md").write_text("mine")
    with pytest.raises(InputError, match="was not written by `pyrawan demo`"):
        outputs.fresh_folder(project, "demo")
    assert (project / "README.md").read_text() == "mine" and (project / "data").is_dir()
    demo = outputs.fresh_folder(tmp_path / "demo", "demo")
    (demo / "results.json").write_text("{}")
    outputs.fresh_folder(demo, "demo")                                        # its own folder: replaced
    assert not (demo / "results.json").exists() and (demo / outputs.FOLDER_MARKER).is_file()
    with pytest.raises(InputError, match="pass --overwrite"):
        (demo / "x").write_text("1")
        outputs.fresh_folder(demo, "demo", overwrite=False)
    outputs.release_claims()
    (demo / "notes.txt").write_text("mine")                   # a file the user added to a demo folder
    (demo / "samples-0-0").mkdir()
    with pytest.raises(InputError, match=r"also notes.txt, x, which `pyrawan demo` did not write"):
        outputs.fresh_folder(demo, "demo", own=("samples-*", "results.json"))
    assert (demo / "notes.txt").read_text() == "mine"
    outputs.release_claims()


# ---- claims and leftovers ------------------------------------------------------------------------

def test_a_live_claim_refuses_a_second_writer_and_a_dead_one_is_taken_over(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        fsutil.lock_path(out).write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename}))
        with pytest.raises(InputError, match=f"another pyrawan run \\(pid {holder.pid}"):
            with outputs.artifact_dir(out):
                pass
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    leftover = fsutil.temp_sibling(out, is_dir=True).with_name(f".out.tmp-{holder.pid}-0123abcd")
    leftover.mkdir()
    (leftover / "half.bin").write_bytes(b"\0" * 10)
    with outputs.artifact_dir(out) as tmp:                                    # the holder is gone: taken over
        mf.write_manifest(tmp, "test", None)
    assert not leftover.exists() and (out / mf.MANIFEST).is_file()
    assert not fsutil.lock_path(out).exists()


def test_claim_is_reentrant_in_one_process_and_released_with_created_parents(tmp_path):
    out = tmp_path / "new" / "deeper" / "out"
    outputs.check_output(out, overwrite=False, claim_it=True)
    assert fsutil.lock_path(out).is_file()
    outputs.check_output(out, overwrite=False, claim_it=True)                 # same process: fine
    outputs.release_claims()
    assert not (tmp_path / "new").exists()                                # nothing left behind


def test_a_folder_that_appears_meanwhile_is_not_replaced_and_the_result_is_kept(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RunError, match="changed while this run was working") as err:
        with outputs.artifact_dir(out) as tmp:
            mf.write_manifest(tmp, "test", None)
            out.mkdir()
            (out / "someone-elses.txt").write_text("keep me")
    assert (out / "someone-elses.txt").read_text() == "keep me"
    kept = tmp_path / "out-2"
    assert str(kept) in str(err.value) and (kept / mf.MANIFEST).is_file()


def test_stale_temps_only_match_their_own_target_and_dead_pids(tmp_path):
    pid = dead_pid()
    mine = tmp_path / f".model.tmp-{pid}-0123abcd.safetensors"
    other = tmp_path / f".model2.tmp-{pid}-0123abcd.safetensors"
    alive = tmp_path / f".model.tmp-{os.getpid()}-0123abcd.safetensors"
    for p in (mine, other, alive):
        p.write_bytes(b"x")
    assert fsutil.stale_temps(tmp_path / "model.safetensors") == [mine]


# ---- integrity -----------------------------------------------------------------------------------

def test_unlisted_files_inside_a_loaded_folder_fail_verification(tmp_path):
    art = make_artifact(tmp_path / "a")                                   # holds sub/config.json
    (art / "readme.txt").write_text("a note")
    assert mf.verify(art) == []                                           # beside the components: a warning
    (art / "sub" / "extra.safetensors").write_bytes(b"weights")
    assert any("sub/extra.safetensors" in p for p in mf.verify(art))
    with pytest.raises(InputError, match="does not verify"):
        mf.require_verified(art)
    out = cli("verify", art, code=1)
    assert "sub/extra.safetensors" in out


@pytest.mark.parametrize("inputs", ['"x"', '[1, 2]', '[{"kind": "convert"}]', '[{"path": 3}]'])
def test_lineage_of_a_malformed_manifest_is_a_clear_error(tmp_path, inputs):
    art = make_artifact(tmp_path / "a")
    data = json.loads((art / mf.MANIFEST).read_text())
    data["inputs"] = json.loads(inputs)
    (art / mf.MANIFEST).write_text(json.dumps(data))
    out = cli("lineage", art, code=2)
    assert "'inputs' must be a list" in out and str(art / mf.MANIFEST) in out


# ---- faults become sentences ---------------------------------------------------------------------

def test_io_faults_are_recognised_in_the_exception_chain():
    class SafetensorError(Exception):
        pass

    full = OSError(errno.ENOSPC, "No space left on device", "/x/model.safetensors")
    assert "no space left" in io_fault_message(full) and "/x/model.safetensors" in io_fault_message(full)
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(errno.EROFS, "Read-only file system")
    assert "read-only" in io_fault_message(wrapped)
    rust = SafetensorError('Error while serializing: IoError(Os { code: 27, kind: FileTooLarge, message: "x" })')
    assert "file-size limit" in io_fault_message(rust)
    assert "no space left" in io_fault_message(SafetensorError("I/O error: No space left on device (os error 28)"))
    assert io_fault_message(ValueError("unrelated")) is None
    assert io_fault_message(OSError(errno.ENOENT, "missing")) is None


def test_cli_turns_a_disk_full_write_into_exit_1_and_ctrl_c_into_130(tmp_path, monkeypatch):
    import pyrawan.cli as cli_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(cli_module.rc, "builtin_recipes", full)
    out = cli("recipe", "ls", code=1)
    assert "no space left" in out and "unexpected" not in out

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module.rc, "builtin_recipes", interrupted)
    out = cli("recipe", "ls", code=130)
    assert "interrupted" in out and "run the command again" in out


def test_interrupt_message_of_finetune_says_how_to_continue(tmp_path, monkeypatch):
    from pyrawan.commands import finetune

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune, "run", interrupted)
    out = cli("finetune", "tiny-finetune", "-o", tmp_path / "out", code=130)
    assert "interrupted: finetune" in out and "checkpoints" in out and "--resume" in out


# ---- models: what is loaded, and from where ------------------------------------------------------

def test_a_missing_local_looking_path_is_no_such_folder_not_a_hub_id(tmp_path, monkeypatch):
    from pyrawan.models.loading import load_components, looks_like_hub_id, missing_local

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert not looks_like_hub_id("runs/pyr") and looks_like_hub_id("hf://runs/pyr")
    assert looks_like_hub_id("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    assert "no such folder: runs/pyr" in missing_local("runs/pyr")
    assert missing_local("Wan-AI/Wan2.1-T2V-1.3B-Diffusers") is None
    with pytest.raises(InputError, match="no such folder: runs/pyr"):
        load_components("runs/pyr")


def test_weights_that_are_not_safetensors_are_refused_by_name(tmp_path, tiny_pipeline_dir):
    import shutil

    from pyrawan.models.loading import load_component

    folder = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline_dir, folder)
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(os.urandom(256))                                  # random bytes
    with pytest.raises(InputError, match="cannot load the vae from .*vae"):
        load_component("vae", folder, "vae", "cpu", __import__("torch").float32)
    weights.unlink()
    (folder / "vae" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(InputError, match="never loads pickled weights"):
        load_component("vae", folder, "vae", "cpu", __import__("torch").float32)


# ---- damaged checkpoints and caches --------------------------------------------------------------

def _checkpoint(root: Path, step: int) -> Path:
    import torch

    from pyrawan.train import checkpoint as ckpt

    write = lambda folder: ckpt.save_tensors(folder / "model.safetensors", {"w": torch.ones(3)})  # noqa: E731
    return ckpt.save(root, step, write, {"step": step, "consumed": step, "recipe": {}}, keep=5)


def _rehash(folder: Path) -> None:
    """Rewrite the marker so every file matches it again (damage that hashes cannot see)."""
    from pyrawan.fsutil import sha256_file
    from pyrawan.train.checkpoint import MARKER

    marker = json.loads((folder / MARKER).read_text())
    for rel in marker["files"]:
        marker["files"][rel] = {"sha256": sha256_file(folder / rel), "bytes": (folder / rel).stat().st_size}
    (folder / MARKER).write_text(json.dumps(marker))


@pytest.mark.parametrize("damage, words", [
    (lambda f: (f / "state.json").write_text("{not json"), "state.json is missing or is not valid JSON"),
    (lambda f: (f / "state.json").write_text('{"step": "ten"}'), "no valid 'step'"),
    (lambda f: (f / "rng-0.json").write_text("\x00\x01"), "rng-0.json is damaged"),
    (lambda f: (f / "model.safetensors").write_bytes(b"\xff" * 64), "model.safetensors is damaged"),
    (lambda f: (f / "checkpoint.json").write_text('{"format": "pyrawan.checkpoint/1", "files": {"a": 3}}'),
     "is malformed"),
])
def test_a_damaged_checkpoint_is_skipped_with_a_message(tmp_path, damage, words):
    from pyrawan.train import checkpoint as ckpt

    good = _checkpoint(tmp_path, 1)
    bad = _checkpoint(tmp_path, 2)
    damage(bad)
    if "malformed" not in words:
        _rehash(bad)
    messages = []
    assert ckpt.latest(tmp_path, report=messages.append) == good
    assert len(messages) == 1 and words in messages[0] and str(bad) in messages[0]


def test_the_latent_cache_checks_shard_hashes_on_open(tmp_path):
    from pyrawan.data.cache import INDEX, LatentCache

    folder = tmp_path / "cache"
    (folder / "shards").mkdir(parents=True)
    body = b"0123456789" * 10
    (folder / "shards" / "00000.safetensors").write_bytes(body)
    (folder / "records.jsonl").write_bytes(b"")
    index = {"format": "pyrawan.latent_cache/1", "complete": True, "records_sha256": __import__("hashlib").sha256(
        b"").hexdigest(), "shards": [{"file": "shards/00000.safetensors", "bytes": len(body),
                                      "sha256": __import__("hashlib").sha256(body).hexdigest()}]}
    (folder / INDEX).write_text(json.dumps(index))
    (folder / "shards" / "00000.safetensors").write_bytes(b"9123456789" + body[10:])   # same size, other values
    with pytest.raises(InputError, match="contents of shards/00000.safetensors changed"):
        LatentCache(folder)


def test_json_safe_replaces_every_non_finite_float_for_strict_json():
    json_safe = fsutil.json_safe
    value = {"a": math.nan, "b": [1.0, math.inf, (2, -math.inf)], "c": {"d": "nan", "e": 3}}
    assert json_safe(value) == {"a": None, "b": [1.0, None, [2, None]], "c": {"d": "nan", "e": 3}}
    assert json_safe(value, as_string=True)["b"] == [1.0, "inf", [2, "-inf"]]
    json.dumps(json_safe(value), allow_nan=False)                         # would raise on a NaN left in


# ---- outputs: written from mutation testing's survivors (docs/testing.md) ---------------------------

def test_home_root_and_broken_links_are_refused_with_a_suggested_name(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    with pytest.raises(InputError, match=r"-o/--out .*home is the working folder, one that holds it, or your home"):
        outputs.check_output(home, overwrite=True)
    with pytest.raises(InputError, match=r"\(e\.g\. -o runs/out\)\.$"):                 # the root has no name
        outputs.check_output(Path("/"), overwrite=True)
    with pytest.raises(InputError, match=r"\(e\.g\. -o runs/work\)\.$"):
        outputs.check_output(Path("."), overwrite=True)
    (work / "dangling").symlink_to(work / "nowhere")
    with pytest.raises(InputError, match="dangling is a broken symbolic link; remove it"):
        outputs.check_output(work / "dangling", overwrite=False)
    assert not list(work.glob(".*lock"))


def test_inputs_that_are_no_local_path_are_skipped_and_an_unrelated_output_is_fine(tmp_path, monkeypatch):
    art = make_artifact(tmp_path / "cal")
    monkeypatch.chdir(art)                                                # the working folder is an artifact
    assert outputs.place_problem(Path("out"), [None, "", "tiny", art.parent / "nope"]) is None
    assert outputs.place_problem(tmp_path / "elsewhere", ["tiny", art]) is None
    assert "lies inside the input artifact" in outputs.place_problem(Path("out"), [None, "tiny", art])


def test_the_kind_and_the_unlisted_files_are_named_in_the_refusal(tmp_path):
    art = make_artifact(tmp_path / "a", files={"w.bin": b"w"})
    with pytest.raises(InputError, match="output .* is a 'pyramid' artifact and this command writes 'convert' art"):
        outputs.check_output(art, overwrite=True, kind="convert")
    outputs.check_output(art, overwrite=True, kind="pyramid", claim_it=False)        # the same kind: fine
    names = [f"x{i}.txt" for i in range(9)]
    for name in names[:8]:
        (art / name).write_text("mine")
    shown = ", ".join(names[:8])
    with pytest.raises(InputError, match=rf"holds 8 file\(s\) that its manifest.json does not list \({shown}\); "):
        outputs.check_output(art, overwrite=True)
    assert "holds 8 file(s)" in outputs.replace_problem(art, overwrite=True)             # force is off by default
    (art / names[8]).write_text("mine")
    with pytest.raises(InputError, match=rf"holds 9 file\(s\) .* \({shown} and 1 more\); --overwrite"):
        outputs.check_output(art, overwrite=True)


def test_unlisted_files_of_a_manifest_without_a_list_of_outputs_are_all_files(tmp_path):
    art = make_artifact(tmp_path / "a", files={"w.bin": b"w", "sub/c.json": b"{}"})
    for outputs_value in (None, "w.bin", {"w.bin": 1}):
        assert outputs.unlisted_files(art, {"outputs": outputs_value}) == ["sub/c.json", "w.bin"]
    assert outputs.unlisted_files(art, {"outputs": [{"path": "w.bin"}, "sub/c.json"]}) == ["sub/c.json"]


def test_claims_follow_claim_it_and_by_default_the_rank(tmp_path, monkeypatch):
    out = tmp_path / "out"
    lock = fsutil.lock_path(out)
    for rank, claims in ((None, True), ("", True), ("0", True), ("1", False), ("3", False)):
        if rank is None:
            monkeypatch.delenv("RANK", raising=False)
        else:
            monkeypatch.setenv("RANK", rank)
        outputs.check_output(out, overwrite=False)
        assert lock.is_file() == claims, rank
        outputs.release_claims()
        assert not lock.exists()
    monkeypatch.setenv("RANK", "1")
    outputs.check_output(out, overwrite=False, claim_it=True)            # asked for: claimed on any rank
    assert lock.is_file()
    outputs.release_claims()
    monkeypatch.setenv("RANK", "0")
    outputs.check_output(out, overwrite=False, claim_it=False)           # not asked for: not even on rank 0
    assert not lock.exists()


def test_the_first_claim_registers_the_release_at_exit(tmp_path, monkeypatch):
    outputs.release_claims()
    registered = []
    monkeypatch.setattr(outputs.atexit, "register", registered.append)
    outputs.check_output(tmp_path / "a", overwrite=False, claim_it=True)
    assert registered == [outputs.release_claims]
    outputs.check_output(tmp_path / "b", overwrite=False, claim_it=True)
    assert registered == [outputs.release_claims]                        # once, not once per claim
    outputs.release_claims()


def test_a_live_claim_names_its_pid_host_and_lock(tmp_path):
    out = tmp_path / "out"
    host = socket.gethostname()
    fsutil.lock_path(out).write_text(json.dumps({"pid": 1, "host": host}))          # pid 1 is always alive
    with pytest.raises(InputError) as err:
        outputs.check_output(out, overwrite=False, claim_it=True)
    assert str(err.value) == (f"another pyrawan run (pid 1 on {host}) is writing {out} right now; wait for it to "
                              f"finish or choose another output folder. (If no such run exists, delete "
                              f"{tmp_path / '.out.lock'}.)")


def test_taking_over_a_dead_claim_says_so_on_stderr(tmp_path, capsys):
    out = tmp_path / "out"
    pid = dead_pid()
    fsutil.lock_path(out).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    leftover = tmp_path / f".out.tmp-{pid}-0123abcd"
    leftover.mkdir()
    outputs.check_output(out, overwrite=False, claim_it=True)
    outputs.release_claims()
    captured = capsys.readouterr()
    assert captured.out == "" and not leftover.exists()
    assert captured.err.splitlines() == [f"note: {out} was claimed by a run that is gone (killed?); took it over.",
                                         f"note: removed {leftover}, the unfinished output of a run that was killed."]


def test_releasing_keeps_created_folders_that_are_no_longer_empty_and_ignores_unclaimed_outputs(tmp_path):
    out = tmp_path / "new" / "out"
    outputs.check_output(out, overwrite=False, claim_it=True)
    (tmp_path / "new" / "someone-elses.txt").write_text("keep")          # written meanwhile beside the output
    outputs.release_claims()
    assert (tmp_path / "new" / "someone-elses.txt").is_file() and not fsutil.lock_path(out).exists()
    other = tmp_path / "other"
    fsutil.lock_path(other).write_text(json.dumps({"pid": 1, "host": socket.gethostname()}))
    outputs._release_one(other)                                           # never claimed here: untouched
    assert fsutil.lock_path(other).is_file()


def test_a_result_of_another_kind_does_not_replace_the_old_artifact(tmp_path):
    old = make_artifact(tmp_path / "out", files={"old.bin": b"old"})
    with pytest.raises(RunError, match=r"is a 'pyramid' artifact and this command writes 'convert'.* kept in .*out-2"):
        with outputs.artifact_dir(old, overwrite=True) as tmp:           # the command's kind is read from its manifest
            mf.write_manifest(tmp, "convert", None)
    assert (old / "old.bin").read_bytes() == b"old" and mf.read_manifest(tmp_path / "out-2")["kind"] == "convert"


def test_free_names_count_up_from_2(tmp_path):
    out = tmp_path / "out"
    assert outputs._free_name(out) == tmp_path / "out-2"
    (tmp_path / "out-2").mkdir()
    assert outputs._free_name(out) == tmp_path / "out-3"
    (tmp_path / "out-3").mkdir()
    assert outputs._free_name(out) == tmp_path / "out-4"


def test_a_failed_rename_puts_the_old_output_back_and_raises_the_original_error(tmp_path, monkeypatch):
    old = make_artifact(tmp_path / "out", files={"old.bin": b"old"})
    real = os.replace

    def replace(src, dst):
        if Path(src).name.startswith(f".{Path(dst).name}.tmp-") and (Path(src) / "new.bin").exists():  # the new one
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(OSError, match="No space left on device"):
        with outputs.artifact_dir(old, overwrite=True) as tmp:
            (tmp / "new.bin").write_bytes(b"new")
            mf.write_manifest(tmp, "pyramid", None)
    assert sorted(p.name for p in old.iterdir()) == [mf.MANIFEST, "old.bin"] and mf.verify(old) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(OSError, match="No space left on device"):         # no old output: nothing to put back
        with outputs.artifact_dir(tmp_path / "fresh") as tmp:
            (tmp / "new.bin").write_bytes(b"new")
            mf.write_manifest(tmp, "pyramid", None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_demo_folder_is_refused_where_no_output_may_go_and_its_marker_is_kind_and_time(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="exists and is a file"):
        outputs.fresh_folder(tmp_path / "afile", "demo")
    demo = outputs.fresh_folder(tmp_path / "demo", "demo")
    marker = json.loads((demo / outputs.FOLDER_MARKER).read_text())
    assert set(marker) == {"kind", "created_utc"} and marker["kind"] == "demo"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", marker["created_utc"])
    outputs.release_claims()


def test_a_demo_folder_ignores_hidden_entries_and_names_at_most_eight_foreign_ones(tmp_path):
    demo = outputs.fresh_folder(tmp_path / "demo", "demo")
    outputs.release_claims()
    (demo / ".ipynb_checkpoints").mkdir()                                 # hidden: not the user's files
    (demo / "results.json").write_text("{}")
    outputs.fresh_folder(demo, "demo", own=("samples-*", "results.json"))
    outputs.release_claims()
    names = [f"mine{i}.txt" for i in range(9)]
    for name in names:
        (demo / name).write_text("mine")
    with pytest.raises(InputError, match=rf"and also {', '.join(names[:8])}, which `pyrawan demo` did not write"):
        outputs.fresh_folder(demo, "demo", own=("samples-*", "results.json"))
    assert (demo / names[8]).is_file()


def test_a_failure_to_remove_the_replaced_output_is_not_an_error(tmp_path, monkeypatch):
    old = make_artifact(tmp_path / "out", files={"old.bin": b"old"})
    real = outputs.shutil.rmtree

    def rmtree(path, ignore_errors=False, **kwargs):
        if (Path(path) / "old.bin").exists():                            # the old output, moved aside
            if not ignore_errors:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return None
        return real(path, ignore_errors=ignore_errors, **kwargs)

    monkeypatch.setattr(outputs.shutil, "rmtree", rmtree)
    with outputs.artifact_dir(old, overwrite=True) as tmp:
        (tmp / "new.bin").write_bytes(b"new")
        mf.write_manifest(tmp, "pyramid", None)
    assert sorted(p.name for p in old.iterdir()) == [mf.MANIFEST, "new.bin"] and mf.verify(old) == []
