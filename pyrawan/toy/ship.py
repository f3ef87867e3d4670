"""Write trained toy components into the package (``pyrawan/toy/weights/``) with their sha256 and config.

    python -m pyrawan.toy.ship --text-encoder                      # the seeded text encoder (seed 0)
    python -m pyrawan.toy.ship --vae runs/toytrain/vae             # a train_vae.py output folder
    python -m pyrawan.toy.ship --transformer runs/toytrain/teacher # a `pyrawan finetune` artifact
    python -m pyrawan.toy.ship --decoder runs/toy-decoder          # a `pyrawan distill toy-decoder` artifact
    python -m pyrawan.toy.ship --write-base runs/toytrain/base-p1 --patch 1   # a base to pretrain a teacher from
    python -m pyrawan.toy.ship --write-base runs/toytrain/base-p2 --patch 2 --warm-from pyrawan/toy/weights/transformer.safetensors

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


def decoder_entry(artifact: Path) -> dict:
    """From a ``pyrawan distill toy-decoder`` artifact (``decoder/config.json`` + ``decoder/decoder.safetensors``)."""
    from pyrawan.models.tiny_decoder import CONFIG_FILE, DECODER_DIR, WEIGHTS_FILE

    config = json.loads((artifact / DECODER_DIR / CONFIG_FILE).read_text())
    state = load_file(str(artifact / DECODER_DIR / WEIGHTS_FILE))
    return _record("decoder", state, config, f"pyrawan distill recipes/toy-decoder.yaml ({artifact.name})")


def warm_start(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Copy every tensor of ``state`` whose name and shape match into ``module``; return the names kept as they were.

    A teacher of another patch size keeps its seeded patch embedding and output projection (their
    shapes differ) and starts every block, the time and the text embedders from ``state``.
    """
    from pyrawan.errors import InputError

    own = module.state_dict()
    copied = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not copied:
        raise InputError("--warm-from: no tensor of the given file matches the transformer by name and shape; "
                         "give a toy transformer's weights (e.g. pyrawan/toy/weights/transformer.safetensors).")
    module.load_state_dict({**own, **copied}, strict=True)
    return sorted(set(own) - set(copied))


def write_base(folder: Path, patch: int | None = None, vae: Path | None = None,
               weights: Path | None = None, warm_from: Path | None = None) -> Path:
    """Write the toy stack as a one-stage model artifact whose transformer may have another patch size.

    FOLDER is a diffusers pipeline folder plus ``pyramid.json`` (the ``toy-teacher`` recipe's plain
    sampling defaults: 17×64×64, 50 steps, guidance 3, and this VAE's factors) and ``components.json``,
    so ``pyrawan sample`` and ``eval quality`` run it at the toy size.
    ``pyrawan finetune toy-teacher base=FOLDER`` (``from_scratch``) then pretrains a teacher of that
    architecture; the transformer's weights in FOLDER are random (seed 0) and never used.
    ``vae``: a ``train_vae.py`` output folder to use instead of the shipped VAE. ``weights``: a
    transformer state in safetensors (e.g. a finetune checkpoint's ``ema.safetensors``), so a
    checkpoint of a running teacher can be sampled with ``pyrawan sample --model FOLDER``. ``warm_from``:
    a transformer state of another architecture (e.g. the shipped 1×1-patch teacher) to start from where
    names and shapes match (``warm_start``); then finetune with ``train.from_scratch=false``.
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from pyrawan.fsutil import atomic_path
    from pyrawan.models.artifact import save_model
    from pyrawan.models.denoiser import pipeline_for
    from pyrawan.models.presets import COMPONENT_NAMES, build_preset, seeded
    from pyrawan.models.pyramid_spec import recipe_pyramid
    from pyrawan.models.toy import default_config
    from pyrawan.recipe import load_recipe

    stack = build_preset("toy")
    config = dict(default_config("transformer"))
    if patch is not None:
        config["patch_size"] = (1, patch, patch)
    with seeded(0):
        stack.transformer = WanTransformer3DModel(**config).eval()
    if weights is not None:
        stack.transformer.load_state_dict(load_file(str(weights)), strict=True)
    if warm_from is not None:
        kept = warm_start(stack.transformer, load_file(str(warm_from)))
        print(f"warm start from {warm_from}: seeded init kept for {', '.join(kept) or 'nothing'}")
    if vae is not None:
        stack.vae = AutoencoderKLWan(**json.loads((vae / "config.json").read_text())).eval()
        stack.vae.load_state_dict(load_file(str(vae / "vae.safetensors")))
    with atomic_path(folder, is_dir=True) as tmp:
        pipeline_for(stack).save_pretrained(str(tmp), safe_serialization=True)   # the recipe reads its VAE
        spec = recipe_pyramid(load_recipe("toy-teacher", [f"base={tmp}"]))
        save_model(tmp, stack, spec, changed=COMPONENT_NAMES)
    return folder


def main(argv: list[str] | None = None) -> None:
    """CLI entry: update the shipped toy weights."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text-encoder", action="store_true")
    ap.add_argument("--vae", type=Path)
    ap.add_argument("--transformer", type=Path)
    ap.add_argument("--decoder", type=Path, help="a `pyrawan distill toy-decoder` artifact: the tiny decoder")
    ap.add_argument("--write-base", type=Path, help="write a one-stage toy model artifact (pipeline folder, pyramid.json) to pretrain or judge a teacher (no shipping)")
    ap.add_argument("--patch", type=int, default=None, help="with --write-base: the transformer's spatial patch")
    ap.add_argument("--base-vae", type=Path, default=None, help="with --write-base: a train_vae.py output folder")
    ap.add_argument("--base-weights", type=Path, default=None,
                    help="with --write-base: transformer weights (a finetune checkpoint's ema.safetensors)")
    ap.add_argument("--warm-from", type=Path, default=None,
                    help="with --write-base: start the transformer from these weights where names and shapes match")
    args = ap.parse_args(argv)
    if args.write_base is not None:
        print(write_base(args.write_base, args.patch, args.base_vae, args.base_weights, args.warm_from))
        return
    index = weights_index()
    if args.text_encoder:
        index["text_encoder"] = text_encoder_entry()
    if args.vae is not None:
        index["vae"] = vae_entry(args.vae)
    if args.transformer is not None:
        index["transformer"] = transformer_entry(args.transformer)
    if args.decoder is not None:
        index["decoder"] = decoder_entry(args.decoder)
    atomic_write_text(WEIGHTS_DIR / WEIGHTS_INDEX, json.dumps(index, indent=1) + "\n")
    print({k: (v["file"], v["sha256"][:12], v["bytes"]) for k, v in index.items()})


if __name__ == "__main__":
    main()
