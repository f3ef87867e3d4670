"""The finetune losses (train/loss.py) against known answers: a one-stage pyramid is plain flow matching
(``x = (1 - rho) x0 + rho eps``, target ``eps - x0``), so a model that answers the target plus a per-sample
offset ``d`` has the loss ``d^2``, and a teacher that answers it plus ``e`` has the alignment ``(d - e)^2``."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pyrawan.pyramid.config import PyramidConfig
from pyrawan.train.data import StageBatch
from pyrawan.train.loss import same_input_alignment, stage_losses


class Answers(torch.nn.Module):
    """A Wan-like model that records its inputs and returns ``answer``."""

    config = SimpleNamespace(patch_size=(1, 1, 1))

    def __init__(self, answer: torch.Tensor):
        super().__init__()
        self.answer, self.seen = answer, {}
        self.marker = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))    # float64 weights, float32 asked
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, hidden_states, timestep, encoder_hidden_states, attention_kwargs=None, return_dict=False):
        self.seen = {"x": hidden_states, "t": timestep, "text": encoder_hidden_states}
        return (self.answer * self.weight,)


@pytest.mark.parametrize("process", ["pyramidal", "multires"])
def test_stage_losses_are_per_sample_squared_errors_of_flow_matching(process):
    gen = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(2, 3, 2, 2, 2, generator=gen) for _ in range(2))
    rho, text = torch.tensor([0.25, 0.75]), torch.randn(2, 4, 8, generator=gen)
    batch = StageBatch(0, [0, 1], x0, None, text, eps, rho)
    d, e = torch.tensor([0.5, -2.0]), torch.tensor([1.5, 1.0])
    target = eps - x0
    model = Answers(target + d.view(-1, 1, 1, 1, 1))
    asked = {}

    def teacher(x, sigma, txt):
        asked.update(x=x, sigma=sigma, text=txt)
        return target + e.view(-1, 1, 1, 1, 1)
    mse, align = stage_losses(model, batch, PyramidConfig(num_stages=1), (1, 1, 1), torch.device("cpu"),
                              torch.float32, same_input_alignment(teacher), process)
    assert torch.allclose(mse, d ** 2) and torch.allclose(align, (d - e) ** 2)
    assert torch.allclose(model.seen["x"], (1 - rho.view(-1, 1, 1, 1, 1)) * x0 + rho.view(-1, 1, 1, 1, 1) * eps)
    assert torch.allclose(model.seen["t"], 1000 * rho) and torch.equal(model.seen["text"], text)
    assert model.seen["x"].dtype == torch.float32
    assert torch.equal(asked["x"], model.seen["x"]) and torch.equal(asked["text"], text)   # the teacher sees the same
    assert torch.allclose(asked["sigma"].double(), rho.view(-1, 1).expand(-1, 2).double())
    mse.sum().backward()                                          # the loss carries the model's graph:
    answer_mean = (target + d.view(-1, 1, 1, 1, 1)).flatten(1).mean(1)
    assert model.weight.grad == pytest.approx(float((2 * d * answer_mean).sum()), rel=1e-5)   # 2 d_i mean(answer_i)
    alone, none = stage_losses(model, batch, PyramidConfig(num_stages=1), (1, 1, 1), torch.device("cpu"), torch.float32)
    assert none is None and torch.allclose(alone, d ** 2)


# ---- the full-resolution form (train.align_form: full-resolution) ----------------------------------

def point_mass_teacher(z: torch.Tensor, seen: list):
    """The exact velocity of data that is one full-resolution latent ``z``: ``(x - z) / s`` (its clean estimate
    is ``z`` whatever it is given). Records the inputs' shapes and levels."""
    def teacher(x, sigma, text):
        seen.append((tuple(x.shape), sigma.clone()))
        return (x - z) / sigma.view(len(x), 1, -1, 1, 1)
    return teacher


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_full_resolution_alignment_is_zero_for_the_exact_student_and_its_known_error_otherwise(stage):
    """Data = one latent z (Definition 1 stages, R_down of z). The exact student predicts the stage's true
    velocity; its clean estimate is R_down^i z, which is what the base's full-resolution estimate brought down
    gives: L = 0. A student off by d in velocity is off by the clean estimate's known map of d."""
    from pyrawan.train.loss import full_resolution_alignment, stage_estimate

    pyramid = PyramidConfig(num_stages=3, boundaries=(0.3, 0.6))
    gen = torch.Generator().manual_seed(stage)
    z = torch.randn(1, 2, 9, 16, 16, generator=gen, dtype=torch.float64).expand(2, -1, -1, -1, -1)
    stages = [z]
    for _ in range(2):
        stages.append(pyramid.resize.down(stages[-1]))
    x0 = stages[stage]
    x0_up = pyramid.resize.up(stages[stage + 1]) if stage < 2 else None
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    batch = StageBatch(stage, [3, 5], x0, x0_up, torch.zeros(2, 1, 1, dtype=torch.float64), eps,
                       torch.tensor([0.3, 0.8], dtype=torch.float64))
    x, sigma_nat, target = batch.sample(pyramid)
    seen = []
    align = full_resolution_alignment(point_mass_teacher(z, seen), pyramid, seed=0)
    assert float(align(batch, x, sigma_nat, target).max()) < 1e-20
    assert seen[0][0] == tuple(z.shape)                                          # the base ran at full resolution
    if stage:                                                                    # at the jumped level g_m(s) > s
        assert bool((seen[0][1].mean(1) > sigma_nat.mean(1)).all())
    d = 0.1 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    off = align(batch, x, sigma_nat, target + d)
    known = (stage_estimate(x, target + d, batch, pyramid) - x0).pow(2).flatten(1).mean(1)
    assert torch.allclose(off, known, rtol=1e-9) and bool((off > 0).all())
