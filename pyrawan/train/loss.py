"""Losses of pyramidal flow matching: the per-sample velocity MSE and the alignment to the frozen base.

``L_pyr = E ||F(x, sigma_nat) - v||^2`` with ``(x, sigma_nat, v)`` from ``pyramid_flow_sample``
(pyramid-math.md section 4; paper Eq. 7). ``L_align = E ||F(x, sigma_nat) - F_base(x, sigma_nat)||^2``
on the same noisy input: for an Euler step of size ``d`` the student's and the base model's partially
denoised latents ``x - d F`` differ by ``d (F - F_base)``, so this is the paper's L_dist (student vs
teacher partially denoised latents, form unknown) up to the step-size weight. Both are means over
channels, frames and pixels, one value per sample.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from pyrawan.models.denoiser import denoise
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.train.data import StageBatch

Teacher = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def predict(model: Callable, x: torch.Tensor, sigma_nat: torch.Tensor, text: torch.Tensor,
            dtype: torch.dtype) -> torch.Tensor:
    """Velocity ``[B, C, T, H, W]`` (float32) of ``model`` (a transformer, DDP or DeepSpeed engine).

    ``x`` ``[B, C, T, H, W]``, ``sigma_nat`` ``[B, T]``, ``text`` ``[B, L, D]``; inputs are cast to
    ``dtype`` (the weights' dtype; under autocast float32 is fine) on the model's device.
    """
    return denoise(model, x, sigma_nat, text, dtype=dtype)


def per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per sample: ``[B, ...] -> [B]``."""
    return (a - b).pow(2).flatten(1).mean(1)


def stage_losses(model: Callable, batch: StageBatch, pyramid: PyramidConfig, patch: tuple[int, int, int],
                 device: torch.device, dtype: torch.dtype,
                 teacher: Teacher | None = None, process: str = "pyramidal") -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(mse [n], align [n] or None)`` of one stage batch; ``mse`` carries the graph for backward.

    ``teacher(x, sigma_nat, text)`` returns the frozen base model's velocity (no graph).
    """
    x, sigma_nat, target = batch.sample(pyramid, process)
    pred = predict(model, x, sigma_nat, batch.text, dtype)
    mse = per_sample_mse(pred, target.to(device))
    if teacher is None:
        return mse, None
    with torch.no_grad():
        base = teacher(x, sigma_nat, batch.text)
    return mse, per_sample_mse(pred, base)
