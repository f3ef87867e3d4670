"""PNG figure of toy-world results: a strip of frames per row (quality against cost is eval compare's plot).

It takes plain videos (no model code), so ``pyrawan demo`` and the docs use the same drawing.
Matplotlib runs headless (Agg); files are written atomically.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pyrawan.escape import PLOT_TEXT


def _figure():
    """A fresh matplotlib ``pyplot`` on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` (PNG) atomically and close it."""
    from pyrawan.fsutil import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _figure().close(fig)
    return path


def video_label(row: str, schedule: str, score: float | None, mean: float) -> str:
    """A strip's row label: the row, its schedule, the ToyBench score of *this* video and the row's mean."""
    own = "–" if score is None else f"{score:.2f}"
    return f"{row}\n{schedule}\nthis video: ToyBench {own}\n(row mean {mean:.2f})"


def frame_strip(videos: Sequence[torch.Tensor], labels: Sequence[str], path: Path, prompt: str,
                frames: int = 5) -> Path:
    """One row of ``frames`` evenly spaced frames per video (videos [F, 3, H, W] in [0, 1] or uint8)."""
    plt = _figure()
    fig, axes = plt.subplots(len(videos), frames, figsize=(1.5 * frames + 2.2, 1.5 * len(videos) + 0.5),
                             squeeze=False)
    for row, (video, label) in enumerate(zip(videos, labels)):
        video = torch.as_tensor(video)
        video = video.float() / 255 if video.dtype == torch.uint8 else video.float()
        picks = np.linspace(0, video.shape[0] - 1, frames).round().astype(int)
        for col, t in enumerate(picks):
            ax = axes[row][col]
            ax.imshow(video[t].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == len(videos) - 1:
                ax.set_xlabel(f"frame {t}", fontsize=8)
        axes[row][0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center", **PLOT_TEXT)
    fig.suptitle(prompt, fontsize=9, **PLOT_TEXT)
    return _save(fig, path)
