"""Benchmark: down / up / jump on the paper's latent sizes, for every resizer (median of repeats).

    python benchmarks/pyramid_ops.py [--repeats 20] [--batch 2] [--dtype float32]

Prints milliseconds per call. A benchmark, not a test: figures depend on the machine.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from pyrawan.pyramid.process import jump
from pyrawan.pyramid.resize import get_resizer, resizer_names

PAPER_LATENTS = [(21, 56, 104), (11, 28, 52)]  # stage 0 and 1: the two jump targets


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (builds and caches the matrices)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, batch {args.batch}")
    print(f"{'resizer':8} {'fine latent [B,16,T,H,W]':28} {'down ms':>9} {'up ms':>9} {'jump ms':>9}")
    for name in resizer_names():
        r = get_resizer(name)
        for t, h, w in PAPER_LATENTS:
            fine = torch.randn(args.batch, 16, t, h, w, dtype=dtype)
            coarse = r.down(fine)
            g = torch.Generator().manual_seed(0)
            d = median_ms(lambda: r.down(fine), args.repeats)
            u = median_ms(lambda: r.up(coarse), args.repeats)
            j = median_ms(lambda: jump(coarse, 0.4, r, generator=g), args.repeats)
            print(f"{name:8} {str(list(fine.shape)):28} {d:9.2f} {u:9.2f} {j:9.2f}")


if __name__ == "__main__":
    main()
