"""DMD's optional GAN term (DMD2, Yin et al. 2024, tianweiy/DMD2): the classification losses, model-free.

DMD2 puts a classification head on the fake score's features and adds two terms to DMD: the fake
score is trained to tell real samples from the generator's (``critic_weight`` x its classification
loss, next to its flow-matching loss), the generator to fool it (``weight`` x its GAN loss). pyrawan's
heads are the adversarial heads (``train.adversarial.Heads``) on tapped blocks of the fake score; their
logits are per token, ``[B, N]``, and every loss here is a mean over tokens per sample ``[B]``.

Two losses (``distill.gan.loss``):

- ``softplus`` (DMD2's non-saturating logistic loss): critic ``softplus(-D(real)) + softplus(D(fake))``,
  generator ``softplus(-D(fake))``.
- ``hinge`` (as ``method: adv``): critic ``max(0, 1 - D(real)) + max(0, 1 + D(fake))``, generator ``-D(fake)``.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from pyrawan.train.adversarial import hinge_discriminator, hinge_generator


def critic_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The heads' classification loss per sample ``[B]`` from logits ``[B, N]`` on real and generated samples."""
    if kind == "hinge":
        return hinge_discriminator(real, fake)
    return F.softplus(-real).mean(1) + F.softplus(fake).mean(1)


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """The generator's GAN loss per sample ``[B]`` from the logits ``[B, N]`` of its samples."""
    if kind == "hinge":
        return hinge_generator(fake)
    return F.softplus(-fake).mean(1)
