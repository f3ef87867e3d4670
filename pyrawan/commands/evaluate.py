"""``pyrawan eval flops``, ``eval latency`` and ``eval schedules``: the cost of each schedule, per stage, and the
best schedule under a budget.

FLOPs need no weights: the architecture comes from a recipe's base (known hub ids map to their
architecture), a model folder's ``transformer/config.json``, or an architecture name.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from pyrawan.commands.common import console, progress_bar, resolve_device, resolve_dtype
from pyrawan.errors import InputError, RunError
from pyrawan.eval.decode_cost import end_to_end_flops
from pyrawan.eval.flops import flops_report
from pyrawan.eval.latency import environment_info, latency_report, measure_latency, measure_parts
from pyrawan.eval.report import render_end_to_end_table, render_table, write_json
from pyrawan.manifest import write_manifest
from pyrawan.outputs import artifact_dir
from pyrawan.models.arch import arch_of, vae_factors
from pyrawan.models.pyramid_spec import PyramidSpec
from pyrawan.models.presets import build_transformer
from pyrawan.pyramid.geometry import WAN21_VAE_FACTORS, check_sizes, pixel_to_latent, stage_shapes

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
    ppf: bool = False
    vae_factors: tuple[int, int] = WAN21_VAE_FACTORS   # (temporal, spatial) compression of the model's VAE

    def latent_shapes(self) -> list[tuple[int, int, int]]:
        check_sizes({"frames": self.frames, "height": self.height, "width": self.width}, self.num_stages,
                    self.keep_time, frame_unit=self.vae_factors[0], space_unit=self.vae_factors[1], what="pixel")
        full = pixel_to_latent(self.frames, self.height, self.width, self.vae_factors)
        return stage_shapes(full, self.num_stages, self.keep_time)


def optional_tiny_decoder(model: str):
    """The model's tiny decoder (its ``decoder/``, or the toy preset's), or None when it has none."""
    from pyrawan.models.artifact import load_model
    from pyrawan.models.decoders import find_tiny_decoder

    try:
        return find_tiny_decoder(load_model(model))
    except (InputError, RunError):
        return None


def resolve_target(ref: str, overrides: list[str], stages: int | None = None) -> Target:
    """A recipe (file or shipped name), a pyrawan model folder, or an architecture name."""
    from pyrawan.recipe import builtin_recipes, load_recipe

    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or ref in builtin_recipes():
        r = load_recipe(ref, overrides)
        return Target(arch_of(r.base), r.video.frames, r.video.height, r.video.width, r.pyramid.stages,
                      r.pyramid.keep_time, r.sampling.guidance > 1, r.text.max_sequence_length, f"recipe {ref}",
                      r.pyramid.kind == "ppf", r.vae_factors())
    if (path / "pyramid.json").is_file():
        p = PyramidSpec.read(path / "pyramid.json")
        return Target(arch_of(ref), p.video.frames, p.video.height, p.video.width, p.num_stages, p.keep_time,
                      p.sampling.guidance > 1, p.sampling.max_sequence_length, f"model {ref}", p.kind == "ppf",
                      vae_factors(ref))
    arch = arch_of(ref)
    return Target(arch, 81, 448, 832, stages or 3, False, True, 512, f"architecture {ref}")


def _apply_sizes(target: Target, frames, height, width, guidance) -> Target:
    for key, value in (("frames", frames), ("height", height), ("width", width), ("guidance", guidance)):
        if value is not None:
            setattr(target, key, value)
    return target


def _finish(report: dict, out: Path | None, name: str, target: Target, started: float, overwrite: bool) -> dict:
    Console(soft_wrap=True).print(render_table(report))  # results on stdout, messages on stderr
    if "end_to_end" in report:
        Console(soft_wrap=True).print(render_end_to_end_table(report))
    if out is not None:
        with artifact_dir(out, overwrite=overwrite) as tmp:
            write_json(tmp / f"{name}.json", report)
            resolved = {"kind": f"eval-{name}", "target": target.source, "arch": target.arch,
                        "video": {"frames": target.frames, "height": target.height, "width": target.width},
                        "num_stages": target.num_stages, "keep_time": target.keep_time, "guidance": target.guidance,
                        "ppf": target.ppf}
            write_manifest(tmp, f"eval-{name}", resolved, [], {"schedules": report["schedules"]}, started)
        console.print(f"eval {name}: wrote [bold]{out}[/]")
    return report


def run_flops(ref: str, overrides: list[str], schedules: list[str] | None, method: str, out: Path | None,
              frames=None, height=None, width=None, stages=None, guidance=None, overwrite=False, ppf=False) -> dict:
    started = time.time()
    target = _apply_sizes(resolve_target(ref, overrides, stages), frames, height, width, guidance)
    target.ppf = target.ppf or ppf
    full = target.latent_shapes()[0]
    report = flops_report(target.arch, full, target.num_stages, target.keep_time, schedules, target.guidance,
                          method, target.text_len, ppf=target.ppf)
    report["end_to_end"] = end_to_end_flops(report, target.arch, full)
    report["target"] = target.source
    return _finish(report, out, "flops", target, started, overwrite)


TIMESTEP_MODES = ("sampler", "per-sample")


DEFAULT_LATENCY_MODEL = "wan1.3b-random"


def run_latency(model: str | None, schedules: list[str] | None, out: Path | None, frames=None, height=None,
                width=None, stages=None, guidance=None, device=None, dtype=None, repeats=10, warmup=3,
                overwrite=False, timesteps: str = "sampler") -> dict:
    """Time one forward per stage. ``model``: ``ARCH-random`` (random weights, built on the device) or a model;
    None: ``DEFAULT_LATENCY_MODEL``, refused on a CPU (minutes of building and timing a 1.3B model).

    ``timesteps``: ``sampler`` (per-token timesteps at the coarse stages, as sampling runs them) or
    ``per-sample`` (one timestep per sample at every stage).
    """
    if timesteps not in TIMESTEP_MODES:
        raise InputError(f"eval latency: --timesteps {timesteps!r} is not one of {', '.join(TIMESTEP_MODES)}; "
                         "use sampler (what sampling runs) or per-sample.")
    started = time.time()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if model is None and dev.type == "cpu":
        raise InputError(f"eval latency without --model times {DEFAULT_LATENCY_MODEL} (1.3B parameters, about 5 GB "
                         "in float32), built here on the CPU, where each forward at full resolution takes minutes; "
                         "give --model explicitly: --model tiny-random for a quick check, or --model "
                         f"{DEFAULT_LATENCY_MODEL} to time it on the CPU anyway (or run it on a GPU).")
    model = model or DEFAULT_LATENCY_MODEL
    console.print(f"eval latency: building {model} on {dev} ...", markup=False)
    if model.endswith("-random"):
        target = resolve_target(model.removesuffix("-random"), [], stages)
        transformer = build_transformer(model.removesuffix("-random"), device=dev, dtype=dt)
    else:
        from pyrawan.models.artifact import load_model

        target = resolve_target(model, [], stages) if Path(model).is_dir() else Target(
            model, 17, 64, 64, stages or 3, False, True, 16, f"model {model}")
        components = load_model(model, device=dev, dtype=dt).components
        transformer = components.transformer
    target = _apply_sizes(target, frames, height, width, guidance)
    console.print(f"eval latency: {target.source} on {dev} in {str(dt).removeprefix('torch.')}, "
                  f"{warmup} warm-up + {repeats} timed forwards per stage")
    rows = measure_latency(transformer, target.latent_shapes(), target.text_len, repeats=repeats, warmup=warmup,
                           device=dev, dtype=dt, sampler_timesteps=timesteps == "sampler")
    parts = None if model.endswith("-random") else measure_parts(components, target.latent_shapes()[0],
                                                                  target.text_len, repeats=min(repeats, 3),
                                                                  tiny_decoder=optional_tiny_decoder(model))
    report = latency_report(rows, schedules, target.guidance, environment_info(dev, dt), parts=parts)
    report["target"] = target.source
    return _finish(report, out, "latency", target, started, overwrite)


# ---- eval schedules ------------------------------------------------------------------------------

def parse_amount(text: str, what: str) -> float:
    """``2.5e14``, ``250T``, ``1.2P``, ``40G`` -> a float (suffixes K M G T P are powers of 1000)."""
    scale = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
    body, mult = (text[:-1], scale[text[-1].upper()]) if text and text[-1].upper() in scale else (text, 1.0)
    try:
        value = float(body) * mult
    except ValueError:
        raise InputError(f"{what} {text!r} is not a number; write e.g. 2.5e14 or 250T.") from None
    if not value > 0:
        raise InputError(f"{what} {text!r} must be positive.")
    return value


def run_schedules(model: str, out: Path | None, budget_flops: str | None = None, budget_seconds: float | None = None,
                  prompts: list[str] | None = None, seeds: int = 2, seed: int = 0, reference: str | None = None,
                  max_steps: int | None = None, max_candidates: int = 8, batch_size: int = 8,
                  device: str | None = None, dtype: str | None = None, progress: bool = True,
                  overwrite: bool = False, boundary_radius: float | None = None, boundary_points: int = 3) -> dict:
    """``pyrawan eval schedules``: the best steps per stage under a FLOPs or time budget and, with
    ``boundary_radius``, stage boundaries within that distance of the model's (see eval/schedules.py)."""
    import dataclasses

    from pyrawan.commands.eval_quality import model_loader
    from pyrawan.eval.quality import score_sets, toy_prompts
    from pyrawan.eval.sampling import grid, plan_for, sample_set
    from pyrawan.eval.schedules import boundary_grid, per_stage_cost, plan_pool, search
    from pyrawan.eval.cost import stage_forward_tflops
    from pyrawan.outputs import check_output

    started = time.time()
    if (budget_flops is None) == (budget_seconds is None):
        raise InputError("eval schedules needs exactly one budget: --budget-flops X (per video, e.g. 250T) or "
                         "--budget-seconds X (transformer time per video on this device).")
    if out is not None:
        check_output(Path(out), overwrite)
    inputs: list[Path] = []
    load = model_loader(device, dtype, inputs)
    m = load(model)
    prompts = list(prompts or [])
    default_plan = plan_for(m, model, prompts or ["-"])
    if default_plan.levels is not None:
        raise InputError(f"{model} is a few-step (distilled) model; eval schedules searches multi-step schedules only.")
    trained = tuple(default_plan.pyramid.boundaries)
    boundary_pool = [] if boundary_radius is None else boundary_grid(trained, boundary_radius, boundary_points)
    if toy_prompts(prompts):
        metric, higher = "toybench_overall", True
    elif reference is not None:
        metric, higher = "latent_psnr", True
    else:
        raise InputError("eval schedules needs a metric: toy-world prompts (ToyBench, e.g. --suite toy-8) or "
                         "--reference TEACHER (latent PSNR against the teacher with coupled noise).")
    if budget_flops is not None:
        budget = parse_amount(budget_flops, "--budget-flops") / 1e12
        per_stage, unit = stage_forward_tflops(dict(m.components.transformer.config), default_plan.pyramid,
                                               default_plan.latent_shapes()[0], default_plan.max_sequence_length), "TFLOPs"
    else:
        rows = measure_latency(m.components.transformer, default_plan.latent_shapes(), default_plan.max_sequence_length,
                               repeats=3, warmup=1)
        budget, per_stage, unit = float(budget_seconds), [r["median_ms"] / 1000 for r in rows], "seconds"
    cost = per_stage_cost(per_stage, default_plan.guidance)
    refs: dict = {}

    def score(steps: tuple[int, ...], boundaries: tuple[float, ...], seed_list) -> list[float]:
        P, S = grid(prompts, list(seed_list))
        plan = plan_for(m, model, P, "-".join(map(str, steps)))
        if tuple(boundaries) != trained:              # PyramidConfig validates the moved set
            plan = dataclasses.replace(plan, pyramid=dataclasses.replace(plan.pyramid, boundaries=tuple(boundaries)))
        subject = sample_set(m, model, plan, P, S, None, "candidate", batch_size, False)
        ref = None
        if metric == "latent_psnr":
            key = tuple(seed_list)
            if key not in refs:
                rm = load(reference)
                refs[key] = sample_set(rm, reference, plan_for(rm, reference, P, None, plan.video), P, S, None,
                                       "reference", batch_size, False)
            ref = refs[key]
        records, _ = score_sets(subject, ref, toybench=metric == "toybench_overall")
        return [r["values"][metric] for r in records]

    search_seeds = list(range(seed, seed + seeds))
    confirm_seeds = list(range(seed + seeds, seed + 2 * seeds))
    baseline, pool = plan_pool(default_plan.pyramid.num_stages, default_plan.steps, cost, budget,
                               max_steps or max(default_plan.steps), max_candidates)
    with progress_bar("schedules", total=len(pool) + max(len(boundary_pool) - 1, 0) + 3, enabled=progress) as advance:
        report = search(default_plan.steps, cost, score, budget, baseline, pool, search_seeds, confirm_seeds, higher,
                        advance, trained, boundary_pool)
    report.update({"model": model, "metric": metric, "cost_unit": unit, "prompts": prompts,
                   "reference": reference,
                   "boundary_search": None if boundary_radius is None else {
                       "radius": boundary_radius, "points": boundary_points, "sets": len(boundary_pool),
                       "note": "the model was trained at its own boundaries only; a moved boundary asks its stages "
                               "for noise levels up to the radius outside their training (bounded extrapolation)"}})
    Console(soft_wrap=True).print(_schedules_table(report))
    console.print(report["summary"], markup=False)
    if out is not None:
        with artifact_dir(out, overwrite=overwrite) as tmp:
            write_json(tmp / "schedules.json", report)
            write_manifest(tmp, "eval-schedules", {"kind": "eval-schedules", **{k: report[k] for k in (
                "model", "metric", "budget", "cost_unit", "prompts", "reference", "search_seeds", "confirm_seeds",
                "boundary_search")}},
                inputs, {"best": report["best"], "best_boundaries": report["best_boundaries"],
                         "baseline": report["baseline"], "verdict": report["verdict"],
                         "boundary_verdict": report["boundary_verdict"]}, started)
    return report


def _schedules_table(report: dict):
    from rich.table import Table

    table = Table("schedule", f"cost ({report['cost_unit']})", f"{report['metric']} (search seeds)", "95% CI",
                  title=f"eval schedules: {report['model']}, budget {report['budget']:.4g} {report['cost_unit']}")
    own = report["baseline"]                            # the scaled default, at the model's boundaries
    for r in report["candidates"]:
        s = r["search"]
        mark = " (best)" if r["label"] == report["best_label"] else " (default, scaled)" if r["label"] == own else ""
        table.add_row(r["label"] + mark, f"{r['cost']:.4g}", f"{s['mean']:.4f}", f"[{s['low']:.4f}, {s['high']:.4f}]")
    return table
