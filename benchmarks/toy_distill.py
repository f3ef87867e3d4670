"""The distillation rows of docs/results.md, measured in the toy world on the CPU (issue: DMD few-step models).

    python benchmarks/toy_distill.py [--out runs/toy-distill] [--iterations 600] [--finetune-steps 400] [--seed-sets 3] [--prompts 32]
        [--extra-row dmd-ot:1800] [--summary docs/data/toy-distill.json]

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
``--extra-row KEY:ITERATIONS`` adds a row: the distilled model KEY (e.g. ``dmd-ot``) run again with that
many iterations (``OUT/KEY-ITERATIONS``), sampled and scored on the same videos, with its paired
difference to the KEY row in the pairs table (docs/results.md, "Does a longer distillation help?").
``--summary docs/data/toy-distill.json`` also writes the two tables' summaries for
``scripts/render_results.py`` (the pairs table beside it, ``toy-distill-paired.json``).
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
from results_summary import ci as interval, column, paired, table, write_summary  # noqa: E402

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


def build_base(out: Path, finetune_steps: int, log: Path) -> list[str]:
    """Phases 1-2 (dataset, calibration, pyramid, its finetune, the DMD-OT teacher); the overrides that point a
    recipe at the latent cache."""
    common = [f"data.cache={out / 'cache'}"]
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
    return common


def build(out: Path, iterations: int, finetune_steps: int, log: Path,
          extra: list[tuple[str, int]] = ()) -> dict[str, Path]:
    """Phases 1-3; returns the model folder of every row key."""
    common = build_base(out, finetune_steps, log)
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
    for key, steps in extra:                      # --extra-row: a distilled model again with other iterations
        if not done(out / f"{key}-{steps}"):
            pyrawan("distill", *runs[key], *common, f"train.steps={steps}", "-o", str(out / f"{key}-{steps}"), log=log)
        models[f"{key}-{steps}"] = out / f"{key}-{steps}"
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


def extra_rows(extra: list[tuple[str, int]]) -> tuple[list[tuple], list[tuple[str, str]]]:
    """ROWS entries and PAIRS of the ``--extra-row`` models: ``KEY-ITERATIONS``, paired with KEY's row."""
    by_key = {key: (name, schedule, guidance) for name, key, schedule, guidance in ROWS}
    rows, pairs = [], []
    for key, steps in extra:
        name, schedule, guidance = by_key[key]
        rows.append((f"{name}, {steps:,} iterations", f"{key}-{steps}", schedule, guidance))
        pairs.append((rows[-1][0], name))
    return rows, pairs


def parse_extra(text: str) -> tuple[str, int]:
    """``KEY:ITERATIONS`` of ``--extra-row`` (KEY a distilled row of ROWS)."""
    key, _, steps = text.partition(":")
    distilled = [k for _, k, _, _ in ROWS if k not in ("toy", "finetuned", "ppf", "ppf-finetuned")]
    if key not in distilled or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY:ITERATIONS with KEY one of {', '.join(distilled)}")
    return key, int(steps)


def score_row(out: Path, name: str, key: str, model: Path, schedule: str, seed_sets: int, n: int, log: Path) -> dict:
    """Sample ``model`` on every seed set (prompts drawn from the toy world, seeds 1000 k) and score it with
    ToyBench against the dataset: the row's per-video overall scores, intervals and FD (mean over the sets)."""
    from pyrawan.eval.stats import mean_ci
    from pyrawan.toy.bench import SCORES, intervals

    reports, seconds = [], 0.0
    for seed_set in range(seed_sets):
        folder, bench = out / f"samples-{key}-{seed_set}", out / f"bench-{key}-{seed_set}"
        if not done(folder):
            prompt_file = out / f"prompts-{seed_set}.txt"
            prompt_file.write_text("\n".join(prompts(n, seed_set)) + "\n")
            pyrawan("sample", "--model", str(model), "--prompts", str(prompt_file), "--schedule", schedule,
                    "--seed", str(1000 * seed_set), "-o", str(folder), log=log)
        if not done(bench):
            pyrawan("toy", "bench", str(folder), "--reference", str(out / "data"), "-o", str(bench), log=log)
        reports.append(json.loads((bench / "toybench.json").read_text()))
        seconds += json.loads((folder / "manifest.json").read_text())["metrics"]["seconds"]
    per_video = [v for r in reports for v in r["per_video"]]
    ci = intervals(per_video)
    fds = [r["fd"] for r in reports if r.get("fd") is not None]
    return {"row": name, "model": str(model), "schedule": schedule, "overall": [v["overall"] for v in per_video],
            "seconds_per_video": seconds / len(per_video), "videos": len(per_video),
            "intervals": ci, "scores": {k: ci[k]["mean"] for k in ("overall", *SCORES) if k in ci},
            "fd": mean_ci(fds, method="t") if len(fds) > 1 else (fds[0] if fds else None, None, None)}


def score_rows(out: Path, models: dict[str, Path], seed_sets: int, n: int, log: Path,
               spec: list[tuple] = ROWS) -> list[dict]:
    """Phase 4: sample and score every row on every seed set."""
    from pyrawan.eval.flops import flops_report

    def per_forward(ppf: bool) -> dict[str, float]:
        flops = flops_report("toy", (5, 8, 8), 3, False, ["0-0-50", "20-20-10", "2-2-1", "0-0-2", "0-0-1"], False,
                             "analytic", 16, ppf=ppf)
        return {s["schedule"]: s["total_tflops"] / sum(map(int, s["schedule"].split("-"))) for s in flops["schedules"]}

    costs = {False: per_forward(False), True: per_forward(True)}
    rows = []
    for name, key, schedule, _ in spec:
        row = score_row(out, name, key, models[key], schedule, seed_sets, n, log)
        manifest = json.loads((out / f"samples-{key}-0" / "manifest.json").read_text())
        cfg = manifest["metrics"]["forwards_per_video"] > manifest["metrics"]["nfe_per_video"]
        steps = [int(s) for s in schedule.split("-")]
        three = "-".join(map(str, ([0] * (3 - len(steps)) + steps)))
        table = costs[key.startswith("ppf")]
        row["cfg"], row["tflops"] = cfg, table[three] * sum(steps) * (2 if cfg else 1) if three in table else None
        rows.append(row)
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


def pairs_markdown(rows: list[dict], pairs: list[tuple[str, str]] = PAIRS) -> str:
    """The PAIRS table: mean [95 % bootstrap interval] of the per-video overall difference row - against."""
    by_name = {r["row"]: r for r in rows}
    lines = ["| row | against | Δ overall, paired |", "|---|---|---|"]
    for name, against in pairs:
        if name in by_name and against in by_name:
            lines.append(f"| {name} | {against} | {signed_ci(paired_difference(by_name[name], by_name[against]))} |")
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict]) -> str:
    def ci(entry: dict) -> str:
        if entry["mean"] is None:       # a score no video was judged on (reports from before it existed)
            return "n/a"
        return f"{entry['mean']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"

    def fd(entry: tuple) -> str:
        return "" if entry[0] is None else f"{entry[0]:.0f}" + ("" if entry[1] is None else f" [{entry[1]:.0f}, {entry[2]:.0f}]")

    keys = ("detection", "colour", "shape", "size", "direction", "speed", "smoothness", "background", "extra_objects")
    head = ("| row | × FLOPs | × time | ToyBench [95% CI] | " + " | ".join(keys) + " | FD (mean over sets) "
            "[95% t] | Δ overall vs teacher, paired | Δ overall vs 0-0-2, paired |\n|"
            + "---|" * (len(keys) + 7) + "\n")
    lines = [f"| {r['row']} | {r['flops_ratio']:.3f} | {r['time_ratio']:.2f} | {ci(r['intervals']['overall'])} | "
             + " | ".join(ci(r["intervals"][k]) for k in keys)
             + f" | {fd(r['fd'])} | {signed_ci(r['paired_vs_teacher'])} | "
             f"{signed_ci(r['paired_vs_wan_dmd_2'])} |" for r in rows]
    return head + "\n".join(lines) + "\n"


SCORE_KEYS = ("detection", "colour", "shape", "size", "direction", "speed", "smoothness")


def summaries(rows: list[dict], pairs: list[tuple[str, str]], source: str) -> tuple[dict, dict]:
    """The summaries of docs/results.md's two distillation tables (``toy-distill``, ``toy-distill-paired``)."""
    def fd(entry) -> object:
        return None if entry[0] is None else (entry[0] if entry[1] is None else list(entry))

    columns = [column("row"), column("× FLOPs", ".3f"), column("ToyBench overall", ".3f"),
               *[column(k, ".2f") for k in SCORE_KEYS], column("FD [95 % t over the 3 sets]", ".0f"),
               column("Δ overall vs teacher, paired", "+.3f"), column("Δ overall vs 0-0-2, paired", "+.3f")]
    base, wan2 = rows[0]["row"], next(r["row"] for r in rows if r["model"].endswith("dmd-baseline2"))
    cells = [[r["row"], r["flops_ratio"], interval(r["intervals"]["overall"]),
              *[interval(r["intervals"][k]) for k in SCORE_KEYS], fd(r["fd"]),
              "—" if r["row"] == base else interval(r["paired_vs_teacher"]),
              "—" if r["row"] == wan2 else interval(r["paired_vs_wan_dmd_2"])] for r in rows]
    by_name = {r["row"]: r for r in rows}
    deltas = [(a, b, paired_difference(by_name[a], by_name[b])) for a, b in pairs if a in by_name and b in by_name]
    return table(source, columns, cells), paired(source, deltas)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/toy-distill"))
    ap.add_argument("--iterations", type=int, default=600, help="Distillation iterations of every distilled row.")
    ap.add_argument("--finetune-steps", type=int, default=400, help="Steps of the pyramid's and the PPF model's finetune.")
    ap.add_argument("--seed-sets", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--extra-row", type=parse_extra, action="append", default=[], metavar="KEY:ITERATIONS",
                    help="Also distill KEY (e.g. dmd-ot) with ITERATIONS iterations and score it as one more row.")
    ap.add_argument("--summary", type=Path, help="Also write the tables' summaries for docs/data (this file and "
                    "NAME-paired.json beside it; scripts/render_results.py renders them).")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "log.txt"
    models = build(args.out, args.iterations, args.finetune_steps, log, args.extra_row)
    more_rows, more_pairs = extra_rows(args.extra_row)
    rows = score_rows(args.out, models, args.seed_sets, args.prompts, log, ROWS + more_rows)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    text = markdown(rows) + "\n" + pairs_markdown(rows, PAIRS + more_pairs)
    if args.summary:
        main_table, pairs_table = summaries(rows, PAIRS + more_pairs, "python benchmarks/toy_distill.py " +
                                            " ".join(sys.argv[1:]))
        write_summary(args.summary, main_table)
        write_summary(args.summary.with_name(args.summary.stem + "-paired.json"), pairs_table)
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
