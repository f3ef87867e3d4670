"""Schedule search: candidates under a budget, the default scaled to it, and an honest verdict."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pyrawan.cli import app
from pyrawan.errors import InputError
from pyrawan.eval.schedules import (MAX_BOUNDARY_RADIUS, boundary_grid, candidates, per_stage_cost, plan_pool,
                                    scaled_default, search, valid)

COST = per_stage_cost([4.0, 1.0, 0.25], guidance=1.0)       # stage 0 (full) costs 4 per step, stage 2 costs 0.25


def test_cost_and_valid_schedules():
    assert COST((20, 20, 10)) == 20 * 0.25 + 20 * 1.0 + 10 * 4.0
    assert per_stage_cost([4.0, 1.0, 0.25], guidance=3.0)((1, 1, 1)) == 2 * 5.25
    assert valid((0, 2, 1)) and valid((1, 1, 1)) and not valid((2, 0, 1)) and not valid((0, 0, 0))
    found = candidates(3, COST, budget=10.0, max_steps=3, min_fill=0.5)
    assert found and all(5.0 <= COST(s) <= 10.0 and valid(s) for s in found)
    assert (0, 0, 2) in found and (2, 0, 1) not in found


def test_scaled_default_uses_the_budget_and_keeps_proportions():
    assert scaled_default((20, 20, 10), COST, budget=COST((20, 20, 10)), max_steps=20) == (20, 20, 10)
    half = scaled_default((20, 20, 10), COST, budget=COST((10, 10, 5)), max_steps=20)
    assert half == (10, 10, 5)
    with pytest.raises(InputError, match="below the cheapest version"):
        scaled_default((2, 2, 1), COST, budget=1.0, max_steps=4)


TRAINED = (0.4, 0.7)                                          # the model's own boundaries


def noisy_score(quality, calls=None):
    """Per-video values around quality(schedule, boundaries): 6 videos per seed, fixed noise per call key.
    ``quality`` takes the steps alone, or (steps, boundaries) when it has two parameters."""
    import inspect

    two = len(inspect.signature(quality).parameters) == 2

    def score(steps, boundaries, seeds):
        if calls is not None:
            calls.append((steps, tuple(boundaries), tuple(seeds)))
        rng = np.random.default_rng(abs(hash((steps, tuple(boundaries), tuple(seeds)))) % 2**32)
        value = quality(steps, tuple(boundaries)) if two else quality(steps)
        return list(value + 0.01 * rng.standard_normal(6 * len(seeds)))
    return score


def run(quality, budget=6.5, radius=None, calls=None):     # 6.5 = COST((2, 2, 1)): the default itself fits exactly
    baseline, pool = plan_pool(3, (2, 2, 1), COST, budget, max_steps=4, max_candidates=12)
    sets = [] if radius is None else boundary_grid(TRAINED, radius)
    return search((2, 2, 1), COST, noisy_score(quality, calls), budget, baseline, pool, [0, 1], [2, 3],
                  boundaries=TRAINED, boundary_pool=sets)


def test_search_finds_a_clearly_better_schedule_and_says_it_beat_the_default():
    report = run(lambda s: 1.0 if s == (0, 1, 1) else 0.0)       # only 0-1-1 is good
    assert report["best"] == "0-1-1" and report["verdict"] == "beat"
    assert report["baseline"] == "2-2-1" and report["confirm"]["0-1-1"]["mean"] == pytest.approx(1.0, abs=0.02)
    assert all(r["cost"] <= 6.5 for r in report["candidates"])
    assert run(lambda s: 0.0, budget=10.0)["baseline"] == "3-3-1"      # the closest proportions that fit


def test_search_says_plainly_when_it_did_not_beat_the_default():
    report = run(lambda s: 0.5)                                   # every schedule is the same
    assert report["verdict"] in ("not better", "tied") and "did not beat" in report["summary"]
    report = run(lambda s: 1.0 if s == (2, 2, 1) else 0.0)       # the default is the best
    assert report["best"] == "2-2-1" and report["verdict"] == "tied" and "did not beat" in report["summary"]


def test_boundary_grid_stays_within_the_radius_and_inside_0_1():
    sets = boundary_grid(TRAINED, 0.05)
    assert sets[0] == TRAINED and len(sets) == 9 and len(set(sets)) == 9
    assert len(boundary_grid((1 / 3, 2 / 3), 0.05)) == 9                 # unrounded: its own set once
    assert all(abs(b - t) <= 0.05 + 1e-9 for s in sets for b, t in zip(s, TRAINED))
    assert (0.45, 0.65) in sets and (0.35, 0.75) in sets
    near_edge = boundary_grid((0.05, 0.1), 0.06)                 # b_1 = -0.01 and b_1 >= b_2 are dropped
    assert near_edge == [(0.05, 0.1), (0.05, 0.16), (0.11, 0.16)]
    assert len(boundary_grid(TRAINED, 0.1, points=5)) == 25
    with pytest.raises(InputError, match=r"--boundary-radius 0.2 must be in \(0, 0.1\]"):
        boundary_grid(TRAINED, 2 * MAX_BOUNDARY_RADIUS)
    with pytest.raises(InputError, match="one stage"):
        boundary_grid((), 0.05)
    with pytest.raises(InputError, match="--boundary-points 1"):
        boundary_grid(TRAINED, 0.05, points=1)


def test_boundary_search_finds_the_better_boundaries_at_equal_cost():
    """Only b_1 = 0.45 is good (at any steps): the search moves b_1 there, says it beat both the default
    and the model's own boundaries, and the winner costs what the best steps cost."""
    calls = []
    report = run(lambda steps, b: 1.0 if b == (0.45, 0.7) else 0.0, radius=0.05, calls=calls)
    assert report["best_boundaries"] == [0.45, 0.7] and report["verdict"] == "beat"
    assert report["boundary_verdict"] == "beat" and "beat the model's own [0.4, 0.7]" in report["summary"]
    best = tuple(int(n) for n in report["best"].split("-"))
    assert report["best_cost"] == COST(best) and report["best_label"] == f"{report['best']} @ [0.45, 0.7]"
    confirmed = {(steps, b) for steps, b, seeds in calls if seeds == (2, 3)}
    assert confirmed == {(best, (0.45, 0.7)), ((2, 2, 1), TRAINED), (best, TRAINED)}      # confirmed on new seeds
    assert all(abs(b - t) <= 0.05 + 1e-9 for _, bs, _ in calls for b, t in zip(bs, TRAINED))


def test_boundary_search_never_leaves_the_radius():
    """A score that keeps rising with b_1 ends at the edge of the radius, not beyond it."""
    calls = []
    report = run(lambda steps, b: 10 * b[0], radius=0.05, calls=calls)
    assert report["best_boundaries"][0] == pytest.approx(0.45)
    assert max(b[0] for _, b, _ in calls) == pytest.approx(0.45) and min(b[0] for _, b, _ in calls) == pytest.approx(0.35)


def test_boundary_search_says_plainly_when_moving_the_boundaries_did_not_beat_the_model_s_own():
    report = run(lambda steps, b: 0.5, radius=0.05)                      # nothing changes the score
    steps_part, boundary_part = report["summary"].split("Boundaries:")
    assert report["verdict"] in ("not better", "tied") and "did not beat" in steps_part
    assert report["boundary_verdict"] in ("not better", "tied") and "did not beat" in boundary_part
    report = run(lambda steps, b: 1.0 if b == TRAINED and steps == (2, 2, 1) else 0.0, radius=0.05)
    assert report["boundary_verdict"] == "tied" and report["verdict"] == "tied"
    assert report["best_boundaries"] == list(TRAINED) and "the boundary search did not beat them" in report["summary"]
    plain = run(lambda s: 0.5)                                            # no boundary search asked for
    assert plain["boundary_verdict"] is None and "steps per stage only" in plain["searched"]
    assert all(c["boundaries"] == list(TRAINED) for c in plain["candidates"])


@pytest.mark.slow
def test_eval_schedules_cli_on_the_toy_model(tmp_path, one_thread):
    r = CliRunner().invoke(app, ["eval", "schedules", "--model", "toy", "--budget-flops", "4G", "--suite", "toy-2",
                                 "--seeds", "1", "--max-candidates", "3", "-q", "-o", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "s" / "schedules.json").read_text())
    assert report["metric"] == "toybench_overall" and report["cost_unit"] == "TFLOPs"
    assert report["verdict"] in ("beat", "not better", "tied") and report["summary"] in " ".join(r.output.split())
    assert all(c["cost"] <= 4e-3 for c in report["candidates"]) and report["baseline"] == "3"
    r = CliRunner().invoke(app, ["eval", "schedules", "--model", "toy", "--suite", "toy-2"])
    assert r.exit_code == 2 and "exactly one budget" in r.output


@pytest.mark.slow
def test_eval_schedules_cli_searches_boundaries_of_a_pyramid(tmp_path, one_thread, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["convert", "toy", "-o", "pyr"]).exit_code == 0
    trained = json.loads((tmp_path / "pyr" / "pyramid.json").read_text())["boundaries"]
    common = ["eval", "schedules", "--budget-flops", "2G", "--suite", "toy-2", "--seeds", "1", "--max-candidates", "2",
              "-q"]
    r = runner.invoke(app, [*common, "--model", "pyr", "--boundary-radius", "0.04", "--boundary-points", "2", "-o", "s"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "s" / "schedules.json").read_text())
    assert report["boundary_search"]["radius"] == 0.04 and report["boundary_search"]["sets"] == 5
    moved = [c for c in report["candidates"] if c["boundaries"] != trained]
    assert len(moved) == 4 and all(c["schedule"] == moved[0]["schedule"] and c["cost"] == moved[0]["cost"] for c in moved)
    assert all(abs(b - t) == pytest.approx(0.04) for c in moved for b, t in zip(c["boundaries"], trained))
    assert report["boundary_verdict"] in ("beat", "not better", "tied") and "Boundaries:" in report["summary"]
    assert report["summary"] in " ".join(r.output.split())
    r = runner.invoke(app, [*common, "--model", "pyr", "--boundary-radius", "0.3"])
    assert r.exit_code == 2 and "must be in (0, 0.1]" in r.output
    r = runner.invoke(app, [*common, "--model", "toy", "--boundaries-search"])
    assert r.exit_code == 2 and "no stage boundary to search" in r.output
