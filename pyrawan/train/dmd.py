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

The DMD gradient on ``x_hat`` in one of two forms (``distill.dmd_form``).

``x0`` (DMD2's normalised form, the default)::

    g = (x0_fake - x0_real) / mean|x_hat - x0_real|          (mean over C, T, H, W per sample)

With the ordinary process ``x0 = x - sigma F`` this is, in velocity form,
``g = (F_real - F_fake) / mean|F_real - (eps - x_hat)|`` = ``(w_dmd / sigma) (F_real - F_fake)`` with the
paper's weight ``w_dmd = sigma / ||F_real - dx_hat/dsigma||_1`` (``dx_hat/dsigma = eps - x_hat``, mean-L1):
one power of sigma from ``x0 = x - sigma F`` cancels against the normaliser, so no power of sigma is left
in ``g``. The generator loss ``0.5 mean (x_hat - sg(x_hat - g))^2`` has gradient ``g / n`` in ``x_hat``.

``eps`` (the score form: DMD's score difference, ``s = -eps_hat / sigma``) built from each variant's noise
estimate ``eps_hat`` (``StageProcess.noise``) and brought to clean-latent units with the ordinary identity
``x0 = (x - sigma eps) / (1 - sigma)`` per frame::

    g = sigma / (1 - sigma) (eps_real - eps_fake) / mean|x_hat - x0_real|

For the ordinary process ``eps_hat = x + (1 - sigma) F``, so both forms are the same gradient (and for
PT*, which reads every stage sample as ordinary, too). Under PT the pyramidal noise estimate weights the
high band ``I - P`` by ``(sigma_n - sigma) / sigma_n`` where the clean estimate weights it by
``sigma (sigma_n - sigma_c) / ((1 - sigma_c) sigma_n)``: at the full-resolution stage (``sigma_c = 0``) the
x0 form cannot tell PT from PT*, the eps form can.

Where the estimate is scored (``distill.score_span``): ``stage`` re-noises ``x_hat`` inside the exit step's
stage at ``rho ~ U[score_levels]``; ``global`` draws the level over the whole process, as DMD2 and
Self-Forcing do, by drawing the stage that holds it (each with its share of the global range
``score_levels``, in global sigma) and moving ``x_hat`` to that stage's grid (``R_down`` to a coarser,
``R_up`` to a finer stage) before re-noising it with that stage's process (``ScoreSite``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from pyrawan.pyramid.process import boundary_samples, clean_estimate, per_frame
from pyrawan.pyramid.schedule import interpolate_level, sigma_to_natural

Kind = Literal["ordinary", "pyramidal", "pyramidal-star"]
Form = Literal["x0", "eps"]
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

    def noise(self, x: torch.Tensor, v: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        """Noise estimate ``eps_hat`` from ``x`` and ``v``: PT's closed form (both bands, the paper's beta/gamma),
        else the ordinary ``x + (1 - sigma) v`` (PT*'s simplified weights)."""
        if self.kind == "pyramidal" and self.project is not None:
            return clean_estimate(x, v, rho.to(self.sigma_c.dtype), self.sigma_c, self.sigma_n, self.project)[1]
        return x + (1 - per_frame(self.level(rho), x)) * v


@dataclass(frozen=True)
class ScoreSite:
    """Where the DMD gradient and the fake score look at the student's estimate (``distill.score_span``).

    ``stage``: the stage whose process re-noises it; ``move``: the exit step's grid ``[B, C, T, H, W]`` to that
    stage's grid (differentiable; identity for the exit step's own stage); ``rho_range``: where ``rho`` is drawn.
    """

    stage: int
    proc: StageProcess
    move: Callable[[torch.Tensor], torch.Tensor]
    rho_range: tuple[float, float]


def stage_spans(boundaries: tuple[float, ...], top: int) -> list[tuple[float, float]]:
    """Global-sigma span ``(low, high)`` of stages ``0..top`` (index = stage); the top stage reaches 1."""
    full = (0.0, *boundaries, 1.0)
    return [(full[j], 1.0 if j == top else full[j + 1]) for j in range(top + 1)]


def span_shares(spans: list[tuple[float, float]], low: float, high: float) -> list[float]:
    """Length of each span inside ``[low, high]``: how often the global draw lands in each stage."""
    return [max(0.0, min(b, high) - max(a, low)) for a, b in spans]


def draw_stage(shares: list[float], gen: torch.Generator) -> int:
    """A stage index drawn with probability proportional to ``shares`` (one uniform from ``gen``)."""
    u = float(torch.rand(1, generator=gen, dtype=torch.float64)) * sum(shares)
    for stage, share in enumerate(shares):
        if u < share:
            return stage
        u -= share
    return max(j for j, share in enumerate(shares) if share > 0)


def local_level(sigma: float, span: tuple[float, float], natural: Callable[[float], torch.Tensor]) -> float:
    """Local level ``rho`` of the global level ``sigma`` inside a stage spanning ``span`` (global sigma), where
    ``natural(sigma)`` gives the stage's natural level per frame ``[T]``: the frame mean, interpolated linearly
    as ``StageProcess.level`` does."""
    nat = [natural(s).mean() for s in (span[0], sigma, span[1])]
    return float((nat[1] - nat[0]) / (nat[2] - nat[0]))


def natural_levels(stage: int, num_frames: int, keep_time: bool, ppf: bool) -> Callable[[float], torch.Tensor]:
    """``sigma -> [T]`` natural levels of ``stage`` (a PPF stage runs at full resolution: its levels are global)."""
    if ppf:
        return lambda sigma: torch.full((num_frames,), float(sigma), dtype=torch.float64)
    return lambda sigma: sigma_to_natural(sigma, stage, num_frames, keep_time)


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


def eps_form_gradient(x_hat: torch.Tensor, x0_real: torch.Tensor, eps_real: torch.Tensor, eps_fake: torch.Tensor,
                      sigma: torch.Tensor, eps: float = 1e-6) -> DmdGradient:
    """``g = sigma / (1 - sigma) (eps_real - eps_fake) / mean|x_hat - x0_real|`` per sample, in float64, NaN-cleaned.

    ``sigma`` ``[B, T]``: the natural level of each frame of the re-noised sample (below 1).
    """
    x_hat, x0_real, eps_real, eps_fake = (t.detach().double() for t in (x_hat, x0_real, eps_real, eps_fake))
    s = per_frame(sigma.double(), x_hat)
    norm = per_sample_mean_abs(x_hat - x0_real) + eps
    g = torch.nan_to_num(s / (1 - s) * (eps_real - eps_fake) / norm.view(-1, *[1] * (x_hat.ndim - 1)))
    return DmdGradient(g, sigma.mean(1).double().to(norm.device) ** 2 / norm)


def form_gradient(form: Form, proc: StageProcess, x_hat: torch.Tensor, x_t: torch.Tensor, rho: torch.Tensor,
                  v_real: torch.Tensor, v_fake: torch.Tensor) -> DmdGradient:
    """The DMD gradient of ``x_hat`` ``[B, C, T, H, W]`` re-noised to ``x_t`` at ``rho`` ``[B]`` by ``proc``, from the
    real and fake scores' velocities there, in the ``x0`` or the ``eps`` form (module docstring)."""
    x0_real, sigma = proc.clean(x_t, v_real, rho), proc.level(rho)
    if form == "x0":
        return dmd_gradient(x_hat, x0_real, proc.clean(x_t, v_fake, rho), sigma.mean(1))
    return eps_form_gradient(x_hat, x0_real, proc.noise(x_t, v_real, rho), proc.noise(x_t, v_fake, rho), sigma)


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
    """Local levels ``rho`` ``[n]`` (float64) drawn uniformly in ``[low, high]`` inside the scored stage."""
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)
