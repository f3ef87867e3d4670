"""VBench export (names and counts from a fixture prompt file) and import (VBench's results format).

The fixture ``tests/fixtures/vbench/VBench_full_info.json`` has VBench's full-info layout
(``[{"prompt_en", "dimension": [...]}]``) with made-up prompts; VBench itself is never run here.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyrawan.cli import app
from pyrawan.errors import InputError
from pyrawan.eval import vbench as vb
from pyrawan.manifest import read_manifest, verify

FIXTURES = Path(__file__).parent / "fixtures" / "vbench"
INFO = FIXTURES / "VBench_full_info.json"


def test_suite_merges_repeated_prompts_and_filters_dimensions():
    prompts = vb.read_suite(INFO)
    assert len(prompts) == 3
    assert prompts[0].dimensions == ("temporal_flickering", "subject_consistency", "color")
    assert [p.prompt for p in vb.read_suite(INFO, ["temporal_flickering"])] == [prompts[0].prompt, prompts[2].prompt]
    with pytest.raises(InputError, match="not in .*it has: color, dynamic_degree"):
        vb.read_suite(INFO, ["motion_smoothness"])


def test_names_counts_and_seeds():
    prompts = vb.read_suite(INFO)
    items = vb.export_items(prompts, vb.samples_per_prompt("vbench"), seed=10, suite="vbench")
    assert len(items) == 3 * 5
    assert items[0]["file"] == "a red square slowly moving left on a plain black background-0.mp4"
    assert [it["seed"] for it in items[:5]] == [10, 11, 12, 13, 14] == [it["seed"] for it in items[5:10]]
    assert vb.samples_per_prompt("vbench2") == 3
    assert vb.video_name("x" * 300, 2, "vbench2") == "x" * 180 + "-2.mp4"
    with pytest.raises(InputError, match="'/'"):
        vb.video_name("a/b", 0)
    assert vb.parse_video_name("/d/a-b c-12.mp4") == ("a-b c", 12)


def test_missing_vbench_package_says_how_to_get_the_prompt_file(monkeypatch):
    monkeypatch.setattr(vb, "installed_info", lambda suite: (None, None))
    with pytest.raises(InputError, match=r"pip download --no-deps vbench==0\.1\.5"):
        vb.locate_info("vbench")


def test_results_parsing_counts_bools_and_rejects_other_shapes(tmp_path):
    results = vb.read_results(FIXTURES / "sample_eval_results.json")
    records, reported = vb.result_records(results)
    assert reported == {"vbench_temporal_flickering": 0.975, "vbench_dynamic_degree": 0.5}
    assert [r["values"] for r in records] == [{"vbench_temporal_flickering": 0.98}, {"vbench_temporal_flickering": 0.97},
                                              {"vbench_dynamic_degree": 1.0}, {"vbench_dynamic_degree": 0.0}]
    assert records[1]["prompt"] == "a red square slowly moving left on a plain black background" and records[1]["sample"] == 1
    bad = tmp_path / "bad_eval_results.json"
    bad.write_text(json.dumps({"color": {"mean": 1}}))
    with pytest.raises(InputError, match="key 'color'"):
        vb.read_results(bad)


@pytest.mark.slow
def test_export_then_import_round_trip(tmp_path, one_thread):
    runner = CliRunner()
    r = runner.invoke(app, ["eval", "vbench", "export", "--model", "toy", "--vbench-info", str(INFO),
                            "--samples-per-prompt", "2", "--schedule", "1", "--seed", "3", "-q", "-o", str(tmp_path / "x")])
    assert r.exit_code == 0, r.output
    expected = [f"{p.prompt}-{i}.mp4" for p in vb.read_suite(INFO) for i in range(2)]
    assert sorted(p.name for p in (tmp_path / "x" / "videos").iterdir()) == sorted(expected)
    mapping = json.loads((tmp_path / "x" / "prompts.json").read_text())
    assert mapping == {f"{p.prompt}-{i}.mp4": p.prompt for p in vb.read_suite(INFO) for i in range(2)}
    resolved = read_manifest(tmp_path / "x")["recipe"]["resolved"]
    assert resolved["samples_per_prompt"] == 2 and resolved["schedule"] == "1" and resolved["seed"] == 3
    assert verify(tmp_path / "x") == []

    # VBench's output for these videos (as its evaluate writes it), scores made up per video
    scores = {name: 0.9 + 0.01 * k for k, name in enumerate(expected)}
    results = {"temporal_flickering": [sum(scores.values()) / len(scores),
                                       [{"video_path": f"/gpu/run/videos/{n}", "video_results": s} for n, s in scores.items()]]}
    path = tmp_path / "ft_eval_results.json"
    path.write_text(json.dumps(results))
    r = runner.invoke(app, ["eval", "vbench", "import", str(path), "--export", str(tmp_path / "x"), "-o", str(tmp_path / "i")])
    assert r.exit_code == 0, r.output
    body = json.loads((tmp_path / "i" / "metrics.json").read_text())
    assert body["label"] == "ft" and body["kind"] == "vbench" and len(body["videos"]) == len(expected)
    got = {v["file"]: v for v in body["videos"]}
    for name, score in scores.items():
        assert got[name]["values"] == {"vbench_temporal_flickering": score}
        assert got[name]["seed"] == 3 + int(name.rsplit("-", 1)[1][:-4])
        assert (tmp_path / "i" / got[name]["video"]).is_file()
    s = body["summary"]["vbench_temporal_flickering"]
    assert s["mean"] == pytest.approx(results["temporal_flickering"][0]) and s["low"] < s["mean"] < s["high"]
    assert json.loads((tmp_path / "i" / "vbench" / path.name).read_text()) == results
