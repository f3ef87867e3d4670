"""Calibration: the boundary rule, analytic answers (white noise, power-law spectra), detail vs smooth
data, and `pyrawan calibrate` end to end feeding `pyrawan convert --calibration`.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.fft
import torch
from typer.testing import CliRunner

from pyrawan.cli import app
from pyrawan.commands import calibrate as cmd
from pyrawan.data.calibration import SpectralAnalysis
from pyrawan.data.spectra import boundary_from_power, increasing_boundaries, power_at_boundary
from pyrawan.manifest import read_manifest, verify
from pyrawan.pyramid.resize import get_resizer
from synthetic import detailed_video, make_dataset, pool_components, smooth_video


pytestmark = pytest.mark.usefixtures("one_thread")



def downs(x: torch.Tensor, name: str, stages: int) -> list[torch.Tensor]:
    """Definition 1 stage latents of ``x`` ``[C, T, H, W]``."""
    out = [x]
    for _ in range(stages - 1):
        out.append(get_resizer(name).down(out[-1][None])[0])
    return out


def test_boundary_rule_and_its_inverse():
    assert boundary_from_power(1.0, 1.0) == 0.5 and boundary_from_power(4.0, 1.0) == pytest.approx(2 / 3)
    for power, tau in [(0.01, 1.0), (3.0, 0.5), (100.0, 4.0)]:
        b = boundary_from_power(power, tau)
        assert (1 - b) ** 2 * power / b ** 2 == pytest.approx(tau) and power_at_boundary(b, tau) == pytest.approx(power)
    assert increasing_boundaries([0.3, 0.6], 0.02) == ([0.3, 0.6], [False, False])
    moved, flags = increasing_boundaries([0.5, 0.4, 0.999], 0.02)
    assert moved == pytest.approx([0.5, 0.52, 0.98]) and flags == [False, True, True]
    assert increasing_boundaries([0.0], 0.02)[0] == [0.02]


@pytest.mark.slow
@pytest.mark.parametrize("variance", [1.0, 4.0])
def test_white_noise_gives_the_same_boundary_at_every_transition(variance):
    """White latents of variance v: E_H = v at every stage in the orthonormal frame, b = sqrt(v) / (sqrt(v) + 1)."""
    g = torch.Generator().manual_seed(0)
    analysis = SpectralAnalysis(3, 1, ["haar", "dct", "db4"], "haar")
    for _ in range(120):
        analysis.add(downs(torch.randn(16, 5, 8, 8, generator=g) * math.sqrt(variance), "haar", 3))
    result = analysis.result(threshold=1.0, margin=0.02, chosen="haar")
    expected = math.sqrt(variance) / (math.sqrt(variance) + 1)
    for res in result["resizers"].values():
        for t in res["transitions"]:
            assert t["high_band_power"] == pytest.approx(variance, rel=0.03)
            assert t["high_band_power_frame0"] == pytest.approx(variance, rel=0.06)
            assert t["boundary_raw"] == pytest.approx(expected, abs=0.005)
    assert result["boundaries"] == pytest.approx([expected, expected + 0.02], abs=0.005)
    assert result["adjusted"] == [False, True]                     # no gain from the coarser stage: moved apart
    assert result["resizers"]["haar"]["transitions"][0]["high_pass_fraction"] == pytest.approx(272 / 320, rel=0.02)


def power_law_field(n: int, alpha: float, count: int, seed: int = 0) -> tuple[list[torch.Tensor], np.ndarray]:
    """Single-frame latents ``[16, 1, n, n]`` whose DCT coefficient (k_h, k_w) has variance |k|^-alpha."""
    k = np.hypot(*np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    variance = np.divide(1.0, k ** alpha, out=np.zeros_like(k), where=k > 0)
    rng = np.random.default_rng(seed)
    fields = [torch.from_numpy(scipy.fft.idctn(rng.standard_normal((16, 1, n, n)) * np.sqrt(variance),
                                               axes=(-2, -1), norm="ortho")) for _ in range(count)]
    return fields, variance


def shell_mean(variance: np.ndarray, stage: int) -> float:
    """Exact E_H of transition ``stage``: mean variance of the DCT coefficients the dct resizer drops there."""
    n = variance.shape[0] >> stage
    drop = np.ones((n, n), bool)
    drop[: n // 2, : n // 2] = False
    return float(variance[:n, :n][drop].mean())


def test_a_power_law_spectrum_gives_the_analytic_boundaries():
    """|k|^-alpha: E_H is the mean of the spectrum over each dropped band, growing ~2^alpha per stage."""
    alpha, stages = 2.0, 4
    fields, variance = power_law_field(64, alpha, 40)
    analysis = SpectralAnalysis(stages, 1, ["dct"], "dct")
    for x in fields:
        analysis.add(downs(x, "dct", stages))
    result = analysis.result(threshold=1e-3, margin=0.02, chosen="dct")
    transitions = result["resizers"]["dct"]["transitions"]
    for i, t in enumerate(transitions):
        assert t["high_band_power"] == pytest.approx(shell_mean(variance, i), rel=0.02)
        assert t["boundary_raw"] == pytest.approx(boundary_from_power(shell_mean(variance, i), 1e-3), rel=0.01)
    logits = [math.log(b / (1 - b)) for b in result["boundaries"]]
    steps = [hi - lo for lo, hi in zip(logits, logits[1:])]
    assert steps == pytest.approx([0.5 * math.log(shell_mean(variance, i + 1) / shell_mean(variance, i))
                                   for i in range(stages - 2)], rel=0.03)
    assert steps[0] == pytest.approx(alpha / 2 * math.log(2), rel=0.05)   # continuum: odds x 2^(alpha/2) per stage
    assert result["adjusted"] == [False] * 3
    rapsd = result["resizers"]["dct"]["spectra"]["rapsd"][0]
    f, p = np.array(rapsd["freq"]), np.array(rapsd["power"])
    band = (f > 0.05) & (f < 0.45)
    assert np.polyfit(np.log(f[band]), np.log(p[band]), 1)[0] == pytest.approx(-alpha, abs=0.15)


@pytest.fixture(scope="module")
def pool(tiny_components):
    return pool_components(tiny_components)


def test_fine_detail_puts_the_boundaries_at_higher_noise(tmp_path, pool, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = {}
    for kind, make in (("smooth", smooth_video), ("detailed", detailed_video)):
        root = make_dataset(tmp_path / kind, "sidecar", [make(seed) for seed in range(3)])
        recipe = cmd.load_calibrate_recipe(root, None, ["calibrate.plots=false"])
        out = cmd.run(recipe, tmp_path / f"cal-{kind}", components=pool, progress=False)
        results[kind] = json.loads((out / "calibration.json").read_text())
    smooth, detailed = results["smooth"], results["detailed"]
    assert all(d > s for d, s in zip(detailed["boundaries_raw"], smooth["boundaries_raw"]))
    for name in ("haar", "dct", "db4"):
        for s, d in zip(smooth["resizers"][name]["transitions"], detailed["resizers"][name]["transitions"]):
            assert d["high_pass_fraction"] > s["high_pass_fraction"]
    assert smooth["definition"] == 2 and 0 < smooth["resizers"]["haar"]["transitions"][0]["up_relative_error"] < 1
    assert [len(row["channel_std"]) for row in smooth["statistics"]] == [16, 16, 16]


def run_cli(*args, code: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


def test_calibrate_command_end_to_end_and_convert_reads_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "clips", "metadata.csv", [smooth_video(0), detailed_video(1)])
    run_cli("calibrate", "clips", "calibrate.threshold=0.5")
    out = tmp_path / "runs" / "calibrate-clips"
    cal = json.loads((out / "calibration.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["calibration.json", "manifest.json", "spectra-db4.png",
                                                      "spectra-dct.png", "spectra-haar.png"]
    assert len(cal["boundaries"]) == 2 and 0 < cal["boundaries"][0] < cal["boundaries"][1] < 1
    assert cal["threshold"] == 0.5 and cal["dataset"]["layout"] == "metadata.csv" and cal["videos"] == 2
    assert [row["boundary"] for row in cal["natural_levels"]] == [1, 2]
    assert verify(out) == []
    manifest = read_manifest(out)
    assert manifest["kind"] == "calibrate" and manifest["recipe"]["resolved"]["kind"] == "calibrate"
    assert [i["path"].split("/")[-2:] for i in manifest["inputs"]][0][-1] == "clips"
    assert any("runs/cache/" in i["path"] or i["path"].startswith("../cache/") for i in manifest["inputs"])
    run_cli("convert", "tiny", "--calibration", out, "-o", "pyr")
    pyramid = json.loads((tmp_path / "pyr" / "pyramid.json").read_text())
    assert pyramid["boundaries"] == pytest.approx(cal["boundaries"])
    assert "kind = 'sample'" in run_cli("calibrate", "clips", "-r", sample_recipe(tmp_path), code=2).output


def sample_recipe(tmp_path):
    from pyrawan.recipe import RECIPES_DIR

    path = tmp_path / "s.yaml"
    path.write_text((RECIPES_DIR / "tiny.yaml").read_text().replace("kind: convert", "kind: sample"))
    return path


def test_a_large_cache_is_sampled_evenly():
    assert cmd.analysed_videos(10, 3) == [0, 3, 6] and cmd.analysed_videos(4, None) == [0, 1, 2, 3]
    assert cmd.analysed_videos(4, 10) == [0, 1, 2, 3]


@pytest.mark.parametrize("raw, shown", [((0.5, 0.9), False), ((0.95, 0.9), True)])
def test_the_raw_boundary_column_appears_only_when_a_boundary_moved(raw, shown, capsys):
    transitions = [{"from_stage": k, "to_stage": k + 1, "high_pass_fraction": 0.1, "high_band_power": 1.0,
                    "boundary_raw": r} for k, r in enumerate(raw)]
    moved = [r != b for r, b in zip(raw, (0.5, 0.9))]
    result = {"resizers": {"haar": {"transitions": transitions, "boundaries": [0.5, 0.9]}}, "boundaries_raw": list(raw),
              "boundaries": [0.5, 0.9], "adjusted": moved, "margin": 0.02, "videos": 2, "resizer": "haar",
              "cache": {"folder": "cache"}}
    cmd.report(result, "out")
    assert ("(raw)" in capsys.readouterr().out) is shown
