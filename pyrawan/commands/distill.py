"""``pyrawan distill``: step distillation of a pyramidal model into a few-step one (e.g. 2-2-1).

This module is the run around the method's loop: recipe checks, the models (generator, critic,
frozen teacher), checkpoints, export and the summary. The loop's state and the shared start of every
iteration (backward simulation, L_teach, the generator's step) are ``distill_loop.py``. One iteration
of each method is written out in its own module:
``distill_dmd.py`` (DMD: fake score + generator, with the optional GAN heads of ``distill.gan``) and
``distill_adv.py`` (adversarial: discriminator heads + generator). ``distill.method: decoder`` is a run of
its own, ``distill_decoder.py`` (a tiny video decoder from the VAE). The math is in ``pyrawan/train/dmd.py``,
``pyrawan/train/adversarial.py`` and ``pyrawan/train/gan.py``, the choices in docs/distill.md.

Both trained models are engines with their own optimiser under one engine kind (single, DDP,
DeepSpeed). Checkpoints hold both engines, both optimisers, the generator's EMA, every rank's
generator states and the iteration; a killed run resumed with ``--resume`` ends bit-identical.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from pyrawan import dist
from pyrawan.commands import distill_decoder
from pyrawan.commands.common import console, resolve_device
from pyrawan.commands.distill_adv import adv_iteration_step, make_heads
from pyrawan.commands.distill_dmd import build_gan_heads, dmd_iteration_step
from pyrawan.commands.distill_loop import LOGGED, Loop, real_velocity
from pyrawan.errors import InputError
from pyrawan.manifest import write_manifest
from pyrawan.outputs import artifact_dir, check_output
from pyrawan.models.pyramid_spec import Distilled, PyramidSpec
from pyrawan.recipe import DistillRecipe
from pyrawan.train.curves import plot_curves, read_records, short
from pyrawan.train.data import LatentSource, StageDataset, split_holdout
from pyrawan.train.distill_config import Distill, gan_on, separate_teacher, student_levels
from pyrawan.train.engine import Context, Ema, EngineSpec, make_engine
from pyrawan.train.metrics import MetricsLog, progress
from pyrawan.train.model import Base, Frozen, build_student, export_model, frozen_copy, load_frozen, trainable_copy
from pyrawan.train.run import (Trainable, ema_state, interrupted, restore_checkpoint, run_folder, save_checkpoint,
                               teardown)
from pyrawan.train.source import PromptSource, data_size, start_run
from pyrawan.train.teach import make_teach_pairs

RESUMABLE_CHANGES = ("train.steps", "train.checkpoint.every", "train.checkpoint.keep")
def needs_teacher_pairs(d: Distill) -> bool:
    """Adversarial runs need the teacher pairs for L_rec or for their "real" samples."""
    return d.method == "adv" and (d.adv.lambda_rec > 0 or d.adv.real == "teacher")


def check_recipe(recipe: DistillRecipe, out: Path, overwrite: bool, need_data: bool) -> None:
    """Rules that need several sections, the data and the output folder, before anything loads."""
    d, data, problems = recipe.distill, recipe.data, []
    if need_data and data.root is None and data.cache is None and data.prompts is None:
        problems.append("no prompts: set data.prompts (a text file, one prompt per line), data.cache (a latent cache "
                        "from `pyrawan calibrate`, whose captions are the prompts) or data.root (a folder of videos and "
                        "captions)")
    if data.prompts is not None and (data.root is not None or data.cache is not None):
        problems.append(f"data.prompts = {data.prompts} and data.{'root' if data.root is not None else 'cache'} are "
                        "both set; give one source of prompts (set the other to null)")
    elif data.prompts is not None and needs_latents(d):
        problems.append(f"data.prompts = {data.prompts} gives prompts only, but {needs_latents(d)} needs real video "
                        "latents; set data.cache or data.root instead")
    lora = recipe.train.lora.enabled
    if d.method == "dmd" and d.variant in ("pt", "ptstar") and not lora:
        console.print(f"distill: note: distill.variant = {d.variant} with train.lora.enabled = false; the paper trains "
                      "LoRA adapters for PT and PT* to prevent divergence.", style="yellow", markup=False)
    if problems:
        raise InputError("distill recipe: " + "; ".join(problems) + ".")
    check_output(out, overwrite, inputs=[recipe.base, d.teacher, data.root, data.cache, data.prompts], kind="distill")
    if need_data and data_size(recipe) == 0:
        raise InputError(f"distill: the data ({data.prompts or data.cache or data.root}) holds no item, so there are "
                         "no prompts; add prompts or videos.")


def needs_latents(d: Distill) -> str | None:
    """What in the recipe reads the data's video latents (None: prompts are enough)."""
    if d.method == "decoder":
        return "distill.method = decoder (the VAE decodes the cache's latents as the tiny decoder's targets)"
    if gan_on(d):
        return "the GAN term (distill.gan.weight > 0)"
    if d.method == "adv" and d.adv.real != "teacher":
        return "adversarial distillation with distill.adv.real = data"
    return None


def prompt_items(source: LatentSource, holdout: int) -> list[int]:
    """The items distill draws prompts from: all but the last ``train.validation.holdout`` of a latent cache (kept
    out for evaluation), or every item when the data is not larger than that, or comes from data.prompts."""
    if isinstance(source, PromptSource) or len(source) <= holdout:
        if not isinstance(source, PromptSource) and holdout:
            console.print(f"distill: note: the data has {len(source)} item(s), not more than train.validation.holdout "
                          f"= {holdout}; all are used as prompts (distill runs no validation).", markup=False)
        return list(range(len(source)))
    return split_holdout(source, holdout)[0]


# ---- the run -------------------------------------------------------------------------------------

def build_models(recipe: DistillRecipe, base: Base, ctx: Context) -> tuple[Trainable, Trainable, Frozen | None]:
    """Generator (the base with LoRA or in full), critic and frozen teacher.

    The critic is the fake score (dmd: a trainable copy of the teacher) or the discriminator heads (adv:
    on the frozen teacher's features). The teacher is ``distill.teacher``, else the base: a frozen copy,
    or, for a LoRA student, the student itself with its adapters disabled (no copy).
    """
    d, t = recipe.distill, recipe.train
    dtype = torch.bfloat16 if ctx.bf16 else torch.float32
    teacher = None
    if d.teacher is not None and d.teacher != recipe.base:
        teacher = load_frozen(d.teacher, ctx.device, dtype)
        check_teacher(recipe, teacher)
    elif separate_teacher(recipe):     # adv always: its loss backpropagates through the backbone, adapters must stay off
        teacher = Frozen(frozen_copy(base.transformer, dtype), base.pyramid, [])
    if teacher is not None and d.method == "adv" and t.gradient_checkpointing:
        teacher.transformer.enable_gradient_checkpointing()    # frozen weights: recompute is safe and saves memory
    backbone = teacher.transformer if teacher is not None else base.transformer
    if d.method == "adv":
        critic, prefix, optimizer, clip = make_heads(d.adv, backbone), "discriminator-", d.adv.optimizer, d.adv.max_grad_norm
    else:
        critic, prefix = trainable_copy(backbone, t.gradient_checkpointing), "fake_score-"
        optimizer, clip = d.fake_score.optimizer, d.fake_score.max_grad_norm
    student = build_student(base, t.model_copy(update={"align_weight": 0.0}), recipe.seed, ctx.bf16)
    gen_engine = make_engine(student, EngineSpec.of(t, prefix="generator-", steps=max(1, t.steps // d.generator_every)),
                             ctx, 1)
    critic_spec = EngineSpec.of(t, prefix=prefix, optimizer=optimizer, max_grad_norm=clip, lora=False)
    ema = Ema(gen_engine.named, t.ema.decay, t.ema.start_step) if t.ema.enabled else None
    return Trainable(gen_engine, ema), Trainable(make_engine(critic, critic_spec, ctx, 1)), teacher


def check_teacher(recipe: DistillRecipe, teacher: Frozen) -> None:
    """PT and PT* re-noise pyramidally: their teacher must be a pyramidal model."""
    d = recipe.distill
    if d.method == "dmd" and d.variant in ("pt", "ptstar") and (teacher.spec is None or teacher.spec.num_stages == 1):
        raise InputError(f"distill.variant = {d.variant} needs a pyramidal teacher, but distill.teacher = "
                         f"'{d.teacher}' is a plain one-stage model; use variant ot for it, or a pyramidal teacher "
                         "(e.g. the finetuned model, or teacher: null for the base).")


def distilled_pyramid(recipe: DistillRecipe, spec: PyramidSpec, levels: list[list[float]]) -> PyramidSpec:
    """The student's ``pyramid.json``: few-step defaults (no guidance) and how it was distilled."""
    d = recipe.distill
    sampling = spec.sampling.model_copy(update={"schedule": d.schedule, "fewstep_levels": levels, "guidance": 1.0})
    variant = f"adv-{d.adv.backbone}" if d.method == "adv" else d.variant
    info = Distilled(method=d.method, variant=variant, schedule=d.schedule, levels=levels,
                     teacher=d.teacher or recipe.base, teacher_guidance=d.guidance, steps=recipe.train.steps)
    return spec.model_copy(update={"sampling": sampling, "distilled": info})


def run(recipe: DistillRecipe, out: Path, resume: bool = False, overwrite: bool = False,
        source: LatentSource | None = None, show_progress: bool = True) -> Path:
    """Distill ``recipe.base`` into the few-step model artifact ``out``. ``source`` replaces the data (tests)."""
    started = time.time()
    check_recipe(recipe, out, overwrite, need_data=source is None)
    if recipe.distill.method == "decoder":
        return distill_decoder.run(recipe, out, resume, overwrite, source, show_progress, started)
    run = start_run("distill", recipe, out, resolve_device(recipe.device), resume, overwrite, source, RESUMABLE_CHANGES)
    ctx, resolved, found, base, source, cache_folder, pyramid = (run.ctx, run.resolved, run.found, run.base, run.source,
                                                                  run.cache_folder, run.pyramid)
    run_dir = run_folder(out)
    levels = student_levels(recipe.distill, pyramid.num_stages)
    generator_, critic, teacher = build_models(recipe, base, ctx)
    train_idx = prompt_items(source, recipe.train.validation.holdout)
    loop = Loop(recipe, ctx, generator_, critic, teacher, pyramid, levels, StageDataset(source, train_idx, pyramid),
                base, teach=None, out=out)
    if gan_on(recipe.distill):
        loop.gan = build_gan_heads(recipe, critic, ctx, pyramid)
    if recipe.distill.teach_weight > 0 or needs_teacher_pairs(recipe.distill):
        loop.teach = make_teach_pairs(loop, run_dir, lambda x, s, text: real_velocity(loop, x, s, text),
                                      reuse=found is not None)
    if found is not None:
        loop.iteration = restore_checkpoint("distill", Path(found), loop.trainables, ctx)["iteration"]
    loop.log = MetricsLog(run_dir, ctx.rank == 0, resume_step=loop.iteration if found is not None else None)
    try:
        train_loop(loop, resolved, show_progress and ctx.rank == 0)
    except KeyboardInterrupt:
        raise interrupted(out, loop.iteration, recipe.train.checkpoint.every) from None
    export(loop, out, overwrite, resolved, cache_folder, started)
    if ctx.rank == 0:
        summarise(loop.log.path, out)
    teardown(loop.trainables, loop.log.close)
    return out


def train_loop(loop: Loop, resolved: dict, show_progress: bool) -> None:
    """Iterations from ``loop.iteration`` to ``train.steps``: step, log, checkpoint."""
    t = loop.recipe.train
    every = t.checkpoint.every
    step = adv_iteration_step if loop.recipe.distill.method == "adv" else dmd_iteration_step
    with progress(t.steps, loop.iteration, show_progress, label="distill") as update:
        while loop.iteration < t.steps:
            tick = time.perf_counter()
            record = step(loop)
            loop.iteration += 1
            record["seconds"] = round(time.perf_counter() - tick, 4)
            loop.log.log(record)
            update(record.get("fake_loss", record.get("disc_loss", 0.0)))
            if every and (loop.iteration % every == 0 or loop.iteration == t.steps):
                save_checkpoint(run_folder(loop.out), loop.iteration, loop.trainables, loop.ctx, resolved,
                                {"iteration": loop.iteration}, t.checkpoint.keep)


def export(loop: Loop, out: Path, overwrite: bool, resolved: dict, cache_folder: Path | None, started: float) -> None:
    """Write the few-step model artifact (rank 0) after gathering the generator's weights (collective)."""
    state = loop.generator.engine.full_state_dict()
    if loop.ctx.rank == 0:
        state = ema_state(state, loop.generator)
        loop.base.pyramid = distilled_pyramid(loop.recipe, loop.base.pyramid, loop.levels)
        teacher_inputs = loop.teacher.inputs if loop.teacher is not None else []
        inputs = loop.base.inputs + teacher_inputs + ([cache_folder] if cache_folder else [])
        dtype = torch.bfloat16 if loop.recipe.dtype == "bfloat16" else torch.float32
        with artifact_dir(out, overwrite=overwrite) as tmp:
            export_model(tmp, loop.base, state, loop.recipe.train, dtype)
            shutil.copyfile(loop.log.path, tmp / "metrics.jsonl")
            metrics = {"iterations": loop.iteration, "generator_steps": loop.generator_steps(),
                       "world_size": loop.ctx.world, "engine": loop.ctx.kind, "schedule": loop.recipe.distill.schedule,
                       "forwards_per_video": loop.total_steps, "seconds": round(time.time() - started, 3)}
            write_manifest(tmp, "distill", resolved, inputs, metrics, started)
        console.print(f"distill: wrote [bold]{out}[/] ({loop.iteration} iterations, "
                      f"{loop.generator_steps()} generator steps, schedule {loop.recipe.distill.schedule})")
    dist.barrier()


def summarise(metrics: Path, out: Path) -> None:
    """Print the last losses and where the curves are; write ``curves.png`` in the run folder."""
    png = plot_curves(metrics, metrics.parent / "curves.png",
                      [("train", "fake_loss", "fake-score loss"), ("train", "gen_loss", "generator DMD loss"),
                       ("train", "w_dmd", "w_dmd"), ("train", "teach_loss", "L_teach"),
                       ("train", "disc_loss", "discriminator hinge loss"), ("train", "adv_loss", "generator adv. loss"),
                       ("train", "rec_loss", "L_rec"), ("train", "cls_loss", "GAN heads' classification loss"),
                       ("train", "gan_loss", "generator GAN loss")], f"distill {out.name}")
    records = [r for r in read_records(metrics) if r.get("kind") == "train"]
    if records:
        last = {key: next((r[key] for r in reversed(records) if r.get(key) is not None), None) for key in LOGGED}
        shown = ", ".join(f"{key} {short(value)}" for key, value in last.items() if value is not None)
        console.print(f"distill: {records[-1]['step']} iterations; last {shown}", markup=False)
    console.print(f"  curves: {png or 'none'}; metrics: {metrics}", markup=False)


def dry_run(recipe: DistillRecipe) -> dict:
    """Print the memory plan (generator, fake score, teacher, both optimisers) without loading weights."""
    import os

    from pyrawan.train.plan import distill_plan, render

    plan, lines = distill_plan(recipe, int(os.environ.get("WORLD_SIZE", 1)))
    if dist.world()[0] == 0:
        render(plan, lines)
    return plan
