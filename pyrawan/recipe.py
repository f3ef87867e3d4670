"""Recipes: the versioned YAML that configures every pyrawan command (eval-and-io.md section 5.2).

A recipe is ``schema_version: 1``, a ``kind`` (convert, calibrate, finetune, distill, sample, eval)
and sections. Each kind is a frozen pydantic model that forbids unknown keys; the union is
discriminated on ``kind``, so a kind can grow its own sections by subclassing ``RecipeBase``.
``load_recipe`` reads YAML, applies ``key.path=value`` overrides and validates types, unknown keys,
pyramid sizes, the schedule and the boundaries before any weights load, reporting every problem
at once in one ``InputError`` that names the file, the key, the value and the fix.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pyrawan.data.config import Calibrate, Data
from pyrawan.errors import InputError
from pyrawan.train.config import Train
from pyrawan.train.distill_config import Distill
from pyrawan.recipe_io import apply_overrides, error_lines, problems_error, read_yaml
from pyrawan.recipe_rules import partial_problems

SCHEMA_VERSIONS = (1,)
RECIPES_DIR = Path(__file__).parent / "recipes"


def fail(message: str) -> PydanticCustomError:
    """A validation error whose text is exactly ``message`` (no "Value error," prefix)."""
    return PydanticCustomError("pyrawan", "{message}", {"message": message})


class Section(BaseModel):
    """Base of every recipe model: unknown keys are errors and values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Caps: far above any real run, low enough that a typo fails at once instead of allocating terabytes.
MAX_FRAMES, MAX_PIXELS_SIDE, MAX_STAGES, MAX_TOTAL_STEPS, MAX_SEED = 1025, 8192, 8, 10_000, 2**32 - 1


class Video(Section):
    """Pixel size and frame rate of the videos a model makes or trains on."""

    frames: int = Field(81, ge=1, le=MAX_FRAMES, description="Pixel frames; 4k+1 for Wan's VAE (81 -> 21 latent frames).")
    height: int = Field(448, ge=1, le=MAX_PIXELS_SIDE, description="Pixel height; must halve cleanly at every pyramid stage.")
    width: int = Field(832, ge=1, le=MAX_PIXELS_SIDE, description="Pixel width; must halve cleanly at every pyramid stage.")
    fps: int = Field(16, ge=1, le=240, description="Frames per second (16 for Wan2.1).")


class Text(Section):
    """Text encoder settings."""

    max_sequence_length: int = Field(512, ge=1, le=4096, description="Prompt tokens given to umT5 (Wan: 512).")


class Pyramid(Section):
    """The pyramid: how many stages, where they meet, and how resolutions are changed."""

    stages: int = Field(3, ge=1, le=MAX_STAGES, description="Number of resolution stages, full resolution included.")
    boundaries: tuple[float, ...] | None = Field(
        None, max_length=MAX_STAGES - 1, description="Inner boundaries b_1..b_{S-1} in global sigma, strictly increasing in (0, 1); "
        "null = Pyramid Flow's split (0.586, 0.941 for 3 stages), the measured default.")
    resizer: Literal["haar", "dct", "db4"] = Field("haar", description="Orthogonal down/up-sampling operator.")
    keep_time: StrictBool = Field(False, description="Spatial-only pyramid: keep every frame at every stage.")
    stage_data: Literal[1, 2] = Field(
        2, description="Coarse-stage training data: 1 = downsample latents, 2 = resize pixels and VAE-encode.")
    kind: Literal["resolution", "ppf"] = Field(
        "resolution", description="resolution = stages at lower resolution with jumps (PyramidalWan); ppf = Pyramidal "
        "Patchification: full resolution everywhere, coarser patches at noisier stages (the model must be PPF).")


class Sampling(Section):
    """Default sampling settings (used by sample, eval and the teacher in distill)."""

    schedule: str = Field("20-20-10", max_length=200, description="Steps per stage, coarsest first, e.g. '20-20-10'.")
    shift: float | tuple[float, ...] = Field(
        1.0, description="Timestep shift k > 0: one number for all stages or one per stage, coarsest first.")
    guidance: float = Field(5.0, ge=1.0, le=100.0, description="Classifier-free guidance scale; 1 = no guidance.")
    negative_prompt: str = Field("", max_length=10_000, description="Prompt for the unconditional branch of guidance.")
    fewstep_levels: tuple[tuple[float, ...], ...] | None = Field(
        None, max_length=MAX_STAGES, description="Few-step models: per stage (coarsest first) the local levels rho in [0, 1] of "
        "each step, decreasing; the first level of the first stage with steps is 1.0.")
    decoder: Literal["vae", "tiny"] = Field("vae", description=(
        "What decodes latents to frames: vae (the model's VAE) | tiny (the model's distilled tiny decoder; "
        "docs/decoder.md)."))

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_text(cls, value: Any) -> Any:
        """Accept ``50`` and ``[20, 20, 10]`` as well as ``"20-20-10"``."""
        from pyrawan.pyramid.schedule import schedule_text

        return schedule_text(value)

    @field_validator("shift", mode="wrap")
    @classmethod
    def _shift(cls, value: Any, handler) -> float | tuple[float, ...]:
        """One readable error instead of one per union member; every shift must be > 0."""
        try:
            shift = handler(value)
        except ValidationError as err:
            finite = any(e["type"] == "finite_number" for e in err.errors())
            raise fail(("must be a finite number: " if finite else "") + "expected a number > 0, or a list of "
                        "numbers > 0 with one per stage (coarsest first)")
        values = shift if isinstance(shift, tuple) else (shift,)
        if min(values, default=1.0) <= 0 or max(values, default=1.0) > 1000:
            raise fail("every shift must be > 0 and at most 1000 (1 = no shift; Wan's own sampler uses 3 to 5)")
        if len(values) > MAX_STAGES:
            raise fail(f"at most {MAX_STAGES} shifts (one per stage)")
        return shift

    @field_validator("schedule")
    @classmethod
    def _schedule_total(cls, value: str) -> str:
        """A schedule of absurd length is a typo (its form is checked against the pyramid later)."""
        counts = [int(part) for part in re.findall(r"\d+", value)]
        if any(len(part) > 6 for part in re.findall(r"\d+", value)) or sum(counts) > MAX_TOTAL_STEPS:
            raise fail(f"at most {MAX_TOTAL_STEPS} steps in all (e.g. 20-20-10); got {value!r}")
        return value

    @field_validator("fewstep_levels")
    @classmethod
    def _levels_in_range(cls, value: tuple[tuple[float, ...], ...] | None) -> Any:
        """Local levels are fractions of a stage's span."""
        if value and any(not 0.0 <= rho <= 1.0 for stage in value for rho in stage):
            raise fail("every level rho must lie in [0, 1] (1 = noisy end of the stage, 0 = clean end)")
        return value


class RecipeBase(Section):
    """Sections every recipe kind shares. Subclass it (with a ``kind`` literal) to add a kind."""

    schema_version: Literal[1] = Field(description="Recipe format version; this pyrawan reads 1.")
    kind: str
    base: str = Field(min_length=1, max_length=4096, description="Preset name (tiny), hub id, local diffusers folder or .safetensors file.")
    calibration: Path | None = Field(None, description="A `pyrawan calibrate` artifact folder (relative to the working directory).")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed for every random draw (noise is drawn on the CPU).")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Weight and compute dtype.")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N.")
    video: Video = Video()
    text: Text = Text()
    pyramid: Pyramid = Pyramid()
    sampling: Sampling = Sampling()

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        """Only devices pyrawan knows how to run on."""
        if not re.fullmatch(r"auto|cpu|cuda(:\d{1,3})?", value):
            raise fail("use auto, cpu, cuda or cuda:N (e.g. cuda:0)")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> RecipeBase:
        """Rules that involve several keys; all of them are reported together."""
        from pyrawan.recipe_rules import cross_field_problems

        problems = cross_field_problems(self)
        if problems:
            summary = "; ".join(message for _, message in problems)
            raise PydanticCustomError("recipe_rules", "{summary}", {"summary": summary, "problems": problems})
        return self

    def steps(self) -> tuple[int, ...]:
        """Steps per stage, coarsest first (``sampling.schedule`` parsed)."""
        from pyrawan.pyramid.schedule import parse_schedule

        return parse_schedule(self.sampling.schedule, self.pyramid.stages, key="sampling.schedule")

    def stage_boundaries(self) -> tuple[float, ...]:
        """Inner boundaries b_1..b_{S-1} in global sigma: the recipe's, or Pyramid Flow's split (the measured default)."""
        from pyrawan.pyramid.schedule import recipe_default_boundaries

        p = self.pyramid
        return tuple(p.boundaries) if p.boundaries is not None else recipe_default_boundaries(p.stages, p.keep_time, p.kind)

    def pyramid_config(self, boundaries=None):
        """The math-side pyramid of this recipe (``boundaries`` overrides the recipe's or default ones)."""
        from pyrawan.pyramid.config import PyramidConfig

        p = self.pyramid
        bounds = self.stage_boundaries() if boundaries is None else tuple(boundaries)
        return PyramidConfig(p.stages, bounds, p.resizer, p.keep_time, kind=p.kind)

    def vae_factors(self) -> tuple[int, int]:
        """(temporal, spatial) compression of the base model's VAE: (4, 8) for Wan2.1."""
        from pyrawan.models.arch import vae_factors

        return vae_factors(self.base)

    def latent_size(self) -> tuple[int, int, int]:
        """Full-resolution latent (T, H, W) of ``video`` through the base model's VAE."""
        from pyrawan.pyramid.geometry import pixel_to_latent

        v = self.video
        return pixel_to_latent(v.frames, v.height, v.width, self.vae_factors())

    def stage_shifts(self) -> tuple[float, ...]:
        """The timestep shift of every stage, coarsest first."""
        shift = self.sampling.shift
        return tuple(shift) if isinstance(shift, tuple) else (float(shift),) * self.pyramid.stages


class ConvertRecipe(RecipeBase):
    """Turn a pretrained Wan into a pyramidal model (``pyrawan convert``)."""

    kind: Literal["convert"] = "convert"


class CalibrateRecipe(RecipeBase):
    """Measure stage boundaries and latent statistics on data (``pyrawan calibrate``)."""

    kind: Literal["calibrate"] = "calibrate"
    data: Data = Data()
    calibrate: Calibrate = Calibrate()


class FinetuneRecipe(RecipeBase):
    """Pyramidal flow-matching finetuning (``pyrawan finetune``)."""

    kind: Literal["finetune"] = "finetune"
    data: Data = Data()
    train: Train = Train()


class DistillRecipe(RecipeBase):
    """Step distillation into a few-step pyramidal model (``pyrawan distill``).

    ``train:`` drives the generator (student): steps = iterations, its optimiser, LoRA, EMA, engine
    and checkpoints; ``distill:`` the method, the student's schedule and the real and fake scores.
    """

    kind: Literal["distill"] = "distill"
    data: Data = Data()
    train: Train = Train()
    distill: Distill = Distill()


class SampleRecipe(RecipeBase):
    """Sample videos from a model (``pyrawan sample``)."""

    kind: Literal["sample"] = "sample"


class EvalRecipe(RecipeBase):
    """Evaluate models or videos (``pyrawan eval``)."""

    kind: Literal["eval"] = "eval"


Recipe = Annotated[
    Union[ConvertRecipe, CalibrateRecipe, FinetuneRecipe, DistillRecipe, SampleRecipe, EvalRecipe],
    Field(discriminator="kind"),
]
RECIPE_KINDS: dict[str, type[RecipeBase]] = {
    cls.model_fields["kind"].default: cls
    for cls in (ConvertRecipe, CalibrateRecipe, FinetuneRecipe, DistillRecipe, SampleRecipe, EvalRecipe)
}
_ADAPTER: TypeAdapter = TypeAdapter(Recipe)


# ---- validation ----------------------------------------------------------------------------------

def validate_recipe(data: dict, source: str = "recipe", origin: dict[str, str] | None = None,
                    kind: str | Sequence[str] | None = None) -> RecipeBase:
    """Validate a recipe mapping; every problem goes into one ``InputError`` that starts with ``source``."""
    _check_version(data, source)
    if kind is not None:
        _check_kind(data, source, (kind,) if isinstance(kind, str) else tuple(kind))
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as err:
        ran_rules = any(e["type"] == "recipe_rules" for e in err.errors())
        extra = [] if ran_rules else partial_problems(data)
        raise problems_error(source, error_lines(err, RECIPE_KINDS, origin or {}, extra)) from None


def _check_version(data: dict, source: str) -> None:
    """Only versions this pyrawan knows (``missing`` is reported with the other errors)."""
    version = data.get("schema_version")
    if "schema_version" in data and (type(version) is not int or version not in SCHEMA_VERSIONS):
        supported = ", ".join(map(str, SCHEMA_VERSIONS))
        newer = " (written for a newer pyrawan? upgrade it)" if type(version) is int and version > max(SCHEMA_VERSIONS) else ""
        raise InputError(f"{source}: schema_version = {version!r} is not supported{newer}; this pyrawan reads "
                         f"schema_version {supported}. Set 'schema_version: {SCHEMA_VERSIONS[-1]}'.")


def _check_kind(data: dict, source: str, kinds: tuple[str, ...]) -> None:
    """A command refuses a recipe written for another command."""
    if data.get("kind") in RECIPE_KINDS and data["kind"] not in kinds:
        want = " or ".join(kinds)
        raise InputError(f"{source}: kind = '{data['kind']}' but this command needs a recipe with kind: {want}; "
                         f"pick a {want} recipe (`pyrawan recipe ls`) or change kind.")


# ---- public API ----------------------------------------------------------------------------------

def builtin_recipes() -> dict[str, Path]:
    """Recipes shipped inside the package, name -> file."""
    return {path.stem: path for path in sorted(RECIPES_DIR.glob("*.yaml"))}


def builtin_recipe(name: str) -> Path:
    """The shipped recipe called ``name`` (``tiny``, ``wan1.3b``, ...)."""
    shipped = builtin_recipes()
    if name in shipped:
        return shipped[name]
    near = difflib.get_close_matches(name, list(shipped), n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    raise InputError(f"no shipped recipe is called '{name}'{hint}; shipped recipes: {', '.join(shipped)} "
                     f"(see `pyrawan recipe ls`).")


def find_recipe(ref: str | Path) -> Path:
    """A recipe file: ``ref`` itself if it exists, else the shipped recipe of that name."""
    path = Path(ref)
    if path.is_file():
        return path
    if path.exists():
        raise InputError(f"{ref} is a folder, not a recipe file; give a .yaml recipe.")
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if path.parent == Path(".") and name in builtin_recipes():
        return builtin_recipe(name)
    shipped = list(builtin_recipes())
    near = difflib.get_close_matches(name, shipped, n=1)
    hint = f"did you mean '{near[0]}'? " if near else ""
    raise InputError(f"{ref}: no such recipe file, and no shipped recipe has that name ({hint}shipped: "
                     f"{', '.join(shipped)}); copy one with `pyrawan recipe cp tiny {ref}`.")


def load_recipe(path: str | Path, overrides: Sequence[str] = (), kind: str | Sequence[str] | None = None) -> RecipeBase:
    """Read a recipe file (or shipped recipe name), apply ``key.path=value`` overrides and validate it.

    ``kind`` restricts the accepted kinds (a command passes its own). Raises ``InputError``.
    """
    file = find_recipe(path)
    shown = str(path) if Path(path) == file else f"shipped recipe '{file.stem}'"
    data, origin = apply_overrides(read_yaml(file, shown), overrides)
    return validate_recipe(data, shown, origin, kind)


def resolve_recipe(recipe: RecipeBase) -> dict:
    """Fully resolved JSON-able recipe: defaults filled in, ``pyramid.boundaries`` resolved."""
    resolved = recipe.model_dump(mode="json")
    resolved["pyramid"]["boundaries"] = list(recipe.stage_boundaries())
    return resolved


def canonical_json(obj: Any) -> str:
    """Canonical JSON (sorted keys, no spaces, UTF-8), in the spirit of RFC 8785."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def recipe_sha256(resolved: dict) -> str:
    """sha256 (hex) of the canonical JSON of a resolved recipe."""
    return hashlib.sha256(canonical_json(resolved).encode("utf-8")).hexdigest()


def recipe_schema(kind: str) -> dict:
    """JSON schema of the recipe of ``kind``."""
    if kind not in RECIPE_KINDS:
        near = difflib.get_close_matches(kind, list(RECIPE_KINDS), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise InputError(f"'{kind}' is not a recipe kind{hint}; use one of: {', '.join(RECIPE_KINDS)}.")
    return RECIPE_KINDS[kind].model_json_schema()
