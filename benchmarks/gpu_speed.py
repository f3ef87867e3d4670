"""GPU speed check of Wan2.1-1.3B (random weights) at 81x448x832, three stages, in one process.

    python benchmarks/gpu_speed.py --out OUT [--budget-s 480] [--skip compile,cudagraphs]
    python benchmarks/gpu_speed.py --tiny --out OUT        # CPU harness: tiny model, 17x64x64

Sections, in this order (each is skipped, and says so, once the time budget is spent; the results
are written after every section, so a run cut short keeps what it measured):

  forward     per-stage forward latency (bf16, SDPA) with the sampler's per-token timesteps and with
              one timestep per sample; batch 1 and batch 2 (classifier-free guidance as the sampler
              runs it: one forward of batch 2)
  profile     torch.profiler of one forward at stage 1 and at stage 2 (why is stage 2 slower?):
              tables by CUDA time, kernel counts, chrome traces
  backends    the same forwards with each diffusers attention backend (native, cuDNN, flash, ...)
  cudnn       cudnn.benchmark on (conv algorithm search for the patch embedding)
  regional    torch.compile of the repeated transformer blocks only (diffusers' compile_repeated_blocks)
  vae         VAE decode of one video: fp32, bf16, bf16 channels-last
  text        umT5-XXL text encoder (random weights), one prompt of 512 tokens
  compile     torch.compile of the transformer (default mode), per stage
  cudagraphs  torch.compile mode="reduce-overhead" (CUDA graphs) at the coarse stages
  summary     end-to-end time per video per schedule with the best measured transformer times;
              one baseline for every ratio: 0-0-50 with CFG (distilled schedules run without CFG)

Writes OUT/results.json, OUT/summary.txt, OUT/profile_stage{1,2}.txt and OUT/trace_stage{1,2}.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "8")      # thread counts fixed before torch starts
os.environ.setdefault("MKL_NUM_THREADS", "8")

import torch  # noqa: E402

from pyrawan.eval.latency import environment_info, measure_latency  # noqa: E402
from pyrawan.models.presets import build_preset, build_transformer  # noqa: E402
from pyrawan.pyramid.geometry import WAN21_VAE_FACTORS, pixel_to_latent, stage_shapes  # noqa: E402

SCHEDULES = {"0-0-50": True, "20-20-10": True, "2-2-2": False, "2-2-1": False, "1-1-1": False, "0-0-4": False}
BACKENDS = ("native", "_native_cudnn", "_native_flash", "_native_efficient", "flash", "_flash_3", "sage")
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
                tie_word_embeddings=False, dropout_rate=0.0)


class Run:
    """Settings, results and the time budget of this run."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.start, self.out = args, time.time(), Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = torch.device("cpu" if args.tiny else "cuda")
        self.dtype = torch.float32 if args.tiny else torch.bfloat16
        self.arch = "tiny" if args.tiny else "wan1.3b"
        size = (17, 64, 64) if args.tiny else (81, 448, 832)
        self.shapes = stage_shapes(pixel_to_latent(*size, WAN21_VAE_FACTORS), 3, False)
        self.text_len = 16 if args.tiny else 512
        self.repeats, self.warmup = (3, 1) if args.tiny else (args.repeats, 2)
        self.results: dict = {"video": size, "latents": self.shapes, "arch": self.arch, "sections": {}}
        self.lines: list[str] = []

    def left(self) -> float:
        return self.args.budget_s - (time.time() - self.start)

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.time() - self.start, 1)
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        (self.out / "summary.txt").write_text("\n".join(self.lines) + "\n")


def stage_ms(run: Run, transformer, batch: int = 1, sampler_timesteps: bool = True) -> list[float]:
    """Median ms of one forward per stage (index = stage)."""
    rows = measure_latency(transformer, run.shapes, run.text_len, batch=batch, repeats=run.repeats,
                           warmup=run.warmup, device=run.device, dtype=run.dtype, sampler_timesteps=sampler_timesteps)
    return [round(r["median_ms"], 2) for r in rows]


def show(label: str, ms: list[float], stages: tuple[int, ...] = (0, 1, 2)) -> str:
    return f"{label:40s} " + "  ".join(f"stage {s}: {m:8.2f} ms" for s, m in zip(stages, ms))


def section_forward(run: Run, model) -> dict:
    res = {}
    for label, batch, per_token in (("batch 1, per-token timesteps (sampler)", 1, True),
                                    ("batch 1, one timestep per sample", 1, False),
                                    ("batch 2 (CFG as sampled), per-token", 2, True)):
        res[label] = stage_ms(run, model, batch, per_token)
        run.say(show(label, res[label]))
    return res


def _inputs(run: Run, model, stage: int) -> dict:
    from pyrawan.eval.latency import _inputs as latency_inputs

    gen = torch.Generator().manual_seed(0)
    return latency_inputs(model, run.shapes[stage], run.text_len, 1, run.device, run.dtype, gen, per_token=True)


def section_profile(run: Run, model) -> dict:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if run.device.type == "cuda" else [])
    sort = "self_device_time_total" if run.device.type == "cuda" else "self_cpu_time_total"
    res = {}
    with torch.inference_mode():
        for stage in (1, 2):
            kwargs = _inputs(run, model, stage)
            for _ in range(3):
                model(**kwargs)
            sync(run)
            with profile(activities=activities) as prof:
                wall = time.perf_counter()
                model(**kwargs)
                sync(run)
                wall = (time.perf_counter() - wall) * 1e3
            events = prof.key_averages()
            table = events.table(sort_by=sort, row_limit=30)
            (run.out / f"profile_stage{stage}.txt").write_text(table + "\n")
            prof.export_chrome_trace(str(run.out / f"trace_stage{stage}.json"))
            device_ms = sum(getattr(e, "self_device_time_total", 0.0) for e in events) / 1e3
            kernels = sum(e.count for e in events if "LaunchKernel" in e.key)
            top = [{"op": e.key, "calls": e.count, "self_device_ms": round(getattr(e, "self_device_time_total", 0) / 1e3, 3),
                    "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 3)}
                   for e in sorted(events, key=lambda e: -max(getattr(e, "self_device_time_total", 0),
                                                               e.self_cpu_time_total))[:12]]
            res[f"stage {stage}"] = {"wall_ms": round(wall, 2), "device_busy_ms": round(device_ms, 2),
                                     "kernel_launches": kernels, "top": top}
            run.say(f"profile stage {stage}: wall {wall:.2f} ms, device busy {device_ms:.2f} ms, "
                    f"{kernels} kernels; top: " + ", ".join(f"{t['op']} {t['self_device_ms'] or t['self_cpu_ms']} ms"
                                                             for t in top[:5]))
    return res


def sync(run: Run) -> None:
    if run.device.type == "cuda":
        torch.cuda.synchronize()


def section_backends(run: Run, model) -> dict:
    res = {}
    for backend in BACKENDS:
        try:
            model.set_attention_backend(backend)
            res[backend] = stage_ms(run, model)
            run.say(show(f"attention backend {backend}", res[backend]))
        except Exception as err:  # a backend this machine lacks: record why
            res[backend] = f"unavailable: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
            run.say(f"attention backend {backend:28s} {res[backend]}")
    model.reset_attention_backend()
    return res


def section_cudnn(run: Run, model) -> dict:
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        ms = stage_ms(run, model)
    finally:
        torch.backends.cudnn.benchmark = before
    run.say(show("cudnn.benchmark on", ms))
    return {"cudnn.benchmark": ms}


def random_vae(run: Run):
    if run.args.tiny:
        return build_preset("tiny").vae
    from diffusers import AutoencoderKLWan

    with torch.device(run.device):
        return AutoencoderKLWan().eval()      # diffusers' defaults are Wan2.1's VAE architecture


def section_vae(run: Run, _model) -> dict:
    from pyrawan.eval.latency import _median_ms
    from pyrawan.models.vae import decode_latents

    vae = random_vae(run)
    latents = torch.randn(1, 16, *run.shapes[0])
    res, cuda = {}, run.device.type == "cuda"
    variants = [("bfloat16", torch.bfloat16, False), ("float32", torch.float32, False),
                ("bfloat16 channels-last", torch.bfloat16, True)]
    with torch.inference_mode():
        for label, dtype, channels_last in variants:
            if run.left() <= 0:
                res[label] = "skipped: time budget spent"
                continue
            vae.to(dtype=dtype)
            for conv in (m for m in vae.modules() if isinstance(m, torch.nn.Conv3d)):
                conv.weight.data = conv.weight.data.contiguous(
                    memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
            try:
                res[label] = round(_median_ms(lambda: decode_latents(vae, latents), 2, 1, cuda), 1)
            except Exception as err:
                res[label] = f"failed: {type(err).__name__}: {str(err)[:160]}"
            run.say(f"VAE decode of one video, {label:28s} {res[label]} ms")
    return res


def section_text(run: Run, _model) -> dict:
    from transformers import UMT5Config, UMT5EncoderModel

    from pyrawan.eval.latency import _median_ms

    if run.args.tiny:
        encoder = build_preset("tiny").text_encoder
        vocab = encoder.config.vocab_size
    else:
        with torch.device("meta"):
            encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL))
        encoder = encoder.to_empty(device=run.device).to(run.dtype).eval()
        for p in encoder.parameters():
            torch.nn.init.normal_(p, std=0.02)
        vocab = UMT5_XXL["vocab_size"]
    ids = torch.randint(0, vocab, (1, run.text_len), device=run.device)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        ms = round(_median_ms(lambda: encoder(ids, mask), run.repeats, run.warmup, run.device.type == "cuda"), 2)
    run.say(f"text encoder (umT5, {run.text_len} tokens, one prompt)          {ms} ms")
    return {"text_encoder_ms": ms}


def section_compile(run: Run, model, mode: str | None = None, stages: tuple[int, ...] = (0, 1, 2)) -> dict:
    torch._dynamo.reset()
    compiled = torch.compile(model, mode=mode, dynamic=False)
    res, started = {}, time.time()
    keep = run.shapes
    try:
        run.shapes = [keep[s] for s in stages]
        ms = stage_ms(run, compiled)
    finally:
        run.shapes = keep
    res = {"mode": mode or "default", "stages": list(stages), "ms": ms, "compile_and_time_s": round(time.time() - started, 1)}
    run.say(show(f"torch.compile mode={mode or 'default'}", ms, stages)
            + f"   ({res['compile_and_time_s']} s incl. compiling)")
    torch._dynamo.reset()
    return res


def section_regional(run: Run, model) -> dict:
    """``compile_repeated_blocks``: torch.compile of the 30 transformer blocks only (compiles one block)."""
    blocks = [m for m in model.modules() if type(m).__name__ in getattr(model, "_repeated_blocks", ())]
    torch._dynamo.reset()
    started = time.time()
    model.compile_repeated_blocks(dynamic=False)
    try:
        ms = stage_ms(run, model)
    finally:
        for block in blocks:                      # back to eager for the sections that follow
            block._compiled_call_impl = None
        torch._dynamo.reset()
    res = {"ms": ms, "compile_and_time_s": round(time.time() - started, 1)}
    run.say(show("torch.compile of the repeated blocks", ms) + f"   ({res['compile_and_time_s']} s incl. compiling)")
    return res


def best_stage_ms(results: dict) -> tuple[list[float], dict]:
    """Fastest measured per-stage times (batch 1, sampler timesteps) and which variant gave each."""
    sections = {k: v for k, v in results["sections"].items() if isinstance(v, dict)}   # measured ones
    candidates = {"SDPA default": sections.get("forward", {}).get("batch 1, per-token timesteps (sampler)")}
    for name, ms in (sections.get("backends") or {}).items():
        candidates[f"backend {name}"] = ms
    candidates["cudnn.benchmark"] = (sections.get("cudnn") or {}).get("cudnn.benchmark")
    candidates["regional compile"] = (sections.get("regional") or {}).get("ms")
    compiled = sections.get("compile") or {}
    candidates["torch.compile"] = compiled.get("ms")
    graphs = sections.get("cudagraphs") or {}
    if isinstance(graphs.get("ms"), list):
        candidates["compile + CUDA graphs"] = {s: m for s, m in zip(graphs["stages"], graphs["ms"])}
    best, which = [], {}
    for stage in range(3):
        options = {k: (v[stage] if isinstance(v, list) else v.get(stage)) for k, v in candidates.items()
                   if isinstance(v, (list, dict)) and (not isinstance(v, dict) or stage in v)}
        name = min(options, key=options.get)
        best.append(options[name])
        which[stage] = name
    return best, which


def section_summary(run: Run, _model) -> dict:
    best, which = best_stage_ms(run.results)
    measured = {k: v for k, v in run.results["sections"].items() if isinstance(v, dict)}
    parts, vae = measured.get("text") or {}, measured.get("vae") or {}
    decode = min((v for v in vae.values() if isinstance(v, (int, float))), default=None)
    text = parts.get("text_encoder_ms")
    rows, base = {}, None
    for schedule, cfg in SCHEDULES.items():
        steps = [int(s) for s in schedule.split("-")]
        dit = sum(n * best[2 - k] for k, n in enumerate(steps)) * (2 if cfg else 1)
        total = dit + (text or 0) * (2 if cfg else 1) + (decode or 0)
        base = base if base is not None else (dit, total)
        rows[schedule] = {"cfg": cfg, "dit_ms": round(dit, 1), "end_to_end_ms": round(total, 1),
                          "dit_vs_baseline": round(dit / base[0], 4), "end_to_end_vs_baseline": round(total / base[1], 4)}
        run.say(f"{schedule:9s} {'CFG' if cfg else 'no CFG':6s} transformer {dit:10.1f} ms ({dit / base[0]:.4f} of "
                f"0-0-50 CFG)   end to end {total:10.1f} ms ({total / base[1]:.4f})")
    run.say(f"best per stage: {best} ms from {which}; text {text} ms per prompt; VAE decode {decode} ms")
    return {"best_stage_ms": best, "from": which, "schedules": rows}


SECTIONS = ("forward", "profile", "backends", "cudnn", "regional", "vae", "text", "compile", "cudagraphs", "summary")
# Seconds of budget a section needs to start (compiling Wan2.1-1.3B for three shapes takes minutes).
NEEDS_S = {"regional": 90.0, "compile": 240.0, "cudagraphs": 150.0, "vae": 60.0, "text": 30.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="Folder for results.json, summary.txt, profiles and traces.")
    ap.add_argument("--tiny", action="store_true", help="CPU harness: the tiny model at 17x64x64.")
    ap.add_argument("--budget-s", type=float, default=480.0, help="Stop starting sections after this many seconds.")
    ap.add_argument("--repeats", type=int, default=5, help="Timed forwards per stage (median).")
    ap.add_argument("--skip", default="", help=f"Comma-separated sections to skip: {', '.join(SECTIONS)}.")
    args = ap.parse_args()
    run = Run(args)
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("gpu_speed.py: no CUDA GPU visible; use --tiny for the CPU harness.")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()        # "experimental backend" / fp32-module notices

    run.results["environment"] = {**environment_info(run.device, run.dtype), "diffusers": diffusers.__version__,
                                  "transformers": transformers.__version__,
                                  "cudnn": torch.backends.cudnn.version() if run.device.type == "cuda" else None}
    run.say(f"{run.results['environment']['device_name']}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
            f"{run.arch} random weights, {run.dtype}, latents {run.shapes}, text {run.text_len} tokens")
    model = build_transformer(run.arch, device=run.device, dtype=run.dtype)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    steps = {"forward": section_forward, "profile": section_profile, "backends": section_backends,
             "cudnn": section_cudnn, "regional": section_regional, "vae": section_vae, "text": section_text,
             "compile": section_compile,
             "cudagraphs": lambda r, m: section_compile(r, m, "reduce-overhead", (1, 2)), "summary": section_summary}
    for name in SECTIONS:
        if name in skip or (name == "cudnn" and run.device.type != "cuda"):
            run.results["sections"][name] = "skipped (asked)" if name in skip else "skipped (CUDA only)"
            continue
        needs = 0.0 if args.tiny else NEEDS_S.get(name, 0.0)
        if name != "summary" and run.left() <= needs:
            run.results["sections"][name] = f"skipped: {run.left():.0f} s of the time budget left, needs {needs:.0f} s"
            run.say(f"[{name}] {run.results['sections'][name]}")
            continue
        run.say(f"[{name}] ({run.left():.0f} s of budget left)")
        try:
            run.results["sections"][name] = steps[name](run, model)
        except Exception as err:  # one failing lever must not cost the others
            run.results["sections"][name] = f"failed: {type(err).__name__}: {err}"
            run.say(f"[{name}] failed: {type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}")
        run.save()
    run.say(f"done in {time.time() - run.start:.0f} s; results in {run.out}")
    run.save()


if __name__ == "__main__":
    main()
