"""Per-video quality metrics: paired (against a reference) and unpaired, one value per video.

Shapes: latents ``[N, C, T, H, W]`` (Wan-normalised), frames ``[N, F, 3, H, W]`` float in [0, 1]
decoded from the latents *before* any mp4 encoding (an mp4 round trip alone costs ~40 dB of PSNR).
Every function returns a float64 numpy vector ``[N]``.

- ``latent_mse``, ``latent_psnr``: against the reference latents; the PSNR's peak is the
  reference video's own latent range (max - min).
- ``pixel_psnr`` (data range 1), ``pixel_ssim`` (Wang et al. 2004: 11-tap Gaussian window,
  sigma 1.5, K1 = 0.01, K2 = 0.03, per frame and channel, averaged).
- ``temporal_flickering``: VBench's formula (255 - mean |f[t+1] - f[t]|) / 255 on uint8 frames,
  the same function ToyBench uses.
- ``motion_magnitude``: a *proxy* for optical-flow magnitude (single-scale Lucas-Kanade on
  Gaussian-smoothed luma; the mean of the largest 5% of per-pixel speeds among textured pixels,
  pixels per frame, the statistic VBench's dynamic_degree takes from RAFT). Reliable up to
  ~2-3 px/frame; it is not RAFT and not VBench's dynamic_degree.

PSNRs are capped at ``PSNR_CAP`` dB (identical videos) so that means and intervals stay finite.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from pyrawan.errors import InputError
from pyrawan.toy.bench import SCORES as TOYBENCH_SCORES
from pyrawan.toy.features import temporal_flickering as vbench_flickering
from pyrawan.toy.features import to_levels

PSNR_CAP = 100.0
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
MOTION_SMOOTH, MOTION_WINDOW, MOTION_TOP = 1.0, 2.0, 0.05
MOTION_MIN_EIGEN = 1e-4     # smallest structure-tensor eigenvalue (luma in [0, 1]) of a textured pixel

# name -> (higher is better, unit, what it is); compare/report read this.
METRICS: dict[str, tuple[bool, str, str]] = {
    "latent_mse": (False, "", "MSE of normalised latents vs reference"),
    "latent_psnr": (True, "dB", "latent PSNR vs reference (peak = reference range)"),
    "pixel_psnr": (True, "dB", "pixel PSNR vs reference, decoded frames before mp4"),
    "pixel_ssim": (True, "", "pixel SSIM vs reference, decoded frames before mp4"),
    "temporal_flickering": (True, "", "VBench temporal_flickering (1 = no change between frames)"),
    "motion_magnitude": (True, "px/frame", "optical-flow magnitude proxy (Lucas-Kanade, top 5%)"),
    "toybench_overall": (True, "", "ToyBench overall score (toy-world prompts)"),
    **{f"toybench_{k}": (True, "", f"ToyBench {k} score") for k in TOYBENCH_SCORES},
}


def _array(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def _pair(a, b, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _array(a), _array(b)
    if a.shape != b.shape or a.ndim < 2:
        raise InputError(f"{what}: the videos and the reference differ in shape ({tuple(a.shape)} vs "
                         f"{tuple(b.shape)}); compare samples made at the same size from the same prompts and seeds.")
    return a, b


def _frames(video, what: str) -> np.ndarray:
    """``[N, F, 3, H, W]`` float64 in [0, 1] (uint8 input is scaled)."""
    raw = video.detach().cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
    if raw.ndim != 5 or raw.shape[2] != 3 or raw.shape[1] < 2:
        raise InputError(f"{what} expects frames shaped [N, F, 3, H, W] with F >= 2; got {tuple(raw.shape)}.")
    return raw.astype(np.float64) / (255.0 if raw.dtype == np.uint8 else 1.0)


def mse(a, b) -> np.ndarray:
    """Mean squared difference per video: ``[N, ...]`` x2 -> ``[N]``."""
    a, b = _pair(a, b, "mse")
    return ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)


def psnr_from_mse(error: np.ndarray, peak: float | np.ndarray = 1.0) -> np.ndarray:
    """``10 log10(peak^2 / mse)``, capped at PSNR_CAP dB."""
    error = np.maximum(np.asarray(error, dtype=np.float64), 1e-300)
    with np.errstate(divide="ignore"):   # a zero peak (constant reference) gives -inf: left out of the mean
        return np.minimum(10.0 * np.log10(np.asarray(peak, dtype=np.float64) ** 2 / error), PSNR_CAP)


def latent_mse(latents, reference) -> np.ndarray:
    """MSE of normalised latents ``[N, C, T, H, W]`` against the reference's, per video."""
    return mse(latents, reference)


def latent_psnr(latents, reference) -> np.ndarray:
    """Latent PSNR per video; the peak is each reference latent's range (max - min)."""
    a, b = _pair(latents, reference, "latent_psnr")
    flat = b.reshape(len(b), -1)
    return psnr_from_mse(mse(a, b), flat.max(axis=1) - flat.min(axis=1))


def pixel_psnr(frames, reference) -> np.ndarray:
    """PSNR (data range 1) of frames ``[N, F, 3, H, W]`` in [0, 1] against the reference's, per video."""
    return psnr_from_mse(mse(_frames(frames, "pixel_psnr"), _frames(reference, "pixel_psnr")))


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of ``size`` taps."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim_map_mean(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Mean SSIM over the last two axes of images ``x``, ``y`` ``[..., H, W]`` -> ``[...]``.

    The window is SSIM_WINDOW taps, shrunk to the largest odd size that fits small images.
    """
    size = min(SSIM_WINDOW, x.shape[-1], x.shape[-2])
    size -= 1 - size % 2
    window = gaussian_window(size, SSIM_SIGMA)
    flat_x = torch.from_numpy(x.reshape(-1, 1, *x.shape[-2:]))
    flat_y = torch.from_numpy(y.reshape(-1, 1, *y.shape[-2:]))
    kernel = torch.from_numpy(np.outer(window, window))[None, None]
    blur = lambda t: torch.nn.functional.conv2d(t, kernel)  # noqa: E731  (valid, like skimage's crop)
    mu_x, mu_y = blur(flat_x), blur(flat_y)
    sxx = blur(flat_x * flat_x) - mu_x**2
    syy = blur(flat_y * flat_y) - mu_y**2
    sxy = blur(flat_x * flat_y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3)).numpy().reshape(x.shape[:-2])


def pixel_ssim(frames, reference) -> np.ndarray:
    """SSIM of frames ``[N, F, 3, H, W]`` against the reference's: mean over frames and channels, per video."""
    a, b = _pair(_frames(frames, "pixel_ssim"), _frames(reference, "pixel_ssim"), "pixel_ssim")
    return ssim_map_mean(a, b).reshape(len(a), -1).mean(axis=1)


def temporal_flickering(frames) -> np.ndarray:
    """VBench temporal_flickering per video of ``[N, F, 3, H, W]``: 1 for a static clip."""
    x = _frames(frames, "temporal_flickering").transpose(0, 1, 3, 4, 2)       # [N, F, H, W, 3]
    return np.asarray([vbench_flickering(to_levels(v)) for v in x], dtype=np.float64)


def luma(frames: np.ndarray) -> np.ndarray:
    """BT.601 luma ``[..., 3, H, W] -> [..., H, W]``."""
    return 0.299 * frames[..., 0, :, :] + 0.587 * frames[..., 1, :, :] + 0.114 * frames[..., 2, :, :]


def lucas_kanade(prev: np.ndarray, nxt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel flow speed ``[H, W]`` (px/frame) between two luma frames, and the textured-pixel mask.

    Single scale: both frames Gaussian-smoothed (sigma MOTION_SMOOTH), the structure tensor summed
    over a Gaussian window (sigma MOTION_WINDOW), solved where its smaller eigenvalue exceeds
    MOTION_MIN_EIGEN.
    """
    a = ndimage.gaussian_filter(prev, MOTION_SMOOTH)
    b = ndimage.gaussian_filter(nxt, MOTION_SMOOTH)
    gy, gx = np.gradient((a + b) / 2)
    gt = b - a
    window = lambda v: ndimage.gaussian_filter(v, MOTION_WINDOW)  # noqa: E731
    sxx, syy, sxy = window(gx * gx), window(gy * gy), window(gx * gy)
    sxt, syt = window(gx * gt), window(gy * gt)
    det = sxx * syy - sxy**2
    trace_half = (sxx + syy) / 2
    min_eigen = trace_half - np.sqrt(np.maximum(trace_half**2 - det, 0.0))
    textured = min_eigen > MOTION_MIN_EIGEN
    safe = np.where(textured, det, 1.0)
    u = (-syy * sxt + sxy * syt) / safe
    v = (sxy * sxt - sxx * syt) / safe
    return np.where(textured, np.hypot(u, v), 0.0), textured


def motion_magnitude(frames) -> np.ndarray:
    """Flow-magnitude proxy per video of ``[N, F, 3, H, W]``: mean over frame pairs of the mean of the
    largest MOTION_TOP fraction of textured-pixel speeds (px/frame; 0 for a static or flat clip)."""
    y = luma(_frames(frames, "motion_magnitude"))                              # [N, F, H, W]
    out = []
    for video in y:
        per_pair = []
        for t in range(len(video) - 1):
            speed, textured = lucas_kanade(video[t], video[t + 1])
            values = np.sort(speed[textured])
            keep = max(1, int(math.ceil(MOTION_TOP * values.size))) if values.size else 0
            per_pair.append(float(values[-keep:].mean()) if keep else 0.0)
        out.append(float(np.mean(per_pair)))
    return np.asarray(out, dtype=np.float64)


def paired_metrics(latents, reference_latents, frames=None, reference_frames=None) -> dict[str, np.ndarray]:
    """Latent MSE/PSNR, and pixel PSNR/SSIM when frames are given; each ``[N]``."""
    out = {"latent_mse": latent_mse(latents, reference_latents), "latent_psnr": latent_psnr(latents, reference_latents)}
    if frames is not None and reference_frames is not None:
        out["pixel_psnr"] = pixel_psnr(frames, reference_frames)
        out["pixel_ssim"] = pixel_ssim(frames, reference_frames)
    return out


def unpaired_metrics(frames) -> dict[str, np.ndarray]:
    """Temporal flickering and the motion proxy; each ``[N]``."""
    return {"temporal_flickering": temporal_flickering(frames), "motion_magnitude": motion_magnitude(frames)}
