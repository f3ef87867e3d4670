"""``pyrawan demo``: the main job on the toy world, end to end, with a results table.

    toy dataset → calibrate (latent cache + boundaries) → convert (toy teacher → 3-stage pyramid)
    → finetune (short, pyramidal flow matching) → sample (teacher at 50 steps, the unfinetuned
    pyramid and the finetuned one at 20-20-10 and a cheaper schedule) → ToyBench + FLOPs

Everything lands under OUT (``runs/demo`` by default): ``data/``, ``cache/``, ``calibration/``,
``pyramid/``, ``finetuned/``, ``samples-<row>/``, ``bench-<row>/`` and ``results.json``.
``quick`` shrinks every size (dataset, steps, prompts) so CI runs the whole path in about a minute.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pyrawan.commands.common import console
from pyrawan.errors import InputError

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
    prompts: int = 16         # prompts sampled per row
    teacher_steps: int = 50   # the full-resolution baseline
    schedule: str = "20-20-10"
    cheap: str = "4-4-2"
    resizer: str = "haar"     # the pyramid's orthogonal transform (haar | dct | db4)
    stage_data: int = 2       # coarse training data: Definition 1 (downsample latents) or 2 (resize pixels)

    @classmethod
    def quick(cls) -> DemoSizes:
        """CI-sized: a few videos, a few steps, two prompts, short schedules."""
        return cls(videos=8, finetune_steps=3, batch_size=6, prompts=2, teacher_steps=4, schedule="2-2-1",
                   cheap="1-1-1")

    def rows(self) -> list[tuple[str, str, str]]:
        """(row name, model key, schedule) of every sampled configuration."""
        return [("teacher", "teacher", str(self.teacher_steps)), ("pyramid, not finetuned", "pyramid", self.schedule),
                ("pyramid, finetuned", "finetuned", self.schedule), ("pyramid, finetuned (cheap)", "finetuned", self.cheap)]


def _step(name: str, t0: float) -> None:
    console.print(f"[bold]demo:[/] {name} ({time.time() - t0:.0f} s so far)")


def build_models(out: Path, sizes: DemoSizes, seed: int, t0: float) -> dict[str, str]:
    """Dataset, calibration, conversion and finetuning; returns ``{model key: model spec}``."""
    from pyrawan.commands import calibrate, convert, finetune
    from pyrawan.recipe import load_recipe
    from pyrawan.toy.world import make_dataset

    make_dataset(out / "data", sizes.videos, seed=seed, frames=17, height=64, width=64)
    _step(f"dataset: {sizes.videos} toy videos", t0)
    holdout = max(1, min(8, sizes.videos // 4))
    pyramid = [f"pyramid.resizer={sizes.resizer}", f"pyramid.stage_data={sizes.stage_data}"]
    common = [f"data.cache={out / 'cache'}", f"seed={seed}", *pyramid]
    cal = calibrate.load_calibrate_recipe(out / "data", "toy-finetune", common + ["calibrate.plots=false"])
    calibrate.run(cal, out / "calibration", progress=False)
    _step("calibrate: latent cache + boundaries", t0)
    conv = load_recipe("toy", [f"sampling.schedule={sizes.schedule}", *pyramid], kind="convert")
    convert.run(conv, out / "pyramid", calibration=out / "calibration")
    _step("convert: toy teacher -> 3-stage pyramid", t0)
    ft = load_recipe("toy-finetune", common + [
        f"base={out / 'pyramid'}", f"train.steps={sizes.finetune_steps}", f"train.batch_size={sizes.batch_size}",
        f"train.validation.holdout={holdout}", f"train.validation.batch_size={sizes.batch_size}",
        f"train.optimizer.warmup_steps={min(20, sizes.finetune_steps)}", f"sampling.schedule={sizes.schedule}"],
        kind="finetune")
    finetune.run(ft, out / "finetuned", show_progress=False)
    _step(f"finetune: {sizes.finetune_steps} steps", t0)
    return {"teacher": "toy", "pyramid": str(out / "pyramid"), "finetuned": str(out / "finetuned")}


def sample_and_score(out: Path, models: dict[str, str], sizes: DemoSizes, seed: int, t0: float) -> list[dict]:
    """Sample every row's prompts, score them with ToyBench (FD against the dataset) and count FLOPs."""
    from pyrawan.commands.sample import SampleSettings, run
    from pyrawan.commands.toy import run_bench
    from pyrawan.eval.flops import flops_report

    prompts = list(DEMO_PROMPTS[:sizes.prompts])
    schedules = [sched for _, _, sched in sizes.rows()]
    flops = flops_report("toy", (5, 8, 8), 3, False, [f"0-0-{sizes.teacher_steps}", *schedules[1:]], True, "analytic", 16)
    tflops = {s["schedule"]: s["total_tflops"] for s in flops["schedules"]}
    base = tflops[f"0-0-{sizes.teacher_steps}"]
    rows = []
    for index, (name, key, schedule) in enumerate(sizes.rows()):
        folder = out / f"samples-{index}"
        run(SampleSettings(prompts=prompts, model=models[key], schedule=schedule, seed=seed, progress=False,
                           overwrite=True, command=["pyrawan", "demo"]), folder)
        bench = run_bench(folder, out / "data", out / f"bench-{index}", overwrite=True, quiet=True)
        total = tflops[f"0-0-{schedule}" if key == "teacher" else schedule]
        rows.append({"row": name, "model": models[key], "schedule": schedule, "tflops": total,
                     "flops_ratio": total / base, "overall": bench["overall"], "fd": bench["fd"], **bench["scores"]})
        _step(f"sample + toybench: {name} ({schedule})", t0)
    return rows


def results_table(rows: list[dict], title: str = "pyrawan demo: toy world, 17×64×64") -> Table:
    """The demo's results: one row per model and schedule."""
    table = Table("model", "schedule", "GFLOPs", "× teacher", "ToyBench", "detect", "colour", "shape", "direction",
                  "speed", "sharp", "FD", title=title)
    for r in rows:
        table.add_row(r["row"], r["schedule"], f"{1000 * r['tflops']:.2f}", f"{r['flops_ratio']:.2f}",
                      f"{r['overall']:.3f}", *(f"{r[k]:.2f}" for k in ("detection", "colour", "shape", "direction",
                                                                       "speed", "sharpness")), f"{r['fd']:.1f}")
    return table


def run(out: Path, quick: bool = False, seed: int = 0, overwrite: bool = True, **changes) -> list[dict]:
    """Run the whole demo into ``out`` and print the results table; returns its rows.

    ``changes`` override ``DemoSizes`` fields (e.g. ``resizer="dct"``, ``stage_data=1``,
    ``finetune_steps=800``); ``None`` values are ignored.
    """
    if out.exists():
        earlier = (out / "data").is_dir() or (out / "results.json").is_file() or not any(out.iterdir())
        if not (overwrite and earlier):
            raise InputError(f"demo: {out} exists and is not an earlier demo folder; give another -o folder "
                             "(the demo replaces its folder on every run).")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    sizes = DemoSizes.quick() if quick else DemoSizes()
    for key, value in changes.items():
        if value is not None:
            setattr(sizes, key, value)
    t0 = time.time()
    models = build_models(out, sizes, seed, t0)
    rows = sample_and_score(out, models, sizes, seed, t0)
    elapsed = time.time() - t0
    (out / "results.json").write_text(json.dumps({"sizes": sizes.__dict__, "seconds": elapsed, "rows": rows},
                                                 indent=1) + "\n")
    title = f"pyrawan demo: toy world, 17×64×64, {sizes.resizer}, Definition {sizes.stage_data}"
    Console(width=150).print(results_table(rows, title))
    console.print(f"demo: done in {elapsed:.0f} s; everything is in [bold]{out}[/] (results.json)")
    return rows
