"""Jump, training sample/target and clean estimate (spec sections 4-6)."""
import math

import pytest
import torch

from pyrawan.pyramid.geometry import block_sizes, expand_to_fine
from pyrawan.pyramid.process import boundary_samples, clean_estimate, jump, pyramid_flow_sample
from pyrawan.pyramid.resize import get_resizer
from pyrawan.pyramid.schedule import jump_level, sigma_to_natural, stage_levels

NAMES = ["haar", "dct", "db4"]
N = 20000  # samples for the covariance tests: sampling error of a covariance entry ~ 1/sqrt(N)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def noise_part_covariance(name, keep_time, s, seed=0):
    """Jump N copies of x = (1 - s) x0c + s eps_c; return (x' - (1 - level) U(x0c) flattened, level)."""
    r = get_resizer(name, keep_time=keep_time)
    x0c = torch.randn(1, 1, 3, 2, 2, generator=gen(seed), dtype=torch.float64).expand(N, -1, -1, -1, -1)
    eps_c = torch.randn(N, 1, 3, 2, 2, generator=gen(seed + 1), dtype=torch.float64)
    x_fine, level = jump((1 - s) * x0c + s * eps_c, s, r, generator=gen(seed + 2))
    signal = (1 - level).view(1, 1, -1, 1, 1) * r.up(x0c)
    return (x_fine - signal).flatten(1), level


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("keep_time", [False, True])  # False: m = 8 blocks after frame 0; True: all m = 4
@pytest.mark.parametrize("s", [0.1, 0.5, 0.9])
def test_jump_noise_is_white_at_the_new_level(name, keep_time, s):
    noise, level = noise_part_covariance(name, keep_time, s)
    t_fine = level.shape[0]
    var = level.repeat_interleave(16)                                  # per element of [T, 4, 4]
    cov = noise.T @ noise / N
    assert torch.allclose(cov.diagonal(), var**2, rtol=0.05)
    off = cov - torch.diag(cov.diagonal())
    assert off.abs().max() < 5 / math.sqrt(N) * var.max() ** 2 * 1.5  # incl. neighbours inside a block
    assert noise.mean(0).abs().max() < 5 / math.sqrt(N)
    assert t_fine == (3 if keep_time else 5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("keep_time", [False, True])
def test_jump_signal_part_is_exact(name, keep_time):
    r = get_resizer(name, keep_time=keep_time)
    x0c = torch.randn(2, 3, 3, 4, 6, generator=gen(5), dtype=torch.float64)
    s = torch.tensor([0.3, 0.6, 0.8], dtype=torch.float64)
    x_fine, level = jump((1 - s).view(1, 1, -1, 1, 1) * x0c, s, r, generator=gen(6))
    # xi only enters the high band, so P x' is deterministic
    assert torch.allclose(r.project(x_fine), (1 - level).view(1, 1, -1, 1, 1) * r.up(x0c), atol=1e-10)


@pytest.mark.parametrize("keep_time", [False, True])
@pytest.mark.parametrize("b", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("coarse_stage", [1, 2])
def test_jump_level_is_the_sigma_to_natural_map(keep_time, b, coarse_stage):
    t_coarse = 3
    s = sigma_to_natural(b, coarse_stage, t_coarse, keep_time)
    x = torch.zeros(1, 1, t_coarse, 2, 2, dtype=torch.float64)
    _, level = jump(x, s, get_resizer("haar", keep_time=keep_time))
    t_fine = level.shape[0]
    assert torch.allclose(level, sigma_to_natural(b, coarse_stage - 1, t_fine, keep_time), atol=1e-12)
    m = expand_to_fine(block_sizes(t_coarse, keep_time), t_fine, keep_time)
    assert torch.allclose(level, jump_level(expand_to_fine(s, t_fine, keep_time), m), atol=1e-12)


@pytest.mark.parametrize("m", [4, 8])
@pytest.mark.parametrize("s", [0.05, 0.4, 0.95])
def test_haar_jump_equals_pyramid_flow_renoising(m, s):
    """Pyramid Flow: x' = alpha up(x) + beta n', n' ~ N(0, (1+g) I - g 11^T) per block, g = 1/(m-1)."""
    gamma, e = 1 / (m - 1), 1 - s
    alpha_pf = 1 / (math.sqrt(1 + 1 / gamma) * (1 - e) + e)
    beta_pf = alpha_pf * (1 - e) / math.sqrt(gamma)
    keep_time = m == 4
    x = torch.zeros(1, 1, 3, 2, 2, dtype=torch.float64)
    x[..., :, :] = 1.0
    x_fine, level = jump(x, s, get_resizer("haar", keep_time=keep_time), generator=gen(0))
    frame = 1                                                           # a frame with block size m
    alpha = float(get_resizer("haar", keep_time).project(x_fine)[0, 0, frame, 0, 0])  # = alpha * 1
    assert alpha == pytest.approx(alpha_pf, rel=1e-12)
    # block covariance of ours: level^2 (I - 11^T/m); Pyramid Flow's: beta^2 ((1+g) I - g 11^T)
    ones = torch.ones(m, m, dtype=torch.float64)
    ours = float(level[frame]) ** 2 * (torch.eye(m, dtype=torch.float64) - ones / m)
    theirs = beta_pf**2 * ((1 + gamma) * torch.eye(m, dtype=torch.float64) - gamma * ones)
    assert torch.allclose(ours, theirs, atol=1e-12)
    assert float(level[frame]) == pytest.approx(alpha_pf * s * math.sqrt(m), rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("keep_time", [False, True])
def test_definition_1_noisy_end_is_a_jump_from_the_clean_end_of_the_coarser_stage(name, keep_time):
    """y_n of stage i (x0 coarser = D x0) has the distribution of jump(y_c of stage i+1)."""
    r = get_resizer(name, keep_time=keep_time)
    b, stage, t_fine = (0.1, 0.45), 0, 5
    x0 = torch.randn(1, 1, t_fine, 4, 4, generator=gen(1), dtype=torch.float64).expand(N, -1, -1, -1, -1)
    x0c = r.down(x0)
    t_coarse = x0c.shape[2]
    # clean end of stage 1 and its jump
    sc1, _ = stage_levels(b, stage + 1, t_coarse, keep_time)
    y_c1, _ = boundary_samples(x0c, None, torch.randn(x0c.shape, generator=gen(2), dtype=torch.float64), sc1, sc1)
    jumped, level = jump(y_c1, sc1, r, generator=gen(3))
    # noisy end of stage 0
    _, sn0 = stage_levels(b, stage, t_fine, keep_time)
    assert torch.allclose(level, sn0, atol=1e-12)
    _, y_n0 = boundary_samples(x0, r.up(x0c), torch.randn(x0.shape, generator=gen(4), dtype=torch.float64), sn0, sn0)
    for a in (jumped, y_n0):                                           # same mean and covariance
        flat = a.flatten(1)
        mean = flat.mean(0)
        assert torch.allclose(mean, ((1 - sn0).view(1, 1, -1, 1, 1) * r.project(x0[:1])).flatten(), atol=5 / math.sqrt(N))
        centred = flat - mean
        cov = centred.T @ centred / N
        target = torch.diag((sn0**2).repeat_interleave(16))
        assert (cov - target).abs().max() < 0.15 * float(sn0.min()) ** 2     # no noise or twice it: off by sn0^2


def make_stage(name, seed=0, keep_time=False, top=False, b=(0.3, 0.7), stage=1):
    r = get_resizer(name, keep_time=keep_time)
    x0 = torch.randn(3, 2, 5, 8, 8, generator=gen(seed), dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=gen(seed + 1), dtype=torch.float64)
    sigma_c, sigma_n = stage_levels(b, stage, 5, keep_time, top=top)
    return r, x0, eps, sigma_c, sigma_n


@pytest.mark.parametrize("name", NAMES)
def test_target_is_the_finite_difference_along_rho(name):
    r, x0, eps, sc, sn = make_stage(name)
    x0_up = r.up(r.down(x0)) + 0.1  # any coarser clean latent (Definition 2 is not exactly P x0)
    rho, d = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64), 1e-4
    x, sigma, v = pyramid_flow_sample(x0, x0_up, eps, rho, sc, sn)
    xp, sp, _ = pyramid_flow_sample(x0, x0_up, eps, rho + d, sc, sn)
    xm, sm, _ = pyramid_flow_sample(x0, x0_up, eps, rho - d, sc, sn)
    fd = (xp - xm) / (sp - sm).view(3, 1, 5, 1, 1)
    assert torch.allclose(fd, v, atol=1e-7)
    assert sigma.shape == (3, 5) and torch.allclose(sigma, (1 - rho[:, None]) * sc + rho[:, None] * sn)


def test_one_stage_sample_is_plain_flow_matching():
    x0 = torch.randn(2, 2, 3, 4, 4, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=gen(1), dtype=torch.float64)
    sc, sn = stage_levels((), 0, 3, top=True)
    rho = torch.tensor([0.25, 0.75], dtype=torch.float64)
    x, sigma, v = pyramid_flow_sample(x0, None, eps, rho, sc, sn)
    r = rho.view(-1, 1, 1, 1, 1)
    assert torch.allclose(x, (1 - r) * x0 + r * eps) and torch.allclose(v, eps - x0)
    assert torch.allclose(sigma, rho[:, None].expand(2, 3))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("keep_time", [False, True])
@pytest.mark.parametrize("rho", [0.0, 0.3, 0.8, 1.0])
def test_clean_estimate_is_exact_on_known_samples(name, keep_time, rho):
    r, x0, eps, sc, sn = make_stage(name, keep_time=keep_time)
    x, _, v = pyramid_flow_sample(x0, r.project(x0), eps, torch.full((3,), rho, dtype=torch.float64), sc, sn)
    x0_hat, eps_hat = clean_estimate(x, v, rho, sc, sn, r.project)
    assert torch.allclose(eps_hat, eps, atol=1e-10)
    assert torch.allclose(x0_hat, x0, atol=1e-9)  # at rho = 1 too: the true v still carries Q x0


@pytest.mark.parametrize("rho", [0.1, 0.6, 0.99])
def test_clean_estimate_at_the_top_stage_needs_no_projection(rho):
    r, x0, eps, sc, sn = make_stage("haar", top=True, stage=2)
    x, _, v = pyramid_flow_sample(x0, None, eps, torch.full((3,), rho, dtype=torch.float64), sc, sn)
    x0_hat, eps_hat = clean_estimate(x, v, rho, sc, sn, None)
    assert torch.allclose(x0_hat, x0, atol=1e-9) and torch.allclose(eps_hat, eps, atol=1e-10)


def test_stage_forward_of_an_upsampled_latent_is_the_ordinary_sample():
    """The docstring's identity: for ``x0 = U(x0_coarse)`` (no high band) the stage sample is ``(1 - sigma) x0 +
    sigma eps`` with ``sigma = (1 - rho) sigma_c + rho sigma_n`` per frame."""
    from pyrawan.pyramid.process import stage_forward

    r = get_resizer("haar")
    x0 = r.up(torch.randn(2, 2, 3, 2, 2, generator=gen(7), dtype=torch.float64))
    eps = torch.randn(x0.shape, generator=gen(8), dtype=torch.float64)
    sc, sn = stage_levels((0.3, 0.7), 1, 5)
    for rho in (0.25, 0.8):
        s = ((1 - rho) * sc + rho * sn).view(1, 1, -1, 1, 1)
        assert torch.allclose(stage_forward(x0, eps, rho, sc, sn, r.project), (1 - s) * x0 + s * eps, atol=1e-12)


def test_a_training_sample_keeps_the_latents_dtype():
    """float32 latents with float64 levels (as the trainer has them) give a float32 sample and target."""
    r, x0, eps, sc, sn = make_stage("haar")
    x, sigma, v = pyramid_flow_sample(x0.float(), r.project(x0).float(), eps.float(),
                                      torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64), sc, sn)
    assert x.dtype == torch.float32 and v.dtype == torch.float32 and sigma.dtype == torch.float64


def test_a_ppf_jump_changes_nothing():
    """Pyramidal Patchification: no resizing, m = 1, so the latent and its per-frame levels pass unchanged."""
    from pyrawan.pyramid.config import PyramidConfig

    resize = PyramidConfig(num_stages=2, kind="ppf").resize
    assert resize.keep_time is True and resize.block_sizes(3).dtype == torch.float64
    assert torch.equal(resize.block_sizes(3), torch.ones(3, dtype=torch.float64))
    x = torch.randn(1, 2, 5, 2, 2, generator=gen(9), dtype=torch.float64)
    level = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5], dtype=torch.float64)
    out, fine = jump(x, level, resize, generator=gen(10))
    assert torch.equal(out, x) and torch.equal(fine, level)
