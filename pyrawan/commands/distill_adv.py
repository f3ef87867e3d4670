"""``pyrawan distill`` with ``distill.method: adv``: adversarial distillation (Adv-OD, Adv-PD), one iteration.

Per iteration (the run, checkpoints and export are ``commands/distill.py``'s):

1. Backward simulation as in DMD: exit step ``k``, the student's earlier steps without gradient.
2. Discriminator update, every iteration: real latents (the cache's clean latents of the same
   captions at the exit step's stage, or the teacher pairs) and the student's detached estimate
   ``x_hat``, both re-noised to the same level with the same noise (``adv.renoise``), go through the
   frozen backbone; heads on the tapped blocks' hidden states give logit maps; hinge loss, plus the
   approximate R1 when ``adv.r1_weight > 0``.
3. Generator update, every ``generator_every``-th iteration:
   ``lambda_adv * (-mean D(x_hat)) + lambda_rec * L_rec`` with gradients through the frozen backbone
   into ``x_hat`` (the heads are not updated by it); ``L_rec`` is L_teach's MSE to the teacher's sample
   from the same noise, at the exit step's stage.
"""
from __future__ import annotations

import torch

from pyrawan.commands.distill_loop import (Loop, cache_latents, draw_levels, finish_record, sample_indices,
                                           start_iteration, step_generator, student_estimate, teach_step_loss,
                                           teacher_module)
from pyrawan.models.denoiser import denoise
from pyrawan.pyramid.sampler import randn
from pyrawan.train.adversarial import (Heads, approximate_r1, heads_for, hinge_discriminator, hinge_generator,
                                       no_param_grads, token_grid)
from pyrawan.train.distill_config import Adversarial
from pyrawan.train.engine import lr_at
from pyrawan.train.data import pad_texts
from pyrawan.train.teach import teach_target

PROCESS = {"original": "ordinary", "pyramidal": "pyramidal"}


def make_heads(adv: Adversarial, backbone: torch.nn.Module) -> Heads:
    """Trainable heads for the backbone's tapped blocks (fp32)."""
    return heads_for(backbone, adv.taps, adv.channels)


def logits(loop: Loop, heads: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Discriminator logits ``[B, N]`` of latents ``x`` at levels ``sigma`` (gradients flow where enabled)."""
    with teacher_module(loop) as backbone:
        _, hidden = denoise(backbone, x, sigma, text, blocks=heads_of(loop).blocks)
        grid = token_grid(tuple(x.shape[-3:]), backbone.config.patch_size)
    return heads(hidden, grid)


def heads_of(loop: Loop) -> Heads:
    return loop.critic.engine.module


def real_latents(loop: Loop, r, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real clean latents at ``stage`` and their captions ``[B, L, D]``: the cache's latents of the batch's
    captions, or the teacher pairs (with the pairs' own captions)."""
    if loop.recipe.distill.adv.real == "teacher":
        picks = [g % len(loop.teach) for g in sample_indices(loop, loop.iteration)]
        text = pad_texts([loop.teach.text[p] for p in picks]).to(loop.ctx.device)
        return teach_target(loop.teach.target[picks], loop.pyramid, stage).to(loop.ctx.device), text
    return cache_latents(loop, r.items, stage), r.text


def noisy_pair(loop: Loop, r, x_real: torch.Tensor, x_fake: torch.Tensor) -> tuple:
    """Real and generated latents re-noised to the same level with the same noise (or as they are)."""
    adv = loop.recipe.distill.adv
    if not adv.renoise:
        sigma = torch.zeros(len(x_real), x_real.shape[2], dtype=torch.float64, device=x_real.device)
        return x_real, x_fake, sigma
    rho, eps = draw_levels(loop, r.gens), randn(x_fake.shape, r.gens, x_fake)
    return r.proc.noisy(x_real, eps, rho), r.proc.noisy(x_fake, eps, rho), r.proc.level(rho)


def discriminator_update(loop: Loop, r, x_hat: torch.Tensor) -> dict:
    adv, engine = loop.recipe.distill.adv, loop.critic.engine
    real, real_text = real_latents(loop, r, r.step.stage)
    with torch.no_grad():
        x_real, x_fake, sigma = noisy_pair(loop, r, real, x_hat.detach())
    with engine.autocast():
        d_real = logits(loop, engine.model, x_real, sigma, real_text)
        d_fake = logits(loop, engine.model, x_fake, sigma, r.text)
        loss = hinge_discriminator(d_real, d_fake)
        record = {"disc_loss": float(loss.detach().mean()), "real_logit": float(d_real.detach().mean()),
                  "fake_logit": float(d_fake.detach().mean())}
        if adv.r1_weight > 0:
            shaken = x_real + adv.r1_sigma * randn(x_real.shape, r.gens, x_real)
            r1 = approximate_r1(d_real, logits(loop, engine.model, shaken, sigma, real_text))
            loss = loss + adv.r1_weight * r1
            record["r1"] = float(r1.detach().mean())
    engine.set_lr(lr_at(loop.iteration, engine.spec))
    engine.backward(loss.mean(), True)
    norm, applied = engine.step(skip=not bool(torch.isfinite(loss.detach()).all()), max_norm=engine.spec.max_grad_norm)
    return {**record, "disc_grad_norm": norm, "disc_applied": applied}


def generator_update(loop: Loop, r) -> dict:
    adv = loop.recipe.distill.adv
    x_hat = student_estimate(loop, r.x, r.step, r.text)
    _, x_fake, sigma = noisy_pair(loop, r, x_hat.detach(), x_hat)
    heads = heads_of(loop)
    with no_param_grads(heads):                                  # the generator's loss does not train the heads
        adv_loss = hinge_generator(logits(loop, heads, x_fake, sigma, r.text))
    objective = adv.lambda_adv * adv_loss.mean()
    rec = teach_step_loss(loop, r.k) if adv.lambda_rec > 0 else None
    if rec is not None:
        objective = objective + adv.lambda_rec * rec.mean()
    norm, applied = step_generator(loop, objective)
    return {"adv_loss": float(adv_loss.detach().mean()), "rec_loss": None if rec is None else float(rec.detach().mean()),
            "gen_grad_norm": norm, "gen_applied": applied}


def adv_iteration_step(loop: Loop) -> dict:
    """One adversarial iteration (discriminator step, and a generator step every ``generator_every``)."""
    r = start_iteration(loop, PROCESS[loop.recipe.distill.adv.backbone])
    record = {"kind": "train", "step": loop.iteration + 1, "exit_step": r.k, "stage": r.step.stage}
    with torch.no_grad():
        x_hat = student_estimate(loop, r.x, r.step, r.text)
    record.update(discriminator_update(loop, r, x_hat))
    if (loop.iteration + 1) % loop.recipe.distill.generator_every == 0:
        record.update(generator_update(loop, r))
    return finish_record(loop, record, r.items)
