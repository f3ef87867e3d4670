"""From a video file to the pixel clips of every pyramid stage (frame choice, resize, crop).

Conventions: a pixel clip is ``[F, 3, H, W]`` float32 in [0, 1]. The clip starts at the first
frame of the file and takes ``F`` frames at the recipe's fps (nearest source frame). Space is
resized with an antialiased bilinear filter so that the clip covers ``H x W``, then cropped in
the centre. One pyramid stage coarser (Definition 2): frame 0 is kept, later frames are averaged
in pairs ``(1, 2), (3, 4), ...``, and each frame is 2x2 area-averaged.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from pyrawan.data.video import read_video


def frame_indices(num_frames: int, source_fps: float, fps: float) -> list[int]:
    """Source frame of each of ``num_frames`` output frames at ``fps`` (nearest; consecutive if fps unknown)."""
    step = source_fps / fps if source_fps > 0 and fps > 0 else 1.0
    return [int(math.floor(k * step + 0.5)) for k in range(num_frames)]


def frames_needed(num_frames: int, source_fps: float, fps: float) -> int:
    """Source frames a clip of ``num_frames`` at ``fps`` reads from the start of a ``source_fps`` file."""
    return frame_indices(num_frames, source_fps, fps)[-1] + 1


def resize_crop(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[F, 3, h, w] -> [F, 3, height, width]``: scale to cover (antialiased bilinear), crop the centre."""
    h, w = video.shape[-2:]
    scale = max(height / h, width / w)
    size = (max(height, math.ceil(h * scale - 1e-6)), max(width, math.ceil(w * scale - 1e-6)))
    if size != (h, w):
        video = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return video[..., top:top + height, left:left + width].clamp(0, 1).contiguous()


def load_clip(path: Path, frames: int, height: int, width: int, fps: float) -> torch.Tensor:
    """Decode the clip of ``path`` for the recipe: ``[frames, 3, height, width]`` float32 in [0, 1].

    Raises ``InputError`` (from ``read_video``) if the file is unreadable or too short.
    """
    from pyrawan.data.video import probe_video

    source_fps = probe_video(path)["fps"]
    index = frame_indices(frames, source_fps, fps)
    video, _ = read_video(path, num_frames=index[-1] + 1)
    return resize_crop(video[index], height, width)


def pixel_down(video: torch.Tensor, keep_time: bool = False) -> torch.Tensor:
    """One stage coarser in pixels: ``[F, 3, H, W] -> [1 + (F - 1) / 2, 3, H / 2, W / 2]`` (F kept if keep_time).

    Frame 0 is kept, later frames are averaged in pairs, then each frame is 2x2 area-averaged.
    """
    if not keep_time and video.shape[0] > 1:
        pairs = video[1:].unflatten(0, (-1, 2)).mean(1)
        video = torch.cat([video[:1], pairs])
    return F.avg_pool2d(video, 2)


def stage_clips(video: torch.Tensor, num_stages: int, keep_time: bool = False) -> list[torch.Tensor]:
    """The pixel clip of every stage, index = stage (0 = ``video`` itself): Definition 2's inputs."""
    clips = [video]
    for _ in range(num_stages - 1):
        clips.append(pixel_down(clips[-1], keep_time))
    return clips


def to_vae_input(clip: torch.Tensor) -> torch.Tensor:
    """``[F, 3, H, W]`` in [0, 1] -> ``[1, 3, F, H, W]`` in [-1, 1] (what ``encode_video`` takes)."""
    return (clip * 2 - 1).permute(1, 0, 2, 3).unsqueeze(0).contiguous()
