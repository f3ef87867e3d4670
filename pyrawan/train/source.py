"""The training data of a run: the latent cache (built on the fly from ``data.root`` when asked) and its checks.

Shared by ``finetune`` (latents and captions) and ``distill`` (captions as prompts; latents as the
adversarial method's real samples). Rank 0 opens or builds the cache; the folder is broadcast.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pyrawan import dist
from pyrawan.data.prompts import read_prompt_file
from pyrawan.errors import InputError, RunError
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.recipe import DistillRecipe, FinetuneRecipe
from pyrawan.train.data import LatentSource
from pyrawan.train.engine import Context
from pyrawan.train.model import Base
from pyrawan.ui import console

TrainRecipe = FinetuneRecipe | DistillRecipe


class PromptSource:
    """``data.prompts``: prompts and their caption embeddings, no latents (distill's DMD without the GAN term)."""

    def __init__(self, path: Path, prompts: list[str], embeddings: list[torch.Tensor]):
        self.path, self.prompts, self.embeddings = path, prompts, embeddings

    def __len__(self) -> int:
        return len(self.prompts)

    def latents(self, i: int) -> list[torch.Tensor]:
        raise RunError(f"data.prompts = {self.path} gives prompts only, but this run needs video latents; set "
                       "data.cache or data.root instead.")

    def text(self, i: int) -> torch.Tensor:
        return self.embeddings[i]

    def record(self, i: int) -> dict:
        return {"id": f"prompt-{i}", "caption": self.prompts[i]}


def data_size(recipe: TrainRecipe) -> int | None:
    """How many items the run's data has, found cheaply (no video opened, nothing encoded): the prompts file's
    lines, a built cache's records or the dataset folder's listing; None when it cannot be known yet."""
    from pyrawan.data.cache import read_index
    from pyrawan.data.datasets import scan_dataset

    data = recipe.data
    if data.prompts is not None:
        return len(read_prompt_file(data.prompts, "data.prompts =", required=True))
    if data.cache is not None and (index := read_index(Path(data.cache))) is not None:
        return int(index.get("num_records", 0)) or None
    if data.root is not None:
        return len(scan_dataset(Path(data.root), data).records)
    return None


def open_source(recipe: TrainRecipe, base: Base, ctx: Context) -> tuple[LatentSource, Path | None]:
    """The latent cache (built from ``data.root`` on rank 0 when needed) and its folder; for ``data.prompts``
    the prompts' embeddings (every rank encodes them) and no folder."""
    if recipe.data.prompts is not None:
        from pyrawan.data.encode import caption_embeddings

        prompts = read_prompt_file(recipe.data.prompts, "data.prompts =", required=True)
        comps = base.components
        comps.text_encoder = comps.text_encoder.to(ctx.device)
        embeddings = caption_embeddings(comps, prompts, recipe.text.max_sequence_length)
        comps.text_encoder = comps.text_encoder.cpu()
        if ctx.rank == 0:
            console.print(f"data: {len(prompts)} prompts from {recipe.data.prompts} (no videos, no latent cache)",
                          markup=False)
        return PromptSource(Path(recipe.data.prompts), prompts, embeddings), None
    try:
        from pyrawan.data.cache import LatentCache, ensure_cache
    except ImportError:
        raise RunError("this pyrawan has no latent cache (pyrawan.data.cache), so training cannot read data.cache "
                       "or data.root; update pyrawan.") from None
    folder = None
    if ctx.rank == 0:
        if recipe.data.root is not None:
            comps = base.components
            comps.vae, comps.text_encoder = comps.vae.to(ctx.device), comps.text_encoder.to(ctx.device)
            folder = ensure_cache(recipe, comps, folder=recipe.data.cache, progress=True)
            comps.vae, comps.text_encoder = comps.vae.cpu(), comps.text_encoder.cpu()      # free the GPU for training
        else:
            folder = Path(recipe.data.cache)
            if not folder.is_dir():
                raise InputError(f"data.cache = '{folder}' is not a folder; build it with `pyrawan calibrate` or set "
                                 "data.root to cache videos on the fly.")
            console.print(f"cache: reading the latent cache {folder}", markup=False)
    folder = Path(dist.broadcast(str(folder) if folder else None))
    return LatentCache(folder), folder


def check_source(source: LatentSource, pyramid: PyramidConfig, recipe: TrainRecipe, components=None) -> None:
    """The cache must hold this pyramid's latent shapes (and data definition when it says so)."""
    v = recipe.video
    want = pyramid.shapes(recipe.latent_size())[: 1 if pyramid.ppf else None]
    have = [tuple(s) for s in getattr(source, "stage_shapes", want)]
    if have[: len(want)] != want[: len(have)]:
        raise InputError(f"the latent cache holds stage shapes {have} but video {v.frames}x{v.height}x{v.width} with "
                         f"{pyramid.num_stages} stages needs {want}; rebuild the cache for this recipe (data.cache).")
    if pyramid.ppf:            # full-resolution latents only: stage data definitions do not apply
        if _has_settings(source, components):
            check_cache_models(source.settings, recipe, components)
        return
    definition = getattr(source, "definition", recipe.pyramid.stage_data)
    if len(have) < pyramid.num_stages and definition == 2:
        raise InputError(f"the latent cache holds {len(have)} stages but pyramid.stages = {pyramid.num_stages} and "
                         "pyramid.stage_data = 2 (re-encoded pixels); rebuild the cache with the recipe's pyramid.")
    if definition != recipe.pyramid.stage_data and pyramid.num_stages > 1:
        raise InputError(f"the latent cache uses stage data definition {definition} but pyramid.stage_data = "
                         f"{recipe.pyramid.stage_data}; set pyramid.stage_data: {definition} or rebuild the cache.")
    if _has_settings(source, components):
        check_cache_models(source.settings, recipe, components)


def _has_settings(source: LatentSource, components) -> bool:
    return components is not None and getattr(source, "settings", None) is not None


def check_cache_models(settings: dict, recipe: TrainRecipe, components) -> None:
    """A reused cache must come from this model's VAE and text encoder, and from this pyramid's resizer."""
    from pyrawan.data.encode import normalisation, text_encoder_fingerprint, vae_sha256

    p = recipe.pyramid
    now = {"vae_sha256": vae_sha256(components), "normalisation": normalisation(components),
           "text_encoder": text_encoder_fingerprint(components), "max_sequence_length": recipe.text.max_sequence_length,
           "keep_time": p.keep_time, "resizer": p.resizer if p.stage_data == 1 else None}
    if p.kind == "ppf":
        now.pop("resizer")            # PPF reads only the full-resolution latents
    differ = [k for k, v in now.items() if k in settings and settings[k] != v]
    if differ:
        raise InputError(f"the latent cache was built with another {', '.join(differ)} than this run's base model and "
                         f"recipe ({recipe.base}); its latents or caption embeddings would not match. Rebuild it "
                         f"for this recipe (set data.root, and data.cache to a new folder or null).")


@dataclass
class Start:
    """What every training command has once its run has started (every rank)."""

    ctx: Context
    resolved: dict
    found: Path | None                  # the checkpoint to resume from
    base: Base
    source: LatentSource
    cache_folder: Path | None           # the latent cache (a parent of the result), None for a given source
    pyramid: PyramidConfig


def start_run(command: str, recipe: TrainRecipe, out: Path, device: torch.device, resume: bool, overwrite: bool,
              source: LatentSource | None, resumable: tuple[str, ...]) -> Start:
    """Start the processes, find the resume point, load the base and open the data (in that order).

    ``device``: the recipe's device resolved by the command; ``source`` replaces the recipe's data (tests).
    """
    from pyrawan.recipe import resolve_recipe
    from pyrawan.train.engine import setup
    from pyrawan.train.model import load_base
    from pyrawan.train.run import resume_point, run_folder

    ctx = setup(recipe.train, device, recipe.dtype)
    resolved = resolve_recipe(recipe)
    found = resume_point(command, run_folder(out), resolved, resume, overwrite, resumable) if ctx.rank == 0 else None
    found = dist.broadcast(found)
    base = load_base(recipe, ctx.device)
    cache_folder = None
    if source is None:
        source, cache_folder = open_source(recipe, base, ctx)
    pyramid = base.pyramid.config()
    check_source(source, pyramid, recipe, base.components)
    return Start(ctx, resolved, None if found is None else Path(found), base, source, cache_folder, pyramid)
