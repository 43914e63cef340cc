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
