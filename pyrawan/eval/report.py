"""Rendering of FLOPs and latency reports as rich tables, and atomic JSON output."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.table import Table

from pyrawan.fsutil import atomic_write_text


def _fmt(value: float, digits: int = 1) -> str:
    """Thousands separators, fixed decimals."""
    return f"{value:,.{digits}f}"


def _with_cfg(total: float, cfg: int, digits: int) -> str:
    """``2 × 2,820.9`` with guidance (the paper's notation), else the plain number."""
    return f"{cfg} × {_fmt(total / cfg, digits)}" if cfg > 1 else _fmt(total, digits)


def _stage_headers(num_stages: int, unit: str) -> list[str]:
    """Column names coarsest first, matching how schedules are written."""
    return [f"stage {i} {unit}" + (" (full)" if i == 0 else "") for i in reversed(range(num_stages))]


def _unit(tflops: float) -> tuple[str, float]:
    """Display unit for a table whose largest value is ``tflops`` TFLOPs (TF, GF or MF)."""
    for name, scale in (("TF", 1.0), ("GF", 1e3), ("MF", 1e6)):
        if tflops * scale >= 1:
            return name, scale
    return "MF", 1e6


def render_flops_table(report: dict) -> Table:
    """Table of a ``flops_report``: per-stage FLOPs (coarsest first), total and ratio to baseline."""
    stages = report["stages"]
    unit, k = _unit(report["baseline_tflops"])
    shapes = ", ".join(f"{s['stage']}: {'x'.join(map(str, s['latent']))} ({s['tokens']:,} tok, "
                       f"{_fmt(s['tflops_per_forward'] * k, 2)} {unit})" for s in stages)
    table = Table(
        title=f"DiT {unit}LOPs per schedule ({report['method']}, guidance {'on' if report['guidance'] else 'off'})",
        caption=f"stages {shapes}. Baseline {report['baseline']}. {report['note']}",
    )
    table.add_column("schedule")
    table.add_column("forwards", justify="right")
    for name in _stage_headers(len(stages), unit):
        table.add_column(name, justify="right")
    table.add_column(f"total {unit}", justify="right")
    table.add_column("vs baseline", justify="right")
    for row in report["schedules"]:
        per_stage = [_fmt(p["tflops"] * k, 1) for p in reversed(row["per_stage"])]
        table.add_row(
            row["schedule"], str(row["forwards"]), *per_stage,
            _with_cfg(row["total_tflops"] * k, row["cfg_factor"], 0), f"{row['ratio_to_baseline']:.3f}",
        )
    return table


def render_latency_table(report: dict) -> Table:
    """Table of a ``latency_report``: per-stage ms (coarsest first), total and ratio to baseline."""
    env = report["environment"]
    stages = ", ".join(f"{s['stage']}: {_fmt(s['median_ms'], 2)} ms" for s in report["stages"])
    table = Table(
        title=f"DiT latency per schedule on {env.get('device_name')} ({env.get('dtype') or 'dtype n/a'}, "
              f"guidance {'on' if report['guidance'] else 'off'})",
        caption=f"median per forward {stages}; torch {env.get('torch')}, {env.get('threads')} threads. "
                f"Baseline {report['baseline']}. {report['note']}",
    )
    table.add_column("schedule")
    table.add_column("forwards", justify="right")
    for name in _stage_headers(report["num_stages"], "ms"):
        table.add_column(name, justify="right")
    table.add_column("total ms", justify="right")
    table.add_column("vs baseline", justify="right")
    parts = report.get("parts")
    if parts:
        table.add_column("+ text + decode ms", justify="right")
    for row in report["schedules"]:
        per_stage = [_fmt(p["ms"], 1) for p in reversed(row["per_stage"])]
        table.add_row(row["schedule"], str(row["forwards"]), *per_stage, _fmt(row["total_ms"], 1),
                      f"{row['ratio_to_baseline']:.3f}", *([_fmt(row["end_to_end_ms"], 1)] if parts else []))
    if parts:
        table.caption += (f" Per video: text encoder {_fmt(parts['text_encoder_ms'], 1)} ms "
                          f"({_fmt(parts['text_encoder_cfg_ms'], 1)} with the negative prompt), VAE decode "
                          f"{_fmt(parts['vae_decode_ms'], 1)} ms ({parts['vae_dtype']}).")
    return table


def render_end_to_end_table(report: dict) -> Table:
    """Table of a report's ``end_to_end`` section: text encoder, transformer and decode per schedule, with each
    decoder, and the end-to-end ratio to the baseline with CFG and the VAE."""
    flops = report.get("kind") != "latency"
    unit = "TF" if flops else "ms"
    rows = report["end_to_end"]["rows"]
    decoders = list(rows[0]["decode"]) if rows else []
    table = Table(title=f"End to end per video ({'FLOPs' if flops else 'latency'}): text encoder + transformer + "
                        f"decode", caption=f"Ratios against {report['baseline']} with CFG and the VAE decode.")
    for name in ["schedule", f"text {unit}", f"transformer {unit}", *(f"{d} decode {unit}" for d in decoders),
                 *(f"e2e {d} {unit}" for d in decoders), *(f"e2e {d} vs baseline" for d in decoders)]:
        table.add_column(name, justify="left" if name == "schedule" else "right")
    digits = 2 if flops else 1
    for row in rows:
        table.add_row(row["schedule"], _fmt(row["text_encoder"], digits), _fmt(row["transformer"], digits),
                      *(_fmt(row["decode"][d], digits) for d in decoders),
                      *(_fmt(row["end_to_end"][d], digits) for d in decoders),
                      *(f"{row['ratio_to_baseline'][d]:.3f}" for d in decoders))
    return table


def render_table(report: dict) -> Table:
    """The table for any report made by this package (dispatch on ``report['kind']``)."""
    return render_latency_table(report) if report.get("kind") == "latency" else render_flops_table(report)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (fsync'd temporary sibling, then rename)."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
