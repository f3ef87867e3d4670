"""Does a toy teacher read its caption? Flow-matching loss on held-out clips with true and altered captions.

    python -m pyrawan.toy.probe --model toy            # or a diffusers folder / `pyrawan finetune` artifact

For ``n`` held-out scenes (rendered, encoded by the model's VAE) and fixed noise at a few levels
sigma, the velocity loss ``|F(x_sigma, caption) - (noise - x0)|^2`` is measured with the true
caption, with one attribute changed (direction reversed, speed swapped, colour changed) and with
the empty caption. A teacher that uses an attribute has a higher loss when it is changed; equal
losses mean the attribute is ignored (the shipped 64x64 teacher ignores direction). This needs no
sampling, so it is cheap enough to follow a training run.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from pyrawan.toy import world

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "up-left": "down-right",
            "down-right": "up-left", "up-right": "down-left", "down-left": "up-right"}
OTHER_COLOUR = {"red": "cyan", "cyan": "red", "green": "magenta", "magenta": "green", "blue": "yellow",
                "yellow": "blue"}


def altered(scene: world.Scene, what: str) -> str:
    """The scene's caption with ``what`` (direction, speed, colour) changed to a clearly different value."""
    changes = {"direction": lambda s: {"direction": OPPOSITE[s.direction]},
               "speed": lambda s: {"speed": "fast" if s.speed == "slow" else "slow"},
               "colour": lambda s: {"colour": OTHER_COLOUR[s.colour]}}[what](scene)
    fields = {**world.scene_dict(scene), **changes}
    fields.pop("start", None)
    return world.caption(world.Attributes(**fields))


@torch.no_grad()
def caption_sensitivity(components, n: int = 32, seed: int = 4242, sigmas: tuple[float, ...] = (0.5, 0.8, 0.95),
                        max_sequence_length: int = 16, frames: int = 17, size: int = 64) -> dict[str, dict[str, float]]:
    """``{sigma: {"true", "direction", "speed", "colour", "empty": mean loss}}`` over ``n`` held-out clips."""
    from pyrawan.models.denoiser import encode_prompts
    from pyrawan.models.vae import encode_video

    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng) for _ in range(n)]
    videos = torch.stack([world.render(s, frames, size, size) for s in scenes]).permute(0, 2, 1, 3, 4) * 2 - 1
    z = torch.cat([encode_video(components.vae, videos[i:i + 8]) for i in range(0, n, 8)])
    captions = {"true": [world.caption(s) for s in scenes], "empty": [""] * n}
    captions.update({what: [altered(s, what) for s in scenes] for what in ("direction", "speed", "colour")})
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


def main(argv: list[str] | None = None) -> None:
    """CLI entry: print the caption sensitivity of a model as JSON."""
    from pyrawan.models.artifact import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy", help="toy, a diffusers folder or a pyrawan model artifact")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--seed", type=int, default=4242)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    result = caption_sensitivity(load_model(args.model).components, args.n, args.seed)
    print(json.dumps({"model": args.model, "n": args.n, "loss": result}, indent=1))


if __name__ == "__main__":
    main()
