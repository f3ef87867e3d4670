"""Distribution matching distillation (DMD) for few-step pyramidal students: the math, model-free.

Notation (pyramid-math.md): a stage sample at local level ``rho`` has natural level
``sigma = (1 - rho) sigma_c + rho sigma_n`` per frame; ``F`` is a velocity prediction.

Three ways a variant re-noises a student's clean estimate ``x_hat`` and reads a clean estimate back
(``StageProcess.kind``):

- ``ordinary`` (DMD-OT and the one-stage Wan-DMD baseline): ``x = (1 - sigma) x_hat + sigma eps``,
  target ``v = eps - x_hat``, clean estimate ``x0 = x - sigma F``.
- ``pyramidal`` (DMD-PT): the pyramidal forward process of the stage,
  ``x = (1 - rho) y_c + rho y_n`` with ``y_c = (1 - sigma_c) x_hat + sigma_c eps`` and
  ``y_n = (1 - sigma_n) P x_hat + sigma_n eps``; target ``(y_n - y_c) / (sigma_n - sigma_c)``; the clean
  estimate is the closed form of ``pyramid.process.clean_estimate``: the low band ``P`` read as an
  ordinary sample, the high band ``I - P`` with its own weights (the paper's beta/gamma pairs).
- ``pyramidal-star`` (DMD-PT*): the same pyramidal re-noising and target, but the clean estimate
  drops the ``P`` terms (beta_1 = gamma_1 = 1, beta_2 = gamma_2 = 0): ``x0 = x - sigma F`` as if the
  stage sample were an ordinary flow-matching sample.

Where ``sigma_n = 1`` (the coarsest stage with steps) the three coincide.

The DMD gradient (DMD2's normalised form) on ``x_hat``::

    g = (x0_fake - x0_real) / mean|x_hat - x0_real|          (mean over C, T, H, W per sample)

With the ordinary process ``x0 = x - sigma F`` this is, in velocity form,
``g = (F_real - F_fake) / mean|F_real - (eps - x_hat)|`` = ``(w_dmd / sigma) (F_real - F_fake)`` with the
paper's weight ``w_dmd = sigma / ||F_real - dx_hat/dsigma||_1`` (``dx_hat/dsigma = eps - x_hat``, mean-L1):
one power of sigma from ``x0 = x - sigma F`` cancels against the normaliser, so no power of sigma is left
in ``g``. The generator loss ``0.5 mean (x_hat - sg(x_hat - g))^2`` has gradient ``g / n`` in ``x_hat``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from pyrawan.pyramid.process import boundary_samples, clean_estimate, per_frame
from pyrawan.pyramid.schedule import interpolate_level

Kind = Literal["ordinary", "pyramidal", "pyramidal-star"]
VARIANT_PROCESS: dict[str, Kind] = {"ot": "ordinary", "baseline": "ordinary", "pt": "pyramidal",
                                    "ptstar": "pyramidal-star"}


@dataclass(frozen=True)
class StageProcess:
    """Forward process and clean estimate of one stage as a DMD variant sees it.

    ``sigma_c``/``sigma_n``: the stage's natural levels per frame ``[T]``; ``project``: ``P`` on the
    stage's grid, or None where ``sigma_n = 1``. Levels ``rho`` are per sample ``[B]``.
    """

    kind: Kind
    sigma_c: torch.Tensor
    sigma_n: torch.Tensor
    project: Callable[[torch.Tensor], torch.Tensor] | None

    def level(self, rho: torch.Tensor) -> torch.Tensor:
        """Natural level per sample and frame ``[B, T]``.

        The ordinary process gives every frame one level (the stage's frame-mean range): its teacher is a
        plain model trained with one level per sample; the pyramidal ones keep each frame's own level.
        """
        sigma_c, sigma_n = self.sigma_c, self.sigma_n
        if self.kind == "ordinary":
            sigma_c, sigma_n = sigma_c.mean().expand_as(sigma_c), sigma_n.mean().expand_as(sigma_n)
        return interpolate_level(rho.to(sigma_c.dtype), sigma_c, sigma_n)

    def _pyramidal(self) -> bool:
        return self.kind != "ordinary" and self.project is not None

    def noisy(self, x0: torch.Tensor, eps: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        """The sample at ``rho`` built from the clean latent ``x0`` and noise ``eps`` ``[B, C, T, H, W]``."""
        if not self._pyramidal():
            s = per_frame(self.level(rho), x0)
            return (1 - s) * x0 + s * eps
        y_c, y_n = boundary_samples(x0, self.project(x0), eps, self.sigma_c, self.sigma_n)
        r = rho.to(x0.device, x0.dtype).view(-1, 1, 1, 1, 1)
        return (1 - r) * y_c + r * y_n

    def target(self, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The flow-matching velocity of that sample (the fake score's regression target)."""
        if not self._pyramidal():
            return eps - x0
        y_c, y_n = boundary_samples(x0, self.project(x0), eps, self.sigma_c, self.sigma_n)
        return (y_n - y_c) / per_frame(self.sigma_n - self.sigma_c, x0)

    def clean(self, x: torch.Tensor, v: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        """Clean estimate ``x0`` from the sample ``x`` and a velocity ``v`` (see the module docstring)."""
        if self.kind == "pyramidal" and self.project is not None:
            return clean_estimate(x, v, rho.to(self.sigma_c.dtype), self.sigma_c, self.sigma_n, self.project)[0]
        return x - per_frame(self.level(rho), x) * v


def per_sample_mean_abs(x: torch.Tensor) -> torch.Tensor:
    """``mean |x|`` over every axis but the first: ``[B, ...] -> [B]``."""
    return x.abs().flatten(1).mean(1)


@dataclass
class DmdGradient:
    """The DMD gradient ``g`` on ``x_hat`` ``[B, C, T, H, W]`` and the paper's weight ``w_dmd`` ``[B]``."""

    g: torch.Tensor
    w_dmd: torch.Tensor


def dmd_gradient(x_hat: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor, sigma_mean: torch.Tensor,
                 eps: float = 1e-6) -> DmdGradient:
    """``g = (x0_fake - x0_real) / mean|x_hat - x0_real|`` per sample, in float64, NaN-cleaned.

    ``sigma_mean`` ``[B]``: the mean natural level of each re-noised sample, for ``w_dmd = sigma / mean|F - (eps - x_hat)|``
    ``= sigma^2 / mean|x_hat - x0_real|`` (reported; the update uses ``g``).
    """
    x_hat, x0_real, x0_fake = (t.detach().double() for t in (x_hat, x0_real, x0_fake))
    norm = per_sample_mean_abs(x_hat - x0_real) + eps
    g = torch.nan_to_num((x0_fake - x0_real) / norm.view(-1, *[1] * (x_hat.ndim - 1)))
    return DmdGradient(g, sigma_mean.double().to(norm.device) ** 2 / norm)


def dmd_loss(x_hat: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``0.5 mean (x_hat - sg(x_hat - g))^2`` per sample ``[B]``; its gradient in ``x_hat`` is ``g / n``."""
    target = (x_hat.detach().double() - g).to(x_hat.dtype)
    return 0.5 * (x_hat - target).pow(2).flatten(1).mean(1)


def flow_matching_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error ``[B]`` (the fake score's loss on the student's samples)."""
    return (pred.float() - target.float()).pow(2).flatten(1).mean(1)


def exit_step(seed: int, iteration: int, total_steps: int) -> int:
    """The student step whose output gets the gradient at ``iteration``: uniform, the same on every rank.

    Derived from ``(seed, iteration)`` only (no rank, no global generator), so every rank of a
    distributed run and a resumed run draw the same step (DMD2's backward simulation).
    """
    from pyrawan.train.data import generator

    return int(torch.randint(total_steps, (1,), generator=generator(seed, "exit", iteration)))


def score_levels(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    """Local levels ``rho`` ``[n]`` (float64) drawn uniformly in ``[low, high]`` inside the exit step's stage."""
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)
