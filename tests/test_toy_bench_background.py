"""ToyBench's background and extra-object scores: known answers on rendered videos (docs/toy-world.md, "Scores")."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from pyrawan.toy import world
from pyrawan.toy.bench import (SCORES, SCORES_BEFORE_BACKGROUND, overall_score, prompt_errors, score_video,
                               scores_from_errors)
from pyrawan.toy.corrupt import mp4_round_trip
from pyrawan.toy.features import MIN_EXTRA_AREA, extra_objects, measure_video

REAL_OVERALL = 0.95       # a rendered video judged against its own caption scores above this
ONE_ZERO = 0.7            # one score of 0 among 12 (floored at 0.01) caps overall at 0.01 ** (1 / 12) = 0.68
GROUNDS = [(b, s) for b in world.BACKGROUNDS for s in world.STYLES]
SCENE = world.Scene("circle", "red", "medium", "right", "slow", "gray", "plain", start=(0.2, 0.2))
# A clearly separate second object: bottom-right corner, moving the same way, another colour and shape.
SECOND = world.Scene("square", "blue", "small", "right", "slow", "gray", "plain", start=(0.9, 0.95))


def caption_with(scene: world.Scene, ground: tuple[str, str]) -> str:
    """The scene's caption naming the background ``ground`` = (grey level, style) instead of its own."""
    return world.caption(dataclasses.replace(scene.attributes(), background=ground[0], style=ground[1]))


def add_object(video: torch.Tensor, other: world.Scene, frames: slice = slice(None)) -> torch.Tensor:
    """``video`` [F, 3, H, W] with ``other``'s object composited over it in ``frames`` (the world's coverage)."""
    f, _, h, w = video.shape
    alpha = world.coverage(other, f, h, w).unsqueeze(1)                                  # [F, 1, H, W]
    keep = torch.zeros(f, 1, 1, 1)
    keep[frames] = 1.0
    colour = torch.tensor(world.COLOURS[other.colour]).view(1, 3, 1, 1)
    return keep * alpha * colour + (1 - keep * alpha) * video


@pytest.fixture(scope="module")
def clean_mp4(tmp_path_factory) -> dict[tuple[str, str], torch.Tensor]:
    """SCENE on each of the six backgrounds, after an H.264 (crf 18) round trip."""
    folder = tmp_path_factory.mktemp("grounds")
    return {g: mp4_round_trip(world.render(dataclasses.replace(SCENE, background=g[0], style=g[1]), 17, 64, 64),
                              folder, f"{g[0]}-{g[1]}") for g in GROUNDS}


def test_the_new_scores_join_the_overall():
    assert SCORES[-2:] == ("background", "extra_objects") and SCORES[:10] == SCORES_BEFORE_BACKGROUND
    scores = {**dict.fromkeys(SCORES, 1.0), "background": 0.0}
    assert overall_score(scores) == pytest.approx(0.01 ** (1 / 12))
    assert overall_score(scores, SCORES_BEFORE_BACKGROUND) == 1.0          # the old ten-score overall ignores it
    assert overall_score({**scores, "background": None}) == 1.0            # a prompt without a background


@pytest.mark.parametrize("ground", GROUNDS, ids=lambda g: "-".join(g))
def test_the_asked_background_scores_one_after_mp4(clean_mp4, ground):
    result = score_video(clean_mp4[ground], caption_with(SCENE, ground))
    assert result["raw"]["background_error"] < 0.02, result["raw"]
    assert result["scores"]["background"] == 1.0 and result["scores"]["extra_objects"] == 1.0
    assert result["raw"]["extra_count"] == 0 and result["overall"] > REAL_OVERALL


def test_a_caption_naming_another_background_scores_zero(clean_mp4):
    """Every one of the 30 (video, wrong background) pairs, the same grey in the other style included."""
    for true in GROUNDS:
        measured = measure_video(clean_mp4[true])                      # measured once, judged against six captions
        judged = {asked: scores_from_errors(prompt_errors(measured, world.parse_caption(caption_with(SCENE, asked))))
                  for asked in GROUNDS}
        right = overall_score(judged[true])
        for asked, scores in judged.items():
            if asked != true:
                assert scores["background"] == 0.0, (true, asked)
                assert overall_score(scores) < ONE_ZERO < right, (true, asked)


def test_the_background_error_is_the_rms_rgb_distance_to_the_named_background():
    """A plain gray video judged as a gray gradient: RMS over rows of the ramp 0.3 -> 0.7 minus 0.5, times sqrt(3)."""
    video = world.render(SCENE, 17, 64, 64)
    rows = (np.arange(64) + 0.5) / 64
    expected = math.sqrt(3) * float(np.sqrt(np.mean((0.3 + 0.4 * rows - 0.5) ** 2)))      # = 0.2 at 64 rows
    error = score_video(video, caption_with(SCENE, ("gray", "gradient")))["raw"]["background_error"]
    assert error == pytest.approx(expected, abs=0.002)
    short = score_video(video, "a red circle moving right")                               # names no background
    assert short["scores"]["background"] is None and short["raw"]["background_error"] is None
    assert short["scores"]["extra_objects"] == 1.0                                        # prompt-free: always scored


@pytest.mark.parametrize("second", [SECOND, dataclasses.replace(SECOND, size="large", start=(0.9, 1.0))],
                         ids=["smaller", "larger"])
def test_a_second_object_zeroes_the_extra_object_score(tmp_path, second):
    """Smaller than the asked object, or larger (then it is taken for the object and the asked one is the extra)."""
    clean = world.render(SCENE, 17, 64, 64)
    busy = mp4_round_trip(add_object(clean, second), tmp_path, "busy")
    before = score_video(mp4_round_trip(clean, tmp_path, "clean"), world.caption(SCENE))
    after = score_video(busy, world.caption(SCENE))
    assert before["scores"]["extra_objects"] == 1.0 and before["raw"]["extra_area"] == 0
    assert after["raw"]["extra_count"] == 1 and after["raw"]["extra_area"] > 40, after["raw"]
    assert after["scores"]["extra_objects"] == 0.0
    assert after["overall"] < ONE_ZERO < before["overall"]


def test_an_object_in_a_minority_of_frames_is_not_counted():
    video = add_object(world.render(SCENE, 17, 64, 64), SECOND, frames=slice(0, 8))         # 8 of 17 frames
    result = score_video(video, world.caption(SCENE))
    assert result["raw"]["extra_count"] == 0 and result["scores"]["extra_objects"] == 1.0
    video = add_object(world.render(SCENE, 17, 64, 64), SECOND, frames=slice(0, 9))         # 9 of 17: counted
    assert score_video(video, world.caption(SCENE))["scores"]["extra_objects"] == 0.0


def test_extra_objects_counts_components_outside_the_object_above_the_minimum_area():
    seeds = np.zeros((2, 20, 20), dtype=bool)
    seeds[:, 2:8, 2:8] = True                                   # the object (36 px)
    seeds[0, 12:15, 12:16] = True                               # an extra object of 12 px in frame 0
    seeds[0, 18, 0:MIN_EXTRA_AREA - 1] = True                   # a speck just under the minimum
    seeds[1, 15:17, 15:15 + MIN_EXTRA_AREA // 2] = True         # exactly the minimum in frame 1
    mask = np.zeros_like(seeds)
    mask[:, 2:8, 2:8] = True
    count, area = extra_objects(seeds, mask)
    assert count.tolist() == [1, 1] and area.tolist() == [12, 2 * (MIN_EXTRA_AREA // 2)]
    assert extra_objects(mask, mask)[0].tolist() == [0, 0]
