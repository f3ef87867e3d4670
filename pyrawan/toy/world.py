"""The toy world: seeded scenes of one shape moving over a background, rendered and captioned.

A scene is one object (shape, colour, size) moving in a straight line at constant speed over a
plain or vertically graded neutral background. Everything is defined relative to the frame, so
one scene renders at any size: sizes are fractions of ``S = min(height, width)``, speeds the
distance travelled over the whole clip as a fraction of ``S``. Rendering is anti-aliased by
supersampling (``supersample``² samples per pixel) and uses no randomness: the seed only picks
the scene. The grammar, the sizes and the judge are described in ``docs/toy-world.md``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from pyrawan.errors import InputError

SHAPES = ("square", "circle", "triangle")
COLOURS: dict[str, tuple[float, float, float]] = {  # saturated, far from each other and from grey
    "red": (0.90, 0.12, 0.12),
    "green": (0.12, 0.78, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "magenta": (0.88, 0.15, 0.85),
    "cyan": (0.10, 0.82, 0.90),
}
SIZES = {"small": 0.08, "medium": 0.11, "large": 0.15}     # half-extent / S
SPEEDS = {"slow": 0.20, "fast": 0.45}                       # distance over the clip / S
_D = 1 / math.sqrt(2)
DIRECTIONS: dict[str, tuple[float, float]] = {              # unit vectors, x right, y down
    "right": (1.0, 0.0), "left": (-1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0),
    "up-right": (_D, -_D), "up-left": (-_D, -_D), "down-right": (_D, _D), "down-left": (-_D, _D),
}
BACKGROUNDS = {"black": (0.06, 0.06), "gray": (0.50, 0.50), "white": (0.94, 0.94)}   # plain (top, bottom)
GRADIENTS = {"black": (0.02, 0.30), "gray": (0.30, 0.70), "white": (0.98, 0.70)}     # grey levels top -> bottom
STYLES = ("plain", "gradient")
MARGIN = 0.03                                               # free space kept to the frame border / S
SPEED_WORDS = {"slow": "slowly", "fast": "quickly"}
SYNONYMS = {"grey": "gray", "slowly": "slow", "quickly": "fast", "quick": "fast"}


@dataclass(frozen=True)
class Attributes:
    """What a caption says about a scene (and what the judge checks); InputError for unknown values.

    A short caption leaves attributes out: those are ``None`` (``parse_caption(text, partial=True)``).
    """

    shape: str | None
    colour: str | None
    size: str | None
    direction: str | None
    speed: str | None
    background: str | None
    style: str | None

    def __post_init__(self) -> None:
        for name, values in {**vocabulary(), "style": STYLES}.items():
            if getattr(self, name) is not None and getattr(self, name) not in values:
                raise InputError(f"toy scene: {name} = {getattr(self, name)!r} is not in the grammar; "
                                 f"choose one of {', '.join(values)}.")


@dataclass(frozen=True)
class Scene(Attributes):
    """A scene: its captioned attributes plus where the object starts.

    ``start`` is (u, v) in [0, 1]: the start position as a fraction of the range of positions that
    keep the object inside the frame for the whole clip (per axis), so any frame size works.
    """

    start: tuple[float, float] = (0.5, 0.5)

    def attributes(self) -> Attributes:
        """The captioned part of the scene."""
        return Attributes(**{f.name: getattr(self, f.name) for f in fields(Attributes)})


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw a scene uniformly from the grammar (and a uniform start) with a numpy Generator."""
    def pick(options) -> str:
        options = list(options)
        return options[int(rng.integers(len(options)))]

    return Scene(shape=pick(SHAPES), colour=pick(COLOURS), size=pick(SIZES), direction=pick(DIRECTIONS),
                 speed=pick(SPEEDS), background=pick(BACKGROUNDS), style=pick(STYLES),
                 start=(float(rng.uniform()), float(rng.uniform())))


# ---- captions ------------------------------------------------------------------------------------

def ground_words(scene: Attributes) -> str:
    """The background as a caption says it: ``plain gray`` or ``gray gradient``."""
    return f"plain {scene.background}" if scene.style == "plain" else f"{scene.background} gradient"


def caption(scene: Attributes) -> str:
    """``a small red circle slowly moving up-left on a plain gray background``."""
    return (f"a {scene.size} {scene.colour} {scene.shape} {SPEED_WORDS[scene.speed]} moving {scene.direction} "
            f"on a {ground_words(scene)} background")


def short_caption(scene: Attributes, rng: np.random.Generator) -> str:
    """A caption that names the shape and a random subset of the other attributes (each kept with p = 1/2).

    E.g. ``a red square moving left`` or ``a large circle quickly moving up``. Training on a mix of
    full and short captions lets a teacher follow prompts that leave attributes out.
    """
    keep = {name: bool(rng.uniform() < 0.5) for name in ("size", "colour", "speed", "direction", "background")}
    words = ["a"] + [getattr(scene, name) for name in ("size", "colour") if keep[name]] + [scene.shape]
    if keep["speed"] or keep["direction"]:
        words += ([SPEED_WORDS[scene.speed]] if keep["speed"] else []) + ["moving"]
        words += [scene.direction] if keep["direction"] else []
    if keep["background"]:
        words += ["on", "a", ground_words(scene), "background"]
    return " ".join(words)


def vocabulary() -> dict[str, tuple[str, ...]]:
    """The values of each captioned attribute except style."""
    return {"shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES), "direction": tuple(DIRECTIONS),
            "speed": tuple(SPEEDS), "background": tuple(BACKGROUNDS)}


def parse_caption(text: str, partial: bool = False) -> Attributes:
    """The attributes a caption asks for; word order is free, ``grey``/``slowly``/``quickly`` accepted.

    Each of shape, colour, size, direction, speed and background must be named exactly once;
    style is ``gradient`` if the word appears, else ``plain``. With ``partial`` (short captions such
    as ``a red square moving left``) an attribute may be left out and is then ``None`` (style too,
    when the background is); the caption must still name at least one attribute. Anything else is
    an InputError that says which attributes are missing or repeated.
    """
    words = [SYNONYMS.get(w, w) for w in re.findall(r"[a-z]+(?:-[a-z]+)?", text.lower())]
    found, problems = {}, []
    for name, vocab in vocabulary().items():
        values = sorted({w for w in words if w in vocab})
        if len(values) == 1:
            found[name] = values[0]
        elif values or not partial:
            named = f"several: {', '.join(values)}" if values else f"none of {', '.join(vocab)}"
            problems.append(f"{name} ({named})")
        else:
            found[name] = None
    if partial and not problems and all(v is None for v in found.values()):
        problems.append("no attribute of the toy grammar at all")
    if problems:
        example = caption(Attributes("circle", "red", "small", "up-left", "slow", "gray", "plain"))
        raise InputError(
            f"the prompt {text!r} is not a toy-world caption: it names {'; '.join(problems)}. ToyBench judges "
            f"prompts of the toy grammar, e.g. {example!r} or a short one such as 'a red circle moving up-left' "
            "(see docs/toy-world.md); make prompts with `pyrawan toy make-dataset` or write them in that form.")
    style = "gradient" if "gradient" in words else "plain"
    return Attributes(**found, style=None if found["background"] is None and style == "plain" else style)


def named(asked: Attributes) -> tuple[str, ...]:
    """The attributes a (possibly short) caption names."""
    return tuple(name for name in vocabulary() if getattr(asked, name) is not None)


# ---- geometry shared by the renderer and the judge -------------------------------------------------

def check_size(frames: int, height: int, width: int) -> None:
    """InputError unless the video is big enough to hold a recognisable, moving object."""
    if frames < 3 or height < 48 or width < 48:
        raise InputError(f"toy videos need at least 3 frames and 48x48 pixels; got frames={frames}, "
                         f"height={height}, width={width}. Use e.g. 17 frames at 64x64 or 128x128.")


def half_extent(size: str, height: int, width: int) -> float:
    """Half the object's bounding-box side in pixels."""
    return SIZES[size] * min(height, width)


def velocity(direction: str, speed: str, frames: int, height: int, width: int) -> np.ndarray:
    """Velocity (vx, vy) in pixels per frame, x right and y down."""
    step = SPEEDS[speed] * min(height, width) / (frames - 1)
    return np.asarray(DIRECTIONS[direction]) * step


def centre_track(scene: Scene, frames: int, height: int, width: int) -> np.ndarray:
    """Object centre (x, y) in pixels for every frame, [F, 2]; the object stays inside the frame."""
    check_size(frames, height, width)
    v = velocity(scene.direction, scene.speed, frames, height, width)
    travel = v * (frames - 1)
    keep = half_extent(scene.size, height, width) + MARGIN * min(height, width)
    extent = np.asarray([width, height], dtype=np.float64)
    lo = keep + np.maximum(0.0, -travel)
    hi = extent - keep - np.maximum(0.0, travel)
    start = lo + np.asarray(scene.start) * (hi - lo)
    return start + np.arange(frames)[:, None] * v


# ---- rendering -----------------------------------------------------------------------------------

def inside(shape: str, dx: torch.Tensor, dy: torch.Tensor, r: float) -> torch.Tensor:
    """Whether points at offset (dx, dy) from the centre lie in the shape of half-extent ``r``.

    Square: side 2r. Circle: radius r. Triangle: apex up, base 2r at dy = r, height 2r.
    """
    if shape == "square":
        return (dx.abs() <= r) & (dy.abs() <= r)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "triangle":
        return (dy <= r) & (2 * dx.abs() <= dy + r)
    raise InputError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}.")


def coverage(scene: Scene, frames: int, height: int, width: int, supersample: int = 8) -> torch.Tensor:
    """Anti-aliased object coverage [F, H, W] in [0, 1]: the fraction of each pixel inside the shape.

    Evaluated on ``supersample``² points per pixel in a window around the object only.
    """
    r = half_extent(scene.size, height, width)
    centres = torch.from_numpy(centre_track(scene, frames, height, width))            # [F, 2]
    n = math.ceil(2 * r) + 4                                                           # window side, px
    origin = torch.floor(centres - r) - 1                                              # [F, 2] window corner
    sub = (torch.arange(n * supersample, dtype=torch.float64) + 0.5) / supersample     # [n*s]
    dx = origin[:, 0, None, None] + sub[None, None, :] - centres[:, 0, None, None]     # [F, 1, n*s]
    dy = origin[:, 1, None, None] + sub[None, :, None] - centres[:, 1, None, None]     # [F, n*s, 1]
    hits = inside(scene.shape, dx, dy, r).double()                                     # [F, n*s, n*s]
    window = hits.view(frames, n, supersample, n, supersample).mean(dim=(2, 4))        # [F, n, n]
    canvas = torch.zeros(frames, height + 2 * n, width + 2 * n, dtype=torch.float64)
    for f in range(frames):
        y0, x0 = int(origin[f, 1]) + n, int(origin[f, 0]) + n
        canvas[f, y0:y0 + n, x0:x0 + n] = window[f]
    return canvas[:, n:n + height, n:n + width].float()


def background(scene: Attributes, height: int, width: int) -> torch.Tensor:
    """The background [3, H, W]: a grey level, plain or linear from top to bottom (pixel centres)."""
    top, bottom = (BACKGROUNDS if scene.style == "plain" else GRADIENTS)[scene.background]
    rows = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    column = top + (bottom - top) * rows                                                # [H]
    return column.view(1, height, 1).expand(3, height, width).contiguous()


def render(scene: Scene, frames: int, height: int, width: int, supersample: int = 8) -> torch.Tensor:
    """The scene's video [F, 3, H, W], float32 in [0, 1] (deterministic: no randomness)."""
    alpha = coverage(scene, frames, height, width, supersample).unsqueeze(1)           # [F, 1, H, W]
    colour = torch.tensor(COLOURS[scene.colour]).view(1, 3, 1, 1)
    return alpha * colour + (1 - alpha) * background(scene, height, width).unsqueeze(0)


def scene_dict(scene: Scene) -> dict:
    """A JSON-ready dict of a scene."""
    return {**asdict(scene), "start": list(scene.start)}


# ---- datasets ------------------------------------------------------------------------------------

def make_dataset(folder: str | Path, n: int, seed: int = 0, layout: str = "metadata.csv", frames: int = 17,
                 height: int = 64, width: int = 64, fps: int = 16,
                 on_video: Callable[[], object] | None = None, short_captions: float = 0.0) -> list[tuple[str, str]]:
    """Write ``n`` scenes drawn with ``seed`` as mp4s plus captions in ``layout`` under ``folder``.

    Returns the (video path relative to ``folder``, caption) pairs in order. The same arguments
    always give the same scenes, captions and rendered pixels (the mp4 encoding is not
    bit-reproducible between runs). A fraction ``short_captions`` of the videos (drawn from a
    separate generator, so the scenes do not change) gets a ``short_caption`` instead of the full
    one; ToyBench judges full captions only. ``on_video`` is called after each video (e.g. to
    advance a progress bar).
    """
    from pyrawan.data.video import write_video
    from pyrawan.toy.layouts import check_layout, clip_name, write_captions

    check_layout(layout)
    check_size(frames, height, width)
    if n < 1:
        raise InputError(f"make-dataset: --n {n} asks for no videos; give a positive number of videos.")
    if not 0.0 <= short_captions <= 1.0:
        raise InputError(f"make-dataset: --short-captions {short_captions} is not a fraction; give a number in [0, 1].")
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    caption_rng = np.random.default_rng([seed, 1])
    records = []
    for index in range(n):
        scene = sample_scene(rng)
        name = clip_name(layout, index)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(folder / name, render(scene, frames, height, width), fps=fps)
        short = caption_rng.uniform() < short_captions
        records.append((name, short_caption(scene, caption_rng) if short else caption(scene)))
        if on_video is not None:
            on_video()
    write_captions(folder, layout, records)
    return records
