"""Schedule search: the steps per stage (and, optionally, stage boundaries) that score best under a cost budget.

Steps: candidates are every schedule (coarsest first, leading zeros allowed, no zero after a stage
with steps) whose cost fits the budget and uses at least ``min_fill`` of it. The baseline is the
model's default schedule scaled to the budget: the largest multiple of its proportions that fits,
so both spend about the same.

Boundaries (optional): a model is trained at one set of stage boundaries (``pyramid.json``), so
moving one asks a stage for noise levels outside what it saw. ``boundary_grid`` keeps every
candidate within ``radius`` (global sigma, at most MAX_BOUNDARY_RADIUS) of the model's own set:
bounded extrapolation. They are searched at the best steps found; a boundary changes no cost, so
the comparison with the model's own boundaries is at equal cost.

To keep selection bias out of the verdict, the best candidate (picked on the search seeds) and the
baseline are scored again on separate confirmation seeds, and the verdict compares their 95%
intervals there: "beat" only if they do not overlap.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from pyrawan.errors import InputError
from pyrawan.eval.stats import differs, mean_ci

Steps = tuple[int, ...]                              # steps per stage, coarsest first
Boundaries = tuple[float, ...]                       # inner boundaries b_1..b_{S-1}, global sigma, increasing
Cost = Callable[[Steps], float]                      # schedule -> cost per video
Score = Callable[[Steps, Boundaries, Sequence[int]], list[float]]   # (schedule, boundaries, seeds) -> per-video metric

MAX_BOUNDARY_RADIUS = 0.1    # farthest a boundary may move from the model's (global sigma): bounded extrapolation
DEFAULT_BOUNDARY_RADIUS = 0.05


def fmt(steps: Sequence[int]) -> str:
    return "-".join(map(str, steps))


def valid(steps: Sequence[int]) -> bool:
    """Leading zeros only (a skipped coarse stage), and at least one step at full resolution."""
    first = next((k for k, n in enumerate(steps) if n), None)
    return first is not None and all(n > 0 for n in steps[first:])


def candidates(num_stages: int, cost: Cost, budget: float, max_steps: int, min_fill: float = 0.5) -> list[tuple[int, ...]]:
    """Valid schedules with ``min_fill * budget <= cost <= budget``, each stage 0..max_steps, cheapest first."""
    found = [s for s in itertools.product(range(max_steps + 1), repeat=num_stages)
             if valid(s) and min_fill * budget <= cost(s) <= budget]
    return sorted(found, key=lambda s: (cost(s), s))


def scaled_default(default: Sequence[int], cost: Cost, budget: float, max_steps: int) -> tuple[int, ...]:
    """The default's proportions scaled to the budget: the largest ``k`` with ``round(k * default)``
    (at least one step where the default has any) within budget."""
    best = None
    top = max(default)
    for numerator in range(1, 64 * max_steps + 1):
        k = numerator / 64 * max_steps / top
        steps = tuple(max(1, round(k * n)) if n else 0 for n in default)
        if max(steps) > max_steps or cost(steps) > budget:
            continue
        best = steps if best is None or cost(steps) >= cost(best) else best
    if best is None:
        raise InputError(f"the budget {budget:.4g} is below the cheapest version of the default schedule "
                         f"{fmt(default)} ({fmt(tuple(1 if n else 0 for n in default))} costs "
                         f"{cost(tuple(1 if n else 0 for n in default)):.4g}); raise the budget.")
    return best


def thin(found: list[tuple[int, ...]], limit: int, keep: tuple[int, ...]) -> list[tuple[int, ...]]:
    """At most ``limit`` candidates, evenly spread over the cost-sorted list, always keeping ``keep``."""
    if len(found) <= limit:
        chosen = list(found)
    else:
        step = (len(found) - 1) / max(limit - 2, 1)
        chosen = list(dict.fromkeys(found[round(i * step)] for i in range(limit - 1)))
    return chosen if keep in chosen else [keep, *chosen]


def summary(values: list[float]) -> dict:
    mean, low, high = mean_ci(values)
    return {"mean": mean, "low": low, "high": high, "n": len(values)}


def plan_pool(num_stages: int, default: Sequence[int], cost: Cost, budget: float, max_steps: int = 8,
              max_candidates: int = 12, min_fill: float = 0.5) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """``(baseline, candidates to score)``: the default scaled to the budget, and the thinned candidates."""
    if budget <= 0:
        raise InputError(f"the budget {budget} must be positive.")
    baseline = scaled_default(tuple(default), cost, budget, max_steps)
    return baseline, thin(candidates(num_stages, cost, budget, max_steps, min_fill), max_candidates, baseline)


def boundary_grid(trained: Sequence[float], radius: float, points: int = 3) -> list[Boundaries]:
    """Boundary sets near the model's ``trained`` ones ``[S-1]``: each boundary moved by one of ``points``
    evenly spaced offsets in ``[-radius, +radius]`` (global sigma), every combination that stays strictly
    increasing inside (0, 1). The model's own set comes first; at most ``points ** (S-1)`` sets."""
    trained = tuple(float(b) for b in trained)
    if not trained:
        raise InputError("the model has one stage, so there is no stage boundary to search; drop "
                         "--boundaries-search (or search a pyramidal model).")
    if not 0 < radius <= MAX_BOUNDARY_RADIUS:
        raise InputError(f"--boundary-radius {radius} must be in (0, {MAX_BOUNDARY_RADIUS}] (global sigma): the model "
                         f"was trained at its boundaries {list(trained)} only, and a boundary moved farther asks its "
                         f"stages for noise levels far outside their training. Use e.g. 0.05.")
    if points < 2:
        raise InputError(f"--boundary-points {points} must be at least 2 (3 gives -radius, 0, +radius).")
    offsets = [radius * (2 * k / (points - 1) - 1) for k in range(points)]
    found = [trained]
    for shift in itertools.product(offsets, repeat=len(trained)):
        if not any(shift):
            continue                                          # the model's own set, already first
        moved = tuple(round(b + d, 6) for b, d in zip(trained, shift))
        full = (0.0, *moved, 1.0)
        if all(lo < hi for lo, hi in zip(full, full[1:])) and moved not in found:
            found.append(moved)
    return found


def label(steps: Steps, boundaries: Boundaries, trained: Boundaries) -> str:
    """``2-2-1`` with the model's own boundaries, ``2-2-1 @ [0.43, 0.68]`` with others."""
    return fmt(steps) if tuple(boundaries) == tuple(trained) else f"{fmt(steps)} @ {[round(b, 4) for b in boundaries]}"


def compare_confirmed(best: dict, base: dict, higher_is_better: bool) -> str:
    """``beat`` when ``best``'s confirmation mean is better and the 95% intervals are disjoint, else ``not better``."""
    sign = 1.0 if higher_is_better else -1.0
    better = sign * (best["mean"] - base["mean"]) > 0
    return "beat" if better and differs((best["low"], best["high"]), (base["low"], base["high"])) else "not better"


def _why_not(best: dict, base: dict, higher_is_better: bool) -> str:
    sign = 1.0 if higher_is_better else -1.0
    return "its mean is worse" if sign * (best["mean"] - base["mean"]) <= 0 else "the 95% intervals overlap"


def search(default: Sequence[int], cost: Cost, score: Score, budget: float, baseline: Steps,
           pool: Sequence[Steps], search_seeds: Sequence[int], confirm_seeds: Sequence[int],
           higher_is_better: bool = True, advance: Callable[[int], None] = lambda n=1: None,
           boundaries: Boundaries = (), boundary_pool: Sequence[Boundaries] = ()) -> dict:
    """Score every schedule of ``pool`` (at the model's ``boundaries``) on ``search_seeds``; with a
    ``boundary_pool`` (``boundary_grid``), score its sets at the best schedule too. Pick the best mean,
    confirm it against ``baseline`` (the model's boundaries) on ``confirm_seeds``, and, when its
    boundaries moved, against its own steps at the model's boundaries. Returns the report
    (``verdict``: beat | not better | tied; ``boundary_verdict`` likewise, or None without a search)."""
    sign = 1.0 if higher_is_better else -1.0
    trained = tuple(boundaries)
    rows = []

    def scored(steps: Steps, b: Boundaries) -> dict:
        row = {"schedule": fmt(steps), "boundaries": list(b), "label": label(steps, b, trained), "cost": cost(steps),
               "search": summary(score(steps, b, search_seeds))}
        advance(1)
        return row

    rows += [scored(steps, trained) for steps in pool]
    best_steps = _steps(max(rows, key=lambda r: sign * r["search"]["mean"]))
    rows += [scored(best_steps, b) for b in boundary_pool if tuple(b) != trained]
    best_row = max(rows, key=lambda r: sign * r["search"]["mean"])
    best, best_b = _steps(best_row), tuple(best_row["boundaries"])
    checks = list(dict.fromkeys([(best, best_b), (baseline, trained), (best, trained)]))
    confirm = {}
    for steps, b in checks:
        confirm[label(steps, b, trained)] = summary(score(steps, b, confirm_seeds))
        advance(1)
    verdict, text = _step_verdict(best, best_b, baseline, trained, cost, confirm, higher_is_better)
    report = {"budget": budget, "default": fmt(default), "baseline": fmt(baseline), "baseline_cost": cost(baseline),
              "best": fmt(best), "best_cost": cost(best), "best_label": label(best, best_b, trained),
              "candidates": rows, "boundaries": list(trained), "best_boundaries": list(best_b),
              "search_seeds": list(search_seeds), "confirm_seeds": list(confirm_seeds),
              "confirm": confirm, "verdict": verdict, "summary": text, "boundary_verdict": None}
    if boundary_pool:
        report["boundary_verdict"], more = _boundary_verdict(best, best_b, trained, confirm, len(boundary_pool),
                                                             higher_is_better)
        report["summary"] = f"{text} {more}"
    report["searched"] = ("steps per stage, then stage boundaries near the model's at the best steps "
                          f"({len(boundary_pool)} sets)" if boundary_pool else
                          "steps per stage only (stage boundaries, shift and guidance are the model's)")
    return report


def _steps(row: dict) -> Steps:
    return tuple(int(n) for n in row["schedule"].split("-"))


def _step_verdict(best: Steps, best_b: Boundaries, baseline: Steps, trained: Boundaries, cost: Cost,
                  confirm: dict, higher_is_better: bool) -> tuple[str, str]:
    """The verdict and sentence of the best candidate against the scaled default (model's boundaries)."""
    name, base_name = label(best, best_b, trained), label(baseline, trained, trained)
    if (best, best_b) == (baseline, trained):
        return "tied", (f"the best schedule found is the scaled default {base_name} itself: the search did not "
                        f"beat it.")
    b, d = confirm[name], confirm[base_name]
    if compare_confirmed(b, d, higher_is_better) == "beat":
        return "beat", (f"{name} (cost {cost(best):.4g}) beat the default {base_name} (cost {cost(baseline):.4g}) "
                        f"within the budget on the confirmation seeds (95% intervals do not overlap).")
    return "not better", (f"{name} (cost {cost(best):.4g}) did not beat the default {base_name} (cost "
                          f"{cost(baseline):.4g}) on the confirmation seeds: {_why_not(b, d, higher_is_better)}.")


def _boundary_verdict(best: Steps, best_b: Boundaries, trained: Boundaries, confirm: dict, sets: int,
                      higher_is_better: bool) -> tuple[str, str]:
    """Did moving the boundaries help, at the best steps and so at equal cost? (verdict, sentence)."""
    if best_b == trained:
        return "tied", (f"Boundaries: the model's own {list(trained)} scored best of {sets} sets; the boundary "
                        f"search did not beat them.")
    moved, own = confirm[label(best, best_b, trained)], confirm[label(best, trained, trained)]
    verdict = compare_confirmed(moved, own, higher_is_better)
    if verdict == "beat":
        return verdict, (f"Boundaries: {[round(b, 4) for b in best_b]} beat the model's own {list(trained)} at "
                         f"{fmt(best)} (equal cost) on the confirmation seeds.")
    return verdict, (f"Boundaries: {[round(b, 4) for b in best_b]} did not beat the model's own {list(trained)} at "
                     f"{fmt(best)} (equal cost) on the confirmation seeds: {_why_not(moved, own, higher_is_better)}.")


def per_stage_cost(per_stage_forward: Sequence[float], guidance: float) -> Cost:
    """Cost of a schedule from the cost of one forward per stage (index = stage), x2 with guidance."""
    cfg = 2 if guidance > 1 else 1

    def cost(steps: tuple[int, ...]) -> float:
        return float(sum(n * per_stage_forward[len(steps) - 1 - k] for k, n in enumerate(steps)) * cfg)

    return cost
