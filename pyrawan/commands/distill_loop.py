"""The state of a ``pyrawan distill`` run and the shared start of every iteration.

``Loop`` holds the models, data and counters; the functions below are what every method's iteration
(``distill_dmd.py``, ``distill_adv.py``) starts from: the teacher's guided velocity, the student's
clean estimate, backward simulation (the exit step ``k`` drawn from ``(seed, i)``, the same on every
rank; the student's earlier steps without gradient), per-sample generators keyed on the global
sample index, L_teach, the generator's step and the averaged record. The run around it (recipe
checks, building the models, checkpoints, export) is ``distill.py``.
"""
from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from pyrawan import dist
from pyrawan.models.denoiser import denoise
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.process import clean_estimate
from pyrawan.pyramid.sampler import FewStep, fewstep_rollout
from pyrawan.recipe import DistillRecipe
from pyrawan.train.data import StageDataset, generator, pad_texts, position_item
from pyrawan.train.dmd import (ScoreSite, StageProcess, draw_stage, exit_step, flow_matching_loss, local_level,
                               natural_levels, score_levels, span_shares, stage_spans)
from pyrawan.train.engine import Context, lr_at
from pyrawan.train.metrics import MetricsLog
from pyrawan.train.model import Base, Frozen
from pyrawan.train.run import Trainable, describe_nonfinite, nonfinite, run_folder
from pyrawan.train.teach import TeachPairs, teach_target

LOGGED = ("fake_loss", "gen_loss", "teach_loss", "w_dmd", "disc_loss", "adv_loss", "rec_loss", "r1", "real_logit",
          "fake_logit", "cls_loss", "gan_loss")


@dataclass
class Loop:
    """Everything the distillation loop touches."""

    recipe: DistillRecipe
    ctx: Context
    generator: Trainable                       # the student (full or LoRA), with its EMA
    critic: Trainable                          # dmd: the fake score; adv: the discriminator heads
    teacher: Frozen | None                     # None: the student's base with its adapters disabled
    pyramid: PyramidConfig
    levels: list[list[float]]
    data: StageDataset
    base: Base
    teach: TeachPairs | None
    log: MetricsLog | None = None
    out: Path = Path("runs/distill")
    iteration: int = 0
    gan: Trainable | None = None               # dmd with distill.gan.weight > 0: the GAN heads on the fake score

    @property
    def trainables(self) -> list[Trainable]:
        """What checkpoints hold: generator, critic and (when on) the GAN heads; never exported but the generator."""
        return [self.generator, self.critic] + ([self.gan] if self.gan is not None else [])

    @property
    def total_steps(self) -> int:
        return sum(len(r) for r in self.levels)

    @functools.cached_property
    def stage_latents(self) -> list[tuple[int, int, int]]:
        """Latent (T, H, W) of every stage (0 = full resolution) through the base model's VAE, read once."""
        return self.pyramid.shapes(self.recipe.latent_size())

    def generator_steps(self, iteration: int | None = None) -> int:
        """Generator updates done after ``iteration`` iterations."""
        return (self.iteration if iteration is None else iteration) // self.recipe.distill.generator_every


# ---- models --------------------------------------------------------------------------------------

def texts_with_empty(text: torch.Tensor, empty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cond [B, L, D], uncond [1, L, D])`` padded to one length."""
    both = pad_texts(list(text) + [empty])
    return both[:-1], both[-1:]


@contextlib.contextmanager
def teacher_module(loop: Loop) -> Iterator[torch.nn.Module]:
    """The frozen teacher: its own transformer, or the LoRA student's base with its adapters disabled."""
    if loop.teacher is not None:
        yield loop.teacher.transformer
        return
    module = loop.generator.engine.module
    module.disable_adapters()
    try:
        yield module
    finally:
        module.enable_adapters()


def real_velocity(loop: Loop, x: torch.Tensor, sigma_nat: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The frozen teacher's guided velocity (no graph)."""
    cond, uncond = texts_with_empty(text, loop.base.empty_text)
    with torch.no_grad(), teacher_module(loop) as teacher:
        return denoise(teacher, x, sigma_nat, cond, uncond, loop.recipe.distill.guidance)


def student_estimate(loop: Loop, x: torch.Tensor, step: FewStep, text: torch.Tensor) -> torch.Tensor:
    """The student's clean estimate of step ``step`` from its input ``x`` (carries the graph when enabled)."""
    engine = loop.generator.engine
    with engine.autocast():
        v = denoise(engine.model, x, step.sigma_nat, text, dtype=engine.input_dtype)
    return clean_estimate(x, v, step.rho, step.sigma_c, step.sigma_n, step.project)[0]


def rollout(loop: Loop, noise: torch.Tensor, text: torch.Tensor, stop_at: int, gen: torch.Generator):
    """Backward simulation: the student's steps before ``stop_at`` without gradient; ``(x, step)``."""
    engine = loop.generator.engine
    velocity = lambda x, s: denoise(engine.model, x, s, text, dtype=engine.input_dtype)  # noqa: E731
    with torch.no_grad(), engine.autocast():
        return fewstep_rollout(velocity, noise, loop.pyramid, loop.levels, stop_at, gen)


# ---- one iteration -------------------------------------------------------------------------------

def sample_indices(loop: Loop, iteration: int) -> list[int]:
    """Global indices of this rank's samples at ``iteration``: B processes x b samples = one batch of B*b.

    Every random draw of a sample (its noise, levels, prompt) is keyed on its global index, so n
    processes with batch b follow one process with batch n*b up to float reduction order.
    """
    b, ctx = loop.recipe.train.batch_size, loop.ctx
    first = (iteration * ctx.world + ctx.rank) * b
    return list(range(first, first + b))


def sample_generators(loop: Loop, purpose: str, indices: list[int]) -> list[torch.Generator]:
    """One CPU generator per sample, keyed on ``(seed, purpose, iteration, global index)``."""
    return [generator(loop.recipe.seed, purpose, loop.iteration, g) for g in indices]


def first_noise(loop: Loop, gens: list[torch.Generator]) -> torch.Tensor:
    """Pure noise ``[B, 16, T, H, W]`` at the first stage the student's schedule runs, one sample per generator."""
    first = max(i for i, r in enumerate(reversed(loop.levels)) if r)
    shape = loop.stage_latents[first]
    return torch.cat([torch.randn((1, 16, *shape), generator=g) for g in gens])


def draw_levels(loop: Loop, gens: list[torch.Generator], rho_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Re-noising levels ``rho`` ``[B]``, one per sample, in ``rho_range`` (None: ``distill.score_levels``)."""
    low, high = rho_range or loop.recipe.distill.score_levels
    return torch.cat([score_levels(1, low, high, g) for g in gens])


def score_site(loop: Loop, r: "Rollout") -> ScoreSite:
    """Where this iteration scores the student's estimate (``distill.score_span``, ``train/dmd.py``).

    ``stage``: the exit step's stage with ``rho`` in ``score_levels``. ``global``: a stage drawn from
    ``(seed, "score-stage", iteration)`` (the same on every rank) with its share of the global range
    ``score_levels``, ``rho`` inside that share, and ``x_hat`` moved there with ``R_down``/``R_up``.
    """
    d, exit_stage = loop.recipe.distill, r.step.stage
    if d.score_span == "stage":
        return ScoreSite(exit_stage, r.proc, lambda x: x, tuple(d.score_levels))
    top = max(i for i, levels in enumerate(reversed(loop.levels)) if levels)
    spans = stage_spans(loop.pyramid.boundaries, top)
    stage = draw_stage(span_shares(spans, *d.score_levels), generator(loop.recipe.seed, "score-stage", loop.iteration))
    frames = loop.stage_latents[stage][0]
    natural = natural_levels(stage, frames, loop.pyramid.keep_time, loop.pyramid.ppf)
    ends = (min(max(v, spans[stage][0]), spans[stage][1]) for v in d.score_levels)
    rho_range = tuple(local_level(v, spans[stage], natural) for v in ends)
    sigma_c, sigma_n = (s.to(loop.ctx.device) for s in loop.pyramid.levels(stage, frames, top=(stage == top)))
    resize = loop.pyramid.resize
    proc = StageProcess(r.proc.kind, sigma_c, sigma_n, None if stage == top else resize.project)
    return ScoreSite(stage, proc, functools.partial(move_stage, resize=resize, by=stage - exit_stage), rho_range)


def move_stage(x: torch.Tensor, resize, by: int) -> torch.Tensor:
    """``x`` moved ``by`` stages: ``R_down`` ``by`` times (coarser, ``by > 0``) or ``R_up`` ``-by`` times (finer)."""
    for _ in range(abs(by)):
        x = resize.down(x) if by > 0 else resize.up(x)
    return x


def teach_step_loss(loop: Loop, stop_at: int) -> torch.Tensor:
    """L_teach per sample: the student's exit-step estimate from a teacher pair's coupled noise vs the
    teacher's sample from the same noise, brought down to the exit step's stage."""
    pairs, ctx = loop.teach, loop.ctx
    indices = sample_indices(loop, loop.iteration)
    picks = [g % len(pairs) for g in indices]
    text = pad_texts([pairs.text[p] for p in picks]).to(ctx.device)
    x, step = rollout(loop, pairs.student_noise[picks].to(ctx.device), text, stop_at,
                      sample_generators(loop, "teach", indices))
    x_hat = student_estimate(loop, x, step, text)
    target = teach_target(pairs.target[picks], loop.pyramid, step.stage).to(ctx.device)
    return flow_matching_loss(x_hat, target)


def cache_latents(loop: Loop, items: list[int], stage: int) -> torch.Tensor:
    """The latent cache's clean latents of ``items`` at ``stage`` ``[B, 16, T, H, W]`` (the "real" samples)."""
    return torch.stack([loop.data.latents(j)[stage] for j in items]).to(loop.ctx.device)


@dataclass
class Rollout:
    """An iteration's shared start: exit step ``k``, its input ``x`` and ``step``, the prompts and generators."""

    k: int
    x: torch.Tensor
    step: FewStep
    items: list[int]
    text: torch.Tensor
    gens: list[torch.Generator]
    proc: StageProcess


def start_iteration(loop: Loop, kind: str) -> Rollout:
    """Draw the exit step, the prompts and the noise, and run the student's earlier steps without gradient."""
    ctx, i = loop.ctx, loop.iteration
    k = exit_step(loop.recipe.seed, i, loop.total_steps)
    indices = sample_indices(loop, i)
    items = [position_item(len(loop.data), g, loop.recipe.seed) for g in indices]
    text = pad_texts([loop.data.text(j) for j in items]).to(ctx.device)
    gens = sample_generators(loop, "distill", indices)
    x, step = rollout(loop, first_noise(loop, gens).to(ctx.device), text, k, gens)
    proc = StageProcess(kind, step.sigma_c.to(ctx.device), step.sigma_n.to(ctx.device), step.project)
    return Rollout(k, x, step, items, text, gens, proc)


def step_generator(loop: Loop, objective: torch.Tensor) -> tuple[float, bool]:
    """Backward and step the generator (skipped on a non-finite objective), then its EMA; ``(grad norm, applied)``."""
    engine = loop.generator.engine
    engine.set_lr(lr_at(loop.generator_steps(), engine.spec))
    engine.backward(objective, True)
    norm, applied = engine.step(skip=not math.isfinite(float(objective.detach())), max_norm=engine.spec.max_grad_norm)
    if applied and loop.generator.ema is not None:
        loop.generator.ema.update(loop.generator_steps() + 1)
    return norm, applied


def finish_record(loop: Loop, record: dict, items: list[int]) -> dict:
    """Average the record's losses over all processes; stop on a non-finite one."""
    ctx, i = loop.ctx, loop.iteration
    record["lr"] = lr_at(loop.generator_steps(), loop.generator.engine.spec)
    keys = [key for key in LOGGED if record.get(key) is not None]
    means = dist.all_reduce_sum(torch.tensor([record[key] for key in keys], dtype=torch.float64).to(ctx.device))
    record.update({key: float(v) / ctx.world for key, v in zip(keys, means.cpu())})      # means over all samples
    values = [record[key] for key in keys]
    if not all(map(math.isfinite, values)):
        loss = next((v for v in values if not math.isfinite(v)), float("nan"))
        nonfinite("distill", run_folder(loop.out), i + 1, describe_nonfinite(loss, record.get("gen_grad_norm", 0.0)),
                  [loop.data.name(j) for j in items], ctx.rank, loop.recipe.train.on_nonfinite,
                  "lower train.optimizer.lr or the critic's lr (distill.fake_score.optimizer.lr for dmd, "
                  "distill.adv.optimizer.lr for adv), or distill.guidance.")
    return record
