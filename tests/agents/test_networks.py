"""The factorised item head, the served-items memory and the Plackett–Luce slate distribution."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.networks import (
    ActorCritic,
    FactorisedItemHead,
    greedy_slate,
    mark_served,
    sample_slate,
    served_mask,
    served_words,
    slate_log_prob,
)


def plackett_luce_probability(scores, blocked, slate):
    """Probability of ``slate`` drawn item by item from the softmax of the items still allowed."""
    allowed = ~np.asarray(blocked)
    weights = np.exp(np.asarray(scores, np.float64))
    probability = 1.0
    for item in slate:
        probability *= weights[item] * allowed[item] / np.sum(weights * allowed)
        allowed[item] = False
    return probability


def test_item_head_scores_are_query_dot_embedding_plus_bias():
    features = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    head = FactorisedItemHead(features, embedding_dim=4, learned_item_table=True, rngs=nnx.Rngs(0))
    assert head.query_size == 4 + 3
    head.item_bias[...] = jnp.arange(7.0)
    head.item_table[...] = jnp.ones((7, 4))
    query = jnp.asarray([[1.0, -2.0, 0.5, 0.0, 0.3, -0.1, 2.0]])
    standardised = (features - features.mean(axis=0)) / features.std(axis=0)
    learned = standardised @ np.asarray(head.embed.kernel[...]) + np.asarray(head.embed.bias[...]) + 1.0
    embeddings = np.concatenate([learned, standardised], axis=1)
    np.testing.assert_allclose(np.asarray(head(query))[0], embeddings @ np.asarray(query)[0] + np.arange(7.0),
                               rtol=1e-5, atol=1e-5)


def test_the_wide_part_scores_bilinearly_in_observation_and_features():
    features = np.eye(3, dtype=np.float32)
    model = ActorCritic(2, features, (4,), 2, observation_shift=np.array([1.0, 0.0]),
                        observation_scale=np.array([2.0, 1.0]), rngs=nnx.Rngs(0))
    model.actor.out.kernel[...] = jnp.zeros_like(model.actor.out.kernel[...])
    model.actor.out.bias[...] = jnp.zeros_like(model.actor.out.bias[...])
    assert np.all(np.asarray(model.scores(jnp.ones((1, 2)))) == 0.0)  # the wide part starts at zero
    bilinear = np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]], np.float32)  # observation x feature
    model.actor_wide.kernel[...] = jnp.asarray(bilinear)
    observation = np.array([[3.0, 1.0]], np.float32)
    standardised_observation = (observation - [1.0, 0.0]) / [2.0, 1.0]
    standardised_features = (features - features.mean(axis=0)) / features.std(axis=0)
    np.testing.assert_allclose(np.asarray(model.scores(jnp.asarray(observation))),
                               standardised_observation @ bilinear @ standardised_features.T, atol=1e-5)


def test_item_head_grows_with_features_not_catalogue_without_table():
    def count(n_items):
        head = FactorisedItemHead(np.zeros((n_items, 5), np.float32), 8, rngs=nnx.Rngs(0))
        return sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(head, nnx.Param)))

    assert count(1000) - count(100) == 900  # only the per-item bias grows


def test_item_features_are_not_trainable_parameters():
    model = ActorCritic(6, np.ones((5, 3), np.float32), (8,), 4, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    assert not any(x.shape == (5, 3) for x in jax.tree_util.tree_leaves(params))
    scores, value = model(jnp.zeros((2, 6)))
    assert scores.shape == (2, 5) and value.shape == (2,)


def test_bad_item_features_are_rejected():
    with pytest.raises(ValueError, match="item_features must be"):
        FactorisedItemHead(np.zeros(5, np.float32), 4, rngs=nnx.Rngs(0))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 100), st.lists(st.integers(0, 99), min_size=0, max_size=12))
def test_served_bitset_round_trip(n_items, items):
    items = [i % n_items for i in items]
    served = jnp.zeros((1, served_words(n_items)), jnp.uint32)
    if items:
        served = mark_served(served, jnp.asarray([items], jnp.int32))
    expected = np.zeros(n_items, bool)
    expected[items] = True
    np.testing.assert_array_equal(np.asarray(served_mask(served, n_items))[0], expected)


@pytest.mark.parametrize("slate_size", [1, 2, 3])
def test_sampled_slates_follow_plackett_luce(slate_size):
    scores = np.array([0.5, -1.0, 2.0, 0.0, 1.0, -3.0], np.float32)
    blocked = np.array([False, False, False, True, False, False])
    n = 40_000
    draws = np.asarray(jax.jit(lambda k: sample_slate(k, jnp.broadcast_to(scores, (n, 6)),
                                                      jnp.broadcast_to(blocked, (n, 6)), slate_size))(
        jax.random.key(1)))
    assert draws.shape == (n, slate_size)
    assert not (draws == 3).any(), "a blocked item was drawn"
    assert all(len(set(row)) == slate_size for row in draws[:2000].tolist())
    counts: dict[tuple, int] = {}
    for row in map(tuple, draws.tolist()):
        counts[row] = counts.get(row, 0) + 1
    for slate in itertools.permutations([0, 1, 2, 4, 5], slate_size):
        p = plackett_luce_probability(scores, blocked, slate)
        if p > 0.01:  # a 5-sigma band of the binomial frequency
            assert abs(counts.get(slate, 0) / n - p) < 5 * np.sqrt(p * (1 - p) / n), slate


def test_slate_log_prob_matches_enumeration_and_entropy_is_exact_for_one_item():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(4, 5)).astype(np.float32) * 2
    blocked = np.zeros((4, 5), bool)
    blocked[1, 2] = True
    slates = np.array([[0, 1], [3, 4], [4, 0], [1, 3]], np.int32)
    log_prob, entropy = slate_log_prob(jnp.asarray(scores), jnp.asarray(blocked), jnp.asarray(slates))
    for row in range(4):
        expected = np.log(plackett_luce_probability(scores[row], blocked[row], slates[row]))
        assert float(log_prob[row]) == pytest.approx(expected, abs=1e-4)
    _, entropy_one = slate_log_prob(jnp.asarray(scores), jnp.asarray(blocked), jnp.asarray(slates[:, :1]))
    for row in range(4):
        p = np.exp(scores[row]) * ~blocked[row]
        p /= p.sum()
        assert float(entropy_one[row]) == pytest.approx(-np.sum(p[p > 0] * np.log(p[p > 0])), abs=1e-4)
    # the chain-rule entropy of a slate: its mean over slates is the exact joint entropy
    assert np.all(np.asarray(entropy) >= np.asarray(entropy_one))


def test_log_prob_is_finite_and_differentiable_for_a_very_sharp_policy():
    scores = jnp.asarray([[500.0, 0.0, -500.0, 1.0]])
    blocked = jnp.zeros((1, 4), bool)

    def total(scores):
        log_prob, entropy = slate_log_prob(scores, blocked, jnp.asarray([[0, 3, 1]]))
        return log_prob.sum() + entropy.sum()

    grads = jax.grad(total)(scores)
    assert np.isfinite(float(total(scores))) and np.all(np.isfinite(np.asarray(grads)))
    assert np.asarray(sample_slate(jax.random.key(0), scores, blocked, 3))[0, 0] == 0


def test_gradients_stay_finite_when_a_blocked_item_scores_far_above_the_rest():
    scores = jnp.asarray([[400.0, 0.0, 1.0, -2.0]])     # the best item was served (blocked)
    blocked = jnp.asarray([[True, False, False, False]])

    def total(scores):
        log_prob, entropy = slate_log_prob(scores, blocked, jnp.asarray([[2, 1]]))
        return log_prob.sum() + entropy.sum()

    grads = np.asarray(jax.grad(total)(scores))
    assert np.all(np.isfinite(grads)) and grads[0, 0] == 0.0


def test_rows_with_too_few_allowed_items_start_over():
    scores = jnp.zeros((1, 4))
    blocked = jnp.asarray([[True, True, True, False]])
    slate = np.asarray(sample_slate(jax.random.key(0), scores, blocked, 2))[0]
    assert len(set(slate.tolist())) == 2
    assert np.isfinite(np.asarray(slate_log_prob(scores, blocked, jnp.asarray([slate]))[0])).all()


def test_per_row_keys_make_a_row_independent_of_its_batch():
    scores = jax.random.normal(jax.random.key(0), (6, 300))
    blocked = jnp.zeros((6, 300), bool)
    keys = jax.random.split(jax.random.key(5), 6)
    whole = np.asarray(sample_slate(keys, scores, blocked, 3))
    half = np.asarray(sample_slate(keys[3:], scores[3:], blocked[3:], 3))
    np.testing.assert_array_equal(whole[3:], half)


def test_greedy_slate_is_the_best_allowed_items_in_order():
    scores = jnp.asarray([[0.1, 0.9, 0.5, 0.7]])
    blocked = jnp.asarray([[False, True, False, False]])
    np.testing.assert_array_equal(np.asarray(greedy_slate(scores, blocked, 2)), [[3, 2]])


def test_sample_slate_rejects_a_slate_larger_than_the_catalogue():
    with pytest.raises(ValueError, match="slate_size must lie in"):
        sample_slate(jax.random.key(0), jnp.zeros((1, 3)), jnp.zeros((1, 3), bool), 4)
