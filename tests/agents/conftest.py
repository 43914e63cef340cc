"""Fixtures of the agent tests: a small synthetic world and a config that trains in seconds."""

from __future__ import annotations

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
