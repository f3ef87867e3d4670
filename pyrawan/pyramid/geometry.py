"""Stage geometry: shapes of every stage, blocks and the first-frame rule (spec section 1).

Stage 0 is full resolution, stage S-1 the coarsest. One stage coarser halves H and W and the
frames after the first: ``T' = 1 + (T - 1) // 2``. Latent frame 0 is its own block (2x2 in
space, m = 4); frames (1, 2), (3, 4), ... form 2x2x2 blocks (m = 8). With ``keep_time`` only
space is halved and every block has m = 4.
"""
from __future__ import annotations

import torch

from pyrawan.errors import InputError

Shape3 = tuple[int, int, int]


def coarser_shape(shape: Shape3, keep_time: bool = False) -> Shape3:
    """(T, H, W) of the next coarser stage; assumes the shape divides (see ``stage_shapes``)."""
    t, h, w = shape
    return (t if keep_time else 1 + (t - 1) // 2, h // 2, w // 2)


def _nearest(value: int, step: int, offset: int) -> tuple[int, int]:
    """The valid sizes ``offset + k * step`` (at least the smallest valid one) around ``value``."""
    smallest = offset if offset else step
    below = max(offset + ((value - offset) // step) * step, smallest)
    above = below if below >= value else below + step
    return below, above


def size_rule(name: str, downs: int, keep_time: bool = False, frame_unit: int = 1, space_unit: int = 1,
              patch: tuple[int, int] = (2, 2)) -> tuple[int, int]:
    """``(step, offset)``: the sizes of ``name`` that reach ``downs`` stages below full resolution are
    ``offset + k * step`` (``k >= 0``, at least one step when ``offset`` is 0).

    Frames: ``1 + k * frame_unit * 2**downs`` (``keep_time``: ``1 + k * frame_unit``); height, width:
    ``k * space_unit * patch * 2**downs`` (the coarsest latent still divides by the patch).
    """
    if name == "frames":
        return frame_unit * (1 if keep_time else 2**downs), 1
    return space_unit * patch[0 if name == "height" else 1] * 2**downs, 0


def fits(value: int, rule: tuple[int, int]) -> bool:
    """Whether ``value`` is one of the sizes ``offset + k * step`` of ``rule = (step, offset)``."""
    step, offset = rule
    return value >= (offset if offset else step) and (value - offset) % step == 0


def check_sizes(
    sizes: dict[str, int],
    num_stages: int,
    keep_time: bool = False,
    frame_unit: int = 1,
    space_unit: int = 1,
    patch: tuple[int, int] = (2, 2),
    what: str = "latent",
) -> None:
    """Raise ``InputError`` if ``frames``/``height``/``width`` cannot form the pyramid.

    ``frame_unit``/``space_unit`` are the VAE factors when checking pixel sizes (4 and 8 for
    Wan), 1 for latent sizes. Every stage's latent H, W must also divide by the patch.
    The message names the dimension, the first stage where it fails and the nearest valid sizes.
    """
    for name, value in sizes.items():
        rule = size_rule(name, num_stages - 1, keep_time, frame_unit, space_unit, patch)
        if fits(value, rule):
            continue
        stage = next(s for s in range(num_stages)
                     if not fits(value, size_rule(name, s, keep_time, frame_unit, space_unit, patch)))
        step, offset = rule
        lo, hi = _nearest(value, step, offset)
        form = f"{offset} + a multiple of {step}" if offset else f"a multiple of {step}"
        choices = f"{lo} or {hi}" if lo != hi else f"{lo}"
        raise InputError(
            f"{what} {name} = {value} cannot form a {num_stages}-stage pyramid: it fails at stage "
            f"{stage} (stage 0 = full resolution). {name.capitalize()} must be {form}; the nearest "
            f"valid values are {choices}."
        )


def stage_shapes(shape: Shape3, num_stages: int, keep_time: bool = False, patch=(2, 2)) -> list[Shape3]:
    """Latent (T, H, W) of every stage, index = stage (0 = full resolution).

    >>> stage_shapes((21, 56, 104), 3)
    [(21, 56, 104), (11, 28, 52), (6, 14, 26)]
    """
    t, h, w = shape
    check_sizes({"frames": t, "height": h, "width": w}, num_stages, keep_time, patch=patch)
    shapes = [tuple(shape)]
    for _ in range(num_stages - 1):
        shapes.append(coarser_shape(shapes[-1], keep_time))
    return shapes


# (temporal, spatial) compression of Wan2.1's causal VAE; other VAEs record theirs (``models.arch.vae_factors``).
WAN21_VAE_FACTORS = (4, 8)


def pixel_to_latent(frames: int, height: int, width: int, factors: tuple[int, int]) -> Shape3:
    """Latent (T, H, W) of a pixel video for a causal VAE with ``factors = (ft, fs)``.

    T = 1 + (F - 1) / ft, H / fs, W / fs; for Wan2.1 (4, 8): 81x480x832 -> (21, 60, 104).
    """
    vae_t, vae_s = factors
    return 1 + (frames - 1) // vae_t, height // vae_s, width // vae_s


def block_sizes(num_frames: int, keep_time: bool = False) -> torch.Tensor:
    """Elements per block ``m`` for each frame of a stage: ``[T]`` (4 for frame 0, else 8)."""
    m = torch.full((num_frames,), 4.0 if keep_time else 8.0, dtype=torch.float64)
    m[0] = 4.0
    return m


def coarse_frame_index(num_fine_frames: int, keep_time: bool = False) -> torch.Tensor:
    """For each fine frame, the coarse frame (block) it belongs to: ``[T]`` (0, 1, 1, 2, 2, ...)."""
    idx = torch.arange(num_fine_frames)
    return idx if keep_time else (idx + 1) // 2


def expand_to_fine(per_coarse_frame: torch.Tensor, num_fine_frames: int, keep_time: bool = False) -> torch.Tensor:
    """Repeat a per-coarse-frame quantity ``[T']`` over the fine frames of each block: ``[T]``."""
    return per_coarse_frame[coarse_frame_index(num_fine_frames, keep_time).to(per_coarse_frame.device)]
