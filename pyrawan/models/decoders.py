"""Everything that decodes a video takes a decoder: the model's VAE or its tiny decoder, behind one call.

A ``Decoder`` maps model-space latents ``[B, 16, T, h, w]`` to frames ``[B, 4(T-1)+1, 3, H, W]``
float32 in [0, 1] on the CPU. ``decoder_for(model, "vae" | "tiny")`` picks one for a loaded model.
The tiny decoder of a model is, in this order: the weights given by the user (a TAEHV ``.pth`` /
``.safetensors`` file or a decoder folder), the artifact's own ``decoder/`` component (verified
against its manifest), or the decoder shipped for its VAE (the ``toy`` preset's, so every model
converted or trained from ``toy`` has one).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pyrawan.errors import InputError
from pyrawan.models.tiny_decoder import (CONFIG_FILE, DECODER_DIR, WEIGHTS_FILE, TinyDecoder, load_folder, load_weights,
                                         parse_config)

DECODERS = ("vae", "tiny")


@dataclass(frozen=True)
class Decoder:
    """A named ``decode``: model-space latents ``[B, 16, T, h, w]`` -> frames ``[B, F, 3, H, W]`` in [0, 1] (CPU)."""

    name: str                                   # vae | tiny
    decode: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode(latents)

    @property
    def stage(self) -> str:
        """What ran, for messages: "the VAE decode" or "the tiny decoder"."""
        return "the VAE decode" if self.name == "vae" else "the tiny decoder"


def vae_decoder(components, decode: Callable | None = None) -> Decoder:
    """The model's VAE (``decode_latents``, or ``decode`` with its signature; a GPU decodes one video at a
    time to bound memory)."""
    if decode is None:
        from pyrawan.models.vae import decode_latents as decode
    device = next(components.vae.parameters()).device
    chunk = 1 if device.type == "cuda" else None
    return Decoder("vae", lambda latents: decode(components, latents, chunk=chunk).cpu())


def tiny_decoder(module: TinyDecoder) -> Decoder:
    """A tiny decoder's ``decode`` without autograd, frames on the CPU."""
    @torch.inference_mode()
    def decode(latents: torch.Tensor) -> torch.Tensor:
        return module.decode(latents).cpu()
    return Decoder("tiny", decode)


def artifact_decoder(folder: Path) -> TinyDecoder | None:
    """The ``decoder/`` component of a model artifact, read through its manifest (None when it has none)."""
    from pyrawan.artifact_files import ArtifactFiles

    if not (folder / DECODER_DIR / CONFIG_FILE).is_file():
        return None
    files = ArtifactFiles(folder, "model")
    config = parse_config(files.read_json(f"{DECODER_DIR}/{CONFIG_FILE}"), str(folder / DECODER_DIR / CONFIG_FILE))
    return load_weights(files.verified_path(f"{DECODER_DIR}/{WEIGHTS_FILE}"), config)


def shipped_decoder(components) -> TinyDecoder | None:
    """The tiny decoder shipped for the model's VAE: the ``toy`` preset's (None for any other VAE)."""
    source = (getattr(components, "source", None) or {}).get("vae", {})
    if source.get("preset") != "toy":
        return None
    from pyrawan.models.toy import toy_decoder

    return toy_decoder()


def user_decoder(path: Path) -> TinyDecoder:
    """``--decoder-weights``: a decoder folder (``config.json`` + ``decoder.safetensors``), a model artifact with
    ``decoder/``, or one weights file in TAEHV's layout (taew2_1's widths and Wan 2.1's latent statistics)."""
    path = Path(path)
    if path.is_dir():
        if (path / DECODER_DIR).is_dir():
            return artifact_decoder(path) or load_folder(path / DECODER_DIR)
        return load_folder(path)
    return load_weights(path)


def find_tiny_decoder(model, weights: Path | None = None) -> TinyDecoder:
    """The tiny decoder of a loaded model (see the module docstring), on its VAE's device, in float32."""
    found = user_decoder(weights) if weights is not None else None
    if found is None and getattr(model, "path", None) is not None:
        found = artifact_decoder(Path(model.path))
    if found is None:
        found = shipped_decoder(model.components)
    if found is None:
        where = model.path or "this model"
        raise InputError(f"--decoder tiny: {where} has no tiny decoder (no decoder/ component, and its VAE is not the "
                         "toy preset's). Distill one with `pyrawan distill wan1.3b-decoder` (or toy-decoder) and "
                         "sample that artifact, give TAEHV weights with --decoder-weights taew2_1.safetensors, or "
                         "use --decoder vae.")
    device = next(model.components.vae.parameters()).device
    return found.to(device=device, dtype=torch.float32).eval()


def decoder_for(model, name: str = "vae", weights: Path | None = None) -> Decoder:
    """The ``Decoder`` called ``name`` (``vae`` | ``tiny``) of a loaded model."""
    if name not in DECODERS:
        raise InputError(f"--decoder {name!r}: choose one of {', '.join(DECODERS)}.")
    if name == "vae":
        if weights is not None:
            raise InputError("--decoder-weights gives a tiny decoder's weights; use it with --decoder tiny.")
        return vae_decoder(model.components)
    return tiny_decoder(find_tiny_decoder(model, weights))
