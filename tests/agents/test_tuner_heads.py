"""The tuner's per-head advantages (``TunerConfig.head_advantages``): the action-prefix baselines read
only the earlier heads' choices, the two forms' algebra, the per-head PPO loss against the joint one,
and training, checkpoints and acting with the extra critic."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.parallel import DeviceAxis
from agents.tuner import (
    FEATURE_SIZE,
    TunerNetwork,
    TunerPolicy,
    head_advantages,
    make_train,
    train_run,
)
from recgym.envs.pipeline import make_params
from tests.agents.conftest import assert_tuner_trains_deterministically, leaves, tiny_tuner_config


def config(**overrides):
    return tiny_tuner_config(**({"action_mode": "absolute", "head_advantages": "prefix"} | overrides))


@pytest.mark.parametrize("overrides, message", [
    ({"head_advantages": "per-head"}, "head_advantages must be one of"),
    ({"action_mode": "increment"}, "needs action_mode='absolute'"),
])
def test_bad_head_advantage_settings_are_rejected_by_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        config(**overrides)


# ------------------------------------------------------------------------------------ the baselines
@pytest.fixture(scope="module")
def network():
    training = make_train(config())
    return training.heads, training.build_model(jax.random.key(0))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), head=st.integers(0, 7))
def test_a_prefix_baseline_reads_only_the_earlier_heads_choices(network, seed, head):
    heads, model = network
    k_features, k_choices, k_other = jax.random.split(jax.random.key(seed), 3)
    features = jax.random.normal(k_features, (4, FEATURE_SIZE))
    sizes = jnp.asarray(heads.sizes)
    choices = jax.random.randint(k_choices, (4, len(heads.sizes)), 0, sizes)
    other = choices.at[:, head].set((choices[:, head] + 1 + jax.random.randint(k_other, (4,), 0, sizes[head] - 1))
                                    % sizes[head])  # head `head` chooses something else, the rest as before
    before, after = np.asarray(model.prefix_values(features, choices)), np.asarray(model.prefix_values(features, other))
    assert before.shape == (4, len(heads.sizes) - 1)
    # column c is b(s, a_<c+1): it may depend on head `head` only if head < c + 1
    np.testing.assert_array_equal(before[:, :head], after[:, :head])
    if head < len(heads.sizes) - 1:  # the last head's choice is in no baseline (it has the return)
        assert not np.allclose(before[:, head:], after[:, head:])


def test_one_pass_gives_what_the_separate_calls_give(network):
    heads, model = network
    features = jax.random.normal(jax.random.key(1), (3, FEATURE_SIZE))
    choices = jnp.zeros((3, len(heads.sizes)), jnp.int32).at[:, 0].set(4)
    logits, value, prefix = model.with_prefix_values(features, choices)
    for got, want in zip((logits, value, prefix), (*model(features), model.prefix_values(features, choices)),
                         strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)


def test_the_joint_network_has_no_prefix_critic_and_refuses_to_give_its_values():
    training = make_train(config(head_advantages="joint"))
    model = training.build_model(jax.random.key(0))
    assert model.prefix_critic is None
    with pytest.raises(ValueError, match="without head_critic"):
        model.prefix_values(jnp.zeros((1, FEATURE_SIZE)), jnp.zeros((1, 8), jnp.int32))
    # the joint network's parameters are those it had before the option existed (checkpoints load)
    plain = TunerNetwork(training.heads, training.config.hidden_width, rngs=nnx.Rngs(params=jax.random.key(0)))
    assert jax.tree_util.tree_structure(nnx.state(model)) == jax.tree_util.tree_structure(nnx.state(plain))


# ------------------------------------------------------------------------------------ the algebra
def test_chain_advantages_add_up_to_the_joint_one_and_prefix_ones_are_return_minus_baseline():
    rng = np.random.default_rng(0)
    advantages, values = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    targets, prefix = advantages + values, rng.normal(size=(3, 5, 7))
    chain = np.asarray(head_advantages("chain", targets, values, prefix))
    np.testing.assert_allclose(chain.sum(axis=-1), advantages, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chain[..., 0], prefix[..., 0] - values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chain[..., -1], targets - prefix[..., -1], rtol=1e-5, atol=1e-6)
    own = np.asarray(head_advantages("prefix", targets, values, prefix))
    np.testing.assert_allclose(own[..., 0], advantages, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(own[..., 1:], targets[..., None] - prefix, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="form must be"):
        head_advantages("joint", targets, values, prefix)


def _batch(training, state):
    _, batch = training._rollout(DeviceAxis(), training.env_params, state.learner.params, state.pipelines,
                                 jax.random.key(9))
    return jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:]), batch)


def test_per_head_loss_with_equal_advantages_has_the_joint_losss_policy_gradient():
    """At the acting parameters (every ratio 1, nothing clipped) the per-head surrogate's gradient is
    sum_i A_i grad log pi_i; with A_i = A for every head that is A grad log pi, the joint one's."""
    joint, per_head = make_train(config(head_advantages="joint")), make_train(config())
    state = per_head.init(jax.random.key(0))
    batch = _batch(per_head, state)
    advantages = jnp.asarray(np.random.default_rng(1).normal(size=batch.reward.shape), jnp.float32)
    targets = batch.value
    joint_params = nnx.state(nnx.merge(per_head.graphdef, state.learner.params))
    joint_params = {name: joint_params[name] for name in ("actor", "stage_logits", "global_logits", "critic",
                                                          "value_head")}
    joint_params = nnx.state(joint.model(nnx.State(joint_params)))
    grad_joint = jax.grad(lambda p: joint._loss(p, batch, advantages, targets)[0])(joint_params)
    tiled = jnp.repeat(advantages[:, None], len(per_head.heads.sizes), axis=1)
    grad_heads = jax.grad(lambda p: per_head._loss(p, batch, tiled, targets)[0])(state.learner.params)
    for name in ("actor", "stage_logits", "global_logits"):
        for a, b in zip(leaves(grad_joint[name]), leaves(grad_heads[name]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("form", ["prefix", "chain"])
def test_training_with_head_advantages_is_finite_deterministic_and_traces_once(form):
    assert_tuner_trains_deterministically(config(head_advantages=form, total_steps=16 * 4 * 4), "prefix_critic")


def test_a_head_advantage_checkpoint_loads_and_acts_like_the_trained_policy(tmp_path):
    training, state = train_run(config(head_advantages="chain", out=str(tmp_path)))
    params = make_params("steady", "absolute")
    live, loaded = TunerPolicy.from_training(training, state, params), TunerPolicy.from_checkpoint(tmp_path, params)
    obs = np.asarray(jax.vmap(training.core.start, in_axes=(0, None))(jax.random.split(jax.random.key(3), 4),
                                                                       params)[0])
    for policy in (live, loaded):
        policy.reset(num_envs=4, seed=0)
    np.testing.assert_array_equal(live.act_batch(obs, {}), loaded.act_batch(obs, {}))
