"""L_teach's targets: teacher samples from fixed noise, computed once per run and kept in the run folder.

The paper adds a supervised term with weight 0.01 to DMD (its target is not stated). pyrawan's
choice (docs/distill.md): the teacher's multi-step sample ``x_T`` from a full-resolution noise ``z``
(the teacher's own sampler, schedule and shift; the real score's guidance), and for the student the
same noise coupled down to its first stage (``sqrt(m) D`` per stage, so both start from one draw).
At exit step k in stage i the student's clean estimate is compared with ``D^i(x_T)``: the teacher's
result at that stage's resolution.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pyrawan import dist
from pyrawan.fsutil import atomic_path
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.sampler import active_stages, sample_multistep
from pyrawan.pyramid.schedule import parse_schedule
from pyrawan.train.data import generator, pad_texts
from pyrawan.ui import console, progress_bar

FILE = "teach_pairs.safetensors"
RealVelocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TeachPairs:
    """``student_noise`` ``[N, 16, T', H', W']`` (the student's first stage), captions ``text`` (N x ``[L, D]``),
    ``target`` ``[N, 16, T, H, W]``: the teacher's samples at full resolution from the same noise."""

    student_noise: torch.Tensor
    text: list[torch.Tensor]
    target: torch.Tensor

    def __len__(self) -> int:
        return len(self.target)


def couple_down(noise: torch.Tensor, pyramid: PyramidConfig, stage: int) -> torch.Tensor:
    """Full-resolution white noise brought to ``stage`` as white noise (``sqrt(m) D`` per stage)."""
    for _ in range(stage):
        noise = pyramid.resize.couple_noise(noise)
    return noise


def teach_target(target: torch.Tensor, pyramid: PyramidConfig, stage: int) -> torch.Tensor:
    """The teacher's sample brought down to ``stage`` (natural amplitude ``D`` per stage)."""
    for _ in range(stage):
        target = pyramid.resize.down(target)
    return target


def first_stage(levels: list[list[float]]) -> int:
    """The stage (0 = full resolution) where a coarsest-first list of per-stage steps starts."""
    return active_stages([len(r) for r in levels])[0][0]


def teacher_sampler(loop) -> tuple[PyramidConfig, tuple[int, ...], float | list[float]]:
    """The teacher's pyramid, schedule and shift (its pyramid.json defaults unless the recipe sets a schedule)."""
    spec = loop.teacher.spec if loop.teacher is not None else loop.base.pyramid
    pyramid = spec.config() if spec is not None else PyramidConfig(num_stages=1)
    schedule = loop.recipe.distill.teach_schedule or (spec.sampling.schedule if spec is not None else "50")
    shift = spec.sampling.shift if spec is not None else 3.0
    return pyramid, parse_schedule(schedule, pyramid.num_stages, key="distill.teach_schedule"), shift


def compute(loop, real_velocity: RealVelocity) -> TeachPairs:
    """Draw the noise and captions (the same on every rank) and sample this rank's share of the pairs.

    Pair ``j`` is sampled by rank ``j mod world`` in batches of ``train.batch_size``, with its own noise
    generator, so a pair's target does not depend on the batch size or the number of processes. Returns
    the pairs whose targets this rank sampled (``target`` rows for the others are left out).
    """
    recipe, device, ctx = loop.recipe, loop.ctx.device, loop.ctx
    n = recipe.distill.teach_pairs
    full = loop.stage_latents[0]
    z = torch.randn((n, 16, *full), generator=generator(recipe.seed, "teach-noise"))
    order = torch.randperm(len(loop.data), generator=generator(recipe.seed, "teach-items"))
    texts = [loop.data.text(int(order[j % len(order)])) for j in range(n)]
    t_pyramid, steps, shift = teacher_sampler(loop)
    t_first = active_stages(steps)[0][0]
    mine, targets = list(range(ctx.rank, n, ctx.world)), []
    label = f"distill: teacher videos for L_teach ({'-'.join(map(str, steps))} steps each)"
    with progress_bar(label, len(mine), enabled=ctx.rank == 0) as advance:
        for start in range(0, len(mine), recipe.train.batch_size):
            batch = mine[start:start + recipe.train.batch_size]
            text = pad_texts([texts[j] for j in batch]).to(device)
            noise = couple_down(z[batch], t_pyramid, t_first).to(device)
            velocity = lambda x, s, text=text: real_velocity(x, s, text)  # noqa: E731
            gens = [generator(recipe.seed, "teach-sampler", j) for j in batch]
            with torch.no_grad():
                targets.append(sample_multistep(velocity, noise, t_pyramid, steps, shift, gens).float().cpu())
            advance(len(batch))
    student = couple_down(z, loop.pyramid, first_stage(loop.levels))
    return TeachPairs(student, texts, torch.cat(targets) if targets else torch.zeros(0, 16, *full))


def gather_targets(pairs: TeachPairs, world: int) -> TeachPairs:
    """Collective: every rank's share of the targets, put back in pair order (rank r holds pairs r, r + world, ...)."""
    parts = dist.gather(pairs.target)
    target = torch.empty((len(pairs.text), *parts[0].shape[1:]), dtype=parts[0].dtype)
    for rank, part in enumerate(parts):
        target[rank::world] = part
    return TeachPairs(pairs.student_noise, pairs.text, target)


def make_teach_pairs(loop, run_dir: Path, real_velocity: RealVelocity, reuse: bool) -> TeachPairs:
    """Collective: the run's teacher pairs; ``reuse``: read them from ``run_dir`` when a previous start of
    this run (same recipe, resumed) wrote them. ``real_velocity(x, sigma_nat, text)``: the guided teacher.
    Every rank samples its share; rank 0 writes the file."""
    path = run_dir / FILE
    if dist.broadcast(reuse and path.is_file() if loop.ctx.rank == 0 else None):
        saved = load_file(str(path))
        return TeachPairs(saved["student_noise"], [saved[f"text.{j}"] for j in range(len(saved["target"]))],
                          saved["target"])
    if loop.ctx.rank == 0:
        console.print(f"distill: sampling {loop.recipe.distill.teach_pairs} teacher videos for L_teach (once per run, "
                      f"kept in {path})", markup=False)
    pairs = gather_targets(compute(loop, real_velocity), loop.ctx.world)
    if loop.ctx.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({"student_noise": pairs.student_noise.contiguous(), "target": pairs.target.contiguous(),
                       **{f"text.{j}": t.contiguous() for j, t in enumerate(pairs.text)}}, str(tmp))
    return pairs
