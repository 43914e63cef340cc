"""Checkpoints of a training run with orbax-checkpoint: named pytrees of arrays plus metadata.

A checkpoint holds named items, each a pytree of arrays saved with orbax's ``StandardSave`` —
for a training run, everything it needs to continue bit for bit (parameters, optimiser state,
the learner's typed PRNG key, the update counter, the environments' state with their own keys)
and, separately, what a trained policy needs (parameters and the network's constants) so that it
restores without the training code — beside a JSON item of metadata (the config, the observation
size). Checkpoints are numbered by update; orbax writes each to a temporary folder and renames it
when complete, so an interrupted save never leaves a checkpoint that restores.

In a multi-process run (``jax.distributed``) every process calls :meth:`Checkpointer.save` and
:meth:`Checkpointer.restore` with the same tree, as orbax's ``CheckpointManager`` requires (it
synchronises the processes around each save): each process writes the shards its devices hold
(one replica of each), process 0 writes the metadata and commits the one checkpoint folder, and
every process restores the whole tree. The folder must be on a file system every process sees.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from agents.parallel import to_global, to_local

__all__ = ["Checkpointer", "abstract_like"]


def abstract_like(tree: Any) -> Any:
    """The ``jax.ShapeDtypeStruct`` skeleton of a pytree of arrays (the target of a restore)."""
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _is_empty(leaf: Any) -> bool:
    return hasattr(leaf, "shape") and hasattr(leaf, "dtype") and 0 in tuple(leaf.shape)


def _fill_empty(tree: Any) -> Any:
    """Zero-size leaves (e.g. an env state's unused ``(0,)`` field) as one-element stand-ins.

    Orbax refuses to write arrays without elements; their content is their shape, which the
    restore target carries, so a one-element placeholder of the same dtype is saved instead.
    """
    def fill(leaf):
        if not _is_empty(leaf):
            return leaf
        if isinstance(leaf, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct((1,), leaf.dtype)
        return jnp.zeros((1,), leaf.dtype)

    return jax.tree_util.tree_map(fill, tree)


def _empty_again(restored: Any, target: Any) -> Any:
    """Undo :func:`_fill_empty`: the target's zero-size leaves as empty arrays again."""
    return jax.tree_util.tree_map(
        lambda leaf, want: jnp.zeros(want.shape, want.dtype) if _is_empty(want) else leaf, restored, target)


def _everywhere() -> NamedSharding:
    """Replicated over every device of every process (how local leaves are saved and restored)."""
    return NamedSharding(Mesh(np.asarray(jax.devices()), ("all",)), PartitionSpec())


def _as_global(tree: Any) -> Any:
    """Several processes: local leaves as global replicated arrays (orbax refuses host-local
    arrays there); global leaves (a training step's outputs) as they are. One process: unchanged."""
    if jax.process_count() == 1:
        return tree
    everywhere = _everywhere()
    return jax.tree_util.tree_map(
        lambda x: x if isinstance(x, jax.Array) and not x.is_fully_addressable else to_global(x, everywhere), tree)


def _restore_target(tree: Any) -> Any:
    """The restore target with a sharding on every leaf: one local device in a single-process run,
    replicated on every device with several processes (each restores the whole tree).

    Without one orbax would reuse the sharding saved in the checkpoint, which names devices of the
    run that wrote it (e.g. 2 devices, or another process) and fails elsewhere.
    """
    where = (jax.sharding.SingleDeviceSharding(jax.local_devices()[0]) if jax.process_count() == 1
             else _everywhere())
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=where), tree)


class Checkpointer:
    """Numbered checkpoints in ``directory`` (an ``ocp.CheckpointManager``).

    Args:
        directory: Folder of the checkpoints (created on the first save).
        max_to_keep: Most recent checkpoints kept; older ones are deleted.
    """

    def __init__(self, directory: str | Path, max_to_keep: int = 3):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def save(self, step: int, items: Mapping[str, Any], metadata: dict[str, Any]) -> None:
        """Write checkpoint ``step`` and wait until it is complete on disk.

        Args:
            step: The checkpoint's number (the update count).
            items: ``{name: pytree of arrays}`` (typed PRNG keys included); not ``"metadata"``.
            metadata: JSON-serialisable dict.
        """
        if "metadata" in items:
            raise ValueError("'metadata' is reserved for the JSON metadata item")
        args = {name: ocp.args.StandardSave(_as_global(_fill_empty(tree))) for name, tree in items.items()}
        self._manager.save(int(step), args=ocp.args.Composite(metadata=ocp.args.JsonSave(metadata), **args))
        self._manager.wait_until_finished()

    def latest_step(self) -> int | None:
        """Number of the newest complete checkpoint, or ``None``."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Numbers of every complete checkpoint kept, oldest first."""
        return sorted(self._manager.all_steps())

    def _step(self, step: int | None) -> int:
        chosen = self.latest_step() if step is None else int(step)
        if chosen is None or chosen not in self._manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint {'at all' if step is None else step} in {self.directory} "
                f"(kept: {self.all_steps()})"
            )
        return chosen

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """The JSON metadata of checkpoint ``step`` (default: the latest)."""
        chosen = self._step(step)
        return self._manager.restore(chosen, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))["metadata"]

    def restore(self, items: Mapping[str, Any], step: int | None = None) -> dict[str, Any]:
        """Items of checkpoint ``step`` (default: the latest); only the items named are read.

        Args:
            items: ``{name: abstract pytree}``: each item's structure, shapes and dtypes (e.g.
                :func:`abstract_like` of a freshly initialised state, or ``jax.eval_shape``).
            step: Which checkpoint.

        Returns:
            ``{name: pytree}`` of local arrays (in a multi-process run, the whole tree on every
            process).

        Raises:
            FileNotFoundError: No such checkpoint.
        """
        chosen = self._step(step)
        args = {name: ocp.args.StandardRestore(_restore_target(_fill_empty(tree))) for name, tree in items.items()}
        restored = self._manager.restore(chosen, args=ocp.args.Composite(**args))
        return {name: _empty_again(to_local(restored[name]), items[name]) for name in items}

    def close(self) -> None:
        """Finish pending writes and release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
