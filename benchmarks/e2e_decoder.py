"""End-to-end few-step speed with the tiny decoder (docs/decoder.md): the targets of the tiny-decoder issue.

    python benchmarks/e2e_decoder.py --model MODEL [--schedule 2-2-1] [--decoder-weights W]
        [--quality-model M] [--quality-schedule S] [--videos 96] [--fd-reference DATA] [--repeats 3]
        [--json docs/data/e2e-decoder-raw.json] [--summary docs/data/e2e-decoder-toy.json] [--summary-only]
        [--latents runs/e2e-latents.safetensors] [--quality-only] [--runs RAW.json ...]

Everything runs in this process on this machine's CPU, the two decoders side by side (interleaved
repeats, medians), so both see the same load:

1. e2e seconds per video (text encoder + transformer + decode, ``generate_batches``) of MODEL at
   ``--schedule`` with the VAE and with the tiny decoder, at batch 1 and at the default CPU batch (16);
   the ratio tiny / VAE (target <= 0.35). A 2-2-1 model's cost does not depend on its weights, so a
   pyramid that is not distilled, sampled with ``--schedule 2-2-1`` (few-step sampler), times the same.
2. ToyBench of ``--videos`` latents of ``--quality-model`` (its own schedule) decoded by both decoders:
   the paired difference tiny - VAE of the overall score with a bootstrap 95 % interval (target >= -0.03),
   each set's score and its FD to the real videos of ``--fd-reference``, and the PSNR of tiny vs VAE frames.
3. Previews: a 20-20-10 sample of MODEL with the tiny decoder, with and without ``--previews``
   (mp4s written), and the overhead (target <= 5 %).

Prints a Markdown table and writes the JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))       # results_summary, beside this script


def prompts(n: int, seed: int = 30_000) -> list[str]:
    from pyrawan.toy.world import caption, sample_scene

    rng = np.random.default_rng(seed)
    return [caption(sample_scene(rng)) for _ in range(n)]


def plan_of(model, spec: str, schedule: str | None, fewstep: bool | None):
    """The sampling plan; a few-step plan runs without guidance, as a distilled model does."""
    from pyrawan.models.generate import SampleSettings, make_plan

    return make_plan(SampleSettings(prompts=["-"], model=spec, schedule=schedule, fewstep=fewstep,
                                    guidance=1.0 if fewstep else None), model)


def run_once(model, plan, texts: list[str], batch: int, decoder, preview=None) -> float:
    """Seconds per video of sampling and decoding ``texts`` (everything ``sample`` does but writing videos)."""
    from pyrawan.models.generate import generate_batches

    start = time.perf_counter()
    for _ in generate_batches(model, plan, texts, list(range(len(texts))), batch, decoder=decoder, preview=preview):
        pass
    return (time.perf_counter() - start) / len(texts)


def side_by_side(runs: dict, repeats: int) -> dict[str, float]:
    """Median over ``repeats`` of each named callable, run interleaved (A B, B A, A B, ...)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].append(runs[name]())
    return {name: statistics.median(values) for name, values in times.items()}


def e2e_timing(model, plan, decoders: dict, repeats: int) -> list[dict]:
    """Per batch size: e2e seconds per video with each decoder, and the ratio tiny / VAE."""
    rows = []
    for batch, n in ((1, 4), (16, 16)):
        texts = prompts(n)
        run_once(model, plan, texts[:batch], batch, decoders["tiny"])            # warm-up
        times = side_by_side({name: (lambda d=d: run_once(model, plan, texts, batch, d)) for name, d in decoders.items()},
                             repeats)
        rows.append({"batch": batch, "videos": n, "seconds_per_video": times, "ratio_tiny_to_vae": times["tiny"] / times["vae"]})
    return rows


def decode_timing(latents: torch.Tensor, decoders: dict, repeats: int) -> dict:
    """Decode-only seconds per video of each decoder at batch 1 and 16."""
    out = {}
    for batch in (1, 16):
        z = latents[:batch]
        out[str(batch)] = side_by_side({name: (lambda d=d: timed(d, z) / len(z)) for name, d in decoders.items()},
                                       repeats)
    return out


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def quality_latents(model, plan, texts: list[str], saved: Path | None, spec: str = "") -> torch.Tensor:
    """The latents ToyBench scores: sampled (seeds 0..n-1), or read back from ``saved`` when it holds them for
    the same model, plan and prompts (``--latents``: compare several decoders on one set without resampling)."""
    from safetensors.torch import load_file, save_file

    from pyrawan.models.generate import generate_videos

    key = json.dumps({"model": spec, "steps": list(plan.steps), "texts": texts})
    if saved is not None and saved.is_file():
        from safetensors import safe_open

        with safe_open(str(saved), framework="pt") as handle:
            if (handle.metadata() or {}).get("key") == key:
                return load_file(str(saved))["latents"]
    latents, _ = generate_videos(model, plan, texts, list(range(len(texts))), 16, coupled_noise=True, decode=False)
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        save_file({"latents": latents.contiguous()}, str(saved), metadata={"key": key})
    return latents


def paired_toybench(model, plan, decoders: dict, n: int, fd_reference: Path | None,
                    saved: Path | None = None, spec: str = "") -> dict:
    """ToyBench of the same ``n`` latents decoded by each decoder, the paired difference and the FDs."""
    from pyrawan.eval.quality_run import fd_summary
    from pyrawan.eval.stats import mean_ci
    from pyrawan.toy.bench import score_set

    texts = prompts(n, seed=40_000)
    latents = quality_latents(model, plan, texts, saved, spec)
    frames = {name: torch.cat([d(latents[i:i + 16]) for i in range(0, n, 16)]) for name, d in decoders.items()}
    scored = {name: score_set(list(f), texts) for name, f in frames.items()}
    pairs = list(zip(scored["tiny"]["per_video"], scored["vae"]["per_video"]))
    mean, low, high = mean_ci([t["overall"] - v["overall"] for t, v in pairs])
    per_score = {k: float(np.mean([t["scores"][k] - v["scores"][k] for t, v in pairs])) for k in pairs[0][1]["scores"]}
    mse = float(((frames["tiny"] - frames["vae"]) ** 2).mean())
    result = {"videos": n, "per_score_difference": per_score, "schedule": "-".join(map(str, plan.steps)),
              "paired_overall_difference": {"mean": mean, "low": low, "high": high},
              "psnr_tiny_vs_vae_db": 10 * np.log10(1 / max(mse, 1e-12)),
              "sets": {name: {"overall": s["overall"], "scores": s["scores"]} for name, s in scored.items()}}
    if fd_reference is not None:
        for name, s in scored.items():
            result["sets"][name]["fd"] = fd_summary([r["features"] for r in s["per_video"]], fd_reference)["toybench_fd"]
    return result, latents


def preview_overhead(model, spec: str, decoder, repeats: int) -> dict:
    """20-20-10 (the model's multi-step sampler) with the tiny decoder, without and with previews written."""
    from pyrawan.commands.sample import write_previews

    plan = plan_of(model, spec, "20-20-10", False)
    texts = prompts(4)
    with tempfile.TemporaryDirectory() as tmp:
        def preview(positions, stage, frames):
            write_previews(Path(tmp), plan, list(positions), texts, stage, frames)
        run_once(model, plan, texts, 4, decoder)
        times = side_by_side({"without": lambda: run_once(model, plan, texts, 4, decoder),
                              "with": lambda: run_once(model, plan, texts, 4, decoder, preview)}, repeats)
    return {"schedule": "20-20-10", "videos": len(texts), "batch": 4, "seconds_per_video": times,
            "overhead": times["with"] / times["without"] - 1}


def table(summary: dict) -> str:
    lines = ["| measure | VAE decoder | tiny decoder | tiny / VAE | target |", "|---|---|---|---|---|"]
    for row in summary["e2e"]:
        s = row["seconds_per_video"]
        lines.append(f"| e2e s/video, {summary['schedule']}, batch {row['batch']} | {s['vae']:.3f} | {s['tiny']:.3f} | "
                     f"{row['ratio_tiny_to_vae']:.3f} | <= 0.35 |")
    for batch, s in summary["decode_only"].items():
        lines.append(f"| decode only s/video, batch {batch} | {s['vae']:.4f} | {s['tiny']:.4f} | "
                     f"{s['tiny'] / s['vae']:.3f} | |")
    q = summary["toybench"]
    d = q["paired_overall_difference"]
    sets = q["sets"]
    fd = {k: (f"{v['fd']['mean']:.2f} [{v['fd']['low']:.2f}, {v['fd']['high']:.2f}]" if "fd" in v else "-")
          for k, v in sets.items()}
    lines.append(f"| ToyBench overall ({q['videos']} videos, same latents) | {sets['vae']['overall']:.3f} | "
                 f"{sets['tiny']['overall']:.3f} | paired {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | >= -0.03 |")
    lines.append(f"| ToyBench FD to real videos | {fd['vae']} | {fd['tiny']} | | reported |")
    lines.append(f"| PSNR tiny vs VAE frames | | {q['psnr_tiny_vs_vae_db']:.2f} dB | | |")
    p = summary["previews"]
    lines.append(f"| 20-20-10 with the tiny decoder, s/video | without previews {p['seconds_per_video']['without']:.3f} | "
                 f"with {p['seconds_per_video']['with']:.3f} | overhead {100 * p['overhead']:+.1f} % | <= 5 % |")
    return "\n".join(lines)


def toy_summary(raw: dict, source: str) -> dict:
    """The docs' toy table (``docs/data/e2e-decoder-toy.json``) from the raw measurements of ``main``."""
    from results_summary import column, table

    q, p = raw["toybench"], raw["previews"]
    d, sets = q["paired_overall_difference"], q["sets"]
    rows = [[f"e2e s/video, {raw['schedule']}, batch {r['batch']}", r["seconds_per_video"]["vae"],
             r["seconds_per_video"]["tiny"], r["ratio_tiny_to_vae"], "≤ 0.35"] for r in raw["e2e"]]
    rows += [[f"decode only s/video, batch {b}", s["vae"], s["tiny"], s["tiny"] / s["vae"], ""]
             for b, s in raw["decode_only"].items()]
    rows.append([f"ToyBench overall, {q['videos']} videos, the same latents", sets["vae"]["overall"],
                 sets["tiny"]["overall"], {"value": [d["mean"], d["low"], d["high"]], "format": "+.3f",
                                           "suffix": " (paired)"}, "≥ −0.03"])
    rows.append(["ToyBench FD to the dataset", *[{"value": [v["fd"]["mean"], v["fd"]["low"], v["fd"]["high"]],
                                                   "format": ".0f"} for v in (sets["vae"], sets["tiny"])],
                 None, "reported"])
    rows.append(["20-20-10 with the tiny decoder, s/video (without / with previews)", p["seconds_per_video"]["without"],
                 p["seconds_per_video"]["with"], {"value": 100 * p["overhead"], "format": "+.1f", "suffix": " %"},
                 "≤ 5 %"])
    load = ", ".join(f"{v:.1f}" for v in raw["load_average_start"])
    return table(source, [column("measure"), column("VAE decoder", ".3f"), column("tiny decoder", ".3f"),
                          column("tiny / VAE", ".3f"), column("target")], rows,
                 note=f"one run, {raw['threads']} threads, medians of interleaved repeats; load average at the start {load}")


def runs_summary(raws: list[dict], names: list[str], source: str) -> dict:
    """The docs' table of repeated runs (``docs/data/e2e-decoder-runs.json``): each run's three timing targets
    and their median over the runs (one run on a 2-core machine moves them by several percent)."""
    from results_summary import column, table

    def targets(raw: dict) -> list[float]:
        e2e = {r["batch"]: r["ratio_tiny_to_vae"] for r in raw["e2e"]}
        return [e2e[1], e2e[16], 100 * raw["previews"]["overhead"]]

    rows = [[name, *targets(raw), ", ".join(f"{v:.1f}" for v in raw["load_average_start"])]
            for name, raw in zip(names, raws)]
    rows.append(["median", *[statistics.median(col) for col in zip(*(targets(raw) for raw in raws))], ""])
    rows.append(["target", "≤ 0.35", "≤ 0.35", "≤ 5 %", ""])
    return table(source, [column("run"), column("e2e tiny / VAE, batch 1", ".3f"),
                          column("e2e tiny / VAE, batch 16", ".3f"), column("previews overhead %", "+.1f"),
                          column("load average at the start")], rows)


def flops_summary(source: str) -> dict:
    """The docs' paper-size table (``docs/data/e2e-flops-wan13b.json``): ``pyrawan eval flops wan1.3b``'s
    end-to-end rows (transformer analytic, the Wan VAE decode counted on the meta device)."""
    from results_summary import column, table

    from pyrawan.commands.evaluate import resolve_target
    from pyrawan.eval.decode_cost import end_to_end_flops
    from pyrawan.eval.flops import flops_report

    target, rows = resolve_target("wan1.3b", []), []
    full = target.latent_shapes()[0]
    for schedules, guidance in ((["0-0-50", "20-20-10"], True), (["2-2-1"], False)):
        report = flops_report(target.arch, full, target.num_stages, target.keep_time, schedules, guidance,
                              "analytic", target.text_len)
        for r in end_to_end_flops(report, target.arch, full)["rows"]:
            name = r["schedule"] + (", CFG" if r["cfg_factor"] > 1 else ", no CFG")
            rows.append([name, r["text_encoder"], r["transformer"], r["decode"]["vae"], r["decode"]["tiny"],
                         r["end_to_end"]["vae"], r["end_to_end"]["tiny"], r["ratio_to_baseline"]["vae"],
                         r["ratio_to_baseline"]["tiny"]])
    return table(source, [column("schedule"), column("text encoder TF", ".2f"), column("transformer TF", ",.1f"),
                          column("VAE decode TF", ".1f"), column("tiny decode TF", ".2f"), column("e2e, VAE TF", ",.1f"),
                          column("e2e, tiny TF", ",.1f"), column("e2e VAE / 0-0-50", ".3f"),
                          column("e2e tiny / 0-0-50", ".3f")], rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the few-step model (or any toy pyramid, timed at --schedule)")
    ap.add_argument("--schedule", default="2-2-1")
    ap.add_argument("--decoder-weights", type=Path, default=None, help="tiny decoder instead of the model's own")
    ap.add_argument("--quality-model", default=None, help="model whose latents ToyBench scores [default: --model]")
    ap.add_argument("--quality-schedule", default=None, help="its schedule [default: its own]")
    ap.add_argument("--videos", type=int, default=96)
    ap.add_argument("--fd-reference", type=Path, default=None, help="folder of real toy videos (toy make-dataset)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path("docs/data/e2e-decoder-raw.json"), help="the raw measurements")
    ap.add_argument("--summary", type=Path, default=None, help="also write the docs' toy table summary "
                    "(e.g. docs/data/e2e-decoder-toy.json) and, beside it, e2e-flops-wan13b.json")
    ap.add_argument("--summary-only", action="store_true", help="only rewrite --summary from the existing --json")
    ap.add_argument("--runs", type=Path, nargs="+", default=None, help="with --summary-only: raw files of repeated "
                    "runs (the first is --json's); writes e2e-decoder-runs.json beside --summary")
    ap.add_argument("--latents", type=Path, default=None, help="keep the ToyBench latents in this file and reuse them "
                    "(same model, schedule and prompts) on the next run")
    ap.add_argument("--quality-only", action="store_true", help="only the ToyBench comparison (no timing); prints it")
    args = ap.parse_args(argv)
    source = "python benchmarks/e2e_decoder.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.summary_only:
        write_summaries(json.loads(args.json.read_text()), args.summary, source)
        if args.runs:
            from results_summary import write_summary

            raws = [json.loads(p.read_text()) for p in args.runs]
            write_summary(args.summary.with_name("e2e-decoder-runs.json"),
                          runs_summary(raws, [p.name for p in args.runs], source))
        return

    from pyrawan.models.artifact import load_model
    from pyrawan.models.decoders import decoder_for

    torch.manual_seed(0)
    model = load_model(args.model)
    decoders = {"vae": decoder_for(model, "vae"), "tiny": decoder_for(model, "tiny", args.decoder_weights)}
    plan = plan_of(model, args.model, args.schedule, True)
    quality = load_model(args.quality_model) if args.quality_model else model
    qdecoders = decoders if quality is model else {"vae": decoder_for(quality, "vae"),
                                                   "tiny": decoder_for(quality, "tiny", args.decoder_weights)}
    qplan = plan_of(quality, args.quality_model or args.model, args.quality_schedule, None)
    started = time.time()
    toybench, latents = paired_toybench(quality, qplan, qdecoders, args.videos, args.fd_reference, args.latents,
                                        args.quality_model or args.model)
    if args.quality_only:
        print(json.dumps(toybench, indent=1))
        return
    summary = {"model": args.model, "schedule": args.schedule, "threads": torch.get_num_threads(),
               "load_average_start": os.getloadavg(),
               "e2e": e2e_timing(model, plan, decoders, args.repeats),
               "decode_only": decode_timing(latents, decoders, args.repeats),
               "toybench": toybench, "quality_model": args.quality_model or args.model,
               "previews": preview_overhead(model, args.model, decoders["tiny"], args.repeats),
               "load_average_end": os.getloadavg(), "seconds": round(time.time() - started, 1)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=1) + "\n")
    print(table(summary))
    print(f"\nwritten: {args.json}")
    if args.summary:
        write_summaries(summary, args.summary, source)


def write_summaries(raw: dict, path: Path, source: str) -> None:
    from results_summary import write_summary

    write_summary(path, toy_summary(raw, source))
    write_summary(path.with_name("e2e-flops-wan13b.json"), flops_summary("pyrawan eval flops wan1.3b; pyrawan "
                  "eval flops wan1.3b --no-guidance (the end-to-end table)"))


if __name__ == "__main__":
    main()
