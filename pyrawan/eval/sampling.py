"""Sampling for evaluation: prompt suites, (prompt, seed) grids, and a model's videos as a ``SampleSet``.

Videos are sampled with coupled noise (the full-resolution noise of each seed, taken down to the
first stage with ``sqrt(m) D``), so any two models or schedules sampled here with the same seeds
can be compared video by video. Each set is written as ``samples.jsonl`` + ``videos/*.mp4`` +
``latents/*.safetensors`` (the layout of ``pyrawan sample``).
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from pyrawan.data.video import write_video
from pyrawan.errors import InputError, NonFiniteError
from pyrawan.eval.cost import stage_forward_tflops, video_tflops
from pyrawan.eval.quality import SampleSet
from pyrawan.fsutil import atomic_path, atomic_write_text
from pyrawan.models.artifact import LoadedModel
from pyrawan.models.generate import Plan, SampleSettings, generate_batches, make_plan, slug
from pyrawan.ui import progress_bar

SUITE = re.compile(r"^toy-(\d+)$")


def suite_prompts(name: str, seed: int = 0) -> list[str]:
    """Prompts of a named suite. ``toy-N``: N toy-world captions drawn with ``seed`` (the ToyBench grammar)."""
    match = SUITE.match(name)
    if not match or int(match.group(1)) < 1:
        raise InputError(f"--suite {name!r} is not a known suite; use toy-N (N toy-world prompts, e.g. toy-16), or "
                         f"give --prompts FILE.")
    from pyrawan.toy.world import caption, sample_scene

    rng = np.random.default_rng(seed)
    return [caption(sample_scene(rng)) for _ in range(int(match.group(1)))]


def grid(prompts: Sequence[str], seeds: Sequence[int]) -> tuple[list[str], list[int]]:
    """Every prompt with every seed, prompt-major: ``(prompts', seeds')`` of length ``P * S``."""
    if not prompts or not seeds:
        raise InputError("evaluation needs at least one prompt and one seed.")
    return [p for p in prompts for _ in seeds], [int(s) for _ in prompts for s in seeds]



def plan_for(model: LoadedModel, spec: str, prompts: Sequence[str], schedule: str | None = None,
             video: dict | None = None) -> Plan:
    """The model's sampling plan with ``schedule`` and the pixel ``video`` size (None: the model's defaults)."""
    sizes = {k: v for k, v in (video or {}).items() if k in ("frames", "height", "width", "fps")}
    return make_plan(SampleSettings(prompts=list(prompts), model=spec, schedule=schedule, **sizes), model)


def plan_tflops(model: LoadedModel, plan: Plan) -> float:
    """Transformer TFLOPs per video of ``plan`` on ``model`` (x2 with guidance)."""
    per_stage = stage_forward_tflops(dict(model.components.transformer.config), plan.pyramid,
                                     plan.latent_shapes()[0], plan.max_sequence_length)
    return video_tflops(per_stage, plan.steps, plan.guidance)


def sample_set(model: LoadedModel, spec: str, plan: Plan, prompts: Sequence[str], seeds: Sequence[int],
               folder: Path | None, label: str, batch_size: int = 8, progress: bool = True,
               positions: Sequence[int] | None = None, decoder: str = "vae") -> SampleSet:
    """Sample ``prompts[i]`` with ``seeds[i]`` for every ``i`` of ``positions`` (default: all), with coupled
    noise, decode, and write the mp4s and latents under ``folder`` (None: write nothing; the
    ``samples.jsonl`` records are in ``.records``). Seconds per video count sampling and decoding only
    (no model loading, no file writing). ``decoder``: vae or tiny (``pyrawan.models.decoders``)."""
    from pyrawan.models.decoders import decoder_for

    positions = list(range(len(prompts))) if positions is None else list(positions)
    if not positions:                                   # a rank with no share (more ranks than videos)
        t, h, w = plan.latent_shapes()[0]
        f, hp, wp = plan.video["frames"], plan.video["height"], plan.video["width"]
        return SampleSet(label=label, model=spec, prompts=[], seeds=[], latents=torch.empty(0, 16, t, h, w),
                         frames=torch.empty(0, f, 3, hp, wp), videos=[], schedule="-".join(map(str, plan.steps)),
                         video=dict(plan.video), coupled=True, tflops_per_video=plan_tflops(model, plan),
                         seconds_per_video=0.0, positions=[], records=[])
    mine_p, mine_s = [prompts[i] for i in positions], [int(seeds[i]) for i in positions]
    latents, frames, records, busy = [], [], [], 0.0
    with progress_bar(f"sample {label}", total=len(positions) * plan.nfe, enabled=progress) as advance:
        batches = generate_batches(model, plan, mine_p, mine_s, batch_size, coupled_noise=True, advance=advance,
                                   decode=True, decoder=decoder_for(model, decoder))
        while True:
            start = time.perf_counter()
            try:
                part = next(batches, None)
            except NonFiniteError as err:
                raise err.for_prompts(positions) from None
            busy += time.perf_counter() - start
            if part is None:
                break
            local, z, video = part
            latents.append(z)
            frames.append(video)
            if folder is not None:
                records += write_batch(folder, [positions[k] for k in local], z, video, prompts, seeds, plan)
    videos = [folder / r["video"] for r in records] if records else [None] * len(positions)
    return SampleSet(label=label, model=spec, prompts=mine_p, seeds=mine_s, latents=torch.cat(latents),
                     frames=torch.cat(frames), videos=videos, schedule="-".join(map(str, plan.steps)),
                     video=dict(plan.video), coupled=True, tflops_per_video=plan_tflops(model, plan),
                     seconds_per_video=busy / max(len(positions), 1), positions=positions, records=records)


def write_records(folder: Path, records: list[dict]) -> None:
    """``folder/samples.jsonl``, sorted by index."""
    ordered = sorted(records, key=lambda r: r["index"])
    atomic_write_text(folder / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in ordered))


def write_batch(folder: Path, positions: Sequence[int], latents: torch.Tensor, frames: torch.Tensor,
                prompts: Sequence[str], seeds: Sequence[int], plan: Plan) -> list[dict]:
    """mp4 + latents of one batch; returns its ``samples.jsonl`` records."""
    records = []
    for k, i in enumerate(positions):
        name = f"{i:04d}-{slug(prompts[i])}"
        write_video(folder / "videos" / f"{name}.mp4", frames[k], fps=plan.video["fps"])
        meta = {"pyrawan.prompt": prompts[i], "pyrawan.seed": str(seeds[i]), "pyrawan.coupled_noise": "true",
                "pyrawan.schedule": "-".join(map(str, plan.steps)), "pyrawan.normalised": "true"}
        path = folder / "latents" / f"{name}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({"latents": latents[k:k + 1].contiguous()}, str(tmp), metadata=meta)
        records.append({"index": i, "prompt": prompts[i], "seed": int(seeds[i]), "video": f"videos/{name}.mp4",
                        "latents": f"latents/{name}.safetensors", "frames": int(frames.shape[1])})
    return records
