"""Small pieces every command shares: device and dtype choice, progress bars."""
from __future__ import annotations

import torch

from pyrawan.errors import InputError
from pyrawan.threads import configure_cpu_threads
from pyrawan.ui import console, progress_bar  # noqa: F401  (re-exported for the commands)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str | None) -> torch.device:
    """``auto`` (or None) -> cuda when available, else cpu; ``cuda`` without a GPU is an input error."""
    if name in (None, "auto"):
        return cpu_threads(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device = {name!r} was asked for but torch sees no CUDA GPU "
                         f"(torch {torch.__version__}); use device=cpu or install a CUDA build of torch.")
    return cpu_threads(device)


def cpu_threads(device: torch.device) -> torch.device:
    """On the CPU: torch's threads for a shared machine, printed once (``pyrawan.threads``); returns ``device``."""
    if device.type == "cpu":
        configure_cpu_threads(lambda line: console.print(line, markup=False, style="dim"))
    return device


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """A dtype name; None -> bfloat16 on CUDA, float32 elsewhere."""
    if name is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise InputError(f"dtype = {name!r} is not supported; choose one of {', '.join(DTYPES)}.")
    return DTYPES[name]
