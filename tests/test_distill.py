"""`pyrawan distill` in process: every variant runs on the tiny model and a synthetic cache, the result is a
few-step model that `sample` runs with one forward per step and no guidance, recipes are checked early."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pyrawan.commands.distill import run
from pyrawan.errors import InputError
from pyrawan.models.artifact import load_model
from pyrawan.recipe import load_recipe
from pyrawan.train.synthetic import for_recipe

pytestmark = pytest.mark.usefixtures("one_thread")
QUICK = ["train.checkpoint.every=0", "train.steps=6", "distill.generator_every=2"]
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def recipe(*overrides: str):
    return load_recipe("tiny-dmd", [*QUICK, *overrides], kind="distill")


def records(out: Path) -> list[dict]:
    lines = (out.parent / f"{out.name}.run" / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


def distill(r, out: Path) -> Path:
    return run(r, out, source=for_recipe(r, items=12), show_progress=False)


def transformer(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "transformer" / "diffusion_pytorch_model.safetensors")


@pytest.mark.slow
def test_toy_ptstar_makes_a_few_step_model_that_sample_runs_with_five_forwards(tmp_path, transformer_batches):
    r = load_recipe("toy-dmd-ptstar", [*QUICK, "train.steps=10", "train.batch_size=2", "distill.teach_pairs=2",
                                        "train.validation.holdout=2"],
                    kind="distill")
    out = distill(r, tmp_path / "dmd")
    spec = load_model(out).spec
    assert spec.distilled.variant == "ptstar" and spec.distilled.schedule == "2-2-1"
    assert spec.sampling.guidance == 1.0 and spec.sampling.fewstep_levels == [[1.0, 0.5], [1.0, 0.5], [1.0]]
    rec = records(out)
    assert [r["step"] for r in rec] == list(range(1, 11))
    gen = [r for r in rec if "gen_loss" in r]
    assert len(gen) == 5 and all(r["w_dmd"] > 0 and r["teach_loss"] >= 0 for r in gen)
    assert {r["exit_step"] for r in rec} <= set(range(5)) and all(r["fake_loss"] > 0 for r in rec)
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()                      # PT*: LoRA
    assert (tmp_path / "dmd.run" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "distill" and manifest["metrics"]["forwards_per_video"] == 5
    proc = subprocess.run([sys.executable, "-m", "pyrawan", "sample", "--model", str(out), "--prompt", "a red square",
                           "-o", str(tmp_path / "videos")], capture_output=True, text=True, env={**ENV, "PATH": ""},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "videos" / "manifest.json").read_text())["metrics"]
    assert metrics["nfe_per_video"] == 5 and metrics["forwards_per_video"] == 5
    from diffusers import WanTransformer3DModel

    batches = transformer_batches(WanTransformer3DModel, ["sample", "--model", out, "--prompt", "a red square",
                                                         "-o", tmp_path / "counted"])
    assert batches == [1] * 5                                            # five steps, no guidance batch


def test_the_generator_takes_one_adamw_step_and_a_fresh_start_samples_new_teacher_pairs(tmp_path):
    """Two iterations with generator_every 2: one generator step. AdamW with beta_1 = 0 moves each weight by
    ``-lr wd w - lr g / (|g| + eps)``: by ``lr`` exactly where the gradient is not tiny (the known answer)."""
    base = load_model("tiny").components.transformer.state_dict()
    lr, wd = 1e-3, 0.01
    r = recipe("train.lora.enabled=false", f"train.optimizer.lr={lr}", f"train.optimizer.weight_decay={wd}",
               "train.steps=2", "train.ema.enabled=false")
    out = distill(r, tmp_path / "full")
    assert [x.get("gen_applied") for x in records(out)] == [None, True]
    trained = transformer(out)
    step = torch.cat([((trained[k].double() - base[k].double() * (1 - lr * wd)) / lr).flatten() for k in base])
    assert step.abs().max() < 1 + 1e-3 and (step.abs() > 0.99).double().mean() > 0.5
    pairs = tmp_path / "full.run" / "teach_pairs.safetensors"
    first = load_file(pairs)
    assert first["target"].shape[0] == r.distill.teach_pairs and torch.isfinite(first["target"]).all()
    r2 = recipe("train.lora.enabled=false", "train.optimizer.lr=1e-3", "distill.teach_pairs=2")
    with pytest.raises(InputError, match="already exists"):
        distill(r2, tmp_path / "full")
    run(r2, tmp_path / "full", overwrite=True, source=for_recipe(r2, items=12), show_progress=False)
    assert load_file(pairs)["target"].shape[0] == 2                      # a fresh start samples new pairs


@pytest.mark.slow
def test_ot_with_a_multires_teacher_and_the_one_stage_baseline(tmp_path):
    from pyrawan.commands.finetune import run as finetune

    ft = load_recipe("tiny-finetune", ["train.process=multires", "train.steps=2", "train.checkpoint.every=0",
                                       "train.validation.every=0"], kind="finetune")
    teacher = finetune(ft, tmp_path / "teacher", source=for_recipe(ft), show_progress=False)
    assert load_model(teacher).spec.num_stages == 1                                           # a plain model
    out = distill(recipe("distill.variant=ot", f"distill.teacher={teacher}", "train.lora.enabled=false"),
                  tmp_path / "ot")
    assert load_model(out).spec.distilled.teacher == str(teacher)
    inputs = [i["path"] for i in json.loads((out / "manifest.json").read_text())["inputs"]]
    assert any(Path(p).name == "teacher" for p in inputs)
    base = distill(recipe("distill.variant=baseline", "pyramid.stages=1", "sampling.schedule=50",
                          "distill.schedule=2", "train.lora.enabled=false"), tmp_path / "baseline")
    spec = load_model(base).spec
    assert spec.num_stages == 1 and spec.sampling.fewstep_levels == [[1.0, 0.5]]


@pytest.mark.parametrize("overrides,message", [
    (["distill.levels=[[1.0],[1.0,0.5],[1.0]]"], r"distill.levels has \[1, 2, 1\] levels per stage"),
    (["distill.levels=[[0.9,0.5],[1.0,0.5],[1.0]]"], "must be 1.0"),
    (["distill.variant=baseline"], "one-stage Wan-DMD"),
    (["distill.score_levels=[0.5,0.2]"], "low < high"),
    (["train.engine=deepspeed", "train.zero_stage=3", "train.ema.enabled=false"], "zero_stage = 3 is not supported by distill"),
    (["distill.schedule=2-0-1"], "skips a stage"),
    (["distill.variant=ot"], "variant = ot needs the original model"),
    (["distill.method=adv", "distill.teach_weight=0", "distill.teacher=tiny"], "backbone = pyramidal uses the base"),
    (["distill.method=adv"], "method adv has its own teacher term"),
])
def test_bad_distill_recipes_are_refused_before_anything_loads(tmp_path, overrides, message):
    with pytest.raises(InputError, match=message):
        run(recipe(*overrides), tmp_path / "x", source=None, show_progress=False)
    assert not (tmp_path / "x").exists()


def test_dry_run_counts_generator_fake_score_teacher_and_both_optimisers(capsys):
    from pyrawan.commands.distill import dry_run

    lora = dry_run(load_recipe("wan1.3b-dmd-ptstar", kind="distill"))
    full = dry_run(load_recipe("wan1.3b-dmd-ot", kind="distill"))
    mem_lora, mem_full = lora["memory"][1], full["memory"][1]
    assert mem_lora["teacher (frozen)"] == 0 and mem_full["teacher (frozen)"] > 0          # LoRA: adapters off
    assert mem_full["fake score gradients + AdamW"] == mem_lora["fake score gradients + AdamW"] > 0
    assert mem_full["generator gradients + AdamW"] > 10 * mem_lora["generator gradients + AdamW"]
    assert full["parameters"] == 1_418_996_800
    assert "fake score" in capsys.readouterr().out


def test_a_non_finite_loss_stops_the_run_naming_the_iteration(tmp_path, monkeypatch):
    from pyrawan.commands import distill_dmd as cmd
    from pyrawan.errors import RunError

    calls, real = [], cmd.flow_matching_loss

    def poisoned(pred, target):                       # the fake-score loss of iteration 4 becomes NaN
        calls.append(1)
        loss = real(pred, target)
        return loss * float("nan") if len(calls) == 4 else loss
    monkeypatch.setattr(cmd, "flow_matching_loss", poisoned)
    r = recipe("train.lora.enabled=false", "distill.teach_weight=0", "train.checkpoint.every=2")
    with pytest.raises(RunError, match=r"distill stopped at step 4: non-finite loss .* the last good checkpoint is "
                                       r"\S+step-00000002"):
        distill(r, tmp_path / "nan")
    assert not (tmp_path / "nan").exists()


@pytest.mark.slow
@pytest.mark.parametrize("backbone,real,checkpointing", [("pyramidal", "data", "true"), ("original", "teacher", "false")])
def test_adversarial_distillation_trains_heads_and_generator_and_exports_only_the_generator(tmp_path, backbone, real,
                                                                                           checkpointing):
    extra = ["distill.teacher=tiny"] if backbone == "original" else []
    r = recipe("distill.method=adv", f"distill.adv.backbone={backbone}", f"distill.adv.real={real}",
               "distill.teach_weight=0", "distill.adv.r1_weight=0.1", "train.checkpoint.every=3",
               f"train.gradient_checkpointing={checkpointing}", *extra)
    out = distill(r, tmp_path / "adv")
    rec = records(out)
    assert all("disc_loss" in x and x["disc_loss"] >= 0 for x in rec)
    gen = [x for x in rec if "adv_loss" in x]
    assert len(gen) == 3 and all(x["rec_loss"] >= 0 and "r1" in x for x in gen)
    ckpt = tmp_path / "adv.run" / "checkpoints" / "step-00000006"
    assert (ckpt / "discriminator-model.safetensors").is_file()                     # heads saved with the run
    heads = load_file(ckpt / "discriminator-model.safetensors")
    assert heads and all(k.startswith("heads.") for k in heads)
    assert not any("heads" in k for k in transformer(out))                         # not with the model
    assert load_model(out).spec.distilled.method == "adv"


def test_backward_simulation_runs_the_earlier_steps_without_gradient():
    """The loop's rollout gives step k's input with no graph; step k's estimate then carries one."""
    import contextlib
    from types import SimpleNamespace

    from pyrawan.commands.distill_loop import rollout, student_estimate
    from pyrawan.pyramid.config import PyramidConfig
    from pyrawan.pyramid.sampler import default_fewstep_levels

    model = load_model("tiny").components.transformer.train()
    engine = SimpleNamespace(model=model, input_dtype=torch.float32, autocast=contextlib.nullcontext)
    loop = SimpleNamespace(generator=SimpleNamespace(engine=engine), pyramid=PyramidConfig(num_stages=3),
                           levels=default_fewstep_levels((2, 2, 1)))
    text = torch.randn(1, 8, 32)
    noise = torch.randn(1, 16, 2, 2, 2)
    for k in (0, 2, 4):
        x, step = rollout(loop, noise, text, k, [torch.Generator().manual_seed(0)])
        assert not x.requires_grad and step.index == k
        x_hat = student_estimate(loop, x, step, text)
        assert x_hat.requires_grad
        x_hat.sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        model.zero_grad()
