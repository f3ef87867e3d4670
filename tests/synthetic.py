"""Synthetic data for the data-path tests: videos written with PyAV, datasets in every layout, and a
stand-in VAE whose latents follow the pixels (the tiny preset's random VAE barely does).
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch
from diffusers.configuration_utils import FrozenDict

from pyrawan.data.video import write_video

FRAMES, SIZE = 17, 64


def smooth_video(seed: int = 0, frames: int = FRAMES, size: int = SIZE) -> torch.Tensor:
    """A slowly moving colour gradient ``[F, 3, H, W]`` in [0.2, 0.8] (little fine detail)."""
    g = torch.Generator().manual_seed(seed)
    phase = torch.rand(3, generator=g).view(1, 3, 1, 1)
    t = torch.linspace(0, 1, frames).view(frames, 1, 1, 1)
    y = torch.linspace(0, 1, size).view(1, 1, size, 1)
    x = torch.linspace(0, 1, size).view(1, 1, 1, size)
    return 0.5 + 0.3 * torch.sin(math.pi * (0.7 * x + 0.4 * y + 0.3 * t) + 2 * math.pi * phase)


def detailed_video(seed: int = 0, frames: int = FRAMES, size: int = SIZE, block: int = 8) -> torch.Tensor:
    """``smooth_video(seed)`` plus random ``block``-pixel tiles that change every frame: the same content with
    fine detail added (``[F, 3, H, W]`` in [0, 1])."""
    g = torch.Generator().manual_seed(1000 + seed)
    tiles = torch.rand(frames, 3, size // block, size // block, generator=g)
    detail = tiles.repeat_interleave(block, -2).repeat_interleave(block, -1) - 0.5
    return smooth_video(seed, frames, size) + 0.4 * detail


def write_clip(path: Path, video: torch.Tensor, fps: int = 16) -> Path:
    """Write ``video`` ``[F, 3, H, W]`` as an H.264 mp4 (near-lossless)."""
    return write_video(path, video, fps=fps, crf=4)


def make_dataset(root: Path, layout: str, videos: list[torch.Tensor], captions: list[str] | None = None) -> Path:
    """A dataset folder in ``layout`` with one mp4 per video (``videos/clip{i}.mp4``, or beside its caption)."""
    root.mkdir(parents=True, exist_ok=True)
    captions = captions or [f"clip number {i}" for i in range(len(videos))]
    sub = "" if layout == "sidecar" else "videos/"
    names = [f"{sub}clip{i}.mp4" for i in range(len(videos))]
    for name, video in zip(names, videos):
        write_clip(root / name, video)
    if layout == "sidecar":
        for name, caption in zip(names, captions):
            (root / name).with_suffix(".txt").write_text(caption)
    elif layout == "metadata.csv":
        lines = ["file_name,text"] + [f'{n},"{c}"' for n, c in zip(names, captions)]
        (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    elif layout in ("metadata.jsonl", "samples.jsonl"):
        (root / layout).write_text("".join(json.dumps({"video": n, "prompt": c}) + "\n" for n, c in zip(names, captions)))
    elif layout == "metadata.json":
        (root / "metadata.json").write_text(json.dumps([{"path": n, "caption": c} for n, c in zip(names, captions)]))
    elif layout == "prompts+videos":
        (root / "prompts.txt").write_text("\n".join(captions) + "\n")
        (root / "videos.txt").write_text("\n".join(names) + "\n")
    return root


class _Posterior:
    def __init__(self, z: torch.Tensor):
        self.z = z

    def mode(self) -> torch.Tensor:
        return self.z

    def sample(self, generator=None) -> torch.Tensor:
        return self.z


class PoolVAE(torch.nn.Module):
    """Stand-in for Wan's VAE with its strides: frame 0 alone, then groups of 4 frames, 8x8 pixel blocks
    averaged, 3 colours mixed into 16 channels by a fixed matrix. Latents follow the pixels' detail.
    """

    def __init__(self):
        super().__init__()
        mix = torch.randn(16, 3, generator=torch.Generator().manual_seed(7))
        self.mix = torch.nn.Parameter(mix * 2.0, requires_grad=False)
        self.config = FrozenDict(latents_mean=[0.0] * 16, latents_std=[1.0] * 16, scale_factor_temporal=4,
                                 scale_factor_spatial=8)

    def encode(self, video: torch.Tensor) -> SimpleNamespace:
        """``[B, 3, F, H, W]`` in [-1, 1] -> posterior over ``[B, 16, 1 + (F - 1) / 4, H / 8, W / 8]``."""
        first, rest = video[:, :, :1], video[:, :, 1:]
        groups = rest.unflatten(2, (-1, 4)).mean(3) if rest.shape[2] else rest
        frames = torch.cat([first, groups], 2)
        pooled = torch.nn.functional.avg_pool3d(frames, (1, 8, 8))
        z = torch.einsum("oc,bcthw->bothw", self.mix, pooled)
        return SimpleNamespace(latent_dist=_Posterior(z))


def pool_components(tiny_components):
    """The tiny preset's text encoder and tokenizer with ``PoolVAE`` as the VAE."""
    return replace(tiny_components, vae=PoolVAE(), source={k: v for k, v in tiny_components.source.items() if k != "vae"})
