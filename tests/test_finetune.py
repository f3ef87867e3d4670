"""`pyrawan finetune` in one process: recipe rules, data order, checkpoints, losses, LoRA, plan, a learning run.

Runs use ``pyrawan.commands.finetune.run`` on the tiny preset with a synthetic latent cache
(``pyrawan.train.synthetic``, run by ``python -m pyrawan.commands.synthetic``); multi-process and kill-and-resume runs are in test_finetune_dist.py.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pyrawan.cli import app
from pyrawan.commands.finetune import dry_run, run
from pyrawan.errors import InputError, RunError
from pyrawan.fsutil import sha256_file
from pyrawan.manifest import verify
from pyrawan.models.artifact import load_model
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.recipe import load_recipe
from pyrawan.train import checkpoint as ckpt
from pyrawan.train.config import train_problems
from pyrawan.train.data import StageDataset, position_item, train_batch
from pyrawan.train.engine import lr_at
from pyrawan.models.denoiser import batch_timesteps
from pyrawan.train.plan import activation_elements
from pyrawan.train.synthetic import for_recipe

QUICK = ["train.checkpoint.every=0", "train.validation.every=0"]


pytestmark = pytest.mark.usefixtures("one_thread")


def recipe(*overrides: str):
    return load_recipe("tiny-finetune", list(overrides), kind="finetune")


def records(out: Path, kind: str) -> list[dict]:
    lines = (out.parent / f"{out.name}.run" / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


# ---- recipe, schedule, data ----------------------------------------------------------------------

def test_train_rules_name_the_keys_and_the_fix():
    with pytest.raises(InputError, match=r"train.stage_split = \[1, 1, 1\] sums to 3 but train.batch_size = 6"):
        recipe("train.stage_split=[1,1,1]")
    with pytest.raises(InputError, match="train.ema.enabled = true is not supported with ZeRO-3"):
        recipe("train.engine=deepspeed", "train.zero_stage=3", "train.ema.enabled=true")
    with pytest.raises(InputError, match="train.on_nonfinite = skip is not supported with ZeRO-3"):
        recipe("train.engine=deepspeed", "train.zero_stage=3", "train.on_nonfinite=skip")
    problems = train_problems(recipe("train.batch_size=6").train.model_copy(update={"stage_split": (2, 4)}), 3)
    assert problems and "has 2 entries but pyramid.stages = 3" in problems[0][1]
    with pytest.raises(InputError, match="has 2 entries but pyramid.stages = 3"):     # `recipe validate` too
        recipe("train.stage_split=[2,4]", "train.batch_size=6")
    assert recipe("train.stage_split=[1,4,1]").train.split(3) == (1, 4, 1)
    assert recipe("train.batch_size=7").train.split(3) == (3, 2, 2)


def test_learning_rate_warms_up_then_follows_cosine_or_constant():
    t = recipe("train.steps=100", "train.optimizer.warmup_steps=10", "train.optimizer.lr=1.0",
               "train.optimizer.min_lr_ratio=0.1").train
    assert lr_at(0, t) == pytest.approx(0.1) and lr_at(9, t) == pytest.approx(1.0)
    assert lr_at(10, t) == pytest.approx(1.0) and lr_at(99, t) == pytest.approx(0.1, abs=1e-3)
    assert lr_at(55, t) == pytest.approx(0.55, abs=0.01)
    const = recipe("train.optimizer.schedule=constant", "train.optimizer.warmup_steps=0").train
    assert {lr_at(s, const) for s in (0, 7, 39)} == {const.optimizer.lr}


def test_per_sample_levels_become_per_token_timesteps():
    sigma = torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.4, 0.4]])
    t = batch_timesteps(sigma, 2, (4, 4), (1, 2, 2))
    assert t.shape == (2, 12)
    assert torch.equal(t[0], torch.full((12,), 500.0)) and torch.equal(t[1, :4], torch.full((4,), 200.0))
    assert torch.equal(t[1, 4:], torch.full((8,), 400.0))
    assert torch.equal(batch_timesteps(sigma[:1].repeat(2, 1), 2, (4, 4), (1, 2, 2)), torch.tensor([500.0, 500.0]))


def test_micro_batches_depend_only_on_the_global_index():
    r = recipe()
    pyramid = PyramidConfig(3)
    data = StageDataset(for_recipe(r, items=10), list(range(10)), pyramid)
    assert sorted(position_item(10, p, seed=0) for p in range(10, 20)) == list(range(10))   # an epoch is a permutation
    a = train_batch(data, 7, 1, (2, 2, 2), 6, 0, 0.5, torch.zeros(16, 32))
    b = train_batch(data, 7, 1, (2, 2, 2), 6, 0, 0.5, torch.zeros(16, 32))
    assert a.items == b.items and torch.equal(a.eps, b.eps) and torch.equal(a.rho, b.rho)
    assert a.items == [position_item(10, 7 * 6 + 2 + k, 0) for k in range(2)]       # coarsest stage comes first
    assert a.x0.shape == (2, 16, 3, 4, 4) and a.x0_up.shape == a.x0.shape and a.text.shape == (2, 16, 32)
    assert not torch.equal(train_batch(data, 8, 1, (2, 2, 2), 6, 0, 0.5, None).eps, a.eps)


def test_level_shift_warps_the_same_uniform_draws_towards_the_noisy_end():
    r = recipe()
    data = StageDataset(for_recipe(r, items=10), list(range(10)), PyramidConfig(3))
    batches = {k: [train_batch(data, g, 1, (20, 20, 20), 60, 0, 0.0, None, level_shift=k) for g in range(20)]
               for k in (1.0, 3.0)}
    uniform, shifted = (torch.cat([b.rho for b in batches[k]]) for k in (1.0, 3.0))
    assert torch.allclose(shifted, 3 * uniform / (1 + 2 * uniform))                # same draws, warped: k rho / (1 + (k-1) rho)
    assert abs(float(uniform.mean()) - 0.5) < 0.05 and float(shifted.mean()) > 0.65
    assert all(torch.equal(a.eps, b.eps) for a, b in zip(*batches.values()))       # only the levels change


# ---- checkpoints ---------------------------------------------------------------------------------

def test_optimizer_state_round_trips_through_safetensors_and_json():
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(3):
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
    tensors, structure = ckpt.flatten_optimizer(opt.state_dict())
    fresh = torch.optim.AdamW(model.parameters(), lr=0.5)
    fresh.load_state_dict(ckpt.unflatten_optimizer(tensors, json.loads(json.dumps(structure))))
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(fresh.state_dict()["state"][0][key], opt.state_dict()["state"][0][key])
    assert fresh.param_groups[0]["lr"] == 0.1


def test_a_corrupt_or_partial_checkpoint_is_skipped_with_a_message(tmp_path):
    def write(folder: Path) -> None:
        ckpt.save_tensors(folder / "model.safetensors", {"w": torch.arange(4.0)})
    for step in (2, 4, 6):
        ckpt.save(tmp_path, step, write, {"step": step, "consumed": 0, "recipe": {}}, keep=3)
    assert ckpt.latest(tmp_path) == tmp_path / "step-00000006"
    (tmp_path / "step-00000006" / "checkpoint.json").unlink()                      # partial
    model = tmp_path / "step-00000004" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-1] + b"\x01")                           # corrupt
    messages: list[str] = []
    assert ckpt.latest(tmp_path, messages.append) == tmp_path / "step-00000002"
    assert "interrupted while being written" in messages[0] and "does not match its sha256" in messages[1]
    ckpt.save(tmp_path, 8, write, {"step": 8, "consumed": 0, "recipe": {}}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000006", "step-00000008"]


# ---- runs ----------------------------------------------------------------------------------------

def test_validation_loss_per_stage_drops_and_the_result_is_a_model_artifact(tmp_path):
    r = recipe("train.steps=40", "train.optimizer.lr=1e-2", "train.validation.every=20", "train.checkpoint.every=0")
    out = run(r, tmp_path / "ft", source=for_recipe(r), show_progress=False)
    val = records(out, "validation")
    assert [v["step"] for v in val] == [0, 20, 40]
    first, last = val[0]["val_loss_stage"], val[-1]["val_loss_stage"]
    assert all(b < 0.8 * a for a, b in zip(first, last)), (first, last)           # every stage: a clear drop
    assert len(records(out, "train")) == 40 and not verify(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "finetune" and manifest["metrics"]["val_loss_stage_last"] == last
    model = load_model(out)
    assert model.pyramid["num_stages"] == 3 and (out / "metrics.jsonl").is_file()
    tuned, base = model.components.transformer.state_dict(), load_model("tiny").components.transformer.state_dict()
    assert any(not torch.equal(tuned[k], base[k]) for k in base)


@pytest.mark.slow
def test_lora_run_exports_weights_that_wanpipeline_loads(tmp_path, tiny_components):
    from pyrawan.models.denoiser import pipeline_for
    from pyrawan.models.presets import build_preset

    r = recipe("train.steps=4", "train.lora.enabled=true", "train.optimizer.lr=1e-2", "train.align_weight=0.5",
               "train.align_form=same-input",
               "train.ema.enabled=true", *QUICK)
    out = run(r, tmp_path / "lora", source=for_recipe(r), show_progress=False)
    align = [rec["align"] for rec in records(out, "train")]
    assert align[0] == 0.0 and all(a > 0 for a in align[1:]), align   # LoRA starts as the base (B = 0), then departs
    pipe = pipeline_for(build_preset("tiny"))
    pipe.load_lora_weights(out / "lora", adapter_name="ft")
    fused = load_model(out).components.transformer
    x, ctx, t = torch.randn(1, 16, 5, 8, 8), torch.randn(1, 16, 32), torch.tensor([500.0])
    with torch.no_grad():
        a = fused(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
        b = pipe.transformer(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
        pipe.set_adapters(["ft"], adapter_weights=[0.0])
        c = pipe.transformer(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
    assert (a - b).abs().max() < 1e-5 and (a - c).abs().max() > 1e-4      # loaded LoRA = fused; LoRA matters


@pytest.mark.slow
def test_a_convert_artifact_keeps_its_pyramid_is_recorded_as_parent_and_the_result_samples(tmp_path, monkeypatch):
    from pyrawan.commands import convert
    from pyrawan.manifest import lineage

    pyr = convert.run(load_recipe("tiny", ["pyramid.boundaries=[0.3,0.7]"]), tmp_path / "pyr")
    with pytest.raises(InputError, match=r"disagrees with the recipe \(resizer: base 'haar' vs recipe 'dct'\)"):
        bad = recipe(f"base={pyr}", "pyramid.resizer=dct", *QUICK)
        run(bad, tmp_path / "bad", source=for_recipe(bad), show_progress=False)
    r = recipe(f"base={pyr}", "train.steps=2", *QUICK)
    out = run(r, tmp_path / "ft", source=for_recipe(r), show_progress=False)
    assert json.loads((out / "pyramid.json").read_text())["boundaries"] == [0.3, 0.7]
    assert [n["kind"] for n in lineage(out)] == ["finetune", "convert"]
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["sample", "--model", "ft", "--prompt", "a cat", "-q", "-o", "videos"])
    assert result.exit_code == 0, result.output
    assert [n["kind"] for n in lineage(tmp_path / "videos")] == ["sample", "finetune", "convert"]


@pytest.mark.slow
def test_one_stage_from_scratch_is_plain_flow_matching(tmp_path):
    r = recipe("pyramid.stages=1", "sampling.schedule=4", "train.from_scratch=true", "train.steps=20",
               "train.optimizer.lr=1e-2", "train.validation.every=20", "train.checkpoint.every=0")
    out = run(r, tmp_path / "one", source=for_recipe(r), show_progress=False)
    val = records(out, "validation")
    assert len(val[0]["val_loss_stage"]) == 1 and val[-1]["val_loss"] < 0.8 * val[0]["val_loss"]
    assert json.loads((out / "pyramid.json").read_text())["num_stages"] == 1


@pytest.mark.slow
def test_a_non_finite_loss_stops_keeping_the_last_checkpoint_or_is_skipped(tmp_path):
    r = recipe("train.steps=12", "train.checkpoint.every=2", "train.validation.every=0")
    bad = for_recipe(r, nan_items=(3,))
    with pytest.raises(RunError) as err:
        run(r, tmp_path / "stop", source=bad, show_progress=False)
    message = str(err.value)
    assert "non-finite loss" in message and "synthetic-0003" in message and "last good checkpoint" in message
    assert not (tmp_path / "stop").exists()
    last = ckpt.latest(tmp_path / "stop.run" / "checkpoints")
    assert last is not None and f"step-{ckpt.read_state(last)['step']:08d}" in message
    skip = recipe("train.steps=12", "train.on_nonfinite=skip", *QUICK)
    out = run(skip, tmp_path / "skip", source=bad, show_progress=False)
    steps = records(out, "train")
    assert any(s["skipped"] and s["loss"] == "nan" for s in steps) and len(steps) == 12
    weights = load_model(out).components.transformer.state_dict()
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_checkpoints_of_an_earlier_run_need_resume_and_a_resume_needs_the_same_recipe(tmp_path):
    r = recipe("train.steps=2", "train.checkpoint.every=1", "train.validation.every=0")
    out = run(r, tmp_path / "a", source=for_recipe(r), show_progress=False)
    with pytest.raises(InputError, match="already exists"):
        run(r, out, source=for_recipe(r), show_progress=False)
    out.rename(tmp_path / "moved")                                   # its run folder a.run/ stays behind
    with pytest.raises(InputError, match="holds checkpoints of an earlier run; pass --resume"):
        run(r, out, source=for_recipe(r), show_progress=False)
    changed = recipe("train.steps=2", "train.checkpoint.every=1", "train.validation.every=0", "seed=5")
    with pytest.raises(InputError, match=r"recipe differs .*seed: 0 -> 5"):
        run(changed, out, resume=True, source=for_recipe(r), show_progress=False)
    resume_to_step_3(out, r)


def resume_to_step_3(out, r) -> None:
    """Resume a 2-step run of ``r`` to 3 steps; the log holds steps 1, 2, 3 once each."""
    longer = recipe("train.steps=3", "train.checkpoint.every=1", "train.validation.every=0")
    run(longer, out, resume=True, source=for_recipe(r), show_progress=False)
    assert [s["step"] for s in records(out, "train")] == [1, 2, 3]


@pytest.mark.slow
def test_a_checkpoint_of_an_older_pyrawan_resumes_when_the_new_recipe_keys_are_at_their_defaults(tmp_path):
    """A checkpoint saved before ``train.level_shift`` and ``pyramid.kind`` existed resumes; a changed value does not."""
    r = recipe("train.steps=2", "train.checkpoint.every=1", "train.validation.every=0")
    out = run(r, tmp_path / "a", source=for_recipe(r), show_progress=False)
    out.rename(tmp_path / "moved")
    for state in (tmp_path / "a.run" / "checkpoints").glob("step-*/state.json"):
        data = json.loads(state.read_text())
        del data["recipe"]["train"]["level_shift"], data["recipe"]["pyramid"]["kind"]     # as an older version wrote it
        state.write_text(json.dumps(data))
        ckpt_json = state.parent / "checkpoint.json"                                        # keep its recorded hash valid
        manifest = json.loads(ckpt_json.read_text())
        manifest["files"]["state.json"] = {"sha256": sha256_file(state), "bytes": state.stat().st_size}
        ckpt_json.write_text(json.dumps(manifest))
    shifted = recipe("train.steps=3", "train.checkpoint.every=1", "train.validation.every=0", "train.level_shift=3")
    with pytest.raises(InputError, match=r"recipe differs .*train.level_shift: 1.0 -> 3.0"):
        run(shifted, out, resume=True, source=for_recipe(r), show_progress=False)
    resume_to_step_3(out, r)


# ---- plan ----------------------------------------------------------------------------------------

def test_dry_run_plans_wan13b_without_weights(capsys):
    plan = dry_run(load_recipe("wan1.3b-finetune", ["train.engine=deepspeed"], kind="finetune"))
    assert plan["parameters"] == 1_418_996_800 == plan["trainable"]
    two = plan["memory"][2]
    gib = 1024**3
    assert two["weights"] == pytest.approx(2 * plan["parameters"]) and two["optimizer states"] == pytest.approx(
        12 * plan["parameters"] / 2)
    assert 8 * gib < two["activations (peak)"] < 20 * gib and 25 * gib < two["total"] < 40 * gib
    assert plan["memory"][8]["total"] < two["total"]
    lora = dry_run(load_recipe("wan1.3b-finetune", ["train.lora.enabled=true"], kind="finetune"))
    assert 0 < lora["trainable"] < 0.05 * lora["parameters"]
    text = capsys.readouterr().out
    assert "parameters: 1,418,996,800" in text and "ZeRO-2" in text and "activations (peak)" in text


def test_cli_dry_run_accepts_the_deepspeed_launchers_local_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")                            # restored afterwards
    # `deepspeed --module pyrawan finetune ...` runs `python -m pyrawan --local_rank=N finetune ...`
    result = CliRunner().invoke(app, ["--local_rank=1", "finetune", "tiny-finetune", "--dry-run", "train.lora.enabled=true"])
    assert result.exit_code == 0, result.output
    assert "trainable" in result.stdout and "LoRA" in result.stdout
    convert = CliRunner().invoke(app, ["finetune", "wan1.3b", "--dry-run"])
    assert convert.exit_code == 0 and "parameters: 1,418,996,800" in convert.stdout
    missing = CliRunner().invoke(app, ["finetune", "tiny-finetune", "-o", "never"])
    assert missing.exit_code == 2 and "no training data" in missing.stderr


def test_activation_estimate_matches_the_tensors_autograd_saves():
    """The plan's per-sample activation count against a measured CPU forward (no N x N attention saved)."""
    from diffusers import WanTransformer3DModel

    from pyrawan.models.presets import TRANSFORMER_ARCHS

    cfg = {**TRANSFORMER_ARCHS["tiny"], "num_attention_heads": 4, "attention_head_dim": 32, "ffn_dim": 512,
           "num_layers": 3, "text_dim": 32}
    for per_token in (False, True):
        for checkpointing in (False, True):
            model = WanTransformer3DModel(**cfg).train()
            if checkpointing:
                model.enable_gradient_checkpointing()
            params = {p.untyped_storage().data_ptr() for p in model.parameters()}
            saved: dict[int, int] = {}

            def pack(t):
                if t.untyped_storage().data_ptr() not in params:
                    saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
                return t
            x = torch.randn(1, 16, 5, 16, 16)
            timestep = torch.full((1, 320), 500.0) if per_token else torch.tensor([500.0])
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                model(hidden_states=x, timestep=timestep, encoder_hidden_states=torch.randn(1, 16, 32), return_dict=False)
            stored, _ = activation_elements(cfg, (5, 16, 16), 16, per_token, checkpointing)
            measured = sum(saved.values()) / 4
            assert math.isclose(stored, measured, rel_tol=0.15), (per_token, checkpointing, stored, measured)


def test_the_full_resolution_alignment_runs_and_is_not_zero_where_the_same_input_form_is(tmp_path):
    """A LoRA student starts as the base, so the same-input alignment is 0 at step 1; the full-resolution form
    compares with the base's estimate at full resolution, which a stage's base prediction does not equal."""
    r = recipe("train.steps=2", "train.lora.enabled=true", "train.align_weight=0.5",
               "train.align_form=full-resolution", *QUICK)
    out = run(r, tmp_path / "full", source=for_recipe(r), show_progress=False)
    align = [rec["align"] for rec in records(out, "train")]
    assert len(align) == 2 and all(0 < a < float("inf") for a in align), align
