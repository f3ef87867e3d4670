"""Writing outputs safely: check, claim, write under a temporary name, re-check, rename.

Every command that writes an output goes through ``check_output`` (before any work) and
``artifact_dir`` (around the writing): the output is checked (not a file, not the working folder,
not an input, writable, replaceable only when it is an artifact of the same kind holding only the
files its manifest lists), claimed for this process (``.NAME.lock`` beside it, so a second writer
stops at once; a claim whose process is gone is taken over, and that run's temporary folders are
removed), written under a temporary name, checked again, and only then renamed into place.
"""
from __future__ import annotations

import atexit
import contextlib
import fnmatch
import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from pyrawan.errors import InputError, RunError
from pyrawan.fsutil import (ClaimTaken, atomic_write_text, claim, lock_path, release, remove_stale_temps, temp_sibling,
                            writable_folder)
from pyrawan.manifest import MANIFEST, _artifact_files, _iso, read_manifest, utc_now

FOLDER_MARKER = ".pyrawan-folder.json"  # marks a folder a command writes in place (the demo)
_CLAIMS: dict[Path, list[Path]] = {}      # outputs this process has claimed -> folders it created for them


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def _rank0() -> bool:
    return int(os.environ.get("RANK", "0") or 0) == 0


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def place_problem(out: Path, inputs: Sequence[str | Path | None] = ()) -> str | None:
    """Why nothing may be written at ``out`` at all (working folder, a file, an input, not writable); None if fine."""
    resolved, cwd = out.resolve(), Path.cwd().resolve()
    if str(out) in ("", ".") or _inside(cwd, resolved) or resolved == Path.home().resolve():
        return (f"-o/--out {out} is the working folder, one that holds it, or your home folder; a command replaces "
                f"its whole output folder, so give a new folder name instead (e.g. -o runs/{resolved.name or 'out'}).")
    if out.is_symlink() and not out.exists():
        return f"-o/--out {out} is a broken symbolic link; remove it or choose another folder."
    if out.exists() and not out.is_dir():
        return f"-o/--out {out} exists and is a file, not a folder; choose another output folder (a new name)."
    for given in inputs:
        if given is None or not str(given) or not Path(given).exists():
            continue  # a preset name or hub id: not a local path
        source = Path(given).resolve()
        if _inside(source, resolved):
            return (f"-o/--out {out} is (or holds) an input of this run, {given}; writing there would destroy the "
                    f"input. Choose another -o/--out folder.")
        if _inside(resolved, source) and (source / MANIFEST).is_file():
            return (f"-o/--out {out} lies inside the input artifact {given}; writing there would change that "
                    f"artifact. Choose an -o/--out folder outside it.")
    denied = writable_folder(out)
    if denied is not None:
        return (f"cannot write -o/--out {out}: the folder {denied} is read-only or not writable by you; choose "
                f"an -o/--out folder you can write to, or fix its permissions.")
    return None


def unlisted_files(art_dir: Path, manifest: dict) -> list[str]:
    """Files of ``art_dir`` that its manifest does not list (added after it was written)."""
    outputs = manifest.get("outputs")
    listed = {o.get("path") for o in outputs if isinstance(o, dict)} if isinstance(outputs, list) else set()
    return [rel for rel in _artifact_files(art_dir) if rel not in listed]


def replace_problem(out: Path, overwrite: bool, kind: str | None = None, force: bool = False) -> str | None:
    """Why the existing folder ``out`` may not be replaced (None when it is new, empty, or replaceable)."""
    if not out.is_dir() or not any(out.iterdir()):
        return None
    if not overwrite:
        return (f"output {out} already exists and is not empty; choose another output folder, or pass --overwrite to "
                f"replace it (the old one is kept until the new one is complete).")
    if not (out / MANIFEST).is_file():
        return (f"output {out} is not a pyrawan artifact (no {MANIFEST}); refusing to replace it even with "
                f"--overwrite, since it was not written by pyrawan. Choose another output folder.")
    try:
        manifest = read_manifest(out)
    except InputError as err:
        return f"output {out} has a damaged manifest, so refusing to replace it even with --overwrite ({err})"
    if kind is not None and manifest.get("kind") != kind:
        return (f"output {out} is a {manifest.get('kind')!r} artifact and this command writes {kind!r} artifacts; "
                f"--overwrite replaces only an artifact of the same kind. Choose another output folder.")
    extra = unlisted_files(out, manifest)
    if extra and not force:
        shown = ", ".join(extra[:8]) + (f" and {len(extra) - 8} more" if len(extra) > 8 else "")
        return (f"output {out} holds {len(extra)} file(s) that its {MANIFEST} does not list ({shown}); --overwrite "
                f"would delete them. Move them out of {out} first, or choose another output folder.")
    return None


def check_output(out: str | Path, overwrite: bool, inputs: Sequence[str | Path | None] = (), kind: str | None = None,
                 force: bool = False, claim_it: bool | None = None) -> None:
    """Refuse an output that must not be written, before any work, and claim it for this process.

    Refused: ``.``/the working folder, a file, an input of the run (``inputs``: paths, preset names
    are ignored), a folder that is not writable, a non-empty folder without ``overwrite``, and with
    ``overwrite`` anything but an artifact of ``kind`` (any kind when None) that holds only the files
    its manifest lists (``force`` allows unlisted ones). ``claim_it`` (default: on rank 0) creates
    ``.NAME.lock`` so that a second writer stops at once; it is released when the command ends.
    """
    out = Path(out)
    problem = place_problem(out, inputs) or replace_problem(out, overwrite, kind, force)
    if problem:
        raise InputError(problem)
    if claim_it if claim_it is not None else _rank0():
        claim_output(out)


def claim_output(out: Path) -> None:
    """Claim ``out`` for this process (see ``fsutil.claim``) and clear temporary folders of killed runs."""
    key = out.absolute()
    if key in _CLAIMS:
        return
    created: list[Path] = []
    try:
        _, stale = claim(out, created)
    except ClaimTaken as taken:
        raise InputError(f"another pyrawan run (pid {taken.owner.get('pid')} on {taken.owner.get('host')}) is writing "
                         f"{out} right now; wait for it to finish or choose another output folder. (If no such run exists, "
                         f"delete {lock_path(out)}.)") from None
    if not _CLAIMS:
        atexit.register(release_claims)
    _CLAIMS[key] = created
    if stale:
        _note(f"{out} was claimed by a run that is gone (killed?); took it over.")
    for leftover in remove_stale_temps(out):
        _note(f"removed {leftover}, the unfinished output of a run that was killed.")


def release_claims() -> None:
    """Release every claim this process holds (the CLI calls it when a command ends)."""
    for out in list(_CLAIMS):
        _release_one(out)


def _release_one(out: Path) -> None:
    """Release the claim on ``out`` and remove the folders created for it that stayed empty."""
    created = _CLAIMS.pop(out.absolute(), None)
    if created is None:
        return
    release(out)
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def artifact_dir(out: str | Path, overwrite: bool = False, require_manifest: bool = True,
                 inputs: Sequence[str | Path | None] = (), kind: str | None = None,
                 force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder ``.{name}.tmp-XXXX`` to write into; rename it to ``out`` on success.

    ``check_output`` runs first (and claims ``out``). If the body raises, the temporary folder is
    removed and ``out`` is untouched. Before the rename ``out`` is checked again (with the kind the
    new manifest records): a folder that appeared or changed meanwhile is never replaced; the finished
    result is then kept under a free name beside it and a ``RunError`` says where. With
    ``require_manifest`` the body must have written ``manifest.json``.
    """
    out = Path(out)
    check_output(out, overwrite, inputs, kind, force, claim_it=True)
    tmp = temp_sibling(out, is_dir=True)
    tmp.mkdir()
    try:
        yield tmp
        if require_manifest and not (tmp / MANIFEST).is_file():
            raise RunError(f"the command finished without writing {MANIFEST}, so {out} was not created "
                           f"(a bug in the command: it must call write_manifest last).")
        made = _kind_of(tmp) or kind
        problem = replace_problem(out, overwrite, made, force) or (place_problem(out) if out.exists() else None)
        if problem:
            kept = _free_name(out)
            os.replace(tmp, kept)
            raise RunError(f"{out} changed while this run was working, so it was not replaced: {problem} The finished "
                           f"result is kept in {kept}; move it where you want it.")
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _release_one(out)


def _kind_of(folder: Path) -> str | None:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def _free_name(out: Path) -> Path:
    """``OUT-2``, ``OUT-3``, ...: the first that does not exist."""
    n = 2
    while out.with_name(f"{out.name}-{n}").exists():
        n += 1
    return out.with_name(f"{out.name}-{n}")


def fresh_folder(out: str | Path, kind: str, overwrite: bool = True, own: Sequence[str] = ()) -> Path:
    """Claim ``out`` and make it an empty folder for a command that writes in place (the demo).

    Only a new or empty folder, or one holding ``FOLDER_MARKER`` of ``kind`` (written here by an
    earlier run of the same command), is replaced; anything else is refused untouched. ``own``:
    glob patterns of the top-level names the command writes; when given, a marked folder that also
    holds other entries (files a user added) is refused, naming them.
    """
    out = Path(out)
    problem = place_problem(out)
    if problem is None and out.is_dir() and any(out.iterdir()):
        try:
            marker = json.loads((out / FOLDER_MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            marker = None
        foreign = sorted(p.name for p in out.iterdir() if own and p.name != FOLDER_MARKER and
                         not p.name.startswith(".") and not any(fnmatch.fnmatch(p.name, pat) for pat in own))
        if not isinstance(marker, dict) or marker.get("kind") != kind:
            problem = (f"{out} exists and was not written by `pyrawan {kind}` (it has no {FOLDER_MARKER} of kind "
                       f"{kind!r}); refusing to delete it. Give another -o folder, or remove it yourself.")
        elif foreign:
            problem = (f"{out} holds an earlier `pyrawan {kind}` run and also {', '.join(foreign[:8])}, which "
                       f"`pyrawan {kind}` did not write; refusing to delete them. Move them out or choose another -o.")
        elif not overwrite:
            problem = f"{out} holds an earlier `pyrawan {kind}` run; pass --overwrite to replace it or choose another -o."
    if problem:
        raise InputError(problem)
    claim_output(out)
    if out.is_dir():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    atomic_write_text(out / FOLDER_MARKER, json.dumps({"kind": kind, "created_utc": _iso(utc_now())}) + "\n")
    return out


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an old ``out`` is moved aside first and restored if the rename fails."""
    old = None
    if out.is_dir():
        if any(out.iterdir()):
            old = temp_sibling(out, is_dir=True)
            os.replace(out, old)
        else:
            out.rmdir()
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
