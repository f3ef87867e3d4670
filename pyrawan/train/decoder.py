"""Distilling a tiny decoder from a VAE: training latents, the VAE's targets, the pixel loss.

Every training pair is ``(z, VAE.decode(z))`` for a model-space latent ``z`` ``[16, T, h, w]``: the
latent cache's clean latent of an item (variant 0) or that latent plus seeded Gaussian noise of std
``distill.decoder.perturb`` (variants 1 ...), so the decoder also learns how the VAE renders latents a
sampler puts slightly off the data (any latent has a valid target). The targets are computed once per
run and kept in the run folder as 8-bit frames (what a video file holds anyway).

Loss (docs/decoder.md): ``L1(pred, target) + gradient_weight * L1(D pred, D target)`` with ``D`` the
finite differences in x, y and time. L1 keeps edges sharper than L2 (its gradient does not vanish
with the error); the difference term weighs edges and motion directly, which is where a small
decoder's errors concentrate (blur, flicker), and costs three subtractions: no pretrained
perceptual network (LPIPS needs downloaded VGG/AlexNet weights and costs more than the decoder).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pyrawan.train.data import generator

TARGETS_FILE = "decoder_targets.safetensors"


@dataclass
class DecoderPairs:
    """Training latents ``latents`` ``[N, 16, T, h, w]`` and their VAE frames ``frames`` ``[N, F, 3, H, W]`` uint8."""

    latents: torch.Tensor
    frames: torch.Tensor

    def __len__(self) -> int:
        return len(self.latents)

    def batch(self, rows: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(latents [B, 16, T, h, w], target frames [B, F, 3, H, W] float in [0, 1])`` of ``rows`` on ``device``."""
        index = torch.tensor(rows)
        return self.latents[index].to(device), self.frames[index].to(device).float() / 255


def variant_latent(latent: torch.Tensor, seed: int, item: int, variant: int, perturb: float) -> torch.Tensor:
    """Variant ``variant`` of an item's latent ``[16, T, h, w]``: itself (0) or plus seeded noise of std ``perturb``."""
    if variant == 0 or perturb == 0:
        return latent
    noise = torch.randn(latent.shape, generator=generator(seed, "decoder-variant", item, variant))
    return latent + perturb * noise


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Frames in [0, 1] -> uint8 (rounded)."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8)


def compute_pairs(latents: torch.Tensor, decode: Callable[[torch.Tensor], torch.Tensor], batch: int,
                  report: Callable[[int], None] = lambda done: None) -> DecoderPairs:
    """Decode ``latents`` ``[N, 16, T, h, w]`` with ``decode`` (the VAE), ``batch`` at a time, into uint8 targets."""
    frames = []
    for start in range(0, len(latents), batch):
        frames.append(to_uint8(decode(latents[start:start + batch]).cpu()))
        report(min(start + batch, len(latents)))
    return DecoderPairs(latents, torch.cat(frames))


def save_pairs(path: Path, pairs: DecoderPairs, vae_sha256: str) -> None:
    """``path``: the latents, their uint8 targets and (metadata) the sha256 of the VAE that decoded them."""
    from safetensors.torch import save_file

    from pyrawan.fsutil import atomic_path

    with atomic_path(path) as tmp:
        save_file({"latents": pairs.latents.contiguous(), "frames": pairs.frames.contiguous()}, str(tmp),
                  metadata={"vae_sha256": vae_sha256})


def load_pairs(path: Path, latents: torch.Tensor, vae_sha256: str | None = None) -> DecoderPairs | None:
    """The pairs saved at ``path`` when they hold exactly ``latents`` (and were decoded by the VAE of
    ``vae_sha256`` when given); None otherwise."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as handle:
            made_by = (handle.metadata() or {}).get("vae_sha256")
        tensors = load_file(str(path))
    except (OSError, SafetensorError):
        return None
    saved, frames = tensors.get("latents"), tensors.get("frames")
    if saved is None or frames is None or saved.shape != latents.shape or len(frames) != len(latents):
        return None
    if not torch.equal(saved, latents) or (vae_sha256 is not None and made_by != vae_sha256):
        return None
    return DecoderPairs(saved, frames)


def differences(video: torch.Tensor) -> list[torch.Tensor]:
    """Finite differences of ``[B, F, 3, H, W]`` along x, y and time."""
    return [video[..., :, 1:] - video[..., :, :-1], video[..., 1:, :] - video[..., :-1, :],
            video[:, 1:] - video[:, :-1]]


def foreground(target: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """``[B, F, 1, H, W]`` 1.0 where a frame differs from its video's temporal median by more than ``threshold``
    (summed over RGB): what moves, in a toy video its objects."""
    median = target.median(dim=1, keepdim=True).values
    return ((target - median).abs().sum(2, keepdim=True) > threshold).to(target.dtype)


def neighbour_weights(weight: torch.Tensor) -> list[torch.Tensor]:
    """The weight of each finite difference of ``differences``: the larger of its two pixels' weights."""
    return [torch.maximum(weight[..., :, 1:], weight[..., :, :-1]),
            torch.maximum(weight[..., 1:, :], weight[..., :-1, :]), torch.maximum(weight[:, 1:], weight[:, :-1])]


def weighted_l1(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    error = (a - b).abs()
    return error.mean() if weight is None else (error * weight).mean() / weight.mean()


def decoder_loss(pred: torch.Tensor, target: torch.Tensor, gradient_weight: float,
                 foreground_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """``(loss, parts)``: L1 + ``gradient_weight`` x mean L1 of the finite differences, each weighted
    ``1 + foreground_weight`` on ``foreground`` pixels (and normalised by the mean weight); ``parts`` has
    l1, grad_l1 and the MSE of the clamped frames (as floats)."""
    weight = 1 + foreground_weight * foreground(target) if foreground_weight else None
    l1 = weighted_l1(pred, target, weight)
    weights = neighbour_weights(weight) if weight is not None else [None] * 3
    grad = sum(weighted_l1(p, t, w) for p, t, w in zip(differences(pred), differences(target), weights)) / 3
    loss = l1 + gradient_weight * grad
    mse = F.mse_loss(pred.detach().clamp(0, 1), target)
    return loss, {"l1": float(l1.detach()), "grad_l1": float(grad.detach()), "mse": float(mse)}


def psnr(mse: float) -> float:
    """PSNR in dB of frames in [0, 1] with mean squared error ``mse``."""
    import math

    return 10 * math.log10(1 / max(mse, 1e-12))
