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
from pyrawan.train.dmd import StageProcess
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


def gaussian_loop(critic_lr: float = 4e-2, lr: float = 4e-2) -> Loop:
    recipe = load_recipe("tiny-dmd", ["distill.guidance=1.0", "distill.teach_weight=0", "train.lora.enabled=false",
                                      f"train.optimizer.lr={lr}", f"distill.fake_score.optimizer.lr={critic_lr}",
                                      "train.optimizer.weight_decay=0", "distill.fake_score.optimizer.weight_decay=0"],
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


def train(loop: Loop, iterations: int, batch: int = 16) -> None:
    """The command's DMD iteration with the backward simulation of a one-step student: its input is noise."""
    one = torch.tensor([1.0])
    step = FewStep(0, 0, 0, 1.0, torch.zeros(1), one, None)
    proc = StageProcess("ordinary", torch.zeros(1), one, None)
    text = torch.zeros(batch, 1, 1)
    for i in range(iterations):
        loop.iteration = i
        gens = [torch.Generator().manual_seed(1000 * i + j) for j in range(batch)]
        x = torch.randn(batch, 2, 1, 1, 1, generator=gens[0])
        if i % 2 == 1:
            x_hat, record = generator_update(loop, x, step, text, proc, gens, 0)
            assert record["gen_applied"]
        else:
            with torch.no_grad():
                x_hat = x.flatten(1) @ loop.generator.engine.module.w.T + loop.generator.engine.module.b
            x_hat = x_hat.view(batch, 2, 1, 1, 1)
        assert fake_update(loop, x_hat, text, proc, gens)["fake_applied"]


def test_the_commands_dmd_update_moves_the_student_onto_the_data():
    loop = gaussian_loop()
    mean0, cov0 = distance(loop)
    train(loop, 100)
    mean, cov = distance(loop)
    assert mean < 0.25 * mean0 and cov < 0.25 * cov0, (mean0, mean, cov0, cov)


def test_with_real_and_fake_swapped_the_same_update_drives_the_student_away(monkeypatch):
    """The control: the problem tells the two apart (a swap flips the sign and the normaliser)."""
    from pyrawan.commands import distill_dmd as cmd

    real = cmd.dmd_gradient
    monkeypatch.setattr(cmd, "dmd_gradient", lambda x_hat, x0_real, x0_fake, s: real(x_hat, x0_fake, x0_real, s))
    loop = gaussian_loop()
    mean0, _ = distance(loop)
    train(loop, 40)
    assert distance(loop)[0] > 2 * mean0
