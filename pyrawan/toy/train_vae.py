"""Train the toy preset's small ``AutoencoderKLWan`` on toy-world clips (a plain loop, CPU-sized).

    python -m pyrawan.toy.train_vae --out runs/toy-vae [--minutes 12 | --minutes 0 --steps N] [--seed 0]
        [--init DIR|shipped] [--decoder-only] [--base-dim 16] [--crop 32] [--device auto] [--save-every 0]
        [--loss mse|l1] [--decode sample|mode] [--edge-weight 0] [--motion-weight 0] [--spatial 8|4] [--resume]
    python -m pyrawan.toy.train_vae --out DIR --init DIR|shipped --bench-only --holdout 96

Data: a pool of rendered toy scenes (17×64×64). Each step trains on a batch of random 5-, 9- or
17-frame windows (the first frame plus one, two or four 4-frame chunks of Wan's causal VAE; without
17-frame windows the later chunks' reconstructions degrade) cut to a
random ``--crop``² crop on an 8-pixel grid: the VAE is convolutional, so crops cut the cost
(32 px: four-fold; 64 = whole frames). Loss: pixel MSE or L1 on a posterior sample (or its mode) +
``edge_weight`` × the L1 error of pixel gradients + ``motion_weight`` × the L1 error of frame-to-frame
differences + ``kl_weight`` × mean KL. The learning rate
follows the time budget (``--minutes``) or, with ``--minutes 0``, the step budget. Checkpoints
(weights + ``train_state.pt``) make a stopped run resumable with ``--resume``. Afterwards the
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

from pyrawan.models.toy import TOY_VAE, toy_vae_config
from pyrawan.toy import world

FRAMES, SIZE = 17, 64
WINDOWS = (5, 9, 5, 17)   # frames per training window, cycled (17 trains the causal cache over 4 chunks)


HELD_OUT_STREAM = 7001   # the held-out scenes' random stream: (HELD_OUT_STREAM, seed), never a training pool's


def pool_scenes(n: int, seed: int, held_out: bool = False) -> list[world.Scene]:
    """``n`` scenes drawn with ``seed``: a training pool, or with ``held_out`` scenes no training pool holds.

    A training pool of ``seed`` is a prefix of every larger pool of the same seed, so held-out
    scenes come from a separate stream instead of another seed (which a training run may use).
    """
    rng = np.random.default_rng((HELD_OUT_STREAM, seed) if held_out else seed)
    return [world.sample_scene(rng) for _ in range(n)]


def render_pool(n: int, seed: int, held_out: bool = False) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """``pool_scenes`` rendered: pixels [n, 3, 17, 64, 64] in [-1, 1], captions, centres [n, 17, 2] (x, y)."""
    scenes = pool_scenes(n, seed, held_out)
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


def edge_error(recon: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean |∇recon − ∇x| over horizontal and vertical pixel differences ([B, 3, F, H, W] inputs).

    Blurred edges have smaller gradients than the sharp targets, so this term is large exactly where
    ToyBench's sharpness and shape measures look (the object's outline).
    """
    dx = ((recon.diff(dim=-1) - x.diff(dim=-1)).abs() * weight[..., :, 1:]).mean()
    dy = ((recon.diff(dim=-2) - x.diff(dim=-2)).abs() * weight[..., 1:, :]).mean()
    return dx + dy


def motion_error(recon: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean |Δ_t recon − Δ_t x| over consecutive frames ([B, 3, F, H, W] inputs, weight [B, 1, F, H, W]).

    A pixel counts with the larger weight of its two frames, so the object's leading and trailing
    edges count wherever it is in either frame. Frame-to-frame wobble of a reconstructed object (its
    outline shifting by a fraction of a pixel against the true motion) is what ToyBench's
    smoothness measures; a per-frame error barely sees it, this term sees it directly.
    """
    pair_weight = torch.maximum(weight[:, :, 1:], weight[:, :, :-1])
    return ((recon.diff(dim=2) - x.diff(dim=2)).abs() * pair_weight).mean()


def learning_rate(lr: float, step: int, elapsed: float, minutes: float, steps: int) -> float:
    """50 warm-up steps, then a cosine down to 10 % of ``lr`` over the time budget, or over ``steps`` when
    ``minutes`` is 0 (a step-budgeted run does not depend on the machine's speed)."""
    progress = elapsed / minutes if minutes > 0 else step / steps
    cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return lr * min(1.0, (step + 1) / 50) * cosine


def train(vae: AutoencoderKLWan, pool: torch.Tensor, tracks: torch.Tensor, minutes: float, steps: int, batch: int,
          lr: float, kl_weight: float, seed: int, object_boost: float = 0.0, crop: int = 32,
          checkpoint=None, save_every: float = 0.0, loss: str = "mse", decode: str = "sample",
          edge_weight: float = 0.0, motion_weight: float = 0.0, state: dict | None = None) -> list[dict]:
    """Train in place until ``steps`` or ``minutes`` (both counted over all resumes; ``minutes`` 0: no time
    limit, the learning rate follows the steps) run out; returns the loss log.

    ``loss`` is the pixel error, ``mse`` or ``l1`` (sharper edges: its gradient does not vanish
    with the error, so thin corners are not averaged away); the log's ``mse`` is always the MSE.
    ``decode``: decode a posterior ``sample`` (trains the decoder to tolerate latent noise) or the
    posterior ``mode`` (what the decoder sees at use: the teacher generates clean latents).
    ``edge_weight`` adds ``edge_error``, ``motion_weight`` adds ``motion_error``.

    ``checkpoint(opt, gen, log, minutes)``, when given, is called every ``save_every`` minutes and
    at the end (a stopped run keeps its latest weights and can be resumed). ``state`` (from
    ``load_state``) continues such a run: optimiser moments, step, minutes spent, data RNG and log.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    log, spent, first = [], 0.0, 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        log, spent, first = state["log"], float(state["minutes"]), int(state["step"])
    saved_at, start = spent, time.time()
    vae.train()
    elapsed = spent
    for step in range(first, steps):
        elapsed = spent + (time.time() - start) / 60
        if 0 < minutes < elapsed:
            break
        for group in opt.param_groups:
            group["lr"] = learning_rate(lr, step, elapsed, minutes, steps)
        if checkpoint is not None and save_every > 0 and elapsed - saved_at >= save_every:
            checkpoint(opt, gen, log, elapsed)
            saved_at = elapsed
        x = random_batch(pool, tracks, batch, WINDOWS[step % len(WINDOWS)], gen, crop)
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.sample(gen) if decode == "sample" else post.mode()).sample
        weight = object_weight(x, object_boost)
        mse = (weight * (recon - x) ** 2).mean()
        error = mse if loss == "mse" else (weight * (recon - x).abs()).mean()
        kl = post.kl().mean() / post.mean[0].numel()
        total = error + kl_weight * kl + (edge_weight * edge_error(recon, x, weight) if edge_weight else 0.0)
        total = total + (motion_weight * motion_error(recon, x, weight) if motion_weight else 0.0)
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        log.append({"step": step, "mse": mse.item(), "kl": kl.item(), "minutes": round(elapsed, 2)})
        if step % 100 == 0:
            print(json.dumps(log[-1]), flush=True)
    if checkpoint is not None:
        checkpoint(opt, gen, log, elapsed)
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
    per_video = [{"prompt": r["prompt"], "overall": r["overall"], "scores": r["scores"]} for r in result["per_video"]]
    return {"mse": float(((recon.clamp(-1, 1) - videos) ** 2).mean()), "scores": result["scores"],
            "overall": result["overall"], "per_video": per_video}


def save(vae: AutoencoderKLWan, config: dict, out: Path) -> None:
    """Write ``out/vae.safetensors`` and ``out/config.json`` (constructor kwargs), each atomically."""
    from safetensors.torch import save_file

    from pyrawan.fsutil import atomic_path, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "vae.safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}, str(tmp))
    atomic_write_text(out / "config.json", json.dumps(config, indent=1))


STATE_FILE = "train_state.pt"
RESUMABLE_ARGS = ("minutes", "steps", "save_every", "resume", "device")   # may change between a run and its resume
ADDED_ARGS = {"motion_weight": "0.0"}   # options newer than some saved runs: absent there means this value


def save_state(out: Path, opt: torch.optim.Optimizer, gen: torch.Generator, log: list[dict], minutes: float,
               args: dict) -> None:
    """Write ``out/train_state.pt`` (tensors, numbers and strings only: it loads with ``weights_only``)."""
    from pyrawan.fsutil import atomic_path

    state = {"optimizer": opt.state_dict(), "generator": gen.get_state(), "log": log, "minutes": minutes,
             "step": (log[-1]["step"] + 1) if log else 0, "args": args}
    with atomic_path(out / STATE_FILE) as tmp:
        torch.save(state, tmp)


def load_state(out: Path, args: dict) -> dict:
    """The saved state of the run in ``out``; an ``InputError`` when there is none or the arguments differ."""
    from pyrawan.errors import InputError

    path = out / STATE_FILE
    if not path.is_file():
        raise InputError(f"--resume: {path} does not exist, so {out} holds no resumable train_vae run. Drop "
                         "--resume to start a new run, or give the --out folder of the run to continue.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = {**ADDED_ARGS, **state["args"]}
    changed = {k: (saved.get(k), v) for k, v in args.items() if k not in RESUMABLE_ARGS and saved.get(k) != v}
    if changed:
        shown = ", ".join(f"--{k.replace('_', '-')} {old} -> {new}" for k, (old, new) in changed.items())
        raise InputError(f"--resume: the arguments differ from those of the run in {out} ({shown}). Only "
                         f"{', '.join('--' + k.replace('_', '-') for k in RESUMABLE_ARGS[:3])} may change; "
                         "repeat the run's command with --resume.")
    return state


def init_weights(init: Path | None, base_dim: int, spatial: int = 8) -> tuple[dict, dict | None, dict | None]:
    """``(constructor config, state dict or None, {latents_mean, latents_std} or None)`` to start from.

    ``init``: None (random init of width ``base_dim`` and spatial factor ``spatial``), ``shipped`` (the package's VAE, config from
    ``weights.json``) or the ``--out`` folder of an earlier run.
    """
    from safetensors.torch import load_file

    from pyrawan.models.toy import WEIGHTS_DIR, weights_index

    if init is None:
        return {**toy_vae_config(spatial), "base_dim": base_dim}, None, None
    if str(init) == "shipped":
        entry = weights_index()["vae"]
        config, weights = dict(entry["config"]), WEIGHTS_DIR / entry["file"]
    else:
        config, weights = json.loads((init / "config.json").read_text()), init / "vae.safetensors"
    stats = {k: config.pop(k) for k in ("latents_mean", "latents_std") if k in config}
    return config, load_file(str(weights)), stats or None


def bench_only(init: Path | None, out: Path, n: int, seed: int) -> dict:
    """ToyBench of ``init``'s reconstructions of ``n`` held-out scenes -> ``out/bench.json``.

    The report holds means and 95 % intervals, overall and by asked shape and size (``breakdown``).
    """
    from pyrawan.fsutil import atomic_write_text
    from pyrawan.toy.bench import breakdown, intervals

    arch, weights, stats = init_weights(init, TOY_VAE["base_dim"])
    vae = AutoencoderKLWan(**arch)
    vae.load_state_dict(weights)
    held, captions, _ = render_pool(n, seed, held_out=True)
    result = bench_reconstructions(vae, held, captions)
    report = {"vae": str(init), "videos": n, "seed": seed, "mse": result["mse"],
              "intervals": intervals(result["per_video"]), "by_shape_size": breakdown(result["per_video"], ["shape", "size"])}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bench.json", json.dumps(report, indent=1))
    print(json.dumps({k: [round(v["mean"], 3), round(v["low"], 3), round(v["high"], 3)]
                      for k, v in report["intervals"].items()}), flush=True)
    for g in report["by_shape_size"]:
        print(f"{g['group']['shape']:>8} {g['group']['size']:>6}: {g['videos']:3d} clips, shape "
              f"{g['intervals']['shape']['mean']:.2f}, overall {g['intervals']['overall']['mean']:.2f}", flush=True)
    return report


def main(argv: list[str] | None = None) -> None:
    """CLI entry: ``python -m pyrawan.toy.train_vae --out DIR``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--minutes", type=float, default=12.0,
                    help="time budget over all resumes; 0 = none (the learning rate then follows --steps)")
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--pool", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--object-boost", type=float, default=0.0, help="extra loss weight on object pixels")
    ap.add_argument("--base-dim", type=int, default=TOY_VAE["base_dim"], help="VAE width (channels at full size)")
    ap.add_argument("--spatial", type=int, choices=(8, 4), default=8,
                    help="spatial compression of a new VAE (--init unset): 8 as Wan, or 4 (16x16 latents)")
    ap.add_argument("--crop", type=int, default=32, help="training crop in pixels, a multiple of 8 up to 64")
    ap.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    ap.add_argument("--loss", choices=("mse", "l1"), default="mse", help="pixel error")
    ap.add_argument("--decode", choices=("sample", "mode"), default="sample", help="decode a posterior sample or its mode")
    ap.add_argument("--edge-weight", type=float, default=0.0, help="weight of the L1 error of pixel gradients")
    ap.add_argument("--motion-weight", type=float, default=0.0,
                    help="weight of the L1 error of frame-to-frame differences (against reconstructed wobble)")
    ap.add_argument("--save-every", type=float, default=0.0, help="checkpoint every N minutes (0: at the end only)")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from OUT of an earlier run, or 'shipped' (the package's VAE)")
    ap.add_argument("--decoder-only", action="store_true",
                    help="freeze the encoder (keeps --init's latents and statistics; the teacher stays valid)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out (same arguments)")
    ap.add_argument("--holdout", type=int, default=16,
                    help="held-out scenes (a stream no training pool draws from) scored by ToyBench at the end")
    ap.add_argument("--bench-only", action="store_true",
                    help="no training: score --init's reconstructions of --holdout held-out scenes into OUT/bench.json")
    args = ap.parse_args(argv)
    if args.bench_only:
        bench_only(args.init, args.out, args.holdout, args.seed)
        return
    shown = {k: str(v) for k, v in vars(args).items()}
    state = load_state(args.out, shown) if args.resume else None
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(args.seed)
    pool, _, tracks = render_pool(args.pool, args.seed)
    pool = pool.to(device)
    arch, weights, init_stats = init_weights(args.init, args.base_dim, args.spatial)
    vae = AutoencoderKLWan(**arch)
    if state is not None:
        from safetensors.torch import load_file

        weights = load_file(str(args.out / "vae.safetensors"))
    if weights is not None:
        vae.load_state_dict(weights)
    vae.to(device)
    if args.decoder_only:
        for module in (vae.encoder, vae.quant_conv):
            module.requires_grad_(False)

    def checkpoint(opt: torch.optim.Optimizer, gen: torch.Generator, log: list[dict], minutes: float) -> None:
        save(vae, arch, args.out)
        save_state(args.out, opt, gen, log, minutes, shown)

    log = train(vae, pool, tracks, args.minutes, args.steps, args.batch, args.lr, args.kl_weight, args.seed,
                args.object_boost, args.crop, checkpoint=checkpoint, save_every=args.save_every, loss=args.loss,
                decode=args.decode, edge_weight=args.edge_weight, motion_weight=args.motion_weight, state=state)
    if args.decoder_only and init_stats is not None:
        mean, std = init_stats["latents_mean"], init_stats["latents_std"]
    else:
        mean, std = latent_stats(vae, pool[:64])
    vae.register_to_config(latents_mean=mean, latents_std=std)
    held, captions, _ = render_pool(args.holdout, args.seed, held_out=True)
    report = {"args": shown, "device": str(device), "steps": len(log), "final": log[-1] if log else None,
              "reconstruction": bench_reconstructions(vae, held, captions)}
    save(vae, {**arch, "latents_mean": mean, "latents_std": std}, args.out)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report["reconstruction"]["scores"]), flush=True)


if __name__ == "__main__":
    main()
