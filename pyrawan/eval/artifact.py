"""The eval artifact: ``metrics.json`` (per-video values, mean and 95% CI per metric) plus the manifest.

``metrics.json``::

    {"schema": "pyrawan.eval/1", "kind": "quality" | "vbench" | ..., "label": "...",
     "model": "...", "schedule": "20-20-10" | null,
     "cost": {"tflops_per_video": float | null, "seconds_per_video": float | null},
     "summary": {metric: {"mean", "low", "high", "n", "higher_is_better", "unit", "description"}},
     "ci": {"level": 0.95, "method": "bootstrap", "resamples": 2000, "seed": 0, "over": "videos"},
     "videos": [{"index", "prompt", "seed", "video": path relative to the artifact or null,
                 "values": {metric: float}}],
     "notes": [...]}

Any command that produces per-video numbers writes one with ``write_eval`` inside an
``artifact_dir``; ``compare`` and ``report`` read any number of them with ``read_eval``.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pyrawan.artifact_files import ArtifactFiles
from pyrawan.errors import InputError
from pyrawan.eval.metrics import METRICS
from pyrawan.eval.stats import mean_ci
from pyrawan.fsutil import atomic_write_text, json_safe

SCHEMA = "pyrawan.eval/1"
METRICS_FILE = "metrics.json"
Finite = Annotated[float, Field(allow_inf_nan=False)]
CI = {"level": 0.95, "method": "bootstrap", "resamples": 2000, "seed": 0, "over": "videos"}


def summarise(values: Sequence[float], name: str, info: Mapping[str, tuple[bool, str, str]] = METRICS) -> dict:
    """``{"mean", "low", "high", "n", "higher_is_better", "unit", "description"}`` of one metric.

    Non-finite values (a video that could not be scored) are left out and counted in ``missing``.
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    higher, unit, description = info.get(name, (True, "", name))
    entry: dict[str, Any] = {"higher_is_better": higher, "unit": unit, "description": description,
                             "n": len(finite), "missing": len(values) - len(finite)}
    if not finite:
        return {**entry, "mean": None, "low": None, "high": None}
    mean, low, high = mean_ci(finite, level=CI["level"], method=CI["method"], resamples=CI["resamples"],
                              seed=CI["seed"])
    return {**entry, "mean": mean, "low": low, "high": high}


def build_eval(kind: str, label: str, videos: list[dict], model: str | None = None, schedule: str | None = None,
               tflops_per_video: float | None = None, seconds_per_video: float | None = None,
               notes: Sequence[str] = (), extra: Mapping[str, Any] | None = None,
               info: Mapping[str, tuple[bool, str, str]] = METRICS) -> dict:
    """The ``metrics.json`` body from per-video records ``{"index", "prompt", "seed", "video", "values"}``."""
    names = list(dict.fromkeys(k for v in videos for k in v["values"]))
    summary = {name: summarise([v["values"].get(name, math.nan) for v in videos], name, info) for name in names}
    return {"schema": SCHEMA, "kind": kind, "label": label, "model": model, "schedule": schedule,
            "cost": {"tflops_per_video": tflops_per_video, "seconds_per_video": seconds_per_video},
            "summary": summary, "ci": dict(CI), "videos": videos, "notes": list(notes), **dict(extra or {})}


def write_eval(folder: Path, body: dict) -> Path:
    """Write ``folder/metrics.json`` (strict JSON: non-finite numbers become null)."""
    return atomic_write_text(Path(folder) / METRICS_FILE, json.dumps(json_safe(body), indent=1, allow_nan=False) + "\n")


def manifest_metrics(body: dict) -> dict:
    """The manifest's ``metrics``: mean and CI per metric, cost."""
    return {"summary": {k: {"mean": v["mean"], "low": v["low"], "high": v["high"], "n": v["n"]}
                        for k, v in body["summary"].items()}, "cost": body["cost"], "videos": len(body["videos"])}


class _Summary(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    mean: Finite | None = None
    low: Finite | None = None
    high: Finite | None = None
    n: int = Field(0, ge=0)
    higher_is_better: bool = True


class _Video(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    prompt: str
    seed: int | None = None
    video: str | None = None
    values: dict[str, Finite | None] = {}


class _Cost(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    tflops_per_video: Finite | None = Field(None, ge=0)
    seconds_per_video: Finite | None = Field(None, ge=0)


class _EvalBody(BaseModel):
    """What ``compare`` and ``report`` read of a ``metrics.json`` (other keys pass through unchecked)."""

    model_config = ConfigDict(extra="allow", strict=True)
    label: str | None = None
    model: str | None = None
    schedule: str | None = None
    cost: _Cost = _Cost()
    summary: dict[str, _Summary]
    videos: list[_Video]
    notes: list[str] = []


def read_eval(folder: str | Path) -> dict:
    """The ``metrics.json`` of an eval artifact (read through the artifact's door, hash-checked, typed), with
    ``"path"`` added; InputError if it is not one."""
    folder = Path(folder)
    files = ArtifactFiles(folder, "eval artifact")
    if METRICS_FILE not in files.outputs and not (folder / METRICS_FILE).is_file():
        raise InputError(f"{folder} is a pyrawan artifact but not an eval artifact (no {METRICS_FILE}); give folders "
                         f"written by `pyrawan eval quality` or `pyrawan eval vbench import`.")
    body = files.read_json(METRICS_FILE)
    path = folder / METRICS_FILE
    if not isinstance(body, dict) or body.get("schema") != SCHEMA:
        raise InputError(f"{path}: schema is {body.get('schema') if isinstance(body, dict) else None!r}, this "
                         f"pyrawan reads {SCHEMA!r}; rerun the command that wrote it.")
    try:
        _EvalBody.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise InputError(f"{path}: {where}: {first['msg']} (found {str(first.get('input'))[:60]!r}); this is not "
                         f"what pyrawan writes, rerun the command that wrote it.") from None
    return {**body, "path": str(folder)}
