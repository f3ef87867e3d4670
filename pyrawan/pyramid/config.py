"""The definition of a pyramid: stages, boundaries, resizer (what ``pyramid.json`` stores)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from pyrawan.pyramid.geometry import Shape3, stage_shapes
from pyrawan.pyramid.resize import Resizer, get_resizer
from pyrawan.pyramid.schedule import check_boundaries, default_boundaries, stage_levels


@dataclass(frozen=True)
class PyramidConfig:
    """``num_stages`` stages (0 = full resolution) split at ``boundaries`` (global sigma, b_1..b_{S-1})."""

    num_stages: int = 3
    boundaries: tuple[float, ...] | None = None
    resizer: str = "haar"
    keep_time: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        b = default_boundaries(self.num_stages) if self.boundaries is None else self.boundaries
        object.__setattr__(self, "boundaries", check_boundaries(b, self.num_stages))
        get_resizer(self.resizer)  # fail early on an unknown name

    @property
    def resize(self) -> Resizer:
        return get_resizer(self.resizer, keep_time=self.keep_time)

    def levels(self, stage: int, num_frames: int, top: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Natural ``(sigma_c, sigma_n)`` of ``stage`` per frame ``[T]`` (``top``: reaches pure noise)."""
        return stage_levels(self.boundaries, stage, num_frames, self.keep_time, top=top)

    def shapes(self, full: Shape3) -> list[Shape3]:
        """Latent (T, H, W) per stage, index = stage."""
        return stage_shapes(full, self.num_stages, self.keep_time)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["boundaries"] = list(self.boundaries)
        extra = d.pop("extra")
        return {**d, **extra}

    @classmethod
    def from_dict(cls, d: dict) -> "PyramidConfig":
        known = {"num_stages", "boundaries", "resizer", "keep_time"}
        b = d.get("boundaries")
        return cls(
            num_stages=int(d["num_stages"]),
            boundaries=None if b is None else tuple(b),
            resizer=d.get("resizer", "haar"),
            keep_time=bool(d.get("keep_time", False)),
            extra={k: v for k, v in d.items() if k not in known},
        )
