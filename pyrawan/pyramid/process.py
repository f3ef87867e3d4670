"""Pyramidal forward process, training target, clean estimate and jump (spec sections 4-6).

Shapes: latents ``[B, C, T, H, W]``; natural levels per frame ``[T]`` (or ``[B, T]`` in training,
where each sample has its own ``rho``). ``sigma_c``/``sigma_n`` are a stage's natural levels at its
cleaner/noisier end (``schedule.stage_levels``).
"""
from __future__ import annotations

import torch

from pyrawan.pyramid.geometry import expand_to_fine
from pyrawan.pyramid.resize import Resizer
from pyrawan.pyramid.schedule import interpolate_level


def per_frame(level: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a level ``[T]`` or ``[B, T]`` against a latent ``[B, C, T, H, W]``."""
    level = level.to(device=like.device, dtype=like.dtype)
    return level.view(-1, 1, level.shape[-1], 1, 1) if level.ndim == 2 else level.view(1, 1, -1, 1, 1)


def boundary_samples(
    x0: torch.Tensor, x0_up: torch.Tensor | None, eps: torch.Tensor, sigma_c: torch.Tensor, sigma_n: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The stage's end points, sharing one noise ``eps``::

        y_c = (1 - sigma_c) x0    + sigma_c eps
        y_n = (1 - sigma_n) x0_up + sigma_n eps      (x0_up = U(x0 of the coarser stage); None: y_n = eps)
    """
    y_c = (1 - per_frame(sigma_c, x0)) * x0 + per_frame(sigma_c, x0) * eps
    y_n = eps if x0_up is None else (1 - per_frame(sigma_n, x0)) * x0_up + per_frame(sigma_n, x0) * eps
    return y_c, y_n


def pyramid_flow_sample(
    x0: torch.Tensor,
    x0_up: torch.Tensor | None,
    eps: torch.Tensor,
    rho: torch.Tensor,
    sigma_c: torch.Tensor,
    sigma_n: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training sample of pyramidal flow matching at local level ``rho`` (``[B]``), section 4.

    Returns ``x`` ``[B, C, T, H, W]``, the conditioning level ``sigma_nat`` ``[B, T]`` and the
    target velocity ``v = (y_n - y_c) / (sigma_n - sigma_c)`` ``[B, C, T, H, W]``.
    """
    y_c, y_n = boundary_samples(x0, x0_up, eps, sigma_c, sigma_n)
    r = rho.to(device=x0.device, dtype=x0.dtype).view(-1, 1, 1, 1, 1)
    x = (1 - r) * y_c + r * y_n
    sigma_nat = interpolate_level(rho.to(sigma_c.dtype), sigma_c, sigma_n)
    target = (y_n - y_c) / per_frame(sigma_n - sigma_c, x0)
    return x, sigma_nat, target


def stage_forward(
    x0: torch.Tensor,
    eps: torch.Tensor,
    rho: float,
    sigma_c: torch.Tensor,
    sigma_n: torch.Tensor,
    project=None,
) -> torch.Tensor:
    """A stage sample at ``rho`` built from a clean latent alone, assuming ``U(x0_coarser) = P x0``.

    This is the sampler's re-noising step (section 6, few-step). ``project`` is ``P`` on this
    stage's grid; pass ``None`` where ``sigma_n = 1`` (then ``y_n = eps``).
    For ``x0 = U(x0_coarse)`` (no high band) it equals ``(1 - sigma) x0 + sigma eps``.
    """
    x0_up = None if project is None else project(x0)
    y_c, y_n = boundary_samples(x0, x0_up, eps, sigma_c, sigma_n)
    return (1 - rho) * y_c + rho * y_n


def clean_estimate(
    x: torch.Tensor,
    v: torch.Tensor,
    rho: float,
    sigma_c: torch.Tensor,
    sigma_n: torch.Tensor,
    project=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0_hat, eps_hat)`` from a stage sample ``x`` and its velocity ``v`` (derivation in docs).

    On the low band (``P``) the sample is an ordinary flow-matching sample at level ``sigma``::

        P x0 = P (x - sigma v),                     P eps = P (x + (1 - sigma) v)

    On the high band (``Q = I - P``) the signal decays from ``(1 - sigma_c)`` to 0 across the stage::

        Q x0 = Q (x - sigma v) (sigma_n - sigma_c) / ((1 - sigma_c) sigma_n)
        Q eps = Q (x + (sigma_n - sigma) v) / sigma_n

    Pass ``project=None`` where ``sigma_n = 1`` (the first stage that has steps, or a one-stage
    model): there both bands obey the same formula and no projection is needed.
    """
    sigma = interpolate_level(rho, sigma_c, sigma_n)
    s, s_c, s_n = (per_frame(level, x) for level in (sigma, sigma_c, sigma_n))
    x0_low, eps_low = x - s * v, x + (1 - s) * v
    x0_high = (x - s * v) * (s_n - s_c) / ((1 - s_c) * s_n)
    eps_high = (x + (s_n - s) * v) / s_n
    if project is None:
        return x0_high, eps_high
    return project(x0_low) + x0_high - project(x0_high), project(eps_low) + eps_high - project(eps_high)


def jump(
    x: torch.Tensor,
    sigma_nat: float | torch.Tensor,
    resizer: Resizer,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a latent at the clean end of a stage to the noisy start of the next finer stage (section 5).

    ``x`` ``[B, C, T', H, W]`` has natural level ``sigma_nat`` (float or per frame ``[T']``). With ``m``
    the block size of each frame::

        alpha = 1 / (1 + (sqrt(m) - 1) s),   s_fine = alpha s sqrt(m)
        x'    = alpha U(x) + s_fine (I - P) xi,   xi ~ N(0, I) at the finer resolution

    Returns ``x'`` ``[B, C, T, 2H, 2W]`` and its natural level per fine frame ``[T]``.
    The noise is drawn on the CPU from ``generator`` and moved to ``x``'s device.
    """
    t_coarse = x.shape[-3]
    s = torch.as_tensor(sigma_nat, dtype=torch.float64).expand(t_coarse)
    root_m = resizer.block_sizes(t_coarse).sqrt()
    alpha = 1 / (1 + (root_m - 1) * s)
    up = resizer.up(x)
    t_fine = up.shape[-3]
    alpha_f = expand_to_fine(alpha, t_fine, resizer.keep_time)
    s_fine = expand_to_fine(alpha * s * root_m, t_fine, resizer.keep_time)
    xi = torch.randn(up.shape, generator=generator, dtype=up.dtype, device="cpu").to(up.device)
    return per_frame(alpha_f, up) * up + per_frame(s_fine, up) * resizer.high_pass(xi), s_fine
