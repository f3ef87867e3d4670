"""The summaries the benchmarks write for the docs' tables (``--summary docs/data/NAME.json``).

``scripts/render_results.py`` renders a summary into the table between the doc's markers
``<!-- table: NAME (make results) -->`` and ``<!-- /table -->`` (``make results``); its docstring
describes the format. Stdlib only, so a benchmark can import it before torch.
"""
from __future__ import annotations

import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def ci(entry: Any) -> list[float]:
    """``[mean, low, high]`` from an interval as pyrawan writes one (``{"mean", "low", "high"}`` or a triple)."""
    if isinstance(entry, dict):
        return [float(entry["mean"]), float(entry["low"]), float(entry["high"])]
    mean, low, high = entry
    return [float(mean), float(low), float(high)]


def column(name: str, format: str | None = None, **options: str) -> dict:
    """A column of a ``table`` summary: numeric when it has a ``format`` (``".3f"``, ``"+.3f"``, ``",.0f"``)."""
    return {"name": name, **({"format": format} if format else {}), **options}


def table(source: str, columns: list[dict], rows: list[list], note: str | None = None,
          date: str | None = None) -> dict:
    """A ``table`` summary (rows × columns); every row has one cell per column."""
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(f"row {i} has {len(row)} cells, the table has {len(columns)} columns")
    return {"source": source, "date": date or datetime.date.today().isoformat(),
            **({"note": note} if note else {}), "kind": "table", "columns": columns, "rows": rows}


def paired(source: str, pairs: list[tuple[str, str, Any]], header: tuple[str, str, str] | None = None,
           note: str | None = None, date: str | None = None) -> dict:
    """A ``paired`` summary: ``(row, against, delta)`` with ``delta`` an interval of the paired difference."""
    return {"source": source, "date": date or datetime.date.today().isoformat(), **({"note": note} if note else {}),
            "kind": "paired", "header": list(header or ("row", "against", "Δ overall, paired")),
            "pairs": [{"row": row, "against": against, "delta": ci(delta)} for row, against, delta in pairs]}


def dumps(summary: dict) -> str:
    """JSON with one column or row per line (small diffs when a number changes)."""
    lines = ["{"]
    items = list(summary.items())
    for k, (key, value) in enumerate(items):
        comma = "," if k < len(items) - 1 else ""
        if isinstance(value, list) and value:
            inner = [json.dumps(v, ensure_ascii=False) for v in value]
            lines.append(f" {json.dumps(key)}: [\n  " + ",\n  ".join(inner) + f"\n ]{comma}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    return "\n".join(lines) + "\n}\n"


def write_summary(path: Path | str, summary: dict) -> Path:
    """Write ``summary`` to ``path`` through a temporary file and a rename (never a half-written file)."""
    for key in ("source", "date", "kind"):
        if not summary.get(key):
            raise ValueError(f"a summary needs {key!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(dumps(summary))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
