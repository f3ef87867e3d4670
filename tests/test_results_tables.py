"""The tables of docs/results.md and docs/toy-world.md equal their rendering from docs/data/*.json
(scripts/render_results.py, `make results`), and the benchmarks' summary writers produce that format."""
from __future__ import annotations

import importlib.util
import io
import json
import math
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


render = load(ROOT / "scripts" / "render_results.py", "render_results")
sys.path.insert(0, str(ROOT / "benchmarks"))
summary = load(ROOT / "benchmarks" / "results_summary.py", "results_summary")
paired_delta = load(ROOT / "benchmarks" / "paired_delta.py", "paired_delta")

FAKE = {"source": "made up", "date": "2026-12-07", "kind": "table",
        "columns": [{"name": "row"}, {"name": "overall", "format": ".3f"}, {"name": "Δ, paired", "format": "+.3f"},
                    {"name": "FD", "format": ",.0f"}, {"name": "time", "format": ".2f", "unit": " s", "style": "range"}],
        "rows": [["teacher", [0.592, 0.546, 0.636], "—", 12592, [0.43, 0.42, 0.44]],
                 ["student", {"value": [0.1, 0.05, 0.15], "bold": True}, {"value": [0.052, 0.027, 0.076], "bold": True,
                                                                           "suffix": " better"},
                  None, {"value": 1.19, "bold": True, "after": " (goal ≤ 1.3)", "unit": "", "format": ".2f"}],
                 ["worse", 0.5, [-0.339, -0.385, -0.0], 5, "n/a"]]}
KNOWN = """\
| row | overall | Δ, paired | FD | time |
|---|---|---|---|---|
| teacher | 0.592 [0.546, 0.636] | — | 12,592 | 0.43 s (0.42-0.44) |
| student | **0.100 [0.050, 0.150]** | **+0.052 [+0.027, +0.076] better** | | **1.19** (goal ≤ 1.3) |
| worse | 0.500 | −0.339 [−0.385, −0.000] | 5 | n/a |
"""


def test_docs_tables_equal_their_data():
    out = io.StringIO()
    assert render.check(out=out) == 0, out.getvalue()
    names = [n for doc in render.DOCS for n in render.rendered_doc(doc.read_text(encoding="utf-8"))[1]]
    assert len(names) >= 30


def marked_names() -> list[str]:
    return [m["name"] for doc in render.DOCS for m in render.MARKED.finditer(doc.read_text(encoding="utf-8"))]


def test_every_table_says_where_its_numbers_come_from():
    for name in marked_names():
        data = json.loads((render.DATA / f"{name}.json").read_text(encoding="utf-8"))
        assert data.get("source") and data.get("date"), name


def test_renderer_known_answer():
    assert render.render(FAKE, "fake") == KNOWN


def test_paired_kind_known_answer():
    data = summary.paired("made up", [("A", "B", {"mean": 0.003, "low": -0.026, "high": 0.031})], date="2026-12-07")
    assert render.render(data) == "| row | against | Δ overall, paired |\n|---|---|---|\n" \
                                  "| A | B | +0.003 [−0.026, +0.031] |\n"


@pytest.mark.parametrize("broken, message", [
    ({"source": ""}, "missing source"),
    ({"kind": "pie"}, "unknown kind"),
    ({"rows": [["only one cell"]]}, "row 0 has 1 cells"),
    ({"rows": [["x", "y", "z", "w", [1, 2]]]}, "interval"),
])
def test_renderer_refuses_broken_summaries(broken, message):
    with pytest.raises(render.TableError, match=message):
        render.render({**FAKE, **broken}, "fake")


def copy_docs(tmp_path: Path) -> tuple[list[Path], Path]:
    (tmp_path / "docs").mkdir()
    docs = [Path(shutil.copy(doc, tmp_path / "docs" / doc.name)) for doc in render.DOCS]
    data = Path(shutil.copytree(render.DATA, tmp_path / "data"))
    return docs, data


def test_a_changed_number_in_the_data_fails_the_check_and_make_results_fixes_it(tmp_path):
    docs, data = copy_docs(tmp_path)
    path = data / "toy-distill-paired.json"
    body = json.loads(path.read_text(encoding="utf-8"))
    assert body["pairs"][0]["delta"] == [0.052, 0.027, 0.076]            # DMD-OT against DMD-PT
    body["pairs"][0]["delta"][0] = 0.053
    path.write_text(json.dumps(body), encoding="utf-8")
    out = io.StringIO()
    assert render.check(docs, data, out) == 1
    assert "-| DMD-OT 2-2-1 | DMD-PT 2-2-1 | +0.052 [+0.027, +0.076] |" in out.getvalue()
    assert "+| DMD-OT 2-2-1 | DMD-PT 2-2-1 | +0.053 [+0.027, +0.076] |" in out.getvalue()
    new, _ = render.rendered_doc(docs[0].read_text(encoding="utf-8"), data)
    render.write_atomic(docs[0], new)
    assert render.check(docs, data, io.StringIO()) == 0
    assert not list(docs[0].parent.glob("*.tmp"))


def test_a_hand_edited_table_fails_the_check(tmp_path):
    docs, data = copy_docs(tmp_path)
    text = docs[1].read_text(encoding="utf-8")
    marker = "<!-- table: toy-models-teacher (make results) -->\n"
    assert marker in text
    start = text.index(marker) + len(marker)
    row = text.index("\n", text.index("\n", text.index("\n", start) + 1) + 1) + 1   # the first data row
    docs[1].write_text(text[:row] + text[row:].replace("0.", "9.", 1), encoding="utf-8")
    assert render.check(docs, data, io.StringIO()) == 1


def test_a_missing_summary_is_reported(tmp_path):
    docs, data = copy_docs(tmp_path)
    (data / "cpu-threads.json").unlink()
    out = io.StringIO()
    assert render.check(docs, data, out) == 1
    assert "cpu-threads" in out.getvalue()


# ---- the benchmarks' summary writers ------------------------------------------------------------

def test_write_summary_round_trips_through_the_renderer(tmp_path):
    data = summary.table("python benchmarks/x.py", [summary.column("row"), summary.column("overall", ".3f")],
                         [["a", summary.ci({"mean": 0.5, "low": 0.4, "high": 0.6})]], date="2026-12-07")
    path = summary.write_summary(tmp_path / "x.json", data)
    assert json.loads(path.read_text(encoding="utf-8")) == data
    assert render.render(json.loads(path.read_text(encoding="utf-8"))) == \
        "| row | overall |\n|---|---|\n| a | 0.500 [0.400, 0.600] |\n"
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        summary.table("s", [summary.column("a"), summary.column("b")], [["x"]])


def test_cpu_threads_summary_matches_the_docs_layout():
    cpu_threads = load(ROOT / "benchmarks" / "cpu_threads.py", "cpu_threads")
    measured = [(0, 1, "default", 0.35, None, 7.9), (0, 2, "PASSIVE", 0.65, None, 7.3),
                (2, 2, "default", 0.02, 0.07, 9.4), (2, 2, "PASSIVE", 0.30, 0.93, 7.3)]
    data = cpu_threads.summary(measured, "python benchmarks/cpu_threads.py --steps 12")
    assert render.render(data).splitlines()[2:] == [
        "| 0 | 1 | default | 0.35 | – | 7.9 |", "| 0 | 2 | PASSIVE | **0.65** | 1.00 | 7.3 |",
        "| 2 | 2 | default | 0.02 | 0.07 | 9.4 |", "| 2 | 2 | PASSIVE | **0.30** | 0.93 | 7.3 |"]
    assert "no spread" in data["note"]


def fake_bench(path: Path, overall: list[float]) -> Path:
    path.write_text(json.dumps({"per_video": [{"overall": v} for v in overall]}), encoding="utf-8")
    return path


def test_paired_delta_differences_and_summary(tmp_path):
    a = [fake_bench(tmp_path / "a0.json", [0.5, 0.6]), fake_bench(tmp_path / "a1.json", [0.7])]
    b = [fake_bench(tmp_path / "b0.json", [0.4, 0.4]), fake_bench(tmp_path / "b1.json", [0.8])]
    assert paired_delta.differences(a, b) == pytest.approx([0.1, 0.2, -0.1])
    with pytest.raises(SystemExit, match="not the same videos"):
        paired_delta.differences(a[:1], b)
    out = tmp_path / "pairs.json"
    paired_delta.main(["--row", "long", *map(str, a), "--against", "short", *map(str, b), "--summary", str(out)])
    first = json.loads(out.read_text(encoding="utf-8"))
    assert first["kind"] == "paired" and first["pairs"][0]["row"] == "long"
    assert first["pairs"][0]["delta"][0] == pytest.approx(0.2 / 3)
    paired_delta.main(["--row", "long", *map(str, b), "--against", "short", *map(str, a), "--summary", str(out)])
    again = json.loads(out.read_text(encoding="utf-8"))
    assert len(again["pairs"]) == 1 and again["pairs"][0]["delta"][0] == pytest.approx(-0.2 / 3)
    assert render.render(again).splitlines()[2].startswith("| long | short | −0.067 [−0.")


def test_paired_delta_pairs_eval_artifacts_by_prompt_and_seed(tmp_path):
    def metrics(path, rows):
        path.write_text(json.dumps({"videos": [{"prompt": p, "seed": s, "values": {"toybench_overall": v}}
                                               for p, s, v in rows]}), encoding="utf-8")
        return path
    a = metrics(tmp_path / "a.json", [("x", 0, 0.9), ("y", 1, 0.5)])
    b = metrics(tmp_path / "b.json", [("y", 1, 0.25), ("x", 0, 0.5)])          # shuffled
    assert sorted(paired_delta.differences([a], [b])) == pytest.approx([0.25, 0.4])


def test_toy_distill_summaries_have_the_docs_columns():
    toy_distill = load(ROOT / "benchmarks" / "toy_distill.py", "toy_distill")
    iv = {"mean": 0.5, "low": 0.4, "high": 0.6}
    def row(name, model):
        return {"row": name, "model": model, "flops_ratio": 1.0, "fd": (249.0, 191.0, 306.0),
                "intervals": {k: iv for k in ("overall", *toy_distill.SCORE_KEYS)}, "overall": [0.5, 0.6],
                "paired_vs_teacher": (0.0, 0.0, 0.0), "paired_vs_wan_dmd_2": (0.1, 0.05, 0.15)}
    rows = [row("teacher, 50 steps, CFG 3", "toy"), row("Wan-DMD-like 0-0-2", "runs/x/dmd-baseline2")]
    main, pairs = toy_distill.summaries(rows, [("Wan-DMD-like 0-0-2", "teacher, 50 steps, CFG 3")], "cmd")
    committed = json.loads((render.DATA / "toy-distill.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in main["columns"]] == [c["name"] for c in committed["columns"]]
    lines = render.render(main).splitlines()
    assert lines[2].endswith("| 249 [191, 306] | — | +0.100 [+0.050, +0.150] |")
    assert lines[3].endswith("| +0.000 [+0.000, +0.000] | — |")
    assert render.render(pairs).splitlines()[2] == \
        "| Wan-DMD-like 0-0-2 | teacher, 50 steps, CFG 3 | +0.000 [+0.000, +0.000] |"   # the same videos
    extra_rows, extra_pairs = toy_distill.extra_rows([("dmd-ot", 1800)])
    assert extra_rows == [("DMD-OT 2-2-1, 1,800 iterations", "dmd-ot-1800", "2-2-1", None)]
    assert extra_pairs == [("DMD-OT 2-2-1, 1,800 iterations", "DMD-OT 2-2-1")]
    assert toy_distill.parse_extra("dmd-ot:1800") == ("dmd-ot", 1800)


def test_toy_ablations_summary_pairs_each_row_with_the_defaults(tmp_path):
    toy_ablations = load(ROOT / "benchmarks" / "toy_ablations.py", "toy_ablations")
    def artifact(folder, values):
        (folder / "eval-1").mkdir(parents=True)
        (folder / "eval-1" / "metrics.json").write_text(json.dumps({"videos": [
            {"prompt": f"p{i}", "seed": i, "values": {"toybench_overall": v}} for i, v in enumerate(values)]}))
        return folder
    iv = {"mean": 0.5, "low": 0.4, "high": 0.6}
    metrics = {k: iv for k in ("toybench_overall", *toy_ablations.SUMMARY_SCORES)} | \
        {"toybench_fd": {"mean": 421, "low": 301, "high": 589}}
    results = {name: {"rows": [{"row": "finetuned", "schedule": "20-20-10", "eval": "eval-1", "metrics": metrics}]}
               for name in ("default", "align")}
    folders = {"default": artifact(tmp_path / "default", [0.6, 0.7, 0.8]),
               "align": artifact(tmp_path / "align", [0.4, 0.5, 0.6])}
    data = toy_ablations.summary(results, folders, "cmd", mean_ci=lambda v: (sum(v) / len(v), min(v), max(v)))
    lines = render.render(data).splitlines()
    assert lines[2] == "| default | finetuned | 20-20-10 | 0.500 [0.400, 0.600] | | 0.50 [0.40, 0.60] " \
                       "| 0.50 [0.40, 0.60] | 0.50 [0.40, 0.60] | 0.50 [0.40, 0.60] | 421 [301, 589] |"
    assert "| **−0.200 [−0.200, −0.200] worse** |" in lines[3]


def test_benchmarks_parse_their_arguments():
    import subprocess
    for script in ("toy_distill.py", "toy_ablations.py", "cpu_threads.py", "paired_delta.py", "toy_fidelity.py"):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0 and "--summary" in proc.stdout, (script, proc.stderr)


def test_toy_fidelity_pairs_rows_video_by_video_and_calls_a_difference_only_when_it_excludes_0():
    fidelity = load(ROOT / "benchmarks" / "toy_fidelity.py", "toy_fidelity")
    iv = {"mean": 0.5, "low": 0.4, "high": 0.6}

    def row(name, overall):
        return {"row": name, "overall": overall, "fd": (300.0, 200.0, 400.0),
                "intervals": {k: iv for k in ("overall", *fidelity.SCORE_KEYS)}}
    rows = [row("DMD-PT, x0 form 2-2-1", [0.5, 0.6, 0.7]), row("DMD-PT* 2-2-1", [0.5, 0.6, 0.7]),
            row("DMD-PT, eps form 2-2-1", [0.7, 0.9, 0.8]), row("DMD-OT 2-2-1", [0.3, 0.6, 0.8])]
    found = {q: d for q, _, _, d in fidelity.deltas(rows)}
    assert found["PT* vs PT (x0 form)"] == (0.0, 0.0, 0.0)                     # the same videos, paired
    assert found["the form, under PT"][0] == pytest.approx(0.2)
    assert fidelity.verdict(found["the form, under PT"]) == "better"            # every video gained
    assert fidelity.verdict((-0.05, -0.1, -0.01)) == "worse"
    assert fidelity.verdict((0.01, -0.02, 0.04)) == "not separable"
    assert "global vs stage levels, OT" not in found                            # a row that was not measured
    main, pairs = fidelity.summaries(rows, "cmd")
    assert render.render(main).splitlines()[2].startswith("| DMD-PT, x0 form 2-2-1 | 0.500 [0.400, 0.600] |")
    assert "| the form, under PT: DMD-PT, eps form 2-2-1 | DMD-PT, x0 form 2-2-1 | +0.200" in render.render(pairs)


def test_toybench_corruption_summaries_have_the_docs_columns():
    corruptions = load(ROOT / "benchmarks" / "toybench_corruptions.py", "toybench_corruptions")
    scores = {k: 1.0 for k in corruptions.SCORE_COLUMNS}
    raw = {k: 0.5 for k in corruptions.RAW_COLUMNS}
    intervals = {k: {"mean": 1.0, "n": 4 if k in ("colour", "background") else 8}
                 for k in ("overall", *corruptions.SCORE_COLUMNS, "background", "extra_objects")}

    def result(overall, fd):
        return {"videos": 8, "overall": overall, "fd": fd, "scores": dict(scores), "intervals": intervals,
                "raw": {**raw, "direction_error_deg": math.nan},
                "per_video": [{"overall": overall - 0.01}, {"overall": overall + 0.01}]}
    results = {"real": result(0.99, 23.0), "noise": result(0.45, 8282.4)}
    results["noise"]["scores"]["noise"] = 0.0
    for name in ("full", "full-errors", "targeted"):
        made = {"full": corruptions.scores_table, "full-errors": corruptions.errors_table,
                "targeted": corruptions.targeted_table}[name](results, "cmd", "note")
        committed = json.loads((render.DATA / f"toybench-validation-{name}.json").read_text(encoding="utf-8"))
        assert [c["name"] for c in made["columns"]] == [c["name"] for c in committed["columns"]], name
    lines = render.render(corruptions.scores_table(results, "cmd", "note")).splitlines()
    assert lines[3] == "| noise | " + "1.00 | " * 8 + "**0.00** | 1.00 | 0.450 (0.44–0.46) | 8282.4 |"
    assert render.render(corruptions.fd_table(results, "cmd", "note")).splitlines() == [
        "| videos | real | noise |", "|---|---|---|", "| 8 + 8 | 23.0 | 8282.4 |"]
    assert "| nan |" in render.render(corruptions.errors_table(results, "cmd", "note"))
    targeted = render.render(corruptions.targeted_table(results, "cmd", "note")).splitlines()
    assert targeted[2] == "| real | — | 1.00 on every score (colour n = 4, background 4, others 8) | 0.990 (0.98–1.00) |"
    assert targeted[3] == "| noise | noise (8) | 1.00 | 0.450 (0.44–0.46) |"
