"""Checkpoints of a training run with orbax-checkpoint: named pytrees of arrays plus metadata.

A checkpoint holds named items, each a pytree of arrays saved with orbax's ``StandardSave`` —
for a training run, everything it needs to continue bit for bit (parameters, optimiser state,
the learner's typed PRNG key, the update counter, the environments' state with their own keys)
and, separately, what a trained policy needs (parameters and the network's constants) so that it
restores without the training code — beside a JSON item of metadata (the config, the observation
size). Checkpoints are numbered by update; orbax writes each to a temporary folder and renames it
when complete, so an interrupted save never leaves a checkpoint that restores.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

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
        args = {name: ocp.args.StandardSave(_fill_empty(tree)) for name, tree in items.items()}
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
            ``{name: pytree}``.

        Raises:
            FileNotFoundError: No such checkpoint.
        """
        chosen = self._step(step)
        args = {name: ocp.args.StandardRestore(_fill_empty(tree)) for name, tree in items.items()}
        restored = self._manager.restore(chosen, args=ocp.args.Composite(**args))
        return {name: _empty_again(restored[name], items[name]) for name in items}

    def close(self) -> None:
        """Finish pending writes and release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
