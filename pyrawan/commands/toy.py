"""``pyrawan toy make-dataset`` and ``pyrawan toy bench``: the toy world's dataset and its judge."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pyrawan.commands.common import console, progress_bar
from pyrawan.errors import InputError
from pyrawan.eval.report import write_json
from pyrawan.fsutil import json_safe
from pyrawan.manifest import verify_if_artifact, write_manifest
from pyrawan.outputs import artifact_dir

METRIC_NOTES = {  # score -> (raw key shown beside it, what the raw number is)
    "detection": ("detected", "frames with an object"),
    "colour": ("colour_error", "RGB distance to the named colour"),
    "shape": ("shape_probability", "probability of the asked shape"),
    "size": ("size_error", "|log(side / asked side)|"),
    "direction": ("direction_error_deg", "angle to the asked direction, deg"),
    "speed": ("speed_ratio", "speed / asked speed"),
    "smoothness": ("smoothness_error", "track residual or acceleration, px@64"),
    "flicker": ("background_flicker", "background |Δ| per frame, levels"),
    "noise": ("noise", "background noise, levels"),
    "sharpness": ("edge_width", "edge width, px"),
    "background": ("background_error", "RGB distance to the named background"),
    "extra_objects": ("extra_area", "pixels of other objects, px@64"),
}


def run_make_dataset(out: Path, n: int, seed: int, layout: str, frames: int, height: int, width: int, fps: int,
                     overwrite: bool = False, progress: bool = True, short_captions: float = 0.0) -> list[tuple[str, str]]:
    """Write a toy dataset artifact (videos, captions in ``layout``, manifest) to ``out``."""
    from pyrawan.toy.layouts import check_layout
    from pyrawan.toy.world import check_size, make_dataset

    started = time.time()
    check_layout(layout)
    check_size(frames, height, width)
    if not 0.0 <= short_captions <= 1.0:
        raise InputError(f"toy make-dataset: --short-captions {short_captions} is not a fraction; give a number in [0, 1].")
    with artifact_dir(out, overwrite=overwrite) as tmp, progress_bar("toy videos", n, progress) as advance:
        records = make_dataset(tmp, n, seed, layout, frames, height, width, fps, on_video=advance,
                               short_captions=short_captions)
        resolved = {"kind": "toy-dataset", "n": n, "seed": seed, "layout": layout, "fps": fps,
                    "short_captions": short_captions,
                    "video": {"frames": frames, "height": height, "width": width}}
        write_manifest(tmp, "toy-dataset", resolved, [], {"videos": len(records)}, started)
    console.print(f"toy make-dataset: wrote {len(records)} videos ({frames}x{height}x{width}, {layout}) to [bold]{out}[/]")
    return records


def _load(folder: Path, what: str) -> tuple[list[Path], list[str], list[Any]]:
    """(video paths, captions, videos [F, 3, H, W]) of a captioned folder; verifies it if it is an artifact."""
    from pyrawan.data.video import read_video
    from pyrawan.toy.layouts import read_captions

    verify_if_artifact(folder, what)
    records = read_captions(folder)
    return [p for p, _ in records], [c for _, c in records], [read_video(p)[0] for p, _ in records]


def _check_prompts(paths: list[Path], prompts: list[str]) -> None:
    """InputError naming the video whose prompt is not a toy-world caption."""
    from pyrawan.toy.world import parse_caption

    for path, prompt in zip(paths, prompts):
        try:
            parse_caption(prompt, partial=True)
        except InputError as err:
            raise InputError(f"{path}: {err}") from None


def _number(value: Any, digits: int = 3) -> str:
    """A table cell: fixed decimals, or n/a."""
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _interval(entry: dict | None) -> str:
    """``low–high`` of an ``intervals`` entry, or n/a."""
    if not entry or entry.get("low") is None:
        return "n/a"
    return f"{entry['low']:.3f}–{entry['high']:.3f}"


def _count(entry: dict | None) -> str:
    """How many videos a score was averaged over (short prompts leave some scores out)."""
    return str(entry["n"]) if entry else ""


def render_bench_table(report: dict) -> Table:
    """Rich table of a ToyBench report: each score (mean over videos, 95 % interval) beside its raw measurement."""
    fd = report.get("fd")
    ci = report.get("intervals", {})
    table = Table(title=f"ToyBench: {report['videos']} videos from {report['source']}",
                  caption=("Scores in [0, 1]; overall = geometric mean (docs/toy-world.md). "
                           + (f"FD to {report['reference_videos']} reference videos: {_number(fd, 2)}."
                              if fd is not None else "No --reference: no Fréchet distance.")))
    for name, justify in (("metric", "left"), ("score", "right"), ("95% interval", "right"), ("videos", "right"),
                          ("raw (mean)", "right"), ("raw measures", "left")):
        table.add_column(name, justify=justify)
    for name, (raw_key, meaning) in METRIC_NOTES.items():
        table.add_row(name, _number(report["scores"][name]), _interval(ci.get(name)), _count(ci.get(name)),
                      _number(report["raw"].get(raw_key)), meaning)
    table.add_row("temporal_flickering", "", "", "", _number(report["raw"]["temporal_flickering"], 4),
                  "VBench (255 - mean |Δ|) / 255, not in overall")
    table.add_row("[bold]overall[/]", f"[bold]{_number(report['overall'])}[/]", _interval(ci.get("overall")),
                  _count(ci.get("overall")), "", "")
    return table


SHORT_NAMES = {"detection": "det", "colour": "col", "direction": "dir", "speed": "spd", "smoothness": "smo",
               "flicker": "flk", "sharpness": "shp", "background": "bg", "extra_objects": "xtr", "overall": "all",
               "videos": "n"}   # short headers: one grouping attribute fits 80 columns


def render_breakdown_table(groups: list[dict]) -> Table:
    """Rich table of ``bench.breakdown``: one row per group, each score's mean over the group's videos."""
    from pyrawan.toy.bench import SCORES

    by = list(groups[0]["group"])
    table = Table(title=f"ToyBench by {', '.join(by)}: mean per group (- = not asked)",
                  caption="Intervals per group: toybench.json (-o) or --json.",
                  box=None, padding=(0, 1), collapse_padding=True, show_edge=False)
    for name in by:
        table.add_column(name, no_wrap=True)
    for name in ("videos", "overall", *SCORES):
        table.add_column(SHORT_NAMES.get(name, name), justify="right", no_wrap=True)
    for g in groups:
        ci = g["intervals"]
        table.add_row(*(str(v) for v in g["group"].values()), str(g["videos"]),
                      *(_number(ci[name]["mean"], 2) if ci[name]["mean"] is not None else "-"
                        for name in ("overall", *SCORES)))
    return table


def run_bench(source: Path, reference: Path | None, out: Path | None, overwrite: bool = False,
              as_json: bool = False, quiet: bool = False, by: list[str] | None = None) -> dict:
    """Score the captioned videos of ``source`` with ToyBench; FD against ``reference`` if given.

    ``by`` (attribute names) adds ``report["breakdown"]``: the scores of each group of prompts that
    asked the same values of those attributes (``pyrawan.toy.bench.breakdown``).
    """
    import json

    from pyrawan.toy.bench import breakdown, check_breakdown, score_set

    if by:
        check_breakdown(by)
    started = time.time()
    paths, prompts, videos = _load(source, "samples")
    _check_prompts(paths, prompts)
    reference_videos = _load(reference, "reference")[2] if reference is not None else None
    report = score_set(videos, prompts, reference_videos)
    if by:
        report["breakdown"] = breakdown(report["per_video"], by)
    for entry, path in zip(report["per_video"], paths):
        entry["video"] = path.relative_to(source.resolve()).as_posix()
        entry.pop("features")
    report = json_safe({"kind": "toybench", "source": str(source), "reference": None if reference is None else str(reference),
                     **report})
    if quiet:
        pass
    elif as_json:
        print(json.dumps(report, indent=2))
    else:
        Console(soft_wrap=True).print(render_bench_table(report))
        if by:
            Console(soft_wrap=True).print(render_breakdown_table(report["breakdown"]))
    if out is not None:
        with artifact_dir(out, overwrite=overwrite) as tmp:
            write_json(tmp / "toybench.json", report)
            resolved = {"kind": "toybench", "source": str(source), "reference": report["reference"]}
            inputs = [source] + ([reference] if reference is not None else [])
            metrics = {"overall": report["overall"], "fd": report["fd"], **report["scores"]}
            write_manifest(tmp, "toybench", resolved, inputs, metrics, started)
        console.print(f"toy bench: wrote [bold]{out}[/]")
    return report
