"""``pyrawan sample``: text to video with the pyramidal sampler (or plain Wan with one stage).

Writes one mp4 per prompt (PyAV, the model's fps), the final normalised latents as safetensors,
``samples.jsonl`` (prompt, seed, files) and the manifest. Prompts run ``--batch-size`` at a time
through every stage and the VAE decode (``pyrawan.models.generate``). Each finished video is kept
at once in ``OUT.partial/`` (video and latents written atomically, then a record with their
hashes), so an interrupted run continues with ``--resume``; the artifact ``OUT`` appears only when
every prompt is done. Under torchrun the prompts still to do are sharded round robin across
ranks; rank 0 writes the index and the one manifest at the end.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from pyrawan import dist
from pyrawan.commands.common import console, progress_bar, resolve_device, resolve_dtype
from pyrawan.data.video import write_video
from pyrawan.errors import InputError, NonFiniteError, RunError
from pyrawan.fsutil import atomic_path, atomic_write_text, sha256_file
from pyrawan.manifest import manifest_sha256, verify_if_artifact, write_manifest
from pyrawan.outputs import artifact_dir, check_output
from pyrawan.models.artifact import LoadedModel, load_model
from pyrawan.models.decoders import Decoder, decoder_for
from pyrawan.models.generate import (  # noqa: F401  (SampleSettings, Plan, make_plan: the command's API)
    Plan, SampleSettings, check_batch_size, compiled, default_batch_size, generate_batches, make_plan, slug,
)

PARTIAL_SCHEMA = "pyrawan.sample-partial/1"
RUN_FILE = "run.json"
SEED_MAX = 2**63 - 1          # torch.Generator.manual_seed takes a 64-bit seed; prompt i uses seed + i
FLAG_NAMES = {"negative_prompt": "--negative-prompt", "fewstep_levels": "sampling.fewstep_levels",
              "max_sequence_length": "text.max_sequence_length"}



def sample_name(index: int, prompt: str) -> str:
    return f"{index:04d}-{slug(prompt)}"


def partial_folder(out: Path) -> Path:
    """Where the finished videos of an unfinished run of ``out`` are kept: ``OUT.partial``."""
    return out.with_name(out.name + ".partial")


def default_out(resume: bool, root: Path = Path("runs"), stem: str = "samples") -> Path:
    """``runs/samples-001``, ``-002``, ...: the next free number, or with ``resume`` the newest unfinished one."""
    numbers = sorted(int(m[1]) for p in (root.iterdir() if root.is_dir() else [])
                     if (m := re.fullmatch(rf"{stem}-(\d+)(\.partial)?", p.name)))
    if resume:
        unfinished = [n for n in numbers if partial_folder(root / f"{stem}-{n:03d}").is_dir()]
        if not unfinished:
            raise InputError(f"--resume without -o: no unfinished run under {root}/ (no {stem}-NNN.partial folder); "
                             f"give the -o folder of the run to continue, or drop --resume.")
        return root / f"{stem}-{unfinished[-1]:03d}"
    return root / f"{stem}-{(numbers[-1] if numbers else 0) + 1:03d}"


# ---- flags ---------------------------------------------------------------------------------------

def check_flags(s: SampleSettings) -> None:
    """Validate the settings with the recipe's own models (one set of rules for flags and recipes)."""
    from pydantic import ValidationError

    from pyrawan.recipe import SampleRecipe, Sampling, Text, Video

    sections = [
        (Sampling, ("schedule", "shift", "guidance", "negative_prompt", "fewstep_levels")),
        (Video, ("frames", "height", "width", "fps")), (Text, ("max_sequence_length",)),
        (SampleRecipe, ("seed", "device", "dtype")),
    ]
    problems = []
    for model, keys in sections:
        given = {k: getattr(s, k) for k in keys if getattr(s, k) is not None}
        if model is SampleRecipe:
            given.update(schema_version=1, base="tiny")
        try:
            model.model_validate(given)
        except ValidationError as err:
            for e in err.errors():
                key = str(e["loc"][0]) if e["loc"] else "?"
                flag = FLAG_NAMES.get(key, f"--{key}")
                problems.append(f"{flag} = {getattr(s, key, e.get('input'))!r}: {e['msg']}")
    if s.seed + max(len(s.prompts) - 1, 0) > SEED_MAX:
        problems.append(f"--seed = {s.seed}: prompt i uses seed + i, which must stay <= {SEED_MAX}")
    if s.batch_size is not None:
        try:
            check_batch_size(s.batch_size)
        except InputError as err:
            problems.append(str(err).rstrip("."))
    if problems:
        raise InputError("sample: " + "; ".join(problems) + ". Fix these values (see `pyrawan sample --help`).")


# ---- the unfinished run: OUT.partial/ -----------------------------------------------------------

def fingerprint(settings: SampleSettings, plan: Plan, model: LoadedModel) -> dict:
    """What must not change between a run and its ``--resume`` (the model, its hash, the plan, the seed)."""
    path = Path(settings.model)
    digest = manifest_sha256(path) if model.path is not None and (path / "manifest.json").is_file() else None
    return {"model": settings.model, "model_manifest_sha256": digest, "seed": settings.seed,
            "decoder_weights": settings.decoder_weights, "previews": settings.previews, **plan.as_dict()}


def _record_ok(folder: Path, record: dict, prompt: str, seed: int) -> bool:
    """A record of this prompt and seed whose files are present with their recorded hashes."""
    if record.get("prompt") != prompt or record.get("seed") != seed:
        return False
    try:
        return all(sha256_file(folder / record[key]) == record["sha256"][key] for key in ("video", "latents"))
    except (OSError, KeyError, TypeError):
        return False


def check_partial(partial: Path, resume: bool, overwrite: bool) -> None:
    """Before loading anything: an ``OUT.partial`` is ours, and is either resumed or (``--overwrite``) replaced."""
    if partial.exists() and not (partial / RUN_FILE).is_file():
        raise InputError(f"{partial} exists but was not written by `pyrawan sample` (no {RUN_FILE}); move it away "
                         f"or choose another -o/--out.")
    if partial.is_dir() and not resume and not overwrite:
        raise InputError(f"{partial} holds the finished videos of an interrupted run of this output; pass --resume "
                         f"to keep them and continue, or --overwrite to start over (deletes them).")


def open_partial(partial: Path, run_info: dict, prompts: list[str], seed: int, resume: bool,
                 overwrite: bool) -> dict[int, dict]:
    """Rank 0: prepare ``OUT.partial`` and return the verified records of the prompts already done."""
    check_partial(partial, resume, overwrite)
    run_info = json.loads(json.dumps(run_info))                    # as it reads back from run.json
    if partial.is_dir() and not resume:
        shutil.rmtree(partial)
    if not partial.is_dir():
        (partial / "done").mkdir(parents=True)
        atomic_write_text(partial / RUN_FILE, json.dumps({"schema": PARTIAL_SCHEMA, "run": run_info}, indent=2) + "\n")
        return {}
    try:
        old = json.loads((partial / RUN_FILE).read_text(encoding="utf-8"))["run"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{partial / RUN_FILE} is damaged; start over with --overwrite.") from None
    changed = sorted(k for k in old.keys() | run_info.keys() if old.get(k) != run_info.get(k))
    if changed:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {run_info.get(k)!r}" for k in changed[:4])
        raise InputError(f"--resume: this run differs from the interrupted one in {partial} ({shown}); resume with the "
                         f"same model and settings, or start over with --overwrite.")
    done = {}
    for file in sorted((partial / "done").glob("*.json")):
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
            index = int(record["index"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if 0 <= index < len(prompts) and _record_ok(partial, record, prompts[index], seed + index):
            done[index] = record
    return done


def preview_name(index: int, prompt: str, stage: int) -> str:
    return f"previews/{sample_name(index, prompt)}-stage{stage}.mp4"


def preview_stages(plan: Plan) -> list[int]:
    """The coarse stages that run (index 0 = full resolution, never previewed: it is the video)."""
    return [stage for stage, n in enumerate(reversed(plan.steps)) if n and stage > 0]


def write_previews(partial: Path, plan: Plan, indices: list[int], prompts: list[str], stage: int,
                   frames: torch.Tensor) -> None:
    """One low-resolution mp4 per prompt of a batch: the decoded clean estimate ``frames`` ``[B, F_s, 3, H_s, W_s]``
    at the end of ``stage``, at the fps that keeps the video's duration (one encoder thread: the clips are small)."""
    fps = max(1, round(plan.video["fps"] * frames.shape[1] / plan.video["frames"]))
    for i, video in zip(indices, frames):
        write_video(partial / preview_name(i, prompts[i], stage), video, fps=fps, threads=1)


def write_sample(partial: Path, index: int, prompt: str, seed: int, latents: torch.Tensor, video: torch.Tensor,
                 plan: Plan, previews: bool = False) -> dict:
    """Write one video and its latents atomically into ``partial``, then its record (which marks it done)."""
    name = sample_name(index, prompt)
    write_video(partial / "videos" / f"{name}.mp4", video, fps=plan.video["fps"])
    meta = {"pyrawan.prompt": prompt, "pyrawan.seed": str(seed), "pyrawan.schedule": "-".join(map(str, plan.steps)),
            "pyrawan.normalised": "true"}
    with atomic_path(partial / "latents" / f"{name}.safetensors") as tmp:
        save_file({"latents": latents[None].float().contiguous()}, str(tmp), metadata=meta)
    record = {"index": index, "prompt": prompt, "seed": seed, "video": f"videos/{name}.mp4",
              "latents": f"latents/{name}.safetensors", "frames": int(video.shape[0])}
    if previews:
        record["previews"] = [preview_name(index, prompt, stage) for stage in preview_stages(plan)]
    record["sha256"] = {key: sha256_file(partial / record[key]) for key in ("video", "latents")}
    atomic_write_text(partial / "done" / f"{index:04d}.json", json.dumps(record) + "\n")
    return record


def render(model: LoadedModel, plan: Plan, prompts: list[str], indices: list[int], seed: int, partial: Path,
           batch_size: int, progress: bool, decoder: Decoder | None = None, previews: bool = False) -> list[dict]:
    """Sample, decode (``decoder``, default the VAE) and keep the prompts at ``indices``, ``batch_size`` at a
    time; one record per prompt. ``previews``: each coarse stage's estimate is written as soon as it exists."""
    records = []
    preview = (lambda positions, stage, frames: write_previews(partial, plan, [indices[p] for p in positions], prompts,
                                                               stage, frames)) if previews else None
    with progress_bar("sample", total=len(indices) * plan.nfe, enabled=progress) as advance:
        batches = generate_batches(model, plan, [prompts[i] for i in indices], [seed + i for i in indices],
                                   batch_size, advance=advance, decoder=decoder, preview=preview)
        try:
            for positions, latents, videos in batches:
                for p, z, video in zip(positions, latents, videos):
                    i = indices[p]
                    records.append(write_sample(partial, i, prompts[i], seed + i, z, video, plan, previews))
        except NonFiniteError as err:
            raise err.for_prompts(indices) from None
    return records


def non_finite(err: NonFiniteError, partial: Path, rank: int) -> RunError:
    """The error to report for a non-finite sample: ``OUT.partial`` is removed when it keeps no video."""
    kept = len(list((partial / "done").glob("*.json")))
    if kept == 0 and rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
        return err
    return RunError(f"{err} The {kept} video(s) finished before it are kept in {partial}, not published "
                    f"(--overwrite removes them).")


def publish(partial: Path, out: Path, records: list[dict], overwrite: bool, inputs: list[Path], resolved: dict,
            metrics: dict, started: float) -> None:
    """Rank 0: make the artifact ``out`` from the kept videos, then remove ``OUT.partial``."""
    with artifact_dir(out, overwrite=overwrite, inputs=inputs, kind="sample") as tmp:
        for record in records:
            for name in [record["video"], record["latents"], *record.get("previews", [])]:
                (tmp / name).parent.mkdir(exist_ok=True)
                try:
                    os.link(partial / name, tmp / name)      # the kept copy stays until the end
                except OSError:
                    shutil.copyfile(partial / name, tmp / name)
        rows = [{k: v for k, v in r.items() if k != "sha256"} for r in records]
        atomic_write_text(tmp / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        write_manifest(tmp, "sample", resolved, inputs, metrics, started)
    shutil.rmtree(partial, ignore_errors=True)


# ---- the command ---------------------------------------------------------------------------------

def load_for_sampling(settings: SampleSettings) -> tuple[LoadedModel, list[Path]]:
    """The model (verified when it is a pyrawan artifact) and the parent artifacts to record."""
    path = Path(settings.model)
    inputs = []
    if verify_if_artifact(path, "model"):
        inputs.append(path)
    elif (path / "pyramid.json").is_file() or (path / "components.json").is_file():
        raise InputError(f"--model {path} has no manifest.json, so its files cannot be verified; use a folder "
                         f"written by `pyrawan convert` or `pyrawan finetune` (or re-create it).")
    device = resolve_device(settings.device)
    if device.type == "cuda" and dist.world()[1] > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    dtype = resolve_dtype(settings.dtype, device)
    return load_model(settings.model, device=device, dtype=dtype), inputs


def run(settings: SampleSettings, out: Path | None = None) -> Path:
    """Render every prompt into the artifact folder ``out`` (None: the next ``runs/samples-NNN``)."""
    started = time.time()
    if not settings.prompts:
        raise InputError("no prompt given: pass --prompt TEXT (repeatable) or --prompts FILE (one prompt per line).")
    check_flags(settings)
    rank, size = dist.world()
    out = Path(out) if out is not None else Path(dist.broadcast(str(default_out(settings.resume)) if rank == 0 else None))
    partial = partial_folder(out)
    if rank == 0:
        check_output(out, settings.overwrite, inputs=[settings.model], kind="sample")   # before minutes of loading
        check_partial(partial, settings.resume, settings.overwrite)
    model, inputs = load_for_sampling(settings)
    plan = make_plan(settings, model)
    if settings.compile:
        model = compiled(model)
    done = open_partial(partial, fingerprint(settings, plan, model), settings.prompts, settings.seed,
                        settings.resume, settings.overwrite) if rank == 0 else None
    done = {int(k): v for k, v in dist.broadcast(done).items()}
    todo = [i for i in range(len(settings.prompts)) if i not in done]
    if rank == 0 and done:
        console.print(f"sample: --resume: {len(done)} of {len(settings.prompts)} video(s) already done in {partial}; "
                      f"rendering {len(todo)}", markup=False)
    batch_size = settings.batch_size or default_batch_size(next(model.components.transformer.parameters()).device)
    mine = [todo[k] for k in dist.shard(todo, rank, size)]
    try:
        decoder = decoder_for(model, plan.decoder, settings.decoder_weights and Path(settings.decoder_weights))
        records = render(model, plan, settings.prompts, mine, settings.seed, partial, batch_size,
                         settings.progress and rank == 0, decoder, settings.previews)
    except NonFiniteError as err:
        raise non_finite(err, partial, rank) from None
    except KeyboardInterrupt:
        kept = len(list((partial / "done").glob("*.json")))
        console.print(f"sample: interrupted; {kept} of {len(settings.prompts)} video(s) are kept in {partial}; "
                      f"continue with the same command plus --resume.", markup=False)
        raise
    everything = sorted([*done.values(), *(r for part in dist.gather(records) for r in part)], key=lambda r: r["index"])
    dist.barrier()
    if rank == 0:
        resolved = {"kind": "sample", "model": settings.model, "prompts": settings.prompts, "seed": settings.seed,
                    **plan.as_dict()}
        metrics = {"videos": len(everything), "nfe_per_video": plan.nfe,
                   "forwards_per_video": plan.nfe * (2 if plan.guidance > 1 else 1), "world_size": size,
                   "batch_size": batch_size, "resumed_videos": len(done), "compiled": bool(settings.compile),
                   "decoder": plan.decoder, "previews": bool(settings.previews),
                   "seconds": round(time.time() - started, 3)}
        publish(partial, out, everything, settings.overwrite, inputs, resolved, metrics, started)
    dist.barrier()
    if rank == 0:
        console.print(f"sample: wrote {len(settings.prompts)} video(s) to [bold]{out}[/] "
                      f"(schedule {'-'.join(map(str, plan.steps))}, guidance {plan.guidance}, batch {batch_size})")
    return out
