"""Latency of one transformer forward per stage, and of sampling schedules (paper.md section 8.3).

``measure_latency`` times the DiT forward at each stage's latent shape on random inputs (weights
and inputs do not change the time). ``latency_report`` turns per-stage milliseconds into
per-schedule totals: steps x stage time, x2 with classifier-free guidance (two forwards per step,
batch not doubled). The forward gets the sampler's timesteps (per token at the coarse stages).
``measure_parts`` times the text encoder and the VAE decode beside it, for an end-to-end time per
video; sampler arithmetic and jumps are not included.
"""
from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Sequence
from typing import Any

from pyrawan.errors import InputError
from pyrawan.eval.flops import DEFAULT_STEPS, baseline_schedule, default_schedules, num_tokens, schedule_flops

LATENCY_NOTE = (
    "Transformer (DiT) forwards timed on random inputs after warm-up, with the sampler's timesteps (per "
    "token at coarse stages). Schedule totals are steps x per-stage median (x2 forwards per step with "
    "classifier-free guidance); end_to_end_ms, where given, adds the text encoder and the VAE decode of "
    "one video (sampler arithmetic and jumps excluded)."
)


def _param_device_dtype(transformer) -> tuple[Any, Any]:
    """Device and compute dtype of a module (the patch embedding's weight, not the fp32-kept parts)."""
    weight = getattr(getattr(transformer, "patch_embedding", None), "weight", None)
    if weight is None:
        weight = next(transformer.parameters())
    return weight.device, weight.dtype


def environment_info(device: Any = None, dtype: Any = None) -> dict:
    """Device name, dtype, torch version and CPU threads, for the report."""
    import torch

    device = torch.device(device or "cpu")
    name = platform.processor() or platform.machine() or "cpu"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    return {
        "device": str(device),
        "device_name": name,
        "dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def sampler_timestep(shape: Sequence[int], patch: Sequence[int], batch: int, per_token: bool) -> Any:
    """The timestep the sampler passes at a stage: ``[B]`` when every frame has one level, else
    ``[B, tokens]`` (``models.denoiser.frame_timesteps``): at a coarse stage of a pyramid that halves
    time, latent frame 0 (a block of 4) sits at another natural level than the others (blocks of 8)."""
    import torch

    from pyrawan.models.denoiser import frame_timesteps

    levels = torch.full((int(shape[0]),), 0.5, dtype=torch.float64)
    if per_token:
        levels[0] = 0.4
    return frame_timesteps(levels, batch, (int(shape[1]), int(shape[2])), tuple(patch))


def _inputs(transformer, shape: Sequence[int], text_len: int, batch: int, device, dtype, gen,
            per_token: bool = False) -> dict:
    """Random forward arguments for one latent shape (``per_token``: per-token timesteps, as the sampler)."""
    import torch

    cfg = transformer.config
    hidden = torch.randn(batch, cfg.in_channels, *shape, generator=gen).to(device, dtype)
    text = torch.randn(batch, text_len, cfg.text_dim, generator=gen).to(device, dtype)
    timestep = sampler_timestep(shape, cfg.patch_size, batch, per_token).to(device)
    return {"hidden_states": hidden, "timestep": timestep, "encoder_hidden_states": text, "return_dict": False}


def _time_once(transformer, kwargs: dict, cuda: bool) -> float:
    """Milliseconds of one forward (CUDA events + synchronize on GPU, perf_counter on CPU)."""
    import torch

    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        transformer(**kwargs)
        end.record()
        torch.cuda.synchronize()
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    transformer(**kwargs)
    return (time.perf_counter() - t0) * 1e3


def _time_shape(transformer, kwargs: dict, repeats: int, warmup: int, cuda: bool) -> list[float]:
    """``repeats`` timings after ``warmup`` untimed forwards."""
    import torch

    for _ in range(warmup):
        transformer(**kwargs)
    if cuda:
        torch.cuda.synchronize()
    return [_time_once(transformer, kwargs, cuda) for _ in range(repeats)]


def measure_latency(
    transformer,
    latent_shapes: Sequence[Sequence[int]],
    text_len: int = 512,
    batch: int = 1,
    repeats: int = 10,
    warmup: int = 3,
    device: Any = None,
    dtype: Any = None,
    seed: int = 0,
    sampler_timesteps: bool = True,
    keep_time: bool = False,
) -> list[dict]:
    """Median/mean/min/max ms of one forward at each latent shape (index = stage, 0 = full).

    ``sampler_timesteps``: time the forward the sampler runs, with per-token timesteps at the coarse
    stages of a pyramid that halves time (``keep_time`` False) and one timestep per sample elsewhere;
    False: one timestep per sample at every stage. A PPF transformer runs every stage on the full latent
    ``latent_shapes[0]`` at a level inside the stage (``latent_shapes[i]`` is then the grid of its tokens).

    ``device``/``dtype`` default to the module's own. If they differ the module is moved/cast in
    place (diffusers' fp32-kept modules stay fp32). Runs under ``torch.inference_mode()``.
    """
    import torch

    if repeats < 1 or warmup < 0 or batch < 1 or text_len < 1:
        raise InputError(f"repeats ({repeats}), batch ({batch}) and text_len ({text_len}) must be >= 1, warmup ({warmup}) >= 0.")
    own_device, own_dtype = _param_device_dtype(transformer)
    device = torch.device(device) if device is not None else own_device
    dtype = dtype or own_dtype
    if dtype != own_dtype:
        from pyrawan.models.presets import cast_keep_fp32

        cast_keep_fp32(transformer, dtype)
    if device != own_device:
        transformer = transformer.to(device)
    cuda = device.type == "cuda"
    gen = torch.Generator("cpu").manual_seed(seed)
    patch = tuple(transformer.config.patch_size)
    ppf_levels = _ppf_stage_levels(transformer)
    rows = []
    with torch.inference_mode():
        transformer.eval()
        for stage, shape in enumerate(latent_shapes):
            shape = tuple(int(v) for v in shape)
            per_token = sampler_timesteps and stage > 0 and not keep_time and shape[0] > 1 and ppf_levels is None
            run_shape = shape if ppf_levels is None else tuple(int(v) for v in latent_shapes[0])
            kwargs = _inputs(transformer, run_shape, text_len, batch, device, dtype, gen, per_token)
            if ppf_levels is not None:       # the full latent, at a level inside the stage: the stage's patches
                kwargs["timestep"] = torch.full((batch,), 1000.0 * ppf_levels[stage], device=device)
            times = _time_shape(transformer, kwargs, repeats, warmup, cuda)
            rows.append({
                "stage": stage, "latent": list(shape), "tokens": num_tokens(shape, patch), "batch": batch,
                "timesteps": "per-token" if per_token else "per-sample" if ppf_levels is None else "per-sample (PPF)",
                "median_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
                "min_ms": min(times), "max_ms": max(times), "repeats": repeats, "warmup": warmup,
            })
    return rows


def _ppf_stage_levels(transformer) -> list[float] | None:
    """For a PPF transformer (``models.ppf``): a noise level inside each stage (its middle); else None.

    A PPF stage runs on the full-resolution latent; ``latent_shapes`` then gives the grid its tokens form.
    """
    from pyrawan.models.ppf import is_ppf

    if not is_ppf(transformer):
        return None
    ends = (0.0, *transformer.config.ppf_boundaries, 1.0)
    return [(lo + hi) / 2 for lo, hi in zip(ends, ends[1:])]


def _median_ms(fn, repeats: int, warmup: int, cuda: bool) -> float:
    """Median milliseconds of ``fn()`` (synchronised on CUDA) after ``warmup`` untimed calls."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def measure_parts(components, full_latent: Sequence[int], text_len: int = 512, repeats: int = 3,
                  warmup: int = 1, tiny_decoder=None) -> dict:
    """Median ms of what a video costs besides the transformer, batch 1: the text encoder for the
    prompt alone and with the negative prompt (classifier-free guidance), and the VAE decode of
    normalised latents ``[1, 16, T, H, W]`` (``full_latent`` = (T, H, W)) to pixels; with a
    ``tiny_decoder`` (``pyrawan.models.tiny_decoder.TinyDecoder``) also its decode of the same latents."""
    import torch

    from pyrawan.models.denoiser import encode_prompts
    from pyrawan.models.vae import decode_latents

    cuda = next(components.vae.parameters()).device.type == "cuda"
    prompt = ["a large red square slowly moving left on a plain black background"]
    latents = torch.randn(1, 16, *(int(v) for v in full_latent), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return {
            "text_encoder_ms": _median_ms(lambda: encode_prompts(components, prompt, None, text_len), repeats, warmup, cuda),
            "text_encoder_cfg_ms": _median_ms(lambda: encode_prompts(components, prompt, [""], text_len), repeats, warmup,
                                              cuda),
            "vae_decode_ms": _median_ms(lambda: decode_latents(components, latents), repeats, warmup, cuda),
            "vae_dtype": str(next(components.vae.parameters()).dtype).replace("torch.", ""),
            **({"tiny_decode_ms": _median_ms(lambda: tiny_decoder.decode(latents), repeats, warmup, cuda)}
               if tiny_decoder is not None else {}),
            "repeats": repeats, "warmup": warmup,
        }


def end_to_end_ms(row: dict, parts: dict) -> float:
    """One video of a schedule row: text encoder (+ negative prompt with CFG) + transformer + VAE decode."""
    text = parts["text_encoder_cfg_ms"] if row["cfg_factor"] > 1 else parts["text_encoder_ms"]
    return text + row["total_ms"] + parts["vae_decode_ms"]


def _per_stage_ms(per_stage: Sequence[float] | Sequence[dict]) -> list[float]:
    """Median ms per stage from floats or from ``measure_latency`` rows."""
    return [float(p["median_ms"]) if isinstance(p, dict) else float(p) for p in per_stage]


def latency_report(
    per_stage_ms: Sequence[float] | Sequence[dict],
    schedules: Sequence[str] | None = None,
    guidance: bool = True,
    env: dict | None = None,
    parts: dict | None = None,
) -> dict:
    """Per-schedule total ms from per-stage forward times (index = stage, 0 = full resolution).

    ``parts`` (``measure_parts``): adds ``end_to_end_ms`` per schedule (text + transformer + decode).

    ``per_stage_ms`` may be plain milliseconds or the rows of ``measure_latency`` (their median is
    used and the rows are kept in the report). ``env`` is ``environment_info(...)`` of the
    measurement (recorded as given, else taken from the current process).
    """
    from pyrawan.pyramid.schedule import parse_schedule

    ms = _per_stage_ms(per_stage_ms)
    if not ms:
        raise InputError("latency report needs at least one stage time.")
    num_stages = len(ms)
    schedules = list(schedules) if schedules else default_schedules(num_stages)
    base = schedule_flops(ms, [0] * (num_stages - 1) + [DEFAULT_STEPS], True)["total"]   # the 50-step model with CFG
    rows = []
    for text in schedules:
        cost = schedule_flops(ms, parse_schedule(text, num_stages), guidance)
        rows.append({
            "schedule": cost["schedule"], "cfg_factor": cost["cfg_factor"], "forwards": cost["forwards"],
            "per_stage": [{"stage": p["stage"], "steps": p["steps"], "forwards": p["forwards"], "ms": p["cost"]}
                          for p in cost["per_stage"]],
            "total_ms": cost["total"], "ratio_to_baseline": cost["total"] / base,
        })
    stages = [dict(p) if isinstance(p, dict) else {"stage": i, "median_ms": m}
              for i, (p, m) in enumerate(zip(per_stage_ms, ms))]
    end_to_end = None
    if parts is not None:
        for row in rows:
            row["end_to_end_ms"] = end_to_end_ms(row, parts)
        from pyrawan.eval.decode_cost import end_to_end_rows

        decode = {"vae": parts["vae_decode_ms"], **({"tiny": parts["tiny_decode_ms"]} if "tiny_decode_ms" in parts else {})}
        end_to_end = {"rows": end_to_end_rows(rows, base, (parts["text_encoder_ms"], parts["text_encoder_cfg_ms"]),
                                              decode, key="total_ms", scale=1.0)}
    return {
        "kind": "latency", "num_stages": num_stages, "guidance": bool(guidance),
        "environment": env if env is not None else environment_info(),
        "stages": stages, "baseline": baseline_schedule(num_stages), "baseline_ms": base,
        "schedules": rows, "note": LATENCY_NOTE, **({"parts": parts} if parts is not None else {}),
        **({"end_to_end": end_to_end} if end_to_end is not None else {}),
    }
