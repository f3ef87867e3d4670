"""``pyrawan distill`` with ``distill.method: decoder``: a tiny video decoder distilled from the base's VAE.

The run (docs/decoder.md): the latent cache's full-resolution latents of the training items (and
``distill.decoder.variants - 1`` perturbed copies of each) are decoded once by the base model's VAE
into the run folder; then each iteration trains the TAEHV-style decoder (``pyrawan.models.tiny_decoder``)
on ``train.batch_size`` of those pairs with the pixel loss of ``pyrawan.train.decoder``. The decoder is
one engine (single, DDP, DeepSpeed) with the recipe's ``train:`` optimiser, checkpoints, EMA and
``--resume`` (bit-identical: the batch of iteration ``i`` is keyed on ``(seed, i)``); the held-out
items (``train.validation.holdout``) give the validation PSNR. The result is a model artifact: the base
model (referenced, not copied) plus ``decoder/`` (``config.json``, ``decoder.safetensors``), so
``pyrawan sample --model OUT --decoder tiny`` uses it.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pyrawan import dist
from pyrawan.commands.common import console, resolve_device
from pyrawan.errors import InputError
from pyrawan.manifest import write_manifest
from pyrawan.models.presets import seeded
from pyrawan.models.tiny_decoder import DECODER_DIR, TinyDecoder, TinyDecoderConfig, save_folder, vae_statistics
from pyrawan.models.vae import decode_latents
from pyrawan.outputs import artifact_dir
from pyrawan.recipe import DistillRecipe
from pyrawan.train.curves import plot_curves, read_records, short
from pyrawan.train.data import LatentSource, position_item, split_holdout
from pyrawan.train.decoder import (TARGETS_FILE, DecoderPairs, compute_pairs, decoder_loss, foreground, load_pairs,
                                   psnr, save_pairs, variant_latent)
from pyrawan.train.engine import Context, Ema, EngineSpec, lr_at, make_engine
from pyrawan.train.metrics import MetricsLog, progress
from pyrawan.train.model import Base
from pyrawan.train.run import (Trainable, describe_nonfinite, ema_state, interrupted, nonfinite, restore_checkpoint,
                               run_folder, save_checkpoint, teardown)
from pyrawan.train.source import start_run
from pyrawan.ui import progress_bar

RESUMABLE_CHANGES = ("train.steps", "train.checkpoint.every", "train.checkpoint.keep")
LOGGED = ("loss", "l1", "grad_l1", "mse")


@dataclass
class DecoderLoop:
    """Everything one decoder iteration reads and advances."""

    recipe: DistillRecipe
    ctx: Context
    decoder: Trainable
    pairs: DecoderPairs
    train_rows: int                     # rows [0, train_rows) of ``pairs`` train; the rest are held out
    out: Path
    iteration: int = 0
    log: MetricsLog | None = None

    @property
    def module(self) -> TinyDecoder:
        return self.decoder.engine.module


# ---- the decoder and its data --------------------------------------------------------------------

def decoder_config(recipe: DistillRecipe, vae) -> TinyDecoderConfig:
    """The student's config: the recipe's widths, the VAE's factors and latent statistics."""
    d = recipe.distill.decoder
    space, time = int(vae.config.scale_factor_spatial), 2 ** sum(bool(t) for t in vae.config.temperal_downsample)
    if space not in (1, 2, 4, 8) or time != 2 ** sum(d.time_upscale):
        raise InputError(f"distill.method = decoder: the base's VAE has spatial factor {space} and temporal factor "
                         f"{time}, but the tiny decoder has three levels (spatial factor up to 8) and "
                         f"distill.decoder.time_upscale = {list(d.time_upscale)} gives {2 ** sum(d.time_upscale)}; set "
                         "time_upscale so that the doubled levels give the VAE's temporal factor.")
    levels = round(math.log2(space))
    return TinyDecoderConfig(latent_channels=int(vae.config.z_dim), channels=d.channels, time_upscale=d.time_upscale,
                             clamp=d.clamp,
                             space_upscale=(False,) * (3 - levels) + (True,) * levels, **vae_statistics(vae))


def training_latents(source: LatentSource, recipe: DistillRecipe) -> tuple[torch.Tensor, int]:
    """``(latents [N, 16, T, h, w], train rows)``: every variant of the training items, then the held-out items."""
    d, holdout = recipe.distill.decoder, recipe.train.validation.holdout
    train, held = split_holdout(source, holdout) if len(source) > holdout else (list(range(len(source))), [])
    rows = [variant_latent(source.latents(i)[0].float(), recipe.seed, i, v, d.perturb)
            for v in range(d.variants) for i in train]
    return torch.stack(rows + [source.latents(i)[0].float() for i in held]), len(rows)


def make_pairs(recipe: DistillRecipe, base: Base, source: LatentSource, ctx: Context,
               run_dir: Path) -> tuple[DecoderPairs, int]:
    """The VAE's targets of every training latent, computed on rank 0 (or read back when the run folder holds
    them for the same latents and VAE: a resume, or a rerun), on every rank."""
    from pyrawan.data.encode import vae_sha256

    path = run_dir / TARGETS_FILE
    latents, train_rows = training_latents(source, recipe)
    made_by = vae_sha256(base.components) if ctx.rank == 0 else None
    pairs = load_pairs(path, latents, made_by) if ctx.rank == 0 else None
    if ctx.rank == 0 and pairs is None:
        vae = base.components.vae.to(ctx.device)
        with progress_bar("decoder targets (VAE decode)", len(latents)) as advance:
            done = [0]

            def report(n: int) -> None:
                advance(n - done[0])
                done[0] = n
            pairs = compute_pairs(latents, lambda z: decode_latents(vae, z), recipe.distill.decoder.target_batch,
                                  report)
        base.components.vae = vae.cpu()
        run_dir.mkdir(parents=True, exist_ok=True)
        save_pairs(path, pairs, made_by)
    dist.barrier()
    if pairs is None:
        pairs = load_pairs(path, latents)
    return pairs, train_rows


def build_decoder(recipe: DistillRecipe, base: Base, ctx: Context) -> Trainable:
    """The seeded tiny decoder as an engine (prefix ``decoder-``) with its EMA when enabled."""
    config = dist.broadcast(decoder_config(recipe, base.components.vae) if ctx.rank == 0 else None)
    with seeded(recipe.seed):
        module = TinyDecoder(config).train()
    t = recipe.train
    engine = make_engine(module, EngineSpec.of(t, prefix="decoder-", lora=False), ctx, 1)
    ema = Ema(engine.named, t.ema.decay, t.ema.start_step) if t.ema.enabled else None
    return Trainable(engine, ema)


# ---- one iteration -------------------------------------------------------------------------------

def batch_rows(loop: DecoderLoop, iteration: int) -> list[int]:
    """This rank's training rows at ``iteration``: global sample ``g`` takes position ``g`` of the seeded epochs."""
    b, ctx = loop.recipe.train.batch_size, loop.ctx
    first = (iteration * ctx.world + ctx.rank) * b
    return [position_item(loop.train_rows, g, loop.recipe.seed) for g in range(first, first + b)]


def decoder_step(loop: DecoderLoop) -> dict:
    """One optimiser step of the decoder on this iteration's rows; the record of its losses (means over ranks)."""
    engine, d = loop.decoder.engine, loop.recipe.distill.decoder
    latents, target = loop.pairs.batch(batch_rows(loop, loop.iteration), loop.ctx.device)
    with engine.autocast():
        pred = engine.model(loop.module.raw_latents(latents))
    loss, parts = decoder_loss(pred.float(), target, d.gradient_weight, d.foreground_weight)
    engine.set_lr(lr_at(loop.iteration, engine.spec))
    engine.backward(loss, True)
    norm, applied = engine.step(skip=not math.isfinite(float(loss.detach())), max_norm=engine.spec.max_grad_norm)
    if applied and loop.decoder.ema is not None:
        loop.decoder.ema.update(loop.iteration + 1)
    record = {"kind": "train", "step": loop.iteration + 1, "loss": float(loss.detach()), **parts,
              "grad_norm": norm, "applied": applied, "lr": lr_at(loop.iteration, engine.spec)}
    return mean_over_ranks(loop, record)


def mean_over_ranks(loop: DecoderLoop, record: dict) -> dict:
    """The record's losses averaged over processes; a non-finite one stops the run (or skips, as configured)."""
    keys = [k for k in LOGGED if k in record]
    sums = dist.all_reduce_sum(torch.tensor([record[k] for k in keys], dtype=torch.float64).to(loop.ctx.device))
    record.update({k: float(v) / loop.ctx.world for k, v in zip(keys, sums.cpu())})
    if not all(math.isfinite(record[k]) for k in keys):
        nonfinite("distill", run_folder(loop.out), loop.iteration + 1,
                  describe_nonfinite(record["loss"], record["grad_norm"]), [], loop.ctx.rank,
                  loop.recipe.train.on_nonfinite, "lower train.optimizer.lr or raise train.max_grad_norm clipping.")
    return record


@torch.no_grad()
def held_out_scores(module: TinyDecoder, pairs: DecoderPairs, rows: list[int], device: torch.device,
                    size: int) -> dict | None:
    """``{val_l1, val_psnr, val_fg_psnr}`` of ``module`` on ``rows`` of ``pairs`` (clamped frames; ``fg``: the
    target's moving pixels, ``foreground``, where a toy video's objects are); None without rows."""
    if not rows:
        return None
    was_training = module.training
    module.eval()
    l1 = se = fg_se = fg_n = 0.0
    for start in range(0, len(rows), size):
        latents, target = pairs.batch(rows[start:start + size], device)
        frames = module(module.raw_latents(latents)).float().clamp(0, 1)
        l1 += float((frames - target).abs().mean()) * len(target)
        se += float(((frames - target) ** 2).mean()) * len(target)
        mask = foreground(target).expand_as(target)
        fg_se, fg_n = fg_se + float(((frames - target) ** 2 * mask).sum()), fg_n + float(mask.sum())
    module.train(was_training)
    return {"val_l1": l1 / len(rows), "val_psnr": psnr(se / len(rows)), "val_fg_psnr": psnr(fg_se / max(fg_n, 1.0))}


def validate(loop: DecoderLoop, module: TinyDecoder | None = None) -> dict | None:
    """The validation record of ``module`` (default: the trained decoder) on the held-out items' clean latents."""
    rows = list(range(loop.train_rows, len(loop.pairs)))
    scores = held_out_scores(module or loop.module, loop.pairs, rows, loop.ctx.device,
                             loop.recipe.train.validation.batch_size)
    return None if scores is None else {"kind": "validation", "step": loop.iteration, **scores}


# ---- the run -------------------------------------------------------------------------------------

def run(recipe: DistillRecipe, out: Path, resume: bool = False, overwrite: bool = False,
        source: LatentSource | None = None, show_progress: bool = True, started: float | None = None) -> Path:
    """Distill the base model's VAE decoder into a tiny decoder; the artifact ``out`` (base + ``decoder/``)."""
    started = started or time.time()
    start = start_run("distill", recipe, out, resolve_device(recipe.device), resume, overwrite, source,
                      RESUMABLE_CHANGES)
    ctx, run_dir = start.ctx, run_folder(out)
    decoder = build_decoder(recipe, start.base, ctx)
    pairs, train_rows = make_pairs(recipe, start.base, start.source, ctx, run_dir)
    loop = DecoderLoop(recipe, ctx, decoder, pairs, train_rows, out)
    if start.found is not None:
        loop.iteration = restore_checkpoint("distill", start.found, [decoder], ctx)["iteration"]
    loop.log = MetricsLog(run_dir, ctx.rank == 0, resume_step=loop.iteration if start.found is not None else None)
    try:
        train_loop(loop, start.resolved, show_progress and ctx.rank == 0)
    except KeyboardInterrupt:
        raise interrupted(out, loop.iteration, recipe.train.checkpoint.every) from None
    export(loop, start, overwrite, started)
    if ctx.rank == 0:
        summarise(loop.log.path, out)
    teardown([decoder], loop.log.close)
    return out


def train_loop(loop: DecoderLoop, resolved: dict, show_progress: bool) -> None:
    """Iterations from ``loop.iteration`` to ``train.steps``: step, log, validate, checkpoint."""
    t = loop.recipe.train
    every, val_every = t.checkpoint.every, t.validation.every
    with progress(t.steps, loop.iteration, show_progress, label="distill decoder") as update:
        while loop.iteration < t.steps:
            tick = time.perf_counter()
            record = decoder_step(loop)
            loop.iteration += 1
            record["seconds"] = round(time.perf_counter() - tick, 4)
            loop.log.log(record)
            update(record["loss"])
            if val_every and (loop.iteration % val_every == 0 or loop.iteration == t.steps):
                if (val := validate(loop)) is not None:
                    loop.log.log(val)
            if every and (loop.iteration % every == 0 or loop.iteration == t.steps):
                save_checkpoint(run_folder(loop.out), loop.iteration, [loop.decoder], loop.ctx, resolved,
                                {"iteration": loop.iteration}, t.checkpoint.keep)


def export(loop: DecoderLoop, start, overwrite: bool, started: float) -> None:
    """Rank 0: the model artifact: the base (components referenced) plus ``decoder/`` with the (EMA) weights."""
    from pyrawan.models.artifact import save_model

    state = loop.decoder.engine.full_state_dict()
    if loop.ctx.rank == 0:
        final = TinyDecoder(loop.module.config)
        final.load_state_dict(ema_state(state, loop.decoder), strict=True)
        val = validate(loop, final.to(loop.ctx.device))
        final.cpu()
        base = start.base
        inputs = base.inputs + ([start.cache_folder] if start.cache_folder else [])
        with artifact_dir(loop.out, overwrite=overwrite) as tmp:
            save_model(tmp, base.components, base.pyramid, changed=())
            save_folder(final, tmp / DECODER_DIR)
            shutil.copyfile(loop.log.path, tmp / "metrics.jsonl")
            metrics = {"iterations": loop.iteration, "world_size": loop.ctx.world, "engine": loop.ctx.kind,
                       "method": "decoder", "decoder_parameters": sum(p.numel() for p in final.parameters()),
                       "decoder_channels": list(final.config.channels), "training_pairs": loop.train_rows,
                       "seconds": round(time.time() - started, 3), **({k: round(v, 5) for k, v in val.items()
                                                                        if k.startswith("val_")} if val else {})}
            write_manifest(tmp, "distill", start.resolved, inputs, metrics, started)
        console.print(f"distill: wrote [bold]{loop.out}[/] (tiny decoder, {loop.iteration} iterations"
                      + (f", held-out PSNR {val['val_psnr']:.2f} dB" if val else "") + ")")
    dist.barrier()


def summarise(metrics: Path, out: Path) -> None:
    """Print the last losses and where the curves are; write ``curves.png`` in the run folder."""
    png = plot_curves(metrics, metrics.parent / "curves.png",
                      [("train", "loss", "loss (L1 + differences)"), ("train", "l1", "pixel L1"),
                       ("train", "grad_l1", "finite-difference L1"), ("validation", "val_psnr", "held-out PSNR (dB)"),
                       ("validation", "val_fg_psnr", "held-out PSNR of moving pixels (dB)")],
                      f"distill {out.name}")
    records = [r for r in read_records(metrics) if r.get("kind") == "train"]
    if records:
        shown = ", ".join(f"{k} {short(records[-1][k])}" for k in LOGGED if k in records[-1])
        console.print(f"distill: {records[-1]['step']} iterations; last {shown}", markup=False)
    console.print(f"  curves: {png or 'none'}; metrics: {metrics}", markup=False)
