"""Process-group helpers so commands run unchanged alone or under torchrun.

Under ``torchrun`` (``WORLD_SIZE`` > 1) a gloo group (nccl when every rank has a GPU) is started
on first use; alone, every helper is a no-op.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)`` from the launcher's environment (``(0, 1)`` when run alone)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def ensure_group() -> bool:
    """Start the default process group under a launcher; True when distributed."""
    _, size = world()
    if size <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return True


def barrier() -> None:
    if ensure_group():
        dist.barrier()


def broadcast(obj: Any, src: int = 0) -> Any:
    """Send a picklable control value (a path, a list of names) from ``src`` to every rank."""
    if not ensure_group():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's control value, in rank order (a one-element list when run alone)."""
    if not ensure_group():
        return [obj]
    out: list[Any] = [None] * world()[1]
    dist.all_gather_object(out, obj)
    return out


def shard(items: list, rank: int, size: int) -> list[int]:
    """Indices of ``items`` that ``rank`` of ``size`` handles (round robin)."""
    return list(range(rank, len(items), size))


def broadcast_tensors(tensors: list[torch.Tensor], src: int = 0) -> None:
    """Overwrite every rank's tensors (in place, same order on every rank) with those of ``src``."""
    if ensure_group():
        for tensor in tensors:
            dist.broadcast(tensor.data, src=src)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over ranks (a copy; the tensor itself when run alone)."""
    if not ensure_group():
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total
