"""Training data: what a latent cache must offer, and the deterministic per-stage micro-batches.

Everything random in training is keyed on the *global micro-batch index* ``g`` (and the stage), never
on a running generator: micro-batch ``g`` holds the items at positions ``[g*B, (g+1)*B)`` of an
endless stream of seeded per-epoch permutations, and its noise, levels ``rho`` and caption dropout
come from a generator seeded with ``(seed, g, stage)``. So the data position of a run is one
integer (micro-batches consumed), a resumed run draws exactly what an uninterrupted one would, and
two processes with ``grad_accum = 1`` see the same micro-batches as one process with
``grad_accum = 2``.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from pyrawan.errors import InputError
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.process import pyramid_flow_sample
from pyrawan.pyramid.schedule import shift_grid
from pyrawan.train.config import PROCESSES


@runtime_checkable
class LatentSource(Protocol):
    """The part of ``pyrawan.data.cache.LatentCache`` that training reads."""

    def __len__(self) -> int: ...

    def latents(self, i: int) -> list[torch.Tensor]:
        """Clean latents per stage, index = stage (0 = full resolution): ``[16, T, H, W]`` float32."""

    def text(self, i: int) -> torch.Tensor:
        """Caption embedding ``[L, D]``."""


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of ints/strings (sha256; stable across machines and runs)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded with ``derive_seed(*parts)``."""
    return torch.Generator("cpu").manual_seed(derive_seed(*parts))


def item_name(source: LatentSource, i: int) -> str:
    """A readable id of item ``i`` (the cache record's id when it has one)."""
    record = getattr(source, "record", None)
    try:
        return str(record(i)["id"]) if record else str(i)
    except (KeyError, TypeError, IndexError):
        return str(i)


class StageDataset:
    """Per-stage clean latents and captions of a subset of a ``LatentSource``.

    ``latents(j)`` returns ``num_stages`` tensors ``[16, T_s, H_s, W_s]``; stages the source does not
    hold are made by downsampling the finest one it holds (Definition 1, ``resizer.down``). For a
    PPF pyramid every stage gets the full-resolution latent.
    """

    def __init__(self, source: LatentSource, indices: list[int], pyramid: PyramidConfig):
        self.source, self.indices, self.pyramid = source, list(indices), pyramid

    def __len__(self) -> int:
        return len(self.indices)

    def latents(self, j: int) -> list[torch.Tensor]:
        per_stage = [x.float() for x in self.source.latents(self.indices[j])][: self.pyramid.num_stages]
        if self.pyramid.ppf:                      # every PPF stage trains on the full-resolution latent
            return per_stage[:1] * self.pyramid.num_stages
        while len(per_stage) < self.pyramid.num_stages:
            per_stage.append(self.pyramid.resize.down(per_stage[-1][None])[0])
        return per_stage

    def text(self, j: int) -> torch.Tensor:
        return self.source.text(self.indices[j]).float()

    def name(self, j: int) -> str:
        return item_name(self.source, self.indices[j])


def split_holdout(source: LatentSource, holdout: int) -> tuple[list[int], list[int]]:
    """``(train indices, held-out indices)``: the last ``holdout`` items are held out."""
    n = len(source)
    if n - holdout < 1:
        raise InputError(f"the data has {n} item(s) but train.validation.holdout = {holdout} holds out "
                         f"{holdout}, leaving nothing to train on; lower train.validation.holdout or add data.")
    return list(range(n - holdout)), list(range(n - holdout, n))


@functools.lru_cache(maxsize=4)
def epoch_order(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The seeded permutation of the items for one epoch."""
    return torch.randperm(num_items, generator=generator(seed, "epoch", epoch))


def position_item(num_items: int, position: int, seed: int) -> int:
    """Item at ``position`` of the stream of per-epoch permutations (epoch = position // num_items)."""
    epoch, offset = divmod(position, num_items)
    return int(epoch_order(num_items, seed, epoch)[offset])


@dataclass
class StageBatch:
    """One stage's share of a micro-batch: ``x0`` ``[n, 16, T, H, W]``, ``x0_up`` (coarser clean latent
    brought up; None at the coarsest stage), ``text`` ``[n, L, D]``, noise ``eps``, levels ``rho`` ``[n]``."""

    stage: int
    items: list[int]
    x0: torch.Tensor
    x0_up: torch.Tensor | None
    text: torch.Tensor
    eps: torch.Tensor
    rho: torch.Tensor

    def sample(self, pyramid: PyramidConfig, process: str = "pyramidal") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, sigma_nat [n, T], target velocity)`` of pyramidal flow matching (pyramid-math.md section 4),
        or with ``process="multires"`` of ordinary flow matching at this stage's resolution
        (``x = (1 - rho) x0 + rho eps``, level ``rho`` for every frame, target ``eps - x0``)."""
        if process not in PROCESSES:
            raise ValueError(f"process {process!r} is not one of {PROCESSES}")
        if process == "multires":
            r = self.rho.to(self.x0.dtype).view(-1, 1, 1, 1, 1)
            sigma_nat = self.rho.view(-1, 1).expand(-1, self.x0.shape[2])
            return (1 - r) * self.x0 + r * self.eps, sigma_nat, self.eps - self.x0
        sigma_c, sigma_n = pyramid.levels(self.stage, self.x0.shape[2])
        return pyramid_flow_sample(self.x0, self.x0_up, self.eps, self.rho, sigma_c, sigma_n)


def pad_texts(texts: list[torch.Tensor]) -> torch.Tensor:
    """Stack ``[L_i, D]`` embeddings into ``[n, L, D]``, zero-padding to the longest (Wan pads with zeros)."""
    length = max(t.shape[0] for t in texts)
    return torch.stack([torch.nn.functional.pad(t, (0, 0, 0, length - t.shape[0])) for t in texts])


def collate(data: StageDataset, stage: int, items: list[int], gen: torch.Generator, cfg_dropout: float,
            empty_text: torch.Tensor | None, rho: torch.Tensor | None = None, level_shift: float = 1.0) -> StageBatch:
    """Stack the items' stage latents, draw noise (and ``rho`` unless given: uniform, warped by ``level_shift``
    as ``schedule.shift_grid``) from ``gen``, drop captions."""
    per_item = [data.latents(j) for j in items]
    x0 = torch.stack([lat[stage] for lat in per_item])
    x0_up = None
    if stage + 1 < data.pyramid.num_stages:
        x0_up = data.pyramid.resize.up(torch.stack([lat[stage + 1] for lat in per_item]))
    eps = torch.randn(x0.shape, generator=gen)
    if rho is None:
        rho = shift_grid(torch.rand(len(items), generator=gen, dtype=torch.float64), level_shift)
    drop = torch.rand(len(items), generator=gen) < cfg_dropout
    texts = [empty_text if (bool(d) and empty_text is not None) else data.text(j) for j, d in zip(items, drop)]
    return StageBatch(stage, items, x0, x0_up, pad_texts(texts), eps, rho)


def train_batch(data: StageDataset, g: int, stage: int, split: tuple[int, ...], batch_size: int, seed: int,
                cfg_dropout: float, empty_text: torch.Tensor | None, level_shift: float = 1.0) -> StageBatch:
    """Stage ``stage``'s share of global micro-batch ``g`` (``split``: samples per stage, coarsest first)."""
    num_stages = len(split)
    first = g * batch_size + sum(split[: num_stages - 1 - stage])
    items = [position_item(len(data), first + k, seed) for k in range(split[num_stages - 1 - stage])]
    return collate(data, stage, items, generator(seed, "train", g, stage), cfg_dropout, empty_text,
                   level_shift=level_shift)


def concat(parts: list[StageBatch]) -> StageBatch:
    """One batch from several batches of the same stage."""
    first = parts[0]
    return StageBatch(first.stage, [j for p in parts for j in p.items], torch.cat([p.x0 for p in parts]),
                      None if first.x0_up is None else torch.cat([p.x0_up for p in parts]),
                      pad_texts([t for p in parts for t in p.text]), torch.cat([p.eps for p in parts]),
                      torch.cat([p.rho for p in parts]))


def validation_batches(data: StageDataset, stage: int, levels: tuple[float, ...], seed: int,
                       batch_size: int) -> list[StageBatch]:
    """Every held-out item at every level of ``levels`` for ``stage``, noise fixed by (seed, item, stage)."""
    parts = [collate(data, stage, [j], generator(seed, "validation", j, stage), 0.0, None,
                     rho=torch.tensor([rho], dtype=torch.float64))
             for j in range(len(data)) for rho in levels]
    return [concat(parts[k:k + batch_size]) for k in range(0, len(parts), batch_size)]
