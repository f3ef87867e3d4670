"""ToyBench: does a video show what its toy-world prompt asked for, and is it clean? No learned weights.

``score_video`` measures a video (``pyrawan.toy.features``), compares it with the parsed prompt
and maps every measurement to a score in [0, 1]; ``overall`` is their geometric mean.
``score_set`` averages a set and adds the Fréchet distance between the judge's feature vectors
of the set and of reference (real) videos. Definitions and validation: ``docs/toy-world.md``.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import linalg

from pyrawan.errors import InputError
from pyrawan.toy import world
from pyrawan.toy.features import HIST_BINS, Measurements, measure_video

SCORES = ("detection", "colour", "shape", "size", "direction", "speed", "smoothness", "flicker", "noise", "sharpness",
          "background", "extra_objects")
SCORES_BEFORE_BACKGROUND = SCORES[:10]   # the overall of ToyBench before the background and extra-object scores
SCORE_FLOOR = 0.01          # a zero score counts as this in the geometric mean (one zero of 12 -> overall <= 0.68)
SHAPE_PROTOTYPES = {"square": (0.98, 0.0), "circle": (0.79, 0.0), "triangle": (0.58, 0.52)}  # (fill, |skew|)
SHAPE_SPREAD = (0.05, 0.1)  # per-feature scale of the Gaussian around each prototype
REFERENCE_SIDE = 64.0       # smoothness error is expressed in pixels of a 64-pixel frame
MIN_MOTION = 0.2            # below this fraction of the asked speed, a direction is not measurable
FD_SCALE_FLOOR = 0.01       # smallest per-feature scale when standardising features for the FD
FD_RIDGE = 1e-3             # added to the covariance diagonals (small sets have singular covariances)
FD_SHRINK = 0.5             # weight of the diagonal in the shrunk covariance
# (tolerance, span): a score is 1 up to the tolerance and falls linearly to 0 over the span.
TOLERANCES = {
    "detection": (0.05, 0.45),    # fraction of frames without a detected object
    "colour": (0.15, 0.30),       # RGB distance of the object colour to the named colour (0..1 units)
    "size": (0.10, 0.20),         # |log(measured / asked side)|
    "direction": (15.0, 30.0),    # angle between the fitted and the asked direction, degrees
    "speed": (0.15, 0.50),        # |log(measured / asked speed)|
    "smoothness": (0.5, 1.0),     # max(line-fit residual, RMS acceleration), px at 64 px
    "flicker": (1.0, 3.0),        # background flicker, uint8 levels per frame
    "noise": (2.0, 3.0),          # background noise, uint8 levels
    "sharpness": (1.5, 0.6),      # edge width, px
    "background": (0.05, 0.10),   # RMS RGB distance of the frame-averaged background plane to the named one (0..1 units)
    "extra_objects": (5.0, 20.0),  # seed pixels of components beyond the object's, median over frames, px at 64 px
}


def tolerance_score(error: float, name: str) -> float:
    """1 while ``error`` <= tolerance, then linearly down to 0 at tolerance + span; NaN -> 0."""
    tolerance, span = TOLERANCES[name]
    if not math.isfinite(error):
        return 0.0
    return float(np.clip(1.0 - (error - tolerance) / span, 0.0, 1.0))


def shape_probabilities(fill: np.ndarray, skew: np.ndarray) -> dict[str, np.ndarray]:
    """Per frame, the probability of each shape: Gaussians around SHAPE_PROTOTYPES, normalised; [F] each."""
    features = np.stack([fill, np.abs(skew)], axis=-1)                                   # [F, 2]
    logits = {name: -0.5 * np.sum(((features - proto) / SHAPE_SPREAD) ** 2, axis=-1)
              for name, proto in SHAPE_PROTOTYPES.items()}
    top = np.max(np.stack(list(logits.values())), axis=0)
    weights = {name: np.exp(value - top) for name, value in logits.items()}
    total = sum(weights.values())
    return {name: value / total for name, value in weights.items()}


def _nanmedian(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Median ignoring NaN; NaN (without a warning) when everything is NaN."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).any():
        return np.full(values.shape[1:], np.nan) if axis == 0 else math.nan
    return np.nanmedian(values, axis=axis)


def angle_degrees(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two 2-vectors in degrees (NaN if either is zero or NaN)."""
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if not math.isfinite(norm) or norm == 0:
        return math.nan
    return math.degrees(math.acos(float(np.clip(np.dot(a, b) / norm, -1.0, 1.0))))


def asked_motion(m: Measurements, asked: world.Attributes) -> tuple[float, float]:
    """``(direction error in degrees, speed ratio)`` against what the caption names; NaN where it names nothing.

    Without a named speed the direction is measurable when the object moves at least MIN_MOTION of
    the slow speed; without a named direction the speed ratio is |v| / the named speed.
    """
    frames, height, width = m.frames, m.height, m.width
    moved = float(np.linalg.norm(m.velocity))
    reference = float(np.linalg.norm(world.velocity("right", asked.speed or "slow", frames, height, width)))
    ratio = moved / reference if asked.speed is not None else math.nan
    direction = math.nan
    if asked.direction is not None and moved >= MIN_MOTION * reference:
        direction = angle_degrees(m.velocity, np.asarray(world.DIRECTIONS[asked.direction]))
    return direction, ratio


def background_error(m: Measurements, asked: world.Attributes) -> float | None:
    """RMS over pixels of the RGB distance (0..1 units) between the measured background ``m.ground`` [H, W, 3]
    and the one the caption names (``world.background``); ``None`` when it names no background."""
    if asked.background is None:
        return None
    named = world.background(asked, m.height, m.width).permute(1, 2, 0).numpy()             # [H, W, 3]
    return float(np.sqrt(np.mean(np.sum((m.ground - named) ** 2, axis=-1))))


def extra_object_area(m: Measurements) -> float:
    """Median over frames of the seed pixels outside the object's component (``m.extra_area`` [F]), in pixels
    of a 64-pixel frame: an extra object present in most frames counts, a speck in a few does not."""
    return float(np.median(m.extra_area)) * (REFERENCE_SIDE / min(m.height, m.width)) ** 2


def prompt_errors(m: Measurements, asked: world.Attributes) -> dict[str, float | str | None]:
    """The raw adherence and quality numbers of one measured video against what the prompt asked.

    An attribute the prompt does not name (a short caption) gives ``None`` for its adherence number.
    """
    o = m.objects
    direction_error, speed_ratio = asked_motion(m, asked)
    probabilities = shape_probabilities(o.fill, o.skew)
    found = o.found
    names = list(SHAPE_PROTOTYPES)
    predicted = np.argmax(np.stack([probabilities[n] for n in names]), axis=0)[found]
    side = o.extent.max(axis=1)
    colour = world.COLOURS.get(asked.colour) if asked.colour is not None else None
    return {
        "detected": float(found.mean()),
        "colour_error": None if colour is None else float(np.linalg.norm(_nanmedian(o.colour, axis=0) - np.asarray(colour))),
        "shape_probability": None if asked.shape is None else (
            float(probabilities[asked.shape][found].mean()) if found.any() else 0.0),
        "shape_seen": names[int(np.bincount(predicted, minlength=3).argmax())] if found.any() else "none",
        "size_error": None if asked.size is None else (
            abs(math.log(max(_nanmedian(side), 1e-6) / (2 * world.half_extent(asked.size, m.height, m.width))))
            if found.any() else math.nan),
        "direction_error_deg": None if asked.direction is None else direction_error,
        "speed_ratio": None if asked.speed is None else speed_ratio,
        "smoothness_error": max(m.residual, m.acceleration) * REFERENCE_SIDE / min(m.height, m.width),
        "temporal_flickering": m.temporal_flickering,
        "background_flicker": m.background_flicker,
        "noise": m.noise,
        "edge_width": float(_nanmedian(o.edge_width)),
        "background_error": background_error(m, asked),
        "extra_area": extra_object_area(m),
        "extra_count": float(np.median(m.extra_count)),
    }


def _speed_error(ratio: float) -> float:
    """|log(speed ratio)|, NaN when the ratio is."""
    return abs(math.log(max(ratio, 1e-3))) if math.isfinite(ratio) else math.nan


def scores_from_errors(errors: dict) -> dict[str, float | None]:
    """Each of SCORES in [0, 1] from ``prompt_errors``; ``None`` for an attribute the prompt does not name."""
    def scored(key: str, name: str, transform=lambda e: e) -> float | None:
        value = errors[key]
        return None if value is None else tolerance_score(transform(value), name)

    return {
        "detection": tolerance_score(1.0 - errors["detected"], "detection"),
        "colour": scored("colour_error", "colour"),
        "shape": errors["shape_probability"],
        "size": scored("size_error", "size"),
        "direction": scored("direction_error_deg", "direction"),
        "speed": scored("speed_ratio", "speed", _speed_error),
        "smoothness": tolerance_score(errors["smoothness_error"], "smoothness"),
        "flicker": tolerance_score(errors["background_flicker"], "flicker"),
        "noise": tolerance_score(errors["noise"], "noise"),
        "sharpness": tolerance_score(errors["edge_width"], "sharpness"),
        "background": scored("background_error", "background"),
        "extra_objects": tolerance_score(errors["extra_area"], "extra_objects"),
    }


def overall_score(scores: dict[str, float | None], names: Sequence[str] = SCORES) -> float:
    """Geometric mean of the scores ``names`` the prompt lets ToyBench judge (not ``None``), each floored at SCORE_FLOOR.

    ``names=SCORES_BEFORE_BACKGROUND`` gives the overall of the earlier ten-score ToyBench.
    """
    values = [max(scores[k], SCORE_FLOOR) for k in names if scores.get(k) is not None]
    return float(math.exp(np.mean(np.log(values))))


def score_video(video: torch.Tensor | np.ndarray, prompt: str) -> dict:
    """ToyBench of one video [F, 3, H, W] (float in [0, 1] or uint8) against its toy-world prompt.

    Returns ``{"prompt", "scores": {SCORES...}, "overall", "raw": {...}, "named": [...]}``. A short
    prompt (``a red square moving left``) is judged on what it names: the scores of the attributes
    it leaves out are ``None`` and ``overall`` is the geometric mean of the others.
    """
    asked = world.parse_caption(prompt, partial=True)
    measured = measure_video(video)
    errors = prompt_errors(measured, asked)
    scores = scores_from_errors(errors)
    return {"prompt": prompt, "scores": scores, "overall": overall_score(scores), "raw": errors,
            "named": list(world.named(asked)), "features": feature_vector(measured).tolist()}


# ---- feature vectors and the Fréchet distance -------------------------------------------------------

FEATURES = (["colour_r", "colour_g", "colour_b", "fill", "abs_skew", "circularity", "side", "travel", "jitter",
             "edge_width", "detected", "frame_difference", "background_flicker", "noise"]
            + [f"band_{i}" for i in range(4)] + ["temporal_energy"]
            + [f"hist_{c}{i}" for c in "rgb" for i in range(HIST_BINS)])


def feature_vector(m: Measurements) -> np.ndarray:
    """The prompt-free judge features of one video (names in FEATURES, units in docs/toy-world.md), NaN -> 0."""
    o, side = m.objects, min(m.height, m.width)
    scalars = [
        *_nanmedian(o.colour, axis=0), _nanmedian(o.fill), _nanmedian(np.abs(o.skew)), _nanmedian(o.circularity),
        _nanmedian(o.extent.max(axis=1)) / side,
        np.linalg.norm(m.velocity) * (m.frames - 1) / side,
        math.log1p(max(m.residual, m.acceleration) * REFERENCE_SIDE / side),
        _nanmedian(o.edge_width), float(o.found.mean()), math.log1p(255.0 * (1.0 - m.temporal_flickering)),
        math.log1p(m.background_flicker), math.log1p(m.noise),
    ]
    vector = np.concatenate([np.asarray(scalars, dtype=np.float64), m.spectrum, [m.temporal_energy], m.histogram])
    return np.nan_to_num(vector, nan=0.0)


def regularised_covariance(x: np.ndarray, shrink: float = FD_SHRINK, ridge: float = FD_RIDGE) -> np.ndarray:
    """[D, D] covariance of x [N, D], shrunk towards its diagonal by ``shrink`` plus ``ridge`` * I."""
    cov = np.atleast_2d(np.cov(x, rowvar=False))
    return (1 - shrink) * cov + shrink * np.diag(np.diag(cov)) + ridge * np.eye(len(cov))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a [N, D] and b [M, D] (N, M >= 2).

    ``|mu_a - mu_b|^2 + tr(Sa + Sb - 2 (Sa Sb)^(1/2))`` with regularised covariances: small sets
    (fewer videos than features) have singular, noisy sample covariances.
    """
    if len(a) < 2 or len(b) < 2:
        raise InputError(f"the Fréchet distance needs at least 2 videos in each set; got {len(a)} and {len(b)}. "
                         "Score more videos or leave out the reference.")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = regularised_covariance(a), regularised_covariance(b)
    root = linalg.sqrtm(cov_a @ cov_b)
    trace = np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(np.real(root))
    return float(max(np.sum((mu_a - mu_b) ** 2) + trace, 0.0))


def standardise(features: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets [N, D] scaled by the reference's mean and std (std floored at FD_SCALE_FLOOR)."""
    mean, scale = reference.mean(axis=0), np.maximum(reference.std(axis=0), FD_SCALE_FLOOR)
    return (features - mean) / scale, (reference - mean) / scale


def reference_fd(features: np.ndarray, reference: np.ndarray) -> float:
    """FD between judge features [N, D] and reference features [M, D], standardised by the reference."""
    return frechet_distance(*standardise(features, reference))


def features_of(videos: Sequence[torch.Tensor | np.ndarray]) -> np.ndarray:
    """Judge feature vectors [N, D] of videos [F, 3, H, W]."""
    return np.stack([feature_vector(measure_video(v)) for v in videos])


# ---- sets ----------------------------------------------------------------------------------------

def _mean(values: list[float]) -> float:
    """Mean of the finite values (NaN if none)."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def intervals(results: Sequence[dict], level: float = 0.95) -> dict[str, dict[str, float | int | None]]:
    """Mean and ``level`` interval (``pyrawan.eval.stats.mean_ci``, bootstrap over videos) of overall and each score.

    ``results`` are ``score_video`` outputs (of any number of seed sets); a score is averaged over the
    videos whose prompt names it, and ``n`` says over how many (``mean`` is ``None`` when none do, as for
    a score that results written before it existed lack).
    """
    from pyrawan.eval.stats import mean_ci

    out = {}
    for name in ("overall", *SCORES):
        values = [r["overall"] if name == "overall" else r["scores"].get(name) for r in results]
        values = [v for v in values if v is not None]
        mean, low, high = mean_ci(values, level) if values else (None, None, None)
        out[name] = {"mean": mean, "low": low, "high": high, "n": len(values)}
    return out


def check_breakdown(by: Sequence[str]) -> None:
    """InputError unless ``by`` is a non-empty list of caption attributes (``world.Attributes`` fields)."""
    fields = {f.name for f in dataclasses.fields(world.Attributes)}
    unknown = [repr(name) for name in by if name not in fields]
    if unknown or not by:
        raise InputError(f"ToyBench --by: cannot group by {', '.join(unknown) or 'nothing'}; choose from "
                         f"{', '.join(sorted(fields))}, comma-separated (e.g. --by shape,size).")


def breakdown(results: Sequence[dict], by: Sequence[str], level: float = 0.95) -> list[dict]:
    """``intervals`` of each group of ``results`` that asked the same values of the attributes ``by``.

    ``by`` names caption attributes (``world.Attributes`` fields, e.g. ``("shape", "size")``); a
    video whose prompt leaves one of them out falls in the group of ``None``. Returns one
    ``{"group": {attr: value}, "videos": n, "intervals": {...}}`` per group, sorted by value.
    """
    check_breakdown(by)
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        asked = world.parse_caption(r["prompt"], partial=True)
        groups.setdefault(tuple(getattr(asked, name) for name in by), []).append(r)
    return [{"group": dict(zip(by, key)), "videos": len(members), "intervals": intervals(members, level)}
            for key, members in sorted(groups.items(), key=lambda kv: tuple(str(v) for v in kv[0]))]


def score_set(videos: Sequence[torch.Tensor | np.ndarray], prompts: Sequence[str],
              reference_videos: Sequence[torch.Tensor | np.ndarray] | None = None) -> dict:
    """ToyBench of a set: per-video results, mean scores and raw numbers, 95 % intervals, and the FD to references.

    ``fd`` is the Fréchet distance between the judge features of ``videos`` and of
    ``reference_videos``, both standardised by the reference statistics (None without references).
    """
    if len(videos) != len(prompts) or not videos:
        raise InputError(f"score_set needs one prompt per video and at least one video; got {len(videos)} videos "
                         f"and {len(prompts)} prompts.")
    results = [score_video(v, p) for v, p in zip(videos, prompts)]
    fd = None
    if reference_videos is not None:
        fd = reference_fd(np.stack([np.asarray(r["features"]) for r in results]), features_of(reference_videos))
    raw_keys = [k for k, v in results[0]["raw"].items() if not isinstance(v, str)]
    return {
        "videos": len(results),
        "overall": _mean([r["overall"] for r in results]),
        "scores": {k: _mean([r["scores"][k] for r in results]) for k in SCORES},
        "raw": {k: _mean([r["raw"][k] for r in results]) for k in raw_keys},
        "fd": fd,
        "reference_videos": None if reference_videos is None else len(reference_videos),
        "intervals": intervals(results),
        "per_video": results,
    }
