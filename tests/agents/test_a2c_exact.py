"""The faster A2C update computes the same thing: same gradients, same learned parameters.

The update reuses the rollout's scores and the critic's values of the next observations instead
of computing them again (issue #10). These tests hold it to the definition (``jax.grad`` of
``A2CTraining._loss``, which computes every network output as written) and to the parameters
``main``'s update learned before the change (``tests/agents/a2c_reference.py``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.a2c import make_train
from agents.networks import item_log_prob, sample_slate, slate_log_prob
from agents.parallel import DeviceAxis
from recgym.envs.movielens import build_world, make_params
from tests.agents.a2c_reference import (
    CASES,
    NUM_UPDATES,
    REFERENCE_FILE,
    case_training,
    trained_params,
)
from tests.agents.conftest import tiny_config

AXIS = DeviceAxis()


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(REFERENCE_FILE))


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_learns_the_parameters_main_learned(reference, name):
    """Six updates from the same key end at the parameters the update before the savings reached."""
    learned = trained_params(name)
    pinned = [reference[f"{name}/{i}"] for i in range(len(learned))]
    assert len(pinned) == sum(key.startswith(f"{name}/") for key in reference)
    for i, (new, old) in enumerate(zip(learned, pinned)):
        np.testing.assert_allclose(new, old, rtol=1e-4, atol=1e-6, err_msg=f"{name} leaf {i} after {NUM_UPDATES}")


def _trained_state_and_batch(training, updates=3, seed=0):
    """A state some updates into training, and the next rollout's batch."""
    state, _ = training.run(training.init(jax.random.key(seed)), updates)
    rollout = jax.jit(lambda p, a, k: training._rollout(AXIS, training.env_params, p, a, k))
    _, batch = rollout(state.learner.params, state.actors, jax.random.key(seed + 1))
    return state.learner.params, batch


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_equal_jax_grad_of_the_loss(name):
    training = case_training(name)
    params, batch = _trained_state_and_batch(training)
    grads, aux = jax.jit(lambda p, b: training._gradients(p, b, AXIS))(params, batch)
    want, want_aux = jax.jit(lambda p, b: jax.grad(training._loss, has_aux=True)(p, b, AXIS))(params, batch)
    # rounding noise relative to the gradient's largest entry (some entries are 0 up to rounding:
    # the item embedding's bias shifts every item's score alike, which the softmax ignores)
    scale = max(float(np.max(np.abs(leaf))) for leaf in jax.tree_util.tree_leaves(want))
    assert scale > 0
    for (path, got), expected in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * scale, err_msg=jax.tree_util.keystr(path))
    for metric, value in want_aux.items():
        np.testing.assert_allclose(aux[metric], value, rtol=1e-4, atol=1e-6, err_msg=metric)


def test_the_rollout_keeps_the_scores_of_its_observations():
    training = case_training("slates")
    params, batch = _trained_state_and_batch(training)
    scores = jax.jit(lambda p, o: training.model(p).scores(o))(params, batch.observation)
    np.testing.assert_allclose(batch.scores, scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("max_episode_steps", [1, 7, 200])
def test_next_values_are_the_values_of_the_final_observations(max_episode_steps):
    """Both ways of valuing the final observations: truncations gathered (at most one per env)
    and, with episodes of one step (every env truncates at every step), all valued."""
    config = tiny_config(rollout_steps=8, total_steps=10**6)
    training = make_train(config, make_params(build_world("synthetic"), users="train",
                                              max_episode_steps=max_episode_steps))
    params, batch = _trained_state_and_batch(training, updates=1)
    truncations = int(np.sum(np.asarray(batch.truncated)[:-1]))
    if max_episode_steps == 1:
        assert truncations > config.num_envs  # the branch that values every final observation
    elif max_episode_steps == 7:  # at most one per env: the gathered branch
        assert 0 < truncations <= config.num_envs
    model_value = jax.jit(lambda p, o: training.model(p).value(o))
    values = model_value(params, batch.observation)
    got = jax.jit(training._next_values)(params, values, batch)
    want = model_value(params, batch.final_observation)
    used = ~np.asarray(batch.terminated)  # a terminated step's next value is never read
    assert np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_allclose(np.asarray(got)[used], np.asarray(want)[used], rtol=1e-5, atol=1e-5)


def test_the_item_head_runs_no_forward_pass_in_the_update():
    """The gradient's cost: XLA's FLOP count of ``_gradients`` is below ``jax.grad`` of the loss
    by at least the item head's forward pass over the batch (``2 * rows * n_items * query``)."""
    training = case_training("single")
    params, batch = _trained_state_and_batch(training, updates=1)

    def flops(function):
        cost = jax.jit(function).lower(params, batch).compile().cost_analysis()
        return float((cost[0] if isinstance(cost, list) else cost)["flops"])

    rows = batch.observation.shape[0] * batch.observation.shape[1]
    head = 2 * rows * training.n_items * training.model(params).head.query_size
    new = flops(lambda p, b: training._gradients(p, b, AXIS))
    old = flops(lambda p, b: jax.grad(training._loss, has_aux=True)(p, b, AXIS))
    assert new <= old - head, (new, old, head)
    assert new > 0.5 * old  # the backward passes remain


def test_gradients_on_a_zero_batch_are_finite():
    """A terminated-everywhere, reward-free batch (all next values unused) still gives finite gradients."""
    training = case_training("single")
    params, batch = _trained_state_and_batch(training, updates=1)
    batch = batch.replace(terminated=jnp.ones_like(batch.terminated), truncated=jnp.zeros_like(batch.truncated),
                          reward=jnp.zeros_like(batch.reward))
    grads, _ = jax.jit(lambda p, b: training._gradients(p, b, AXIS))(params, batch)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree_util.tree_leaves(grads))


def test_item_log_prob_equals_slate_log_prob_in_value_and_gradient():
    """The closed-form gradient on the cases the masked, floored softmax has: blocked items (one
    scoring far above the rest), items below the floor (one of them drawn), a row with every item
    blocked (it starts over), ordinary rows."""
    keys = jax.random.split(jax.random.key(0), 5)
    rows, n_items = 64, 300
    scores = 3 * jax.random.normal(keys[0], (rows, n_items))
    scores = scores.at[:4, :50].add(-200.0)
    blocked = jax.random.bernoulli(keys[1], 0.3, (rows, n_items))
    scores, blocked = scores.at[4:8, 10].add(500.0), blocked.at[4:8, 10].set(True)
    blocked = blocked.at[8].set(True)
    items = sample_slate(keys[2], scores, blocked, 1).at[0, 0].set(5)
    assert bool(blocked[8].all()) and float(scores[0, 5] - scores[0].max()) < -80
    weights = jax.random.normal(keys[3], (rows,)), jax.random.normal(keys[4], (rows,))

    def objective(function, scores):
        log_prob, entropy = function(scores, blocked, items)
        return jnp.sum(weights[0] * log_prob) + jnp.sum(weights[1] * entropy)

    for got, want in zip(item_log_prob(scores, blocked, items), slate_log_prob(scores, blocked, items)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    got = jax.grad(functools.partial(objective, item_log_prob))(scores)
    want = jax.grad(functools.partial(objective, slate_log_prob))(scores)
    assert float(np.abs(want).max()) > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    still_blocked = np.asarray(blocked & ~blocked.all(axis=1, keepdims=True))  # row 8 starts over
    assert np.all(np.asarray(got)[still_blocked] == 0) and np.all(np.asarray(got)[:4, :50] == 0)
