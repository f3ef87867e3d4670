"""A pyrawan model as a diffusers pipeline folder that plain diffusers samples as the pyramid.

Layout (``WanPipeline.save_pretrained``'s, plus the pipeline class)::

    model_index.json          _class_name ["pyramidal_wan", "PyramidalWanPipeline"], the components, and
                              ``pyramid`` (the model's pyramid.json: stages, boundaries, sampling defaults)
    pyramidal_wan.py          the pipeline class (standalone_pipeline.py, verbatim)
    tokenizer/ text_encoder/ vae/ scheduler/ transformer/
    transformer/ppf_wan_transformer.py        PPF models: the transformer class (standalone_ppf.py)
    pytorch_lora_weights.safetensors          ``lora="separate"``: the adapters; transformer/ holds the base

Load with ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pyrawan.errors import InputError
from pyrawan.fsutil import atomic_write_text
from pyrawan.models.artifact import LoadedModel
from pyrawan.models.ppf import is_ppf

PIPELINE_MODULE = "pyramidal_wan"
PIPELINE_CLASS = "PyramidalWanPipeline"
PPF_MODULE = "ppf_wan_transformer"
LORA_FILE = "pytorch_lora_weights.safetensors"
SOURCES = Path(__file__).resolve().parent
LORA_MODES = ("merge", "separate")


def pipeline_source() -> str:
    """The text of the pipeline class file copied into every export."""
    return (SOURCES / "standalone_pipeline.py").read_text(encoding="utf-8")


def ppf_source() -> str:
    """The text of the PPF transformer class file copied into PPF exports."""
    return (SOURCES / "standalone_ppf.py").read_text(encoding="utf-8")


def public_pyramid(pyramid: dict[str, Any]) -> dict[str, Any]:
    """``pyramid.json`` as the export records it: the calibration by folder name only (no machine path)."""
    out = dict(pyramid)
    if out.get("calibration"):
        out["calibration"] = Path(str(out["calibration"])).name
    return out


def lora_delta(lora_state: dict[str, torch.Tensor], rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """``{weight name: scale * B @ A}`` for every adapted linear layer of a ``transformer.``-keyed LoRA file."""
    scale = float(alpha) / int(rank)
    deltas = {}
    for key, a in lora_state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
        b = lora_state.get(key.replace(".lora_A.", ".lora_B."))
        if b is None:
            raise InputError(f"the LoRA file has {key} but no matching lora_B weight; the artifact is damaged, "
                             f"re-create it.")
        deltas[f"{module}.weight"] = (b.float() @ a.float()) * scale
    return deltas


def unmerge(transformer: torch.nn.Module, deltas: dict[str, torch.Tensor]) -> None:
    """Subtract the fused adapters from ``transformer`` in place (its weights hold base + adapters)."""
    params = dict(transformer.named_parameters())
    missing = sorted(set(deltas) - set(params))
    if missing:
        raise InputError(f"the LoRA file adapts {missing[0]}, which the transformer does not have; the artifact's "
                         f"lora/ and transformer/ do not belong together. Re-create the artifact.")
    with torch.no_grad():
        for name, delta in deltas.items():
            weight = params[name]
            weight.copy_((weight.float() - delta.to(weight.device)).to(weight.dtype))


def write_lora(out: Path, lora_state: dict[str, torch.Tensor], rank: int, alpha: float, targets: list[str]) -> Path:
    """The adapters as ``pytorch_lora_weights.safetensors`` in ``out``, with their rank and alpha recorded."""
    from diffusers import WanPipeline

    layers = {k.removeprefix("transformer."): v.contiguous() for k, v in lora_state.items()}
    WanPipeline.save_lora_weights(out, transformer_lora_layers=layers, safe_serialization=True,
                                  transformer_lora_adapter_metadata={"r": int(rank), "lora_alpha": float(alpha),
                                                                     "target_modules": list(targets)})
    return out / LORA_FILE


def _save(obj: Any, folder: Path) -> None:
    if hasattr(obj, "get_vocab"):
        obj.save_pretrained(folder)
    else:
        obj.save_pretrained(folder, safe_serialization=True)


def model_index(model: LoadedModel, ppf: bool) -> dict[str, Any]:
    """The ``model_index.json`` body: the custom pipeline class, each component's library and class, the pyramid."""
    import diffusers

    comps = model.components
    return {
        "_class_name": [PIPELINE_MODULE, PIPELINE_CLASS],
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", type(comps.text_encoder).__name__],
        "tokenizer": ["transformers", type(comps.tokenizer).__name__],
        "transformer": [PPF_MODULE, "PPFWanTransformer"] if ppf else ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
        "pyramid": public_pyramid(model.pyramid),
    }


def write_diffusers_folder(out: Path, model: LoadedModel, lora: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the pipeline folder of ``model`` into ``out``; returns what the card and manifest report.

    ``lora``: ``{"state", "rank", "alpha", "targets"}`` to keep the adapters separate (the transformer is
    written without them and ``pytorch_lora_weights.safetensors`` beside it); None writes the weights as
    the artifact holds them (adapters merged).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    comps = model.components
    ppf = is_ppf(comps.transformer)
    if lora is not None:
        unmerge(comps.transformer, lora_delta(lora["state"], lora["rank"], lora["alpha"]))
        write_lora(out, lora["state"], lora["rank"], lora["alpha"], lora["targets"])
    for name in ("tokenizer", "text_encoder", "vae", "transformer"):
        _save(getattr(comps, name), out / name)
    shift = model.spec.sampling.shift
    FlowMatchEulerDiscreteScheduler(shift=shift if isinstance(shift, (int, float)) else 1.0).save_pretrained(
        out / "scheduler")
    atomic_write_text(out / f"{PIPELINE_MODULE}.py", pipeline_source())
    if ppf:
        atomic_write_text(out / "transformer" / f"{PPF_MODULE}.py", ppf_source())
    atomic_write_text(out / "model_index.json", json.dumps(model_index(model, ppf), indent=2, sort_keys=True) + "\n")
    return {"ppf": ppf, "lora": "separate" if lora is not None else None}
