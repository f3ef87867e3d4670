"""Orthogonal resizing operators (spec section 2).

A resizer is an orthonormal two-band filter bank: its low band ``L`` (``[n/2, n]``, orthonormal
rows) maps one spatial axis onto the coarser grid. In time, latent frame 0 passes through alone
and later frames form Haar pairs. At natural amplitude, with ``m`` elements per block::

    D = A_L / sqrt(m)      (down: a constant video stays the same constant)
    U = sqrt(m) A_L^T      (up: D U = I)
    P = U D = A_L^T A_L    (orthogonal projection onto the low band)

Adding a transform is one subclass that defines ``low_band(n)``; nothing else changes.
All operators are matrix products along an axis: no Python loops over blocks or frames.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import scipy.fft
import torch

from pyrawan.errors import InputError
from pyrawan.pyramid.geometry import block_sizes

_REGISTRY: dict[str, type["Resizer"]] = {}


class Resizer:
    """Natural-amplitude ``down``/``up`` on latents ``[B, C, T, H, W]``."""

    name = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            _REGISTRY[cls.name] = cls

    def __init__(self, keep_time: bool = False):
        self.keep_time = keep_time

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keep_time={self.keep_time})"

    # -- the one thing a transform defines -------------------------------------------------
    def low_band(self, n: int) -> np.ndarray:
        """Low-band analysis matrix of one spatial axis: ``[n // 2, n]`` float64, orthonormal rows."""
        raise NotImplementedError

    # -- natural-amplitude operators --------------------------------------------------------
    def down(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, C, T', H / 2, W / 2]`` with ``T' = 1 + (T - 1) // 2`` (or T)."""
        t, h, w = _check_divisible(x, self.keep_time)
        x = _along(x, -1, self._space(w, x, up=False))
        x = _along(x, -2, self._space(h, x, up=False))
        return x if self.keep_time else _along(x, -3, _time_matrix(t, up=False, device=x.device, dtype=x.dtype))

    def up(self, y: torch.Tensor) -> torch.Tensor:
        """``[B, C, T', H', W'] -> [B, C, T, 2 H', 2 W']`` with ``T = 2 (T' - 1) + 1`` (or T')."""
        t, h, w = y.shape[-3:]
        y = _along(y, -1, self._space(2 * w, y, up=True))
        y = _along(y, -2, self._space(2 * h, y, up=True))
        return y if self.keep_time else _along(y, -3, _time_matrix(2 * (t - 1) + 1, up=True, device=y.device, dtype=y.dtype))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``P x = U D x``: the low band of ``x`` at its own resolution."""
        return self.up(self.down(x))

    def high_pass(self, x: torch.Tensor) -> torch.Tensor:
        """``(I - P) x``: the part of ``x`` that ``down`` removes."""
        return x - self.project(x)

    def block_sizes(self, num_coarse_frames: int) -> torch.Tensor:
        """Elements ``m`` per block for each coarse frame ``[T']`` (float64): what one coarse value stands for."""
        return block_sizes(num_coarse_frames, self.keep_time)

    def couple_noise(self, eps: torch.Tensor) -> torch.Tensor:
        """White unit noise at the coarser stage coupled to ``eps``: ``sqrt(m) D(eps)`` (section 5)."""
        coarse = self.down(eps)
        m = self.block_sizes(coarse.shape[-3]).to(coarse.device, coarse.dtype)
        return coarse * m.sqrt().view(-1, 1, 1)

    def _space(self, n: int, like: torch.Tensor, up: bool) -> torch.Tensor:
        """Natural ``D`` (``[n/2, n]``) or ``U`` (``[n, n/2]``) of one spatial axis of length ``n``."""
        return _space_matrix(type(self), n, up, like.device, like.dtype)


class Haar(Resizer):
    """Average pooling / nearest repeat: Pyramid Flow's operators."""

    name = "haar"

    def low_band(self, n: int) -> np.ndarray:
        return np.kron(np.eye(n // 2), np.full((1, 2), 1 / math.sqrt(2)))


class DCT(Resizer):
    """Ideal low-pass resize: keep the first half of the orthonormal DCT-II coefficients."""

    name = "dct"

    def low_band(self, n: int) -> np.ndarray:
        full = scipy.fft.dct(np.eye(n), norm="ortho", axis=0)  # [n, n], rows = DCT-II basis
        half = scipy.fft.dct(np.eye(n // 2), norm="ortho", axis=0)
        return half.T @ full[: n // 2]


class Identity(Resizer):
    """No resizing: every stage keeps the full-resolution latent (Pyramidal Patchification, ``kind: ppf``).

    ``D = U = P = I``, ``I - P = 0`` and one element per block (``m = 1``), so a jump changes nothing and
    a stage sample is an ordinary flow-matching sample. Not a choice of ``pyramid.resizer``.
    """

    def __init__(self, keep_time: bool = True):
        super().__init__(keep_time=True)

    def down(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def up(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def high_pass(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def block_sizes(self, num_coarse_frames: int) -> torch.Tensor:
        return torch.ones(num_coarse_frames, dtype=torch.float64)


def daubechies_filter(p: int) -> np.ndarray:
    """Scaling filter of the Daubechies wavelet with ``p`` vanishing moments (``2p`` taps, sums to sqrt 2).

    Spectral factorisation: ``|H(w)|^2 = cos^(2p)(w/2) Q(sin^2(w/2))`` with
    ``Q(y) = sum_k C(p-1+k, k) y^k``; keep the minimum-phase root of each factor.
    """
    q = [math.comb(p - 1 + k, k) for k in range(p)]
    y_roots = np.roots(q[::-1])
    z_roots = []
    for y in y_roots:  # y = (2 - z - 1/z) / 4  ->  z^2 - (2 - 4y) z + 1 = 0
        pair = np.roots([1.0, -(2 - 4 * y), 1.0])
        z_roots.append(pair[np.argmin(np.abs(pair))])
    h = np.real(np.poly(np.concatenate([-np.ones(p), z_roots])))
    return h * (math.sqrt(2) / h.sum())


class Daubechies4(Resizer):
    """Daubechies-4 wavelet (8 taps) with periodic extension (wraps around at the borders)."""

    name = "db4"
    moments = 4

    def low_band(self, n: int) -> np.ndarray:
        taps = daubechies_filter(self.moments)
        rows = np.zeros((n // 2, n))
        for k, tap in enumerate(taps):  # 2p taps, vectorised over the n/2 rows
            rows[np.arange(n // 2), (2 * np.arange(n // 2) + k) % n] += tap
        return rows


def resizer_names() -> list[str]:
    return sorted(_REGISTRY)


def get_resizer(name: str, keep_time: bool = False) -> Resizer:
    """The resizer registered under ``name`` (``haar``, ``dct``, ``db4``)."""
    if name not in _REGISTRY:
        raise InputError(f"unknown resizer {name!r}; choose one of: {', '.join(resizer_names())}.")
    return _REGISTRY[name](keep_time=keep_time)


# -- matrices, cached per size -----------------------------------------------------------------

@lru_cache(maxsize=128)
def _space_matrix_cpu(cls: type[Resizer], n: int, up: bool) -> torch.Tensor:
    low = torch.from_numpy(cls().low_band(n))  # [n/2, n]
    return low.T * math.sqrt(2) if up else low / math.sqrt(2)


def _space_matrix(cls, n: int, up: bool, device, dtype) -> torch.Tensor:
    return _space_matrix_cpu(cls, n, up).to(device=device, dtype=dtype)


@lru_cache(maxsize=128)
def _time_matrix_cpu(t: int, up: bool) -> torch.Tensor:
    """Frame 0 alone, then pairs: natural down ``[T', T]`` (average) or up ``[T, T']`` (repeat)."""
    coarse = torch.arange(t) if t == 1 else (torch.arange(t) + 1) // 2
    onehot = torch.nn.functional.one_hot(coarse, 1 + (t - 1) // 2).double()  # [T, T']
    return onehot if up else (onehot / onehot.sum(0)).T


def _time_matrix(t: int, up: bool, device, dtype) -> torch.Tensor:
    return _time_matrix_cpu(t, up).to(device=device, dtype=dtype)


def _along(x: torch.Tensor, dim: int, mat: torch.Tensor) -> torch.Tensor:
    """Apply ``mat`` (``[n_out, n_in]``) along dimension ``dim`` (-1 = W, -2 = H, -3 = T) of ``x``."""
    if dim == -1:
        return x @ mat.T
    if dim == -2:
        return mat @ x
    return (mat @ x.flatten(-2)).unflatten(-1, x.shape[-2:])


def _check_divisible(x: torch.Tensor, keep_time: bool) -> tuple[int, int, int]:
    if x.ndim != 5:
        raise InputError(f"expected a latent video [B, C, T, H, W], got shape {tuple(x.shape)}.")
    t, h, w = x.shape[-3:]
    for name, n, ok in (("T", t, keep_time or t % 2 == 1), ("H", h, h % 2 == 0), ("W", w, w % 2 == 0)):
        if not ok:
            fix = "odd (1 + 2k)" if name == "T" else "even"
            raise InputError(f"cannot downsample {name} = {n} (latent shape {tuple(x.shape)}): {name} must be {fix}.")
    return t, h, w
