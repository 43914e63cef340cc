"""The command-line training loop both agents share: resume == uninterrupted, a run folder is
never overwritten, a non-finite loss stops training and keeps the last good checkpoint."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from agents import a2c, tuner
from agents.checkpoint import Checkpointer
from agents.logging import read_curve
from tests.agents.conftest import tiny_config, tiny_tuner_config

# (the agent's module, its training class, a config that trains in seconds)
AGENTS = {
    "a2c": (a2c, a2c.A2CTraining, tiny_config),
    "a2c with a consumption memory": (a2c, a2c.A2CTraining,
                                      lambda **overrides: tiny_config(memory_decays=(0.8, 0.95), **overrides)),
    "tuner": (tuner, tuner.TunerTraining, tiny_tuner_config),
}


@pytest.fixture(params=sorted(AGENTS))
def agent(request):
    return AGENTS[request.param]


def leaves(tree):
    """Every leaf as a NumPy array (typed PRNG keys as their key data, so they are compared too)."""
    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
            for x in jax.tree_util.tree_leaves(tree)]


def test_resume_gives_bit_identical_parameters(agent, tmp_path, monkeypatch):
    module, training_class, make_config = agent
    config = make_config(total_steps=16 * 4 * 8)
    _, uninterrupted = module.train_run(dataclasses.replace(config, out=str(tmp_path / "whole")))

    calls = {"n": 0}
    original = training_class.run

    def interrupted_run(self, state, num_updates):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # after two blocks (and their checkpoints)
        return original(self, state, num_updates)

    monkeypatch.setattr(training_class, "run", interrupted_run)
    with pytest.raises(KeyboardInterrupt):
        module.train_run(dataclasses.replace(config, out=str(tmp_path / "split")))
    monkeypatch.setattr(training_class, "run", original)
    assert Checkpointer(tmp_path / "split" / "checkpoints").latest_step() == 4
    _, resumed = module.train_run(dataclasses.replace(config, out=str(tmp_path / "split"),
                                                      resume=str(tmp_path / "split")))
    for a, b in zip(leaves(uninterrupted), leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    whole, split = read_curve(tmp_path / "whole"), read_curve(tmp_path / "split")
    np.testing.assert_array_equal(whole["global_step"], split["global_step"])  # no duplicated rows
    np.testing.assert_array_equal(whole["losses/total_loss"], split["losses/total_loss"])


def test_a_run_folder_is_not_overwritten(agent, tmp_path):
    module, _, make_config = agent
    config = make_config(total_steps=16 * 4 * 2, out=str(tmp_path))
    module.train_run(config)
    with pytest.raises(SystemExit, match="already holds a run"):
        module.train_run(config)


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(agent, tmp_path, monkeypatch):
    module, training_class, make_config = agent
    original = training_class.run
    calls = {"n": 0}

    def poisoned(self, state, num_updates):
        state, metrics = original(self, state, num_updates)
        calls["n"] += 1
        if calls["n"] == 2:
            metrics = dict(metrics, **{"losses/total_loss": metrics["losses/total_loss"].at[1].set(np.nan)})
        return state, metrics

    monkeypatch.setattr(training_class, "run", poisoned)
    with pytest.raises(FloatingPointError, match=r"non-finite losses/total_loss \(nan\) at update 4.*update 2"):
        module.train_run(make_config(out=str(tmp_path)))
    assert Checkpointer(tmp_path / "checkpoints").latest_step() == 2
