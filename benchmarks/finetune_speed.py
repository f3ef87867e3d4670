"""Benchmark: finetune steps/s and peak memory, tiny preset and a mid-sized model, 1 vs 2 processes.

    python benchmarks/finetune_speed.py [--steps 12] [--engine ddp|deepspeed] [--configs tiny,mid]

Each run is ``pyrawan.commands.finetune.run`` on a synthetic latent cache (no data needed), with
validation and checkpoints off; 2 processes run under ``torch.distributed.run`` (gloo on CPU,
nccl on GPU). steps/s is the median over the steps after the first two; one optimiser step is
6 samples per process (2 per stage). Peak memory: the largest resident set of any rank (CPU) or
``torch.cuda.max_memory_allocated`` (GPU). A benchmark, not a test: figures depend on the machine
and on what else runs on it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# The mid-sized transformer: 4 heads x 64 = 256 wide, 4 layers, 4.8 M parameters, at 17 x 128 x 128
# pixels (latents 5 x 16 x 16 -> 320 tokens at full resolution); text width of the tiny text encoder.
MID = dict(num_attention_heads=4, attention_head_dim=64, ffn_dim=1024, num_layers=4, freq_dim=64)
CONFIGS = {"tiny": ["video.height=64", "video.width=64"], "mid": ["video.height=128", "video.width=128"]}


def make_mid_base(folder: Path) -> Path:
    """A diffusers pipeline folder: the tiny preset with the mid-sized transformer."""
    from diffusers import WanTransformer3DModel

    from pyrawan.models.denoiser import pipeline_for
    from pyrawan.models.presets import TRANSFORMER_ARCHS, build_preset, seeded

    components = build_preset("tiny")
    with seeded(0):
        components.transformer = WanTransformer3DModel(**{**TRANSFORMER_ARCHS["tiny"], **MID})
    pipeline_for(components).save_pretrained(folder, safe_serialization=True)
    return folder


def worker(args: argparse.Namespace) -> None:
    """One rank: finetune, then rank 0 writes steps/s and every rank its peak memory."""
    import torch

    from pyrawan.commands.finetune import run
    from pyrawan.recipe import load_recipe
    from pyrawan.train.synthetic import for_recipe

    rank = int(os.environ.get("RANK", 0))
    overrides = [*CONFIGS[args.config], f"base={args.base}", f"train.steps={args.steps}", f"train.engine={args.engine}",
                 "train.checkpoint.every=0", "train.validation.every=0", "train.validation.holdout=0", "device=auto"]
    recipe = load_recipe("tiny-finetune", overrides, kind="finetune")
    out = Path(args.result).with_suffix("")
    run(recipe, out, overwrite=True, source=for_recipe(recipe, items=48), show_progress=False)
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    Path(f"{args.result}.rank{rank}").write_text(json.dumps({"peak_bytes": peak}))
    if rank == 0:
        seconds = [json.loads(line)["seconds"] for line in (out.parent / f"{out.name}.run" / "metrics.jsonl")
                   .read_text().splitlines() if '"train"' in line]
        Path(args.result).write_text(json.dumps({"median_step_s": statistics.median(seconds[2:] or seconds)}))


def measure(config: str, procs: int, base: str, steps: int, engine: str, work: Path, port: int) -> dict:
    """Launch one run (under torch.distributed.run for 2 processes) and read its results."""
    result = work / f"{config}-{procs}.json"
    cmd = [__file__, "--worker", "--config", config, "--base", base, "--steps", str(steps), "--engine", engine,
           "--result", str(result)]
    if procs > 1:
        cmd = ["-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_port", str(port), *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // procs)), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, *cmd], cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{config} x{procs} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    step_s = json.loads(result.read_text())["median_step_s"]
    peak = max(json.loads(Path(f"{result}.rank{r}").read_text())["peak_bytes"] for r in range(procs))
    return {"steps_per_s": 1 / step_s, "samples_per_s": 6 * procs / step_s, "peak_gib": peak / 1024**3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--engine", default="ddp", choices=["single", "ddp", "deepspeed"])
    ap.add_argument("--configs", default="tiny,mid")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    print(f"torch {torch.__version__}, {device}; {args.steps} steps, engine {args.engine} for 2 processes")
    print(f"{'config':8} {'procs':>5} {'steps/s':>9} {'samples/s':>10} {'peak GiB/rank':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bases = {"tiny": "tiny", "mid": str(make_mid_base(work / "mid-base"))}
        for i, config in enumerate(args.configs.split(",")):
            for procs in (1, 2):
                engine = args.engine if procs > 1 else ("deepspeed" if args.engine == "deepspeed" else "single")
                r = measure(config, procs, bases[config], args.steps, engine, work, 29650 + 2 * i + procs)
                print(f"{config:8} {procs:>5} {r['steps_per_s']:>9.2f} {r['samples_per_s']:>10.1f} {r['peak_gib']:>14.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
