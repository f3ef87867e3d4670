"""``pyrawan eval flops`` and ``pyrawan eval latency``: the cost of each schedule, per stage.

FLOPs need no weights: the architecture comes from a recipe's base (known hub ids map to their
architecture), a model folder's ``transformer/config.json``, or an architecture name.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from pyrawan.commands.common import console, resolve_device, resolve_dtype
from pyrawan.errors import InputError
from pyrawan.eval.flops import flops_report
from pyrawan.eval.latency import environment_info, latency_report, measure_latency
from pyrawan.eval.report import render_table, write_json
from pyrawan.manifest import artifact_dir, write_manifest
from pyrawan.models.presets import TRANSFORMER_ARCHS, build_transformer
from pyrawan.pyramid.geometry import check_sizes, pixel_to_latent, stage_shapes

# Hub ids whose architecture is known without downloading anything.
HUB_ARCHS = {
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": "wan1.3b",
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": "wan14b",
}


@dataclass
class Target:
    """What to measure: an architecture (name or config dict) and the pyramid's geometry."""

    arch: str | dict
    frames: int
    height: int
    width: int
    num_stages: int
    keep_time: bool
    guidance: bool
    text_len: int
    source: str

    def latent_shapes(self) -> list[tuple[int, int, int]]:
        check_sizes({"frames": self.frames, "height": self.height, "width": self.width}, self.num_stages,
                    self.keep_time, frame_unit=4, space_unit=8, what="pixel")
        return stage_shapes(pixel_to_latent(self.frames, self.height, self.width), self.num_stages, self.keep_time)


def arch_of(base: str) -> str | dict:
    """Architecture of a model reference without loading weights."""
    if base in TRANSFORMER_ARCHS or base in HUB_ARCHS:
        return HUB_ARCHS.get(base, base)
    config = Path(base) / "transformer" / "config.json"
    if config.is_file():
        return {k: v for k, v in json.loads(config.read_text()).items() if not k.startswith("_")}
    raise InputError(
        f"cannot tell the architecture of {base!r} without its weights: give a recipe whose base is a known "
        f"hub id ({', '.join(HUB_ARCHS)}), a model folder with transformer/config.json, or an architecture "
        f"name ({', '.join(sorted(TRANSFORMER_ARCHS))})."
    )


def resolve_target(ref: str, overrides: list[str], stages: int | None = None) -> Target:
    """A recipe (file or shipped name), a pyrawan model folder, or an architecture name."""
    from pyrawan.recipe import builtin_recipes, load_recipe

    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or ref in builtin_recipes():
        r = load_recipe(ref, overrides)
        return Target(arch_of(r.base), r.video.frames, r.video.height, r.video.width, r.pyramid.stages,
                      r.pyramid.keep_time, r.sampling.guidance > 1, r.text.max_sequence_length, f"recipe {ref}")
    if (path / "pyramid.json").is_file():
        p = json.loads((path / "pyramid.json").read_text())
        v = p["video"]
        return Target(arch_of(ref), v["frames"], v["height"], v["width"], p["num_stages"], p.get("keep_time", False),
                      p["sampling"]["guidance"] > 1, p["sampling"].get("max_sequence_length", 512), f"model {ref}")
    arch = arch_of(ref)
    return Target(arch, 81, 448, 832, stages or 3, False, True, 512, f"architecture {ref}")


def _apply_sizes(target: Target, frames, height, width, guidance) -> Target:
    for key, value in (("frames", frames), ("height", height), ("width", width), ("guidance", guidance)):
        if value is not None:
            setattr(target, key, value)
    return target


def _finish(report: dict, out: Path | None, name: str, target: Target, started: float, overwrite: bool) -> dict:
    Console(soft_wrap=True).print(render_table(report))  # results on stdout, messages on stderr
    if out is not None:
        with artifact_dir(out, overwrite=overwrite) as tmp:
            write_json(tmp / f"{name}.json", report)
            resolved = {"kind": f"eval-{name}", "target": target.source, "arch": target.arch,
                        "video": {"frames": target.frames, "height": target.height, "width": target.width},
                        "num_stages": target.num_stages, "keep_time": target.keep_time, "guidance": target.guidance}
            write_manifest(tmp, f"eval-{name}", resolved, [], {"schedules": report["schedules"]}, started)
        console.print(f"eval {name}: wrote [bold]{out}[/]")
    return report


def run_flops(ref: str, overrides: list[str], schedules: list[str] | None, method: str, out: Path | None,
              frames=None, height=None, width=None, stages=None, guidance=None, overwrite=False) -> dict:
    started = time.time()
    target = _apply_sizes(resolve_target(ref, overrides, stages), frames, height, width, guidance)
    full = target.latent_shapes()[0]
    report = flops_report(target.arch, full, target.num_stages, target.keep_time, schedules, target.guidance,
                          method, target.text_len)
    report["target"] = target.source
    return _finish(report, out, "flops", target, started, overwrite)


def run_latency(model: str, schedules: list[str] | None, out: Path | None, frames=None, height=None, width=None,
                stages=None, guidance=None, device=None, dtype=None, repeats=10, warmup=3, overwrite=False) -> dict:
    """Time one forward per stage. ``model``: ``ARCH-random`` (random weights, built on the device) or a model."""
    started = time.time()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if model.endswith("-random"):
        target = resolve_target(model.removesuffix("-random"), [], stages)
        transformer = build_transformer(model.removesuffix("-random"), device=dev, dtype=dt)
    else:
        from pyrawan.models.artifact import load_model

        target = resolve_target(model, [], stages) if Path(model).is_dir() else Target(
            model, 17, 64, 64, stages or 3, False, True, 16, f"model {model}")
        transformer = load_model(model, device=dev, dtype=dt).components.transformer
    target = _apply_sizes(target, frames, height, width, guidance)
    console.print(f"eval latency: {target.source} on {dev} in {str(dt).removeprefix('torch.')}, "
                  f"{warmup} warm-up + {repeats} timed forwards per stage")
    rows = measure_latency(transformer, target.latent_shapes(), target.text_len, repeats=repeats, warmup=warmup,
                           device=dev, dtype=dt)
    report = latency_report(rows, schedules, target.guidance, environment_info(dev, dt))
    report["target"] = target.source
    return _finish(report, out, "latency", target, started, overwrite)
