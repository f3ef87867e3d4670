"""DMD math: the gradient moves a generator onto the data (exact Gaussian teacher, trained fake score),
the pyramidal clean estimate is exact, and backward simulation's exit step is shared by all ranks."""
import pytest
import torch

from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.process import clean_estimate
from pyrawan.pyramid.sampler import default_fewstep_levels, fewstep_rollout, sample_fewstep
from pyrawan.train.dmd import StageProcess, dmd_gradient, dmd_loss, exit_step, flow_matching_loss, score_levels

pytestmark = pytest.mark.usefixtures("one_thread")     # many tiny ops: threads only contend

# --- a 2-D Gaussian problem -------------------------------------------------------------------------
# A "latent" is [B, 1, 1, 1, 2]: one frame of two pixels; P averages the pair (Haar's low band).
MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
SIGMA = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
P = torch.full((2, 2), 0.5, dtype=torch.float64)


def pair_project(x):
    return x.mean(-1, keepdim=True).expand_as(x)


def process(kind, sigma_c=0.3, sigma_n=0.8):
    project = None if sigma_n == 1.0 else pair_project
    return StageProcess(kind, torch.tensor([sigma_c], dtype=torch.float64), torch.tensor([sigma_n], dtype=torch.float64),
                        project)


def linear_maps(proc, rho):
    """Per sample: x = A x0 + s eps and v = B x0 + eps (A, B [N, 2, 2], s [N])."""
    sc, sn = float(proc.sigma_c), float(proc.sigma_n)
    s = (1 - rho) * sc + rho * sn
    eye = torch.eye(2, dtype=torch.float64)
    if proc.kind == "ordinary" or proc.project is None:
        return (1 - s)[:, None, None] * eye, -eye.expand(len(rho), 2, 2), s
    a = (1 - rho)[:, None, None] * (1 - sc) * eye + rho[:, None, None] * (1 - sn) * P
    b = ((1 - sn) * P - (1 - sc) * eye) / (sn - sc)
    return a, b.expand(len(rho), 2, 2), s


def gaussian_velocity(x, rho, proc, mu, cov):
    """E[v | x] for data N(mu, cov) under ``proc`` at levels ``rho``: exact, linear in x."""
    a, b, s = linear_maps(proc, rho)
    k = a @ cov @ a.transpose(1, 2) + (s ** 2)[:, None, None] * torch.eye(2, dtype=torch.float64)
    r = torch.linalg.solve(k, (x - (a @ mu).view(-1, 2)).unsqueeze(-1))          # K^-1 (x - A mu)
    x0 = mu + (cov @ a.transpose(1, 2) @ r).squeeze(-1)
    eps = s[:, None] * r.squeeze(-1)
    return (b @ x0.unsqueeze(-1)).squeeze(-1) + eps


def as_latent(v):
    return v.view(-1, 1, 1, 1, 2)


def run_dmd(kind, sign=1.0, sigma_n=0.8, steps=300, batch=256, seed=0):
    """Train a one-step linear generator with DMD; returns its output mean and covariance."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    proc = process(kind, sigma_n=sigma_n)
    w = torch.nn.Parameter(torch.eye(2, dtype=torch.float64) * 0.3)
    bias = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    fake_mu = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    fake_l = torch.nn.Parameter(torch.eye(2, dtype=torch.float64) * 0.3)
    g_opt = torch.optim.Adam([w, bias], lr=1e-2, betas=(0.0, 0.999))
    f_opt = torch.optim.Adam([fake_mu, fake_l], lr=2e-2, betas=(0.0, 0.999))

    def generate(n):
        return torch.randn(n, 2, generator=gen, dtype=torch.float64) @ w.T + bias

    for it in range(steps * 5):
        # fake score: flow matching on the generator's (detached) samples, every iteration
        with torch.no_grad():
            x_hat = generate(batch)
        rho = score_levels(batch, 0.02, 0.98, gen)
        eps = torch.randn(batch, 2, generator=gen, dtype=torch.float64)
        x_t = proc.noisy(as_latent(x_hat), as_latent(eps), rho).view(-1, 2)
        target = proc.target(as_latent(x_hat), as_latent(eps)).view(-1, 2)
        fake_cov = fake_l @ fake_l.T + 1e-6 * torch.eye(2, dtype=torch.float64)
        loss = flow_matching_loss(gaussian_velocity(x_t, rho, proc, fake_mu, fake_cov), target).mean()
        f_opt.zero_grad()
        loss.backward()
        f_opt.step()
        if it % 5 != 4:
            continue
        # generator: one DMD step every 5 fake-score steps
        x_hat = generate(batch)
        rho = score_levels(batch, 0.02, 0.98, gen)
        eps = torch.randn(batch, 2, generator=gen, dtype=torch.float64)
        x_t = proc.noisy(as_latent(x_hat.detach()), as_latent(eps), rho)
        with torch.no_grad():
            fake_cov = fake_l @ fake_l.T + 1e-6 * torch.eye(2, dtype=torch.float64)
            f_real = gaussian_velocity(x_t.view(-1, 2), rho, proc, MU, SIGMA)
            f_fake = gaussian_velocity(x_t.view(-1, 2), rho, proc, fake_mu, fake_cov)
        x0_real = proc.clean(x_t, as_latent(f_real), rho)
        x0_fake = proc.clean(x_t, as_latent(f_fake), rho)
        grad = dmd_gradient(as_latent(x_hat), x0_real, x0_fake, proc.level(rho).mean(1))
        g_loss = dmd_loss(as_latent(x_hat), sign * grad.g).mean()
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()
    with torch.no_grad():
        out = generate(20000)
    return out.mean(0), torch.cov(out.T)


def close_to_data(mean, cov, tol=0.05):
    scale = SIGMA.diagonal().sqrt()
    mean_ok = bool(((mean - MU).abs() / scale < tol).all())
    cov_ok = bool(((cov - SIGMA).abs() / (scale[:, None] * scale[None, :]) < tol).all())
    return mean_ok and cov_ok


@pytest.mark.slow            # the fast tier runs the same known answer through the distill command's update
@pytest.mark.parametrize("kind,sigma_n", [("ordinary", 1.0), ("ordinary", 0.8), ("pyramidal-star", 0.8),
                                          ("pyramidal", 0.8)])
def test_dmd_moves_a_one_step_generator_onto_the_data(kind, sigma_n):
    mean, cov = run_dmd(kind, sigma_n=sigma_n)
    assert close_to_data(mean, cov), (kind, mean, cov)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ordinary", "pyramidal-star"])
def test_dmd_with_the_gradient_sign_flipped_does_not(kind):
    mean, cov = run_dmd(kind, sign=-1.0, steps=150)
    assert not close_to_data(mean, cov, tol=0.2), (kind, mean, cov)


def test_dmd_gradient_and_loss_on_numbers_worked_by_hand():
    """Per sample: g = (x0_fake - x0_real) / mean|x_hat - x0_real|, w_dmd = sigma^2 / that mean, loss 0.5 mean g^2.
    Sample 1's student already matches the real estimate: the normaliser is eps, never 0 or negative."""
    x_hat = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]]).view(2, 1, 1, 1, 3).requires_grad_()
    real = torch.tensor([[0.0, 2.0, 6.0], [0.5, 0.5, 0.5]], dtype=torch.float64).view(2, 1, 1, 1, 3)
    fake = real + torch.tensor([[1.0, -1.0, -5.0], [1.0, 0.0, -1.0]], dtype=torch.float64).view(2, 1, 1, 1, 3)
    grad = dmd_gradient(x_hat, real, fake, torch.tensor([0.5, 0.2]))
    assert grad.g.shape == x_hat.shape and grad.g.dtype == torch.float64
    assert torch.allclose(grad.g.flatten(1), torch.tensor([[0.75, -0.75, -3.75], [1e6, 0.0, -1e6]],
                                                          dtype=torch.float64), rtol=1e-5)
    assert torch.allclose(grad.w_dmd, torch.tensor([0.25 * 3 / 4, 0.04 / 1e-6], dtype=torch.float64), rtol=1e-5)
    g = grad.g.clone()
    g[1] = torch.tensor([2.0, 0.0, -1.0]).view(1, 1, 1, 3)
    loss = dmd_loss(x_hat, g)
    assert loss.dtype == x_hat.dtype and torch.allclose(loss, torch.tensor([0.5 * 15.1875 / 3, 0.5 * 5 / 3]))
    loss.sum().backward()
    assert torch.allclose(x_hat.grad, (g / 3).float())                    # gradient g / n in x_hat


def test_losses_are_per_sample_and_levels_stay_in_their_range():
    pred = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]).view(2, 1, 1, 1, 3)
    assert torch.allclose(flow_matching_loss(pred, torch.zeros_like(pred)), torch.tensor([14 / 3, 0.0]))
    levels = score_levels(2000, 0.3, 0.5, torch.Generator().manual_seed(0))
    assert levels.dtype == torch.float64 and 0.3 <= levels.min() < 0.301 and 0.499 < levels.max() <= 0.5


def test_the_ordinary_process_gives_every_frame_one_level_the_pyramidal_ones_their_own():
    sigma_c, sigma_n = torch.tensor([0.1, 0.3], dtype=torch.float64), torch.tensor([0.5, 0.9], dtype=torch.float64)
    rho = torch.tensor([0.5], dtype=torch.float64)
    assert StageProcess("ordinary", sigma_c, sigma_n, None).level(rho)[0].tolist() == pytest.approx([0.45, 0.45])
    for kind in ("pyramidal", "pyramidal-star"):
        assert StageProcess(kind, sigma_c, sigma_n, None).level(rho)[0].tolist() == pytest.approx([0.3, 0.6])
    x0 = torch.zeros(1, 1, 2, 1, 1)                                      # float32 latents, float64 levels
    assert StageProcess("pyramidal", sigma_c, sigma_n, pair_project).noisy(x0, x0, rho).dtype == torch.float32


# --- the clean estimates ---------------------------------------------------------------------------

@pytest.mark.parametrize("stage", [0, 1])                      # stage 1: sigma_c > 0, where PT's high band differs
@pytest.mark.parametrize("resizer", ["haar", "dct", "db4"])
@pytest.mark.parametrize("kind", ["ordinary", "pyramidal"])
def test_clean_estimate_is_exact_for_the_true_velocity(resizer, kind, stage):
    pyramid = PyramidConfig(num_stages=3, boundaries=(0.3, 0.6), resizer=resizer)
    gen = torch.Generator().manual_seed(1)
    frames, side = ((5, 8), (3, 4))[stage]
    x0 = torch.randn(3, 4, frames, side, side, generator=gen, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    sigma_c, sigma_n = (s.double() for s in pyramid.levels(stage, frames))
    proc = StageProcess(kind, sigma_c, sigma_n, pyramid.resize.project)
    rho = torch.tensor([0.1, 0.5, 0.95], dtype=torch.float64)
    x = proc.noisy(x0, eps, rho)
    v = proc.target(x0, eps)
    assert torch.allclose(proc.clean(x, v, rho), x0, atol=1e-9)
    if kind == "pyramidal":                                     # the closed-form noise estimate, too
        _, eps_hat = clean_estimate(x, v, rho, sigma_c, sigma_n, pyramid.resize.project)
        assert torch.allclose(eps_hat, eps, atol=1e-9)


def test_ptstar_is_the_ordinary_formula_on_a_one_stage_pyramid():
    gen = torch.Generator().manual_seed(2)
    x0, eps = (torch.randn(2, 4, 3, 4, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    levels = PyramidConfig(num_stages=1).levels(0, 3, top=True)
    star, plain = StageProcess("pyramidal-star", *levels, None), StageProcess("ordinary", *levels, None)
    rho = torch.tensor([0.2, 0.7], dtype=torch.float64)
    v = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    assert torch.equal(star.noisy(x0, eps, rho), plain.noisy(x0, eps, rho))
    assert torch.equal(star.target(x0, eps), eps - x0)
    assert torch.equal(star.clean(x0, v, rho), plain.clean(x0, v, rho))
    assert torch.allclose(plain.clean(x0, v, rho), x0 - rho.view(-1, 1, 1, 1, 1) * v)     # one stage: sigma = rho


def test_ptstar_drops_the_high_band_correction_that_pt_applies():
    """They share the low band; the high band differs where sigma_c > 0 and coincides at stage 0
    (there (sigma_n - sigma_c) / ((1 - sigma_c) sigma_n) = 1)."""
    pyramid = PyramidConfig(num_stages=3, boundaries=(0.3, 0.6))
    gen = torch.Generator().manual_seed(3)
    rho = torch.tensor([0.5], dtype=torch.float64)
    low = pyramid.resize.project
    for stage, differs in ((1, True), (0, False)):
        frames = (3, 5)[1 - stage]
        x, v = (torch.randn(1, 2, frames, 4, 4, generator=gen, dtype=torch.float64) for _ in range(2))
        levels = [s.double() for s in pyramid.levels(stage, frames)]
        pt, star = (StageProcess(kind, *levels, low).clean(x, v, rho) for kind in ("pyramidal", "pyramidal-star"))
        assert torch.allclose(low(pt), low(star), atol=1e-12)
        assert torch.allclose(pt, star, atol=1e-12) is not differs


# --- backward simulation -----------------------------------------------------------------------------

def test_exit_step_depends_on_seed_and_iteration_only(monkeypatch):
    torch.manual_seed(7)                        # another global state than below (mutation testing forks)
    draws = [exit_step(0, i, 5) for i in range(200)]
    assert set(draws) == set(range(5))
    torch.manual_seed(123)                      # the global generator and the rank play no part
    monkeypatch.setenv("RANK", "1")
    assert [exit_step(0, i, 5) for i in range(200)] == draws
    assert [exit_step(1, i, 5) for i in range(200)] != draws


def test_rollout_stops_at_the_input_of_step_k():
    """The stage, level and shape of step k's input (that its earlier steps carry no gradient inside the
    distillation loop is tested in test_distill.py, where the loop wraps the rollout in no_grad)."""
    pyramid = PyramidConfig(num_stages=3, boundaries=(0.3, 0.6))
    levels = default_fewstep_levels((2, 2, 1))
    weight = torch.nn.Parameter(torch.tensor(0.9))

    def velocity(x, sigma):
        return weight * x

    noise = torch.randn(1, 2, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    shapes = []
    for k in range(5):
        x, step = fewstep_rollout(velocity, noise, pyramid, levels, k, torch.Generator().manual_seed(7))
        assert step.index == k and x.requires_grad == (k > 0)           # the caller decides about no_grad
        shapes.append((step.stage, step.rho, tuple(x.shape[-3:])))
    assert [s[:2] for s in shapes] == [(2, 1.0), (2, 0.5), (1, 1.0), (1, 0.5), (0, 1.0)]
    assert shapes[-1][2] == (5, 8, 8) and shapes[0][2] == (2, 2, 2)
    # the last step's estimate, computed from the rollout with the same noise, is the sampler's output
    x, step = fewstep_rollout(velocity, noise, pyramid, levels, 4, torch.Generator().manual_seed(7))
    final = sample_fewstep(velocity, noise, pyramid, levels, torch.Generator().manual_seed(7))
    x0_hat, _ = clean_estimate(x, velocity(x, step.sigma_nat), step.rho, step.sigma_c, step.sigma_n, step.project)
    assert torch.allclose(x0_hat, final, atol=1e-6)


# --- the global score span's helpers (numbers by hand) -------------------------------------------------

def test_stage_spans_and_shares_on_numbers_worked_by_hand():
    from pyrawan.train.dmd import span_shares, stage_spans

    assert stage_spans((0.25, 0.5), top=2) == [(0.0, 0.25), (0.25, 0.5), (0.5, 1.0)]
    assert stage_spans((0.25, 0.5), top=1) == [(0.0, 0.25), (0.25, 1.0)]       # the top stage reaches 1
    assert stage_spans((0.25, 0.5), top=0) == [(0.0, 1.0)]
    spans = [(0.0, 0.25), (0.25, 0.5), (0.5, 1.0)]
    assert span_shares(spans, 0.125, 0.375) == [0.125, 0.125, 0.0]           # none is negative
    assert span_shares(spans, 0.0, 1.0) == [0.25, 0.25, 0.5]
    assert span_shares(spans, 0.375, 0.75) == [0.0, 0.125, 0.25]


def test_draw_stage_follows_the_shares_and_never_picks_an_empty_stage():
    from pyrawan.train.dmd import draw_stage

    gen = torch.Generator().manual_seed(4)
    draws = torch.tensor([draw_stage([0.25, 0.0, 0.75], gen) for _ in range(4000)])
    assert set(draws.tolist()) == {0, 2}
    assert abs(float((draws == 0).double().mean()) - 0.25) < 0.03
    assert draw_stage([0.0, 0.0, 0.5], gen) == 2 and draw_stage([0.5, 0.0, 0.0], gen) == 0
    draws = torch.tensor([draw_stage([0.5, 0.5, 1.0], gen) for _ in range(4000)])     # shares need not sum to 1
    assert torch.allclose(torch.bincount(draws, minlength=3) / 4000.0, torch.tensor([0.25, 0.25, 0.5]), atol=0.03)


def test_draw_stage_depends_on_its_generator_only():
    from pyrawan.train.dmd import draw_stage

    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        gen = torch.Generator().manual_seed(9)
        runs.append([draw_stage([0.5, 0.5, 1.0], gen) for _ in range(64)])
    assert runs[0] == runs[1] and len(set(runs[0])) == 3


def test_draw_stage_at_the_top_of_the_uniform_still_returns_a_stage_with_a_share(monkeypatch):
    """u = sum(shares) (what float rounding can give): the last stage that has a share, not an empty one; u = 0
    (torch.rand can return it): the first stage that has one."""
    from pyrawan.train.dmd import draw_stage

    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.ones(1, dtype=torch.float64))
    assert draw_stage([0.25, 0.5, 0.0], torch.Generator()) == 1
    assert draw_stage([0.5, 0.0, 0.0], torch.Generator()) == 0
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros(1, dtype=torch.float64))   # u = 0: not stage 0
    assert draw_stage([0.0, 0.5, 0.5], torch.Generator()) == 1


def test_local_level_is_the_frame_mean_natural_level_mapped_onto_the_stage():
    """Stage 1, two frames (block sizes 4 and 8): h(0.5) = 1/3 and 1/(1 + sqrt 8), so over the whole range
    (natural 0 to 1) the local level of global 0.5 is their mean; PPF levels are global (linear map)."""
    from pyrawan.train.dmd import local_level, natural_levels

    natural = natural_levels(1, 2, keep_time=False, ppf=False)
    assert natural(0.5).tolist() == pytest.approx([1 / 3, 1 / (1 + 8 ** 0.5)], rel=1e-12)
    assert local_level(0.5, (0.0, 1.0), natural) == pytest.approx((1 / 3 + 1 / (1 + 8 ** 0.5)) / 2, rel=1e-12)
    assert natural_levels(1, 2, keep_time=True, ppf=False)(0.5).tolist() == pytest.approx([1 / 3, 1 / 3])
    ppf = natural_levels(1, 3, keep_time=False, ppf=True)
    assert ppf(0.25).dtype == torch.float64 and ppf(0.25).tolist() == [0.25] * 3
    assert local_level(0.5, (0.25, 0.75), ppf) == pytest.approx(0.5, rel=1e-12)
    assert local_level(0.3, (0.2, 0.6), ppf) == pytest.approx(0.25, rel=1e-12)


def test_eps_form_gradient_on_numbers_worked_by_hand():
    """Per sample and frame: g = sigma / (1 - sigma) (eps_real - eps_fake) / mean|x_hat - x0_real|,
    w_dmd = mean(sigma)^2 / that mean. Sample 1's student matches the real estimate: the normaliser is eps."""
    from pyrawan.train.dmd import eps_form_gradient

    x_hat = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], [[0.5] * 3] * 2]).view(2, 1, 2, 1, 3)
    real = torch.tensor([[[0.0, 2.0, 6.0], [1.0, 1.0, 1.0]], [[0.5] * 3] * 2]).view(2, 1, 2, 1, 3)
    d = torch.tensor([[[1.0, -1.0, -5.0], [4.0, 0.0, -4.0]], [[1.0, 0.0, -1.0], [2.0, 0.0, 0.0]]]).view(2, 1, 2, 1, 3)
    eps_fake = torch.linspace(-1, 1, 12).view(2, 1, 2, 1, 3)
    sigma = torch.tensor([[0.5, 0.2], [0.2, 0.75]])                      # s / (1 - s): 1, 0.25 and 3
    grad = eps_form_gradient(x_hat, real, eps_fake + d, eps_fake, sigma)
    assert grad.g.shape == x_hat.shape and grad.g.dtype == torch.float64
    expected = torch.tensor([[[6 / 7, -6 / 7, -30 / 7], [6 / 7, 0.0, -6 / 7]],
                             [[2.5e5, 0.0, -2.5e5], [6e6, 0.0, 0.0]]], dtype=torch.float64)
    assert torch.allclose(grad.g.view(2, 2, 3), expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(grad.w_dmd, torch.tensor([0.35 ** 2 * 6 / 7, 0.475 ** 2 / 1e-6], dtype=torch.float64),
                          rtol=1e-5)


@pytest.mark.parametrize("stage", [0, 1])
@pytest.mark.parametrize("kind", ["ordinary", "pyramidal"])
def test_noise_estimate_of_the_true_velocity_is_the_noise(kind, stage):
    """``StageProcess.noise`` of the exact target is ``eps`` (PT's closed form at stage 0 too, where sigma_n < 1)."""
    pyramid = PyramidConfig(num_stages=3, boundaries=(0.3, 0.6))
    gen = torch.Generator().manual_seed(4)
    frames, side = ((5, 8), (3, 4))[stage]
    x0, eps = (torch.randn(2, 2, frames, side, side, generator=gen, dtype=torch.float64) for _ in range(2))
    proc = StageProcess(kind, *pyramid.levels(stage, frames), pyramid.resize.project)
    rho = torch.tensor([0.2, 0.9], dtype=torch.float64)
    x = proc.noisy(x0, eps, rho)
    assert torch.allclose(proc.noise(x, proc.target(x0, eps), rho), eps, atol=1e-9)
