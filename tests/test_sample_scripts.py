"""The GPU speed script runs end to end as a CPU harness at tiny size (its GPU figures need a GPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_speed_script_runs_as_a_tiny_cpu_harness(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_speed.py"), "--tiny", "--out", str(tmp_path),
                           "--skip", "regional,compile,cudagraphs"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    sections = results["sections"]
    forward = sections["forward"]
    assert all(len(ms) == 3 and min(ms) > 0 for ms in forward.values())
    assert sections["backends"]["native"] and sections["compile"] == "skipped (asked)"
    assert {"stage 1", "stage 2"} <= set(sections["profile"])
    assert (tmp_path / "trace_stage2.json").stat().st_size > 0 and (tmp_path / "profile_stage1.txt").is_file()
    rows = sections["summary"]["schedules"]
    assert rows["0-0-50"]["dit_vs_baseline"] == 1.0 and not rows["2-2-1"]["cfg"]
    assert rows["2-2-1"]["end_to_end_ms"] > rows["2-2-1"]["dit_ms"]          # text + decode added
    assert results["environment"]["torch"] and "diffusers" in results["environment"]


def _load_benchmark(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ablation_table_calls_a_row_better_or_worse_only_on_disjoint_intervals():
    ablations = _load_benchmark("toy_ablations")

    def result(overall: dict[str, tuple[float, float, float]]) -> dict:
        cell = lambda m, lo, hi: {"mean": m, "low": lo, "high": hi}  # noqa: E731
        return {"rows": [{"row": row, "schedule": "20-20-10", "cost_ratio": 0.29,
                          "metrics": {k: cell(*v) for k in ablations.METRICS} | {"toybench_fd": {"mean": 100.0}}}
                         for row, v in overall.items()]}

    results = {"default": result({"teacher": (0.12, 0.11, 0.13), "finetuned": (0.08, 0.07, 0.09)}),
               "a": result({"teacher": (0.12, 0.11, 0.13), "finetuned": (0.10, 0.095, 0.11)}),
               "b": result({"teacher": (0.12, 0.11, 0.13), "finetuned": (0.085, 0.075, 0.095)}),
               "c": result({"teacher": (0.12, 0.11, 0.13), "finetuned": (0.05, 0.04, 0.06)})}
    rows, md = ablations.table(results)
    verdicts = {(r["configuration"], r["row"]): r["verdict"] for r in rows}
    assert verdicts == {("default", "teacher"): "", ("default", "finetuned"): "", ("a", "finetuned"): "better",
                        ("b", "finetuned"): "not separable", ("c", "finetuned"): "worse"}
    assert md.count("\n") == 2 + len(rows) and "| a | finetuned | 20-20-10 | 0.290 | 0.100 [0.095, 0.110] | better |" in md
