"""Recipe sections of the data path: the dataset (``data:``) and calibration (``calibrate:``)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Data(_Section):
    """Where the videos and captions are, how to read them, and where their latents are cached."""

    root: Path | None = Field(None, description="Dataset folder (videos + captions); `pyrawan calibrate DATA_DIR` sets it.")
    layout: Literal["auto", "metadata.csv", "metadata.jsonl", "metadata.json", "sidecar", "prompts+videos"] = Field(
        "auto", description="Dataset layout; auto detects it.")
    video_column: str | None = Field(None, description="Metadata column with the video path (default: video|file_name|path).")
    caption_column: str | None = Field(None, description="Metadata column with the caption (default: caption|prompt|text).")
    on_bad_sample: Literal["skip", "fail"] = Field("fail", description="Unreadable/short video, missing caption or file: skip and count, or stop listing every bad entry.")
    cache: Path | None = Field(None, description="Latent cache folder; null = a folder derived from the data and model settings under runs/cache/.")


class Calibrate(_Section):
    """Spectral calibration of the stage boundaries."""

    threshold: float = Field(1.0, gt=0, description="Signal-to-noise ratio of the removed band below which a stage is safe.")
