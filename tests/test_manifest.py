"""Artifact manifests: writing, verifying, lineage and safe artifact folders."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from pyrawan.errors import InputError, RunError
from pyrawan.manifest import (
    MANIFEST,
    SCHEMA,
    check_artifact,
    git_info,
    lineage,
    manifest_sha256,
    read_manifest,
    require_verified,
    verify,
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
