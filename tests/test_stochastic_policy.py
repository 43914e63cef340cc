"""recgym.stochastic_policy: softmax / epsilon-greedy policies and their propensities."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from recgym.policies import RandomPolicy, ScoringPolicy
from recgym.stochastic_policy import StochasticPolicy, choice_distribution

OBS = np.zeros((1, 1))


class FixedScores(ScoringPolicy):
    """Scores every item the same way at every step (``-inf``: never serve)."""

    def __init__(self, scores, slate_size=None, exclude_served=True):
        self.fixed_scores = np.asarray(scores, dtype=float)
        super().__init__(len(self.fixed_scores), slate_size, exclude_served)

    def scores(self, observations, infos):
        return np.broadcast_to(self.fixed_scores, (self.num_envs, self.n_items))


def fixed(scores, slate_size=None, exclude_served=True):
    return FixedScores(scores, slate_size, exclude_served)


@settings(max_examples=80, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(2, 8), elements=st.sampled_from([-np.inf, 0.0, 1.0, 2.5])),
    st.data(),
)
def test_greedy_without_exploration_is_the_base_policy(scores, data):
    k = data.draw(st.sampled_from([None] + list(range(1, len(scores) + 1))))
    base, twin = fixed(scores, k), fixed(scores, k)
    greedy = StochasticPolicy(twin, temperature=0.0, epsilon=0.0)
    base.reset(num_envs=1, seed=0)
    greedy.reset(num_envs=1, seed=0)
    for _ in range(len(scores) + 2):  # past the point where served items run out
        expected = base.act_batch(OBS, {})
        got = greedy.act_batch(OBS, {})
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(greedy.propensities, [1.0])


@pytest.mark.parametrize("slate_size", [None, 2, 3])
@pytest.mark.parametrize(("temperature", "epsilon"), [(1.0, 0.0), (0.5, 0.2), (0.0, 0.3)])
def test_probabilities_of_every_action_sum_to_one(slate_size, temperature, epsilon):
    scores = np.array([2.0, -np.inf, 0.5, 1.0, 1.0])
    k = 1 if slate_size is None else slate_size
    total = 0.0
    for slate in itertools.permutations(range(len(scores)), k):
        policy = StochasticPolicy(fixed(scores, slate_size), temperature, epsilon)
        policy.reset(num_envs=1, seed=0)
        action = np.array([slate]) if slate_size else np.array([slate[0]])
        p = policy.action_probabilities(OBS, {}, action)[0]
        if 1 in slate:  # the -inf item is never served while finite ones remain
            assert p == 0.0
        total += p
    assert total == pytest.approx(1.0, abs=1e-12)


def test_softmax_probabilities_follow_the_formula():
    scores = np.array([[1.0, 2.0, 0.0, 5.0]])
    available = np.array([[True, True, True, False]])
    got = choice_distribution(scores, available, temperature=0.5, epsilon=0.3)
    soft = np.exp(np.array([1.0, 2.0, 0.0]) / 0.5)
    expected = 0.7 * soft / soft.sum() + 0.3 / 3
    np.testing.assert_allclose(got[0, :3], expected)
    assert got[0, 3] == 0.0


def test_sampled_frequencies_match_the_reported_propensities():
    policy = StochasticPolicy(fixed([1.0, 0.0, 2.0, 0.5], exclude_served=False), 1.0, 0.1)
    n = 20_000
    policy.reset(num_envs=n, seed=3)
    actions, propensities = policy.act_with_propensities(np.zeros((n, 1)), {})
    for item in range(4):
        p = propensities[actions == item][0]
        freq = np.mean(actions == item)
        assert abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n)


def test_slate_propensity_is_the_product_of_position_factors_and_matches_replay():
    scores = [3.0, 1.0, 2.0, 0.0, 0.5]
    policy = StochasticPolicy(fixed(scores, slate_size=3), 0.7, 0.2)
    policy.reset(num_envs=64, seed=1)
    slates, propensities = policy.act_with_propensities(np.zeros((64, 1)), {})
    np.testing.assert_allclose(propensities, policy.position_propensities.prod(axis=1))
    assert all(len(set(row)) == 3 for row in slates.tolist())
    replay = StochasticPolicy(fixed(scores, slate_size=3), 0.7, 0.2)
    replay.reset(num_envs=64, seed=99)
    np.testing.assert_allclose(replay.action_probabilities(np.zeros((64, 1)), {}, slates), propensities)


def test_epsilon_floor_and_served_items():
    policy = StochasticPolicy(fixed([10.0, 0.0, 0.0]), temperature=0.0, epsilon=0.3)
    policy.reset(num_envs=1, seed=0)
    assert policy.action_probabilities(OBS, {}, np.array([1]))[0] == pytest.approx(0.1)
    # item 1 is now served: the floor spreads over items 0 and 2, item 0 is the greedy one
    assert policy.action_probabilities(OBS, {}, np.array([1]))[0] == 0.0
    assert policy.action_probabilities(OBS, {}, np.array([0]))[0] == pytest.approx(0.7 + 0.15)


def test_candidate_mode_ranks_only_the_candidates():
    policy = StochasticPolicy(fixed([0.0, 5.0, 1.0, 2.0]), temperature=0.0, epsilon=0.0)
    policy.reset(num_envs=1, seed=0)
    infos = {"candidates": np.array([[0, 2, 3]])}
    assert policy.act_batch(OBS, infos)[0] == 2  # position of item 3, the best candidate
    assert policy.served[0].tolist() == [False, False, False, True]


def test_same_seed_same_actions_and_the_base_is_reseeded():
    def run(seed):
        policy = StochasticPolicy(RandomPolicy(50), temperature=0.05, epsilon=0.1)
        policy.reset(num_envs=8, seed=seed)
        return np.stack([policy.act_batch(np.zeros((8, 1)), {}) for _ in range(5)])

    np.testing.assert_array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))


def test_bad_inputs_name_the_field_and_value():
    base = fixed([1.0, 2.0])
    with pytest.raises(ValueError, match=r"temperature must be finite and >= 0, got -1"):
        StochasticPolicy(base, temperature=-1.0)
    with pytest.raises(ValueError, match=r"temperature .* got nan"):
        StochasticPolicy(base, temperature=float("nan"))
    with pytest.raises(ValueError, match=r"epsilon must lie in \[0, 1\], got 1.5"):
        StochasticPolicy(base, epsilon=1.5)
    with pytest.raises(TypeError, match="ScoringPolicy"):
        StochasticPolicy(object())
    policy = StochasticPolicy(base)
    policy.reset(num_envs=1, seed=0)
    with pytest.raises(ValueError, match=r"actions must lie in \[0, 2\)"):
        policy.action_probabilities(OBS, {}, np.array([2]))
    with pytest.raises(ValueError, match="actions must have shape"):
        policy.action_probabilities(OBS, {}, np.array([[0, 1]]))
