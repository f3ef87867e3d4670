"""Does a toy teacher read its caption? Flow-matching loss on held-out clips with true and altered captions.

    python -m pyrawan.toy.probe --model toy            # or a diffusers folder / `pyrawan finetune` artifact

For ``n`` held-out scenes (rendered, encoded by the model's VAE) and fixed noise at a few levels
sigma, the velocity loss ``|F(x_sigma, caption) - (noise - x0)|^2`` is measured with the true
caption, with one attribute changed (direction reversed, speed swapped, colour or shape changed) and with
the empty caption. A teacher that uses an attribute has a higher loss when it is changed; equal
losses mean the attribute is ignored (the 2x2-patch teacher shipped until 2026-11-29 ignored direction). This needs no
sampling, so it is cheap enough to follow a training run.

With ``--cache`` (a latent cache of the training data) it also compares, at sigma = 1, what the
model predicts with what the data says a caption word means: at pure noise the best prediction
of x0 is E[x0 | caption], so for two values a, b of one attribute the model's mean difference
``x0_hat(a) - x0_hat(b)`` over shared noise should match the data's group-mean difference
``E[x0 | a] - E[x0 | b]``. The share of x0's variance each attribute explains in the data is
printed beside it (how strong a signal the loss carries for that word).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from pyrawan.errors import InputError
from pyrawan.toy import world

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "up-left": "down-right",
            "down-right": "up-left", "up-right": "down-left", "down-left": "up-right"}
OTHER_COLOUR = {"red": "cyan", "cyan": "red", "green": "magenta", "magenta": "green", "blue": "yellow",
                "yellow": "blue"}
OTHER_SHAPE = {"square": "triangle", "triangle": "circle", "circle": "square"}
ALTERED = ("direction", "speed", "colour", "shape")


def _fields(scene: world.Scene) -> dict:
    """The scene's captioned attributes as a dict."""
    fields = world.scene_dict(scene)
    fields.pop("start", None)
    return fields


def altered(scene: world.Scene, what: str) -> str:
    """The scene's caption with ``what`` (one of ALTERED) changed to a clearly different value."""
    changes = {"direction": lambda s: {"direction": OPPOSITE[s.direction]},
               "speed": lambda s: {"speed": "fast" if s.speed == "slow" else "slow"},
               "colour": lambda s: {"colour": OTHER_COLOUR[s.colour]},
               "shape": lambda s: {"shape": OTHER_SHAPE[s.shape]}}[what](scene)
    return world.caption(world.Attributes(**{**_fields(scene), **changes}))


@torch.no_grad()
def caption_sensitivity(components, n: int = 32, seed: int = 4242, sigmas: tuple[float, ...] = (0.5, 0.8, 0.95),
                        max_sequence_length: int = 16, frames: int = 17, size: int = 64) -> dict[str, dict[str, float]]:
    """``{sigma: {"true", "empty", and each of ALTERED: mean loss}}`` over ``n`` held-out clips."""
    from pyrawan.models.denoiser import encode_prompts
    from pyrawan.models.vae import encode_video

    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng) for _ in range(n)]
    videos = torch.stack([world.render(s, frames, size, size) for s in scenes]).permute(0, 2, 1, 3, 4) * 2 - 1
    z = torch.cat([encode_video(components.vae, videos[i:i + 8]) for i in range(0, n, 8)])
    captions = {"true": [world.caption(s) for s in scenes], "empty": [""] * n}
    captions.update({what: [altered(s, what) for s in scenes] for what in ALTERED})
    text = {k: encode_prompts(components, v, None, max_sequence_length)[0] for k, v in captions.items()}
    transformer = components.transformer.eval()
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for sigma in sigmas:
        noise = torch.randn(z.shape, generator=gen)
        x = (1 - sigma) * z + sigma * noise
        t = torch.full((n,), 1000.0 * sigma)
        out[str(sigma)] = {
            k: float(((transformer(hidden_states=x, timestep=t, encoder_hidden_states=e, return_dict=False)[0].float()
                       - (noise - z)) ** 2).mean())
            for k, e in text.items()}
    return out


CONTRASTS: dict[str, tuple[str, str]] = {"colour": ("red", "cyan"), "direction": ("right", "left"),
                                         "speed": ("fast", "slow"), "shape": ("square", "circle"),
                                         "background": ("white", "black")}


def explained_variance(latents: torch.Tensor, values: list[str | None]) -> float:
    """Share of the variance of ``latents`` [N, ...] explained by the group means of ``values`` (None = unnamed, left out)."""
    keep = [i for i, v in enumerate(values) if v is not None]
    z = latents[keep]
    total = float(z.var(0, unbiased=False).sum())
    mean = z.mean(0)
    between = 0.0
    for value in sorted({values[i] for i in keep}):
        group = z[[j for j, i in enumerate(keep) if values[i] == value]]
        between += len(group) / len(z) * float(((group.mean(0) - mean) ** 2).sum())
    return between / total


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


@torch.no_grad()
def conditional_means(components, latents: torch.Tensor, captions: list[str], n: int = 32, seed: int = 4242,
                      max_sequence_length: int = 16) -> dict[str, dict[str, float]]:
    """Per attribute of CONTRASTS: ``{"explained", "cosine", "norm_ratio"}`` of the model's sigma = 1 contrast.

    ``latents`` [N, 16, T, H, W] and ``captions`` are the training data (a latent cache). The model's
    contrast is the mean over ``n`` scenes (one shared noise each) of x0_hat(caption with value a) -
    x0_hat(caption with value b); the data's is the difference of the group means. Cosine 1 and norm
    ratio 1: the model has learned what the word means at pure noise; cosine ~0: it ignores the word.
    """
    from pyrawan.models.denoiser import encode_prompts

    attributes = [world.parse_caption(c, partial=True) for c in captions]
    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng) for _ in range(n)]
    noise = torch.randn((n, *latents.shape[1:]), generator=torch.Generator().manual_seed(seed))
    transformer = components.transformer.eval()

    def x0_hat(name: str, value: str) -> torch.Tensor:                      # [n, 16, T, H, W]
        text = [world.caption(world.Attributes(**{**_fields(s), name: value})) for s in scenes]
        e = encode_prompts(components, text, None, max_sequence_length)[0]
        v = transformer(hidden_states=noise, timestep=torch.full((n,), 1000.0), encoder_hidden_states=e,
                        return_dict=False)[0].float()
        return noise - v                                                    # x0 = x_1 - 1 * v

    out = {}
    for name, (a, b) in CONTRASTS.items():
        values = [getattr(x, name) for x in attributes]
        group = {v: latents[[i for i, w in enumerate(values) if w == v]].mean(0) for v in (a, b)}
        data = group[a] - group[b]
        model = (x0_hat(name, a) - x0_hat(name, b)).mean(0)
        out[name] = {"explained": explained_variance(latents, values), "cosine": _cosine(model, data),
                     "norm_ratio": float(model.norm() / data.norm())}
    return out


def cache_data(folder: str) -> tuple[torch.Tensor, list[str]]:
    """Full-resolution latents [N, 16, T, H, W] and captions of a latent cache."""
    from pathlib import Path

    from pyrawan.data.cache import LatentCache

    cache = LatentCache(Path(folder), verify=False)
    return torch.stack([cache.latents(i)[0] for i in range(len(cache))]), [cache.record(i)["caption"] for i in range(len(cache))]


def main(argv: list[str] | None = None) -> None:
    """CLI entry: print the caption sensitivity of a model as JSON."""
    from pyrawan.models.artifact import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy", help="toy, a diffusers folder or a pyrawan model artifact")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--cache", help="a latent cache of the training data: add the sigma = 1 conditional-mean check")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        data = cache_data(args.cache) if args.cache else None     # read (and check) the cache first
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    components = load_model(args.model).components
    report = {"model": args.model, "n": args.n, "loss": caption_sensitivity(components, args.n, args.seed)}
    if data is not None:
        report["sigma1"] = conditional_means(components, *data, n=args.n, seed=args.seed)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
