"""The model card (``README.md`` of an export), rendered from the manifests: no hand editing.

Hub YAML front matter (``base_model``, ``library_name``, ``pipeline_tag``, ``tags``, the base's
licence where known), how to load it, what was done (each step of the lineage: recipe, steps, data),
the sampling defaults, the FLOPs of the default schedule against the 50-step baseline, and the
results of an eval artifact when one is given.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from pyrawan import __version__
from pyrawan.manifest import lineage, manifest_sha256, read_manifest
from pyrawan.models.pyramid_spec import PyramidSpec

# Licences of known base models (their model cards say so).
LICENCES = {"Wan-AI/": "apache-2.0"}
_HUB_ID = re.compile(r"^(hf://)?[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
COUNT_KEYS = ("videos", "items", "samples", "clips")


def _hub_id(base: str | None) -> str | None:
    """``owner/name`` when ``base`` names a Hub model (``hf://`` and ``@revision`` dropped), else None."""
    if not isinstance(base, str) or not _HUB_ID.match(base) or base.startswith(("./", "../", "runs/")):
        return None
    return base.removeprefix("hf://").split("@")[0]


def _steps(artifact: Path) -> list[dict[str, Any]]:
    """The lineage, oldest first: ``{"kind", "name", "recipe", "metrics"}`` per artifact that still reads."""
    rows = []
    for node in lineage(artifact):
        if node["status"] in ("missing", "data", "cycle", "repeated"):
            continue
        manifest = read_manifest(node["path"])
        recipe = (manifest.get("recipe") or {}).get("resolved") or {}
        rows.append({"kind": manifest.get("kind"), "name": Path(node["path"]).name, "recipe": recipe,
                     "metrics": manifest.get("metrics") or {}})
    return rows[::-1]


def base_model(steps: list[dict[str, Any]]) -> str | None:
    """The Hub id the oldest model step started from, when it was one."""
    for step in steps:
        found = _hub_id(step["recipe"].get("base"))
        if found:
            return found
    return None


def _what(step: dict[str, Any]) -> str:
    """One line of what a lineage step did."""
    r, m, kind = step["recipe"], step["metrics"], step["kind"]
    train, distill, pyramid = r.get("train") or {}, r.get("distill") or {}, r.get("pyramid") or {}
    lora = train.get("lora") or {}
    bits = []
    if kind == "convert":
        bits.append(f"from `{r.get('base')}`: {pyramid.get('stages')} stages, {pyramid.get('kind', 'resolution')}, "
                    f"resizer {pyramid.get('resizer')}, boundaries {m.get('boundaries', pyramid.get('boundaries'))}")
    elif kind in ("finetune", "distill"):
        if kind == "distill":
            bits.append(f"{distill.get('method')}-{distill.get('variant')} to {distill.get('schedule')}, teacher "
                        f"`{distill.get('teacher') or r.get('base')}` (guidance {distill.get('guidance')})")
        bits.append(f"from `{r.get('base')}`; {m.get('steps', m.get('iterations', train.get('steps')))} steps of batch "
                    f"{train.get('batch_size')} on {m.get('world_size', 1)} process(es)")
        bits.append(f"LoRA r={lora.get('rank')}, alpha={lora.get('alpha')}" if lora.get("enabled") else "full weights")
        data = r.get("data") or {}
        where = data.get("cache") or data.get("root")
        bits.append(f"data `{Path(str(where)).name}`" if where else "data: synthetic or recorded in the manifest")
    else:
        count = next((f"{m[k]} {k}" for k in COUNT_KEYS if isinstance(m.get(k), int)), None)
        if count:
            bits.append(count)
    return "; ".join(bits) or "-"


def _flops(config: dict, spec: PyramidSpec) -> list[str]:
    """The FLOPs section: per stage, and the default schedule against the 50-step full-resolution baseline."""
    from pyrawan.eval.flops import baseline_schedule, flops_report
    from pyrawan.pyramid.geometry import pixel_to_latent

    s = spec.sampling
    full = pixel_to_latent(spec.video.frames, spec.video.height, spec.video.width, tuple(spec.vae_factors))
    report = flops_report({k: v for k, v in config.items() if not k.startswith("_")}, full, spec.num_stages,
                          spec.keep_time, [s.schedule], guidance=s.guidance > 1, text_len=s.max_sequence_length,
                          ppf=spec.kind == "ppf")
    lines = [f"Analytic count (`pyrawan eval flops`) at {spec.video.frames}x{spec.video.height}x{spec.video.width}, "
             f"text length {s.max_sequence_length}. The baseline, {baseline_schedule(spec.num_stages)} at full "
             f"resolution with guidance (the 50-step model as it is run), costs {report['baseline_tflops']:.4g} "
             f"TFLOPs per video.", "",
             "| stage | latent | tokens | TFLOPs per forward |", "|---|---|---|---|"]
    lines += [f"| {st['stage']} | {'x'.join(map(str, st['latent']))} | {st['tokens']:,} | {st['tflops_per_forward']:.4g} |"
              for st in report["stages"]]
    lines += ["", "| schedule | forwards | TFLOPs per video | vs baseline |", "|---|---|---|---|"]
    for row in report["schedules"]:
        lines.append(f"| {row['schedule']} | {row['forwards']} | {row['total_tflops']:.4g} | "
                     f"{row['ratio_to_baseline']:.3f}x |")
    return lines


def _results(body: dict[str, Any]) -> list[str]:
    """The evaluation section of an eval artifact's ``metrics.json``."""
    lines = [f"`{body.get('kind')}` evaluation `{body.get('label')}` (schedule {body.get('schedule')}, "
             f"{len(body.get('videos') or [])} videos; 95 % bootstrap intervals over videos).", "",
             "| metric | mean | 95 % interval | n |", "|---|---|---|---|"]
    for name, v in (body.get("summary") or {}).items():
        if v.get("mean") is None:
            continue
        lines.append(f"| {name} | {v['mean']:.4g} | [{v['low']:.4g}, {v['high']:.4g}] | {v['n']} |")
    return lines


def _usage(fmt: str, files: list[str], lora_separate: bool) -> list[str]:
    if fmt == "single-file":
        name = next((f for f in files if f.endswith(".safetensors")), "MODEL.safetensors")
        return [f"`{name}` holds the transformer with the original Wan2.1 key names: put it in ComfyUI's "
                "`models/diffusion_models/` or load it with Wan's own code. Those tools sample it as a plain Wan2.1 "
                "model (one stage); the pyramidal sampler needs pyrawan (`pyrawan convert RECIPE "
                f"base={name}` rebuilds the model) or the diffusers export.", ""]
    lora = ["pipe.load_lora_weights(\".\")                                   # the adapters (kept separate)"] \
        if lora_separate else []
    return ["```python", "import torch", "from diffusers import DiffusionPipeline", "",
            "pipe = DiffusionPipeline.from_pretrained(\".\", trust_remote_code=True)  # this folder or its Hub id",
            *lora,
            "video = pipe(\"a red square moving right\", seed=0).frames[0]       # prompt i uses seed + i",
            "```", "",
            "The pipeline class is `pyramidal_wan.py` (torch, numpy and diffusers only); arguments left out take the "
            "model's defaults below. `pyrawan sample --model` on the source model with the same seed gives the "
            "same latents (`output_type=\"latent\"`).", ""]


def render_card(artifact: Path, spec: PyramidSpec, config: dict, fmt: str, files: list[str],
                lora_separate: bool = False, eval_body: dict[str, Any] | None = None) -> str:
    """The ``README.md`` text of an export of ``artifact``."""
    steps = _steps(artifact)
    base = base_model(steps)
    tags = ["pyrawan", "wan2.1", "text-to-video", "ppf" if spec.kind == "ppf" else "pyramidal"]
    tags += ["distilled", "few-step"] if spec.distilled else []
    tags += ["lora"] if lora_separate else []
    tags += ["single-file", "comfyui"] if fmt == "single-file" else []
    front: dict[str, Any] = {}
    if base:
        front["base_model"] = base
    if fmt == "diffusers":
        front["library_name"] = "diffusers"
    front["pipeline_tag"] = "text-to-video"
    front["tags"] = tags
    licence = next((lic for prefix, lic in LICENCES.items() if base and base.startswith(prefix)), None)
    if licence:
        front["license"] = licence
    s, v = spec.sampling, spec.video
    kind = "Pyramidal Patchification (PPF)" if spec.kind == "ppf" else f"{spec.num_stages}-stage pyramidal"
    title = Path(str(artifact)).name
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {title}", "",
             f"A {kind} Wan2.1 text-to-video model{' distilled to ' + spec.distilled.schedule + ' steps' if spec.distilled else ''}"
             f"{' from `' + base + '`' if base else ''}, made with pyrawan {__version__} and exported as "
             f"{'a diffusers pipeline folder' if fmt == 'diffusers' else 'one original-layout safetensors file'}.", "",
             "## Use", "", *_usage(fmt, files, lora_separate),
             "## How it was made", "", "| step | artifact | what |", "|---|---|---|"]
    lines += [f"| {st['kind']} | {st['name']} | {_what(st)} |" for st in steps]
    lines += ["", "## Sampling defaults", "",
              f"- video: {v.frames} frames, {v.height}x{v.width}, {v.fps} fps",
              f"- schedule: {s.schedule} (steps per stage, coarsest first; {spec.num_stages} stages, boundaries "
              f"{spec.boundaries} in global sigma, resizer {spec.resizer if spec.kind != 'ppf' else 'none (PPF)'})",
              f"- sampler: {'few-step, levels ' + str([list(r) for r in s.fewstep_levels]) if s.fewstep_levels else 'multi-step Euler with a jump between stages'}",
              f"- guidance: {s.guidance} ({'off' if s.guidance <= 1 else 'classifier-free, uncond + w (cond - uncond)'}); "
              f"shift {s.shift}; text length {s.max_sequence_length}", "",
              "## Cost", "", *_flops(config, spec), ""]
    if eval_body is not None:
        lines += ["## Evaluation", "", *_results(eval_body), ""]
    lines += ["## Provenance", "",
              f"Exported from a `{read_manifest(artifact).get('kind')}` artifact whose manifest has sha256 "
              f"`{manifest_sha256(artifact)}`; `manifest.json` here lists every file with its sha256 "
              "(`pyrawan verify` rechecks them).", ""]
    return "\n".join(lines)
