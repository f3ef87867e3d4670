"""ToyBench measurements: what a video shows, with no prompt and no learned weights.

Per frame, the background is fitted as a plane per colour channel (plain colours and linear
gradients fit exactly) with robust reweighting; the object is the largest connected component
(scipy.ndimage) of pixels far from that plane; its colour is the median of its inner half; its
anti-aliased coverage ``alpha`` is recovered by unmixing each pixel between the background and
the object colour. Shape, size, sharpness and the centroid come from ``alpha``; motion from the
centroid track; flicker and noise from the background; the background's level from the planes
averaged over frames; extra objects from the other seed components. ``docs/toy-world.md``
defines each number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from pyrawan.errors import InputError

SEED_DISTANCE = 0.2       # RGB distance (0..1 units) from the background that makes a pixel an object seed
MIN_AREA = 4.0            # coverage (pixels) below which a frame has no object
MIN_EXTRA_AREA = 6        # seed pixels a component other than the object's needs to count as an extra object
SUPPORT = 1               # pixels around the seed component where coverage is measured
BAND_EDGES = (0.0, 1 / 16, 1 / 8, 1 / 4, 1.0)   # radial spatial-frequency bands, cycles per pixel
HIST_BINS = 4
DEADZONE = 0.1            # unmixed coverage below this is 0 and above 1 - this is 1 (noise in flat areas)
CHROMA_WEIGHT = 0.5       # weight of the chroma axes against luma when unmixing coverage
YCBCR = ((0.299, 0.587, 0.114), (-0.1687, -0.3313, 0.5), (0.5, -0.4187, -0.0813))   # BT.601 RGB -> YCbCr


@dataclass
class FrameStats:
    """Per-frame object measurements, each [F] (NaN where no object was found)."""

    found: np.ndarray         # bool
    area: np.ndarray          # coverage sum, pixels
    centre: np.ndarray        # [F, 2] coverage-weighted centroid (x, y), pixels
    extent: np.ndarray        # [F, 2] soft width and height, pixels
    fill: np.ndarray          # area / (width * height)
    skew: np.ndarray          # skewness of the coverage's row profile (0 for square and circle)
    circularity: np.ndarray   # 4 pi area / perimeter^2
    edge_width: np.ndarray    # transition width of the edge, pixels
    colour: np.ndarray        # [F, 3] median RGB of the object's inner half


@dataclass
class Measurements:
    """Everything ToyBench measures on one video (prompt-free)."""

    frames: int
    height: int
    width: int
    objects: FrameStats
    velocity: np.ndarray      # (vx, vy) px/frame, least-squares line through the centroids (NaN if < 3 frames)
    residual: float           # RMS distance of the centroids from that line, px
    acceleration: float       # RMS second difference of the centroid track, px/frame^2
    temporal_flickering: float  # VBench: (255 - mean |f[t+1] - f[t]|) / 255 on uint8 frames
    background_flicker: float   # mean |f[t+1] - f[t]| over background pixels, uint8 levels
    noise: float                # RMS deviation of the background from its fitted plane, uint8 levels
    spectrum: np.ndarray        # [4] fraction of spatial luma power per radial band
    temporal_energy: float      # energy of frame differences / energy of frames (mean-removed luma)
    histogram: np.ndarray       # [3 * HIST_BINS] per-channel colour histograms, each summing to 1
    ground: np.ndarray          # [H, W, 3] the fitted background planes averaged over frames, RGB in [0, 1]
    extra_count: np.ndarray     # [F] seed components beyond the object's with >= MIN_EXTRA_AREA pixels
    extra_area: np.ndarray      # [F] their seed pixels in total


def as_frames(video: torch.Tensor | np.ndarray) -> np.ndarray:
    """[F, 3, H, W] float in [0, 1] or uint8 (tensor or array) -> float32 [F, H, W, 3] in [0, 1]."""
    array = video.detach().cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
    if array.ndim != 4 or array.shape[1] != 3 or array.shape[0] < 3 or min(array.shape[2:]) < 16:
        raise InputError(f"ToyBench expects a video shaped [F, 3, H, W] with F >= 3 and H, W >= 16; got "
                         f"{tuple(array.shape)}. Pass frames as read by pyrawan.data.video.read_video.")
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    return np.ascontiguousarray(array.transpose(0, 2, 3, 1), dtype=np.float32) / scale


def to_levels(x: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] -> uint8 levels as float32 (rounded, clamped)."""
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.float32)


# ---- background ----------------------------------------------------------------------------------

def plane_basis(height: int, width: int) -> np.ndarray:
    """[H*W, 3] design matrix (1, x, y) with x, y in [-1, 1]."""
    y, x = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    return np.stack([np.ones(height * width), x.ravel(), y.ravel()], axis=1)


def fit_background(x: np.ndarray, iterations: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Robust per-frame, per-channel plane fit of the background.

    x: [F, H, W, 3]. Returns (background [F, H, W, 3], inlier mask [F, H, W]); pixels further than
    max(0.08, 3 x median) (RGB distance) from the current fit are dropped and the fit repeated.
    """
    f, h, w, _ = x.shape
    basis = plane_basis(h, w)                                              # [P, 3]
    values = x.reshape(f, h * w, 3).astype(np.float64)                     # [F, P, C]
    weights = np.ones((f, h * w))
    for _ in range(iterations):
        weighted = (weights[:, :, None] * basis).transpose(0, 2, 1)              # [F, 3, P]
        coef = np.linalg.solve(weighted @ basis + 1e-9 * np.eye(3), weighted @ values)   # [F, 3, C]
        plane = basis @ coef                                                    # [F, P, C]
        distance = np.linalg.norm(values - plane, axis=-1)                 # [F, P]
        limit = np.maximum(0.08, 3 * np.median(distance, axis=1, keepdims=True))
        weights = (distance < limit).astype(np.float64)
    return plane.reshape(f, h, w, 3).astype(np.float32), weights.reshape(f, h, w) > 0


# ---- the object in each frame ----------------------------------------------------------------------

def seed_distance(x: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """[F, H, W] RGB distance of frames [F, H, W, 3] (after a 0.7 px Gaussian) to their background planes."""
    smooth = ndimage.gaussian_filter(x, sigma=(0, 0.7, 0.7, 0))
    return np.linalg.norm(smooth - bg, axis=-1)


def frame_components(seeds: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """(labels [F, H, W], count, frame of each label [count]): 8-connected components of ``seeds`` within frames."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True                                                    # connect within a frame only
    labels, count = ndimage.label(seeds, structure=structure)
    frame = np.array([box[0].start for box in ndimage.find_objects(labels)], dtype=np.int64)   # [count]
    return labels, count, frame


def largest_component(seeds: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """Per frame, the 8-connected component of ``seeds`` [F, H, W] with the largest sum of ``strength``."""
    labels, count, frame = frame_components(seeds)
    if count == 0:
        return np.zeros_like(seeds)
    weight = ndimage.sum_labels(strength, labels, np.arange(1, count + 1))             # [count]
    keep = np.zeros(count + 1, dtype=bool)
    for f in np.unique(frame):
        candidates = np.flatnonzero(frame == f)
        keep[1 + candidates[np.argmax(weight[candidates])]] = True
    return keep[labels]


def extra_objects(seeds: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, (count, pixels) of the components of ``seeds`` [F, H, W] outside the object ``mask`` [F, H, W].

    Only components of at least MIN_EXTRA_AREA seed pixels count (compression specks are smaller); each [F].
    """
    frames = seeds.shape[0]
    labels, count, frame = frame_components(seeds & ~mask)
    if count == 0:
        return np.zeros(frames), np.zeros(frames)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]                          # [count]
    big = sizes >= MIN_EXTRA_AREA
    return (np.bincount(frame[big], minlength=frames).astype(np.float64),
            np.bincount(frame[big], weights=sizes[big], minlength=frames))


def core_colours(x: np.ndarray, distance: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[F, 3] median RGB over the object pixels at least as far from the background as their median."""
    colours = np.full((x.shape[0], 3), np.nan, dtype=np.float32)
    for f in np.flatnonzero(mask.any(axis=(1, 2))):
        d = distance[f][mask[f]]
        colours[f] = np.median(x[f][mask[f]][d >= np.median(d)], axis=0)
    return colours


def unmixing_metric(chroma_weight: float = CHROMA_WEIGHT) -> np.ndarray:
    """[3, 3] RGB inner product that weighs luma 1 and the two chroma axes (BT.601) ``chroma_weight``."""
    ycc = np.asarray(YCBCR, dtype=np.float32)
    scaled = np.diag([1.0, chroma_weight, chroma_weight]).astype(np.float32) @ ycc
    return scaled.T @ scaled


def unmix(x: np.ndarray, bg: np.ndarray, colours: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Coverage [F, H, W] in [0, 1]: x = alpha * colour + (1 - alpha) * bg solved per pixel.

    Least squares in the luma-weighted metric of ``unmixing_metric``: H.264 keeps chroma at half
    resolution, so luma carries the sharp edge wherever the object differs from the background in it.
    """
    direction = np.nan_to_num(colours)[:, None, None, :] - bg                  # [F, H, W, 3]
    weighted = direction @ unmixing_metric()
    alpha = np.sum((x - bg) * weighted, axis=-1) / np.maximum(np.sum(direction * weighted, axis=-1), 1e-6)
    alpha = np.clip((alpha - DEADZONE) / (1 - 2 * DEADZONE), 0.0, 1.0)
    return np.where(support, alpha, 0.0).astype(np.float32)


def perimeter(alpha: np.ndarray) -> np.ndarray:
    """[F] boundary length of coverage maps [F, H, W]: the total gradient magnitude (coarea formula)."""
    gy, gx = np.gradient(alpha, axis=(1, 2))
    return np.maximum(np.hypot(gx, gy).sum(axis=(1, 2)), 1e-6)


def row_skewness(alpha: np.ndarray, cy: np.ndarray, area: np.ndarray) -> np.ndarray:
    """[F] skewness of the coverage per row about the centroid row ``cy`` (about -0.57 for a triangle apex up)."""
    rows = alpha.sum(axis=2)                                                             # [F, H]
    offset = np.arange(alpha.shape[1]) + 0.5 - cy[:, None]
    spread = np.maximum((rows * offset**2).sum(axis=1) / area, 1e-6)
    return (rows * offset**3).sum(axis=1) / area / spread**1.5


def shape_stats(alpha: np.ndarray) -> dict[str, np.ndarray]:
    """Area, centroid, soft extent, fill, row skewness, circularity and edge width of coverage maps [F, H, W].

    The soft width (height) sums, over columns (rows), the largest coverage in each: exact for
    anti-aliased axis-aligned edges. Fill = area / (width * height): 1 square, pi/4 circle, 1/2 triangle.
    """
    _, h, w = alpha.shape
    area = np.maximum(alpha.sum(axis=(1, 2)), 1e-6)
    cx = (alpha.sum(axis=1) * (np.arange(w) + 0.5)).sum(axis=1) / area
    cy = (alpha.sum(axis=2) * (np.arange(h) + 0.5)).sum(axis=1) / area
    extent = np.stack([alpha.max(axis=1).sum(axis=1), alpha.max(axis=2).sum(axis=1)], axis=1)   # [F, 2]
    length = perimeter(alpha)
    return {"area": area, "centre": np.stack([cx, cy], axis=1), "extent": extent,
            "fill": area / np.maximum(extent.prod(axis=1), 1e-6), "skew": row_skewness(alpha, cy, area),
            "circularity": 4 * math.pi * area / length**2,
            "edge_width": (4 * alpha * (1 - alpha)).sum(axis=(1, 2)) / length}


def only_found(values: np.ndarray, found: np.ndarray) -> np.ndarray:
    """``values`` [F, ...] with NaN in the frames where no object was ``found`` [F]."""
    return np.where(found.reshape(-1, *[1] * (values.ndim - 1)), values, np.nan)


def find_objects(x: np.ndarray, bg: np.ndarray, distance: np.ndarray) -> tuple[FrameStats, np.ndarray, np.ndarray]:
    """Segment and measure the object in every frame from ``seed_distance`` [F, H, W].

    Returns (stats, coverage [F, H, W], the object's seed component [F, H, W] bool).
    """
    mask = largest_component(distance > SEED_DISTANCE, distance)
    colours = core_colours(x, distance, mask)
    support = ndimage.binary_dilation(mask, structure=np.ones((1, 1 + 2 * SUPPORT, 1 + 2 * SUPPORT), dtype=bool))
    alpha = unmix(x, bg, colours, support)
    stats = shape_stats(alpha)
    found = stats["area"] >= MIN_AREA
    return FrameStats(found=found, colour=only_found(colours, found),
                      **{k: only_found(v, found) for k, v in stats.items()}), alpha, mask


# ---- motion --------------------------------------------------------------------------------------

def fit_track(centre: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(velocity (vx, vy) px/frame, RMS residual px, RMS acceleration px/frame²) of a centroid track [F, 2]."""
    t = np.flatnonzero(found)
    if len(t) < 3:
        return np.full(2, np.nan), math.nan, math.nan
    design = np.stack([np.ones(len(t)), t], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, centre[t], rcond=None)                       # [2, 2]
    residual = centre[t] - design @ coef
    second = centre[2:] - 2 * centre[1:-1] + centre[:-2]                             # NaN where a frame is missing
    second = second[np.isfinite(second).all(axis=1)]
    acceleration = float(np.sqrt(np.mean(np.sum(second**2, axis=1)))) if len(second) else math.nan
    return coef[1], float(np.sqrt(np.mean(np.sum(residual**2, axis=1)))), acceleration


# ---- flicker, noise, spectra, histograms ----------------------------------------------------------

def temporal_flickering(levels: np.ndarray) -> float:
    """VBench's temporal_flickering: (255 - mean |f[t+1] - f[t]|) / 255 over uint8 frames [F, H, W, 3]."""
    return float((255.0 - np.abs(np.diff(levels, axis=0)).mean()) / 255.0)


def background_flicker(levels: np.ndarray, background: np.ndarray) -> float:
    """Mean |f[t+1] - f[t]| (uint8 levels) over pixels that are background [F, H, W] in both frames."""
    both = background[1:] & background[:-1]
    if not both.any():
        return math.nan
    return float(np.abs(np.diff(levels, axis=0)).mean(axis=-1)[both].mean())


def background_noise(x: np.ndarray, bg: np.ndarray, background: np.ndarray) -> float:
    """RMS deviation (uint8 levels, per channel) of background pixels from the fitted plane."""
    if not background.any():
        return math.nan
    return float(255.0 * np.sqrt(np.mean((x - bg)[background] ** 2)))


def luma(x: np.ndarray) -> np.ndarray:
    """BT.601 luma [F, H, W] of RGB frames [F, H, W, 3]."""
    return x @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


def band_energy(y: np.ndarray) -> np.ndarray:
    """[4] fraction of the spatial power of mean-removed luma [F, H, W] in each radial band of BAND_EDGES."""
    f, h, w = y.shape
    power = np.abs(np.fft.rfft2(y - y.mean(axis=(1, 2), keepdims=True))) ** 2
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :])
    bands = np.digitize(radius, BAND_EDGES[1:-1])                                     # [H, W//2+1] in 0..3
    energy = np.bincount(bands.ravel(), weights=power.sum(axis=0).ravel(), minlength=len(BAND_EDGES) - 1)
    return energy / max(energy.sum(), 1e-12)


def temporal_energy(y: np.ndarray) -> float:
    """Energy of consecutive-frame differences over the energy of the frames, luma [F, H, W] mean-removed."""
    centred = y - y.mean()
    return float(np.sum(np.diff(y, axis=0) ** 2) / max(np.sum(centred**2), 1e-12))


def colour_histogram(x: np.ndarray) -> np.ndarray:
    """[3 * HIST_BINS] per-channel histograms of all pixels, each summing to 1."""
    bins = np.minimum((x * HIST_BINS).astype(np.int64), HIST_BINS - 1).reshape(-1, 3)
    counts = np.stack([np.bincount(bins[:, c], minlength=HIST_BINS) for c in range(3)])
    return (counts / bins.shape[0]).ravel()


def measure_video(video: torch.Tensor | np.ndarray) -> Measurements:
    """All of ToyBench's prompt-free measurements of one video [F, 3, H, W] (float in [0, 1] or uint8)."""
    x = as_frames(video)
    bg, inliers = fit_background(x)
    distance = seed_distance(x, bg)
    objects, alpha, mask = find_objects(x, bg, distance)
    extra_count, extra_area = extra_objects(distance > SEED_DISTANCE, mask)
    near_object = ndimage.binary_dilation(alpha > 0, structure=np.ones((1, 7, 7), dtype=bool))
    background = inliers & ~near_object
    velocity, residual, acceleration = fit_track(objects.centre, objects.found)
    levels, y = to_levels(x), luma(x)
    return Measurements(
        frames=x.shape[0], height=x.shape[1], width=x.shape[2], objects=objects, velocity=velocity,
        residual=residual, acceleration=acceleration, temporal_flickering=temporal_flickering(levels),
        background_flicker=background_flicker(levels, background), noise=background_noise(x, bg, background),
        spectrum=band_energy(y), temporal_energy=temporal_energy(y), histogram=colour_histogram(x),
        ground=bg.mean(axis=0), extra_count=extra_count, extra_area=extra_area)
