"""``pyrawan push``: upload an export (``pyrawan export``) to the Hugging Face Hub, or list what would go."""
from __future__ import annotations

import json
from pathlib import Path

from pyrawan.commands.common import console
from pyrawan.export.hub import check_export, check_repo_id, push, require_online, upload_plan


def run(folder: Path, repo_id: str, private: bool = False, revision: str | None = None, create_pr: bool = False,
        dry_run: bool = False, as_json: bool = False, message: str | None = None) -> str | None:
    """Verify the export, then upload it (or, with ``dry_run``, print the files and sizes); returns the URL."""
    check_repo_id(repo_id)
    plan = upload_plan(Path(folder), check_export(Path(folder)))
    total = sum(f["bytes"] for f in plan)
    if dry_run:
        if as_json:
            print(json.dumps({"repo_id": repo_id, "revision": revision, "create_pr": create_pr, "private": private,
                              "files": plan, "bytes": total}, indent=2))
        else:
            for f in plan:
                print(f"{f['bytes']:>15,}  {f['path']}")
            print(f"{total:>15,}  total: {len(plan)} files would be uploaded to {repo_id}"
                  f"{' (branch ' + revision + ')' if revision else ''}{' as a pull request' if create_pr else ''}")
        console.print("push: --dry-run: nothing was uploaded.", markup=False)
        return None
    require_online(Path(folder), repo_id)
    console.print(f"push: uploading {len(plan)} files ({total / 1e6:.1f} MB) from {folder} to {repo_id}", markup=False)
    url = push(Path(folder), repo_id, plan, private, revision, create_pr, message)
    print(json.dumps({"url": url}) if as_json else url)
    return url
