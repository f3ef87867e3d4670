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
from pyrawan.eval.compare import compare, markdown, plot, table_rows
from pyrawan.fsutil import atomic_write_text
from pyrawan.manifest import artifact_dir, require_verified, write_manifest
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


def _print(result: dict, metrics: list[str] | None) -> None:
    header, rows = table_rows(result, metrics)
    table = Table(title=Text(f"eval compare (baseline: {result['baseline']})"))
    for name in header:
        table.add_column(Text(name))
    for row in rows:
        table.add_row(*map(Text, row))                     # labels are text from the artifacts, not rich markup
    table_console().print(table)
    console.print(result["note"], markup=False)
    for warning in result["warnings"]:
        console.print(f"warning: {warning}", style="yellow", markup=False)


def run_compare(paths: list[Path], out: Path | None, baseline: Path | None = None, metric: str | None = None,
                metrics: list[str] | None = None, html: bool = False, overwrite: bool = False) -> dict:
    """One table (markdown + JSON) and the quality-against-cost PNG; ``html``: also the report page with videos."""
    from pyrawan.eval.html import copy_videos, render_page

    started = time.time()
    evals, index = _load(paths, baseline)
    result = compare(evals, index, metric)
    _print(result, metrics)
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
