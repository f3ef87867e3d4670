"""``pyrawan convert``: a pretrained Wan becomes a pyramidal model artifact.

The transformer is written in the diffusers layout beside ``pyramid.json``; unchanged
components (VAE, text encoder, tokenizer) are referenced by hash, not copied.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from pyrawan.commands.common import console, resolve_device, resolve_dtype
from pyrawan.errors import InputError
from pyrawan.manifest import artifact_dir, require_verified, verify_if_artifact, write_manifest
from pyrawan.models.artifact import load_model, save_model
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.geometry import pixel_to_latent
from pyrawan.pyramid.schedule import natural_levels_table
from pyrawan.recipe import RecipeBase, resolve_recipe

PYRAMID_FORMAT = "pyrawan.pyramid/1"
FIRST_FRAME_RULE = "latent frame 0 is its own block (2x2, m=4); later frames form 2x2x2 blocks (m=8)"


def calibrated_boundaries(folder: Path, pyramid) -> list[float]:
    """Boundaries for the recipe's ``pyramid`` section from a verified ``pyrawan calibrate`` artifact.

    Calibration measures every resizer; the recipe's resizer picks its own result. The pyramid's
    stages, ``keep_time`` and stage-data definition must match what was calibrated.
    """
    require_verified(folder, "calibration")
    path = folder / "calibration.json"
    try:
        cal = json.loads(path.read_text())
        per_resizer = cal.get("resizers", {}).get(pyramid.resizer, {})
        boundaries = [float(b) for b in per_resizer.get("boundaries", cal["boundaries"])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: cannot read its boundaries ({type(err).__name__}: {err}); point --calibration at "
                         f"a folder written by `pyrawan calibrate`.") from None
    wanted = {"stages": (len(boundaries) + 1, pyramid.stages), "keep_time": (cal.get("keep_time", False), pyramid.keep_time),
              "stage_data": (cal.get("definition", pyramid.stage_data), pyramid.stage_data)}
    if pyramid.resizer not in cal.get("resizers", {}) and cal.get("resizer", pyramid.resizer) != pyramid.resizer:
        wanted["resizer"] = (cal.get("resizer"), pyramid.resizer)
    differ = [f"pyramid.{k} = {mine} but the calibration used {theirs}" for k, (theirs, mine) in wanted.items() if theirs != mine]
    if differ:
        raise InputError(f"{path} was measured for another pyramid: {'; '.join(differ)}. Calibrate with the same "
                         f"pyramid settings (pass the same recipe to `pyrawan calibrate -r`).")
    return boundaries


def pyramid_definition(recipe: RecipeBase, boundaries: list[float] | None) -> dict:
    """The content of ``pyramid.json``: stages, boundaries, resizer, first-frame rule, defaults."""
    p, v = recipe.pyramid, recipe.video
    config = PyramidConfig(num_stages=p.stages, boundaries=None if boundaries is None else tuple(boundaries),
                           resizer=p.resizer, keep_time=p.keep_time)
    shapes = config.shapes(pixel_to_latent(v.frames, v.height, v.width))
    s = recipe.sampling
    return {
        "format": PYRAMID_FORMAT,
        **config.to_dict(),
        "first_frame_rule": FIRST_FRAME_RULE,
        "stage_data": p.stage_data,
        "video": v.model_dump(),
        "stage_latents": [list(shape) for shape in shapes],
        "natural_levels": natural_levels_table(config.boundaries, [t for t, _, _ in shapes], p.keep_time),
        "sampling": {**s.model_dump(mode="json"), "max_sequence_length": recipe.text.max_sequence_length},
    }


def run(recipe: RecipeBase, out: Path, calibration: Path | None = None, overwrite: bool = False) -> Path:
    """Convert ``recipe.base`` into a pyramidal model at ``out``; returns the artifact folder."""
    started = time.time()
    calibration = calibration or recipe.calibration
    inputs = []
    boundaries = None if recipe.pyramid.boundaries is None else list(recipe.pyramid.boundaries)
    if calibration is not None:
        boundaries = calibrated_boundaries(Path(calibration), recipe.pyramid)
        inputs.append(Path(calibration))
    pyramid = pyramid_definition(recipe, boundaries)
    pyramid["calibration"] = None if calibration is None else str(Path(calibration).resolve())
    resolved = resolve_recipe(recipe)
    resolved["pyramid"]["boundaries"] = pyramid["boundaries"]  # what was used, calibrated or not
    device = resolve_device(recipe.device)
    dtype = resolve_dtype(recipe.dtype, device)
    base = Path(recipe.base)
    if verify_if_artifact(base, "base model"):
        inputs.append(base)
    with artifact_dir(out, overwrite=overwrite) as tmp:
        console.print(f"convert: loading [bold]{recipe.base}[/]")
        model = load_model(recipe.base, device=device, dtype=dtype)
        save_model(tmp, model.components, pyramid, changed=("transformer",))
        metrics = {"num_stages": pyramid["num_stages"], "boundaries": pyramid["boundaries"],
                   "stage_latents": pyramid["stage_latents"]}
        write_manifest(tmp, "convert", resolved, inputs, metrics, started)
    console.print(f"convert: wrote [bold]{out}[/] ({pyramid['num_stages']} stages, resizer {pyramid['resizer']}, "
                  f"boundaries {[round(b, 4) for b in pyramid['boundaries']]})")
    return out
