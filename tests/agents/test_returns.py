"""GAE against a plain Python loop, with termination and truncation kept apart."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.returns import gae


def naive_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """The textbook recursion, one environment, step by step."""
    steps = len(rewards)
    advantages = np.zeros(steps)
    following = 0.0
    for t in reversed(range(steps)):
        bootstrap = 0.0 if terminated[t] else next_values[t]
        delta = rewards[t] + gamma * bootstrap - values[t]
        episode_goes_on = not (terminated[t] or truncated[t])
        following = delta + gamma * lam * (following if episode_goes_on else 0.0)
        advantages[t] = following
    return advantages, advantages + np.asarray(values)


@st.composite
def rollouts(draw):
    steps = draw(st.integers(1, 12))
    envs = draw(st.integers(1, 3))
    floats = st.floats(-5, 5, allow_nan=False, width=32)
    shape = st.tuples(st.just(steps), st.just(envs))

    def array(elements):
        return np.asarray(draw(st.lists(elements, min_size=steps * envs, max_size=steps * envs))).reshape(steps, envs)

    terminated = array(st.booleans())
    truncated = array(st.booleans()) & ~terminated
    del shape
    return (array(floats).astype(np.float32), array(floats).astype(np.float32), array(floats).astype(np.float32),
            terminated, truncated, draw(st.floats(0, 1)), draw(st.floats(0, 1)))


@settings(max_examples=60, deadline=None)
@given(rollouts())
def test_gae_equals_the_python_loop(rollout):
    rewards, values, next_values, terminated, truncated, gamma, lam = rollout
    advantages, returns = gae(rewards, values, next_values, terminated, truncated, gamma, lam)
    for env in range(rewards.shape[1]):
        expected_adv, expected_ret = naive_gae(rewards[:, env], values[:, env], next_values[:, env],
                                               terminated[:, env], truncated[:, env], gamma, lam)
        np.testing.assert_allclose(np.asarray(advantages)[:, env], expected_adv, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(returns)[:, env], expected_ret, rtol=1e-4, atol=1e-4)


def test_truncation_bootstraps_from_the_final_observation_and_termination_does_not():
    # one step each: reward 1, value 0, value of the observation reached 10
    ones, zeros, tens = np.ones((1, 3), np.float32), np.zeros((1, 3), np.float32), np.full((1, 3), 10.0, np.float32)
    terminated = np.array([[False, True, False]])
    truncated = np.array([[False, False, True]])
    advantages, _ = gae(ones, zeros, tens, terminated, truncated, gamma=0.9, gae_lambda=0.5)
    # goes on: 1 + 0.9 * 10; terminated: 1; truncated: 1 + 0.9 * 10 (bootstrapped from final_obs)
    np.testing.assert_allclose(np.asarray(advantages)[0], [10.0, 1.0, 10.0])


def test_the_trace_stops_at_an_episode_end_of_either_kind():
    rewards = np.array([[0.0], [5.0]], np.float32)
    zeros = np.zeros((2, 1), np.float32)
    for flags in ({"terminated": [[True], [False]], "truncated": [[False], [False]]},
                  {"terminated": [[False], [False]], "truncated": [[True], [False]]}):
        advantages, _ = gae(rewards, zeros, zeros, np.array(flags["terminated"]), np.array(flags["truncated"]),
                            gamma=1.0, gae_lambda=1.0)
        assert float(advantages[0, 0]) == 0.0  # the next episode's reward does not leak back


def test_lambda_one_gives_discounted_n_step_returns():
    rewards = np.array([[1.0], [2.0], [3.0]], np.float32)
    values = np.array([[0.5], [0.25], [0.125]], np.float32)
    next_values = np.array([[0.25], [0.125], [7.0]], np.float32)
    no = np.zeros((3, 1), bool)
    _, returns = gae(rewards, values, next_values, no, no, gamma=0.5, gae_lambda=1.0)
    np.testing.assert_allclose(np.asarray(returns)[:, 0], [1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 7, 2 + 0.5 * 3 + 0.25 * 7,
                                                           3 + 0.5 * 7])


def test_mismatched_shapes_name_the_array():
    with pytest.raises(ValueError, match="next_values must have the shape of rewards"):
        gae(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 1)), np.zeros((3, 2), bool), np.zeros((3, 2), bool),
            0.9, 0.9)
