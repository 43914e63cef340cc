"""Data parallelism: the same global batch gives the same update on 1, 2 and 4 devices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.parallel import DeviceAxis, data_parallel, from_device_major, to_device_major

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def device_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("devices")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-m", "tests.agents.devices_worker", str(out)], cwd=ROOT, env=env,
                   check=True, timeout=900)
    return {path.stem: dict(np.load(path)) for path in out.glob("*.npz")}


@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
@pytest.mark.parametrize("devices", [2, 4])
def test_device_parallel_update_equals_one_device(device_runs, mode, devices):
    single, parallel = device_runs[f"{mode}-1"], device_runs[f"{mode}-{devices}"]
    assert single.keys() == parallel.keys()
    np.testing.assert_array_equal(parallel["observation"], single["observation"])  # same env trajectories
    for name in single:
        np.testing.assert_allclose(parallel[name], single[name], rtol=2e-4, atol=2e-6, err_msg=name)


def test_pmap_and_shard_map_agree(device_runs):
    for name in device_runs["pmap-4"]:
        np.testing.assert_allclose(device_runs["shard_map-4"][name], device_runs["pmap-4"][name], rtol=2e-4,
                                   atol=2e-6, err_msg=name)


def test_one_device_runs_the_step_under_plain_jit():
    def step(axis, constants, replicated, sharded):
        assert axis == DeviceAxis()
        return replicated + constants, sharded * 2, {"index": axis.index()}

    run = data_parallel(step, "pmap", 1)
    replicated, sharded, metrics = run(jnp.float32(1.0), jnp.float32(2.0), jnp.arange(3.0))
    assert float(replicated) == 3.0 and np.asarray(sharded).tolist() == [0.0, 2.0, 4.0]


def test_device_major_round_trip():
    tree = {"a": jnp.arange(12).reshape(6, 2), "b": jnp.arange(6)}
    split = to_device_major(tree, 3)
    assert split["a"].shape == (3, 2, 2) and split["b"].shape == (3, 2)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(from_device_major(split)),
                                                   jax.tree_util.tree_leaves(tree)))


def test_bad_device_settings_are_named():
    with pytest.raises(ValueError, match="parallel mode must be one of"):
        data_parallel(lambda *a: a, "threads", 1)
    with pytest.raises(ValueError, match=r"num_devices must lie in \[1, "):
        data_parallel(lambda *a: a, "pmap", len(jax.devices()) + 1)


def test_varying_is_a_no_op_off_shard_map():
    tree = {"a": jnp.arange(3)}
    assert DeviceAxis().varying(tree) is tree and DeviceAxis("pmap", 2).varying(tree) is tree
