"""``pyrawan distill`` with ``distill.method: dmd``: one DMD iteration (the run is ``commands/distill.py``'s).

Per iteration: backward simulation (``start_iteration``); every ``generator_every``-th iteration the
generator's DMD step (its clean estimate re-noised inside the exit step's stage, the teacher's guided
and the fake score's clean estimates, DMD2's normalised gradient, plus ``teach_weight * L_teach``);
every iteration the fake score's flow-matching step on the detached estimate. The math is
``pyrawan/train/dmd.py``; the choices are in docs/distill.md.

The optional GAN term (``distill.gan.weight > 0``; DMD2): heads on the fake score's tapped blocks. In
the fake-score step, the cache's latents of the same captions at the exit step's stage are re-noised
with the step's own level and noise and go through the fake score with the generated ones (one forward
of batch 2B); the fake score's loss adds ``critic_weight`` x the heads' classification loss (training
its features), and the heads (their own engine, ``gan_heads-`` in checkpoints) step on the same loss
with the features detached. In the generator step, ``weight`` x the GAN loss of ``x_hat`` re-noised at
the DMD level, through the frozen fake score and heads. Losses: ``pyrawan/train/gan.py``.
"""
from __future__ import annotations

import torch

from pyrawan.commands.distill_loop import (Loop, cache_latents, draw_levels, finish_record, real_velocity,
                                           score_site, start_iteration, step_generator, student_estimate,
                                           teach_step_loss)
from pyrawan.errors import InputError
from pyrawan.models.denoiser import denoise, unwrap
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.sampler import FewStep, randn
from pyrawan.recipe import DistillRecipe
from pyrawan.train.adversarial import Heads, heads_for, no_param_grads, token_grid
from pyrawan.train.data import derive_seed
from pyrawan.train.dmd import VARIANT_PROCESS, ScoreSite, dmd_loss, flow_matching_loss, form_gradient
from pyrawan.train.engine import Context, EngineSpec, lr_at, make_engine
from pyrawan.train.gan import critic_loss, generator_loss
from pyrawan.train.run import Trainable


def generator_update(loop: Loop, x: torch.Tensor, step: FewStep, text: torch.Tensor, site: ScoreSite,
                     gens: list[torch.Generator], stop_at: int) -> tuple[torch.Tensor, dict]:
    """One DMD step of the generator; returns the detached ``x_hat`` (on the exit step's grid) and the record's fields.

    The gradient is taken on ``x_hat`` moved to the scored stage (``site``) and flows back through the move; the
    loss is a mean over the exit step's elements, so every site's normalised gradient weighs the same per element
    of the site.
    """
    d, proc = loop.recipe.distill, site.proc
    x_hat = student_estimate(loop, x, step, text)
    x_site = site.move(x_hat)
    rho, eps = draw_levels(loop, gens, site.rho_range), randn(x_site.shape, gens, x_site)
    with torch.no_grad():
        x_t = proc.noisy(x_site.detach(), eps, rho)
        sigma = proc.level(rho)
        v_real = real_velocity(loop, x_t, sigma, text)
        with loop.critic.engine.autocast():                  # the fake score as it is trained
            v_fake = denoise(loop.critic.engine.model, x_t, sigma, text, dtype=loop.critic.engine.input_dtype)
        grad = form_gradient(d.dmd_form, proc, x_site, x_t, rho, v_real, v_fake.float())
    gen_loss = dmd_loss(x_site, grad.g.to(x_site.device)) * (x_site[0].numel() / x_hat[0].numel())
    objective, teach_loss, gan_loss = gen_loss.mean(), None, None
    if loop.teach is not None and d.teach_weight > 0:
        teach_loss = teach_step_loss(loop, stop_at)
        objective = objective + d.teach_weight * teach_loss.mean()
    if loop.gan is not None:
        gan_loss = gan_generator_loss(loop, proc.noisy(x_site, eps, rho), sigma, text)
        objective = objective + d.gan.weight * gan_loss.mean()
    norm, applied = step_generator(loop, objective)
    record = {"gen_loss": float(gen_loss.detach().mean()), "w_dmd": float(grad.w_dmd.mean()), "gen_grad_norm": norm,
              "teach_loss": None if teach_loss is None else float(teach_loss.detach().mean()), "gen_applied": applied}
    if gan_loss is not None:
        record["gan_loss"] = float(gan_loss.detach().mean())
    return x_hat.detach(), record


def fake_update(loop: Loop, x_hat: torch.Tensor, text: torch.Tensor, site: ScoreSite,
                gens: list[torch.Generator], real: torch.Tensor | None = None) -> dict:
    """One flow-matching step of the fake score on the student's detached samples ``x_hat`` ``[B, C, T, H, W]``,
    moved to the scored stage (``site``) and re-noised with its process.

    With the GAN term, ``real`` (clean latents at the site's stage) adds the heads' classification loss and
    steps the heads (``gan_critic_step``).
    """
    engine, proc = loop.critic.engine, site.proc
    x_hat = site.move(x_hat)
    rho, eps = draw_levels(loop, gens, site.rho_range), randn(x_hat.shape, gens, x_hat)
    x_t, target = proc.noisy(x_hat, eps, rho), proc.target(x_hat, eps)
    cls, gan_record = None, {}
    with engine.autocast():
        if loop.gan is None:
            pred = denoise(engine.model, x_t, proc.level(rho), text, dtype=engine.input_dtype)
        else:
            pred, cls, gan_record, features = gan_critic_forward(loop, x_t, proc.noisy(real, eps, rho), proc.level(rho),
                                                                 text)
    loss = flow_matching_loss(pred, target)
    objective = loss if cls is None else loss + loop.recipe.distill.gan.critic_weight * cls
    engine.set_lr(lr_at(loop.iteration, engine.spec))
    engine.backward(objective.mean(), True)
    norm, applied = engine.step(skip=not bool(torch.isfinite(objective).all()), max_norm=engine.spec.max_grad_norm)
    if cls is not None:
        gan_record.update(gan_critic_step(loop, features))
    return {"fake_loss": float(loss.detach().mean()), "fake_grad_norm": norm, "fake_applied": applied, **gan_record}


def dmd_iteration_step(loop: Loop) -> dict:
    """One DMD iteration (fake-score step, and a generator step every ``generator_every``); its record."""
    d = loop.recipe.distill
    r = start_iteration(loop, VARIANT_PROCESS[d.variant])
    site = score_site(loop, r)
    record = {"kind": "train", "step": loop.iteration + 1, "exit_step": r.k, "stage": r.step.stage}
    if site.stage != r.step.stage:
        record["score_stage"] = site.stage
    if (loop.iteration + 1) % d.generator_every == 0:
        x_hat, fields = generator_update(loop, r.x, r.step, r.text, site, r.gens, r.k)
        record.update(fields)
    else:
        with torch.no_grad():
            x_hat = student_estimate(loop, r.x, r.step, r.text)
    real = cache_latents(loop, r.items, site.stage) if loop.gan is not None else None
    record.update(fake_update(loop, x_hat, r.text, site, r.gens, real))
    return finish_record(loop, record, r.items)


# ---- the optional GAN term (distill.gan, DMD2) -----------------------------------------------------

def build_gan_heads(recipe: DistillRecipe, critic: Trainable, ctx: Context, pyramid: PyramidConfig) -> Trainable:
    """The GAN heads on the fake score's tapped blocks, as their own engine (checkpoint prefix ``gan_heads-``).

    Initialised from ``(seed, "gan-heads")`` without touching the global generator; optimiser
    ``distill.gan.optimizer`` (null: the fake score's), clipped as the fake score.
    """
    d = recipe.distill
    if pyramid.ppf:                       # the recipe rule's twin, for a PPF pyramid that came with the base
        raise InputError(f"distill.gan.weight = {d.gan.weight:g}: the base is a PPF model, whose fake score "
                         "patchifies each stage differently, so its hidden states have no common token grid for the "
                         "GAN heads; set distill.gan.weight: 0 for PPF-DMD.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(recipe.seed, "gan-heads"))
        heads = heads_for(unwrap(critic.engine.module), d.gan.taps, d.gan.channels)
    spec = EngineSpec.of(recipe.train, prefix="gan_heads-", optimizer=d.gan.optimizer or d.fake_score.optimizer,
                         max_grad_norm=d.fake_score.max_grad_norm, lora=False)
    return Trainable(make_engine(heads, spec, ctx, 1))


def gan_heads(loop: Loop) -> Heads:
    return loop.gan.engine.module


def gan_critic_forward(loop: Loop, x_fake: torch.Tensor, x_real: torch.Tensor, sigma: torch.Tensor,
                       text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict, tuple]:
    """One fake-score forward of generated and real samples ``[B, C, T, H, W]`` each (batch 2B, same levels
    ``sigma`` ``[B, T]`` and captions ``[B, L, D]``).

    Returns the velocity of the generated half ``[B, C, T, H, W]``, the classification loss per sample
    ``[B]`` through the frozen heads into the fake score's features, a record with the mean logits, and
    the detached features (hidden states ``[2B, N, D]`` per tap and the token grid) for ``gan_critic_step``.
    """
    engine, heads, b = loop.critic.engine, gan_heads(loop), len(x_fake)
    v, hidden = denoise(engine.model, torch.cat([x_fake, x_real]), torch.cat([sigma, sigma]), torch.cat([text, text]),
                        blocks=heads.blocks, dtype=engine.input_dtype)
    grid = token_grid(tuple(x_fake.shape[-3:]), unwrap(engine.model).config.patch_size)
    with no_param_grads(heads):                   # the heads step on their own loss (features detached)
        logits = heads(hidden, grid)
    cls = critic_loss(loop.recipe.distill.gan.loss, logits[b:], logits[:b])
    record = {"real_logit": float(logits[b:].detach().mean()), "fake_logit": float(logits[:b].detach().mean())}
    return v[:b], cls, record, ([h.detach() for h in hidden], grid)


def gan_critic_step(loop: Loop, features: tuple[list[torch.Tensor], tuple[int, int, int]]) -> dict:
    """Step the heads on ``critic_weight`` x the classification loss of the detached features; the record."""
    g, engine = loop.recipe.distill.gan, loop.gan.engine
    hidden, grid = features
    b = len(hidden[0]) // 2
    with engine.autocast():
        logits = engine.model(hidden, grid)
    cls = critic_loss(g.loss, logits[b:], logits[:b])
    engine.set_lr(lr_at(loop.iteration, engine.spec))
    engine.backward(g.critic_weight * cls.mean(), True)
    norm, applied = engine.step(skip=not bool(torch.isfinite(cls.detach()).all()), max_norm=engine.spec.max_grad_norm)
    return {"cls_loss": float(cls.detach().mean()), "gan_grad_norm": norm, "gan_applied": applied}


def gan_generator_loss(loop: Loop, x_t: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The generator's GAN loss per sample ``[B]`` of its re-noised estimate ``x_t`` ``[B, C, T, H, W]`` (with its
    graph) at levels ``sigma`` ``[B, T]``, through the frozen fake score and heads (neither is updated by it)."""
    critic, heads = loop.critic.engine, gan_heads(loop)
    fake_score = unwrap(critic.model)
    with no_param_grads(fake_score, heads), critic.autocast():
        _, hidden = denoise(fake_score, x_t, sigma, text, blocks=heads.blocks, dtype=critic.input_dtype)
        logits = heads(hidden, token_grid(tuple(x_t.shape[-3:]), fake_score.config.patch_size))
    return generator_loss(loop.recipe.distill.gan.loss, logits)


