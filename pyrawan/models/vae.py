"""Wan VAE helpers: latent (de)normalisation, encoding pixels and decoding normalised latents.

Model-space ("normalised") latents are ``z_n = (z - mean) / std`` with the per-channel
``vae.config.latents_mean/std``; that is what the transformer sees and what ``WanPipeline``
returns for ``output_type="latent"``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from diffusers import AutoencoderKLWan

if TYPE_CHECKING:
    from pyrawan.models.presets import WanComponents


def _stats(vae: AutoencoderKLWan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` shaped [1, C, 1, 1, 1] on ``like``'s device and dtype."""
    shape = (1, -1, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(like.device, like.dtype)
    std = torch.tensor(vae.config.latents_std).view(shape).to(like.device, like.dtype)
    return mean, std


def normalise_latents(vae: AutoencoderKLWan, z: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents [B, C, T, H, W] -> model-space latents ``(z - mean) / std`` (same shape)."""
    mean, std = _stats(vae, z)
    return (z - mean) / std


def denormalise_latents(vae: AutoencoderKLWan, z_n: torch.Tensor) -> torch.Tensor:
    """Model-space latents [B, C, T, H, W] -> raw VAE latents ``z_n * std + mean`` (same shape)."""
    mean, std = _stats(vae, z_n)
    return z_n * std + mean


@torch.no_grad()
def encode_video(
    vae: AutoencoderKLWan,
    video: torch.Tensor,
    sample: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pixels [B, 3, F, H, W] in [-1, 1] (F = 4k+1) -> normalised latents [B, 16, 1+(F-1)/4, H/8, W/8].

    Uses the posterior mode unless ``sample`` (then draws with ``generator``). Returns fp32.
    """
    param = next(vae.parameters())
    dist = vae.encode(video.to(param.device, param.dtype)).latent_dist
    z = dist.sample(generator) if sample else dist.mode()
    return normalise_latents(vae, z.float())


@contextlib.contextmanager
def channels_last(module: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Inside the block every ``Conv3d`` weight of ``module`` is channels-last (NDHWC), then restored.

    On a CPU this halves the Wan VAE's decode time (oneDNN convolutions, and the RMS norms over
    channels become reductions over the innermost axis); the results equal the default layout's to
    float rounding. The weights are only re-laid out, never changed, and are restored afterwards.
    """
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv3d)] if enabled else []
    kept = [conv.weight.data for conv in convs]
    try:
        for conv in convs:
            conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last_3d)
        yield
    finally:
        for conv, data in zip(convs, kept):
            conv.weight.data = data


@torch.no_grad()
def decode_latents(components: WanComponents | AutoencoderKLWan, latents: torch.Tensor,
                   chunk: int | None = None, layout_channels_last: bool | None = None) -> torch.Tensor:
    """Normalised latents [B, 16, T, H, W] -> video [B, 4(T-1)+1, 3, 8H, 8W] float32 in [0, 1].

    Same steps as ``WanPipeline``: de-normalise, ``vae.decode``, ``(x + 1) / 2`` clamped, in the
    VAE's dtype. ``chunk``: decode at most that many videos per ``vae.decode`` call (None: all at
    once, which is fastest on a CPU; on a GPU one full-size video already fills it and bounds memory).
    ``layout_channels_last``: run the convolutions channels-last (None: on a CPU only; see
    ``channels_last``). The result is on the VAE's device.
    """
    vae = getattr(components, "vae", components)
    param = next(vae.parameters())
    step = chunk or latents.shape[0]
    parts = []
    use_cl = param.device.type == "cpu" if layout_channels_last is None else layout_channels_last
    with channels_last(vae, use_cl):
        for start in range(0, latents.shape[0], step):
            z = denormalise_latents(vae, latents[start:start + step].to(param.device, param.dtype))
            video = vae.decode(z, return_dict=False)[0]              # [b, 3, F, H, W] in ~[-1, 1]
            parts.append((video.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4).contiguous())
    return torch.cat(parts)                                          # [B, F, 3, H, W]
