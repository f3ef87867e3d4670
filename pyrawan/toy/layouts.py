"""Captioned video folders: the dataset layouts ``make-dataset`` writes and ``bench`` reads.

Layouts written (video paths relative to the folder):

- ``metadata.csv``: columns ``video,caption``
- ``metadata.jsonl``: one ``{"video": ..., "caption": ...}`` per line
- ``metadata.json``: a list of those objects
- ``sidecar``: ``clip.mp4`` next to ``clip.txt`` holding its caption
- ``prompts+videos``: ``prompts.txt`` and ``videos.txt``, one entry per line, same order

Reading goes through ``pyrawan.data.datasets`` (the loader of ``calibrate`` and ``finetune``),
which also accepts a ``pyrawan sample`` artifact (``samples.jsonl`` with ``prompt`` and ``video``).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from pyrawan.errors import InputError
from pyrawan.fsutil import atomic_write_text

LAYOUTS = ("metadata.csv", "metadata.jsonl", "metadata.json", "sidecar", "prompts+videos")
Record = tuple[str, str]  # (video path relative to the folder, caption)


def check_layout(layout: str) -> None:
    """InputError unless ``layout`` is one of LAYOUTS."""
    if layout not in LAYOUTS:
        raise InputError(f"unknown dataset layout {layout!r}; choose one of {', '.join(LAYOUTS)}.")


def clip_name(layout: str, index: int) -> str:
    """Relative path of clip ``index``: ``NNNN.mp4`` beside its caption for sidecar, else ``videos/NNNN.mp4``."""
    return f"{index:04d}.mp4" if layout == "sidecar" else f"videos/{index:04d}.mp4"


def _csv_text(records: list[Record]) -> str:
    """``metadata.csv`` contents (header ``video,caption``, quoted where needed)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["video", "caption"])
    writer.writerows(records)
    return buffer.getvalue()


def write_captions(folder: str | Path, layout: str, records: list[Record]) -> None:
    """Write the caption file(s) of ``layout`` for ``records`` (the videos are written by the caller)."""
    check_layout(layout)
    folder = Path(folder)
    objects = [{"video": video, "caption": text} for video, text in records]
    if layout == "metadata.csv":
        atomic_write_text(folder / layout, _csv_text(records))
    elif layout == "metadata.jsonl":
        atomic_write_text(folder / layout, "".join(json.dumps(o) + "\n" for o in objects))
    elif layout == "metadata.json":
        atomic_write_text(folder / layout, json.dumps(objects, indent=1) + "\n")
    elif layout == "sidecar":
        for video, text in records:
            atomic_write_text((folder / video).with_suffix(".txt"), text + "\n")
    else:
        atomic_write_text(folder / "prompts.txt", "".join(text + "\n" for _, text in records))
        atomic_write_text(folder / "videos.txt", "".join(video + "\n" for video, _ in records))


# ---- reading -------------------------------------------------------------------------------------

def read_captions(folder: str | Path) -> list[tuple[Path, str]]:
    """(video path, caption) for every clip of a captioned folder, in listing order.

    Any layout ``pyrawan.data.datasets`` detects (the ones above, ``samples.jsonl`` of
    ``pyrawan sample``, and their column and file-name variants); every bad entry is listed in
    one InputError.
    """
    from pyrawan.data.config import Data
    from pyrawan.data.datasets import apply_policy, scan_dataset

    dataset = apply_policy(scan_dataset(Path(folder), Data()), "fail")
    return [(record.path, record.caption) for record in dataset.records]
