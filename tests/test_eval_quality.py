"""``eval quality``: coupled noise, pairing checks, validation loss, and the command end to end on the toy model."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_pyramid_sampler import oracle
from typer.testing import CliRunner

from pyrawan.cli import app
from pyrawan.errors import InputError
from pyrawan.eval.quality import SampleSet, check_pairing, score_sets
from pyrawan.manifest import verify
from pyrawan.models.generate import Plan, initial_noise
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.geometry import block_sizes
from pyrawan.pyramid.sampler import sample_multistep

VIDEO = {"frames": 17, "height": 64, "width": 64, "fps": 16}      # latent 5 x 8 x 8


def plan(pyramid: PyramidConfig, steps: tuple[int, ...]) -> Plan:
    return Plan(pyramid=pyramid, steps=steps, shift=1.0, guidance=1.0, negative_prompt="", levels=None, video=VIDEO,
                max_sequence_length=16)


def run(pyramid, steps, noise, x0_stages, first, stop_stage, stop_step):
    """Sample with the exact velocity of the one-point dataset; return (final, x after step stop_step of stop_stage)."""
    seen = {}
    shapes = pyramid.shapes(tuple(x0_stages[0].shape[-3:]))
    final = sample_multistep(oracle(pyramid, shapes, x0_stages, first), noise, pyramid, steps, 1.0,
                             torch.Generator().manual_seed(3),
                             lambda stage, j, x: seen.__setitem__((stage, j), x.clone()))
    return final, seen[(stop_stage, stop_step)]


@pytest.mark.parametrize("resizer", ["haar", "dct"])
def test_coupled_noise_puts_the_pyramid_on_the_one_stage_trajectory(resizer):
    """One-point data, exact velocity. With coupled noise the coarse stage of a 2-stage pyramid (boundary b)
    ends exactly at sqrt(m) D(x_b) / ((1 - b) sqrt(m) + b), where x_b is the one-stage sampler's latent at
    global level b (pyramid-math.md sections 3 and 5); both samplers then land on the same latent, the data."""
    b = 0.5
    two = PyramidConfig(num_stages=2, boundaries=(b,), resizer=resizer)
    one = PyramidConfig(num_stages=1)
    full_noise, _ = initial_noise(plan(one, (4,)), [7])
    coupled, _ = initial_noise(plan(two, (4, 4)), [7], coupled=True)
    assert torch.equal(coupled, two.resize.couple_noise(full_noise))

    x0 = torch.randn(1, 16, 5, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    stages = [x0, two.resize.down(x0)]
    final_one, x_b = run(one, (4,), full_noise.double(), [x0], 0, 0, 1)            # rho 1 -> .75 -> .5 = b
    final_two, coarse_end = run(two, (4, 4), coupled.double(), stages, 1, 1, 3)
    root_m = block_sizes(coarse_end.shape[2]).double().sqrt().view(1, 1, -1, 1, 1)
    expected = root_m * two.resize.down(x_b) / ((1 - b) * root_m + b)
    assert torch.allclose(coarse_end, expected, atol=1e-6), (coarse_end - expected).abs().max()   # levels are float32
    assert torch.allclose(final_one, x0, atol=1e-6) and torch.allclose(final_two, x0, atol=1e-6)

    uncoupled, _ = initial_noise(plan(two, (4, 4)), [7], coupled=False)             # drawn at the coarse stage
    _, other_end = run(two, (4, 4), uncoupled.double(), stages, 1, 1, 3)
    assert not torch.allclose(other_end, expected, atol=1e-2)


def fake_set(label="a", prompts=("p0", "p1"), seeds=(0, 1), shape=(16, 2, 4, 4), coupled=True, shift=0.0):
    latents = torch.zeros(len(prompts), *shape) + shift
    frames = torch.full((len(prompts), 5, 3, 16, 16), 0.5) + shift / 10
    return SampleSet(label=label, model="m", prompts=list(prompts), seeds=list(seeds), latents=latents, frames=frames,
                     videos=[None] * len(prompts), coupled=coupled)


def test_reference_with_other_seeds_prompts_or_sizes_is_refused_saying_what_differs():
    a = fake_set()
    with pytest.raises(InputError, match=r"seeds differ at 1 video\(s\), first at index 1: 1 vs 5"):
        check_pairing(a, fake_set("ref", seeds=(0, 5)))
    with pytest.raises(InputError, match="prompts differ"):
        check_pairing(a, fake_set("ref", prompts=("p0", "other")))
    with pytest.raises(InputError, match=r"latent size \(16, 2, 4, 4\) vs \(16, 2, 8, 8\)"):
        check_pairing(a, fake_set("ref", shape=(16, 2, 8, 8)))
    check_pairing(a, fake_set("ref"))


def test_paired_metrics_only_with_coupled_noise():
    records, notes = score_sets(fake_set(), fake_set("ref", shift=0.1), toybench=False)
    values = records[0]["values"]
    assert values["latent_mse"] == pytest.approx(0.01)
    assert values["pixel_psnr"] == pytest.approx(40.0)                  # frames differ by 0.01 everywhere
    assert values["temporal_flickering"] == 1.0
    records, notes = score_sets(fake_set(coupled=False), fake_set("ref"), toybench=False)
    assert "latent_mse" not in records[0]["values"] and "not applicable" in notes[-1]


class ZeroVelocity(torch.nn.Module):
    """Predicts v = 0, so the flow-matching loss is the mean square of the target."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = type("Config", (), {"patch_size": (1, 2, 2)})()

    def forward(self, hidden_states, timestep, encoder_hidden_states, return_dict=False, **kwargs):
        return (torch.zeros_like(hidden_states),)


class Cache:
    def __init__(self, n=3):
        g = torch.Generator().manual_seed(0)
        self.items = [torch.randn(16, 3, 4, 4, generator=g) for _ in range(n)]

    def __len__(self):
        return len(self.items)

    def latents(self, i):
        return [self.items[i]]

    def text(self, i):
        return torch.zeros(4, 8)


def test_validation_loss_per_stage_and_item():
    from pyrawan.eval.validation import validation_loss
    from pyrawan.train.data import StageDataset, validation_batches

    cache, pyramid, levels = Cache(), PyramidConfig(num_stages=2), (0.2, 0.8)
    losses = validation_loss(ZeroVelocity(), cache, pyramid, levels, seed=1, batch_size=2)
    assert set(losses) == {0, 1} and all(len(v) == 3 for v in losses.values())
    data = StageDataset(cache, [0, 1, 2], pyramid)
    for stage in (0, 1):
        batch = validation_batches(data, stage, levels, 1, 100)[0]       # every (item, level) in one batch
        _, _, target = batch.sample(pyramid)
        per = target.pow(2).flatten(1).mean(1).view(3, 2).mean(1)
        assert losses[stage] == pytest.approx(per.tolist(), rel=1e-6)
    assert validation_loss(ZeroVelocity(), cache, pyramid, levels, seed=1) == losses


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_eval_quality_on_sample_artifacts_end_to_end(tmp_path, one_thread):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a large red square slowly moving left on a plain black background\n"
                       "a medium blue circle quickly moving up on a plain white background\n")
    for name, schedule, seed in (("fast", 2, 0), ("slow", 6, 0), ("other", 2, 9)):
        r = cli("sample", "--model", "toy", "--prompts", prompts, "--schedule", schedule, "--seed", seed, "-q",
                "-o", tmp_path / name)
        assert r.exit_code == 0, r.output
    r = cli("eval", "quality", "--samples", tmp_path / "fast", "--reference", tmp_path / "slow", "-o", tmp_path / "q")
    assert r.exit_code == 0, r.output
    body = json.loads((tmp_path / "q" / "metrics.json").read_text())
    assert verify(tmp_path / "q") == []
    assert body["schedule"] == "2" and body["cost"]["tflops_per_video"] > 0 and len(body["videos"]) == 2
    for name in ("latent_psnr", "pixel_psnr", "pixel_ssim", "temporal_flickering", "motion_magnitude",
                 "toybench_overall"):
        s = body["summary"][name]
        assert s["n"] == 2 and s["low"] <= s["mean"] <= s["high"], name
        assert s["mean"] == pytest.approx(sum(v["values"][name] for v in body["videos"]) / 2)
    assert 0 < body["summary"]["pixel_ssim"]["mean"] < 1 and math.isfinite(body["summary"]["pixel_psnr"]["mean"])
    assert all((tmp_path / "q" / v["video"]).is_file() for v in body["videos"])
    r = cli("eval", "quality", "--samples", tmp_path / "fast", "--reference", tmp_path / "other", "-o", tmp_path / "bad")
    assert r.exit_code == 2 and "seeds differ" in r.output and not Path(tmp_path / "bad").exists()


@pytest.mark.slow
def test_eval_quality_samples_the_model_and_the_reference_with_the_same_noise(tmp_path, one_thread):
    """The toy teacher against itself: the same schedule gives identical videos (MSE 0, PSNR at the cap),
    a 2-step schedule gives a finite PSNR; the sampled videos are inside the artifact."""
    common = ["--reference", "toy", "--reference-schedule", "8", "--suite", "toy-2", "--seeds", "0,1", "--batch-size", "3", "-q"]
    r = cli("eval", "quality", "--model", "toy", "--schedule", "8", *common, "-o", tmp_path / "same")
    assert r.exit_code == 0, r.output
    same = json.loads((tmp_path / "same" / "metrics.json").read_text())
    assert [v["seed"] for v in same["videos"]] == [0, 1, 0, 1] and same["coupled_noise"] is True
    assert same["summary"]["latent_mse"]["mean"] == 0.0 and same["summary"]["pixel_psnr"]["mean"] == 100.0
    r = cli("eval", "quality", "--model", "toy", "--schedule", "2", *common, "-o", tmp_path / "two")
    assert r.exit_code == 0, r.output
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert 0 < two["summary"]["latent_mse"]["mean"] and two["summary"]["pixel_psnr"]["mean"] < 60
    assert two["cost"]["tflops_per_video"] == pytest.approx(same["cost"]["tflops_per_video"] * 2 / 8)
    assert two["cost"]["seconds_per_video"] > 0 and verify(tmp_path / "two") == []
    assert all(v["video"].startswith("samples/videos/") and (tmp_path / "two" / v["video"]).is_file()
               for v in two["videos"])
    assert len(list((tmp_path / "two" / "reference" / "latents").iterdir())) == 4


def test_quality_usage_errors(tmp_path):
    r = cli("eval", "quality", "-o", tmp_path / "x")
    assert r.exit_code == 2 and "needs --model M" in r.output
    r = cli("eval", "quality", "--model", "toy", "--suite", "toy-2", "--prompts", tmp_path / "p.txt", "-o", tmp_path / "x")
    assert r.exit_code == 2 and "not both" in r.output
    r = cli("eval", "quality", "--model", "toy", "--suite", "vbench", "-o", tmp_path / "x")
    assert r.exit_code == 2 and "toy-N" in r.output
    r = cli("eval", "quality", "--samples", tmp_path, "--seeds", "1", "-o", tmp_path / "x")
    assert r.exit_code == 2 and "already fixes the prompts" in r.output
    r = cli("eval", "quality", "--model", "toy", "--seeds", "0,x", "-o", tmp_path / "x")
    assert r.exit_code == 2 and "comma-separated" in r.output
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_eval_quality_shards_videos_across_torchrun_ranks(tmp_path):
    """Two ranks split 3 videos round robin; rank 0 writes one artifact equal to a single-process run."""
    import os
    import subprocess
    import sys

    args = ["eval", "quality", "--model", "toy", "--schedule", "2", "--reference", "toy", "--reference-schedule", "3",
            "--suite", "toy-3", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pyrawan",
           *args, "-o", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cli(*args, "-o", tmp_path / "one").exit_code == 0
    two, one = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("two", "one"))
    assert two["world_size"] == 2 and [v["index"] for v in two["videos"]] == [0, 1, 2]
    for a, b in zip(two["videos"], one["videos"]):
        assert a["prompt"] == b["prompt"] and a["video"] == b["video"]
        assert a["values"] == pytest.approx(b["values"], rel=1e-3, abs=1e-4)
    lines = (tmp_path / "two" / "samples" / "samples.jsonl").read_text().splitlines()
    assert [json.loads(x)["index"] for x in lines] == [0, 1, 2] and verify(tmp_path / "two") == []
    assert len(list((tmp_path / "two" / "reference" / "videos").iterdir())) == 3


def rendered_set(scenes, prompts):
    """A SampleSet of rendered toy scenes [N, 17, 3, 64, 64] with the given prompts."""
    from pyrawan.toy.world import render

    frames = torch.stack([render(s, 17, 64, 64) for s in scenes])
    return SampleSet(label="toy", model="m", prompts=list(prompts), seeds=list(range(len(prompts))),
                     latents=torch.zeros(len(prompts), 16, 5, 8, 8), frames=frames, videos=[None] * len(prompts))


def test_short_captions_are_judged_on_what_they_name_and_features_come_with_the_records():
    import numpy as np

    from pyrawan.eval.quality import toy_prompts
    from pyrawan.toy.bench import FEATURES
    from pyrawan.toy.world import caption, sample_scene

    scenes = [sample_scene(np.random.default_rng(k)) for k in range(2)]
    short = f"a {scenes[1].colour} {scenes[1].shape}"
    assert toy_prompts([caption(scenes[0]), short]) and not toy_prompts([short, "a photo of a cat"])
    records, _ = score_sets(rendered_set(scenes, [caption(scenes[0]), short]), features=True)
    full, named = records[0]["values"], records[1]["values"]
    assert {"toybench_colour", "toybench_speed", "toybench_direction"} <= set(full)
    assert "toybench_colour" in named and "toybench_shape" in named and "toybench_speed" not in named
    assert named["toybench_colour"] > 0.9                                  # the rendered colour is the named one
    assert all(len(r["features"]) == len(FEATURES) for r in records)
    assert "features" not in score_sets(rendered_set(scenes[:1], [short]))[0][0]


def test_fd_summary_against_a_folder_of_real_videos(tmp_path):
    import numpy as np

    from pyrawan.data.video import read_video
    from pyrawan.eval.quality_run import FD_METRIC, fd_summary
    from pyrawan.toy.bench import features_of, reference_fd
    from pyrawan.toy.world import make_dataset, sample_scene

    records = make_dataset(tmp_path / "real", 4, seed=3, height=64, width=64)
    real = features_of([read_video(tmp_path / "real" / name)[0] for name, _ in records])
    other = rendered_set([sample_scene(np.random.default_rng(50 + k)) for k in range(3)], ["-"] * 3)
    features = [f.tolist() for f in features_of(list(other.frames))] + [None]      # one video without frames
    entry = fd_summary(features, tmp_path / "real")[FD_METRIC]
    assert entry["mean"] == pytest.approx(reference_fd(np.asarray(features[:3]), real))
    assert entry["n"] == 3 and entry["missing"] == 1 and entry["higher_is_better"] is False
    assert 0 <= entry["low"] <= entry["high"] and math.isfinite(entry["high"])
    assert fd_summary(features[:1], tmp_path / "real")[FD_METRIC]["mean"] is None     # one video: no FD
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="--fd-reference"):
        fd_summary(features, tmp_path / "empty")


@pytest.mark.slow
def test_eval_quality_cli_scores_short_captions_and_adds_the_fd(tmp_path, one_thread):
    from pyrawan.toy.world import make_dataset

    make_dataset(tmp_path / "real", 3, seed=1, height=64, width=64)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square moving left\na blue circle\n")
    r = cli("eval", "quality", "--model", "toy", "--schedule", "2", "--prompts", prompts, "--fd-reference",
            tmp_path / "real", "-q", "-o", tmp_path / "q")
    assert r.exit_code == 0, r.output
    body = json.loads((tmp_path / "q" / "metrics.json").read_text())
    summary = body["summary"]
    assert summary["toybench_overall"]["n"] == 2 and summary["toybench_colour"]["n"] == 2
    assert summary["toybench_direction"]["n"] == 1 and "toybench_speed" not in summary   # named by one / by none
    assert summary["toybench_fd"]["n"] == 2 and summary["toybench_fd"]["mean"] > 0
    assert all("features" not in v for v in body["videos"]) and verify(tmp_path / "q") == []
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert manifest["recipe"]["resolved"]["fd_reference"] == str(tmp_path / "real")
    assert [i["path"] for i in manifest["inputs"]] == ["../real"]
