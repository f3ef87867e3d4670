"""Benchmark: the toy finetune's CPU rate alone and beside a steady competing load, per thread setting.

    python benchmarks/cpu_threads.py [--steps 16] [--threads 1,2] [--load 0,2] [--policies default,PASSIVE]
        [--summary docs/data/cpu-threads.json]

Each run is ``pyrawan.commands.finetune.run`` of the ``toy-finetune`` recipe (the demo's finetune: the toy
teacher, 17x64x64, 3 stages, batch 24) on a synthetic latent cache, in its own process with
``OMP_NUM_THREADS`` = the thread count and ``OMP_WAIT_POLICY`` = the policy (``default``: unset, the
OpenMP runtime's own). The competing load is N processes each running a busy Python loop, started before
the run and stopped after it. steps/s is the median over the steps after the first two. ``x fair`` divides
by the rate a fair share of the cores would give beside N loops: the best rate with no loops times
cores / (cores + N). A benchmark, not a test: figures depend on the machine and on what else runs on it
(the 1-minute load average is printed with each row). The figures and the choice they led to:
docs/results.md, "CPU threads on a shared machine"; ``--summary`` writes that table's summary for
``scripts/render_results.py`` (one run per row, no spread).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_summary import column, table, write_summary  # noqa: E402

BUSY = "while True: pass"


def summary(measured: list[tuple[int, int, str, float, float | None, float]], source: str) -> dict:
    """The table's summary: one ``(busy loops, threads, policy, steps/s, x fair or None, load average)`` per
    run; the fastest rate of each load is bold, as in docs/results.md."""
    best = {}
    for load, _, _, rate, _, _ in measured:
        best[load] = max(best.get(load, 0.0), rate)
    def fair_cell(load: int, rate: float, fair: float | None) -> object:   # alone: 1.00 for the best, else "–"
        return (1.0 if rate == best[0] else "–") if load == 0 else ("–" if fair is None else fair)

    rows = [[load, threads, policy, {"value": rate, "bold": True} if rate == best[load] else rate,
             fair_cell(load, rate, fair), loadavg] for load, threads, policy, rate, fair, loadavg in measured]
    columns = [column("busy loops", ".0f"), column("threads", ".0f"), column("OMP_WAIT_POLICY"),
               column("steps/s", ".2f"), column("× fair", ".2f"), column("load average", ".1f")]
    return table(source, columns, rows, note="one run per row, no repeats: no spread is measured")


def worker(steps: int, result: Path) -> None:
    """One finetune in this process; writes the median seconds per step to ``result``."""
    from pyrawan.commands.finetune import run
    from pyrawan.recipe import load_recipe
    from pyrawan.train.synthetic import for_recipe

    overrides = [f"train.steps={steps}", "train.checkpoint.every=0", "train.validation.every=0",
                 "train.validation.holdout=0", "train.optimizer.warmup_steps=1", "device=cpu"]
    recipe = load_recipe("toy-finetune", overrides, kind="finetune")
    out = result.with_suffix("")
    run(recipe, out, overwrite=True, source=for_recipe(recipe, items=48), show_progress=False)
    seconds = [json.loads(line)["seconds"] for line in (out.parent / f"{out.name}.run" / "metrics.jsonl")
               .read_text().splitlines() if '"train"' in line]
    result.write_text(json.dumps({"median_step_s": statistics.median(seconds[2:] or seconds)}))


def measure(threads: int, policy: str, load: int, steps: int, work: Path) -> float:
    """steps/s of one run with ``load`` busy loops beside it."""
    result = work / f"t{threads}-{policy}-{load}.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(load)]
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", "--steps", str(steps), "--result", str(result)],
                              cwd=work, env=env, capture_output=True, text=True)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    if proc.returncode:
        raise SystemExit(f"threads {threads}, {policy}, load {load} failed:\n{proc.stderr[-4000:]}")
    return 1 / json.loads(result.read_text())["median_step_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--load", default="0,2", help="Busy loops beside the run, comma-separated.")
    ap.add_argument("--policies", default="default,PASSIVE", help="OMP_WAIT_POLICY values (default = unset).")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--summary", type=Path, help="Also write the table's summary for docs/data "
                    "(scripts/render_results.py renders it).")
    args = ap.parse_args()
    if args.worker:
        worker(args.steps, Path(args.result))
        return
    import torch

    cores = len(os.sched_getaffinity(0))
    print(f"torch {torch.__version__}, {cores} cores, toy-finetune, {args.steps} steps per run, "
          f"load average before: {os.getloadavg()[0]:.1f}")
    print(f"{'busy loops':>10} {'threads':>7} {'OMP_WAIT_POLICY':>15} {'steps/s':>8} {'x fair':>7} {'loadavg':>8}")
    best_alone, measured = None, []
    with tempfile.TemporaryDirectory() as tmp:
        for load in map(int, args.load.split(",")):
            for threads in map(int, args.threads.split(",")):
                for policy in args.policies.split(","):
                    rate = measure(threads, policy, load, args.steps, Path(tmp))
                    best_alone = max(best_alone or 0.0, rate) if load == 0 else best_alone
                    fair = best_alone * cores / (cores + load) if best_alone else None
                    ratio = f"{rate / fair:7.2f}" if fair and load else f"{'-':>7}"
                    measured.append((load, threads, policy, rate, rate / fair if fair and load else None,
                                     os.getloadavg()[0]))
                    print(f"{load:>10} {threads:>7} {policy:>15} {rate:>8.2f} {ratio} {os.getloadavg()[0]:>8.1f}",
                          flush=True)
    if args.summary:
        write_summary(args.summary, summary(measured, "python benchmarks/cpu_threads.py " + " ".join(sys.argv[1:])))


if __name__ == "__main__":
    main()
