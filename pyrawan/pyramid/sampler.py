"""Multi-step and few-step pyramidal samplers over any velocity function (spec section 6).

``velocity(x, sigma_nat) -> v``: ``x`` ``[B, C, T, H, W]``, ``sigma_nat`` the natural level of each
frame ``[T]`` (float64), ``v = dx/dsigma_nat`` of the same shape as ``x``. Schedules are written
coarsest first; leading zeros skip the coarsest stages.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from pyrawan.errors import InputError
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.process import clean_estimate, jump, per_frame, stage_forward
from pyrawan.pyramid.schedule import interpolate_level, rho_grid

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, int, torch.Tensor], None]  # (stage, step within stage, x after the step)


def active_stages(steps: Sequence[int]) -> list[tuple[int, int]]:
    """``(stage, steps)`` for every stage with steps, coarsest first; ``steps`` is coarsest first."""
    num_stages = len(steps)
    return [(num_stages - 1 - k, n) for k, n in enumerate(steps) if n]


def per_stage(values: float | Sequence[float], num_stages: int, key: str) -> list[float]:
    """A scalar or one value per stage (coarsest first) as a list indexed coarsest first."""
    if isinstance(values, (int, float)):
        return [float(values)] * num_stages
    if len(values) != num_stages:
        raise InputError(f"{key} has {len(values)} values; give one per stage ({num_stages}, coarsest first) or a single number.")
    return [float(v) for v in values]


def randn(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """White noise drawn on the CPU (same seed, same noise on any machine), moved to ``like``'s device."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=like.device, dtype=like.dtype)


def sample_multistep(
    velocity: Velocity,
    noise: torch.Tensor,
    pyramid: PyramidConfig,
    steps: Sequence[int],
    shift: float | Sequence[float] = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Euler sampling stage by stage with a jump between stages (PyramidalWan, e.g. ``20-20-10``).

    ``noise`` is pure noise at the resolution of the first stage that has steps; returns the clean
    latent at full resolution ``[B, C, T, H, W]``. Within a stage, ``rho`` runs from 1 to 0 on a
    uniform grid shifted by that stage's ``shift`` and ``x <- x + (sigma(rho') - sigma(rho)) v``.
    With one stage this is Wan's flow-matching Euler sampler.
    """
    shifts = per_stage(shift, pyramid.num_stages, "shift")
    x = noise
    for k, (stage, n) in enumerate(active_stages(steps)):
        sigma_c, sigma_n = pyramid.levels(stage, x.shape[-3], top=(k == 0))
        grid = rho_grid(n, shifts[pyramid.num_stages - 1 - stage])
        for j in range(n):
            now, nxt = interpolate_level(grid[j], sigma_c, sigma_n), interpolate_level(grid[j + 1], sigma_c, sigma_n)
            x = x + per_frame(nxt - now, x) * velocity(x, now)
            if callback:
                callback(stage, j, x)
        if stage > 0:
            x, _ = jump(x, sigma_c, pyramid.resize, generator)
    return x


def default_fewstep_levels(steps: Sequence[int]) -> list[list[float]]:
    """Evenly spaced ``rho`` per stage starting at the noisy end: ``2-2-1`` -> ``[[1, .5], [1, .5], [1]]``."""
    return [[1.0 - j / n for j in range(n)] for n in steps]


def sample_fewstep(
    velocity: Velocity,
    noise: torch.Tensor,
    pyramid: PyramidConfig,
    levels: Sequence[Sequence[float]],
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Few-step sampling for distilled models (e.g. ``2-2-1``).

    ``levels``: per stage (coarsest first) the local levels ``rho`` at which the model runs; an empty
    list skips a coarse stage. Each step takes the clean estimate of the current stage and re-noises
    it to the next level; at a stage change the estimate is upsampled with ``U`` first. Returns the
    last clean estimate at full resolution.
    """
    steps = [len(r) for r in levels]
    plan = active_stages(steps)
    first_rho = levels[pyramid.num_stages - 1 - plan[0][0]][0] if plan else None
    if first_rho != 1.0:
        raise InputError(f"few-step levels {list(map(list, levels))} must start at rho = 1.0 (pure noise) on the first stage with steps.")
    resize, x = pyramid.resize, noise
    for k, (stage, _) in enumerate(plan):
        rhos = levels[pyramid.num_stages - 1 - stage]
        sigma_c, sigma_n = pyramid.levels(stage, x.shape[-3], top=(k == 0))
        project = None if k == 0 else resize.project
        if k > 0:  # stage change: U(x0_hat) re-noised to this stage's first level
            x = stage_forward(x, randn(x.shape, generator, x), rhos[0], sigma_c, sigma_n, project)
        for j, rho in enumerate(rhos):
            v = velocity(x, interpolate_level(rho, sigma_c, sigma_n))
            x0_hat, _ = clean_estimate(x, v, rho, sigma_c, sigma_n, project)
            if callback:
                callback(stage, j, x0_hat)
            if j + 1 < len(rhos):
                x = stage_forward(x0_hat, randn(x.shape, generator, x), rhos[j + 1], sigma_c, sigma_n, project)
        x = resize.up(x0_hat) if stage > 0 else x0_hat
    return x
