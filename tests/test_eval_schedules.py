"""Schedule search: candidates under a budget, the default scaled to it, and an honest verdict."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pyrawan.cli import app
from pyrawan.errors import InputError
from pyrawan.eval.schedules import candidates, per_stage_cost, plan_pool, scaled_default, search, valid

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


def noisy_score(quality):
    """Per-video values around quality(schedule): 6 videos, fixed noise per (schedule, seeds)."""
    def score(steps, seeds):
        rng = np.random.default_rng(abs(hash((steps, tuple(seeds)))) % 2**32)
        return list(quality(steps) + 0.01 * rng.standard_normal(6 * len(seeds)))
    return score


def run(quality, budget=6.5):             # 6.5 = COST((2, 2, 1)): the default itself fits exactly
    baseline, pool = plan_pool(3, (2, 2, 1), COST, budget, max_steps=4, max_candidates=12)
    return search((2, 2, 1), COST, noisy_score(quality), budget, baseline, pool, [0, 1], [2, 3])


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


@pytest.mark.slow
def test_eval_schedules_cli_on_the_toy_model(tmp_path, one_thread):
    r = CliRunner().invoke(app, ["eval", "schedules", "--model", "toy", "--budget-flops", "0.8G", "--suite", "toy-2",
                                 "--seeds", "1", "--max-candidates", "3", "-q", "-o", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "s" / "schedules.json").read_text())
    assert report["metric"] == "toybench_overall" and report["cost_unit"] == "TFLOPs"
    assert report["verdict"] in ("beat", "not better", "tied") and report["summary"] in " ".join(r.output.split())
    assert all(c["cost"] <= 0.8e-3 for c in report["candidates"]) and report["baseline"] == "3"
    r = CliRunner().invoke(app, ["eval", "schedules", "--model", "toy", "--suite", "toy-2"])
    assert r.exit_code == 2 and "exactly one budget" in r.output
