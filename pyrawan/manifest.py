"""Artifact manifests: ``manifest.json`` at the root of every output folder (eval-and-io.md section 5.5).

A manifest records how an artifact was made (kind, resolved recipe and its sha256, the input
artifacts by manifest sha256, versions, git revision, command line) and what it holds (every file
with its size and sha256). ``verify`` rechecks the files, ``require_verified`` is what a consumer
calls on its inputs, ``lineage`` follows the inputs back, and ``check_output`` / ``artifact_dir``
(in ``pyrawan.outputs``, re-exported here) make sure an interrupted or concurrent command never leaves
a folder that looks complete nor replaces one it did not write.
"""
from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from pyrawan import __version__
from pyrawan.errors import InputError
from pyrawan.fsutil import atomic_write_text, sha256_file
from pyrawan.recipe import recipe_sha256

SCHEMA = "pyrawan.artifact/1"
MANIFEST = "manifest.json"


# ---- writing -------------------------------------------------------------------------------------

def utc_now() -> datetime:
    """The current time in UTC (pass it as ``started`` when a command begins)."""
    return datetime.now(timezone.utc)


def _iso(moment: datetime | float) -> str:
    """``2025-01-31T12:00:00Z`` for a datetime or a ``time.time()`` value."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_manifest(
    out_dir: str | Path,
    kind: str,
    resolved_recipe: dict | None,
    inputs: Sequence[str | Path] = (),
    metrics: dict | None = None,
    started: datetime | float | None = None,
    command: Sequence[str] | None = None,
    notes: str | None = None,
) -> Path:
    """Hash every file under ``out_dir`` and write ``out_dir/manifest.json`` atomically; return its path.

    ``inputs`` are the folders (artifacts, or plain data) the output was made from; their paths are
    recorded relative to ``out_dir``. ``started`` is a datetime or a ``time.time()`` value (default:
    now). Non-finite metric values are stored as strings ("inf", "nan").
    """
    out_dir = Path(out_dir)
    now = utc_now()
    manifest = {
        "schema": SCHEMA,
        "kind": kind,
        "created_utc": {"start": _iso(now if started is None else started), "end": _iso(now)},
        "recipe": None if resolved_recipe is None else {
            "sha256": recipe_sha256(resolved_recipe), "resolved": resolved_recipe},
        "inputs": [_input_entry(out_dir, Path(p)) for p in inputs],
        "outputs": list_outputs(out_dir),
        "metrics": _json_safe(metrics or {}),
        "versions": versions(),
        "git": git_info(),
        "command": list(sys.argv if command is None else command),
        "notes": notes,
    }
    text = json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return atomic_write_text(out_dir / MANIFEST, text)


def _input_entry(out_dir: Path, path: Path) -> dict:
    """``{"path", "kind", "manifest_sha256"}`` of one input (kind and hash are null for plain data)."""
    try:
        shown = os.path.relpath(path.resolve(), out_dir.resolve())
    except ValueError:  # another drive (Windows)
        shown = str(path.resolve())
    if not (path / MANIFEST).is_file():
        return {"path": Path(shown).as_posix(), "kind": None, "manifest_sha256": None}
    return {"path": Path(shown).as_posix(), "kind": read_manifest(path).get("kind"),
            "manifest_sha256": manifest_sha256(path)}


def _is_temp(relative: PurePosixPath) -> bool:
    """Temporary names written by ``fsutil`` (``.name.tmp-...``) anywhere in the path."""
    return any(part.startswith(".") and ".tmp-" in part for part in relative.parts)


def _artifact_files(art_dir: Path) -> list[str]:
    """Relative posix paths of the files an artifact holds (not its manifest, not temp files), sorted."""
    files = []
    for path in art_dir.rglob("*"):
        relative = PurePosixPath(path.relative_to(art_dir).as_posix())
        if path.is_file() and str(relative) != MANIFEST and not _is_temp(relative):
            files.append(str(relative))
    return sorted(files)


def list_outputs(art_dir: str | Path) -> list[dict]:
    """``[{"path", "bytes", "sha256"}]`` for every file of the artifact."""
    art_dir = Path(art_dir)
    return [{"path": rel, "bytes": (art_dir / rel).stat().st_size, "sha256": sha256_file(art_dir / rel)}
            for rel in _artifact_files(art_dir)]


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats (e.g. PSNR of identical videos) by strings so the JSON stays strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def versions(packages: Sequence[str] = ("torch", "diffusers", "transformers")) -> dict[str, str | None]:
    """Versions of pyrawan, Python and ``packages`` (from package metadata, without importing; missing = None)."""
    found: dict[str, str | None] = {"pyrawan": __version__, "python": platform.python_version()}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_info() -> dict | None:
    """``{"revision", "dirty"}`` of the git checkout pyrawan runs from, or None (no git, no repo, no commit)."""
    package = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=package, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != package.parent:
            return None  # pyrawan is installed inside some other repository
        return {"revision": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return None


# ---- reading and verifying -----------------------------------------------------------------------

def read_manifest(art_dir: str | Path) -> dict:
    """The manifest of an artifact folder; ``InputError`` if it is missing or damaged."""
    path = Path(art_dir) / MANIFEST
    if not Path(art_dir).is_dir():
        raise InputError(f"{art_dir} does not exist or is not a folder; give the folder a pyrawan command wrote.")
    if not path.is_file():
        raise InputError(f"{art_dir} is not a pyrawan artifact: it has no {MANIFEST}. Either this is the wrong "
                         f"folder or the command that writes it did not finish; rerun that command.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} is not valid JSON ({err}); the artifact is damaged, rerun the command that "
                         f"made it.") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{path}: schema is {found!r} but this pyrawan reads {SCHEMA!r}; rebuild the artifact "
                         f"with this version.")
    return data


def manifest_sha256(art_dir: str | Path) -> str:
    """sha256 of the artifact's ``manifest.json`` file (how inputs are pinned)."""
    path = Path(art_dir) / MANIFEST
    if not path.is_file():
        raise InputError(f"{art_dir} is not a pyrawan artifact: it has no {MANIFEST}.")
    return sha256_file(path)


@dataclass(frozen=True)
class Finding:
    """One difference between an artifact folder and its manifest. ``fatal=False`` = a warning."""

    path: str
    problem: str  # missing | size | sha256 | unsafe | unlisted | symlink
    detail: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}"


def check_artifact(art_dir: str | Path) -> list[Finding]:
    """Every listed file is present with its size and sha256; every symbolic link is reported.

    A symbolic link is a warning when it points to a file inside the artifact and an error when it
    leaves the folder, loops back onto a folder that holds it, or is broken.

    A file the manifest does not list is an error inside a folder that holds listed files (a model
    component such as ``transformer/``, whose folder is loaded as a whole) and a warning elsewhere.
    """
    art_dir = Path(art_dir)
    outputs = read_manifest(art_dir).get("outputs")
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and {"path", "bytes", "sha256"} <= o.keys()
                                                 for o in outputs):
        raise InputError(f"{art_dir / MANIFEST}: 'outputs' must be a list of {{path, bytes, sha256}}; the manifest "
                         f"is damaged, rerun the command that made it.")
    links = [_symlink_finding(art_dir, link) for link in _symlinks(art_dir)]
    bad_links = {f.path for f in links if f.fatal}
    findings = links + [f for entry in outputs if (f := _check_file(art_dir, entry)) is not None
                        and f.path not in bad_links]
    listed = {str(entry["path"]) for entry in outputs}
    loaded = {PurePosixPath(rel).parts[0] for rel in listed if len(PurePosixPath(rel).parts) > 1}
    for rel in _artifact_files(art_dir):
        if rel in listed:
            continue
        top = PurePosixPath(rel).parts[0] if len(PurePosixPath(rel).parts) > 1 else None
        if top in loaded:
            findings.append(Finding(rel, "unlisted", f"not listed in the manifest but inside {top}/, a folder whose "
                                    f"files are loaded (added after the manifest was written); remove it"))
        else:
            findings.append(Finding(rel, "unlisted", "not listed in the manifest (added after it was written)",
                                    fatal=False))
    return findings


def _check_file(art_dir: Path, entry: dict) -> Finding | None:
    """The finding for one listed output, or None if it matches."""
    rel = str(entry["path"])
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute() or ".." in pure.parts:
        return Finding(rel, "unsafe", "path is not inside the artifact folder")
    path = art_dir / pure
    if not _stays_inside(art_dir, path):
        return Finding(rel, "unsafe", "resolves (through a symbolic link) outside the artifact folder; not read")
    if not path.is_file():
        return Finding(rel, "missing", "file is missing")
    size = path.stat().st_size
    if size != entry["bytes"]:
        return Finding(rel, "size", f"size changed: {entry['bytes']} bytes in the manifest, {size} on disk")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        return Finding(rel, "sha256", f"contents changed: sha256 {digest[:12]}... on disk, "
                                      f"{str(entry['sha256'])[:12]}... in the manifest")
    return None


def _stays_inside(art_dir: Path, path: Path) -> bool:
    """True when ``path``, symlinks resolved, is inside ``art_dir`` (a missing path counts as inside)."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return resolved.is_relative_to(art_dir.resolve()) and resolved != art_dir.resolve()


def _symlinks(art_dir: Path) -> list[Path]:
    """Every symbolic link below ``art_dir``, to files or folders (linked folders are not entered)."""
    found = []
    for parent, folders, files in os.walk(art_dir):
        found += [Path(parent) / name for name in folders + files if (Path(parent) / name).is_symlink()]
    return sorted(found)


def _symlink_finding(art_dir: Path, link: Path) -> Finding:
    """A warning for a link to a file or folder inside the artifact; an error for one that leaves it, loops
    back onto a folder that holds it (e.g. a link to ``.``), or is broken."""
    rel = link.relative_to(art_dir).as_posix()
    shown = os.readlink(link)
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):
        return Finding(rel, "symlink", f"symbolic link to {shown!r}, which is broken or loops; remove it")
    if not target.is_relative_to(art_dir.resolve()):
        return Finding(rel, "symlink", f"symbolic link to {shown!r}, outside the artifact folder: a consumer "
                                       f"would read a file the manifest does not pin; remove it")
    if target.is_dir() and link.parent.resolve().is_relative_to(target):
        return Finding(rel, "symlink", f"symbolic link to {shown!r}, a folder that holds the link itself (a loop); "
                                       f"remove it")
    return Finding(rel, "symlink", f"symbolic link to {shown!r} inside the artifact (pyrawan never writes "
                                   f"links; the file it points to is what is checked)", fatal=False)


def verify(art_dir: str | Path) -> list[str]:
    """Problems that make the artifact untrustworthy (missing or changed files); empty = verified."""
    return [str(f) for f in check_artifact(art_dir) if f.fatal]


def require_verified(art_dir: str | Path, what: str = "input") -> dict:
    """Raise ``InputError`` unless ``art_dir`` verifies; return its manifest. Consumers call this on inputs."""
    problems = verify(art_dir)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise InputError(f"{what} {art_dir} does not verify: {shown}. Its files changed after {MANIFEST} was "
                         f"written; rebuild it with the command recorded in its manifest (details: "
                         f"`pyrawan verify {art_dir}`).")
    return read_manifest(art_dir)


def verify_if_artifact(path: str | Path, what: str = "input") -> bool:
    """True (after ``require_verified``) when ``path`` is a pyrawan artifact; False for anything else
    (a preset name, a hub id, a plain folder), which callers then do not record as a parent."""
    if not (Path(path) / MANIFEST).is_file():
        return False
    require_verified(path, what)
    return True


def lineage(art_dir: str | Path) -> list[dict]:
    """The artifact and its inputs, recursively, depth first (cycle-safe).

    Each node: ``{"path", "kind", "depth", "parent" (index of the parent node or None),
    "manifest_sha256", "status"}`` with status ``ok``, ``changed`` (its manifest differs from the
    one its child recorded), ``missing``, ``data`` (an input that is not an artifact), ``repeated``
    (already listed above) or ``cycle``.
    """
    nodes: list[dict] = []
    read_manifest(art_dir)  # the root must be an artifact
    _visit(Path(art_dir), None, None, nodes, frozenset(), set())
    return nodes


def _visit(path: Path, entry: dict | None, parent: int | None, nodes: list[dict], ancestors: frozenset,
           seen: set) -> None:
    """Append the node for ``path`` (``entry``: how its child recorded it) and recurse into its inputs."""
    index = len(nodes)
    node = {"path": os.path.normpath(path), "kind": (entry or {}).get("kind"),
            "depth": 0 if parent is None else nodes[parent]["depth"] + 1, "parent": parent,
            "manifest_sha256": None, "status": "ok"}
    nodes.append(node)
    if entry is not None and entry.get("manifest_sha256") is None:
        node["status"] = "data"
        return
    if not (path / MANIFEST).is_file():
        node["status"] = "missing"
        return
    node["manifest_sha256"] = manifest_sha256(path)
    if entry is not None and entry.get("manifest_sha256") != node["manifest_sha256"]:
        node["status"] = "changed"
    key = path.resolve()
    if key in ancestors or key in seen:
        node["status"] = "cycle" if key in ancestors else "repeated"
        return
    seen.add(key)
    manifest = read_manifest(path)
    node["kind"] = manifest.get("kind")
    children = manifest.get("inputs") or []
    if not isinstance(children, list) or not all(isinstance(c, dict) and isinstance(c.get("path"), str) and c["path"]
                                                 for c in children):
        raise InputError(f"{path / MANIFEST}: 'inputs' must be a list of {{path, kind, manifest_sha256}} entries; the "
                         f"manifest is damaged, rerun the command that made {path}.")
    for child in children:
        child_path = Path(child["path"])
        child_path = child_path if child_path.is_absolute() else path / child_path
        _visit(child_path, child, index, nodes, ancestors | {key}, seen)
