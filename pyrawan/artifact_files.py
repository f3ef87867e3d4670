"""The one door into an artifact: every file a command reads through an artifact is opened here.

``ArtifactFiles(folder)`` reads the artifact's manifest once; ``read_bytes(name)``, ``read_text``,
``read_jsonl`` and ``verified_path`` then give a file the artifact names only when

- the name is relative, without ``..`` (a plain posix path inside the folder),
- the path, symlinks resolved, stays inside the artifact folder,
- the manifest's ``outputs`` lists it, and its size and sha256 match at read time (``read_bytes``
  hashes the very bytes it returns, so nothing can change between the check and the use).

``referenced`` resolves a name that one artifact records for a file of itself *or* of one of
its input artifacts (``metrics.json`` of ``eval quality --samples`` names ``../samples/videos/...``):
the input must be listed in the manifest's ``inputs``, still be the artifact that was recorded (same
manifest sha256), and verify. A problem with the name is bad input (exit 2); a file that does not
match the manifest is an artifact that does not verify (exit 1). Writing has its own door
(``pyrawan.outputs``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath

from pyrawan.errors import InputError, RunError
from pyrawan.fsutil import sha256_file
from pyrawan.manifest import MANIFEST, manifest_sha256, read_manifest, require_verified


def inside(root: Path, path: Path) -> bool:
    """True when ``path`` (resolved) lies strictly inside ``root`` (resolved)."""
    return path != root and path.is_relative_to(root)


def safe_name(name: object) -> PurePosixPath | None:
    """``name`` as a relative posix path without ``..`` (``./`` and ``//`` dropped); None if it is not one."""
    if not isinstance(name, str) or not name or "\0" in name or "\\" in name:
        return None
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        return None
    return pure


class ArtifactFiles:
    """The files of one artifact folder, as its manifest lists them (``what`` names it in messages)."""

    def __init__(self, folder: str | Path, what: str = "artifact"):
        self.folder, self.what = Path(folder), what
        self.manifest = read_manifest(self.folder)
        outputs = self.manifest.get("outputs")
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("path"), str)
                                                     for o in outputs):
            raise InputError(f"{self.folder / MANIFEST}: 'outputs' must be a list of {{path, bytes, sha256}}; the "
                             f"manifest is damaged, rerun the command that made it.")
        self.outputs = {o["path"]: o for o in outputs}
        self._inputs: dict[Path, ArtifactFiles] = {}

    def _refuse(self, name: object, problem: str, fix: str, error: type = RunError):
        raise error(f"{self.what} {self.folder}: the file {name!r} {problem}; pyrawan reads only the files an "
                    f"artifact lists in its {MANIFEST}, inside its folder, unchanged. {fix}")

    def locate(self, name: object) -> tuple[Path, dict]:
        """``(resolved path, manifest entry)`` of a listed file inside the folder (not hashed yet)."""
        pure = safe_name(name)
        if pure is None:
            self._refuse(name, "is not a relative path inside the artifact (an absolute path, '..', or not a "
                               "file name)", "The artifact was made by hand or damaged; rebuild it with the "
                               "command recorded in its manifest.", InputError)
        rebuild = f"Rebuild it with the command recorded in its manifest (details: `pyrawan verify {self.folder}`)."
        entry = self.outputs.get(pure.as_posix())
        if entry is None:
            self._refuse(name, f"is not listed in its {MANIFEST}", rebuild)
        root = self.folder.resolve()
        try:
            path = (root / pure).resolve()
        except (OSError, RuntimeError):  # a symlink loop
            self._refuse(name, "is a symbolic link that loops", rebuild)
        if not inside(root, path):
            self._refuse(name, f"is a symbolic link to {path}, outside the artifact folder", rebuild)
        if not path.is_file():
            self._refuse(name, "is missing (or not a regular file)", rebuild)
        if path.stat().st_size != entry.get("bytes"):
            self._refuse(name, f"has {path.stat().st_size} bytes, the manifest says {entry.get('bytes')}", rebuild)
        return path, entry

    def _check_digest(self, name: str, digest: str, entry: dict) -> None:
        if digest != entry.get("sha256"):
            self._refuse(name, f"changed after the manifest was written (sha256 {digest[:12]}... on disk, "
                               f"{str(entry.get('sha256'))[:12]}... in the manifest)",
                         f"Rebuild it with the command recorded in its manifest (details: `pyrawan verify "
                         f"{self.folder}`).")

    def read_bytes(self, name: str) -> bytes:
        """The file's bytes, refused unless they are the ones the manifest lists."""
        path, entry = self.locate(name)
        data = path.read_bytes()
        self._check_digest(name, hashlib.sha256(data).hexdigest(), entry)
        return data

    def verified_path(self, name: str) -> Path:
        """The file's resolved path after checking its hash (for readers that need a path, e.g. large weights)."""
        path, entry = self.locate(name)
        self._check_digest(name, sha256_file(path), entry)
        return path

    def read_text(self, name: str) -> str:
        try:
            return self.read_bytes(name).decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{self.what} {self.folder}: {name} is not UTF-8 text ({err}); rebuild the "
                             f"artifact.") from None

    def read_json(self, name: str):
        try:
            return json.loads(self.read_text(name))
        except json.JSONDecodeError as err:
            raise InputError(f"{self.what} {self.folder}: {name} is not valid JSON ({err}); rebuild the "
                             f"artifact.") from None

    def read_jsonl(self, name: str) -> list:
        """One JSON value per non-empty line."""
        try:
            return [json.loads(line) for line in self.read_text(name).split("\n") if line.strip()]
        except json.JSONDecodeError as err:
            raise InputError(f"{self.what} {self.folder}: {name} is damaged ({err}); rebuild the artifact.") from None

    def referenced(self, name: object) -> tuple[ArtifactFiles, str]:
        """``(door, name inside it)`` of a file this artifact names: one of its own files, or a file of one of
        its input artifacts (``../INPUT/...``), which is checked and verified once."""
        if safe_name(name) is not None:
            return self, str(name)
        if not isinstance(name, str) or not name or "\0" in name or PurePosixPath(name).is_absolute():
            raise InputError(f"{self.what} {self.folder} names the file {name!r}: an absolute path or not a file "
                             f"name. An artifact names only files inside itself or inside its input artifacts; "
                             f"rebuild it with the command recorded in its manifest.")
        base = self.folder.resolve()
        target = Path(os.path.normpath(base / name))
        for entry in self.manifest.get("inputs") or []:
            if not (isinstance(entry, dict) and entry.get("manifest_sha256") and isinstance(entry.get("path"), str)):
                continue
            source = Path(os.path.normpath(base / entry["path"]))
            if inside(source, target):
                return self._input(source, entry["manifest_sha256"]), target.relative_to(source).as_posix()
        raise InputError(f"{self.what} {self.folder} names the file {name!r}, which is neither inside it nor inside "
                         f"one of the input artifacts its {MANIFEST} lists. pyrawan reads nothing else; rebuild the "
                         f"artifact with the command recorded in its manifest.")

    def _input(self, source: Path, recorded: str) -> ArtifactFiles:
        """The door of an input artifact, once it is still the recorded one and verifies."""
        if source not in self._inputs:
            what = f"input artifact of {self.folder},"
            if not (source / MANIFEST).is_file() or manifest_sha256(source) != recorded:
                raise InputError(f"{what} {source}, is missing or was replaced after {self.folder} was made (its "
                                 f"{MANIFEST} is not the one recorded); rerun the command that made {self.folder}.")
            require_verified(source, what)
            self._inputs[source] = ArtifactFiles(source, what)
        return self._inputs[source]
