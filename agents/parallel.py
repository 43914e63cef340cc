"""Synchronous data parallelism over devices: one learner, replicated; many actors, sharded.

A training step is written once, per device, as ``step(axis, constants, replicated, sharded) ->
(replicated, sharded, metrics)``: ``constants`` (environment parameters, fixed model inputs) and
``replicated`` (parameters, optimiser state, the learner's key) are the same on every device,
``sharded`` (environments, observations) holds this device's share of the batch, and ``metrics``
are reduced over devices. :func:`data_parallel` runs it on one device (plain
``jit``), with ``jax.pmap``, or with ``jax.shard_map`` over a one-axis ``jax.make_mesh`` mesh; the
step reduces across devices only through its :class:`DeviceAxis`, which hides the one place the
two differ:

* under ``pmap`` each device's ``grad`` is its own gradient, and ``pmean`` averages them;
* under ``shard_map`` with ``check_vma=True`` (the default), ``grad`` with respect to replicated
  (device-invariant) parameters of a loss computed from sharded data already returns the *sum*
  over devices (the transpose of the implicit broadcast), and a ``pmean`` of that sum leaves it
  unchanged; the mean is the sum divided by the device count.

The tests hold 1, 2 and 4 forced CPU devices, in both modes, to the same update for the same
global batch.

Several processes (``jax.distributed``, e.g. one per host) run the same step over one *global*
mesh: each process contributes its first ``num_devices`` local devices, process by process, so
device ``d`` of process ``p`` is global device ``p * num_devices + d``, its share of the batch is
rows ``[that index * rows per device, ...)``, and ``DeviceAxis.index()`` is that global index.
Every process holds the whole global batch on the host (identical everywhere: it is drawn from
the same seed), and :func:`to_global` hands each device its rows
(``jax.make_array_from_callback``); collectives then span every process, so N processes of D
devices train exactly like one process of N x D devices. ``pmap`` is single-process only.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "AXIS_NAME",
    "PARALLEL_MODES",
    "DeviceAxis",
    "data_parallel",
    "from_device_major",
    "global_devices",
    "to_device_major",
    "to_global",
    "to_local",
]

AXIS_NAME = "devices"
"""Name of the device axis in collectives and in the mesh."""

PARALLEL_MODES = ("pmap", "shard_map")
"""How several devices run a step (one device always runs plain ``jit``)."""


@dataclasses.dataclass(frozen=True)
class DeviceAxis:
    """The device axis a per-device step runs over, and how to reduce across it.

    Attributes:
        mode: ``"single"`` (one device, no collectives), ``"pmap"`` or ``"shard_map"``.
        size: Number of devices.
    """

    mode: str = "single"
    size: int = 1

    def index(self) -> Any:
        """This device's position on the (global) axis (0 on a single device)."""
        return 0 if self.mode == "single" else jax.lax.axis_index(AXIS_NAME)

    def mean(self, tree: Any) -> Any:
        """Average per-device values (statistics of the local batch) over devices."""
        return tree if self.mode == "single" else jax.lax.pmean(tree, AXIS_NAME)

    def sum(self, tree: Any) -> Any:
        """Sum per-device values over devices."""
        return tree if self.mode == "single" else jax.lax.psum(tree, AXIS_NAME)

    def varying(self, tree: Any) -> Any:
        """Mark per-device values as varying over the device axis (a no-op but under ``shard_map``).

        Under ``shard_map`` with ``check_vma=True`` a value computed without reading sharded data
        (e.g. an env step's constant ``needs_reset`` or a zero-size field) is typed
        device-invariant, while the same field of the sharded input is device-varying; a
        ``lax.scan`` carry must keep one type, so such outputs are cast to varying.
        """
        if self.mode != "shard_map":
            return tree

        def cast(x):
            manual = getattr(jax.typeof(x), "manual_axis_type", None)
            if manual is not None and AXIS_NAME in manual.varying:
                return x
            return jax.lax.pcast(x, AXIS_NAME, to="varying")

        return jax.tree_util.tree_map(cast, tree)

    def mean_gradients(self, grads: Any) -> Any:
        """The device-averaged gradient of the replicated parameters.

        ``grads`` is what ``jax.grad`` of the local loss (a mean over the local batch) returned
        on this device; the result is the gradient of the mean of the local losses, identical on
        every device.
        """
        if self.mode == "pmap":
            return jax.lax.pmean(grads, AXIS_NAME)
        if self.mode == "shard_map":  # already summed over devices by grad (see module doc)
            return jax.tree_util.tree_map(lambda g: g / self.size, grads)
        return grads


def to_device_major(tree: Any, num_devices: int) -> Any:
    """Split the leading (batch) axis of every leaf into ``(num_devices, batch / num_devices)``."""
    return jax.tree_util.tree_map(lambda x: x.reshape(num_devices, x.shape[0] // num_devices, *x.shape[1:]), tree)


def from_device_major(tree: Any) -> Any:
    """Undo :func:`to_device_major`: merge the two leading axes."""
    return jax.tree_util.tree_map(lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), tree)


def global_devices(num_devices: int) -> list[Any]:
    """The devices of a multi-process run, in global order: the first ``num_devices`` local
    devices of process 0, then of process 1, ...

    Raises:
        ValueError: A process has fewer than ``num_devices`` devices.
    """
    chosen = []
    for process in range(jax.process_count()):
        local = sorted((d for d in jax.devices() if d.process_index == process), key=lambda d: d.id)
        if len(local) < num_devices:
            raise ValueError(f"num_devices must lie in [1, {len(local)}] (process {process} has {len(local)} "
                             f"devices), got {num_devices}")
        chosen += local[:num_devices]
    return chosen


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_global(tree: Any, sharding: NamedSharding) -> Any:
    """Every leaf as a global array with ``sharding``, built from this process's full host copy.

    Each process passes the same values (the whole global batch); each device gets its rows
    (``jax.make_array_from_callback``). Leaves that already are global arrays with ``sharding``
    (a previous step's outputs) pass through. Typed PRNG keys included.
    """
    def convert(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            leaf = to_local(leaf)
        value = leaf if isinstance(leaf, jax.Array | np.ndarray) else jnp.asarray(leaf)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree_util.tree_map(convert, tree)


def to_local(tree: Any) -> Any:
    """Every global (multi-process) leaf as a local array holding its whole value.

    Replicated leaves give this process's copy; leaves sharded over several processes are
    gathered (a collective: every process must call this on the same tree). Local leaves pass
    through, so this is the identity in a single-process run.
    """
    def convert(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return leaf
        if leaf.is_fully_replicated:
            return leaf.addressable_data(0)
        from jax.experimental import multihost_utils

        if _is_key(leaf):
            data = multihost_utils.process_allgather(jax.random.key_data(leaf), tiled=True)
            return jax.random.wrap_key_data(jnp.asarray(data), impl=jax.random.key_impl(leaf))
        return jnp.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree_util.tree_map(convert, tree)


def data_parallel(
    step: Callable[..., tuple[Any, Any, Any]],
    mode: str,
    num_devices: int,
    devices: list[Any] | None = None,
) -> Callable[[Any, Any, Any], tuple[Any, Any, Any]]:
    """Compile ``step(axis, constants, replicated, sharded)`` to run on ``num_devices`` devices
    of every process.

    Args:
        step: The per-device step (pure). It receives a :class:`DeviceAxis` first.
        mode: ``"pmap"`` or ``"shard_map"`` (ignored for one device in one process; several
            processes need ``"shard_map"``).
        num_devices: Devices to use in each process (the first ``num_devices`` of ``devices``,
            or of each process's local devices when there are several processes).
        devices: Devices to choose from in a single-process run (default ``jax.devices()``).

    Returns:
        ``run(constants, replicated, sharded) -> (replicated, sharded, metrics)`` on the global
        layout: ``sharded`` leaves carry the global batch on their leading axis (divisible by
        the number of devices of all processes); ``constants``, ``replicated`` and ``metrics``
        are single copies. With one device ``run`` is the jitted step itself (so it can be
        ``vmap``-ed, e.g. over seeds). With several processes every process calls ``run`` with
        the same host values and gets global arrays back (:func:`to_local` reads them).

    Raises:
        ValueError: Unknown ``mode``, ``pmap`` with several processes, or more devices asked
            for than exist.
    """
    if mode not in PARALLEL_MODES:
        raise ValueError(f"parallel mode must be one of {PARALLEL_MODES}, got {mode!r}")
    if jax.process_count() > 1:
        if mode != "shard_map":
            raise ValueError(f"parallel mode must be 'shard_map' with {jax.process_count()} processes "
                             f"(jax.pmap runs in one process only), got {mode!r}")
        chosen = global_devices(num_devices)
        mesh = Mesh(np.asarray(chosen), (AXIS_NAME,), axis_types=(jax.sharding.AxisType.Auto,))
        return _shard_map_runner(step, mesh, len(chosen), global_inputs=True)
    available = list(jax.devices() if devices is None else devices)
    if not 1 <= num_devices <= len(available):
        raise ValueError(
            f"num_devices must lie in [1, {len(available)}] (the devices JAX sees; force more CPU "
            f"devices with jax.config.update('jax_num_cpu_devices', N) before JAX starts), got {num_devices}"
        )
    chosen = available[:num_devices]
    if num_devices == 1:
        return jax.jit(functools.partial(step, DeviceAxis()))

    axis = DeviceAxis(mode, num_devices)
    if mode == "pmap":
        mapped = jax.pmap(functools.partial(step, axis), axis_name=AXIS_NAME, in_axes=(None, None, 0),
                          out_axes=(None, 0, None), devices=chosen)

        def run_pmap(constants, replicated, sharded):
            _check_divisible(sharded, num_devices)
            replicated, sharded, metrics = mapped(constants, replicated, to_device_major(sharded, num_devices))
            return replicated, from_device_major(sharded), metrics

        return run_pmap

    # Auto axis: shardings propagate as in jit; the step's collectives name the axis explicitly
    mesh = jax.make_mesh((num_devices,), (AXIS_NAME,), axis_types=(jax.sharding.AxisType.Auto,), devices=chosen)
    return _shard_map_runner(step, mesh, num_devices, global_inputs=False)


def _shard_map_runner(step: Callable[..., tuple[Any, Any, Any]], mesh: Mesh, num_devices: int, *,
                      global_inputs: bool) -> Callable[[Any, Any, Any], tuple[Any, Any, Any]]:
    """``step`` under ``jit(shard_map)`` over ``mesh``'s one axis; inputs placed by ``device_put``
    (one process) or built as global arrays from each process's host copy (several)."""
    replicated_spec, sharded_spec = PartitionSpec(), PartitionSpec(AXIS_NAME)
    mapped = jax.jit(jax.shard_map(functools.partial(step, DeviceAxis("shard_map", num_devices)), mesh=mesh,
                                   in_specs=(replicated_spec, replicated_spec, sharded_spec),
                                   out_specs=(replicated_spec, sharded_spec, replicated_spec)))
    on_all = NamedSharding(mesh, replicated_spec)
    split = NamedSharding(mesh, sharded_spec)
    place = to_global if global_inputs else jax.device_put

    def run_shard_map(constants, replicated, sharded):
        _check_divisible(sharded, num_devices)
        return mapped(place(constants, on_all), place(replicated, on_all), place(sharded, split))

    return run_shard_map


def _check_divisible(sharded: Any, num_devices: int) -> None:
    for leaf in jax.tree_util.tree_leaves(sharded):
        if leaf.shape[0] % num_devices:
            raise ValueError(
                f"the batch ({leaf.shape[0]} environments) must divide evenly over the {num_devices} devices"
            )
