"""``pyrawan push``: upload a verified export to the Hugging Face Hub (``huggingface_hub``, one commit).

The files uploaded are exactly the export's manifest outputs plus ``manifest.json`` (``upload_plan``,
what ``--dry-run`` prints). Large files go through the Hub's LFS storage as ``create_commit`` does
for any binary file. Offline (``HF_HUB_OFFLINE``) nothing is sent: the push stops before any request.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pyrawan.errors import InputError, RunError
from pyrawan.manifest import MANIFEST, read_manifest, require_verified

EXPORT_KIND = "export"
_HUB_REPO = r"^[A-Za-z0-9][\w.-]*/[\w.-]+$"


def check_export(folder: Path) -> dict:
    """The manifest of a verified export; ``InputError`` for anything else (before any network)."""
    kind = read_manifest(folder).get("kind")
    if kind != EXPORT_KIND:
        raise InputError(f"{folder} is a {kind!r} artifact, not an export; push uploads what `pyrawan export` writes "
                         f"(a diffusers folder or a single file, with its model card). Run `pyrawan export {folder} "
                         f"--format diffusers -o OUT` and push OUT.")
    return require_verified(folder, "export")


def check_repo_id(repo_id: str) -> str:
    """``owner/name`` (letters, digits, ``.``, ``_``, ``-``); ``InputError`` otherwise."""
    if not re.match(_HUB_REPO, repo_id) or ".." in repo_id or len(repo_id) > 96:
        raise InputError(f"REPO_ID {repo_id!r} is not a Hub repository id; write it owner/name (letters, digits, "
                         f"'.', '_' and '-'), e.g. my-user/pyramidal-wan-1.3b.")
    return repo_id


def upload_plan(folder: Path, manifest: dict) -> list[dict[str, Any]]:
    """``[{"path", "bytes"}]``: every file the push uploads, sorted, ``manifest.json`` included."""
    files = [{"path": str(o["path"]), "bytes": int(o["bytes"])} for o in manifest["outputs"]]
    files.append({"path": MANIFEST, "bytes": (folder / MANIFEST).stat().st_size})
    return sorted(files, key=lambda f: f["path"])


def offline() -> bool:
    """True when the Hub is switched off for this process (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.upper() in ("1", "ON", "YES", "TRUE") or bool(constants.HF_HUB_OFFLINE)


def require_online(folder: Path, repo_id: str) -> None:
    """``RunError`` before any request when the Hub is switched off (``HF_HUB_OFFLINE``)."""
    if offline():
        raise RunError(f"not pushing {folder} to {repo_id}: the Hugging Face Hub is switched off here "
                       f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '1')}), and nothing was uploaded. Unset "
                       f"HF_HUB_OFFLINE on a machine with network access and run the same command; `--dry-run` lists "
                       f"the files without any network.")


def repo_url(endpoint: str, repo_id: str, revision: str | None) -> str:
    base = f"{endpoint.rstrip('/')}/{repo_id}"
    return f"{base}/tree/{revision}" if revision else base


def push(folder: Path, repo_id: str, plan: list[dict[str, Any]], private: bool = False, revision: str | None = None,
         create_pr: bool = False, message: str | None = None) -> str:
    """Create the repository if needed and upload ``plan`` as one commit; return the URL to show."""
    require_online(folder, repo_id)
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    operations = [CommitOperationAdd(path_in_repo=f["path"], path_or_fileobj=str(folder / f["path"])) for f in plan]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and not create_pr:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        info = api.create_commit(repo_id, operations, commit_message=message or f"Upload {folder.name} (pyrawan export)",
                                 revision=revision, create_pr=create_pr, repo_type="model")
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        hint = ("log in with `hf auth login` (or set HF_TOKEN) with a token that may write to it"
                if status in (401, 403) else "check the repository id, your network and the Hub's status, then retry")
        raise RunError(f"the Hub refused the push of {folder} to {repo_id} (HTTP {status}): {str(err).splitlines()[0]}. "
                       f"Fix: {hint}; the same command uploads everything again in one commit.") from None
    except OSError as err:
        raise RunError(f"pushing {folder} to {repo_id} failed: {err}. Check the network and retry; a push is one "
                       f"commit, so nothing partial was published.") from None
    pr_url = getattr(info, "pr_url", None)
    return pr_url if create_pr and pr_url else repo_url(api.endpoint, repo_id, revision)
