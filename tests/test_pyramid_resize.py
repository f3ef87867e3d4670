"""Orthogonal resizers: Haar = Pyramid Flow's pooling, and the projection identities for every transform."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pyrawan.errors import InputError
from pyrawan.pyramid.resize import daubechies_filter, get_resizer, resizer_names

NAMES = ["haar", "dct", "db4"]
SHAPES = [(2, 3, 5, 8, 12), (1, 4, 9, 16, 6), (3, 2, 1, 4, 4), (1, 2, 3, 2, 2)]


def rand(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_registry_lists_the_required_resizers():
    assert set(NAMES) <= set(resizer_names())
    with pytest.raises(InputError, match="unknown resizer 'wavelet'.*haar"):
        get_resizer("wavelet")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", SHAPES)
def test_haar_is_average_pooling_and_nearest_repeat_with_first_frame_rule(shape, seed):
    x = rand(shape, seed)
    haar = get_resizer("haar")
    down = haar.down(x)
    assert torch.allclose(down[:, :, 0], F.avg_pool2d(x[:, :, 0], 2), atol=1e-12)
    if shape[2] > 1:
        assert torch.allclose(down[:, :, 1:], F.avg_pool3d(x[:, :, 1:], 2), atol=1e-12)
    up = haar.up(down)
    expected = torch.cat([down[:, :, :1], down[:, :, 1:].repeat_interleave(2, dim=2)], dim=2)
    expected = expected.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
    assert torch.allclose(up, expected, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_haar_keep_time_pools_space_only(seed):
    x = rand((2, 3, 4, 8, 8), seed)
    down = get_resizer("haar", keep_time=True).down(x)
    assert down.shape == (2, 3, 4, 4, 4)
    assert torch.allclose(down, F.avg_pool3d(x, (1, 2, 2)), atol=1e-12)


@pytest.mark.parametrize("keep_time", [False, True])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES)
def test_down_up_identities(name, shape, keep_time):
    r = get_resizer(name, keep_time=keep_time)
    x = rand(shape, hash((name, shape)) % 1000)
    y = r.down(x)
    t = shape[2] if keep_time else 1 + (shape[2] - 1) // 2
    assert y.shape == (*shape[:2], t, shape[3] // 2, shape[4] // 2)
    assert torch.allclose(r.down(r.up(y)), y, atol=1e-10)                # D U = I
    p = r.project(x)
    assert torch.allclose(r.project(p), p, atol=1e-10)                   # P P = P
    assert torch.allclose(r.down(torch.full_like(x, 2.5)), torch.full_like(y, 2.5), atol=1e-10)
    z = rand(shape, 99)                                                  # P is symmetric (orthogonal)
    assert torch.allclose((p * z).sum(), (x * r.project(z)).sum(), atol=1e-9)
    assert r.high_pass(x).abs().max() > 1e-3                             # and not the identity


@pytest.mark.parametrize("name", NAMES)
def test_low_band_rows_are_orthonormal(name):
    r = get_resizer(name)
    for n in (2, 4, 6, 8, 14, 104):
        low = r.low_band(n)
        assert low.shape == (n // 2, n)
        assert np.allclose(low @ low.T, np.eye(n // 2), atol=1e-12)
        assert np.allclose(low.sum(axis=1), np.sqrt(2), atol=1e-12)      # constants pass through


def test_daubechies_filter_has_its_vanishing_moments():
    h = daubechies_filter(4)
    assert len(h) == 8 and np.isclose(np.sum(h**2), 1.0, atol=1e-14)
    g = h[::-1] * (-1.0) ** np.arange(8)                                 # the high-pass filter
    for j in range(4):
        assert abs(np.sum(g * np.arange(8) ** j)) < 1e-9


def test_coupled_noise_is_white_with_unit_variance():
    eps = rand((4000, 1, 5, 4, 4), 3).float()
    coarse = get_resizer("dct").couple_noise(eps)                       # [N, 1, 3, 2, 2]
    flat = coarse.flatten(1)
    cov = flat.T @ flat / flat.shape[0]
    assert torch.allclose(cov, torch.eye(flat.shape[1]), atol=0.08)


def test_odd_sizes_are_rejected_with_the_dimension_named():
    with pytest.raises(InputError, match="H = 5"):
        get_resizer("haar").down(torch.zeros(1, 1, 3, 5, 4))
    with pytest.raises(InputError, match="T = 4"):
        get_resizer("haar").down(torch.zeros(1, 1, 4, 4, 4))


def test_daubechies_filters_are_the_minimum_phase_ones():
    """db2's taps in closed form, (1 + sqrt 3, 3 + sqrt 3, 3 - sqrt 3, 1 - sqrt 3) / (4 sqrt 2), and the db4 low
    band's rows: the filter from column 2i on (periodic)."""
    s3, d = np.sqrt(3), 4 * np.sqrt(2)
    assert np.allclose(daubechies_filter(2), [(1 + s3) / d, (3 + s3) / d, (3 - s3) / d, (1 - s3) / d], atol=1e-12)
    h = daubechies_filter(4)
    assert abs(h[0]) > abs(h[-1])                                         # minimum phase: energy first
    low = get_resizer("db4").low_band(8)
    assert np.allclose(low[0], h) and np.allclose(low[1], np.roll(h, 2)) and np.allclose(low[3], np.roll(h, 6))


def test_resizers_name_themselves():
    assert repr(get_resizer("dct", keep_time=True)) == "DCT(keep_time=True)"
    assert repr(get_resizer("haar")) == "Haar(keep_time=False)"


def test_shape_errors_name_the_dimension_and_what_it_must_be():
    haar = get_resizer("haar")
    with pytest.raises(InputError, match=r"^cannot downsample W = 3 \(latent shape \(1, 1, 3, 4, 3\)\): W must be even\.$"):
        haar.down(torch.zeros(1, 1, 3, 4, 3))
    with pytest.raises(InputError, match=r"T = 4 \(latent shape \(1, 1, 4, 4, 4\)\): T must be odd \(1 \+ 2k\)\.$"):
        haar.down(torch.zeros(1, 1, 4, 4, 4))
    with pytest.raises(InputError, match=r"^expected a latent video \[B, C, T, H, W\], got shape \(4, 4\)\.$"):
        haar.down(torch.zeros(4, 4))
    with pytest.raises(InputError, match=r"choose one of: db4, dct, haar\.$"):
        get_resizer("wavelet")
    assert repr(type(haar)()) == "Haar(keep_time=False)"                 # the default keeps no frame pairs

