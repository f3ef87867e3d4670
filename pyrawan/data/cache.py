"""The latent cache: Wan-normalised stage latents and caption embeddings of a dataset, in safetensors shards.

Layout of a cache folder::

    index.json                  settings (data fingerprint, VAE sha256, normalisation, sizes, stage shapes,
                                definition, resizer, text encoder, max_sequence_length), the dataset report,
                                ``complete``; once complete also every shard's entry
    records.jsonl               the planned records {id, caption, video, caption_sha256}, written once
    shards/NNNNN.safetensors    record p (its position in the plan) at stage s: key "p/s", [16, T_s, H_s, W_s]
                                float32; caption embedding: key "text/<caption sha256>", [len, D] float32
                                (trailing padding removed, restored on read)
    shards/NNNNN.json           the shard's entry (records, captions, failures, bytes, sha256): its "done" mark

Shard k holds planned records ``[k * shard_size, (k + 1) * shard_size)``; its tensors are written
atomically, then its entry (also atomically), so a killed build resumes at the first missing
shard and never redoes a finished one; nothing grows with the number of shards while building. A caption is encoded once, in the shard where it first
appears. The default folder is ``runs/cache/<16 hex of the settings' sha256>`` (relative to the
working directory), so other data, another VAE or other sizes get their own folder; an explicit
``data.cache`` whose index holds other settings is refused with the list of differences.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save as save_tensors

from pyrawan.ui import console, progress_bar
from pyrawan.data.datasets import BadEntry, Dataset, apply_policy, describe_summary, probe_dataset, scan_dataset
from pyrawan.data.encode import (caption_embeddings, check_shapes, normalisation, pad_rows, stage_latents,
                                 text_encoder_fingerprint, vae_sha256)
from pyrawan.data.frames import load_clip
from pyrawan.errors import InputError
from pyrawan.fsutil import atomic_write_bytes, atomic_write_text, sha256_file
from pyrawan.pyramid.geometry import stage_shapes

if TYPE_CHECKING:
    from pyrawan.models.presets import WanComponents
    from pyrawan.recipe import RecipeBase

CACHE_FORMAT = "pyrawan.latent_cache/1"
INDEX = "index.json"
RECORDS = "records.jsonl"
SHARDS = "shards"
DEFAULT_ROOT = Path("runs") / "cache"
HASH_THREADS = min(8, os.cpu_count() or 1)
KILL_ENV = "PYRAWAN_CACHE_KILL_AFTER_SHARDS"  # test hook: SIGKILL this process after N shards


def caption_sha256(caption: str) -> str:
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()


# ---- reading -------------------------------------------------------------------------------------

class LatentCache:
    """Read side of a finished cache; opening checks the index and every shard's size.

    ``latents(i)``: per stage ``[16, T, H, W]`` float32, Wan-normalised (index = stage, 0 = full
    resolution); ``text(i)``: ``[L, D]`` float32 (L = max_sequence_length); ``record(i)``:
    ``{"id", "caption", "video"}`` (video relative to the dataset root).
    """

    def __init__(self, folder: Path, verify: bool = True):
        self.folder = Path(folder)
        index = read_index(self.folder)
        if index is None:
            raise InputError(f"{self.folder} is not a latent cache (no readable {INDEX}); build one with "
                             f"`pyrawan calibrate DATA_DIR` or ensure_cache().")
        if not index.get("complete"):
            raise InputError(f"the latent cache {self.folder} is incomplete ({len(finished_shards(self.folder))} "
                             f"of {num_shards(index)} shards); run the command again to resume building it.")
        check_shard_files(self.folder, index["shards"], hashes=verify)
        settings = index["settings"]
        self.settings: dict = settings
        self.num_stages: int = settings["stages"]
        self.stage_shapes: list[tuple[int, int, int]] = [tuple(s) for s in settings["stage_shapes"]]
        self.definition: int = settings["definition"]
        self.max_sequence_length: int = settings["max_sequence_length"]
        self.dataset: dict = index["dataset"]
        self._records: list[dict] = read_records(self.folder, index)
        self._items = [(shard["file"], pos) for shard in index["shards"] for pos in shard["records"]]
        self._texts = {sha: shard["file"] for shard in index["shards"] for sha in shard["texts"]}

    def __len__(self) -> int:
        return len(self._items)

    def _item(self, i: int) -> tuple[str, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"record {i} out of range for a cache of {len(self)} records")
        return self._items[i]

    def record(self, i: int) -> dict:
        """``{"id", "caption", "video"}`` of record ``i``."""
        rec = self._records[self._item(i)[1]]
        return {"id": rec["id"], "caption": rec["caption"], "video": rec["video"]}

    def latents(self, i: int) -> list[torch.Tensor]:
        """Per stage ``[16, T_s, H_s, W_s]`` float32 (index = stage)."""
        file, pos = self._item(i)
        with safe_open(self.folder / file, framework="pt") as shard:
            return [shard.get_tensor(f"{pos}/{s}") for s in range(self.num_stages)]

    def text(self, i: int) -> torch.Tensor:
        """``[L, D]`` float32 embedding of record ``i``'s caption (zero-padded like ``encode_prompts``)."""
        sha = self._records[self._item(i)[1]]["caption_sha256"]
        with safe_open(self.folder / self._texts[sha], framework="pt") as shard:
            return pad_rows(shard.get_tensor(f"text/{sha}"), self.max_sequence_length)


def read_index(folder: Path) -> dict | None:
    """The cache index, or None if there is none; InputError if it is not a pyrawan cache index."""
    path = Path(folder) / INDEX
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{path} is not readable JSON ({err}); delete {folder} to rebuild the cache.") from None
    if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT:
        raise InputError(f"{path} is not a {CACHE_FORMAT} index; point data.cache at another folder or delete {folder}.")
    return index


def num_shards(index: dict) -> int:
    size = index["settings"]["shard_size"]
    return (index["num_records"] + size - 1) // size


def read_records(folder: Path, index: dict) -> list[dict]:
    """The planned records (``records.jsonl``), checked against the sha256 the index recorded."""
    body = (folder / RECORDS).read_bytes() if (folder / RECORDS).is_file() else b""
    if hashlib.sha256(body).hexdigest() != index["records_sha256"]:
        raise InputError(f"the latent cache {folder} is damaged: {RECORDS} is missing or has changed; delete "
                         f"{folder} to rebuild it.")
    return [json.loads(line) for line in body.decode("utf-8").splitlines()]


def shard_ok(folder: Path, entry: dict) -> bool:
    path = folder / entry["file"]
    return path.is_file() and path.stat().st_size == entry["bytes"]


def finished_shards(folder: Path) -> list[dict]:
    """Entries of the shards whose tensors and entry both landed (``shards/NNNNN.json``), by shard index."""
    entries = []
    for path in sorted((folder / SHARDS).glob("[0-9]*.json")):
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if shard_ok(folder, entry):
            entries.append(entry)
    return entries


def check_shard_files(folder: Path, entries: list[dict], hashes: bool = False) -> None:
    """Every finished shard exists with the size (and, with ``hashes``, the sha256) recorded in its entry.

    Hashing reads every shard once (cost: docs/calibration.md, "Latent cache").
    """
    for entry in entries:
        if not isinstance(entry, dict) or not {"file", "bytes", "sha256"} <= entry.keys():
            raise InputError(f"the latent cache {folder} is damaged: {INDEX} has a malformed shard entry; delete "
                             f"{folder} to rebuild it.")
        if not shard_ok(folder, entry):
            raise InputError(f"the latent cache {folder} is damaged: {entry['file']} is missing or has changed size; "
                             f"delete {folder} to rebuild it.")
    if not hashes:
        return
    workers = min(HASH_THREADS, len(entries)) or 1   # hashlib releases the GIL: shards hash in parallel
    with ThreadPoolExecutor(workers) as pool:
        digests = list(pool.map(lambda e: sha256_file(folder / e["file"]), entries))
    for entry, digest in zip(entries, digests):
        if digest != entry["sha256"]:
            raise InputError(f"the latent cache {folder} is damaged: the contents of {entry['file']} changed (its "
                             f"sha256 differs from the one recorded when it was written); delete {folder} to "
                             f"rebuild it.")


# ---- settings ------------------------------------------------------------------------------------

def cached_stages(pyramid) -> int:
    """Stages a cache holds for a recipe's ``pyramid`` section: a PPF model trains on full resolution only."""
    return 1 if pyramid.kind == "ppf" else pyramid.stages


def cache_settings(recipe: RecipeBase, components: WanComponents, dataset: Dataset) -> dict:
    """Everything the cached tensors depend on; any change means another cache."""
    v, p = recipe.video, recipe.pyramid
    shapes = stage_shapes(recipe.latent_size(), cached_stages(p), p.keep_time)
    return {
        "format": CACHE_FORMAT,
        "dataset_root": str(dataset.root), "layout": dataset.layout, "dataset_fingerprint": dataset.fingerprint(),
        "video": {"frames": v.frames, "height": v.height, "width": v.width, "fps": v.fps},
        "stages": cached_stages(p), "keep_time": p.keep_time, "definition": p.stage_data,
        "resizer": p.resizer if p.stage_data == 1 else None,
        "stage_shapes": [list(s) for s in shapes],
        "vae_sha256": vae_sha256(components), "normalisation": normalisation(components),
        "text_encoder": text_encoder_fingerprint(components), "max_sequence_length": recipe.text.max_sequence_length,
        "shard_size": recipe.data.shard_size,
        "clip_rule": "start at frame 0, nearest frame at video.fps, cover-resize (antialiased bilinear), centre crop",
        "stage_pixels": "frame 0 kept, later frames averaged in pairs, 2x2 area average",
    }


def settings_sha256(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def default_cache_folder(settings: dict) -> Path:
    """``runs/cache/<first 16 hex of the settings' sha256>`` (relative to the working directory)."""
    return DEFAULT_ROOT / settings_sha256(settings)[:16]


def settings_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key (cache X, now Y)`` for every setting that differs."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += settings_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} (cache {_short(a)}, now {_short(b)})")
    return out


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_settings(folder: Path, old: dict, new: dict) -> None:
    """Refuse a cache built with other settings, naming each difference and the fix."""
    diffs = settings_differences(old, new)
    if diffs:
        raise InputError(f"the latent cache {folder} was built with other settings, so it does not fit this run: "
                         f"{'; '.join(diffs)}. Delete {folder} to rebuild it there, or set data.cache to another "
                         f"folder (data.cache=null picks one per settings under {DEFAULT_ROOT}/).")


# ---- building ------------------------------------------------------------------------------------

@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on ``folder/.lock``: one builder at a time (others wait, then reuse its work)."""
    with open(folder / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print(f"cache: another process is building {folder}; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start_cache(folder: Path, settings: dict, dataset: Dataset) -> dict:
    """Write the plan of an empty cache (``records.jsonl``, then ``index.json``); returns the index."""
    lines = [json.dumps({**r.to_dict(), "caption_sha256": caption_sha256(r.caption)}, ensure_ascii=False) + "\n"
             for r in dataset.records]
    body = "".join(lines).encode("utf-8")
    atomic_write_bytes(folder / RECORDS, body)
    index = {"format": CACHE_FORMAT, "settings": settings, "settings_sha256": settings_sha256(settings),
             "dataset": dataset.summary(), "num_records": len(lines), "records_sha256": hashlib.sha256(body).hexdigest(),
             "complete": False}
    write_index(folder, index)
    return index


def write_index(folder: Path, index: dict) -> None:
    atomic_write_text(folder / INDEX, json.dumps(index, indent=1, ensure_ascii=False) + "\n")


def ensure_cache(recipe: RecipeBase, components: WanComponents, folder: Path | None = None,
                 progress: bool = True) -> Path:
    """Build (or resume, or reuse if complete and matching) the latent cache for ``recipe.data.root``; returns its folder."""
    data = recipe.data
    if data.root is None:
        raise InputError("data.root is not set; give the dataset folder (`pyrawan calibrate DATA_DIR`, or "
                         "data.root=PATH in the recipe or on the command line).")
    scanned = scan_dataset(Path(data.root), data)
    settings = cache_settings(recipe, components, scanned)
    folder = Path(folder or data.cache or default_cache_folder(settings))
    dataset = None
    if read_index(folder) is None:
        dataset = _probed(scanned, recipe, progress)
        console.print(f"data: {dataset.describe()}")
        apply_policy(dataset, data.on_bad_sample)
        folder.mkdir(parents=True, exist_ok=True)
    with build_lock(folder):
        index = read_index(folder)
        if index is None:
            index = start_cache(folder, settings, dataset)
        else:
            check_settings(folder, index["settings"], settings)
            stored = replace(scanned, bad=[BadEntry(**b) for b in index["dataset"]["bad"]])
            if dataset is None:
                console.print(f"data: {describe_summary(index['dataset'])}")
            apply_policy(stored, data.on_bad_sample)
        if index["complete"]:
            console.print(f"cache: {folder} is complete ({_count(index)} videos); reusing it")
            return folder
        console.print(f"cache: encoding the latent cache into {folder} (later runs reuse it: data.cache={folder})",
                      markup=False)
        build_shards(folder, index, recipe, components, progress)
    return folder


def _probed(scanned: Dataset, recipe: RecipeBase, progress: bool) -> Dataset:
    v = recipe.video
    with progress_bar("data: checking videos", len(scanned.records), progress) as advance:
        return probe_dataset(scanned, v.frames, v.fps, advance, size=(v.height, v.width))


def _count(index: dict) -> int:
    return sum(len(shard["records"]) for shard in index.get("shards", []))


def build_shards(folder: Path, index: dict, recipe: RecipeBase, components: WanComponents, progress: bool) -> None:
    """Encode every shard that is not finished yet (each marked done by its entry file), then complete the index."""
    shard_dir = folder / SHARDS
    shard_dir.mkdir(exist_ok=True)
    for leftover in shard_dir.glob(".*.tmp-*"):  # a write that a kill interrupted
        leftover.unlink()
    entries = {entry["index"]: entry for entry in finished_shards(folder)}
    todo = [k for k in range(num_shards(index)) if k not in entries]
    size, records = index["settings"]["shard_size"], read_records(folder, index)
    if entries:
        console.print(f"cache: resuming {folder}: {len(entries)} of {num_shards(index)} shards done")
    texts = {sha for entry in entries.values() for sha in entry["texts"]}
    remaining = sum(len(records[k * size:(k + 1) * size]) for k in todo)
    kill_after = int(os.environ.get(KILL_ENV, "0") or 0)
    with progress_bar("cache: encoding videos", remaining, progress) as advance:
        for written, k in enumerate(todo, 1):
            entries[k] = write_shard(folder, k, records, index["settings"], recipe, components, texts, advance)
            atomic_write_text(folder / SHARDS / f"{k:05d}.json", json.dumps(entries[k], ensure_ascii=False))
            if kill_after and written >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
    index["shards"] = [entries[k] for k in sorted(entries)]
    index["failed"] = [f for entry in index["shards"] for f in entry["failed"]]
    index["complete"] = True
    write_index(folder, index)
    console.print(f"cache: {folder} holds {_count(index)} videos in {len(index['shards'])} shards"
                  + (f"; {len(index['failed'])} failed to decode and were skipped" if index["failed"] else ""))


def write_shard(folder: Path, k: int, records: list[dict], settings: dict, recipe: RecipeBase,
                components: WanComponents, texts: set[str], advance) -> dict:
    """Encode shard ``k`` (its records' stage latents and new captions), write it atomically; its entry."""
    size = settings["shard_size"]
    tensors, positions, failed, new_captions = {}, [], [], {}
    for pos in range(k * size, min((k + 1) * size, len(records))):
        rec = records[pos]
        latents = encode_record(rec, recipe, components, settings)
        advance()
        if isinstance(latents, str):
            failed.append({"id": rec["id"], "video": rec["video"], "error": latents})
            continue
        tensors.update({f"{pos}/{s}": z for s, z in enumerate(latents)})
        positions.append(pos)
        if rec["caption_sha256"] not in texts:
            new_captions[rec["caption_sha256"]] = rec["caption"]
    if new_captions:
        embeddings = caption_embeddings(components, list(new_captions.values()), settings["max_sequence_length"])
        tensors.update({f"text/{sha}": e for sha, e in zip(new_captions, embeddings)})
        texts.update(new_captions)
    body = save_tensors(tensors, metadata={"format": CACHE_FORMAT, "shard": str(k)})
    name = f"{SHARDS}/{k:05d}.safetensors"
    atomic_write_bytes(folder / name, body)
    return {"index": k, "file": name, "records": positions, "texts": list(new_captions), "failed": failed,
            "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def encode_record(rec: dict, recipe: RecipeBase, components: WanComponents, settings: dict) -> list[torch.Tensor] | str:
    """Stage latents of one record; under ``skip`` a video that fails to decode gives its error text instead."""
    v, p = recipe.video, recipe.pyramid
    path = Path(settings["dataset_root"]) / rec["video"]
    try:
        clip = load_clip(path, v.frames, v.height, v.width, v.fps)
    except InputError as err:
        if recipe.data.on_bad_sample == "fail":
            raise InputError(f"{err} (while encoding; data.on_bad_sample = fail). Rerun with data.on_bad_sample=skip "
                             f"to skip it and resume from the finished shards; fixing or removing {rec['video']} "
                             f"changes the dataset, which starts a new cache.") from None
        return str(err).split(". ")[0]
    latents = stage_latents(clip, components, cached_stages(p), p.stage_data, p.resizer, p.keep_time)
    check_shapes(latents, settings["stage_shapes"], rec["video"])
    return latents
