"""A synthetic latent cache with learnable structure, for tests, benchmarks and trying a launcher setup.

``SyntheticCache`` implements the reading side of ``pyrawan.data.cache.LatentCache``. Item ``i``
belongs to concept ``i % concepts``: its full-resolution latent is the concept's smooth pattern
plus a smaller smooth per-item variation, its caption embedding the concept's embedding plus a
little noise, so a model can learn it within tens of steps. Coarser stages are the pyramid's
``down`` of the full latent (Definition 1). Everything depends only on ``seed``.

Run a finetune or distill on it (also under ``torchrun``)::

    python -m pyrawan.commands.synthetic RECIPE [key=value ...] -o OUT [--resume] [--items 24]
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from pyrawan.pyramid.config import PyramidConfig


def _smooth(count: int, shape: tuple[int, int, int], gen: torch.Generator) -> torch.Tensor:
    """``[count, 16, T, H, W]`` unit-variance fields, smooth in space and time."""
    t, h, w = shape
    coarse = torch.randn(count, 16, max(1, (t + 1) // 2), max(1, h // 4), max(1, w // 4), generator=gen)
    fine = F.interpolate(coarse, size=(t, h, w), mode="trilinear", align_corners=True)
    return fine / fine.flatten(1).std(1).view(-1, 1, 1, 1, 1)


class SyntheticCache:
    """In-memory latents ``[16, T, H, W]`` per stage and caption embeddings ``[L, D]`` (see module doc)."""

    def __init__(self, num_items: int, pyramid: PyramidConfig, full_shape: tuple[int, int, int], text_len: int,
                 text_dim: int, seed: int = 0, concepts: int = 4, nan_items: tuple[int, ...] = (),
                 definition: int = 1):
        self.definition = definition
        gen = torch.Generator().manual_seed(seed)
        patterns = _smooth(concepts, full_shape, gen)
        variation = _smooth(num_items, full_shape, gen)
        concept = torch.arange(num_items) % concepts
        full = patterns[concept] + 0.3 * variation
        full[list(nan_items)] = float("nan")
        self.stages = [full]
        for _ in range(pyramid.num_stages - 1):
            self.stages.append(pyramid.resize.down(self.stages[-1]))
        self.num_stages = pyramid.num_stages
        self.stage_shapes = [tuple(s.shape[2:]) for s in self.stages]
        embeddings = torch.randn(concepts, text_len, text_dim, generator=gen)
        self.texts = embeddings[concept] + 0.1 * torch.randn(num_items, text_len, text_dim, generator=gen)
        self.concept = concept.tolist()

    def __len__(self) -> int:
        return len(self.concept)

    def record(self, i: int) -> dict:
        return {"id": f"synthetic-{i:04d}", "caption": f"concept {self.concept[i]}", "video": None}

    def latents(self, i: int) -> list[torch.Tensor]:
        return [stage[i] for stage in self.stages]

    def text(self, i: int) -> torch.Tensor:
        return self.texts[i]


def for_recipe(recipe, items: int = 24, seed: int = 0, nan_items: tuple[int, ...] = ()) -> SyntheticCache:
    """A synthetic cache that fits ``recipe``'s video size, pyramid and base model's text width."""
    from pyrawan.models.arch import arch_of
    from pyrawan.models.presets import TRANSFORMER_ARCHS

    arch = arch_of(recipe.base)
    text_dim = (TRANSFORMER_ARCHS[arch] if isinstance(arch, str) else arch)["text_dim"]
    p = recipe.pyramid
    pyramid = recipe.pyramid_config()
    return SyntheticCache(items, pyramid, recipe.latent_size(),
                          recipe.text.max_sequence_length, text_dim, seed, nan_items=nan_items,
                          definition=p.stage_data)
