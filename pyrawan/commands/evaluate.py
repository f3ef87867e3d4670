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

from pyrawan.commands.common import console, progress_bar, resolve_device, resolve_dtype
from pyrawan.errors import InputError
from pyrawan.eval.flops import flops_report
from pyrawan.eval.latency import environment_info, latency_report, measure_latency, measure_parts
from pyrawan.eval.report import render_table, write_json
from pyrawan.manifest import artifact_dir, write_manifest
from pyrawan.models.arch import HUB_ARCHS, arch_of  # noqa: F401  (HUB_ARCHS re-exported)
from pyrawan.models.presets import build_transformer
from pyrawan.pyramid.geometry import check_sizes, pixel_to_latent, stage_shapes

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
        components = load_model(model, device=dev, dtype=dt).components
        transformer = components.transformer
    target = _apply_sizes(target, frames, height, width, guidance)
    console.print(f"eval latency: {target.source} on {dev} in {str(dt).removeprefix('torch.')}, "
                  f"{warmup} warm-up + {repeats} timed forwards per stage")
    rows = measure_latency(transformer, target.latent_shapes(), target.text_len, repeats=repeats, warmup=warmup,
                           device=dev, dtype=dt)
    parts = None if model.endswith("-random") else measure_parts(components, target.latent_shapes()[0],
                                                                  target.text_len, repeats=min(repeats, 3))
    report = latency_report(rows, schedules, target.guidance, environment_info(dev, dt), parts=parts)
    report["target"] = target.source
    return _finish(report, out, "latency", target, started, overwrite)


# ---- eval quality / vbench / compare / report / schedules -----------------------------------------

def model_loader(device: str | None, dtype: str | None, inputs: list[Path]):
    """``load(spec)``: a cached model loader that verifies artifacts and records them as inputs."""
    from pyrawan.manifest import verify_if_artifact
    from pyrawan.models.artifact import load_model

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    cache: dict = {}

    def load(spec: str):
        if spec not in cache:
            if verify_if_artifact(Path(spec), "model"):
                inputs.append(Path(spec))
            cache[spec] = load_model(spec, device=dev, dtype=dt)
        return cache[spec]
    return load


def _decoded(load, sample_set, model: str | None, batch_size: int, progress: bool = True):
    """Decode a sample set read from an artifact with its model's VAE (``model`` overrides)."""
    from pyrawan.eval.quality import decode_in_batches
    from pyrawan.models.vae import decode_latents

    spec = model or sample_set.model
    try:
        m = load(spec)
    except InputError as err:
        raise InputError(f"the samples {sample_set.source} were made with model {spec!r}, which cannot be loaded "
                         f"here ({err}); pass --model with that model so its VAE can decode the latents.") from None
    with progress_bar(f"decode {sample_set.label}", total=len(sample_set), enabled=progress) as advance:
        sample_set.frames = decode_in_batches(lambda z: decode_latents(m.components, z), sample_set.latents,
                                              batch_size, advance)
    return m


def _set_from_artifact(load, folder: Path, model: str | None, batch_size: int, label: str | None, inputs: list[Path],
                       progress: bool = True, pair_with=None):
    """A sample artifact as a decoded SampleSet (``pair_with``: refuse a mismatch before decoding)."""
    from pyrawan.eval.quality import check_pairing, read_sample_set
    from pyrawan.eval.sampling import plan_for, plan_tflops
    from pyrawan.manifest import read_manifest, require_verified

    require_verified(folder, "--samples")
    inputs.append(folder)
    s = read_sample_set(folder, label)
    if pair_with is not None:
        check_pairing(pair_with, s)
    m = _decoded(load, s, model, batch_size, progress)
    resolved = read_manifest(folder)["recipe"]["resolved"]
    s.tflops_per_video = plan_tflops(m, plan_for(m, model or s.model, s.prompts, s.schedule, s.video)) \
        if resolved.get("fewstep_levels") is None else None
    return s


def _print_summary(body: dict) -> None:
    from rich.table import Table

    table = Table("metric", "mean", "95% CI", "n", title=f"eval {body['kind']}: {body['label']}")
    for name, s in body["summary"].items():
        ci = "–" if s["mean"] is None else f"[{s['low']:.4g}, {s['high']:.4g}]"
        table.add_row(name, "–" if s["mean"] is None else f"{s['mean']:.4g}", ci, str(s["n"]))
    Console(soft_wrap=True).print(table)
    for note in body["notes"]:
        console.print(f"note: {note}", markup=False)


def run_quality(out: Path, model: str | None = None, reference: str | None = None, prompts: list[str] | None = None,
                seeds: list[int] = (0,), samples: Path | None = None, schedule: str | None = None,
                reference_schedule: str | None = None, batch_size: int = 8, validation_cache: Path | None = None,
                label: str | None = None, device: str | None = None, dtype: str | None = None, progress: bool = True,
                overwrite: bool = False) -> dict:
    """``pyrawan eval quality``: sample (or read) a set, score it, pair it with a reference; write the artifact."""
    from pyrawan.eval.artifact import build_eval, manifest_metrics, write_eval
    from pyrawan.eval.quality import relative_videos, score_sets
    from pyrawan.eval.sampling import grid, plan_for, sample_set
    from pyrawan.manifest import check_output, read_manifest

    started = time.time()
    check_output(Path(out), overwrite)
    if samples is None and model is None:
        raise InputError("eval quality needs --model M (sample it here) or --samples S (a `pyrawan sample` artifact).")
    inputs: list[Path] = []
    load = model_loader(device, dtype, inputs)
    with artifact_dir(out, overwrite=overwrite) as tmp:
        if samples is not None:
            subject = _set_from_artifact(load, Path(samples), model, batch_size, label, inputs, progress)
        else:
            P, S = grid(prompts or [], seeds)
            m = load(model)
            plan = plan_for(m, model, P, schedule)
            name = label or f"{Path(model).name} {'-'.join(map(str, plan.steps))}"
            subject = sample_set(m, model, plan, P, S, tmp / "samples", name, batch_size, progress)
        ref = None
        if reference is not None:
            if (Path(reference) / "manifest.json").is_file() and read_manifest(reference).get("kind") == "sample":
                ref = _set_from_artifact(load, Path(reference), None, batch_size, None, inputs, progress, subject)
            else:
                rm = load(reference)
                rplan = plan_for(rm, reference, subject.prompts, reference_schedule, subject.video)
                ref = sample_set(rm, reference, rplan, subject.prompts, subject.seeds, tmp / "reference",
                                 f"reference {Path(reference).name}", batch_size, progress)
        with progress_bar("score", total=len(subject), enabled=progress) as advance:
            records, notes = score_sets(subject, ref, advance=advance)
        body = build_eval("quality", label or subject.label, relative_videos(records, tmp), model=subject.model,
                          schedule=subject.schedule, tflops_per_video=subject.tflops_per_video,
                          seconds_per_video=subject.seconds_per_video, notes=notes,
                          extra={"reference": None if ref is None else {"label": ref.label, "model": ref.model,
                                                                        "schedule": ref.schedule},
                                 "video_size": subject.video, "coupled_noise": subject.coupled})
        if validation_cache is not None:
            body["summary"].update(_validation(load(model or subject.model), model or subject.model,
                                               Path(validation_cache), batch_size))
            inputs.append(Path(validation_cache))
        write_eval(tmp, body)
        resolved = {"kind": "eval-quality", "model": subject.model, "samples": None if samples is None else str(samples),
                    "reference": reference, "prompts": subject.prompts, "seeds": subject.seeds,
                    "schedule": subject.schedule, "video": subject.video, "coupled_noise": subject.coupled}
        write_manifest(tmp, "eval-quality", resolved, inputs, manifest_metrics(body), started)
    _print_summary(body)
    console.print(f"eval quality: wrote [bold]{out}[/]")
    return body


def _validation(m, spec: str, cache: Path, batch_size: int) -> dict:
    """``{"fm_val_loss_stage<k>": summary}`` over the items of a latent cache (n = items, not videos)."""
    from pyrawan.data.cache import LatentCache
    from pyrawan.eval.artifact import summarise
    from pyrawan.eval.sampling import plan_for
    from pyrawan.eval.validation import validation_loss

    pyramid = plan_for(m, spec, ["-"]).pyramid
    losses = validation_loss(m.components.transformer, LatentCache(cache), pyramid, batch_size=batch_size)
    info = {f"fm_val_loss_stage{k}": (False, "", f"flow-matching validation loss, stage {k}, over cache items")
            for k in losses}
    return {f"fm_val_loss_stage{k}": summarise(v, f"fm_val_loss_stage{k}", info) for k, v in losses.items()}


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
                  overwrite: bool = False) -> dict:
    """``pyrawan eval schedules``: the best steps per stage under a FLOPs or time budget (see eval/schedules.py)."""
    from pyrawan.eval.quality import score_sets, toy_prompts
    from pyrawan.eval.sampling import grid, plan_for, sample_set
    from pyrawan.eval.schedules import per_stage_cost, plan_pool, search
    from pyrawan.eval.cost import stage_forward_tflops
    from pyrawan.manifest import check_output

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
                                               default_plan.video, default_plan.max_sequence_length), "TFLOPs"
    else:
        rows = measure_latency(m.components.transformer, default_plan.latent_shapes(), default_plan.max_sequence_length,
                               repeats=3, warmup=1)
        budget, per_stage, unit = float(budget_seconds), [r["median_ms"] / 1000 for r in rows], "seconds"
    cost = per_stage_cost(per_stage, default_plan.guidance)
    refs: dict = {}

    def score(steps: tuple[int, ...], seed_list) -> list[float]:
        P, S = grid(prompts, list(seed_list))
        plan = plan_for(m, model, P, "-".join(map(str, steps)))
        subject = sample_set(m, model, plan, P, S, None, "candidate", batch_size, False, write_files=False)
        ref = None
        if metric == "latent_psnr":
            key = tuple(seed_list)
            if key not in refs:
                rm = load(reference)
                refs[key] = sample_set(rm, reference, plan_for(rm, reference, P, None, plan.video), P, S, None,
                                       "reference", batch_size, False, write_files=False)
            ref = refs[key]
        records, _ = score_sets(subject, ref, toybench=metric == "toybench_overall")
        return [r["values"][metric] for r in records]

    search_seeds = list(range(seed, seed + seeds))
    confirm_seeds = list(range(seed + seeds, seed + 2 * seeds))
    baseline, pool = plan_pool(default_plan.pyramid.num_stages, default_plan.steps, cost, budget,
                               max_steps or max(default_plan.steps), max_candidates)
    with progress_bar("schedules", total=len(pool) + 2, enabled=progress) as advance:
        report = search(default_plan.steps, cost, score, budget, baseline, pool, search_seeds, confirm_seeds, higher,
                        advance)
    report.update({"model": model, "metric": metric, "cost_unit": unit, "prompts": prompts,
                   "reference": reference})
    Console(soft_wrap=True).print(_schedules_table(report))
    console.print(report["summary"], markup=False)
    if out is not None:
        with artifact_dir(out, overwrite=overwrite) as tmp:
            write_json(tmp / "schedules.json", report)
            write_manifest(tmp, "eval-schedules", {"kind": "eval-schedules", **{k: report[k] for k in (
                "model", "metric", "budget", "cost_unit", "prompts", "reference", "search_seeds", "confirm_seeds")}},
                inputs, {"best": report["best"], "baseline": report["baseline"], "verdict": report["verdict"]}, started)
    return report


def _schedules_table(report: dict):
    from rich.table import Table

    table = Table("schedule", f"cost ({report['cost_unit']})", f"{report['metric']} (search seeds)", "95% CI",
                  title=f"eval schedules: {report['model']}, budget {report['budget']:.4g} {report['cost_unit']}")
    for r in report["candidates"]:
        s = r["search"]
        mark = " (best)" if r["schedule"] == report["best"] else " (default, scaled)" if r["schedule"] == report["baseline"] else ""
        table.add_row(r["schedule"] + mark, f"{r['cost']:.4g}", f"{s['mean']:.4f}", f"[{s['low']:.4f}, {s['high']:.4f}]")
    return table
