"""Exact resume in one process: a finetune (fast tier) and a distill run (slow tier) stopped right after a
checkpoint (as Ctrl-C would stop them) and resumed end bit-identical to the same run uninterrupted.

The SIGKILLed multi-process versions of these are in test_finetune_dist.py and test_distill_dist.py (slow).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pyrawan import outputs
from pyrawan.recipe import load_recipe
from pyrawan.train import checkpoint as ckpt
from pyrawan.train.synthetic import for_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


class Stop(KeyboardInterrupt):
    """What Ctrl-C raises, at a chosen moment."""


def stop_after_checkpoint(monkeypatch, step: int) -> None:
    """Make the run raise Ctrl-C as soon as the checkpoint of ``step`` is on disk."""
    save = ckpt.save

    def save_then_stop(root, at, *args, **kwargs):
        folder = save(root, at, *args, **kwargs)
        if at == step:
            raise Stop
        return folder

    monkeypatch.setattr(ckpt, "save", save_then_stop)


def weights(out: Path) -> dict[str, torch.Tensor]:
    files = sorted(out.rglob("*.safetensors"))
    return {f"{f.relative_to(out)}:{k}": v for f in files for k, v in load_file(f).items()}


def losses(out: Path, key: str) -> list:
    lines = (out.parent / f"{out.name}.run" / "metrics.jsonl").read_text().splitlines()
    return [r[key] for r in map(json.loads, lines) if r["kind"] == "train" and key in r]


def stopped_and_resumed(run, recipe, tmp_path: Path, monkeypatch, step: int) -> Path:
    """Run ``recipe`` into B, stop it after the checkpoint of ``step``, resume it to the end."""
    out = tmp_path / "B"
    with monkeypatch.context() as patch:
        stop_after_checkpoint(patch, step)
        with pytest.raises(KeyboardInterrupt, match=f"stopped at step {step}"):
            run(recipe, out, source=for_recipe(recipe, items=12), show_progress=False)
    outputs.release_claims()                              # what the CLI does on Ctrl-C
    assert not out.exists()                               # nothing published that looks finished
    read, read_state = [], ckpt.read_state
    monkeypatch.setattr(ckpt, "read_state", lambda folder: read.append(Path(folder).name) or read_state(folder))
    run(recipe, out, resume=True, source=for_recipe(recipe, items=12), show_progress=False)
    assert read and set(read) == {ckpt.step_dir(Path(), step).name}            # resumed from that step, not 0
    return out


def assert_same(a: Path, b: Path, key: str) -> None:
    wa, wb = weights(a), weights(b)
    assert wa and wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert losses(a, key) == losses(b, key) and len(losses(a, key)) >= 4


RUNS = {  # command: (its shipped tiny recipe, overrides, a loss its metrics log on every step)
    "finetune": ("tiny-finetune", ["train.steps=4", "train.checkpoint.every=2", "train.validation.every=0"], "loss"),
    "distill": ("tiny-dmd", ["train.steps=4", "train.checkpoint.every=2", "distill.generator_every=2"], "fake_loss"),
}


@pytest.mark.parametrize("command", ["finetune", pytest.param("distill", marks=pytest.mark.slow)])
def test_a_stopped_run_resumes_bit_identical(command, tmp_path, monkeypatch):
    run = importlib.import_module(f"pyrawan.commands.{command}").run
    name, overrides, loss = RUNS[command]
    r = load_recipe(name, overrides, kind=command)
    a = run(r, tmp_path / "A", source=for_recipe(r, items=12), show_progress=False)
    b = stopped_and_resumed(run, r, tmp_path, monkeypatch, step=2)
    assert_same(a, b, loss)
