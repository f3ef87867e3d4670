"""Compare eval artifacts: one table (each metric's mean and 95% CI, cost, deltas to a baseline),
the Pareto front of quality against cost, and a PNG of it.

A delta is ``mean - baseline mean``; ``differs`` is True when the two 95% intervals do not overlap
(``pyrawan.eval.stats.differs``: conservative, a real difference can still overlap), and None when
either side has fewer than MIN_VIDEOS values: a bootstrap interval over so few is too narrow to
call anything. When a row was judged on the same (prompt, seed) pairs as the baseline (``eval
quality`` with the same suite and seeds: coupled noise, so the pairs share their noise), ``paired``
holds the mean of the per-video differences and its 95% bootstrap interval; its ``differs`` is True
when that interval excludes 0 (the test for a paired design: far more sensitive than disjoint
intervals, since the prompt-to-prompt spread cancels). A row's ``cost_ratio`` is its cost over the
baseline's (same unit).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from pyrawan.errors import InputError
from pyrawan.escape import PLOT_TEXT, markdown_text
from pyrawan.eval.stats import differs, mean_ci

QUALITY_ORDER = ("toybench_overall", "pixel_psnr", "pixel_ssim", "latent_psnr", "vbench_total")
TEXT_COLUMNS = 2    # model label and schedule: the table's columns of text read from artifacts
MIN_VIDEOS = 10     # fewer values on either side: no call on a delta (differs = None, no star)


def metric_names(evals: Sequence[dict]) -> list[str]:
    """Every metric of any artifact, in order of first appearance."""
    return list(dict.fromkeys(name for e in evals for name in e["summary"]))


def pick_quality_metric(evals: Sequence[dict], metric: str | None = None) -> str:
    """The metric on the quality axis: ``metric`` if given, else the first of QUALITY_ORDER all artifacts have."""
    names = metric_names(evals)
    if metric is not None:
        if metric not in names:
            raise InputError(f"--metric {metric!r} is in none of the artifacts; they have: {', '.join(names)}.")
        return metric
    shared = [n for n in names if all(e["summary"].get(n, {}).get("mean") is not None for e in evals)]
    for name in QUALITY_ORDER:
        if name in shared:
            return name
    if not shared:
        raise InputError("the artifacts share no metric with a value; compare artifacts of the same kind "
                         "(e.g. all from `eval quality` on the same prompts).")
    return shared[0]


def _cost(e: dict) -> tuple[str, float | None]:
    cost = e.get("cost") or {}
    return ("tflops", cost.get("tflops_per_video")) if cost.get("tflops_per_video") is not None else \
        ("seconds", cost.get("seconds_per_video"))


def pareto_front(points: Sequence[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of the points ``(cost, quality)`` no other point beats: cheaper-or-equal *and*
    better-or-equal with one strict. Sorted by cost."""
    sign = 1.0 if higher_is_better else -1.0
    front = []
    for i, (c, q) in enumerate(points):
        dominated = any((c2 <= c and sign * q2 >= sign * q) and (c2 < c or sign * q2 > sign * q)
                        for j, (c2, q2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def compare(evals: Sequence[dict], baseline: int = 0, quality: str | None = None) -> dict:
    """The comparison of eval artifacts (``read_eval`` bodies); ``baseline`` indexes ``evals``."""
    if len(evals) < 1:
        raise InputError("eval compare needs at least one eval artifact.")
    if not 0 <= baseline < len(evals):
        raise InputError(f"--baseline index {baseline} is outside the {len(evals)} artifacts given.")
    names = metric_names(evals)
    quality = pick_quality_metric(evals, quality)
    base = evals[baseline]
    rows = []
    for e in evals:
        unit, value = _cost(e)
        metrics = {}
        for name in names:
            s = e["summary"].get(name)
            b = base["summary"].get(name)
            if s is None or s.get("mean") is None:
                metrics[name] = None
                continue
            entry = {k: s[k] for k in ("mean", "low", "high", "n")}
            if b is not None and b.get("mean") is not None:
                entry["delta"] = s["mean"] - b["mean"]
                entry["differs"] = delta_differs(s, b)
                if e is not base:
                    entry["paired"] = paired_delta(e.get("videos", []), base.get("videos", []), name)
            metrics[name] = entry
        rows.append({"label": e.get("label"), "path": e.get("path"), "kind": e.get("kind"), "model": e.get("model"),
                     "schedule": e.get("schedule"), "videos": len(e.get("videos", [])),
                     "tflops_per_video": (e.get("cost") or {}).get("tflops_per_video"),
                     "seconds_per_video": (e.get("cost") or {}).get("seconds_per_video"),
                     "cost_unit": unit, "cost": value, "metrics": metrics})
    higher = next((e["summary"][quality]["higher_is_better"] for e in evals if quality in e["summary"]), True)
    units = {r["cost_unit"] for r in rows if r["cost"] is not None}
    for r in rows:
        r["cost_ratio"] = cost_ratio(r, rows[baseline])
    plotted = [i for i, r in enumerate(rows) if r["cost"] is not None and r["metrics"].get(quality)
               and len(units) == 1]
    front = pareto_front([(rows[i]["cost"], rows[i]["metrics"][quality]["mean"]) for i in plotted], higher)
    for k, i in enumerate(plotted):
        rows[i]["pareto"] = k in front
    info = {n: next((e["summary"][n] for e in evals if n in e["summary"]), {}) for n in names}
    return {"baseline": rows[baseline]["label"], "baseline_index": baseline, "quality_metric": quality,
            "warnings": same_videos_warnings(evals, baseline),
            "quality_higher_is_better": higher, "cost_unit": units.pop() if len(units) == 1 else None,
            "metrics": {n: {"higher_is_better": info[n].get("higher_is_better", True), "unit": info[n].get("unit", ""),
                            "description": info[n].get("description", n)} for n in names},
            "rows": rows,
            "note": (f"mean [95% CI over videos]; Δ = mean - baseline mean; * = the 95% intervals do not overlap "
                     f"(no * is given when either side has fewer than {MIN_VIDEOS} videos); Δ [low, high] = the "
                     f"paired 95% interval of the per-video differences, where both were judged on the same "
                     f"(prompt, seed) pairs; † = that interval excludes 0; cost × baseline = cost / the "
                     f"baseline's.")}


def delta_differs(entry: dict, base: dict, min_videos: int = MIN_VIDEOS) -> bool | None:
    """True/False: the two 95% intervals are disjoint or not; None when either side has fewer than
    ``min_videos`` values (``n``)."""
    if min(entry.get("n", 0), base.get("n", 0)) < min_videos:
        return None
    return differs((entry["low"], entry["high"]), (base["low"], base["high"]))


def paired_delta(videos: Sequence[dict], base_videos: Sequence[dict], name: str,
                 min_videos: int = MIN_VIDEOS) -> dict | None:
    """Mean of the per-video differences of ``name`` against the baseline's same (prompt, seed) video, its
    95% bootstrap interval, ``n`` and ``differs`` (the interval excludes 0; None under ``min_videos``).

    None when the two sets are not the same pairs, a pair repeats, or a video has no finite value (a
    set-level metric such as FD has none per video).
    """
    def by_pair(rows: Sequence[dict]) -> dict:
        return {(v.get("prompt"), v.get("seed")): (v.get("values") or {}).get(name) for v in rows}

    mine, base = by_pair(videos), by_pair(base_videos)
    values = [*mine.values(), *base.values()]
    if not mine or mine.keys() != base.keys() or len(mine) != len(videos) or len(base) != len(base_videos) or \
            not all(isinstance(x, (int, float)) and math.isfinite(x) for x in values):
        return None
    mean, low, high = mean_ci([mine[k] - base[k] for k in base])
    return {"mean": mean, "low": low, "high": high, "n": len(base),
            "differs": None if len(base) < min_videos else bool(low > 0 or high < 0)}


def cost_ratio(row: dict, base: dict) -> float | None:
    """A row's cost over the baseline's, when both have one in the same unit."""
    if row["cost"] is None or base["cost"] is None or row["cost_unit"] != base["cost_unit"] or not base["cost"] > 0:
        return None
    return row["cost"] / base["cost"]


def same_videos_warnings(evals: Sequence[dict], baseline: int) -> list[str]:
    """One line per artifact whose (prompt, seed) set differs from the baseline's: its deltas then mix
    a model difference with a prompt difference."""
    def keys(e: dict) -> set:
        return {(v.get("prompt"), v.get("seed")) for v in e.get("videos", [])}
    base = keys(evals[baseline])
    return [f"{e.get('label')}: evaluated on other (prompt, seed) pairs than the baseline "
            f"({len(keys(e) - base)} not in it, {len(base - keys(e))} missing); its deltas are not paired"
            for e in evals if keys(e) != base]


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 1e-2 and value != 0 else f"{value:.{digits}f}"


def cell(entry: dict | None, is_baseline: bool, folded: bool = False) -> str:
    """``mean [low, high]`` plus ``(Δ +x*)`` against the baseline; ``folded``: the Δ on a second line, no
    parentheses (the terminal table)."""
    if entry is None:
        return "–"
    text = f"{_num(entry['mean'])} [{_num(entry['low'])}, {_num(entry['high'])}]"
    if not is_baseline and "delta" in entry:
        paired = entry.get("paired")
        interval = "" if not paired else \
            f" [{_signed(paired['low'])}, {_signed(paired['high'])}]{'†' if paired['differs'] else ''}"
        delta = f"Δ {_signed(entry['delta'])}{'*' if entry['differs'] else ''}{interval}"
        text += f"\n{delta}" if folded else f" ({delta})"
    return text


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "") + _num(value)


def table_rows(result: dict, metrics: Sequence[str] | None = None,
               folded: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table (strings); ``folded``: cells for a terminal (see ``cell``)."""
    names = list(metrics or result["metrics"])
    header = ["model", "schedule", "videos", "TFLOPs/video", "s/video", "cost × baseline", "Pareto", *names]
    rows = []
    for i, r in enumerate(result["rows"]):
        rows.append([str(r["label"]), str(r["schedule"] or "–"), str(r["videos"]), _num(r["tflops_per_video"], 4),
                     _num(r["seconds_per_video"], 3), _num(r.get("cost_ratio"), 2), "yes" if r.get("pareto") else "",
                     *(cell(r["metrics"].get(n), i == result["baseline_index"], folded) for n in names)])
    return header, rows


def _differs(entry: dict | None) -> bool:
    paired = (entry or {}).get("paired") or {}
    return bool((entry or {}).get("differs") or paired.get("differs"))


def default_metrics(result: dict) -> list[str]:
    """The metrics a terminal shows by default: the quality metric, then every metric in which some row
    differs from the baseline (disjoint intervals, or a paired interval that excludes 0)."""
    quality = result["quality_metric"]
    return [quality, *(n for n in result["metrics"] if n != quality and
                       any(_differs(r["metrics"].get(n)) for r in result["rows"]))]


def markdown(result: dict, metrics: Sequence[str] | None = None) -> str:
    """The table as GitHub markdown, with the baseline and the note."""
    header, rows = table_rows(result, metrics)

    def line(cells) -> str:
        return "| " + " | ".join(cells) + " |"
    lines = [line(map(markdown_text, header)), "|" + "---|" * len(header)]
    # label and schedule are text read from the artifacts; the other cells are numbers pyrawan formatted
    lines += [line([*map(markdown_text, row[:TEXT_COLUMNS]), *(c.replace("|", "\\|") for c in row[TEXT_COLUMNS:])])
              for row in rows]
    warnings = "".join(f"\n\nWarning: {markdown_text(w)}" for w in result["warnings"])
    return f"Baseline: {markdown_text(result['baseline'])}. {result['note']}{warnings}\n\n" + "\n".join(lines) + "\n"


# Where a point's label may go, in points from the point (dx, dy, ha, va): tried in order, the first clear of
# the Pareto line, the other points and labels, and inside the axes wins.
LABEL_SPOTS = ((8, -6, "left", "top"), (-8, 6, "right", "bottom"), (8, 6, "left", "bottom"),
               (-8, -6, "right", "top"), (10, 0, "left", "center"), (-10, 0, "right", "center"))


def log_ticks(ax, costs: Sequence[float]) -> None:
    """Plain-number ticks on a log cost axis, spaced so their labels cannot collide: 1-1.5-2-3-5-7 within
    a decade, 1-2-5 over up to three, powers of ten beyond; no labels on the minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = math.log10(max(costs) / min(costs))
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades < 1 else (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def place_labels(ax, points: Sequence[tuple[str, float, float, float, float]], line) -> list:
    """Label each point ``(text, x, y, low, high)`` at the first of LABEL_SPOTS whose box stays inside
    the axes and clear of ``line`` (the Pareto front), every point's marker and interval bar, and the
    labels already placed (the first spot when none is). Call after the layout is final."""
    from matplotlib.transforms import Bbox

    ax.figure.canvas.draw()                 # settles the limits and the layout the boxes are measured in
    renderer = ax.figure.canvas.get_renderer()
    path = line.get_path().transformed(line.get_transform()) if len(line.get_xdata()) > 1 else None
    to_px = ax.transData.transform
    taken = [Bbox([to_px((x, lo)) - 7, to_px((x, hi)) + 7]) for _, x, _, lo, hi in points]
    labels = []
    for text, x, y, _, _ in points:
        for dx, dy, ha, va in LABEL_SPOTS:
            label = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha, va=va, fontsize=8,
                                **PLOT_TEXT)
            box = label.get_window_extent(renderer).expanded(1.05, 1.2)
            clear = ax.bbox.contains(box.x0, box.y0) and ax.bbox.contains(box.x1, box.y1) and \
                (path is None or not path.intersects_bbox(box, filled=False)) and \
                not any(box.overlaps(other) for other in taken)
            if clear:
                break
            label.remove()
        else:
            dx, dy, ha, va = LABEL_SPOTS[0]
            label = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha, va=va, fontsize=8,
                                **PLOT_TEXT)
        taken.append(label.get_window_extent(renderer))
        labels.append(label)
    return labels


def plot(result: dict, path: Path) -> Path | None:
    """PNG of quality against cost with CI bars; the Pareto front is a line through starred points, each
    label placed clear of it (``place_labels``), ticks that cannot collide on a log axis (``log_ticks``).
    Returns None (and writes nothing) when no artifact has both a cost and the quality metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = result["quality_metric"]
    rows = [r for r in result["rows"] if "pareto" in r]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    points = []
    for r in rows:
        m = r["metrics"][q]
        ax.errorbar([r["cost"]], [m["mean"]], yerr=[[m["mean"] - m["low"]], [m["high"] - m["mean"]]],
                    fmt="*" if r["pareto"] else "o", markersize=11 if r["pareto"] else 6, capsize=3)
        points.append((str(r["label"]), r["cost"], m["mean"], m["low"], m["high"]))
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["cost"])
    (line,) = ax.plot([r["cost"] for r in front], [r["metrics"][q]["mean"] for r in front], "k--", lw=1,
                      label="Pareto front")
    unit = result["cost_unit"]
    ax.set_xlabel("TFLOPs per video (transformer)" if unit == "tflops" else "seconds per video")
    costs = [r["cost"] for r in rows]
    if len(set(costs)) > 1 and min(costs) > 0:
        ax.set_xscale("log")
        log_ticks(ax, costs)
    ax.margins(x=0.25, y=0.15)      # room for the labels of the points at the edges
    ax.set_ylabel(f"{q} ({'higher' if result['quality_higher_is_better'] else 'lower'} is better), 95% CI", **PLOT_TEXT)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    place_labels(ax, points, line)
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
