"""What surrounds every training loop: the run folder, the resume point, checkpoints of all engines
(each with its EMA), random generator states and the loop's counters, the non-finite policy, teardown.

A command (``finetune``, ``distill``) owns only its loop: it lists its trainable models as
``Trainable`` (an engine and its EMA) and calls ``save_checkpoint`` / ``restore_checkpoint`` with
the counters it needs back (``state``). Run state lives in ``OUT.run/`` (checkpoints/,
metrics.jsonl, tensorboard/, curves.png); the finished model is the artifact ``OUT``.
"""
from __future__ import annotations

import gc
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from pyrawan.errors import InputError, RunError
from pyrawan.recipe import recipe_sha256
from pyrawan.train import checkpoint as ckpt
from pyrawan.train.engine import Context, Ema, TorchEngine
from pyrawan.ui import console


@dataclass
class Trainable:
    """One trained model: its engine (optimiser, checkpoint prefix) and its EMA (or None)."""

    engine: TorchEngine
    ema: Ema | None = None

    @property
    def prefix(self) -> str:
        return self.engine.spec.prefix


def run_folder(out: Path) -> Path:
    """Where checkpoints and metrics of the run that makes ``out`` live."""
    return out.with_name(out.name + ".run")


def flat(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def as_read_now(saved: dict) -> dict:
    """A checkpoint's resolved recipe as this pyrawan reads it: keys added since, at their defaults.

    So a newer pyrawan that only adds recipe keys can resume an older run; a recipe it cannot read
    any more is compared as it was saved (and any difference is reported).
    """
    from pyrawan.recipe import resolve_recipe, validate_recipe

    try:
        return resolve_recipe(validate_recipe(saved))
    except (InputError, ValueError, TypeError, KeyError):
        return saved


def resume_point(command: str, run: Path, resolved: dict, resume: bool, overwrite: bool,
                 resumable: Sequence[str]) -> Path | None:
    """Rank 0: the checkpoint to resume from (None = start fresh), after checking the recipe matches.

    Without ``resume``, earlier checkpoints are an error unless ``overwrite`` (then they are removed:
    only what a run writes there). Keys in ``resumable`` may differ between a run and its resume; keys
    this version added to the recipe schema count as their defaults in an older checkpoint.
    """
    root = run / "checkpoints"
    if not resume:
        if root.is_dir() and any(root.iterdir()) and not overwrite:
            raise InputError(f"{root} holds checkpoints of an earlier run; pass --resume to continue it, or "
                             "--overwrite to start over (deletes them).")
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(run / "tensorboard", ignore_errors=True)
        return None
    found = ckpt.latest(root, report=lambda m: console.print(f"{command}: {m}", markup=False))
    if found is None:
        console.print(f"{command}: no complete checkpoint in {root}; starting from step 0", markup=False)
        return None
    saved = ckpt.read_state(found).get("recipe")
    if not isinstance(saved, dict):
        raise InputError(f"--resume: checkpoint {found} records no recipe, so it cannot be checked against this run; "
                         "start over with --overwrite.")
    old, new = flat(as_read_now(saved)), flat(resolved)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in resumable)
    if changed:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
        raise InputError(f"--resume: the recipe differs from the one of checkpoint {found} ({shown}); only "
                         f"{', '.join(resumable)} may change. Restore the recipe or start over with --overwrite.")
    return found


def save_checkpoint(run: Path, step: int, models: Sequence[Trainable], ctx: Context, resolved: dict,
                    counters: dict, keep: int) -> Path:
    """Collective: every rank writes its part of checkpoint ``step`` (all engines, EMAs, RNG, counters)."""
    def write(folder: Path) -> None:
        for m in models:
            m.engine.save(folder)
            if m.ema is not None and ctx.rank == 0:
                ckpt.save_tensors(folder / f"{m.prefix}ema.safetensors", m.ema.shadow)
    state = {"step": step, **counters, "world_size": ctx.world, "engine": ctx.kind,
             "recipe_sha256": recipe_sha256(resolved), "recipe": resolved}
    return ckpt.save(run / "checkpoints", step, write, state, keep)


def restore_checkpoint(command: str, folder: Path, models: Sequence[Trainable], ctx: Context) -> dict:
    """Load every engine, EMA and this rank's generator states from a verified checkpoint; returns its state."""
    state = ckpt.read_state(folder)
    if ctx.kind == "deepspeed" and state["world_size"] != ctx.world:
        raise InputError(f"checkpoint {folder} was written by {state['world_size']} DeepSpeed processes but this run "
                         f"has {ctx.world}; resume with the same number of processes.")
    for m in models:
        m.engine.load(folder)
        if m.ema is not None:
            m.ema.shadow = {k: v.to(ctx.device) for k, v in ckpt.load_tensors(folder / f"{m.prefix}ema.safetensors").items()}
    ckpt.restore_rng(folder, ctx.rank)
    if ctx.rank == 0:
        console.print(f"{command}: resumed from {folder} (step {state['step']})", markup=False)
    return state


def nonfinite(command: str, run: Path, step: int, what: str, items: list[str], rank: int, policy: str,
              fix: str) -> None:
    """Stop with a message naming the step (keeping the last good checkpoint), or report a skipped step."""
    if policy == "skip":
        console.print(f"{command}: step {step}: {what}; step skipped (on_nonfinite = skip; items "
                      f"{', '.join(items[:12]) or 'on other ranks'})", markup=False)
        return
    last = ckpt.latest(run / "checkpoints", report=lambda m: None)
    kept = f"the last good checkpoint is {last} (continue with --resume)" if last else "no checkpoint was written yet"
    where = (f"items with a non-finite loss on rank {rank}: {', '.join(items[:12])}" if items else
             f"no item of rank {rank} has a non-finite loss")
    raise RunError(f"{command} stopped at step {step}: {what}; {where}. {kept}. Fix: {fix}")


def interrupted(out: Path, step: int, every: int) -> KeyboardInterrupt:
    """Ctrl-C at ``step``: a KeyboardInterrupt whose text says what is kept (the CLI prints it), and promises
    ``--resume`` only when a complete checkpoint exists."""
    run = run_folder(out)
    last = ckpt.latest(run / "checkpoints", report=lambda m: None)
    if last is not None:
        kept = (f"stopped at step {step}; the checkpoints under {run / 'checkpoints'} are kept (the last: {last.name}); "
                f"continue from it with the same command plus --resume.")
    else:
        why = "train.checkpoint.every = 0" if not every else f"the first comes at step {every}"
        kept = (f"stopped at step {step} before any checkpoint ({why}), so nothing can be resumed; the losses so far "
                f"are kept in {run / 'metrics.jsonl'} until the next start. Run the same command again to start over "
                f"(with train.checkpoint.every=N it can be resumed after a stop).")
    return KeyboardInterrupt(f"{kept} The model folder {out} was not written.")


def describe_nonfinite(loss: float, norm: float) -> str:
    return f"non-finite {'loss' if not math.isfinite(loss) else 'gradient norm'} (loss {loss}, gradient norm {norm})"


def ema_state(state: dict[str, torch.Tensor], model: Trainable) -> dict[str, torch.Tensor]:
    """``state`` (a full state dict) with ``model``'s EMA weights in place of its trained ones."""
    if model.ema is None:
        return state
    return {**state, **{k: v.to(state[k].dtype).cpu() for k, v in model.ema.shadow.items()}}


def teardown(models: Sequence[Trainable], *closers: Callable[[], None]) -> None:
    """Release engines (while the process group is up), then end the process group."""
    for close in closers:
        close()
    for m in models:
        m.engine.close()
    gc.collect()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
