"""Benchmark: batched sampling with the toy model on the CPU (issue "Speed"), all figures in one run.

    OMP_NUM_THREADS=1 python benchmarks/sample_speed.py [--repeats 3] [--batch-size 16] [--sweep] [--profile] [--clock cpu]

1. Generation time (text encoding + every transformer step + jumps; no VAE decode) of 20-20-10
   against 0-0-50 at batch 16, side by side with the FLOPs ratio (goal: time ratio within 1.3x of
   the FLOPs ratio). Batch 1 is shown for comparison.
2. Videos per minute for the demo's 16 prompts, sampled + decoded + written as mp4, batched
   (``--batch-size``) against the one-at-a-time path (batch 1: what ``sample`` did before
   batching), for the teacher's 0-0-50 and the pyramid's 20-20-10 (goal: >= 2.5x).
3. ``--sweep``: seconds per video (sampling + decode) for batch sizes 1..32, to choose the default.
4. ``--profile``: where one full-resolution transformer forward of the batched path (2 x batch with
   CFG) spends its CPU time, by operator group (GEMMs, attention, the rest), and the same forward
   under bf16 autocast: its time ratio and its relative error against float32. This is what bounds
   the speed-up batching can give once the transformer dominates.

``--clock cpu`` measures the CPU time of this process instead of wall time: on a machine shared
with other jobs, wall time counts the time the process waits for a core, CPU time does not (run it
with one thread, OMP_NUM_THREADS=1, so that CPU time is the work done; the mp4 encoder's own
threads count too, alike in both paths). The toy teacher runs as a 3-stage haar pyramid with
uniform boundaries (weights do not change the time). Each figure is the median of ``--repeats``
runs (the measurements interleave, so a busy neighbour slows every variant alike); the spread
(min-max) is printed beside it. A benchmark, not a test: figures depend on the machine.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pyrawan.commands.demo import DEMO_PROMPTS
from pyrawan.data.video import write_video
from pyrawan.eval.flops import flops_report
from pyrawan.models.artifact import load_model
from pyrawan.models.generate import Plan, generate_videos
from pyrawan.models.vae import decode_latents
from pyrawan.pyramid.config import PyramidConfig

VIDEO = {"frames": 17, "height": 64, "width": 64, "fps": 16}      # the toy world: latents 5x8x8


def toy_plan(schedule: str, guidance: float = 3.0) -> Plan:
    """The demo's sampling settings (shift 3, guidance 3, text length 16) on a 3-stage pyramid."""
    steps = tuple(int(s) for s in schedule.split("-"))
    return Plan(pyramid=PyramidConfig(num_stages=3), steps=steps, shift=3.0, guidance=guidance, negative_prompt="",
                levels=None, video=dict(VIDEO), max_sequence_length=16)


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCK["wall"]


def timed(fn) -> float:
    start = clock()
    fn()
    return clock() - start


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.2f} s  ({min(values):.2f}-{max(values):.2f})"


def generation_seconds(model, schedule: str, batch: int) -> float:
    prompts = list(DEMO_PROMPTS[:batch])
    return timed(lambda: generate_videos(model, toy_plan(schedule), prompts, list(range(batch)), batch_size=batch,
                                         decode=False))


def videos_seconds(model, schedule: str, batch: int | None, folder: Path) -> float:
    """Sample, decode and write the 16 demo prompts as mp4, ``batch`` at a time.

    ``batch=None``: the path ``sample`` took before batching: one prompt at a time, and the VAE
    decode in its default (contiguous) layout.
    """
    plan = toy_plan(schedule)
    prompts, seeds = list(DEMO_PROMPTS), list(range(len(DEMO_PROMPTS)))

    def work() -> None:
        if batch is None:
            frames = []
            for prompt, seed in zip(prompts, seeds):
                latents, _ = generate_videos(model, plan, [prompt], [seed], batch_size=1, decode=False)
                with torch.inference_mode():
                    frames.append(decode_latents(model.components, latents, layout_channels_last=False))
            frames = torch.cat(frames)
        else:
            _, frames = generate_videos(model, plan, prompts, seeds, batch_size=batch)
        for i, video in enumerate(frames):
            write_video(folder / f"{i:02d}.mp4", video, fps=plan.video["fps"])
    return timed(work)


def profile_forward(model, batch: int, repeats: int) -> None:
    """Part 4: operator shares of one CFG forward at ``batch`` prompts, and float32 against bf16 autocast."""
    import warnings

    from torch.profiler import ProfilerActivity, profile

    from pyrawan.eval.latency import _inputs

    warnings.filterwarnings("ignore", message="Mismatch dtype")      # rms_norm under autocast: float weights

    transformer = model.components.transformer
    inputs = _inputs(transformer, (5, 8, 8), 16, 2 * batch, "cpu", torch.float32, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        transformer(**inputs)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            transformer(**inputs)
        groups = {"GEMM (addmm, mm, bmm)": ("aten::addmm", "aten::mm", "aten::bmm"),
                  "attention (SDPA)": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                                       "aten::_scaled_dot_product_attention_math")}
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        shares = {name: sum(e.self_cpu_time_total for e in events if e.key in keys) / total for name, keys in groups.items()}
        shares["the rest (elementwise, norms, copies)"] = 1 - sum(shares.values())
        print(f"\n4. one transformer forward at batch {2 * batch} (CFG), CPU time by operator group:")
        for name, share in shares.items():
            print(f"   {name:40s} {100 * share:5.1f} %")
        reference = transformer(**inputs)[0]
        fp32, bf16 = [], []
        for _ in range(repeats):
            fp32.append(timed(lambda: transformer(**inputs)))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16.append(timed(lambda: transformer(**inputs)))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            error = float((transformer(**inputs)[0].float() - reference).norm() / reference.norm())
    ratios = [a / b for a, b in zip(fp32, bf16)]
    print(f"   float32 {spread(fp32)}   bf16 autocast {spread(bf16)}   speed-up {statistics.median(ratios):.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f}); relative error of the bf16 output {error:.4f}")


def flops_ratio(schedule: str, base: str = "0-0-50") -> float:
    report = flops_report("toy", (5, 8, 8), 3, False, [base, schedule], True, "analytic", 16)
    total = {row["schedule"]: row["total_tflops"] for row in report["schedules"]}
    return total[schedule] / total[base]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="Interleaved repeats per figure (median reported).")
    ap.add_argument("--batch-size", type=int, default=16, help="Batch of the batched path.")
    ap.add_argument("--sweep", action="store_true", help="Also time batch sizes 1, 2, 4, 8, 16, 32.")
    ap.add_argument("--skip-videos", action="store_true", help="Only the generation-time ratio (part 1).")
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall", help="wall time, or CPU time of this process.")
    ap.add_argument("--profile", action="store_true", help="Also part 4: operator shares of one forward, and bf16.")
    args = ap.parse_args()
    global clock
    clock = CLOCK[args.clock]
    model = load_model("toy")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), toy model, 17x64x64, "
          f"guidance 3, {args.clock} clock, median of {args.repeats} (min-max)")
    ratio_flops = flops_ratio("20-20-10")
    generate_videos(model, toy_plan("20-20-10"), ["warm up"], [0], decode=True)      # first-call costs

    print(f"\n1. generation time (no decode) of 20-20-10 vs 0-0-50; FLOPs ratio {ratio_flops:.3f}")
    for batch in sorted({1, args.batch_size}):
        times = {"0-0-50": [], "20-20-10": []}
        for _ in range(args.repeats):
            for schedule in times:
                times[schedule].append(generation_seconds(model, schedule, batch))
        ratios = [a / b for a, b in zip(times["20-20-10"], times["0-0-50"])]
        r = statistics.median(ratios)
        print(f"   batch {batch:2d}: 0-0-50 {spread(times['0-0-50'])}   20-20-10 {spread(times['20-20-10'])}   "
              f"time ratio {r:.3f} ({min(ratios):.3f}-{max(ratios):.3f}) = {r / ratio_flops:.2f}x the FLOPs ratio"
              f"{'  (goal <= 1.3x)' if batch == args.batch_size else ''}")

    if not args.skip_videos:
        n = len(DEMO_PROMPTS)
        print(f"\n2. the demo's {n} prompts: sample + decode + write mp4. before: one at a time, contiguous VAE "
              f"decode (the old path); batch 1: today's code one at a time; batched: batch {args.batch_size}")
        with tempfile.TemporaryDirectory() as tmp:
            for schedule in ("0-0-50", "20-20-10"):
                runs = {"before": [], "batch 1": [], "batched": []}
                for _ in range(args.repeats):
                    for label, batch in (("before", None), ("batch 1", 1), ("batched", args.batch_size)):
                        runs[label].append(videos_seconds(model, schedule, batch, Path(tmp)))
                speedups = [a / b for a, b in zip(runs["before"], runs["batched"])]
                cells = [f"{label} {spread(t)} = {60 * n / statistics.median(t):6.1f}/min" for label, t in runs.items()]
                print(f"   {schedule:9} " + "   ".join(cells) + f"   speed-up batched/before "
                      f"{statistics.median(speedups):.2f}x ({min(speedups):.2f}-{max(speedups):.2f}; goal >= 2.5x)")

    if args.profile:
        profile_forward(model, args.batch_size, args.repeats)

    if args.sweep:
        print("\n3. seconds per video (sample + decode, 32 prompts, one run each) by batch size")
        prompts = [DEMO_PROMPTS[i % len(DEMO_PROMPTS)] for i in range(32)]
        for schedule in ("0-0-50", "20-20-10"):
            row = []
            for batch in (1, 2, 4, 8, 16, 32):
                per = timed(lambda: generate_videos(model, toy_plan(schedule), prompts, list(range(32)),
                                                    batch_size=batch)) / 32
                row.append(f"{batch}: {per:.3f}")
            print(f"   {schedule:9} " + "   ".join(row))


if __name__ == "__main__":
    main()
