"""``pyrawan eval compare`` and ``pyrawan eval report``: eval artifacts side by side."""
from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pyrawan.eval.artifact import read_eval
from pyrawan.eval.compare import compare, default_metrics, markdown, plot, table_rows
from pyrawan.fsutil import atomic_write_text
from pyrawan.manifest import require_verified, write_manifest
from pyrawan.outputs import artifact_dir
from pyrawan.ui import console

PLOT = "quality_vs_cost.png"
WIDE = 200          # columns of a printed table when stdout is not a terminal (logs, CI): not rich's 80


def table_console() -> Console:
    """A console as wide as the terminal, or WIDE columns when output goes to a file or a pipe."""
    console_ = Console(soft_wrap=True)
    return console_ if console_.is_terminal else Console(soft_wrap=True, width=WIDE)


def _load(paths: list[Path], baseline: Path | None) -> tuple[list[dict], int]:
    """Verified eval artifacts and the index of the baseline (the first when not given)."""
    for p in paths:
        require_verified(p, "eval artifact")
    evals = [read_eval(p) for p in paths]
    index = 0
    if baseline is not None:
        resolved = [Path(p).resolve() for p in paths]
        if Path(baseline).resolve() not in resolved:
            from pyrawan.errors import InputError

            raise InputError(f"--baseline {baseline} is not one of the artifacts given; pass it as an argument too.")
        index = resolved.index(Path(baseline).resolve())
    return evals, index


def column_widths(header: list[str], rows: list[list[str]]) -> list[int]:
    """Characters each column needs: its longest cell line or header word (a header wraps between words)."""
    return [max(len(part) for part in [*name.split(), *(line for row in rows for line in row[i].split("\n"))])
            for i, name in enumerate(header)]


def fold(widths: list[int], width: int) -> list[list[int]]:
    """Column indices after the first (the model, repeated in every part) in groups whose table fits
    ``width`` characters (rich's box: 3 characters per column and 1 more); a column too wide alone gets
    its own group (its cells then wrap)."""
    groups, current, used = [], [], widths[0] + 4
    for i, w in enumerate(widths[1:], start=1):
        if current and used + w + 3 > width:
            groups.append(current)
            current, used = [], widths[0] + 4
        current.append(i)
        used += w + 3
    return groups + [current] if current else groups


def print_table(result: dict, metrics: list[str], out: Console) -> None:
    """The table on ``out``, folded into parts that fit its width (each part repeats the model column);
    a cell's Δ goes on its own line. Cells wrap, never end in an ellipsis."""
    header, rows = table_rows(result, metrics, folded=True)
    groups = fold(column_widths(header, rows), out.width)
    for k, group in enumerate(groups):
        part = f", part {k + 1} of {len(groups)}" if len(groups) > 1 else ""
        table = Table(title=Text(f"eval compare (baseline: {result['baseline']}){part}"), show_lines=True)
        for i in (0, *group):
            table.add_column(Text(header[i]), overflow="fold")
        for row in rows:
            table.add_row(*(Text(row[i]) for i in (0, *group)))     # labels are artifact text, not rich markup
        out.print(table)


def shown_metrics(result: dict, metrics: list[str] | None, show_all: bool) -> list[str]:
    """The printed table's metrics: ``metrics`` (--columns), all (--all) or the default set (``default_metrics``)."""
    unknown = [m for m in metrics or [] if m not in result["metrics"]]
    if unknown:
        from pyrawan.errors import InputError

        raise InputError(f"--columns {', '.join(unknown)}: no such metric; the artifacts have: "
                         f"{', '.join(result['metrics'])}.")
    return list(result["metrics"]) if show_all else metrics or default_metrics(result)


def _print(result: dict, shown: list[str], out: Path | None) -> None:
    print_table(result, shown, table_console())
    console.print(result["note"], markup=False)
    hidden = len(result["metrics"]) - len(shown)
    if hidden > 0:
        where = f"; every metric is in {out / 'compare.json'}" if out is not None else ""
        why = " (the quality metric and those that differ from the baseline)" if shown == default_metrics(result) else ""
        console.print(f"{len(shown)} of {len(result['metrics'])} metrics shown{why}; --all or --columns A,B shows "
                      f"others{where}", markup=False)
    for warning in result["warnings"]:
        console.print(f"warning: {warning}", style="yellow", markup=False)


def run_compare(paths: list[Path], out: Path | None, baseline: Path | None = None, metric: str | None = None,
                metrics: list[str] | None = None, html: bool = False, overwrite: bool = False,
                show_all: bool = False) -> dict:
    """One table (markdown + JSON) and the quality-against-cost PNG; ``html``: also the report page with videos.
    ``metrics``: the columns of the printed table and of compare.md (None: compare.md has every metric, the
    terminal the default set, or every metric with ``show_all``)."""
    from pyrawan.eval.html import copy_videos, render_page

    started = time.time()
    evals, index = _load(paths, baseline)
    result = compare(evals, index, metric)
    _print(result, shown_metrics(result, metrics, show_all), out)
    if out is None:
        return result
    with artifact_dir(out, overwrite=overwrite) as tmp:
        atomic_write_text(tmp / "compare.json", json.dumps(result, indent=1) + "\n")
        atomic_write_text(tmp / "compare.md", markdown(result, metrics))
        drawn = plot(result, tmp / PLOT)
        if html:
            videos = copy_videos(evals, tmp)
            atomic_write_text(tmp / "index.html", render_page(result, evals, videos, PLOT if drawn else None))
        resolved = {"kind": "eval-report" if html else "eval-compare", "artifacts": [str(p) for p in paths],
                    "baseline": result["baseline"], "quality_metric": result["quality_metric"]}
        write_manifest(tmp, resolved["kind"], resolved, paths, {"rows": len(result["rows"])}, started)
    console.print(f"eval {'report' if html else 'compare'}: wrote [bold]{escape(str(out))}[/]"
                  + (" (open index.html)" if html else ""))
    return result
