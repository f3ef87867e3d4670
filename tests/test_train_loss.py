"""The finetune losses (train/loss.py) against known answers: a one-stage pyramid is plain flow matching
(``x = (1 - rho) x0 + rho eps``, target ``eps - x0``), so a model that answers the target plus a per-sample
offset ``d`` has the loss ``d^2``, and a teacher that answers it plus ``e`` has the alignment ``(d - e)^2``."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pyrawan.pyramid.config import PyramidConfig
from pyrawan.train.data import StageBatch
from pyrawan.train.loss import stage_losses


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
                              torch.float32, teacher, process)
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
