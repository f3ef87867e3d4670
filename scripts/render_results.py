"""Render the tables of docs/results.md, docs/toy-world.md and docs/decoder.md from their summaries in docs/data/.

    python scripts/render_results.py            # rewrite every table between its markers (make results)
    python scripts/render_results.py --check    # exit 1 and print a diff where a doc differs from its data

Each table sits in a doc between two marker lines::

    <!-- table: NAME (make results) -->
    | ... the table, rendered from docs/data/NAME.json ... |
    <!-- /table -->

and everything between the markers is rewritten from ``docs/data/NAME.json``. The JSON is the source
of truth: edit it (or let a benchmark's ``--summary`` write it), never the table in the doc.

A summary is one JSON object::

    {"source": "the command that produced the numbers",
     "date": "2026-11-30",
     "note": "optional: where the numbers come from when not a fresh run",
     "kind": "table",                              # which render function (KINDS below)
     ...the kind's data...}

Kind ``table`` (rows × columns): ``"columns"`` is a list of ``{"name": header}`` objects, with
``"format"`` (a Python format spec such as ``".3f"``, ``"+.3f"`` for signed differences or ``",.0f"``
for thousands) on numeric columns, and optionally ``"unit"`` (text right after the number, e.g.
``" s"``) and ``"style"`` (``"brackets"``: ``0.592 [0.546, 0.636]``, the default; ``"range"``:
``0.43 s (0.42-0.44)``). ``"rows"`` is a list of rows, one cell per column. A cell is a string
(printed as it is), null (empty), a number, a ``[mean, low, high]`` interval, or an object
``{"value": number or interval, "bold": true, "suffix": " better", "after": " (goal ≤ 1.3)"}``
(``suffix`` inside the bold, ``after`` outside it; ``format``, ``unit`` and ``style`` override the
column's). Minus signs print as "−".

Kind ``paired`` (paired differences between rows): ``"header"`` (three column names) and ``"pairs"``,
a list of ``{"row", "against", "delta": [mean, low, high]}``; ``"format"`` (default ``"+.3f"``).

How to add a table: write ``docs/data/NAME.json`` (by hand from a run's output, or with the producing
benchmark's ``--summary docs/data/NAME.json``; ``benchmarks/results_summary.py`` writes the format),
put the two marker lines where the table goes (nothing between them), run ``make results`` and
commit the JSON together with the doc. ``tests/test_results_tables.py`` fails when a doc and its
data disagree. A table of a new shape gets a new render function in ``KINDS``, not a hand-made table.
Tables of docs/experiments.md are a record and are not rendered.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data"
DOCS = (ROOT / "docs" / "results.md", ROOT / "docs" / "toy-world.md", ROOT / "docs" / "decoder.md")
MARKED = re.compile(r"(?P<open>^<!-- table: (?P<name>[a-z0-9][a-z0-9-]*) \(make results\) -->\n)"
                    r"(?P<body>.*?)(?P<close>^<!-- /table -->$)", re.M | re.S)
MINUS = "\u2212"


class TableError(ValueError):
    """A summary that cannot be rendered (names the file and what is wrong)."""


# ---- cells ----------------------------------------------------------------------------------------

def number(value: float | int, spec: str) -> str:
    """``value`` formatted by ``spec`` with a typographic minus."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TableError(f"{value!r} is not a number")
    return format(value, spec).replace("-", MINUS)


def interval(value: list, spec: str, unit: str = "", style: str = "brackets") -> str:
    """``mean [low, high]`` (style ``brackets``) or ``mean{unit} (low-high)`` (style ``range``)."""
    if len(value) != 3:
        raise TableError(f"an interval is [mean, low, high], not {value!r}")
    mean, low, high = (number(v, spec) for v in value)
    if style == "brackets":
        return f"{mean}{unit} [{low}, {high}]"
    if style == "range":
        return f"{mean}{unit} ({low}-{high})"
    raise TableError(f"unknown interval style {style!r}")


def cell(value, column: dict) -> str:
    """One cell's Markdown, formatted by its column (``format``, ``unit``, ``style``) unless it overrides them."""
    options = dict(column)
    bold, suffix, after = False, "", ""
    if isinstance(value, dict):
        unknown = set(value) - {"value", "bold", "suffix", "after", "format", "unit", "style"}
        if unknown:
            raise TableError(f"unknown cell keys {sorted(unknown)}")
        options.update({k: value[k] for k in ("format", "unit", "style") if k in value})
        bold, suffix, after = bool(value.get("bold")), value.get("suffix", ""), value.get("after", "")
        value = value.get("value")
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    elif "format" not in options:
        raise TableError(f"column {column.get('name')!r} has no format for the number {value!r}")
    elif isinstance(value, list):
        text = interval(value, options["format"], options.get("unit", ""), options.get("style", "brackets"))
    else:
        text = number(value, options["format"]) + options.get("unit", "")
    text += suffix
    return (f"**{text}**" if bold else text) + after


def markdown_row(cells: list[str]) -> str:
    """``| a | b |``; an empty cell is ``| |``."""
    return "|" + "".join(f" {c} |" if c else " |" for c in cells)


# ---- kinds ----------------------------------------------------------------------------------------

def render_table(data: dict) -> str:
    """Kind ``table``: a header, a separator and one line per row, each cell formatted by its column."""
    columns = data.get("columns")
    if not isinstance(columns, list) or not columns or not all(isinstance(c, dict) and "name" in c for c in columns):
        raise TableError("'columns' must be a non-empty list of {\"name\": ...} objects")
    lines = [markdown_row([c["name"] for c in columns]),
             "|" + "|".join(c.get("align", "---") for c in columns) + "|"]
    for i, row in enumerate(data.get("rows", [])):
        if not isinstance(row, list) or len(row) != len(columns):
            raise TableError(f"row {i} has {len(row) if isinstance(row, list) else '?'} cells, "
                             f"the table has {len(columns)} columns")
        try:
            lines.append(markdown_row([cell(v, c) for v, c in zip(row, columns)]))
        except TableError as e:
            raise TableError(f"row {i}: {e}") from None
    return "\n".join(lines) + "\n"


def render_paired(data: dict) -> str:
    """Kind ``paired``: ``row | against | Δ`` with signed intervals."""
    header = data.get("header", ["row", "against", "Δ overall, paired"])
    spec = data.get("format", "+.3f")
    lines = [markdown_row(header), "|" + "---|" * len(header)]
    for pair in data.get("pairs", []):
        lines.append(markdown_row([pair["row"], pair["against"], interval(pair["delta"], spec)]))
    return "\n".join(lines) + "\n"


KINDS = {"table": render_table, "paired": render_paired}
REQUIRED = ("source", "date")


def render(data: dict, name: str = "?") -> str:
    """The Markdown of one summary (its ``kind`` picks the render function)."""
    missing = [k for k in REQUIRED if not data.get(k)]
    if missing:
        raise TableError(f"{name}: missing {', '.join(missing)} (where the numbers come from)")
    kind = data.get("kind", "table")
    if kind not in KINDS:
        raise TableError(f"{name}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    try:
        return KINDS[kind](data)
    except TableError as e:
        raise TableError(f"{name}: {e}") from None


def load(name: str, data_dir: Path = DATA) -> dict:
    path = data_dir / f"{name}.json"
    if not path.is_file():
        raise TableError(f"{name}: no {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return json.loads(path.read_text(encoding="utf-8"))


# ---- docs -----------------------------------------------------------------------------------------

def rendered_doc(text: str, data_dir: Path = DATA) -> tuple[str, list[str]]:
    """``text`` with every marked table re-rendered, and the names of the tables."""
    names = []

    def replace(match: re.Match) -> str:
        names.append(match["name"])
        return match["open"] + render(load(match["name"], data_dir), match["name"]) + match["close"]

    out = MARKED.sub(replace, text)
    if len(names) != len(set(names)):
        raise TableError(f"a table appears twice: {sorted(n for n in set(names) if names.count(n) > 1)}")
    return out, names


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check(docs=DOCS, data_dir: Path = DATA, out=sys.stdout) -> int:
    """0 when every doc equals its rendering; else 1, with a unified diff per differing doc."""
    status = 0
    for doc in docs:
        text = Path(doc).read_text(encoding="utf-8")
        try:
            new, _ = rendered_doc(text, data_dir)
        except (TableError, json.JSONDecodeError) as e:
            print(f"{Path(doc).name}: {e}", file=out)
            status = 1
            continue
        if new != text:
            status = 1
            out.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                                f"{Path(doc).name} (as committed)", f"{Path(doc).name} (rendered)"))
    return status


def unused(docs=DOCS, data_dir: Path = DATA) -> list[str]:
    """Summaries in ``data_dir`` that no doc's markers name."""
    named = set()
    for doc in docs:
        named.update(m["name"] for m in MARKED.finditer(Path(doc).read_text(encoding="utf-8")))
    return sorted(p.stem for p in Path(data_dir).glob("*.json") if p.stem not in named)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="Change nothing; exit 1 with a diff where a doc differs.")
    args = ap.parse_args(argv)
    for name in unused():
        print(f"note: docs/data/{name}.json is not named by any table marker")
    if args.check:
        status = check()
        if status:
            print("\nThe docs' tables differ from docs/data/: run `make results` (the JSON is the source).")
        return status
    count = 0
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        new, names = rendered_doc(text)
        count += len(names)
        if new != text:
            write_atomic(doc, new)
            print(f"{doc.relative_to(ROOT)}: rewritten")
    print(f"{count} tables rendered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
