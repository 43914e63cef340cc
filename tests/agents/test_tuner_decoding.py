"""How a deterministic tuner decodes its heads: by the mode, or (absolute mode, by default) the worker
and batch-size heads by the allowed choice nearest their expected knob value."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.tuner import (
    DECODINGS,
    MEAN_DECODED_KNOBS,
    ActionHeads,
    MemoryEstimate,
    MemoryShield,
    TunerConfig,
    TunerPolicy,
    choose_actions,
    decoded_choice,
    knob_values,
    make_train,
)
from recgym.envs.pipeline import dynamics, make_params
from recgym.envs.pipeline.params import NUM_STAGES
from tests.agents.conftest import tiny_tuner_config

PARAMS = make_params("random", "absolute")
HEADS = ActionHeads.from_config(TunerConfig(action_mode="absolute"), PARAMS)
MOVES = np.asarray(HEADS.moves[0])  # a stage's worker moves: -8 -4 -2 -1 0 1 2 4 8
choose_jit = jax.jit(choose_actions, static_argnums=(0, 1), static_argnames=("decoding",))
decode_jit = jax.jit(decoded_choice, static_argnums=(3,))


def observation(cores=(4, 4, 4, 4, 4, 4), memory=10.0, cap=1e6) -> np.ndarray:
    return np.asarray([*cores, *[10.0] * 6, *[1.0] * 6, 256.0, 2.0, 5.0, 0.1, memory, cap, 32.0, 32.0], np.float32)


def test_the_mean_follows_the_mass_where_the_mode_stays():
    # "stay" is the single likeliest move (0.30), but 0.55 of the mass is on growing moves.
    probabilities = np.asarray([0.02, 0.03, 0.04, 0.06, 0.30, 0.20, 0.20, 0.10, 0.05])
    logits = np.log(probabilities)
    targets = 10 + MOVES
    allowed = np.ones(len(MOVES), bool)
    expected = float(np.sum(probabilities * targets))  # 11.09
    assert int(decode_jit(logits, targets, allowed, False)) == 4  # the mode: stay at 10
    assert int(targets[int(decode_jit(logits, targets, allowed, True))]) == round(expected) == 11


def test_a_peaked_head_decodes_to_its_mode_either_way():
    logits = np.full(len(MOVES), -5.0)
    logits[6] = 5.0  # +2
    targets, allowed = 10 + MOVES, np.ones(len(MOVES), bool)
    assert int(decode_jit(logits, targets, allowed, True)) == int(decode_jit(logits, targets, allowed, False)) == 6


@settings(max_examples=60, deadline=None)
# float32 logits without subnormals: XLA on CPU flushes them to zero, so a logit of -3e-42 would tie
# with 0.0 in the jitted argmax and not in NumPy's.
@given(logits=st.lists(st.floats(-6.0, 6.0, width=32, allow_subnormal=False), min_size=len(MOVES),
                       max_size=len(MOVES)),
       allowed=st.lists(st.booleans(), min_size=len(MOVES), max_size=len(MOVES)),
       current=st.integers(1, 32))
def test_the_mean_choice_is_the_allowed_target_nearest_the_masked_mean(logits, allowed, current):
    allowed = np.asarray(allowed)
    allowed[4] = True  # the shield never masks "stay"
    logits = np.asarray(logits, np.float32)
    targets = np.clip(current + MOVES, 1, 32)
    choice = int(decode_jit(logits, targets, allowed, True))
    assert allowed[choice]
    weights = np.where(allowed, np.exp(logits.astype(np.float64) - logits.max()), 0.0)
    mean = float(np.sum(weights / weights.sum() * targets))
    nearest = np.min(np.abs(targets[allowed] - mean))
    assert abs(targets[choice] - mean) <= nearest + 1e-3
    # Of equally near choices the likeliest (moves clipped to a bound lead to the same value).
    near = allowed & (np.abs(targets - mean) <= nearest + 1e-3)
    assert logits[choice] >= logits[near].max() - 1e-6
    mode = int(decode_jit(logits, targets, allowed, False))
    assert allowed[mode] and logits[mode] == logits[allowed].max()


def test_mean_decoding_without_a_shield_equals_it_under_an_idle_shield_and_keeps_prefetchs_mode():
    n = 16
    logits = np.asarray(jax.random.normal(jax.random.key(0), (n, HEADS.num_logits))) * 2.0
    obs = np.tile(observation(), (n, 1))
    idle = MemoryShield(probe_fraction=0.0)
    plain, _ = choose_jit(None, HEADS, logits, MemoryEstimate.unknown((n,)), obs, PARAMS, None, decoding="mean")
    shielded, _ = choose_jit(idle, HEADS, logits, MemoryEstimate.unknown((n,)), obs, PARAMS, None, decoding="mean")
    np.testing.assert_array_equal(plain, shielded)
    mode, _ = choose_jit(None, HEADS, logits, MemoryEstimate.unknown((n,)), obs, PARAMS, None)
    assert not MEAN_DECODED_KNOBS[-1]
    np.testing.assert_array_equal(np.asarray(plain)[:, -1], np.asarray(mode)[:, -1])
    assert (np.asarray(plain)[:, :-1] != np.asarray(mode)[:, :-1]).any()  # random logits: the two differ
    current, low, high = (np.asarray(x) for x in knob_values(obs, PARAMS))
    for i in range(NUM_STAGES + 1):
        head = HEADS.split(logits)[i]
        p = np.exp(head - head.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        targets = np.clip(current[:, i : i + 1] + np.asarray(HEADS.moves[i]), low[i], high[i])
        mean = np.sum(p * targets, axis=-1)
        chosen = targets[np.arange(n), np.asarray(plain)[:, i]]
        assert (np.abs(chosen - mean) <= np.min(np.abs(targets - mean[:, None]), axis=-1) + 1e-4).all()


def test_mean_decoding_respects_the_shield():
    # Every stage's logits push hard to +8 workers, but memory leaves room for none: the shield masks
    # the growing moves and the mean of what is left cannot grow either.
    logits = np.zeros((1, HEADS.num_logits), np.float32)
    for i in range(NUM_STAGES):
        logits[0, i * len(MOVES) + 8] = 6.0
    obs = observation(memory=39.9, cap=40.0)[None]
    choices, allowed = choose_jit(MemoryShield(), HEADS, logits, MemoryEstimate.unknown((1,)), obs, PARAMS, None,
                                  decoding="mean")
    chosen = np.asarray(choices)[0, :NUM_STAGES]
    assert (MOVES[chosen] <= 0).all()
    offsets = np.cumsum([0, *HEADS.sizes[:-1]])
    assert np.asarray(allowed)[0, offsets + np.asarray(choices)[0]].all()


def test_bad_decodings_are_rejected():
    logits = np.zeros((1, HEADS.num_logits), np.float32)
    with pytest.raises(ValueError, match="decoding must be one of"):
        choose_actions(None, HEADS, logits, MemoryEstimate.unknown((1,)), observation()[None], PARAMS, None, "median")
    increment = ActionHeads.from_config(TunerConfig(), make_params("random", "increment"))
    with pytest.raises(ValueError, match="absolute-mode"):
        choose_actions(None, increment, np.zeros((1, increment.num_logits), np.float32),
                       MemoryEstimate.unknown((1,)), observation()[None], make_params("random", "increment"),
                       None, "mean")


@pytest.mark.parametrize("mode", ["increment", "absolute"])
def test_the_policys_default_decoding_is_the_action_modes(mode):
    training = make_train(tiny_tuner_config(action_mode=mode))
    state = training.init(jax.random.key(0))
    policy = TunerPolicy.from_training(training, state)
    assert policy.decoding == ("mean" if mode == "absolute" else "mode")
    assert set(DECODINGS) == {"mode", "mean"}
    if mode == "increment":
        with pytest.raises(ValueError, match="absolute-mode"):
            TunerPolicy.from_training(training, state, decoding="mean")
    with pytest.raises(ValueError, match="decoding must be one of"):
        TunerPolicy.from_training(training, state, decoding="max")


def test_the_two_decodings_act_differently_and_validly_in_the_env():
    training = make_train(tiny_tuner_config(action_mode="absolute"))
    state = training.init(jax.random.key(3))
    # Spread each stage's moves and tilt them upwards, so the modes and the means differ.
    params = state.learner.params
    bias = params["stage_logits"]["bias"]
    bias[...] = bias[...] + np.asarray([-1.0, -1.0, -1.0, -1.0, 0.6, 0.5, 0.5, 0.5, 0.5], np.float32)
    env_params = make_params("steady", "absolute")
    actions = {}
    for decoding in DECODINGS:
        policy = TunerPolicy(training.graphdef, params, training.heads, env_params, shield=training.shield,
                             decoding=decoding)
        policy.reset(num_envs=2)
        obs = np.stack([observation(), observation(cores=(1, 2, 3, 4, 5, 6))])
        actions[decoding] = policy.act_batch(obs, {})
        assert actions[decoding].shape == (2, 8)
        assert (actions[decoding] >= 0).all() and (actions[decoding][:, :NUM_STAGES] < 32).all()
    # Each stage's mode is "stay"; its mean lies above +1 (its mass is mostly on growing moves).
    current = np.stack([observation()[dynamics.OBS_CORES], observation(cores=(1, 2, 3, 4, 5, 6))[dynamics.OBS_CORES]])
    np.testing.assert_array_equal(actions["mode"][:, :NUM_STAGES] + 1, current)
    assert (actions["mean"][:, :NUM_STAGES] + 1 > current).all()
