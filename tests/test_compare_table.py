"""The printed `eval compare` table at terminal widths 80, 120 and 160: folded, never an empty "…" cell,
every header whole; the default columns are the quality metric and the metrics that differ."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from pyrawan.commands.eval_compare import column_widths, fold, print_table, shown_metrics
from pyrawan.errors import InputError
from pyrawan.eval.artifact import build_eval
from pyrawan.eval.compare import compare, default_metrics, markdown, table_rows

SCORES = ("detection", "colour", "shape", "size", "background", "direction", "speed", "sharpness")
ROWS = (("teacher", "50", 0.0), ("pyramid, not finetuned", "20-20-10", -0.3), ("pyramid, finetuned", "20-20-10", -0.1),
        ("pyramid, finetuned (cheap)", "4-4-2", -0.15))


def demo_like() -> dict:
    """Four rows of 12 videos with the demo's labels and ToyBench's nine metrics; only detection and overall
    move (the other scores are the same in every row)."""
    evals = []
    for label, schedule, shift in ROWS:
        videos = [{"index": i, "prompt": f"prompt {i}", "seed": i, "video": None,
                   "values": {"toybench_overall": 0.7 + shift + 0.01 * (i % 3),
                              **{f"toybench_{s}": 0.5 + 0.01 * (i % 4) + (shift if s == "detection" else 0.0)
                                 for s in SCORES}}} for i in range(12)]
        evals.append(build_eval("quality", label, videos, model=label, schedule=schedule, tflops_per_video=0.3,
                                seconds_per_video=0.2))
    return compare(evals, 0)


def render(result: dict, metrics: list[str], width: int) -> str:
    stream = io.StringIO()
    print_table(result, metrics, Console(file=stream, width=width, force_terminal=False))
    return stream.getvalue()


@pytest.mark.parametrize("width", [80, 120, 160])
@pytest.mark.parametrize("which", ["default", "all"])
def test_the_printed_table_fits_the_width_with_whole_headers_and_no_empty_cells(width, which):
    result = demo_like()
    metrics = shown_metrics(result, None, show_all=which == "all")
    text = render(result, metrics, width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in text                             # no cell or header cut to an ellipsis
    for header in ["model", "schedule", "cost × baseline", *metrics]:
        assert header in text, header
    for label, _, _ in ROWS:
        assert label in text
    assert "0.710 [" in text and "Δ -0.300*" in text     # the teacher's overall, a starred delta


def test_the_default_columns_are_the_quality_metric_and_those_that_differ():
    result = demo_like()
    assert default_metrics(result) == ["toybench_overall", "toybench_detection"]
    assert len(result["metrics"]) == 9


def test_a_narrow_terminal_folds_the_columns_into_parts_that_each_repeat_the_model():
    assert fold([10, 5, 5, 5], width=100) == [[1, 2, 3]]
    assert fold([10, 20, 20, 20], width=14 + 23 + 23) == [[1, 2], [3]]
    assert fold([10, 90], width=40) == [[1]]                  # too wide alone: its own part, its cells wrap
    text = render(demo_like(), shown_metrics(demo_like(), None, show_all=True), 80)
    assert "part 1 of" in text and text.count("pyramid, finetuned (cheap)") > 1


def test_folded_cells_put_the_delta_on_a_second_line_and_markdown_keeps_one_line():
    result = demo_like()
    header, rows = table_rows(result, ["toybench_overall"], folded=True)
    assert rows[1][-1].split("\n")[1].startswith("Δ -0.300*") and column_widths(header, rows)[-1] < 30
    assert "(Δ -0.300*" in markdown(result, ["toybench_overall"])


def test_columns_must_name_metrics_of_the_artifacts():
    with pytest.raises(InputError, match="toybench_colur: no such metric"):
        shown_metrics(demo_like(), ["toybench_colur"], show_all=False)
