"""``pyrawan distill`` with ``distill.method: dmd``: one DMD iteration (the run is ``commands/distill.py``'s).

Per iteration: backward simulation (``start_iteration``); every ``generator_every``-th iteration the
generator's DMD step (its clean estimate re-noised inside the exit step's stage, the teacher's guided
and the fake score's clean estimates, DMD2's normalised gradient, plus ``teach_weight * L_teach``);
every iteration the fake score's flow-matching step on the detached estimate. The math is
``pyrawan/train/dmd.py``; the choices are in docs/distill.md.
"""
from __future__ import annotations

import torch

from pyrawan.commands.distill import (Loop, draw_levels, finish_record, real_velocity, start_iteration, step_generator,
                                      student_estimate, teach_step_loss)
from pyrawan.models.denoiser import denoise
from pyrawan.pyramid.sampler import FewStep, randn
from pyrawan.train.dmd import VARIANT_PROCESS, StageProcess, dmd_gradient, dmd_loss, flow_matching_loss
from pyrawan.train.engine import lr_at


def generator_update(loop: Loop, x: torch.Tensor, step: FewStep, text: torch.Tensor, proc: StageProcess,
                     gens: list[torch.Generator], stop_at: int) -> tuple[torch.Tensor, dict]:
    """One DMD step of the generator; returns the detached ``x_hat`` and the record's fields."""
    d = loop.recipe.distill
    x_hat = student_estimate(loop, x, step, text)
    rho, eps = draw_levels(loop, gens), randn(x_hat.shape, gens, x_hat)
    with torch.no_grad():
        x_t = proc.noisy(x_hat.detach(), eps, rho)
        sigma = proc.level(rho)
        x0_real = proc.clean(x_t, real_velocity(loop, x_t, sigma, text), rho)
        with loop.critic.engine.autocast():                  # the fake score as it is trained
            f_fake = denoise(loop.critic.engine.model, x_t, sigma, text, dtype=loop.critic.engine.input_dtype)
        x0_fake = proc.clean(x_t, f_fake, rho)
    grad = dmd_gradient(x_hat, x0_real, x0_fake, sigma.mean(1))
    gen_loss = dmd_loss(x_hat, grad.g.to(x_hat.device))
    objective, teach_loss = gen_loss.mean(), None
    if loop.teach is not None and d.teach_weight > 0:
        teach_loss = teach_step_loss(loop, stop_at)
        objective = objective + d.teach_weight * teach_loss.mean()
    norm, applied = step_generator(loop, objective)
    record = {"gen_loss": float(gen_loss.detach().mean()), "w_dmd": float(grad.w_dmd.mean()), "gen_grad_norm": norm,
              "teach_loss": None if teach_loss is None else float(teach_loss.detach().mean()), "gen_applied": applied}
    return x_hat.detach(), record


def fake_update(loop: Loop, x_hat: torch.Tensor, text: torch.Tensor, proc: StageProcess,
                gens: list[torch.Generator]) -> dict:
    """One flow-matching step of the fake score on the student's detached samples."""
    engine = loop.critic.engine
    rho, eps = draw_levels(loop, gens), randn(x_hat.shape, gens, x_hat)
    x_t, target = proc.noisy(x_hat, eps, rho), proc.target(x_hat, eps)
    with engine.autocast():
        pred = denoise(engine.model, x_t, proc.level(rho), text, dtype=engine.input_dtype)
    loss = flow_matching_loss(pred, target)
    engine.set_lr(lr_at(loop.iteration, engine.spec))
    engine.backward(loss.mean(), True)
    norm, applied = engine.step(skip=not bool(torch.isfinite(loss).all()), max_norm=engine.spec.max_grad_norm)
    return {"fake_loss": float(loss.detach().mean()), "fake_grad_norm": norm, "fake_applied": applied}


def dmd_iteration_step(loop: Loop) -> dict:
    """One DMD iteration (fake-score step, and a generator step every ``generator_every``); its record."""
    d = loop.recipe.distill
    r = start_iteration(loop, VARIANT_PROCESS[d.variant])
    record = {"kind": "train", "step": loop.iteration + 1, "exit_step": r.k, "stage": r.step.stage}
    if (loop.iteration + 1) % d.generator_every == 0:
        x_hat, fields = generator_update(loop, r.x, r.step, r.text, r.proc, r.gens, r.k)
        record.update(fields)
    else:
        with torch.no_grad():
            x_hat = student_estimate(loop, r.x, r.step, r.text)
    record.update(fake_update(loop, x_hat, r.text, r.proc, r.gens))
    return finish_record(loop, record, r.items)


