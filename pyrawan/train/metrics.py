"""Training metrics: ``metrics.jsonl`` (one JSON object per step or validation), TensorBoard when
installed, and a rich progress bar with loss, it/s and ETA. Only rank 0 logs."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

from pyrawan.fsutil import json_safe
from pyrawan.ui import console, log_progress


class MetricsLog:
    """Append-only JSON lines in ``folder/metrics.jsonl``; scalars also go to TensorBoard if available."""

    def __init__(self, folder: Path, enabled: bool, resume_step: int | None = None):
        self.path, self.enabled, self.writer = folder / "metrics.jsonl", enabled, None
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self._truncate(resume_step)
        try:
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(str(folder / "tensorboard"), purge_step=resume_step)

    def _truncate(self, resume_step: int | None) -> None:
        """Keep only records up to ``resume_step`` (a fresh file when None)."""
        lines = self.path.read_text().splitlines() if self.path.is_file() and resume_step is not None else []
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= resume_step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, record: dict) -> None:
        """Append ``record`` (non-finite numbers are written as the strings "nan" / "inf", strict JSON)."""
        if not self.enabled:
            return
        record = json_safe(record, as_string=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, allow_nan=False) + "\n")
        if self.writer is not None:
            prefix = "val" if record.get("kind") == "validation" else "train"
            for key, value in record.items():
                values = value if isinstance(value, list) else [value]
                for i, v in enumerate(values):
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and key != "step":
                        tag = f"{prefix}/{key}" + (f"/stage{i}" if isinstance(value, list) else "")
                        self.writer.add_scalar(tag, v, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class SpeedColumn(ProgressColumn):
    """Optimiser steps per second."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.2f} it/s" if task.speed else "- it/s")


@contextlib.contextmanager
def progress(total: int, done: int, enabled: bool, label: str = "finetune") -> Iterator:
    """A progress bar with loss, it/s and ETA (plain lines when stderr is not a terminal, ``pyrawan.ui``);
    yields ``update(loss)`` to call once per step."""
    if not enabled:
        yield lambda loss: None
        return
    if not console.is_terminal:
        with log_progress(label, total, done) as advance:
            yield lambda loss: advance(loss=f"{loss:.4f}")
        return
    columns = (TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
               SpeedColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=total, completed=done, loss="-")
        yield lambda loss: bar.update(task, advance=1, loss=f"{loss:.4f}")
