"""The `pyrawan distill` command's DMD update (``generator_update`` and ``fake_update`` of
commands/distill_dmd.py, with the command's engines and loop state) on a problem with a known answer:
data N(MU, SIGMA) in 2-D, the student an affine map of noise, the teacher the data's exact velocity,
the fake score a Gaussian model trained by ``fake_update`` on the student's samples. The student must
move onto the data; a swap of real and fake (or a flipped sign) drives it away."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pyrawan.commands.distill_dmd import fake_update, generator_update
from pyrawan.commands.distill_loop import Loop
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.sampler import FewStep
from pyrawan.recipe import load_recipe
from pyrawan.train import dmd
from pyrawan.train.dmd import ScoreSite, StageProcess
from pyrawan.train.engine import Context, EngineSpec, make_engine
from pyrawan.train.run import Trainable

pytestmark = pytest.mark.usefixtures("one_thread")

MU = torch.tensor([1.0, -0.5])
SIGMA = torch.tensor([[0.5, 0.2], [0.2, 0.3]])


class Wanlike(torch.nn.Module):
    """What ``denoise`` calls: ``model(hidden_states [B, 2, 1, 1, 1], timestep = 1000 sigma [B], ...)[0]``."""

    config = SimpleNamespace(patch_size=(1, 1, 1))

    def forward(self, hidden_states, timestep, encoder_hidden_states, attention_kwargs=None, return_dict=False):
        x = hidden_states.flatten(1)
        return (self.velocity(x, timestep.view(-1, 1) / 1000).view_as(hidden_states),)


class GaussianScore(Wanlike):
    """The exact flow-matching velocity ``E[eps - x0 | x]`` of data N(mu, L L^T) at level s."""

    def __init__(self, mu: torch.Tensor, cov: torch.Tensor, trainable: bool):
        super().__init__()
        self.mu = torch.nn.Parameter(mu.clone(), requires_grad=trainable)
        self.chol = torch.nn.Parameter(torch.linalg.cholesky(cov), requires_grad=trainable)

    def velocity(self, x, s):
        cov = self.chol @ self.chol.T
        k = (1 - s)[:, :, None] ** 2 * cov + s[:, :, None] ** 2 * torch.eye(2)         # Cov(x) [B, 2, 2]
        r = torch.linalg.solve(k, (x - (1 - s) * self.mu).unsqueeze(-1)).squeeze(-1)
        x0 = self.mu + (1 - s) * r @ cov                                                # E[x0 | x]
        return (x - x0) / s


class Affine(Wanlike):
    """The student: clean estimate ``W x + b`` from its input ``x`` (velocity ``(x - W x - b) / s``)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(0.3 * torch.eye(2))
        self.b = torch.nn.Parameter(torch.zeros(2))

    def velocity(self, x, s):
        return (x - x @ self.w.T - self.b) / s


def gaussian_loop(critic_lr: float = 4e-2, lr: float = 4e-2, teach_weight: float = 0.0, form: str = "x0",
                  extra: tuple[str, ...] = ()) -> Loop:
    recipe = load_recipe("tiny-dmd", ["distill.guidance=1.0", f"distill.teach_weight={teach_weight}",
                                      f"distill.dmd_form={form}",
                                      "train.lora.enabled=false",
                                      f"train.optimizer.lr={lr}", f"distill.fake_score.optimizer.lr={critic_lr}",
                                      "train.optimizer.weight_decay=0", "distill.fake_score.optimizer.weight_decay=0",
                                      *extra],
                         kind="distill")
    ctx = Context(0, 1, 0, torch.device("cpu"), "single", False)
    t = recipe.train
    student = make_engine(Affine(), EngineSpec.of(t, prefix="generator-"), ctx, 1)
    fake = GaussianScore(torch.zeros(2), 0.09 * torch.eye(2), trainable=True)      # starts at the student's law
    critic = make_engine(fake, EngineSpec.of(t, prefix="fake_score-", optimizer=recipe.distill.fake_score.optimizer),
                         ctx, 1)
    teacher = SimpleNamespace(transformer=GaussianScore(MU, SIGMA, trainable=False))
    base = SimpleNamespace(empty_text=torch.zeros(1, 1))
    return Loop(recipe, ctx, Trainable(student), Trainable(critic), teacher, PyramidConfig(num_stages=1), [[1.0]],
                None, base, None)


def distance(loop: Loop) -> tuple[float, float]:
    """(|mean - MU|, |cov - SIGMA|) of the student's law, exact from its affine map."""
    student = loop.generator.engine.module
    with torch.no_grad():
        return float((student.b - MU).norm()), float((student.w @ student.w.T - SIGMA).norm())


def train(loop: Loop, iterations: int, batch: int = 16) -> list[dict]:
    """The command's DMD iteration with the backward simulation of a one-step student: its input is noise.
    Returns the generator steps' records."""
    one = torch.tensor([1.0])
    step = FewStep(0, 0, 0, 1.0, torch.zeros(1), one, None)
    site = ScoreSite(0, StageProcess("ordinary", torch.zeros(1), one, None), lambda x: x,
                     tuple(loop.recipe.distill.score_levels))
    text, records = torch.zeros(batch, 1, 1), []
    for i in range(iterations):
        loop.iteration = i
        gens = [torch.Generator().manual_seed(1000 * i + j) for j in range(batch)]
        x = torch.randn(batch, 2, 1, 1, 1, generator=gens[0])
        if i % 2 == 1:
            x_hat, record = generator_update(loop, x, step, text, site, gens, 0)
            records.append(record)
            assert record["gen_applied"] and set(record) == {"gen_loss", "w_dmd", "gen_grad_norm", "teach_loss",
                                                             "gen_applied"}
        else:
            with torch.no_grad():
                x_hat = x.flatten(1) @ loop.generator.engine.module.w.T + loop.generator.engine.module.b
            x_hat = x_hat.view(batch, 2, 1, 1, 1)
        fake = fake_update(loop, x_hat, text, site, gens)
        assert fake["fake_applied"] and set(fake) == {"fake_loss", "fake_grad_norm", "fake_applied"}
    return records


@pytest.mark.parametrize("form", ["x0", "eps"])
def test_the_commands_dmd_update_moves_the_student_onto_the_data(form):
    loop = gaussian_loop(form=form)
    mean0, cov0 = distance(loop)
    assert all(r["teach_loss"] is None for r in train(loop, 100))
    mean, cov = distance(loop)
    assert mean < 0.25 * mean0 and cov < 0.25 * cov0, (mean0, mean, cov0, cov)


def swap_real_and_fake(monkeypatch, form: str) -> None:
    """Patch the form's gradient to take the fake score as real and the real as fake."""
    if form == "x0":
        real = dmd.dmd_gradient
        monkeypatch.setattr(dmd, "dmd_gradient", lambda x_hat, x0_real, x0_fake, s: real(x_hat, x0_fake, x0_real, s))
    else:
        real = dmd.eps_form_gradient
        monkeypatch.setattr(dmd, "eps_form_gradient",
                            lambda x_hat, x0_real, e_real, e_fake, s: real(x_hat, x0_real, e_fake, e_real, s))


@pytest.mark.parametrize("form", ["x0", "eps"])
def test_with_real_and_fake_swapped_the_same_update_drives_the_student_away(monkeypatch, form):
    """The control: the problem tells the two apart (a swap flips the sign, and in the x0 form the normaliser)."""
    swap_real_and_fake(monkeypatch, form)
    loop = gaussian_loop(form=form)
    mean0, _ = distance(loop)
    train(loop, 40)
    assert distance(loop)[0] > 1.8 * mean0         # the right update brings it under 0.25 x (above)


def test_the_update_draws_only_from_the_per_sample_generators_and_passes_each_samples_level(monkeypatch):
    """Resume and multi-process runs rely on it: the global generator plays no part."""
    levels, real = [], dmd.dmd_gradient

    def spy(x_hat, x0_real, x0_fake, sigma_mean):
        levels.append(sigma_mean)
        return real(x_hat, x0_real, x0_fake, sigma_mean)
    monkeypatch.setattr(dmd, "dmd_gradient", spy)
    weights = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        loop = gaussian_loop()
        train(loop, 4)
        weights.append([p.detach().clone() for p in loop.generator.engine.module.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    low, high = loop.recipe.distill.score_levels
    assert levels[0].shape == (16,) and len(set(levels[0].tolist())) == 16
    assert low <= float(levels[0].min()) and float(levels[0].max()) <= high


def test_the_teacher_term_pulls_the_student_to_the_teachers_samples(monkeypatch):
    """L_teach alone (the DMD loss zeroed): its value is the untouched student's known error on the pairs it
    picks, and teach_weight x L_teach moves the student onto the teacher's samples (all at c)."""
    from pyrawan.commands import distill_dmd as cmd
    from pyrawan.train.teach import TeachPairs

    real = cmd.dmd_loss
    monkeypatch.setattr(cmd, "dmd_loss", lambda x_hat, g: 0 * real(x_hat, g))
    c = torch.tensor([-2.0, 2.0])
    noise = torch.randn(8, 2, 1, 1, 1, generator=torch.Generator().manual_seed(5))
    pairs = TeachPairs(noise, [torch.zeros(1, 1)] * 8, c.view(1, 2, 1, 1, 1).expand(8, -1, -1, -1, -1).clone())
    off = gaussian_loop(teach_weight=0.0)
    off.teach = pairs
    assert [r["teach_loss"] for r in train(off, 2)] == [None]                    # weight 0: not computed
    loop = gaussian_loop(teach_weight=0.5)
    loop.teach = pairs
    records = train(loop, 60)
    picked = noise[2:4].flatten(1)                                       # iteration 1, batch 2: pairs 2 and 3
    assert records[0]["teach_loss"] == pytest.approx(float(((0.3 * picked - c) ** 2).mean()), rel=1e-5)
    student = loop.generator.engine.module
    assert float((student.b.detach() - c).norm()) < 0.75 * float(c.norm())         # a flipped sign: away


def one_step_site(rho_range: tuple[float, float], move=lambda x: x) -> tuple[FewStep, ScoreSite]:
    one = torch.tensor([1.0])
    return (FewStep(0, 0, 0, 1.0, torch.zeros(1), one, None),
            ScoreSite(0, StageProcess("ordinary", torch.zeros(1), one, None), move, rho_range))


def test_both_updates_score_at_the_sites_levels_not_the_recipes(monkeypatch):
    """With ``score_span: global`` a site's ``rho_range`` is a share of ``score_levels``: the generator's fake
    score and the fake score's own step must see levels inside the site's range."""
    from pyrawan.commands import distill_dmd as cmd

    seen, real = [], cmd.denoise

    def spy(model, x, sigma, text, **kw):
        seen.append(sigma.detach().clone())
        return real(model, x, sigma, text, **kw)
    monkeypatch.setattr(cmd, "denoise", spy)
    means, gradient = [], dmd.dmd_gradient
    monkeypatch.setattr(dmd, "dmd_gradient", lambda x_hat, real, fake, sigma_mean: means.append(sigma_mean) or
                        gradient(x_hat, real, fake, sigma_mean))
    loop = gaussian_loop()
    assert tuple(loop.recipe.distill.score_levels) != (0.4, 0.45)
    step, site = one_step_site((0.4, 0.45))
    gens = [torch.Generator().manual_seed(j) for j in range(16)]
    x_hat, _ = generator_update(loop, torch.randn(16, 2, 1, 1, 1), step, torch.zeros(16, 1, 1), site, gens, 0)
    fake_update(loop, x_hat, torch.zeros(16, 1, 1), site, gens)
    assert len(seen) == 2 and torch.equal(means[0], seen[0].mean(1))       # w_dmd: each sample's own level
    for sigma in seen:                                  # one stage: the level is rho
        assert 0.4 <= float(sigma.min()) and float(sigma.max()) <= 0.45 and len(set(sigma.flatten().tolist())) == 16


def test_the_generator_loss_is_a_mean_over_the_exit_steps_elements(monkeypatch):
    """A site whose grid holds twice the exit step's elements (each twice) and a gradient of ones: the DMD loss
    0.5 mean g^2 = 0.5 per element of the site counts 2 x per element of x_hat, so the record says 1.0."""
    from pyrawan.commands import distill_dmd as cmd
    from pyrawan.train.dmd import DmdGradient

    monkeypatch.setattr(cmd, "real_velocity", lambda loop, x, sigma, text: torch.zeros_like(x))
    monkeypatch.setattr(cmd, "denoise", lambda model, x, sigma, text, **kw: torch.zeros_like(x))
    monkeypatch.setattr(cmd, "form_gradient", lambda form, proc, x_hat, *rest: DmdGradient(
        torch.ones_like(x_hat, dtype=torch.float64), torch.ones(len(x_hat), dtype=torch.float64)))
    loop = gaussian_loop()
    step, site = one_step_site((0.2, 0.8), move=lambda x: torch.cat([x, x], dim=1))
    gens = [torch.Generator().manual_seed(j) for j in range(4)]
    _, record = generator_update(loop, torch.randn(4, 2, 1, 1, 1), step, torch.zeros(4, 1, 1), site, gens, 0)
    assert record["gen_loss"] == pytest.approx(1.0, rel=1e-6)
    step, site = one_step_site((0.2, 0.8))
    _, record = generator_update(loop, torch.randn(1, 2, 1, 1, 1), step, torch.zeros(1, 1, 1), site, gens[:1], 0)
    assert record["gen_loss"] == pytest.approx(0.5, rel=1e-6) and record["w_dmd"] == pytest.approx(1.0)   # batch 1


def test_the_gan_terms_enter_both_updates_with_their_inputs_and_weights(monkeypatch):
    """``distill.gan.weight > 0`` with the GAN losses replaced by known ones (the heads and hidden states are
    test_distill_gan.py's, slow): what each update hands them, the records, and that each step descends
    ``weight x`` its GAN loss (the DMD gradient set to 0)."""
    from pyrawan.commands import distill_dmd as cmd
    from pyrawan.train.dmd import DmdGradient

    loop = gaussian_loop(extra=("distill.gan.weight=0.5", "distill.gan.critic_weight=0.25"))
    loop.gan = object()                                   # on; the helpers below stand in for the heads
    student, critic = loop.generator.engine.module, loop.critic.engine.module
    monkeypatch.setattr(cmd, "form_gradient", lambda form, proc, x_hat, *rest: DmdGradient(
        torch.zeros_like(x_hat, dtype=torch.float64), torch.ones(len(x_hat), dtype=torch.float64)))
    seen, real_velocity = {}, cmd.real_velocity

    def velocity_spy(lp, x_t, sigma, text):
        seen.update(x_t=x_t, sigma=sigma)
        return real_velocity(lp, x_t, sigma, text)

    def gan_generator_loss(lp, x_t, sigma, text):
        gan = x_t.pow(2).flatten(1).mean(1)
        params = list(student.parameters())
        seen.update(gen_args=(lp, x_t.detach().clone(), sigma, text), gan=gan.detach(),
                    grads=torch.autograd.grad(gan.mean(), params, retain_graph=True),
                    before=[q.detach().clone() for q in params])
        return gan
    monkeypatch.setattr(cmd, "real_velocity", velocity_spy)
    monkeypatch.setattr(cmd, "gan_generator_loss", gan_generator_loss)
    step, site = one_step_site((0.2, 0.8))
    gens = [torch.Generator().manual_seed(j) for j in range(4)]
    text = torch.zeros(4, 1, 1)
    x_hat, record = generator_update(loop, torch.randn(4, 2, 1, 1, 1), step, text, site, gens, 0)
    lp, x_t, sigma, txt = seen["gen_args"]
    assert lp is loop and txt is text and torch.equal(sigma, seen["sigma"]) and torch.allclose(x_t, seen["x_t"])
    assert record["gan_loss"] == pytest.approx(float(seen["gan"].mean()))
    moved = sum(float(((q.detach() - b) * g).sum())
                for q, b, g in zip(student.parameters(), seen["before"], seen["grads"]))
    assert moved < 0                                      # the step went down the GAN loss

    def gan_critic_forward(lp, x_fake, x_real, sigma, txt):
        seen.update(critic_args=(lp, x_fake, x_real, sigma, txt))
        cls = (critic.mu.sum() + 1) * torch.ones(len(x_fake))
        return torch.zeros_like(x_fake), cls, {"real_logit": 0.25}, "features"

    def gan_critic_step(lp, features):
        seen.update(step_args=(lp, features))
        return {"cls_loss": 0.125}
    monkeypatch.setattr(cmd, "gan_critic_forward", gan_critic_forward)
    monkeypatch.setattr(cmd, "gan_critic_step", gan_critic_step)
    mu = critic.mu.detach().clone()
    fake = fake_update(loop, x_hat, text, site, gens, real=x_hat + 1)
    lp, x_fake, x_real, sigma, txt = seen["critic_args"]
    assert lp is loop and txt is text and seen["step_args"] == (loop, "features")
    assert 0.2 <= float(sigma.min()) and float(sigma.max()) <= 0.8 and sigma.shape == (4, 1)
    # real and generated re-noised with the same noise and level: they differ by (1 - sigma) (real - x_hat)
    assert torch.allclose(x_real - x_fake, (1 - sigma).view(4, 1, 1, 1, 1).float().expand(4, 2, 1, 1, 1))
    assert fake["real_logit"] == 0.25 and fake["cls_loss"] == 0.125 and fake["fake_applied"]
    assert bool((critic.mu.detach() < mu).all())          # descends critic_weight x cls (its gradient is +1)
