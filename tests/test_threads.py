"""CPU thread settings: the wait policy before torch loads, the thread count, the user's choice wins."""
from __future__ import annotations

import os
import subprocess
import sys

import torch

from pyrawan import threads


def test_threads_are_the_cores_others_leave_idle_at_least_one():
    assert threads.choose_threads(2, 0.1) == 2
    assert threads.choose_threads(2, 1.2) == 1
    assert threads.choose_threads(2, 7.9) == 1
    assert threads.choose_threads(16, 3.0) == 13


def test_this_process_own_load_is_not_counted_as_others():
    assert threads.others_load(3.0, own_cpu_s=60.0, own_wall_s=30.0) == 2.0      # 60 cpu-s over the 1-min window
    assert threads.others_load(3.0, own_cpu_s=240.0, own_wall_s=120.0) == 1.0    # 2 cores busy for 2 minutes
    assert threads.others_load(0.5, own_cpu_s=60.0, own_wall_s=60.0) == 0.0


def test_a_thread_count_the_user_set_is_left_alone(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before, lines = torch.get_num_threads(), []
    assert threads.configure_cpu_threads(lines.append) is None
    assert torch.get_num_threads() == before and lines == []


def test_the_cpu_path_sets_and_prints_the_threads_once(monkeypatch):
    for name in threads.USER_VARS:
        monkeypatch.delenv(name, raising=False)
    before, lines = torch.get_num_threads(), []
    monkeypatch.setattr(threads, "_chosen", None)
    monkeypatch.setattr(threads, "_passive", True)
    try:
        assert threads.configure_cpu_threads(lines.append) == threads.cores() == torch.get_num_threads()
        assert threads.configure_cpu_threads(lines.append) == threads.cores()
        assert len(lines) == 1 and lines[0].startswith(f"cpu: {threads.cores()} torch thread")
    finally:
        torch.set_num_threads(before)


def test_importing_pyrawan_sets_a_passive_wait_policy_before_torch_unless_the_user_chose():
    code = "import os, sys, pyrawan, pyrawan.threads as t; print(os.environ.get('OMP_WAIT_POLICY'), t._passive)"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", *threads.USER_VARS)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["PASSIVE", "True"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_NUM_THREADS": "2"}, capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["None", "False"]


def test_if_torch_loaded_before_the_wait_policy_a_busy_machine_gets_one_thread(monkeypatch):
    for name in threads.USER_VARS:
        monkeypatch.delenv(name, raising=False)
    before, lines = torch.get_num_threads(), []
    monkeypatch.setattr(threads, "_chosen", None)
    monkeypatch.setattr(threads, "_passive", False)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (threads.cores() + 5.0, 0.0, 0.0))
    try:
        assert threads.configure_cpu_threads(lines.append) == 1 == torch.get_num_threads()
        assert "left idle by a load of" in lines[0]
    finally:
        torch.set_num_threads(before)
