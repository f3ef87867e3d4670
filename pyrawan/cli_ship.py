"""Shipping a model: ``export`` (diffusers folder or one original-layout file, with a model card) and ``push``.

Thin typer functions: each parses options and hands over to ``pyrawan.commands.export`` / ``push``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pyrawan.cli import EXAMPLES, RUN_PANEL, JsonOpt, OverwriteOpt, app

EXAMPLES.update({
    "export": "pyrawan export runs/finetuned --format diffusers --eval runs/eval-ft -o runs/finetuned-diffusers",
    "push": "pyrawan push runs/finetuned-diffusers my-user/pyramidal-toy --private --dry-run",
})

ArtifactIn = Annotated[Path, typer.Argument(help="A model artifact folder (what convert, finetune or distill wrote).",
                                            show_default=False)]


@app.command("export", rich_help_panel=RUN_PANEL)
def export(
    artifact: ArtifactIn,
    format_: Annotated[str, typer.Option(
        "--format", "-f", help="diffusers (a pipeline folder plain diffusers samples as the pyramid) or single-file "
                               "(the transformer with the original Wan key names, for ComfyUI and Wan's code).")] = "diffusers",
    lora: Annotated[str, typer.Option(
        "--lora", help="merge (adapters in the weights) or separate (base weights + pytorch_lora_weights.safetensors "
                       "for load_lora_weights; LoRA runs, diffusers format).")] = "merge",
    eval_: Annotated[Optional[Path], typer.Option(
        "--eval", help="An eval artifact (eval quality, eval vbench import) whose results go into the model card.")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="Weights of the export: float32, bfloat16 or float16.")] = "float32",
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Output folder [default: runs/export-ARTIFACT].")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export a model for other tools: a diffusers pipeline folder or one safetensors file, with a model card."""
    from pyrawan.commands.export import run

    run(artifact, format_, out or Path("runs") / f"export-{artifact.resolve().name}", lora, eval_, dtype, overwrite)


@app.command("push", rich_help_panel=RUN_PANEL)
def push(
    artifact: Annotated[Path, typer.Argument(help="An export folder (what `pyrawan export` wrote).", show_default=False)],
    repo_id: Annotated[str, typer.Argument(help="Hub repository, owner/name (created if missing).", show_default=False)],
    private: Annotated[bool, typer.Option("--private", help="Create the repository private.")] = False,
    revision: Annotated[Optional[str], typer.Option("--revision", help="Branch to commit to (created if missing).")] = None,
    create_pr: Annotated[bool, typer.Option("--create-pr", help="Open a pull request instead of committing.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the files and sizes that would be uploaded; no network.")] = False,
    message: Annotated[Optional[str], typer.Option("--message", "-m", help="Commit message.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload an export to the Hugging Face Hub in one commit (verified first); prints the URL."""
    from pyrawan.commands.push import run

    run(artifact, repo_id, private, revision, create_pr, dry_run, as_json, message)
