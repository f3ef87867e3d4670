"""One-file Wan transformers with the original checkpoint key names (what Wan's own code and ComfyUI load).

``to_original`` renames a diffusers ``WanTransformer3DModel`` state dict to the original layout
(``blocks.N.self_attn.q``, ``head.head``, ...); diffusers' own
``convert_wan_transformer_to_diffusers`` is the inverse (``from_original``). A file written by
``pyrawan export --format single-file`` also records, in its safetensors header, the transformer's
diffusers config, the model's ``pyramid.json`` and its other components by reference, so
``pyrawan convert`` reads it back without any other file (``components_from_file``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from pyrawan.errors import InputError

CONFIG_KEY = "pyrawan.transformer_config"      # the diffusers config.json of the transformer
PYRAMID_KEY = "pyrawan.pyramid"                # the model's pyramid.json
COMPONENTS_KEY = "pyrawan.components"          # the other components, as components.json entries
ORIGINAL_MARKERS = ("head.modulation", "model.diffusion_model.head.modulation")

# diffusers name -> original name, applied in order to each key (each key matches at most one block rule).
_RENAMES = [
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
    (r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation"),
    (r"^blocks\.(\d+)\.attn1\.", r"blocks.\1.self_attn."),
    (r"^blocks\.(\d+)\.attn2\.", r"blocks.\1.cross_attn."),
    (r"\.to_q\.", ".q."), (r"\.to_k\.", ".k."), (r"\.to_v\.", ".v."), (r"\.to_out\.0\.", ".o."),
    (r"^blocks\.(\d+)\.norm2\.", r"blocks.\1.norm3."),          # the cross-attention norm (affine)
    (r"^blocks\.(\d+)\.ffn\.net\.0\.proj\.", r"blocks.\1.ffn.0."),
    (r"^blocks\.(\d+)\.ffn\.net\.2\.", r"blocks.\1.ffn.2."),
]
_KNOWN = re.compile(r"^(patch_embedding\.|time_embedding\.|text_embedding\.|time_projection\.|head\.|blocks\.\d+\.)")


def original_key(name: str) -> str:
    """The original Wan checkpoint name of one diffusers transformer key."""
    for pattern, repl in _RENAMES:
        name = re.sub(pattern, repl, name)
    return name


def to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers Wan transformer state dict with the original key names (tensors shared, not copied)."""
    out = {original_key(k): v for k, v in state.items()}
    strange = sorted(k for k in out if not _KNOWN.match(k))
    if strange or len(out) != len(state):
        raise InputError(f"the transformer has weights the original Wan layout has no name for ({', '.join(strange[:4])}"
                         f"); only a standard Wan2.1 text-to-video transformer can be written as one original-layout "
                         f"file. Export it with --format diffusers instead.")
    return out


def from_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original (or ComfyUI ``model.diffusion_model.``-prefixed) names -> diffusers names, by diffusers' converter."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    return convert_wan_transformer_to_diffusers(dict(state))


def is_original(keys) -> bool:
    """True when a state dict's keys are in the original Wan layout (diffusers' own detection rule)."""
    keys = set(keys)
    return any(marker in keys for marker in ORIGINAL_MARKERS)


def read_header(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file; ``InputError`` if it is no readable safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (OSError, SafetensorError, ValueError) as err:
        raise InputError(f"{path} is not a readable .safetensors file ({err}); give a Wan transformer checkpoint "
                         f"in safetensors format (pyrawan never loads pickled weights).") from None


def _json_entry(header: dict[str, str], key: str, path: Path) -> Any:
    try:
        return json.loads(header[key])
    except (KeyError, ValueError) as err:
        raise InputError(f"{path}: its header entry {key!r} is missing or not JSON ({err}); the file was not "
                         f"written by `pyrawan export --format single-file`, or it was edited.") from None


def pyramid_of_file(path: Path) -> dict | None:
    """The ``pyramid.json`` recorded in a single file's header, or None."""
    header = read_header(path)
    return _json_entry(header, PYRAMID_KEY, path) if PYRAMID_KEY in header else None


def transformer_from_file(path: Path, config: dict, device, dtype: torch.dtype):
    """A ``WanTransformer3DModel`` from one file (original or diffusers names) and its diffusers ``config``."""
    from pyrawan.models.ppf import transformer_class
    from pyrawan.models.presets import cast_keep_fp32

    state = load_file(str(path))
    if is_original(state):
        state = from_original(state)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    cls = transformer_class(config)
    from accelerate import init_empty_weights

    with init_empty_weights():                           # parameters on the meta device, buffers real
        model = cls.from_config(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise InputError(f"{path} does not fit the transformer config recorded with it ({first}); the file was "
                         f"changed or belongs to another model. Re-export it.") from None
    return cast_keep_fp32(model, dtype).to(device).eval()


def components_from_file(path: Path, device, dtype: torch.dtype, vae_dtype: torch.dtype | None):
    """The whole stack from a file written by ``pyrawan export --format single-file``, or None for another file.

    The transformer comes from the file (its config from the header); the tokenizer, text encoder and
    VAE from the references in the header, verified by hash as a model artifact's are.
    """
    from pyrawan.models.artifact import _check_entry, _load_reference
    from pyrawan.models.presets import COMPONENT_NAMES, WanComponents

    header = read_header(path)
    if CONFIG_KEY not in header or COMPONENTS_KEY not in header:
        return None
    config = _json_entry(header, CONFIG_KEY, path)
    entries = _json_entry(header, COMPONENTS_KEY, path)
    parts: dict[str, Any] = {"source": {}}
    for name in COMPONENT_NAMES:
        if name == "transformer":
            continue
        entry = entries.get(name) if isinstance(entries, dict) else None
        if entry is None or "saved" in entry:
            raise InputError(f"{path} does not say where its {name} comes from (the model it was exported from "
                             f"kept its {name} inside its own folder); load it with config_from (a diffusers Wan2.1 "
                             f"folder with the other components), or export that model with --format diffusers.")
        entry = _check_entry(path, name, entry) or entry             # validated (a reference of a known kind)
        comp_dtype = (vae_dtype or dtype) if name == "vae" else dtype
        parts[name], parts["source"][name] = _load_reference(path, name, entry, device, comp_dtype)
    parts["transformer"] = transformer_from_file(path, config, device, dtype)
    parts["source"]["transformer"] = {"file": str(path.resolve())}
    return WanComponents(**parts)


# Official diffusers repositories of the Wan2.1 text-to-video transformers, by model width.
WAN21_T2V_REPOS = {1536: "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", 5120: "Wan-AI/Wan2.1-T2V-14B-Diffusers"}


def default_config_from(path: Path) -> str:
    """The official diffusers repository whose config and other components fit a plain Wan2.1 T2V file."""
    read_header(path)                                   # a readable safetensors file first
    with safe_open(str(path), framework="pt") as handle:
        names = set(handle.keys())
        prefix = "model.diffusion_model." if "model.diffusion_model.patch_embedding.weight" in names else ""
        shape = handle.get_slice(f"{prefix}patch_embedding.weight").get_shape() \
            if f"{prefix}patch_embedding.weight" in names else None
    if shape is None or shape[0] not in WAN21_T2V_REPOS or shape[1] != 16:
        raise InputError(f"{path} is a single .safetensors file that holds only a transformer, and not one of "
                         f"Wan2.1 T2V 1.3B or 14B (patch_embedding.weight of width 1536 or 5120 over 16 channels), so "
                         f"its config and other components are unknown; also give config_from (--config-from): a "
                         f"diffusers Wan2.1 pipeline folder or Hub id with transformer/config.json, the tokenizer, "
                         f"text encoder and VAE.")
    return WAN21_T2V_REPOS[shape[0]]
