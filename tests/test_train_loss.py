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


def test_same_input_alignment_is_the_squared_gap_to_the_base_on_the_same_input():
    """The base answers the student's velocity plus ``e`` per sample: the alignment is ``e^2``; the base sees the
    student's input, level and captions, and carries no graph."""
    batch = StageBatch(0, [0, 1], torch.zeros(2, 1, 1, 1, 2), None, torch.randn(2, 3, 4), torch.zeros(2, 1, 1, 1, 2),
                       torch.tensor([0.25, 0.75]))
    x, sigma = torch.randn(2, 1, 1, 1, 2), torch.tensor([[0.25], [0.75]])
    pred = torch.randn(2, 1, 1, 1, 2, requires_grad=True)
    e, seen = torch.tensor([0.5, -3.0]), {}

    def base(xb, sb, text):
        seen.update(x=xb, sigma=sb, text=text, grad=torch.is_grad_enabled())
        return pred.detach() + e.view(-1, 1, 1, 1, 1)
    align = same_input_alignment(base)(batch, x, sigma, pred)
    assert torch.allclose(align, e ** 2)
    assert seen["x"] is x and seen["sigma"] is sigma and seen["text"] is batch.text and not seen["grad"]
    align.sum().backward()
    assert torch.allclose(pred.grad, (-2 * e / 2).view(-1, 1, 1, 1, 1).expand(2, 1, 1, 1, 2))   # d/dpred (pred - b)^2 / 2


def test_full_resolution_alignment_draws_its_noise_from_seed_item_and_level_only(monkeypatch):
    """The jumps' noise: the same for the same (seed, item, rho) whatever the batch position and the global
    generator; different for another item, level or seed. The base gets the captions and answers in x's dtype."""
    from pyrawan.train import loss
    from pyrawan.train.loss import full_resolution_alignment, full_resolution_estimate

    pyramid = PyramidConfig(num_stages=2, boundaries=(0.5,))
    draws, texts = [], []
    real = loss.full_resolution_estimate

    def spy(teacher, x, sigma_nat, text, stage, pyr, gens):
        draws.append([torch.randn(4, generator=torch.Generator().set_state(g.get_state())) for g in gens])
        return real(teacher, x, sigma_nat, text, stage, pyr, gens)
    monkeypatch.setattr(loss, "full_resolution_estimate", spy)

    def base(x, sigma, text):                               # nonlinear: its estimate keeps some of the jump noise
        texts.append(text)
        return torch.tanh(3 * x)
    x = torch.ones(2, 1, 3, 2, 2, dtype=torch.float64)
    sigma = torch.full((2, 3), 0.5, dtype=torch.float64)

    def align(items, rho, seed=0):
        batch = StageBatch(1, items, x, None, torch.full((2, 1, 1), float(seed)), x, torch.tensor(rho))
        return full_resolution_alignment(base, pyramid, seed)(batch, x, sigma, torch.zeros_like(x))
    torch.manual_seed(0)
    first = align([3, 5], [0.5, 0.5])
    torch.manual_seed(1)
    assert torch.equal(align([3, 5], [0.5, 0.5]), first) and torch.equal(draws[1][0], draws[0][0])
    assert texts[0] is not None and torch.equal(texts[0], torch.zeros(2, 1, 1))
    assert not torch.equal(draws[0][0], draws[0][1]) and first[0] != first[1]          # another item
    align([5, 3], [0.5, 0.5])
    assert torch.equal(draws[2][1], draws[0][0])                                          # position plays no part
    align([3, 3], [0.5, 0.25])
    assert not torch.equal(draws[3][0], draws[3][1])                                      # another level
    assert not torch.equal(align([3, 5], [0.5, 0.5], seed=1), first)                     # another seed
    half = torch.ones(1, 1, 3, 2, 2)
    out = full_resolution_estimate(lambda a, s, t: torch.zeros(a.shape, dtype=torch.float64), half, sigma[:1], None, 1,
                                   pyramid, [torch.Generator().manual_seed(0)])
    assert out.dtype == torch.float32


def test_alignment_noise_is_the_documented_align_stream_and_processes_are_named():
    """The jumps' noise is ``generator(seed, "align", item, rho)``: a rename would change every run's L_dist
    (a resumed run after an upgrade included), so the stream is pinned. An unknown process is refused."""
    from pyrawan.train import loss
    from pyrawan.train.data import generator
    from pyrawan.train.loss import full_resolution_alignment

    pyramid = PyramidConfig(num_stages=2, boundaries=(0.5,))
    seen = []
    real = loss.full_resolution_estimate

    def spy(teacher, x, sigma_nat, text, stage, pyr, gens):
        seen.extend(torch.randn(4, generator=torch.Generator().set_state(g.get_state())) for g in gens)
        return real(teacher, x, sigma_nat, text, stage, pyr, gens)
    x = torch.ones(2, 1, 3, 2, 2, dtype=torch.float64)
    batch = StageBatch(1, [3, 5], x, None, torch.zeros(2, 1, 1), x, torch.tensor([0.5, 0.25]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loss, "full_resolution_estimate", spy)
        full_resolution_alignment(lambda a, s, t: torch.tanh(a), pyramid, 7)(batch, x, torch.full((2, 3), 0.5,
                                  dtype=torch.float64), torch.zeros_like(x))
    for drawn, item, rho in zip(seen, [3, 5], [0.5, 0.25]):
        assert torch.equal(drawn, torch.randn(4, generator=generator(7, "align", item, rho)))
    x0 = torch.zeros(1, 1, 1, 2, 2)
    one = StageBatch(0, [0], x0, None, torch.zeros(1, 1, 1), torch.ones_like(x0), torch.tensor([0.5]))
    with pytest.raises(ValueError, match=r"^process 'flow' is not one of \('pyramidal', 'multires'\)$"):
        one.sample(PyramidConfig(num_stages=1), "flow")
    with pytest.raises(ValueError, match="process None"):
        stage_losses(Answers(x0), one, PyramidConfig(num_stages=1), (1, 1, 1), torch.device("cpu"), torch.float32,
                     process=None)
    mse, _ = stage_losses(Answers(torch.ones_like(x0)), one, PyramidConfig(num_stages=1), (1, 1, 1),
                          torch.device("cpu"), torch.float32)          # the default process: pyramidal
    assert torch.allclose(mse, torch.zeros(1))
