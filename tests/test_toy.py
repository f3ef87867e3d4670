"""The toy world and ToyBench: deterministic generator, captions, layouts, judge validation, CLI."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pyrawan.cli import app
from pyrawan.data.video import probe_video, read_video
from pyrawan.errors import InputError
from pyrawan.manifest import verify
from pyrawan.toy import world
from pyrawan.toy.bench import SCORES, breakdown, frechet_distance, score_set, score_video
from pyrawan.toy.corrupt import CORRUPTIONS, TARGETS, validate
from pyrawan.toy.layouts import LAYOUTS, read_captions

REAL_OVERALL = 0.95       # every real video (mp4 round trip) scores above this
TARGET_DROP = 0.5         # a corruption lowers the mean of its targeted score by at least this
OVERALL_DROP = 0.2        # ... and the mean overall by at least this
FD_RATIO = 2.0            # FD(real, corrupted) > FD_RATIO * FD(real, real') for distribution-changing corruptions


def run(*args, code: int = 0):
    """``pyrawan ARGS`` through typer's CliRunner; checks the exit code."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


# ---- the generator --------------------------------------------------------------------------------

def scenes(seed: int, n: int = 4) -> list[world.Scene]:
    rng = np.random.default_rng(seed)
    return [world.sample_scene(rng) for _ in range(n)]


@pytest.mark.parametrize("size", [(17, 64, 64), (17, 128, 128)])
def test_generator_is_deterministic_and_seeds_differ(size):
    a, b, c = scenes(7), scenes(7), scenes(8)
    assert a == b and a != c
    assert [world.caption(s) for s in a] == [world.caption(s) for s in b]
    va, vb, vc = (world.render(s[0], *size) for s in (a, b, c))
    assert va.shape == (size[0], 3, size[1], size[2]) and va.dtype == torch.float32
    assert 0 <= float(va.min()) and float(va.max()) <= 1
    assert torch.equal(va, vb) and not torch.equal(va, vc)


@pytest.mark.parametrize("shape, area", [("square", 4.0), ("circle", math.pi), ("triangle", 2.0)])
def test_render_is_antialiased_with_the_analytic_area_and_stays_inside(shape, area):
    scene = world.Scene(shape, "red", "large", "down-right", "fast", "gray", "plain", start=(1.0, 0.0))
    alpha = world.coverage(scene, 17, 64, 64)
    r = world.half_extent("large", 64, 64)
    torch.testing.assert_close(alpha.sum(dim=(1, 2)), torch.full((17,), area * r * r), rtol=0.01, atol=0)
    assert ((alpha > 0.05) & (alpha < 0.95)).any()                      # soft edges, not a binary mask
    border = torch.cat([alpha[:, 0], alpha[:, -1], alpha[:, :, 0], alpha[:, :, -1]], dim=1)
    assert float(border.max()) == 0.0                                    # the whole object is in frame
    track = world.centre_track(scene, 17, 64, 64)
    np.testing.assert_allclose(np.diff(track, axis=0), np.tile(world.velocity("down-right", "fast", 17, 64, 64), (16, 1)))


def test_captions_parse_back_to_the_scene():
    for scene in scenes(0, 60):
        assert world.parse_caption(world.caption(scene)) == scene.attributes()
    loose = world.parse_caption("On a grey gradient background, a LARGE cyan Triangle moving down-left quickly.")
    assert loose == world.Attributes("triangle", "cyan", "large", "down-left", "fast", "gray", "gradient")
    with pytest.raises(InputError, match=r"shape \(none of square, circle, triangle\).*colour \(several: blue, red\)"):
        world.parse_caption("a small red blue thing slowly moving up on a plain white background")


def test_short_captions_name_the_shape_and_only_true_attributes(tmp_path):
    rng = np.random.default_rng(0)
    shorts = [(scene, world.short_caption(scene, rng)) for scene in scenes(1, 200)]
    for scene, text in shorts:
        words = set(text.replace("-", "_").split())
        assert scene.shape in words
        full = set(world.caption(scene).replace("-", "_").split())
        assert words <= full | {"a", "on", "moving"}, (text, world.caption(scene))
    assert len({text for _, text in shorts}) > 150
    assert any(text == f"a {s.colour} {s.shape} moving {s.direction}" for s, text in shorts)
    records = world.make_dataset(tmp_path, 40, seed=3, frames=17, height=64, width=64, short_captions=0.5)
    full = [world.caption(s) for s in scenes(3, 40)]
    kept = sum(c == f for (_, c), f in zip(records, full))
    assert 10 <= kept <= 30                                       # about half stay full
    assert all(s.shape in c for (_, c), s in zip(records, scenes(3, 40)))   # same scenes as without
    with pytest.raises(InputError, match="short-captions 1.5"):
        world.make_dataset(tmp_path / "x", 1, short_captions=1.5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_make_dataset_writes_every_layout(tmp_path, layout):
    records = world.make_dataset(tmp_path, 2, seed=3, layout=layout, frames=17, height=64, width=64)
    if layout == "metadata.csv":
        with open(tmp_path / layout, newline="") as handle:
            pairs = [(row["video"], row["caption"]) for row in csv.DictReader(handle)]
    elif layout == "metadata.jsonl":
        pairs = [(o["video"], o["caption"]) for o in map(json.loads, (tmp_path / layout).read_text().splitlines())]
    elif layout == "metadata.json":
        pairs = [(o["video"], o["caption"]) for o in json.loads((tmp_path / layout).read_text())]
    elif layout == "sidecar":
        pairs = [(p.name, p.with_suffix(".txt").read_text().strip()) for p in sorted(tmp_path.glob("*.mp4"))]
    else:
        pairs = list(zip((tmp_path / "videos.txt").read_text().split("\n")[:-1],
                         (tmp_path / "prompts.txt").read_text().split("\n")[:-1]))
    assert pairs == records == [(v.relative_to(tmp_path.resolve()).as_posix(), c) for v, c in read_captions(tmp_path)]
    assert [world.caption(s) for s in scenes(3, 2)] == [c for _, c in records]
    assert probe_video(tmp_path / records[0][0]) == {"frames": 17, "fps": 16.0, "width": 64, "height": 64}


def test_bad_dataset_arguments_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="unknown dataset layout 'csv'"):
        world.make_dataset(tmp_path, 1, layout="csv")
    with pytest.raises(InputError, match="at least 3 frames and 48x48"):
        world.make_dataset(tmp_path, 1, height=16)
    with pytest.raises(InputError, match="no dataset found"):
        read_captions(tmp_path)


# ---- the judge ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def validation() -> dict[str, dict]:
    """ToyBench of 8 real 17x64x64 videos and of each corruption, all through an mp4 round trip."""
    return validate(n=8, seed=0, frames=17, height=64, width=64, mp4=True)


@pytest.mark.slow
def test_real_videos_score_near_perfect_after_mp4(validation):
    real = validation["real"]
    assert min(v["overall"] for v in real["per_video"]) > REAL_OVERALL
    assert all(real["scores"][k] > 0.95 for k in SCORES), real["scores"]
    assert real["raw"]["temporal_flickering"] > 0.98


@pytest.mark.slow
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_each_corruption_hurts_its_metric_and_overall(validation, corruption):
    real, bad = validation["real"], validation[corruption]
    target = TARGETS[corruption]
    assert bad["scores"][target] < real["scores"][target] - TARGET_DROP, (target, bad["scores"])
    assert bad["overall"] < real["overall"] - OVERALL_DROP
    assert max(v["overall"] for v in bad["per_video"]) < REAL_OVERALL


@pytest.mark.slow
def test_vbench_flicker_drops_for_flicker_and_noise(validation):
    real = validation["real"]["raw"]["temporal_flickering"]
    assert validation["flicker"]["raw"]["temporal_flickering"] < real - 0.05
    assert validation["noise"]["raw"]["temporal_flickering"] < real - 0.03


def test_frechet_distance_separates_real_from_corrupted_sets(validation):
    real = validation["real"]["fd"]
    for corruption in ("noise", "blur", "shuffle", "frozen", "flicker"):
        assert validation[corruption]["fd"] > FD_RATIO * real, (corruption, validation[corruption]["fd"], real)


def test_raw_renders_and_uint8_score_near_perfect_and_wrong_prompts_do_not():
    scene = world.Scene("triangle", "green", "small", "up", "slow", "white", "gradient", start=(0.3, 0.6))
    video = world.render(scene, 17, 64, 64)
    good = score_video(video, world.caption(scene))
    assert good["overall"] > REAL_OVERALL and good["raw"]["shape_seen"] == "triangle"
    as_uint8 = score_video((video * 255).round().to(torch.uint8), world.caption(scene))
    assert as_uint8["overall"] > REAL_OVERALL
    wrong = {"colour": "blue", "shape": "square", "direction": "down", "speed": "fast", "size": "large"}
    for key, value in wrong.items():
        asked = world.Scene(**{**world.scene_dict(scene), key: value, "start": scene.start})
        result = score_video(video, world.caption(asked))
        target = "size" if key == "size" else key
        assert result["scores"][target] < 0.2 and result["overall"] < 0.8, (key, result["scores"])


def test_frechet_distance_basics_and_errors():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + [2.0, 0.0, 0.0]) == pytest.approx(4.0, rel=1e-6)
    with pytest.raises(InputError, match="at least 2 videos"):
        frechet_distance(a[:1], a)
    with pytest.raises(InputError, match="one prompt per video"):
        score_set([torch.zeros(17, 3, 64, 64)], [])
    with pytest.raises(InputError, match=r"\[F, 3, H, W\]"):
        score_video(torch.zeros(3, 64, 64), world.caption(scenes(0, 1)[0]))


def test_breakdown_groups_by_asked_values_and_averages_each_group():
    def result(prompt, shape_score):
        return {"prompt": prompt, "overall": shape_score, "scores": {**dict.fromkeys(SCORES, 1.0), "shape": shape_score}}

    results = [result("a small red square quickly moving left on a plain black background", 0.0),
               result("a small blue square slowly moving up on a plain white background", 0.2),
               result("a large red square slowly moving up on a plain white background", 1.0),
               result("a red circle moving left", 0.5)]                  # short: no size
    groups = breakdown(results, ["shape", "size"])
    assert [tuple(g["group"].values()) for g in groups] == [("circle", None), ("square", "large"), ("square", "small")]
    assert [g["videos"] for g in groups] == [1, 1, 2]
    assert groups[2]["intervals"]["shape"]["mean"] == pytest.approx(0.1)
    assert groups[2]["intervals"]["colour"]["n"] == 2 and groups[0]["intervals"]["shape"]["mean"] == 0.5
    for bad in (["shapes"], []):
        with pytest.raises(InputError, match="--by"):
            breakdown(results, bad)


# ---- the CLI --------------------------------------------------------------------------------------

def test_cli_make_dataset_then_bench_a_dataset_and_a_samples_artifact(tmp_path):
    run("toy", "make-dataset", tmp_path / "data", "--n", "3", "--seed", "1", "--layout", "sidecar",
        "--frames", "17", "--height", "64", "--width", "64", "-q")
    assert verify(tmp_path / "data") == [] and len(list((tmp_path / "data").glob("*.mp4"))) == 3
    result = run("toy", "bench", tmp_path / "data", "--reference", tmp_path / "data", "-o", tmp_path / "bench")
    assert "ToyBench" in result.output and "overall" in result.output
    report = json.loads((tmp_path / "bench" / "toybench.json").read_text())
    assert report["videos"] == 3 and report["overall"] > REAL_OVERALL and report["fd"] == pytest.approx(0, abs=1e-6)
    assert verify(tmp_path / "bench") == []
    manifest = json.loads((tmp_path / "bench" / "manifest.json").read_text())
    assert manifest["kind"] == "toybench" and manifest["inputs"][0]["kind"] == "toy-dataset"

    samples = tmp_path / "samples"                                       # the layout `pyrawan sample` writes
    (samples / "videos").mkdir(parents=True)
    lines = []
    for i, (video, text) in enumerate(read_captions(tmp_path / "data")):
        (samples / "videos" / f"{i:04d}.mp4").write_bytes(video.read_bytes())
        lines.append(json.dumps({"index": i, "prompt": text, "seed": i, "video": f"videos/{i:04d}.mp4"}))
    (samples / "samples.jsonl").write_text("\n".join(lines) + "\n")
    report = json.loads(run("toy", "bench", samples, "--json", "--by", "shape").output)
    assert report["videos"] == 3 and report["fd"] is None and report["overall"] > REAL_OVERALL
    assert sum(g["videos"] for g in report["breakdown"]) == 3
    assert {g["group"]["shape"] for g in report["breakdown"]} <= set(world.SHAPES)
    table = run("toy", "bench", samples, "--by", "size,shape").output
    assert "ToyBench by size, shape" in table
    assert read_video(samples / report["per_video"][0]["video"])[0].shape == (17, 3, 64, 64)


def test_cli_bad_inputs_exit_2_with_one_paragraph(tmp_path):
    assert "unknown dataset layout" in run("toy", "make-dataset", tmp_path / "x", "--layout", "csv", code=2).output
    world.make_dataset(tmp_path / "d", 1, layout="metadata.jsonl", frames=17, height=64, width=64)
    (tmp_path / "d" / "metadata.jsonl").write_text(json.dumps({"video": "videos/0000.mp4", "caption": "a cat"}) + "\n")
    output = run("toy", "bench", tmp_path / "d", code=2).output
    assert "0000.mp4" in output and "is not a toy-world caption" in output
    output = run("toy", "bench", tmp_path / "d", "--by", "hue", code=2).output       # refused before scoring
    assert "'hue'" in output and "shape" in output and "Traceback" not in output
