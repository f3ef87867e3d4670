"""``pyrawan toy``: the built-in toy world (``make-dataset``) and its judge (``bench``).

Thin typer functions: each parses options and hands over to ``pyrawan.commands.toy``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pyrawan.cli import RUN_PANEL, JsonOpt, OverwriteOpt, app
from pyrawan.recipe import MAX_SEED

toy_app = typer.Typer(no_args_is_help=True, help="The built-in toy world: a captioned video dataset and ToyBench, "
                                                  "a judge with no learned weights (docs/toy-world.md).")
app.add_typer(toy_app, name="toy", rich_help_panel=RUN_PANEL)


@toy_app.command("make-dataset")
def make_dataset(
    out: Annotated[Path, typer.Argument(help="Output dataset folder (written atomically, with manifest.json).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of videos.")] = 64,
    seed: Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED, help="Seed of the scene sampler (same seed, same videos).")] = 0,
    layout: Annotated[str, typer.Option("--layout", help="metadata.csv, metadata.jsonl, metadata.json, sidecar or prompts+videos.")] = "metadata.csv",
    frames: Annotated[int, typer.Option("--frames", help="Frames per video (17 or 33 form a 3-stage pyramid).")] = 17,
    height: Annotated[int, typer.Option("--height", help="Pixel height (a multiple of 64 for a 3-stage pyramid; 64 = the toy model's size).")] = 64,
    width: Annotated[int, typer.Option("--width", help="Pixel width (a multiple of 64 for a 3-stage pyramid; 64 = the toy model's size).")] = 64,
    fps: Annotated[int, typer.Option("--fps", min=1, max=240, help="Frames per second of the mp4s.")] = 16,
    short_captions: Annotated[float, typer.Option(
        "--short-captions", help="Fraction of videos captioned with only some attributes ('a red square moving left').")] = 0.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Render seeded toy scenes (a shape moving over a background) as mp4s with captions."""
    from pyrawan.commands.toy import run_make_dataset

    run_make_dataset(out, n, seed, layout, frames, height, width, fps, overwrite, progress=not quiet,
                     short_captions=short_captions)


@toy_app.command("bench")
def bench(
    source: Annotated[Path, typer.Argument(
        help="A `pyrawan sample` artifact (samples.jsonl) or a captioned dataset folder.", exists=True, file_okay=False)],
    reference: Annotated[Optional[Path], typer.Option(
        "--reference", help="Real videos (e.g. a `pyrawan toy make-dataset` folder) for the Fréchet distance.",
        exists=True, file_okay=False)] = None,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Write toybench.json and a manifest here.")] = None,
    by: Annotated[Optional[str], typer.Option(
        "--by", help="Also score each group of prompts asking the same values of these attributes, "
                     "e.g. 'shape,size' (shape, colour, size, direction, speed, background, style).")] = None,
    as_json: JsonOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Judge toy-world videos against their prompts: object, colour, shape, size, motion, flicker, noise, sharpness."""
    from pyrawan.commands.toy import run_bench

    run_bench(source, reference, out, overwrite, as_json, by=[] if by is None else [name.strip() for name in by.split(",")])
