"""Spectral measurements of latents and the boundary rule of ``pyrawan calibrate`` (docs/calibration.md).

Everything is measured in the orthonormal (global-sigma) frame: at stage i, frame f carries
``c_{i,f} = m_f^{i/2}`` times the natural amplitude, so powers are natural powers times
``c^2 = m_f^i`` (``gain2``). There, at global level sigma, a sample is ``(1 - sigma) x + sigma eps``
with white unit ``eps``: every coefficient carries noise power ``sigma^2`` against signal power
``(1 - sigma)^2 E``. The band a transition removes has mean power ``E_H`` per coefficient; its
SNR ``(1 - sigma)^2 E_H / sigma^2`` falls to the threshold ``tau`` at

    b = sqrt(E_H) / (sqrt(E_H) + sqrt(tau))

Pure tensor math; latents are ``[C, T, H, W]`` (one video) at natural amplitude.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from pyrawan.pyramid.resize import Resizer, get_resizer
from pyrawan.pyramid.schedule import amplitude_gain


def gain2(stage: int, num_frames: int, keep_time: bool = False) -> torch.Tensor:
    """``c_{i,f}^2 = m_f^i`` per frame of stage ``i``: ``[T]`` float64 (natural power -> orthonormal power)."""
    return amplitude_gain(stage, num_frames, keep_time) ** 2


def frame_energy(x: torch.Tensor) -> torch.Tensor:
    """Sum of squares per frame: ``[C, T, H, W] -> [T]`` float64 on the CPU (computed on ``x``'s device)."""
    return (x.float() ** 2).sum((0, 2, 3)).double().cpu()


def high_band_counts(shape: Sequence[int], keep_time: bool = False) -> torch.Tensor:
    """High-band coefficients that ``down`` removes from frame 0 and from the later frames: ``[2]``.

    ``shape`` is ``(C, T, H, W)``; frame 0 keeps ``C H W / 4``, frames 1.. keep ``C H W (T' - 1) / 4``.
    """
    c, t, h, w = shape
    coarse_t = t if keep_time else 1 + (t - 1) // 2
    plane, small = c * h * w, c * (h // 2) * (w // 2)
    return torch.tensor([plane - small, plane * (t - 1) - small * (coarse_t - 1)], dtype=torch.float64)


def by_group(per_frame: torch.Tensor) -> torch.Tensor:
    """``[T] -> [2]``: frame 0, and the sum over the later frames."""
    return torch.stack([per_frame[0], per_frame[1:].sum()])


def temporal_detail(x: torch.Tensor) -> torch.Tensor:
    """What pairing frames (1, 2), (3, 4), ... removes: each frame minus its pair's mean (frame 0: 0)."""
    out = torch.zeros_like(x)
    pairs = x[:, 1:].unflatten(1, (-1, 2))
    out[:, 1:] = (pairs - pairs.mean(2, keepdim=True)).flatten(1, 2)
    return out


def transition_energies(x: torch.Tensor, resizer: Resizer, stage: int) -> dict[str, torch.Tensor]:
    """Orthonormal-frame energies of stage-``stage`` latents ``x`` ``[C, T, H, W]`` for the step to the next stage.

    ``high``: energy of ``(I - P) x`` for frame 0 and the later frames ``[2]``; ``total``: energy of
    ``x`` ``[2]``; ``spatial``/``temporal``: energy removed by the spatial half / the frame pairing
    alone ``[2]``; ``count``: high-band coefficients ``[2]``.
    """
    keep_time = resizer.keep_time
    g = gain2(stage, x.shape[1], keep_time)
    spatial = get_resizer(resizer.name, keep_time=True).high_pass(x[None])[0]
    temporal = torch.zeros_like(x) if keep_time else temporal_detail(x)
    return {
        "high": by_group(frame_energy(resizer.high_pass(x[None])[0]) * g),
        "total": by_group(frame_energy(x) * g),
        "spatial": by_group(frame_energy(spatial) * g),
        "temporal": by_group(frame_energy(temporal) * g),
        "count": high_band_counts(x.shape, keep_time),
    }


def mismatch_energies(x: torch.Tensor, coarse: torch.Tensor, resizer: Resizer, stage: int) -> torch.Tensor:
    """Definition 2 check: ``[||U coarse - P x||^2, ||P x||^2]`` (orthonormal frame of stage ``stage``)."""
    g = gain2(stage, x.shape[1], resizer.keep_time)
    low = resizer.project(x[None])[0]
    diff = resizer.up(coarse[None])[0] - low
    return torch.stack([(frame_energy(diff) * g).sum(), (frame_energy(low) * g).sum()])


# ---- spectra -------------------------------------------------------------------------------------

def radial_bins(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Radial bin of every 2-D FFT coefficient ``[H, W]`` (int) and the bin frequencies ``[K]`` (cycles/pixel).

    Bin k holds radial frequencies in ``[(k - 1/2) d, (k + 1/2) d)`` with ``d = 1 / min(H, W)``.
    """
    fy = torch.fft.fftfreq(height, dtype=torch.float64).view(-1, 1)
    fx = torch.fft.fftfreq(width, dtype=torch.float64).view(1, -1)
    step = 1.0 / min(height, width)
    index = torch.round(torch.sqrt(fy ** 2 + fx ** 2) / step).long()
    return index, torch.arange(int(index.max()) + 1, dtype=torch.float64) * step


def rapsd_sums(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially binned power of ``x`` ``[C, T, H, W]``: ``(sum of power [K], number of coefficients [K])``.

    Power is ``|FFT2|^2`` with orthonormal scaling (white noise of variance v has power v in every
    bin) times ``weight[t]`` per frame (``gain2`` for the orthonormal frame).
    """
    index, freqs = radial_bins(*x.shape[-2:])
    power = (torch.fft.fft2(x.float(), norm="ortho").abs() ** 2).sum(0)            # [T, H, W]
    power = (power * weight.to(power).view(-1, 1, 1)).sum(0).double().cpu()        # [H, W]
    sums = torch.zeros(len(freqs), dtype=torch.float64).index_add_(0, index.flatten(), power.flatten())
    counts = torch.bincount(index.flatten(), minlength=len(freqs)).double() * x.shape[0] * x.shape[1]
    return sums, counts


def temporal_power(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """Power per temporal frequency of frames 1..T-1 (frame 0 is special), mean over C, H, W: ``[(T - 1) // 2 + 1]``."""
    later = x[:, 1:].float()
    if later.shape[1] == 0:
        return torch.zeros(0, dtype=torch.float64)
    spectrum = torch.fft.rfft(later, dim=1, norm="ortho").abs() ** 2
    return spectrum.mean((0, 2, 3)).double().cpu() * weight


# ---- the boundary rule ---------------------------------------------------------------------------

def boundary_from_power(power: float, threshold: float) -> float:
    """Global level where ``(1 - b)^2 power / b^2 = threshold``: ``sqrt(power) / (sqrt(power) + sqrt(threshold))``."""
    root = math.sqrt(max(power, 0.0))
    return root / (root + math.sqrt(threshold))


def power_at_boundary(b: float, threshold: float) -> float:
    """Inverse of ``boundary_from_power``: the band power whose SNR is ``threshold`` at level ``b``."""
    return threshold * noise_floor(b)


def noise_floor(sigma: float) -> float:
    """Noise power per orthonormal coefficient relative to the signal's scale at level sigma: ``sigma^2 / (1 - sigma)^2``."""
    return sigma ** 2 / (1 - sigma) ** 2


def increasing_boundaries(raw: Sequence[float], margin: float) -> tuple[list[float], list[bool]]:
    """Boundaries strictly increasing in (0, 1), at least ``margin`` apart and from 0 and 1; which were moved.

    Each b_k is clipped to ``[k margin, 1 - (S - k) margin]``, then raised to ``b_{k-1} + margin`` if needed.
    """
    n = len(raw)
    out: list[float] = []
    for k, b in enumerate(raw, 1):
        lo, hi = k * margin, 1 - (n + 1 - k) * margin
        value = min(max(b, lo), hi)
        if out:
            value = max(value, out[-1] + margin)
        out.append(value)
    return out, [abs(a - b) > 1e-12 for a, b in zip(out, raw)]
