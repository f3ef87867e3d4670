"""Benchmark: the cost of checking every latent-cache shard's sha256 when a cache is opened.

    python benchmarks/cache_verify.py [--shards 16] [--shard-mb 64]

Writes ``--shards`` random shard files of ``--shard-mb`` MiB into a temporary folder, then times
``check_shard_files`` with and without hashing (median of 3, files in the page cache). Prints GiB/s
and what that means for the paper's cache (about 11 MB per 81x448x832 video: 21+11+6 latent frames of
16 channels plus its caption embedding). A benchmark, not a test: figures depend on the machine.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from pyrawan.data.cache import HASH_THREADS, check_shard_files

PAPER_MB_PER_VIDEO = 11.0
PAPER_VIDEOS = 80_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--shard-mb", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        entries = []
        for k in range(args.shards):
            body = os.urandom(args.shard_mb << 20)
            name = f"shards/{k:05d}.safetensors"
            (folder / name).parent.mkdir(exist_ok=True)
            (folder / name).write_bytes(body)
            entries.append({"file": name, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()})
        total = args.shards * args.shard_mb / 1024
        for hashes in (False, True):
            times = []
            for _ in range(3):
                start = time.perf_counter()
                check_shard_files(folder, entries, hashes=hashes)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            label = f"sha256 ({HASH_THREADS} threads)" if hashes else "sizes only"
            print(f"{label:>22}: {seconds:.3f} s for {total:.2f} GiB ({total / seconds:.2f} GiB/s)")
        rate = total / seconds
        paper = PAPER_MB_PER_VIDEO * PAPER_VIDEOS / 1024
        print(f"paper-scale cache ({PAPER_VIDEOS} videos, ~{paper:.0f} GiB): ~{paper / rate / 60:.1f} min to verify "
              f"on this machine; toy demo cache (96 videos, ~2 MiB): well under 0.1 s")


if __name__ == "__main__":
    main()
