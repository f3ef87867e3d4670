"""The distillation rows of docs/results.md, measured in the toy world on the CPU (issue: DMD few-step models).

    python benchmarks/toy_distill.py [--out runs/toy-distill] [--iterations 600] [--finetune-steps 400] [--seed-sets 3] [--prompts 32]

Every phase is a `pyrawan` command (so each row can be reproduced by hand) and is skipped when its
output artifact exists, so an interrupted run continues where it stopped:

1. a toy dataset (256 videos, 17x64x64) -> calibrate (latent cache, boundaries) -> convert the toy
   teacher into a 3-stage pyramid -> finetune it (pyramidal flow matching, --finetune-steps);
2. the DMD-OT teacher: the toy teacher finetuned with plain flow matching at every stage resolution;
3. distill: DMD-OT, DMD-PT, DMD-PT*, Adv-OD, Adv-PD (2-2-1, from the finetuned pyramid) and the
   one-stage Wan-DMD-like baselines 1 and 2 steps (from the toy teacher);
3b. Pyramidal Patchification on the same boundaries: the toy teacher converted to PPF (averaging init),
   PPF diffusion finetuning (same steps as the pyramid's), and PPF-DMD against the toy teacher (same
   iterations as the DMD rows) from the converted model and from the PPF finetune;
4. every row sampled on the same seed sets (prompts drawn from the toy world; coupled seeds), scored
   with ToyBench (FD against the dataset), costed in FLOPs and CPU wall time per video.

Writes OUT/results.json and OUT/results.md (mean [95 % bootstrap interval] over all videos of a row).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROWS = [  # (row, model key, schedule, guidance or None for the model's default)
    ("teacher, 50 steps, CFG 3", "toy", "50", None),
    ("finetuned pyramid 20-20-10, CFG 3", "finetuned", "20-20-10", None),
    ("DMD-OT 2-2-1", "dmd-ot", "2-2-1", None),
    ("DMD-PT 2-2-1", "dmd-pt", "2-2-1", None),
    ("DMD-PT* 2-2-1", "dmd-ptstar", "2-2-1", None),
    ("Adv-OD 2-2-1", "adv-od", "2-2-1", None),
    ("Adv-PD 2-2-1", "adv-pd", "2-2-1", None),
    ("Wan-DMD-like 0-0-2", "dmd-baseline2", "2", None),
    ("Wan-DMD-like 0-0-1", "dmd-baseline1", "1", None),
    ("PPF converted (no training) 20-20-10, CFG 3", "ppf", "20-20-10", None),
    ("PPF finetuned 20-20-10, CFG 3", "ppf-finetuned", "20-20-10", None),
    ("PPF-DMD 2-2-1 (from the converted PPF model)", "ppf-dmd", "2-2-1", None),
    ("PPF-DMD 2-2-1 (from the PPF finetune)", "ppf-ft-dmd", "2-2-1", None),
]


def pyrawan(*args: str, log: Path) -> None:
    """Run one `pyrawan` command, its output appended to ``log``; stop on failure."""
    started = time.time()
    with open(log, "a") as handle:
        handle.write(f"\n$ pyrawan {' '.join(args)}\n")
        handle.flush()
        proc = subprocess.run([sys.executable, "-m", "pyrawan", *args], stdout=handle, stderr=subprocess.STDOUT)
    print(f"  pyrawan {' '.join(args[:2])} ... {time.time() - started:.0f} s", flush=True)
    if proc.returncode:
        raise SystemExit(f"failed (exit {proc.returncode}): pyrawan {' '.join(args)}; see {log}")


def done(folder: Path) -> bool:
    return (folder / "manifest.json").is_file()


def build(out: Path, iterations: int, finetune_steps: int, log: Path) -> dict[str, Path]:
    """Phases 1-3; returns the model folder of every row key."""
    cache = out / "cache"
    common = [f"data.cache={cache}"]
    if not done(out / "data"):
        pyrawan("toy", "make-dataset", str(out / "data"), "--n", "256", "--seed", "0", "--frames", "17",
                "--height", "64", "--width", "64", log=log)
    if not done(out / "calibration"):
        pyrawan("calibrate", str(out / "data"), "-r", "toy-finetune", *common, "calibrate.plots=false",
                "-o", str(out / "calibration"), log=log)
    if not done(out / "pyramid"):
        pyrawan("convert", "toy", "--calibration", str(out / "calibration"), "-o", str(out / "pyramid"), log=log)
    if not done(out / "finetuned"):
        pyrawan("finetune", "toy-finetune", f"base={out / 'pyramid'}", *common, f"train.steps={finetune_steps}",
                "train.validation.every=0", "-o", str(out / "finetuned"), log=log)
    if not done(out / "ot-teacher"):
        pyrawan("finetune", "toy-ot-teacher", *common, "-o", str(out / "ot-teacher"), log=log)
    models = {"toy": Path("toy"), "finetuned": out / "finetuned"}
    runs = {"dmd-ot": ["toy-dmd-ot", f"base={out / 'finetuned'}", f"distill.teacher={out / 'ot-teacher'}"],
            "dmd-pt": ["toy-dmd-pt", f"base={out / 'finetuned'}"],
            "dmd-ptstar": ["toy-dmd-ptstar", f"base={out / 'finetuned'}"],
            "adv-od": ["toy-adv-od", f"base={out / 'finetuned'}", f"distill.teacher={out / 'ot-teacher'}"],
            "adv-pd": ["toy-adv-pd", f"base={out / 'finetuned'}"],
            "dmd-baseline2": ["toy-dmd-baseline", "distill.schedule=2"],
            "dmd-baseline1": ["toy-dmd-baseline", "distill.schedule=1", "distill.levels=[[1.0]]"]}
    for key, args in runs.items():
        if not done(out / key):
            pyrawan("distill", *args, *common, f"train.steps={iterations}", "-o", str(out / key), log=log)
        models[key] = out / key
    bounds = f"pyramid.boundaries={json.loads((out / 'pyramid' / 'pyramid.json').read_text())['boundaries']}"
    if not done(out / "ppf"):
        pyrawan("convert", "toy", "--ppf", bounds, "-o", str(out / "ppf"), log=log)
    if not done(out / "ppf-finetuned"):
        pyrawan("finetune", "toy-ppf-finetune", f"base={out / 'ppf'}", bounds, *common, f"train.steps={finetune_steps}",
                "train.validation.every=0", "-o", str(out / "ppf-finetuned"), log=log)
    if not done(out / "ppf-dmd"):
        pyrawan("distill", "toy-ppf-dmd", f"base={out / 'ppf'}", bounds, *common, f"train.steps={iterations}",
                "-o", str(out / "ppf-dmd"), log=log)
    if not done(out / "ppf-ft-dmd"):
        pyrawan("distill", "toy-ppf-dmd", f"base={out / 'ppf-finetuned'}", bounds, *common, f"train.steps={iterations}",
                "-o", str(out / "ppf-ft-dmd"), log=log)
    models.update({key: out / key for key in ("ppf", "ppf-finetuned", "ppf-dmd", "ppf-ft-dmd")})
    return models


def prompts(n: int, seed_set: int) -> list[str]:
    import numpy as np

    from pyrawan.toy.world import caption, sample_scene

    rng = np.random.default_rng(20_000 + seed_set)
    return [caption(sample_scene(rng)) for _ in range(n)]


def score_rows(out: Path, models: dict[str, Path], seed_sets: int, n: int, log: Path) -> list[dict]:
    """Phase 4: sample and score every row on every seed set."""
    from pyrawan.eval.flops import flops_report
    from pyrawan.eval.stats import mean_ci
    from pyrawan.toy.bench import SCORES, intervals

    def per_forward(ppf: bool) -> dict[str, float]:
        flops = flops_report("toy", (5, 8, 8), 3, False, ["0-0-50", "20-20-10", "2-2-1", "0-0-2", "0-0-1"], False,
                             "analytic", 16, ppf=ppf)
        return {s["schedule"]: s["total_tflops"] / sum(map(int, s["schedule"].split("-"))) for s in flops["schedules"]}

    costs = {False: per_forward(False), True: per_forward(True)}
    rows = []
    for name, key, schedule, _ in ROWS:
        reports, seconds = [], 0.0
        for seed_set in range(seed_sets):
            folder, bench = out / f"samples-{key}-{seed_set}", out / f"bench-{key}-{seed_set}"
            if not done(folder):
                prompt_file = out / f"prompts-{seed_set}.txt"
                prompt_file.write_text("\n".join(prompts(n, seed_set)) + "\n")
                pyrawan("sample", "--model", str(models[key]), "--prompts", str(prompt_file), "--schedule", schedule,
                        "--seed", str(1000 * seed_set), "-o", str(folder), log=log)
            if not done(bench):
                pyrawan("toy", "bench", str(folder), "--reference", str(out / "data"), "-o", str(bench), log=log)
            reports.append(json.loads((bench / "toybench.json").read_text()))
            seconds += json.loads((folder / "manifest.json").read_text())["metrics"]["seconds"]
        manifest = json.loads((out / f"samples-{key}-0" / "manifest.json").read_text())
        cfg = manifest["metrics"]["forwards_per_video"] > manifest["metrics"]["nfe_per_video"]
        steps = [int(s) for s in schedule.split("-")]
        three = "-".join(map(str, ([0] * (3 - len(steps)) + steps)))
        table = costs[key.startswith("ppf")]
        tflops = table[three] * sum(steps) * (2 if cfg else 1) if three in table else None
        per_video = [v for r in reports for v in r["per_video"]]
        ci = intervals(per_video)
        fds = [r["fd"] for r in reports if r.get("fd") is not None]
        rows.append({"row": name, "model": str(models[key]), "schedule": schedule, "cfg": cfg, "tflops": tflops,
                     "overall": [v["overall"] for v in per_video],
                     "seconds_per_video": seconds / len(per_video), "videos": len(per_video),
                     "intervals": ci, "scores": {k: ci[k]["mean"] for k in ("overall", *SCORES)},
                     "fd": mean_ci(fds, method="t") if len(fds) > 1 else (fds[0] if fds else None, None, None)})
    base = rows[0]
    wan_dmd_2 = next(r for r in rows if r["model"].endswith("dmd-baseline2"))
    for r in rows:
        r["flops_ratio"] = None if r["tflops"] is None else r["tflops"] / base["tflops"]
        r["time_ratio"] = r["seconds_per_video"] / base["seconds_per_video"]
        r["paired_vs_teacher"] = paired_difference(r, base)
        r["paired_vs_wan_dmd_2"] = paired_difference(r, wan_dmd_2)
    return rows


def paired_difference(row: dict, base: dict) -> tuple[float, float, float]:
    """Mean [95 % bootstrap interval] of the per-video overall difference ``row - base``: every row samples the
    same (prompt, seed) pairs in the same order, so the videos pair up."""
    from pyrawan.eval.stats import mean_ci

    return mean_ci([a - b for a, b in zip(row["overall"], base["overall"], strict=True)])


def signed_ci(entry: tuple[float, float, float]) -> str:
    """``+mean [+low, +high]`` of a paired difference."""
    return f"{entry[0]:+.3f} [{entry[1]:+.3f}, {entry[2]:+.3f}]"


PAIRS = [  # (row, against): the paper's claims, as paired per-video differences of overall
    ("DMD-OT 2-2-1", "DMD-PT 2-2-1"), ("DMD-PT* 2-2-1", "DMD-PT 2-2-1"), ("DMD-OT 2-2-1", "Adv-OD 2-2-1"),
    ("DMD-PT* 2-2-1", "Adv-PD 2-2-1"), ("DMD-OT 2-2-1", "finetuned pyramid 20-20-10, CFG 3"),
    ("PPF finetuned 20-20-10, CFG 3", "finetuned pyramid 20-20-10, CFG 3"),
    ("PPF-DMD 2-2-1 (from the PPF finetune)", "PPF finetuned 20-20-10, CFG 3"),
]


def pairs_markdown(rows: list[dict]) -> str:
    """The PAIRS table: mean [95 % bootstrap interval] of the per-video overall difference row - against."""
    by_name = {r["row"]: r for r in rows}
    lines = ["| row | against | Δ overall, paired |", "|---|---|---|"]
    for name, against in PAIRS:
        if name in by_name and against in by_name:
            lines.append(f"| {name} | {against} | {signed_ci(paired_difference(by_name[name], by_name[against]))} |")
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict]) -> str:
    def ci(entry: dict) -> str:
        return f"{entry['mean']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"

    def fd(entry: tuple) -> str:
        return "" if entry[0] is None else f"{entry[0]:.0f}" + ("" if entry[1] is None else f" [{entry[1]:.0f}, {entry[2]:.0f}]")

    keys = ("detection", "colour", "shape", "size", "direction", "speed", "smoothness")
    head = ("| row | × FLOPs | × time | ToyBench [95% CI] | " + " | ".join(keys) + " | FD (mean over sets) "
            "[95% t] | Δ overall vs teacher, paired | Δ overall vs 0-0-2, paired |\n|"
            + "---|" * (len(keys) + 7) + "\n")
    lines = [f"| {r['row']} | {r['flops_ratio']:.3f} | {r['time_ratio']:.2f} | {ci(r['intervals']['overall'])} | "
             + " | ".join(ci(r["intervals"][k]) for k in keys)
             + f" | {fd(r['fd'])} | {signed_ci(r['paired_vs_teacher'])} | "
             f"{signed_ci(r['paired_vs_wan_dmd_2'])} |" for r in rows]
    return head + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/toy-distill"))
    ap.add_argument("--iterations", type=int, default=600, help="Distillation iterations of every distilled row.")
    ap.add_argument("--finetune-steps", type=int, default=400, help="Steps of the pyramid's and the PPF model's finetune.")
    ap.add_argument("--seed-sets", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=32)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "log.txt"
    models = build(args.out, args.iterations, args.finetune_steps, log)
    rows = score_rows(args.out, models, args.seed_sets, args.prompts, log)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    text = markdown(rows) + "\n" + pairs_markdown(rows)
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
