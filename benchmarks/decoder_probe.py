"""Why the toy's tiny decoder misses colour: linear probes of the toy VAE's latents, and held-out scores of decoders.

    python benchmarks/decoder_probe.py --run runs/toy-decoder-c12 [--decoders runs/toy-decoder runs/toy-decoder-c12]

``--run`` is a ``pyrawan distill toy-decoder`` artifact; its run folder (``RUN.run``) keeps the training
pairs (``decoder_targets.safetensors``: latents and the VAE's frames). Printed (docs/decoder.md):

1. Linear probes, least squares fitted on the first 3/4 of the training pairs' latent frames and scored
   on the rest: the mean colour of each latent cell's 8x8 pixels from the cell's 3x3 latent neighbourhood
   (RMSE on object cells and on background cells), and the background colour of a video's first frame
   from that frame's spatial mean latent. The spread (std) of the predicted colours is the baseline.
2. For each ``--decoders`` artifact (or decoder folder): on the held-out pairs, PSNR, PSNR of the moving
   pixels (the training loss's ``foreground``) and the colour error (per video the largest channel error
   of the moving pixels' mean colour, averaged).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F


def pairs_of(run: Path):
    from safetensors.torch import load_file

    from pyrawan.train.decoder import TARGETS_FILE

    tensors = load_file(str(run.with_name(run.name + ".run") / TARGETS_FILE))
    return tensors["latents"].float(), tensors["frames"]


def lstsq_rmse(x: torch.Tensor, y: torch.Tensor, test_mask: torch.Tensor | None = None) -> tuple[float, ...]:
    """Fit ``y ~ [x, 1]`` on the first 3/4 of the rows; RMSE on the rest (within ``test_mask`` and outside it)."""
    x = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    y = y.double()
    k = len(x) * 3 // 4
    solution = torch.linalg.lstsq(x[:k], y[:k]).solution
    error = (x[k:] @ solution - y[k:]) ** 2
    if test_mask is None:
        return (float(error.mean().sqrt()),)
    mask = test_mask[k:]
    return float(error[mask].mean().sqrt()), float(error[~mask].mean().sqrt())


def probes(latents: torch.Tensor, frames: torch.Tensor) -> dict:
    """The two linear probes of item 1 (``latents`` ``[N, 16, T, h, w]``, ``frames`` uint8 ``[N, F, 3, H, W]``)."""
    from pyrawan.train.decoder import foreground

    n, _, t, h, w = latents.shape
    video = frames.float() / 255
    shown = [min(4 * i, video.shape[1] - 1) for i in range(t)]          # the last output frame of latent frame i
    scale = video.shape[-1] // w
    cells = F.avg_pool2d(video[:, shown].reshape(-1, 3, h * scale, w * scale), scale)           # [N*T, 3, h, w]
    moving = F.avg_pool2d(foreground(video)[:, shown].reshape(-1, 1, h * scale, w * scale), scale) > 0.3
    z = latents.transpose(1, 2).reshape(-1, latents.shape[1], h, w)
    neighbourhood = F.unfold(z, 3, padding=1).transpose(1, 2).reshape(-1, 9 * latents.shape[1])
    colour = cells.permute(0, 2, 3, 1).reshape(-1, 3)
    objects, background = lstsq_rmse(neighbourhood, colour, moving.reshape(-1))
    first = video[:, 0].flatten(2).median(-1).values                                           # [N, 3]
    (frame_mean,) = lstsq_rmse(latents[:, :, 0].mean((2, 3)), first)
    return {"cell_colour_from_3x3_latent_rmse": {"object_cells": objects, "background_cells": background},
            "cell_colour_std": float(colour.std(0).mean()),
            "background_from_frame_mean_latent_rmse": frame_mean, "background_std": float(first.std(0).mean())}


@torch.no_grad()
def decoder_scores(folder: Path, latents: torch.Tensor, frames: torch.Tensor, rows: list[int]) -> dict:
    """Held-out PSNR, moving-pixel PSNR (``held_out_scores``) and the mean colour error of one decoder."""
    from pyrawan.commands.distill_decoder import held_out_scores
    from pyrawan.models.decoders import user_decoder
    from pyrawan.train.decoder import DecoderPairs, foreground

    model = user_decoder(folder).eval()
    pairs = DecoderPairs(latents, frames)
    scores = held_out_scores(model, pairs, rows, torch.device("cpu"), 8)
    errors = []
    for start in range(0, len(rows), 8):
        z, target = pairs.batch(rows[start:start + 8], torch.device("cpu"))
        pred = model(model.raw_latents(z)).clamp(0, 1)
        mask = foreground(target)[:, :, 0] > 0                                               # [B, F, H, W]
        for p, y, m in zip(pred, target, mask):
            if m.any():
                errors.append(float((p.transpose(0, 1)[:, m].mean(1) - y.transpose(0, 1)[:, m].mean(1)).abs().max()))
    return {**scores, "colour_error": sum(errors) / len(errors)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a toy-decoder artifact (its .run folder keeps the pairs)")
    ap.add_argument("--decoders", type=Path, nargs="*", default=[], help="decoder artifacts or folders to score")
    ap.add_argument("--train-rows", type=int, default=448, help="training pairs (the rest are held out)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    latents, frames = pairs_of(args.run)
    result = {"probes": probes(latents[:args.train_rows], frames[:args.train_rows]),
              "decoders": {str(d): decoder_scores(d, latents, frames, list(range(args.train_rows, len(latents))))
                           for d in args.decoders}}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
