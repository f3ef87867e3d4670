"""The ``toy`` preset: a small Wan2.1 stack trained on the toy world, with weights shipped in the package.

Architecture (17×64×64 pixels ↔ latents [16, 5, 8, 8]): a small ``AutoencoderKLWan`` (base_dim 16),
a tiny UMT5 text encoder (randomly initialised from a fixed seed and then frozen; the teacher learns
to read its embeddings), a word-level offline tokenizer that holds every word of the toy grammar,
and a small ``WanTransformer3DModel`` teacher. The shipped weights live in ``pyrawan/toy/weights/``
with ``weights.json`` (file, sha256 and full constructor config per component); every file is
verified against its recorded sha256 before it loads. A component that is not listed there (while
bootstrapping the stack) is built randomly from the seed. How the weights were trained:
``docs/toy-world.md``.
"""
from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

from pyrawan.errors import RunError
from pyrawan.models.presets import TINY_TEXT_ENCODER, TRANSFORMER_ARCHS

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "toy" / "weights"
WEIGHTS_INDEX = "weights.json"

TOY_TRANSFORMER: dict[str, Any] = TRANSFORMER_ARCHS["toy"]

# Spatial factor 8 (four levels), temporal 4, as in the real Wan VAE; 16 latent channels.
TOY_VAE: dict[str, Any] = dict(
    base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
    temperal_downsample=[False, True, True], scale_factor_temporal=4, scale_factor_spatial=8,
)



def toy_vae_config(spatial: int = 8) -> dict[str, Any]:
    """The toy VAE's constructor config at spatial factor 8 (``TOY_VAE``) or 4 (17×64×64 ↔ 16×5×16×16).

    The 4× VAE keeps two levels, both also halving time (so still 4× in time); objects of the toy
    world then span four times as many latent cells, which the 8× grid needs to keep corners.
    """
    if spatial == 8:
        return dict(TOY_VAE)
    if spatial == 4:
        return {**TOY_VAE, "dim_mult": [1, 2, 2], "temperal_downsample": [True, True], "scale_factor_spatial": 4}
    raise ValueError(f"toy VAE spatial factor {spatial}: use 8 or 4")


TOY_TEXT_ENCODER: dict[str, Any] = TINY_TEXT_ENCODER  # random from a seed, shipped as a file

_GLUE_WORDS = ("a", "an", "the", "on", "moving", "background", "plain", "gradient", "gray", "grey",
               "slowly", "quickly", "slow", "fast", "quick")


def toy_words() -> list[str]:
    """Every word of the toy grammar (shapes, colours, sizes, directions, backgrounds, glue words)."""
    from pyrawan.toy import world

    words = [w for values in world.vocabulary().values() for w in values] + list(_GLUE_WORDS)
    return list(dict.fromkeys(words))


def toy_tokenizer() -> T5Tokenizer:
    """Offline Unigram ``T5Tokenizer``: specials, one piece per toy-grammar word, and printable ASCII.

    A caption of the toy grammar tokenises to one token per word (``up-left`` is one piece), so
    a caption is about 14 tokens; other ASCII text falls back to characters.
    """
    chars = [c for c in string.printable if not c.isspace()]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -3.0) for w in toy_words()]
    vocab += [(c, -5.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def weights_index(folder: Path = WEIGHTS_DIR) -> dict[str, dict[str, Any]]:
    """``weights.json`` of the shipped weights (``{}`` when none are shipped)."""
    path = folder / WEIGHTS_INDEX
    return json.loads(path.read_text()) if path.is_file() else {}


def _build(component: str, config: dict[str, Any]) -> torch.nn.Module:
    """A freshly constructed module of ``component`` from its constructor ``config``."""
    if component == "decoder":
        from pyrawan.models.tiny_decoder import TinyDecoder, parse_config

        return TinyDecoder(parse_config(config, f"{WEIGHTS_DIR / WEIGHTS_INDEX} (decoder)"))
    if component == "text_encoder":
        return UMT5EncoderModel(UMT5Config(**config))
    if component == "vae":
        return AutoencoderKLWan(**config)
    return WanTransformer3DModel(**config)


def default_config(component: str) -> dict[str, Any]:
    """The code-defined constructor config of a toy component (used before weights ship)."""
    return dict({"text_encoder": TOY_TEXT_ENCODER, "vae": TOY_VAE, "transformer": TOY_TRANSFORMER}[component])


def shipped_config(component: str) -> dict[str, Any]:
    """The constructor config the toy preset builds ``component`` from: the shipped one, else the default."""
    entry = weights_index().get(component)
    return dict(entry["config"]) if entry is not None else default_config(component)


def load_shipped(component: str, entry: dict[str, Any], folder: Path = WEIGHTS_DIR) -> torch.nn.Module:
    """Build ``component`` from ``entry['config']`` and load its safetensors file after a sha256 check."""
    from safetensors.torch import load_file

    from pyrawan.fsutil import sha256_file

    path = folder / entry["file"]
    if not path.is_file():
        raise RunError(f"The toy preset's {component} weights {path} are missing; reinstall pyrawan.")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise RunError(
            f"The toy preset's {component} weights {path} do not match their recorded sha256 "
            f"({digest} != {entry['sha256']} in {folder / WEIGHTS_INDEX}); the file is corrupted or "
            "was replaced. Reinstall pyrawan (or restore the file from git).")
    module = _build(component, entry["config"])   # real init: non-persistent buffers (RoPE) are not in the file
    module.load_state_dict(load_file(str(path)), strict=True)
    return module.eval()


def toy_module(component: str, seed: int, seeded) -> torch.nn.Module:
    """One toy module: the shipped weights when listed in ``weights.json``, else random from ``seed``."""
    entry = weights_index().get(component)
    if entry is not None:
        return load_shipped(component, entry)
    offset = {"text_encoder": 1, "vae": 2, "transformer": 3}[component]
    with seeded(seed * 1000 + offset):
        return _build(component, default_config(component)).eval()


def toy_decoder() -> torch.nn.Module:
    """The toy VAE's distilled tiny decoder (``pyrawan distill toy-decoder``), shipped in ``weights.json``."""
    entry = weights_index().get("decoder")
    if entry is None:
        raise RunError("this pyrawan ships no tiny decoder for the toy preset yet; distill one with "
                       "`pyrawan distill toy-decoder data.cache=CACHE -o OUT` and pass --decoder-weights OUT.")
    return load_shipped("decoder", entry)
