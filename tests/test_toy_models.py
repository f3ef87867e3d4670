"""The toy preset: shipped weights match their recorded hashes and load; the quick demo path runs."""
from __future__ import annotations

import json

import pytest
import torch

from pyrawan.errors import RunError
from pyrawan.fsutil import sha256_file
from pyrawan.models import toy
from pyrawan.models.presets import TRANSFORMER_ARCHS, build_preset


def test_shipped_weights_match_manifest():
    index = toy.weights_index()
    assert "text_encoder" in index and "vae" in index
    total = 0
    for name, entry in index.items():
        path = toy.WEIGHTS_DIR / entry["file"]
        assert sha256_file(path) == entry["sha256"], name
        assert path.stat().st_size == entry["bytes"]
        total += entry["bytes"]
    assert total < 30 * 2**20


def test_toy_preset_builds_and_encodes():
    c = build_preset("toy")
    assert dict(TRANSFORMER_ARCHS["toy"]) == toy.TOY_TRANSFORMER
    ids = c.tokenizer(["a small red circle slowly moving up-left on a plain gray background"]).input_ids[0]
    assert len(ids) == 13 and 2 not in ids                       # one token per word + </s>, no <unk>
    with torch.no_grad():
        z = c.vae.encode(torch.zeros(1, 3, 17, 64, 64)).latent_dist.mode()
    assert z.shape == (1, 16, 5, 8, 8)
    assert len(c.vae.config.latents_mean) == 16


def test_corrupted_weights_are_refused(tmp_path):
    entry = dict(toy.weights_index()["text_encoder"])
    (tmp_path / entry["file"]).write_bytes((toy.WEIGHTS_DIR / entry["file"]).read_bytes()[:-1] + b"\0")
    with pytest.raises(RunError, match="sha256"):
        toy.load_shipped("text_encoder", entry, tmp_path)


def test_quick_demo_runs(tmp_path, monkeypatch):
    from pyrawan.commands import demo

    monkeypatch.chdir(tmp_path)
    rows = demo.run(tmp_path / "demo", quick=True)
    assert [r["row"] for r in rows][0] == "teacher" and len(rows) == 4
    assert rows[0]["flops_ratio"] == pytest.approx(1.0)
    assert all(r["flops_ratio"] < 0.5 for r in rows[1:])
    assert all(0.0 <= r["overall"] <= 1.0 for r in rows)
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert len(saved["rows"]) == 4
