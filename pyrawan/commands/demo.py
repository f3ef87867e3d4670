"""``pyrawan demo``: the main job on the toy world, end to end, with a results table.

    toy dataset → calibrate (latent cache + boundaries) → convert (toy teacher → 3-stage pyramid)
    → finetune (short, pyramidal flow matching) → eval quality per row (teacher at 50 steps, the
    unfinetuned pyramid and the finetuned one at 20-20-10 and a cheaper schedule: ToyBench, FD,
    FLOPs) → eval compare (the table, against the teacher)

The rows go through the code of ``pyrawan eval quality`` and ``pyrawan eval compare`` (one code
path): every row is one eval artifact of all its seed sets' videos (each set: its own prompts and
noise seeds, coupled noise), and the table is compare's: each cell is the mean over the row's
videos with its 95 % bootstrap interval and the delta to the teacher, starred only when the two
intervals are disjoint and both rows have at least ``pyrawan.eval.compare.MIN_VIDEOS`` videos.
Everything lands under OUT (``runs/demo`` by default): ``data/``, ``cache/``, ``calibration/``,
``pyramid/``, ``finetuned/``, ``eval-<index>/`` (eval artifacts, in table order), ``compare/`` (``compare.md``,
``compare.json``, ``quality_vs_cost.png``), ``results.json`` and ``frames.png`` (one prompt, every row). ``quick`` shrinks every size (dataset, steps, prompts) so
CI runs the whole path in about a minute.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape

from pyrawan.commands.common import console
from pyrawan.outputs import fresh_folder
from pyrawan.ui import duration

# What the demo writes at the top of its folder (a marked folder holding anything else is not replaced).
# samples-*/bench-* are what demos before the eval-quality rows wrote: such a folder is still replaced.
DEMO_OUTPUTS = ("data", "cache", "calibration", "pyramid", "finetuned", "finetuned.run", "eval-*", "compare",
                "samples-*", "bench-*", "results.json", "*.png")

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
    decoder: str = "vae"             # what decodes every row's videos: vae | tiny (docs/decoder.md)

    @classmethod
    def quick(cls) -> DemoSizes:
        """CI-sized: a few videos, a few steps, two prompts of one seed set, short schedules."""
        return cls(videos=8, finetune_steps=3, batch_size=6, prompts=2, seed_sets=1, teacher_steps=4,
                   schedule="2-2-1", cheap="1-1-1")

    def rows(self) -> list[tuple[str, str, str]]:
        """(row name, model key, schedule) of every sampled configuration."""
        return [("teacher", "teacher", str(self.teacher_steps)), ("pyramid, not finetuned", "pyramid", self.schedule),
                ("pyramid, finetuned", "finetuned", self.schedule), ("pyramid, finetuned (cheap)", "finetuned", self.cheap)]


BOUNDARY_CHOICES = ("calibrated", "uniform", "pyramid-flow")


def default_out(quick: bool) -> Path:
    """``runs/demo``, or ``runs/demo-quick`` for ``--quick`` (a quick run never replaces a full one)."""
    return Path("runs") / ("demo-quick" if quick else "demo")


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


# Seconds per unit of work on 2 idle CPU cores: a toy video made, a video VAE-encoded by calibrate, convert, a
# finetune step of 24 samples (2.56 it/s alone), a transformer forward of one 17x64x64 video at full
# resolution, a video decoded and scored, a row's model loading, a dataset video read as the row's FD
# reference, compare. Fitted to the phases of `time make demo` on 2026-12-07 (docs/cli.md "demo"); their
# sum for the default sizes, about 8.5 minutes, is near the 593 s measured on a mostly quiet machine, and
# each phase's estimate then follows the pace of the phases before it.
UNIT_SECONDS = {"video": 0.05, "encode": 1.4, "convert": 5.0, "step": 0.39, "forward": 0.018, "score": 0.15,
                "load": 5.0, "reference": 0.05, "compare": 5.0}


def full_steps(schedule: str) -> float:
    """Steps at full resolution a schedule (coarsest first) costs: a stage k levels coarser has 1/8^k the
    tokens (half the frames, height and width)."""
    counts = [int(n) for n in schedule.split("-")]
    return sum(n / 8 ** (len(counts) - 1 - i) for i, n in enumerate(counts))


def phase_seconds(sizes: DemoSizes, unit: dict[str, float] = UNIT_SECONDS) -> list[float]:
    """Estimated seconds of every phase on 2 idle CPU cores: dataset, calibrate, convert, finetune, one per
    row (two forwards per step: guidance), compare."""
    videos, fixed = sizes.seed_sets * sizes.prompts, unit["load"] + sizes.videos * unit["reference"]
    per_video = [2 * full_steps(schedule) * unit["forward"] + unit["score"] for _, _, schedule in sizes.rows()]
    rows = [fixed + videos * seconds for seconds in per_video]
    return [sizes.videos * unit["video"], sizes.videos * unit["encode"], unit["convert"],
            sizes.finetune_steps * sizes.batch_size / 24 * unit["step"], *rows, unit["compare"]]


class Phases:
    """The demo's progress display: a numbered header with the phase's estimated duration before each
    phase, a timing line after it. Estimates are ``estimates`` (seconds on 2 idle cores) times the pace so
    far: the time the finished phases took over their estimates."""

    def __init__(self, estimates: list[float], clock=time.time):
        self.estimates, self.clock, self.done, self.expected, self.spent = estimates, clock, 0, 0.0, 0.0
        self.total, self.t0 = len(estimates), clock()

    def pace(self) -> float:
        """Measured over estimated time of the finished phases (1 before any)."""
        return self.spent / self.expected if self.expected > 0 else 1.0

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """``demo [k/N] name (about T)`` before the phase (its own progress follows), its duration after."""
        estimate = self.estimates[self.done] * self.pace()
        self.done += 1
        started = self.clock()
        console.print(f"[bold]demo [{self.done}/{self.total}][/] {escape(name)} (about {duration(estimate)})")
        yield
        self.expected += self.estimates[self.done - 1]
        self.spent += self.clock() - started
        left = sum(self.estimates[self.done:]) * self.pace()
        console.print(f"[dim]  done in {duration(self.clock() - started)} ({duration(self.clock() - self.t0)} so "
                      f"far" + (f", about {duration(left)} left)" if left else ")") + "[/]")


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


# The columns of the printed table and compare.md; compare.json and results.json hold every metric.
DEMO_COLUMNS = ("toybench_overall", "toybench_detection", "toybench_colour", "toybench_shape", "toybench_fd")


def row_videos(sizes: DemoSizes, seed: int) -> tuple[list[str], list[int]]:
    """The (prompt, seed) pairs of every row: each seed set's prompts, prompt ``i`` of set ``k`` with noise
    seed ``seed + 1000 k + i``; ``sizes.seed_sets * sizes.prompts`` videos."""
    prompts, seeds = [], []
    for seed_set in range(sizes.seed_sets):
        batch = demo_prompts(sizes.prompts, seed_set)
        prompts += batch
        seeds += [seed + 1000 * seed_set + i for i in range(len(batch))]
    return prompts, seeds


def evaluate_rows(out: Path, models: dict[str, str], sizes: DemoSizes, seed: int, phases: Phases) -> list[Path]:
    """One eval artifact per row (``OUT/eval-<index>``) through ``pyrawan eval quality``'s own code
    (``pyrawan.eval.quality_run``): coupled noise, ToyBench, FD against the dataset, FLOPs; returns the folders."""
    from pyrawan.commands.common import resolve_device
    from pyrawan.commands.eval_quality import model_loader
    from pyrawan.eval.quality_run import QualityJob, evaluate_quality
    from pyrawan.models.generate import default_batch_size

    load = model_loader(None, None, [])
    batch_size = default_batch_size(resolve_device(None))        # as `pyrawan sample` without --batch-size
    prompts, seeds = row_videos(sizes, seed)
    folders = []
    for index, (name, key, schedule) in enumerate(sizes.rows()):
        folder = out / f"eval-{index}"
        with phases.phase(f"eval quality: {name} ({schedule}), {len(prompts)} videos"):
            job = QualityJob(model=models[key], prompts=prompts, seeds=seeds, schedule=schedule, batch_size=batch_size,
                             fd_reference=out / "data", label=name, overwrite=True, decoder=sizes.decoder)
            evaluate_quality(folder, job, load)
        folders.append(folder)
    return folders


def compare_rows(out: Path, folders: list[Path], phases: Phases) -> dict:
    """``pyrawan eval compare`` of the rows against the teacher (row 0) into ``OUT/compare``; prints its table."""
    from pyrawan.commands.eval_compare import run_compare

    with phases.phase("eval compare: the results table"):
        return run_compare(folders, out / "compare", baseline=folders[0], metrics=list(DEMO_COLUMNS), overwrite=True)


def result_rows(result: dict, models: dict[str, str], sizes: DemoSizes, folders: list[Path]) -> list[dict]:
    """``results.json`` rows: the demo's row name, model and schedule, then compare's row (cost, ratio to the
    teacher, every metric's mean, 95% interval, n, delta and whether it differs)."""
    return [{"row": name, "model": models[key], "eval": folder.name, **row}
            for (name, key, _), folder, row in zip(sizes.rows(), folders, result["rows"])]


def write_figures(out: Path, rows: list[dict]) -> list[Path]:
    """``frames.png`` (the first video of every row); returns it after compare's quality-against-cost plot
    (``compare/quality_vs_cost.png``, not copied) when compare drew one."""
    from pyrawan.commands.eval_compare import PLOT
    from pyrawan.data.video import read_video
    from pyrawan.eval.artifact import read_eval
    from pyrawan.toy.figures import frame_strip, video_label

    videos, labels, prompt = [], [], ""
    for r in rows:
        first = read_eval(out / r["eval"])["videos"][0]
        videos.append(read_video(out / r["eval"] / first["video"])[0])
        labels.append(video_label(r["row"], r["schedule"], (first.get("values") or {}).get("toybench_overall"),
                                  r["metrics"]["toybench_overall"]["mean"]))
        prompt = first["prompt"]
    figures = [frame_strip(videos, labels, out / "frames.png", prompt)]
    return [out / "compare" / PLOT, *figures] if (out / "compare" / PLOT).is_file() else figures


def run(out: Path, quick: bool = False, seed: int = 0, overwrite: bool = False, **changes) -> list[dict]:
    """Run the whole demo into ``out`` and print the results table; returns its rows (``results.json``).

    ``changes`` override ``DemoSizes`` fields (e.g. ``resizer="dct"``, ``stage_data=1``,
    ``finetune_steps=800``, ``seed_sets=3``, ``prompts=32``, ``boundaries="pyramid-flow"``,
    ``align_weight=1.0``); ``None`` values are ignored. An earlier demo in ``out`` is replaced only with
    ``overwrite``.
    """
    fresh_folder(out, "demo", overwrite, own=DEMO_OUTPUTS)  # only a folder an earlier demo marked, holding only its files
    sizes = DemoSizes.quick() if quick else DemoSizes()
    for key, value in changes.items():
        if value is not None:
            setattr(sizes, key, value)
    phases = Phases(phase_seconds(sizes))
    console.print(f"demo: {len(phases.estimates)} phases, about {duration(sum(phases.estimates))} on 2 idle CPU "
                  f"cores; longer on a busy machine (each phase's estimate follows the pace so far)", markup=False)
    models = build_models(out, sizes, seed, phases)
    folders = evaluate_rows(out, models, sizes, seed, phases)
    result = compare_rows(out, folders, phases)
    rows = result_rows(result, models, sizes, folders)
    elapsed = time.time() - phases.t0
    title = (f"pyrawan demo: toy world, 17×64×64, {sizes.resizer}, Definition {sizes.stage_data}, "
             f"{sizes.boundaries} boundaries" + (f", alignment {sizes.align_weight:g}" if sizes.align_weight else ""))
    figures = [str(f.relative_to(out)) for f in write_figures(out, rows)]
    (out / "results.json").write_text(json.dumps({"title": title, "sizes": sizes.__dict__, "seconds": elapsed,
                                                  "note": result["note"], "rows": rows,
                                                  "figures": figures}, indent=1) + "\n")
    console.print(f"{title} (the table above; baseline: the teacher)", markup=False)
    console.print(f"demo: done in {duration(elapsed)}; everything is in [bold]{escape(str(out))}[/] (results.json, "
                  f"compare/compare.md, {', '.join(figures)})")
    return rows
