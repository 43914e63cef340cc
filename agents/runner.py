"""The command-line training loop every agent shares: config from flags or a run folder, blocks of
jitted updates, the learning-curve log, checkpoints, ``--resume`` and multi-process runs.

An agent's config is a frozen dataclass (:mod:`agents.config`) that inherits the run-control
fields of :class:`RunConfig` (seed, budget, devices, processes, checkpoints, run folder, output)
and adds its own; with a training object, :func:`run_training` does the rest, the same way for
:mod:`agents.a2c` and :mod:`agents.tuner`. The training object answers ``init(key) -> state``,
``run(state, n_updates) -> (state, metrics)``, ``checkpoint_items(state)`` and
``checkpoint_metadata()``; its state has ``state.learner.update`` (updates done).

Several processes (``num_processes > 1``, e.g. one per host) train as one: every process calls
:func:`initialize_processes` first (``jax.distributed.initialize``), then runs the same loop on
the same config; the device step spans every process's devices (:mod:`agents.parallel`), all
processes take part in each checkpoint (orbax coordinates them; process 0 writes the metadata
and commits), and only process 0 writes the config, the learning curve and TensorBoard logs,
shows the progress bar and evaluates.
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
from agents.config import load_config, parse_flags, save_config
from agents.logging import TrainingLogger
from agents.parallel import PARALLEL_MODES, to_local
from recgym.core import is_int, require

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "RESUME_OVERRIDABLE",
    "RunConfig",
    "check_finite",
    "initialize_processes",
    "resolve_config",
    "run_training",
]

CHECKPOINT_DIR = "checkpoints"
"""Sub-folder of a run's ``out`` folder holding its checkpoints."""
CONFIG_FILE = "config.json"
"""File of a run's ``out`` folder holding its config (read back by ``--resume``)."""

RESUME_OVERRIDABLE = ("resume", "out", "progress", "tensorboard", "coordinator", "process_id", "join_timeout_s",
                      "heartbeat_timeout_s")
"""Config fields that may differ between a run and its resumption: where and how it reports, or
which process it is — not what it trains."""

ConfigT = TypeVar("ConfigT")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Run control shared by every agent's config: seed, budget, devices, processes, checkpoints, output.

    An agent's config inherits these fields (its flags are listed after the agent's own in
    ``--help``) and must define ``steps_per_update``; ``__post_init__`` validates them (a subclass
    that adds checks calls ``super().__post_init__()``).

    Attributes:
        seed: Seed of everything random in training: parameters, environments, actions.
        total_steps: Environment steps to train for, all environments, devices and processes
            together (rounded down to whole updates).
        num_devices: Devices per process to train on, gradients averaged across every process's
            devices (force N CPU devices with JAX_NUM_CPU_DEVICES=N or
            jax.config.update("jax_num_cpu_devices", N)).
        parallel: How several devices run the step: "pmap" or "shard_map" (several processes
            need "shard_map").
        updates_per_call: Updates compiled into one call; the progress bar, the learning curve
            and checkpoints advance between calls.
        checkpoint_every: Save a checkpoint every this many updates (a multiple of
            updates_per_call; 0: only at the end).
        keep_checkpoints: Most recent checkpoints kept on disk.
        out: Run folder: config, checkpoints, learning curve, evaluation ("" writes nothing);
            with several processes, a folder every process sees (shared file system).
        resume: Folder of an interrupted run to continue from its last checkpoint; its saved
            config is used (other flags must agree with it, but for out, progress, tensorboard,
            coordinator and process_id).
        progress: Show a progress bar (process 0 only).
        tensorboard: Also write TensorBoard logs (when tensorboardX or torch is installed).
        coordinator: host:port of process 0's coordinator service for a multi-process run
            (jax.distributed); "" for one process.
        num_processes: Processes training together (e.g. one per host), each on num_devices of its
            own devices; > 1 needs coordinator and parallel="shard_map".
        process_id: This process's index in [0, num_processes); process 0 writes the config, the
            learning curve and the evaluation.
        join_timeout_s: Seconds each process of a multi-process run waits for all of them to join
            the coordinator; past it (a wrong address, a process that never starts) every waiting
            process stops with JAX's DEADLINE_EXCEEDED error.
        heartbeat_timeout_s: Seconds of silence after which the coordinator declares a process of
            a multi-process run dead; every other process then stops with JAX's "distributed
            service detected fatal errors" error instead of waiting for it.
    """

    seed: int = 0
    total_steps: int = 5_000_000
    num_devices: int = 1
    parallel: str = "pmap"
    updates_per_call: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    out: str = ""
    resume: str = ""
    progress: bool = True
    tensorboard: bool = True
    coordinator: str = ""
    num_processes: int = 1
    process_id: int = 0
    join_timeout_s: int = 300
    heartbeat_timeout_s: int = 100

    def __post_init__(self) -> None:
        for name in ("total_steps", "num_devices", "updates_per_call", "keep_checkpoints", "num_processes",
                     "join_timeout_s", "heartbeat_timeout_s"):
            require(lambda v: is_int(v) and v >= 1, name, getattr(self, name), "an integer >= 1")
        for name in ("seed", "checkpoint_every"):
            require(lambda v: is_int(v) and v >= 0, name, getattr(self, name), "an integer >= 0")
        require(lambda v: v in PARALLEL_MODES, "parallel", self.parallel, f"one of {PARALLEL_MODES}")
        require(lambda v: v % self.updates_per_call == 0, "checkpoint_every", self.checkpoint_every,
                f"a multiple of updates_per_call={self.updates_per_call}")
        require(lambda v: is_int(v) and 0 <= v < self.num_processes, "process_id", self.process_id,
                f"an integer in [0, num_processes={self.num_processes})")
        require(lambda v: bool(v) == (self.num_processes > 1), "coordinator", self.coordinator,
                "given (host:port) exactly when num_processes > 1: give --coordinator, --num-processes and "
                f"--process-id together (num_processes={self.num_processes})")
        require(lambda v: not v or _is_host_port(v), "coordinator", self.coordinator,
                "host:port with a port in [1, 65535]")
        require(lambda v: self.num_processes == 1 or v == "shard_map", "parallel", self.parallel,
                f"'shard_map' with num_processes={self.num_processes} (jax.pmap runs in one process only)")
        require(lambda v: v >= self.steps_per_update, "total_steps", self.total_steps,
                f">= num_envs * rollout_steps = {self.steps_per_update} (one update)")

    @property
    def steps_per_update(self) -> int:
        """Environment steps per update, all devices and processes together (defined by each agent)."""
        raise NotImplementedError(f"{type(self).__name__} must define steps_per_update")

    @property
    def num_updates(self) -> int:
        """Updates of the whole run: ``total_steps // steps_per_update``."""
        return self.total_steps // self.steps_per_update

    @property
    def total_devices(self) -> int:
        """Devices of the whole run: ``num_devices * num_processes`` (the global batch is split over them)."""
        return self.num_devices * self.num_processes

    @property
    def single_device(self) -> bool:
        """``True`` when the run has one device in one process (plain ``jit``, no collectives)."""
        return self.total_devices == 1


def _is_host_port(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(host) and bool(sep) and port.isdigit() and 1 <= int(port) <= 65535


def initialize_processes(config: RunConfig) -> None:
    """Join the run's processes with ``jax.distributed.initialize`` (a no-op for one process).

    Must come before anything touches a device (a JAX computation, ``jax.devices()``...): call it
    first in a command line's ``main``, right after reading the config.

    Args:
        config: Gives ``coordinator``, ``num_processes`` and ``process_id``.
    Raises:
        RuntimeError: JAX has already started (naming the fix). Processes that do not all join
            within ``config.join_timeout_s``, or one that dies later (no heartbeat for
            ``config.heartbeat_timeout_s``), stop every other process: JAX aborts them with its
            own error (exit status 134), after the message this function prints.
    """
    if config.num_processes == 1:
        return
    # JAX has no public query for this; jax.distributed.initialize checks the same condition
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise RuntimeError(
            f"process {config.process_id}: jax.distributed.initialize (--coordinator {config.coordinator}) must "
            "run before any JAX operation, but JAX has already started its devices; call "
            "agents.runner.initialize_processes(config) first in main, before building environments or "
            "training")
    print(f"process {config.process_id} of {config.num_processes}: joining the run at {config.coordinator} "
          f"(--join-timeout-s {config.join_timeout_s}, --heartbeat-timeout-s {config.heartbeat_timeout_s}); a process "
          "that does not join or dies stops every other one with JAX's 'distributed service detected fatal "
          "errors' message", file=sys.stderr, flush=True)
    jax.distributed.initialize(coordinator_address=config.coordinator, num_processes=config.num_processes,
                               process_id=config.process_id, initialization_timeout=config.join_timeout_s,
                               heartbeat_timeout_seconds=config.heartbeat_timeout_s)
    if jax.process_count() != config.num_processes:  # e.g. an outer launcher already initialised differently
        raise RuntimeError(f"jax.distributed has {jax.process_count()} processes, the config num_processes="
                           f"{config.num_processes}")


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
    run reports (``out``, ``progress``, ``tensorboard``) and which process this is
    (``coordinator``, ``process_id``).

    Raises:
        SystemExit: Bad flags or values (naming the field), or a flag that disagrees with the
            saved config (naming both values).
    """
    values, given, parser = parse_flags(config_class, argv, prog=prog)
    try:
        if not values["resume"]:
            return config_class(**values)
        # the flags alone need not form a valid config (e.g. --process-id without --parallel):
        # only the saved config with the overridable flags applied is validated
        saved = load_config(config_class, Path(values["resume"]) / CONFIG_FILE)
        conflicts = {name: (values[name], getattr(saved, name)) for name in given
                     if name not in RESUME_OVERRIDABLE and values[name] != getattr(saved, name)}
        if conflicts:
            shown = ", ".join(f"{name}={mine!r} (saved {theirs!r})"
                              for name, (mine, theirs) in sorted(conflicts.items()))
            raise SystemExit(f"--resume {values['resume']}: flags disagree with the saved config: {shown}")
        kept = {name: values[name] for name in RESUME_OVERRIDABLE if name in values}
        return dataclasses.replace(saved, **(kept | {"out": values["resume"]}))
    except ValueError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits


def run_training(config: Any, training: Any, nan_hint: str = "") -> Any:
    """Train as the command line does: blocks of updates, logging, checkpoints, resume.

    With several processes every process calls this with the same config (but ``process_id``);
    they train as one, and only process 0 writes the config, the curve and TensorBoard logs and
    shows the progress bar.

    Args:
        config: The run's config (a :class:`RunConfig`); with ``config.resume`` the run continues
            from the last checkpoint in that folder (bit-identical to an uninterrupted run).
        training: The agent's training object (see the module docstring).
        nan_hint: What to change when a loss becomes non-finite (see :func:`check_finite`).

    Returns:
        The final training state, as local arrays (the same on every process).

    Raises:
        SystemExit: ``--resume`` of a folder without checkpoints, or ``--out`` a folder that
            already holds a run.
        FloatingPointError: A loss became non-finite (the last good checkpoint is kept).
    """
    out = Path(config.out) if config.out else None
    reporter = jax.process_index() == 0
    checkpoints = Checkpointer(out / CHECKPOINT_DIR, config.keep_checkpoints) if out else None
    state = training.init(jax.random.key(config.seed))
    start = 0
    if config.resume:
        if checkpoints is None or checkpoints.latest_step() is None:
            raise SystemExit(f"--resume {config.resume}: no checkpoint in {config.resume}/{CHECKPOINT_DIR}")
        state = checkpoints.restore({"train_state": abstract_like(state)})["train_state"]
        start = int(state.learner.update)
        if reporter:
            print(f"resumed {config.resume} at update {start} of {config.num_updates}", file=sys.stderr)
    elif out is not None:
        if checkpoints.latest_step() is not None:
            raise SystemExit(f"{out} already holds a run; continue it with --resume {out} or choose another --out")
        if reporter:
            save_config(config, out / CONFIG_FILE)
    metadata = training.checkpoint_metadata()
    try:
        with TrainingLogger(out if reporter else None, config.num_updates * config.steps_per_update,
                            start * config.steps_per_update, progress=config.progress and reporter,
                            tensorboard=config.tensorboard) as logger:
            update = start
            while update < config.num_updates:
                block = min(config.updates_per_call, config.num_updates - update)
                new_state, metrics = training.run(state, block)
                metrics = jax.tree_util.tree_map(np.asarray, to_local(metrics))
                check_finite(metrics, update, checkpoints, nan_hint)
                state, update = new_state, update + block
                logger.log(metrics)
                due = config.checkpoint_every and update % config.checkpoint_every == 0
                if checkpoints is not None and (due or update == config.num_updates):
                    checkpoints.save(update, training.checkpoint_items(state), metadata)
    finally:
        if checkpoints is not None:
            checkpoints.close()
    return to_local(state)
