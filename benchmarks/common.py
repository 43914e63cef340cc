"""Shared pieces of the experiment scripts: run context, results, confidence intervals."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recgym.evaluation import mean_ci  # noqa: F401  (the one mean_ci, re-exported for experiments)


@dataclass(frozen=True)
class RunContext:
    """What every experiment receives from ``python -m benchmarks.run``.

    Attributes:
        quick: Run the small configuration (CI, smoke tests): fewer seeds, users and steps.
        out_dir: Folder the experiment may write files (plots, extra JSON) into.
        dataset: Name of the MovieLens dataset to use, or ``"synthetic"``.
        synthetic: ``True`` when MovieLens could not be resolved and the synthetic world stands in;
            every result written is then marked synthetic.
        seed: Base seed; experiments derive every other seed from it.
    """

    quick: bool
    out_dir: Path
    dataset: str
    synthetic: bool
    seed: int = 0


@dataclass
class ExperimentResult:
    """One experiment's output: a Markdown table plus machine-readable records.

    Attributes:
        name: Experiment id (the key in :data:`benchmarks.experiments.EXPERIMENTS`).
        title: Human title printed above the table.
        columns: Column names of the table, in order.
        rows: Table rows (dicts keyed by column; values already formatted or numbers).
        notes: Free-text lines printed under the table (protocol, caveats).
        records: Raw numbers for the JSON file (defaults to ``rows``).
        figures: Paths of plots written by the experiment.
        uses_dataset: Whether the numbers depend on the resolved MovieLens dataset (only those
            tables are marked synthetic when the synthetic world stands in).
    """

    name: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] | None = None
    figures: list[Path] = field(default_factory=list)
    uses_dataset: bool = True

    def to_markdown(self) -> str:
        """Render the table (and notes) as GitHub-flavoured Markdown."""
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |"]
        lines.append("|" + "|".join(" --- " for _ in self.columns) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in self.columns) + " |")
        if self.notes:
            lines.append("")
            lines.extend(f"* {note}" for note in self.notes)
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        """The JSON-serialisable form written to ``<name>.json``."""
        return {
            "name": self.name,
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows,
            "notes": self.notes,
            "records": self.records if self.records is not None else self.rows,
            "figures": [str(p) for p in self.figures],
        }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_ci(mean: float, half_width: float, digits: int = 3) -> str:
    """``"mean ± half_width"`` with ``digits`` significant decimals."""
    if math.isnan(half_width):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half_width:.{digits}f}"


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default))
    tmp.replace(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
