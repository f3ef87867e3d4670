"""Small file-system helpers: streaming sha256, atomic writes (temp name, then rename), output claims.

Temporary names are ``.NAME.tmp-PID-XXXXXXXX[.suffix]`` next to the target; a claim on an output is
the file ``.NAME.lock`` next to it, created exclusively, holding the owner's pid and host. Leftovers of
a killed process (its pid is gone) are removed by the next run that writes the same target.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHUNK_BYTES = 8 * 1024 * 1024


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks (equals the Hub's git-LFS ``oid``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(root: str | Path, under: str | Path = ".") -> dict[str, str]:
    """``{path relative to root (posix): sha256}`` for every file below ``root/under``, sorted."""
    root = Path(root)
    files = sorted(p for p in (root / under).rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in files}


NAME_BYTES = 120  # default cap, in UTF-8 bytes, of a file name made from user text (file systems allow 255)


def capped_name(text: str, suffix: str = "", max_bytes: int = NAME_BYTES, salt: str | None = None) -> str:
    """``text + suffix`` as a file name of at most ``max_bytes`` bytes of UTF-8.

    A longer ``text`` is cut at a character boundary and ends in ``~`` plus 8 hex digits of the sha256
    of the whole text, so different texts keep different names. ``salt`` (e.g. the source path of a
    copied file) always adds that tag, made from text and salt: two files of one name stay apart.
    Characters are kept as they are; callers refuse ``/`` and NUL where a name must match another tool's.
    """
    def utf8(value: str) -> bytes:
        return value.encode("utf-8", "surrogatepass")

    if len(utf8(text + suffix)) <= max_bytes and salt is None:
        return text + suffix
    tag = "~" + hashlib.sha256(utf8(text if salt is None else f"{text}\0{salt}")).hexdigest()[:8]
    room = max_bytes - len(utf8(tag + suffix))
    if room < 1:
        raise ValueError(f"max_bytes {max_bytes} leaves no room for a name with suffix {suffix!r}")
    return utf8(text)[:room].decode("utf-8", "ignore") + tag + suffix


def temp_sibling(path: str | Path, is_dir: bool = False) -> Path:
    """A unique hidden name next to ``path`` that keeps its suffix (so format guessing still works)."""
    path = Path(path)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    suffix = "" if is_dir else path.suffix
    return path.with_name(f".{path.stem if suffix else path.name}.tmp-{tag}{suffix}")


_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}(?P<suffix>\.[^.]*)?$")


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists on this machine (signal 0 probes without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_temps(path: str | Path) -> list[Path]:
    """Temporary siblings of ``path`` (``temp_sibling`` names) whose writing process is gone."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    found = []
    for sibling in path.parent.iterdir():
        match = _TEMP.match(sibling.name)
        if not match or int(match["pid"]) == os.getpid() or pid_alive(int(match["pid"])):
            continue
        suffix = match["suffix"] or ""
        if match["name"] in (path.name, path.stem if suffix == path.suffix else None):
            found.append(sibling)
    return sorted(found)


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove ``stale_temps(path)`` (left by killed runs); returns what was removed."""
    removed = []
    for tmp in stale_temps(path):
        try:
            shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink()
        except OSError:
            continue
        removed.append(tmp)
    return removed


# ---- claims: one writer per output ---------------------------------------------------------------

def lock_path(path: str | Path) -> Path:
    """The claim file of ``path``: ``.NAME.lock`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def read_claim(path: str | Path) -> dict | None:
    """The owner ``{"pid", "host"}`` recorded in ``path``'s claim file, None if there is none ({} if unreadable)."""
    lock = lock_path(path)
    try:
        owner = json.loads(lock.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def claim_is_stale(owner: dict) -> bool:
    """A claim whose process is gone (on this host); unreadable claims count as stale."""
    pid, host = owner.get("pid"), owner.get("host")
    if not isinstance(pid, int):
        return True
    return host == socket.gethostname() and not pid_alive(pid)


CLAIM_WRITE_SECONDS = 10.0  # an empty claim file younger than this is being written, not stale


class ClaimTaken(Exception):
    """``claim`` found another live process writing the same output (``owner`` says which)."""

    def __init__(self, path: Path, owner: dict):
        super().__init__(f"{path} is claimed by pid {owner.get('pid')} on {owner.get('host')}")
        self.path, self.owner = path, owner


def claim(path: str | Path, created: list[Path] | None = None) -> tuple[Path, bool]:
    """Create ``path``'s claim file exclusively; returns ``(lock file, replaced a stale claim)``.

    Raises ``ClaimTaken`` when a live process holds it. Missing parent folders are created and
    appended to ``created`` (so a caller can remove them again if the run stops early).
    """
    path = Path(path)
    missing = [p for p in reversed(path.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    if created is not None:
        created.extend(missing)
    lock = lock_path(path)
    body = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
    replaced = False
    for _ in range(50):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = read_claim(path)
            if owner is None:
                continue  # released meanwhile
            if owner == {} and _age(lock) < CLAIM_WRITE_SECONDS:
                time.sleep(0.05)  # its owner is still writing it
                continue
            if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
                return lock, replaced  # this process holds it already
            if not claim_is_stale(owner):
                raise ClaimTaken(path, owner) from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            replaced = True
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        return lock, replaced
    raise ClaimTaken(path, read_claim(path) or {})


def _age(path: Path) -> float:
    """Seconds since ``path`` was modified (0 if it is gone)."""
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def release(path: str | Path) -> None:
    """Remove ``path``'s claim file if this process holds it."""
    owner = read_claim(path)
    if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            lock_path(path).unlink()


def first_existing(path: str | Path) -> Path:
    """``path`` or its nearest existing ancestor."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def writable_folder(path: str | Path) -> Path | None:
    """The folder where ``path`` would be created if this process cannot write there; None when it can.

    Checks the nearest existing ancestor with ``os.access`` and, since that says yes to root even on
    a read-only mount, by creating and removing a probe file there.
    """
    folder = first_existing(Path(path).absolute().parent)
    if not os.access(folder, os.W_OK | os.X_OK):
        return folder
    probe = folder / f".pyrawan-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError:
        return folder
    return None


IO_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
IO_DENIED = (errno.EROFS, errno.EACCES, errno.EPERM)


@contextlib.contextmanager
def atomic_path(path: str | Path, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path to write; on success rename it onto ``path``.

    For directories an existing ``path`` is replaced (removed just before the rename). On an
    exception the temporary file or directory is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path, is_dir=is_dir)
    try:
        yield tmp
        if is_dir and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (fsync'd temp file, then rename). Returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically. Returns ``path``."""
    return atomic_write_bytes(path, text.encode(encoding))


def json_safe(value: Any, as_string: bool = False) -> Any:
    """``value`` with every non-finite float, in nested dicts, lists and tuples, replaced for strict JSON.

    The replacement is None, or with ``as_string`` the float's name (``"nan"``, ``"inf"``, ``"-inf"``).
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value) if as_string else None
    if isinstance(value, dict):
        return {k: json_safe(v, as_string) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, as_string) for v in value]
    return value
