"""The pipeline tuner: features, actions, PPO training (one trace, finite, deterministic, resumable)
and the trained policy in the single and the vector env; a real learning test on ``steady``."""

from __future__ import annotations

import dataclasses
import json

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import recgym  # noqa: F401  (registers the ids)
from agents import tuner
from agents.config import parse_config
from agents.tuner import (
    DEFAULT_GAMMA,
    FEATURE_SIZE,
    ActionHeads,
    TunerConfig,
    TunerPolicy,
    config_from_saved,
    episode_throughput_scale,
    evaluate_policy,
    make_train,
    observation_features,
    parallel_efficiency,
    train_run,
)
from recgym.envs.pipeline import dynamics, make_params
from tests.agents.conftest import tiny_tuner_config as tiny_config


def leaves(tree):
    """Every leaf as a NumPy array (typed PRNG keys as their key data, so they are compared too)."""
    return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
            for x in jax.tree_util.tree_leaves(tree)]


def observation(cores=(1, 2, 3, 4, 5, 6), rates=(10.0, 20.0, 30.0, 40.0, 50.0, 60.0), batch=256.0, prefetch=2.0,
                throughput=9.0, memory=20.0, cap=32.0, available=16.0, budget=16.0):
    """A hand-made observation in the env's layout (utilisation as the env computes it)."""
    rates = np.asarray(rates, np.float32)
    lowest, second = np.sort(rates)[:2]
    utilisation = np.where(rates <= lowest, second, lowest) / rates
    return np.asarray([*cores, *rates, *utilisation, batch, prefetch, throughput, 0.1, memory, cap, available, budget],
                      np.float32)


# ------------------------------------------------------------------------------------ features
features_of = jax.jit(observation_features)  # one compile for every example below

observations = st.builds(
    observation,
    cores=st.lists(st.integers(1, 32), min_size=6, max_size=6),
    rates=st.lists(st.floats(1e-2, 1e4), min_size=6, max_size=6),
    batch=st.sampled_from([2.0**k for k in range(6, 14)]),
    prefetch=st.integers(0, 16).map(float),
    throughput=st.floats(0.0, 1e4),
    memory=st.floats(1.0, 100.0),
    cap=st.floats(1.0, 100.0),
    available=st.floats(1.0, 32.0),
)


@settings(max_examples=50, deadline=None)
@given(observations, observations)
def test_features_are_finite_and_bounded_for_any_observation(now, before):
    features = np.asarray(features_of(jnp.asarray(now), jnp.asarray(before)))
    assert features.shape == (FEATURE_SIZE,)
    assert np.all(np.isfinite(features))
    # Logs are clipped; the ratio features are bounded by the allocation limits: at most
    # 6 stages x 32 workers over at least one available core.
    assert np.all(np.abs(features) <= 6 * 32)


def test_features_are_finite_after_a_crash():
    crashed = observation()
    crashed[dynamics.OBS_RATES] = 0.0
    crashed[dynamics.OBS_UTILISATION] = 0.0
    crashed[dynamics.OBS_THROUGHPUT] = 0.0
    assert np.all(np.isfinite(np.asarray(features_of(jnp.asarray(crashed), jnp.asarray(observation())))))


@settings(max_examples=30, deadline=None)
@given(observations, st.floats(0.01, 100.0))
def test_features_do_not_depend_on_the_rate_unit_but_through_the_absolute_scale(obs, factor):
    # Rates, and throughput alike, times a constant: only the one absolute-scale feature (the
    # bottleneck against the trainer's rate) may change, in both observations' blocks. Rates are
    # floored at 1e-3 (they read 0 only after a crash), so the invariance holds above the floor.
    rate_like = np.append(obs[dynamics.OBS_RATES], obs[dynamics.OBS_THROUGHPUT])
    assume(np.all(rate_like * min(factor, 1.0) > 2e-3))
    scaled = obs.copy()
    scaled[dynamics.OBS_RATES] *= factor
    scaled[dynamics.OBS_THROUGHPUT] *= factor
    a = np.asarray(features_of(jnp.asarray(obs), jnp.asarray(obs)))
    b = np.asarray(features_of(jnp.asarray(scaled), jnp.asarray(scaled)))
    changed = np.flatnonzero(~np.isclose(a, b, atol=1e-4))
    absolute = tuner.NUM_STAGES * tuner.STAGE_FEATURES + np.array([0, 11])
    assert set(changed.tolist()) <= set(absolute.tolist())


def test_share_features_split_the_available_cores_by_the_measured_cpu_seconds():
    # One worker's CPU-seconds per sample is cores / rate; the share of 12 available cores in
    # proportion to them, against the stage's workers, is each stage's 6th feature (log, halved);
    # the balanced throughput 12 / sum(seconds) against the measured one is the 11th global one.
    cores, rates = (1, 2, 1, 4, 1, 2), (10.0, 20.0, 40.0, 40.0, 80.0, 80.0)
    obs = observation(cores=cores, rates=rates, throughput=30.0, available=12.0, budget=16.0)
    features = features_of(jnp.asarray(obs), jnp.asarray(obs))
    stage, overall = (np.asarray(x) for x in tuner.split_features(features))
    seconds = np.asarray(cores) / np.asarray(rates)
    share = 12.0 * seconds / seconds.sum()
    np.testing.assert_allclose(stage[:, 5], np.log(share / np.asarray(cores)) / 2, rtol=1e-5)
    np.testing.assert_allclose(stage[:, 5 + 6], stage[:, 5])  # the previous observation's block
    np.testing.assert_allclose(overall[10], np.log(12.0 / seconds.sum() / 30.0) / 2, rtol=1e-5)


@settings(max_examples=20, deadline=None)
@given(observations, observations)
def test_features_without_shares_are_the_former_layout(now, before):
    # share_features=False (runs saved before the option) reads exactly the other features.
    full = np.asarray(features_of(jnp.asarray(now), jnp.asarray(before)))
    plain = np.asarray(observation_features(jnp.asarray(now), jnp.asarray(before), share_features=False))
    assert plain.shape == (tuner.NUM_STAGES * (tuner.STAGE_FEATURES - 2) + tuner.GLOBAL_FEATURES - 2,)
    stage, overall = tuner.split_features(full)
    keep_stage = [i for i in range(tuner.STAGE_FEATURES) if i not in (5, 11)]
    keep_global = [i for i in range(tuner.GLOBAL_FEATURES) if i not in (10, 21)]
    expected = np.concatenate([np.asarray(stage)[:, keep_stage].ravel(), np.asarray(overall)[keep_global]])
    np.testing.assert_allclose(plain, expected, rtol=1e-6, atol=1e-6)  # jitted vs eager rounding
    assert tuner.feature_sizes(False) == (tuner.STAGE_FEATURES - 2, tuner.GLOBAL_FEATURES - 2)


def test_a_run_saved_before_share_features_loads_and_acts_without_them(tmp_path):
    # A run folder whose saved config has no share_features field (every run before the option)
    # was trained on the former features: its config, its resume and its policy read False.
    from agents.config import load_config
    from agents.runner import CONFIG_FILE

    config = tiny_config(share_features=False, out=str(tmp_path / "run"))
    train_run(config)
    path = tmp_path / "run" / CONFIG_FILE
    saved = json.loads(path.read_text())
    saved.pop("share_features")
    path.write_text(json.dumps(saved))
    assert load_config(TunerConfig, tmp_path / "run" / CONFIG_FILE).share_features is False
    assert config_from_saved({}).share_features is False
    assert TunerConfig().share_features is True
    policy = TunerPolicy.from_checkpoint(tmp_path / "run", make_params("steady", config.action_mode))
    policy.reset(num_envs=2, seed=0)
    actions = policy.act_batch(np.stack([observation(), observation()]), {})
    assert actions.shape == (2,)


def test_parallel_efficiency_reads_each_stages_amdahl_fraction():
    # Without measurement noise, oversubscription or a change, a stage's rate with c workers over
    # c times its one-worker rate (every episode starts at one worker per stage) is Amdahl's
    # 1 / (1 + f (c - 1)), computed here from the world's own serial fractions.
    env = gym.make("RecGym-Pipeline-v0", scenario="steady", action_mode="absolute", measurement_noise=0.0)
    first, _ = env.reset(seed=3)
    state = env.unwrapped.state
    np.testing.assert_array_equal(first[dynamics.OBS_CORES], np.ones(6))
    cores = np.array([1, 3, 5, 2, 1, 2])  # 14 workers on the 16 cores: no oversubscription
    allocation = np.concatenate([cores, np.asarray(state.allocation)[6:]])
    low = np.asarray(dynamics._allocation_bounds(env.unwrapped.params).low)
    now, *_ = env.step((allocation - low).astype(np.int64))
    assert now[dynamics.OBS_AVAILABLE] >= cores.sum()
    serial = np.asarray(env.unwrapped.state.world.serial_fraction, np.float64)
    expected = 1.0 / (1.0 + serial * (cores - 1))
    got = np.asarray(parallel_efficiency(jnp.asarray(now), jnp.asarray(first)))
    # The read stage may sit at its storage ceiling instead; the other five are CPU-bound.
    np.testing.assert_allclose(got[1:], expected[1:], rtol=1e-5)
    assert np.all(got[cores > 1] < 1.0) and got[4] == pytest.approx(1.0)  # one worker: nothing to lose


@settings(max_examples=40, deadline=None)
@given(observations, observations, observations)
def test_scaling_features_append_the_log_parallel_efficiency_per_stage(now, before, first):
    plain = np.asarray(observation_features(jnp.asarray(now), jnp.asarray(before)))
    scaled = np.asarray(observation_features(jnp.asarray(now), jnp.asarray(before), True, jnp.asarray(first)))
    per_stage, overall = tuner.feature_sizes(True, True)
    assert scaled.shape == (6 * per_stage + overall,) == (plain.shape[0] + 6,)
    assert np.all(np.isfinite(scaled))
    stages, rest = scaled[:6 * per_stage].reshape(6, per_stage), scaled[6 * per_stage:]
    plain_stages = plain[:6 * (per_stage - 1)].reshape(6, per_stage - 1)
    np.testing.assert_array_equal(stages[:, :-1], plain_stages)
    np.testing.assert_array_equal(rest, plain[6 * (per_stage - 1):])
    expected = np.clip(np.log(np.asarray(parallel_efficiency(jnp.asarray(now), jnp.asarray(first)), np.float64)), -4, 1)
    np.testing.assert_allclose(stages[:, -1], expected, rtol=1e-5, atol=1e-5)


def test_a_run_trained_with_scaling_features_acts_with_them_and_remembers_the_first_observation(tmp_path):
    config = tiny_config(action_mode="absolute", scaling_features=True, out=str(tmp_path / "run"))
    _, state = train_run(config)
    assert state.pipelines.first_observation.shape == (config.num_envs, dynamics.OBS_DIM)
    env = gym.make("RecGym-Pipeline-v0", scenario="steady", action_mode="absolute")
    policy = TunerPolicy.from_checkpoint(tmp_path / "run", env.unwrapped.params)
    assert policy.graphdef is not None and config_from_saved({}).scaling_features is False
    policy.reset(seed=0)
    first, info = env.reset(seed=3)
    obs = first
    for _ in range(5):
        action = policy.act(obs, info)
        assert env.action_space.contains(np.asarray(action, np.int64))
        np.testing.assert_array_equal(policy.first[0], first)  # kept through the episode
        obs, _, terminated, truncated, info = env.step(action)
        assert not (terminated or truncated)
    policy.begin_episode(np.array([True]))
    assert np.isnan(policy.first[0]).all()
    policy.act(obs, info)
    np.testing.assert_array_equal(policy.first[0], obs)  # the next episode's first observation


def test_throughput_scale_is_the_budget_over_the_per_sample_cpu_seconds():
    obs = observation(cores=(1,) * 6, rates=(10.0, 20.0, 40.0, 40.0, 80.0, 80.0), budget=12.0)
    seconds = 1 / 10 + 1 / 20 + 2 / 40 + 2 / 80
    np.testing.assert_allclose(float(episode_throughput_scale(jnp.asarray(obs))), 12.0 / seconds, rtol=1e-6)


# ------------------------------------------------------------------------------------ actions
@settings(max_examples=60, deadline=None)
@given(observations, st.data())
def test_absolute_actions_move_each_knob_and_stay_in_the_action_space(obs, data):
    batch_values = data.draw(st.booleans())
    config = TunerConfig(action_mode="absolute", batch_values=batch_values)
    params = make_params("random", "absolute")
    heads = ActionHeads.from_config(config, params)
    choices = np.asarray([data.draw(st.integers(0, size - 1)) for size in heads.sizes], np.int32)
    action = np.asarray(heads.to_env_action(jnp.asarray(choices), jnp.asarray(obs), params))
    space = gym.spaces.MultiDiscrete([32] * 6 + [8, 17])
    assert space.contains(action.astype(np.int64))
    moves = [heads.moves[i][c] for i, c in enumerate(choices)]
    current = [*obs[dynamics.OBS_CORES], np.log2(obs[dynamics.OBS_BATCH]), obs[dynamics.OBS_PREFETCH]]
    low = [1] * 6 + [6, 0]
    high = [32] * 6 + [13, 16]
    target = np.round(current).astype(int) + moves
    if batch_values:  # the batch-size head chose log2 of the size itself: 6 (64) .. 13 (8192)
        assert heads.moves[6] == tuple(range(6, 14))
        target[6] = moves[6]
    expected = np.clip(target, low, high) - np.asarray([1] * 6 + [6, 0])
    np.testing.assert_array_equal(action, expected)


SHARE_TARGETS = (0.7, 0.85, 1.0, 1.15, 1.3)


@settings(max_examples=60, deadline=None)
@given(observations, st.floats(0.01, 100.0))
def test_proportional_shares_split_the_available_cores_by_cpu_seconds_per_sample_and_are_scale_free(obs, scale):
    seconds = obs[dynamics.OBS_CORES].astype(np.float64) / np.maximum(obs[dynamics.OBS_RATES], 1e-3)
    expected = obs[dynamics.OBS_AVAILABLE] * seconds / seconds.sum()
    shares = np.asarray(tuner.proportional_shares(jnp.asarray(obs)))
    np.testing.assert_allclose(shares, expected, rtol=1e-4)
    assert shares.sum() == pytest.approx(float(obs[dynamics.OBS_AVAILABLE]), rel=1e-4)
    scaled = obs.copy()
    scaled[dynamics.OBS_RATES] *= np.float32(scale)
    assume(np.all(scaled[dynamics.OBS_RATES] >= 1e-3))
    np.testing.assert_allclose(np.asarray(tuner.proportional_shares(jnp.asarray(scaled))), shares, rtol=1e-3)


@settings(max_examples=60, deadline=None)
@given(observations, st.data())
def test_share_target_choices_set_a_stages_workers_to_a_multiple_of_its_share(obs, data):
    config = TunerConfig(action_mode="absolute", share_targets=SHARE_TARGETS)
    params = make_params("random", "absolute")
    heads = ActionHeads.from_config(config, params)
    moves = len(config.core_moves)
    assert heads.sizes == (moves + len(SHARE_TARGETS),) * 6 + (5, 9)
    assert heads.per_stage_logits == moves + len(SHARE_TARGETS)
    choices = np.asarray([data.draw(st.integers(0, size - 1)) for size in heads.sizes], np.int32)
    action = np.asarray(heads.to_env_action(jnp.asarray(choices), jnp.asarray(obs), params))
    assert gym.spaces.MultiDiscrete([32] * 6 + [8, 17]).contains(action.astype(np.int64))
    # Independently: the share from the observation, the workers from the choice.
    seconds = obs[dynamics.OBS_CORES].astype(np.float64) / np.maximum(obs[dynamics.OBS_RATES], 1e-3)
    share = obs[dynamics.OBS_AVAILABLE] * seconds / seconds.sum()
    for stage in range(6):
        choice = choices[stage]
        if choice < moves:
            expected = obs[dynamics.OBS_CORES][stage] + config.core_moves[choice]
        else:
            exact = share[stage] * SHARE_TARGETS[choice - moves]
            assume(abs(exact - np.floor(exact) - 0.5) > 1e-3)  # clear of float32 rounding ties
            expected = np.round(exact)
        assert action[stage] + 1 == np.clip(expected, 1, 32)


@settings(max_examples=60, deadline=None)
@given(observations, st.integers(0, 3))
def test_a_share_target_within_the_deadband_keeps_the_current_workers(obs, deadband):
    params = make_params("random", "absolute")
    config = TunerConfig(action_mode="absolute", share_targets=SHARE_TARGETS, share_deadband=deadband)
    heads = ActionHeads.from_config(config, params)
    plain = ActionHeads.from_config(dataclasses.replace(config, share_deadband=0), params)
    moves = len(config.core_moves)
    banded = np.asarray(heads.observation_targets(jnp.asarray(obs), params))[:6, moves:]
    exact = np.asarray(plain.observation_targets(jnp.asarray(obs), params))[:6, moves:]
    # The band is measured from the rounded share target before it is clipped to the bounds.
    unclipped = np.round(np.asarray(tuner.proportional_shares(jnp.asarray(obs)))[:, None] * np.asarray(SHARE_TARGETS,
                                                                                                         np.float32))
    current = np.round(obs[dynamics.OBS_CORES]).astype(int)[:, None]
    near = np.abs(unclipped - current) <= deadband
    np.testing.assert_array_equal(banded, np.where(near, current, exact))
    # The moves are untouched.
    np.testing.assert_array_equal(np.asarray(heads.observation_targets(jnp.asarray(obs), params))[:, :moves],
                                  np.asarray(plain.observation_targets(jnp.asarray(obs), params))[:, :moves])


def test_share_targets_need_the_shares_absolute_mode_and_positive_distinct_multiples():
    params = make_params("random", "absolute")
    heads = ActionHeads.from_config(TunerConfig(action_mode="absolute", share_targets=(1.0,)), params)
    current, low, high = tuner.knob_values(jnp.asarray(observation()), params)
    with pytest.raises(ValueError, match="need the stages' proportional shares"):
        heads.targets(current, low, high)
    with pytest.raises(ValueError, match="share_targets needs action_mode='absolute'"):
        TunerConfig(action_mode="increment", share_targets=(1.0,))
    for bad in [(0.0,), (1.0, 1.0), (-1.0,), (float("nan"),)]:
        with pytest.raises(ValueError, match="share_targets must be distinct finite numbers > 0"):
            TunerConfig(action_mode="absolute", share_targets=bad)
    assert TunerConfig().share_targets == () and TunerConfig().share_deadband == 0
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="share_deadband must be an integer >= 0"):
            TunerConfig(action_mode="absolute", share_targets=(1.0,), share_deadband=bad)
    config, _ = parse_config(TunerConfig, ["--action-mode", "absolute", "--share-targets", "0.85", "1", "1.15"])
    assert config.share_targets == (0.85, 1.0, 1.15)


def test_a_run_trained_with_share_targets_acts_with_them_from_its_checkpoint(tmp_path):
    config = tiny_config(action_mode="absolute", share_targets=SHARE_TARGETS, out=str(tmp_path / "run"))
    train_run(config)
    env = gym.make("RecGym-Pipeline-v0", scenario="steady", action_mode="absolute")
    policy = TunerPolicy.from_checkpoint(tmp_path / "run", env.unwrapped.params)
    assert policy.heads.share_targets == SHARE_TARGETS
    policy.reset(seed=0)
    obs, info = env.reset(seed=3)
    for _ in range(10):
        action = policy.act(obs, info)
        assert env.action_space.contains(np.asarray(action, np.int64))
        obs, _, terminated, truncated, info = env.step(action)
        assert not (terminated or truncated)


def test_increment_heads_are_the_env_actions():
    config = TunerConfig(action_mode="increment")
    heads = ActionHeads.from_config(config, make_params("random", "increment"))
    assert heads.sizes == (17,) and heads.per_stage_logits == 2
    choices = jnp.arange(17, dtype=jnp.int32)[:, None]
    np.testing.assert_array_equal(np.asarray(heads.to_env_action(choices, jnp.zeros((17, 26)), None)), np.arange(17))


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("field, value, message", [
    ("num_envs", 0, "num_envs must be an integer >= 1, got 0"),
    ("scenario", "busy", "scenario must be one of"),
    ("action_mode", "relative", "action_mode must be one of"),
    ("gamma", 1.5, "gamma must be in \\[0, 1\\], got 1.5"),
    ("clip_coef", 0.0, "clip_coef must be finite and > 0, got 0.0"),
    ("core_moves", (1, 2), "core_moves must be distinct integers including 0"),
    ("num_minibatches", 3, "num_minibatches must be a divisor of the per-device batch"),
    ("total_steps", 10, "total_steps must be >= num_envs \\* rollout_steps"),
    ("training_reward", "noisy", "training_reward must be one of \\('measured', 'true'\\)"),
    ("scaling_features", 1, "scaling_features must be a bool, got 1"),
])
def test_bad_config_values_are_rejected_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**{field: value})


def test_the_discount_is_the_action_modes_unless_gamma_is_given():
    assert TunerConfig(action_mode="increment").discount == DEFAULT_GAMMA["increment"] == 0.98
    assert TunerConfig(action_mode="absolute").discount == DEFAULT_GAMMA["absolute"] == 0.5
    assert TunerConfig(action_mode="absolute", gamma=0.9).discount == 0.9
    assert TunerConfig(action_mode="absolute", gamma=0).discount == 0.0
    config, _ = parse_config(TunerConfig, ["--action-mode", "absolute", "--gamma", "none"])
    assert config.gamma is None and config.discount == 0.5
    assert config_from_saved(json.loads(json.dumps(dataclasses.asdict(config)))) == config


def test_the_update_uses_the_resolved_discount():
    # Compared as traced programs, not as trained parameters: the discount enters the training as
    # constants of its jaxpr, so the default and the explicit default must trace to the same
    # program and another discount to a different one (three traces, no compile).
    def program(**overrides):
        closed = jax.make_jaxpr(make_train(tiny_config(action_mode="absolute", total_steps=16 * 4 * 3,
                                                       **overrides)))(jax.random.key(3))
        return str(closed.jaxpr), [np.asarray(const) for const in closed.consts]

    default, explicit, other = program(), program(gamma=DEFAULT_GAMMA["absolute"]), program(gamma=0.98)
    assert default[0] == explicit[0]
    for a, b in zip(default[1], explicit[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert default[0] != other[0]


def test_the_true_training_reward_is_the_measured_one_without_measurement_noise():
    # Without measurement noise the monitor reads the true throughput, so the two rewards, and
    # with them the whole training, agree; with the default noise they do not.
    def trained(noise, reward):
        config = tiny_config(action_mode="absolute", total_steps=16 * 4 * 2, training_reward=reward)
        env_params = make_params("random", "absolute", measurement_noise=noise)
        state, metrics = jax.jit(make_train(config, env_params))(jax.random.key(5))
        return leaves(state.learner.params), np.asarray(metrics["charts/reward_per_step"])

    for noise, same in ((0.0, True), (0.05, False)):
        (measured, measured_reward), (true, true_reward) = trained(noise, "measured"), trained(noise, "true")
        if same:
            np.testing.assert_allclose(true_reward, measured_reward, rtol=1e-6)
            for a, b in zip(measured, true, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        else:
            assert not np.allclose(true_reward, measured_reward, rtol=1e-6)


def test_config_and_env_must_agree_on_the_action_mode():
    with pytest.raises(ValueError, match="action_mode"):
        make_train(tiny_config(action_mode="absolute"), make_params("random", "increment"))


# ------------------------------------------------------------------------------------ training
def test_the_update_traces_once_across_many_updates():
    train = make_train(tiny_config())
    state = train.init(jax.random.key(0))
    for _ in range(4):
        state, _ = train.run(state, 2)
    assert train.traces == 1
    assert int(state.learner.update) == 8


def test_blocked_training_equals_one_call():
    train = make_train(tiny_config(total_steps=16 * 4 * 4))
    state = train.init(jax.random.key(2))
    for _ in range(2):
        state, _ = train.run(state, 2)
    whole, _ = jax.jit(make_train(tiny_config(total_steps=16 * 4 * 4)))(jax.random.key(2))
    for a, b in zip(leaves(state.learner.params), leaves(whole.learner.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("action_mode", ["increment", "absolute"])
def test_every_loss_is_finite_over_a_short_run(action_mode):
    train = make_train(tiny_config(total_steps=16 * 4 * 10, action_mode=action_mode))
    state, metrics = jax.jit(train)(jax.random.key(1))
    for name, values in metrics.items():
        assert np.all(np.isfinite(np.asarray(values))), name
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves(state.learner.params))
    assert np.asarray(metrics["global_step"]).tolist() == [64 * (i + 1) for i in range(10)]


def test_same_seed_same_parameters_and_another_seed_others():
    train = jax.jit(make_train(tiny_config()))
    first, second, other = (train(jax.random.key(s))[0].learner.params for s in (3, 3, 4))
    for a, b in zip(leaves(first), leaves(second)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(first), leaves(other)))


def test_vmap_over_seeds_equals_training_each_seed():
    train = make_train(tiny_config(total_steps=16 * 4 * 2))
    keys = jax.random.split(jax.random.key(0), 2)
    batched, _ = jax.jit(jax.vmap(train))(keys)
    single, _ = jax.jit(train)(keys[1])
    for a, b in zip(leaves(batched.learner.params), leaves(single.learner.params)):
        np.testing.assert_allclose(a[1], b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ policy
@pytest.fixture(scope="module", params=["increment", "absolute"])
def trained(request, tmp_path_factory):
    """A briefly trained tuner of each action mode, with its checkpoint folder."""
    out = tmp_path_factory.mktemp(f"tuner-{request.param}")
    training, state = train_run(tiny_config(action_mode=request.param, out=str(out)))
    return training, state, out


def test_the_policy_acts_validly_in_the_single_env(trained):
    training, state, _ = trained
    mode = training.config.action_mode
    env = gym.make("RecGym-Pipeline-v0", scenario="memory-tight", action_mode=mode)
    policy = TunerPolicy.from_training(training, state, env.unwrapped.params)
    policy.reset(seed=0)
    obs, info = env.reset(seed=5)
    for _ in range(30):
        action = policy.act(obs, info)
        assert env.action_space.contains(np.asarray(action, np.int64) if mode == "absolute" else action)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            policy.begin_episode(np.ones(1, bool))
            obs, info = env.reset()


def test_the_policy_acts_validly_in_the_vector_env(trained):
    training, state, _ = trained
    mode = training.config.action_mode
    env = gym.make_vec("RecGym-Pipeline-v0", num_envs=8, vectorization_mode="vector_entry_point",
                       scenario="random", action_mode=mode)
    policy = TunerPolicy.from_training(training, state, env.unwrapped.params)
    policy.reset(num_envs=8, seed=0)
    obs, info = env.reset(seed=0)
    for _ in range(30):
        actions = policy.act_batch(obs, info)
        assert actions.shape == ((8,) if mode == "increment" else (8, 8))
        assert all(env.single_action_space.contains(a) for a in actions)
        obs, _, terminated, truncated, info = env.step(actions)
        policy.begin_episode(terminated | truncated)


def test_the_checkpointed_policy_acts_like_the_trained_one(trained):
    training, state, out = trained
    params = make_params("steady", training.config.action_mode)
    live = TunerPolicy.from_training(training, state, params)
    loaded = TunerPolicy.from_checkpoint(out, params)
    env = gym.make_vec("RecGym-Pipeline-v0", num_envs=4, vectorization_mode="vector_entry_point",
                       scenario="steady", action_mode=training.config.action_mode)
    obs, info = env.reset(seed=1)
    for policy in (live, loaded):
        policy.reset(num_envs=4, seed=0)
    for _ in range(5):
        actions = live.act_batch(obs, info)
        np.testing.assert_array_equal(actions, loaded.act_batch(obs, info))
        obs, _, _, _, info = env.step(actions)


def test_the_policy_remembers_the_previous_observation_per_episode(trained):
    training, state, _ = trained
    params = make_params("steady", training.config.action_mode)
    policy = TunerPolicy.from_training(training, state, params)
    policy.reset(num_envs=2)
    first, second = observation(), observation(cores=(2, 2, 2, 2, 2, 2))
    policy.act_batch(np.stack([first, first]), {})
    np.testing.assert_array_equal(policy.previous, np.stack([first, first]))
    policy.act_batch(np.stack([second, second]), {})
    policy.begin_episode(np.array([True, False]))
    assert np.isnan(policy.previous[0]).all() and np.array_equal(policy.previous[1], second)


def test_a_policy_trained_for_one_action_mode_refuses_the_other(trained):
    training, state, _ = trained
    other = "absolute" if training.config.action_mode == "increment" else "increment"
    with pytest.raises(ValueError, match="action_mode"):
        TunerPolicy.from_training(training, state, make_params("steady", other))


# ------------------------------------------------------------------------------------ learning
def test_a_short_training_run_beats_static_even_on_steady():
    """A real learning test: seconds of seeded training on ``steady``, scored by the harness on
    held-out seeds against the static even split in the same (increment) action mode."""
    from recgym.envs.pipeline.baselines import make_baseline

    config = TunerConfig(scenario="steady", total_steps=64 * 16 * 40, num_envs=64, rollout_steps=16,
                         hidden_width=32, learning_rate=3e-3, eval_random_pipelines=0, eval_scenario_seeds=0,
                         progress=False, tensorboard=False)
    train = make_train(config)
    state, _ = jax.jit(train)(jax.random.key(0))
    agent = evaluate_policy(lambda ctx: TunerPolicy.from_training(train, state, ctx.params), "steady", "increment", 20)
    even = evaluate_policy(lambda ctx: make_baseline("static-even", ctx.params), "steady", "increment", 20)
    assert not any(agent["oom"])
    assert np.mean(agent["efficiency"]) > np.mean(even["efficiency"]) + 0.1, (
        np.mean(agent["efficiency"]), np.mean(even["efficiency"]))


# ------------------------------------------------------------------------------------ docs and CLI
def test_the_docs_config_table_is_the_config():
    from pathlib import Path

    from agents.config import config_table

    page = (Path(__file__).parents[2] / "docs" / "agents_tuner.md").read_text()
    start, end = "<!-- config-table:start -->\n", "\n<!-- config-table:end -->"
    assert page[page.index(start) + len(start):page.index(end)] == config_table(TunerConfig)


def test_the_command_line_help_lists_every_field(capsys):
    with pytest.raises(SystemExit):
        tuner.main(["--help"])
    text = capsys.readouterr().out
    for field in dataclasses.fields(TunerConfig):
        assert "--" + field.name.replace("_", "-") in text


def test_the_command_line_rejects_a_bad_value_by_name(capsys):
    with pytest.raises(SystemExit):
        tuner.main(["--gamma", "2"])
    assert "gamma must be in [0, 1], got 2.0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ checkpoint selection
def test_select_checkpoint_picks_the_best_on_validation_seeds_and_never_touches_held_out_ones(monkeypatch):
    from recgym.envs.pipeline import HELD_OUT_SEED_START, SCENARIOS
    from recgym.envs.pipeline.baselines import make_baseline

    seen = []
    real = tuner.evaluate_policy

    def spy(policy, scenario, action_mode, n_episodes, **kwargs):
        record = real(policy, scenario, action_mode, n_episodes, **kwargs)
        seen.extend(record["seeds"])
        return record

    monkeypatch.setattr(tuner, "evaluate_policy", spy)
    candidates = {name: (lambda params, name=name: make_baseline(name, params))
                  for name in ("static-even", "oracle", "plumber-lp")}  # the best is not the first
    best, scores = tuner.select_checkpoint(candidates, "absolute", random_pipelines=3, scenario_seeds=2)
    assert best == "oracle"
    assert scores["oracle"]["score"] > max(scores["static-even"]["score"], scores["plumber-lp"]["score"])
    assert set(scores["oracle"]["scenarios"]) == set(SCENARIOS)
    assert len(seen) == 3 * (3 + 2 * (len(SCENARIOS) - 1))
    assert all(tuner.VALIDATION_SEED_START <= s < tuner.VALIDATION_SEED_START + 3 for s in seen)
    assert max(seen) < HELD_OUT_SEED_START


def test_select_checkpoint_rejects_bad_inputs_by_name():
    from recgym.envs.pipeline import HELD_OUT_SEED_START

    policy_for = {"a": lambda params: None}
    with pytest.raises(ValueError, match="candidates is empty"):
        tuner.select_checkpoint({}, "increment")
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0 whose last validation seed \(1000001\)"):
        tuner.select_checkpoint(policy_for, "increment", random_pipelines=4, scenario_seeds=0,
                                seed=HELD_OUT_SEED_START - 2)
    with pytest.raises(ValueError, match="random_pipelines must be an integer >= 0, got -1"):
        tuner.select_checkpoint(policy_for, "increment", random_pipelines=-1)
    with pytest.raises(ValueError, match="nothing to validate on"):
        tuner.select_checkpoint(policy_for, "increment", random_pipelines=0, scenario_seeds=0)
