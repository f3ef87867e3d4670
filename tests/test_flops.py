"""FLOPs (analytic + meta-device count) and latency smoke tests for ``pyrawan.eval``.

Reference numbers: the paper's Table 1 (paper.md section 8.1) and the meta-device count of the
real Wan2.1-1.3B config at 480x832 (eval-and-io.md section 2.3).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from rich.console import Console

from pyrawan.errors import InputError
from pyrawan.eval.flops import (
    WanArch,
    analytic_forward_flops,
    default_schedules,
    flops_report,
    meta_forward_flops,
    schedule_flops,
    timestep_embed_flops,
)
from pyrawan.eval.latency import environment_info, latency_report, measure_latency
from pyrawan.eval.report import render_flops_table, render_latency_table, write_json

WAN13B = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)
TINY = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16,
    text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=32,
)
PAPER_LATENT = (21, 56, 104)  # 81 x 448 x 832 pixels
# Table 1, TFLOPs per guidance branch; the first two rows are x2 (CFG), the rest have no CFG.
TABLE1_CFG = {"0-0-50": 12592, "20-20-10": 2821}
TABLE1_NO_CFG = {"0-0-4": 1007, "0-0-2": 504, "2-2-2": 534, "2-2-1": 282, "1-1-1": 267}


def _rows(report: dict) -> dict[str, dict]:
    return {row["schedule"]: row for row in report["schedules"]}


def test_wanarch_from_config():
    arch = WanArch.from_config(WAN13B)
    assert (arch.dim, arch.ffn_dim, arch.num_layers, arch.text_len, arch.patch) == (1536, 8960, 30, 512, (1, 2, 2))
    with pytest.raises(InputError, match="num_layers"):
        WanArch.from_config({"num_attention_heads": 2, "attention_head_dim": 4, "ffn_dim": 8})


def test_analytic_per_stage_matches_paper():
    report = flops_report(WAN13B, PAPER_LATENT, 3, guidance=False)
    stages = report["stages"]
    assert [s["latent"] for s in stages] == [[21, 56, 104], [11, 28, 52], [6, 14, 26]]
    assert [s["tokens"] for s in stages] == [30576, 4004, 546]
    assert [round(s["tflops_per_forward"], 1) for s in stages] == [251.8, 13.5, 1.6]
    core = analytic_forward_flops(WanArch.from_config(WAN13B), PAPER_LATENT, small_terms=False) / 1e12
    assert core == pytest.approx(251.82, abs=0.01)


def test_table1_reproduced_within_one_percent():
    with_cfg = _rows(flops_report(WAN13B, PAPER_LATENT, 3, schedules=list(TABLE1_CFG), guidance=True))
    no_cfg = _rows(flops_report(WAN13B, PAPER_LATENT, 3, schedules=list(TABLE1_NO_CFG), guidance=False))
    for name, paper in TABLE1_CFG.items():
        assert with_cfg[name]["cfg_factor"] == 2
        assert with_cfg[name]["total_tflops"] == pytest.approx(2 * paper, rel=0.01)
        assert round(with_cfg[name]["tflops_per_guidance_branch"]) == paper  # in fact exact after rounding
    for name, paper in TABLE1_NO_CFG.items():
        assert no_cfg[name]["cfg_factor"] == 1
        assert no_cfg[name]["total_tflops"] == pytest.approx(paper, rel=0.01)
        assert round(no_cfg[name]["total_tflops"]) == paper
    assert with_cfg["20-20-10"]["ratio_to_baseline"] == pytest.approx(2821 / 12592, rel=1e-3)  # "saves ~78%"


def test_report_structure_and_default_schedules():
    report = flops_report(WAN13B, PAPER_LATENT, 3)
    assert [r["schedule"] for r in report["schedules"]] == default_schedules(3)
    assert default_schedules(3) == ["0-0-50", "20-20-10", "0-0-4", "0-0-2", "2-2-2", "2-2-1", "1-1-1"]
    assert default_schedules(1) == ["50", "10", "4", "2", "1"]
    assert report["baseline"] == "0-0-50" and report["method"] == "analytic"
    assert "VAE" in report["note"] and "text encoder" in report["note"]
    base = _rows(report)["0-0-50"]
    assert base["ratio_to_baseline"] == 1.0 and base["forwards"] == 100
    row = _rows(report)["2-2-1"]
    assert [p["steps"] for p in row["per_stage"]] == [1, 2, 2]  # index = stage, 0 = full
    assert sum(p["tflops"] for p in row["per_stage"]) == pytest.approx(row["total_tflops"])
    json.dumps(report)


def test_schedule_flops_and_errors():
    cost = schedule_flops([100.0, 10.0, 1.0], (2, 2, 1), guidance=True)
    assert [p["cost"] for p in cost["per_stage"]] == [200.0, 40.0, 4.0]
    assert cost["total"] == 244.0 and cost["forwards"] == 10
    assert schedule_flops([100.0, 10.0, 1.0], (2, 2, 1), guidance=False)["total"] == 122.0
    with pytest.raises(InputError):
        schedule_flops([1.0, 2.0], (1, 1, 1), guidance=False)
    with pytest.raises(InputError):
        flops_report(WAN13B, PAPER_LATENT, 3, method="fvcore")
    with pytest.raises(InputError):
        flops_report(WAN13B, (21, 60, 104), 3)  # 60 / 4 / 2 is not an integer patch grid
    with pytest.raises(InputError):
        flops_report(WAN13B, PAPER_LATENT, 3, schedules=["2-0-1"])
    with pytest.raises(InputError):
        flops_report(WanArch.from_config(WAN13B), PAPER_LATENT, 3, method="meta")


def test_meta_count_tiny_equals_analytic_plus_timestep_path():
    """Meta count - analytic = the timestep embedding exactly (16,384 FLOPs, +0.038% here)."""
    arch = WanArch.from_config(TINY, text_len=16)
    meta = meta_forward_flops(TINY, (5, 16, 16), text_len=16)
    analytic = analytic_forward_flops(arch, (5, 16, 16))
    assert meta - analytic == timestep_embed_flops(arch) == 16384
    assert meta == pytest.approx(analytic, rel=1e-3)


@pytest.mark.slow
def test_meta_count_wan13b_480p():
    """Real 1.3B config at 21x60x104 (81 x 480 x 832): 283.0 TF counted = analytic (rel. diff 1.2e-7)."""
    arch = WanArch.from_config(WAN13B)
    meta = meta_forward_flops(WAN13B, (21, 60, 104), text_len=512)
    analytic = analytic_forward_flops(arch, (21, 60, 104))
    assert meta / 1e12 == pytest.approx(283.0, abs=0.05)
    assert meta - analytic == timestep_embed_flops(arch)
    assert (meta - analytic) / analytic < 1e-6


def test_meta_report_tiny_matches_analytic_report():
    kwargs = dict(latent_thw_full=(5, 16, 16), num_stages=2, text_len=16, guidance=True)
    meta = flops_report(TINY, method="meta", **kwargs)
    analytic = flops_report(TINY, method="analytic", **kwargs)
    assert meta["baseline"] == "0-50" and meta["method"] == "meta"
    for m, a in zip(meta["schedules"], analytic["schedules"]):
        assert m["schedule"] == a["schedule"]
        assert m["total_tflops"] == pytest.approx(a["total_tflops"], rel=1e-3)
    with torch.device("meta"):
        from diffusers import WanTransformer3DModel

        module = WanTransformer3DModel(**TINY)
    assert meta_forward_flops(module, (3, 8, 8), 16) == pytest.approx(meta["stages"][1]["tflops_per_forward"] * 1e12)


def test_flops_of_a_preset_by_name():
    report = flops_report("wan1.3b", PAPER_LATENT, 3, guidance=False)
    assert round(report["stages"][0]["tflops_per_forward"], 1) == 251.8
    with pytest.raises(InputError):
        flops_report("wan99b", PAPER_LATENT, 3)


def test_latency_smoke_tiny_cpu():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(**TINY).eval()
    rows = measure_latency(model, [(5, 16, 16), (3, 8, 8)], text_len=16, repeats=2, warmup=1)
    assert [r["stage"] for r in rows] == [0, 1] and [r["tokens"] for r in rows] == [320, 48]
    for r in rows:
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["repeats"] == 2
    env = environment_info("cpu", torch.float32)
    report = latency_report(rows, ["0-50", "2-1", "1-1"], guidance=True, env=env)
    assert report["environment"]["dtype"] == "float32" and report["environment"]["threads"] >= 1
    assert report["baseline"] == "0-50"
    ms = [r["median_ms"] for r in rows]
    for row in report["schedules"]:
        steps = [p["steps"] for p in row["per_stage"]]
        assert row["total_ms"] == pytest.approx(2 * sum(s * m for s, m in zip(steps, ms)))
    plain = latency_report(ms, ["2-1"], guidance=False)
    assert plain["schedules"][0]["total_ms"] == pytest.approx(ms[0] + 2 * ms[1])
    bf16 = measure_latency(model, [(3, 8, 8)], text_len=16, repeats=1, warmup=0, dtype=torch.bfloat16)
    assert bf16[0]["median_ms"] > 0 and model.patch_embedding.weight.dtype == torch.bfloat16
    assert model.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32  # kept fp32


def test_render_and_write_json(tmp_path):
    flops = flops_report(WAN13B, PAPER_LATENT, 3, guidance=True)
    latency = latency_report([631.77, 33.76, 7.62], ["0-0-2", "2-2-1"], guidance=False, env=environment_info())
    assert _rows(latency)["2-2-1"]["total_ms"] == pytest.approx(714.5, abs=0.05)  # paper.md section 8.3
    console = Console(record=True, width=200)
    console.print(render_flops_table(flops))
    console.print(render_latency_table(latency))
    text = console.export_text()
    assert "2 × 2,821" in text and "20-20-10" in text and "714.5" in text
    path = write_json(tmp_path / "sub" / "flops.json", flops)
    assert json.loads(path.read_text()) == json.loads(json.dumps(flops))
    assert not [p for p in path.parent.iterdir() if p.name != "flops.json"]


def test_package_import_is_light():
    code = "import sys, pyrawan.eval as e; assert 'torch' not in sys.modules; assert callable(e.schedule_flops)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_vae_decode_count_from_two_frames_equals_a_direct_count():
    """Every latent frame after the first costs the same in Wan's causal decode, so f(1) and f(2) give f(T)."""
    from pyrawan.eval.decode_cost import _counted_decode_flops, vae_decode_flops
    from pyrawan.models.toy import TOY_VAE

    direct = _counted_decode_flops(json.dumps(dict(TOY_VAE), sort_keys=True), 5, 8, 8)
    assert vae_decode_flops(TOY_VAE, (5, 8, 8)) == direct > vae_decode_flops(TOY_VAE, (2, 8, 8)) > 0
