"""Train the toy preset's small ``AutoencoderKLWan`` on toy-world clips (a plain loop, CPU-sized).

    python -m pyrawan.toy.train_vae --out runs/toy-vae [--minutes 12] [--steps 100000] [--seed 0] [--init DIR]
        [--decoder-only] [--base-dim 16] [--crop 32] [--device auto] [--save-every 0]

Data: a pool of rendered toy scenes (17×64×64). Each step trains on a batch of random 5-, 9- or
17-frame windows (the first frame plus one, two or four 4-frame chunks of Wan's causal VAE; without
17-frame windows the later chunks' reconstructions degrade) cut to a
random ``--crop``² crop on the 8-pixel latent grid: the VAE is convolutional, so crops cut the cost
(32 px: four-fold; 64 = whole frames). Loss: pixel MSE on a posterior sample + ``kl_weight`` × mean KL. Afterwards the
per-channel latent mean/std of the posterior mode over full clips go into the config
(``latents_mean``/``latents_std``), and reconstructions of held-out clips are scored by ToyBench.
Writes ``OUT/vae.safetensors``, ``OUT/config.json`` (constructor kwargs) and ``OUT/report.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from pyrawan.models.toy import TOY_VAE
from pyrawan.toy import world

FRAMES, SIZE = 17, 64
WINDOWS = (5, 9, 5, 17)   # frames per training window, cycled (17 trains the causal cache over 4 chunks)


def render_pool(n: int, seed: int) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """``n`` scenes drawn with ``seed``: pixels [n, 3, 17, 64, 64] in [-1, 1], captions, centres [n, 17, 2] (x, y)."""
    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng) for _ in range(n)]
    videos = torch.stack([world.render(s, FRAMES, SIZE, SIZE, supersample=4) for s in scenes])
    tracks = torch.as_tensor(np.stack([world.centre_track(s, FRAMES, SIZE, SIZE) for s in scenes]))
    return videos.permute(0, 2, 1, 3, 4) * 2 - 1, [world.caption(s) for s in scenes], tracks


def crop_origin(centre: float, crop: int, gen: torch.Generator) -> int:
    """An 8-aligned crop start in [0, SIZE - crop] whose window holds ``centre`` (± 8 px of jitter)."""
    jitter = float(torch.rand((), generator=gen)) * 16 - 8
    start = round((centre + jitter - crop / 2) / 8) * 8
    return min(max(start, 0), SIZE - crop)


def random_batch(pool: torch.Tensor, tracks: torch.Tensor, batch: int, frames: int, gen: torch.Generator,
                 crop: int = 32, centred: float = 0.75) -> torch.Tensor:
    """A batch [B, 3, frames, crop, crop] of random clips, time windows and 8-aligned crops.

    A fraction ``centred`` of the crops is placed around the object at the window's middle frame
    (the object covers a few percent of a frame: uniform crops mostly show background); the rest
    is uniform.
    """
    idx = torch.randint(len(pool), (batch,), generator=gen).tolist()
    t0 = int(torch.randint(FRAMES - frames + 1, (1,), generator=gen))
    clips = []
    for i in idx:
        if float(torch.rand((), generator=gen)) < centred:
            x, y = tracks[i, t0 + frames // 2].tolist()
            y0, x0 = crop_origin(y, crop, gen), crop_origin(x, crop, gen)
        else:
            y0, x0 = (8 * int(torch.randint((SIZE - crop) // 8 + 1, (1,), generator=gen)) for _ in range(2))
        clips.append(pool[i, :, t0:t0 + frames, y0:y0 + crop, x0:x0 + crop])
    return torch.stack(clips)


def object_weight(x: torch.Tensor, boost: float) -> torch.Tensor:
    """Per-pixel loss weight [B, 1, F, H, W], mean 1: ``1 + boost`` on object pixels, 1 elsewhere.

    Object pixels differ from their frame's per-channel spatial median (the background) by > 0.15
    in some channel; without the boost the few object pixels barely move the MSE and the VAE
    learns the background only.
    """
    background = x.flatten(-2).median(-1).values[..., None, None]
    mask = ((x - background).abs().amax(1, keepdim=True) > 0.15).float()
    weight = 1 + boost * mask
    return weight / weight.mean()


def train(vae: AutoencoderKLWan, pool: torch.Tensor, tracks: torch.Tensor, minutes: float, steps: int, batch: int,
          lr: float, kl_weight: float, seed: int, object_boost: float = 0.0, crop: int = 32,
          checkpoint=None, save_every: float = 0.0, loss: str = "mse") -> list[dict]:
    """Train in place until ``steps`` or ``minutes`` run out; returns the loss log.

    ``loss`` is the pixel error, ``mse`` or ``l1`` (sharper edges: its gradient does not vanish
    with the error, so thin corners are not averaged away); the log's ``mse`` is always the MSE.

    ``checkpoint()``, when given, is called every ``save_every`` minutes (a long run keeps its
    latest weights if it is stopped).
    """
    gen = torch.Generator().manual_seed(seed)
    saved_at = 0.0
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    log, start = [], time.time()
    vae.train()
    for step in range(steps):
        elapsed = (time.time() - start) / 60
        if elapsed > minutes:
            break
        for group in opt.param_groups:   # 50 warm-up steps, then cosine over the time budget, floor 10 %
            cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / minutes)))
            group["lr"] = lr * min(1.0, (step + 1) / 50) * cosine
        if checkpoint is not None and save_every > 0 and elapsed - saved_at >= save_every:
            checkpoint()
            saved_at = elapsed
        x = random_batch(pool, tracks, batch, WINDOWS[step % len(WINDOWS)], gen, crop)
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.sample(gen)).sample
        weight = object_weight(x, object_boost)
        mse = (weight * (recon - x) ** 2).mean()
        error = mse if loss == "mse" else (weight * (recon - x).abs()).mean()
        kl = post.kl().mean() / post.mean[0].numel()
        total = error + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        log.append({"step": step, "mse": mse.item(), "kl": kl.item(), "minutes": round(elapsed, 2)})
        if step % 100 == 0:
            print(json.dumps(log[-1]), flush=True)
    return log


@torch.no_grad()
def latent_stats(vae: AutoencoderKLWan, pool: torch.Tensor, batch: int = 8) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the posterior mode over full clips ([16] each)."""
    vae.eval()
    z = torch.cat([vae.encode(pool[i:i + batch]).latent_dist.mode() for i in range(0, len(pool), batch)])
    flat = z.transpose(0, 1).reshape(z.shape[1], -1)
    return flat.mean(1).tolist(), flat.std(1).clamp_min(1e-3).tolist()


@torch.no_grad()
def bench_reconstructions(vae: AutoencoderKLWan, videos: torch.Tensor, captions: list[str]) -> dict:
    """ToyBench of the VAE's reconstructions of ``videos`` [n, 3, F, H, W] in [-1, 1] and their MSE."""
    from pyrawan.toy.bench import score_set

    vae.eval()
    device = next(vae.parameters()).device
    recon = torch.cat([vae.decode(vae.encode(videos[i:i + 4].to(device)).latent_dist.mode()).sample.cpu()
                       for i in range(0, len(videos), 4)])
    frames = ((recon.clamp(-1, 1) + 1) / 2).permute(0, 2, 1, 3, 4)      # [n, F, 3, H, W]
    result = score_set(list(frames), captions)
    return {"mse": float(((recon.clamp(-1, 1) - videos) ** 2).mean()), "scores": result["scores"]}


def save(vae: AutoencoderKLWan, config: dict, out: Path) -> None:
    """Write ``out/vae.safetensors`` and ``out/config.json`` (constructor kwargs), each atomically."""
    from safetensors.torch import save_file

    from pyrawan.fsutil import atomic_path, atomic_write_text

    with atomic_path(out / "vae.safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}, str(tmp))
    atomic_write_text(out / "config.json", json.dumps(config, indent=1))


def main(argv: list[str] | None = None) -> None:
    """CLI entry: ``python -m pyrawan.toy.train_vae --out DIR``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--pool", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--object-boost", type=float, default=0.0, help="extra loss weight on object pixels")
    ap.add_argument("--base-dim", type=int, default=TOY_VAE["base_dim"], help="VAE width (channels at full size)")
    ap.add_argument("--crop", type=int, default=32, help="training crop in pixels, a multiple of 8 up to 64")
    ap.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    ap.add_argument("--loss", choices=("mse", "l1"), default="mse", help="pixel error")
    ap.add_argument("--save-every", type=float, default=0.0, help="checkpoint every N minutes (0: at the end only)")
    ap.add_argument("--init", type=Path, default=None, help="continue from OUT of an earlier run")
    ap.add_argument("--decoder-only", action="store_true",
                    help="freeze the encoder (keeps --init's latents and statistics; the teacher stays valid)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(args.seed)
    pool, _, tracks = render_pool(args.pool, args.seed)
    pool = pool.to(device)
    arch = {**TOY_VAE, "base_dim": args.base_dim} if args.init is None else {
        k: v for k, v in json.loads((args.init / "config.json").read_text()).items()
        if k not in ("latents_mean", "latents_std")}
    vae = AutoencoderKLWan(**arch)
    if args.init is not None:
        from safetensors.torch import load_file

        vae.load_state_dict(load_file(str(args.init / "vae.safetensors")))
    vae.to(device)
    if args.decoder_only:
        for module in (vae.encoder, vae.quant_conv):
            module.requires_grad_(False)
    log = train(vae, pool, tracks, args.minutes, args.steps, args.batch, args.lr, args.kl_weight, args.seed,
                args.object_boost, args.crop, checkpoint=lambda: save(vae, arch, args.out),
                save_every=args.save_every, loss=args.loss)
    if args.decoder_only:
        init = json.loads((args.init / "config.json").read_text())
        mean, std = init["latents_mean"], init["latents_std"]
    else:
        mean, std = latent_stats(vae, pool[:64])
    vae.register_to_config(latents_mean=mean, latents_std=std)
    held, captions, _ = render_pool(16, args.seed + 1)
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "device": str(device), "steps": len(log),
              "final": log[-1], "reconstruction": bench_reconstructions(vae, held, captions)}
    save(vae, {**arch, "latents_mean": mean, "latents_std": std}, args.out)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report["reconstruction"]), flush=True)


if __name__ == "__main__":
    main()
