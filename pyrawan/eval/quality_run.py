"""One quality evaluation, end to end: sample (or read) a set, score it, pair it with a reference, write
the eval artifact (``metrics.json`` + manifest).

The library side of ``pyrawan eval quality`` and of every row of ``pyrawan demo`` (one code path):
the command parses flags and prints; ``evaluate_quality`` does the rest. Under torchrun every rank
samples, decodes and scores its share of the videos (round robin) and writes its files; rank 0
gathers the per-video records and writes the summary and the manifest.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pyrawan import dist
from pyrawan.errors import InputError
from pyrawan.eval.quality import SampleSet
from pyrawan.manifest import write_manifest
from pyrawan.outputs import artifact_dir
from pyrawan.ui import progress_bar

Load = Callable[[str], Any]   # model spec -> its pyrawan.models.artifact.LoadedModel (cached)

FD_METRIC = "toybench_fd"
FD_INFO = (False, "", "ToyBench Fréchet distance of the set's judge features to the --fd-reference videos "
                      "(one number per set; interval: bootstrap over the set's videos)")


@dataclass
class QualityJob:
    """What one eval artifact measures. Video ``i`` is ``prompts[i]`` sampled with ``seeds[i]`` (already
    paired: ``pyrawan.eval.sampling.grid`` makes every prompt x every seed); ``samples`` (a ``pyrawan
    sample`` artifact) replaces sampling, and then fixes prompts and seeds itself."""

    model: str | None = None
    reference: str | None = None
    prompts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    samples: Path | None = None
    schedule: str | None = None
    reference_schedule: str | None = None
    batch_size: int = 8
    validation_cache: Path | None = None
    fd_reference: Path | None = None      # captioned folder of real toy-world videos: adds toybench_fd
    label: str | None = None
    progress: bool = True
    overwrite: bool = False
    decoder: str = "vae"                  # what decodes the subject's latents: vae | tiny
    reference_decoder: str = "vae"        # and the reference's


def model_loader(device: torch.device, dtype: torch.dtype, inputs: list[Path] | None = None,
                 sharded: bool = False) -> Load:
    """``load(spec)``: a cached model loader that verifies artifacts (and appends them to ``inputs``).

    Under torchrun (``sharded``) each rank loads onto its own GPU (``LOCAL_RANK``); callers that
    are not sharded refuse to run there.
    """
    from pyrawan.manifest import verify_if_artifact
    from pyrawan.models.artifact import load_model

    if dist.world()[1] > 1 and not sharded:
        raise InputError("eval schedules and eval vbench export run in one process; they are not sharded under "
                         "torchrun. Run them without torchrun (--batch-size sets the batch).")
    if device.type == "cuda" and dist.world()[1] > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    cache: dict = {}

    def load(spec: str):
        if spec not in cache:
            if verify_if_artifact(Path(spec), "model") and inputs is not None:
                inputs.append(Path(spec))
            cache[spec] = load_model(spec, device=device, dtype=dtype)
        return cache[spec]
    return load


def job_inputs(job: QualityJob, models: list[str | None]) -> list[Path]:
    """The manifest's ``inputs``: the ``models`` and sample sets that are pyrawan artifacts (presets, hub ids
    and plain diffusers folders are left out), then the data folders read (cache, FD reference)."""
    from pyrawan.eval.quality import samples_files

    sets = [found[0].folder for s in (job.samples, job.reference) if s is not None
            and (found := samples_files(s)) is not None]
    artifacts = [Path(s) for s in (*models, *sets, job.reference)
                 if s is not None and (Path(s) / "manifest.json").is_file()]
    data = [Path(p) for p in (job.validation_cache, job.fd_reference) if p is not None]
    return list(dict.fromkeys(artifacts + data))


def _decoded(load: Load, sample_set: SampleSet, model: str | None, batch_size: int, progress: bool = True,
             decoder: str = "vae"):
    """Decode a sample set read from an artifact with its model's VAE or tiny decoder (``model`` overrides)."""
    from pyrawan.eval.quality import decode_in_batches
    from pyrawan.models.decoders import decoder_for

    spec = model or sample_set.model
    try:
        m = load(spec)
    except InputError as err:
        raise InputError(f"the samples {sample_set.source} were made with model {spec!r}, which cannot be loaded "
                         f"here ({err}); pass --model with that model so its VAE can decode the latents.") from None
    with progress_bar(f"decode {sample_set.label}", total=len(sample_set), enabled=progress) as advance:
        sample_set.frames = decode_in_batches(decoder_for(m, decoder), sample_set.latents,
                                              batch_size, advance)
    return m


def _set_from_artifact(load: Load, folder: Path, model: str | None, batch_size: int, label: str | None,
                       progress: bool = True, pair_with: SampleSet | None = None,
                       share: list[int] | None = None, what: str = "--samples", decoder: str = "vae") -> SampleSet:
    """Sampled videos (``read_sample_set``) as a SampleSet, decoded (only the videos at ``share`` when given).

    ``pair_with``: the whole set it must match, checked on every rank before anything is decoded.
    """
    from pyrawan.eval.quality import check_pairing, read_sample_set
    from pyrawan.eval.sampling import plan_for, plan_tflops
    from pyrawan.manifest import read_manifest, require_verified

    s = read_sample_set(folder, label, what)
    require_verified(s.source, what)
    if pair_with is not None:
        check_pairing(pair_with, s)
    s = s if share is None else s.subset(share)
    m = _decoded(load, s, model, batch_size, progress, decoder)
    resolved = read_manifest(s.source)["recipe"]["resolved"]
    s.tflops_per_video = plan_tflops(m, plan_for(m, model or s.model, s.prompts or ["-"], s.schedule, s.video)) \
        if resolved.get("fewstep_levels") is None else None
    return s


def reference_is_samples(reference: str | None) -> bool:
    """True when ``--reference`` names sampled videos (``quality.samples_files``), False for a model; an
    InputError, before anything is sampled, for a folder that is neither."""
    from pyrawan.eval.quality import SAMPLES_FOLDERS, samples_files
    from pyrawan.models.artifact import COMPONENTS_FILE, PYRAMID_FILE

    if reference is None:
        return False
    path = Path(reference)
    if samples_files(path, "--reference") is not None:
        return True
    if path.is_dir() and not any((path / f).is_file() for f in ("model_index.json", PYRAMID_FILE, COMPONENTS_FILE)):
        raise InputError(f"--reference {reference} is a folder, but neither sampled videos with a samples manifest "
                         f"({SAMPLES_FOLDERS}) nor a model (a pyrawan model artifact or a diffusers folder with "
                         f"model_index.json). Give one of those, or a preset or hub id to sample the reference here.")
    return False


def _check_job(job: QualityJob) -> None:
    """InputError for a job that cannot run, before any model loads."""
    if job.samples is None and job.model is None:
        raise InputError("eval quality needs --model M (sample it here) or --samples S (a `pyrawan sample` artifact).")
    if job.samples is None and (not job.prompts or len(job.prompts) != len(job.seeds)):
        raise InputError(f"eval quality got {len(job.prompts)} prompts and {len(job.seeds)} seeds for its videos; "
                         "it needs at least one video and exactly one seed per video (pyrawan.eval.sampling.grid "
                         "pairs every prompt with every seed).")
    if job.fd_reference is not None and job.samples is None and len(job.prompts) < 2:
        raise InputError(f"--fd-reference {job.fd_reference}: a Fréchet distance needs at least 2 videos, this "
                         f"evaluation has {len(job.prompts)}; add prompts or seeds.")


def evaluate_quality(out: Path, job: QualityJob, load: Load) -> dict:
    """Run ``job`` and write its eval artifact at ``out``; returns the ``metrics.json`` body (``{}`` on ranks
    other than 0)."""
    from pyrawan.eval.quality import check_pairing, keys_only, read_sample_set, score_sets
    from pyrawan.eval.sampling import plan_for, sample_set
    from pyrawan.outputs import check_output

    started = time.time()
    _check_job(job)
    rank, size = dist.world()
    if rank == 0:
        check_output(Path(out), job.overwrite)
    show = job.progress and rank == 0
    ref_artifact = reference_is_samples(job.reference)
    if job.reference is not None and not ref_artifact:
        load(job.reference)            # a reference model that cannot load fails before anything is sampled
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(artifact_dir(out, overwrite=job.overwrite)) if rank == 0 else None
        tmp = Path(dist.broadcast(str(tmp) if tmp else None))
        if job.samples is not None:
            whole = read_sample_set(job.samples, job.label)
            share = dist.shard(whole.prompts, rank, size)
            subject = _set_from_artifact(load, Path(job.samples), job.model, job.batch_size, job.label, show,
                                         share=share, decoder=job.decoder)
        else:
            m = load(job.model)
            plan = plan_for(m, job.model, job.prompts, job.schedule)
            name = job.label or f"{Path(job.model).name} {'-'.join(map(str, plan.steps))}"
            whole = keys_only(name, job.prompts, job.seeds, plan.latent_shapes()[0])
            share = dist.shard(job.prompts, rank, size)
            if ref_artifact:
                check_pairing(whole, read_sample_set(job.reference, what="--reference"))
            subject = sample_set(m, job.model, plan, job.prompts, job.seeds, tmp / "samples", whole.label,
                                 job.batch_size, show, share, job.decoder)
        ref = None
        if ref_artifact:
            ref = _set_from_artifact(load, Path(job.reference), None, job.batch_size, None, show, whole, share,
                                     "--reference", job.reference_decoder)
        elif job.reference is not None:
            rm = load(job.reference)
            rplan = plan_for(rm, job.reference, whole.prompts, job.reference_schedule, subject.video)
            ref = sample_set(rm, job.reference, rplan, whole.prompts, whole.seeds, tmp / "reference",
                             f"reference {Path(job.reference).name}", job.batch_size, show, share,
                             job.reference_decoder)
        with progress_bar("score", total=len(subject), enabled=show) as advance:
            records, notes = score_sets(subject, ref, advance=advance, features=job.fd_reference is not None)
        parts = dist.gather({"records": records, "notes": notes, "samples": subject.records,
                             "reference": [] if ref is None else ref.records,
                             "busy": (subject.seconds_per_video or 0.0) * len(subject)})
        if rank == 0:
            body = _write_quality(tmp, parts, whole, subject, ref, job, load, started, size)
    dist.barrier()
    return body if rank == 0 else {}


def _write_quality(tmp: Path, parts: list[dict], whole: SampleSet, subject: SampleSet, ref: SampleSet | None,
                   job: QualityJob, load: Load, started: float, size: int) -> dict:
    """Rank 0: merge the ranks' records, write samples.jsonl files, metrics.json and the manifest."""
    from pyrawan.eval.artifact import build_eval, manifest_metrics, write_eval
    from pyrawan.eval.quality import relative_videos
    from pyrawan.eval.sampling import write_records

    records = sorted((r for p in parts for r in p["records"]), key=lambda r: r["index"])
    features = [r.pop("features", None) for r in records]
    notes = list(dict.fromkeys(n for p in parts for n in p["notes"]))
    for folder, key in (("samples", "samples"), ("reference", "reference")):
        written = [r for p in parts for r in p[key]]
        if written:
            write_records(tmp / folder, written)
    seconds = None if subject.seconds_per_video is None else sum(p["busy"] for p in parts) / max(len(records), 1)
    body = build_eval("quality", job.label or whole.label, relative_videos(records, tmp), model=subject.model,
                      schedule=subject.schedule, tflops_per_video=subject.tflops_per_video,
                      seconds_per_video=seconds, notes=notes,
                      extra={"reference": None if ref is None else {"label": ref.label, "model": ref.model,
                                                                    "schedule": ref.schedule},
                             "video_size": subject.video, "coupled_noise": subject.coupled, "world_size": size})
    model = job.model or subject.model
    if job.validation_cache is not None:
        body["summary"].update(validation_summary(load(model), model, Path(job.validation_cache), job.batch_size))
    if job.fd_reference is not None:
        body["summary"].update(fd_summary(features, Path(job.fd_reference)))
    write_eval(tmp, body)
    resolved = {"kind": "eval-quality", "model": subject.model,
                "samples": None if job.samples is None else str(job.samples), "reference": job.reference,
                "prompts": whole.prompts, "seeds": whole.seeds, "schedule": subject.schedule, "video": subject.video,
                "coupled_noise": subject.coupled,
                "fd_reference": None if job.fd_reference is None else str(job.fd_reference)}
    inputs = job_inputs(job, [model, None if ref is None else ref.model])
    write_manifest(tmp, "eval-quality", resolved, inputs, manifest_metrics(body), started)
    return body


def validation_summary(m, spec: str, cache: Path, batch_size: int) -> dict:
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


def reference_features(folder: Path):
    """ToyBench judge features ``[M, D]`` of the real videos of a captioned folder (``toy make-dataset``
    output, any layout ``pyrawan calibrate`` reads)."""
    from pyrawan.data.video import read_video
    from pyrawan.manifest import verify_if_artifact
    from pyrawan.toy.bench import features_of
    from pyrawan.toy.layouts import read_captions

    verify_if_artifact(folder, "--fd-reference")
    try:
        videos = [read_video(path)[0] for path, _ in read_captions(folder)]
    except InputError as err:
        raise InputError(f"--fd-reference {folder}: {err} Give a folder of captioned toy-world videos, e.g. one "
                         "written by `pyrawan toy make-dataset`.") from None
    if len(videos) < 2:
        raise InputError(f"--fd-reference {folder} holds {len(videos)} video(s); a Fréchet distance needs at least 2.")
    return features_of(videos)


def fd_summary(features: list[list[float] | None], reference: Path) -> dict:
    """``{"toybench_fd": summary}``: the Fréchet distance between the judge features ``[N, D]`` of the set's
    videos and those of the ``reference`` folder's videos (``pyrawan.toy.bench.reference_fd``), with a
    95% percentile-bootstrap interval over the set's videos (reference fixed; ``stats.statistic_ci``).
    ``mean`` is the FD of the whole set (a set-level number, not a mean over videos); n = videos."""
    import numpy as np

    from pyrawan.eval.artifact import CI
    from pyrawan.eval.stats import statistic_ci
    from pyrawan.toy.bench import reference_fd

    rows = [f for f in features if f is not None]
    higher, unit, description = FD_INFO
    entry = {"higher_is_better": higher, "unit": unit, "description": description, "n": len(rows),
             "missing": len(features) - len(rows)}
    if len(rows) < 2:
        return {FD_METRIC: {**entry, "mean": None, "low": None, "high": None}}
    x, ref = np.asarray(rows, dtype=np.float64), reference_features(reference)
    value, low, high = statistic_ci(len(x), lambda idx: reference_fd(x[idx], ref), CI["level"], CI["resamples"],
                                    CI["seed"])
    return {FD_METRIC: {**entry, "mean": value, "low": low, "high": high}}
