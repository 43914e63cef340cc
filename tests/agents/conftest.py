"""Fixtures of the agent tests: a small synthetic world and a config that trains in seconds."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from agents.a2c import A2CConfig
from agents.tuner import TunerConfig
from recgym.envs.movielens import build_world, make_params


def tiny_config(**overrides) -> A2CConfig:
    """A2C small enough to compile and run in seconds on the synthetic world."""
    values = dict(dataset="synthetic", total_steps=16 * 4 * 6, num_envs=16, rollout_steps=4, hidden_sizes=(32,),
                  embedding_dim=8, updates_per_call=2, checkpoint_every=2, eval_episodes=0, progress=False,
                  tensorboard=False)
    return A2CConfig(**(values | overrides))


def leaves(tree) -> list[np.ndarray]:
    """Every leaf as a NumPy array (typed PRNG keys as their key data)."""
    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
            for x in jax.tree_util.tree_leaves(tree)]


def assert_tuner_trains_deterministically(config: TunerConfig, learning: str, seed: int = 2) -> None:
    """Train ``config`` for two blocks of two updates twice from ``seed`` through one compiled block and
    assert: finite metrics, one trace, bit-identical parameters, and that the parameters under
    ``learning`` (a top-level name of the network's state) moved from their initial values."""
    from agents.tuner import make_train

    train = make_train(config)
    state = train.init(jax.random.key(seed))
    for _ in range(2):
        state, metrics = train.run(state, 2)
        for name, values in metrics.items():
            assert np.all(np.isfinite(np.asarray(values))), name
    again = train.init(jax.random.key(seed))
    for _ in range(2):
        again, _ = train.run(again, 2)
    assert train.traces == 1
    for a, b in zip(leaves(state.learner.params), leaves(again.learner.params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(
        leaves(state.learner.params[learning]), leaves(train.init(jax.random.key(seed)).learner.params[learning])))


def assert_acts_alike(loaded, direct, training, *, obs_seed: int, policy_seed: int, num_envs: int = 5) -> None:
    """Assert two ``AgentPolicy`` objects choose the same actions on fresh starts of ``training``'s world."""
    observations = np.asarray(jax.vmap(training.core.start, in_axes=(0, None))(
        jax.random.split(jax.random.key(obs_seed), num_envs), training.env_params)[0])
    for policy in (loaded, direct):
        policy.reset(num_envs=num_envs, seed=policy_seed)
    np.testing.assert_array_equal(loaded.act_batch(observations, {}), direct.act_batch(observations, {}))


def tiny_tuner_config(**overrides) -> TunerConfig:
    """A tuner small enough to compile and train in seconds."""
    values = dict(total_steps=16 * 4 * 6, num_envs=16, rollout_steps=4, num_minibatches=2, update_epochs=2,
                  hidden_width=16, updates_per_call=2, checkpoint_every=2, eval_random_pipelines=0,
                  eval_scenario_seeds=0, progress=False, tensorboard=False)
    return TunerConfig(**(values | overrides))


@pytest.fixture(scope="session")
def synthetic_params():
    """Training-population params of the synthetic dynamic world, single items."""
    return make_params(build_world("synthetic"), users="train")


@pytest.fixture(scope="session")
def synthetic_slate_params():
    """The same with slates of 3."""
    return make_params(build_world("synthetic"), users="train", slate_size=3)
