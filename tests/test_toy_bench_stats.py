"""ToyBench on short captions (judged on what they name), its intervals, and Pyramid Flow's boundaries."""
from __future__ import annotations

import numpy as np
import pytest

from pyrawan.errors import InputError
from pyrawan.toy import world
from pyrawan.toy.bench import SCORES, score_set, score_video
from pyrawan.toy.corrupt import TARGETS, corrupt, validate

REAL_OVERALL = 0.95
TARGET_DROP = 0.5


@pytest.fixture(scope="module")
def short_validation() -> dict[str, dict]:
    """ToyBench of 8 real 17x64x64 videos and each corruption, judged against short captions (after mp4)."""
    return validate(n=8, seed=0, frames=17, height=64, width=64, mp4=True, short=True)


def test_partial_captions_parse_to_what_they_name():
    asked = world.parse_caption("a red square moving left", partial=True)
    assert (asked.shape, asked.colour, asked.direction) == ("square", "red", "left")
    assert asked.size is None and asked.speed is None and asked.background is None and asked.style is None
    assert world.named(asked) == ("shape", "colour", "direction")
    assert world.parse_caption("a circle on a grey gradient background", partial=True).style == "gradient"
    with pytest.raises(InputError, match="several: blue, red"):
        world.parse_caption("a red blue square moving left", partial=True)
    with pytest.raises(InputError, match="no attribute of the toy grammar"):
        world.parse_caption("a cat", partial=True)
    with pytest.raises(InputError, match="size"):        # the strict form still wants every attribute
        world.parse_caption("a red square moving left")


def test_short_prompt_scores_only_named_attributes_and_wrong_ones_fail():
    scene = world.Scene("square", "green", "large", "right", "fast", "black", "plain", start=(0.2, 0.5))
    video = world.render(scene, 17, 64, 64)
    right = score_video(video, "a green square moving right")
    assert right["overall"] > REAL_OVERALL
    assert right["scores"]["size"] is None and right["scores"]["speed"] is None
    assert right["scores"]["colour"] == 1.0 and right["scores"]["direction"] == 1.0
    wrong_colour = score_video(video, "a blue square")
    assert wrong_colour["scores"]["colour"] < 0.2 and wrong_colour["overall"] < 0.8
    wrong_way = score_video(video, "a square moving left")
    assert wrong_way["scores"]["direction"] < 0.2 and wrong_way["overall"] < 0.8
    too_slow = score_video(video, "a square slowly moving")       # named speed, no direction: |v| / slow speed
    assert too_slow["scores"]["speed"] < 0.2 and too_slow["scores"]["direction"] is None


@pytest.mark.slow
def test_short_captions_keep_the_judge_valid(short_validation):
    """Real clips score ~1; each corruption still drops its targeted score on the videos whose prompt names it."""
    real = short_validation["real"]
    assert min(v["overall"] for v in real["per_video"]) > REAL_OVERALL
    for corruption, target in TARGETS.items():
        bad = short_validation[corruption]
        naming = [i for i, v in enumerate(bad["per_video"]) if v["scores"][target] is not None]
        assert len(naming) >= 2, (corruption, target)
        real_mean = np.mean([real["per_video"][i]["scores"][target] for i in naming])
        bad_mean = np.mean([bad["per_video"][i]["scores"][target] for i in naming])
        assert bad_mean < real_mean - TARGET_DROP, (corruption, bad_mean, real_mean)
        assert max(bad["per_video"][i]["overall"] for i in naming) < REAL_OVERALL, corruption
        assert bad["intervals"][target]["n"] == len(naming)


def test_score_set_reports_intervals_over_the_videos_that_name_each_score():
    rng = np.random.default_rng(5)
    scenes = [world.sample_scene(rng) for _ in range(6)]
    videos = [world.render(s, 17, 64, 64) for s in scenes]
    prompts = [world.caption(s) for s in scenes[:3]] + [f"a {s.shape}" for s in scenes[3:]]
    blurred = [v if i % 2 else corrupt(v, "blur") for i, v in enumerate(videos)]
    result = score_set(blurred, prompts)
    ci = result["intervals"]
    assert set(ci) == {"overall", *SCORES}
    assert ci["colour"]["n"] == 3 and ci["shape"]["n"] == 6 and ci["sharpness"]["n"] == 6
    for name, entry in ci.items():
        assert entry["low"] <= entry["mean"] <= entry["high"], name
    sharp = [v["scores"]["sharpness"] for v in result["per_video"]]
    assert ci["sharpness"]["mean"] == pytest.approx(np.mean(sharp))
    assert ci["sharpness"]["high"] - ci["sharpness"]["low"] > 0.1        # half blurred, half sharp: a wide interval
    assert result["scores"]["colour"] == pytest.approx(np.mean([v["scores"]["colour"] for v in result["per_video"][:3]]))


def test_pyramid_flow_boundaries_split_the_natural_level_uniformly():
    from pyrawan.pyramid.schedule import default_boundaries, pyramid_flow_boundaries, sigma_to_natural

    b = pyramid_flow_boundaries(3)
    assert b == pytest.approx((0.586, 0.941), abs=1e-3)
    assert default_boundaries(3) == pytest.approx((1 / 3, 2 / 3), abs=1e-6)
    for stage, boundary in enumerate(b, start=1):   # the coarse side of each jump sits at natural level stage / 3
        later_frame = sigma_to_natural(boundary, stage, 5)[-1]
        assert float(later_frame) == pytest.approx(stage / 3, abs=1e-5)   # boundaries are rounded to 1e-6


def test_a_recipe_without_boundaries_gets_pyramid_flows_split_for_its_jumps():
    """null boundaries: m = 8 for 2x2x2 blocks, 4 spatial-only, 1 (uniform) for PPF, which has no jump."""
    from pyrawan.pyramid.schedule import default_boundaries, pyramid_flow_boundaries, recipe_default_boundaries
    from pyrawan.recipe import load_recipe

    assert recipe_default_boundaries(3) == pyramid_flow_boundaries(3, 8.0)
    assert recipe_default_boundaries(3, keep_time=True) == pytest.approx((0.5, 0.888889), abs=1e-6)
    assert recipe_default_boundaries(3, kind="ppf") == default_boundaries(3)
    assert recipe_default_boundaries(1) == ()
    assert load_recipe("toy-finetune").pyramid_config().boundaries == pytest.approx((0.585786, 0.941176), abs=1e-6)
    assert load_recipe("toy-ppf-finetune").pyramid_config().boundaries == pytest.approx((1 / 3, 2 / 3), abs=1e-6)
