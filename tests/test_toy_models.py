"""The toy preset: shipped weights match their recorded hashes and load; the quick demo path runs."""
from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKLWan

from pyrawan.errors import RunError
from pyrawan.fsutil import sha256_file
from pyrawan.models import toy
from pyrawan.models.presets import TRANSFORMER_ARCHS, build_preset


# Measured on the shipped weights (docs/toy-world.md); the floors leave room for float differences
# between machines. The old base_dim-8 VAE scored colour 0.00, a random one fails detection.
VAE_FLOOR = {"detection": 0.95, "colour": 0.75, "shape": 0.3, "direction": 0.9}   # measured 1.00 / 0.89 / 0.50 / 1.00
TEACHER_FLOOR = {"detection": 0.9, "colour": 0.4}   # measured 1.00 / 0.57 (3 prompts, 20 steps)


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
    from diffusers import WanTransformer3DModel

    def plain(config) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dict(config).items() if not k.startswith("_")}

    # FLOP counts and check_positions read the arch: it must build exactly the shipped transformer
    assert plain(WanTransformer3DModel(**toy.TOY_TRANSFORMER).config) == plain(toy.weights_index()["transformer"]["config"])
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


@pytest.mark.slow
def test_quick_demo_runs(tmp_path, monkeypatch):
    """The rows are eval artifacts of `eval quality`'s code and the table is `eval compare`'s, with intervals."""
    from pyrawan.commands import demo
    from pyrawan.manifest import verify

    monkeypatch.chdir(tmp_path)
    rows = demo.run(tmp_path / "demo", quick=True)
    assert [r["row"] for r in rows][0] == "teacher" and len(rows) == 4
    assert rows[0]["cost_ratio"] == pytest.approx(1.0) and rows[0]["cost_unit"] == "tflops"
    assert all(r["cost_ratio"] < 0.5 for r in rows[1:])
    for r in rows:                                    # quick: one seed set of two prompts per row
        for name in ("toybench_overall", "toybench_detection", "toybench_fd"):
            ci = r["metrics"][name]
            assert ci["n"] == 2 and ci["low"] <= ci["mean"] <= ci["high"], (r["row"], name)
        assert 0.0 <= r["metrics"]["toybench_overall"]["mean"] <= 1.0
        assert verify(tmp_path / "demo" / r["eval"]) == []
    assert all(r["metrics"]["toybench_overall"]["differs"] is None for r in rows[1:])   # too few videos to call it
    body = json.loads((tmp_path / "demo" / "eval-2" / "metrics.json").read_text())
    assert body["kind"] == "quality" and body["coupled_noise"] is True and body["label"] == "pyramid, finetuned"
    md = (tmp_path / "demo" / "compare" / "compare.md").read_text()
    assert md.startswith("Baseline: teacher.") and "| pyramid, finetuned (cheap) | 1-1-1 | 2 |" in md
    assert "Warning" not in md                        # every row scored the same (prompt, seed) pairs
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert len(saved["rows"]) == 4 and saved["figures"] == ["compare/quality_vs_cost.png", "frames.png"]
    for name in saved["figures"]:
        assert (tmp_path / "demo" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_rows_pair_each_seed_set_s_prompts_with_its_own_noise_seeds():
    from pyrawan.commands.demo import DemoSizes, demo_prompts, row_videos

    prompts, seeds = row_videos(DemoSizes(prompts=3, seed_sets=2), seed=5)
    assert prompts == demo_prompts(3, 0) + demo_prompts(3, 1)
    assert seeds == [5, 6, 7, 1005, 1006, 1007]


def test_demo_prompts_differ_between_seed_sets_and_parse():
    from pyrawan.commands.demo import DEMO_PROMPTS, demo_prompts
    from pyrawan.toy.world import parse_caption

    first, second = demo_prompts(32, 0), demo_prompts(32, 1)
    assert first[:16] == list(DEMO_PROMPTS) and len(set(first)) > 28 and len(set(second)) > 28
    assert first != second and demo_prompts(32, 1) == second
    for prompt in first + second:
        parse_caption(prompt)


@pytest.mark.slow
def test_quick_demo_takes_resizer_and_definition(tmp_path):
    from pyrawan.commands import demo

    rows = demo.run(tmp_path / "demo", quick=True, resizer="dct", stage_data=1, finetune_steps=2,
                    boundaries="pyramid-flow", align_weight=0.5, videos=10)
    assert len(rows) == 4
    assert len((tmp_path / "demo" / "data" / "metadata.csv").read_text().strip().splitlines()) == 1 + 10
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert saved["sizes"]["resizer"] == "dct" and saved["sizes"]["stage_data"] == 1
    assert saved["sizes"]["finetune_steps"] == 2 and saved["sizes"]["boundaries"] == "pyramid-flow"
    for model in ("pyramid", "finetuned"):
        spec = json.loads((tmp_path / "demo" / model / "pyramid.json").read_text())
        assert spec["resizer"] == "dct" and spec["stage_data"] == 1, spec
        assert spec["boundaries"] == pytest.approx([0.5858, 0.9412], abs=1e-3)     # not the calibrated ones
    manifest = json.loads((tmp_path / "demo" / "finetuned" / "manifest.json").read_text())
    assert '"align_weight": 0.5' in json.dumps(manifest)
    calibration = json.loads((tmp_path / "demo" / "calibration" / "calibration.json").read_text())
    assert calibration["definition"] == 1


def test_demo_options_are_checked(tmp_path):
    from typer.testing import CliRunner

    from pyrawan.cli import app

    result = CliRunner().invoke(app, ["demo", "--resizer", "lanczos", "-o", str(tmp_path / "d")])
    assert result.exit_code != 0 and "haar, dct or db4" in result.output
    result = CliRunner().invoke(app, ["demo", "--boundaries", "pyramid", "-o", str(tmp_path / "d")])
    assert result.exit_code != 0 and "calibrated, uniform or pyramid-flow" in result.output
    result = CliRunner().invoke(app, ["demo", "--align-weight", "-1", "-o", str(tmp_path / "d")])
    assert result.exit_code != 0 and "--align-weight" in result.output
    result = CliRunner().invoke(app, ["demo", "--videos", "0", "-o", str(tmp_path / "d")])
    assert result.exit_code != 0 and "--videos 0" in result.output
    assert not (tmp_path / "d").exists()


def test_demo_cli_passes_every_option_on(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pyrawan.cli import app
    from pyrawan.commands import demo

    seen = {}
    monkeypatch.setattr(demo, "run", lambda out, **kwargs: seen.update(kwargs, out=out))
    result = CliRunner().invoke(app, ["demo", "--quick", "--videos", "12", "--steps", "5", "--seed-sets", "2",
                                      "--prompts", "3", "--resizer", "dct", "-o", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert seen["videos"] == 12 and seen["finetune_steps"] == 5 and seen["seed_sets"] == 2 and seen["prompts"] == 3
    assert seen["resizer"] == "dct" and seen["quick"] is True and seen["out"] == tmp_path / "d"


@pytest.mark.slow
def test_shipped_vae_keeps_colour_and_shape():
    """The shipped VAE's reconstructions of unseen toy clips pass ToyBench (the teacher's ceiling)."""
    from pyrawan.toy.bench import score_set
    from pyrawan.toy.train_vae import render_pool

    vae = build_preset("toy").vae
    videos, captions, _ = render_pool(8, seed=7, held_out=True)
    with torch.no_grad():
        recon = vae.decode(vae.encode(videos).latent_dist.mode()).sample.clamp(-1, 1)
    scores = score_set(list(((recon + 1) / 2).permute(0, 2, 1, 3, 4)), captions)["scores"]
    assert scores["detection"] >= VAE_FLOOR["detection"], scores
    assert scores["colour"] >= VAE_FLOOR["colour"], scores
    assert scores["shape"] >= VAE_FLOOR["shape"], scores
    assert scores["direction"] >= VAE_FLOOR["direction"], scores


@pytest.mark.slow
def test_default_model_is_the_toy_teacher_and_follows_prompts(tmp_path):
    """`pyrawan sample` with no --model samples the shipped teacher; ToyBench finds what was asked."""
    from typer.testing import CliRunner

    from pyrawan.cli import app
    from pyrawan.data.video import read_video
    from pyrawan.toy.bench import score_set

    prompts = ["a large red square slowly moving right on a plain black background",
               "a large yellow circle quickly moving down on a plain gray background",
               "a medium blue triangle slowly moving up on a plain white background"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    result = CliRunner().invoke(app, ["sample", "--prompts", str(tmp_path / "prompts.txt"), "--schedule", "20",
                                      "-o", str(tmp_path / "s"), "--quiet"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "s" / "samples.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == prompts
    videos = [read_video(tmp_path / "s" / r["video"])[0] for r in records]
    scores = score_set(videos, prompts)["scores"]
    assert scores["detection"] >= TEACHER_FLOOR["detection"], scores
    assert scores["colour"] >= TEACHER_FLOOR["colour"], scores


def test_held_out_scenes_are_in_no_training_pool():
    """A pool is a prefix of every larger pool of its seed; held-out scenes come from another stream."""
    from pyrawan.toy.train_vae import pool_scenes

    assert pool_scenes(96, 3) == pool_scenes(512, 3)[:96]            # why another seed is not held out
    training = {scene for seed in range(6) for scene in pool_scenes(512, seed)}
    held = [scene for seed in range(6) for scene in pool_scenes(96, seed, held_out=True)]
    assert len(set(held)) == len(held) and not training & set(held)


def test_vae_training_batches_centre_the_object():
    from pyrawan.toy.train_vae import random_batch, render_pool

    pool, _, tracks = render_pool(6, seed=3)
    gen = torch.Generator().manual_seed(0)
    centred = random_batch(pool, tracks, 16, 5, gen, crop=32, centred=1.0)
    assert centred.shape == (16, 3, 5, 32, 32)
    background = centred.flatten(-2).median(-1).values[..., None, None]
    object_pixels = ((centred - background).abs().amax(1) > 0.3).flatten(1).sum(1)
    assert bool((object_pixels > 0).all())                 # every centred crop shows the object
    whole = random_batch(pool, tracks, 4, 17, gen, crop=64)
    assert whole.shape == (4, 3, 17, 64, 64)


@pytest.mark.slow
def test_vae_training_resumes_and_refuses_changed_arguments(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from pyrawan.errors import InputError
    from pyrawan.toy import train_vae
    from pyrawan.toy.train_vae import STATE_FILE, main

    args = ["--out", str(tmp_path / "v"), "--init", "shipped", "--decoder-only", "--pool", "2", "--batch", "1",
            "--crop", "32", "--holdout", "1", "--loss", "l1", "--decode", "mode", "--edge-weight", "1", "--minutes", "0",
            "--lr", "1e-4"]                                     # --minutes 0: the learning rate follows steps, not time
    draws, random_batch = [], train_vae.random_batch

    def killed_at_step_2(*a, **k):                             # a checkpoint is written before every step
        draws.append(1)
        if len(draws) == 3:
            raise KeyboardInterrupt
        return random_batch(*a, **k)

    monkeypatch.setattr(train_vae, "random_batch", killed_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        main(args + ["--steps", "4", "--save-every", "1e-9"])
    monkeypatch.undo()
    state = torch.load(tmp_path / "v" / STATE_FILE, weights_only=True)
    assert state["step"] == 2 and [e["step"] for e in state["log"]] == [0, 1]
    state["log"][0]["mse"] = 123.0                             # a mark only a resume carries over
    torch.save(state, tmp_path / "v" / STATE_FILE)
    main(args + ["--steps", "4", "--resume"])
    state = torch.load(tmp_path / "v" / STATE_FILE, weights_only=True)
    assert [e["step"] for e in state["log"]] == [0, 1, 2, 3] and state["log"][0]["mse"] == 123.0
    main([*args[:1], str(tmp_path / "straight"), *args[2:], "--steps", "4"])      # the same 4 steps in one go
    resumed, straight = (load_file(str(tmp_path / d / "vae.safetensors")) for d in ("v", "straight"))
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)            # bit-identical
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert report["steps"] == 4 and len(report["reconstruction"]["per_video"]) == 1
    config = json.loads((tmp_path / "v" / "config.json").read_text())
    assert config["latents_mean"] == toy.weights_index()["vae"]["config"]["latents_mean"]   # encoder frozen: same stats
    del state["args"]["motion_weight"]                         # a run saved before --motion-weight existed
    torch.save(state, tmp_path / "v" / STATE_FILE)
    with pytest.raises(InputError, match="--motion-weight 0.0 -> 1.0"):
        main(args + ["--motion-weight", "1", "--steps", "5", "--resume"])
    main(args + ["--steps", "5", "--resume"])                   # absent = the default it had then
    assert torch.load(tmp_path / "v" / STATE_FILE, weights_only=True)["step"] == 5
    with pytest.raises(InputError, match="--lr 0.0001 -> 0.001"):
        main([*args[:-1], "1e-3", "--steps", "6", "--resume"])
    with pytest.raises(InputError, match="holds no resumable"):
        main(["--out", str(tmp_path / "none"), "--resume"])
    main(["--out", str(tmp_path / "bench"), "--init", str(tmp_path / "v"), "--bench-only", "--holdout", "3"])
    bench = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert bench["intervals"]["shape"]["n"] == 3 and sum(g["videos"] for g in bench["by_shape_size"]) == 3


@pytest.mark.slow
def test_a_4x_spatial_vae_trains_and_its_factors_are_read_back(tmp_path):
    """``--spatial 4``: a new VAE with 16x16 latents per 64x64 frame, whose saved config says (4, 4)."""
    from pyrawan.models.arch import factors_of_vae_config
    from pyrawan.toy.train_vae import main

    main(["--out", str(tmp_path / "v4"), "--spatial", "4", "--base-dim", "4", "--pool", "2", "--batch", "1",
          "--crop", "32", "--holdout", "1", "--minutes", "0", "--steps", "1"])
    config = json.loads((tmp_path / "v4" / "config.json").read_text())
    assert factors_of_vae_config(config, "v4/config.json") == (4, 4) and len(config["latents_mean"]) == 16
    vae = AutoencoderKLWan(**config)
    assert vae.encode(torch.zeros(1, 3, 17, 64, 64)).latent_dist.mode().shape == (1, 16, 5, 16, 16)


@pytest.mark.slow
def test_probe_sees_the_shipped_teacher_read_colour_from_its_caption():
    """Changing the caption's colour raises the teacher's loss on held-out clips; the probe's captions parse."""
    from pyrawan.toy import world
    from pyrawan.toy.probe import altered, caption_sensitivity

    scene = world.Scene("circle", "red", "small", "up-left", "slow", "gray", "plain")
    for what, expect in (("direction", "down-right"), ("speed", "quickly"), ("colour", "cyan"), ("shape", "square")):
        text = altered(scene, what)
        assert expect in text and world.parse_caption(text) != scene.attributes()
    loss = caption_sensitivity(build_preset("toy"), n=8, sigmas=(0.8,))["0.8"]
    assert loss["colour"] > 1.3 * loss["true"] and loss["empty"] > loss["true"], loss


def test_explained_variance_of_a_two_group_shift():
    """Groups at +-1 with unit noise: the group means explain 1/2 of the variance; unnamed items are left out."""
    from pyrawan.toy.probe import explained_variance

    g = torch.Generator().manual_seed(0)
    shift = torch.tensor([1.0, -1.0]).repeat(2000)[:, None]
    z = shift + torch.randn(4000, 1, generator=g)
    values = ["a", "b"] * 2000
    assert explained_variance(z, values) == pytest.approx(0.5, abs=0.02)
    assert explained_variance(torch.cat([z, torch.full((50, 1), 99.0)]), values + [None] * 50) == \
        pytest.approx(explained_variance(z, values))


@pytest.mark.slow
def test_conditional_means_see_colour_in_the_shipped_teacher_and_nothing_in_a_blind_one():
    """At sigma = 1 the shipped teacher's red-vs-cyan contrast points along the data's; a model that
    predicts x0 = 0 whatever the caption has no contrast at all."""
    import numpy as np

    from pyrawan.models.vae import encode_video
    from pyrawan.toy import world
    from pyrawan.toy.probe import conditional_means

    stack = build_preset("toy")
    rng = np.random.default_rng(5)
    scenes = [world.Scene(**{**world.scene_dict(s), "colour": ("red", "cyan")[i % 2]})
              for i, s in enumerate(world.sample_scene(rng) for _ in range(24))]
    video = torch.stack([world.render(s, 17, 64, 64) for s in scenes]).permute(0, 2, 1, 3, 4) * 2 - 1
    with torch.no_grad():
        z = torch.cat([encode_video(stack.vae, video[i:i + 8]) for i in range(0, len(scenes), 8)])
    captions = [world.caption(s) for s in scenes]
    seen = conditional_means(stack, z, captions, n=8)
    assert seen["colour"]["cosine"] > 0.5 and seen["colour"]["norm_ratio"] > 0.3, seen

    class Blind(torch.nn.Module):
        def forward(self, hidden_states, **_):
            return (hidden_states,)                 # v = x_1, so x0_hat = 0 for every caption

    stack.transformer = Blind()
    blind = conditional_means(stack, z, captions, n=8)
    assert all(r["norm_ratio"] == 0 for r in blind.values()), blind


def test_probe_refuses_a_folder_that_is_not_a_cache_before_loading_a_model(tmp_path):
    from pyrawan.toy.probe import main

    with pytest.raises(SystemExit, match="is not a latent cache"):
        main(["--model", str(tmp_path / "no-model"), "--cache", str(tmp_path)])


@pytest.mark.slow
def test_write_base_gives_a_loadable_toy_stack_with_another_patch(tmp_path):
    """A base for pretraining a teacher of another patch: shipped VAE and text encoder, the asked transformer weights."""
    from diffusers import WanTransformer3DModel
    from safetensors.torch import save_file

    from pyrawan.models.artifact import load_model
    from pyrawan.models.loading import load_components
    from pyrawan.toy.ship import write_base

    config = {**toy.TOY_TRANSFORMER, "patch_size": (1, 2, 2)}
    torch.manual_seed(3)
    state = WanTransformer3DModel(**config).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "ema.safetensors"))
    stack = load_components(str(write_base(tmp_path / "base", patch=2, weights=tmp_path / "ema.safetensors")))
    assert tuple(stack.transformer.config.patch_size) == (1, 2, 2)
    spec = load_model(str(tmp_path / "base")).spec             # a one-stage artifact: samples at the toy size
    assert (spec.num_stages, spec.video.frames, spec.video.height, spec.stage_latents) == (1, 17, 64, [[5, 8, 8]])
    assert (spec.sampling.schedule, spec.sampling.guidance) == ("50", 3.0)
    assert all(torch.equal(v, state[k]) for k, v in stack.transformer.state_dict().items())
    shipped = build_preset("toy")
    assert all(torch.equal(v, shipped.vae.state_dict()[k]) for k, v in stack.vae.state_dict().items())
    text = "a small red circle slowly moving up-left on a plain gray background"
    assert stack.tokenizer(text).input_ids == shipped.tokenizer(text).input_ids


@pytest.mark.slow
def test_write_base_warm_starts_another_patch_from_the_shipped_teacher(tmp_path):
    """Blocks, time and text embedders come from the 1x1 teacher; only the patch-shaped layers stay seeded."""
    from safetensors.torch import load_file

    from pyrawan.models.loading import load_components
    from pyrawan.models.toy import WEIGHTS_DIR
    from pyrawan.toy.ship import write_base

    shipped = load_file(str(WEIGHTS_DIR / "transformer.safetensors"))
    state = load_components(str(write_base(tmp_path / "base", patch=2, warm_from=WEIGHTS_DIR / "transformer.safetensors"))
                            ).transformer.state_dict()
    fresh = load_components(str(write_base(tmp_path / "fresh", patch=2))).transformer.state_dict()
    differ = {k for k in state if state[k].shape != shipped[k].shape}
    assert differ == {"patch_embedding.weight", "proj_out.weight", "proj_out.bias"}
    assert all(torch.equal(state[k], fresh[k]) for k in differ)                   # seeded, as from scratch
    assert all(torch.equal(state[k], shipped[k]) for k in state if k not in differ)
    assert not torch.equal(state["blocks.0.attn1.to_q.weight"], fresh["blocks.0.attn1.to_q.weight"])
    from pyrawan.errors import InputError
    from pyrawan.toy.ship import warm_start

    with pytest.raises(InputError, match="no tensor of the given file matches"):   # e.g. a VAE's weights given
        warm_start(torch.nn.Linear(2, 2), {"other.weight": torch.zeros(3)})


def test_vae_motion_error_sees_frame_to_frame_wobble_not_steady_error():
    """A reconstruction off by the same amount in every frame has no motion error; one that flickers does."""
    from pyrawan.toy.train_vae import motion_error, object_weight

    x = -torch.ones(1, 3, 9, 16, 16)
    for t in range(9):
        x[:, :, t, 4:10, t:t + 6] = 1.0                                     # a square moving right
    weight = object_weight(x, 3.0)
    steady = x + 0.2
    flicker = x + 0.2 * torch.tensor([1.0, -1.0] * 4 + [1.0]).view(1, 1, 9, 1, 1)
    assert motion_error(x, x, weight) == 0
    assert motion_error(steady, x, weight) < 1e-6
    assert motion_error(flicker, x, weight) > 0.3
    assert (steady - x).abs().mean() == pytest.approx((flicker - x).abs().mean())   # same per-frame error


def test_vae_learning_rate_follows_time_or_steps():
    from pyrawan.toy.train_vae import learning_rate

    assert learning_rate(1.0, 0, 0.0, 10.0, 100) == pytest.approx(1 / 50)          # warm-up
    assert learning_rate(1.0, 60, 5.0, 10.0, 100) == pytest.approx(0.55)            # half the time: mid-cosine
    assert learning_rate(1.0, 60, 99.0, 0.0, 120) == pytest.approx(0.55)            # minutes 0: half the steps
    assert learning_rate(1.0, 500, 0.0, 0.0, 100) == pytest.approx(0.1)             # floor at 10 %


@pytest.mark.slow
def test_the_caption_probe_reads_a_model_artifact(tmp_path, capsys):
    """`python -m pyrawan.toy.probe --model ARTIFACT` (what a finetune writes) as well as a preset."""
    from pyrawan.models.artifact import load_model, save_model
    from pyrawan.models.pyramid_spec import recipe_pyramid
    from pyrawan.recipe import load_recipe
    from pyrawan.toy import probe

    save_model(tmp_path / "model", load_model("toy").components, recipe_pyramid(load_recipe("toy")))
    probe.main(["--model", str(tmp_path / "model"), "--n", "2"])
    loss = json.loads(capsys.readouterr().out)["loss"]
    assert set(loss) == {"0.5", "0.8", "0.95"}
    assert all(set(v) == {"true", "empty", "direction", "speed", "colour", "shape"} and v["colour"] > v["true"]
               for v in loss.values())
