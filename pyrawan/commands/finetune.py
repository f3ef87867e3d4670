"""``pyrawan finetune``: pyramidal flow matching on one process, torchrun (DDP) or DeepSpeed, with exact resume.

The training loop is written out here, plainly: per optimiser step, per micro-step and per stage
group (coarsest first) one forward and backward, then one optimiser step. Checkpoints, the data
order and the noise make a killed run that is resumed end with the same weights as an
uninterrupted one. Run state lives in ``OUT.run/`` (checkpoints, metrics.jsonl, tensorboard/);
the finished model is the artifact ``OUT``.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pyrawan import dist
from pyrawan.commands.common import console, resolve_device
from pyrawan.errors import InputError
from pyrawan.manifest import write_manifest
from pyrawan.outputs import artifact_dir, check_output
from pyrawan.models.pyramid_spec import PyramidSpec, define_pyramid
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.recipe import FinetuneRecipe
from pyrawan.train.config import train_problems
from pyrawan.train.curves import plot_curves, read_records, short
from pyrawan.train.data import LatentSource, StageDataset, split_holdout, train_batch, validation_batches
from pyrawan.train.engine import Context, Ema, EngineSpec, TorchEngine, lr_at, make_engine
from pyrawan.train.loss import (Alignment, full_resolution_alignment, predict, same_input_alignment,
                                stage_losses)
from pyrawan.train.metrics import MetricsLog, progress
from pyrawan.train.model import Base, build_student, export_model
from pyrawan.train.run import (Trainable, describe_nonfinite, ema_state, interrupted, nonfinite, restore_checkpoint,
                               run_folder, save_checkpoint, teardown)
from pyrawan.train.source import data_size, start_run

# Keys that may change between a run and its resume (everything else must match the checkpoint).
RESUMABLE_CHANGES = ("train.steps", "train.checkpoint.every", "train.checkpoint.keep", "train.validation.every")


@dataclass
class Loop:
    """Everything the training loop touches."""

    recipe: FinetuneRecipe
    ctx: Context
    engine: TorchEngine
    pyramid: PyramidConfig
    data: StageDataset
    held_out: StageDataset
    base: Base
    log: MetricsLog
    ema: Ema | None = None
    align: Alignment | None = None                   # the alignment loss to the frozen base (train.align_form)
    out: Path = Path("runs/finetune")
    step: int = 0
    consumed: int = 0              # global micro-batches drawn so far (the data position)
    validated: set = field(default_factory=set)

    @property
    def patch(self) -> tuple[int, int, int]:
        return tuple(self.base.config["patch_size"])

    @property
    def trainable(self) -> Trainable:
        return Trainable(self.engine, self.ema)


def check_recipe(recipe: FinetuneRecipe, out: Path, overwrite: bool, need_data: bool) -> None:
    """Rules that need several sections, the data and the output folder, before anything loads."""
    problems = [m for _, m in train_problems(recipe.train, recipe.pyramid.stages)]
    data, holdout = recipe.data, recipe.train.validation.holdout
    if data.prompts is not None:
        problems.append(f"data.prompts = {data.prompts} is read by distill only; finetune trains on videos: set "
                        "data.prompts=null and data.root or data.cache")
    elif need_data and data.root is None and data.cache is None:
        problems.append("no training data: set data.root (a folder of videos and captions, cached on the fly) or "
                        "data.cache (a latent cache folder written by `pyrawan calibrate`)")
    if problems:
        raise InputError("finetune recipe: " + "; ".join(problems) + ".")
    check_output(out, overwrite, inputs=[recipe.base, recipe.data.root, recipe.data.cache], kind="finetune")
    size = data_size(recipe) if need_data else None      # before any model loads or video is encoded
    if size is not None and size - holdout < 1:
        raise InputError(f"finetune: the data ({data.cache or data.root}) has {size} item(s) but "
                         f"train.validation.holdout = {holdout} holds out {holdout}, leaving nothing to train on; set "
                         f"train.validation.holdout={max(size // 8, 0)} (or lower) or add data.")


def make_alignment(loop: Loop) -> Alignment | None:
    """The alignment loss to the frozen base in ``train.align_form``, or None when it is off (``align_weight`` 0)."""
    train = loop.recipe.train
    if train.align_weight == 0:
        return None
    if train.align_form == "full-resolution":
        return full_resolution_alignment(make_teacher(loop), loop.pyramid, loop.recipe.seed)
    return same_input_alignment(make_teacher(loop))


def make_teacher(loop: Loop):
    """``teacher(x, sigma_nat, text)`` -> the frozen base velocity (no graph)."""
    train, engine = loop.recipe.train, loop.engine
    if train.lora.enabled:
        module = engine.module

        def without_adapters(x, sigma, text):
            module.disable_adapters()
            try:
                return predict(module, x, sigma, text, engine.input_dtype)
            finally:
                module.enable_adapters()
        return without_adapters
    teacher = loop.base.teacher.to(loop.ctx.device)
    dtype = getattr(teacher, "dtype", torch.float32)                   # diffusers: skips the fp32-kept modules
    return lambda x, sigma, text: predict(teacher, x, sigma, text, dtype)


def validate(loop: Loop) -> list[float]:
    """Mean flow-matching loss per stage (index = stage) on the held-out items, fixed noise and levels."""
    val, engine, module = loop.recipe.train.validation, loop.engine, loop.engine.module
    losses = []
    module.eval()
    with torch.no_grad(), engine.autocast():
        for stage in range(loop.pyramid.num_stages):
            total, count = 0.0, 0
            for batch in validation_batches(loop.held_out, stage, val.levels, loop.recipe.seed, val.batch_size):
                mse, _ = stage_losses(module, batch, loop.pyramid, loop.patch, loop.ctx.device, engine.input_dtype,
                                      process=loop.recipe.train.process)
                total, count = total + float(mse.sum()), count + len(mse)
            losses.append(total / count)
    module.train()
    return losses


def train_step(loop: Loop) -> dict:
    """One optimiser step over ``grad_accum`` micro-steps x stage groups. Returns the step's record."""
    t, ctx, engine, stages = loop.recipe.train, loop.ctx, loop.engine, loop.pyramid.num_stages
    split = t.split(stages)
    groups = [stages - 1 - k for k, n in enumerate(split) if n]           # stages with samples, coarsest first
    micro = [(a, stage) for a in range(t.grad_accum) for stage in groups]
    lr = lr_at(loop.step, t)
    engine.set_lr(lr)
    sums = torch.zeros(2 * stages + 1, dtype=torch.float64)             # mse sums, counts, align sum
    items = []
    for k, (a, stage) in enumerate(micro):
        last = k == len(micro) - 1
        g = loop.consumed + a * ctx.world + ctx.rank
        batch = train_batch(loop.data, g, stage, split, t.batch_size, loop.recipe.seed, t.cfg_dropout,
                            loop.base.empty_text, t.level_shift)
        with engine.micro_step(last):
            with engine.autocast():
                mse, align = stage_losses(engine.model, batch, loop.pyramid, loop.patch, ctx.device,
                                          engine.input_dtype, loop.align, t.process)
                objective = mse.sum() + (t.align_weight * align.sum() if align is not None else 0.0)
            engine.backward(objective / (t.batch_size * t.grad_accum), last)
        items += [loop.data.name(j) for j, ok in zip(batch.items, torch.isfinite(mse.detach()).tolist()) if not ok]
        sums[stage] += float(mse.detach().sum())
        sums[stages + stage] += len(mse)
        sums[-1] += float(align.detach().sum()) if align is not None else 0.0
    sums = dist.all_reduce_sum(sums.to(ctx.device)).cpu()
    finite = bool(torch.isfinite(sums).all())
    norm, applied = engine.step(skip=not finite, max_norm=t.max_grad_norm)
    loss = float(sums[:stages].sum() / sums[stages:2 * stages].sum())
    if not (finite and math.isfinite(norm)):
        _nonfinite(loop, loss, norm, items)
    elif applied and loop.ema is not None:
        loop.ema.update(loop.step + 1)
    per_stage = [float(sums[s] / sums[stages + s]) if sums[stages + s] else None for s in range(stages)]
    return {"kind": "train", "step": loop.step + 1, "loss": loss, "loss_stage": per_stage, "lr": lr,
            "grad_norm": norm, "skipped": not applied,
            "align": float(sums[-1] / sums[stages:2 * stages].sum()) if t.align_weight > 0 else None}


def _nonfinite(loop: Loop, loss: float, norm: float, items: list[str]) -> None:
    """Stop (keeping the last good checkpoint) or report a skipped step, by ``train.on_nonfinite``."""
    nonfinite("finetune", run_folder(loop.out), loop.step + 1, describe_nonfinite(loss, norm), items, loop.ctx.rank,
              loop.recipe.train.on_nonfinite, "check those items' latents, lower train.optimizer.lr or "
              "train.max_grad_norm, or set train.on_nonfinite: skip to skip such steps.")


def save(loop: Loop, resolved: dict) -> None:
    """Collective: checkpoint ``loop.step`` (model, optimiser, EMA, RNG, data position)."""
    save_checkpoint(run_folder(loop.out), loop.step, [loop.trainable], loop.ctx, resolved,
                    {"consumed": loop.consumed}, loop.recipe.train.checkpoint.keep)


def maybe_validate(loop: Loop) -> None:
    every = loop.recipe.train.validation.every
    due = loop.step == 0 or loop.step == loop.recipe.train.steps or (every and loop.step % every == 0)
    if not every or not due or loop.step in loop.validated or not len(loop.held_out):
        return
    per_stage = validate(loop)
    loop.validated.add(loop.step)
    loop.log.log({"kind": "validation", "step": loop.step, "val_loss": sum(per_stage) / len(per_stage),
                  "val_loss_stage": per_stage})


def export(loop: Loop, out: Path, overwrite: bool, resolved: dict, cache_folder: Path | None, started: float) -> None:
    """Write the finetuned model artifact (rank 0) after gathering the weights (collective)."""
    state = loop.engine.full_state_dict()
    if loop.ctx.rank == 0:
        state = ema_state(state, loop.trainable)
        inputs = loop.base.inputs + ([cache_folder] if cache_folder else [])       # the cache: artifact or data
        dtype = torch.bfloat16 if loop.recipe.dtype == "bfloat16" else torch.float32
        if loop.recipe.train.process == "multires":
            loop.base.pyramid = plain_pyramid(loop.recipe)
        with artifact_dir(out, overwrite=overwrite) as tmp:
            export_model(tmp, loop.base, state, loop.recipe.train, dtype)
            shutil.copyfile(loop.log.path, tmp / "metrics.jsonl")
            records = [r for r in map(json.loads, loop.log.path.read_text().splitlines()) if r.get("kind") == "validation"]
            metrics = {"steps": loop.step, "world_size": loop.ctx.world, "engine": loop.ctx.kind,
                       "seconds": round(time.time() - started, 3), "val_loss_stage_first": records[0]["val_loss_stage"]
                       if records else None, "val_loss_stage_last": records[-1]["val_loss_stage"] if records else None}
            write_manifest(tmp, "finetune", resolved, inputs, metrics, started)
        console.print(f"finetune: wrote [bold]{out}[/] ({loop.step} steps)")
    dist.barrier()


def plain_pyramid(recipe: FinetuneRecipe) -> PyramidSpec:
    """The ``pyramid.json`` of a multi-resolution finetune: a plain one-stage model (full-resolution defaults)."""
    one = recipe.pyramid.model_copy(update={"stages": 1, "boundaries": None})
    shift = recipe.stage_shifts()[-1]                   # the full-resolution stage's (the last, coarsest first)
    sampling = recipe.sampling.model_copy(update={"schedule": "50", "fewstep_levels": None, "shift": shift})
    return define_pyramid(recipe.model_copy(update={"pyramid": one, "sampling": sampling}), None)


def run(recipe: FinetuneRecipe, out: Path, resume: bool = False, overwrite: bool = False,
        source: LatentSource | None = None, show_progress: bool = True) -> Path:
    """Finetune ``recipe.base`` into the model artifact ``out``. ``source`` replaces the recipe's data (tests)."""
    started = time.time()
    check_recipe(recipe, out, overwrite, need_data=source is None)
    run = start_run("finetune", recipe, out, resolve_device(recipe.device), resume, overwrite, source, RESUMABLE_CHANGES)
    ctx, resolved, found, base, source, cache_folder, pyramid = (run.ctx, run.resolved, run.found, run.base, run.source,
                                                                  run.cache_folder, run.pyramid)
    train_idx, held_idx = split_holdout(source, recipe.train.validation.holdout)
    student = build_student(base, recipe.train, recipe.seed, ctx.bf16)
    groups = sum(1 for n in recipe.train.split(pyramid.num_stages) if n)
    engine = make_engine(student, EngineSpec.of(recipe.train), ctx, recipe.train.grad_accum * groups)
    ema_cfg = recipe.train.ema
    loop = Loop(recipe, ctx, engine, pyramid, StageDataset(source, train_idx, pyramid),
                StageDataset(source, held_idx, pyramid), base, log=None, out=out,
                ema=Ema(engine.named, ema_cfg.decay, ema_cfg.start_step) if ema_cfg.enabled else None)
    loop.align = make_alignment(loop)
    if found is not None:
        state = restore_checkpoint("finetune", Path(found), [loop.trainable], ctx)
        loop.step, loop.consumed, loop.validated = state["step"], state["consumed"], {state["step"]}
    loop.log = MetricsLog(run_folder(out), ctx.rank == 0, resume_step=loop.step if found is not None else None)
    try:
        train_loop(loop, resolved, show_progress and ctx.rank == 0)
    except KeyboardInterrupt:
        raise interrupted(out, loop.step, recipe.train.checkpoint.every) from None
    export(loop, out, overwrite, resolved, cache_folder, started)
    if ctx.rank == 0:
        summarise(loop.log.path, out)
    teardown([loop.trainable], loop.log.close)
    del loop
    return out


def summarise(metrics: Path, out: Path) -> None:
    """Print final and validation losses and where the curves are; write ``curves.png`` in the run folder."""
    png = plot_curves(metrics, metrics.parent / "curves.png",
                      [("train", "loss", "train loss"), ("validation", "val_loss", "validation loss"),
                       ("train", "grad_norm", "gradient norm")], f"finetune {out.name}")
    records = read_records(metrics)
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "validation"]
    lines = [f"finetune: {train[-1]['step']} steps, final train loss {short(train[-1]['loss'])}" if train else
             "finetune: no training step was logged"]
    if val:
        lines.append(f"  validation loss per stage: {short(val[0]['val_loss_stage'])} (step {val[0]['step']}) -> "
                     f"{short(val[-1]['val_loss_stage'])} (step {val[-1]['step']})")
    board = metrics.parent / "tensorboard"
    lines.append(f"  curves: {png or 'none'}; metrics: {metrics}" + (f"; TensorBoard: {board}" if board.is_dir() else ""))
    for line in lines:
        console.print(line, markup=False)


def train_loop(loop: Loop, resolved: dict, show_progress: bool) -> None:
    """Steps from ``loop.step`` to ``train.steps``: validate, step, log, checkpoint."""
    t = loop.recipe.train
    every = t.checkpoint.every
    maybe_validate(loop)
    with progress(t.steps, loop.step, show_progress) as update:
        while loop.step < t.steps:
            tick = time.perf_counter()
            record = train_step(loop)
            loop.step, loop.consumed = loop.step + 1, loop.consumed + t.grad_accum * loop.ctx.world
            record["seconds"] = round(time.perf_counter() - tick, 4)
            loop.log.log(record)
            update(record["loss"])
            maybe_validate(loop)
            if every and (loop.step % every == 0 or loop.step == t.steps):
                save(loop, resolved)


def dry_run(recipe: FinetuneRecipe) -> dict:
    """Print the resolved plan: parameters, trainable parameters and memory per GPU (no weights load)."""
    from pyrawan.train.plan import plan_recipe, render

    problems = train_problems(recipe.train, recipe.pyramid.stages)
    if problems:
        raise InputError("finetune recipe: " + "; ".join(m for _, m in problems) + ".")
    plan, lines = plan_recipe(recipe, int(os.environ.get("WORLD_SIZE", 1)))
    if dist.world()[0] == 0:
        render(plan, lines)
    return plan
