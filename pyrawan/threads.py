"""torch's CPU threads on a shared machine (``benchmarks/cpu_threads.py`` measures them; docs/results.md,
"CPU threads on a shared machine").

OpenMP threads that spin while they wait for each other lose most of their time when other processes
hold the cores: beside busy processes the toy finetune with 2 spinning threads ran 16x slower than with
2 threads that sleep instead (the fastest setting, 0.93 of a fair share of the cores beside 2 busy loops). So, unless the user chose
(``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` set), importing pyrawan sets ``OMP_WAIT_POLICY=PASSIVE``
before torch loads (``passive_wait``), and a CPU run (``configure_cpu_threads``) uses every core with
it; if torch was loaded before pyrawan (so the policy came too late), only the cores the rest of the
machine leaves idle, at least 1 (``choose_threads``). Decided once per process and printed.
"""
from __future__ import annotations

import os
import sys
import time

_IMPORTED = time.time()
USER_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_chosen: int | None = None
_passive = False        # OMP_WAIT_POLICY=PASSIVE was in place when torch loaded


def user_chose() -> bool:
    """True when the environment already sets the thread count."""
    return any(os.environ.get(name) for name in USER_VARS)


def passive_wait() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless set or the user chose the threads; only effective before torch
    loads (``pyrawan/__init__.py`` calls it first)."""
    global _passive
    if not user_chose():
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _passive = os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE" and "torch" not in sys.modules


def cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def choose_threads(cores: int, busy: float) -> int:
    """Intra-op threads for ``cores`` cores of which ``busy`` (other processes' load) are taken: the idle
    ones, at least 1."""
    return max(1, min(cores, cores - round(busy)))


def others_load(load_1min: float, own_cpu_s: float, own_wall_s: float) -> float:
    """The 1-minute load average less this process's own share of it: its CPU seconds so far over the
    minute the average spans (or over its run time, when longer)."""
    return max(0.0, load_1min - own_cpu_s / max(own_wall_s, 60.0))


def configure_cpu_threads(log=None) -> int | None:
    """Set torch's intra-op threads for a CPU run (once per process); returns the count, or None when the
    user chose it. ``log(line)`` gets one line naming the count."""
    global _chosen
    import torch

    if user_chose():
        return None
    if _chosen is None:
        load_1min = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        load = others_load(load_1min, sum(os.times()[:2]), time.time() - _IMPORTED)
        _chosen = cores() if _passive else choose_threads(cores(), load)
        torch.set_num_threads(_chosen)
        if log is not None:
            why = ("one per core, waiting passively" if _passive else
                   f"the cores of {cores()} left idle by a load of {load:.1f} from other processes")
            log(f"cpu: {_chosen} torch thread{'s' if _chosen > 1 else ''} ({why}; OMP_NUM_THREADS=N chooses)")
    return _chosen
