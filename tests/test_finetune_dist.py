"""`pyrawan finetune` as real processes: a SIGKILLed run resumes to the same weights; two processes over
gloo (DDP, DeepSpeed ZeRO-2) follow the single-process loss curve; ZeRO-3 saves and resumes; the CLI
under torchrun on a latent cache built from videos.

Tolerance: the two-process runs draw exactly the micro-batches of one process with
``grad_accum = 2`` (data, noise and levels are keyed on the global micro-batch index), so their loss
curves may differ only by float32 reduction order: relative 1e-4 (measured: ~3e-7).
DeepSpeed JIT-builds its shm_comm op once (~45 s) into ``TORCH_EXTENSIONS_DIR``, which defaults to
``<venv>/torch_extensions`` here so that the build lives and dies with the environment.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
       "OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": os.environ.get(
           "TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))}
TOLERANCE = 1e-4
# Constant LR, so a run extended from 10 to 20 steps on resume follows the 20-step schedule.
BASE = ["tiny-finetune", "train.steps=20", "train.optimizer.schedule=constant", "train.checkpoint.every=10",
        "train.validation.every=10"]


def launch(*args: str, cwd: Path, procs: int = 1, module: str = "pyrawan.commands.synthetic", timeout: int = 400,
           rc: int = 0) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS``, under ``torch.distributed.run --standalone`` for several processes."""
    cmd = [sys.executable, "-m", module, *args]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
               "-m", module, *args]
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == rc, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def metrics(out: Path, kind: str, key: str) -> list:
    lines = (out.parent / f"{out.name}.run" / "metrics.jsonl").read_text().splitlines()
    return [r[key] for r in map(json.loads, lines) if r["kind"] == kind]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "transformer" / "diffusion_pytorch_model.safetensors")


def close(a: list, b: list) -> bool:
    flat = lambda v: [x for row in v for x in (row if isinstance(row, list) else [row])]  # noqa: E731
    return len(a) == len(b) and all(abs(x - y) <= TOLERANCE * abs(x) for x, y in zip(flat(a), flat(b)))


def kill_after_checkpoint(args: list[str], cwd: Path, out: Path, step: int) -> None:
    """Start ``python -m pyrawan.commands.synthetic ARGS``, SIGKILL it once checkpoint ``step`` is complete."""
    proc = subprocess.Popen([sys.executable, "-m", "pyrawan.commands.synthetic", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = out.parent / f"{out.name}.run" / "checkpoints" / f"step-{step:08d}" / "checkpoint.json"
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, f"the run ended before writing its step-{step} checkpoint"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL and not out.exists()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One process, grad_accum 2, uninterrupted: the run the others must follow."""
    work = tmp_path_factory.mktemp("reference")
    launch(*BASE, "train.grad_accum=2", "-o", "single", cwd=work)
    return work / "single"


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_weights(reference, tmp_path):
    args = [*BASE, "train.grad_accum=2", "-o", "B"]
    kill_after_checkpoint(args, tmp_path, tmp_path / "B", 10)
    resumed = launch(*args, "--resume", cwd=tmp_path)
    assert re.search(r"resumed from \S+step-00000010 \(step 10\)", resumed.stdout + resumed.stderr)
    a, b = weights(reference), weights(tmp_path / "B")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)            # bit-identical
    assert metrics(reference, "train", "loss") == metrics(tmp_path / "B", "train", "loss")
    assert metrics(reference, "validation", "val_loss_stage") == metrics(tmp_path / "B", "validation",
                                                                          "val_loss_stage")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "deepspeed"])
def test_two_processes_follow_the_single_process_loss_curve(reference, tmp_path, engine):
    launch(*BASE, f"train.engine={engine}", "train.zero_stage=2", "-o", "two", cwd=tmp_path, procs=2)
    two = tmp_path / "two"
    assert close(metrics(reference, "train", "loss"), metrics(two, "train", "loss"))
    assert close(metrics(reference, "validation", "val_loss_stage"), metrics(two, "validation", "val_loss_stage"))
    a, b = weights(reference), weights(two)
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)
    layout = sorted(p.name for p in (two.parent / "two.run" / "checkpoints" / "step-00000020").iterdir())
    assert {"checkpoint.json", "rng-0.json", "rng-1.json", "state.json"} <= set(layout)
    assert ("deepspeed" in layout) == (engine == "deepspeed")


@pytest.mark.slow
def test_zero3_saves_and_resumes(reference, tmp_path):
    zero3 = [*BASE, "train.engine=deepspeed", "train.zero_stage=3", "-o", "z3"]
    launch(*zero3, "train.steps=10", cwd=tmp_path, procs=2)
    shards = sorted(p.name for p in (tmp_path / "z3.run" / "checkpoints" / "step-00000010" / "deepspeed").iterdir())
    assert shards == [f"zero_pp_rank_{r}_mp_rank_00_{part}_states.pt" for r in (0, 1) for part in ("model", "optim")]
    resumed = launch(*zero3, "--resume", "--overwrite", cwd=tmp_path, procs=2)
    assert "resumed from" in resumed.stdout + resumed.stderr
    out = tmp_path / "z3"
    assert metrics(out, "train", "step") == list(range(1, 21))
    assert close(metrics(reference, "train", "loss"), metrics(out, "train", "loss"))
    assert close(metrics(reference, "validation", "val_loss_stage"), metrics(out, "validation", "val_loss_stage"))


@pytest.mark.slow
def test_cli_under_torchrun_trains_on_a_cache_built_from_videos(tmp_path):
    from synthetic import make_dataset, smooth_video

    make_dataset(tmp_path / "data", "sidecar", [smooth_video(i) for i in range(6)])
    launch("finetune", "tiny-finetune", "data.root=data", "train.steps=2", "train.validation.holdout=2",
           "train.checkpoint.every=1", "-o", "F", cwd=tmp_path, procs=2, module="pyrawan")
    manifest = json.loads((tmp_path / "F" / "manifest.json").read_text())
    assert manifest["metrics"]["world_size"] == 2 and manifest["metrics"]["steps"] == 2
    assert any("cache" in entry["path"] for entry in manifest["inputs"])
    launch("verify", "F", cwd=tmp_path, module="pyrawan")
    assert len(metrics(tmp_path / "F", "validation", "val_loss_stage")) == 2
