"""``pyrawan eval quality``: sample (or read) videos, score them, pair them with a reference.

Short wiring over ``pyrawan.eval.sampling`` (coupled-noise sampling), ``pyrawan.eval.quality``
(metrics per video, pairing) and ``pyrawan.eval.artifact`` (``metrics.json``); torchrun shards the
videos round robin like ``pyrawan sample``.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import torch
from rich.console import Console

from pyrawan import dist
from pyrawan.commands.common import console, progress_bar, resolve_device, resolve_dtype
from pyrawan.errors import InputError
from pyrawan.manifest import artifact_dir, write_manifest


def model_loader(device: str | None, dtype: str | None, inputs: list[Path], sharded: bool = False):
    """``load(spec)``: a cached model loader that verifies artifacts and records them as inputs.

    Under torchrun (``sharded``) each rank loads onto its own GPU (``LOCAL_RANK``); commands that
    are not sharded refuse to run there.
    """
    from pyrawan.manifest import verify_if_artifact
    from pyrawan.models.artifact import load_model

    if dist.world()[1] > 1 and not sharded:
        raise InputError("eval schedules and eval vbench export run in one process; they are not sharded under "
                         "torchrun. Run them without torchrun (--batch-size sets the batch).")
    dev = resolve_device(device)
    if dev.type == "cuda" and dist.world()[1] > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    dt = resolve_dtype(dtype, dev)
    cache: dict = {}

    def load(spec: str):
        if spec not in cache:
            if verify_if_artifact(Path(spec), "model"):
                inputs.append(Path(spec))
            cache[spec] = load_model(spec, device=dev, dtype=dt)
        return cache[spec]
    return load


def _decoded(load, sample_set, model: str | None, batch_size: int, progress: bool = True):
    """Decode a sample set read from an artifact with its model's VAE (``model`` overrides)."""
    from pyrawan.eval.quality import decode_in_batches
    from pyrawan.models.vae import decode_latents

    spec = model or sample_set.model
    try:
        m = load(spec)
    except InputError as err:
        raise InputError(f"the samples {sample_set.source} were made with model {spec!r}, which cannot be loaded "
                         f"here ({err}); pass --model with that model so its VAE can decode the latents.") from None
    with progress_bar(f"decode {sample_set.label}", total=len(sample_set), enabled=progress) as advance:
        sample_set.frames = decode_in_batches(lambda z: decode_latents(m.components, z), sample_set.latents,
                                              batch_size, advance)
    return m


def _set_from_artifact(load, folder: Path, model: str | None, batch_size: int, label: str | None, inputs: list[Path],
                       progress: bool = True, pair_with=None, share: list[int] | None = None):
    """A sample artifact as a SampleSet, decoded (only the videos at ``share`` when given).

    ``pair_with``: the whole set it must match, checked on every rank before anything is decoded.
    """
    from pyrawan.eval.quality import check_pairing, read_sample_set
    from pyrawan.eval.sampling import plan_for, plan_tflops
    from pyrawan.manifest import read_manifest, require_verified

    require_verified(folder, "--samples")
    inputs.append(folder)
    s = read_sample_set(folder, label)
    if pair_with is not None:
        check_pairing(pair_with, s)
    s = s if share is None else s.subset(share)
    m = _decoded(load, s, model, batch_size, progress)
    resolved = read_manifest(folder)["recipe"]["resolved"]
    s.tflops_per_video = plan_tflops(m, plan_for(m, model or s.model, s.prompts or ["-"], s.schedule, s.video)) \
        if resolved.get("fewstep_levels") is None else None
    return s


def _print_summary(body: dict) -> None:
    from rich.table import Table

    table = Table("metric", "mean", "95% CI", "n", title=f"eval {body['kind']}: {body['label']}")
    for name, s in body["summary"].items():
        ci = "–" if s["mean"] is None else f"[{s['low']:.4g}, {s['high']:.4g}]"
        table.add_row(name, "–" if s["mean"] is None else f"{s['mean']:.4g}", ci, str(s["n"]))
    Console(soft_wrap=True).print(table)
    for note in body["notes"]:
        console.print(f"note: {note}", markup=False)


def run_quality(out: Path, model: str | None = None, reference: str | None = None, prompts: list[str] | None = None,
                seeds: list[int] = (0,), samples: Path | None = None, schedule: str | None = None,
                reference_schedule: str | None = None, batch_size: int = 8, validation_cache: Path | None = None,
                label: str | None = None, device: str | None = None, dtype: str | None = None, progress: bool = True,
                overwrite: bool = False) -> dict:
    """``pyrawan eval quality``: sample (or read) a set, score it, pair it with a reference; write the artifact.

    Under torchrun every rank samples, decodes and scores its share of the videos (round robin) and
    writes its files; rank 0 gathers the per-video records and writes the summary and the manifest.
    """
    from pyrawan.eval.quality import keys_only, read_sample_set, score_sets
    from pyrawan.eval.sampling import grid, plan_for, sample_set
    from pyrawan.manifest import check_output, read_manifest

    started = time.time()
    if samples is None and model is None:
        raise InputError("eval quality needs --model M (sample it here) or --samples S (a `pyrawan sample` artifact).")
    rank, size = dist.world()
    if rank == 0:
        check_output(Path(out), overwrite)
    inputs: list[Path] = []
    load = model_loader(device, dtype, inputs, sharded=True)
    show = progress and rank == 0
    ref_artifact = reference is not None and (Path(reference) / "manifest.json").is_file() and \
        read_manifest(reference).get("kind") == "sample"
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(artifact_dir(out, overwrite=overwrite)) if rank == 0 else None
        tmp = Path(dist.broadcast(str(tmp) if tmp else None))
        if samples is not None:
            whole = read_sample_set(samples, label)
            share = dist.shard(whole.prompts, rank, size)
            subject = _set_from_artifact(load, Path(samples), model, batch_size, label, inputs, show, share=share)
        else:
            P, S = grid(prompts or [], seeds)
            m = load(model)
            plan = plan_for(m, model, P, schedule)
            name = label or f"{Path(model).name} {'-'.join(map(str, plan.steps))}"
            whole = keys_only(name, P, S, plan.latent_shapes()[0])
            share = dist.shard(P, rank, size)
            if ref_artifact:
                _check_reference(whole, Path(reference))
            subject = sample_set(m, model, plan, P, S, tmp / "samples", whole.label, batch_size, show, share)
        ref = None
        if ref_artifact:
            ref = _set_from_artifact(load, Path(reference), None, batch_size, None, inputs, show, whole, share)
        elif reference is not None:
            rm = load(reference)
            rplan = plan_for(rm, reference, whole.prompts, reference_schedule, subject.video)
            ref = sample_set(rm, reference, rplan, whole.prompts, whole.seeds, tmp / "reference",
                             f"reference {Path(reference).name}", batch_size, show, share)
        with progress_bar("score", total=len(subject), enabled=show) as advance:
            records, notes = score_sets(subject, ref, advance=advance)
        parts = dist.gather({"records": records, "notes": notes, "samples": subject.records,
                             "reference": [] if ref is None else ref.records,
                             "busy": (subject.seconds_per_video or 0.0) * len(subject)})
        if rank == 0:
            body = _write_quality(tmp, parts, whole, subject, ref, samples, reference, label, validation_cache,
                                  load, model, batch_size, inputs, started, size)
    dist.barrier()
    if rank != 0:
        return {}
    _print_summary(body)
    console.print(f"eval quality: wrote [bold]{out}[/]")
    return body


def _check_reference(whole, reference: Path) -> None:
    from pyrawan.eval.quality import check_pairing, read_sample_set

    check_pairing(whole, read_sample_set(reference))


def _write_quality(tmp: Path, parts: list[dict], whole, subject, ref, samples, reference, label, validation_cache,
                   load, model, batch_size, inputs, started, size) -> dict:
    """Rank 0: merge the ranks' records, write samples.jsonl files, metrics.json and the manifest."""
    from pyrawan.eval.artifact import build_eval, manifest_metrics, write_eval
    from pyrawan.eval.quality import relative_videos
    from pyrawan.eval.sampling import write_records

    records = sorted((r for p in parts for r in p["records"]), key=lambda r: r["index"])
    notes = list(dict.fromkeys(n for p in parts for n in p["notes"]))
    for folder, key in (("samples", "samples"), ("reference", "reference")):
        written = [r for p in parts for r in p[key]]
        if written:
            write_records(tmp / folder, written)
    seconds = None if subject.seconds_per_video is None else sum(p["busy"] for p in parts) / max(len(records), 1)
    body = build_eval("quality", label or whole.label, relative_videos(records, tmp), model=subject.model,
                      schedule=subject.schedule, tflops_per_video=subject.tflops_per_video,
                      seconds_per_video=seconds, notes=notes,
                      extra={"reference": None if ref is None else {"label": ref.label, "model": ref.model,
                                                                    "schedule": ref.schedule},
                             "video_size": subject.video, "coupled_noise": subject.coupled, "world_size": size})
    if validation_cache is not None:
        body["summary"].update(_validation(load(model or subject.model), model or subject.model,
                                           Path(validation_cache), batch_size))
        inputs.append(Path(validation_cache))
    write_eval(tmp, body)
    resolved = {"kind": "eval-quality", "model": subject.model, "samples": None if samples is None else str(samples),
                "reference": reference, "prompts": whole.prompts, "seeds": whole.seeds,
                "schedule": subject.schedule, "video": subject.video, "coupled_noise": subject.coupled}
    write_manifest(tmp, "eval-quality", resolved, list(dict.fromkeys(inputs)), manifest_metrics(body), started)
    return body


def _validation(m, spec: str, cache: Path, batch_size: int) -> dict:
    """``{"fm_val_loss_stage<k>": summary}`` over the items of a latent cache (n = items, not videos)."""
    from pyrawan.data.cache import LatentCache
    from pyrawan.eval.artifact import summarise
    from pyrawan.eval.sampling import plan_for
    from pyrawan.eval.validation import validation_loss

    pyramid = plan_for(m, spec, ["-"]).pyramid
    losses = validation_loss(m.components.transformer, LatentCache(cache), pyramid, batch_size=batch_size)
    info = {f"fm_val_loss_stage{k}": (False, "", f"flow-matching validation loss, stage {k}, over cache items")
            for k in losses}
    return {f"fm_val_loss_stage{k}": summarise(v, f"fm_val_loss_stage{k}", info) for k, v in losses.items()}
