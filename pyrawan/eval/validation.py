"""Per-stage flow-matching validation loss on a held-out latent cache (a training-health signal).

The same quantity ``pyrawan finetune`` logs as ``val_loss``: for every cached item, every level
``rho`` of ``levels`` and every stage, ``||F(x, sigma_nat) - v||^2`` with noise fixed by
``(seed, item, stage)`` (``pyrawan.train.data.validation_batches``), so two checkpoints evaluated
on the same cache with the same seed see identical inputs. One value per item and stage: the mean
over ``levels``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from pyrawan.pyramid.config import PyramidConfig
from pyrawan.train.data import LatentSource, StageDataset, validation_batches
from pyrawan.train.loss import stage_losses

DEFAULT_LEVELS = (0.1, 0.5, 0.9)   # train.validation.levels default


def validation_loss(
    transformer: torch.nn.Module,
    source: LatentSource,
    pyramid: PyramidConfig,
    levels: Sequence[float] = DEFAULT_LEVELS,
    seed: int = 0,
    batch_size: int = 8,
    advance: Callable[[int], None] = lambda n=1: None,
) -> dict[int, list[float]]:
    """``{stage: [loss per item]}`` (stage 0 = full resolution) of ``transformer`` on every item of ``source``.

    ``advance(n)`` is called after each batch with the number of (item, level) pairs it held.
    """
    data = StageDataset(source, list(range(len(source))), pyramid)
    param = next(transformer.parameters())
    dtype = getattr(transformer, "dtype", param.dtype)
    patch = tuple(transformer.config.patch_size)
    out: dict[int, list[float]] = {}
    with torch.no_grad():
        for stage in range(pyramid.num_stages):
            sums = [0.0] * len(data)
            for batch in validation_batches(data, stage, tuple(levels), seed, batch_size):
                mse, _ = stage_losses(transformer, batch, pyramid, patch, param.device, dtype)
                for item, value in zip(batch.items, mse.tolist()):
                    sums[item] += value
                advance(len(batch.items))
            out[stage] = [s / len(levels) for s in sums]
    return out
