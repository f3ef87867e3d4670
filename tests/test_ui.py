"""Progress in logs: plain lines on a fake clock when stderr is not a terminal."""
from __future__ import annotations

import io

from rich.console import Console

from pyrawan import ui


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_log_progress_prints_a_first_estimate_then_a_line_per_interval():
    clock, lines = FakeClock(), []
    bar = ui.LogProgress("finetune", total=100, every=30, clock=clock, write=lines.append)
    for _ in range(10):                  # 2 steps per second: 10 steps in 5 s -> the first line with an ETA
        clock.now += 0.5
        bar.advance(loss="0.5000")
    assert lines == ["finetune: 10/100 (10%), 2.00 it/s, 45 s left, loss 0.5000"]
    for _ in range(59):                  # 29.5 s more: under the interval, no line
        clock.now += 0.5
        bar.advance()
    assert len(lines) == 1
    clock.now += 0.5
    bar.advance(loss="0.2500")
    assert lines[-1] == "finetune: 70/100 (70%), 2.00 it/s, 15 s left, loss 0.2500"
    for _ in range(30):
        clock.now += 0.5
        bar.advance()
    bar.close()
    assert lines[-1] == "finetune: 100/100 (100%), 2.00 it/s, done in 50 s, loss 0.2500" and len(lines) == 3


def test_log_progress_rate_counts_only_this_run_s_steps_and_slow_loops_read_in_seconds_per_step():
    clock, lines = FakeClock(), []
    bar = ui.LogProgress("finetune", total=400, done=200, every=30, clock=clock, write=lines.append)   # resumed at 200
    clock.now += 40
    bar.advance()
    assert lines == ["finetune: 201/400 (50%), 40.0 s/it, 2 h 12 min left"]
    bar.close()                          # the last step already printed its line
    assert len(lines) == 1


def test_progress_bar_writes_plain_lines_to_a_stream_that_is_not_a_terminal(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(ui, "console", Console(file=stream, force_terminal=False, width=200))
    with ui.progress_bar("cache: encoding videos", total=3) as advance:
        for _ in range(3):
            advance()
    text = stream.getvalue()
    assert text.startswith("cache: encoding videos: 3/3 (100%)") and "\x1b[" not in text and "━" not in text


def test_the_log_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("PYRAWAN_PROGRESS_EVERY", "5")
    assert ui.log_every() == 5.0
    for bad in ("0", "-3", "soon"):
        monkeypatch.setenv("PYRAWAN_PROGRESS_EVERY", bad)
        assert ui.log_every() == ui.LOG_EVERY_S


def test_duration_reads_as_seconds_minutes_or_hours():
    assert [ui.duration(s) for s in (42.4, 185, 3725)] == ["42 s", "3 min 05 s", "1 h 02 min"]
