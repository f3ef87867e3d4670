"""Multi-step and few-step pyramidal samplers over any velocity function (spec section 6).

``velocity(x, sigma_nat) -> v``: ``x`` ``[B, C, T, H, W]``, ``sigma_nat`` the natural level of each
frame ``[T]`` (float64), ``v = dx/dsigma_nat`` of the same shape as ``x``. Schedules are written
coarsest first; leading zeros skip the coarsest stages.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from pyrawan.errors import InputError, NonFiniteError
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


Generators = torch.Generator | Sequence[torch.Generator] | None   # one for the batch, or one per sample


def randn(shape, generator: Generators, like: torch.Tensor) -> torch.Tensor:
    """White noise drawn on the CPU (same seed, same noise on any machine), moved to ``like``'s device.

    With a list of generators, sample ``b`` (dim 0) is drawn from ``generator[b]``, so a sample's
    noise does not depend on the batch it is in.
    """
    if isinstance(generator, (list, tuple)):
        return torch.cat([randn((1, *shape[1:]), g, like) for g in generator])
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=like.device, dtype=like.dtype)


def jump_batch(x: torch.Tensor, sigma_nat: torch.Tensor, pyramid: PyramidConfig, generator: Generators) -> torch.Tensor:
    """``process.jump`` of a batch; with a list of generators each sample's noise comes from its own."""
    if isinstance(generator, (list, tuple)):
        return torch.cat([jump(x[b:b + 1], sigma_nat, pyramid.resize, g)[0] for b, g in enumerate(generator)])
    return jump(x, sigma_nat, pyramid.resize, generator)[0]


def check_finite(x: torch.Tensor, pyramid: PyramidConfig, stage: int, j: int) -> None:
    """``NonFiniteError`` naming the stage (counted coarsest first, as schedules are written), the step and the
    samples of the batch when ``x`` ``[B, ...]`` holds NaN or Inf (one reduction per step)."""
    if bad := nonfinite_samples(x):
        raise NonFiniteError(f"stage {pyramid.num_stages - stage} of {pyramid.num_stages} (coarsest first), "
                             f"step {j + 1}", bad)


def nonfinite_samples(x: torch.Tensor) -> list[int]:
    """Positions ``b`` along dim 0 where ``x[b]`` holds NaN or Inf (empty when all is finite)."""
    finite = torch.isfinite(x).flatten(1).all(1)
    return [] if bool(finite.all()) else (~finite).nonzero().flatten().tolist()


def multistep_levels(steps: Sequence[int], shift: float | Sequence[float] = 1.0) -> list[list[float]]:
    """The local levels ``rho`` of every Euler step, per stage (coarsest first), both ends included.

    A stage with ``n`` steps gets ``n + 1`` levels from 1 to 0 on a uniform grid shifted by that
    stage's ``shift`` (``rho' = k rho / (1 + (k - 1) rho)``); a skipped stage gets ``[]``. These are
    the sampler's levels as data (like k-diffusion's ``sigmas``).
    """
    shifts = per_stage(shift, len(steps), "shift")
    return [rho_grid(n, k).tolist() if n else [] for n, k in zip(steps, shifts)]


def sample_multistep(
    velocity: Velocity,
    noise: torch.Tensor,
    pyramid: PyramidConfig,
    steps: Sequence[int] | None = None,
    shift: float | Sequence[float] = 1.0,
    generator: Generators = None,
    callback: Callback | None = None,
    levels: Sequence[Sequence[float]] | None = None,
) -> torch.Tensor:
    """Euler sampling stage by stage with a jump between stages (PyramidalWan, e.g. ``20-20-10``).

    ``noise`` is pure noise at the resolution of the first stage that has steps; returns the clean
    latent at full resolution ``[B, C, T, H, W]``. Within a stage ``x <- x + (sigma(rho') - sigma(rho)) v``
    over the stage's levels: ``levels`` (per stage, coarsest first, from 1 to 0) or, when not given,
    ``multistep_levels(steps, shift)``. With one stage this is Wan's flow-matching Euler sampler. A step whose
    result holds NaN or Inf raises ``NonFiniteError`` (nothing non-finite is handed on).
    """
    if levels is None:
        levels = multistep_levels(steps, shift)
    x = noise
    for k, (stage, _) in enumerate(active_stages([max(len(r) - 1, 0) for r in levels])):
        grid = levels[pyramid.num_stages - 1 - stage]
        sigma_c, sigma_n = pyramid.levels(stage, x.shape[-3], top=(k == 0))
        for j in range(len(grid) - 1):
            now, nxt = interpolate_level(grid[j], sigma_c, sigma_n), interpolate_level(grid[j + 1], sigma_c, sigma_n)
            x = x + per_frame(nxt - now, x) * velocity(x, now)
            check_finite(x, pyramid, stage, j)
            if callback:
                callback(stage, j, x)
        if stage > 0:
            x = jump_batch(x, sigma_c, pyramid, generator)
    return x


def default_fewstep_levels(steps: Sequence[int]) -> list[list[float]]:
    """Evenly spaced ``rho`` per stage starting at the noisy end: ``2-2-1`` -> ``[[1, .5], [1, .5], [1]]``."""
    return [[1.0 - j / n for j in range(n)] for n in steps]


@dataclass(frozen=True)
class FewStep:
    """One step of the few-step sampler: where it runs and how its input relates to the clean latent.

    ``index`` counts steps over all stages (0 = first); ``j`` within the stage; ``rho`` the local level;
    ``sigma_c``/``sigma_n`` the stage's natural levels per frame ``[T]``; ``project`` is ``P`` on the
    stage's grid, or None where the stage reaches pure noise (``sigma_n = 1``).
    """

    index: int
    stage: int
    j: int
    rho: float
    sigma_c: torch.Tensor
    sigma_n: torch.Tensor
    project: Callable | None

    @property
    def sigma_nat(self) -> torch.Tensor:
        """Natural level per frame ``[T]`` of this step's input."""
        return interpolate_level(self.rho, self.sigma_c, self.sigma_n)


def check_fewstep_levels(pyramid: PyramidConfig, levels: Sequence[Sequence[float]]) -> None:
    """The first level of the first stage with steps must be 1 (the sampler starts from pure noise)."""
    plan = active_stages([len(r) for r in levels])
    first_rho = levels[pyramid.num_stages - 1 - plan[0][0]][0] if plan else None
    if first_rho != 1.0:
        raise InputError(f"few-step levels {list(map(list, levels))} must start at rho = 1.0 (pure noise) on the first stage with steps.")


def _fewstep(velocity: Velocity, noise: torch.Tensor, pyramid: PyramidConfig, levels: Sequence[Sequence[float]],
             generator: Generators) -> Iterator[tuple[FewStep, torch.Tensor, torch.Tensor]]:
    """Run the few-step sampler, yielding ``(step, x, x0_hat)`` after every model evaluation.

    Before each evaluation it yields ``(step, x, None)`` (the step's noisy input); a consumer that
    stops there has the input of that step without having run it.
    """
    check_fewstep_levels(pyramid, levels)
    resize, x, index = pyramid.resize, noise, 0
    for k, (stage, _) in enumerate(active_stages([len(r) for r in levels])):
        rhos = levels[pyramid.num_stages - 1 - stage]
        sigma_c, sigma_n = pyramid.levels(stage, x.shape[-3], top=(k == 0))
        project = None if k == 0 else resize.project
        if k > 0:  # stage change: U(x0_hat) re-noised to this stage's first level
            x = stage_forward(x, randn(x.shape, generator, x), rhos[0], sigma_c, sigma_n, project)
        for j, rho in enumerate(rhos):
            step = FewStep(index, stage, j, float(rho), sigma_c, sigma_n, project)
            yield step, x, None
            v = velocity(x, step.sigma_nat)
            x0_hat, _ = clean_estimate(x, v, rho, sigma_c, sigma_n, project)
            yield step, x, x0_hat
            index += 1
            if j + 1 < len(rhos):
                x = stage_forward(x0_hat, randn(x.shape, generator, x), rhos[j + 1], sigma_c, sigma_n, project)
        x = resize.up(x0_hat) if stage > 0 else x0_hat


def sample_fewstep(
    velocity: Velocity,
    noise: torch.Tensor,
    pyramid: PyramidConfig,
    levels: Sequence[Sequence[float]],
    generator: Generators = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Few-step sampling for distilled models (e.g. ``2-2-1``).

    ``levels``: per stage (coarsest first) the local levels ``rho`` at which the model runs; an empty
    list skips a coarse stage. Each step takes the clean estimate of the current stage and re-noises
    it to the next level; at a stage change the estimate is upsampled with ``U`` first. Returns the
    last clean estimate at full resolution; a non-finite estimate raises ``NonFiniteError``.
    """
    x0_hat = noise
    for step, _, x0_hat in _fewstep(velocity, noise, pyramid, levels, generator):
        if x0_hat is not None:
            check_finite(x0_hat, pyramid, step.stage, step.j)
        if x0_hat is not None and callback:
            callback(step.stage, step.j, x0_hat)
    return x0_hat


def fewstep_rollout(
    velocity: Velocity,
    noise: torch.Tensor,
    pyramid: PyramidConfig,
    levels: Sequence[Sequence[float]],
    stop_at: int,
    generator: Generators = None,
) -> tuple[torch.Tensor, FewStep]:
    """Run the few-step sampler up to step ``stop_at`` (0-based over all stages) and return its input.

    Returns ``(x, step)``: the noisy latent ``[B, C, T, H, W]`` that step ``stop_at`` would evaluate,
    at the stage's resolution, and where it lies (``step.sigma_nat``). The earlier steps run as in
    ``sample_fewstep`` (the caller decides whether under ``torch.no_grad``): the student rollout of
    DMD's backward simulation.
    """
    total = sum(len(r) for r in levels)
    if not 0 <= stop_at < total:
        raise InputError(f"stop_at = {stop_at} is outside the {total} steps of levels {list(map(list, levels))}.")
    for step, x, x0_hat in _fewstep(velocity, noise, pyramid, levels, generator):
        if step.index == stop_at and x0_hat is None:
            return x, step
    raise AssertionError("unreachable: the rollout ended before its stop step")
