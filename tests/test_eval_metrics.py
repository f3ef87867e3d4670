"""Per-video metrics of ``pyrawan.eval.metrics`` against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyrawan.errors import InputError
from pyrawan.eval import metrics as m


def checker(n=2, f=3, h=16, w=16, amplitude=0.1):
    """A ±amplitude pattern: squared error exactly amplitude² everywhere."""
    signs = np.where((np.indices((h, w)).sum(0) % 2) == 0, 1.0, -1.0)
    return np.broadcast_to(amplitude * signs, (n, f, 3, h, w)).copy()


def test_psnr_of_known_noise():
    clean = np.full((2, 3, 3, 16, 16), 0.5)
    noisy = clean + checker(amplitude=0.1)                       # MSE 0.01 -> 20 dB
    assert m.pixel_psnr(noisy, clean) == pytest.approx([20.0, 20.0], abs=1e-9)
    noisy = clean + checker(amplitude=0.01)                      # MSE 1e-4 -> 40 dB
    assert m.pixel_psnr(noisy, clean) == pytest.approx([40.0, 40.0], abs=1e-9)


def test_psnr_identical_is_capped_and_gaussian_noise_matches_sigma():
    clean = np.random.default_rng(0).uniform(size=(1, 4, 3, 32, 32))
    assert m.pixel_psnr(clean, clean)[0] == m.PSNR_CAP
    sigma = 0.05
    noisy = clean + np.random.default_rng(1).normal(scale=sigma, size=clean.shape)
    assert m.pixel_psnr(noisy, clean)[0] == pytest.approx(-20 * math.log10(sigma), abs=0.1)   # 26.02 dB


def test_latent_mse_and_psnr():
    ref = torch.zeros(2, 16, 2, 4, 4)
    ref[:, :, 0, 0, 0] = 2.0
    ref[:, :, 0, 0, 1] = -2.0                                   # range 4
    out = ref + 0.5                                             # MSE 0.25
    assert m.latent_mse(out, ref) == pytest.approx([0.25, 0.25])
    assert m.latent_psnr(out, ref) == pytest.approx([10 * math.log10(16 / 0.25)] * 2)
    half = ref * 0.5                                            # range 2; MSE 2 cells x 1 / 32 = 0.0625
    assert m.latent_psnr(half, ref) == pytest.approx([10 * math.log10(4**2 / 0.0625)] * 2)    # the reference's peak
    assert m.latent_psnr(ref, half) == pytest.approx([10 * math.log10(2**2 / 0.0625)] * 2)


def test_ssim_identity_is_one_and_falls_with_noise():
    rng = np.random.default_rng(2)
    clean = ndimage_smooth(rng.uniform(size=(1, 3, 3, 32, 32)))
    assert m.pixel_ssim(clean, clean)[0] == pytest.approx(1.0, abs=1e-12)
    values = [m.pixel_ssim(np.clip(clean + rng.normal(scale=s, size=clean.shape), 0, 1), clean)[0]
              for s in (0.01, 0.05, 0.2)]
    assert 1.0 > values[0] > values[1] > values[2] > 0.0
    assert m.pixel_ssim(1 - clean, clean)[0] < 0                 # anti-correlated structure: the covariance term
    noisy = np.clip(clean + rng.normal(scale=0.05, size=clean.shape), 0, 1)
    assert m.pixel_ssim(noisy, clean)[0] == pytest.approx(m.pixel_ssim(clean, noisy)[0], rel=1e-12)   # symmetric


def test_ssim_of_constant_images_is_the_luminance_term():
    # constant images: contrast/structure term is C2/C2 = 1, SSIM = (2 mx my + C1) / (mx² + my² + C1)
    a, b = np.full((1, 2, 3, 16, 16), 0.5), np.full((1, 2, 3, 16, 16), 0.6)
    c1 = (0.01) ** 2
    assert m.pixel_ssim(a, b)[0] == pytest.approx((2 * 0.5 * 0.6 + c1) / (0.25 + 0.36 + c1), rel=1e-12)


def ndimage_smooth(x):
    from scipy import ndimage
    return ndimage.gaussian_filter(x, sigma=(0, 0, 0, 1.5, 1.5))


def test_flicker_static_and_alternating():
    static = np.full((1, 5, 3, 16, 16), 0.3)
    assert m.temporal_flickering(static)[0] == 1.0
    alternating = np.zeros((2, 6, 3, 16, 16))
    alternating[0, 1::2] = 1.0                                  # 0 <-> 255 every frame: score 0
    alternating[1, 0::2], alternating[1, 1::2] = 0.2, 0.4      # levels 51 <-> 102: (255 - 51) / 255
    assert m.temporal_flickering(alternating) == pytest.approx([0.0, (255 - 51) / 255])


def moving_blob(shift_per_frame, frames=5, size=32):
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    video = np.zeros((1, frames, 3, size, size))
    for t in range(frames):
        cx = size / 2 - 4 + shift_per_frame * t
        video[0, t] = np.exp(-((x - cx) ** 2 + (y - size / 2) ** 2) / (2 * 3.0**2))
    return video


def test_motion_proxy_recovers_known_shift():
    assert m.motion_magnitude(moving_blob(0.0))[0] == pytest.approx(0.0, abs=1e-9)
    one = m.motion_magnitude(moving_blob(1.0))[0]
    two = m.motion_magnitude(moving_blob(2.0))[0]
    assert one == pytest.approx(1.0, abs=0.25)
    assert two > one * 1.5
    assert m.motion_magnitude(np.full((1, 3, 3, 16, 16), 0.5))[0] == 0.0     # flat: no texture, no motion


def test_shape_mismatch_is_an_input_error():
    with pytest.raises(InputError, match="differ in shape"):
        m.pixel_psnr(np.zeros((1, 3, 3, 16, 16)), np.zeros((1, 3, 3, 16, 8)))
    with pytest.raises(InputError, match=r"\[N, F, 3, H, W\]"):
        m.temporal_flickering(np.zeros((3, 16, 16)))


def test_paired_and_unpaired_bundles():
    frames = moving_blob(1.0)
    lat = torch.randn(1, 16, 2, 4, 4)
    paired = m.paired_metrics(lat, lat + 0.1, frames, frames)
    assert set(paired) == {"latent_mse", "latent_psnr", "pixel_psnr", "pixel_ssim"}
    assert paired["latent_mse"] == pytest.approx([0.01])
    assert paired["latent_psnr"] == pytest.approx(m.latent_psnr(lat, lat + 0.1))
    assert paired["pixel_psnr"][0] == m.PSNR_CAP and paired["pixel_ssim"][0] == pytest.approx(1.0)
    unpaired = m.unpaired_metrics(frames)
    assert set(unpaired) == {"temporal_flickering", "motion_magnitude"}
    assert unpaired["temporal_flickering"] == pytest.approx(m.temporal_flickering(frames))
    assert unpaired["motion_magnitude"] == pytest.approx(m.motion_magnitude(frames))
    assert set(m.METRICS) >= set(paired) | set(m.unpaired_metrics(frames))
