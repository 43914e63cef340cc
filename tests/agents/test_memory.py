"""The agent's consumption memory: a naive loop agrees with it over episodes (autoreset included),
the evaluation policy acts as the training rollout does, checkpoints carry it, bad decays are refused."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from agents.a2c import A2CConfig, main, make_train, train_run
from agents.checkpoint import Checkpointer
from agents.memory import MemorySpec
from agents.networks import greedy_slate
from agents.parallel import DeviceAxis
from agents.policy import AgentPolicy
from recgym.envs.movielens import build_world, make_params, observation_layout
from tests.agents.conftest import assert_acts_alike, tiny_config

DECAYS = (0.5, 0.9)


@pytest.fixture(scope="module")
def short_params():
    """The synthetic dynamic world with 9-step episodes, so that a short rollout crosses resets."""
    return {k: make_params(build_world("synthetic"), users="train", max_episode_steps=9,
                           **({"slate_size": k} if k > 1 else {})) for k in (1, 3)}


def recorded_rollout(params, slate_size=1, steps=24, mask_served=True):
    """A training rollout of 8 envs after 2 updates: the training object, its state and the batch."""
    config = tiny_config(memory_decays=DECAYS, slate_size=slate_size, num_envs=8, rollout_steps=steps,
                         total_steps=8 * steps * 4, mask_served=mask_served)
    training = make_train(config, params)
    state, _ = training.run(training.init(jax.random.key(5)), 2)
    _, batch = jax.jit(training._rollout, static_argnums=0)(
        DeviceAxis(), training.env_params, state.learner.params, state.actors, jax.random.key(6))
    return training, state, jax.tree_util.tree_map(np.asarray, batch)


def naive_memory(observations, first, carried, genres, clicked, decays):
    """The memory by hand: per env and step, decay (or restart at an episode's first observation)
    then add the clicked genres; step 0 holds the memory the rollout started from (``carried``)."""
    steps, n_envs, _ = observations.shape
    g = len(genres)
    out = np.zeros((steps, n_envs, len(decays) * g))
    for e in range(n_envs):
        traces = [[float(carried[e, j * g + i]) for i in range(g)] for j in range(len(decays))]
        out[0, e] = carried[e]
        for t in range(1, steps):
            obs = observations[t, e]
            for j, d in enumerate(decays):
                for i, genre in enumerate(genres):
                    previous = 0.0 if first[t, e] else d * traces[j][i]
                    traces[j][i] = previous + float(obs[genre]) * float(obs[clicked])
            out[t, e] = [x for trace in traces for x in trace]
    return out


def layout_indices(params):
    layout = {field.name: field for field in observation_layout(params)}
    genres = layout["history[0].genres"]
    return list(range(genres.start, genres.start + genres.size)), layout["history[0].clicked"].start


def test_the_memory_is_the_naive_loop_over_episodes_and_resets(short_params):
    params = short_params[1]
    training, state, batch = recorded_rollout(params)
    size = training.observation_size
    done = batch.terminated | batch.truncated
    assert done[:-1].any(), "the rollout should cross an episode end"
    observations = batch.observation[..., :size]
    first = np.concatenate([np.zeros((1, done.shape[1]), bool), done[:-1]])
    genres, clicked = layout_indices(params)
    g = len(genres)
    expected = naive_memory(observations, first, np.asarray(state.actors.memory), genres, clicked, DECAYS)
    np.testing.assert_allclose(batch.observation[..., size:], expected, rtol=1e-5, atol=1e-6)
    assert np.abs(expected).max() > 0, "no click in the rollout: the test would prove nothing"
    # the critic's bootstrap input: the memory after the final (pre-reset) observation
    final = batch.final_observation[..., :size]
    previous = batch.observation[..., size:]
    for t in range(final.shape[0]):
        for e in range(final.shape[1]):
            for j, d in enumerate(DECAYS):
                want = d * previous[t, e, j * g:(j + 1) * g] + final[t, e, genres] * final[t, e, clicked]
                np.testing.assert_allclose(batch.final_observation[t, e, size + j * g:size + (j + 1) * g], want,
                                           rtol=1e-5, atol=1e-6)


def test_a_fresh_state_starts_from_an_empty_memory(short_params):
    training = make_train(tiny_config(memory_decays=DECAYS), short_params[1])
    state = training.init(jax.random.key(0))
    assert state.actors.memory.shape == (16, len(DECAYS) * training.memory.n_genres)
    np.testing.assert_array_equal(np.asarray(state.actors.memory), 0.0)  # no interaction yet
    assert training.input_size == training.observation_size + training.memory.size


@pytest.mark.parametrize("slate_size", [1, 3])
def test_the_policy_acts_as_the_training_rollout_greedily(short_params, slate_size):
    training, state, batch = recorded_rollout(short_params[slate_size], slate_size, mask_served=False)
    size = training.observation_size
    model = training.model(state.learner.params)
    done = batch.terminated | batch.truncated
    policy = AgentPolicy.from_training(training, state, deterministic=True)
    policy.reset(num_envs=batch.observation.shape[1], seed=0)
    # the rollout starts mid-episode: give the policy the memory after the rollout's first observation
    policy.remembered = np.asarray(state.actors.memory).copy()
    policy.first[:] = False
    for t in range(1, batch.observation.shape[0]):
        policy.begin_episode(done[t - 1])
        actions = policy.act_batch(batch.observation[t, :, :size], {})
        np.testing.assert_allclose(policy.remembered, batch.observation[t, :, size:], rtol=1e-5, atol=1e-6)
        scores = model.scores(batch.observation[t])
        expected = np.asarray(greedy_slate(scores, np.zeros(scores.shape, bool), slate_size))
        np.testing.assert_array_equal(actions.reshape(expected.shape), expected)


def test_the_checkpoint_records_the_memory_and_acts_as_trained(short_params, tmp_path):
    training, state = train_run(tiny_config(memory_decays=DECAYS, total_steps=16 * 4 * 2, out=str(tmp_path)))
    with Checkpointer(tmp_path / "checkpoints") as checkpoints:
        recorded = checkpoints.metadata()["memory"]
    assert MemorySpec.from_dict(recorded) == training.memory
    loaded, direct = AgentPolicy.from_checkpoint(tmp_path), AgentPolicy.from_training(training, state)
    assert loaded.memory == direct.memory == training.memory
    _, _, batch = recorded_rollout(short_params[1])
    for policy in (loaded, direct):
        policy.reset(num_envs=8, seed=1)
    for t in range(batch.observation.shape[0]):
        observations = batch.observation[t, :, :training.observation_size]
        np.testing.assert_array_equal(loaded.act_batch(observations, {}), direct.act_batch(observations, {}))
    np.testing.assert_array_equal(loaded.remembered, direct.remembered)
    assert np.abs(loaded.remembered).max() > 0


def test_an_old_checkpoint_without_memory_loads_as_memory_off(synthetic_params, tmp_path):
    training = make_train(tiny_config(total_steps=16 * 4 * 2), synthetic_params)
    state, _ = jax.jit(training)(jax.random.key(0))
    metadata = training.checkpoint_metadata()
    for key in ("memory", "input_size"):  # what checkpoints written before the memory lack
        metadata.pop(key)
    metadata["config"].pop("memory_decays")
    with Checkpointer(tmp_path / "checkpoints") as checkpoints:
        checkpoints.save(2, training.checkpoint_items(state), metadata)
    loaded = AgentPolicy.from_checkpoint(tmp_path)
    assert loaded.memory is None
    assert_acts_alike(loaded, AgentPolicy.from_training(training, state), training, obs_seed=1, policy_seed=0)


@pytest.mark.parametrize("decays", [(1.0,), (0.5, -0.1), (float("nan"),), (1.5,)])
def test_bad_decays_are_a_clear_error(decays):
    with pytest.raises(ValueError, match=r"memory_decays must each lie in \[0, 1\)"):
        A2CConfig(memory_decays=decays)
    with pytest.raises(ValueError, match=r"memory_decays must each lie in \[0, 1\)"):
        MemorySpec(decays, 0, 3, 5)


def test_the_command_line_takes_decays_and_rejects_bad_ones(capsys):
    with pytest.raises(SystemExit):
        main(["--memory-decays", "0.8", "1.2"])
    assert "memory_decays must each lie in [0, 1)" in capsys.readouterr().err
