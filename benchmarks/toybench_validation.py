"""Validation of ToyBench's background and extra-object scores on a toy dataset (docs/toy-world.md, "Validation").

    python benchmarks/toybench_validation.py [--n 96] [--seed 0] [--frames 17 --height 64 --width 64]
        [--corruptions 32] [--samples runs/demo/eval-0/samples ...] [--out docs/data/toybench-validation.json]

1. Writes a toy dataset with ``pyrawan toy make-dataset`` (mp4, crf 18) and scores every video against
   its true caption and against the same caption with the background swapped for another of the six
   backgrounds (3 grey levels x plain/gradient; drawn per video, seeded), and, separately, for the
   other style of the same grey level (the closest wrong background).
2. Renders the same scenes with a distractor: a second object of another colour, drawn from the
   grammar and placed where it never touches the first (the world's ``coverage``), mp4 round trip,
   scored against the true caption, paired with the clean dataset videos.
3. Every condition is scored by the new ToyBench (12 scores) and by the old one (the geometric mean
   of the ten scores before background and extra_objects, ``bench.SCORES_BEFORE_BACKGROUND``).
4. ``--corruptions N``: ``pyrawan.toy.corrupt.validate`` on N videos, old vs new overall per corruption
   (the figures of the validation table that move). ``--samples``: model samples (``pyrawan sample``
   folders), old vs new overall.

Paired per-video differences get 95 % percentile bootstrap intervals (``pyrawan.eval.stats.mean_ci``).
Writes the summaries of sections 1-3 to ``--out`` and of section 4 beside it (``NAME-old-vs-new.json``),
each a ``table`` of ``benchmarks/results_summary.py`` (numbers, the command, the date; ``make results``
renders them into a doc under the markers ``<!-- table: NAME (make results) -->``), and prints them as Markdown.
"""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from pyrawan.data.video import read_video
from pyrawan.eval.stats import mean_ci
from pyrawan.toy import world
from pyrawan.toy.bench import SCORES_BEFORE_BACKGROUND, overall_score, prompt_errors, scores_from_errors
from pyrawan.toy.corrupt import mp4_round_trip
from pyrawan.toy.features import Measurements, measure_video
from pyrawan.toy.layouts import read_captions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_summary import ci, column, table, write_summary  # noqa: E402

REAL_OVERALL = 0.95     # tests/test_toy.py: every real video scores above this; "passing" counts videos at or above it
GROUNDS = [(b, s) for b in world.BACKGROUNDS for s in world.STYLES]      # the six backgrounds a caption can name


def judge(m: Measurements, prompt: str) -> dict:
    """New and old overall, and every score, of one measured video against ``prompt``."""
    scores = scores_from_errors(prompt_errors(m, world.parse_caption(prompt, partial=True)))
    return {"new": overall_score(scores), "old": overall_score(scores, SCORES_BEFORE_BACKGROUND), **scores}


def with_ground(scene: world.Scene, ground: tuple[str, str]) -> str:
    """The scene's caption with its background replaced by ``ground`` = (grey level, style)."""
    return world.caption(dataclasses.replace(scene.attributes(), background=ground[0], style=ground[1]))


def other_ground(scene: world.Scene, rng: np.random.Generator) -> tuple[str, str]:
    """One of the five backgrounds the scene does not have, uniformly."""
    others = [g for g in GROUNDS if g != (scene.background, scene.style)]
    return others[int(rng.integers(len(others)))]


def other_style(scene: world.Scene) -> tuple[str, str]:
    """The same grey level in the other style (plain <-> gradient): the closest wrong background."""
    return scene.background, "gradient" if scene.style == "plain" else "plain"


def distractor(scene: world.Scene, rng: np.random.Generator, frames: int, height: int, width: int,
               tries: int = 200) -> world.Scene:
    """A second scene of another colour whose object stays clear of the first one's in every frame.

    Drawn from the grammar; of ``tries`` draws the first whose bounding circles stay 3 px apart in
    every frame, else the one that stays furthest apart.
    """
    track = world.centre_track(scene, frames, height, width)
    reach = np.sqrt(2) * world.half_extent(scene.size, height, width)
    best, best_gap = None, -np.inf
    for _ in range(tries):
        other = world.sample_scene(rng)
        if other.colour == scene.colour:
            continue
        gap = (np.linalg.norm(world.centre_track(other, frames, height, width) - track, axis=1).min()
               - reach - np.sqrt(2) * world.half_extent(other.size, height, width))
        if gap > 3.0:
            return other
        if gap > best_gap:
            best, best_gap = other, gap
    return best


def add_object(video: torch.Tensor, other: world.Scene) -> torch.Tensor:
    """``video`` [F, 3, H, W] with ``other``'s object composited over it (the world's anti-aliased coverage)."""
    frames, _, height, width = video.shape
    alpha = world.coverage(other, frames, height, width).unsqueeze(1)                    # [F, 1, H, W]
    colour = torch.tensor(world.COLOURS[other.colour]).view(1, 3, 1, 1)
    return alpha * colour + (1 - alpha) * video


def dataset(folder: Path, n: int, seed: int, frames: int, height: int, width: int) -> list[tuple[Path, str]]:
    """``pyrawan toy make-dataset`` into ``folder``; its (video path, caption) pairs."""
    subprocess.run([sys.executable, "-m", "pyrawan", "toy", "make-dataset", str(folder), "--n", str(n), "--seed",
                    str(seed), "--frames", str(frames), "--height", str(height), "--width", str(width)],
                   check=True, stdout=subprocess.DEVNULL)
    return read_captions(folder)


def background_and_distractor(n: int, seed: int, frames: int, height: int, width: int) -> dict[str, list[dict]]:
    """Sections 1-3: per condition (true, swapped, other_style, distractor), the judgement of every video."""
    scenes_rng, swap_rng, other_rng = (np.random.default_rng(s) for s in (seed, [seed, 7], [seed, 8]))
    scenes = [world.sample_scene(scenes_rng) for _ in range(n)]
    per_video = {key: [] for key in ("true", "swapped", "other_style", "distractor")}
    with tempfile.TemporaryDirectory() as tmp:
        records = dataset(Path(tmp) / "data", n, seed, frames, height, width)
        for i, (scene, (path, prompt)) in enumerate(zip(scenes, records, strict=True)):
            assert prompt == world.caption(scene), "the dataset's scenes are the seed's scenes"
            clean = measure_video(read_video(path)[0])
            per_video["true"].append(judge(clean, prompt))
            per_video["swapped"].append(judge(clean, with_ground(scene, other_ground(scene, swap_rng))))
            per_video["other_style"].append(judge(clean, with_ground(scene, other_style(scene))))
            second = distractor(scene, other_rng, frames, height, width)
            video = mp4_round_trip(add_object(world.render(scene, frames, height, width), second), Path(tmp), f"d{i}")
            busy = judge(measure_video(video), prompt)
            per_video["distractor"].append(busy)
    return per_video


def validation_table(per_video: dict[str, list[dict]], source: str) -> dict:
    """The ``table`` summary of sections 1-3: each condition's scores and its paired difference to the true one."""
    columns = [column("condition"), column("videos", "d"), column("old overall", ".3f"), column("new overall", ".3f"),
               column("Δ old overall, paired", "+.3f"), column("Δ new overall, paired", "+.3f"),
               column("background", ".3f"), column("extra_objects", ".3f"),
               column(f"videos ≥ {REAL_OVERALL} (old / new)")]
    taken = [v["colour"] < 0.5 for v in per_video["distractor"]]        # the distractor was taken for the object
    labels = {"true": ("true captions", "true", None),
              "swapped": ("background swapped for another of the six", "true", None),
              "other_style": ("background: same grey, other style", "true", None),
              "distractor": ("a distractor object added", "true", None),
              "ignored": ("… of which the old judge measured the asked object", "true", False),
              "taken": ("… of which it measured the distractor instead", "true", True)}
    rows = []
    for key, (label, base, subset) in labels.items():
        videos, reference = per_video["distractor" if subset is not None else key], per_video[base]
        if subset is not None:
            videos, reference = ([v for v, t in zip(items, taken) if t == subset] for items in (videos, reference))
        if not videos:
            continue
        rows.append([label, len(videos), interval(mean_ci([v["old"] for v in videos])),
                     {"value": interval(mean_ci([v["new"] for v in videos])), "after": spread([v["new"] for v in videos])},
                     "—" if key == base else interval(paired(videos, reference, "old")),
                     "—" if key == base else interval(paired(videos, reference, "new")),
                     interval(mean_ci([v["background"] for v in videos])),
                     interval(mean_ci([v["extra_objects"] for v in videos])),
                     f"{passing(videos, 'old')} / {passing(videos, 'new')}"])
    return table(source, columns, rows)


def old_vs_new_table(groups: dict[str, list[dict]], source: str) -> dict:
    """The ``table`` summary of section 4: old and new overall of each corruption / sample folder, paired."""
    columns = [column("condition"), column("videos", "d"), column("old overall", ".3f"), column("new overall", ".3f"),
               column("Δ overall (new − old), paired", "+.3f"), column("background", ".2f"),
               column("extra_objects", ".2f")]
    rows = [[label, len(videos), {"value": mean_of(videos, "old"), "after": spread([v["old"] for v in videos])},
             {"value": mean_of(videos, "new"), "after": spread([v["new"] for v in videos])},
             interval(mean_ci([v["new"] - v["old"] for v in videos])),
             mean_of(videos, "background"), mean_of(videos, "extra_objects")] for label, videos in groups.items()]
    return table(source, columns, rows)


def corruption_videos(n: int, frames: int, height: int, width: int) -> dict[str, list[dict]]:
    """``corrupt.validate`` (n videos, mp4): per condition, per video, old and new overall and the two new scores."""
    from pyrawan.toy.corrupt import validate

    return {key: [{"old": overall_score(v["scores"], SCORES_BEFORE_BACKGROUND), "new": v["overall"], **v["scores"]}
                  for v in result["per_video"]]
            for key, result in validate(n=n, frames=frames, height=height, width=width).items()}


def sample_label(folder: Path) -> str:
    """``samples: FOLDER``, with the eval artifact's label and schedule when the folder is an eval's ``samples``."""
    import json

    metrics = folder.parent / "metrics.json"
    if folder.name == "samples" and metrics.is_file():
        body = json.loads(metrics.read_text())
        return f"samples: {body.get('label')}, {body.get('schedule')} ({folder.parent.as_posix()})"
    return f"samples: {folder.as_posix()}"


def sample_videos(folders: list[Path]) -> dict[str, list[dict]]:
    """``pyrawan sample`` folders judged against their own prompts, per video."""
    return {sample_label(folder): [judge(measure_video(read_video(path)[0]), prompt)
                                   for path, prompt in read_captions(folder)] for folder in folders}


def interval(entry) -> list[float]:
    """``[mean, low, high]`` of a ``mean_ci`` result, rounded to 4 decimals (the summary's precision)."""
    return [round(v, 4) for v in ci(entry)]


def paired(videos: list[dict], reference: list[dict], name: str) -> tuple[float, float, float]:
    """Mean [95 % bootstrap interval] of the per-video differences of ``name``, videos - reference."""
    return mean_ci([a[name] - b[name] for a, b in zip(videos, reference, strict=True)])


def spread(values: list[float]) -> str:
    """`` (min–max)``."""
    return f" ({min(values):.2f}–{max(values):.2f})"


def passing(videos: list[dict], name: str) -> int:
    """Videos whose ``name`` overall is at least REAL_OVERALL."""
    return sum(v[name] >= REAL_OVERALL for v in videos)


def mean_of(videos: list[dict], name: str) -> float | None:
    """Mean of a score over the videos that have it (None when none do)."""
    values = [v[name] for v in videos if v.get(name) is not None]
    return round(float(np.mean(values)), 4) if values else None


def markdown(summary: dict) -> str:
    """A ``table`` summary as Markdown (intervals as ``mean [low, high]``, ``after`` appended)."""
    def text(value, spec: str | None) -> str:
        if isinstance(value, dict):
            return text(value["value"], spec) + value.get("after", "")
        if isinstance(value, list):
            return f"{value[0]:{spec}} [{value[1]:{spec}}, {value[2]:{spec}}]"
        if value is None:
            return ""
        return value if isinstance(value, str) else format(value, spec)

    columns = summary["columns"]
    lines = ["| " + " | ".join(c["name"] for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(text(cell, c.get("format")) for cell, c in zip(row, columns)) + " |"
              for row in summary["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--corruptions", type=int, default=32, help="videos for corrupt.validate (0: skip)")
    parser.add_argument("--samples", type=Path, nargs="*", default=[], help="pyrawan sample folders to rescore")
    parser.add_argument("--out", type=Path, default=Path("docs/data/toybench-validation.json"),
                        help="the validation summary; the old-vs-new one goes beside it (NAME-old-vs-new.json)")
    args = parser.parse_args(argv)
    source = "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])
    found = background_and_distractor(args.n, args.seed, args.frames, args.height, args.width)
    summaries = {args.out: validation_table(found, source)}
    groups = {**(corruption_videos(args.corruptions, args.frames, args.height, args.width) if args.corruptions else {}),
              **sample_videos(args.samples)}
    if groups:
        summaries[args.out.with_name(f"{args.out.stem}-old-vs-new.json")] = old_vs_new_table(groups, source)
    for path, summary in summaries.items():
        write_summary(path, summary)
        print(f"{path}:\n\n{markdown(summary)}")
    return summaries


if __name__ == "__main__":
    main()
