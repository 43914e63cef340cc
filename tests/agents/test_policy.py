"""The trained agent as a recgym Policy: valid actions, hidden state never read, checkpoint loading."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from agents.a2c import make_train, train_run
from agents.policy import AgentPolicy
from recgym.evaluation import evaluate, make_eval_env
from tests.agents.conftest import assert_acts_alike, tiny_config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny single-item run and a tiny slate run, each saved to a run folder."""
    runs = {}
    for slate_size in (1, 3):
        out = tmp_path_factory.mktemp(f"slate{slate_size}")
        training, state = train_run(tiny_config(slate_size=slate_size, total_steps=16 * 4 * 2, out=str(out)))
        runs[slate_size] = (out, training, state)
    return runs


@pytest.mark.parametrize("slate_size", [1, 3])
@pytest.mark.parametrize("deterministic", [True, False])
def test_actions_are_valid_in_the_gymnasium_env(trained_run, slate_size, deterministic):
    out, _, _ = trained_run[slate_size]
    policy = AgentPolicy.from_checkpoint(out, deterministic=deterministic)
    kwargs = {"slate_size": slate_size} if slate_size > 1 else {}
    env = make_eval_env("RecGym-MovieLens-v0", num_envs=None, dataset="synthetic", **kwargs)
    policy.reset(num_envs=1, seed=0)
    observation, info = env.reset(seed=0)
    served = []
    for _ in range(30):
        action = policy.act(observation, info)
        assert env.action_space.contains(np.asarray(action, np.int64) if slate_size > 1 else action)
        served.extend(np.atleast_1d(action).tolist())
        observation, _, terminated, truncated, info = env.step(action)  # the env validates the action
        if terminated or truncated:
            break
    assert len(served) == len(set(served)), "an item was served twice in an episode"


@pytest.mark.parametrize("slate_size", [1, 3])
def test_checkpoint_policy_acts_like_the_trained_one(trained_run, slate_size):
    out, training, state = trained_run[slate_size]
    loaded = AgentPolicy.from_checkpoint(out)
    assert_acts_alike(loaded, AgentPolicy.from_training(training, state), training, obs_seed=0, policy_seed=1)


def test_the_policy_never_reads_hidden_state(trained_run):
    out, _, _ = trained_run[1]
    policy_a, policy_b = AgentPolicy.from_checkpoint(out, deterministic=False), AgentPolicy.from_checkpoint(
        out, deterministic=False)
    env = make_eval_env("RecGym-MovieLens-v0", num_envs=4, dataset="synthetic")
    observation, info = env.reset(seed=[0, 1, 2, 3])
    observation, _, _, _, info = env.step(np.zeros(4, np.int64))
    poisoned = {key: np.full_like(np.asarray(value, np.float64), np.nan) for key, value in info.items()
                if not key.startswith("_")}
    for policy in (policy_a, policy_b):
        policy.reset(num_envs=4, seed=3)
    np.testing.assert_array_equal(policy_a.act_batch(observation, info), policy_b.act_batch(observation, poisoned))


def test_same_seed_same_sampled_actions(trained_run):
    out, _, _ = trained_run[3]
    env = make_eval_env("RecGym-MovieLens-v0", num_envs=8, dataset="synthetic", slate_size=3)
    first = evaluate(AgentPolicy.from_checkpoint(out, deterministic=False), env, 8, seed=2).episodes
    second = evaluate(AgentPolicy.from_checkpoint(out, deterministic=False), env, 8, seed=2).episodes
    np.testing.assert_array_equal(first["return"].to_numpy(), second["return"].to_numpy())


def test_several_seeds_act_in_turn_over_env_slots(synthetic_params, tmp_path):
    from agents.checkpoint import Checkpointer

    config = tiny_config(total_steps=16 * 4 * 2)
    training = make_train(config, synthetic_params)
    states, _ = jax.jit(jax.vmap(training))(jax.random.split(jax.random.key(0), 3))
    with Checkpointer(tmp_path / "checkpoints") as checkpoints:
        items = training.checkpoint_items(states)
        checkpoints.save(2, items, training.checkpoint_metadata(num_seeds=3))
    together = AgentPolicy.from_checkpoint(tmp_path)
    each = [AgentPolicy.from_checkpoint(tmp_path, seed_index=s) for s in range(3)]
    observations = np.asarray(jax.vmap(training.core.start, in_axes=(0, None))(
        jax.random.split(jax.random.key(1), 7), training.env_params)[0])
    for policy in (together, *each):
        policy.reset(num_envs=7, seed=0)
    actions = together.act_batch(observations, {})
    by_seed = [policy.act_batch(observations, {}) for policy in each]
    np.testing.assert_array_equal(actions, [by_seed[i % 3][i] for i in range(7)])
    with pytest.raises(ValueError, match="seed_index must lie in"):
        AgentPolicy.from_checkpoint(tmp_path, seed_index=3)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoints folder"):
        AgentPolicy.from_checkpoint(tmp_path / "nothing")
