"""Small file-system helpers: streaming sha256 and atomic writes (temp name, then rename)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

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


def temp_sibling(path: str | Path, is_dir: bool = False) -> Path:
    """A unique hidden name next to ``path`` that keeps its suffix (so format guessing still works)."""
    path = Path(path)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    suffix = "" if is_dir else path.suffix
    return path.with_name(f".{path.stem if suffix else path.name}.tmp-{tag}{suffix}")


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
