"""``eval report``: the comparison as one static HTML page with the videos side by side.

The page holds the comparison table, the quality-against-cost plot, and a grid of videos: one
column per (prompt, seed), one row per model. The mp4s are copied next to the page
(``videos/<row>/<name>.mp4``) and referenced by relative paths, so the folder can be moved or served.
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from pyrawan.artifact_files import ArtifactFiles
from pyrawan.eval.compare import table_rows
from pyrawan.fsutil import atomic_write_bytes

VIDEO_SUFFIXES = (".mp4", ".webm", ".gif")

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top}
th{background:#f3f3f3}.grid td{text-align:center}.grid video{width:192px}.caption{max-width:192px;font-size:11px}
.note{color:#555;font-size:13px}"""


def video_key(record: dict) -> tuple[str, int | None]:
    """How videos are matched across models: the same prompt and the same seed (None: not known, e.g. a
    VBench import without ``--export``)."""
    return record["prompt"], record.get("seed")


def copy_videos(evals: Sequence[dict], out: Path) -> list[dict[tuple[str, int | None], str]]:
    """Copy each artifact's mp4s into ``out/videos/<row>/``; per artifact ``{(prompt, seed): relative path}``.

    Every video is read through its artifact's door (``ArtifactFiles.referenced``): a file of the eval
    artifact or of one of its input artifacts (which is verified first), listed in that manifest and
    hash-checked as it is read; anything else stops the report.
    """
    found = []
    for row, e in enumerate(evals):
        files = ArtifactFiles(e["path"], "eval artifact")
        mapping = {}
        for k, r in enumerate(e.get("videos", [])):
            if not r.get("video"):
                continue
            door, name = files.referenced(r["video"])
            if not (door.folder / name).is_file() and name not in door.outputs:
                continue  # a video that was never kept (e.g. an export's unsampled entry)
            suffix = PurePosixPath(name).suffix if PurePosixPath(name).suffix in VIDEO_SUFFIXES else ".mp4"
            target = Path("videos") / str(row) / f"{k:04d}{suffix}"
            atomic_write_bytes(out / target, door.read_bytes(name))
            mapping[video_key(r)] = target.as_posix()
        found.append(mapping)
    return found


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def video_grid(evals: Sequence[dict], videos: list[dict[tuple[str, int], str]]) -> str:
    """The grid: columns = (prompt, seed) in the first artifact's order (then any others), rows = models."""
    keys = list(dict.fromkeys(video_key(r) for e in evals for r in e.get("videos", [])))
    keys = [k for k in keys if any(k in m for m in videos)]
    if not keys:
        return '<p class="note">No videos: the artifacts hold no mp4 files.</p>'
    header = ["model"] + [f"seed {'–' if seed is None else seed}" for _, seed in keys]
    captions = ["<b>prompt</b>"] + [f'<div class="caption">{html.escape(p)}</div>' for p, _ in keys]
    rows = [captions]
    for e, mapping in zip(evals, videos):
        cells = [html.escape(str(e.get("label")))]
        for k in keys:
            src = mapping.get(k)
            cells.append(f'<video src="{html.escape(src)}" controls loop muted playsinline></video>' if src else "–")
        rows.append(cells)
    return _table(header, rows, "grid")


def render_page(result: dict, evals: Sequence[dict], videos: list[dict[tuple[str, int], str]],
                plot_name: str | None, title: str = "pyrawan eval report") -> str:
    """The HTML text of the report."""
    header, rows = table_rows(result)
    rows = [[html.escape(c) for c in row] for row in rows]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='note'>Baseline: {html.escape(str(result['baseline']))}. {html.escape(result['note'])} "
             f"Quality axis: {html.escape(result['quality_metric'])}.</p>",
             *(f"<p class='note'><b>Warning:</b> {html.escape(w)}</p>" for w in result["warnings"]),
             _table(header, rows)]
    if plot_name:
        parts.append(f"<h2>Quality against cost</h2><img src='{html.escape(plot_name)}' alt='quality against cost'>")
    parts.append("<h2>Videos (same prompt, same seed; one row per model)</h2>")
    parts.append(video_grid(evals, videos))
    notes = [f"<li><b>{html.escape(str(e.get('label')))}</b>: {html.escape(n)}</li>"
             for e in evals for n in e.get("notes", [])]
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(notes) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
