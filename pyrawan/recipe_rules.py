"""Recipe rules that span several keys (pyramid sizes, schedule, boundaries, per-stage values, the base),
run after each section validated on its own; every problem is reported together (``pyrawan.recipe``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from pyrawan.errors import InputError
from pyrawan.train.config import train_problems
from pyrawan.train.distill_config import distill_problems, distill_train_problems

if TYPE_CHECKING:
    from pyrawan.recipe import RecipeBase


def cross_field_problems(r: RecipeBase, skip: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """``(key, message)`` for every rule that spans keys: pyramid sizes, schedule, boundaries, ...

    Rules that read a top-level key in ``skip`` (one that failed its own validation) are not run.
    """
    from pyrawan.pyramid.geometry import WAN21_VAE_FACTORS, check_sizes
    from pyrawan.pyramid.schedule import check_boundaries, parse_schedule

    p, s = r.pyramid, r.sampling
    try:                    # the base model's VAE factors, read once for the three size checks
        factors = r.vae_factors() if "base" not in skip else WAN21_VAE_FACTORS
    except InputError:
        factors = None      # an unreadable VAE config is reported once, by name, where the model loads
    checks = [(f"video.{dim}", ("video", "pyramid"), lambda dim=dim: factors is None or check_sizes(
        {dim: getattr(r.video, dim)}, p.stages, p.keep_time, frame_unit=factors[0], space_unit=factors[1],
        what="pixel")) for dim in ("frames", "height", "width")]
    checks += [
        ("sampling.schedule", ("sampling", "pyramid"),
         lambda: parse_schedule(s.schedule, p.stages, key="sampling.schedule")),
        ("pyramid.boundaries", ("pyramid",), lambda: p.boundaries is None or check_boundaries(p.boundaries, p.stages)),
        ("sampling.shift", ("sampling", "pyramid"), lambda: check_per_stage("sampling.shift", s.shift, p.stages)),
        ("sampling.fewstep_levels", ("sampling", "pyramid"),
         lambda: check_fewstep(s.fewstep_levels, p.stages, _steps_or_none(r))),
        ("calibration", ("calibration",), lambda: _check_folder("calibration", r.calibration)),
        ("base", ("base",), lambda: _check_base(r.base)),
    ]
    problems = []
    train = getattr(r, "train", None)
    if train is not None and r.kind == "finetune" and not skip.intersection(("train", "pyramid")):
        problems += train_problems(train, p.stages)
    distill = getattr(r, "distill", None)
    if distill is not None and not skip.intersection(("distill", "pyramid")):
        problems += distill_problems(distill, p.stages)
    if distill is not None and train is not None and "train" not in skip:
        problems += distill_train_problems(train)
    if p.kind == "ppf" and not skip.intersection(("train", "distill", "pyramid")):
        problems += ppf_problems(train, distill)
    for key, needs, check in checks:
        if skip.intersection(needs):
            continue
        try:
            check()
        except InputError as err:
            message = str(err)
            problems.append((key, message if message.startswith(key) else f"{key}: {message}"))
    return problems


def partial_problems(data: dict) -> list[tuple[str, str]]:
    """Cross-key rules over the top-level values that validate on their own (when others do not)."""
    from pyrawan.recipe import RECIPE_KINDS

    cls = RECIPE_KINDS.get(data.get("kind")) if isinstance(data.get("kind"), str) else None
    if cls is None:
        return []
    parts, bad = {}, {"base"} if "base" not in data else set()
    for name in ("base", "calibration", "video", "pyramid", "sampling"):
        try:
            if name in data:
                parts[name] = TypeAdapter(cls.model_fields[name].annotation).validate_python(data[name])
        except ValidationError:
            bad.add(name)
    return cross_field_problems(cls.model_construct(**parts), skip=frozenset(bad))


def _steps_or_none(r: RecipeBase) -> tuple[int, ...] | None:
    """The parsed schedule, or None when it is invalid (reported by its own check)."""
    try:
        return r.steps()
    except InputError:
        return None


def ppf_problems(train, distill) -> list[tuple[str, str]]:
    """Training settings a PPF model (``pyramid.kind: ppf``) cannot run with."""
    problems = []
    if train is not None and train.process == "multires":
        problems.append(("train.process", "train.process = multires trains a plain model at every stage resolution; a "
                         "PPF model already runs every stage at full resolution: use train.process: pyramidal"))
    if train is not None and train.engine == "deepspeed" and train.zero_stage == 3:
        problems.append(("train.zero_stage", "ZeRO-3 is not supported for PPF models (each stage swaps in its own patch "
                         "embedding and head at run time); use train.zero_stage: 2"))
    if distill is not None and distill.method == "adv" and distill.adv.backbone == "pyramidal":
        problems.append(("distill.adv.backbone", "a PPF model cannot be the adversarial backbone (a batch at several "
                         "stages has no common token grid for the heads); use backbone: original with the original "
                         "model as distill.teacher"))
    if distill is not None and distill.method == "dmd" and distill.gan.weight > 0:
        problems.append(("distill.gan.weight", f"distill.gan.weight = {distill.gan.weight:g} adds DMD's GAN term, "
                         "whose heads read the fake score's hidden states on one token grid; a PPF fake score "
                         "patchifies each stage differently, so its batches have no common token grid for the heads; "
                         "set distill.gan.weight: 0 for PPF-DMD (or use a resolution pyramid, "
                         "pyramid.kind: resolution)"))
    return problems


def check_per_stage(key: str, value: Any, stages: int, scalar_ok: bool = True) -> None:
    """A per-stage list must have one value per stage (``scalar_ok``: a single value may stand for all)."""
    if isinstance(value, tuple) and len(value) != stages:
        alt = " or a single number for all stages" if scalar_ok else ""
        raise InputError(f"{key} = {json.dumps(value)} has {len(value)} values but the pyramid has {stages} stages; "
                         f"give one value per stage (coarsest first){alt}.")


def check_fewstep(levels: tuple[tuple[float, ...], ...] | None, stages: int, steps: tuple[int, ...] | None) -> None:
    """One decreasing list per stage, as long as the stage's step count, starting from pure noise."""
    key = "sampling.fewstep_levels"
    if levels is None:
        return
    check_per_stage(key, levels, stages, scalar_ok=False)
    for i, stage in enumerate(levels):
        if steps is not None and len(stage) != steps[i]:
            raise InputError(f"{key}[{i}] = {json.dumps(stage)} has {len(stage)} levels but sampling.schedule gives "
                             f"that stage (entry {i}, coarsest first) {steps[i]} steps; give one level per step.")
        if any(a <= b for a, b in zip(stage, stage[1:])):
            raise InputError(f"{key}[{i}] = {json.dumps(stage)} must be strictly decreasing (noisy to clean).")
    first = next((stage for stage in levels if stage), None)
    if first is None or first[0] != 1.0:
        raise InputError(f"{key}: the first level of the first stage with steps must be 1.0 (sampling starts "
                         f"from pure noise); got {list(first) if first else 'no levels at all'}.")


def _check_folder(key: str, path: Path | None) -> None:
    """An input artifact folder must exist."""
    if path is not None and not path.is_dir():
        raise InputError(f"{key} = '{path}' is not an existing folder (relative paths start at the working "
                         f"directory {Path.cwd()}); run `pyrawan calibrate DATA_DIR -o {path}` first or set "
                         f"{key}: null.")


def _check_base(base: str) -> None:
    """Local files and folders named as the base must exist (hub ids and presets are checked on load)."""
    first = base.split("/", 1)[0]
    local = base.endswith(".safetensors") or base.startswith(("/", "./", "../", "~")) or (
        "/" in base and not base.startswith("hf://") and Path(first).is_dir())
    if local and not Path(base).expanduser().exists():
        raise InputError(f"base = '{base}': no such folder or file; give a preset name (tiny), a hub id such as "
                         f"Wan-AI/Wan2.1-T2V-1.3B-Diffusers (or hf://owner/name), a diffusers folder or a .safetensors "
                         f"file.")
