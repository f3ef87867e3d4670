"""``pyrawan eval vbench export`` and ``pyrawan eval vbench import``: files for VBench, and its results back."""
from __future__ import annotations

import json
import time
from pathlib import Path

from rich.markup import escape

from pyrawan.artifact_files import ArtifactFiles
from pyrawan.data.video import write_video
from pyrawan.errors import InputError
from pyrawan.eval import vbench as vb
from pyrawan.eval.artifact import build_eval, manifest_metrics, write_eval
from pyrawan.fsutil import atomic_write_text, capped_name
from pyrawan.manifest import require_verified, write_manifest
from pyrawan.outputs import artifact_dir, check_output
from pyrawan.ui import console, progress_bar


def run_export(model: str, out: Path, suite: str = "vbench", info: Path | None = None,
               dimensions: list[str] | None = None, per_prompt: int | None = None, seed: int = 0,
               limit: int | None = None, schedule: str | None = None, batch_size: int = 8,
               device: str | None = None, dtype: str | None = None, progress: bool = True,
               overwrite: bool = False) -> list[dict]:
    """Sample the suite's prompts into ``out/videos/`` with VBench's names; write the prompt map and manifest."""
    from pyrawan.commands.eval_quality import model_loader
    from pyrawan.eval.sampling import plan_for
    from pyrawan.models.generate import generate_batches

    started = time.time()
    check_output(Path(out), overwrite)
    path, version = vb.locate_info(suite, info)
    prompts = vb.read_suite(path, dimensions)
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit {limit} must be at least 1 (the number of prompts to export).")
        prompts = prompts[:limit]
    items = vb.export_items(prompts, vb.samples_per_prompt(suite, per_prompt), seed, suite)
    capped = vb.capped_items(items, suite)
    if capped:
        console.print(f"note: {len(capped)} video name(s) were cut to {vb.NAME_BYTES} bytes with a hash of the prompt "
                      f"(e.g. {capped[0]['file']!r}): their prompts are too long for a file name. VBench's standard "
                      f"mode will not find them; evaluate with --mode custom_input --prompt_file prompts.json.",
                      markup=False)
    inputs: list[Path] = []
    m = model_loader(device, dtype, inputs)(model)
    plan = plan_for(m, model, [it["prompt"] for it in items], schedule)
    console.print(f"eval vbench export: {len(prompts)} prompts x {len(items) // max(len(prompts), 1)} videos "
                  f"from {escape(path.name)}{f' (vbench {version})' if version else ''}")
    with artifact_dir(out, overwrite=overwrite) as tmp:
        with progress_bar("vbench export", total=len(items) * plan.nfe, enabled=progress) as advance:
            for positions, _, frames in generate_batches(m, plan, [it["prompt"] for it in items],
                                                         [it["seed"] for it in items], batch_size,
                                                         coupled_noise=True, advance=advance):
                for k, i in enumerate(positions):
                    write_video(tmp / "videos" / items[i]["file"], frames[k], fps=plan.video["fps"])
        # VBench custom_input reads {video path relative to --videos_path: prompt}
        atomic_write_text(tmp / "prompts.json", json.dumps({it["file"]: it["prompt"] for it in items},
                                                           indent=1, ensure_ascii=False) + "\n")
        atomic_write_text(tmp / "videos.jsonl", "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items))
        resolved = {"kind": "vbench-export", "suite": suite, "vbench_version": version, "prompt_file": path.name,
                    "prompt_file_sha256": vb.file_sha256(path), "dimensions": dimensions, "limit": limit,
                    "prompts": len(prompts), "samples_per_prompt": len(items) // max(len(prompts), 1),
                    "seed_policy": "video i of every prompt uses seed + i", "seed": seed, "coupled_noise": True,
                    "model": model,
                    **plan.as_dict()}
        write_manifest(tmp, "vbench-export", resolved, inputs, {"videos": len(items)}, started)
    shown = escape(str(out))
    console.print(f"eval vbench export: wrote {len(items)} videos to [bold]{shown}/videos[/]; run VBench on them "
                  f"(docs/eval.md), then `pyrawan eval vbench import RESULTS.json --export {shown}`")
    return items


def read_export(export: Path) -> tuple[dict[str, dict], str | None, str | None]:
    """``({file: video record}, model, schedule)`` of a verified ``pyrawan eval vbench export`` artifact."""
    manifest = require_verified(export, "--export")
    if manifest.get("kind") != "vbench-export":
        raise InputError(f"--export {export} is a {manifest.get('kind')!r} artifact, not a VBench export; give the "
                         f"folder written by `pyrawan eval vbench export`, or leave --export out.")
    items = ArtifactFiles(export, "--export").read_jsonl("videos.jsonl")
    try:
        exported = {item["file"]: item for item in items}
    except (KeyError, TypeError) as err:
        raise InputError(f"{export / 'videos.jsonl'} is damaged ({err!r}); rerun `pyrawan eval vbench "
                         f"export`.") from None
    resolved = (manifest.get("recipe") or {}).get("resolved") or {}
    return exported, resolved.get("model"), resolved.get("schedule")


def copy_names(results: list[Path]) -> dict[Path, str]:
    """``{results file: name of its copy under vbench/}``: the file's own name (capped), tagged with a hash
    of its path where two files share a name, so no copy overwrites another."""
    names = [Path(p).name for p in results]
    return {Path(p): capped_name(Path(p).stem, Path(p).suffix[:16],
                                 salt=str(Path(p).resolve()) if names.count(Path(p).name) > 1 else None)
            for p in results}


def run_import(results: list[Path], out: Path, export: Path | None = None, label: str | None = None,
               overwrite: bool = False) -> dict:
    """Turn VBench ``*_eval_results.json`` files into an eval artifact (per-video scores, mean and CI)."""
    started = time.time()
    check_output(Path(out), overwrite)
    merged: dict = {}
    for path in results:
        for dim, value in vb.read_results(path).items():
            if dim in merged:
                raise InputError(f"dimension {dim!r} appears in more than one results file ({path}); import each "
                                 f"run separately.")
            merged[dim] = value
    exported, model, schedule = None, None, None
    if export is not None:
        exported, model, schedule = read_export(Path(export))
    records, reported = vb.result_records(merged, exported)
    if exported is not None:
        for r in records:
            r["video"] = f"{Path(export).resolve().as_posix()}/videos/{r['file']}" if r["file"] in exported else None
    name = label or Path(results[0]).name.removesuffix(vb.RESULTS_SUFFIX)
    copies = copy_names(results)
    with artifact_dir(out, overwrite=overwrite) as tmp:
        from pyrawan.eval.quality import relative_videos

        body = build_eval("vbench", name, relative_videos(records, tmp), model=model, schedule=schedule,
                          notes=["scores computed by VBench itself (its models, its GPU run); pyrawan only "
                                 "re-averaged them and added 95% bootstrap intervals over videos"],
                          extra={"vbench_reported_mean": reported, "results_files": list(copies.values()),
                                 "results_sources": {name: str(path) for path, name in copies.items()}},
                          info=vb.metric_info(list(reported)))
        write_eval(tmp, body)
        for path, name in copies.items():
            atomic_write_text(tmp / "vbench" / name, Path(path).read_text(encoding="utf-8"))
        write_manifest(tmp, "eval-vbench", {"kind": "eval-vbench", "results": [str(p) for p in results],
                                            "export": None if export is None else str(export)},
                       [export] if export is not None else [], manifest_metrics(body), started)
    console.print(f"eval vbench import: {len(records)} videos, {len(reported)} dimensions -> "
                  f"[bold]{escape(str(out))}[/]")
    return body
