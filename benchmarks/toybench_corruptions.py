"""Rerun ToyBench's corruption validation and write the tables of docs/toy-world.md, "Validation".

    python benchmarks/toybench_corruptions.py [--tables full short targeted fd] [--out docs/data]

Each table is one ``pyrawan.toy.corrupt.validate`` run (n scenes of seed 0, every corruption, an H.264
crf 18 mp4 round trip, scored against the real captions, FD to n other real scenes of seed 1):

- ``full``: ``validate(n=32, frames=17, height=64, width=64)``, written to ``toybench-validation-full.json``
  (mean scores, overall with the per-video min–max, FD) and ``toybench-validation-full-errors.json``
  (the raw means);
- ``short``: the same at 17×128×128 with 16 videos (``toybench-validation-short.json``, ``-short-errors.json``);
- ``targeted``: ``validate(n=16, frames=17, height=64, width=64, short=True)``, short captions: the
  targeted score over the videos whose caption names it (``toybench-validation-targeted.json``);
- ``fd``: ``validate(n=8, frames=17, height=64, width=64)`` as ``tests/test_toy.py``'s fixture: the FD of
  each set to 8 other real videos (``toybench-validation-fd.json``);
- ``crf``: 16 real 17×64×64 videos (the scenes of seed 0) through an mp4 round trip at crf 18, 23, 28
  and 35, overall with the twelve-score and the earlier ten-score judge (``toybench-validation-crf.json``).

The summaries are ``table``s of ``benchmarks/results_summary.py``; ``make results`` renders them. libx264
is not bit-reproducible here, so the FDs can differ slightly between runs.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_summary import column, table, write_summary  # noqa: E402

SCORE_COLUMNS = ("detection", "colour", "shape", "size", "direction", "speed", "smoothness", "flicker", "noise",
                 "sharpness")           # the columns of the docs' tables (background and extra_objects: the old-vs-new table)
RAW_COLUMNS = {"colour_error": ".3f", "shape_probability": ".3f", "size_error": ".3f", "direction_error_deg": ".3f",
               "speed_ratio": ".3f", "smoothness_error": ".3f", "background_flicker": ".3f", "noise": ".3f",
               "edge_width": ".3f", "temporal_flickering": ".4f"}
PROMPT_SCORES = ("colour", "shape", "size", "direction", "speed", "background")   # a short caption can leave these out
RUNS = {"full": {"n": 32, "frames": 17, "height": 64, "width": 64},
        "short": {"n": 16, "frames": 17, "height": 128, "width": 128},
        "targeted": {"n": 16, "frames": 17, "height": 64, "width": 64, "short": True},
        "fd": {"n": 8, "frames": 17, "height": 64, "width": 64},
        "crf": {"n": 16, "frames": 17, "height": 64, "width": 64, "crf": (18, 23, 28, 35)}}
NOTE = "libx264 is not bit-reproducible here: the FDs can differ slightly between runs"


def call(arguments: dict) -> str:
    """``validate(n=…, …)`` as written in the summaries' notes."""
    return "pyrawan.toy.corrupt.validate(" + ", ".join(f"{k}={v}" for k, v in arguments.items()) + ")"


def spread(result: dict) -> str:
    """`` (min–max)`` of the per-video overall."""
    values = [v["overall"] for v in result["per_video"]]
    return f" ({min(values):.2f}–{max(values):.2f})"


def rounded(value: float, digits: int) -> float | str:
    """``value`` rounded for the summary; ``"nan"`` when not finite (no measurable direction)."""
    return round(float(value), digits) if value is not None and math.isfinite(value) else "nan"


def scores_table(results: dict[str, dict], source: str, note: str) -> dict:
    """Mean scores (the targeted one bold), overall (min–max) and FD per condition."""
    from pyrawan.toy.corrupt import TARGETS

    columns = [column("condition"), *(column(name, ".2f") for name in SCORE_COLUMNS),
               column("overall (min–max)", ".3f"), column("FD", ".1f")]
    rows = []
    for condition, result in results.items():
        cells = [{"value": rounded(result["scores"][name], 2), "bold": True} if TARGETS.get(condition) == name
                 else rounded(result["scores"][name], 2) for name in SCORE_COLUMNS]
        rows.append([condition, *cells, {"value": rounded(result["overall"], 3), "suffix": spread(result)},
                     rounded(result["fd"], 1)])
    return table(source, columns, rows, note=note)


def errors_table(results: dict[str, dict], source: str, note: str) -> dict:
    """The raw means per condition (units as in the scores table)."""
    columns = [column("condition"), *(column(name, spec) for name, spec in RAW_COLUMNS.items())]
    rows = [[condition, *(rounded(result["raw"][name], int(spec[1])) for name, spec in RAW_COLUMNS.items())]
            for condition, result in results.items()]
    return table(source, columns, rows, note=note)


def targeted_table(results: dict[str, dict], source: str, note: str) -> dict:
    """Short captions: the targeted score's mean over the videos whose caption names it, and overall (min–max)."""
    from pyrawan.toy.corrupt import TARGETS

    columns = [column("condition"), column("targeted score (n)"), column("targeted mean", ".2f"),
               column("overall (min–max)", ".3f")]
    rows = []
    for condition, result in results.items():
        overall = {"value": rounded(result["overall"], 3), "suffix": spread(result)}
        intervals = result["intervals"]
        if condition == "real":
            total = result["videos"]
            named = ", ".join(f"{name}{' n =' if not k else ''} {intervals[name]['n']}"
                              for k, name in enumerate(n for n in PROMPT_SCORES if intervals[n]["n"] < total))
            lowest = min(v["mean"] for v in intervals.values() if v["mean"] is not None)
            text = " on every score" if lowest >= 0.995 else " or more on every score"
            rows.append([condition, "—", {"value": rounded(lowest, 2), "suffix": f"{text} ({named}, others {total})"},
                         overall])
            continue
        target = intervals[TARGETS[condition]]
        rows.append([condition, f"{TARGETS[condition]} ({target['n']})", rounded(target["mean"], 2), overall])
    return table(source, columns, rows, note=note)


def fd_table(results: dict[str, dict], source: str, note: str) -> dict:
    """One row: the FD of the real set and of each corruption to the other real set (``real'``)."""
    columns = [column("videos"), *(column(key, ".1f") for key in results)]
    videos = results["real"]["videos"]
    return table(source, columns, [[f"{videos} + {videos}", *(rounded(r["fd"], 1) for r in results.values())]],
                 note=note)


def crf_results(n: int, frames: int, height: int, width: int, crf: tuple[int, ...]) -> dict[int, list[dict]]:
    """``score_video`` of ``n`` real scenes (seed 0) after an mp4 round trip at each crf, per crf."""
    import tempfile

    import numpy as np

    from pyrawan.data.video import read_video, write_video
    from pyrawan.toy import world
    from pyrawan.toy.bench import score_video

    rng = np.random.default_rng(0)
    scenes = [world.sample_scene(rng) for _ in range(n)]
    videos = [world.render(scene, frames, height, width) for scene in scenes]
    with tempfile.TemporaryDirectory() as tmp:
        return {quality: [score_video(read_video(write_video(Path(tmp) / f"{quality}-{i}.mp4", video, crf=quality))[0],
                                      world.caption(scene)) for i, (video, scene) in enumerate(zip(videos, scenes))]
                for quality in crf}


def crf_table(results: dict[int, list[dict]], source: str, note: str) -> dict:
    """Per crf: mean overall (min–max), the ten-score overall of the same videos, and mean sharpness."""
    from pyrawan.toy.bench import SCORES_BEFORE_BACKGROUND, overall_score

    columns = [column("crf", "d"), column("videos", "d"), column("overall (min–max)", ".3f"),
               column("ten-score overall", ".3f"), column("sharpness", ".2f")]
    rows = []
    for quality, per_video in results.items():
        overall = [v["overall"] for v in per_video]
        rows.append([quality, len(per_video),
                     {"value": round(sum(overall) / len(overall), 3), "suffix": f" ({min(overall):.2f}–{max(overall):.2f})"},
                     round(sum(overall_score(v["scores"], SCORES_BEFORE_BACKGROUND) for v in per_video) / len(per_video), 3),
                     round(sum(v["scores"]["sharpness"] for v in per_video) / len(per_video), 2)])
    return table(source, columns, rows, note=note)


def main(argv: list[str] | None = None) -> dict[Path, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--out", type=Path, default=Path("docs/data"), help="folder of the summaries")
    args = parser.parse_args(argv)
    from pyrawan.toy.corrupt import validate

    source = "python " + " ".join([Path(sys.argv[0]).as_posix() if argv is None else "benchmarks/toybench_corruptions.py",
                                   *(argv if argv is not None else sys.argv[1:])])
    written = {}
    for name in args.tables:
        start = time.perf_counter()
        if name == "crf":
            results = crf_results(**RUNS[name])
            note = ("16 real scenes of seed 0 (pyrawan.toy.world.sample_scene, render) written by "
                    "pyrawan.data.video.write_video at each crf and scored against their captions")
        else:
            results = validate(**RUNS[name])
            note = f"{call(RUNS[name])}; {NOTE}"
        print(f"{name}: took {time.perf_counter() - start:.0f} s", file=sys.stderr)
        if name == "crf":
            summaries = {"crf": crf_table(results, source, note)}
        elif name == "targeted":
            summaries = {"targeted": targeted_table(results, source, note)}
        elif name == "fd":
            summaries = {"fd": fd_table(results, source, note)}
        else:
            summaries = {name: scores_table(results, source, note), f"{name}-errors": errors_table(results, source, note)}
        for suffix, summary in summaries.items():
            path = write_summary(args.out / f"toybench-validation-{suffix}.json", summary)
            written[path] = summary
            print(path, file=sys.stderr)
    return written


if __name__ == "__main__":
    main()
