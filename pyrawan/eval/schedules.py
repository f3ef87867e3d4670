"""Schedule search: the steps per stage that score best under a cost budget.

Only the number of steps per stage is searched; stage boundaries, shifts and guidance stay the
model's (they are what it was trained for). Candidates are every schedule (coarsest first,
leading zeros allowed, no zero after a stage with steps) whose cost fits the budget and uses at
least ``min_fill`` of it. The baseline is the model's default schedule scaled to the budget: the
largest multiple of its proportions that fits, so both spend about the same.

To keep selection bias out of the verdict, the best candidate (picked on the search seeds) and the
baseline are scored again on separate confirmation seeds, and the verdict compares their 95%
intervals there: "beat" only if they do not overlap.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from pyrawan.errors import InputError
from pyrawan.eval.stats import differs, mean_ci

Cost = Callable[[tuple[int, ...]], float]           # schedule (coarsest first) -> cost per video
Score = Callable[[tuple[int, ...], Sequence[int]], list[float]]   # (schedule, seeds) -> per-video metric


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


def search(default: Sequence[int], cost: Cost, score: Score, budget: float, baseline: tuple[int, ...],
           pool: Sequence[tuple[int, ...]], search_seeds: Sequence[int], confirm_seeds: Sequence[int],
           higher_is_better: bool = True, advance: Callable[[int], None] = lambda n=1: None) -> dict:
    """Score every schedule of ``pool`` on ``search_seeds``, pick the best mean, confirm it against
    ``baseline`` on ``confirm_seeds``. Returns the report (``verdict``: beat | not better | tied)."""
    sign = 1.0 if higher_is_better else -1.0
    rows = []
    for steps in pool:
        rows.append({"schedule": fmt(steps), "cost": cost(steps), "search": summary(score(steps, search_seeds))})
        advance(1)
    best_row = max(rows, key=lambda r: sign * r["search"]["mean"])
    best = tuple(int(n) for n in best_row["schedule"].split("-"))
    confirm = {}
    for steps in dict.fromkeys([best, baseline]):
        confirm[fmt(steps)] = summary(score(steps, confirm_seeds))
        advance(1)
    b, d = confirm[fmt(best)], confirm[fmt(baseline)]
    if best == baseline:
        verdict = "tied"
        text = f"the best schedule found is the scaled default {fmt(baseline)} itself: the search did not beat it."
    elif sign * (b["mean"] - d["mean"]) > 0 and differs((b["low"], b["high"]), (d["low"], d["high"])):
        verdict = "beat"
        text = (f"{fmt(best)} (cost {cost(best):.4g}) beat the default {fmt(baseline)} (cost {cost(baseline):.4g}) "
                f"within the budget on the confirmation seeds (95% intervals do not overlap).")
    else:
        verdict = "not better"
        text = (f"{fmt(best)} (cost {cost(best):.4g}) did not beat the default {fmt(baseline)} (cost "
                f"{cost(baseline):.4g}) on the confirmation seeds: "
                f"{'its mean is worse' if sign * (b['mean'] - d['mean']) <= 0 else 'the 95% intervals overlap'}.")
    return {"budget": budget, "searched": "steps per stage only (stage boundaries, shift and guidance are the model's)",
            "default": fmt(default), "baseline": fmt(baseline), "baseline_cost": cost(baseline),
            "best": fmt(best), "best_cost": cost(best), "candidates": rows,
            "search_seeds": list(search_seeds), "confirm_seeds": list(confirm_seeds),
            "confirm": confirm, "verdict": verdict, "summary": text}


def per_stage_cost(per_stage_forward: Sequence[float], guidance: float) -> Cost:
    """Cost of a schedule from the cost of one forward per stage (index = stage), x2 with guidance."""
    cfg = 2 if guidance > 1 else 1

    def cost(steps: tuple[int, ...]) -> float:
        return float(sum(n * per_stage_forward[len(steps) - 1 - k] for k, n in enumerate(steps)) * cfg)

    return cost
