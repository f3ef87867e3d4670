"""The definition of a pyramid: stages, boundaries, resizer (what ``pyramid.json`` stores).

Two kinds share the stage machinery (boundaries, per-stage schedules, samplers, training splits):

- ``resolution`` (PyramidalWan): stage i holds the latent at 1/2^i of the full resolution; stages meet
  at jumps (spec section 5).
- ``ppf`` (Pyramidal Patchification): every stage holds the full-resolution latent and the *model*
  patchifies it more coarsely at noisier stages (``pyrawan.models.ppf``). Geometry is the identity:
  natural level = global level, no resizing, no jump noise; a stage is an interval of noise levels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from pyrawan.pyramid.geometry import Shape3, stage_shapes
from pyrawan.pyramid.resize import Identity, Resizer, get_resizer
from pyrawan.pyramid.schedule import check_boundaries, default_boundaries, stage_levels

KINDS = ("resolution", "ppf")


@dataclass(frozen=True)
class PyramidConfig:
    """``num_stages`` stages (0 = full resolution) split at ``boundaries`` (global sigma, b_1..b_{S-1})."""

    num_stages: int = 3
    boundaries: tuple[float, ...] | None = None
    resizer: str = "haar"
    keep_time: bool = False
    kind: str = "resolution"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        b = default_boundaries(self.num_stages) if self.boundaries is None else self.boundaries
        object.__setattr__(self, "boundaries", check_boundaries(b, self.num_stages))
        get_resizer(self.resizer)  # fail early on an unknown name
        if self.kind not in KINDS:
            raise ValueError(f"pyramid kind {self.kind!r} is not one of {KINDS}")

    @property
    def ppf(self) -> bool:
        return self.kind == "ppf"

    @property
    def resize(self) -> Resizer:
        return Identity() if self.ppf else get_resizer(self.resizer, keep_time=self.keep_time)

    def levels(self, stage: int, num_frames: int, top: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Natural ``(sigma_c, sigma_n)`` of ``stage`` per frame ``[T]`` (``top``: reaches pure noise)."""
        if self.ppf:
            full = (0.0, *self.boundaries, 1.0)
            ends = (full[stage], 1.0 if top else full[stage + 1])
            return tuple(torch.full((num_frames,), v, dtype=torch.float64) for v in ends)
        return stage_levels(self.boundaries, stage, num_frames, self.keep_time, top=top)

    def token_shapes(self, full: Shape3) -> list[Shape3]:
        """Latent (T, H, W) per stage of the resolution pyramid: what each stage's tokens cover.

        For ``ppf`` these are the grids the model's coarse patchifications produce (same token counts).
        """
        return stage_shapes(full, self.num_stages, self.keep_time)

    def shapes(self, full: Shape3) -> list[Shape3]:
        """Latent (T, H, W) each stage's samples have, index = stage (all ``full`` for ``ppf``)."""
        shapes = self.token_shapes(full)
        return [tuple(full)] * self.num_stages if self.ppf else shapes

    def levels_table(self, frames_per_stage: list[int]) -> list[dict]:
        """Per stage: natural levels of frame 0 and of later frames at both ends (for reports and pyramid.json)."""
        rows = []
        for stage, t in enumerate(frames_per_stage):
            sc, sn = self.levels(stage, t)
            rows.append({"stage": stage, "sigma_c": [round(float(sc[0]), 6), round(float(sc[-1]), 6)],
                         "sigma_n": [round(float(sn[0]), 6), round(float(sn[-1]), 6)]})
        return rows

    def to_dict(self) -> dict:
        d = asdict(self)
        d["boundaries"] = list(self.boundaries)
        extra = d.pop("extra")
        return {**d, **extra}

    @classmethod
    def from_dict(cls, d: dict) -> "PyramidConfig":
        known = {"num_stages", "boundaries", "resizer", "keep_time", "kind"}
        b = d.get("boundaries")
        return cls(
            num_stages=int(d["num_stages"]),
            boundaries=None if b is None else tuple(b),
            resizer=d.get("resizer", "haar"),
            keep_time=bool(d.get("keep_time", False)),
            kind=d.get("kind", "resolution"),
            extra={k: v for k, v in d.items() if k not in known},
        )
