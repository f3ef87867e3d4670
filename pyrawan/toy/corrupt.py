"""Corruptions that ToyBench must catch, and the validation that checks it does.

Each corruption maps a video [F, 3, H, W] in [0, 1] to a damaged one of the same shape and
targets one ToyBench metric (``TARGETS``). ``validate`` renders toy scenes, optionally round-trips
them through mp4 like any generated video, and scores the real videos and every corruption.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from pyrawan.errors import InputError


def add_noise(video: torch.Tensor, seed: int = 0, sigma: float = 0.08) -> torch.Tensor:
    """Independent Gaussian noise of std ``sigma`` on every pixel and frame."""
    noise = torch.randn(video.shape, generator=torch.Generator().manual_seed(seed)) * sigma
    return (video + noise).clamp(0, 1)


def blur(video: torch.Tensor, seed: int = 0, sigma: float = 1.5) -> torch.Tensor:
    """Spatial Gaussian blur of std ``sigma`` pixels (each frame on its own)."""
    return torch.from_numpy(ndimage.gaussian_filter(video.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest"))


def shuffle_frames(video: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The frames in a random order (never the original one)."""
    rng = np.random.default_rng(seed)
    order = np.arange(video.shape[0])
    while (order == np.arange(video.shape[0])).all():
        order = rng.permutation(video.shape[0])
    return video[torch.from_numpy(order)]


def swap_colours(video: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """RGB -> BRG: every saturated colour becomes another one; greys stay."""
    return video.roll(1, dims=1)


def reverse_time(video: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The clip played backwards: the object moves the opposite way."""
    return video.flip(0)


def freeze(video: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The first frame repeated: no motion."""
    return video[:1].expand_as(video).clone()


def flicker(video: torch.Tensor, seed: int = 0, amount: float = 0.06) -> torch.Tensor:
    """Brightness alternating by +-``amount`` from frame to frame."""
    sign = torch.tensor([(-1.0) ** t for t in range(video.shape[0])]).view(-1, 1, 1, 1)
    return (video + amount * sign).clamp(0, 1)


CORRUPTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "noise": add_noise, "blur": blur, "shuffle": shuffle_frames, "colour-swap": swap_colours,
    "reverse": reverse_time, "frozen": freeze, "flicker": flicker,
}
TARGETS = {"noise": "noise", "blur": "sharpness", "shuffle": "smoothness", "colour-swap": "colour",
           "reverse": "direction", "frozen": "speed", "flicker": "flicker"}


def corrupt(video: torch.Tensor, name: str, seed: int = 0) -> torch.Tensor:
    """Apply the corruption ``name`` (a key of CORRUPTIONS) to a video [F, 3, H, W] in [0, 1]."""
    if name not in CORRUPTIONS:
        raise InputError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}.")
    return CORRUPTIONS[name](video.float(), seed=seed)


def mp4_round_trip(video: torch.Tensor, folder: Path, name: str) -> torch.Tensor:
    """The video as it reads back after writing it as an H.264 mp4 (crf 18, yuv420p)."""
    from pyrawan.data.video import read_video, write_video

    return read_video(write_video(folder / f"{name}.mp4", video))[0]


def validation_videos(n: int = 16, seed: int = 0, frames: int = 17, height: int = 64, width: int = 64,
                      mp4: bool = True, short: bool = False) -> tuple[list[str], dict[str, list[torch.Tensor]]]:
    """(captions, {"real" | corruption: videos}) for ``n`` scenes drawn with ``seed``.

    ``real'`` holds ``n`` more scenes (seed + 1) for the real-vs-real Fréchet distance. ``short``:
    short captions (``world.short_caption``, drawn with seed + 2) instead of full ones.
    """
    from pyrawan.toy.world import caption, render, sample_scene, short_caption

    rng, other = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    scenes, spare = [sample_scene(rng) for _ in range(n)], [sample_scene(other) for _ in range(n)]
    clean = [render(s, frames, height, width) for s in scenes]
    sets = {"real": clean, "real'": [render(s, frames, height, width) for s in spare]}
    sets.update({name: [corrupt(v, name, seed + i) for i, v in enumerate(clean)] for name in CORRUPTIONS})
    if mp4:
        with tempfile.TemporaryDirectory() as tmp:
            sets = {key: [mp4_round_trip(v, Path(tmp), f"{i}") for i, v in enumerate(videos)]
                    for key, videos in sets.items()}
    if short:
        shorts = np.random.default_rng(seed + 2)
        return [short_caption(s, shorts) for s in scenes], sets
    return [caption(s) for s in scenes], sets


def validate(n: int = 16, seed: int = 0, frames: int = 17, height: int = 64, width: int = 64,
             mp4: bool = True, short: bool = False) -> dict[str, dict]:
    """``score_set`` of the real videos and of each corruption (FD against ``real'``), by condition.

    ``short``: judge against short captions (each names the shape and about half the rest).
    """
    from pyrawan.toy.bench import features_of, reference_fd, score_set

    captions, sets = validation_videos(n, seed, frames, height, width, mp4, short)
    reference = features_of(sets.pop("real'"))
    results = {key: score_set(videos, captions) for key, videos in sets.items()}
    for result in results.values():
        result["fd"] = reference_fd(np.stack([r["features"] for r in result["per_video"]]), reference)
    return results
