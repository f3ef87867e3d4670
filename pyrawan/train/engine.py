"""Training engines behind one interface: a single process, torchrun DDP, or DeepSpeed ZeRO 1/2/3.

One engine per trainable model (finetune: the model; distill: the generator and the fake score),
each built from its own ``EngineSpec`` (optimiser, LR schedule, clipping, checkpoint prefix). The
loop calls, per optimiser step: ``set_lr``; per micro-step ``with engine.micro_step(last):``
(forward) and ``engine.backward(objective, last)``; then ``engine.step(skip, max_norm)``.
``objective`` is the micro-step's exact share of the step's loss (the engine rescales it as its
backend needs). Checkpoints: ``save``/``load`` of the engine's own state (weights, optimiser) under
file names that start with the engine's prefix, ``full_state_dict`` for export.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from pyrawan.errors import InputError, RunError
from pyrawan.train.config import Optimizer, Train


# Collectives may wait long for one rank's one-off work (building a latent cache, sampling L_teach's teacher
# videos): a training run's process group waits up to 2 hours instead of NCCL's 10-minute default.
GROUP_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class Context:
    """Who this process is: rank, world size, device, engine kind and compute precision."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    kind: str                      # single | ddp | deepspeed
    bf16: bool


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(train: Train, device: torch.device, dtype: str) -> Context:
    """Resolve the engine, pick this rank's device and start the process group (DeepSpeed: always)."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    kind = train.engine if train.engine != "auto" else ("ddp" if world > 1 else "single")
    if kind == "single" and world > 1:
        raise InputError(f"train.engine = single but the launcher started {world} processes (WORLD_SIZE={world}); "
                         "use train.engine: ddp or deepspeed, or run without torchrun.")
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if kind == "deepspeed":
        _init_deepspeed(device)
    elif world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=GROUP_TIMEOUT)
    return Context(rank, world, local_rank, device, kind, dtype == "bfloat16")


def _init_deepspeed(device: torch.device) -> None:
    """``deepspeed.init_distributed`` with the launcher variables set when run alone (catch #1)."""
    if device.type != "cuda":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "WORLD_SIZE" not in os.environ:
        for key, value in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                               MASTER_PORT=str(_free_port())).items():
            os.environ.setdefault(key, value)
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo", auto_mpi_discovery=False,
                               timeout=GROUP_TIMEOUT)


@dataclass(frozen=True)
class EngineSpec:
    """What one trainable model's engine needs: its optimiser, schedule length, clipping and checkpoint prefix."""

    optimizer: Optimizer
    steps: int                    # optimiser steps of the run (the cosine schedule's length)
    max_grad_norm: float
    zero_stage: int = 2
    lora: bool = False
    prefix: str = ""              # checkpoint files: f"{prefix}model.safetensors", f"{prefix}optimizer..."

    @classmethod
    def of(cls, train: Train, prefix: str = "", optimizer: Optimizer | None = None, steps: int | None = None,
           max_grad_norm: float | None = None, lora: bool | None = None) -> "EngineSpec":
        """The spec of ``train`` (finetune), with per-model replacements (distill's two models)."""
        return cls(optimizer or train.optimizer, train.steps if steps is None else steps,
                   train.max_grad_norm if max_grad_norm is None else max_grad_norm, train.zero_stage,
                   train.lora.enabled if lora is None else lora, prefix)


def lr_at(step: int, train: Train | EngineSpec) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up, then cosine or constant."""
    o = train.optimizer
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return o.lr
    progress = (step - o.warmup_steps) / max(1, train.steps - o.warmup_steps)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


class Ema:
    """fp32 exponential moving average of named parameters: ``e <- d e + (1 - d) p``."""

    def __init__(self, named: list[tuple[str, torch.nn.Parameter]], decay: float, start_step: int):
        self.named, self.decay, self.start_step = named, decay, start_step
        self.shadow = {name: p.detach().float().clone() for name, p in named}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After optimiser step ``step`` (1-based): copy until ``start_step``, then average."""
        decay = 0.0 if step <= self.start_step else self.decay
        for name, p in self.named:
            self.shadow[name].lerp_(p.detach().float(), 1 - decay)


def adamw(params: list[torch.nn.Parameter], o: Optimizer) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)


class TorchEngine:
    """One process, or DDP under torchrun; fp32 weights, bf16 autocast when ``ctx.bf16``."""

    def __init__(self, module: torch.nn.Module, spec: EngineSpec, ctx: Context):
        self.ctx, self.spec, self.module = ctx, spec, module.to(ctx.device)
        self.named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.optimizer = adamw([p for _, p in self.named], spec.optimizer)
        self.input_dtype = torch.float32
        self.model: Any = module
        if ctx.kind == "ddp" and ctx.world > 1:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=self.ctx.bf16)

    def micro_step(self, last: bool) -> contextlib.AbstractContextManager:
        """DDP reduces gradients only in the last micro-step (forward and backward inside)."""
        if isinstance(self.model, torch.nn.parallel.DistributedDataParallel) and not last:
            return self.model.no_sync()
        return contextlib.nullcontext()

    def backward(self, objective: torch.Tensor, last: bool) -> None:
        objective.backward()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, skip: bool, max_norm: float) -> tuple[float, bool]:
        """Clip, then step unless ``skip`` or the norm is not finite. Returns ``(grad norm, applied)``."""
        params = [p for _, p in self.named]
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf")))
        applied = not skip and math.isfinite(norm)
        if applied:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm, applied

    def save(self, folder: Path) -> None:
        """Rank 0: trainable weights and AdamW state (safetensors + JSON, nothing pickled)."""
        from safetensors.torch import save_file

        from pyrawan.train.checkpoint import flatten_optimizer

        if self.ctx.rank != 0:
            return
        pre = self.spec.prefix
        save_file({n: p.detach().cpu().contiguous() for n, p in self.named}, str(folder / f"{pre}model.safetensors"))
        tensors, structure = flatten_optimizer(self.optimizer.state_dict())
        save_file(tensors, str(folder / f"{pre}optimizer.safetensors"))
        (folder / f"{pre}optimizer.json").write_text(json.dumps(structure))

    def load(self, folder: Path) -> None:
        from safetensors.torch import load_file

        from pyrawan.train.checkpoint import unflatten_optimizer

        pre = self.spec.prefix
        weights = load_file(str(folder / f"{pre}model.safetensors"))
        missing = sorted({n for n, _ in self.named} - set(weights))
        if missing:
            raise RunError(f"checkpoint {folder} lacks {len(missing)} trainable tensors (e.g. {missing[0]}); it was "
                           "written by a different configuration (LoRA vs full?). Start over with --overwrite.")
        with torch.no_grad():
            for name, p in self.named:
                p.copy_(weights[name])
        structure = json.loads((folder / f"{pre}optimizer.json").read_text())
        self.optimizer.load_state_dict(unflatten_optimizer(load_file(str(folder / f"{pre}optimizer.safetensors")),
                                                           structure))

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The module's full state dict on rank 0 (None elsewhere)."""
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()} if self.ctx.rank == 0 else None

    def close(self) -> None:
        """Release what the engine holds before the process group goes (nothing for plain torch)."""


class DeepSpeedEngine(TorchEngine):
    """DeepSpeed ZeRO 1/2/3 with a client torch AdamW (no cpu_adam build); bf16 weights when ``ctx.bf16``."""

    def __init__(self, module: torch.nn.Module, spec: EngineSpec, ctx: Context, micro_steps: int):
        import deepspeed

        self.ctx, self.spec, self.micro_steps, self.lora = ctx, spec, micro_steps, spec.lora
        self.tag = f"{spec.prefix}deepspeed"
        self.named = [(n, p) for n, p in module.to(ctx.device).named_parameters() if p.requires_grad]
        config = {
            "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": micro_steps,
            "train_batch_size": micro_steps * ctx.world, "gradient_clipping": spec.max_grad_norm,
            "zero_optimization": {"stage": spec.zero_stage, "stage3_gather_16bit_weights_on_model_save": True},
            "bf16": {"enabled": ctx.bf16, "check_grad_overflow": True}, "steps_per_print": 10**9,
            "zero_allow_untested_optimizer": True,
        }
        self.model, self.optimizer, _, _ = deepspeed.initialize(
            model=module, optimizer=adamw([p for _, p in self.named], spec.optimizer), config=config)
        self.module = self.model.module
        self.named = [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        self.input_dtype = torch.bfloat16 if ctx.bf16 else torch.float32

    def autocast(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def micro_step(self, last: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def backward(self, objective: torch.Tensor, last: bool) -> None:
        """DeepSpeed divides by its accumulation count itself, and steps at the boundary."""
        if self.model.is_gradient_accumulation_boundary() != last:
            raise RunError("DeepSpeed's gradient-accumulation boundary is out of step with pyrawan's micro-steps "
                           "(a bug); please report it with the recipe.")
        self.model.backward(objective * self.micro_steps)
        self.model.step()

    def set_lr(self, lr: float) -> None:
        for group in self.model.optimizer.param_groups:
            group["lr"] = lr

    def step(self, skip: bool, max_norm: float) -> tuple[float, bool]:
        """The boundary step already ran in ``backward``; ZeRO 1/2 skip it themselves on a non-finite gradient."""
        norm = self.model.get_global_grad_norm()
        norm = float("nan") if norm is None else float(norm)
        return norm, bool(self.model.was_step_applied()) and not skip and math.isfinite(norm)

    def save(self, folder: Path) -> None:
        """DeepSpeed's own format, every rank into the same folder (catch #4)."""
        self.model.save_checkpoint(str(folder), tag=self.tag, save_latest=False, exclude_frozen_parameters=self.lora)

    def load(self, folder: Path) -> None:
        path, _ = self.model.load_checkpoint(str(folder), tag=self.tag, load_module_strict=not self.lora,
                                             load_optimizer_states=True, load_lr_scheduler_states=False)
        if path is None:
            raise RunError(f"DeepSpeed could not load the checkpoint in {folder}; start over with --overwrite.")

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Collective under ZeRO-3 (every rank must call it); the full weights on rank 0."""
        if self.model.zero_optimization_stage() == 3:
            state = self.model._zero3_consolidated_16bit_state_dict()
            return {k: v.detach().cpu() for k, v in state.items()} if self.ctx.rank == 0 else None
        return super().full_state_dict()

    def close(self) -> None:
        """Remove ZeRO's hooks and buffers while the process group is still up (a clean exit under ZeRO-3)."""
        self.model.destroy()


def make_engine(module: torch.nn.Module, spec: EngineSpec, ctx: Context, micro_steps: int) -> TorchEngine:
    """The engine of ``ctx.kind``; ``micro_steps`` = micro-steps per optimiser step (DeepSpeed's GA)."""
    if ctx.kind == "deepspeed":
        return DeepSpeedEngine(module, spec, ctx, micro_steps)
    return TorchEngine(module, spec, ctx)
