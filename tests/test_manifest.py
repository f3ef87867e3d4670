"""Artifact manifests: writing, verifying, lineage and safe artifact folders."""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pyrawan import __version__
from pyrawan.errors import InputError, RunError
from pyrawan.manifest import (
    MANIFEST,
    SCHEMA,
    _iso,
    check_artifact,
    git_info,
    lineage,
    manifest_sha256,
    read_manifest,
    require_verified,
    utc_now,
    verify,
    verify_if_artifact,
    versions,
    write_manifest,
)
from pyrawan.outputs import artifact_dir
from pyrawan.recipe import load_recipe, recipe_sha256, resolve_recipe


def make_artifact(out: Path, kind: str = "pyramid", inputs: Sequence[Path] = (),
                  files: dict[str, bytes] | None = None, metrics: dict | None = None) -> Path:
    """A finished artifact folder holding ``files``, made the way commands make them."""
    files = {"weights.bin": b"\x00\x01" * 100, "sub/config.json": b"{}"} if files is None else files
    with artifact_dir(out) as tmp:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        write_manifest(tmp, kind, resolve_recipe(load_recipe("tiny")), inputs, metrics or {}, command=["pyrawan", kind])
    return out


def test_write_manifest_records_recipe_outputs_versions_and_command(tmp_path):
    art = make_artifact(tmp_path / "a", metrics={"psnr": float("inf"), "ssim": 1.0})
    m = json.loads((art / MANIFEST).read_text())
    assert m["schema"] == SCHEMA and m["kind"] == "pyramid" and m["command"] == ["pyrawan", "pyramid"]
    assert m["recipe"]["sha256"] == recipe_sha256(m["recipe"]["resolved"])
    assert [o["path"] for o in m["outputs"]] == ["sub/config.json", "weights.bin"]
    weights = next(o for o in m["outputs"] if o["path"] == "weights.bin")
    assert weights == {"path": "weights.bin", "bytes": 200, "sha256": hashlib.sha256(b"\x00\x01" * 100).hexdigest()}
    assert set(m["versions"]) == {"pyrawan", "python", "torch", "diffusers", "transformers"}
    assert m["metrics"] == {"psnr": "inf", "ssim": 1.0}  # strict JSON: no Infinity
    assert set(m["created_utc"]) == {"start", "end"} and m["created_utc"]["end"].endswith("Z")
    write_manifest(art, "pyramid", None, started=0.0)  # a time.time() value works too
    assert read_manifest(art)["created_utc"]["start"] == "1970-01-01T00:00:00Z"
    assert m["inputs"] == [] and m["notes"] is None
    assert m["git"] is None or set(m["git"]) == {"revision", "dirty"}
    assert git_info() is None or isinstance(git_info()["dirty"], bool)


def test_verify_clean_then_flipped_byte_missing_and_extra(tmp_path):
    art = make_artifact(tmp_path / "a")
    assert verify(art) == [] and require_verified(art)["kind"] == "pyramid"
    weights = art / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[7] ^= 0xFF
    weights.write_bytes(bytes(data))
    problems = verify(art)
    assert len(problems) == 1 and problems[0].startswith("weights.bin: contents changed")
    with pytest.raises(InputError, match="input .* does not verify: weights.bin"):
        require_verified(art, "input")
    (art / "sub/config.json").unlink()
    (art / "notes.txt").write_text("added later")
    findings = {f.path: f for f in check_artifact(art)}
    assert findings["sub/config.json"].problem == "missing" and findings["notes.txt"].problem == "unlisted"
    assert not findings["notes.txt"].fatal and len(verify(art)) == 2


def test_a_same_size_change_in_a_subfolder_fails_verify(tmp_path):
    """Model components live in subfolders (transformer/, lora/): their files are hashed like top-level ones."""
    art = make_artifact(tmp_path / "a", files={"top.bin": b"t", "sub/config.json": b'{"a": 1}',
                                               "sub/deeper/w.bin": b"\x00" * 64})
    assert verify(art) == []
    for rel in ("sub/config.json", "sub/deeper/w.bin"):
        path = art / rel
        data = path.read_bytes()
        path.write_bytes(bytes([data[0] ^ 1]) + data[1:])              # same size: only the hash tells
        assert [p.split(": ")[:2] for p in verify(art)] == [[rel, "contents changed"]]
        with pytest.raises(InputError, match=f"does not verify: {rel}"):
            require_verified(art)
        path.write_bytes(data)
    assert verify(art) == []


def test_size_change_is_reported_without_hashing(tmp_path):
    art = make_artifact(tmp_path / "a")
    (art / "weights.bin").write_bytes(b"short")
    assert verify(art) == ["weights.bin: size changed: 200 bytes in the manifest, 5 on disk"]


def test_read_manifest_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="has no manifest.json"):
        read_manifest(tmp_path / "plain")
    (tmp_path / "plain" / MANIFEST).write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_manifest(tmp_path / "plain")


def test_lineage_follows_a_two_deep_chain(tmp_path):
    data = tmp_path / "videos"
    data.mkdir()
    calib = make_artifact(tmp_path / "calib", "calibration", inputs=[data])
    pyramid = make_artifact(tmp_path / "pyr", "pyramid", inputs=[calib])
    tuned = make_artifact(tmp_path / "tuned", "finetuned", inputs=[pyramid])
    m = read_manifest(tuned)
    assert m["inputs"] == [{"path": "../pyr", "kind": "pyramid", "manifest_sha256": manifest_sha256(pyramid)}]
    nodes = lineage(tuned)
    assert [(n["kind"], n["depth"], n["parent"], n["status"]) for n in nodes] == [
        ("finetuned", 0, None, "ok"), ("pyramid", 1, 0, "ok"), ("calibration", 2, 1, "ok"), (None, 3, 2, "data")]
    assert Path(nodes[2]["path"]) == tmp_path / "calib"
    # a parent rebuilt after the child was made is flagged
    (pyramid / MANIFEST).write_text((pyramid / MANIFEST).read_text().replace('"notes": null', '"notes": "x"'))
    assert lineage(tuned)[1]["status"] == "changed"


def test_lineage_is_cycle_safe(tmp_path):
    art = make_artifact(tmp_path / "a")
    m = read_manifest(art)
    m["inputs"] = [{"path": ".", "kind": "pyramid", "manifest_sha256": "0" * 64}]
    (art / MANIFEST).write_text(json.dumps(m))
    assert [n["status"] for n in lineage(art)] == ["ok", "cycle"]


def test_artifact_dir_leaves_nothing_when_the_body_raises(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyError):
        with artifact_dir(out) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-")
            raise KeyError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RunError, match="without writing manifest.json"):
        with artifact_dir(out) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
    assert list(tmp_path.iterdir()) == []


def test_artifact_dir_refuses_to_clobber_and_overwrites_only_on_success(tmp_path):
    old = make_artifact(tmp_path / "out", files={"old.bin": b"old"})
    with pytest.raises(InputError, match="already exists and is not empty"):
        make_artifact(old)
    with pytest.raises(ValueError):
        with artifact_dir(old, overwrite=True):
            raise ValueError("failed run")
    assert (old / "old.bin").read_bytes() == b"old" and verify(old) == []
    with artifact_dir(old, overwrite=True) as tmp:
        (tmp / "new.bin").write_bytes(b"new")
        write_manifest(tmp, "pyramid", None)
    assert sorted(p.name for p in old.iterdir()) == [MANIFEST, "new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="not a pyrawan artifact"):
        with artifact_dir(tmp_path / "mine", overwrite=True):
            pass
    assert (tmp_path / "mine" / "thesis.tex").exists()


# ---- written from mutation testing's survivors (docs/testing.md) ------------------------------------

def _run_git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_times_are_written_in_utc_whatever_the_local_zone(tmp_path, monkeypatch):
    assert utc_now().utcoffset() == timedelta(0)
    monkeypatch.setenv("TZ", "XYZ-3")                                     # POSIX form of UTC+3
    time.tzset()
    try:
        assert _iso(datetime(2025, 1, 31, 15, 0, 5, 999, tzinfo=timezone(timedelta(hours=3)))) == "2025-01-31T12:00:05Z"
        assert _iso(1738324805.75) == "2025-01-31T12:00:05Z"
        started = datetime(2025, 1, 31, 13, 0, 5, tzinfo=timezone(timedelta(hours=1)))
        write_manifest(tmp_path, "pyramid", None, started=started, command=["x"])
        assert read_manifest(tmp_path)["created_utc"]["start"] == "2025-01-31T12:00:05Z"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_manifest_text_is_indented_utf8_with_a_final_newline_and_strict_json(tmp_path):
    write_manifest(tmp_path, "pyramid", {"prompt": "café"}, command=["pyrawan", "naïve"], notes="ünïcode")
    text = (tmp_path / MANIFEST).read_text(encoding="utf-8")
    assert text.startswith('{\n  "schema": "pyrawan.artifact/1",\n  "kind": "pyramid",\n') and text.endswith("}\n")
    assert '"café"' in text and '"naïve"' in text and '"notes": "ünïcode"' in text   # not \u00e9 escapes
    m = read_manifest(tmp_path)
    assert m["recipe"] == {"sha256": recipe_sha256({"prompt": "café"}), "resolved": {"prompt": "café"}}
    assert m["command"] == ["pyrawan", "naïve"] and m["notes"] == "ünïcode" and m["metrics"] == {}
    write_manifest(tmp_path / "r", "pyramid", None, metrics={"psnr": [20.5, float("inf")], "n": (1, {"x": -math.inf})})
    assert read_manifest(tmp_path / "r")["recipe"] is None
    assert read_manifest(tmp_path / "r")["metrics"] == {"psnr": [20.5, "inf"], "n": [1, {"x": "-inf"}]}
    with pytest.raises(ValueError):                                       # NaN is not JSON: refused, not written
        write_manifest(tmp_path / "n", "pyramid", {"lr": float("nan")})
    assert not (tmp_path / "n" / MANIFEST).exists()


def test_versions_are_read_from_package_metadata_and_missing_ones_are_none():
    found = versions(("pytest", "no-such-package-pyrawan-test"))
    assert found == {"pyrawan": __version__, "python": platform.python_version(),
                     "pytest": pytest.__version__, "no-such-package-pyrawan-test": None}


def test_input_entries_of_plain_data_and_of_an_input_on_another_drive(tmp_path, monkeypatch):
    data = tmp_path / "videos"
    data.mkdir()
    art = make_artifact(tmp_path / "a", inputs=[data])
    assert read_manifest(art)["inputs"] == [{"path": "../videos", "kind": None, "manifest_sha256": None}]

    def other_drive(path, start=None):
        raise ValueError("path is on mount 'D:', start on mount 'C:'")
    monkeypatch.setattr(os.path, "relpath", other_drive)                  # what Windows does across drives
    write_manifest(tmp_path / "b", "pyramid", None, inputs=[data, art])
    entries = read_manifest(tmp_path / "b")["inputs"]
    assert entries == [{"path": data.resolve().as_posix(), "kind": None, "manifest_sha256": None},
                       {"path": art.resolve().as_posix(), "kind": "pyramid", "manifest_sha256": manifest_sha256(art)}]


def test_manifest_sha256_of_a_plain_folder_says_it_is_not_an_artifact(tmp_path):
    with pytest.raises(InputError, match=f"^{tmp_path} is not a pyrawan artifact: it has no manifest.json.$"):
        manifest_sha256(tmp_path)


def test_read_manifest_names_the_schema_it_found(tmp_path):
    (tmp_path / MANIFEST).write_text('{"schema": "other/2"}')
    with pytest.raises(InputError, match="schema is 'other/2' but this pyrawan reads 'pyrawan.artifact/1'"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("[1, 2]")
    with pytest.raises(InputError, match="schema is 'list' but"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_bytes(b'{"schema": "\xff"}')
    with pytest.raises(InputError, match="is not valid JSON"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("outputs", [None, {"w.bin": 3}, ["w.bin"], [{"path": "w.bin", "bytes": 3}]])
def test_a_manifest_whose_outputs_are_not_entries_is_damaged(tmp_path, outputs):
    art = make_artifact(tmp_path / "a", files={"w.bin": b"abc"})
    m = read_manifest(art)
    m["outputs"] = outputs
    (art / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(InputError, match=f"^{art / MANIFEST}: 'outputs' must be a list of {{path, bytes, sha256}}"):
        check_artifact(art)


def test_findings_name_the_path_problem_and_what_differs(tmp_path):
    art = make_artifact(tmp_path / "a", files={"a.bin": b"aaaa", "b.bin": b"bbbb", "c.bin": b"cccc", "d/e.bin": b"e"})
    m = read_manifest(art)
    digest_b = hashlib.sha256(b"bbbb").hexdigest()
    m["outputs"] += [{"path": "", "bytes": 0, "sha256": ""}, {"path": "/etc/hostname", "bytes": 0, "sha256": ""},
                     {"path": "d/../../x", "bytes": 0, "sha256": ""}, {"path": "gone.bin", "bytes": 1, "sha256": ""}]
    (art / MANIFEST).write_text(json.dumps(m))
    (art / "a.bin").write_bytes(b"aaa")
    (art / "b.bin").write_bytes(b"xxxx")
    (art / ".c.bin.tmp-1-0123abcd").write_bytes(b"half")                  # a temporary name: not a finding
    (art / "d" / "new.bin").write_bytes(b"n")                             # inside d/, whose files are loaded
    (art / "extra.txt").write_text("a note")
    found = [(f.path, f.problem, f.detail, f.fatal) for f in check_artifact(art)]
    assert found == [
        ("a.bin", "size", "size changed: 4 bytes in the manifest, 3 on disk", True),
        ("b.bin", "sha256", f"contents changed: sha256 {hashlib.sha256(b'xxxx').hexdigest()[:12]}... on disk, "
                            f"{digest_b[:12]}... in the manifest", True),
        ("", "unsafe", "path is not inside the artifact folder", True),
        ("/etc/hostname", "unsafe", "path is not inside the artifact folder", True),
        ("d/../../x", "unsafe", "path is not inside the artifact folder", True),
        ("gone.bin", "missing", "file is missing", True),
        ("d/new.bin", "unlisted", "not listed in the manifest but inside d/, a folder whose files are loaded (added "
                                  "after the manifest was written); remove it", True),
        ("extra.txt", "unlisted", "not listed in the manifest (added after it was written)", False)]
    assert verify(art)[0] == "a.bin: size changed: 4 bytes in the manifest, 3 on disk"


def test_symlinks_inside_are_warnings_and_links_that_leave_loop_or_break_are_errors(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not pinned")
    art = tmp_path / "a"
    with artifact_dir(art) as tmp:
        (tmp / "real.bin").write_bytes(b"data")
        (tmp / "sub" / "deeper").mkdir(parents=True)
        (tmp / "sub" / "deeper" / "w.bin").write_bytes(b"w")
        (tmp / "alias.bin").symlink_to("real.bin")                        # a file inside: warning
        (tmp / "sub" / "up.bin").symlink_to("../real.bin")                # in a subfolder, to a file inside
        (tmp / "sub2").symlink_to("sub/deeper")                           # a folder inside, not holding it
        (tmp / "sub" / "deeper" / "loop").symlink_to("..")                # a folder that holds the link
        (tmp / "out.bin").symlink_to(outside)                             # leaves the folder
        (tmp / "broken").symlink_to("nowhere")
        write_manifest(tmp, "pyramid", None)
    findings = {f.path: f for f in check_artifact(art)}
    links = {rel: (f.fatal, f.detail) for rel, f in findings.items() if f.problem == "symlink"}
    inside = "inside the artifact (pyrawan never writes links; the file it points to is what is checked)"
    assert links == {
        "alias.bin": (False, f"symbolic link to 'real.bin' {inside}"),
        "sub/up.bin": (False, f"symbolic link to '../real.bin' {inside}"),
        "sub2": (False, f"symbolic link to 'sub/deeper' {inside}"),
        "sub/deeper/loop": (True, "symbolic link to '..', a folder that holds the link itself (a loop); remove it"),
        "out.bin": (True, f"symbolic link to {str(outside)!r}, outside the artifact folder: a consumer would read a "
                          f"file the manifest does not pin; remove it"),
        "broken": (True, "symbolic link to 'nowhere', which is broken or loops; remove it")}
    assert sorted(findings) == sorted(links)                              # the listed links are not reported twice
    assert sorted(p.split(":")[0] for p in verify(art)) == ["broken", "out.bin", "sub/deeper/loop"]


def test_a_listed_file_that_is_or_passes_through_a_link_outside_is_not_read(tmp_path, monkeypatch):
    import pyrawan.manifest as mf

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "w.bin").write_bytes(b"w")
    art = make_artifact(tmp_path / "a", files={"top.bin": b"t"})
    m = read_manifest(art)
    entry = {"bytes": 1, "sha256": hashlib.sha256(b"w").hexdigest()}
    m["outputs"] += [{"path": "w.bin", **entry}, {"path": "linked/w.bin", **entry}, {"path": ".", **entry},
                     {"path": "loop/w.bin", **entry}]
    (art / MANIFEST).write_text(json.dumps(m))
    (art / "w.bin").symlink_to(elsewhere / "w.bin")
    (art / "linked").symlink_to(elsewhere)
    (art / "loop").symlink_to("loop")
    hashed, real = [], mf.sha256_file
    monkeypatch.setattr(mf, "sha256_file", lambda p: hashed.append(Path(p).relative_to(art).as_posix()) or real(p))
    found = [(f.path, f.problem, f.detail[:34]) for f in check_artifact(art)]
    assert found == [("linked", "symlink", f"symbolic link to {str(elsewhere)!r}"[:34]),
                     ("loop", "symlink", "symbolic link to 'loop', which is "),
                     ("w.bin", "symlink", f"symbolic link to {str(elsewhere / 'w.bin')!r}"[:34]),  # not twice
                     ("linked/w.bin", "unsafe", "resolves (through a symbolic link)"),
                     (".", "unsafe", "resolves (through a symbolic link)"),   # the folder itself is no file of it
                     ("loop/w.bin", "unsafe", "resolves (through a symbolic link)")]
    assert hashed == ["top.bin"]


def test_require_verified_shows_five_problems_and_counts_the_rest(tmp_path):
    names = [f"f{i}.bin" for i in range(6)]
    art = make_artifact(tmp_path / "a", files={name: b"x" for name in names})
    for name in names[:5]:
        (art / name).unlink()
    five = "; ".join(f"{name}: file is missing" for name in names[:5])
    with pytest.raises(InputError, match=f"^input {art} does not verify: {five}. Its files changed"):
        require_verified(art)
    (art / names[5]).unlink()
    with pytest.raises(InputError, match=f"^teacher {art} does not verify: {five}; and 1 more. Its files"):
        require_verified(art, "teacher")


def test_verify_if_artifact_verifies_artifacts_and_passes_over_anything_else(tmp_path):
    assert verify_if_artifact(tmp_path / "no-such-folder") is False and verify_if_artifact("tiny") is False
    art = make_artifact(tmp_path / "a")
    assert verify_if_artifact(art) is True
    (art / "weights.bin").write_bytes(b"changed")
    with pytest.raises(InputError, match=f"^teacher {art} does not verify: weights.bin: size changed"):
        verify_if_artifact(art, "teacher")
    with pytest.raises(InputError, match=f"^input {art} does not verify"):
        verify_if_artifact(art)


def test_lineage_marks_missing_repeated_and_absolute_inputs(tmp_path):
    data = tmp_path / "videos"
    data.mkdir()
    base = make_artifact(tmp_path / "base", "calibration", inputs=[data])
    left = make_artifact(tmp_path / "left", "pyramid", inputs=[base])
    right = make_artifact(tmp_path / "right", "pyramid", inputs=[base])
    gone = make_artifact(tmp_path / "gone", "convert")
    top = make_artifact(tmp_path / "top", "finetuned", inputs=[left, right, gone])
    m = read_manifest(top)
    m["inputs"][1]["path"] = str(right.resolve())                         # an absolute path is followed as it is
    (top / MANIFEST).write_text(json.dumps(m))
    shutil.rmtree(gone)
    nodes = lineage(top)
    assert [(Path(n["path"]).name, n["kind"], n["depth"], n["parent"], n["status"]) for n in nodes] == [
        ("top", "finetuned", 0, None, "ok"), ("left", "pyramid", 1, 0, "ok"), ("base", "calibration", 2, 1, "ok"),
        ("videos", None, 3, 2, "data"), ("right", "pyramid", 1, 0, "ok"), ("base", "calibration", 2, 4, "repeated"),
        ("gone", "convert", 1, 0, "missing")]
    assert nodes[4]["path"] == str(right.resolve()) and nodes[5]["manifest_sha256"] == manifest_sha256(base)
    assert nodes[3]["manifest_sha256"] is None and nodes[6]["manifest_sha256"] is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_git_info_reads_the_checkout_pyrawan_runs_from(tmp_path, monkeypatch):
    import pyrawan.manifest as mf

    repo = tmp_path / "repo"
    (repo / "pyrawan").mkdir(parents=True)
    (repo / "pyrawan" / "manifest.py").write_text("# code\n")
    monkeypatch.setattr(mf, "__file__", str(repo / "pyrawan" / "manifest.py"))
    assert git_info() is None                                             # not a repository
    _run_git(repo, "init", "-q")
    assert git_info() is None                                             # a repository without a commit
    _run_git(repo, "add", ".")
    _run_git(repo, "commit", "-q", "-m", "first")
    head = _run_git(repo, "rev-parse", "HEAD")
    assert len(head) == 40 and git_info() == {"revision": head, "dirty": False}
    (repo / "pyrawan" / "manifest.py").write_text("# changed\n")
    assert git_info() == {"revision": head, "dirty": True}
    outer = tmp_path / "outer"
    (outer / "vendor" / "pyrawan").mkdir(parents=True)
    _run_git(outer, "init", "-q")
    monkeypatch.setattr(mf, "__file__", str(outer / "vendor" / "pyrawan" / "manifest.py"))
    assert git_info() is None                                             # installed inside another repository


def test_hidden_files_are_listed_and_temporary_names_are_not(tmp_path):
    (tmp_path / "sub" / ".y.tmp-2-abcdef01").mkdir(parents=True)         # a folder being written by fsutil
    (tmp_path / "sub" / ".y.tmp-2-abcdef01" / "part.bin").write_bytes(b"p")
    (tmp_path / ".w.bin.tmp-1-0123abcd").write_bytes(b"half")
    for name in (".env.json", "sub/.x", "w.bin", "a.tmp-1-0123abcd"):       # the last is not hidden: a file
        (tmp_path / name).write_bytes(b"x")
    write_manifest(tmp_path, "pyramid", None)
    listed = [o["path"] for o in read_manifest(tmp_path)["outputs"]]
    assert listed == [".env.json", "a.tmp-1-0123abcd", "sub/.x", "w.bin"]
    assert check_artifact(tmp_path) == []
