"""``pyrawan eval quality | compare | report | schedules | vbench export | vbench import``.

Thin typer functions: each parses options and hands over to ``pyrawan.commands.evaluate``,
``eval_compare`` or ``eval_vbench``. (``eval flops`` and ``eval latency`` live in ``cli_run.py``.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pyrawan.cli import EXAMPLES, OverwriteOpt, eval_app
from pyrawan.errors import InputError

vbench_app = typer.Typer(no_args_is_help=True, help="Export videos for VBench and import its results.")
eval_app.add_typer(vbench_app, name="vbench")

EXAMPLES.update({
    "eval quality": "pyrawan eval quality --model runs/finetuned --reference toy --suite toy-8 --seeds 0,1 -o runs/eval-ft",
    "eval compare": "pyrawan eval compare runs/eval-teacher runs/eval-ft --baseline runs/eval-teacher -o runs/compare",
    "eval report": "pyrawan eval report runs/eval-teacher runs/eval-ft -o runs/report",
    "eval schedules": "pyrawan eval schedules --model runs/finetuned --budget-flops 8G --suite toy-4 --boundaries-search",
    "eval vbench export": "pyrawan eval vbench export --model runs/finetuned --vbench-info VBench_full_info.json -o runs/vbench",
    "eval vbench import": "pyrawan eval vbench import results/ft_eval_results.json --export runs/vbench -o runs/eval-vbench",
})

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model artifact folder, diffusers folder, hub id or preset.")]
PromptsOpt = Annotated[Optional[Path], typer.Option("--prompts", help="Text file, one prompt per line.")]
SuiteOpt = Annotated[Optional[str], typer.Option("--suite", help="Named prompt suite: toy-N (N toy-world prompts) [default: toy-8].")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Videos sampled and decoded together.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[Optional[str], typer.Option("--dtype", help="float32 or bfloat16 [default: bfloat16 on GPU].")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
OutReq = Annotated[Path, typer.Option("-o", "--out", help="Output artifact folder.")]


def _prompts(prompts_file: Path | None, suite: str | None) -> list[str]:
    from pyrawan.data.prompts import read_prompt_file
    from pyrawan.eval.sampling import suite_prompts

    if prompts_file is not None and suite is not None:
        raise InputError("give --prompts FILE or --suite NAME, not both.")
    return read_prompt_file(prompts_file, required=True) if prompts_file is not None else suite_prompts(suite or "toy-8")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--seeds {text!r} must be comma-separated whole numbers, e.g. 0,1,2.") from None
    if not seeds:
        raise InputError("--seeds is empty; give e.g. 0 or 0,1,2.")
    return seeds


@eval_app.command("quality")
def eval_quality(
    model: ModelOpt = None,
    reference: Annotated[Optional[str], typer.Option("--reference", "-r", help="Reference: a model (sampled here with the same prompts, seeds and coupled noise), or videos already sampled: a `pyrawan sample` artifact, an eval artifact or its samples/ folder.")] = None,
    samples: Annotated[Optional[Path], typer.Option("--samples", help="Score this `pyrawan sample` artifact instead of sampling (--model then only decodes).")] = None,
    prompts_file: PromptsOpt = None,
    suite: SuiteOpt = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Seeds, comma-separated; every prompt is sampled with every seed [default: 0].")] = None,
    schedule: Annotated[Optional[str], typer.Option("--schedule", help="Steps per stage, coarsest first [default: the model's].")] = None,
    reference_schedule: Annotated[Optional[str], typer.Option("--reference-schedule", help="Schedule of a reference model [default: its own].")] = None,
    validation_cache: Annotated[Optional[Path], typer.Option("--validation-cache", help="Held-out latent cache: add the per-stage flow-matching validation loss.")] = None,
    fd_reference: Annotated[Optional[Path], typer.Option("--fd-reference", help="Folder of real captioned toy-world videos (e.g. `toy make-dataset` output): add ToyBench's Fréchet distance to them.")] = None,
    label: Annotated[Optional[str], typer.Option("--label", help="Name of this row in compare tables.")] = None,
    decoder: Annotated[str, typer.Option("--decoder", help="What decodes the videos scored: vae or tiny (the model's distilled tiny decoder).")] = "vae",
    reference_decoder: Annotated[str, typer.Option("--reference-decoder", help="What decodes the reference's videos: vae or tiny.")] = "vae",
    batch_size: BatchOpt = 8,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    quiet: QuietOpt = False,
    out: OutReq = Path("runs/eval-quality"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Sample (or read) videos and score them: ToyBench, flicker, motion proxy, and PSNR/SSIM vs a reference."""
    from pyrawan.commands.eval_quality import run_quality

    if samples is not None and (prompts_file or suite or seeds or schedule):
        raise InputError(f"--samples {samples} already fixes the prompts, seeds and schedule; drop --prompts, --suite, "
                         f"--seeds and --schedule (or sample anew with --model instead of --samples).")
    prompts = None if samples is not None else _prompts(prompts_file, suite)
    run_quality(out, model, reference, prompts, _seeds(seeds or "0"), samples, schedule, reference_schedule, batch_size,
                validation_cache, label, device, dtype, not quiet, overwrite, fd_reference, decoder, reference_decoder)


ArtifactsArg = Annotated[list[Path], typer.Argument(help="Eval artifacts (from eval quality or eval vbench import).")]
BaselineOpt = Annotated[Optional[Path], typer.Option("--baseline", help="The artifact deltas are taken against [default: the first].")]
MetricOpt = Annotated[Optional[str], typer.Option("--metric", help="Quality axis of the plot and the Pareto front [default: toybench_overall, pixel_psnr, ...].")]
ColumnsOpt = Annotated[Optional[str], typer.Option("--columns", help="Comma-separated metrics of the table and compare.md [default: printed, the quality metric and those that differ from the baseline; compare.md, all].")]
AllOpt = Annotated[bool, typer.Option("--all", help="Print every metric (the table is folded to the terminal's width).")]


@eval_app.command("compare")
def eval_compare(artifacts: ArtifactsArg, baseline: BaselineOpt = None, metric: MetricOpt = None,
                 columns: ColumnsOpt = None, all_metrics: AllOpt = False,
                 out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Write compare.md, compare.json and the PNG here.")] = None,
                 overwrite: OverwriteOpt = False) -> None:
    """One table of every metric (mean, 95% CI, Δ vs baseline), FLOPs and time per video, and a Pareto plot."""
    from pyrawan.commands.eval_compare import run_compare

    run_compare(artifacts, out, baseline, metric, _columns(columns), False, overwrite, show_all=all_metrics)


@eval_app.command("report")
def eval_report(artifacts: ArtifactsArg, baseline: BaselineOpt = None, metric: MetricOpt = None,
                columns: ColumnsOpt = None, all_metrics: AllOpt = False, out: OutReq = Path("runs/eval-report"),
                overwrite: OverwriteOpt = False) -> None:
    """The comparison as a static HTML page with the videos side by side (same prompt and seed, a row per model)."""
    from pyrawan.commands.eval_compare import run_compare

    run_compare(artifacts, out, baseline, metric, _columns(columns), True, overwrite, show_all=all_metrics)


def _columns(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] or None if text else None


@eval_app.command("schedules")
def eval_schedules(
    model: Annotated[str, typer.Option("--model", "-m", help="The model whose schedule is searched.")],
    budget_flops: Annotated[Optional[str], typer.Option("--budget-flops", help="Transformer FLOPs per video, e.g. 2.5e14 or 250T.")] = None,
    budget_seconds: Annotated[Optional[float], typer.Option("--budget-seconds", help="Transformer seconds per video on this device (measured).")] = None,
    reference: Annotated[Optional[str], typer.Option("--reference", "-r", help="Teacher for latent PSNR (needed unless the prompts are toy-world).")] = None,
    prompts_file: PromptsOpt = None,
    suite: Annotated[Optional[str], typer.Option("--suite", help="Validation prompt suite, e.g. toy-4 [default: toy-8].")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per prompt for the search (as many again confirm).")] = 2,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Most steps per stage [default: the default schedule's largest].")] = None,
    max_candidates: Annotated[int, typer.Option("--max-candidates", help="Schedules scored (spread over the budget).")] = 8,
    boundaries_search: Annotated[bool, typer.Option("--boundaries-search", help="Also search stage boundaries near the model's, at the best steps (equal cost).")] = False,
    boundary_radius: Annotated[Optional[float], typer.Option("--boundary-radius", help="Farthest a boundary moves from the model's, in global sigma, at most 0.1; implies --boundaries-search [default: 0.05].")] = None,
    boundary_points: Annotated[int, typer.Option("--boundary-points", help="Positions per boundary in [-radius, +radius] (3: -r, 0, +r).")] = 3,
    batch_size: BatchOpt = 8,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    quiet: QuietOpt = False,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Write schedules.json and a manifest here.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Search steps per stage (and optionally boundaries) under a budget; report the best and whether it beat the default at equal cost."""
    from pyrawan.commands.evaluate import run_schedules
    from pyrawan.eval.schedules import DEFAULT_BOUNDARY_RADIUS

    if seeds < 1:
        raise InputError(f"--seeds {seeds} must be at least 1.")
    run_schedules(model, out, budget_flops, budget_seconds, _prompts(prompts_file, suite), seeds, 0, reference,
                  max_steps, max_candidates, batch_size, device, dtype, not quiet, overwrite,
                  boundary_radius if boundary_radius is not None else DEFAULT_BOUNDARY_RADIUS if boundaries_search else None,
                  boundary_points)


@vbench_app.command("export")
def vbench_export(
    model: Annotated[str, typer.Option("--model", "-m", help="The model to sample.")],
    suite: Annotated[str, typer.Option("--suite", help="vbench or vbench2.")] = "vbench",
    info: Annotated[Optional[Path], typer.Option("--vbench-info", help="VBench's full-info JSON [default: from the installed vbench package].")] = None,
    dimension: Annotated[Optional[list[str]], typer.Option("--dimension", help="Only prompts of this dimension (repeatable).")] = None,
    per_prompt: Annotated[Optional[int], typer.Option("--samples-per-prompt", help="Videos per prompt [default: 5; vbench2: 3].")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Video i of every prompt uses seed + i.")] = 0,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N prompts (a subset: say so when reporting).")] = None,
    schedule: Annotated[Optional[str], typer.Option("--schedule", help="Steps per stage [default: the model's].")] = None,
    batch_size: BatchOpt = 8,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    quiet: QuietOpt = False,
    out: OutReq = Path("runs/vbench-export"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Sample VBench's prompt suite into `{prompt}-{index}.mp4` files that VBench evaluates."""
    from pyrawan.commands.eval_vbench import run_export

    run_export(model, out, suite, info, dimension, per_prompt, seed, limit, schedule, batch_size, device, dtype,
               not quiet, overwrite)


@vbench_app.command("import")
def vbench_import(
    results: Annotated[list[Path], typer.Argument(help="VBench's {name}_eval_results.json file(s).")],
    export: Annotated[Optional[Path], typer.Option("--export", help="The `eval vbench export` folder the videos came from (adds seeds and videos).")] = None,
    label: Annotated[Optional[str], typer.Option("--label", help="Name of this row in compare tables [default: VBench's run name].")] = None,
    out: OutReq = Path("runs/eval-vbench"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Turn VBench result files into an eval artifact (per-video scores, mean and 95% CI per dimension)."""
    from pyrawan.commands.eval_vbench import run_import

    run_import(results, out, export, label, overwrite)
