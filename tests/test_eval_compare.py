"""``eval compare`` and ``eval report`` on three small synthetic eval artifacts, and the Pareto front."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pyrawan.cli import app
from pyrawan.data.video import write_video
from pyrawan.eval.artifact import build_eval, read_eval, write_eval
from pyrawan.eval.compare import MIN_VIDEOS, compare, markdown, pareto_front
from pyrawan.manifest import write_manifest
from pyrawan.outputs import artifact_dir

PROMPTS = ["a red square", "a blue circle"]


def make_artifact(folder: Path, label: str, psnr: list[float], tflops: float, seconds: float, repeat: int = 1) -> Path:
    """An eval artifact with two videos (mp4 inside), per-video pixel_psnr and flicker; ``repeat``: each
    (prompt, value) ``repeat`` times with seeds 0.. (no mp4 for the copies)."""
    with artifact_dir(folder) as tmp:
        videos = []
        for i, (prompt, value) in enumerate(zip(PROMPTS, psnr)):
            write_video(tmp / "videos" / f"{i}.mp4", torch.full((5, 3, 16, 16), 0.2 + 0.1 * i), fps=8)
            for seed in range(repeat):
                videos.append({"index": len(videos), "prompt": prompt, "seed": seed,
                               "video": f"videos/{i}.mp4" if seed == 0 else None,
                               "values": {"pixel_psnr": value, "temporal_flickering": 0.99}})
        write_eval(tmp, build_eval("quality", label, videos, model=label, schedule="2-2-1",
                                   tflops_per_video=tflops, seconds_per_video=seconds))
        write_manifest(tmp, "eval-quality", {"kind": "eval-quality"}, [], {}, None)
    return folder


@pytest.fixture
def three(tmp_path):
    return [make_artifact(tmp_path / "teacher", "teacher", [30.0, 32.0], 10.0, 5.0),
            make_artifact(tmp_path / "cheap", "cheap", [20.0, 21.0], 1.0, 0.5),
            make_artifact(tmp_path / "bad", "bad", [10.0, 12.0], 5.0, 2.0)]


def test_pareto_front():
    points = [(10.0, 31.0), (1.0, 20.5), (5.0, 11.0), (1.0, 19.0)]
    assert pareto_front(points) == [1, 0]
    assert pareto_front([(c, -q) for c, q in points], higher_is_better=False) == [1, 0]
    assert pareto_front([(1.0, 5.0), (1.0, 5.0)]) == [0, 1]              # ties dominate nothing
    assert pareto_front([(2.0, 5.0), (1.0, 5.0)]) == [1]                   # as good for less: dominated
    assert pareto_front([(1.0, 4.0), (1.0, 5.0)], higher_is_better=False) == [0]   # as cheap, better


def test_compare_values_deltas_and_front(three):
    result = compare([read_eval(p) for p in three], baseline=0)
    assert result["quality_metric"] == "pixel_psnr" and result["cost_unit"] == "tflops"
    rows = {r["label"]: r for r in result["rows"]}
    assert rows["teacher"]["metrics"]["pixel_psnr"]["mean"] == pytest.approx(31.0)
    assert rows["cheap"]["metrics"]["pixel_psnr"]["delta"] == pytest.approx(20.5 - 31.0)
    assert rows["cheap"]["metrics"]["pixel_psnr"]["differs"] is None          # 2 videos: too few to call it
    assert [r["pareto"] for r in result["rows"]] == [True, True, False]    # "bad" costs more than "cheap", scores less
    assert rows["cheap"]["tflops_per_video"] == 1.0 and rows["bad"]["seconds_per_video"] == 2.0
    assert rows["cheap"]["cost_ratio"] == pytest.approx(0.1) and rows["teacher"]["cost_ratio"] == 1.0
    assert result["warnings"] == []


def test_compare_stars_a_delta_only_on_disjoint_intervals_of_enough_videos(tmp_path):
    def artifact(name, psnr, repeat):
        return read_eval(make_artifact(tmp_path / name, name, psnr, 1.0, 1.0, repeat))

    enough = MIN_VIDEOS // 2                                             # 2 prompts x enough seeds = MIN_VIDEOS
    teacher, worse, close = artifact("t", [30.0, 32.0], enough), artifact("w", [20.0, 21.0], enough), \
        artifact("c", [29.0, 32.5], enough)
    rows = compare([teacher, worse, close])["rows"]
    assert rows[1]["metrics"]["pixel_psnr"]["differs"] is True           # disjoint intervals, 10 videos each
    assert rows[2]["metrics"]["pixel_psnr"]["differs"] is False          # overlapping: not called a difference
    assert rows[0]["metrics"]["temporal_flickering"]["differs"] is False
    few = artifact("f", [20.0, 21.0], enough - 1)                          # 8 videos: disjoint, but too few
    assert compare([teacher, few])["rows"][1]["metrics"]["pixel_psnr"]["differs"] is None
    assert "(Δ -10.500* [-10.800, -10.200]†)" in markdown(compare([teacher, worse]))
    assert "(Δ -10.500)" in markdown(compare([teacher, few]))        # fewer seeds: not the same pairs, not paired


def test_compare_gives_a_paired_interval_that_sees_what_overlapping_intervals_hide(tmp_path):
    """Same prompts and seeds, each video a little better than its baseline twin: the marginal intervals
    overlap (no *), the paired interval of the differences excludes 0 (†)."""
    def artifact(name, psnr):
        return read_eval(make_artifact(tmp_path / name, name, psnr, 1.0, 1.0, MIN_VIDEOS // 2))

    teacher, better = artifact("t", [20.0, 30.0]), artifact("b", [20.5, 30.5])
    entry = compare([teacher, better])["rows"][1]["metrics"]["pixel_psnr"]
    assert entry["differs"] is False and entry["paired"]["differs"] is True
    assert entry["paired"]["mean"] == pytest.approx(0.5) and entry["paired"]["n"] == MIN_VIDEOS
    assert "(Δ +0.500 [+0.500, +0.500]†)" in markdown(compare([teacher, better]))
    better["videos"][0]["seed"] = 99                                     # not the same pairs: no paired interval
    assert compare([teacher, better])["rows"][1]["metrics"]["pixel_psnr"]["paired"] is None


def test_compare_pairs_videos_by_prompt_and_seed_not_by_position():
    """Videos listed in another order, each one 0.1-0.9 better than its (prompt, seed) twin while prompts
    differ by tens: paired by key the interval lies within the true differences; paired by position it
    would mix prompts and straddle 0."""
    from pyrawan.eval.stats import mean_ci

    keys = [(f"prompt {p}", seed) for p in range(4) for seed in range(3)]
    base_values = [10.0 * p + seed for p, seed in ((k, s) for k in range(4) for s in range(3))]
    gains = [0.1 + 0.8 * ((7 * i) % 12) / 11 for i in range(12)]                  # 0.1 ... 0.9, not constant
    order = [5, 0, 11, 3, 8, 1, 10, 6, 2, 9, 4, 7]

    def evaluation(label, items):
        videos = [{"index": i, "prompt": p, "seed": s, "video": None, "values": {"pixel_psnr": v}}
                  for i, ((p, s), v) in enumerate(items)]
        return build_eval("quality", label, videos, tflops_per_video=1.0)

    base = evaluation("teacher", zip(keys, base_values))
    other = evaluation("student", [(keys[i], base_values[i] + gains[i]) for i in order])
    paired = compare([base, other])["rows"][1]["metrics"]["pixel_psnr"]["paired"]
    assert paired["mean"] == pytest.approx(sum(gains) / 12) and paired["n"] == 12
    assert min(gains) <= paired["low"] < paired["mean"] < paired["high"] <= max(gains) and paired["differs"] is True
    assert (paired["low"], paired["high"]) == pytest.approx(mean_ci(gains)[1:])   # the baseline's order of pairs
    by_position = [o["values"]["pixel_psnr"] - b["values"]["pixel_psnr"]
                   for o, b in zip(other["videos"], base["videos"])]
    assert mean_ci(by_position)[1] < 0 < mean_ci(by_position)[2]                   # what a positional pairing gives


def test_numbers_in_the_table():
    from pyrawan.eval.compare import _num, cell

    assert [_num(v) for v in (None, float("inf"), float("nan"))] == ["–"] * 3 and cell(None, False) == "–"
    assert [_num(v) for v in (0.0, 0.01, 0.001234, -0.004, 12.3456)] == ["0.000", "0.010", "0.00123", "-0.004", "12.346"]
    assert _num(0.5, 2) == "0.50"


def test_markdown_of_a_result_written_by_hand():
    from pyrawan.eval.compare import _cost, _signed, cell

    q_base = {"mean": 1.0, "low": 0.5, "high": 1.5, "delta": 0.0, "differs": None}
    q_row = {"mean": 0.0, "low": -1.0, "high": 1.0, "delta": -1.0, "differs": True,
             "paired": {"low": -1.5, "high": -0.5, "differs": True}}
    result = {"baseline": "teacher", "baseline_index": 0, "note": "NOTE", "warnings": ["w|1", "w2"],
              "metrics": {"q": {}, "r": {}},
              "rows": [{"label": "teacher", "schedule": None, "videos": 2, "tflops_per_video": 10.0,
                        "seconds_per_video": 5.0, "cost_ratio": 1.0, "pareto": True, "metrics": {"q": q_base, "r": None}},
                       {"label": "a|b", "schedule": "2-2-1", "videos": 2, "tflops_per_video": None,
                        "seconds_per_video": 0.5, "cost_ratio": None, "pareto": False,
                        "metrics": {"q": q_row, "r": {"mean": 2.0, "low": 2.0, "high": 2.0, "n": 2}}}]}
    assert markdown(result) == (
        "Baseline: teacher. NOTE\n\nWarning: w\\|1\n\nWarning: w2\n\n"
        "| model | schedule | videos | TFLOPs/video | s/video | cost × baseline | Pareto | q | r |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        "| teacher | – | 2 | 10.0000 | 5.000 | 1.00 | yes | 1.000 [0.500, 1.500] | – |\n"
        "| a\\|b | 2-2-1 | 2 | – | 0.500 | – |  | 0.000 [-1.000, 1.000] (Δ -1.000* [-1.500, -0.500]†) "
        "| 2.000 [2.000, 2.000] |\n")
    assert markdown(result, ["r"]).splitlines()[-1].endswith("| 0.500 | – |  | 2.000 [2.000, 2.000] |")
    assert cell(q_row, False, folded=True) == "0.000 [-1.000, 1.000]\nΔ -1.000* [-1.500, -0.500]†"
    assert _signed(0.0) == "+0.000" and _signed(-0.5) == "-0.500"
    assert _cost({"cost": {"tflops_per_video": None, "seconds_per_video": 2.0}}) == ("seconds", 2.0)
    assert _cost({"cost": {"tflops_per_video": 3.0, "seconds_per_video": 2.0}}) == ("tflops", 3.0)


def test_compare_and_the_quality_metric_refuse_what_they_cannot_compare():
    from pyrawan.errors import InputError
    from pyrawan.eval.compare import pick_quality_metric

    def evaluation(values):
        return build_eval("quality", "x", [{"index": 0, "prompt": "p", "seed": 0, "video": None, "values": values}])
    both, flicker, psnr = (evaluation(v) for v in ({"pixel_psnr": 20.0, "temporal_flickering": 0.9},
                                                   {"temporal_flickering": 0.8}, {"pixel_psnr": 21.0}))
    assert compare([both])["rows"][0]["metrics"]["pixel_psnr"]["mean"] == 20.0           # one artifact is enough
    with pytest.raises(InputError, match=r"^eval compare needs at least one eval artifact\.$"):
        compare([])
    with pytest.raises(InputError, match=r"^--baseline index 1 is outside the 1 artifacts given\.$"):
        compare([both], baseline=1)
    assert compare([both, both], quality="temporal_flickering")["quality_metric"] == "temporal_flickering"
    row = compare([both, flicker])["rows"][1]["metrics"]                                 # a metric it lacks
    assert row["pixel_psnr"] is None and row["temporal_flickering"]["delta"] == pytest.approx(-0.1)
    row = compare([flicker, both])["rows"][1]["metrics"]                                 # the baseline lacks
    assert "delta" not in row["pixel_psnr"] and row["temporal_flickering"]["paired"]["mean"] == pytest.approx(0.1)
    bare = {k: v for k, v in both.items() if k != "videos"}                              # no per-video list
    assert compare([both, bare])["rows"][1]["metrics"]["pixel_psnr"]["paired"] is None
    with pytest.raises(InputError, match=r"^--metric 'nope' is in none of the artifacts; they have: pixel_psnr, "
                                         r"temporal_flickering\.$"):
        pick_quality_metric([both], "nope")
    assert pick_quality_metric([both, flicker]) == "temporal_flickering"                  # the only shared one
    with pytest.raises(InputError, match=r"^the artifacts share no metric with a value; compare artifacts of the "
                                         r"same kind \(e\.g\. all from `eval quality` on the same prompts\)\.$"):
        pick_quality_metric([flicker, psnr])


def test_compare_rows_written_by_hand():
    def evaluation(label, psnr, tflops, seconds):
        body = build_eval("quality", label, [{"index": 0, "prompt": "p", "seed": 0, "video": None,
                                              "values": {"pixel_psnr": psnr}}], model=f"m-{label}", schedule="2-2-1",
                          tflops_per_video=tflops, seconds_per_video=seconds)
        return {**body, "path": f"/runs/{label}"}
    result = compare([evaluation("t", 30.0, 10.0, 5.0), evaluation("s", 21.0, 1.0, None)])
    common = {"kind": "quality", "schedule": "2-2-1", "videos": 1, "cost_unit": "tflops", "pareto": True}
    assert result["rows"] == [
        {**common, "label": "t", "path": "/runs/t", "model": "m-t", "tflops_per_video": 10.0, "seconds_per_video": 5.0,
         "cost": 10.0, "cost_ratio": 1.0,
         "metrics": {"pixel_psnr": {"mean": 30.0, "low": 30.0, "high": 30.0, "n": 1, "delta": 0.0, "differs": None}}},
        {**common, "label": "s", "path": "/runs/s", "model": "m-s", "tflops_per_video": 1.0, "seconds_per_video": None,
         "cost": 1.0, "cost_ratio": 0.1,
         "metrics": {"pixel_psnr": {"mean": 21.0, "low": 21.0, "high": 21.0, "n": 1, "delta": -9.0, "differs": None,
                                    "paired": {"mean": -9.0, "low": -9.0, "high": -9.0, "n": 1, "differs": None}}}}]
    assert {k: result[k] for k in ("baseline", "baseline_index", "quality_metric", "quality_higher_is_better",
                                   "cost_unit", "warnings")} == {
        "baseline": "t", "baseline_index": 0, "quality_metric": "pixel_psnr", "quality_higher_is_better": True,
        "cost_unit": "tflops", "warnings": []}
    assert result["metrics"]["pixel_psnr"]["higher_is_better"] is True and result["metrics"]["pixel_psnr"]["unit"] == "dB"


def test_compare_reads_each_metrics_info_and_the_quality_direction_and_leaves_a_row_without_cost_unplotted():
    """Artifacts written by hand without per-video lists: the quality metric is lower-is-better (the front
    follows it: cheaper rows score worse, so all three are on it; higher-is-better would keep only "a"), a
    metric's summary without info keys gets the defaults, a row without a cost is neither plotted nor priced."""
    def evaluation(label, mse, tflops, x=None):
        summary = {"mse": {"mean": mse, "low": mse, "high": mse, "n": 1, "higher_is_better": False, "unit": "u",
                           "description": "mean squared error"}}
        if x is not None:
            summary["x"] = {"mean": x, "low": x, "high": x, "n": 1}
        return {"label": label, "summary": summary, "cost": {"tflops_per_video": tflops}}

    result = compare([evaluation("t", 1.0, 10.0, x=3.0), evaluation("a", 2.0, 1.0), evaluation("b", 1.5, 5.0),
                      evaluation("free", 0.5, None)], quality="mse")
    rows = result["rows"]
    assert result["quality_higher_is_better"] is False and result["cost_unit"] == "tflops"
    assert [r.get("pareto") for r in rows] == [True, True, True, None] and "pareto" not in rows[3]
    assert [r["cost_ratio"] for r in rows] == [1.0, 0.1, 0.5, None]
    assert result["metrics"] == {"mse": {"higher_is_better": False, "unit": "u", "description": "mean squared error"},
                                 "x": {"higher_is_better": True, "unit": "", "description": "x"}}
    assert rows[1]["videos"] == 0 and rows[1]["metrics"]["x"] is None
    assert rows[1]["metrics"]["mse"]["delta"] == 1.0 and rows[1]["metrics"]["mse"]["paired"] is None


def test_a_count_missing_from_a_summary_counts_as_none():
    from pyrawan.eval.compare import delta_differs

    unknown, far = {"low": 0.0, "high": 1.0}, {"low": 5.0, "high": 6.0, "n": 50}
    assert delta_differs(unknown, far) is None and delta_differs(far, unknown) is None
    assert delta_differs(unknown, far, min_videos=1) is None and delta_differs(far, unknown, min_videos=1) is None
    assert delta_differs({**unknown, "n": 1}, far, min_videos=1) is True                 # one value, when allowed


def test_paired_delta_refuses_what_it_cannot_pair_and_an_interval_ending_at_0_is_no_difference():
    from pyrawan.eval.compare import paired_delta

    def videos(values):
        return [{"prompt": f"p{i}", "seed": 0, "values": {"m": v}} for i, v in enumerate(values)]
    base = videos([0.0] * 10)
    assert paired_delta(videos([1.0] * 10), base, "m") == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 10,
                                                           "differs": True}
    for bad in (math.nan, math.inf, None, "1.0"):                     # a video without a finite number: no pairing
        assert paired_delta(videos([1.0] * 9 + [bad]), base, "m") is None, bad
        assert paired_delta(base, videos([1.0] * 9 + [bad]), "m") is None, bad
    unscored = videos([1.0] * 10)
    unscored[3]["values"] = {}                                        # a set-level metric has no value per video
    assert paired_delta(unscored, base, "m") is None
    twice = videos([1.0] * 10) + [{"prompt": "p0", "seed": 0, "values": {"m": 5.0}}]   # a pair repeats on one side
    assert paired_delta(twice, base, "m") is None and paired_delta(base, twice, "m") is None
    # 9 of the 10 differences are 0: 0.9^10 = 35 % of the resamples have mean 0, so the interval ends exactly at 0
    up, down = paired_delta(videos([0.0] * 9 + [1.0]), base, "m"), paired_delta(videos([0.0] * 9 + [-1.0]), base, "m")
    assert up["low"] == 0.0 < up["high"] < 1.0 and up["differs"] is False
    assert down["high"] == 0.0 > down["low"] > -1.0 and down["differs"] is False
    assert paired_delta(videos([-1.0] * 10), base, "m")["differs"] is True


def test_cost_ratio_needs_two_costs_in_one_unit_and_a_positive_baseline():
    from pyrawan.eval.compare import cost_ratio

    def row(cost, unit="tflops"):
        return {"cost": cost, "cost_unit": unit}
    assert cost_ratio(row(1.0), row(0.5)) == 2.0 and cost_ratio(row(0.0), row(4.0)) == 0.0
    for mine, base in ((row(None), row(1.0)), (row(1.0), row(None)), (row(None), row(None)),
                       (row(1.0, "seconds"), row(1.0)), (row(1.0), row(0.0))):
        assert cost_ratio(mine, base) is None, (mine, base)


def test_the_default_columns_are_the_quality_metric_then_each_metric_a_row_differs_in():
    from pyrawan.eval.compare import default_metrics

    def entry(differs=None, paired=None):
        return {"mean": 1.0, "differs": differs, "paired": paired}
    rows = [{"metrics": {"same": entry(False, {"differs": False}), "starred": None, "q": entry(),
                         "daggered": entry(), "none": entry()}},
            {"metrics": {"same": entry(False, {"differs": None}), "starred": entry(True), "q": entry(False),
                         "daggered": entry(False, {"differs": True}), "none": None}}]
    result = {"quality_metric": "q", "metrics": dict.fromkeys(["same", "starred", "q", "daggered", "none"], {}),
              "rows": rows}
    assert default_metrics(result) == ["q", "starred", "daggered"]


def test_compare_warns_when_only_the_prompts_differ():
    def evaluation(label, prompts):
        return build_eval("quality", label, [{"index": i, "prompt": p, "seed": 0, "video": None, "values": {"q": 1.0}}
                                             for i, p in enumerate(prompts)])
    evals = [evaluation("t", ["a", "b"]), evaluation("s", ["a", "c"]), evaluation("u", ["b", "a"])]   # same seeds
    warnings = compare(evals)["warnings"]
    assert warnings == ["s: evaluated on other (prompt, seed) pairs than the baseline (1 not in it, 1 missing); "
                        "its deltas are not paired"]


def test_compare_warns_when_the_videos_are_not_the_same_prompts_and_seeds(three):
    evals = [read_eval(p) for p in three]
    evals[2]["videos"][1]["seed"] = 7
    warnings = compare(evals)["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("bad: evaluated on other (prompt, seed) pairs")


def test_compare_and_report_cli(three, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["eval", "compare", *map(str, three), "--baseline", str(three[0]), "-o", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "c" / "compare.md").read_text()
    assert "| cheap | 2-2-1 | 2 | 1.0000 | 0.500 | 0.10 |" in md and "20.500 [20.000, 21.000] (Δ -10.500 [-11.000, -10.000])" in md
    data = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert data["baseline"] == "teacher" and len(data["rows"]) == 3
    assert (tmp_path / "c" / "quality_vs_cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    r = runner.invoke(app, ["eval", "report", *map(str, three), "-o", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r" / "index.html").read_text()
    # 2 (prompt, seed) pairs × 3 models side by side, then again in one section per model
    assert page.count("<video ") == 12 and page.count("<details ") == 3 and "controls" not in page
    assert "quality_vs_cost.png" in page and "a blue circle" in page
    assert "seed 0 · pixel_psnr 12.000" in page     # the video's own score, not its row's mean (11.000)
    files = re.findall(r"(?:src|poster)='([^']+)'", page)
    assert sum(f.endswith(".png") and f.startswith("videos/") for f in files) == 12
    for name in files:
        assert not name.startswith("/") and (tmp_path / "r" / name).is_file()


def test_report_table_groups_metrics_and_puts_the_delta_on_its_own_line(three):
    from pyrawan.eval.compare import table_rows
    from pyrawan.eval.html import COST_COLUMNS, RUN_COLUMNS, metric_groups, results_table

    assert metric_groups(["toybench_overall", "pixel_psnr", "toybench_fd", "flicker", "pixel_ssim", "vbench_x"]) == [
        ("toybench", ["toybench_overall", "toybench_fd"]), ("pixel", ["pixel_psnr", "pixel_ssim"]),
        ("other", ["flicker", "vbench_x"])]
    result = compare([read_eval(p) for p in three])
    assert table_rows(result)[0][RUN_COLUMNS + COST_COLUMNS - 1] == "Pareto"   # the fixed columns end there
    table = results_table(result)
    assert "colspan='4'>cost</th>" in table and "<th class=sticky>cheap</th>" in table
    assert "20.500 [20.000, 21.000]<br><span class='delta'>Δ -10.500 [-11.000, -10.000]</span>" in table


def _overlapping(boxes) -> bool:
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_plot_log_ticks_do_not_collide_and_labels_stay_off_the_pareto_line():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyrawan.eval.compare import log_ticks, place_labels

    for costs in ([2.4, 3.2, 12.2], [0.155, 0.49, 3.1, 12.0], [0.01, 1.0, 1000.0]):
        fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
        ax.plot(costs, range(len(costs)), "o")
        ax.set_xscale("log")
        log_ticks(ax, costs)
        ax.margins(x=0.25)
        fig.canvas.draw()
        ticks = [t.get_window_extent() for t in ax.get_xticklabels() if t.get_text() and t.get_visible()
                 and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
        assert len(ticks) >= 2 and not _overlapping(ticks), costs
        plt.close(fig)

    # a front rising to the right: the old label spot (up and right of each point) sat on the line
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    xs, ys = [0.15, 3.1, 12.0], [0.59, 0.66, 0.72]
    (line,) = ax.plot(xs, ys, "k--")
    ax.plot([3.1], [0.45], "o")
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.15)
    fig.tight_layout()
    points = [(f"row {i}", x, y, y - 0.02, y + 0.02) for i, (x, y) in enumerate(zip(xs, ys))]
    labels = place_labels(ax, [*points, ("below", 3.1, 0.45, 0.43, 0.47)], line)
    path = line.get_path().transformed(line.get_transform())
    boxes = [label.get_window_extent() for label in labels]
    assert not any(path.intersects_bbox(box, filled=False) for box in boxes) and not _overlapping(boxes)
    plt.close(fig)


def test_log_ticks_step_by_the_decades_the_costs_span():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyrawan.eval.compare import log_ticks

    expected = {(1.0, 8.0): ["1", "1.5", "2", "3", "5", "7"],             # under one decade: 1-1.5-2-3-5-7
                (1.0, 10.0): ["1", "2", "5", "10"],                       # one decade up to three: 1-2-5
                (1.0, 100.0): ["1", "2", "5", "10", "20", "50", "100"],
                (1.0, 1000.0): ["1", "10", "100", "1000"]}                # three decades and more: powers of ten
    for costs, labels in expected.items():
        fig, ax = plt.subplots()
        ax.set_xscale("log")
        ax.set_xlim(*costs)
        log_ticks(ax, costs)
        fig.canvas.draw()
        shown = [t for t in ax.get_xticklabels() if costs[0] <= t.get_position()[0] <= costs[1]]
        assert [t.get_position()[0] for t in shown] == pytest.approx([float(v) for v in labels]), costs
        assert [t.get_text() for t in shown] == labels, costs
        assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))
        plt.close(fig)


def test_compare_rejects_a_baseline_not_given_and_a_non_eval_artifact(three, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["eval", "compare", str(three[1]), "--baseline", str(three[0])])
    assert r.exit_code == 2 and "not one of the artifacts" in r.output
    (tmp_path / "plain").mkdir()
    r = runner.invoke(app, ["eval", "compare", str(tmp_path / "plain")])
    assert r.exit_code == 2 and "manifest.json" in r.output
