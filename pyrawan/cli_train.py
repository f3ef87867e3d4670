"""The training commands' thin typer functions: ``pyrawan finetune`` and ``pyrawan distill``."""
from __future__ import annotations

from typing import Annotated

import typer

from pyrawan import recipe as rc
from pyrawan.cli import RUN_PANEL, OutOpt, OverridesArg, OverwriteOpt, RecipeArg, app, run_options, stderr

ResumeOpt = Annotated[bool, typer.Option(
    "--resume", help="Continue from the latest complete checkpoint in OUT.run/checkpoints/.")]
DryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", help="Print the plan (models, trainable parameters, optimisers) and memory per GPU; load no weights.")]


@app.command("finetune", rich_help_panel=RUN_PANEL)
def finetune(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Pyramidal flow-matching finetuning: one process, torchrun (DDP) or DeepSpeed ZeRO, resumable."""
    from pyrawan.commands import finetune as cmd

    opts = run_options(recipe, overrides, ("finetune", "convert") if dry_run else "finetune", out, overwrite)
    if dry_run:
        if opts.recipe.kind != "finetune":
            stderr().print(f"note: {recipe} is a {opts.recipe.kind} recipe; planning with the default train: section.",
                           style="yellow", markup=False)
        cmd.dry_run(rc.FinetuneRecipe.model_validate({**opts.recipe.model_dump(), "kind": "finetune"}))
        return
    cmd.run(opts.recipe, opts.out, resume=resume, overwrite=opts.overwrite)


@app.command("distill", rich_help_panel=RUN_PANEL)
def distill(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Step distillation into a few-step model: DMD (OT, PT, PT*, the Wan-DMD baseline) or adversarial
    (Adv-OD, Adv-PD)."""
    from pyrawan.commands import distill as cmd

    opts = run_options(recipe, overrides, "distill", out, overwrite)
    if dry_run:
        cmd.dry_run(opts.recipe)
        return
    cmd.run(opts.recipe, opts.out, resume=resume, overwrite=opts.overwrite)
