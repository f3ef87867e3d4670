"""DMD's optional GAN term (``distill.gan``, DMD2): heads on the fake score's features are trained, logged,
checkpointed and restored bit-exactly, never exported; off (the default) it leaves the DMD iteration as it was;
impossible combinations are refused before anything loads; ``--dry-run`` counts the heads."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pyrawan.commands import distill_dmd
from pyrawan.commands.distill import run
from pyrawan.errors import InputError
from pyrawan.models.artifact import load_model
from pyrawan.recipe import load_recipe
from pyrawan.train.gan import critic_loss, generator_loss
from pyrawan.train.synthetic import for_recipe

pytestmark = pytest.mark.usefixtures("one_thread")
QUICK = ["train.steps=6", "distill.generator_every=2", "train.lora.enabled=false", "train.optimizer.lr=1e-3"]
GAN = ["distill.gan.weight=0.5"]


def recipe(*overrides: str):
    return load_recipe("tiny-dmd", [*QUICK, *overrides], kind="distill")


def distill(r, out: Path) -> Path:
    return run(r, out, source=for_recipe(r, items=12), show_progress=False)


def records(out: Path) -> list[dict]:
    lines = (out.parent / f"{out.name}.run" / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in r.items() if k != "seconds"} for r in map(json.loads, lines) if r["kind"] == "train"]


def checkpoint(out: Path, step: int, name: str) -> dict[str, torch.Tensor]:
    return load_file(out.parent / f"{out.name}.run" / "checkpoints" / f"step-{step:08d}" / name)


def transformer(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "transformer" / "diffusion_pytorch_model.safetensors")


@pytest.mark.slow
def test_the_gan_term_trains_heads_and_fake_score_logs_its_losses_and_exports_only_the_generator(tmp_path):
    on = distill(recipe(*GAN, "train.checkpoint.every=3"), tmp_path / "on")
    off = distill(recipe("train.checkpoint.every=3"), tmp_path / "off")
    rec = records(on)
    assert all(r["cls_loss"] > 0 and r["gan_applied"] and {"real_logit", "fake_logit"} <= r.keys() for r in rec)
    gen = [r for r in rec if "gen_loss" in r]
    assert len(gen) == 3 and all(r["gan_loss"] > 0 for r in gen)
    assert not any("cls_loss" in r or "gan_loss" in r for r in records(off))
    heads3, heads6 = (checkpoint(on, s, "gan_heads-model.safetensors") for s in (3, 6))
    assert heads3 and all(k.startswith("heads.") for k in heads3)
    # the heads train, with the fake score's optimiser (lr 1e-4; the generator's is 1e-3): three AdamW steps of
    # beta_1 = 0 move a weight by lr |g_t| / sqrt(v_t) <= lr sqrt(t) each (t = 4, 5, 6), plus the weight decay
    moved = max(float((heads6[k] - heads3[k]).abs().max()) for k in heads3)
    largest = max(float(heads6[k].abs().max()) for k in heads3)
    assert 1e-4 < moved < 1e-4 * (2 + 5 ** 0.5 + 6 ** 0.5) + 3 * 1e-4 * 0.01 * largest, moved
    assert {"gan_heads-optimizer.safetensors", "gan_heads-optimizer.json"} <= {
        p.name for p in (tmp_path / "on.run" / "checkpoints" / "step-00000006").iterdir()}
    fake_on, fake_off = (checkpoint(o, 6, "fake_score-model.safetensors") for o in (on, off))
    assert any(not torch.equal(fake_on[k], fake_off[k]) for k in fake_on)           # its loss reaches the fake score
    exported, plain = transformer(on), transformer(off)
    assert exported.keys() == plain.keys() and not any("heads" in k for k in exported)  # not with the model
    assert any(not torch.equal(exported[k], plain[k]) for k in exported)              # the generator feels the term
    assert not any("gan" in p.name for p in on.rglob("*"))
    assert load_model(on).spec.distilled.method == "dmd"


@pytest.mark.slow
def test_gan_off_leaves_the_dmd_iteration_unchanged(tmp_path, monkeypatch):
    """With ``weight: 0`` no GAN code runs and the other gan keys change nothing; with it on, the first
    iteration's DMD quantities (before any update) are those of the plain run: no extra random draws."""
    plain = distill(recipe("train.checkpoint.every=6"), tmp_path / "plain")

    def never(*args, **kwargs):
        raise AssertionError("GAN code ran with distill.gan.weight = 0")
    for name in ("build_gan_heads", "gan_critic_forward", "gan_critic_step", "gan_generator_loss"):
        monkeypatch.setattr(distill_dmd, name, never)
    other = distill(recipe("train.checkpoint.every=6", "distill.gan.critic_weight=0.5", "distill.gan.loss=hinge",
                           "distill.gan.taps=[0.2,0.9]", "distill.gan.channels=8"), tmp_path / "other")
    monkeypatch.undo()
    assert records(plain) == records(other)
    a, b = transformer(plain), transformer(other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "plain.run" / "checkpoints" / "step-00000006" / "gan_heads-model.safetensors").exists()
    on = records(distill(recipe(*GAN, "train.checkpoint.every=0"), tmp_path / "on"))
    assert [r["exit_step"] for r in on] == [r["exit_step"] for r in records(plain)]
    assert on[0]["fake_loss"] == pytest.approx(records(plain)[0]["fake_loss"], rel=1e-5)


@pytest.mark.slow
def test_a_killed_gan_run_resumes_to_the_same_generator_fake_score_and_heads(tmp_path):
    from test_finetune_dist import kill_after_checkpoint, launch

    args = ["tiny-dmd", *QUICK, *GAN, "train.steps=8", "train.checkpoint.every=4", "train.batch_size=2"]
    launch(*args, "-o", "A", cwd=tmp_path, timeout=600)
    kill_after_checkpoint([*args, "-o", "B"], tmp_path, tmp_path / "B", 4)
    resumed = launch(*args, "-o", "B", "--resume", cwd=tmp_path, timeout=600)
    assert re.search(r"resumed from \S+step-00000004 \(step 4\)", resumed.stdout + resumed.stderr)   # not from 0
    a, b = tmp_path / "A", tmp_path / "B"
    wa, wb = transformer(a), transformer(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)          # bit-identical
    for name in ("gan_heads-model.safetensors", "gan_heads-optimizer.safetensors", "fake_score-model.safetensors"):
        ca, cb = checkpoint(a, 8, name), checkpoint(b, 8, name)
        assert ca and ca.keys() == cb.keys() and all(torch.equal(ca[k], cb[k]) for k in ca), name
    assert [r["cls_loss"] for r in records(a)] == [r["cls_loss"] for r in records(b)]


@pytest.mark.parametrize("overrides,message", [
    (["distill.method=adv", "distill.teach_weight=0", "distill.gan.weight=0.005"],
     "distill.gan.weight = 0.005 adds a GAN term to DMD, but distill.method = adv"),
    (["pyramid.kind=ppf", "distill.variant=ot", "distill.teacher=tiny", "distill.gan.weight=0.005"],
     "a PPF fake score patchifies each stage differently"),
    (["distill.gan.weight=0.005", "distill.gan.critic_weight=0"], "the heads would never be trained"),
])
def test_gan_combinations_that_cannot_work_are_refused_naming_the_key(tmp_path, overrides, message):
    with pytest.raises(InputError, match=message):
        run(recipe(*overrides), tmp_path / "x", source=None, show_progress=False)
    assert not (tmp_path / "x").exists()


def test_dry_run_counts_the_gan_heads_as_built():
    from pyrawan.models.presets import build_transformer
    from pyrawan.train.adversarial import heads_for
    from pyrawan.train.plan import distill_plan

    off, _ = distill_plan(load_recipe("wan1.3b-dmd-ptstar", kind="distill"))
    gan = ["distill.gan.weight=5e-3", "distill.gan.taps=[0.3,0.6]"]
    on, lines = distill_plan(load_recipe("wan1.3b-dmd-ptstar", gan, kind="distill"))
    part = "GAN heads weights + gradients + AdamW"
    assert part not in off["memory"][1] and "gan_heads" not in off
    heads = heads_for(build_transformer("wan1.3b", empty=True), (0.3, 0.6), 64)
    assert on["gan_heads"] == sum(p.numel() for p in heads.parameters()) > 0
    assert on["memory"][1][part] == 18 * on["gan_heads"]    # fp32 weights + bf16 copy, fp32 gradients, AdamW m, v
    assert on["memory"][1]["activations (peak)"] == 2 * off["memory"][1]["activations (peak)"]
    assert any("GAN term (DMD2): weight 0.005" in line for line in lines)


def test_softplus_is_dmd2s_logistic_loss_and_hinge_is_the_adversarial_one():
    sure = torch.tensor([[20.0, 30.0]])
    assert critic_loss("softplus", sure, -sure).item() < 1e-8                    # a perfect critic has ~no loss
    assert critic_loss("softplus", torch.zeros(1, 3), torch.zeros(1, 3)).item() == pytest.approx(2 * 0.6931472)
    assert generator_loss("softplus", torch.zeros(2, 3)).tolist() == pytest.approx([0.6931472] * 2)
    assert generator_loss("softplus", sure).item() < generator_loss("softplus", -sure).item()
    assert critic_loss("hinge", torch.tensor([[0.5]]), torch.tensor([[0.5]])).item() == pytest.approx(2.0)
    assert generator_loss("hinge", torch.tensor([[1.0, 3.0]])).item() == -2.0


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "deepspeed"])
def test_two_processes_with_the_gan_term_follow_one_process(tmp_path, engine):
    """Two processes of batch 2 draw what one process of batch 4 draws: the same curves up to reduction order."""
    from test_finetune_dist import launch

    args = ["tiny-dmd", *QUICK, *GAN, "train.checkpoint.every=0"]
    launch(*args, "train.batch_size=4", "-o", "one", cwd=tmp_path, timeout=600)
    launch(*args, "train.batch_size=2", f"train.engine={engine}", "train.zero_stage=2", "-o", "two", cwd=tmp_path,
           procs=2, timeout=600)
    one, two = records(tmp_path / "one"), records(tmp_path / "two")
    for key in ("fake_loss", "cls_loss", "real_logit", "gan_loss"):
        a, b = [r[key] for r in one if key in r], [r[key] for r in two if key in r]
        assert len(a) == len(b) > 0 and all(abs(x - y) <= 1e-4 * max(abs(x), 1e-2) for x, y in zip(a, b)), key
