"""Accumulate spectra and statistics over a dataset's stage latents and turn them into stage boundaries.

``SpectralAnalysis.add(latents)`` takes one video's stage latents (``[16, T_s, H_s, W_s]`` per stage,
natural amplitude, as the latent cache stores them) and ``result(threshold, margin)`` gives the
JSON-able calibration (see docs/calibration.md for the method and every field).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from pyrawan.data.spectra import (boundary_from_power, gain2, increasing_boundaries, mismatch_energies, radial_bins,
                                  rapsd_sums, temporal_power, transition_energies)
from pyrawan.pyramid.resize import get_resizer
from pyrawan.pyramid.schedule import sigma_to_natural

ENERGY_KEYS = ("high", "total", "spatial", "temporal", "count")


class SpectralAnalysis:
    """Running sums over videos, per resizer, stage and stage transition (float64)."""

    def __init__(self, num_stages: int, definition: int, resizers: Sequence[str], cached_resizer: str,
                 keep_time: bool = False, device: str | torch.device = "cpu"):
        self.num_stages, self.definition, self.keep_time = num_stages, definition, keep_time
        self.device = torch.device(device)
        self.resizers = {name: get_resizer(name, keep_time) for name in dict.fromkeys([cached_resizer, *resizers])}
        self.cached_resizer = cached_resizer
        self.videos = 0
        self.moments: list[torch.Tensor | None] = [None] * num_stages          # [3, C]: sum, sum of squares, count
        self.energy = {r: [dict.fromkeys(ENERGY_KEYS, 0.0) for _ in range(num_stages - 1)] for r in self.resizers}
        self.mismatch = {r: [torch.zeros(2, dtype=torch.float64) for _ in range(num_stages - 1)] for r in self.resizers}
        self.rapsd = {r: [None] * num_stages for r in self.resizers}           # (sums [K], counts [K]) per stage
        self.temporal = {r: [None] * num_stages for r in self.resizers}        # summed power [F] per stage
        self.shapes: list[tuple[int, ...]] = []

    def stages_for(self, name: str, latents: list[torch.Tensor]) -> list[torch.Tensor]:
        """The stage latents a resizer sees: the given ones (Definition 2, or the cached resizer), else its downs."""
        if self.definition == 2 or name == self.cached_resizer:
            return latents
        out = [latents[0]]
        for _ in range(self.num_stages - 1):
            out.append(self.resizers[name].down(out[-1][None])[0])
        return out

    def stage_spectra(self, stage: int, z: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """RAPSD sums and temporal power of one stage latent ``[C, T, H, W]`` in the orthonormal frame."""
        g = gain2(stage, z.shape[1], self.keep_time)
        return rapsd_sums(z, g), temporal_power(z, float(g[-1]))

    def add(self, latents: list[torch.Tensor]) -> None:
        """Add one video: ``latents[s]`` is stage s, ``[C, T_s, H_s, W_s]`` at natural amplitude."""
        latents = [z.to(self.device, torch.float32) for z in latents]
        self.shapes = [tuple(z.shape) for z in latents]
        self.videos += 1
        for s, z in enumerate(latents):
            flat = z.flatten(1)
            moments = torch.stack([flat.sum(1), (flat ** 2).sum(1), torch.full_like(flat[:, 0], flat.shape[1])])
            moments = moments.double().cpu()
            self.moments[s] = moments if self.moments[s] is None else self.moments[s] + moments
        spectra: dict[int, tuple] = {}  # per distinct stage tensor: resizers that see the same latents share it
        for name, resizer in self.resizers.items():
            stages = self.stages_for(name, latents)
            for s, z in enumerate(stages):
                if id(z) not in spectra:
                    spectra[id(z)] = self.stage_spectra(s, z)
                pair, power = spectra[id(z)]
                self.rapsd[name][s] = _add_pair(self.rapsd[name][s], pair)
                self.temporal[name][s] = power if self.temporal[name][s] is None else self.temporal[name][s] + power
            for i in range(self.num_stages - 1):
                for key, value in transition_energies(stages[i], resizer, i).items():
                    self.energy[name][i][key] = self.energy[name][i][key] + value
                if self.definition == 2:
                    self.mismatch[name][i] += mismatch_energies(stages[i], stages[i + 1], resizer, i)

    # -- results -----------------------------------------------------------------------------------
    def transition(self, name: str, i: int, threshold: float) -> dict:
        """Measurements and the raw boundary of transition ``i`` (stage i -> i + 1) for resizer ``name``."""
        e = self.energy[name][i]
        high, count, total = e["high"], e["count"], float(e["total"].sum())
        power = float(high.sum() / count.sum())
        group = (high / count).tolist()
        out = {
            "from_stage": i, "to_stage": i + 1,
            "high_pass_fraction": float(high.sum()) / total if total else 0.0,
            "spatial_fraction": float(e["spatial"].sum()) / total if total else 0.0,
            "temporal_fraction": float(e["temporal"].sum()) / total if total else 0.0,
            "high_band_power": power,
            "high_band_power_frame0": group[0], "high_band_power_later": group[1] if count[1] else None,
            "boundary_raw": boundary_from_power(power, threshold),
            "boundary_frame0": boundary_from_power(group[0], threshold),
            "boundary_later": boundary_from_power(group[1], threshold) if count[1] else None,
        }
        if self.definition == 2:
            diff, low = self.mismatch[name][i].tolist()
            out["up_relative_error"] = math.sqrt(diff / low) if low else None
        return out

    def spectra(self, name: str) -> dict:
        """RAPSD per stage (orthonormal frame; frequency in cycles per pixel of that stage) and temporal power."""
        rapsd = []
        for s, (sums, counts) in enumerate(self.rapsd[name]):
            _, freqs = radial_bins(*self.shapes[s][-2:])
            keep = counts > 0
            rapsd.append({"stage": s, "freq": freqs[keep].tolist(), "power": (sums[keep] / counts[keep]).tolist()})
        temporal = [{"stage": s, "freq": [k / max(1, self.shapes[s][1] - 1) for k in range(len(p))],
                     "power": (p / self.videos).tolist()} for s, p in enumerate(self.temporal[name])]
        return {"rapsd": rapsd, "temporal": temporal}

    def statistics(self) -> list[dict]:
        """Per stage: shape, per-channel mean and std, overall mean and std (natural amplitude)."""
        rows = []
        for s, m in enumerate(self.moments):
            total, squares, count = m
            mean, var = total / count, squares / count - (total / count) ** 2
            all_mean = float(total.sum() / count.sum())
            all_var = float(squares.sum() / count.sum()) - all_mean ** 2
            rows.append({"stage": s, "shape": list(self.shapes[s][1:]), "channel_mean": mean.tolist(),
                         "channel_std": var.clamp_min(0).sqrt().tolist(), "mean": all_mean,
                         "std": math.sqrt(max(all_var, 0.0))})
        return rows

    def result(self, threshold: float, margin: float, chosen: str) -> dict:
        """Boundaries (from resizer ``chosen``), per-resizer measurements and spectra, statistics."""
        per_resizer = {}
        for name in self.resizers:
            transitions = [self.transition(name, i, threshold) for i in range(self.num_stages - 1)]
            boundaries, adjusted = increasing_boundaries([t["boundary_raw"] for t in transitions], margin)
            per_resizer[name] = {"boundaries": boundaries, "adjusted": adjusted, "transitions": transitions,
                                 "spectra": self.spectra(name)}
        best = per_resizer[chosen]
        return {
            "boundaries": best["boundaries"],
            "boundaries_raw": [t["boundary_raw"] for t in best["transitions"]],
            "adjusted": best["adjusted"],
            "natural_levels": natural_levels(best["boundaries"], [s[1] for s in self.shapes], self.keep_time),
            "threshold": threshold, "margin": margin, "resizer": chosen, "definition": self.definition,
            "keep_time": self.keep_time, "videos": self.videos,
            "stage_latents": [list(s[1:]) for s in self.shapes],
            "statistics": self.statistics(),
            "resizers": per_resizer,
        }


def _add_pair(acc, pair):
    return pair if acc is None else (acc[0] + pair[0], acc[1] + pair[1])


def natural_levels(boundaries: Sequence[float], frames: Sequence[int], keep_time: bool = False) -> list[dict]:
    """Per boundary b_{i+1} (between stage i and i + 1): its natural levels on both sides, for frame 0 and later frames."""
    rows = []
    for i, b in enumerate(boundaries):
        finer = sigma_to_natural(b, i, frames[i], keep_time)
        coarser = sigma_to_natural(b, i + 1, frames[i + 1], keep_time)
        rows.append({"boundary": i + 1, "sigma": b, "finer_stage": i, "coarser_stage": i + 1,
                     "finer": {"frame0": float(finer[0]), "later": float(finer[-1])},
                     "coarser": {"frame0": float(coarser[0]), "later": float(coarser[-1])}})
    return rows
