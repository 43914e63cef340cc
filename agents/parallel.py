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
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

__all__ = ["AXIS_NAME", "PARALLEL_MODES", "DeviceAxis", "data_parallel", "to_device_major", "from_device_major"]

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
        """This device's position on the axis (0 on a single device)."""
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


def data_parallel(
    step: Callable[..., tuple[Any, Any, Any]],
    mode: str,
    num_devices: int,
    devices: list[Any] | None = None,
) -> Callable[[Any, Any, Any], tuple[Any, Any, Any]]:
    """Compile ``step(axis, constants, replicated, sharded)`` to run on ``num_devices`` devices.

    Args:
        step: The per-device step (pure). It receives a :class:`DeviceAxis` first.
        mode: ``"pmap"`` or ``"shard_map"`` (ignored for one device).
        num_devices: Devices to use (the first ``num_devices`` of ``devices``).
        devices: Devices to choose from (default ``jax.devices()``).

    Returns:
        ``run(constants, replicated, sharded) -> (replicated, sharded, metrics)`` on the global
        layout: ``sharded`` leaves carry the global batch on their leading axis (divisible by
        ``num_devices``); ``constants``, ``replicated`` and ``metrics`` are single copies. With
        one device ``run`` is the jitted step itself (so it can be ``vmap``-ed, e.g. over seeds).

    Raises:
        ValueError: Unknown ``mode``, or more devices asked for than exist.
    """
    if mode not in PARALLEL_MODES:
        raise ValueError(f"parallel mode must be one of {PARALLEL_MODES}, got {mode!r}")
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
    replicated_spec, sharded_spec = PartitionSpec(), PartitionSpec(AXIS_NAME)
    mapped = jax.jit(jax.shard_map(functools.partial(step, axis), mesh=mesh,
                                   in_specs=(replicated_spec, replicated_spec, sharded_spec),
                                   out_specs=(replicated_spec, sharded_spec, replicated_spec)))
    on_all = NamedSharding(mesh, replicated_spec)
    split = NamedSharding(mesh, sharded_spec)

    def run_shard_map(constants, replicated, sharded):
        _check_divisible(sharded, num_devices)
        return mapped(jax.device_put(constants, on_all), jax.device_put(replicated, on_all),
                      jax.device_put(sharded, split))

    return run_shard_map


def _check_divisible(sharded: Any, num_devices: int) -> None:
    for leaf in jax.tree_util.tree_leaves(sharded):
        if leaf.shape[0] % num_devices:
            raise ValueError(
                f"the batch ({leaf.shape[0]} environments) must divide evenly over num_devices={num_devices}"
            )
