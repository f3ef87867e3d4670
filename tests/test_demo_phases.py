"""The demo's up-front estimate, its per-phase estimates that follow the measured pace, and its output folder."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from pyrawan.commands import demo
from pyrawan.errors import InputError
from pyrawan.outputs import fresh_folder


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_schedule_costs_its_steps_at_full_resolution():
    assert demo.full_steps("50") == 50
    assert demo.full_steps("20-20-10") == pytest.approx(20 / 64 + 20 / 8 + 10)      # 0.256 of 50 steps
    assert demo.full_steps("1-1-1") == pytest.approx(1 + 1 / 8 + 1 / 64)


def test_phase_estimates_grow_with_the_sizes_and_the_quick_demo_is_far_shorter():
    full, quick = demo.phase_seconds(demo.DemoSizes()), demo.phase_seconds(demo.DemoSizes.quick())
    assert len(full) == 4 + len(demo.DemoSizes().rows()) + 1 == len(quick)
    assert sum(quick) < sum(full) / 5
    longer = demo.phase_seconds(demo.DemoSizes(finetune_steps=800))
    assert longer[3] == pytest.approx(2 * full[3]) and longer[4:] == full[4:]
    assert full[4] > full[5] > full[7]       # teacher (50 steps) > pyramid 20-20-10 > cheap 4-4-2


def test_each_phase_estimate_follows_the_pace_of_the_phases_before(monkeypatch):
    stream, clock = io.StringIO(), FakeClock()
    monkeypatch.setattr(demo, "console", Console(file=stream, width=200))
    phases = demo.Phases([10.0, 100.0, 50.0], clock=clock)
    with phases.phase("first"):
        clock.now += 30.0                    # three times slower than estimated
    with phases.phase("second"):
        clock.now += 200.0
    lines = stream.getvalue().splitlines()
    assert "demo [1/3] first (about 10 s)" in lines[0]
    assert "done in 30 s (30 s so far, about 7 min 30 s left)" in lines[1]      # (100 + 50) x 3
    assert "demo [2/3] second (about 5 min 00 s)" in lines[2]                  # 100 x 3
    assert "about 1 min 45 s left" in lines[3]                                 # 50 x 230 / 110


def test_quick_demo_writes_elsewhere_and_an_earlier_demo_is_replaced_only_with_overwrite(tmp_path):
    assert demo.default_out(True).name == "demo-quick" and demo.default_out(False).name == "demo"
    fresh_folder(tmp_path / "demo", "demo")
    (tmp_path / "demo" / "results.json").write_text("{}")
    with pytest.raises(InputError, match="--overwrite"):
        demo.run(tmp_path / "demo", quick=True)
    assert (tmp_path / "demo" / "results.json").read_text() == "{}"
