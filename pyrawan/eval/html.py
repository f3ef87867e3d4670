"""``eval report``: the comparison as one static HTML page with the videos.

The page holds the comparison table (metric columns grouped, the model column sticky, scrolling
sideways inside its own box), the quality-against-cost plot, the first (prompt, seed) pairs side by
side (one row per pair, one column per model), and then one collapsible section per model with all
its videos in a grid that wraps to the window. Each video has a poster (its first frame as a PNG), is
muted and looped, plays while it is on screen, and is drawn at ``TILE`` pixels with square pixels
(``image-rendering: pixelated``), without controls over it. The files are copied next to the page
(``videos/<row>/<k>.mp4`` and ``.png``) and referenced by relative paths, so the folder can be moved
or served.
"""
from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from pyrawan.artifact_files import ArtifactFiles
from pyrawan.eval.compare import TEXT_COLUMNS, _num, cell, table_rows
from pyrawan.fsutil import atomic_write_bytes

VIDEO_SUFFIXES = (".mp4", ".webm", ".gif")
TILE = 192          # CSS pixels of a video's width on the page
SIDE_BY_SIDE = 8    # (prompt, seed) pairs in the side-by-side table
RUN_COLUMNS = 3     # model, schedule, videos: the table's first group; then cost columns, then metrics
COST_COLUMNS = 4

STYLE = f"""body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}
h1{{font-size:1.5em}}.note{{color:#555;font-size:13px;max-width:70em}}
.scroll{{overflow-x:auto;width:fit-content;max-width:100%;border:1px solid #ccc}}
table{{border-collapse:separate;border-spacing:0;font-size:13px}}
td,th{{border:solid #ddd;border-width:0 1px 1px 0;padding:4px 6px;vertical-align:top;background:#fff}}
th{{background:#f3f3f3;text-align:left;white-space:nowrap;font-weight:600}}
th.group{{text-align:center;border-bottom:2px solid #999}}
.sticky{{position:sticky;left:0;z-index:1;box-shadow:1px 0 0 #999;max-width:14em}}
td.num{{white-space:nowrap;text-align:right}}.delta{{font-size:11px;color:#666}}
img.plot{{max-width:100%;height:auto}}
video{{width:{TILE}px;max-width:100%;height:auto;image-rendering:pixelated;background:#000;display:block}}
.pairs td{{text-align:center}}.pairs video{{max-width:none}}
.prompt{{font-size:12px;min-width:9em;max-width:12em;white-space:normal}}
nav{{margin:.5em 0}}nav a{{margin-right:1em;white-space:nowrap}}
details{{margin:1em 0;border-top:1px solid #ccc;padding-top:.5em}}summary{{font-weight:600;cursor:pointer}}
.tiles{{display:grid;grid-template-columns:repeat(auto-fill,minmax({TILE}px,1fr));gap:14px;margin-top:.8em}}
figure{{margin:0}}figcaption{{font-size:12px;max-width:{TILE}px;overflow-wrap:anywhere}}"""

# Videos play only while on screen (a report can hold thousands); a video that cannot play keeps its poster.
# A link to a model's section opens it.
SCRIPT = """const seen=new IntersectionObserver(es=>es.forEach(e=>{const v=e.target;
if(e.isIntersecting){v.play().catch(()=>{})}else{v.pause()}}));
document.querySelectorAll('video').forEach(v=>seen.observe(v));
const show=()=>{const d=document.getElementById(decodeURIComponent(location.hash.slice(1)));if(d)d.open=true};
addEventListener('hashchange',show);show();"""


def video_key(record: dict) -> tuple[str, int | None]:
    """How videos are matched across models: the same prompt and the same seed (None: not known, e.g. a
    VBench import without ``--export``)."""
    return record["prompt"], record.get("seed")


def write_poster(video: Path, poster: Path) -> tuple[int, int] | None:
    """The first frame of ``video`` as the PNG ``poster``; its (width, height), None if it cannot be decoded."""
    from PIL import Image

    from pyrawan.data.video import read_video
    from pyrawan.errors import InputError

    try:
        frame = read_video(video, num_frames=1)[0][0]
    except InputError:
        return None
    image = Image.fromarray((frame.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(poster, buffer.getvalue())
    return image.width, image.height


def copy_videos(evals: Sequence[dict], out: Path) -> list[dict[tuple[str, int | None], dict]]:
    """Copy each artifact's videos into ``out/videos/<row>/`` with a first-frame poster beside each; per
    artifact ``{(prompt, seed): {"src", "poster", "size", "values"}}`` (``poster`` and ``size`` None when
    the video cannot be decoded here).

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
            poster = target.with_suffix(".png")
            size = write_poster(out / target, out / poster)
            mapping[video_key(r)] = {"src": target.as_posix(), "poster": poster.as_posix() if size else None,
                                     "size": size, "values": r.get("values") or {}}
        found.append(mapping)
    return found


def metric_groups(names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Metrics grouped by the word before their first ``_`` when two or more share it (``toybench``,
    ``pixel``), in order of first appearance; the rest under ``other``."""
    prefix = {n: n.split("_", 1)[0] if "_" in n else "" for n in names}
    shared = {p for p in prefix.values() if p and sum(q == p for q in prefix.values()) > 1}
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(prefix[n] if prefix[n] in shared else "other", []).append(n)
    return sorted(groups.items(), key=lambda g: g[0] == "other")


def _metric_cell(entry: dict | None, is_baseline: bool) -> str:
    """``mean [low, high]`` and, on a second smaller line, the delta to the baseline."""
    text = cell(entry, is_baseline)
    value, _, delta = text.partition(" (Δ ")
    return html.escape(value) + (f"<br><span class='delta'>Δ {html.escape(delta[:-1])}</span>" if delta else "")


def results_table(result: dict) -> str:
    """The comparison table: a row of group names over the column names, the model column sticky."""
    header, rows = table_rows(result)
    fixed = RUN_COLUMNS + COST_COLUMNS
    groups = metric_groups(list(result["metrics"]))
    spans = [("", 1), ("run", RUN_COLUMNS - 1), ("cost", COST_COLUMNS), *((g, len(members)) for g, members in groups)]
    top = "".join(f"<th class='group{' sticky' if i == 0 else ''}' colspan='{n}'>{html.escape(name)}</th>"
                  for i, (name, n) in enumerate(spans))
    names = [n for _, members in groups for n in members]
    short = [n[len(g) + 1:] if g != "other" else n for g, members in groups for n in members]
    heads = [f"<th{' class=sticky' if i == 0 else ''}>{html.escape(h)}</th>" for i, h in enumerate(header[:fixed])]
    heads += [f"<th title='{html.escape(n)}: {html.escape(str(result['metrics'][n]['description']))}'>"
              f"{html.escape(s)}</th>" for n, s in zip(names, short)]
    body = []
    for i, (row, r) in enumerate(zip(rows, result["rows"])):
        cells = [f"<th class=sticky>{html.escape(row[0])}</th>"]
        cells += [f"<td>{html.escape(c)}</td>" for c in row[1:TEXT_COLUMNS]]
        cells += [f"<td class=num>{html.escape(c)}</td>" for c in row[TEXT_COLUMNS:fixed]]
        cells += [f"<td class=num>{_metric_cell(r['metrics'].get(n), i == result['baseline_index'])}</td>"
                  for n in names]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class=scroll><table class=results><thead><tr>{top}</tr><tr>{''.join(heads)}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _video(found: dict) -> str:
    """A muted, looped video without controls, with its poster and size."""
    poster = f" poster='{html.escape(found['poster'])}'" if found["poster"] else ""
    size = f" width={found['size'][0]} height={found['size'][1]}" if found["size"] else ""
    return f"<video src='{html.escape(found['src'])}'{poster}{size} muted loop playsinline preload=none></video>"


def _score(found: dict, metric: str) -> str:
    value = found["values"].get(metric)
    return f"{metric} {_num(value)}" if isinstance(value, (int, float)) else ""


def _pair(key: tuple[str, int | None]) -> str:
    return html.escape(f"seed {'–' if key[1] is None else key[1]}")


def side_by_side(evals: Sequence[dict], videos: list[dict], keys: list, metric: str) -> str:
    """The first SIDE_BY_SIDE (prompt, seed) pairs: one row each, one column per model."""
    header = "".join(f"<th>{html.escape(str(e.get('label')))}</th>" for e in evals)
    rows = []
    for key in keys[:SIDE_BY_SIDE]:
        cells = [f"<th class='sticky prompt'>{html.escape(key[0])}<br><span class=delta>{_pair(key)}</span></th>"]
        for mapping in videos:
            found = mapping.get(key)
            cells.append(f"<td>{_video(found)}<span class=delta>{html.escape(_score(found, metric))}</span></td>"
                         if found else "<td>–</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f" (the first {SIDE_BY_SIDE} of {len(keys)}; every video is in its model's section below)" \
        if len(keys) > SIDE_BY_SIDE else ""
    return (f"<h2>Side by side</h2><p class=note>Same prompt and seed in each row{more}.</p>"
            f"<div class=scroll><table class=pairs><thead><tr><th class=sticky>prompt</th>{header}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def model_sections(result: dict, evals: Sequence[dict], videos: list[dict], keys: list) -> str:
    """One collapsible section per model (the first open), its videos in a grid that wraps."""
    metric = result["quality_metric"]
    links = "".join(f"<a href='#model-{i}'>{html.escape(str(e.get('label')))}</a>" for i, e in enumerate(evals))
    parts = [f"<h2>Videos by model</h2><nav>{links}</nav>"]
    for i, (e, mapping, row) in enumerate(zip(evals, videos, result["rows"])):
        mean = (row["metrics"].get(metric) or {}).get("mean")
        tiles = "".join(f"<figure>{_video(mapping[k])}<figcaption>{html.escape(k[0])}<br>"
                        f"<span class=delta>{_pair(k)} · {html.escape(_score(mapping[k], metric))}</span>"
                        f"</figcaption></figure>" for k in keys if k in mapping)
        parts.append(f"<details id='model-{i}'{' open' if i == 0 else ''}><summary>{html.escape(str(e.get('label')))}"
                     f" — {len(mapping)} videos, {html.escape(metric)} mean {_num(mean)}</summary>"
                     f"<div class=tiles>{tiles or '<p class=note>No videos.</p>'}</div></details>")
    return "".join(parts)


def render_page(result: dict, evals: Sequence[dict], videos: list[dict], plot_name: str | None,
                title: str = "pyrawan eval report") -> str:
    """The HTML text of the report (``videos``: ``copy_videos``'s mappings)."""
    parts = ["<!doctype html><html lang=en><head><meta charset='utf-8'>",
             "<meta name=viewport content='width=device-width, initial-scale=1'>",
             f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class=note>Baseline: {html.escape(str(result['baseline']))}. {html.escape(result['note'])} "
             f"Quality axis: {html.escape(result['quality_metric'])}.</p>",
             *(f"<p class=note><b>Warning:</b> {html.escape(w)}</p>" for w in result["warnings"]),
             results_table(result)]
    if plot_name:
        parts.append(f"<h2>Quality against cost</h2><img class=plot src='{html.escape(plot_name)}' "
                     f"alt='quality against cost'>")
    keys = list(dict.fromkeys(video_key(r) for e in evals for r in e.get("videos", [])))
    keys = [k for k in keys if any(k in m for m in videos)]
    if keys:
        parts.append(side_by_side(evals, videos, keys, result["quality_metric"]))
        parts.append(model_sections(result, evals, videos, keys))
    else:
        parts.append("<h2>Videos</h2><p class=note>No videos: the artifacts hold no video files.</p>")
    notes = [f"<li><b>{html.escape(str(e.get('label')))}</b>: {html.escape(n)}</li>"
             for e in evals for n in e.get("notes", [])]
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(notes) + "</ul>")
    parts.append(f"<script>{SCRIPT}</script></body></html>\n")
    return "\n".join(parts)
