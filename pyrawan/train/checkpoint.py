"""Resumable checkpoints: written atomically, verified by hash before loading.

Single-process and DDP checkpoints hold safetensors and JSON only (nothing is unpickled). DeepSpeed writes its own
``.pt`` files, which ``torch.load`` unpickles on ``--resume``: resume only from run folders you trust.

Layout of ``OUT.run/checkpoints/step-00000010/``::

    model.safetensors, optimizer.safetensors, optimizer.json   (single/DDP; DeepSpeed: deepspeed/ in its format)
    ema.safetensors          EMA shadow weights (when enabled)
    rng-<rank>.json          python, numpy, torch CPU and CUDA generator states of each rank
    state.json               step, micro-batches consumed, world size, engine, resolved recipe
    checkpoint.json          written last: sha256 and size of every other file (the complete-marker)

Every rank writes into the same temporary folder ``.step-00000010.tmp-XXXX`` (its path comes from
rank 0), then rank 0 hashes the files, writes ``checkpoint.json`` and renames the folder. A folder
without a valid ``checkpoint.json``, or with a file that does not match it, is skipped on resume.
"""
from __future__ import annotations

import base64
import json
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from pyrawan import dist
from pyrawan.fsutil import atomic_write_text, sha256_file, temp_sibling

MARKER = "checkpoint.json"
FORMAT = "pyrawan.checkpoint/1"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


# ---- optimiser state without pickle --------------------------------------------------------------

def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """``optimizer.state_dict()`` -> (tensors named ``state.<param>.<key>``, JSON-able structure)."""
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], structure: dict) -> dict:
    """Inverse of ``flatten_optimizer`` (parameter indices come back as ints)."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    for name, value in structure["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": structure["param_groups"]}


# ---- random generator states ---------------------------------------------------------------------

def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states as JSON."""
    version, inner, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = [_b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {"python": [version, list(inner), gauss], "numpy": [name, keys.tolist(), pos, has_gauss, cached],
            "torch": _b64(torch.get_rng_state()), "cuda": cuda}


def set_rng_state(state: dict) -> None:
    version, inner, gauss = state["python"]
    random.setstate((version, tuple(inner), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


# ---- writing -------------------------------------------------------------------------------------

def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def save(root: Path, step: int, write: Callable[[Path], None], state: dict, keep: int) -> Path:
    """Write checkpoint ``step`` under ``root`` on every rank; ``write(folder)`` writes this rank's files.

    Collective: every rank must call it. Returns the final folder. Older checkpoints beyond the last
    ``keep`` are removed by rank 0.
    """
    rank = dist.world()[0]
    tmp = None
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(step_dir(root, step), is_dir=True)
        tmp.mkdir()
    tmp = Path(dist.broadcast(str(tmp) if tmp else None))
    write(tmp)
    (tmp / f"rng-{rank}.json").write_text(json.dumps(rng_state()))
    dist.barrier()
    final = step_dir(root, step)
    if rank == 0:
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        marker = {"format": FORMAT, "step": step, "files": {
            p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files}}
        atomic_write_text(tmp / MARKER, json.dumps(marker, indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        prune(root, keep)
    dist.barrier()
    return final


def prune(root: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` step folders, and leftover temporary folders."""
    steps = sorted((p for p in root.iterdir() if _STEP_DIR.match(p.name)), reverse=True)
    for old in steps[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in root.glob(".step-*.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


# ---- finding and verifying -----------------------------------------------------------------------

def problem(folder: Path) -> str | None:
    """Why ``folder`` is not a complete checkpoint (None when every file matches its marker)."""
    try:
        marker = json.loads((folder / MARKER).read_text())
        files = marker["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"no valid {MARKER} (it was interrupted while being written)"
    if not isinstance(marker, dict) or marker.get("format") != FORMAT:
        return f"{MARKER} has format {marker.get('format') if isinstance(marker, dict) else None!r}, not {FORMAT!r}"
    if not isinstance(files, dict) or not all(isinstance(e, dict) and {"bytes", "sha256"} <= e.keys()
                                              for e in files.values()):
        return f"{MARKER} is malformed (its 'files' are not {{path: {{sha256, bytes}}}})"
    for rel, entry in files.items():
        path = folder / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            return f"{MARKER} lists {rel}, a path outside the checkpoint"
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            return f"{rel} does not match its sha256 in {MARKER} (corrupt)"
    return content_problem(folder, files)


STATE_KEYS = {"step": int, "recipe": dict}
COUNTERS = ("consumed", "iteration")     # a loop's counters (finetune: consumed; distill: iteration)


def content_problem(folder: Path, files: dict) -> str | None:
    """Why files that match their hashes still cannot be resumed from (damaged state, JSON or tensors)."""
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "state.json is missing or is not valid JSON (damaged state)"
    if not isinstance(state, dict):
        return "state.json is not a JSON object (damaged state)"
    for key, kind in STATE_KEYS.items():
        if key not in state and key != "step":
            continue                                    # optional (e.g. tests write only the step)
        if not isinstance(state.get(key), kind) or isinstance(state[key], bool) or (kind is int and state[key] < 0):
            return f"state.json has no valid {key!r} (damaged state)"
    if not any(key in state for key in COUNTERS):
        return f"state.json has none of the loop counters {', '.join(COUNTERS)} (damaged state)"
    for key in COUNTERS:
        if key in state and (not isinstance(state[key], int) or state[key] < 0):
            return f"state.json has no valid {key!r} (damaged state)"
    for rel in files:
        path = folder / rel
        try:
            if rel.endswith(".json"):
                json.loads(path.read_text(encoding="utf-8"))
            elif rel.endswith(".safetensors"):
                with safe_open(str(path), framework="pt"):
                    pass
        except (OSError, ValueError, SafetensorError) as err:
            return f"{rel} is damaged ({type(err).__name__}: {str(err)[:120]})"
    return None


def latest(root: Path, report: Callable[[str], None] = print) -> Path | None:
    """The newest complete checkpoint under ``root``; incomplete or corrupt ones are reported and skipped."""
    if not root.is_dir():
        return None
    for folder in sorted((p for p in root.iterdir() if _STEP_DIR.match(p.name)), reverse=True):
        why = problem(folder)
        if why is None:
            return folder
        report(f"checkpoint {folder} skipped: {why}")
    return None


def read_state(folder: Path) -> dict:
    return json.loads((folder / "state.json").read_text())


def restore_rng(folder: Path, rank: int) -> bool:
    """Restore this rank's generator states; False when the checkpoint has none for it."""
    path = folder / f"rng-{rank}.json"
    if not path.is_file():
        return False
    set_rng_state(json.loads(path.read_text()))
    return True


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))
