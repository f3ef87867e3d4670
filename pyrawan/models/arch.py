"""The architecture of a model reference (transformer config, VAE factors), known without loading weights."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from pyrawan.errors import InputError
from pyrawan.models.presets import TRANSFORMER_ARCHS
from pyrawan.pyramid.geometry import WAN21_VAE_FACTORS

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
        from pyrawan.models.model_files import check_transformer_folder

        check_transformer_folder(config.parent)
        return {k: v for k, v in _read_json(config, "the transformer of").items() if not k.startswith("_")}
    raise InputError(
        f"cannot tell the architecture of {base!r} without its weights: give a recipe whose base is a known "
        f"hub id ({', '.join(HUB_ARCHS)}), a model folder with transformer/config.json, or an architecture "
        f"name ({', '.join(sorted(TRANSFORMER_ARCHS))})."
    )


def factors_of_vae_config(config: Mapping, where: str) -> tuple[int, int]:
    """(temporal, spatial) compression of an ``AutoencoderKLWan`` config, from its levels.

    Spatial: 2 per level after the first (``dim_mult``) times ``patch_size``; temporal: 2 per
    ``temperal_downsample`` flag. A recorded ``scale_factor_*`` that disagrees is an error.
    """
    spatial = 2 ** (len(config.get("dim_mult", [1, 2, 4, 4])) - 1) * int(config.get("patch_size") or 1)
    temporal = 2 ** sum(bool(x) for x in config.get("temperal_downsample", [False, True, True]))
    for key, value in (("scale_factor_temporal", temporal), ("scale_factor_spatial", spatial)):
        if config.get(key) not in (None, value):
            raise InputError(f"{where}: {key} = {config[key]} but the VAE's levels compress by {value} "
                             f"(dim_mult, temperal_downsample, patch_size); set {key}: {value} or remove it.")
    return temporal, spatial


def vae_factors(base: str) -> tuple[int, int]:
    """(temporal, spatial) VAE compression of a model reference; Wan2.1's (4, 8) unless it says otherwise.

    A pyrawan model folder (its ``pyramid.json``), a diffusers folder (``vae/config.json``) and the
    ``toy`` preset (its shipped ``weights.json``) say otherwise; hub ids, single files and other presets
    are Wan2.1.
    """
    spec, config = Path(base) / "pyramid.json", Path(base) / "vae" / "config.json"
    if spec.is_file():                     # validated in full where the model loads (PyramidSpec)
        factors = _read_json(spec, "the pyramid of").get("vae_factors", list(WAN21_VAE_FACTORS))
        if not (isinstance(factors, list) and len(factors) == 2 and all(type(f) is int and f > 0 for f in factors)):
            raise InputError(f"{spec}: vae_factors = {factors!r} is not [temporal, spatial] (two positive whole "
                             "numbers, [4, 8] for Wan2.1); re-create the model with `pyrawan convert`.")
        return factors[0], factors[1]
    if base == "toy":
        from pyrawan.models.toy import shipped_config

        return factors_of_vae_config(shipped_config("vae"), "the toy preset's vae")
    if config.is_file():
        return factors_of_vae_config(_read_json(config, "the vae from"), str(config))
    return WAN21_VAE_FACTORS


def _read_json(path: Path, what: str) -> dict:
    """A JSON object file, or an ``InputError`` naming ``what`` cannot be loaded from its folder."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"cannot load {what} {path.parent}: its {path.name} is not readable JSON "
                         f"({type(err).__name__}: {err}); re-create or re-download that folder.") from None
    if not isinstance(data, dict):
        raise InputError(f"cannot load {what} {path.parent}: its {path.name} is not a JSON object; re-create or "
                         "re-download that folder.")
    return data
