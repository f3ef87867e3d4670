"""``pyrawan convert``: a pretrained Wan becomes a pyramidal model artifact.

The transformer is written in the diffusers layout beside ``pyramid.json``; unchanged
components (VAE, text encoder, tokenizer) are referenced by hash, not copied. With
``pyramid.kind: ppf`` (``--ppf``) the transformer gains a patch embedding and head per stage,
initialised from the pretrained ones (``pyrawan.models.ppf``).
"""
from __future__ import annotations

import time
from pathlib import Path

from pyrawan.commands.common import console, resolve_device, resolve_dtype
from pyrawan.manifest import verify_if_artifact, write_manifest
from pyrawan.outputs import artifact_dir, check_output
from pyrawan.models.artifact import load_model, save_model
from pyrawan.models.ppf import from_base, stage_factors
from pyrawan.models.pyramid_spec import calibrated_boundaries, define_pyramid
from pyrawan.recipe import RecipeBase, resolve_recipe


def run(recipe: RecipeBase, out: Path, calibration: Path | None = None, overwrite: bool = False) -> Path:
    """Convert ``recipe.base`` into a pyramidal model at ``out``; returns the artifact folder."""
    started = time.time()
    calibration = calibration or recipe.calibration
    sources = [calibration, recipe.base]
    check_output(out, overwrite, inputs=sources, kind="convert")  # before any loading
    inputs = []
    boundaries = None if recipe.pyramid.boundaries is None else list(recipe.pyramid.boundaries)
    if calibration is not None:
        boundaries = calibrated_boundaries(Path(calibration), recipe.pyramid)
        inputs.append(Path(calibration))
    pyramid = define_pyramid(recipe, boundaries, calibration)
    resolved = resolve_recipe(recipe)
    resolved["pyramid"]["boundaries"] = pyramid.boundaries  # what was used, calibrated or not
    device = resolve_device(recipe.device)
    dtype = resolve_dtype(recipe.dtype, device)
    base = Path(recipe.base)
    if verify_if_artifact(base, "base model"):
        inputs.append(base)
    elif base.suffix == ".safetensors" and verify_if_artifact(base.parent, "base model's folder"):
        inputs.append(base.parent)                      # a single file from `pyrawan export`: keep the lineage
    with artifact_dir(out, overwrite=overwrite, inputs=sources, kind="convert") as tmp:
        console.print(f"convert: loading [bold]{recipe.base}[/]")
        model = load_model(recipe.base, device=device, dtype=dtype)
        if pyramid.kind == "ppf":
            model.components.transformer = from_base(model.components.transformer,
                                                     stage_factors(pyramid.num_stages, pyramid.keep_time), pyramid.boundaries)
        save_model(tmp, model.components, pyramid, changed=("transformer",))
        metrics = {"num_stages": pyramid.num_stages, "kind": pyramid.kind, "boundaries": pyramid.boundaries,
                   "stage_latents": pyramid.stage_latents}
        write_manifest(tmp, "convert", resolved, inputs, metrics, started)
    how = "PPF patch factors " + ", ".join("x".join(map(str, f)) for f in stage_factors(pyramid.num_stages, pyramid.keep_time)) \
        if pyramid.kind == "ppf" else f"resizer {pyramid.resizer}"
    console.print(f"convert: wrote [bold]{out}[/] ({pyramid.num_stages} stages, {how}, "
                  f"boundaries {[round(b, 4) for b in pyramid.boundaries]})")
    return out
