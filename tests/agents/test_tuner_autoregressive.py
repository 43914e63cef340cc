"""The tuner's autoregressive policy (``TunerConfig.autoregressive``): what each head is conditioned on,
that a head's logits read only the earlier heads' choices, that the knob-by-knob choice loop acts on the
same conditional distributions the PPO loss scores, and training, checkpoints and acting with it."""

from __future__ import annotations

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.tuner import (
    HEAD_INPUTS,
    MASKED_LOGIT,
    ActionHeads,
    MemoryShield,
    TunerConfig,
    TunerNetwork,
    TunerPolicy,
    choose_actions,
    fresh_estimate,
    head_inputs,
    knob_values,
    make_train,
    observation_features,
    observation_head_inputs,
    train_run,
)
from recgym.envs.pipeline import PipelineCore, dynamics, make_params
from recgym.envs.pipeline.params import NUM_STAGES
from tests.agents.conftest import assert_tuner_trains_deterministically, tiny_tuner_config

PARAMS = make_params("random", "absolute")
HEADS = ActionHeads.from_config(TunerConfig(action_mode="absolute"), PARAMS)
NUM_HEADS = len(HEADS.sizes)


def config(**overrides):
    return tiny_tuner_config(**({"action_mode": "absolute", "autoregressive": True} | overrides))


def start_observations(n, seed=0, params=PARAMS):
    core = PipelineCore(params)
    return jax.vmap(core.start, in_axes=(0, None))(jax.random.split(jax.random.key(seed), n), params)[0]


def random_choices(key, n):
    return jax.random.randint(key, (n, NUM_HEADS), 0, jnp.asarray(HEADS.sizes))


def test_bad_autoregressive_settings_are_rejected_by_name():
    with pytest.raises(ValueError, match="autoregressive=True needs action_mode='absolute'"):
        tiny_tuner_config(action_mode="increment", autoregressive=True)
    with pytest.raises(ValueError, match="autoregressive must be a bool"):
        config(autoregressive=1)
    increment = ActionHeads.from_config(TunerConfig(), make_params("random", "increment"))
    with pytest.raises(ValueError, match="autoregressive needs absolute-mode heads"):
        TunerNetwork(increment, 16, autoregressive=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="needs absolute-mode heads"):
        obs = start_observations(1, params=make_params("random", "increment"))
        choose_actions(None, increment, jnp.zeros((1, increment.num_logits)), fresh_estimate(None, (1,)), obs,
                       make_params("random", "increment"), condition=lambda i, head, inputs: head)


# ------------------------------------------------------------------------------------ the inputs
def test_the_first_head_is_conditioned_on_nothing_and_each_later_one_on_the_moves_before_it():
    obs = start_observations(3)
    targets = HEADS.observation_targets(obs, PARAMS)
    current = knob_values(obs, PARAMS)[0]
    choices = random_choices(jax.random.key(1), 3)
    inputs = np.asarray(observation_head_inputs(HEADS, obs, PARAMS, choices))
    assert inputs.shape == (3, NUM_HEADS, HEAD_INPUTS)
    moved, decided, load = inputs[..., :NUM_HEADS], inputs[..., NUM_HEADS: 2 * NUM_HEADS], inputs[..., -1]
    np.testing.assert_array_equal(decided[0], np.tril(np.ones((NUM_HEADS, NUM_HEADS)), -1))
    chosen = np.take_along_axis(np.asarray(targets), np.asarray(choices)[..., None], axis=-1)[..., 0]
    delta = chosen - np.asarray(current)
    want = np.sign(delta) * np.log2(1.0 + np.abs(delta)) / 3.0
    for i in range(NUM_HEADS):
        np.testing.assert_allclose(moved[:, i, :i], want[:, :i], rtol=1e-6)
        assert np.all(moved[:, i, i:] == 0.0)
        workers = chosen[:, :min(i, NUM_STAGES)].sum(-1) + np.asarray(current)[:, min(i, NUM_STAGES):NUM_STAGES].sum(-1)
        np.testing.assert_allclose(load[:, i], np.log(workers / np.asarray(obs)[:, dynamics.OBS_AVAILABLE]),
                                   rtol=1e-5, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), head=st.integers(0, NUM_HEADS - 1))
def test_a_heads_inputs_and_logits_read_only_the_earlier_heads_choices(autoregressive_network, seed, head):
    model = autoregressive_network
    k_choices, k_other, k_features = jax.random.split(jax.random.key(seed), 3)
    obs = start_observations(4, seed % 1000)
    sizes = jnp.asarray(HEADS.sizes)
    choices = random_choices(k_choices, 4)
    other = choices.at[:, head].set((choices[:, head] + 1 + jax.random.randint(k_other, (4,), 0, sizes[head] - 1))
                                    % sizes[head])  # head `head` chooses something else, the rest as before
    before, after = (observation_head_inputs(HEADS, obs, PARAMS, c) for c in (choices, other))
    np.testing.assert_array_equal(np.asarray(before[:, : head + 1]), np.asarray(after[:, : head + 1]))
    logits = jax.random.normal(k_features, (4, HEADS.num_logits))
    split_before = HEADS.split(model.conditioned_logits(logits, before))
    split_after = HEADS.split(model.conditioned_logits(logits, after))
    for i in range(head + 1):  # heads up to `head` never see its choice
        np.testing.assert_array_equal(np.asarray(split_before[i]), np.asarray(split_after[i]))


# ------------------------------------------------------------------------------------ the network
@pytest.fixture(scope="module")
def autoregressive_network():
    """An autoregressive network whose conditioner's corrections are large enough to change choices."""
    model = make_train(config()).build_model(jax.random.key(0))
    model.head_conditioner.out.kernel[...] = model.head_conditioner.out.kernel[...] * 300.0
    return model


def test_a_fresh_conditioner_starts_near_the_factorised_policy_and_the_plain_network_has_none():
    training = make_train(config())
    model = training.build_model(jax.random.key(0))
    assert model.autoregressive
    logits = jax.random.normal(jax.random.key(1), (5, HEADS.num_logits))
    inputs = observation_head_inputs(HEADS, start_observations(5), PARAMS, random_choices(jax.random.key(2), 5))
    conditioned = np.asarray(model.conditioned_logits(logits, inputs))
    assert 0 < np.max(np.abs(conditioned - np.asarray(logits))) < 0.1
    for i, head in enumerate(HEADS.split(logits)):
        np.testing.assert_array_equal(np.asarray(model.condition_head(i, head, inputs[:, i])),
                                      np.asarray(HEADS.split(model.conditioned_logits(logits, inputs))[i]))
    plain = make_train(config(autoregressive=False)).build_model(jax.random.key(0))
    assert not plain.autoregressive and plain.head_conditioner is None
    np.testing.assert_array_equal(np.asarray(plain.conditioned_logits(logits, inputs)), np.asarray(logits))


@pytest.mark.parametrize("shielded", [True, False])
def test_the_choice_loop_acts_on_the_conditional_distributions_the_loss_scores(autoregressive_network, shielded):
    """Deterministic mode decoding chooses, head by head, the argmax of the head's logits given the earlier
    heads' choices under its mask: the teacher-forced logits (what PPO's loss recomputes) from the final
    choices must pick the same choices, and the conditioning must matter (else this test cannot fail)."""
    model = autoregressive_network
    shield = MemoryShield.from_config(TunerConfig(action_mode="absolute")) if shielded else None
    n = 32
    obs = start_observations(n, 7)
    estimate = fresh_estimate(shield, (n,))
    features = observation_features(obs, obs, model.share_features)
    logits, _ = model(features)
    choices, allowed = choose_actions(shield, HEADS, logits, estimate, obs, PARAMS, None, "mode",
                                      condition=model.condition_head)
    conditioned = model.conditioned_logits(logits, observation_head_inputs(HEADS, obs, PARAMS, choices))
    masked = jnp.where(allowed, conditioned, MASKED_LOGIT)
    teacher = np.stack([np.argmax(np.asarray(head), axis=-1) for head in HEADS.split(masked)], axis=-1)
    np.testing.assert_array_equal(np.asarray(choices), teacher)
    factorised, _ = choose_actions(shield, HEADS, logits, estimate, obs, PARAMS, None, "mode")
    assert np.any(np.asarray(factorised) != np.asarray(choices))
    # sampled choices are valid under their masks
    keys = jax.random.split(jax.random.key(3), n)
    sampled, sampled_allowed = choose_actions(shield, HEADS, logits, estimate, obs, PARAMS, keys,
                                              condition=model.condition_head)
    for i, ok in enumerate(HEADS.split(sampled_allowed)):
        assert np.all(np.take_along_axis(np.asarray(ok), np.asarray(sampled)[:, i:i + 1], axis=-1))


def test_head_inputs_match_between_one_env_and_a_batch():
    obs = start_observations(6, 4)
    choices = random_choices(jax.random.key(5), 6)
    batch = head_inputs(HEADS.observation_targets(obs, PARAMS), knob_values(obs, PARAMS)[0], choices,
                        obs[:, dynamics.OBS_AVAILABLE])
    for e in range(6):
        one = head_inputs(HEADS.observation_targets(obs[e], PARAMS), knob_values(obs[e], PARAMS)[0], choices[e],
                          obs[e, dynamics.OBS_AVAILABLE])
        np.testing.assert_allclose(np.asarray(one), np.asarray(batch[e]), rtol=1e-6)


# ------------------------------------------------------------------------------------ training
def test_autoregressive_training_is_finite_deterministic_traces_once_and_the_conditioner_learns():
    assert_tuner_trains_deterministically(config(total_steps=16 * 4 * 4), "head_conditioner")


def test_the_rollouts_log_probabilities_are_the_losss_at_the_acting_parameters():
    """At the parameters that acted, the loss's recomputed (teacher-forced) log-probabilities equal the
    stored ones: every PPO ratio is 1."""
    from agents.parallel import DeviceAxis

    train = make_train(config())
    state = train.init(jax.random.key(4))
    _, batch = train._rollout(DeviceAxis(), train.env_params, state.learner.params, state.pipelines,
                              jax.random.key(9))
    flat = jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:]), batch)
    assert flat.head_inputs.shape == (flat.reward.shape[0], NUM_HEADS, HEAD_INPUTS)
    _, aux = train._loss(state.learner.params, flat, jnp.ones_like(flat.reward), flat.value)
    np.testing.assert_allclose(float(aux["losses/approx_kl"]), 0.0, atol=1e-6)
    np.testing.assert_allclose(float(aux["losses/clip_fraction"]), 0.0)


def test_an_autoregressive_checkpoint_loads_and_acts_like_the_trained_policy_in_the_vector_env(tmp_path):
    training, state = train_run(config(out=str(tmp_path)))
    env = gym.make_vec("RecGym-Pipeline-v0", num_envs=4, vectorization_mode="vector_entry_point",
                       scenario="memory-tight", action_mode="absolute")
    params = env.unwrapped.params
    live, loaded = TunerPolicy.from_training(training, state, params), TunerPolicy.from_checkpoint(tmp_path, params)
    for policy in (live, loaded):
        policy.reset(num_envs=4, seed=0)
    obs, info = env.reset(seed=0)
    for _ in range(10):
        actions = live.act_batch(obs, info)
        np.testing.assert_array_equal(actions, loaded.act_batch(obs, info))
        assert all(env.single_action_space.contains(a) for a in actions)
        obs, _, terminated, truncated, info = env.step(actions)
        for policy in (live, loaded):
            policy.begin_episode(terminated | truncated)
