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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from pyrawan.errors import InputError
from pyrawan.manifest import require_verified
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.geometry import WAN21_VAE_FACTORS

PYRAMID_FORMAT = "pyrawan.pyramid/1"
FIRST_FRAME_RULE = "latent frame 0 is its own block (2x2, m=4); later frames form 2x2x2 blocks (m=8)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VideoSize(_Strict):
    """Pixel size and frame rate the model was made for."""

    frames: int = Field(ge=1)
    height: int = Field(ge=1)
    width: int = Field(ge=1)
    fps: int = Field(ge=1)


class SamplingDefaults(_Strict):
    """What ``pyrawan sample`` uses when the user gives nothing (standard CFG scale: uncond + w (cond - uncond))."""

    schedule: str
    shift: float | list[float] = 1.0
    guidance: float = Field(1.0, ge=1.0)
    negative_prompt: str = ""
    fewstep_levels: list[list[float]] | None = None
    max_sequence_length: int = Field(512, ge=1)


class Distilled(_Strict):
    """How a few-step model was distilled (``pyrawan distill``)."""

    method: str                                   # dmd
    variant: str                                  # ot | pt | ptstar | baseline
    schedule: str                                 # e.g. "2-2-1"
    levels: list[list[float]]                     # local levels rho per stage, coarsest first
    teacher: str                                  # the real-score model as given in the recipe
    teacher_guidance: float                       # standard CFG scale of the real score
    steps: int                                    # distillation iterations (generator + fake-score)


class PyramidSpec(_Strict):
    """The content of ``pyramid.json``."""

    format: Literal["pyrawan.pyramid/1"] = PYRAMID_FORMAT
    num_stages: int = Field(ge=1, le=8)
    kind: Literal["resolution", "ppf"] = "resolution"
    boundaries: list[float]
    resizer: str
    keep_time: bool = False
    first_frame_rule: str = FIRST_FRAME_RULE
    stage_data: Literal[1, 2] = 2
    video: VideoSize
    vae_factors: tuple[PositiveInt, PositiveInt] = WAN21_VAE_FACTORS   # (temporal, spatial) VAE compression; absent = Wan2.1
    stage_latents: list[list[int]]
    natural_levels: list[dict[str, Any]]
    sampling: SamplingDefaults
    calibration: str | None = None
    distilled: Distilled | None = None

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
            shown = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in err.errors()[:5])
            raise InputError(f"{source} is not a valid {PYRAMID_FORMAT} file ({shown}); it is damaged or was written "
                             "by another tool. Re-create the model with `pyrawan convert` (or the command that made it).") from None

    @classmethod
    def read(cls, path: Path) -> "PyramidSpec":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise InputError(f"{path} cannot be read as JSON ({type(err).__name__}: {err}); re-create the model "
                             "with `pyrawan convert`.") from None
        return cls.parse(data, str(path))


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
