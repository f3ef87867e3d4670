"""``pyramid.json``: the typed definition of a pyramidal model (one schema object, never a bare dict).

A model artifact stores its pyramid beside the diffusers-layout transformer: stages, boundaries,
resizer, the first-frame rule, the video size it was made for, the latent shape and natural levels
of every stage (for readers), its sampling defaults, and, for a distilled model, how it was
distilled (``distilled``). ``PyramidSpec.read`` validates a file and names the bad key;
``define_pyramid`` builds the spec of a recipe (convert, finetune from a plain base).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pyrawan.errors import InputError
from pyrawan.manifest import require_verified
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.geometry import WAN21_VAE_FACTORS, check_sizes, pixel_to_latent
from pyrawan.pyramid.schedule import check_boundaries, parse_schedule
from pyrawan.recipe import MAX_FRAMES, MAX_PIXELS_SIDE, MAX_STAGES, Pyramid, Sampling, Text, fail
from pyrawan.recipe_io import describe_errors
from pyrawan.recipe_rules import check_fewstep, check_per_stage

PYRAMID_FORMAT = "pyrawan.pyramid/1"
FIRST_FRAME_RULE = "latent frame 0 is its own block (2x2, m=4); later frames form 2x2x2 blocks (m=8)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class VideoSize(_Strict):
    """Pixel size and frame rate the model was made for (the recipe's ``video`` caps)."""

    frames: int = Field(ge=1, le=MAX_FRAMES)
    height: int = Field(ge=1, le=MAX_PIXELS_SIDE)
    width: int = Field(ge=1, le=MAX_PIXELS_SIDE)
    fps: int = Field(ge=1, le=240)


class SamplingDefaults(Sampling):
    """What ``pyrawan sample`` uses when the user gives nothing (standard CFG scale: uncond + w (cond - uncond)).

    The recipe's ``sampling`` section with its validators and caps, plus the text length.
    """

    schedule: str = Field(max_length=200)
    guidance: float = Field(1.0, ge=1.0, le=100.0)
    fewstep_levels: list[list[float]] | None = Field(None, max_length=MAX_STAGES)   # JSON lists, as written
    max_sequence_length: int = Text.model_fields["max_sequence_length"]


class NaturalLevels(_Strict):
    """Natural levels of frame 0 and of later frames at both ends of one stage (for readers)."""

    stage: int = Field(ge=0, lt=MAX_STAGES)
    sigma_c: list[float] = Field(min_length=2, max_length=2)
    sigma_n: list[float] = Field(min_length=2, max_length=2)


class Distilled(_Strict):
    """How a few-step model was distilled (``pyrawan distill``)."""

    method: str = Field(max_length=100)           # dmd | adv
    variant: str = Field(max_length=100)          # ot | pt | ptstar | baseline | adv-original | adv-pyramidal
    schedule: str = Field(max_length=200)         # e.g. "2-2-1"
    levels: list[list[float]]                     # local levels rho per stage, coarsest first
    teacher: str = Field(max_length=4096)         # the real-score model as given in the recipe
    teacher_guidance: float = Field(ge=1.0, le=100.0)   # standard CFG scale of the real score
    steps: int = Field(ge=0)                      # distillation iterations (generator + fake-score)

    @model_validator(mode="after")
    def _levels(self) -> "Distilled":
        if any(not 0.0 <= rho <= 1.0 for stage in self.levels for rho in stage):
            raise fail(f"distilled.levels = {self.levels}: every level rho must lie in [0, 1]")
        return self


class PyramidSpec(_Strict):
    """The content of ``pyramid.json``."""

    format: Literal["pyrawan.pyramid/1"] = PYRAMID_FORMAT
    num_stages: int = Field(ge=1, le=MAX_STAGES)
    kind: Literal["resolution", "ppf"] = "resolution"
    boundaries: list[float] = Field(max_length=MAX_STAGES - 1)
    resizer: Pyramid.model_fields["resizer"].annotation
    keep_time: bool = False
    first_frame_rule: str = FIRST_FRAME_RULE
    stage_data: Literal[1, 2] = 2
    video: VideoSize
    vae_factors: tuple[Annotated[int, Field(ge=1, le=64)], Annotated[int, Field(ge=1, le=64)]] = WAN21_VAE_FACTORS
    stage_latents: list[list[int]]              # per stage (index 0 = full resolution), derived: checked
    natural_levels: list[NaturalLevels] = Field(max_length=MAX_STAGES)
    sampling: SamplingDefaults
    calibration: str | None = Field(None, max_length=4096)
    distilled: Distilled | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "PyramidSpec":
        """The recipe's cross-key rules, and the stage shapes a reader relies on."""
        problems = spec_problems(self)
        if problems:
            raise fail("; ".join(problems))
        return self

    def config(self) -> PyramidConfig:
        """The math-side pyramid (stages, boundaries, resizer, keep_time)."""
        return PyramidConfig(num_stages=self.num_stages, boundaries=tuple(self.boundaries), resizer=self.resizer,
                             keep_time=self.keep_time, kind=self.kind)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def parse(cls, data: Any, source: str) -> "PyramidSpec":
        """Validate ``data`` (a parsed ``pyramid.json``); InputError naming ``source`` and the bad keys."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise InputError(f"{source} is not a valid {PYRAMID_FORMAT} file: {describe_errors(err)}. The file was "
                             "changed, damaged or written by another tool (a recipe with these values is refused too); "
                             "re-create the model with `pyrawan convert` (or the command that made it).") from None

    @classmethod
    def read(cls, path: Path) -> "PyramidSpec":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise InputError(f"{path} cannot be read as JSON ({type(err).__name__}: {err}); re-create the model "
                             "with `pyrawan convert`.") from None
        return cls.parse(data, str(path))


def spec_problems(spec: PyramidSpec) -> list[str]:
    """What a recipe with these values would be refused for, and ``stage_latents`` that differ from the
    shapes the pyramid gives the video (a reader sizes its tensors by them)."""
    s, v = spec.sampling, spec.video
    checks = [
        lambda: check_boundaries(spec.boundaries, spec.num_stages, key="boundaries"),
        lambda: parse_schedule(s.schedule, spec.num_stages, key="sampling.schedule"),
        lambda: check_per_stage("sampling.shift", s.shift, spec.num_stages),
        lambda: check_fewstep(s.fewstep_levels, spec.num_stages, parse_schedule(s.schedule, spec.num_stages)),
        lambda: check_sizes({"frames": v.frames, "height": v.height, "width": v.width}, spec.num_stages, spec.keep_time,
                            frame_unit=spec.vae_factors[0], space_unit=spec.vae_factors[1], what="video"),
        lambda: _check_stage_latents(spec),
    ]
    problems = []
    for check in checks:
        try:
            check()
        except InputError as err:
            problems.append(str(err).rstrip("."))
            if len(problems) == 1 and check is checks[0]:
                break                                   # the shapes below need valid boundaries
    return problems


def _check_stage_latents(spec: PyramidSpec) -> None:
    """``stage_latents`` must be the latent shape of every stage of ``video`` through the VAE."""
    v = spec.video
    full = pixel_to_latent(v.frames, v.height, v.width, tuple(spec.vae_factors))
    wanted = [list(shape) for shape in spec.config().shapes(full)]
    if spec.stage_latents != wanted:
        raise InputError(f"stage_latents = {spec.stage_latents} but a {v.frames}x{v.height}x{v.width} video through "
                         f"this pyramid has {wanted} (index 0 = full resolution); set stage_latents: {wanted}")


def define_pyramid(recipe, boundaries: list[float] | None, calibration: Path | None = None) -> PyramidSpec:
    """The ``pyramid.json`` of a recipe (any kind with video/text/pyramid/sampling sections)."""
    p, v = recipe.pyramid, recipe.video
    config = recipe.pyramid_config(boundaries)
    shapes = config.shapes(recipe.latent_size())
    return PyramidSpec(
        num_stages=config.num_stages, kind=config.kind, boundaries=list(config.boundaries), resizer=config.resizer,
        keep_time=config.keep_time, stage_data=p.stage_data, video=VideoSize(**v.model_dump()),
        vae_factors=recipe.vae_factors(),
        stage_latents=[list(shape) for shape in shapes],
        natural_levels=config.levels_table([t for t, _, _ in shapes]),
        sampling=SamplingDefaults(**recipe.sampling.model_dump(mode="json"),
                                  max_sequence_length=recipe.text.max_sequence_length),
        calibration=None if calibration is None else str(Path(calibration).resolve()),
    )


def calibrated_boundaries(folder: Path, pyramid) -> list[float]:
    """Boundaries for the recipe's ``pyramid`` section from a verified ``pyrawan calibrate`` artifact.

    Calibration measures every resizer; the recipe's resizer picks its own result. The pyramid's
    stages, ``keep_time`` and stage-data definition must match what was calibrated.
    """
    require_verified(folder, "calibration")
    path = folder / "calibration.json"
    try:
        cal = json.loads(path.read_text())
        per_resizer = cal.get("resizers", {}).get(pyramid.resizer, {})
        boundaries = [float(b) for b in per_resizer.get("boundaries", cal["boundaries"])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: cannot read its boundaries ({type(err).__name__}: {err}); point --calibration at "
                         f"a folder written by `pyrawan calibrate`.") from None
    wanted = {"stages": (len(boundaries) + 1, pyramid.stages), "keep_time": (cal.get("keep_time", False), pyramid.keep_time),
              "stage_data": (cal.get("definition", pyramid.stage_data), pyramid.stage_data)}
    if pyramid.resizer not in cal.get("resizers", {}) and cal.get("resizer", pyramid.resizer) != pyramid.resizer:
        wanted["resizer"] = (cal.get("resizer"), pyramid.resizer)
    differ = [f"pyramid.{k} = {mine} but the calibration used {theirs}" for k, (theirs, mine) in wanted.items() if theirs != mine]
    if differ:
        raise InputError(f"{path} was measured for another pyramid: {'; '.join(differ)}. Calibrate with the same "
                         f"pyramid settings (pass the same recipe to `pyrawan calibrate -r`).")
    return boundaries


def recipe_pyramid(recipe) -> PyramidSpec:
    """The pyramid a recipe defines: its calibration's boundaries when it names one, else its own."""
    p = recipe.pyramid
    bounds = None if p.boundaries is None else list(p.boundaries)
    if recipe.calibration is not None:
        bounds = calibrated_boundaries(Path(recipe.calibration), p)
    return define_pyramid(recipe, bounds, recipe.calibration)
