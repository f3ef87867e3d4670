"""Transformer FLOPs of sampling one video with a given schedule (the cost axis of compare and search).

Counts the denoiser only (analytic formula of paper.md section 8.2, with the small terms), times
2 with classifier-free guidance; the VAE decode and the text encoder are excluded, as in
``pyrawan eval flops``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pyrawan.eval.flops import TERA, WanArch, analytic_forward_flops, schedule_flops, stage_geometry
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.geometry import Shape3


def stage_forward_tflops(transformer_config: Mapping[str, Any], pyramid: PyramidConfig, full: Shape3,
                         text_len: int) -> list[float]:
    """TFLOPs of one forward per stage (index = stage, 0 = full resolution) for full-resolution latent ``full``."""
    arch = WanArch.from_config(transformer_config, text_len=text_len)
    geometry = stage_geometry(arch, full, pyramid.num_stages, pyramid.keep_time, pyramid.ppf)
    return [analytic_forward_flops(a, shape, text_len) / TERA for shape, a in geometry]


def video_tflops(per_stage_forward: Sequence[float], steps: Sequence[int], guidance: float) -> float:
    """TFLOPs per video of a schedule ``steps`` (coarsest first), x2 when ``guidance > 1``."""
    return float(schedule_flops(per_stage_forward, steps, guidance > 1)["total"])
