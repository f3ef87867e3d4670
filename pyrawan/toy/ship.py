"""Write trained toy components into the package (``pyrawan/toy/weights/``) with their sha256 and config.

    python -m pyrawan.toy.ship --text-encoder                      # the seeded text encoder (seed 0)
    python -m pyrawan.toy.ship --vae runs/toytrain/vae             # a train_vae.py output folder
    python -m pyrawan.toy.ship --transformer runs/toytrain/teacher # a `pyrawan finetune` artifact
    python -m pyrawan.toy.ship --write-base runs/toytrain/base-p1 --patch 1   # a base to pretrain a teacher from

Each call updates ``weights.json``: ``{component: {"file", "sha256", "bytes", "config", "source"}}``,
where ``config`` is the full constructor config the loader builds the module from
(``pyrawan.models.toy.load_shipped``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pyrawan.fsutil import atomic_write_text, sha256_file
from pyrawan.models.toy import TOY_TEXT_ENCODER, WEIGHTS_DIR, WEIGHTS_INDEX, weights_index


def _record(component: str, state: dict[str, torch.Tensor], config: dict, source: str,
            folder: Path = WEIGHTS_DIR) -> dict:
    """Save ``state`` as ``folder/<component>.safetensors`` and return its ``weights.json`` entry."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{component}.safetensors"
    save_file({k: v.detach().float().clone().contiguous() for k, v in state.items()}, str(path))
    return {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "config": config, "source": source}


def text_encoder_entry(seed: int = 0) -> dict:
    """The toy text encoder exactly as ``build_preset('toy', seed)`` builds it before any is shipped."""
    from pyrawan.models.presets import seeded
    from pyrawan.models.toy import _build

    with seeded(seed * 1000 + 1):
        module = _build("text_encoder", dict(TOY_TEXT_ENCODER))
    return _record("text_encoder", module.state_dict(), dict(TOY_TEXT_ENCODER),
                   f"random init, seed {seed} (frozen; never trained)")


def vae_entry(folder: Path) -> dict:
    """From a ``train_vae.py`` output folder (``vae.safetensors`` + ``config.json``)."""
    config = json.loads((folder / "config.json").read_text())
    return _record("vae", load_file(str(folder / "vae.safetensors")), config,
                   f"python -m pyrawan.toy.train_vae ({folder.name})")


def transformer_entry(artifact: Path) -> dict:
    """From a ``pyrawan finetune`` artifact (``transformer/`` in diffusers layout)."""
    config = json.loads((artifact / "transformer" / "config.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    for key in ("patch_size",):
        config[key] = tuple(config[key])
    state = load_file(str(artifact / "transformer" / "diffusion_pytorch_model.safetensors"))
    return _record("transformer", state, config, f"pyrawan finetune recipes/toy-teacher.yaml ({artifact.name})")


def write_base(folder: Path, patch: int | None = None, vae: Path | None = None,
               weights: Path | None = None) -> Path:
    """Write the toy stack as a diffusers pipeline folder whose transformer may have another patch size.

    ``pyrawan finetune toy-teacher base=FOLDER`` (``from_scratch``) then pretrains a teacher of that
    architecture; the transformer's weights in FOLDER are random (seed 0) and never used.
    ``vae``: a ``train_vae.py`` output folder to use instead of the shipped VAE. ``weights``: a
    transformer state in safetensors (e.g. a finetune checkpoint's ``ema.safetensors``), so a
    checkpoint of a running teacher can be sampled with ``pyrawan sample --model FOLDER``.
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from pyrawan.fsutil import atomic_path
    from pyrawan.models.denoiser import pipeline_for
    from pyrawan.models.presets import build_preset, seeded
    from pyrawan.models.toy import default_config

    stack = build_preset("toy")
    config = dict(default_config("transformer"))
    if patch is not None:
        config["patch_size"] = (1, patch, patch)
    with seeded(0):
        stack.transformer = WanTransformer3DModel(**config).eval()
    if weights is not None:
        stack.transformer.load_state_dict(load_file(str(weights)), strict=True)
    if vae is not None:
        stack.vae = AutoencoderKLWan(**json.loads((vae / "config.json").read_text())).eval()
        stack.vae.load_state_dict(load_file(str(vae / "vae.safetensors")))
    with atomic_path(folder, is_dir=True) as tmp:
        pipeline_for(stack).save_pretrained(str(tmp), safe_serialization=True)
    return folder


def main(argv: list[str] | None = None) -> None:
    """CLI entry: update the shipped toy weights."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text-encoder", action="store_true")
    ap.add_argument("--vae", type=Path)
    ap.add_argument("--transformer", type=Path)
    ap.add_argument("--write-base", type=Path, help="write a diffusers folder of the toy stack (no shipping)")
    ap.add_argument("--patch", type=int, default=None, help="with --write-base: the transformer's spatial patch")
    ap.add_argument("--base-vae", type=Path, default=None, help="with --write-base: a train_vae.py output folder")
    ap.add_argument("--base-weights", type=Path, default=None,
                    help="with --write-base: transformer weights (a finetune checkpoint's ema.safetensors)")
    args = ap.parse_args(argv)
    if args.write_base is not None:
        print(write_base(args.write_base, args.patch, args.base_vae, args.base_weights))
        return
    index = weights_index()
    if args.text_encoder:
        index["text_encoder"] = text_encoder_entry()
    if args.vae is not None:
        index["vae"] = vae_entry(args.vae)
    if args.transformer is not None:
        index["transformer"] = transformer_entry(args.transformer)
    atomic_write_text(WEIGHTS_DIR / WEIGHTS_INDEX, json.dumps(index, indent=1) + "\n")
    print({k: (v["file"], v["sha256"][:12], v["bytes"]) for k, v in index.items()})


if __name__ == "__main__":
    main()
