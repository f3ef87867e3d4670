"""Training curves: ``metrics.jsonl`` -> one PNG with a panel per quantity, and the end-of-run summary."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pyrawan.escape import PLOT_TEXT
from pyrawan.fsutil import atomic_path


def read_records(path: Path) -> list[dict]:
    """The JSON lines of ``metrics.jsonl`` (empty when the file does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _series(records: list[dict], kind: str, key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for r in records:
        value = r.get(key)
        if r.get("kind") == kind and isinstance(value, (int, float)) and not isinstance(value, bool):
            steps.append(r["step"])
            values.append(float(value))
    return steps, values


def plot_curves(metrics: Path, png: Path, panels: Sequence[tuple[str, str, str]], title: str) -> Path | None:
    """Write ``png`` with one panel per ``(kind, key, label)`` found in ``metrics`` (None if nothing to plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_records(metrics)
    found = [(label, *_series(records, kind, key)) for kind, key, label in panels]
    found = [f for f in found if f[1]]
    if not found:
        return None
    fig, axes = plt.subplots(1, len(found), figsize=(4.2 * len(found), 3.2), squeeze=False)
    for ax, (label, steps, values) in zip(axes[0], found):
        ax.plot(steps, values, lw=0.8 if len(steps) >= 30 else 1.2, alpha=0.45 if len(steps) >= 30 else 1.0,
                marker="o" if len(steps) < 30 else None, ms=3)
        if len(steps) >= 30:                                      # noisy per-step values: add a running mean
            window = max(5, len(steps) // 20)
            smooth = [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
                      for i in range(len(values))]
            ax.plot(steps, smooth, lw=1.6, color="C3", label=f"mean of last {window}")
            ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.set_ylabel(label, **PLOT_TEXT)
        ax.set_title(label, fontsize=10, **PLOT_TEXT)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11, **PLOT_TEXT)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return png



def short(value) -> str:
    """A logged number (or list of numbers) in 4 significant digits; "nan"/"inf" strings stay as they are."""
    if isinstance(value, list):
        return "[" + ", ".join(short(v) for v in value) + "]"
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
