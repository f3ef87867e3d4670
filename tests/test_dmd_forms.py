"""The two DMD forms (``distill.dmd_form``) and the global score span (``distill.score_span``): where the forms
agree and where they must differ, how the global draw picks a stage and maps levels, and a tiny run of each."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pyrawan.commands.distill import run
from pyrawan.commands.distill_loop import move_stage
from pyrawan.errors import InputError
from pyrawan.pyramid.resize import get_resizer
from pyrawan.recipe import load_recipe
from pyrawan.train.dmd import (StageProcess, draw_stage, dmd_loss, form_gradient, local_level, natural_levels,
                               span_shares, stage_spans)
from pyrawan.train.synthetic import for_recipe

pytestmark = pytest.mark.usefixtures("one_thread")
HAAR = get_resizer("haar")


def stage_process(kind: str, sigma_c: float, sigma_n: float, frames: int = 3) -> StageProcess:
    """A stage with the same levels on every frame; ``P`` is Haar's projection unless the stage reaches noise."""
    levels = [torch.full((frames,), v, dtype=torch.float64) for v in (sigma_c, sigma_n)]
    return StageProcess(kind, *levels, None if sigma_n == 1.0 else HAAR.project)


def gradients(kind: str, sigma_c: float, sigma_n: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Both forms' ``g`` on random latents [4, 2, 3, 8, 8] and random real/fake velocities."""
    gen = torch.Generator().manual_seed(seed)
    x_hat, eps, v_real, v_fake = (torch.randn(4, 2, 3, 8, 8, generator=gen, dtype=torch.float64) for _ in range(4))
    rho = 0.1 + 0.8 * torch.rand(4, generator=gen, dtype=torch.float64)
    proc = stage_process(kind, sigma_c, sigma_n)
    x_t = proc.noisy(x_hat, eps, rho)
    return {form: form_gradient(form, proc, x_hat, x_t, rho, v_real, v_fake).g for form in ("x0", "eps")}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("kind,sigma_c,sigma_n", [
    ("ordinary", 0.0, 1.0), ("ordinary", 0.2, 0.6),          # the one-stage DMD and OT at a stage
    ("pyramidal", 0.0, 1.0), ("pyramidal-star", 0.0, 1.0),   # PT and PT* on a stage that reaches pure noise
    ("pyramidal-star", 0.0, 0.57), ("pyramidal-star", 0.18, 0.6),
])
def test_both_forms_are_the_ordinary_dmd_gradient_where_the_sample_reads_as_ordinary(kind, sigma_c, sigma_n):
    g = gradients(kind, sigma_c, sigma_n)
    assert relative(g["eps"], g["x0"]) < 1e-12


def test_at_the_full_resolution_stage_the_eps_form_tells_pt_from_ptstar_and_the_x0_form_cannot():
    """sigma_c = 0: PT's clean estimate is PT*'s, but its noise estimate weights the high band by
    (sigma_n - sigma) / sigma_n instead of 1 - sigma (the issue's "relative difference about 0.5")."""
    pt, star = gradients("pyramidal", 0.0, 0.57), gradients("pyramidal-star", 0.0, 0.57)
    assert relative(pt["x0"], star["x0"]) < 1e-12
    assert relative(pt["eps"], star["eps"]) > 0.3
    middle_pt, middle_star = gradients("pyramidal", 0.18, 0.6), gradients("pyramidal-star", 0.18, 0.6)
    assert relative(middle_pt["x0"], middle_star["x0"]) > 0.05          # a middle stage: both forms differ


def test_pt_eps_form_keeps_the_low_band_and_scales_the_high_band_by_its_known_factor():
    """With v_real - v_fake = d: low band sigma d; high band sigma/(1-sigma) (sigma_n - sigma)/sigma_n d."""
    gen = torch.Generator().manual_seed(3)
    x_hat, eps, d = (torch.randn(1, 1, 1, 8, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    proc, rho = stage_process("pyramidal", 0.0, 0.5, frames=1), torch.tensor([0.5], dtype=torch.float64)
    x_t = proc.noisy(x_hat, eps, rho)
    g = form_gradient("eps", proc, x_hat, x_t, rho, d, torch.zeros_like(d))
    norm = float((x_hat - proc.clean(x_t, d, rho)).abs().mean()) + 1e-6
    s = 0.25
    expected = (HAAR.project(s * d) + (HAAR.high_pass(d)) * s / (1 - s) * (0.5 - s) / 0.5) / norm
    assert torch.allclose(g.g, expected, atol=1e-12)


def test_global_spans_cover_the_active_stages_and_shares_follow_their_length():
    spans = stage_spans((0.333, 0.644), top=2)
    assert spans == [(0.0, 0.333), (0.333, 0.644), (0.644, 1.0)]
    assert stage_spans((0.333, 0.644), top=1) == [(0.0, 0.333), (0.333, 1.0)]          # 0-2-1: the middle reaches 1
    shares = span_shares(spans, 0.02, 0.98)
    assert shares == pytest.approx([0.313, 0.311, 0.336])
    gen = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([draw_stage(shares, gen) for _ in range(6000)]), minlength=3)
    assert torch.allclose(counts / 6000, torch.tensor(shares) / sum(shares), atol=0.02)
    assert draw_stage([0.0, 0.5, 0.0], gen) == 1


def test_local_levels_map_the_stage_ends_to_0_and_1_and_follow_the_natural_level():
    natural = natural_levels(2, 5, keep_time=False, ppf=False)
    assert local_level(0.644, (0.644, 1.0), natural) == pytest.approx(0.0, abs=1e-12)
    assert local_level(1.0, (0.644, 1.0), natural) == pytest.approx(1.0)
    # global 0.98 at the coarsest stage is a lower local level (the natural level grows more slowly there)
    assert 0.7 < local_level(0.98, (0.644, 1.0), natural) < 0.9
    full = natural_levels(0, 5, keep_time=False, ppf=False)                     # stage 0: natural = global
    assert local_level(0.02, (0.0, 0.333), full) == pytest.approx(0.02 / 0.333)
    ppf = natural_levels(2, 5, keep_time=False, ppf=True)
    assert local_level(0.8, (0.644, 1.0), ppf) == pytest.approx((0.8 - 0.644) / (1 - 0.644))


def test_moving_an_estimate_between_stages_returns_the_gradient_through_the_adjoint():
    """The generator loss on x_hat moved down one stage has gradient D^T g / n (n: x_hat's elements)."""
    x_hat = torch.randn(1, 2, 5, 8, 8, dtype=torch.float64, requires_grad=True)
    x_site = move_stage(x_hat, HAAR, 1)
    assert x_site.shape == (1, 2, 3, 4, 4) and move_stage(x_site, HAAR, -1).shape == x_hat.shape
    g = torch.randn_like(x_site)
    (dmd_loss(x_site, g) * (x_site[0].numel() / x_hat[0].numel())).sum().backward()
    probe = x_hat.detach().clone().requires_grad_()
    (HAAR.down(probe) * g).sum().backward()
    assert torch.allclose(x_hat.grad, probe.grad / x_hat[0].numel(), atol=1e-12)


QUICK = ["train.checkpoint.every=0", "train.steps=6", "distill.generator_every=2", "train.lora.enabled=false"]


def records(out: Path) -> list[dict]:
    lines = (out.parent / f"{out.name}.run" / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


def test_a_global_span_eps_form_pt_run_scores_at_other_stages_than_the_exit_steps(tmp_path):
    r = load_recipe("tiny-dmd", [*QUICK, "distill.variant=pt", "distill.dmd_form=eps", "distill.score_span=global"],
                    kind="distill")
    out = run(r, tmp_path / "dmd", source=for_recipe(r, items=12), show_progress=False)
    rec = records(out)
    assert len(rec) == 6 and all(torch.isfinite(torch.tensor(x["fake_loss"])) for x in rec)
    moved = [x for x in rec if "score_stage" in x]
    assert moved and all(x["score_stage"] != x["stage"] for x in moved)
    assert all(x["gen_loss"] > 0 for x in rec if "gen_loss" in x)


@pytest.mark.parametrize("overrides,message", [
    (["distill.dmd_form=eps", "distill.score_levels=[0.1,1.0]"], "divides by 1 - sigma"),
    (["distill.method=adv", "distill.teach_weight=0", "distill.score_span=global"], "applies to method dmd"),
])
def test_form_and_span_settings_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(InputError, match=message):
        load_recipe("tiny-dmd", overrides, kind="distill")
