"""``--dry-run``: the resolved training plan and the memory it needs per GPU, without loading weights.

Parameters are counted on the meta device. Memory per GPU (bytes; P parameters, T trainable, W GPUs):

====================  ==============================  ===========================================
part                  single / DDP (fp32 + autocast)  DeepSpeed ZeRO-z (bf16 weights, fp32 master)
====================  ==============================  ===========================================
weights               4P (+2P bf16 autocast copies)   2P, /W at z=3
gradients             4T                              2T, /W at z>=2
optimizer states      8T (Adam m, v)                  12T/W (fp32 master, m, v)
communication         -                               reduce+allgather buckets (z1/2), live params (z3)
EMA / frozen base     4T / 2P or 4P                   4T / 2P or 4P
activations           see ``activation_elements``     same
====================  ==============================  ===========================================

fp32 DeepSpeed runs use 4 bytes for weights and gradients and 8T/W for the optimizer.
"""
from __future__ import annotations

from typing import Any

import torch

from pyrawan.pyramid.config import PyramidConfig
from pyrawan.train.config import Train

DS_BUCKET = 5e8          # DeepSpeed's default reduce_bucket_size / allgather_bucket_size (elements)
DS_LIVE_PARAMS = 1e9     # DeepSpeed's default stage3_max_live_parameters (elements)


def meta_transformer(arch: str | dict) -> torch.nn.Module:
    """A transformer on the meta device from an architecture name or a config dict."""
    from pyrawan.models.ppf import transformer_class
    from pyrawan.models.presets import build_transformer

    if isinstance(arch, str):
        return build_transformer(arch, empty=True)
    with torch.device("meta"):
        return transformer_class(arch).from_config(arch)


def lora_parameters(module: torch.nn.Module, rank: int, targets: tuple[str, ...]) -> int:
    """Parameters LoRA adds: ``r (in + out)`` per targeted ``nn.Linear`` (peft's suffix match)."""
    total = 0
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            total += rank * (sub.in_features + sub.out_features)
    return total


def activation_elements(cfg: Any, thw: tuple[int, int, int], text_len: int, per_token: bool,
                        checkpointing: bool) -> tuple[float, float]:
    """``(stored, transient)`` activation elements of one training sample of latent size ``thw``.

    Fitted to the tensors autograd saves for a diffusers Wan forward on the CPU (SDPA saves no
    N x N matrix, like flash attention), measured per layer and per token: ``22 d + 2 f`` elements,
    ``+8 d`` with per-token timesteps (stages whose frames have different levels), ``4 L d`` for the
    cross-attention over L text tokens; a fixed ``4 d`` per token (``10 d`` with per-token timesteps,
    ``15 d`` when checkpointing keeps the per-token modulation). With gradient checkpointing only each
    block's input ``d`` per token is stored, and one block is recomputed at a time (the transient part).
    """
    heads, head_dim, f = cfg["num_attention_heads"], cfg["attention_head_dim"], cfg["ffn_dim"]
    d, layers = heads * head_dim, cfg["num_layers"]
    pt, ph, pw = cfg["patch_size"]
    n = (thw[0] // pt) * (thw[1] // ph) * (thw[2] // pw)
    layer = n * (22 * d + 2 * f + (8 * d if per_token else 0)) + 4 * text_len * d
    fixed = n * d * ((15 if checkpointing else 10) if per_token else 4) + text_len * (cfg["text_dim"] + 3 * d)
    if checkpointing:
        return fixed + layers * n * d, layer
    return fixed + layers * layer, 0.0


def _per_token(pyramid: PyramidConfig, stage: int, frames: int) -> bool:
    """True when the frames of ``stage`` have different natural levels (per-token timesteps)."""
    sigma_c, sigma_n = pyramid.levels(stage, frames)
    return bool((sigma_n != sigma_n[0]).any() or (sigma_c != sigma_c[0]).any())


def memory_per_gpu(params: int, trainable: int, act_bytes: float, train: Train, kind: str, bf16: bool,
                   world: int) -> dict[str, float]:
    """Bytes per GPU by part (see the module docstring for the formulas)."""
    z = train.zero_stage if kind == "deepspeed" else 0
    lora = train.lora.enabled
    if z == 0:
        weights = 4 * params + (2 * params if bf16 else 0)
        grads, optim, comm = 4 * trainable, 8 * trainable, 0.0
    else:
        b = 2 if bf16 else 4
        weights = b * params / (world if z == 3 else 1)
        grads = b * trainable / (world if z >= 2 else 1)
        optim = (12 if bf16 else 8) * trainable / world
        comm = b * (min(params, DS_LIVE_PARAMS) if z == 3 else 2 * min(trainable, DS_BUCKET))
    extra = (4 * trainable if train.ema.enabled else 0)
    extra += ((2 if bf16 else 4) * params if train.align_weight > 0 and not lora else 0)
    parts = {"weights": weights, "gradients": grads, "optimizer states": optim, "communication buffers": comm,
             "EMA + frozen base": extra, "activations (peak)": act_bytes}
    parts["total"] = sum(parts.values())
    return parts


def make_plan(arch: str | dict, pyramid: PyramidConfig, full_thw: tuple[int, int, int], text_len: int,
              train: Train, kind: str, bf16: bool, worlds: list[int]) -> dict:
    """Everything ``--dry-run`` prints, as a JSON-able dict."""
    module = meta_transformer(arch)
    cfg = dict(module.config)
    params = sum(p.numel() for p in module.parameters())
    trainable = lora_parameters(module, train.lora.rank, train.lora.target_modules) if train.lora.enabled else params
    shapes = pyramid.token_shapes(full_thw)      # what each stage's tokens cover (PPF: same counts)
    split = train.split(pyramid.num_stages)
    stages, peak = [], 0.0
    for stage in reversed(range(pyramid.num_stages)):
        n = split[pyramid.num_stages - 1 - stage]
        per_token = _per_token(pyramid, stage, shapes[stage][0])
        stored, transient = activation_elements(cfg, shapes[stage], text_len, per_token, train.gradient_checkpointing)
        group = n * (stored + transient) * (2 if bf16 else 4)
        peak = max(peak, group)
        stages.append({"stage": stage, "samples": n, "latent": list(shapes[stage]), "per_token_timesteps": per_token,
                       "activation_bytes": group})
    return {
        "parameters": params, "trainable": trainable, "stages": stages, "engine": kind,
        "zero_stage": train.zero_stage if kind == "deepspeed" else None, "bf16": bf16,
        "memory": {w: memory_per_gpu(params, trainable, peak, train, kind, bf16, w) for w in worlds},
    }


def plan_recipe(recipe, world: int = 1) -> tuple[dict, list[str]]:
    """The plan of a finetune recipe for ``world`` processes, and the lines that summarise it."""
    from pyrawan.models.arch import arch_of

    t, p, v = recipe.train, recipe.pyramid, recipe.video
    kind = t.engine if t.engine != "auto" else ("ddp" if world > 1 else "single")
    pyramid = recipe.pyramid_config()
    plan = make_plan(arch_of(recipe.base), pyramid, recipe.latent_size(),
                     recipe.text.max_sequence_length, t, kind, recipe.dtype == "bfloat16", sorted({1, 2, 4, 8, world}))
    o, split = t.optimizer, t.split(p.stages)
    lines = [
        f"finetune plan: base {recipe.base}; {p.stages} stages ({p.resizer}), boundaries "
        f"{[round(b, 4) for b in recipe.stage_boundaries()]}; video {v.frames}x{v.height}x{v.width}",
        f"engine {kind}{f' ZeRO-{t.zero_stage}' if kind == 'deepspeed' else ''}, {recipe.dtype}, device {recipe.device}; "
        f"{t.steps} steps; batch {t.batch_size} per GPU per micro-step = {list(split)} per stage (coarsest first), "
        f"grad accum {t.grad_accum}: global batch {t.batch_size * t.grad_accum} x GPUs",
        f"AdamW lr {o.lr:g} ({o.schedule}, warm-up {o.warmup_steps}), weight decay {o.weight_decay:g}, clip "
        f"{t.max_grad_norm:g}; caption dropout {t.cfg_dropout:g}; alignment weight {t.align_weight:g}; EMA "
        f"{f'{t.ema.decay:g}' if t.ema.enabled else 'off'}; LoRA {f'r={t.lora.rank}' if t.lora.enabled else 'off'}; "
        f"gradient checkpointing {'on' if t.gradient_checkpointing else 'off'}",
        f"checkpoints every {t.checkpoint.every} steps (keep {t.checkpoint.keep}); validation every "
        f"{t.validation.every} steps on {t.validation.holdout} held-out items x levels {list(t.validation.levels)}",
    ]
    return plan, lines


def size(n: float) -> str:
    """Bytes as a short human-readable string (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def render(plan: dict, lines: list[str]) -> None:
    """Print the plan (``lines``: the recipe summary above the tables) on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    for line in lines:
        console.print(line, markup=False)
    lora = f" (LoRA, {plan['trainable'] / plan['parameters']:.2%})" if plan["trainable"] != plan["parameters"] else ""
    console.print(f"parameters: {plan['parameters']:,}; trainable: {plan['trainable']:,}{lora}", markup=False)
    table = Table("stage", "samples", "latent TxHxW", "per-token t", "activations")
    for s in plan["stages"]:
        table.add_row(str(s["stage"]), str(s["samples"]), "x".join(map(str, s["latent"])),
                      "yes" if s["per_token_timesteps"] else "no", size(s["activation_bytes"]))
    console.print(table)
    engine = plan["engine"] + (f" ZeRO-{plan['zero_stage']}" if plan["zero_stage"] else "")
    worlds = list(plan["memory"])
    mem = Table(f"per GPU ({engine}, {'bf16' if plan['bf16'] else 'fp32'})",
                *[f"{w} GPU{'s' * (w > 1)}" for w in worlds])
    for part in plan["memory"][worlds[0]]:
        mem.add_row(part, *[size(plan["memory"][w][part]) for w in worlds])
    console.print(mem)
    console.print("activations: the largest stage group of one micro-step (stages run one after another); "
                  "estimates, expect +-25% and allocator overhead on top.", markup=False)


def heads_parameters(cfg: dict, heads) -> int:
    """Parameters of the heads (``train.adversarial.Heads``) that ``heads`` (``distill.adv`` or ``distill.gan``:
    taps, channels) puts on a transformer config."""
    from pyrawan.train.adversarial import tapped_blocks

    dim, c = cfg["num_attention_heads"] * cfg["attention_head_dim"], heads.channels
    per_head = (dim * c + c) + (9 * c * c + c) + (3 * c * c + c) + (c + 1)
    return per_head * len(tapped_blocks(heads.taps, cfg["num_layers"]))


def distill_plan(recipe, world: int = 1) -> tuple[dict, list[str]]:
    """The memory plan of a distill recipe: generator, fake score, frozen teacher, both optimisers, EMA.

    The generator counts as in finetune (full or LoRA); the fake score is a full trainable copy of the
    teacher with its own AdamW; the teacher is frozen weights (none when it is the generator's base
    with its LoRA adapters disabled). Activations: one batch at the finest stage the schedule reaches,
    with gradients (the generator's and the fake score's backward passes run one after the other). With DMD's
    GAN term (``distill.gan.weight > 0``) the GAN heads count with their own AdamW, and activations double (the
    generator's GAN loss backpropagates through the fake score; the fake score's step sees real and generated).
    """
    from pyrawan.models.arch import arch_of
    from pyrawan.train.distill_config import gan_on, separate_teacher

    t, d, v = recipe.train, recipe.distill, recipe.video
    kind = t.engine if t.engine != "auto" else ("ddp" if world > 1 else "single")
    bf16 = recipe.dtype == "bfloat16"
    pyramid = recipe.pyramid_config()
    module = meta_transformer(arch_of(recipe.base))
    cfg = dict(module.config)
    params = sum(q.numel() for q in module.parameters())
    trainable = lora_parameters(module, t.lora.rank, t.lora.target_modules) if t.lora.enabled else params
    shape = pyramid.shapes(recipe.latent_size())[0]
    stored, transient = activation_elements(cfg, shape, recipe.text.max_sequence_length,
                                            _per_token(pyramid, 0, shape[0]), t.gradient_checkpointing)
    act = t.batch_size * (stored + transient) * (2 if bf16 else 4)
    if d.method == "adv" or gan_on(d):
        act *= 2        # the generator's loss backpropagates through the frozen backbone (adv) or fake score (gan)
    own_teacher = separate_teacher(recipe)
    fake_train = t.model_copy(update={"lora": t.lora.model_copy(update={"enabled": False}),
                                      "ema": t.ema.model_copy(update={"enabled": False}), "align_weight": 0.0})
    memory, critic_name = {}, "fake score" if d.method == "dmd" else "discriminator heads"
    for w in sorted({1, 2, 4, 8, world}):
        gen = memory_per_gpu(params, trainable, 0.0, t.model_copy(update={"align_weight": 0.0}), kind, bf16, w)
        critic = params if d.method == "dmd" else heads_parameters(cfg, d.adv)
        fake = memory_per_gpu(critic, critic, 0.0, fake_train, kind, bf16, w)
        parts = {"generator weights": gen["weights"], "generator gradients + AdamW": gen["gradients"] +
                 gen["optimizer states"], "generator EMA": gen["EMA + frozen base"],
                 f"{critic_name} weights": fake["weights"], f"{critic_name} gradients + AdamW": fake["gradients"] +
                 fake["optimizer states"], "teacher (frozen)": (2 if bf16 else 4) * params if own_teacher else 0.0,
                 "communication buffers": gen["communication buffers"] + fake["communication buffers"],
                 "activations (peak)": act}
        if gan_on(d):
            n = heads_parameters(cfg, d.gan)
            heads = memory_per_gpu(n, n, 0.0, fake_train, kind, bf16, w)
            parts["GAN heads weights + gradients + AdamW"] = (heads["weights"] + heads["gradients"] +
                                                              heads["optimizer states"])
            parts["communication buffers"] += heads["communication buffers"]
        parts["total"] = sum(parts.values())
        memory[w] = parts
    plan = {"parameters": params, "trainable": trainable, "engine": kind, "bf16": bf16,
            "zero_stage": t.zero_stage if kind == "deepspeed" else None, "memory": memory,
            "stages": [{"stage": 0, "samples": t.batch_size, "latent": list(shape),
                        "per_token_timesteps": _per_token(pyramid, 0, shape[0]), "activation_bytes": act}]}
    lines = [
        f"distill plan: {'DMD-' + d.variant if d.method == 'dmd' else 'adversarial, ' + d.adv.backbone + ' backbone'}; student {recipe.base} ({'LoRA r=' + str(t.lora.rank) if t.lora.enabled else 'full'})"
        f", teacher {d.teacher or recipe.base + (' (adapters disabled)' if t.lora.enabled else ' (frozen copy)')}; "
        f"schedule {d.schedule}; video {v.frames}x{v.height}x{v.width}",
        f"engine {kind}{f' ZeRO-{t.zero_stage}' if kind == 'deepspeed' else ''}, {recipe.dtype}; {t.steps} iterations "
        f"= {t.steps // d.generator_every} generator steps (one per {d.generator_every} fake-score steps); batch "
        f"{t.batch_size} prompts per GPU; real-score guidance {d.guidance:g}; L_teach weight {d.teach_weight:g}",
    ]
    if gan_on(d):
        plan["gan_heads"] = heads_parameters(cfg, d.gan)
        lines.append(f"GAN term (DMD2): weight {d.gan.weight:g}, fake score's classification weight "
                     f"{d.gan.critic_weight:g}, {d.gan.loss} loss; heads on {len(d.gan.taps)} tapped block(s) of the "
                     f"fake score, {plan['gan_heads']:,} parameters")
    return plan, lines
