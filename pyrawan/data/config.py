"""Recipe sections of the data path: the dataset (``data:``) and calibration (``calibrate:``)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Data(_Section):
    """Where the videos and captions are, how to read them, and where their latents are cached."""

    root: Path | None = Field(None, description="Dataset folder (videos + captions); `pyrawan calibrate DATA_DIR` sets it.")
    layout: Literal["auto", "metadata.jsonl", "metadata.csv", "metadata.json", "samples.jsonl", "prompts+videos",
                    "sidecar"] = Field(
        "auto", description="Dataset layout; auto detects it (metadata.jsonl, .csv, .json, samples.jsonl, "
        "prompts.txt + videos.txt, then clip.mp4 + clip.txt pairs).")
    video_column: str | None = Field(None, max_length=200, description="Metadata column with the video path (default: video|file_name|path|video_path|file).")
    caption_column: str | None = Field(None, max_length=200, description="Metadata column with the caption (default: caption|prompt|text|name|cap).")
    on_bad_sample: Literal["skip", "fail"] = Field("fail", description="Unreadable/short video, missing caption or file, path outside the folder: skip and count, or stop listing every bad entry.")
    cache: Path | None = Field(None, description="Latent cache folder; null = runs/cache/<hash of data, model and sizes>.")
    shard_size: int = Field(32, ge=1, le=100_000, description="Videos per latent-cache shard (the unit of resuming).")
    prompts: Path | None = Field(None, description="distill only: a UTF-8 text file of prompts, one per line, instead of "
                                 "data.root/data.cache (DMD without the GAN term needs prompts only, no videos).")


class Calibrate(_Section):
    """Spectral calibration of the stage boundaries."""

    threshold: float = Field(1.0, gt=0, le=1e6, description="Signal-to-noise ratio of the band a transition removes at "
                             "which the coarser stage takes over (1 = signal and noise power equal).")
    margin: float = Field(0.02, gt=0, lt=0.25, description="Smallest gap (global sigma) between boundaries and "
                          "from 0 and 1; boundaries the data puts closer are moved apart and reported.")
    resizers: tuple[Literal["haar", "dct", "db4"], ...] = Field(
        ("haar", "dct", "db4"), min_length=1, max_length=3, description="Resizers to analyse; the boundaries use pyramid.resizer.")
    max_videos: int | None = Field(1000, ge=1, le=10**9, description="Analyse at most this many cached videos, evenly spaced "
                                   "(spectra settle long before 80K videos); null = all. The cache holds them all.")
    plots: StrictBool = Field(True, description="Write PNG plots of the spectra with the noise floor at each boundary.")
