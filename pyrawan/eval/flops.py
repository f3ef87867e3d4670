"""FLOPs of Wan DiT forwards and of pyramidal sampling schedules (paper.md section 8.2).

Two ways to count one transformer forward (batch 1, one scalar timestep, ``text_len`` text tokens):

* ``analytic``: the closed formula that reproduces the paper's Table 1,
  ``2·N·(6d² + 2·d·f)·L + 4·N²·d·L + 4·N·T_txt·d·L + 2·T_txt·2d²·L`` plus the small terms
  (patch embedding, output projection, text embedder). N = T/p_t · H/p_h · W/p_w video tokens.
* ``meta``: ``torch.utils.flop_counter.FlopCounterMode`` around a real diffusers
  ``WanTransformer3DModel`` forward on the meta device. On the meta device SDPA decomposes into
  counted ``bmm`` ops; on CPU it would count attention as zero (eval-and-io.md section 2.1).

The two agree up to the timestep embedding (``timestep_embed_flops``), which the analytic formula
treats as negligible: the meta count minus the analytic count is exactly that term
(16,384 FLOPs = +0.038% for the tiny test model at 5x16x16; 33.8 MFLOPs = +1.2e-7 for Wan2.1-1.3B
at 21x60x104, where both give 283.0018 TF).
Norms, softmax, RoPE and adaLN elementwise ops are counted by neither.

Schedules are written coarsest first (``"20-20-10"``); stage indices are 0 = full resolution.
Classifier-free guidance doubles the forwards. VAE decode and text encoder are excluded.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from pyrawan.errors import InputError

Shape3 = tuple[int, int, int]
TERA = 1e12
DEFAULT_STEPS = 50
EXCLUDED_NOTE = (
    "Transformer (DiT) forwards only: VAE decode (~275 TF for 81x480x832 with Wan2.1) and the text "
    "encoder (~4.8 TF per prompt, x2 with a negative prompt) are excluded, as in the paper's Table 1."
)


@dataclass(frozen=True)
class WanArch:
    """The sizes of a Wan DiT that its FLOPs depend on (dim = heads x head_dim)."""

    dim: int
    ffn_dim: int
    num_layers: int
    text_len: int = 512
    text_dim: int = 4096
    in_channels: int = 16
    patch: tuple[int, int, int] = (1, 2, 2)
    out_channels: int | None = None
    freq_dim: int = 256

    @classmethod
    def from_config(cls, config: Mapping[str, Any], text_len: int = 512) -> "WanArch":
        """Build from a diffusers ``WanTransformer3DModel`` config (dict or FrozenDict)."""
        try:
            return cls(
                dim=int(config["num_attention_heads"]) * int(config["attention_head_dim"]),
                ffn_dim=int(config["ffn_dim"]),
                num_layers=int(config["num_layers"]),
                text_len=int(text_len),
                text_dim=int(config.get("text_dim", 4096)),
                in_channels=int(config.get("in_channels", 16)),
                patch=tuple(int(p) for p in config.get("patch_size", (1, 2, 2))),
                out_channels=int(config.get("out_channels") or config.get("in_channels", 16)),
                freq_dim=int(config.get("freq_dim", 256)),
            )
        except KeyError as err:
            raise InputError(f"transformer config lacks {err.args[0]!r}; it is not a Wan transformer config.") from None

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {**asdict(self), "patch": list(self.patch)}


def num_tokens(latent_thw: Sequence[int], patch: Sequence[int] = (1, 2, 2)) -> int:
    """Video tokens ``N = T/p_t · H/p_h · W/p_w``; raises ``InputError`` if a size does not divide."""
    if len(latent_thw) != 3 or any(int(v) <= 0 for v in latent_thw):
        raise InputError(f"latent size {tuple(latent_thw)} must be three positive integers (T, H, W).")
    for name, size, p in zip("THW", latent_thw, patch):
        if int(size) % int(p):
            raise InputError(f"latent {name} = {size} is not divisible by the patch size {p} on that axis.")
    return math.prod(int(s) // int(p) for s, p in zip(latent_thw, patch))


def analytic_forward_flops(
    arch: WanArch, latent_thw: Sequence[int], text_len: int | None = None, small_terms: bool = True
) -> float:
    """FLOPs of one forward (batch 1) by the formula of paper.md section 8.2.

    Core terms: linear layers on video tokens, self-attention, cross-attention and the text k,v
    projections. ``small_terms`` adds the patch embedding, the output projection and the text
    embedder. ``text_len`` defaults to ``arch.text_len``.
    """
    n = num_tokens(latent_thw, arch.patch)
    txt = arch.text_len if text_len is None else int(text_len)
    d, f, layers = arch.dim, arch.ffn_dim, arch.num_layers
    flops = 2 * n * (6 * d * d + 2 * d * f) * layers      # q,k,v,o self-attn + q,o cross-attn + FFN
    flops += 4 * n * n * d * layers                       # self-attention scores + weighted sum
    flops += 4 * n * txt * d * layers                     # cross-attention scores + weighted sum
    flops += 2 * txt * 2 * d * d * layers                 # cross-attention k,v of the text tokens
    if small_terms:
        patch_in = arch.in_channels * math.prod(arch.patch)
        patch_out = (arch.out_channels or arch.in_channels) * math.prod(arch.patch)
        flops += 2 * n * patch_in * d + 2 * n * patch_out * d   # patch embed + output projection
        flops += 2 * txt * (arch.text_dim * d + d * d)          # text embedder (two linears)
    return float(flops)


def timestep_embed_flops(arch: WanArch, batch: int = 1) -> float:
    """FLOPs of the timestep path for a scalar timestep: freq -> d -> d, then d -> 6d (adaLN).

    This is what ``meta_forward_flops`` counts on top of ``analytic_forward_flops``.
    """
    d = arch.dim
    return float(2 * batch * (arch.freq_dim * d + d * d + d * 6 * d))


def _meta_module(transformer: Any):
    """A ``WanTransformer3DModel`` on the meta device from a config dict or a module."""
    import torch

    from pyrawan.models.ppf import transformer_class

    if isinstance(transformer, torch.nn.Module):
        param = next(transformer.parameters(), None)
        if param is not None and param.device.type == "meta":
            return transformer
        transformer = dict(transformer.config)
    config = {k: v for k, v in dict(transformer).items() if not k.startswith("_")}
    with torch.device("meta"):
        return transformer_class(config).from_config(config)


def _count_forward(module, latent_thw: Sequence[int], text_len: int) -> float:
    """Counted FLOPs of one meta forward of ``module`` (batch 1, scalar timestep)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    cfg = module.config
    num_tokens(latent_thw, cfg.patch_size)
    with torch.device("meta"):
        hidden = torch.empty(1, cfg.in_channels, *(int(v) for v in latent_thw))
        timestep = torch.full((1,), 500.0)
        text = torch.empty(1, int(text_len), cfg.text_dim)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(hidden_states=hidden, timestep=timestep, encoder_hidden_states=text, return_dict=False)
    return float(counter.get_total_flops())


def _plain_config(config: Mapping[str, Any], arch: WanArch) -> dict:
    """A plain Wan config with ``arch``'s channels: what a (PPF) stage forward runs, for meta counting."""
    plain = {k: v for k, v in config.items() if not k.startswith(("_", "ppf_"))}
    return {**plain, "in_channels": arch.in_channels, "out_channels": arch.out_channels}


def meta_forward_flops(transformer_config: Any, latent_thw: Sequence[int], text_len: int = 512) -> float:
    """FLOPs of one forward counted by ``FlopCounterMode`` on the meta device (no weights, ~1 s for 1.3B).

    ``transformer_config``: a diffusers Wan transformer config dict, or a module (its config is used;
    a module already on the meta device is run as is). Measured against ``analytic_forward_flops``:
    tiny test model at 5x16x16 (text 16): 43,466,752 vs 43,450,368 (+0.038%); Wan2.1-1.3B at
    21x60x104: 283.0018 TF for both (+1.2e-7). The difference is exactly ``timestep_embed_flops``.
    """
    return _count_forward(_meta_module(transformer_config), latent_thw, text_len)


def schedule_flops(
    per_stage_forward: Sequence[float], steps_coarsest_first: Sequence[int], guidance: bool
) -> dict:
    """Cost of a schedule: per stage ``forward x steps`` (x2 with guidance) and the total.

    ``per_stage_forward`` is indexed by stage (0 = full resolution); ``steps_coarsest_first`` is a
    parsed schedule (``(20, 20, 10)``). Works in whatever unit the forwards are given (FLOPs, ms).
    """
    steps = tuple(int(s) for s in steps_coarsest_first)
    if len(steps) != len(per_stage_forward):
        raise InputError(
            f"schedule {'-'.join(map(str, steps))} has {len(steps)} stages but {len(per_stage_forward)} "
            f"per-stage costs were given."
        )
    cfg = 2 if guidance else 1
    by_stage = steps[::-1]  # index = stage, 0 = full resolution
    per_stage = [
        {"stage": i, "steps": n, "forwards": n * cfg, "cost": float(per_stage_forward[i]) * n * cfg}
        for i, n in enumerate(by_stage)
    ]
    return {
        "schedule": "-".join(map(str, steps)),
        "cfg_factor": cfg,
        "forwards": sum(p["forwards"] for p in per_stage),
        "per_stage": per_stage,
        "total": sum(p["cost"] for p in per_stage),
    }


def baseline_schedule(num_stages: int, steps: int = DEFAULT_STEPS) -> str:
    """The full-resolution baseline ``0-...-0-50``: all steps at stage 0."""
    return "-".join(["0"] * (num_stages - 1) + [str(steps)])


def default_schedules(num_stages: int) -> list[str]:
    """The paper's Table 1 rows, generalised to ``num_stages`` (baseline first, duplicates dropped)."""
    head = num_stages - 1
    rows = [
        baseline_schedule(num_stages),
        "-".join(["20"] * head + ["10"]),
        "-".join(["0"] * head + ["4"]),
        "-".join(["0"] * head + ["2"]),
        "-".join(["2"] * num_stages),
        "-".join(["2"] * head + ["1"]),
        "-".join(["1"] * num_stages),
    ]
    return list(dict.fromkeys(rows))


def resolve_arch(arch: Any, text_len: int = 512) -> tuple[WanArch, Any]:
    """``(WanArch, config-or-module for meta counting)`` from a WanArch, config dict, module or preset name.

    A preset name (``"tiny"``, ``"wan1.3b"``, ``"wan14b"``) is looked up with
    ``pyrawan.models.presets.arch_config`` (unknown names raise ``InputError``).
    """
    if isinstance(arch, WanArch):
        return arch, None
    if isinstance(arch, str):
        from pyrawan.models.presets import arch_config

        arch = arch_config(arch)
    config = getattr(arch, "config", arch)
    if not isinstance(config, Mapping):
        raise InputError(f"cannot read a Wan transformer config from {type(arch).__name__}.")
    return WanArch.from_config(config, text_len=text_len), arch


def stage_geometry(wan: WanArch, full: Sequence[int], num_stages: int, keep_time: bool = False,
                   ppf: bool = False) -> list[tuple[Shape3, WanArch]]:
    """What one forward of each stage (index = stage) runs on: ``(latent the patch embedding sees, arch)``.

    Resolution pyramid: the stage's own latent, same arch. PPF (``pyrawan.models.ppf``): the full latent
    folded by the stage factor ``f`` -- the same grid and token count as the resolution pyramid's stage --
    through an embedding and head ``f`` times wider (``in/out_channels x f``).
    """
    from pyrawan.pyramid.geometry import stage_shapes

    shapes = stage_shapes(tuple(int(v) for v in full), num_stages, keep_time, patch=wan.patch[1:])
    if not ppf:
        return [(s, wan) for s in shapes]
    from pyrawan.models.ppf import stage_factors

    out_channels = wan.out_channels or wan.in_channels
    return [(s, replace(wan, in_channels=wan.in_channels * math.prod(f), out_channels=out_channels * math.prod(f)))
            for s, f in zip(shapes, stage_factors(num_stages, keep_time))]


def _stage_table(geometry: list[tuple[Shape3, WanArch]], forwards: list[float]) -> list[dict]:
    """Per stage: latent shape the tokens are made from, tokens and TFLOPs of one forward."""
    return [
        {"stage": i, "latent": list(s), "tokens": num_tokens(s, arch.patch), "tflops_per_forward": f / TERA}
        for i, ((s, arch), f) in enumerate(zip(geometry, forwards))
    ]


def _schedule_rows(
    forwards: list[float], schedules: Sequence[str], num_stages: int, guidance: bool, baseline_total: float
) -> list[dict]:
    """One report row per schedule, in TFLOPs, with the ratio to the baseline."""
    from pyrawan.pyramid.schedule import parse_schedule

    rows = []
    for text in schedules:
        cost = schedule_flops(forwards, parse_schedule(text, num_stages), guidance)
        rows.append({
            "schedule": cost["schedule"],
            "cfg_factor": cost["cfg_factor"],
            "forwards": cost["forwards"],
            "per_stage": [
                {"stage": p["stage"], "steps": p["steps"], "forwards": p["forwards"], "tflops": p["cost"] / TERA}
                for p in cost["per_stage"]
            ],
            "tflops_per_guidance_branch": cost["total"] / cost["cfg_factor"] / TERA,
            "total_tflops": cost["total"] / TERA,
            "ratio_to_baseline": cost["total"] / baseline_total,
        })
    return rows


def flops_report(
    arch: Any,
    latent_thw_full: Sequence[int],
    num_stages: int,
    keep_time: bool = False,
    schedules: Sequence[str] | None = None,
    guidance: bool = True,
    method: str = "analytic",
    text_len: int = 512,
    small_terms: bool = True,
    ppf: bool = False,
) -> dict:
    """FLOPs of each schedule, per stage and in total, with the ratio to the full-resolution baseline.

    ``arch``: a ``WanArch``, a diffusers transformer config dict, a module, or a preset name.
    ``method``: ``"analytic"`` (paper.md section 8.2) or ``"meta"`` (FlopCounterMode on the meta
    device; needs a config, not a bare ``WanArch``). ``guidance`` applies to the listed schedules; the
    baseline of every ratio is ``0-...-0-50`` *with* guidance, the 50-step model as users run it (so a
    distilled model's unguided rows are divided by the same baseline as a guided model's). Stage lists
    are indexed by stage (0 = full resolution). ``ppf``: a Pyramidal Patchification model (``stage_geometry``).
    """
    from pyrawan.pyramid.schedule import parse_schedule

    if int(num_stages) < 1:
        raise InputError(f"number of stages {num_stages} must be at least 1.")
    schedules = list(schedules) if schedules else default_schedules(num_stages)
    for text in schedules:
        parse_schedule(text, num_stages)  # fail before any counting
    if method not in ("analytic", "meta"):
        raise InputError(f"FLOPs method {method!r} is unknown; use 'analytic' or 'meta'.")
    if int(text_len) <= 0:
        raise InputError(f"text length {text_len} must be positive (Wan pads prompts to 512 tokens).")
    wan, source = resolve_arch(arch, text_len)
    geometry = stage_geometry(wan, latent_thw_full, num_stages, keep_time, ppf)
    if method == "meta":
        if source is None:
            raise InputError("FLOPs method 'meta' needs a transformer config, a module or a preset name, not a WanArch.")
        config = dict(getattr(source, "config", source))
        forwards = [_count_forward(_meta_module(_plain_config(config, a)), s, text_len) for s, a in geometry]
    else:
        forwards = [analytic_forward_flops(a, s, text_len, small_terms) for s, a in geometry]
    baseline = baseline_schedule(num_stages)
    baseline_total = schedule_flops(forwards, [0] * (num_stages - 1) + [DEFAULT_STEPS], True)["total"]
    return {
        "kind": "flops",
        "method": method,
        "small_terms": bool(small_terms) if method == "analytic" else None,
        "arch": wan.to_dict(),
        "text_len": int(text_len),
        "num_stages": num_stages,
        "keep_time": bool(keep_time),
        "guidance": bool(guidance),
        "ppf": bool(ppf),
        "stages": _stage_table(geometry, forwards),
        "baseline": baseline,
        "baseline_tflops": baseline_total / TERA,
        "schedules": _schedule_rows(forwards, schedules, num_stages, guidance, baseline_total),
        "note": EXCLUDED_NOTE + " Schedules are written coarsest first; stage 0 is full resolution."
        + (" Guidance (CFG) doubles every forward." if guidance else " These rows run without classifier-free "
           "guidance.") + f" Ratios: against {baseline} with CFG."
        + (" PPF model: every stage folds the full-resolution latent into the resolution pyramid's token grid (same "
           "tokens); its patch embedding and head are wider by the fold factor." if ppf else ""),
    }
