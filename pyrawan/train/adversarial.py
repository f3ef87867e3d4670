"""Adversarial distillation: discriminator heads on a frozen diffusion backbone, hinge losses, approximate R1.

The discriminator is the frozen backbone (the teacher transformer) as a feature extractor plus one
small trainable head per tapped block (the paper: light convolutional branches, one spatial and one
temporal). A head sees the block's hidden states ``[B, N, D]`` laid out on the token grid
``[B, D, T', H', W']`` and returns a logit map ``[B, 1, T', H', W']``; the discriminator's logits are
all maps flattened and concatenated ``[B, sum N]``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F


class Head(nn.Module):
    """``1x1x1`` projection, a spatial ``1x3x3`` and a temporal ``3x1x1`` branch (residual), a ``1x1x1`` logit."""

    def __init__(self, dim: int, channels: int):
        super().__init__()
        self.proj = nn.Conv3d(dim, channels, 1)
        self.spatial = nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1))
        self.temporal = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        self.logit = nn.Conv3d(channels, 1, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``[B, D, T', H', W']`` -> ``[B, 1, T', H', W']``."""
        x = F.silu(self.proj(h))
        x = x + F.silu(self.spatial(x)) + F.silu(self.temporal(x))
        return self.logit(x)


class Heads(nn.Module):
    """One ``Head`` per tapped block of a transformer of width ``dim``."""

    def __init__(self, blocks: Sequence[int], dim: int, channels: int):
        super().__init__()
        self.blocks = list(blocks)
        self.heads = nn.ModuleList(Head(dim, channels) for _ in self.blocks)

    def forward(self, hidden: Sequence[torch.Tensor], grid: tuple[int, int, int]) -> torch.Tensor:
        """Hidden states ``[B, N, D]`` of the tapped blocks on the token grid ``(T', H', W')`` -> logits ``[B, sum N]``."""
        maps = []
        for head, h in zip(self.heads, hidden):
            b, n, d = h.shape
            h = h.to(head.proj.weight.dtype).transpose(1, 2).reshape(b, d, *grid)    # DeepSpeed may keep bf16 heads
            maps.append(head(h).float().flatten(1))
        return torch.cat(maps, dim=1)


def heads_for(backbone: torch.nn.Module, taps: Sequence[float], channels: int) -> Heads:
    """Trainable fp32 heads for the blocks at fractions ``taps`` of a Wan transformer's depth (its width ``dim``)."""
    cfg = backbone.config
    dim = cfg.num_attention_heads * cfg.attention_head_dim
    return Heads(tapped_blocks(taps, cfg.num_layers), dim, channels).train()


@contextlib.contextmanager
def no_param_grads(*modules: torch.nn.Module) -> Iterator[None]:
    """Gradients flow through ``modules`` to their inputs but not into their parameters (flags restored after)."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def tapped_blocks(taps: Sequence[float], depth: int) -> list[int]:
    """Block indices at fractions ``taps`` of a ``depth``-block transformer (distinct, in order)."""
    return sorted({min(depth - 1, max(0, round(t * depth) - 1)) for t in taps})


def token_grid(latent_thw: tuple[int, int, int], patch: Sequence[int]) -> tuple[int, int, int]:
    """``(T', H', W')`` of the patch tokens of a latent ``(T, H, W)``."""
    return tuple(n // p for n, p in zip(latent_thw, patch))


def hinge_discriminator(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """``mean max(0, 1 - D(real)) + mean max(0, 1 + D(fake))`` per sample ``[B]``."""
    return F.relu(1 - real).mean(1) + F.relu(1 + fake).mean(1)


def hinge_generator(fake: torch.Tensor) -> torch.Tensor:
    """``-mean D(fake)`` per sample ``[B]``."""
    return -fake.mean(1)


def approximate_r1(logits: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """``mean (D(x + sigma n) - D(x))^2`` per sample ``[B]`` (APT / FastGen's finite-difference R1)."""
    return (perturbed - logits).pow(2).mean(1)
