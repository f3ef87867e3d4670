"""``pyrawan calibrate DATA_DIR``: stage boundaries from the spectra of a dataset's latents.

Builds (or reuses) the latent cache, measures per stage transition and resizer how much signal
the transition's ``down`` removes and at which global noise level that band drowns (SNR below
``calibrate.threshold``), and writes ``calibration.json`` (read by ``convert --calibration``),
PNG plots and a manifest. Method: docs/calibration.md.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pyrawan.commands.common import console, progress_bar, resolve_device, resolve_dtype
from pyrawan.data.cache import INDEX, LatentCache, ensure_cache
from pyrawan.data.calibration import SpectralAnalysis
from pyrawan.data.datasets import check_dataset
from pyrawan.fsutil import atomic_write_text, sha256_file
from pyrawan.manifest import verify_if_artifact, write_manifest
from pyrawan.outputs import artifact_dir, check_output
from pyrawan.recipe import CalibrateRecipe, find_recipe, resolve_recipe, validate_recipe
from pyrawan.recipe_io import apply_overrides, read_yaml

CALIBRATION_FORMAT = "pyrawan.calibration/1"
DEFAULT_RECIPE = "toy"  # the built-in default model's settings
READS_AS_CALIBRATE = ("convert", "finetune")


def load_calibrate_recipe(data_dir: Path, recipe: str | None, overrides: Sequence[str]) -> CalibrateRecipe:
    """The recipe for calibrating ``data_dir``: ``recipe`` (default: shipped ``toy``) read as kind calibrate.

    A convert or finetune recipe is read as a calibrate recipe (its keys that calibrate has no use
    for, such as ``train``, are left out); ``data.root`` is set to ``data_dir``.
    """
    file = find_recipe(recipe or DEFAULT_RECIPE)
    shown = f"shipped recipe '{file.stem}'" if recipe is None or Path(recipe) != file else str(recipe)
    data = read_yaml(file, shown)
    if data.get("kind") in READS_AS_CALIBRATE:
        data = {k: v for k, v in data.items() if k in CalibrateRecipe.model_fields} | {"kind": "calibrate"}
    data, origin = apply_overrides(data, overrides)
    if isinstance(data.get("data"), dict) or data.get("data") is None:
        data["data"] = {**(data.get("data") or {}), "root": str(data_dir)}
    return validate_recipe(data, shown, origin, kind="calibrate")


def run(recipe: CalibrateRecipe, out: Path, overwrite: bool = False, components=None, progress: bool = True) -> Path:
    """Calibrate on ``recipe.data.root`` and write the artifact ``out``; ``components`` replaces loading ``base``."""
    started = time.time()
    root = Path(recipe.data.root)
    sources = [root, recipe.data.cache, recipe.base]
    check_output(out, overwrite, inputs=sources, kind="calibrate")  # before any work
    v = recipe.video
    check_dataset(root, recipe.data, v.frames, v.fps, size=(v.height, v.width))  # fail early (every bad entry at once), before any model loads
    inputs = [root]
    if components is None:
        components = _load_components(recipe, inputs)
    folder = ensure_cache(recipe, components, progress=progress)
    cache = LatentCache(folder)
    result = analyse(cache, recipe, progress)
    result.update({"format": CALIBRATION_FORMAT, "dataset": cache.dataset,
                   "cache": {"folder": str(folder.resolve()), "index_sha256": sha256_file(folder / INDEX)}})
    with artifact_dir(out, overwrite=overwrite, inputs=sources, kind="calibrate") as tmp:
        result["plots"] = write_plots(result, tmp, recipe) if recipe.calibrate.plots else []
        atomic_write_text(tmp / "calibration.json", json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        metrics = {"boundaries": result["boundaries"], "boundaries_raw": result["boundaries_raw"],
                   "adjusted": result["adjusted"], "videos": result["videos"], "threshold": result["threshold"]}
        write_manifest(tmp, "calibrate", resolve_recipe(recipe), [*inputs, folder], metrics, started)
    report(result, out)
    return out


def _load_components(recipe: CalibrateRecipe, inputs: list[Path]):
    """The recipe's model (its VAE and text encoder are what calibrate uses); a base artifact must verify."""
    from pyrawan.models.artifact import load_model

    base = Path(recipe.base)
    if verify_if_artifact(base, "base model"):
        inputs.append(base)
    device = resolve_device(recipe.device)
    console.print(f"calibrate: loading [bold]{recipe.base}[/]")
    return load_model(recipe.base, device=device, dtype=resolve_dtype(recipe.dtype, device)).components


def analysed_videos(total: int, limit: int | None) -> list[int]:
    """Indices of the cached videos to analyse: all, or ``limit`` evenly spaced ones."""
    if limit is None or limit >= total:
        return list(range(total))
    return sorted({int(k * total / limit) for k in range(limit)})


def analyse(cache: LatentCache, recipe: CalibrateRecipe, progress: bool = True) -> dict:
    """Spectra, statistics and boundaries of the cached videos (see ``SpectralAnalysis``), on the recipe's device."""
    p, c = recipe.pyramid, recipe.calibrate
    analysis = SpectralAnalysis(p.stages, cache.definition, c.resizers, p.resizer, p.keep_time,
                                device=resolve_device(recipe.device))
    chosen = analysed_videos(len(cache), c.max_videos)
    with progress_bar("calibrate: spectra", len(chosen), progress) as advance:
        for i in chosen:
            analysis.add(cache.latents(i))
            advance()
    return {**analysis.result(c.threshold, c.margin, p.resizer), "videos_cached": len(cache)}


def write_plots(result: dict, folder: Path, recipe: CalibrateRecipe) -> list[str]:
    """One PNG per analysed resizer (``spectra-NAME.png``); returns the file names."""
    from pyrawan.data.plots import plot_resizer

    names = []
    for name in result["resizers"]:
        plot_resizer(result, name, folder / f"spectra-{name}.png", recipe.calibrate.threshold)
        names.append(f"spectra-{name}.png")
    return names


def report(result: dict, out: Path) -> None:
    """Table of every resizer's transitions on stdout; the chosen boundaries and any moved one on stderr."""
    moved = any(f"{t['boundary_raw']:.4f}" != f"{b:.4f}" for res in result["resizers"].values()
                for t, b in zip(res["transitions"], res["boundaries"]))      # the raw column only when it differs
    table = Table("resizer", "stage", "removed energy", "removed band power", *(["boundary (raw)"] if moved else []),
                  "boundary")
    for name, res in result["resizers"].items():
        for t, b in zip(res["transitions"], res["boundaries"]):
            table.add_row(name, f"{t['from_stage']} -> {t['to_stage']}", f"{100 * t['high_pass_fraction']:.1f}%",
                          f"{t['high_band_power']:.4g}", *([f"{t['boundary_raw']:.4f}"] if moved else []), f"{b:.4f}")
    Console(highlight=False, soft_wrap=True).print(table)
    for k, (raw, b, moved) in enumerate(zip(result["boundaries_raw"], result["boundaries"], result["adjusted"]), 1):
        if moved:
            console.print(f"[yellow]warning:[/] the data put b_{k} at {raw:.4f}; moved to {b:.4f} so the boundaries "
                          f"increase with a margin of {result['margin']} (the coarser stage's removed band is not "
                          f"weaker than the finer one's: little gain from that stage).")
    console.print(f"calibrate: wrote [bold]{out}[/] ({result['videos']} videos, resizer {result['resizer']}, "
                  f"boundaries {[round(b, 4) for b in result['boundaries']]}); use it with "
                  f"`pyrawan convert RECIPE --calibration {out}`")
    cache = result["cache"]["folder"]
    console.print(f"calibrate: the latent cache (latents and caption embeddings, kept outside {out}) is {cache}; "
                  f"finetune and distill reuse it with data.cache={cache}", markup=False)
    if result.get("plots"):
        console.print(f"calibrate: spectra plots (each stage's spectrum, the band a transition removes and the noise "
                      f"floor at its boundary): {', '.join(str(out / name) for name in result['plots'])}", markup=False)
