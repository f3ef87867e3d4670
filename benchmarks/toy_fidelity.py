"""The fidelity comparisons of docs/results.md in the toy world: the DMD gradient's form, where its levels are
drawn, and the form of L_dist, each row paired video by video with the others.

    python benchmarks/toy_fidelity.py [--out runs/fidelity] [--iterations 600] [--finetune-steps 1600]
        [--align-steps 400] [--seed-sets 3] [--prompts 32] [--summary docs/data/toy-fidelity.json]

Every phase is a `pyrawan` command, skipped when its artifact exists (an interrupted run continues):

1. the base of benchmarks/toy_distill.py: a toy dataset (256 videos) -> calibrate -> convert -> finetune the
   pyramid (--finetune-steps) -> the DMD-OT teacher;
2. DMD at 2-2-1 from the finetuned pyramid (--iterations each): OT, PT and PT* in the x0 form (DMD2's), PT in
   the eps form (the score form; for OT and PT* the two forms are one gradient, tests/test_dmd_forms.py), and
   OT and PT* with the levels drawn over the whole process (`distill.score_span=global`);
3. L_dist: the converted pyramid finetuned --align-steps without alignment, with the same-input form and with
   the full-resolution form (weight 1 each), sampled at 20-20-10 with CFG 3;
4. every row sampled on the same seed sets (3 x 32 prompts drawn from the toy world; the same (prompt, seed)
   pairs in every row) and scored with ToyBench against the dataset.

Writes OUT/fidelity.json and OUT/fidelity.md; with --summary the docs' two tables (NAME.json, NAME-paired.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from results_summary import ci as interval, column, paired, table, write_summary
from toy_distill import build_base, done, paired_difference, pyrawan, score_row, signed_ci

DISTILLED = {  # key: (row, recipe, overrides after base=finetuned)
    "ot": ("DMD-OT", "toy-dmd-ot", ["distill.teacher={teacher}"]),
    "pt": ("DMD-PT, x0 form", "toy-dmd-pt", []),
    "pt-eps": ("DMD-PT, eps form", "toy-dmd-pt", ["distill.dmd_form=eps"]),
    "ptstar": ("DMD-PT*", "toy-dmd-ptstar", []),
    "ot-global": ("DMD-OT, global levels", "toy-dmd-ot", ["distill.teacher={teacher}", "distill.score_span=global"]),
    "ptstar-global": ("DMD-PT*, global levels", "toy-dmd-ptstar", ["distill.score_span=global"]),
}
ALIGNED = {  # key: (row, overrides of the toy-finetune recipe)
    "align-none": ("finetune without L_dist", ["train.align_weight=0"]),
    "align-same": ("L_dist same-input, weight 1", ["train.align_weight=1", "train.align_form=same-input"]),
    "align-full": ("L_dist full-resolution, weight 1", ["train.align_weight=1", "train.align_form=full-resolution"]),
}
PAIRS = [  # (row, against, the question)
    ("DMD-PT, x0 form", "DMD-PT*", "PT* vs PT (x0 form)"),
    ("DMD-PT, eps form", "DMD-PT*", "PT* vs PT (eps form)"),
    ("DMD-PT, eps form", "DMD-PT, x0 form", "the form, under PT"),
    ("DMD-OT", "DMD-PT*", "OT vs PT*"),
    ("DMD-OT", "DMD-PT, x0 form", "OT vs PT (x0)"),
    ("DMD-OT", "DMD-PT, eps form", "OT vs PT (eps)"),
    ("DMD-OT, global levels", "DMD-OT", "global vs stage levels, OT"),
    ("DMD-PT*, global levels", "DMD-PT*", "global vs stage levels, PT*"),
    ("L_dist same-input, weight 1", "finetune without L_dist", "L_dist (same-input) vs none"),
    ("L_dist full-resolution, weight 1", "finetune without L_dist", "L_dist (full-resolution) vs none"),
    ("L_dist full-resolution, weight 1", "L_dist same-input, weight 1", "the L_dist form"),
]
SCORE_KEYS = ("detection", "colour", "shape", "size", "direction", "speed", "smoothness", "background",
              "extra_objects")


def build(out: Path, iterations: int, finetune_steps: int, align_steps: int, log: Path,
          parts: tuple[str, ...] = ("distill", "align")) -> dict[str, tuple]:
    """Phases 1-3 (phase 2 and 3 as ``parts`` asks); ``{key: (row name, model folder, schedule)}`` in table order."""
    common = build_base(out, finetune_steps, log)
    teacher = out / "ot-teacher"
    rows = {}
    if "distill" in parts:                       # the DMD students' starting point
        rows["finetuned"] = (f"finetuned pyramid ({finetune_steps} steps) 20-20-10, CFG 3", out / "finetuned",
                             "20-20-10")
    for key, (name, recipe, overrides) in DISTILLED.items():
        if "distill" not in parts:
            break
        if not done(out / key):
            pyrawan("distill", recipe, f"base={out / 'finetuned'}", *[o.format(teacher=teacher) for o in overrides],
                    *common, f"train.steps={iterations}", "-o", str(out / key), log=log)
        rows[key] = (f"{name} 2-2-1", out / key, "2-2-1")
    for key, (name, overrides) in ALIGNED.items():
        if "align" not in parts:
            break
        if not done(out / key):
            pyrawan("finetune", "toy-finetune", f"base={out / 'pyramid'}", *overrides, *common,
                    f"train.steps={align_steps}", "train.validation.every=0", "-o", str(out / key), log=log)
        rows[key] = (f"{name} ({align_steps} steps) 20-20-10, CFG 3", out / key, "20-20-10")
    return rows


def row_named(rows: list[dict], prefix: str) -> dict | None:
    return next((r for r in rows if r["row"].startswith(prefix + " ")), None)


def deltas(rows: list[dict]) -> list[tuple[str, str, str, tuple]]:
    """``(question, row, against, paired Δ overall)`` of every PAIRS entry whose rows exist."""
    found = []
    for name, against, question in PAIRS:
        a, b = row_named(rows, name), row_named(rows, against)
        if a and b:
            found.append((question, a["row"], b["row"], paired_difference(a, b)))
    return found


def verdict(delta: tuple) -> str:
    """``better``/``worse`` where the paired interval excludes 0, else ``not separable``."""
    mean, low, high = delta
    return "better" if low > 0 else "worse" if high < 0 else "not separable"


def markdown(rows: list[dict]) -> str:
    def ci(entry: dict) -> str:
        return "n/a" if entry.get("mean") is None else f"{entry['mean']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"

    keys = [k for k in SCORE_KEYS if k in rows[0]["intervals"]]
    lines = ["| row | ToyBench overall | " + " | ".join(keys) + " | FD |", "|---" * (len(keys) + 3) + "|"]
    for r in rows:
        fd = "" if r["fd"][0] is None else f"{r['fd'][0]:.0f}"
        lines.append(f"| {r['row']} | {ci(r['intervals']['overall'])} | "
                     + " | ".join(ci(r["intervals"][k]) for k in keys) + f" | {fd} |")
    lines += ["", "| question | row | against | Δ overall, paired | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {q} | {a} | {b} | {signed_ci(d)} | {verdict(d)} |" for q, a, b, d in deltas(rows)]
    return "\n".join(lines) + "\n"


def summaries(rows: list[dict], source: str) -> tuple[dict, dict]:
    """The docs' two tables: every row's scores, and the paired differences with their verdicts."""
    keys = [k for k in SCORE_KEYS if k in rows[0]["intervals"]]
    columns = [column("row"), column("ToyBench overall", ".3f"), *[column(k, ".2f") for k in keys],
               column("FD [95 % t over the 3 sets]", ".0f")]
    cells = [[r["row"], interval(r["intervals"]["overall"]), *[interval(r["intervals"][k]) for k in keys],
              None if r["fd"][0] is None else (r["fd"][0] if r["fd"][1] is None else list(r["fd"]))] for r in rows]
    pairs = [(f"{q}: {a}", b, d) for q, a, b, d in deltas(rows)]
    return table(source, columns, cells), paired(source, pairs, header=("question: row", "against", "Δ overall, paired"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/fidelity"))
    ap.add_argument("--iterations", type=int, default=600, help="Distillation iterations of every DMD row.")
    ap.add_argument("--finetune-steps", type=int, default=1600, help="Steps of the DMD students' pyramid finetune.")
    ap.add_argument("--align-steps", type=int, default=400, help="Steps of each L_dist finetune (none / same / full).")
    ap.add_argument("--seed-sets", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--only", nargs="*", help="Score only these row keys (e.g. ot pt pt-eps); default: all.")
    ap.add_argument("--part", choices=("distill", "align", "all"), default="all",
                    help="Build and score only the DMD rows or only the L_dist rows (two processes can share the work).")
    ap.add_argument("--summary", type=Path, help="Also write docs/data summaries (this file and NAME-paired.json).")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "log.txt"
    parts = ("distill", "align") if args.part == "all" else (args.part,)
    spec = build(args.out, args.iterations, args.finetune_steps, args.align_steps, log, parts)
    keys = [k for k in spec if not args.only or k in args.only]
    rows = []
    for key in keys:
        name, model, schedule = spec[key]
        rows.append(score_row(args.out, name, key, model, schedule, args.seed_sets, args.prompts, log))
    name = "fidelity" if args.part == "all" else f"fidelity-{args.part}"
    (args.out / f"{name}.json").write_text(json.dumps(rows, indent=1))
    text = markdown(rows)
    (args.out / f"{name}.md").write_text(text)
    if args.summary:
        main_table, pairs_table = summaries(rows, "python benchmarks/toy_fidelity.py " + " ".join(sys.argv[1:]))
        write_summary(args.summary, main_table)
        write_summary(args.summary.with_name(args.summary.stem + "-paired.json"), pairs_table)
    print(text)


if __name__ == "__main__":
    main()
