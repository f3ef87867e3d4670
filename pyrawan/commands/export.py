"""``pyrawan export``: a model artifact becomes what other tools load, with a model card.

``--format diffusers``: a complete diffusers pipeline folder with its pipeline class
(``pyrawan.export.diffusers_folder``); ``--format single-file``: the transformer as one safetensors
file with the original Wan key names (``pyrawan.export.single_file``). Both get ``README.md``, the
model card rendered from the manifests, and a manifest whose input is the exported artifact.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from pyrawan.commands.common import DTYPES, console
from pyrawan.errors import InputError
from pyrawan.export.card import render_card
from pyrawan.export.diffusers_folder import LORA_MODES, write_diffusers_folder
from pyrawan.export.single_file import check_single_file, file_name, write_single_file
from pyrawan.fsutil import atomic_write_text
from pyrawan.manifest import list_outputs, require_verified, write_manifest
from pyrawan.outputs import artifact_dir, check_output
from pyrawan.models.artifact import COMPONENTS_FILE, PYRAMID_FILE, is_artifact, load_model
from pyrawan.models.pyramid_spec import PyramidSpec

FORMATS = ("diffusers", "single-file")
LORA_FILE = Path("lora") / "pytorch_lora_weights.safetensors"
EXPORT_DTYPES = ("float32", "bfloat16", "float16")


def check_options(fmt: str, lora: str, dtype: str) -> None:
    problems = []
    if fmt not in FORMATS:
        problems.append(f"--format {fmt!r} is not a format; use {' or '.join(FORMATS)}")
    if lora not in LORA_MODES:
        problems.append(f"--lora {lora!r} is not a choice; use merge (adapters in the weights) or separate "
                        f"(base weights + pytorch_lora_weights.safetensors)")
    if dtype not in EXPORT_DTYPES:
        problems.append(f"--dtype {dtype!r} is not supported; use {', '.join(EXPORT_DTYPES)}")
    if problems:
        raise InputError("export: " + "; ".join(problems) + ".")


def lora_settings(artifact: Path, manifest: dict) -> dict:
    """The adapters of a LoRA run and their rank, alpha and targets (from the run's recipe)."""
    lora = (((manifest.get("recipe") or {}).get("resolved") or {}).get("train") or {}).get("lora") or {}
    if not (artifact / LORA_FILE).is_file() or not lora.get("enabled"):
        raise InputError(f"--lora separate: {artifact} holds no LoRA adapters ({LORA_FILE} and train.lora in its "
                         f"manifest come from a LoRA finetune or distill run); export it with --lora merge.")
    return {"state": load_file(str(artifact / LORA_FILE)), "rank": int(lora["rank"]), "alpha": float(lora["alpha"]),
            "targets": list(lora.get("target_modules") or [])}


def check_model(artifact: Path) -> tuple[dict, PyramidSpec]:
    """The verified manifest and the pyramid of a model artifact; ``InputError`` for anything else."""
    manifest = require_verified(artifact, "export input")
    if not is_artifact(artifact):
        raise InputError(f"{artifact} is a {manifest.get('kind')!r} artifact, not a model: it has no {PYRAMID_FILE} "
                         f"and {COMPONENTS_FILE}. Export what `pyrawan convert`, `finetune` or `distill` wrote.")
    return manifest, PyramidSpec.read(artifact / PYRAMID_FILE)


def run(artifact: Path, fmt: str, out: Path, lora: str = "merge", eval_dir: Path | None = None,
        dtype: str = "float32", overwrite: bool = False) -> Path:
    """Export the model ``artifact`` as ``fmt`` into ``out``; returns the folder."""
    started = time.time()
    check_options(fmt, lora, dtype)
    artifact = Path(artifact)
    manifest, spec = check_model(artifact)
    if fmt == "single-file":
        check_single_file(spec.kind, lora)
    adapters = lora_settings(artifact, manifest) if lora == "separate" else None
    eval_body = None
    if eval_dir is not None:
        from pyrawan.eval.artifact import read_eval

        require_verified(eval_dir, "--eval")
        eval_body = read_eval(eval_dir)
    inputs = [artifact] + ([Path(eval_dir)] if eval_dir is not None else [])
    check_output(out, overwrite, inputs=inputs, kind="export")
    references = json.loads((artifact / COMPONENTS_FILE).read_text(encoding="utf-8"))["components"]
    with artifact_dir(out, overwrite=overwrite, inputs=inputs, kind="export") as tmp:
        console.print(f"export: loading [bold]{artifact}[/]")
        model = load_model(artifact, dtype=DTYPES[dtype])
        with torch.no_grad():
            if fmt == "diffusers":
                write_diffusers_folder(tmp, model, adapters)
            else:
                write_single_file(tmp, model, references, file_name(Path(out)))
        config = dict(model.components.transformer.config)
        files = [o["path"] for o in list_outputs(tmp)]
        atomic_write_text(tmp / "README.md", render_card(artifact, spec, config, fmt, files, adapters is not None,
                                                         eval_body))
        outputs = list_outputs(tmp)
        resolved = {"kind": "export", "artifact": str(artifact), "format": fmt, "lora": lora, "dtype": dtype,
                    "eval": None if eval_dir is None else str(eval_dir)}
        metrics = {"format": fmt, "model_kind": spec.kind, "distilled": spec.distilled is not None, "lora": lora,
                   "files": len(outputs), "bytes": sum(o["bytes"] for o in outputs)}
        write_manifest(tmp, "export", resolved, inputs, metrics, started)
    how = ("a diffusers pipeline folder: DiffusionPipeline.from_pretrained(OUT, trust_remote_code=True)"
           if fmt == "diffusers" else f"one original-layout file {file_name(Path(out))}")
    console.print(f"export: wrote [bold]{out}[/] ({how}; {metrics['files']} files, {metrics['bytes'] / 1e6:.1f} MB)",
                  markup=True)
    return out
