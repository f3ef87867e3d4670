"""Encoding for the latent cache: stage latents of a clip (Definitions 1 and 2), caption embeddings,
and fingerprints of the components that produce them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pyrawan.data.frames import stage_clips, to_vae_input
from pyrawan.errors import RunError
from pyrawan.models.artifact import state_dict_sha256
from pyrawan.models.vae import encode_video
from pyrawan.pyramid.resize import get_resizer

if TYPE_CHECKING:
    from pyrawan.models.presets import WanComponents

NORMALISATION = "wan: (z - vae.config.latents_mean) / vae.config.latents_std, per channel"


def vae_sha256(components: WanComponents) -> str:
    """sha256 of the VAE's state dict (names, dtypes, shapes, bytes): the identity of the latents."""
    return state_dict_sha256(components.vae)


def text_encoder_fingerprint(components: WanComponents) -> str:
    """Identity of the text encoder: hub repo + revision, preset + seed (with the dtype), else a state-dict sha256.

    Hashing umT5-XXL's 11 GB takes a while, so an immutable hub revision or a preset stands for it.
    """
    source = components.source.get("text_encoder", {})
    dtype = str(next(components.text_encoder.parameters()).dtype)
    if source.get("repo_id") and source.get("revision"):
        return f"hub:{source['repo_id']}@{source['revision']}/{source.get('subfolder', 'text_encoder')}|{dtype}"
    if "preset" in source:
        return f"preset:{source['preset']}:{source.get('seed', 0)}|{dtype}"
    return f"sha256:{state_dict_sha256(components.text_encoder)}"


def normalisation(components: WanComponents) -> dict:
    """How the cached latents are normalised (the VAE's per-channel mean and std, recorded explicitly)."""
    config = components.vae.config
    return {"kind": NORMALISATION, "latents_mean": [float(v) for v in config.latents_mean],
            "latents_std": [float(v) for v in config.latents_std]}


def stage_latents(
    clip: torch.Tensor, components: WanComponents, num_stages: int, definition: int, resizer: str,
    keep_time: bool = False,
) -> list[torch.Tensor]:
    """Wan-normalised latents of every stage of a pixel clip ``[F, 3, H, W]``: ``[16, T_i, H_i, W_i]`` float32 (CPU).

    Definition 1: stage i+1 = ``down`` of stage i in latent space (``resizer``). Definition 2: the pixel
    clip is resized to each stage (``stage_clips``) and VAE-encoded.
    """
    vae = components.vae
    if definition == 2:
        latents = [encode_video(vae, to_vae_input(c)) for c in stage_clips(clip, num_stages, keep_time)]
    else:
        latents = [encode_video(vae, to_vae_input(clip))]
        down = get_resizer(resizer, keep_time).down
        for _ in range(num_stages - 1):
            latents.append(down(latents[-1]))
    return [z[0].float().cpu().contiguous() for z in latents]


def check_shapes(latents: list[torch.Tensor], shapes: list[tuple[int, int, int]], video: str) -> None:
    """Every stage latent has the expected ``(T, H, W)`` (a VAE with other strides would not)."""
    got = [tuple(z.shape[-3:]) for z in latents]
    if got != [tuple(s) for s in shapes]:
        raise RunError(f"encoding {video} gave latent shapes {got}, expected {list(map(tuple, shapes))}: the VAE "
                       f"does not have Wan's strides (4, 8, 8); use a Wan2.1 VAE.")


@torch.no_grad()
def caption_embeddings(components: WanComponents, captions: list[str], max_sequence_length: int) -> list[torch.Tensor]:
    """umT5 embeddings of each caption, trailing zero rows (padding) removed: ``[len_k, D]`` float32 (CPU).

    Padding back to ``max_sequence_length`` with zeros gives exactly ``encode_prompts(..)[0][k]``.
    """
    from pyrawan.models.denoiser import encode_prompts

    cond, _ = encode_prompts(components, captions, None, max_sequence_length)
    return [trim_padding(row.float().cpu()) for row in cond]


def trim_padding(embedding: torch.Tensor) -> torch.Tensor:
    """``[L, D] -> [len, D]``: drop the trailing all-zero rows (keep at least one row)."""
    nonzero = embedding.abs().sum(-1).nonzero()
    length = int(nonzero[-1]) + 1 if len(nonzero) else 1
    return embedding[:length].contiguous()


def pad_rows(embedding: torch.Tensor, length: int) -> torch.Tensor:
    """``[len, D] -> [length, D]`` with zero rows appended."""
    pad = length - embedding.shape[0]
    return torch.nn.functional.pad(embedding, (0, 0, 0, pad)) if pad > 0 else embedding[:length]
