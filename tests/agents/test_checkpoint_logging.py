"""Checkpoints (typed keys, named items, metadata) and the learning-curve log."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.checkpoint import Checkpointer, abstract_like
from agents.logging import TrainingLogger, read_curve


def test_items_round_trip_with_typed_keys(tmp_path):
    state = {"key": jax.random.split(jax.random.key(3), 4), "w": jnp.arange(6.0).reshape(2, 3),
             "step": jnp.int32(7)}
    with Checkpointer(tmp_path, max_to_keep=2) as checkpoints:
        for step in (1, 2, 3):
            checkpoints.save(step, {"state": state, "other": {"x": jnp.ones(2)}}, {"config": {"seed": step}})
        assert checkpoints.all_steps() == [2, 3]  # max_to_keep
        restored = checkpoints.restore({"state": abstract_like(state)})["state"]
        assert checkpoints.metadata(2) == {"config": {"seed": 2}}
    assert jax.dtypes.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(restored["key"]), jax.random.key_data(state["key"]))
    np.testing.assert_array_equal(restored["w"], state["w"])
    # the restored key draws what the saved one draws
    np.testing.assert_array_equal(jax.random.uniform(restored["key"][1], (3,)), jax.random.uniform(state["key"][1], (3,)))


def test_missing_checkpoints_are_named(tmp_path):
    with Checkpointer(tmp_path) as checkpoints:
        assert checkpoints.latest_step() is None
        with pytest.raises(FileNotFoundError, match="no checkpoint at all"):
            checkpoints.metadata()
        checkpoints.save(5, {"a": {"x": jnp.zeros(1)}}, {})
        with pytest.raises(FileNotFoundError, match=r"no checkpoint 4 .*kept: \[5\]"):
            checkpoints.restore({"a": {"x": jax.ShapeDtypeStruct((1,), jnp.float32)}}, step=4)
        with pytest.raises(ValueError, match="reserved"):
            checkpoints.save(6, {"metadata": {}}, {})


def test_the_curve_is_written_and_a_resume_drops_rows_past_the_checkpoint(tmp_path):
    def block(first):
        steps = np.arange(first, first + 3) * 10
        return {"global_step": steps, "losses/total_loss": steps / 100.0, "charts/episodic_return": np.full(3, np.nan)}

    with TrainingLogger(tmp_path, 90, progress=False, tensorboard=False) as logger:
        for first in (1, 4, 7):
            logger.log(block(first))
    curve = read_curve(tmp_path)
    assert curve["global_step"].tolist() == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert np.isnan(curve["charts/episodic_return"]).all() and "charts/steps_per_second" in curve
    with TrainingLogger(tmp_path, 90, start_step=30, progress=False, tensorboard=False) as logger:
        logger.log(block(4))
    assert read_curve(tmp_path)["global_step"].tolist() == [10, 20, 30, 40, 50, 60]


def test_zero_size_leaves_round_trip(tmp_path):
    # an env state may hold a (0,)-shaped field (e.g. no candidates); orbax cannot write those
    state = {"empty": jnp.zeros((4, 0), jnp.int32), "w": jnp.arange(3.0)}
    with Checkpointer(tmp_path) as checkpoints:
        checkpoints.save(1, {"state": state}, {})
        restored = checkpoints.restore({"state": abstract_like(state)})["state"]
    assert restored["empty"].shape == (4, 0) and restored["empty"].dtype == jnp.int32
    np.testing.assert_array_equal(restored["w"], state["w"])
