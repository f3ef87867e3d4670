"""Evaluation: FLOPs and latency of pyramidal schedules; per-video quality metrics with confidence
intervals (``metrics``, ``stats``, ``quality``), comparisons (``compare``, ``html``), schedule search
(``schedules``) and VBench files (``vbench``). See docs/eval.md.

Importing this package imports neither torch nor diffusers; the names below load their module
on first use (``from pyrawan.eval import flops_report``).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "WanArch": "flops", "analytic_forward_flops": "flops", "meta_forward_flops": "flops",
    "timestep_embed_flops": "flops", "schedule_flops": "flops", "flops_report": "flops",
    "default_schedules": "flops", "baseline_schedule": "flops", "num_tokens": "flops",
    "measure_latency": "latency", "latency_report": "latency", "environment_info": "latency",
    "render_flops_table": "report", "render_latency_table": "report", "render_table": "report",
    "write_json": "report",
    "mean_ci": "stats", "statistic_ci": "stats", "differs": "stats",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Lazy access to the public functions of the submodules."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pyrawan.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pyrawan.eval.{_EXPORTS[name]}"), name)
