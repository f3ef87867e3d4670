"""The models of a finetune run: the base (loaded once, on rank 0), the student, the frozen teacher, the export.

Only rank 0 reads the base: it loads the full stack (the text encoder once, for the empty-prompt
embedding and caching on the fly), then sends the transformer config, its weights, the pyramid and
the empty-prompt embedding to the other ranks, which build the transformer on the meta device.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from pyrawan import dist
from pyrawan.errors import InputError
from pyrawan.manifest import verify_if_artifact
from pyrawan.models.ppf import from_base, is_ppf, stage_factors, transformer_from_config
from pyrawan.models.presets import WanComponents, cast_keep_fp32, seeded
from pyrawan.models.pyramid_spec import PyramidSpec, recipe_pyramid
from pyrawan.recipe import FinetuneRecipe
from pyrawan.train.config import Lora, Train


@dataclass
class Base:
    """What every rank knows about the base model (``components`` only on rank 0)."""

    components: WanComponents | None
    pyramid: PyramidSpec
    config: dict
    transformer: torch.nn.Module
    teacher: torch.nn.Module | None
    empty_text: torch.Tensor          # [L, D] embedding of the empty prompt
    inputs: list[Path]


def output_pyramid(recipe, loaded: PyramidSpec | None) -> PyramidSpec:
    """The ``pyramid.json`` of the result: the base artifact's (checked against the recipe) or the recipe's."""
    p = recipe.pyramid
    if loaded is None:
        return recipe_pyramid(recipe)
    wanted = {"num_stages": p.stages, "kind": p.kind, "keep_time": p.keep_time}
    if p.kind != "ppf":
        wanted["resizer"] = p.resizer
    if p.boundaries is not None:
        wanted["boundaries"] = [float(b) for b in p.boundaries]
    differ = {k: (getattr(loaded, k), v) for k, v in wanted.items() if getattr(loaded, k) != v}
    if differ:
        shown = ", ".join(f"{k}: base {a!r} vs recipe {b!r}" for k, (a, b) in differ.items())
        raise InputError(f"base = '{recipe.base}' is a pyramidal model whose pyramid.json disagrees with the recipe "
                         f"({shown}); set the recipe's pyramid section to the base's values (see its pyramid.json) "
                         "or finetune from the plain model.")
    return loaded


def lora_config(lora: Lora):
    """The peft ``LoraConfig`` of ``train.lora``."""
    from peft import LoraConfig

    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, init_lora_weights=True,
                      target_modules=list(lora.target_modules))


def _load_on_rank0(recipe: FinetuneRecipe) -> tuple[WanComponents, PyramidSpec, list[Path]]:
    """Rank 0: the verified base stack in fp32 on the CPU, the output pyramid and the parent artifacts."""
    from pyrawan.models.artifact import load_model

    inputs = []
    base = Path(recipe.base)
    if verify_if_artifact(base, "base model"):
        inputs.append(base)
    if recipe.calibration is not None:
        inputs.append(Path(recipe.calibration))
    loaded = load_model(recipe.base, device="cpu", dtype=torch.float32)
    pyramid = output_pyramid(recipe, loaded.spec)
    match_kind(loaded.components, pyramid, recipe.base)
    return loaded.components, pyramid, inputs


def match_kind(components: WanComponents, pyramid: PyramidSpec, ref: str) -> None:
    """A PPF pyramid needs a PPF transformer: a plain base is converted (as ``pyrawan convert --ppf``)."""
    transformer = components.transformer
    if pyramid.kind == "ppf" and not is_ppf(transformer):
        components.transformer = from_base(transformer, stage_factors(pyramid.num_stages, pyramid.keep_time),
                                           pyramid.boundaries)
    elif pyramid.kind != "ppf" and is_ppf(transformer):
        raise InputError(f"base = '{ref}' is a PPF model but the recipe's pyramid.kind is '{pyramid.kind}'; set "
                         "pyramid.kind: ppf (a PPF model runs every stage at full resolution).")


def share_transformer(transformer: torch.nn.Module | None, config: dict, device: torch.device) -> torch.nn.Module:
    """Collective: rank 0's transformer on every rank (others build it on the meta device, then receive weights)."""
    if transformer is None:
        with torch.device("meta"):
            transformer = transformer_from_config(config)
        transformer = transformer.to_empty(device=device)
    transformer = transformer.to(device)
    dist.broadcast_tensors([*transformer.parameters(), *transformer.buffers()])
    return transformer


def config_of(transformer: torch.nn.Module) -> dict:
    return {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}


def load_base(recipe: FinetuneRecipe, device: torch.device) -> Base:
    """Every rank: the base transformer on ``device`` (fp32), identical weights; rank 0 also its components."""
    from pyrawan.models.denoiser import encode_prompts

    components = pyramid = inputs = empty = config = None
    transformer = None
    if dist.world()[0] == 0:
        components, pyramid, inputs = _load_on_rank0(recipe)
        empty = encode_prompts(components, [""], None, recipe.text.max_sequence_length)[0][0].float().cpu()
        transformer = components.transformer
        config = config_of(transformer)
    config, pyramid, empty, inputs = dist.broadcast((config, pyramid, empty, inputs))
    transformer = share_transformer(transformer, config, device)
    return Base(components, pyramid, config, transformer, None, empty, [Path(p) for p in inputs])


@dataclass
class Frozen:
    """A frozen model every rank holds: its transformer (eval, no gradients), pyramid and artifact folder."""

    transformer: torch.nn.Module
    spec: PyramidSpec | None
    inputs: list[Path]


def load_frozen(ref: str, device: torch.device, dtype: torch.dtype) -> Frozen:
    """Every rank: the transformer of ``ref`` (verified when it is an artifact), frozen, in ``dtype``."""
    from pyrawan.models.artifact import load_model

    transformer = config = spec = None
    inputs: list[Path] = []
    if dist.world()[0] == 0:
        if verify_if_artifact(Path(ref), "teacher"):
            inputs.append(Path(ref))
        loaded = load_model(ref, device="cpu", dtype=torch.float32)
        transformer, spec = loaded.components.transformer, loaded.spec
        config = config_of(transformer)
    config, spec, inputs = dist.broadcast((config, spec, inputs))
    transformer = cast_keep_fp32(share_transformer(transformer, config, device), dtype)
    return Frozen(transformer.requires_grad_(False).eval(), spec, inputs)


def frozen_copy(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A frozen copy of a transformer in the run's compute ``dtype`` (a teacher or discriminator backbone)."""
    return cast_keep_fp32(copy.deepcopy(module), dtype).requires_grad_(False).eval()


def trainable_copy(module: torch.nn.Module, gradient_checkpointing: bool) -> torch.nn.Module:
    """An fp32 trainable copy of a (frozen) transformer: the fake score, initialised from the teacher."""
    copy_ = copy.deepcopy(module).float().requires_grad_(True).train()
    if gradient_checkpointing:
        copy_.enable_gradient_checkpointing()
    return copy_


def build_student(base: Base, train: Train, seed: int, bf16: bool) -> torch.nn.Module:
    """The module to train; keeps a frozen teacher copy in ``base.teacher`` when the alignment loss is on.

    ``from_scratch`` re-initialises the weights from ``seed``; LoRA freezes the base and adds adapters
    (the teacher then is the same module with its adapters disabled, so no copy is kept).
    """
    student = base.transformer
    if train.align_weight > 0 and not train.lora.enabled:
        base.teacher = cast_keep_fp32(copy.deepcopy(student), torch.bfloat16 if bf16 else torch.float32)
        base.teacher.requires_grad_(False).eval()
    if train.from_scratch:
        device = next(student.parameters()).device
        with seeded(seed), torch.device(device):
            student = transformer_from_config(base.config)
    if train.lora.enabled:
        student.requires_grad_(False)
        with seeded(seed):
            student.add_adapter(lora_config(train.lora))
        for name, p in student.named_parameters():
            p.requires_grad_("lora_" in name)
    if train.gradient_checkpointing:
        student.enable_gradient_checkpointing()
    base.transformer = student
    return student.train()


def export_model(folder: Path, base: Base, state: dict[str, torch.Tensor], train: Train,
                 dtype: torch.dtype) -> list[Path]:
    """Rank 0: write the finetuned model artifact (and the LoRA weights) into ``folder``.

    ``state`` is the trained module's full state dict (EMA already applied). LoRA runs also write
    ``lora/pytorch_lora_weights.safetensors`` (diffusers' ``WanPipeline.load_lora_weights`` format)
    and store the transformer with the adapters fused in.
    """
    from diffusers import WanPipeline
    from peft.utils import get_peft_model_state_dict

    from pyrawan.models.artifact import save_model

    module = transformer_from_config(base.config)
    written = []
    if train.lora.enabled:
        module.add_adapter(lora_config(train.lora))
    module.load_state_dict(state, strict=True)
    if train.lora.enabled:
        WanPipeline.save_lora_weights(folder / "lora", transformer_lora_layers=get_peft_model_state_dict(module),
                                      safe_serialization=True)
        written.append(folder / "lora" / "pytorch_lora_weights.safetensors")
        module.fuse_lora(lora_scale=1.0)
        module.unload_lora()
    base.components.transformer = cast_keep_fp32(module, dtype).eval()
    return written + save_model(folder, base.components, base.pyramid, changed=("transformer",))
