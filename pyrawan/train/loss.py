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

from pyrawan.models.denoiser import frame_timesteps
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.train.data import StageBatch

Teacher = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def batch_timesteps(sigma_nat: torch.Tensor, latent_hw: tuple[int, int], patch: tuple[int, int, int]) -> torch.Tensor:
    """Transformer timesteps for per-sample, per-frame levels ``sigma_nat`` ``[B, T]``.

    Each row goes through ``frame_timesteps``; ``[B]`` when every row has one level for all frames,
    else ``[B, tokens]`` (rows with one level are expanded to every token).
    """
    rows = [frame_timesteps(level, 1, latent_hw, patch) for level in sigma_nat]
    if all(r.ndim == 1 for r in rows):
        return torch.cat(rows)
    tokens = next(r.shape[1] for r in rows if r.ndim == 2)
    return torch.cat([r.view(1, 1).expand(1, tokens) if r.ndim == 1 else r for r in rows])


def predict(model: Callable, x: torch.Tensor, sigma_nat: torch.Tensor, text: torch.Tensor,
            patch: tuple[int, int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Velocity ``[B, C, T, H, W]`` (float32) of ``model`` (a transformer, DDP or DeepSpeed engine).

    ``x`` ``[B, C, T, H, W]``, ``sigma_nat`` ``[B, T]``, ``text`` ``[B, L, D]``; inputs are cast to
    ``dtype`` (the weights' dtype; under autocast float32 is fine).
    """
    timestep = batch_timesteps(sigma_nat, tuple(x.shape[-2:]), patch).to(device)
    out = model(hidden_states=x.to(device, dtype), timestep=timestep,
                encoder_hidden_states=text.to(device, dtype), return_dict=False)[0]
    return out.float()


def per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per sample: ``[B, ...] -> [B]``."""
    return (a - b).pow(2).flatten(1).mean(1)


def stage_losses(model: Callable, batch: StageBatch, pyramid: PyramidConfig, patch: tuple[int, int, int],
                 device: torch.device, dtype: torch.dtype,
                 teacher: Teacher | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(mse [n], align [n] or None)`` of one stage batch; ``mse`` carries the graph for backward.

    ``teacher(x, sigma_nat, text)`` returns the frozen base model's velocity (no graph).
    """
    x, sigma_nat, target = batch.sample(pyramid)
    pred = predict(model, x, sigma_nat, batch.text, patch, device, dtype)
    mse = per_sample_mse(pred, target.to(device))
    if teacher is None:
        return mse, None
    with torch.no_grad():
        base = teacher(x, sigma_nat, batch.text)
    return mse, per_sample_mse(pred, base)
