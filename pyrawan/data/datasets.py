"""Datasets: find the layout of a folder of videos and captions and normalise it to one record list.

Layouts, in the order ``auto`` tries them (``data.layout`` names one explicitly):

- ``metadata.jsonl`` / ``metadata.csv`` / ``metadata.json`` (a list of objects): one entry per
  row, video column ``video|file_name|path|video_path|file``, caption column
  ``caption|prompt|text|name|cap`` (``data.video_column`` / ``data.caption_column`` override);
- ``samples.jsonl``: a ``pyrawan sample`` output folder (``video`` + ``prompt``);
- ``prompts+videos``: ``prompts.txt`` (or ``prompt.txt``, ``captions.txt``, ``caption.txt``) and
  ``videos.txt`` (or ``video.txt``), line i with line i;
- ``sidecar``: every video file (``.mp4 .mov .mkv .webm .avi .m4v``, hidden folders skipped) with
  a ``.txt`` caption of the same name beside it.

Every path is resolved (symlinks included) and must stay inside the dataset folder; nothing
outside it is ever opened. A bad entry (missing caption or file, path outside the folder,
unreadable or too short video) is collected, never raised half-way: ``apply_policy`` then skips
them (``data.on_bad_sample: skip``) or stops listing every one (``fail``).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pyrawan.data.config import Data
from pyrawan.data.frames import frames_needed
from pyrawan.errors import InputError

VIDEO_COLUMNS = ("video", "file_name", "path", "video_path", "file")
CAPTION_COLUMNS = ("caption", "prompt", "text", "name", "cap")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
PROMPT_FILES = ("prompts.txt", "prompt.txt", "captions.txt", "caption.txt")
VIDEO_LIST_FILES = ("videos.txt", "video.txt")
METADATA_LAYOUTS = ("metadata.jsonl", "metadata.csv", "metadata.json", "samples.jsonl")


@dataclass(frozen=True)
class Entry:
    """One raw entry of a layout: where it was listed, the video path as written, the caption."""

    where: str
    video: str | None
    caption: str | None


@dataclass(frozen=True)
class Record:
    """A usable sample: ``id``, ``video`` (posix path relative to the root), ``caption``, file stats."""

    id: str
    video: str
    caption: str
    path: Path
    bytes: int
    mtime_ns: int

    def to_dict(self) -> dict:
        """``{"id", "caption", "video"}``: what the latent cache's ``record(i)`` returns."""
        return {"id": self.id, "caption": self.caption, "video": self.video}


@dataclass(frozen=True)
class BadEntry:
    """An entry that cannot be used, and why (``reason`` is one of ``BAD_REASONS``)."""

    where: str
    video: str | None
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        shown = f" ({self.video})" if self.video else ""
        return f"{self.where}{shown}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


BAD_REASONS = ("missing caption", "missing video path", "missing file", "outside the dataset folder",
               "duplicate", "unreadable video", "too short", "too small")
MIN_SIZE_FRACTION = 0.5     # a video under half the recipe's height or width would be blown up into a blur
SHOWN_BAD = 10              # skipped entries named in the warning under ``on_bad_sample: skip``


@dataclass
class Dataset:
    """A scanned folder: its layout, the usable records (in listing order) and the bad entries."""

    root: Path
    layout: str
    columns: tuple[str, str] | None
    entries: int
    records: list[Record]
    bad: list[BadEntry] = field(default_factory=list)

    def fingerprint(self) -> str:
        """sha256 of the layout, every record (id, path, caption, size, mtime) and bad entry: changes with the data."""
        rows = [[r.id, r.video, r.caption, r.bytes, r.mtime_ns] for r in self.records]
        body = json.dumps([self.layout, rows, [str(b) for b in self.bad]], ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(body.encode("utf-8")).hexdigest()

    def bad_counts(self) -> dict[str, int]:
        """Bad entries per reason (only reasons that occur)."""
        counts: dict[str, int] = {}
        for b in self.bad:
            counts[b.reason] = counts.get(b.reason, 0) + 1
        return counts

    def describe(self) -> str:
        """One line: where, which layout (and columns), how many entries, usable and bad."""
        return describe_summary(self.summary())

    def summary(self) -> dict:
        """JSON-able description for reports and cache indexes."""
        return {"root": str(self.root), "layout": self.layout, "columns": list(self.columns) if self.columns else None,
                "entries": self.entries, "usable": len(self.records), "bad": [asdict(b) for b in self.bad],
                "bad_counts": self.bad_counts(), "fingerprint": self.fingerprint()}


def describe_summary(summary: dict) -> str:
    """One line from ``Dataset.summary()``: where, layout (and columns), entries, usable and bad."""
    cols = summary["columns"]
    shown = f" (video column '{cols[0]}', caption column '{cols[1]}')" if cols else ""
    bad = ", ".join(f"{n} {reason}" for reason, n in summary["bad_counts"].items())
    return (f"{summary['root']}: layout {summary['layout']}{shown}; {summary['entries']} entries, "
            f"{summary['usable']} usable" + (f", {len(summary['bad'])} bad ({bad})" if summary["bad"] else ""))


# ---- paths ---------------------------------------------------------------------------------------

def inside(root: Path, path: str | Path) -> Path | None:
    """``path`` (relative to ``root`` or absolute) resolved with symlinks, or None if it leaves ``root``.

    ``root`` must already be resolved.
    """
    candidate = Path(path)
    try:
        resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop: not a usable path inside root
        return None
    return resolved if resolved == root or resolved.is_relative_to(root) else None


def dataset_file(root: Path, name: str) -> Path:
    """A layout file of the dataset (``metadata.csv``, ...), refused if it resolves outside the folder."""
    path = inside(root, name)
    if path is None:
        raise InputError(f"{root / name} points outside the dataset folder {root} (a symlink?); pyrawan reads "
                         f"nothing outside the dataset folder. Copy the file into {root}.")
    return path


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file of the dataset; InputError naming it if unreadable."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {what} {path} ({err}); save it as UTF-8 text.") from None


# ---- layouts -------------------------------------------------------------------------------------

def detect_layout(root: Path, layout: str = "auto") -> str:
    """The layout of ``root``: ``layout`` itself when given (checked), else the first that matches."""
    present = {
        **{name: (root / name).is_file() for name in METADATA_LAYOUTS},
        "prompts+videos": _first(root, PROMPT_FILES) is not None and _first(root, VIDEO_LIST_FILES) is not None,
    }
    if layout != "auto":
        if layout in present and not present[layout]:
            raise InputError(f"data.layout = {layout} but {root} has no {_layout_files(layout)}; put the file "
                             f"there or set data.layout=auto to detect the layout.")
        return layout
    found = next((name for name, ok in present.items() if ok), None)
    if found is not None:
        return found
    if any(_video_files(root)):
        return "sidecar"
    raise InputError(f"no dataset found in {root}: expected metadata.jsonl, metadata.csv or metadata.json "
                     f"(video + caption columns), prompts.txt + videos.txt, or video files with a .txt caption "
                     f"beside each (clip.mp4 + clip.txt). See docs/calibration.md (in a recipe, data.layout forces one).")


def _layout_files(layout: str) -> str:
    if layout == "prompts+videos":
        return f"{' / '.join(PROMPT_FILES)} and {' / '.join(VIDEO_LIST_FILES)}"
    return layout


def _first(root: Path, names: tuple[str, ...]) -> str | None:
    return next((name for name in names if (root / name).is_file()), None)


def read_entries(root: Path, layout: str, data: Data) -> tuple[list[Entry], tuple[str, str] | None]:
    """The raw entries of ``root`` in ``layout`` and the (video, caption) columns used, if any."""
    if layout == "sidecar":
        return sidecar_entries(root), None
    if layout == "prompts+videos":
        return list_file_entries(root), None
    return metadata_entries(root, layout, data)


def metadata_entries(root: Path, layout: str, data: Data) -> tuple[list[Entry], tuple[str, str]]:
    """Rows of a metadata file (csv, jsonl, json list, or samples.jsonl) as entries."""
    path = dataset_file(root, layout)
    text = read_text(path, "the metadata file")
    rows: list[tuple[str, dict | None]] = []
    if layout == "metadata.csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            rows = [(f"{layout} line {reader.line_num}", row) for row in reader]
            keys = list(reader.fieldnames or [])
        except csv.Error as err:
            raise InputError(f"{path}: not a readable CSV file at line {reader.line_num} ({err}); save it as plain "
                             f"comma-separated UTF-8 text with a header row (e.g. video,caption).") from None
    elif layout == "metadata.json":
        rows = [(f"{layout} item {i}", item if isinstance(item, dict) else None) for i, item in
                enumerate(_json_list(path, text))]
        keys = _union_keys(rows)
    else:
        rows = [(f"{layout} line {n}", _json_object(line)) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        keys = _union_keys(rows)
    video_col = pick_column(keys, data.video_column, VIDEO_COLUMNS, "data.video_column", path)
    caption_col = pick_column(keys, data.caption_column, CAPTION_COLUMNS, "data.caption_column", path)
    entries = [Entry(where, _cell(row, video_col), _cell(row, caption_col)) for where, row in rows]
    return entries, (video_col, caption_col)


def _json_list(path: Path, text: str) -> list:
    try:
        items = json.loads(text)
    except ValueError as err:
        raise InputError(f"{path} is not valid JSON ({err}); metadata.json must be a list of objects such as "
                         '[{"video": "clip.mp4", "caption": "a cat"}].') from None
    if not isinstance(items, list):
        raise InputError(f"{path} holds a {type(items).__name__}, not a list; metadata.json must be a list of "
                         'objects such as [{"video": "clip.mp4", "caption": "a cat"}].')
    return items


def _json_object(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _union_keys(rows: list[tuple[str, dict | None]]) -> list[str]:
    keys: dict[str, None] = {}
    for _, row in rows:
        keys.update(dict.fromkeys(row or {}))
    return list(keys)


def _cell(row: dict | None, column: str) -> str | None:
    value = None if row is None else row.get(column)
    return None if value is None else str(value).strip()


def pick_column(keys: list[str], override: str | None, candidates: tuple[str, ...], key: str, path: Path) -> str:
    """The column to read: ``override`` if given (must exist), else the first of ``candidates`` present."""
    if override is not None:
        if override in keys:
            return override
        raise InputError(f"{key} = '{override}' but {path} has no such column (columns: {', '.join(keys) or 'none'}); "
                         f"set {key} to one of those.")
    found = next((c for c in candidates if c in keys), None)
    if found is None:
        raise InputError(f"{path} has none of the columns {', '.join(candidates)} (columns: {', '.join(keys) or 'none'}); "
                         f"rename a column or set {key} to the right one.")
    return found


def list_file_entries(root: Path) -> list[Entry]:
    """``prompts.txt`` + ``videos.txt``: line i of one with line i of the other."""
    prompts_name, videos_name = _first(root, PROMPT_FILES), _first(root, VIDEO_LIST_FILES)
    prompts = _lines(read_text(dataset_file(root, prompts_name), "the prompt list"))
    videos = _lines(read_text(dataset_file(root, videos_name), "the video list"))
    return [Entry(f"{videos_name} line {i + 1}", videos[i].strip() if i < len(videos) else None,
                  prompts[i].strip() if i < len(prompts) else None) for i in range(max(len(prompts), len(videos)))]


def _lines(text: str) -> list[str]:
    """Lines without the trailing empty ones."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _video_files(root: Path):
    """Video files under ``root`` (sorted walk, hidden folders and files skipped, symlinked folders not followed)."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(VIDEO_SUFFIXES):
                yield Path(folder, name)


def sidecar_entries(root: Path) -> list[Entry]:
    """``clip.mp4`` + ``clip.txt`` pairs (a missing or outside caption file is a missing caption)."""
    entries = []
    for video in _video_files(root):
        rel = video.relative_to(root).as_posix()
        caption_path = inside(root, video.with_suffix(".txt"))
        caption = None
        if caption_path is not None and caption_path.is_file():
            caption = read_text(caption_path, "the caption file").strip()
        entries.append(Entry(rel, rel, caption))
    return entries


# ---- checking ------------------------------------------------------------------------------------

def check_entry(root: Path, entry: Entry) -> tuple[Path, str] | BadEntry:
    """The resolved file and its relative path, or why the entry is bad (no video is opened here)."""
    if not entry.video:
        return BadEntry(entry.where, None, "missing video path")
    path = inside(root, entry.video)
    if path is None:
        return BadEntry(entry.where, entry.video, "outside the dataset folder")
    if not path.is_file():
        return BadEntry(entry.where, entry.video, "missing file")
    if not entry.caption:
        return BadEntry(entry.where, entry.video, "missing caption")
    return path, path.relative_to(root).as_posix()


def scan_dataset(root: Path, data: Data) -> Dataset:
    """List the dataset in ``root``: layout, usable records and bad entries (cheap: no video is opened)."""
    if not root.is_dir():
        raise InputError(f"data.root = {root} is not an existing folder; give the folder that holds the videos "
                         f"and captions (`pyrawan calibrate DATA_DIR`, or data.root in the recipe).")
    root = root.resolve()
    layout = detect_layout(root, data.layout)
    entries, columns = read_entries(root, layout, data)
    records, bad, seen, listed = [], [], {}, {}
    for entry in entries:
        checked = check_entry(root, entry)
        if isinstance(checked, BadEntry):
            bad.append(checked)
            continue
        path, rel = checked
        first = listed.setdefault((rel, entry.caption), entry.where)
        if first != entry.where:
            bad.append(BadEntry(entry.where, rel, "duplicate", f"same video and caption as {first}"))
            continue
        stem = rel.rsplit(".", 1)[0]
        seen[stem] = seen.get(stem, 0) + 1
        stat = path.stat()
        rid = stem if seen[stem] == 1 else f"{stem}#{seen[stem]}"
        records.append(Record(rid, rel, entry.caption, path, stat.st_size, stat.st_mtime_ns))
    return Dataset(root, layout, columns, len(entries), records, bad)


def probe_problem(record: Record, frames: int, fps: float, size: tuple[int, int] | None = None) -> BadEntry | None:
    """Why ``record``'s video cannot give a clip of ``frames`` frames at ``fps`` and pixel ``size`` (height,
    width) (unreadable, too short, under ``MIN_SIZE_FRACTION`` of the size), or None."""
    from pyrawan.data.video import probe_video

    try:
        info = probe_video(record.path)
    except InputError as err:
        return BadEntry(record.id, record.video, "unreadable video", str(err).split(". ")[0])
    needed = frames_needed(frames, info["fps"], fps)
    if info["frames"] < needed:
        return BadEntry(record.id, record.video, "too short",
                        f"{info['frames']} frames at {info['fps']:g} fps; {needed} needed for {frames} at {fps:g} fps")
    if size is not None and (info["height"] < MIN_SIZE_FRACTION * size[0] or info["width"] < MIN_SIZE_FRACTION * size[1]):
        return BadEntry(record.id, record.video, "too small", f"{info['width']}x{info['height']} pixels for a "
                        f"{size[1]}x{size[0]} clip; at least half of each side is needed")
    return None


def probe_dataset(dataset: Dataset, frames: int, fps: float, advance=lambda n=1: None,
                  size: tuple[int, int] | None = None) -> Dataset:
    """Open every usable video's header; unreadable, too short or too small ones move to the bad entries."""
    records, bad = [], list(dataset.bad)
    for record in dataset.records:
        problem = probe_problem(record, frames, fps, size)
        (bad if problem else records).append(problem or record)
        advance()
    return replace(dataset, records=records, bad=bad)


def apply_policy(dataset: Dataset, policy: str) -> Dataset:
    """``fail``: InputError listing every bad entry; ``skip``: the dataset as is, with a warning naming the
    skipped entries (once per dataset). Always: no usable record is an error."""
    if dataset.bad and policy == "skip":
        _warn_skipped(dataset)
    if dataset.bad and policy == "fail":
        listing = "; ".join(str(b) for b in dataset.bad)
        raise InputError(f"data.on_bad_sample = fail and {len(dataset.bad)} of {dataset.entries} entries of "
                         f"{dataset.root} (layout {dataset.layout}) are bad: {listing}. Fix or remove them, or set "
                         f"data.on_bad_sample=skip to leave them out (they are counted in the report).")
    if not dataset.records:
        raise InputError(f"{dataset.describe()}: no usable video is left; fix the entries above or point "
                         f"data.root at another folder.")
    return dataset


_WARNED: set[str] = set()


def _warn_skipped(dataset: Dataset) -> None:
    """Name the bad entries ``on_bad_sample: skip`` leaves out (the first ``SHOWN_BAD``), once per dataset."""
    if dataset.fingerprint() in _WARNED:
        return
    _WARNED.add(dataset.fingerprint())
    from pyrawan.ui import console

    more = len(dataset.bad) - SHOWN_BAD
    listing = "; ".join(str(b) for b in dataset.bad[:SHOWN_BAD]) + (f"; and {more} more" if more > 0 else "")
    console.print(f"data: warning: data.on_bad_sample = skip leaves out {len(dataset.bad)} of {dataset.entries} "
                  f"entries of {dataset.root}: {listing}.", style="yellow", markup=False)


def check_dataset(root: Path, data: Data, frames: int, fps: float, size: tuple[int, int] | None = None) -> Dataset:
    """Scan ``root`` and apply ``data.on_bad_sample`` before any model loads; returns the scanned dataset.

    Under ``fail``, when the scan already found bad entries, the remaining videos are probed too, so
    that one message lists every bad entry (missing files and unreadable or short videos together).
    """
    scanned = scan_dataset(root, data)
    if scanned.bad and data.on_bad_sample == "fail":
        apply_policy(probe_dataset(scanned, frames, fps, size=size), "fail")
    return apply_policy(scanned, data.on_bad_sample)
