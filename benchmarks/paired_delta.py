"""Paired difference of one ToyBench score between two sets of the same videos: mean [95 % bootstrap interval].

    python benchmarks/paired_delta.py --row NAME A1.json [A2.json ...] --against NAME B1.json [B2.json ...] \\
        [--metric overall] [--summary docs/data/NAME.json]

Each file is a ``toybench.json`` (``pyrawan toy bench``: its ``per_video`` list, paired by position, so
give the seed sets in the same order on both sides) or an eval ``metrics.json`` (``pyrawan eval quality`` /
``pyrawan demo``'s ``eval-<index>/``: its ``videos``, paired by (prompt, seed); the metric is then
``toybench_<metric>``). The interval is ``pyrawan.eval.stats.mean_ci`` over the per-video differences
A - B, as ``eval compare`` and ``benchmarks/toy_distill.py`` compute it. With ``--summary`` the pair
is added to (or replaced in) a ``paired`` summary that ``scripts/render_results.py`` renders.

Examples: the 1,800-iteration DMD-OT row against the 600-iteration one (docs/results.md, "Does a longer
distillation help?"), and a 1,600-step ablation against the default configuration's same row.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_summary import ci, paired, write_summary  # noqa: E402


def per_video(files: list[Path], metric: str) -> tuple[list, list[float]]:
    """The pairing keys and values of ``metric`` of every video in ``files``, in order."""
    keys, values = [], []
    for position, file in enumerate(files):
        body = json.loads(Path(file).read_text())
        if "per_video" in body:                                   # toybench.json
            for i, video in enumerate(body["per_video"]):
                keys.append((position, i))
                values.append(float(video[metric]))
        elif "videos" in body:                                    # eval metrics.json
            name = metric if metric in (body["videos"][0].get("values") or {}) else f"toybench_{metric}"
            for video in body["videos"]:
                keys.append((video.get("prompt"), video.get("seed")))
                values.append(float(video["values"][name]))
        else:
            raise SystemExit(f"{file}: neither a toybench.json (per_video) nor an eval metrics.json (videos)")
    return keys, values


def differences(a_files: list[Path], b_files: list[Path], metric: str = "overall") -> list[float]:
    """Per-video ``a - b``; the two sides must hold the same videos (by position, or by (prompt, seed))."""
    a_keys, a = per_video(a_files, metric)
    b_keys, b = per_video(b_files, metric)
    if sorted(map(str, a_keys)) != sorted(map(str, b_keys)) or len(set(map(str, a_keys))) != len(a_keys):
        raise SystemExit(f"the two sides are not the same videos ({len(a)} against {len(b)})")
    base = dict(zip(map(str, b_keys), b))
    return [value - base[str(key)] for key, value in zip(a_keys, a)]


def add_pair(summary: dict | None, row: str, against: str, delta, source: str) -> dict:
    """``summary`` (a ``paired`` summary, or None for a new one) with ``row`` against ``against`` set to ``delta``."""
    pairs = [(p["row"], p["against"], p["delta"]) for p in (summary or {}).get("pairs", [])
             if (p["row"], p["against"]) != (row, against)]
    header = tuple(summary["header"]) if summary and "header" in summary else None
    return paired(source, [*pairs, (row, against, ci(delta))], header=header)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--row", nargs="+", required=True, metavar=("NAME", "FILE"), help="The row's name and its files.")
    ap.add_argument("--against", nargs="+", required=True, metavar=("NAME", "FILE"),
                    help="The other row's name and its files (the same videos).")
    ap.add_argument("--metric", default="overall", help="The ToyBench score to compare (default overall).")
    ap.add_argument("--summary", type=Path, help="Add the pair to this paired summary (docs/data/NAME.json).")
    args = ap.parse_args(argv)
    if len(args.row) < 2 or len(args.against) < 2:
        ap.error("--row and --against take a name and at least one file each")
    from pyrawan.eval.stats import mean_ci

    delta = mean_ci(differences([Path(f) for f in args.row[1:]], [Path(f) for f in args.against[1:]], args.metric))
    print(f"{args.row[0]} - {args.against[0]} ({args.metric}, paired): "
          f"{delta[0]:+.3f} [{delta[1]:+.3f}, {delta[2]:+.3f}]")
    if args.summary:
        existing = json.loads(args.summary.read_text()) if args.summary.is_file() else None
        source = "python benchmarks/paired_delta.py " + " ".join(sys.argv[1:] if argv is None else argv)
        write_summary(args.summary, add_pair(existing, args.row[0], args.against[0], delta, source))


if __name__ == "__main__":
    main()
