"""``pyrawan demo``: the main job on the toy world, end to end, with a results table.

    toy dataset → calibrate (latent cache + boundaries) → convert (toy teacher → 3-stage pyramid)
    → finetune (short, pyramidal flow matching) → sample (teacher at 50 steps, the unfinetuned
    pyramid and the finetuned one at 20-20-10 and a cheaper schedule) → ToyBench + FLOPs

Every row is sampled on several seed sets (each: its own prompts and noise seeds) and reported as
the mean over all its videos with a 95 % bootstrap interval (``pyrawan.eval.stats.mean_ci``); a row
is called better or worse than the teacher only when the two intervals do not overlap.
Everything lands under OUT (``runs/demo`` by default): ``data/``, ``cache/``, ``calibration/``,
``pyramid/``, ``finetuned/``, ``samples-<row>-<set>/``, ``bench-<row>-<set>/``, ``results.json``,
``quality_vs_flops.png`` (the table as a figure) and ``frames.png`` (one prompt, every row).
``quick`` shrinks every size (dataset, steps, prompts) so CI runs the whole path in about a minute.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pyrawan.commands.common import console
from pyrawan.manifest import fresh_folder

# What the demo writes at the top of its folder (a marked folder holding anything else is not replaced).
DEMO_OUTPUTS = ("data", "cache", "calibration", "pyramid", "finetuned", "finetuned.run", "samples-*", "bench-*",
                "results.json", "*.png")

DEMO_PROMPTS = (
    "a large red square slowly moving left on a plain black background",
    "a large yellow circle quickly moving down on a plain gray background",
    "a medium cyan triangle slowly moving up-right on a white gradient background",
    "a large green square quickly moving right on a black gradient background",
    "a medium blue circle slowly moving up on a plain white background",
    "a large magenta triangle quickly moving down-left on a plain black background",
    "a medium red circle quickly moving up-left on a gray gradient background",
    "a large cyan square slowly moving down-right on a plain gray background",
    "a large blue square quickly moving up on a plain black background",
    "a medium yellow triangle slowly moving right on a plain white background",
    "a large green circle slowly moving down on a plain gray background",
    "a medium magenta square quickly moving left on a gray gradient background",
    "a large red triangle quickly moving down-right on a plain white background",
    "a small cyan circle slowly moving left on a plain black background",
    "a large yellow square quickly moving up-left on a black gradient background",
    "a medium blue circle quickly moving right on a white gradient background",
)


@dataclass
class DemoSizes:
    """How big each step of the demo is."""

    videos: int = 96          # toy dataset size (17x64x64)
    finetune_steps: int = 400
    batch_size: int = 24      # finetune samples per step (split over the 3 stages)
    prompts: int = 16         # prompts per seed set
    seed_sets: int = 3        # seed sets per row (prompts and noise seeds differ between sets)
    teacher_steps: int = 50   # the full-resolution baseline
    schedule: str = "20-20-10"
    cheap: str = "4-4-2"
    resizer: str = "haar"     # the pyramid's orthogonal transform (haar | dct | db4)
    stage_data: int = 2       # coarse training data: Definition 1 (downsample latents) or 2 (resize pixels)
    boundaries: str = "calibrated"   # stage boundaries: calibrated | uniform (1/3, 2/3) | pyramid-flow (0.586, 0.941)
    align_weight: float = 0.0        # finetuning's alignment loss to the frozen teacher (docs/finetune.md); 0 = off

    @classmethod
    def quick(cls) -> DemoSizes:
        """CI-sized: a few videos, a few steps, two prompts of one seed set, short schedules."""
        return cls(videos=8, finetune_steps=3, batch_size=6, prompts=2, seed_sets=1, teacher_steps=4,
                   schedule="2-2-1", cheap="1-1-1")

    def rows(self) -> list[tuple[str, str, str]]:
        """(row name, model key, schedule) of every sampled configuration."""
        return [("teacher", "teacher", str(self.teacher_steps)), ("pyramid, not finetuned", "pyramid", self.schedule),
                ("pyramid, finetuned", "finetuned", self.schedule), ("pyramid, finetuned (cheap)", "finetuned", self.cheap)]

    def phases(self) -> int:
        """Number of phases the progress display counts: 4 to build, one per row and seed set."""
        return 4 + len(self.rows()) * self.seed_sets


BOUNDARY_CHOICES = ("calibrated", "uniform", "pyramid-flow")


def boundary_overrides(choice: str) -> list[str]:
    """Recipe overrides of ``convert`` for a BOUNDARY_CHOICES entry (calibrated: none, the calibration is used)."""
    from pyrawan.pyramid.schedule import default_boundaries, pyramid_flow_boundaries

    values = {"calibrated": None, "uniform": default_boundaries(3), "pyramid-flow": pyramid_flow_boundaries(3)}[choice]
    return [] if values is None else [f"pyramid.boundaries=[{', '.join(str(v) for v in values)}]"]


def demo_prompts(n: int, seed_set: int) -> list[str]:
    """The ``n`` prompts of a seed set: set 0 starts with DEMO_PROMPTS, the rest are drawn from the world."""
    import numpy as np

    from pyrawan.toy.world import caption, sample_scene

    fixed = list(DEMO_PROMPTS[:n]) if seed_set == 0 else []
    rng = np.random.default_rng(10_000 + seed_set)
    return fixed + [caption(sample_scene(rng)) for _ in range(n - len(fixed))]


class Phases:
    """The demo's progress display: a numbered header before each phase, a timing line after it."""

    def __init__(self, total: int):
        self.total, self.done, self.t0 = total, 0, time.time()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """``demo [k/N] name`` before the phase (its own progress bar follows), its duration after."""
        self.done += 1
        started = time.time()
        console.rule(f"[bold]demo [{self.done}/{self.total}][/] {name}", align="left")
        yield
        console.print(f"[dim]  done in {time.time() - started:.0f} s ({time.time() - self.t0:.0f} s so far)[/]")


def build_models(out: Path, sizes: DemoSizes, seed: int, phases: Phases) -> dict[str, str]:
    """Dataset, calibration, conversion and finetuning; returns ``{model key: model spec}``."""
    from pyrawan.commands import calibrate, convert, finetune
    from pyrawan.commands.toy import run_make_dataset
    from pyrawan.recipe import load_recipe

    with phases.phase(f"dataset: {sizes.videos} toy videos (17x64x64)"):
        run_make_dataset(out / "data", sizes.videos, seed, "metadata.csv", 17, 64, 64, 16)
    holdout = max(1, min(8, sizes.videos // 4))
    pyramid = [f"pyramid.resizer={sizes.resizer}", f"pyramid.stage_data={sizes.stage_data}"]
    common = [f"data.cache={out / 'cache'}", f"seed={seed}", *pyramid]
    with phases.phase("calibrate: latent cache + stage boundaries"):
        cal = calibrate.load_calibrate_recipe(out / "data", "toy-finetune", common + ["calibrate.plots=false"])
        calibrate.run(cal, out / "calibration", progress=True)
    with phases.phase(f"convert: toy teacher -> 3-stage pyramid ({sizes.boundaries} boundaries)"):
        conv = load_recipe("toy", [f"sampling.schedule={sizes.schedule}", *pyramid,
                                   *boundary_overrides(sizes.boundaries)], kind="convert")
        calibration = out / "calibration" if sizes.boundaries == "calibrated" else None
        convert.run(conv, out / "pyramid", calibration=calibration)
    with phases.phase(f"finetune: {sizes.finetune_steps} steps of pyramidal flow matching"):
        ft = load_recipe("toy-finetune", common + [
            f"base={out / 'pyramid'}", f"train.steps={sizes.finetune_steps}", f"train.batch_size={sizes.batch_size}",
            f"train.validation.holdout={holdout}", f"train.validation.batch_size={sizes.batch_size}",
            f"train.optimizer.warmup_steps={min(20, sizes.finetune_steps)}", f"sampling.schedule={sizes.schedule}",
            f"train.align_weight={sizes.align_weight}"],
            kind="finetune")
        finetune.run(ft, out / "finetuned", show_progress=True)
    return {"teacher": "toy", "pyramid": str(out / "pyramid"), "finetuned": str(out / "finetuned")}


def row_summary(reports: list[dict]) -> dict:
    """Mean scores, 95 % intervals over all videos of a row's seed sets, and the FD per set."""
    from pyrawan.eval.stats import mean_ci
    from pyrawan.toy.bench import SCORES, intervals

    per_video = [v for r in reports for v in r["per_video"]]
    ci = intervals(per_video)
    fds = [r["fd"] for r in reports if r.get("fd") is not None]
    fd = mean_ci(fds, method="t") if fds else (None, None, None)
    return {"overall": ci["overall"]["mean"], **{k: ci[k]["mean"] for k in SCORES}, "intervals": ci,
            "videos": len(per_video), "fd": fd[0], "fd_interval": list(fd[1:]), "fd_sets": fds}


MIN_VERDICT_VIDEOS = 10   # a bootstrap interval of fewer videos is too narrow to call a difference


def verdict(row: dict, teacher: dict) -> str:
    """``better``/``worse`` than the teacher only when the overall intervals are disjoint, else ``≈``.

    ``—`` for the teacher itself, ``n/a`` when either row has fewer than MIN_VERDICT_VIDEOS videos.
    """
    from pyrawan.eval.stats import differs

    a, b = row["intervals"]["overall"], teacher["intervals"]["overall"]
    if row is teacher:
        return "—"
    if min(a["n"], b["n"]) < MIN_VERDICT_VIDEOS:
        return "n/a"
    if not differs((a["low"], a["high"]), (b["low"], b["high"])):
        return "≈"
    return "better" if a["mean"] > b["mean"] else "worse"


def sample_and_score(out: Path, models: dict[str, str], sizes: DemoSizes, seed: int, phases: Phases) -> list[dict]:
    """Sample every row's seed sets, score them with ToyBench (FD against the dataset) and count FLOPs."""
    from pyrawan.commands.sample import SampleSettings, run
    from pyrawan.commands.toy import run_bench
    from pyrawan.eval.flops import flops_report

    schedules = [sched for _, _, sched in sizes.rows()]
    flops = flops_report("toy", (5, 8, 8), 3, False, [f"0-0-{sizes.teacher_steps}", *schedules[1:]], True, "analytic", 16)
    tflops = {s["schedule"]: s["total_tflops"] for s in flops["schedules"]}
    base = tflops[f"0-0-{sizes.teacher_steps}"]
    rows = []
    for index, (name, key, schedule) in enumerate(sizes.rows()):
        reports = []
        for seed_set in range(sizes.seed_sets):
            folder = out / f"samples-{index}-{seed_set}"
            with phases.phase(f"sample + toybench: {name} ({schedule}), seed set {seed_set + 1}/{sizes.seed_sets}"):
                run(SampleSettings(prompts=demo_prompts(sizes.prompts, seed_set), model=models[key], schedule=schedule,
                                   seed=seed + 1000 * seed_set, progress=True, overwrite=True,
                                   command=["pyrawan", "demo"]), folder)
                reports.append(run_bench(folder, out / "data", out / f"bench-{index}-{seed_set}", overwrite=True,
                                         quiet=True))
        total = tflops[f"0-0-{schedule}" if key == "teacher" else schedule]
        rows.append({"row": name, "model": models[key], "schedule": schedule, "tflops": total,
                     "flops_ratio": total / base, **row_summary(reports)})
    for row in rows:
        row["vs_teacher"] = verdict(row, rows[0])
    return rows


def _ci(entry: dict) -> str:
    """``mean [low, high]`` of an interval entry."""
    return f"{entry['mean']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def results_table(rows: list[dict], title: str = "pyrawan demo: toy world, 17×64×64") -> Table:
    """The demo's results: one row per model and schedule, ToyBench with its 95 % interval."""
    table = Table("model", "schedule", "GFLOPs", "× teacher", "ToyBench [95% CI]", "vs teacher", "detect", "colour",
                  "shape", "direction", "speed", "sharp", "FD", title=title,
                  caption=("Mean over every video of the row's seed sets [95% bootstrap interval]; better/worse only where the "
                           f"intervals are disjoint (n/a: fewer than {MIN_VERDICT_VIDEOS} videos)."))
    for r in rows:
        table.add_row(r["row"], r["schedule"], f"{1000 * r['tflops']:.2f}", f"{r['flops_ratio']:.2f}",
                      _ci(r["intervals"]["overall"]), r["vs_teacher"],
                      *(f"{r[k]:.2f}" for k in ("detection", "colour", "shape", "direction", "speed", "sharpness")),
                      "n/a" if r["fd"] is None else f"{r['fd']:.1f}")
    return table


def write_figures(out: Path, rows: list[dict], sizes: DemoSizes, title: str) -> list[Path]:
    """``quality_vs_flops.png`` (the table as a figure) and ``frames.png`` (prompt 0 of seed set 0, every row)."""
    from pyrawan.data.video import read_video
    from pyrawan.toy.figures import frame_strip, quality_vs_flops

    videos, prompt = [], None
    for index in range(len(rows)):
        record = json.loads((out / f"samples-{index}-0" / "samples.jsonl").read_text().splitlines()[0])
        videos.append(read_video(out / f"samples-{index}-0" / record["video"])[0])
        prompt = record["prompt"]
    labels = [f"{r['row']}\n{r['schedule']}, ToyBench {r['overall']:.2f}" for r in rows]
    return [quality_vs_flops(rows, out / "quality_vs_flops.png", title),
            frame_strip(videos, labels, out / "frames.png", prompt or "")]


def run(out: Path, quick: bool = False, seed: int = 0, overwrite: bool = True, **changes) -> list[dict]:
    """Run the whole demo into ``out`` and print the results table; returns its rows.

    ``changes`` override ``DemoSizes`` fields (e.g. ``resizer="dct"``, ``stage_data=1``,
    ``finetune_steps=800``, ``seed_sets=3``, ``prompts=32``, ``boundaries="pyramid-flow"``,
    ``align_weight=1.0``); ``None`` values are ignored.
    """
    fresh_folder(out, "demo", overwrite, own=DEMO_OUTPUTS)  # only a folder an earlier demo marked, holding only its files
    sizes = DemoSizes.quick() if quick else DemoSizes()
    for key, value in changes.items():
        if value is not None:
            setattr(sizes, key, value)
    phases = Phases(sizes.phases())
    models = build_models(out, sizes, seed, phases)
    rows = sample_and_score(out, models, sizes, seed, phases)
    elapsed = time.time() - phases.t0
    title = (f"pyrawan demo: toy world, 17×64×64, {sizes.resizer}, Definition {sizes.stage_data}, "
             f"{sizes.boundaries} boundaries" + (f", alignment {sizes.align_weight:g}" if sizes.align_weight else ""))
    figures = write_figures(out, rows, sizes, title)
    (out / "results.json").write_text(json.dumps({"sizes": sizes.__dict__, "seconds": elapsed, "rows": rows,
                                                  "figures": [f.name for f in figures]}, indent=1) + "\n")
    Console(width=170).print(results_table(rows, title))
    console.print(f"demo: done in {elapsed:.0f} s; everything is in [bold]{out}[/] (results.json, "
                  f"{', '.join(f.name for f in figures)})")
    return rows
