"""``pyrawan eval quality``: sample (or read) videos, score them, pair them with a reference.

Short wiring over ``pyrawan.eval.quality_run`` (the whole evaluation, shared with ``pyrawan demo``):
this module resolves the device, pairs prompts with seeds, and prints the summary.
"""
from __future__ import annotations

from pathlib import Path

from rich.console import Console

from pyrawan import dist
from pyrawan.commands.common import console, resolve_device, resolve_dtype


def model_loader(device: str | None, dtype: str | None, inputs: list[Path], sharded: bool = False):
    """``load(spec)``: ``pyrawan.eval.quality_run.model_loader`` on the device and dtype named by the flags."""
    from pyrawan.eval.quality_run import model_loader as loader

    dev = resolve_device(device)
    return loader(dev, resolve_dtype(dtype, dev), inputs, sharded)


def print_summary(body: dict) -> None:
    """The artifact's metrics as a table (mean, 95% CI, n), then its notes."""
    from rich.table import Table

    table = Table("metric", "mean", "95% CI", "n", title=f"eval {body['kind']}: {body['label']}")
    for name, s in body["summary"].items():
        ci = "–" if s["mean"] is None else f"[{s['low']:.4g}, {s['high']:.4g}]"
        table.add_row(name, "–" if s["mean"] is None else f"{s['mean']:.4g}", ci, str(s["n"]))
    Console(soft_wrap=True).print(table)
    for note in body["notes"]:
        console.print(f"note: {note}", markup=False)


def run_quality(out: Path, model: str | None = None, reference: str | None = None, prompts: list[str] | None = None,
                seeds: list[int] = (0,), samples: Path | None = None, schedule: str | None = None,
                reference_schedule: str | None = None, batch_size: int = 8, validation_cache: Path | None = None,
                label: str | None = None, device: str | None = None, dtype: str | None = None, progress: bool = True,
                overwrite: bool = False, fd_reference: Path | None = None, decoder: str = "vae",
                reference_decoder: str = "vae") -> dict:
    """``pyrawan eval quality``: every prompt with every seed (or the videos of ``samples``), scored and
    written as an eval artifact at ``out``; see ``pyrawan.eval.quality_run.evaluate_quality``."""
    from pyrawan.eval.quality_run import QualityJob, evaluate_quality
    from pyrawan.eval.sampling import grid

    P, S = grid(prompts or [], seeds) if samples is None and model is not None else ([], [])
    job = QualityJob(model=model, reference=reference, prompts=P, seeds=S, samples=samples, schedule=schedule,
                     reference_schedule=reference_schedule, batch_size=batch_size, validation_cache=validation_cache,
                     fd_reference=fd_reference, label=label, progress=progress, overwrite=overwrite, decoder=decoder,
                     reference_decoder=reference_decoder)
    body = evaluate_quality(out, job, model_loader(device, dtype, [], sharded=True))
    if dist.world()[0] != 0:
        return {}
    print_summary(body)
    console.print(f"eval quality: wrote [bold]{out}[/]")
    return body
