"""PNG plots of a calibration: per transition, the spectra of both stages in the orthonormal frame, the
band the transition removes, its mean power, and the noise floor at the chosen boundary.
"""
from __future__ import annotations

from pathlib import Path

from pyrawan.data.spectra import noise_floor
from pyrawan.fsutil import atomic_path


def plot_resizer(result: dict, name: str, path: Path, threshold: float) -> Path:
    """Write the spectra of resizer ``name`` from a calibration ``result`` to ``path`` (PNG); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = result["resizers"][name]
    transitions, spectra = res["transitions"], res["spectra"]
    panels = len(transitions) + 1
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 3.2), squeeze=False)
    for ax, t, b in zip(axes[0], transitions, res["boundaries"]):
        _transition_panel(ax, spectra["rapsd"], t, b, threshold)
    _temporal_panel(axes[0][-1], spectra["temporal"])
    fig.suptitle(f"{name}: {result['videos']} videos, definition {result['definition']}, threshold {threshold:g}",
                 fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path


def _transition_panel(ax, rapsd: list[dict], t: dict, b: float, threshold: float) -> None:
    """Stage i and i+1 RAPSD against frequency in cycles per full-resolution latent pixel."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullLocator

    i = t["from_stage"]
    for stage in (i, i + 1):
        row = rapsd[stage]
        pairs = [(f / 2 ** stage, p) for f, p in zip(row["freq"], row["power"]) if f > 0 and p > 0]
        if pairs:
            ax.loglog(*zip(*pairs), marker=".", label=f"stage {stage}")
    cut = 0.25 / 2 ** i
    top = max(rapsd[i]["freq"]) / 2 ** i
    ax.axvspan(cut, top, color="0.9", label="removed band")
    ax.hlines(t["high_band_power"], cut, top, colors="C3", label=f"mean removed power {t['high_band_power']:.3g}")
    ax.axhline(noise_floor(b), color="k", linestyle="--", linewidth=1,
               label=f"noise floor at b={b:.3f}" + (" (moved)" if abs(b - t["boundary_raw"]) > 1e-9 else ""))
    if threshold != 1:
        ax.axhline(threshold * noise_floor(b), color="0.4", linestyle=":", linewidth=1, label="threshold x floor")
    ax.set_title(f"stage {i} -> {i + 1}: removes {100 * t['high_pass_fraction']:.1f}%", fontsize=9)
    ax.set_xlabel("cycles / full-res latent pixel", fontsize=8)
    ax.set_ylabel("power per coefficient (orthonormal)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_locator(LogLocator(base=2))          # 1/2, 1/4, ...: labelled even when the range is
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))   # less than a decade (toy sizes: 4 frequencies)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.legend(fontsize=6, loc="best")


def _temporal_panel(ax, temporal: list[dict]) -> None:
    """Power per temporal frequency (frames after the first) of each stage."""
    for row in temporal:
        pairs = [(f, p) for f, p in zip(row["freq"], row["power"]) if p > 0]
        if len(pairs) > 1:
            ax.semilogy(*zip(*pairs), marker="o", label=f"stage {row['stage']}")
    ax.set_title("temporal spectrum (frames 1..T-1)", fontsize=9)
    ax.set_xlabel("cycles / latent frame of that stage", fontsize=8)
    ax.tick_params(labelsize=7)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)
