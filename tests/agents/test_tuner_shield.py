"""The pipeline tuner's memory shield: its estimate of what each move costs is exact or an upper
bound, it never lets through a move its own estimate says does not fit, and shielded tuners do not
crash in ``memory-tight`` where the same unshielded ones do."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import recgym  # noqa: F401  (registers the ids)
from agents.tuner import (
    MASKED_LOGIT,
    SHIELD_KNOBS,
    ActionHeads,
    MemoryEstimate,
    MemoryShield,
    TunerConfig,
    TunerPolicy,
    evaluate_policy,
    make_train,
    mask_logits,
    shield_allowed_actions,
    update_memory_estimate,
)
from recgym.envs.pipeline import dynamics, make_params, model
from recgym.envs.pipeline.params import NUM_STAGES

NUM_KNOBS = len(SHIELD_KNOBS)
update_jit = jax.jit(update_memory_estimate)
allowed_jit = jax.jit(shield_allowed_actions, static_argnums=(2, 3))


def true_grow_costs(state) -> np.ndarray:
    """``(8,)`` GiB: what growing each knob would add to the memory in use, from the env's world
    (what the shield must never under-estimate once it has measured it)."""
    world, allocation = state.world, [int(a) for a in np.asarray(state.allocation).ravel()]
    cores, batch_log2, prefetch = allocation[:NUM_STAGES], allocation[NUM_STAGES], allocation[NUM_STAGES + 1]

    def memory(cores, batch_log2, prefetch):
        return model.memory_gib(np, [float(c) for c in cores], 2.0**batch_log2, float(prefetch),
                                world.worker_memory_gib, world.element_gib, world.shuffle_buffer,
                                world.trainer_memory_gib)

    now = memory(cores, batch_log2, prefetch)
    grown = [memory([c + (i == j) for j, c in enumerate(cores)], batch_log2, prefetch) for i in range(NUM_STAGES)]
    grown += [memory(cores, batch_log2 + 1, prefetch), memory(cores, batch_log2, prefetch + 1)]
    return np.asarray(grown) - now


@pytest.mark.parametrize("scenario", ["memory-tight", "random"])
def test_measured_costs_are_exact_or_upper_bounds_along_random_walks(scenario):
    env = gym.make("RecGym-Pipeline-v0", scenario=scenario)
    rng = np.random.default_rng(0)
    checked = np.zeros(NUM_KNOBS, int)
    for episode in range(4):
        obs, _ = env.reset(seed=episode)
        estimate = MemoryEstimate.unknown()
        for _ in range(60):
            # Grow more often than shrink, so that batch and prefetch moves meet grown stages.
            action = int(rng.choice(17, p=np.r_[np.tile([0.07, 0.03], NUM_STAGES), 0.1, 0.05, 0.1, 0.05, 0.1]))
            new_obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
            estimate = update_jit(estimate, obs, new_obs)
            obs = new_obs
            measured = np.asarray(estimate.measured)
            truth = true_grow_costs(env.unwrapped.state)
            cost = np.asarray(estimate.grow_cost)
            # float32 memory readings of tens of GiB: a relative tolerance on the reading's scale.
            assert np.all(cost[measured] >= truth[measured] - 1e-5 * obs[dynamics.OBS_MEMORY]), (
                action, cost, truth, measured)
            checked += measured
    assert np.all(checked > 0), f"some knob was never measured: {dict(zip(SHIELD_KNOBS, checked))}"


def test_one_stage_worker_is_measured_exactly():
    env = gym.make("RecGym-Pipeline-v0", scenario="memory-tight")
    obs, _ = env.reset(seed=3)
    truth = true_grow_costs(env.unwrapped.state)
    new_obs, *_ = env.step(2 * 2)  # transform +1 worker (1 GiB resident in memory-tight)
    estimate = update_jit(MemoryEstimate.unknown(), obs, new_obs)
    assert np.asarray(estimate.measured).tolist() == [False, False, True, False, False, False, False, False]
    np.testing.assert_allclose(float(estimate.grow_cost[2]), truth[2], rtol=1e-4)
    assert truth[2] > 1.0


def test_a_step_that_changes_nothing_or_several_knobs_teaches_nothing():
    env = gym.make("RecGym-Pipeline-v0", scenario="random")
    obs, _ = env.reset(seed=0)
    estimate = update_jit(MemoryEstimate.unknown(), obs, obs)
    assert not np.asarray(estimate.measured).any()
    moved = obs.copy()  # two stages at once: no single knob to charge the memory to
    moved[0] += 1
    moved[1] += 1
    moved[dynamics.OBS_MEMORY] += 1.0
    estimate = update_jit(MemoryEstimate.unknown(), obs, moved)
    assert not np.asarray(estimate.measured).any()


cost_lists = st.lists(st.floats(0.0, 8.0, width=32), min_size=NUM_KNOBS, max_size=NUM_KNOBS)


@settings(max_examples=60, deadline=None)
@given(costs=cost_lists, measured=st.lists(st.booleans(), min_size=NUM_KNOBS, max_size=NUM_KNOBS),
       memory=st.floats(1.0, 64.0), cap=st.floats(1.0, 64.0), probe=st.sampled_from([0.0, 0.05, 0.2]),
       headroom=st.sampled_from([0.0, 0.1]))
def test_the_shield_never_lets_through_a_move_its_estimate_says_does_not_fit(costs, measured, memory, cap, probe,
                                                                             headroom):
    obs = np.zeros(dynamics.OBS_DIM, np.float32)
    obs[dynamics.OBS_MEMORY], obs[dynamics.OBS_MEMORY_CAP] = memory, cap
    estimate = MemoryEstimate(grow_cost=np.asarray(costs, np.float32), measured=np.asarray(measured))
    allowed = np.asarray(allowed_jit(estimate, obs, probe, headroom))
    assert allowed.shape == (17,)
    knob_of_action = [*(i for i in range(NUM_STAGES) for _ in (0,)), NUM_STAGES, NUM_STAGES + 1]
    grow_actions = [2 * i for i in range(NUM_STAGES)] + [12, 14]
    for knob, action in zip(knob_of_action, grow_actions):
        cost = costs[knob] if measured[knob] else probe * np.float32(cap)
        fits = np.float32(memory) + np.float32(cost) <= (1.0 - headroom) * np.float32(cap)
        assert allowed[action] == fits, (SHIELD_KNOBS[knob], cost, memory, cap)
    shrinks_and_noop = [2 * i + 1 for i in range(NUM_STAGES)] + [13, 15, 16]
    assert allowed[shrinks_and_noop].all()


def test_masked_choices_are_never_sampled_nor_taken_greedily():
    logits = np.asarray([[5.0, 4.0, 0.0, -1.0]], np.float32)
    allowed = np.asarray([[False, True, False, True]])
    masked = mask_logits(logits, allowed)
    assert int(np.argmax(masked)) == 1
    samples = jax.random.categorical(jax.random.key(0), masked, shape=(2000, 1))
    assert set(np.unique(np.asarray(samples)).tolist()) <= {1, 3}
    assert np.isfinite(np.asarray(jax.nn.log_softmax(masked))).all() and float(masked[0, 0]) == MASKED_LOGIT


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(("field", "value", "message"), [
    ("memory_shield", 1, "memory_shield must be a bool, got 1"),
    ("shield_probe_fraction", -0.1, "shield_probe_fraction must be in [0, 1), got -0.1"),
    ("shield_probe_fraction", 1.0, "shield_probe_fraction must be in [0, 1), got 1.0"),
    ("shield_headroom", float("nan"), "shield_headroom must be in [0, 1), got nan"),
    ("shield_headroom", "0.1", "shield_headroom must be in [0, 1), got '0.1'"),
])
def test_bad_shield_config_values_are_rejected_by_name(field, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        TunerConfig(**{field: value})


def test_the_shield_acts_in_increment_mode_only():
    assert TunerConfig().shielded
    assert not TunerConfig(memory_shield=False).shielded
    assert not TunerConfig(action_mode="absolute").shielded
    assert MemoryShield.from_config(TunerConfig(shield_probe_fraction=0.1)) == MemoryShield(0.1, 0.0)
    assert MemoryShield.from_config(TunerConfig(action_mode="absolute")) is None


# ------------------------------------------------------------------------------------ behaviour
def tiny(**overrides) -> TunerConfig:
    values = dict(scenario="memory-tight", total_steps=32 * 50 * 2, num_envs=32, rollout_steps=50,
                  num_minibatches=2, update_epochs=1, hidden_width=16, entropy_coef=0.0, updates_per_call=1,
                  checkpoint_every=0, eval_random_pipelines=0, eval_scenario_seeds=0, progress=False,
                  tensorboard=False)
    return TunerConfig(**(values | overrides))


@pytest.fixture(scope="module")
def grower_params():
    """An untrained network pushed to grow the transform stage (the memory-tight stage's
    1 GiB workers): its +1 logit raised, so that unshielded it runs out of memory."""
    config = tiny()
    training = make_train(config)
    state = training.init(jax.random.key(0))
    params = state.learner.params
    stage_bias = params["stage_logits"]["bias"]
    stage_bias[...] = stage_bias[...].at[0].set(3.0)  # every stage's "+1 worker" logit
    return training, params


def test_the_shielded_policy_never_crashes_in_memory_tight_and_the_unshielded_one_does(grower_params):
    training, params = grower_params
    env_params = make_params("memory-tight", "increment")

    def policy_for(shield):
        return lambda ctx: TunerPolicy(training.graphdef, params, training.heads, ctx.params, shield=shield,
                                       deterministic=False)

    unshielded = evaluate_policy(policy_for(None), "memory-tight", "increment", 8)
    shielded = evaluate_policy(policy_for(MemoryShield()), "memory-tight", "increment", 8)
    assert env_params.action_mode == "increment"
    assert sum(unshielded["oom"]) >= 4
    assert sum(shielded["oom"]) == 0


def test_training_under_the_shield_never_crashes_in_memory_tight(grower_params):
    training, params = grower_params
    config = training.config
    state = training.init(jax.random.key(1))
    state = dataclasses.replace(state, learner=dataclasses.replace(state.learner, params=params))
    _, shielded = training.run(state, 2)
    unshielded_training = make_train(dataclasses.replace(config, memory_shield=False))
    _, unshielded = unshielded_training.run(state, 2)
    assert int(np.sum(shielded["charts/oom_crashes"])) == 0
    assert int(np.sum(unshielded["charts/oom_crashes"])) > 0


def test_the_checkpointed_policy_keeps_its_runs_shield(tmp_path):
    from agents.tuner import train_run

    config = tiny(total_steps=32 * 50, shield_probe_fraction=0.1, out=str(tmp_path / "run"))
    train_run(config)
    policy = TunerPolicy.from_checkpoint(tmp_path / "run")
    assert policy.shield == MemoryShield(0.1, 0.0)
    assert TunerPolicy.from_checkpoint(tmp_path / "run", shield=None).shield is None
    heads = ActionHeads.from_config(TunerConfig(action_mode="absolute"), make_params("steady", "absolute"))
    with pytest.raises(ValueError, match="masks increment actions"):
        TunerPolicy(policy.graphdef, policy.params, heads, make_params("steady", "absolute"), shield=MemoryShield())
