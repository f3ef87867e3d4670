"""The finetune ablations of docs/results.md, in the toy world: one `pyrawan demo` per configuration.

    python benchmarks/toy_ablations.py [--out runs/ablations] [--seed-sets 3] [--prompts 32] [--steps 400] [--only NAME ...]
        [--summary docs/data/toy-ablations-1600.json]

Each configuration is the demo (dataset → calibrate → convert → finetune (400 steps, or --steps) → eval quality of
the teacher at 50 steps, the unfinetuned and the finetuned pyramid at 20-20-10 and 4-4-2 → eval
compare) with one setting changed against the default (haar, Definition 2, calibrated boundaries,
no alignment loss). A configuration whose ``results.json`` exists is not run again, so an
interrupted run continues. Every run uses the same dataset seed, prompts and noise seeds, so rows are
paired across configurations.

Writes OUT/ablations.json and OUT/ablations.md: per configuration and row, ToyBench overall and its
parts (mean [95 % bootstrap interval over the videos]), FD, FLOPs ratio, and the verdict against the
default configuration's same row: better / worse only where the two intervals are disjoint.
``--summary`` also writes the table of docs/results.md ("Ablations at 1,600 steps") for
``scripts/render_results.py``: per row, the paired per-video difference of ToyBench overall to the
default's same row (the same (prompt, seed) videos; ``benchmarks/paired_delta.py`` on the two rows'
``eval-<index>/metrics.json``), bold with better / worse where its 95 % interval excludes 0.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_delta import differences  # noqa: E402
from results_summary import ci, column, table as summary_table, write_summary  # noqa: E402

CONFIGS = {  # name -> (what changes, demo flags)
    "default": ("haar, Definition 2, calibrated boundaries, no alignment loss", []),
    "uniform": ("boundaries uniform in global sigma (1/3, 2/3), the old default", ["--boundaries", "uniform"]),
    "pyramid-flow": ("boundaries equivalent to Pyramid Flow's (0.586, 0.941)", ["--boundaries", "pyramid-flow"]),
    "align": ("alignment loss on, weight 1 (our choice; the paper gives no value), in train.align_form's default "
              "form (same-input before 2026-12-07, full-resolution since)", ["--align-weight", "1"]),
    "definition-1": ("Definition 1: coarse stages from downsampled latents", ["--stage-data", "1"]),
    "dct": ("resizer dct", ["--resizer", "dct"]),
    "db4": ("resizer db4", ["--resizer", "db4"]),
}
METRICS = ("toybench_overall", "toybench_detection", "toybench_colour", "toybench_shape", "toybench_direction",
           "toybench_speed")


def run_config(name: str, out: Path, seed_sets: int, prompts: int, steps: int) -> Path:
    """``pyrawan demo`` of one configuration into ``out/name`` (skipped when it finished before)."""
    folder = out / name
    if (folder / "results.json").is_file():
        return folder
    started = time.time()
    with open(out / f"{name}.log", "w") as log:
        proc = subprocess.run([sys.executable, "-m", "pyrawan", "demo", "--seed-sets", str(seed_sets), "--prompts",
                               str(prompts), "--steps", str(steps), *CONFIGS[name][1], "-o", str(folder)],
                              stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"demo {name} failed (exit {proc.returncode}); see {out / f'{name}.log'}")
    print(f"  {name}: {time.time() - started:.0f} s", flush=True)
    return folder


def disjoint_verdict(row: dict, base: dict, metric: str) -> str:
    """better / worse where the 95 % intervals are disjoint, else 'not separable' (higher is better)."""
    a, b = row["metrics"][metric], base["metrics"][metric]
    if a["low"] > b["high"]:
        return "better"
    if a["high"] < b["low"]:
        return "worse"
    return "not separable"


def table(results: dict[str, dict]) -> tuple[list[dict], str]:
    """Rows of every configuration with verdicts against the default's same row; the markdown table."""
    base = {r["row"]: r for r in results["default"]["rows"]}
    out, lines = [], []
    head = ("| configuration | row | schedule | × FLOPs | ToyBench [95% CI] | vs default | colour | shape | direction "
            "| speed | FD |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for name, result in results.items():
        for row in result["rows"]:
            if row["row"] == "teacher" and name != "default":
                continue
            m = row["metrics"]
            verdict = "" if name == "default" else disjoint_verdict(row, base[row["row"]], "toybench_overall")
            ci = lambda k: f"{m[k]['mean']:.3f} [{m[k]['low']:.3f}, {m[k]['high']:.3f}]"  # noqa: E731
            fd = m.get("toybench_fd", {}).get("mean")
            out.append({"configuration": name, "row": row["row"], "schedule": row["schedule"],
                        "cost_ratio": row.get("cost_ratio"), "verdict": verdict,
                        **{k: m[k] for k in METRICS if k in m}, "fd": fd})
            lines.append(f"| {name} | {row['row']} | {row['schedule']} | {row.get('cost_ratio') or 0:.3f} | "
                         f"{ci('toybench_overall')} | {verdict} | " + " | ".join(
                             ci(k) for k in METRICS[2:]) + f" | {fd or float('nan'):.0f} |")
    return out, head + "\n" + "\n".join(lines) + "\n"


SUMMARY_SCORES = ("toybench_colour", "toybench_direction", "toybench_speed", "toybench_smoothness")


def paired_cell(delta: tuple[float, float, float]) -> dict:
    """The "Δ vs default, paired" cell: bold with a verdict where the interval excludes 0."""
    verdict = " better" if delta[1] > 0 else " worse" if delta[2] < 0 else ""
    return {"value": list(delta), **({"bold": True, "suffix": verdict} if verdict else {})}


def summary(results: dict[str, dict], folders: dict[str, Path], source: str, mean_ci=None) -> dict:
    """The ``table`` summary of the ablations (docs/results.md's layout): configuration, row, schedule,
    ToyBench, the paired difference to the default's same row, four scores and FD."""
    if mean_ci is None:
        from pyrawan.eval.stats import mean_ci
    base = {r["row"]: r for r in results["default"]["rows"]}
    rows = []
    for name, result in results.items():
        for row in result["rows"]:
            if row["row"] == "teacher":
                continue
            m = row["metrics"]
            delta = None
            if name != "default":
                mine = folders[name] / row["eval"] / "metrics.json"
                theirs = folders["default"] / base[row["row"]]["eval"] / "metrics.json"
                delta = paired_cell(mean_ci(differences([mine], [theirs], "overall")))
            fd = m.get("toybench_fd")
            rows.append([name, row["row"], row["schedule"], ci(m["toybench_overall"]), delta,
                         *[ci(m[k]) if k in m else None for k in SUMMARY_SCORES], ci(fd) if fd else None])
    columns = [column("configuration"), column("row"), column("schedule"), column("ToyBench", ".3f"),
               column("Δ vs default, paired", "+.3f"), column("colour", ".2f"), column("direction", ".2f"),
               column("speed", ".2f"), column("smoothness", ".2f"), column("FD", ".0f")]
    return summary_table(source, columns, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/ablations"))
    ap.add_argument("--seed-sets", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--steps", type=int, default=400, help="Finetuning steps of every configuration.")
    ap.add_argument("--only", nargs="*", choices=list(CONFIGS), help="Run only these configurations (default first).")
    ap.add_argument("--summary", type=Path, help="Also write the table's summary for docs/data (docs/results.md, "
                    "\"Ablations at 1,600 steps\"; scripts/render_results.py renders it).")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    names = ["default", *[n for n in (args.only or CONFIGS) if n != "default"]]
    results, folders = {}, {}
    for name in names:
        folders[name] = run_config(name, args.out, args.seed_sets, args.prompts, args.steps)
        results[name] = json.loads((folders[name] / "results.json").read_text())
    rows, md = table(results)
    (args.out / "ablations.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "ablations.md").write_text(md)
    print(md)
    if args.summary:
        write_summary(args.summary, summary(results, folders, "python benchmarks/toy_ablations.py " + " ".join(sys.argv[1:])))


if __name__ == "__main__":
    main()
