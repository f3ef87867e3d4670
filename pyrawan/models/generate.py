"""Text to latents to frames with the pyramidal sampler, batched: the sampling core of ``sample`` and eval.

``make_plan`` resolves what the user asked for (``SampleSettings``) against a loaded model into a
``Plan``; ``generate_batches`` / ``generate_videos`` run prompts through every stage and the VAE
decode ``batch_size`` at a time (classifier-free guidance stays one forward of batch ``2B``).

Every sample draws its noise (initial and jump/re-noise) from its own CPU generator seeded by its
seed, so a sample's latents do not depend on the batch it ran in (up to float reassociation).
"""
from __future__ import annotations

import re
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from pyrawan.errors import InputError, NonFiniteError
from pyrawan.models.arch import factors_of_vae_config
from pyrawan.models.artifact import LoadedModel
from pyrawan.models.denoiser import Velocity, encode_prompts
from pyrawan.models.decoders import DECODERS, Decoder, vae_decoder
from pyrawan.models.vae import decode_latents
from pyrawan.pyramid.process import per_frame
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.geometry import WAN21_VAE_FACTORS, check_sizes, pixel_to_latent
from pyrawan.pyramid.sampler import (active_stages, default_fewstep_levels, nonfinite_samples, sample_fewstep,
                                     sample_multistep)
from pyrawan.pyramid.schedule import parse_schedule

VIDEO_KEYS = ("frames", "height", "width", "fps")

# Prompts per batch when none is given. On a CPU, measured with the toy model (one thread,
# benchmarks/sample_speed.py --sweep, docs/results.md): seconds per video (sampling + decode) fall
# from batch 1 to 8-16 (0-0-50: 0.72 -> 0.34, 20-20-10: 0.62 -> 0.18) and rise again at 32. On a GPU
# (not measured yet) a full-resolution step of a real model is compute bound already at batch 1
# with guidance, so batching gains little there and costs memory: one prompt at a time.
DEFAULT_BATCH_SIZE = 16
DEFAULT_GPU_BATCH_SIZE = 1


def default_batch_size(device: torch.device | str) -> int:
    """``--batch-size`` when none is given: 16 on a CPU, 1 on a GPU."""
    return DEFAULT_GPU_BATCH_SIZE if torch.device(device).type == "cuda" else DEFAULT_BATCH_SIZE

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

Advance = Callable[..., None]
StageEnd = Callable[[int, torch.Tensor], None]          # (stage, clean estimate [B, 16, T_s, H_s, W_s])
Preview = Callable[[range, int, torch.Tensor], None]     # (positions, stage, frames [B, F_s, 3, H_s, W_s])


@dataclass
class SampleSettings:
    """What the user asked for; ``None`` means: take the model's default (``pyramid.json``)."""

    prompts: list[str]
    model: str = "toy"
    negative_prompt: str | None = None
    schedule: str | None = None
    guidance: float | None = None
    shift: float | list[float] | None = None
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
    batch_size: int | None = None
    decoder: str | None = None                 # vae | tiny; None: the model's sampling.decoder
    decoder_weights: str | None = None         # a tiny decoder's weights instead of the model's own
    previews: bool = False
    compile: bool = False
    resume: bool = False
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
    vae_factors: tuple[int, int] = WAN21_VAE_FACTORS   # (temporal, spatial) compression of the model's VAE
    decoder: str = "vae"                               # vae | tiny

    @property
    def nfe(self) -> int:
        return sum(self.steps)

    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """Latent (T, H, W) of every stage, index = stage (0 = full resolution)."""
        v = self.video
        return self.pyramid.shapes(pixel_to_latent(v["frames"], v["height"], v["width"], self.vae_factors))

    def as_dict(self) -> dict:
        return {"pyramid": self.pyramid.to_dict(), "schedule": "-".join(map(str, self.steps)), "shift": self.shift,
                "guidance": self.guidance, "negative_prompt": self.negative_prompt, "fewstep_levels": self.levels,
                "video": self.video, "max_sequence_length": self.max_sequence_length, "decoder": self.decoder}


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "prompt"


def model_defaults(model: LoadedModel, spec: str) -> tuple[PyramidConfig, dict, dict]:
    """(pyramid, sampling defaults, video defaults) of a pyramidal artifact (its validated ``pyramid.json``)
    or a plain model (``PLAIN_DEFAULTS``)."""
    if model.spec is None:
        plain = PLAIN_DEFAULTS[spec if spec in PLAIN_DEFAULTS else "wan"]
        return PyramidConfig(num_stages=1), plain["sampling"], plain["video"]
    p = model.spec
    return p.config(), p.sampling.model_dump(), p.video.model_dump()


def make_plan(settings: SampleSettings, model: LoadedModel) -> Plan:
    """Resolve schedule, levels and sizes against the model; every check happens before sampling."""
    pyramid, defaults, video = model_defaults(model, settings.model)
    for key in VIDEO_KEYS:
        value = getattr(settings, key)
        if value is not None and value <= 0:
            raise InputError(f"--{key} = {value} must be a positive number.")
    video = {k: video[k] if getattr(settings, k) is None else getattr(settings, k) for k in VIDEO_KEYS}
    factors = factors_of_vae_config(model.components.vae.config, "the model's vae config")
    check_sizes({k: video[k] for k in ("frames", "height", "width")}, pyramid.num_stages, pyramid.keep_time,
                frame_unit=factors[0], space_unit=factors[1], what="--frames/--height/--width:")
    steps = parse_schedule(settings.schedule or defaults["schedule"], pyramid.num_stages, key="--schedule")
    levels = settings.fewstep_levels if settings.fewstep_levels is not None else defaults.get("fewstep_levels")
    fewstep = settings.fewstep if settings.fewstep is not None else levels is not None
    if settings.fewstep_levels is not None and [len(r) for r in settings.fewstep_levels] != list(steps):
        raise InputError(f"sampling.fewstep_levels has {[len(r) for r in settings.fewstep_levels]} levels per stage but "
                         f"--schedule {'-'.join(map(str, steps))} asks for {list(steps)}; give one list per stage "
                         "(coarsest first) with one level per step, or leave the levels out for the default.")
    if fewstep:  # the model's own levels fit its own schedule; another schedule gets evenly spaced levels
        levels = [list(r) for r in levels] if levels and [len(r) for r in levels] == list(steps) else default_fewstep_levels(steps)
    decoder = settings.decoder or defaults.get("decoder") or "vae"
    if decoder not in DECODERS:
        raise InputError(f"--decoder = {decoder!r}: choose vae (the model's VAE) or tiny (its distilled tiny decoder).")
    shift = settings.shift if settings.shift is not None else defaults["shift"]
    if min(shift if isinstance(shift, (list, tuple)) else [shift]) <= 0:
        raise InputError(f"--shift = {shift} must be > 0 (1 = no shift; Wan's own sampler uses 3 to 5).")
    return Plan(pyramid=pyramid, steps=steps, shift=list(shift) if isinstance(shift, (list, tuple)) else float(shift),
                guidance=float(settings.guidance if settings.guidance is not None else defaults["guidance"]),
                negative_prompt=settings.negative_prompt if settings.negative_prompt is not None else defaults["negative_prompt"],
                levels=levels if fewstep else None, video=video, vae_factors=factors, decoder=decoder,
                max_sequence_length=int(settings.max_sequence_length or defaults.get("max_sequence_length", 512)))


def initial_noise(plan: Plan, seeds: Sequence[int], coupled: bool = False) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Pure noise ``[N, 16, T, H, W]`` at the first stage that has steps, and one CPU generator per sample.

    Sample ``n`` is drawn from ``torch.Generator("cpu").manual_seed(seeds[n])``; the returned
    generators continue from there (the sampler draws the jump and re-noise noise from them).
    ``coupled``: draw the full-resolution noise and take it down stage by stage with
    ``eps_coarse = sqrt(m) D(eps_fine)`` (white, unit variance; pyramid-math.md section 5), so a
    one-stage model and a pyramid sampled with the same seed start from the same noise. For a
    one-stage model, or a schedule whose first stage is full resolution, coupled equals plain.
    """
    shapes = plan.latent_shapes()
    first = active_stages(plan.steps)[0][0]
    drawn = 0 if coupled else first
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    noise = torch.cat([torch.randn((1, 16, *shapes[drawn]), generator=g, dtype=torch.float32) for g in generators])
    for _ in range(first - drawn):
        noise = plan.pyramid.resize.couple_noise(noise)
    return noise, generators


def compiled(model: LoadedModel, **options) -> LoadedModel:
    """A view of ``model`` whose transformer is ``torch.compile``-d (``options`` go to torch.compile).

    Only the forward changes: weights, state dict and the original module are shared.
    """
    transformer = torch.compile(model.components.transformer, **options)
    return dataclasses.replace(model, components=dataclasses.replace(model.components, transformer=transformer))


class StageEnds:
    """Hands each coarse stage's clean estimate to ``on_stage`` as soon as the stage's last step has run.

    Wraps the velocity to keep its last call: a multi-step stage ends at a noisy level, and its clean
    estimate is ``x - sigma v`` of that last call; the few-step sampler gives its estimate itself.
    The full-resolution stage (0) is the result and is not handed on.
    """

    def __init__(self, velocity: Callable, plan: Plan, on_stage: StageEnd | None):
        self.velocity, self.plan, self.on_stage, self.last = velocity, plan, on_stage, None
        self.steps = list(reversed(plan.steps))                   # index = stage (0 = full resolution)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        v = self.velocity(x, sigma)
        if self.on_stage is not None:
            self.last = (x, sigma, v)
        return v

    def step(self, stage: int, j: int, x: torch.Tensor) -> None:
        if self.on_stage is None or stage == 0 or j != self.steps[stage] - 1:
            return
        if self.plan.levels is None:                              # multi-step: x is the stage's noisy end
            x_in, sigma, v = self.last
            x = x_in - per_frame(sigma, x_in) * v
        self.on_stage(stage, x.float().cpu())


def sample_latents(model: LoadedModel, plan: Plan, prompts: Sequence[str], seeds: Sequence[int],
                   coupled_noise: bool = False, advance: Advance = lambda n=1: None,
                   on_stage: StageEnd | None = None) -> torch.Tensor:
    """Normalised latents ``[B, 16, T, H, W]`` (float32, CPU) at full resolution for one batch of prompts.

    One text-encoder call and, per step, one transformer forward of batch ``B`` (``2B`` with
    guidance); ``advance(B)`` after each step; ``on_stage(stage, x0_hat)`` at the end of each coarse stage.
    """
    comps = model.components
    device = next(comps.transformer.parameters()).device
    negative = [plan.negative_prompt] * len(prompts) if plan.guidance > 1 else None
    cond, uncond = encode_prompts(comps, list(prompts), negative, plan.max_sequence_length)
    velocity = StageEnds(Velocity(comps.transformer, cond, uncond, plan.guidance), plan, on_stage)
    noise, generators = initial_noise(plan, seeds, coupled_noise)
    noise = noise.to(device)

    def step(stage: int, j: int, x: torch.Tensor) -> None:
        advance(len(prompts))
        velocity.step(stage, j, x)
    with torch.inference_mode():
        if plan.levels is not None:
            x = sample_fewstep(velocity, noise, plan.pyramid, plan.levels, generators, step)
        else:
            x = sample_multistep(velocity, noise, plan.pyramid, plan.steps, plan.shift, generators, step)
    return x.float().cpu()


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` itself when it is a whole number >= 1, else an ``InputError`` naming ``--batch-size``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"--batch-size = {batch_size!r} must be a whole number >= 1 (prompts sampled together).")
    return batch_size


def generate_batches(model: LoadedModel, plan: Plan, prompts: Sequence[str], seeds: Sequence[int],
                     batch_size: int = DEFAULT_BATCH_SIZE, coupled_noise: bool = False,
                     advance: Advance = lambda n=1: None, decode: bool = True, decoder: Decoder | None = None,
                     preview: Preview | None = None,
                     ) -> Iterator[tuple[range, torch.Tensor, torch.Tensor | None]]:
    """Yield ``(positions, latents [B, 16, T, H, W], frames [B, F, 3, H, W] | None)`` per batch of prompts.

    ``positions`` index ``prompts``/``seeds``; latents are float32 on the CPU, frames float32 in
    [0, 1] on the CPU (``None`` when ``decode`` is False), decoded by ``decoder`` (default: the VAE).
    ``preview(positions, stage, frames)`` gets each coarse stage's clean estimate decoded by the same
    decoder, at that stage's resolution, as soon as the stage ends. NaN or Inf in a batch's latents or
    frames raises ``NonFiniteError`` naming the positions of the prompts concerned.
    """
    if len(prompts) != len(seeds):
        raise InputError(f"{len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt.")
    check_batch_size(batch_size)
    decoder = decoder or vae_decoder(model.components, decode_latents)
    for start in range(0, len(prompts), batch_size):
        part = range(start, min(start + batch_size, len(prompts)))
        on_stage = None if preview is None else (
            lambda stage, x0, part=part: preview(part, stage, decoded(decoder, x0)))
        try:
            latents = sample_latents(model, plan, [prompts[i] for i in part], [seeds[i] for i in part],
                                     coupled_noise, advance, on_stage)
        except NonFiniteError as err:
            raise err.for_prompts(part) from None
        frames = None
        if decode:
            frames = decoded(decoder, latents)
            if bad := nonfinite_samples(frames):
                raise NonFiniteError(decoder.stage, [part[i] for i in bad], what="the decoded video")
        yield part, latents, frames


def decoded(decoder: Decoder, latents: torch.Tensor) -> torch.Tensor:
    """``decoder(latents)`` without autograd: frames ``[B, F, 3, H, W]`` float32 in [0, 1] on the CPU."""
    with torch.inference_mode():
        return decoder(latents).cpu()


def generate_videos(model: LoadedModel, plan: Plan, prompts: list[str], seeds: list[int],
                    batch_size: int = DEFAULT_BATCH_SIZE, coupled_noise: bool = False,
                    advance: Advance = lambda n=1: None, decode: bool = True, decoder: Decoder | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Latents ``[N, 16, T, H, W]`` (float32, CPU, normalised, full resolution) and frames
    ``[N, F, 3, H, W]`` in [0, 1] (``None`` when ``decode`` is False) for ``prompts[n]`` with ``seeds[n]``.

    Runs ``batch_size`` prompts at a time through every stage and the VAE decode; each sample's
    result does not depend on ``batch_size``. ``advance(n)`` is called with the number of samples
    after every sampler step (a progress bar of ``N * plan.nfe``).
    """
    latents, frames = [], []
    for _, z, video in generate_batches(model, plan, prompts, seeds, batch_size, coupled_noise, advance, decode,
                                        decoder):
        latents.append(z)
        frames.append(video)
    if not latents:
        raise InputError("no prompt given: generate_videos needs at least one prompt.")
    return torch.cat(latents), (torch.cat(frames) if decode else None)
