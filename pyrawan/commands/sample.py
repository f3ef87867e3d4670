"""``pyrawan sample``: text to video with the pyramidal sampler (or plain Wan with one stage).

Writes one mp4 per prompt (PyAV, the model's fps), the final normalised latents as safetensors,
``samples.jsonl`` (prompt, seed, files) and the manifest. Under torchrun the prompts are sharded
round robin across ranks; rank 0 writes the index and the one manifest at the end.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from pyrawan import dist
from pyrawan.commands.common import console, progress_bar, resolve_device, resolve_dtype
from pyrawan.data.video import write_video
from pyrawan.errors import InputError
from pyrawan.fsutil import atomic_path, atomic_write_text
from pyrawan.manifest import artifact_dir, check_output, verify_if_artifact, write_manifest
from pyrawan.models.artifact import LoadedModel, load_model
from pyrawan.models.denoiser import Velocity, encode_prompts
from pyrawan.models.vae import decode_latents
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.geometry import check_sizes, pixel_to_latent
from pyrawan.pyramid.sampler import active_stages, default_fewstep_levels, sample_fewstep, sample_multistep
from pyrawan.pyramid.schedule import parse_schedule

VIDEO_KEYS = ("frames", "height", "width", "fps")

# Sampling defaults of a plain (non-pyramidal) model: Wan2.1 at 480p, the CI-sized preset and the toy teacher.
PLAIN_DEFAULTS = {
    "wan": {"video": {"frames": 81, "height": 480, "width": 832, "fps": 16},
            "sampling": {"schedule": "50", "shift": 3.0, "guidance": 5.0, "negative_prompt": "",
                         "fewstep_levels": None, "max_sequence_length": 512}},
    "tiny": {"video": {"frames": 17, "height": 64, "width": 64, "fps": 16},
             "sampling": {"schedule": "8", "shift": 3.0, "guidance": 3.0, "negative_prompt": "",
                          "fewstep_levels": None, "max_sequence_length": 16}},
    "toy": {"video": {"frames": 17, "height": 64, "width": 64, "fps": 16},
            "sampling": {"schedule": "50", "shift": 3.0, "guidance": 3.0, "negative_prompt": "",
                         "fewstep_levels": None, "max_sequence_length": 16}},
}


@dataclass
class SampleSettings:
    """What the user asked for; ``None`` means: take the model's default (``pyramid.json``)."""

    prompts: list[str]
    model: str = "toy"
    negative_prompt: str | None = None
    schedule: str | None = None
    guidance: float | None = None
    shift: float | None = None
    seed: int = 0
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    fps: int | None = None
    fewstep: bool | None = None
    fewstep_levels: list[list[float]] | None = None
    max_sequence_length: int | None = None
    device: str | None = None
    dtype: str | None = None
    overwrite: bool = False
    progress: bool = True
    command: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """Everything resolved before the first forward."""

    pyramid: PyramidConfig
    steps: tuple[int, ...]
    shift: float | list[float]
    guidance: float
    negative_prompt: str
    levels: list[list[float]] | None
    video: dict
    max_sequence_length: int

    @property
    def nfe(self) -> int:
        return sum(self.steps)

    def as_dict(self) -> dict:
        return {"pyramid": self.pyramid.to_dict(), "schedule": "-".join(map(str, self.steps)), "shift": self.shift,
                "guidance": self.guidance, "negative_prompt": self.negative_prompt, "fewstep_levels": self.levels,
                "video": self.video, "max_sequence_length": self.max_sequence_length}


def model_defaults(model: LoadedModel, spec: str) -> tuple[PyramidConfig, dict, dict]:
    """(pyramid, sampling defaults, video defaults) of a pyramidal artifact or a plain model."""
    if model.pyramid is None:
        plain = PLAIN_DEFAULTS[spec if spec in PLAIN_DEFAULTS else "wan"]
        return PyramidConfig(num_stages=1), plain["sampling"], plain["video"]
    try:
        p = model.pyramid
        return PyramidConfig.from_dict(p), dict(p["sampling"]), {k: int(p["video"][k]) for k in VIDEO_KEYS}
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{model.path}/pyramid.json is damaged or from another tool ({type(err).__name__}: {err}); "
                         f"re-create the model with `pyrawan convert`.") from None


def make_plan(settings: SampleSettings, model: LoadedModel) -> Plan:
    """Resolve schedule, levels and sizes against the model; every check happens before sampling."""
    pyramid, defaults, video = model_defaults(model, settings.model)
    for key in VIDEO_KEYS:
        value = getattr(settings, key)
        if value is not None and value <= 0:
            raise InputError(f"--{key} = {value} must be a positive number.")
    video = {k: video[k] if getattr(settings, k) is None else getattr(settings, k) for k in VIDEO_KEYS}
    check_sizes({k: video[k] for k in ("frames", "height", "width")}, pyramid.num_stages, pyramid.keep_time,
                frame_unit=4, space_unit=8, what="--frames/--height/--width:")
    steps = parse_schedule(settings.schedule or defaults["schedule"], pyramid.num_stages, key="--schedule")
    levels = settings.fewstep_levels if settings.fewstep_levels is not None else defaults.get("fewstep_levels")
    fewstep = settings.fewstep if settings.fewstep is not None else levels is not None
    if fewstep:
        levels = [list(r) for r in levels] if levels and [len(r) for r in levels] == list(steps) else default_fewstep_levels(steps)
    shift = settings.shift if settings.shift is not None else defaults["shift"]
    if min(shift if isinstance(shift, (list, tuple)) else [shift]) <= 0:
        raise InputError(f"--shift = {shift} must be > 0 (1 = no shift; Wan's own sampler uses 3 to 5).")
    return Plan(pyramid=pyramid, steps=steps, shift=list(shift) if isinstance(shift, (list, tuple)) else float(shift),
                guidance=float(settings.guidance if settings.guidance is not None else defaults["guidance"]),
                negative_prompt=settings.negative_prompt if settings.negative_prompt is not None else defaults["negative_prompt"],
                levels=levels if fewstep else None, video=video,
                max_sequence_length=int(settings.max_sequence_length or defaults.get("max_sequence_length", 512)))


def initial_noise(plan: Plan, seed: int) -> tuple[torch.Tensor, torch.Generator]:
    """Pure noise ``[1, 16, T, H, W]`` at the first stage that has steps, from a CPU generator."""
    generator = torch.Generator("cpu").manual_seed(seed)
    full = pixel_to_latent(plan.video["frames"], plan.video["height"], plan.video["width"])
    first_stage = active_stages(plan.steps)[0][0]
    shape = plan.pyramid.shapes(full)[first_stage]
    return torch.randn((1, 16, *shape), generator=generator, dtype=torch.float32), generator


def generate(model: LoadedModel, plan: Plan, prompt: str, seed: int, advance=lambda n=1: None) -> torch.Tensor:
    """Normalised latents ``[1, 16, T, H, W]`` at full resolution for one prompt."""
    comps = model.components
    device = next(comps.transformer.parameters()).device
    negative = [plan.negative_prompt] if plan.guidance > 1 else None
    cond, uncond = encode_prompts(comps, [prompt], negative, plan.max_sequence_length)
    velocity = Velocity(comps.transformer, cond, uncond, plan.guidance)
    noise, generator = initial_noise(plan, seed)
    noise = noise.to(device)
    step = lambda stage, j, x: advance()  # noqa: E731
    with torch.inference_mode():
        if plan.levels is not None:
            return sample_fewstep(velocity, noise, plan.pyramid, plan.levels, generator, step)
        return sample_multistep(velocity, noise, plan.pyramid, plan.steps, plan.shift, generator, step)


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "prompt"


def render(model: LoadedModel, plan: Plan, prompts: list[str], indices: list[int], seed: int, folder: Path,
           progress: bool) -> list[dict]:
    """Sample, decode and write the prompts at ``indices``; returns one record per prompt."""
    records = []
    with progress_bar("sample", total=len(indices) * plan.nfe, enabled=progress) as advance:
        for i in indices:
            latents = generate(model, plan, prompts[i], seed + i, advance)
            with torch.inference_mode():
                video = decode_latents(model.components, latents)[0]                 # [F, 3, H, W]
            name = f"{i:04d}-{slug(prompts[i])}"
            write_video(folder / "videos" / f"{name}.mp4", video, fps=plan.video["fps"])
            meta = {"pyrawan.prompt": prompts[i], "pyrawan.seed": str(seed + i),
                    "pyrawan.schedule": "-".join(map(str, plan.steps)), "pyrawan.normalised": "true"}
            with atomic_path(folder / "latents" / f"{name}.safetensors") as tmp:
                save_file({"latents": latents.float().cpu().contiguous()}, str(tmp), metadata=meta)
            records.append({"index": i, "prompt": prompts[i], "seed": seed + i, "video": f"videos/{name}.mp4",
                            "latents": f"latents/{name}.safetensors", "frames": int(video.shape[0])})
    return records


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


def run(settings: SampleSettings, out: Path) -> Path:
    """Render every prompt into the artifact folder ``out``."""
    started = time.time()
    if not settings.prompts:
        raise InputError("no prompt given: pass --prompt TEXT (repeatable) or --prompts FILE (one prompt per line).")
    if dist.world()[0] == 0:
        check_output(Path(out), settings.overwrite)   # before minutes of loading
    model, inputs = load_for_sampling(settings)
    plan = make_plan(settings, model)
    rank, size = dist.world()
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(artifact_dir(out, overwrite=settings.overwrite)) if rank == 0 else None
        folder = Path(dist.broadcast(str(folder) if folder else None))
        mine = dist.shard(settings.prompts, rank, size)
        records = render(model, plan, settings.prompts, mine, settings.seed, folder, settings.progress and rank == 0)
        everything = sorted((r for part in dist.gather(records) for r in part), key=lambda r: r["index"])
        dist.barrier()
        if rank == 0:
            atomic_write_text(folder / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in everything))
            resolved = {"kind": "sample", "model": settings.model, "prompts": settings.prompts, "seed": settings.seed,
                        **plan.as_dict()}
            metrics = {"videos": len(everything), "nfe_per_video": plan.nfe,
                       "forwards_per_video": plan.nfe * (2 if plan.guidance > 1 else 1), "world_size": size,
                       "seconds": round(time.time() - started, 3)}
            write_manifest(folder, "sample", resolved, inputs, metrics, started)
    dist.barrier()
    if rank == 0:
        console.print(f"sample: wrote {len(settings.prompts)} video(s) to [bold]{out}[/] "
                      f"(schedule {'-'.join(map(str, plan.steps))}, guidance {plan.guidance})")
    return out
