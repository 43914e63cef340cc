"""The command-line training loop every agent shares: config from flags or a run folder, blocks of
jitted updates, the learning-curve log, checkpoints and ``--resume``.

An agent provides a frozen config dataclass (:mod:`agents.config`) with the run fields below and a
training object; :func:`run_training` does the rest, the same way for :mod:`agents.a2c` and
:mod:`agents.tuner`.

Config fields read here: ``out``, ``resume``, ``seed``, ``num_updates``, ``steps_per_update``,
``updates_per_call``, ``checkpoint_every``, ``keep_checkpoints``, ``progress``, ``tensorboard``.
The training object answers ``init(key) -> state``, ``run(state, n_updates) -> (state,
metrics)``, ``checkpoint_items(state)`` and ``checkpoint_metadata()``; its state has
``state.learner.update`` (updates done).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np

from agents.checkpoint import Checkpointer, abstract_like
from agents.config import load_config, parse_config, save_config
from agents.logging import TrainingLogger

__all__ = ["CHECKPOINT_DIR", "CONFIG_FILE", "check_finite", "resolve_config", "run_training"]

CHECKPOINT_DIR = "checkpoints"
"""Sub-folder of a run's ``out`` folder holding its checkpoints."""
CONFIG_FILE = "config.json"
"""File of a run's ``out`` folder holding its config (read back by ``--resume``)."""

# flags that may differ between a run and its resumption (where and how it reports, not what it trains)
_RESUME_OVERRIDABLE = ("resume", "out", "progress", "tensorboard")

ConfigT = TypeVar("ConfigT")


def check_finite(metrics: dict[str, np.ndarray], first_update: int, checkpoints: Checkpointer | None,
                 hint: str = "") -> None:
    """Stop training at the first non-finite loss or gradient norm of a block of updates.

    Args:
        metrics: The block's metrics (``losses/total_loss`` and ``losses/grad_norm``, one value per update).
        first_update: Updates done before the block.
        checkpoints: The run's checkpoints (the error says which one is kept), or ``None``.
        hint: Appended to the message (what to change in the config).

    Raises:
        FloatingPointError: Naming the metric, its value and the update.
    """
    for name in ("losses/total_loss", "losses/grad_norm"):
        values = metrics[name]
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            last = checkpoints.latest_step() if checkpoints is not None else None
            kept = (f"the last good checkpoint (update {last}) is kept in {checkpoints.directory}"
                    if last is not None else "no checkpoint was written")
            raise FloatingPointError(
                f"non-finite {name} ({values[bad[0]]}) at update {first_update + int(bad[0]) + 1}: training "
                f"stopped; {kept}.{' ' + hint if hint else ''}"
            )


def resolve_config(config_class: type[ConfigT], argv: Sequence[str] | None, prog: str) -> ConfigT:
    """The run's config: from the flags, or with ``--resume DIR`` the config saved in ``DIR``.

    On resume, flags given explicitly must agree with the saved config, except where and how the
    run reports (``out``, ``progress``, ``tensorboard``).

    Raises:
        SystemExit: A flag disagrees with the saved config (naming both values).
    """
    config, given = parse_config(config_class, argv, prog=prog)
    if not config.resume:
        return config
    saved = load_config(config_class, Path(config.resume) / CONFIG_FILE)
    conflicts = {name: (getattr(config, name), getattr(saved, name)) for name in given
                 if name not in _RESUME_OVERRIDABLE and getattr(config, name) != getattr(saved, name)}
    if conflicts:
        shown = ", ".join(f"{name}={mine!r} (saved {theirs!r})" for name, (mine, theirs) in sorted(conflicts.items()))
        raise SystemExit(f"--resume {config.resume}: flags disagree with the saved config: {shown}")
    return dataclasses.replace(saved, resume=config.resume, out=config.resume,
                               progress=config.progress, tensorboard=config.tensorboard)


def run_training(config: Any, training: Any, nan_hint: str = "") -> Any:
    """Train as the command line does: blocks of updates, logging, checkpoints, resume.

    Args:
        config: The run's config; with ``config.resume`` the run continues from the last
            checkpoint in that folder (bit-identical to an uninterrupted run).
        training: The agent's training object (see the module docstring).
        nan_hint: What to change when a loss becomes non-finite (see :func:`check_finite`).

    Returns:
        The final training state.

    Raises:
        SystemExit: ``--resume`` of a folder without checkpoints, or ``--out`` a folder that
            already holds a run.
        FloatingPointError: A loss became non-finite (the last good checkpoint is kept).
    """
    out = Path(config.out) if config.out else None
    checkpoints = Checkpointer(out / CHECKPOINT_DIR, config.keep_checkpoints) if out else None
    state = training.init(jax.random.key(config.seed))
    start = 0
    if config.resume:
        if checkpoints is None or checkpoints.latest_step() is None:
            raise SystemExit(f"--resume {config.resume}: no checkpoint in {config.resume}/{CHECKPOINT_DIR}")
        state = checkpoints.restore({"train_state": abstract_like(state)})["train_state"]
        start = int(state.learner.update)
        print(f"resumed {config.resume} at update {start} of {config.num_updates}", file=sys.stderr)
    elif out is not None:
        if checkpoints.latest_step() is not None:
            raise SystemExit(f"{out} already holds a run; continue it with --resume {out} or choose another --out")
        save_config(config, out / CONFIG_FILE)
    metadata = training.checkpoint_metadata()
    try:
        with TrainingLogger(out, config.num_updates * config.steps_per_update, start * config.steps_per_update,
                            progress=config.progress, tensorboard=config.tensorboard) as logger:
            update = start
            while update < config.num_updates:
                block = min(config.updates_per_call, config.num_updates - update)
                new_state, metrics = training.run(state, block)
                metrics = jax.tree_util.tree_map(np.asarray, metrics)
                check_finite(metrics, update, checkpoints, nan_hint)
                state, update = new_state, update + block
                logger.log(metrics)
                due = config.checkpoint_every and update % config.checkpoint_every == 0
                if checkpoints is not None and (due or update == config.num_updates):
                    checkpoints.save(update, training.checkpoint_items(state), metadata)
    finally:
        if checkpoints is not None:
            checkpoints.close()
    return state
