"""A pyrawan model's transformer as one safetensors file in the original Wan layout (Wan's code, ComfyUI).

The header records the diffusers config of the transformer, the model's ``pyramid.json`` and its
other components by reference (``pyrawan.models.single_file``), so ``pyrawan convert`` with the
file as ``base`` rebuilds the same model; other tools read only the tensors (and sample the
transformer as a plain Wan2.1 model: the pyramid's sampler is pyrawan's or the diffusers export's).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from pyrawan.errors import InputError
from pyrawan.fsutil import atomic_path
from pyrawan.models.artifact import LoadedModel
from pyrawan.models.ppf import is_ppf
from pyrawan.models.single_file import COMPONENTS_KEY, CONFIG_KEY, PYRAMID_KEY, to_original
from pyrawan.export.diffusers_folder import public_pyramid


def file_name(out: Path) -> str:
    """``<OUT name>.safetensors`` with only letters, digits, ``.``, ``_`` and ``-`` (what ComfyUI lists)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", out.name).strip("-.") or "wan"
    return f"{stem}.safetensors"


def check_single_file(model_kind: str, lora: str) -> None:
    """``InputError`` for what one original-layout file cannot hold (before any weight loads)."""
    if model_kind == "ppf":
        raise InputError("--format single-file: a PPF model has a patch embedding and head per stage, which the "
                         "original Wan layout (and so ComfyUI or Wan's code) has no place for; export it with "
                         "--format diffusers instead.")
    if lora != "merge":
        raise InputError("--format single-file holds the transformer with its LoRA adapters merged; --lora separate "
                         "is available with --format diffusers only.")


def write_single_file(out: Path, model: LoadedModel, references: dict[str, Any], name: str) -> Path:
    """Write ``out/name``: the transformer under original Wan names, with pyrawan's header; returns the path."""
    transformer = model.components.transformer
    if is_ppf(transformer):
        check_single_file("ppf", "merge")
    state = {k: v.detach().cpu().contiguous() for k, v in to_original(transformer.state_dict()).items()}
    config = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}
    others = {k: v for k, v in references.items() if k != "transformer"}
    header = {"format": "pt", CONFIG_KEY: json.dumps(config, sort_keys=True),
              PYRAMID_KEY: json.dumps(public_pyramid(model.pyramid), sort_keys=True),
              COMPONENTS_KEY: json.dumps(others, sort_keys=True)}
    with atomic_path(out / name) as tmp:
        save_file(state, str(tmp), metadata=header)
    return out / name
