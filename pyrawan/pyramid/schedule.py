"""Noise levels, stage boundaries, step grids and schedules (spec sections 3 and 6).

Global level ``sigma``: the noise level in the orthonormal frame, continuous across stages.
Natural level ``sigma_nat``: the level a pretrained Wan sees at a stage's own resolution.
For frame f at stage i, with amplitude gain ``c = m_f ** (i / 2)``::

    sigma_nat = h(sigma) = sigma / ((1 - sigma) * c + sigma)

Stage i covers ``sigma`` in ``[b_i, b_{i+1}]`` with ``0 = b_0 < b_1 < ... < b_S = 1``.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from pyrawan.errors import InputError
from pyrawan.pyramid.geometry import block_sizes


def amplitude_gain(stage: int, num_frames: int, keep_time: bool = False) -> torch.Tensor:
    """``c_{i,f} = m_f ** (i / 2)`` for every frame of stage ``i``: ``[T]`` float64."""
    return block_sizes(num_frames, keep_time) ** (stage / 2)


def sigma_to_natural(sigma: float | torch.Tensor, stage: int, num_frames: int, keep_time: bool = False) -> torch.Tensor:
    """``h_{i,f}(sigma)``: the natural level of each frame of stage ``i`` at global level ``sigma``: ``[T]``."""
    c = amplitude_gain(stage, num_frames, keep_time)
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return sigma / ((1 - sigma) * c + sigma)


def natural_to_sigma(sigma_nat: torch.Tensor, stage: int, keep_time: bool = False) -> torch.Tensor:
    """Inverse of ``sigma_to_natural`` per frame: ``[T] -> [T]``."""
    sigma_nat = torch.as_tensor(sigma_nat, dtype=torch.float64)
    c = amplitude_gain(stage, sigma_nat.shape[-1], keep_time)
    return c * sigma_nat / (1 - sigma_nat + c * sigma_nat)


def jump_level(s: float | torch.Tensor, m: float | torch.Tensor) -> torch.Tensor:
    """``g_m(s) = sqrt(m) s / (1 + (sqrt(m) - 1) s)``: natural level after a jump to the finer stage."""
    s = torch.as_tensor(s, dtype=torch.float64)
    r = torch.as_tensor(m, dtype=torch.float64).sqrt()
    return r * s / (1 + (r - 1) * s)


def check_boundaries(boundaries: Sequence[float], num_stages: int, key: str = "pyramid.boundaries") -> tuple[float, ...]:
    """Validate the inner boundaries ``b_1 .. b_{S-1}`` (global sigma): strictly increasing in (0, 1)."""
    b = tuple(float(v) for v in boundaries)
    if len(b) != num_stages - 1:
        raise InputError(
            f"{key} has {len(b)} values but a {num_stages}-stage pyramid needs {num_stages - 1} "
            f"(the inner boundaries b_1 .. b_{num_stages - 1} in global sigma, finest first), e.g. "
            f"{[round((i + 1) / num_stages, 4) for i in range(num_stages - 1)]}."
        )
    full = (0.0, *b, 1.0)
    for lo, hi in zip(full, full[1:]):
        if not lo < hi:
            raise InputError(
                f"{key} = {list(b)} must be strictly increasing inside (0, 1); {hi} does not exceed {lo}."
            )
    return b


def stage_levels(
    boundaries: Sequence[float], stage: int, num_frames: int, keep_time: bool = False, top: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Natural levels ``(sigma_c, sigma_n)`` at the cleaner and noisier end of ``stage``, per frame ``[T]``.

    ``top=True`` makes the stage reach pure noise (the first stage that has steps, section 6).
    """
    full = (0.0, *boundaries, 1.0)
    sigma_c = sigma_to_natural(full[stage], stage, num_frames, keep_time)
    sigma_n = sigma_to_natural(1.0 if top else full[stage + 1], stage, num_frames, keep_time)
    return sigma_c, sigma_n


def parse_schedule(text: str | Sequence[int], num_stages: int | None = None, key: str = "schedule") -> tuple[int, ...]:
    """Parse ``"20-20-10"`` (steps per stage, coarsest first) into ``(20, 20, 10)``.

    Leading zeros skip the coarsest stages (``0-0-50`` is the plain full-resolution model); a zero
    after a stage with steps (``2-0-1``) is rejected, and so is a length that differs from ``num_stages``.
    """
    if isinstance(text, str):
        if not re.fullmatch(r"\s*\d+(\s*-\s*\d+)*\s*", text):
            raise InputError(
                f"{key} = {text!r} is not a schedule: write steps per stage, coarsest first, joined by "
                f"'-', e.g. '20-20-10' for three stages or '50' for one."
            )
        steps = tuple(int(v) for v in text.split("-"))
    else:
        steps = tuple(int(v) for v in text)
    written = "-".join(map(str, steps))
    if num_stages is not None and len(steps) != num_stages:
        raise InputError(
            f"{key} = {written!r} has {len(steps)} stages but the model has {num_stages}; give one step "
            f"count per stage, coarsest first (e.g. '{'-'.join(['0'] * (num_stages - 1) + ['50'])}' for "
            f"the full-resolution stage only)."
        )
    if not any(steps):
        raise InputError(f"{key} = {written!r} has no steps at all; give at least one step to the finest stage.")
    first = next(i for i, n in enumerate(steps) if n)
    if 0 in steps[first:]:
        raise InputError(
            f"{key} = {written!r} skips a stage after a stage with steps; zero steps are allowed only on "
            f"the coarsest stages (e.g. '0-0-50'), since sampling must pass through every finer stage."
        )
    return steps


def schedule_text(value):
    """Accept ``50`` and ``[20, 20, 10]`` as well as ``"20-20-10"`` (a recipe value before validation)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, tuple)) and all(type(v) is int for v in value):
        return "-".join(map(str, value))
    return value


def shift_grid(rho: torch.Tensor, shift: float) -> torch.Tensor:
    """Wan's timestep shift ``k rho / (1 + (k - 1) rho)`` (identity for ``k = 1``)."""
    return shift * rho / (1 + (shift - 1) * rho)


def rho_grid(num_steps: int, shift: float = 1.0) -> torch.Tensor:
    """The ``num_steps + 1`` local levels of a stage, from 1 (noisy end) to 0 (clean end): float64."""
    return shift_grid(torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64), shift)


def interpolate_level(rho: float | torch.Tensor, sigma_c: torch.Tensor, sigma_n: torch.Tensor) -> torch.Tensor:
    """Natural level inside a stage, per frame: ``(1 - rho) sigma_c + rho sigma_n``.

    ``rho`` may be a float or ``[B]``; the result is ``[T]`` or ``[B, T]``.
    """
    rho = torch.as_tensor(rho, dtype=sigma_c.dtype, device=sigma_c.device)
    if rho.ndim:
        rho = rho[:, None]
    return (1 - rho) * sigma_c + rho * sigma_n


def default_boundaries(num_stages: int) -> tuple[float, ...]:
    """Uniform split of global sigma, ``b_i = i / S`` (``PyramidConfig``'s default; recipes default to
    ``recipe_default_boundaries``).

    This is not Pyramid Flow's split: Pyramid Flow divides each stage's *natural* level uniformly
    (``pyramid_flow_boundaries``), which in global sigma is about (0.586, 0.941) for S = 3, m = 8.
    """
    return tuple(round(i / num_stages, 6) for i in range(1, num_stages))


def recipe_default_boundaries(num_stages: int, keep_time: bool = False, kind: str = "resolution") -> tuple[float, ...]:
    """What ``pyramid.boundaries: null`` means in a recipe: Pyramid Flow's split for this pyramid's jumps.

    m = 8 for 2x2x2 blocks, 4 for a spatial-only pyramid (``keep_time``), 1 for PPF (no jump, so the
    split is uniform). Chosen by measurement: in the toy world it beat uniform and calibrated
    boundaries before and after finetuning (docs/results.md, "Ablations").
    """
    m = 1.0 if kind == "ppf" else 4.0 if keep_time else 8.0
    return pyramid_flow_boundaries(num_stages, m)


def pyramid_flow_boundaries(num_stages: int, m: float = 8.0) -> tuple[float, ...]:
    """Boundaries equivalent to Pyramid Flow's stage ranges, in global sigma.

    Pyramid Flow ends stage ``i`` (coarse side of the jump to stage ``i - 1``) at natural level
    ``i / S``; with amplitude gain ``c = m ** (i / 2)`` that is global ``b_i = c s / (1 - s + c s)``.
    For S = 3 and m = 8 (2x2x2 blocks): (0.586, 0.941); m = 4 (first frame): (0.5, 0.889).
    """
    out = []
    for i in range(1, num_stages):
        s, c = i / num_stages, m ** (i / 2)
        out.append(round(c * s / (1 - s + c * s), 6))
    return tuple(out)
