"""Losses of pyramidal flow matching: the per-sample velocity MSE and the alignment to the frozen base.

``L_pyr = E ||F(x, sigma_nat) - v||^2`` with ``(x, sigma_nat, v)`` from ``pyramid_flow_sample``
(pyramid-math.md section 4; paper Eq. 7). The alignment to the frozen base (the paper's L_dist, whose
exact form the paper does not give; ``train.align_form``) in one of two forms:

- ``same-input``: ``L_align = E ||F(x, sigma_nat) - F_base(x, sigma_nat)||^2`` on the same noisy stage input:
  for an Euler step of size ``d`` the student's and the base model's partially denoised latents
  ``x - d F`` differ by ``d (F - F_base)``, so this is L_dist up to the step-size weight.
- ``full-resolution`` (the paper's description: the student's partially denoised latents against the
  pretrained model's predictions): the stage sample is brought to full resolution by the jumps of
  pyramid-math.md section 5 (``R_up`` plus fresh high-band noise, the natural level following
  ``g_m``), the pretrained model's clean estimate there ``x - s F_base`` is brought back to the stage with
  ``R_down``, and the student's clean estimate of the stage (the pyramidal closed form) is compared with
  it: ``L_align = E ||x0_hat(x, F) - R_down^i (x_full - s F_base(x_full, s))||^2``.

All are means over channels, frames and pixels, one value per sample.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from pyrawan.models.denoiser import denoise
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.process import clean_estimate, jump, per_frame
from pyrawan.train.data import StageBatch, generator

Teacher = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# (batch, its noisy input x, sigma_nat [n, T], the student's velocity with its graph) -> alignment per sample [n]
Alignment = Callable[[StageBatch, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


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
                 align: Alignment | None = None, process: str = "pyramidal") -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(mse [n], align [n] or None)`` of one stage batch; both carry the model's graph for backward.

    ``align``: ``same_input_alignment`` or ``full_resolution_alignment`` of the frozen base; None = off.
    """
    x, sigma_nat, target = batch.sample(pyramid, process)
    pred = predict(model, x, sigma_nat, batch.text, dtype)
    mse = per_sample_mse(pred, target.to(device))
    return mse, None if align is None else align(batch, x, sigma_nat, pred)


def same_input_alignment(teacher: Teacher) -> Alignment:
    """``||F - F_base||^2`` per sample on the same noisy input (``teacher(x, sigma_nat, text)``: the base's velocity)."""
    def align(batch: StageBatch, x: torch.Tensor, sigma_nat: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            base = teacher(x, sigma_nat, batch.text)
        return per_sample_mse(pred, base)
    return align


def full_resolution_alignment(teacher: Teacher, pyramid: PyramidConfig, seed: int) -> Alignment:
    """The student's clean estimate of the stage against the base's at full resolution brought down (module
    docstring). The jumps' noise comes from ``(seed, "align", item, rho)``: the same on a resumed run."""
    def align(batch: StageBatch, x: torch.Tensor, sigma_nat: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        gens = [generator(seed, "align", item, float(r)) for item, r in zip(batch.items, batch.rho)]
        with torch.no_grad():
            target = full_resolution_estimate(teacher, x, sigma_nat, batch.text, batch.stage, pyramid, gens)
        return per_sample_mse(stage_estimate(x, pred, batch, pyramid), target)
    return align


def stage_estimate(x: torch.Tensor, v: torch.Tensor, batch: StageBatch, pyramid: PyramidConfig) -> torch.Tensor:
    """The clean estimate ``[n, C, T, H, W]`` of a stage sample ``x`` from its velocity ``v`` (pyramidal closed form)."""
    sigma_c, sigma_n = pyramid.levels(batch.stage, x.shape[2])
    project = pyramid.resize.project if batch.stage + 1 < pyramid.num_stages else None
    rho = batch.rho.to(x.device, torch.float64)
    return clean_estimate(x, v, rho, sigma_c.to(x.device), sigma_n.to(x.device), project)[0]


def full_resolution_estimate(teacher: Teacher, x: torch.Tensor, sigma_nat: torch.Tensor, text: torch.Tensor,
                             stage: int, pyramid: PyramidConfig, gens: list[torch.Generator]) -> torch.Tensor:
    """``R_down^stage`` of the base model's clean estimate of ``x`` ``[n, C, T, H, W]`` (at natural levels
    ``sigma_nat`` ``[n, T]``) jumped ``stage`` times to full resolution: ``[n, C, T, H, W]``, ``x``'s dtype."""
    resize, parts = pyramid.resize, []
    for b, gen in enumerate(gens):
        up, level = x[b:b + 1], sigma_nat[b].double().cpu()
        for _ in range(stage):
            up, level = jump(up, level, resize, gen)
        parts.append((up, level))
    x_full = torch.cat([p[0] for p in parts])
    s_full = torch.stack([p[1] for p in parts]).to(x_full.device)                 # [n, T_full]
    x0 = x_full - per_frame(s_full, x_full) * teacher(x_full, s_full, text).to(x_full.dtype)
    for _ in range(stage):
        x0 = resize.down(x0)
    return x0
