"""The latency benchmark times the forward the sampler runs and reports text encoding and VAE decode beside it."""
from __future__ import annotations

import pytest

from pyrawan.eval.latency import end_to_end_ms, latency_report, measure_latency, measure_parts, sampler_timestep
from pyrawan.models.denoiser import frame_timesteps
from pyrawan.pyramid.config import PyramidConfig

SHAPES = [(5, 8, 8), (3, 4, 4), (2, 2, 2)]


def test_the_timesteps_are_the_samplers():
    """At a coarse stage the sampler's per-frame levels differ (first frame), so it passes one timestep per token."""
    pyramid = PyramidConfig(num_stages=3)
    for stage, shape in enumerate(SHAPES):
        sigma_c, _ = pyramid.levels(stage, shape[0])
        real = frame_timesteps(sigma_c, 1, shape[1:], (1, 2, 2))
        ours = sampler_timestep(shape, (1, 2, 2), 1, per_token=stage > 0)
        assert real.shape == ours.shape, stage          # [1] at full resolution, [1, tokens] below
    assert sampler_timestep((3, 4, 4), (1, 2, 2), 2, per_token=True).shape == (2, 3 * 2 * 2)


def test_latency_rows_say_which_timesteps_and_the_report_adds_text_and_decode(tiny_components, one_thread):
    rows = measure_latency(tiny_components.transformer, SHAPES, text_len=16, repeats=1, warmup=0)
    assert [r["timesteps"] for r in rows] == ["per-sample", "per-token", "per-token"]
    flat = measure_latency(tiny_components.transformer, SHAPES, text_len=16, repeats=1, warmup=0,
                           sampler_timesteps=False)
    assert {r["timesteps"] for r in flat} == {"per-sample"}
    parts = measure_parts(tiny_components, SHAPES[0], text_len=16, repeats=1, warmup=0)
    assert parts["vae_decode_ms"] > 0 and parts["text_encoder_ms"] > 0 and parts["vae_dtype"] == "float32"
    report = latency_report([10.0, 2.0, 1.0], ["0-0-4", "2-2-1"], guidance=True, parts=parts)
    for row in report["schedules"]:
        text = parts["text_encoder_cfg_ms"]                                 # guidance on: prompt + negative
        assert row["end_to_end_ms"] == pytest.approx(text + row["total_ms"] + parts["vae_decode_ms"])
    unguided = {"cfg_factor": 1, "total_ms": 5.0}
    assert end_to_end_ms(unguided, parts) == pytest.approx(parts["text_encoder_ms"] + 5.0 + parts["vae_decode_ms"])
    assert "parts" not in latency_report([10.0, 2.0, 1.0], ["0-0-4"])


def test_eval_latency_cli_times_either_timestep_form_and_refuses_others(tmp_path, one_thread):
    import json

    from typer.testing import CliRunner

    from pyrawan.cli import app

    base = ["eval", "latency", "--model", "tiny-random", "--frames", "17", "--height", "64", "--width", "64",
            "--device", "cpu", "--repeats", "1", "--warmup", "0"]
    for mode, expected in (("sampler", {"per-sample", "per-token"}), ("per-sample", {"per-sample"})):
        result = CliRunner().invoke(app, [*base, "--timesteps", mode, "-o", str(tmp_path / mode)])
        assert result.exit_code == 0, result.output
        rows = json.loads((tmp_path / mode / "latency.json").read_text())["stages"]
        assert {r["timesteps"] for r in rows} == expected
    result = CliRunner().invoke(app, [*base, "--timesteps", "per-frame"])
    assert result.exit_code == 2 and "--timesteps 'per-frame'" in result.output
