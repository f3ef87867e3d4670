"""Pyramidal Patchification: the PPF transformer, its identity geometry, convert/sample/flops, finetune and DMD."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_commands import in_process
from test_finetune_dist import close, kill_after_checkpoint, launch, metrics, weights

from pyrawan.errors import InputError
from pyrawan.eval.flops import WanArch, flops_report, timestep_embed_flops
from pyrawan.models.artifact import load_model
from pyrawan.models.loading import load_component
from pyrawan.models.ppf import (PPFWanTransformer, from_base, is_ppf, shuffle, stage_factors, stage_of,
                                transformer_from_config, unshuffle)
from pyrawan.models.presets import TRANSFORMER_ARCHS, build_transformer
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.sampler import sample_fewstep, sample_multistep
from pyrawan.recipe import load_recipe
from pyrawan.train.model import match_kind, output_pyramid

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
BOUNDS = (0.3, 0.7)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    base = build_transformer("tiny", seed=3).eval()
    return base, from_base(base, stage_factors(3), BOUNDS)


def call(model, x, t, text):
    return model(hidden_states=x, timestep=torch.as_tensor(t, dtype=torch.float32), encoder_hidden_states=text,
                 return_dict=False)[0]


def pyrawan(*args, cwd: Path, rc: int = 0) -> subprocess.CompletedProcess:
    """``pyrawan ARGS`` in this process (the CLI as a process is tested in test_cli.py)."""
    proc = in_process(args, cwd)
    assert proc.returncode == rc, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


# ---- the transformer --------------------------------------------------------------------------------------

def test_unshuffle_folds_blocks_with_frame_zero_alone_and_shuffle_inverts_it():
    x = torch.randn(2, 3, 9, 8, 8)
    for f in stage_factors(3):
        assert torch.equal(shuffle(unshuffle(x, f), f), x)
    folded = unshuffle(x, (2, 2, 2))                                      # [2, 24, 5, 4, 4]
    assert folded.shape == (2, 24, 5, 4, 4)
    assert torch.equal(folded[:, :8, 0], x[:, 0, 0:1, :, :].expand(-1, 2, -1, -1)               # channel 0, frame 0 x2
                       .reshape(2, 2, 4, 2, 4, 2).permute(0, 1, 3, 5, 2, 4).reshape(2, 8, 4, 4))
    assert torch.equal(folded[:, 0, 1], x[:, 0, 1, 0::2, 0::2]) and torch.equal(folded[:, 4, 1], x[:, 0, 2, 0::2, 0::2])


@pytest.mark.parametrize("stage", [1, 2])
def test_averaging_init_is_the_pretrained_model_on_the_pooled_latent(models, tiny_text, stage):
    """At init, stage i = U(Wan(D x)) with Haar D (average) and U (repeat): exact on a piecewise-constant latent."""
    base, ppf = models
    haar = PyramidConfig(3, BOUNDS).resize
    down = up = lambda v: v                                                  # noqa: E731
    for _ in range(stage):
        down = (lambda d: lambda v: haar.down(d(v)))(down)
        up = (lambda u: lambda v: u(haar.up(v)))(up)
    t = [500.0, 600.0] if stage == 1 else [800.0, 950.0]
    with torch.no_grad():
        z = torch.randn(2, 16, *[(5, 8, 8), (3, 4, 4), (2, 2, 2)][stage], generator=torch.Generator().manual_seed(stage))
        want = up(call(base, z, t, tiny_text[0]))
        got = call(ppf, up(z), t, tiny_text[0])                            # piecewise constant over the f-blocks
        assert torch.allclose(got, want, atol=2e-5), (got - want).abs().max()
        x = torch.randn(2, 16, 5, 8, 8)                                      # any latent: PPF = U Wan D at init
        assert torch.allclose(call(ppf, x, t, tiny_text[0]), up(call(base, down(x), t, tiny_text[0])), atol=2e-5)


def test_stage_zero_is_the_pretrained_model_and_each_sample_runs_at_its_own_stage(models, tiny_text, tiny_latents):
    base, ppf = models
    text = tiny_text[0]
    with torch.no_grad():
        assert torch.equal(call(ppf, tiny_latents, [100.0, 300.0], text), call(base, tiny_latents, [100.0, 300.0], text))
        mixed = call(ppf, tiny_latents, [100.0, 900.0], text)
        alone = [call(ppf, tiny_latents[i:i + 1], [t], text[i:i + 1]) for i, t in enumerate([100.0, 900.0])]
    assert torch.allclose(mixed, torch.cat(alone), atol=1e-6)
    assert not torch.allclose(mixed[1:], call(base, tiny_latents[1:], [900.0], text[1:]), atol=1e-3)
    assert stage_of(torch.tensor([1.0, 300.0, 300.01, 700.0, 700.01, 1000.0]), BOUNDS).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(InputError, match="one noise level per sample"):
        call(ppf, tiny_latents, torch.tensor([[100.0] * 16 + [900.0] * 16] * 2), text)


def test_every_stage_parameter_is_in_the_graph_of_any_batch(models, tiny_text, tiny_latents):
    """DDP needs every trainable parameter in each step's graph: unused stages join with weight 0."""
    ppf = from_base(models[0], stage_factors(3), BOUNDS).train()
    call(ppf, tiny_latents, [100.0, 200.0], tiny_text[0]).square().mean().backward()
    grads = {n: p.grad for n, p in ppf.named_parameters() if n.startswith(("ppf_", "patch_embedding", "proj_out"))}
    assert all(g is not None for g in grads.values())
    assert float(grads["ppf_embeddings.0.weight"].abs().sum()) == 0.0 and float(grads["patch_embedding.weight"].abs().sum()) > 0
    assert float(grads["ppf_level_embedding"][0].abs().sum()) > 0 and float(grads["ppf_level_embedding"][1:].abs().sum()) == 0


def test_a_ppf_model_saves_and_loads_as_its_own_class(models, tmp_path, tiny_text, tiny_latents):
    ppf = models[1]
    ppf.save_pretrained(tmp_path / "transformer", safe_serialization=True)
    loaded = load_component("transformer", tmp_path, "transformer", "cpu", torch.float32)
    assert isinstance(loaded, PPFWanTransformer) and loaded.config.ppf_boundaries == list(BOUNDS)
    with torch.no_grad():
        t = [150.0, 850.0]
        assert torch.allclose(call(loaded, tiny_latents, t, tiny_text[0]), call(ppf, tiny_latents, t, tiny_text[0]), atol=1e-5)
    with torch.device("meta"):
        assert is_ppf(transformer_from_config(dict(ppf.config)))
    with pytest.raises(InputError, match="already a PPF model"):
        from_base(ppf, stage_factors(3), BOUNDS)


def test_token_counts_and_flops_per_stage_equal_the_resolution_pyramids():
    """The paper's latent 21x56x104: 30,576 / 4,004 / 546 tokens at every stage, for both kinds."""
    with torch.device("meta"):
        ppf = PPFWanTransformer(ppf_factors=stage_factors(3), ppf_boundaries=BOUNDS, **TRANSFORMER_ARCHS["wan1.3b"])
        x = torch.empty(1, 16, 21, 56, 104)
        tokens = [ppf.patch_embedding(x)] + [e(unshuffle(x, f)) for e, f in zip(ppf.ppf_embeddings, stage_factors(3)[1:])]
    assert [t.shape[2:].numel() for t in tokens] == [30576, 4004, 546]
    ppf_report = flops_report("wan1.3b", (21, 56, 104), 3, ppf=True)
    res_report = flops_report("wan1.3b", (21, 56, 104), 3)
    assert [s["tokens"] for s in ppf_report["stages"]] == [s["tokens"] for s in res_report["stages"]] == [30576, 4004, 546]
    for a, b in zip(ppf_report["stages"], res_report["stages"]):
        assert 1.0 <= a["tflops_per_forward"] / b["tflops_per_forward"] < 1.01       # wider embedding and head only
    tiny = dict(TRANSFORMER_ARCHS["tiny"], ppf_factors=stage_factors(3), ppf_boundaries=list(BOUNDS))
    analytic = flops_report(tiny, (5, 8, 8), 3, ppf=True, text_len=16)
    meta = flops_report(tiny, (5, 8, 8), 3, ppf=True, text_len=16, method="meta")
    extra = timestep_embed_flops(WanArch.from_config(tiny, text_len=16))     # what the formula leaves out
    for a, m in zip(analytic["stages"], meta["stages"]):                      # the meta count runs the stage's module
        assert (m["tflops_per_forward"] - a["tflops_per_forward"]) * 1e12 == pytest.approx(extra, rel=1e-6)


def test_latency_runs_each_ppf_stage_on_the_full_latent(models):
    from pyrawan.eval.latency import measure_latency

    ppf = models[1]
    calls = []
    hooks = [m.register_forward_hook(lambda m, a, o, i=i: calls.append((i, tuple(a[0].shape[1:]))))
             for i, m in enumerate([ppf.patch_embedding, *ppf.ppf_embeddings])]
    try:
        rows = measure_latency(ppf, [(5, 8, 8), (3, 4, 4), (2, 2, 2)], text_len=16, repeats=1, warmup=0)
    finally:
        for h in hooks:
            h.remove()
    assert [r["tokens"] for r in rows] == [80, 12, 2] and {r["timesteps"] for r in rows} == {"per-sample (PPF)"}
    assert calls == [(0, (16, 5, 8, 8)), (1, (128, 3, 4, 4)), (2, (1024, 2, 2, 2))]


# ---- identity geometry: no jumps ---------------------------------------------------------------------------

def test_a_ppf_pyramid_samples_the_ordinary_flow_without_jumps():
    """Stages are intervals of one noise axis: 2-2-2 on a PPF pyramid is one Euler chain over their grids."""
    ppf = PyramidConfig(3, BOUNDS, kind="ppf")
    assert ppf.shapes((5, 8, 8)) == [(5, 8, 8)] * 3 and ppf.token_shapes((5, 8, 8))[2] == (2, 2, 2)
    assert [float(v[0]) for v in ppf.levels(1, 5)] == [0.3, 0.7] and float(ppf.levels(1, 5, top=True)[1][0]) == 1.0
    seen = []

    def velocity(x, sigma):
        seen.append(round(float(sigma[0]), 6))
        return 0.3 * x + sigma.float().view(1, 1, -1, 1, 1)

    noise = torch.randn(1, 4, 5, 8, 8)
    out = sample_multistep(velocity, noise, ppf, steps=(2, 2, 2), generator=torch.Generator().manual_seed(0))
    grid = [1.0, 0.85, 0.7, 0.5, 0.3, 0.15, 0.0]
    assert seen == grid[:-1]
    x = noise
    for now, nxt in zip(grid, grid[1:]):
        x = x + (nxt - now) * velocity(x, torch.full((5,), now, dtype=torch.float64))
    assert torch.allclose(out, x, atol=1e-6)
    few = sample_fewstep(lambda x, s: x - 0.2, noise, ppf, [[1.0], [1.0], [1.0]], generator=torch.Generator().manual_seed(0))
    g, x0 = torch.Generator().manual_seed(0), torch.full_like(noise, 0.2)      # stage 2 at sigma = 1: x0 = 0.2
    for sigma in (0.7, 0.3):                                                 # re-noise ordinarily, estimate again
        x = (1 - sigma) * x0 + sigma * torch.randn(noise.shape, generator=g)
        x0 = x - sigma * (x - 0.2)
    assert torch.allclose(few, x0, atol=1e-6)
    assert torch.equal(ppf.resize.couple_noise(noise), noise)


# ---- commands ----------------------------------------------------------------------------------------------

def test_convert_ppf_then_sample_and_eval_flops(tmp_path):
    import shutil

    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    pyrawan("convert", "recipes/tiny.yaml", "--ppf", "-o", "P", cwd=tmp_path)
    spec = json.loads((tmp_path / "P" / "pyramid.json").read_text())
    assert spec["kind"] == "ppf" and spec["stage_latents"] == [[5, 8, 8]] * 3
    config = json.loads((tmp_path / "P" / "transformer" / "config.json").read_text())
    assert config["_class_name"] == "PPFWanTransformer" and config["ppf_factors"] == [[1, 1, 1], [2, 2, 2], [4, 4, 4]]
    pyrawan("sample", "--model", "P", "--prompt", "a red square", "--schedule", "2-2-2", "-o", "S", cwd=tmp_path)
    assert json.loads((tmp_path / "S" / "manifest.json").read_text())["metrics"]["forwards_per_video"] == 12
    flops = json.loads(pyrawan("eval", "flops", "P", "-o", "F", cwd=tmp_path).stdout and
                       (tmp_path / "F" / "flops.json").read_text())
    assert flops["ppf"] is True and [s["tokens"] for s in flops["stages"]] == [80, 12, 2]
    loaded = load_model(tmp_path / "P")
    with pytest.raises(InputError, match="kind: base 'ppf' vs recipe 'resolution'"):
        output_pyramid(load_recipe("tiny-finetune", [f"base={tmp_path / 'P'}"]), loaded.spec)
    plain = load_model("tiny")
    match_kind(plain.components, loaded.spec, "tiny")                       # finetune of a plain base converts it
    assert isinstance(plain.components.transformer, PPFWanTransformer)
    with pytest.raises(InputError, match="is a PPF model but the recipe's pyramid.kind is 'resolution'"):
        match_kind(loaded.components, loaded.spec.model_copy(update={"kind": "resolution"}), "P")


# ---- training: finetune (resume, two processes) and DMD ------------------------------------------------------

PPF_FT = ["tiny-finetune", "pyramid.kind=ppf", "train.steps=20", "train.optimizer.schedule=constant",
          "train.checkpoint.every=10", "train.validation.every=10", "train.grad_accum=2"]


@pytest.fixture(scope="module")
def ppf_reference(tmp_path_factory) -> Path:
    """PPF finetune of the plain tiny model (converted on the fly), one process, uninterrupted."""
    work = tmp_path_factory.mktemp("ppf_reference")
    launch(*PPF_FT, "-o", "single", cwd=work)
    return work / "single"


@pytest.mark.slow
def test_ppf_finetune_learns_every_stage_and_a_killed_run_resumes_bit_identically(ppf_reference, tmp_path):
    val = metrics(ppf_reference, "validation", "val_loss_stage")
    assert len(val) == 3 and all(b < a for a, b in zip(val[0], val[-1])), val
    assert json.loads((ppf_reference / "pyramid.json").read_text())["kind"] == "ppf"
    assert "ppf_embeddings.1.weight" in weights(ppf_reference)
    args = [*PPF_FT, "-o", "B"]
    kill_after_checkpoint(args, tmp_path, tmp_path / "B", 10)
    resumed = launch(*args, "--resume", cwd=tmp_path)
    assert re.search(r"resumed from \S+step-00000010 \(step 10\)", resumed.stdout + resumed.stderr)  # not from 0
    a, b = weights(ppf_reference), weights(tmp_path / "B")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert metrics(ppf_reference, "train", "loss") == metrics(tmp_path / "B", "train", "loss")


@pytest.mark.slow
def test_two_ddp_processes_train_a_ppf_model_like_one(ppf_reference, tmp_path):
    """Every micro-batch stage group leaves the other stages' modules unused: DDP must still reduce."""
    launch(*PPF_FT, "train.engine=ddp", "train.grad_accum=1", "-o", "two", cwd=tmp_path, procs=2)
    assert close(metrics(ppf_reference, "train", "loss"), metrics(tmp_path / "two", "train", "loss"))
    a, b = weights(ppf_reference), weights(tmp_path / "two")
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)


@pytest.mark.slow
def test_ppf_dmd_distills_against_the_original_model_and_samples_in_five_forwards(tmp_path, transformer_batches):
    from pyrawan.commands.distill import run
    from pyrawan.train.synthetic import for_recipe

    r = load_recipe("tiny-dmd", ["pyramid.kind=ppf", "distill.variant=ot", "distill.teacher=tiny", "train.lora.enabled=false",
                                 "train.checkpoint.every=0", "train.steps=6", "distill.generator_every=2"], kind="distill")
    out = run(r, tmp_path / "dmd", source=for_recipe(r, items=12), show_progress=False)
    loaded = load_model(out)
    assert loaded.spec.kind == "ppf" and isinstance(loaded.components.transformer, PPFWanTransformer)
    assert loaded.spec.distilled.variant == "ot" and loaded.spec.sampling.guidance == 1.0
    tuned, start = load_file(out / "transformer" / "diffusion_pytorch_model.safetensors"), from_base(
        load_model("tiny").components.transformer, stage_factors(3), loaded.spec.boundaries).state_dict()
    assert any(not torch.equal(tuned[k], start[k]) for k in tuned if k.startswith("ppf_"))     # coarse stages learn
    pyrawan("sample", "--model", out, "--prompt", "a red square", "-o", tmp_path / "S", cwd=tmp_path)
    assert json.loads((tmp_path / "S" / "manifest.json").read_text())["metrics"]["forwards_per_video"] == 5
    batches = transformer_batches(PPFWanTransformer, ["sample", "--model", out, "--prompt", "a red square",
                                                      "-o", tmp_path / "counted"])
    assert batches == [1] * 5                                            # five steps, no guidance batch
