"""The transformer architecture of a model reference, known without loading any weights."""
from __future__ import annotations

import json
from pathlib import Path

from pyrawan.errors import InputError
from pyrawan.models.presets import TRANSFORMER_ARCHS

# Hub ids whose architecture is known without downloading anything.
HUB_ARCHS = {
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": "wan1.3b",
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": "wan14b",
}


def arch_of(base: str) -> str | dict:
    """Architecture name (``TRANSFORMER_ARCHS``) or config dict of a model reference, without weights."""
    if base in TRANSFORMER_ARCHS or base in HUB_ARCHS:
        return HUB_ARCHS.get(base, base)
    config = Path(base) / "transformer" / "config.json"
    if config.is_file():
        return {k: v for k, v in json.loads(config.read_text()).items() if not k.startswith("_")}
    raise InputError(
        f"cannot tell the architecture of {base!r} without its weights: give a recipe whose base is a known "
        f"hub id ({', '.join(HUB_ARCHS)}), a model folder with transformer/config.json, or an architecture "
        f"name ({', '.join(sorted(TRANSFORMER_ARCHS))})."
    )
