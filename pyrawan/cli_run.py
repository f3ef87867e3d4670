"""Run commands that produce artifacts: ``convert``, ``sample``, ``eval flops``, ``eval latency``.

Thin typer functions: each parses options and hands over to its module in ``pyrawan.commands``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pyrawan.cli import RUN_PANEL, OutOpt, OverridesArg, OverwriteOpt, RecipeArg, app, eval_app, run_options
from pyrawan.errors import InputError

DEFAULT_MODEL = "toy"  # the built-in default model: the shipped toy-world teacher (docs/toy-world.md)


@app.command("convert", rich_help_panel=RUN_PANEL)
def convert(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    calibration: Annotated[Optional[Path], typer.Option(
        "--calibration", help="A `pyrawan calibrate` artifact whose boundaries replace pyramid.boundaries.")] = None,
    ppf: Annotated[bool, typer.Option(
        "--ppf", help="Pyramidal Patchification: one full-resolution model with a coarser patch per stage "
        "(same as pyramid.kind=ppf).")] = False,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Turn a pretrained Wan into a pyramidal model artifact (transformer + pyramid.json)."""
    from pyrawan.commands import convert as cmd

    overrides = [*(overrides or []), *(["pyramid.kind=ppf"] if ppf else [])]
    opts = run_options(recipe, overrides, "convert", out, overwrite)
    cmd.run(opts.recipe, opts.out, calibration=calibration, overwrite=opts.overwrite)


def _read_prompts(prompt: list[str] | None, prompts_file: Path | None) -> list[str]:
    """``--prompt`` values, then the non-empty lines of ``--prompts`` FILE."""
    from pyrawan.data.prompts import read_prompt_file

    return list(prompt or []) + (read_prompt_file(prompts_file) if prompts_file is not None else [])


@app.command("sample", rich_help_panel=RUN_PANEL)
def sample(
    overrides: OverridesArg = None,
    prompt: Annotated[Optional[list[str]], typer.Option("--prompt", "-p", help="Prompt (repeatable).")] = None,
    prompts_file: Annotated[Optional[Path], typer.Option("--prompts", help="Text file, one prompt per line.")] = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help=f"Model artifact folder, diffusers folder, hub id or preset [default: {DEFAULT_MODEL}].")] = None,
    recipe: Annotated[Optional[str], typer.Option("--recipe", "-r", help="Recipe whose base, video and sampling sections give the defaults.")] = None,
    negative_prompt: Annotated[Optional[str], typer.Option("--negative-prompt", help="Unconditional prompt for guidance.")] = None,
    schedule: Annotated[Optional[str], typer.Option("--schedule", help="Steps per stage, coarsest first (e.g. 20-20-10; 50 on a plain model).")] = None,
    guidance: Annotated[Optional[float], typer.Option("--guidance", help="Classifier-free guidance scale (1 = off).")] = None,
    shift: Annotated[Optional[float], typer.Option("--shift", help="Timestep shift of every stage's step grid.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of prompt 0; prompt i uses seed + i.")] = None,
    frames: Annotated[Optional[int], typer.Option("--frames", help="Pixel frames (4k+1).")] = None,
    height: Annotated[Optional[int], typer.Option("--height", help="Pixel height.")] = None,
    width: Annotated[Optional[int], typer.Option("--width", help="Pixel width.")] = None,
    fps: Annotated[Optional[int], typer.Option("--fps", help="Frames per second of the mp4.")] = None,
    fewstep: Annotated[Optional[bool], typer.Option("--fewstep/--multistep", help="Few-step (distilled) or multi-step Euler sampler [default: the model's].")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="float32 or bfloat16 [default: bfloat16 on GPU].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", help="Prompts sampled and decoded together (the same videos for any value) [default: 16 on a CPU, 1 on a GPU].")] = None,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the transformer (slow start, faster steps).")] = False,
    decoder: Annotated[Optional[str], typer.Option(
        "--decoder", help="What decodes the latents: vae or tiny (the model's distilled tiny decoder, docs/decoder.md) "
        "[default: the model's sampling.decoder, else vae].")] = None,
    decoder_weights: Annotated[Optional[Path], typer.Option(
        "--decoder-weights", help="With --decoder tiny: TAEHV weights (taew2_1 .safetensors or .pth) or a decoder "
        "folder, instead of the model's own.")] = None,
    previews: Annotated[bool, typer.Option(
        "--previews", help="After each coarse stage write a low-resolution mp4 of its clean estimate (previews/).")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Keep the finished videos of an interrupted run (in OUT.partial/) and do the rest.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    out: Annotated[Optional[Path], typer.Option(
        "-o", "--out", help="Output artifact folder [default: the next free runs/samples-NNN].")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Generate videos: one mp4 per prompt, the final latents and a manifest (torchrun shards prompts)."""
    from pyrawan.commands.sample import SampleSettings, run

    settings = SampleSettings(prompts=_read_prompts(prompt, prompts_file), model=model or DEFAULT_MODEL,
                              command=sys.argv)
    if recipe is not None:
        r = run_options(recipe, overrides, ("sample", "convert")).recipe
        s, v = r.sampling, r.video
        settings = SampleSettings(**{**settings.__dict__, "model": model or r.base, "seed": r.seed, "device": r.device,
                                     "dtype": r.dtype, "schedule": s.schedule, "guidance": s.guidance,
                                     "shift": list(s.shift) if isinstance(s.shift, tuple) else s.shift,
                                     "fewstep_levels": None if s.fewstep_levels is None else [list(x) for x in s.fewstep_levels],
                                     "max_sequence_length": r.text.max_sequence_length,
                                     "negative_prompt": s.negative_prompt, "frames": v.frames, "height": v.height,
                                     "width": v.width, "fps": v.fps, "decoder": s.decoder})
    elif overrides:
        raise InputError("key=value overrides need a recipe: pass --recipe FILE, or use the sample options (see --help).")
    given = dict(negative_prompt=negative_prompt, schedule=schedule, guidance=guidance, shift=shift, seed=seed,
                 frames=frames, height=height, width=width, fps=fps, fewstep=fewstep, device=device, dtype=dtype,
                 batch_size=batch_size, decoder=decoder,
                 decoder_weights=None if decoder_weights is None else str(decoder_weights))
    for key, value in given.items():
        if value is not None:
            setattr(settings, key, value)
    settings.overwrite, settings.progress, settings.resume, settings.compile = overwrite, not quiet, resume, compile_
    settings.previews = previews
    run(settings, out)


@app.command("demo", rich_help_panel=RUN_PANEL)
def demo(
    quick: Annotated[bool, typer.Option("--quick", help="CI-sized: tiny dataset, few steps, two prompts (about a minute).")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the dataset, training and sampling.")] = 0,
    resizer: Annotated[Optional[str], typer.Option("--resizer", help="Pyramid transform: haar, dct or db4 [default: haar].")] = None,
    stage_data: Annotated[Optional[int], typer.Option("--stage-data", help="Coarse training data: 1 = downsample latents, 2 = resize pixels [default: 2].")] = None,
    videos: Annotated[Optional[int], typer.Option("--videos", help="Toy dataset size (4 or more), the finetuning data [default: 96; --quick: 8].")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Finetuning steps [default: 400; --quick: 3].")] = None,
    seed_sets: Annotated[Optional[int], typer.Option("--seed-sets", help="Seed sets per row (own prompts and noise) [default: 3; --quick: 1].")] = None,
    prompts: Annotated[Optional[int], typer.Option("--prompts", help="Prompts per seed set [default: 16; --quick: 2].")] = None,
    boundaries: Annotated[Optional[str], typer.Option("--boundaries", help="Stage boundaries: calibrated, uniform or pyramid-flow [default: calibrated].")] = None,
    align_weight: Annotated[Optional[float], typer.Option("--align-weight", help="Finetuning's alignment loss weight [default: 0 = off].")] = None,
    decoder: Annotated[Optional[str], typer.Option("--decoder", help="What decodes the rows' videos: vae or tiny (the toy preset's distilled tiny decoder) [default: vae].")] = None,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Output folder [default: runs/demo; --quick: runs/demo-quick].")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the folder of an earlier demo.")] = False,
) -> None:
    """The main job on the toy world: dataset → calibrate → convert → finetune → sample → ToyBench + FLOPs table."""
    from pyrawan.commands.demo import default_out, run as run_demo

    if resizer is not None and resizer not in ("haar", "dct", "db4"):
        raise InputError(f"demo: --resizer {resizer!r} is not a resizer; use haar, dct or db4.")
    if stage_data is not None and stage_data not in (1, 2):
        raise InputError(f"demo: --stage-data {stage_data} must be 1 (downsample latents) or 2 (resize pixels).")
    from pyrawan.recipe import MAX_SEED
    from pyrawan.train.config import MAX_STEPS

    limits = {"--videos": (videos, 4, 100_000), "--steps": (steps, 1, MAX_STEPS), "--seed": (seed, 0, MAX_SEED),
              "--seed-sets": (seed_sets, 1, 100), "--prompts": (prompts, 1, 10_000)}
    for flag, (value, low, high) in limits.items():
        if value is not None and not low <= value <= high:
            raise InputError(f"demo: {flag} {value} must be between {low} and {high}.")
    if boundaries is not None and boundaries not in ("calibrated", "uniform", "pyramid-flow"):
        raise InputError(f"demo: --boundaries {boundaries!r} is not a choice; use calibrated, uniform or pyramid-flow.")
    if align_weight is not None and not 0 <= align_weight < float("inf"):
        raise InputError(f"demo: --align-weight {align_weight} must be a finite number >= 0 (0 turns it off).")
    run_demo(out or default_out(quick), quick=quick, seed=seed, overwrite=overwrite, resizer=resizer,
             stage_data=stage_data, videos=videos, finetune_steps=steps, seed_sets=seed_sets, prompts=prompts,
             boundaries=boundaries, align_weight=align_weight, decoder=decoder)


SchedulesOpt = Annotated[Optional[str], typer.Option(
    "--schedules", help="Comma-separated schedules, coarsest first [default: 0-0-50,20-20-10,0-0-4,0-0-2,2-2-2,2-2-1,1-1-1].")]
GuidanceOpt = Annotated[Optional[bool], typer.Option("--guidance/--no-guidance", help="Count both CFG branches (x2) [default: from the recipe].")]


def _schedules(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


@eval_app.command("flops")
def eval_flops(
    target: Annotated[str, typer.Argument(help="Recipe (file or shipped name), model folder, or architecture (tiny, wan1.3b, wan14b).")],
    overrides: OverridesArg = None,
    schedules: SchedulesOpt = None,
    method: Annotated[str, typer.Option("--method", help="analytic (the paper's formula) or meta (counted on the meta device).")] = "analytic",
    guidance: GuidanceOpt = None,
    stages: Annotated[Optional[int], typer.Option("--stages", help="Stages, for an architecture name.")] = None,
    frames: Annotated[Optional[int], typer.Option("--frames", help="Pixel frames.")] = None,
    height: Annotated[Optional[int], typer.Option("--height", help="Pixel height.")] = None,
    width: Annotated[Optional[int], typer.Option("--width", help="Pixel width.")] = None,
    ppf: Annotated[bool, typer.Option("--ppf", help="Count a Pyramidal Patchification model (a PPF model folder "
                                      "or recipe says so itself).")] = False,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Write flops.json and a manifest here.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """FLOPs of each schedule per stage, and the ratio to the full-resolution baseline (no weights needed)."""
    from pyrawan.commands.evaluate import run_flops

    run_flops(target, list(overrides or ()), _schedules(schedules), method, out, frames, height, width, stages,
              guidance, overwrite, ppf=ppf)


@eval_app.command("latency")
def eval_latency(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="ARCH-random (random weights built on the device, e.g. tiny-random) or a model [default: wan1.3b-random; on a CPU it must be given].")] = None,
    schedules: SchedulesOpt = None,
    guidance: GuidanceOpt = None,
    stages: Annotated[Optional[int], typer.Option("--stages", help="Stages, for an architecture.")] = None,
    frames: Annotated[Optional[int], typer.Option("--frames", help="Pixel frames.")] = None,
    height: Annotated[Optional[int], typer.Option("--height", help="Pixel height.")] = None,
    width: Annotated[Optional[int], typer.Option("--width", help="Pixel width.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="float32 or bfloat16 [default: bfloat16 on GPU].")] = None,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed forwards per stage (median reported).")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed forwards first.")] = 3,
    timesteps: Annotated[str, typer.Option(
        "--timesteps", help="sampler: per-token timesteps at the coarse stages, as the sampler runs them; "
                            "per-sample: one timestep per sample everywhere (as measured before 2026-11-28).")] = "sampler",
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Write latency.json and a manifest here.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Time one forward per stage on this device (a benchmark) and total it per schedule."""
    from pyrawan.commands.evaluate import run_latency

    run_latency(model, _schedules(schedules), out, frames, height, width, stages, guidance, device, dtype,
                repeats, warmup, overwrite, timesteps=timesteps)


# eval quality, compare, report, schedules and vbench live in cli_eval.py (imported so they register on eval_app).
from pyrawan import cli_eval  # noqa: E402,F401
