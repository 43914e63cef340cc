"""What a training run shows and records: a progress bar, a CSV learning curve, TensorBoard.

Metric names are namespaced like CleanRL's (``charts/episodic_return``, ``losses/value_loss``);
every agent logs through :class:`TrainingLogger`, one row per update.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CURVE_FILE", "TrainingLogger", "read_curve"]

CURVE_FILE = "learning_curve.csv"
"""File name of the learning curve in a run folder."""


class TrainingLogger:
    """Progress bar (steps, steps/s, mean return), CSV learning curve and optional TensorBoard.

    Args:
        out_dir: Run folder for ``learning_curve.csv`` and ``tensorboard/``; ``None`` writes
            nothing.
        total_steps: Environment steps of the whole run (the bar's total).
        start_step: Steps already done (a resumed run); CSV rows beyond it, left by the
            interrupted run after its last checkpoint, are dropped so the curve has no duplicates.
        progress: Show the tqdm progress bar.
        tensorboard: Also write TensorBoard event files, when ``tensorboardX`` or
            ``torch.utils.tensorboard`` is installed (silently skipped otherwise).
    """

    def __init__(self, out_dir: str | Path | None, total_steps: int, start_step: int = 0, *,
                 progress: bool = True, tensorboard: bool = True):
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.total_steps = int(total_steps)
        self._columns: list[str] | None = None
        self._csv_file = None
        self._writer = None
        self._tensorboard = None
        self._last_time = time.perf_counter()
        self._last_step = int(start_step)
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total_steps, initial=int(start_step), unit="step", unit_scale=True,
                             dynamic_ncols=True)
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._open_csv(int(start_step))
            if tensorboard:
                self._tensorboard = _tensorboard_writer(self.out_dir / "tensorboard")

    def _open_csv(self, start_step: int) -> None:
        path = self.out_dir / CURVE_FILE
        kept: list[dict[str, str]] = []
        if path.is_file() and start_step > 0:
            with path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                self._columns = list(reader.fieldnames or [])
                kept = [row for row in reader if int(float(row["global_step"])) <= start_step]
        self._csv_file = path.open("w", newline="")
        if self._columns:
            self._writer = csv.DictWriter(self._csv_file, fieldnames=self._columns)
            self._writer.writeheader()
            self._writer.writerows(kept)
            self._csv_file.flush()

    def log(self, metrics: Mapping[str, Any]) -> None:
        """Record a block of updates.

        Args:
            metrics: ``{name: (n_updates,) values}``, including ``global_step`` (environment steps
                done after each update). ``charts/steps_per_second`` is added here, from the wall
                time since the previous call.
        """
        rows = {name: np.asarray(values).reshape(-1) for name, values in metrics.items()}
        steps = rows["global_step"].astype(np.int64)
        now = time.perf_counter()
        done = int(steps[-1]) - self._last_step
        speed = done / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, int(steps[-1])
        rows["charts/steps_per_second"] = np.full(steps.shape, speed)
        if self._csv_file is not None:
            if self._writer is None:
                self._columns = ["global_step", *sorted(k for k in rows if k != "global_step")]
                self._writer = csv.DictWriter(self._csv_file, fieldnames=self._columns)
                self._writer.writeheader()
            for i in range(len(steps)):
                self._writer.writerow({k: _fmt(rows[k][i]) for k in self._columns if k in rows})
            self._csv_file.flush()
        if self._tensorboard is not None:
            for i, step in enumerate(steps):
                for name, values in rows.items():
                    if name != "global_step" and math.isfinite(float(values[i])):
                        self._tensorboard.add_scalar(name, float(values[i]), int(step))
        if self._bar is not None:
            returns = rows.get("charts/episodic_return", np.array([np.nan]))
            finite = returns[np.isfinite(returns)]
            self._bar.set_postfix({"steps/s": f"{speed:,.0f}",
                                   "return": f"{finite.mean():.1f}" if finite.size else "-"}, refresh=False)
            self._bar.update(done)

    def close(self) -> None:
        """Flush and close the files and the bar."""
        if self._bar is not None:
            self._bar.close()
        if self._csv_file is not None:
            self._csv_file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()

    def __enter__(self) -> TrainingLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(value: Any) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _tensorboard_writer(folder: Path):
    """A ``SummaryWriter`` from tensorboardX or torch, or ``None`` when neither is installed."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
    return SummaryWriter(str(folder))


def read_curve(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``learning_curve.csv`` (a run folder or the file) into ``{column: values}``."""
    path = Path(path)
    if path.is_dir():
        path = path / CURVE_FILE
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    return {key: np.asarray([float(row[key]) if row[key] != "" else np.nan for row in rows]) for key in rows[0]}
