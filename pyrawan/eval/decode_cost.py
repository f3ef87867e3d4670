"""What a video costs besides the transformer: the text encoder and the decode (VAE or tiny decoder).

The paper's Table 1 counts transformer forwards only. For a few-step model that hides most of the
cost: at Wan2.1's 81×480×832 the VAE decode (275 TFLOPs) costs about as much as the whole 2-2-1
transformer. ``end_to_end_flops`` adds, per schedule, the text encoder (twice with classifier-free
guidance: the negative prompt) and the decode with each decoder, and the ratio to ``0-0-50`` with
guidance and the VAE (the model as users run it).

* Text encoder: analytic UMT5 encoder FLOPs (projections, gated FFN, attention scores) for
  ``text_len`` tokens.
* VAE decode: ``FlopCounterMode`` around ``AutoencoderKLWan.decode`` on the meta device (the Wan VAE's
  causal 3-D convolutions, chunk by chunk, as it runs).
* Tiny decoder: analytic, layer by layer: ``2 k² C_in C_out`` per output pixel and frame of every
  convolution, in the order it runs (``TGrow`` before the nearest up-sampling, trimmed frames dropped
  after the last ``TGrow``).
"""
from __future__ import annotations

import functools
import json

from collections.abc import Mapping, Sequence
from typing import Any

from pyrawan.models.tiny_decoder import BLOCKS_PER_LEVEL, TinyDecoderConfig

TERA = 1e12
UMT5_XXL = dict(d_model=4096, d_kv=64, num_heads=64, d_ff=10240, num_layers=24)   # Wan2.1's text encoder


def text_encoder_flops(config: Mapping[str, Any] = UMT5_XXL, tokens: int = 512) -> float:
    """FLOPs of one UMT5 encoder pass over ``tokens`` tokens (Wan2.1's umt5-xxl: about 4.8 TF at 512)."""
    d, inner, ff, layers = (int(config["d_model"]), int(config["d_kv"]) * int(config["num_heads"]),
                            int(config["d_ff"]), int(config["num_layers"]))
    per_token = 2 * (4 * d * inner + 3 * d * ff)                    # q, k, v, o + gated FFN (wi_0, wi_1, wo)
    attention = 4 * tokens * tokens * inner                         # scores and weighted sum
    return float(layers * (tokens * per_token + attention))


def tiny_decoder_flops(config: TinyDecoderConfig, latent_thw: Sequence[int]) -> float:
    """FLOPs of one tiny-decoder pass over latents (T, h, w) (batch 1), as ``run_blocks`` runs it."""
    frames, h, w = (int(v) for v in latent_thw)
    n = config.channels

    def conv(c_in: int, c_out: int, k: int = 3) -> float:
        return 2.0 * k * k * c_in * c_out * frames * h * w

    total = conv(config.latent_channels, n[0])
    for level in range(3):
        total += BLOCKS_PER_LEVEL * (conv(2 * n[level], n[level]) + 2 * conv(n[level], n[level]))
        stride = 2 if config.time_upscale[level] else 1
        total += conv(n[level], n[level] * stride, 1)              # TGrow, before the up-sampling
        frames *= stride
        if level == 2:
            frames -= config.time_factor - 1                       # trimmed: no memory block follows
        if config.space_upscale[level]:
            h, w = 2 * h, 2 * w
        total += conv(n[level], n[level + 1])
    return total + conv(n[3], 3)


def vae_decode_flops(vae_config: Mapping[str, Any], latent_thw: Sequence[int]) -> float:
    """FLOPs of ``AutoencoderKLWan.decode`` of latents (T, h, w), counted on the meta device (batch 1).

    The causal decoder decodes one latent frame at a time with a cache, so every frame after the first
    costs the same: counting 1 and 2 frames gives ``f(T) = f(1) + (T - 1)(f(2) - f(1))`` exactly
    (``tests/test_flops.py`` checks it against a direct count) at a tenth of the time of counting 21.
    """
    t, h, w = (int(v) for v in latent_thw)
    if t <= 2:
        return _counted_decode_flops(json.dumps(dict(vae_config), sort_keys=True), t, h, w)
    one, two = (_counted_decode_flops(json.dumps(dict(vae_config), sort_keys=True), n, h, w) for n in (1, 2))
    return one + (t - 1) * (two - one)


@functools.lru_cache(maxsize=16)
def _counted_decode_flops(config_json: str, t: int, h: int, w: int) -> float:
    """The meta-device count of one decode of latents (t, h, w) for the VAE config (JSON, for the cache)."""
    import torch
    from diffusers import AutoencoderKLWan
    from torch.utils.flop_counter import FlopCounterMode

    config = {k: v for k, v in json.loads(config_json).items() if not k.startswith("_")}
    with torch.device("meta"):
        vae = AutoencoderKLWan(**config)
    latents = torch.zeros(1, int(vae.config.z_dim), t, h, w, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        vae.decode(latents)
    return float(counter.get_total_flops())


def end_to_end_rows(schedule_rows: Sequence[dict], baseline_transformer: float, text: tuple[float, float],
                    decode: Mapping[str, float], key: str = "total_tflops", scale: float = TERA) -> list[dict]:
    """Per schedule: text encoder, transformer and each decoder's decode, the end-to-end totals, and each
    total's ratio to the baseline ``0-0-50`` with CFG and the VAE.

    ``schedule_rows``: rows of ``flops_report`` (``key`` total_tflops, ``scale`` 1e12) or ``latency_report``
    (``key`` total_ms, ``scale`` 1); ``text`` = (the prompt alone, with the negative prompt) and ``decode``
    per decoder, in the rows' unit times ``scale``.
    """
    baseline = text[1] + baseline_transformer + decode["vae"]
    rows = []
    for row in schedule_rows:
        transformer = row[key] * scale
        text_cost = text[1] if row["cfg_factor"] > 1 else text[0]
        totals = {name: text_cost + transformer + cost for name, cost in decode.items()}
        rows.append({"schedule": row["schedule"], "cfg_factor": row["cfg_factor"], "text_encoder": text_cost / scale,
                     "transformer": transformer / scale, "decode": {k: v / scale for k, v in decode.items()},
                     "end_to_end": {k: v / scale for k, v in totals.items()},
                     "ratio_to_baseline": {k: v / baseline for k, v in totals.items()}})
    return rows


def family_of(arch: str | Mapping[str, Any]) -> str:
    """``toy``, ``tiny`` or ``wan`` (Wan2.1's own text encoder and VAE) for an architecture name or config."""
    from pyrawan.models.presets import TRANSFORMER_ARCHS

    if isinstance(arch, str):
        return arch if arch in ("toy", "tiny") else "wan"
    sizes = ("num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim", "text_dim")
    for name in ("toy", "tiny"):
        if all(arch.get(k) == TRANSFORMER_ARCHS[name][k] for k in sizes):
            return name
    return "wan"


def stack_configs(family: str) -> tuple[dict, dict, TinyDecoderConfig]:
    """(text encoder config, VAE config, tiny decoder config) of a model family: the shipped toy parts, the tiny
    preset's, or Wan2.1's (umt5-xxl, the Wan 2.1 VAE, TAEHV's taew2_1 widths)."""
    from pyrawan.models.presets import TINY_TEXT_ENCODER, TINY_VAE

    if family == "toy":
        from pyrawan.models.toy import TOY_TEXT_ENCODER, shipped_config, weights_index

        entry = weights_index().get("decoder")
        decoder = TinyDecoderConfig.model_validate(entry["config"]) if entry else TinyDecoderConfig(
            channels=(64, 32, 16, 8))
        return TOY_TEXT_ENCODER, shipped_config("vae"), decoder
    if family == "tiny":
        return TINY_TEXT_ENCODER, TINY_VAE, TinyDecoderConfig(channels=(8, 8, 8, 8))
    return UMT5_XXL, {}, TinyDecoderConfig()


def end_to_end_flops(report: dict, arch: str | Mapping[str, Any], latent_thw: Sequence[int]) -> dict:
    """The end-to-end section of a ``flops_report``: per-part TFLOPs of one video and per-schedule totals."""
    family = family_of(arch)
    text_config, vae_config, decoder = stack_configs(family)
    text = text_encoder_flops(text_config, report["text_len"])
    decode = {"vae": vae_decode_flops(vae_config, latent_thw), "tiny": tiny_decoder_flops(decoder, latent_thw)}
    return {"family": family, "text_encoder_tflops": text / TERA, "decode_tflops": {k: v / TERA for k, v in decode.items()},
            "tiny_decoder_channels": list(decoder.channels),
            "rows": end_to_end_rows(report["schedules"], report["baseline_tflops"] * TERA, (text, 2 * text), decode)}
