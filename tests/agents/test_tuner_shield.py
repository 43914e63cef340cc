"""The pipeline tuner's memory shield: its estimate of what each move costs is exact or an upper
bound, it never lets through a move its own estimate says does not fit, and shielded tuners do not
crash in ``memory-tight`` where the same unshielded ones do."""

from __future__ import annotations

import dataclasses
import functools

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
    SHIELD_OPTIONS,
    ActionHeads,
    MemoryEquations,
    MemoryEstimate,
    MemoryShield,
    TunerConfig,
    TunerPolicy,
    choose_actions,
    evaluate_policy,
    knob_values,
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


@pytest.fixture
def walk_checking_estimates():
    """Run random walks in an env, checking after every step that each measured cost is exact or an
    upper bound of the true one, for the plain estimate, the one refined by its equations (which
    must be at least as tight, and exact where it says so) and the refined one that also measures
    the batch size by subtraction (``measure_batch``: at least as tight as the refined one, exact
    where it says so); returns how many steps each knob was measured in by the refined estimate,
    how many of those it was strictly tighter, and how many steps ``measure_batch`` knew the batch
    size's cost where the refined estimate did not or had only a looser bound."""

    def walk(env, episodes: int, steps: int, next_action) -> tuple[np.ndarray, np.ndarray, int]:
        checked, tighter, batch_known = np.zeros(NUM_KNOBS, int), np.zeros(NUM_KNOBS, int), 0
        for episode in range(episodes):
            obs, _ = env.reset(seed=episode)
            plain, refined = MemoryEstimate.unknown(), MemoryEstimate.unknown(refine=True)
            by_batch = MemoryEstimate.unknown(refine=True, measure_batch=True)
            for _ in range(steps):
                action = next_action(obs)
                new_obs, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    break
                plain, refined = update_jit(plain, obs, new_obs), update_jit(refined, obs, new_obs)
                by_batch = update_jit(by_batch, obs, new_obs)
                obs = new_obs
                truth = true_grow_costs(env.unwrapped.state)
                # float32 memory readings of tens of GiB: a tolerance on the reading's scale.
                tol = 1e-5 * obs[dynamics.OBS_MEMORY]
                for estimate in (plain, refined, by_batch):
                    measured, cost = np.asarray(estimate.measured), np.asarray(estimate.grow_cost)
                    assert np.all(cost[measured] >= truth[measured] - tol), (action, cost, truth, measured)
                known, cost = np.asarray(plain.measured), np.asarray(plain.grow_cost)
                measured, refined_cost = np.asarray(refined.measured), np.asarray(refined.grow_cost)
                assert np.all(measured[known]) and np.all(refined_cost[known] <= cost[known] + tol)
                exact = np.asarray(refined.equations.exact)
                np.testing.assert_allclose(refined_cost[exact], truth[exact], atol=10 * tol)
                checked += measured
                tighter += measured & (~known | (refined_cost < cost - 1e-3))
                batch_measured, batch_cost = np.asarray(by_batch.measured), np.asarray(by_batch.grow_cost)
                assert np.all(batch_measured[measured]) and np.all(batch_cost[measured] <= refined_cost[measured] + tol)
                batch_exact = np.asarray(by_batch.equations.exact)
                np.testing.assert_allclose(batch_cost[batch_exact], truth[batch_exact], atol=10 * tol)
                b = NUM_STAGES
                batch_known += bool(batch_measured[b] and (not measured[b] or batch_cost[b] < refined_cost[b] - 1e-3))
        return checked, tighter, batch_known

    return walk


@pytest.mark.parametrize("scenario", ["memory-tight", "random"])
def test_measured_costs_are_exact_or_upper_bounds_along_random_walks(scenario, walk_checking_estimates):
    rng = np.random.default_rng(0)
    # Grow more often than shrink, so that batch and prefetch moves meet grown stages.
    probabilities = np.r_[np.tile([0.07, 0.03], NUM_STAGES), 0.1, 0.05, 0.1, 0.05, 0.1]
    checked, _, _ = walk_checking_estimates(gym.make("RecGym-Pipeline-v0", scenario=scenario), 4, 60,
                                         lambda obs: int(rng.choice(17, p=probabilities)))
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


def test_a_step_that_changes_nothing_teaches_nothing():
    env = gym.make("RecGym-Pipeline-v0", scenario="random")
    obs, _ = env.reset(seed=0)
    estimate = update_jit(MemoryEstimate.unknown(), obs, obs)
    assert not np.asarray(estimate.measured).any()


def test_several_knobs_grown_at_once_are_each_bounded_by_the_whole_memory_change():
    env = gym.make("RecGym-Pipeline-v0", scenario="random")
    obs, _ = env.reset(seed=0)
    moved = obs.copy()  # stage 0 +1 worker, stage 1 +2 workers, prefetch +1: 3 GiB in all
    moved[0] += 1
    moved[1] += 2
    moved[dynamics.OBS_PREFETCH] += 1
    moved[dynamics.OBS_MEMORY] += 3.0
    estimate = update_jit(MemoryEstimate.unknown(), obs, moved)
    assert np.asarray(estimate.measured).tolist() == [True, True, False, False, False, False, False, True]
    np.testing.assert_allclose(np.asarray(estimate.grow_cost)[[0, 1, 7]], [3.0, 1.5, 3.0], rtol=1e-5)
    # An earlier, smaller bound is kept: both are upper bounds of the same cost.
    tighter = MemoryEstimate(grow_cost=np.full(NUM_KNOBS, 0.5, np.float32), measured=np.ones(NUM_KNOBS, bool))
    assert float(update_jit(tighter, obs, moved).grow_cost[0]) == pytest.approx(0.5)


def grow_one_shrink_another(action_mode: str = "increment") -> tuple[np.ndarray, np.ndarray]:
    """Two observations of a ``random`` pipeline: stage 0 gains 2 workers while stage 2 gives back 2,
    and memory in use rises by 1 GiB."""
    env = gym.make("RecGym-Pipeline-v0", scenario="random", action_mode=action_mode)
    obs, _ = env.reset(seed=0)
    obs[2] = 4.0
    moved = obs.copy()
    moved[0] += 2
    moved[2] -= 2
    moved[dynamics.OBS_MEMORY] += 1.0
    return obs, moved


def test_a_shrink_releases_at_most_its_estimate_and_unmeasured_shrinks_or_batch_moves_teach_nothing():
    obs, moved = grow_one_shrink_another()
    assert not np.asarray(update_jit(MemoryEstimate.unknown(), obs, moved).measured).any()
    known = MemoryEstimate(grow_cost=np.asarray([0, 0, 0.75, 0, 0, 0, 0, 0], np.float32),
                           measured=np.asarray([False, False, True] + [False] * 5))
    estimate = update_jit(known, obs, moved)
    assert float(estimate.grow_cost[0]) == pytest.approx((1.0 + 2 * 0.75) / 2)  # what stage 2 may have released
    with_batch = moved.copy()
    with_batch[dynamics.OBS_BATCH] *= 2
    assert not np.asarray(update_jit(MemoryEstimate.unknown(), obs, with_batch).measured).any()
    # ... but a doubled batch size doubles what the batch-proportional knobs are known to cost.
    everything = MemoryEstimate(grow_cost=np.ones(NUM_KNOBS, np.float32), measured=np.ones(NUM_KNOBS, bool))
    scaled = np.asarray(update_jit(everything, obs, with_batch).grow_cost)
    np.testing.assert_allclose(scaled, [1, 1, 1, 1, 2, 2, 2, 2])


def absolute_action(obs: np.ndarray, params, moves: np.ndarray) -> np.ndarray:
    """The env's absolute action that moves each knob of ``obs``'s allocation by ``moves`` (clipped)."""
    current, low, high = (np.asarray(x) for x in knob_values(obs, params))
    return np.clip(current + moves, low, high) - low


@pytest.mark.parametrize("scenario", ["memory-tight", "random"])
def test_estimates_stay_exact_or_upper_bounds_along_random_absolute_walks(scenario, walk_checking_estimates):
    env = gym.make("RecGym-Pipeline-v0", scenario=scenario, action_mode="absolute")
    params = env.unwrapped.params
    rng = np.random.default_rng(1)

    def several_knobs(obs):
        # Several knobs at once (an absolute step), mostly small growths, the batch size rarely.
        moves = np.where(rng.random(NUM_KNOBS) < 0.4, rng.choice([-1, 1, 1, 2], NUM_KNOBS), 0)
        moves[NUM_STAGES] = rng.choice([-1, 0, 1], p=[0.1, 0.8, 0.1])
        return absolute_action(obs, params, moves)

    checked, tighter, batch_known = walk_checking_estimates(env, 6, 40, several_knobs)
    assert checked[:NUM_STAGES].min() > 0 and checked[NUM_STAGES + 1] > 0, dict(zip(SHIELD_KNOBS, checked))
    # The equations do tighten bounds along such walks (not only keep them).
    assert tighter.sum() > 0, dict(zip(SHIELD_KNOBS, tighter))


@pytest.mark.parametrize("scenario", ["memory-tight", "random"])
def test_measure_batch_prices_the_batch_size_from_the_steps_that_move_it_with_other_knobs(
        scenario, walk_checking_estimates):
    # Walks whose batch-size moves come with moves of single-sample stages' workers and of the
    # prefetch (never alone): the refined estimate never measures the batch size there, the
    # measure_batch one does once those knobs' costs are exact, and stays exact or an upper bound.
    env = gym.make("RecGym-Pipeline-v0", scenario=scenario, action_mode="absolute")
    params = env.unwrapped.params
    rng = np.random.default_rng(2)

    def with_the_batch(obs):
        moves = np.zeros(NUM_KNOBS, int)
        knob = rng.choice([0, 1, 2, 3, NUM_STAGES + 1])
        moves[knob] = rng.choice([-1, 1, 1])
        if rng.random() < 0.4:  # with the batch size (else alone: an exact measurement)
            moves[NUM_STAGES] = rng.choice([-1, 1])
        return absolute_action(obs, params, moves)

    _, _, batch_known = walk_checking_estimates(env, 6, 40, with_the_batch)
    assert batch_known > 0


def test_a_kept_equation_prices_the_prefetch_once_the_workers_beside_it_are_measured():
    env = gym.make("RecGym-Pipeline-v0", scenario="memory-tight", action_mode="absolute")
    obs, _ = env.reset(seed=3)
    first = obs.copy()  # transform +2 workers and prefetch +1: 2.05 GiB
    first[2] += 2
    first[dynamics.OBS_PREFETCH] += 1
    first[dynamics.OBS_MEMORY] += 2.05
    second = first.copy()  # transform +2 workers alone: 2.0 GiB, 1 GiB each
    second[2] += 2
    second[dynamics.OBS_MEMORY] += 2.0
    plain = update_jit(update_jit(MemoryEstimate.unknown(), obs, first), first, second)
    refined = update_jit(update_jit(MemoryEstimate.unknown(refine=True), obs, first), first, second)
    # Alone, the first step bounds a prefetch batch by the whole 2.05 GiB; with the second it is 0.05.
    assert float(plain.grow_cost[NUM_STAGES + 1]) == pytest.approx(2.05)
    assert float(refined.grow_cost[NUM_STAGES + 1]) == pytest.approx(0.05, abs=1e-5)
    assert float(refined.grow_cost[2]) == pytest.approx(1.0)
    exact = np.asarray(refined.equations.exact)
    assert exact.tolist() == [False, False, True] + [False] * 4 + [True]
    # A batch-size change rescales the batch-proportional costs: the equation with the prefetch is
    # dropped, and so are the exact flags of the batch-proportional knobs (the transform's stays).
    third = second.copy()
    third[dynamics.OBS_BATCH] *= 2
    third[dynamics.OBS_MEMORY] += 0.5
    after = update_jit(refined, second, third)
    assert not np.asarray(after.equations.valid).any()
    assert np.asarray(after.equations.exact).tolist() == [False, False, True] + [False] * 3 + [True, False]


def test_measure_batch_prices_a_batch_doubling_taken_with_other_knobs_and_lets_it_through():
    env = gym.make("RecGym-Pipeline-v0", scenario="memory-tight", action_mode="absolute")
    obs, _ = env.reset(seed=3)
    cap = float(obs[dynamics.OBS_MEMORY_CAP])
    obs[dynamics.OBS_MEMORY] = cap - 4.55
    first = obs.copy()  # transform +2 workers alone: 2.0 GiB, 1 GiB each (exact)
    first[2] += 2
    first[dynamics.OBS_MEMORY] += 2.0
    second = first.copy()  # prefetch +1 alone: 0.05 GiB a batch at B (exact)
    second[dynamics.OBS_PREFETCH] += 1
    second[dynamics.OBS_MEMORY] += 0.05
    # The batch size doubles with one more transform worker and two more prefetch batches. With a
    # batch-proportional memory M(B) = 0.3 GiB the step adds M(B) + 1.0 + 2 x 0.1 = 1.5 GiB, and the
    # next doubling costs M(2B) = 2 x 0.3 + 2 x 2 x 0.05 = 0.8 GiB (the deeper prefetch included).
    third = second.copy()
    third[2] += 1
    third[dynamics.OBS_BATCH] *= 2
    third[dynamics.OBS_PREFETCH] += 2
    third[dynamics.OBS_MEMORY] += 1.5
    estimates = {}
    for measure_batch in (False, True):
        estimate = MemoryEstimate.unknown(refine=True, measure_batch=measure_batch)
        for before, after in ((obs, first), (first, second), (second, third)):
            estimate = update_jit(estimate, before, after)
        estimates[measure_batch] = estimate
    b, p = NUM_STAGES, NUM_STAGES + 1
    measured = estimates[True]
    assert float(measured.grow_cost[b]) == pytest.approx(0.8, abs=1e-5)
    assert float(measured.grow_cost[p]) == pytest.approx(0.1, abs=1e-5)
    assert bool(measured.measured[b]) and np.asarray(measured.equations.exact)[[2, b, p]].all()
    assert not bool(estimates[False].measured[b])  # without it the step measures no batch cost
    # 1 GiB left under the cap: the priced doubling (0.8) fits, the unmeasured one (5% of the cap) does not.
    batch_x2 = 2 * NUM_STAGES
    assert bool(allowed_jit(measured, third, 0.05, 0.0)[batch_x2])
    assert not bool(allowed_jit(estimates[False], third, 0.05, 0.0)[batch_x2])
    # A batch-holding stage's worker moved with it: its w + e B changes by an unknown split, so nothing is measured.
    holder = third.copy()
    holder[NUM_STAGES - 1] += 1
    holder[dynamics.OBS_MEMORY] += 0.2
    estimate = update_jit(update_jit(update_jit(MemoryEstimate.unknown(refine=True, measure_batch=True), obs, first),
                                     first, second), second, holder)
    assert not bool(estimate.measured[b])


def test_an_equation_with_an_unmeasured_shrink_waits_for_its_estimate():
    obs, moved = grow_one_shrink_another("absolute")
    estimate = update_jit(MemoryEstimate.unknown(refine=True), obs, moved)
    assert not np.asarray(estimate.measured).any()  # what stage 2 released is unknown
    grown = moved.copy()  # stage 2 +1 alone: 0.75 GiB, so the first step's stage-0 worker is (1 + 1.5) / 2
    grown[2] += 1
    grown[dynamics.OBS_MEMORY] += 0.75
    estimate = update_jit(estimate, moved, grown)
    assert float(estimate.grow_cost[2]) == pytest.approx(0.75)
    assert float(estimate.grow_cost[0]) == pytest.approx((1.0 + 2 * 0.75) / 2)
    assert np.asarray(estimate.measured).tolist() == [True, False, True] + [False] * 5


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
    ("shield_refine", 1, "shield_refine must be a bool, got 1"),
    ("share_features", "yes", "share_features must be a bool, got 'yes'"),
])
def test_bad_shield_config_values_are_rejected_by_name(field, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        TunerConfig(**{field: value})


@pytest.mark.parametrize("name", SHIELD_OPTIONS)
def test_every_refining_shield_option_needs_the_kept_equations_is_a_bool_and_is_off_by_default(name):
    field = f"shield_{name}"
    with pytest.raises(ValueError, match=f"{field}=True needs shield_refine=True"):
        TunerConfig(**{field: True, "shield_refine": False})
    with pytest.raises(ValueError, match=rf"MemoryShield\({name}=True\) needs refine=True"):
        MemoryShield(refine=False, **{name: True})
    with pytest.raises(ValueError, match=f"{field} must be a bool, got 1"):
        TunerConfig(**{field: 1})
    assert not getattr(TunerConfig(), field) and not getattr(MemoryShield(), name)
    assert getattr(MemoryShield.from_config(TunerConfig(action_mode="absolute", **{field: True})), name)


def test_measuring_the_batch_size_in_the_estimate_needs_the_kept_equations():
    with pytest.raises(ValueError, match="measure_batch=True needs refine=True"):
        MemoryEstimate.unknown(measure_batch=True)


def test_the_shield_acts_in_both_action_modes_unless_switched_off():
    assert TunerConfig().shielded and TunerConfig(action_mode="absolute").shielded
    assert not TunerConfig(memory_shield=False).shielded
    assert MemoryShield.from_config(TunerConfig(shield_probe_fraction=0.1)) == MemoryShield(0.1, 0.0, True)
    assert MemoryShield.from_config(TunerConfig(shield_refine=False)) == MemoryShield(0.05, 0.0, False)
    assert MemoryShield.from_config(TunerConfig(shield_measure_batch=True)) == MemoryShield(0.05, 0.0, True, True)
    assert not TunerConfig().shield_measure_batch  # off by default
    assert MemoryShield.from_config(TunerConfig(action_mode="absolute", memory_shield=False)) is None


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


def test_a_run_trained_measuring_the_batch_size_acts_with_that_shield(tmp_path):
    from agents.tuner import train_run

    config = tiny(action_mode="absolute", total_steps=32 * 50, shield_measure_batch=True, out=str(tmp_path / "run"))
    train_run(config)
    policy = TunerPolicy.from_checkpoint(tmp_path / "run")
    assert policy.shield == MemoryShield(measure_batch=True)
    assert policy.estimate is None
    record = evaluate_policy(policy, "memory-tight", "absolute", 4)
    assert not any(record["oom"])


# ------------------------------------------------------------------------------------ absolute mode
ABSOLUTE_PARAMS = make_params("random", "absolute")
ABSOLUTE_HEADS = ActionHeads.from_config(TunerConfig(action_mode="absolute"), ABSOLUTE_PARAMS)
#: The absolute heads with the batch-size head choosing the size itself (``batch_values``).
VALUE_HEADS = ActionHeads.from_config(TunerConfig(action_mode="absolute", batch_values=True), ABSOLUTE_PARAMS)
#: The absolute heads whose worker heads also choose multiples of the stages' proportional shares.
SHARE_HEADS = ActionHeads.from_config(TunerConfig(action_mode="absolute", share_targets=(0.7, 1.0, 1.3)),
                                      ABSOLUTE_PARAMS)
choose_jit = jax.jit(choose_actions, static_argnums=(0, 1))


def chosen_targets(obs: np.ndarray, choices: np.ndarray, heads: ActionHeads = ABSOLUTE_HEADS) -> np.ndarray:
    """``(8,)`` the knob values the head choices lead to, computed independently of the heads' own
    method: a move head's current value plus its move, a value head's value, a share target's multiple
    of the stage's proportional share of the available cores, clipped to the bounds."""
    current, low, high = (np.asarray(x) for x in knob_values(obs, ABSOLUTE_PARAMS))
    seconds = obs[dynamics.OBS_CORES].astype(np.float64) / np.maximum(obs[dynamics.OBS_RATES], 1e-3)
    share = obs[dynamics.OBS_AVAILABLE] * seconds / seconds.sum()
    targets = []
    for i, c in enumerate(choices):
        if c >= len(heads.moves[i]):  # a share target (worker heads only)
            targets.append(np.round(share[i] * heads.share_targets[c - len(heads.moves[i])]))
        elif heads.values and heads.values[i]:
            targets.append(heads.moves[i][c])
        else:
            targets.append(current[i] + heads.moves[i][c])
    return np.clip(np.asarray(targets), low, high)


def estimated_growth(obs: np.ndarray, estimate: MemoryEstimate, choices: np.ndarray, probe: float,
                     heads: ActionHeads = ABSOLUTE_HEADS) -> float:
    """The memory the chosen absolute moves add by the shield's estimate, computed independently:
    workers at their unit cost, k batch doublings as (2^k - 1) times the batch-proportional memory
    (with the new batch-holding workers), prefetch batches at the new batch size."""
    cap = float(obs[dynamics.OBS_MEMORY_CAP])
    unit = np.where(np.asarray(estimate.measured), np.asarray(estimate.grow_cost), np.float32(probe) * np.float32(cap))
    current = np.asarray(knob_values(obs, ABSOLUTE_PARAMS)[0])
    growth = np.maximum(chosen_targets(obs, choices, heads) - current, 0)
    workers = float(np.sum(growth[:NUM_STAGES] * unit[:NUM_STAGES]))
    proportional = unit[NUM_STAGES] + float(np.sum(growth[NUM_STAGES - 2:NUM_STAGES] * unit[NUM_STAGES - 2:NUM_STAGES]))
    factor = 2.0 ** growth[NUM_STAGES]
    return workers + (factor - 1.0) * proportional + growth[NUM_STAGES + 1] * unit[NUM_STAGES + 1] * factor


absolute_observations = st.builds(
    lambda cores, batch_log2, prefetch, memory, cap: np.asarray(
        [*cores, *[10.0] * 6, *[1.0] * 6, 2.0**batch_log2, prefetch, 5.0, 0.1, memory, cap, 16.0, 16.0], np.float32),
    cores=st.lists(st.integers(1, 32), min_size=NUM_STAGES, max_size=NUM_STAGES),
    batch_log2=st.integers(ABSOLUTE_PARAMS.min_batch_log2, ABSOLUTE_PARAMS.max_batch_log2),
    prefetch=st.integers(0, ABSOLUTE_PARAMS.max_prefetch).map(float),
    memory=st.floats(1.0, 64.0), cap=st.floats(1.0, 64.0))


@settings(max_examples=60, deadline=None)
@given(obs=absolute_observations, costs=cost_lists, measured=st.lists(st.booleans(), min_size=NUM_KNOBS,
                                                                      max_size=NUM_KNOBS),
       probe=st.sampled_from([0.0, 0.05, 0.2]), headroom=st.sampled_from([0.0, 0.1]),
       seed=st.integers(0, 2**31 - 1), greedy=st.booleans(),
       heads=st.sampled_from([ABSOLUTE_HEADS, VALUE_HEADS, SHARE_HEADS]))
def test_the_absolute_shield_never_lets_through_an_allocation_its_estimate_says_exceeds_the_cap(
        obs, costs, measured, probe, headroom, seed, greedy, heads):
    estimate = MemoryEstimate(grow_cost=np.asarray([costs], np.float32), measured=np.asarray([measured]))
    # Logits that push every knob to grow (the shield's hardest case) plus noise.
    current = np.asarray(knob_values(obs, ABSOLUTE_PARAMS)[0])
    targets = [chosen_targets(obs, np.asarray([c if j == i else 0 for j in range(len(heads.sizes))]), heads)[i]
               for i, size in enumerate(heads.sizes) for c in range(size)]
    grows = heads.split(np.asarray(targets) > np.repeat(current, heads.sizes))
    logits = np.array(jax.random.normal(jax.random.key(seed), (1, heads.num_logits)))
    logits += 3.0 * np.concatenate(grows)
    keys = None if greedy else jax.random.split(jax.random.key(seed), 1)
    choices, allowed = choose_jit(MemoryShield(probe, headroom), heads, logits, estimate, obs[None],
                                  ABSOLUTE_PARAMS, keys)
    choices, allowed = np.asarray(choices)[0], np.asarray(allowed)[0]
    one = jax.tree_util.tree_map(lambda x: x[0], estimate)
    added = estimated_growth(obs, one, choices, probe, heads)
    free = (1.0 - headroom) * obs[dynamics.OBS_MEMORY_CAP] - obs[dynamics.OBS_MEMORY]
    assert added == 0.0 or added <= free + 1e-4 * obs[dynamics.OBS_MEMORY_CAP], (choices, added, free)
    # Every chosen move was allowed, and shrinks and the no-op (for a value head: the values not above
    # the current one) always are.
    offsets = np.cumsum([0, *heads.sizes[:-1]])
    assert allowed[offsets + choices].all()
    assert allowed[~np.concatenate(grows)].all()


@settings(max_examples=30, deadline=None)
@given(obs=absolute_observations, seed=st.integers(0, 2**31 - 1))
def test_the_masked_absolute_policy_has_normalised_heads_and_exact_log_probs(obs, seed):
    from agents.tuner import _log_probs

    logits = np.asarray(jax.random.normal(jax.random.key(seed), (1, ABSOLUTE_HEADS.num_logits))) * 3.0
    choices, allowed = choose_jit(MemoryShield(0.2, 0.0), ABSOLUTE_HEADS, logits, MemoryEstimate.unknown((1,)),
                                  obs[None], ABSOLUTE_PARAMS, jax.random.split(jax.random.key(seed + 1), 1))
    masked = mask_logits(logits, allowed)
    log_prob, _ = _log_probs(ABSOLUTE_HEADS, masked, choices)
    expected = 0.0
    for head, ok, choice in zip(ABSOLUTE_HEADS.split(masked[0]), ABSOLUTE_HEADS.split(np.asarray(allowed)[0]),
                                np.asarray(choices)[0]):
        probabilities = np.exp(np.asarray(jax.nn.log_softmax(head), np.float64))
        assert probabilities[np.asarray(ok)].sum() == pytest.approx(1.0, abs=1e-5)
        assert probabilities[~np.asarray(ok)].sum() < 1e-30
        allowed_logits = np.asarray(head, np.float64)[np.asarray(ok)]
        expected += float(head[choice]) - (np.log(np.sum(np.exp(allowed_logits - allowed_logits.max())))
                                           + allowed_logits.max())
    assert float(log_prob[0]) == pytest.approx(expected, abs=1e-4)


def test_the_unshielded_absolute_choices_are_the_plain_policy_and_an_idle_shield_changes_nothing():
    from agents.tuner import _greedy, _sample

    n = 16
    logits = np.asarray(jax.random.normal(jax.random.key(0), (n, ABSOLUTE_HEADS.num_logits))) * 2.0
    obs = np.tile(np.asarray([*[2] * 6, *[10.0] * 6, *[1.0] * 6, 256.0, 2.0, 5.0, 0.1, 10.0, 1e6, 16.0, 16.0],
                             np.float32), (n, 1))
    # Nothing measured and unmeasured moves assumed free: the shield has nothing to mask.
    idle_shield = MemoryShield(probe_fraction=0.0)
    keys = jax.random.split(jax.random.key(1), n)
    plain = jax.vmap(functools.partial(_sample, ABSOLUTE_HEADS))(keys, logits)
    unshielded, allowed = choose_actions(None, ABSOLUTE_HEADS, logits, MemoryEstimate.unknown((n,)), obs,
                                         ABSOLUTE_PARAMS, keys)
    np.testing.assert_array_equal(unshielded, plain)
    assert np.asarray(allowed).all()
    idle, allowed = choose_actions(idle_shield, ABSOLUTE_HEADS, logits, MemoryEstimate.unknown((n,)), obs,
                                   ABSOLUTE_PARAMS, keys)
    np.testing.assert_array_equal(idle, plain)
    assert np.asarray(allowed).all()
    greedy, _ = choose_actions(idle_shield, ABSOLUTE_HEADS, logits, MemoryEstimate.unknown((n,)), obs,
                               ABSOLUTE_PARAMS)
    np.testing.assert_array_equal(greedy, _greedy(ABSOLUTE_HEADS, logits))


def test_the_shielded_absolute_policy_never_crashes_in_memory_tight_and_the_unshielded_one_does():
    config = tiny(action_mode="absolute")
    training = make_train(config)
    params = training.init(jax.random.key(0)).learner.params
    stage_bias = params["stage_logits"]["bias"]
    plus_eight = list(config.core_moves).index(8)
    stage_bias[...] = stage_bias[...].at[plus_eight].set(3.0)  # every stage's "+8 workers" move

    def policy_for(shield):
        return lambda ctx: TunerPolicy(training.graphdef, params, training.heads, ctx.params, shield=shield,
                                       deterministic=False)

    unshielded = evaluate_policy(policy_for(None), "memory-tight", "absolute", 6)
    shielded = evaluate_policy(policy_for(MemoryShield()), "memory-tight", "absolute", 6)
    assert sum(unshielded["oom"]) == 6
    assert sum(shielded["oom"]) == 0
    assert np.mean(shielded["efficiency"]) > np.mean(unshielded["efficiency"])


# ------------------------------------------------------------------------------------ shrink credit
def true_memory(state, cores, batch_log2: int, prefetch: int) -> float:
    """GiB: the memory an allocation would use in the env's world (the memory model, not the shield)."""
    world = state.world
    return float(model.memory_gib(np, [float(c) for c in cores], 2.0**batch_log2, float(prefetch),
                                  world.worker_memory_gib, world.element_gib, world.shuffle_buffer,
                                  world.trainer_memory_gib))


def test_shrink_credit_lets_a_batch_halving_pay_for_deeper_prefetch_and_prices_it_at_the_new_batch():
    env = gym.make("RecGym-Pipeline-v0", scenario="memory-tight", action_mode="absolute")
    obs, _ = env.reset(seed=3)
    cap = float(obs[dynamics.OBS_MEMORY_CAP])
    obs[dynamics.OBS_MEMORY] = cap - 0.35
    # Two one-knob steps price both exactly: the batch halved alone releases 0.5 GiB, so the
    # batch-proportional memory at the new B is M(B) = 0.5 (the next doubling's cost); one batch
    # of prefetch alone adds 0.1 GiB.
    first = obs.copy()
    first[dynamics.OBS_BATCH] /= 2
    first[dynamics.OBS_MEMORY] -= 0.5
    second = first.copy()
    second[dynamics.OBS_PREFETCH] += 1
    second[dynamics.OBS_MEMORY] += 0.1
    estimate = update_jit(update_jit(MemoryEstimate.unknown(refine=True), obs, first), first, second)
    b, p = NUM_STAGES, NUM_STAGES + 1
    assert np.asarray(estimate.equations.exact)[[b, p]].all()
    assert float(estimate.grow_cost[b]) == pytest.approx(0.6, abs=1e-5)  # M(B) with the new prefetch batch
    assert float(estimate.grow_cost[p]) == pytest.approx(0.1, abs=1e-5)
    # 0.75 GiB left. The policy halves the batch size and wants 8 more batches of prefetch:
    # 0.8 GiB at the current batch size, over what is left; the halving releases 0.3 GiB and
    # prices the 8 batches at 0.05 each, 0.4 GiB in all, which fits.
    heads = ABSOLUTE_HEADS
    logits = np.zeros((1, heads.num_logits), np.float32)
    bounds = np.cumsum([0, *heads.sizes])
    logits[0, bounds[b] + list(heads.moves[b]).index(-1)] = 20.0
    logits[0, bounds[p]:bounds[p + 1]] = heads.moves[p]  # the deeper, the likelier
    for i in range(NUM_STAGES):
        logits[0, bounds[i] + list(heads.moves[i]).index(0)] = 20.0
    one = jax.tree_util.tree_map(lambda x: x[None], estimate)
    chosen = {}
    for credit in (False, True):
        choices, allowed = choose_jit(MemoryShield(shrink_credit=credit), heads, logits, one, second[None],
                                      ABSOLUTE_PARAMS)
        chosen[credit] = [heads.moves[i][c] for i, c in enumerate(np.asarray(choices)[0])]
    assert chosen[True][b] == chosen[False][b] == -1
    assert chosen[True][p] == 8
    assert chosen[False][p] == 4  # 0.4 GiB at the old batch size is all that fits without the credit


def test_shrink_credit_never_lets_through_an_allocation_over_the_cap_along_random_walks():
    """Random walks in memory-tight whose policy halves the batch size and grows everything else:
    every allocation the credited shield lets through fits under the cap by the world's own memory
    model (the shield's release is a lower bound), and the credit does let more through."""
    env = gym.make("RecGym-Pipeline-v0", scenario="memory-tight", action_mode="absolute")
    params = env.unwrapped.params
    heads = ActionHeads.from_config(TunerConfig(action_mode="absolute"), params)
    shields = {credit: MemoryShield(shrink_credit=credit, measure_batch=True) for credit in (False, True)}
    bounds = np.cumsum([0, *heads.sizes])
    greediest = np.concatenate([np.asarray(m, np.float32) for m in heads.moves])
    batch_moves = np.asarray(heads.moves[NUM_STAGES], np.float32)
    greediest[bounds[NUM_STAGES]:bounds[NUM_STAGES + 1]] = -((batch_moves + 1.0) ** 2)  # one halving
    widened = near_cap = 0
    for episode in range(6):
        obs, _ = env.reset(seed=episode)
        estimate = MemoryEstimate.unknown((1,), refine=True, measure_batch=True)
        previous = obs
        key = jax.random.key(episode)
        for _ in range(40):
            estimate = jax.jit(update_memory_estimate)(estimate, previous[None], obs[None])
            key, noise_key, choice_key = jax.random.split(key, 3)
            current = np.asarray(knob_values(obs, params)[0])
            targets = np.asarray(heads.targets(current, *knob_values(obs, params)[1:]))
            moves = np.concatenate([targets[i, : heads.sizes[i]] - current[i] for i in range(len(heads.sizes))])
            bias = np.where(moves > 0, 2.0, 0.0)
            bias[np.cumsum([0, *heads.sizes])[NUM_STAGES]:][: heads.sizes[NUM_STAGES]] = np.where(
                moves[np.cumsum([0, *heads.sizes])[NUM_STAGES]:][: heads.sizes[NUM_STAGES]] < 0, 2.0, 0.0)
            logits = np.asarray(jax.random.normal(noise_key, (1, heads.num_logits))) + bias
            keys = jax.random.split(choice_key, 1)
            choices, allowed = choose_jit(shields[True], heads, logits, estimate, obs[None], params, keys)
            _, plain_allowed = choose_jit(shields[False], heads, logits, estimate, obs[None], params, keys)
            widened += int(np.any(np.asarray(allowed) & ~np.asarray(plain_allowed)))
            cap = float(obs[dynamics.OBS_MEMORY_CAP])
            # The binding case at this state too: the greedy choice of a policy that halves the
            # batch size and grows every other knob as far as it can (not acted on).
            greedy, _ = choose_jit(shields[True], heads, greediest[None], estimate, obs[None], params)
            for chosen in (np.asarray(choices)[0], np.asarray(greedy)[0]):
                after = targets[np.arange(len(heads.sizes)), chosen]
                memory = true_memory(env.unwrapped.state, after[:NUM_STAGES], int(after[NUM_STAGES]),
                                     int(after[NUM_STAGES + 1]))
                assert memory <= cap + 1e-4 * cap, (episode, after, memory, cap)
                if memory > cap - 0.05 * cap:
                    near_cap += 1
            action = np.asarray(heads.to_env_action(choices, obs[None], params))[0]
            previous = obs
            obs, _, terminated, truncated, info = env.step(action)
            assert not info["oom"] or float(obs[dynamics.OBS_MEMORY_CAP]) < cap  # only a fall of the cap
            if terminated or truncated:
                break
    assert widened > 0 and near_cap > 0


@settings(max_examples=60, deadline=None)
@given(obs=absolute_observations, costs=cost_lists,
       measured=st.lists(st.booleans(), min_size=NUM_KNOBS, max_size=NUM_KNOBS),
       exact=st.lists(st.booleans(), min_size=NUM_KNOBS, max_size=NUM_KNOBS), probe=st.sampled_from([0.0, 0.05, 0.2]),
       headroom=st.sampled_from([0.0, 0.1]), seed=st.integers(0, 2**31 - 1), greedy=st.booleans())
def test_the_credited_shield_spends_no_more_than_the_free_memory_and_the_releases_it_knows(
        obs, costs, measured, exact, probe, headroom, seed, greedy):
    """The credit's arithmetic, computed independently: the chosen growth (prefetch batches at the
    new batch size) is at most the free memory plus the exact single-sample-stage workers shrunk and
    (1 - 2^-k) of the exact batch-proportional memory, less the batch-holding workers shrunk, for k
    halvings."""
    heads = ABSOLUTE_HEADS
    measured = np.asarray(measured) | np.asarray(exact)
    equations = MemoryEquations.empty((1,)).replace(exact=np.asarray([exact]))
    estimate = MemoryEstimate(grow_cost=np.asarray([costs], np.float32), measured=measured[None], equations=equations)
    current = np.asarray(knob_values(obs, ABSOLUTE_PARAMS)[0])
    moves = [np.asarray(m) for m in heads.moves]
    # Logits that push the batch size down and every other knob up, plus noise.
    logits = np.array(jax.random.normal(jax.random.key(seed), (1, heads.num_logits)))
    logits += 3.0 * np.concatenate([(m < 0) if i == NUM_STAGES else (m > 0) for i, m in enumerate(moves)])
    keys = None if greedy else jax.random.split(jax.random.key(seed), 1)
    choices, _ = choose_jit(MemoryShield(probe, headroom, shrink_credit=True), heads, logits, estimate, obs[None],
                            ABSOLUTE_PARAMS, keys)
    change = chosen_targets(obs, np.asarray(choices)[0], heads) - current
    cap = float(obs[dynamics.OBS_MEMORY_CAP])
    unit = np.where(measured, np.asarray(costs, np.float32), np.float32(probe) * np.float32(cap)).astype(np.float64)
    grow, shrink = np.maximum(change, 0), np.maximum(-change, 0)
    holding = np.asarray([False] * (NUM_STAGES - 2) + [True, True])
    factor = 2.0 ** change[NUM_STAGES]
    added = float(np.sum(grow[:NUM_STAGES] * unit[:NUM_STAGES]))
    added += (2.0 ** grow[NUM_STAGES] - 1.0) * (unit[NUM_STAGES] + float(np.sum((grow[:NUM_STAGES] * unit[:NUM_STAGES])[holding])))
    added += grow[NUM_STAGES + 1] * unit[NUM_STAGES + 1] * factor
    exact = np.asarray(exact)
    released = float(np.sum(np.where(exact[:NUM_STAGES] & ~holding, shrink[:NUM_STAGES] * unit[:NUM_STAGES], 0.0)))
    proportional = unit[NUM_STAGES] if exact[NUM_STAGES] else 0.0
    proportional = max(proportional - float(np.sum((shrink[:NUM_STAGES] * unit[:NUM_STAGES])[holding])), 0.0)
    released += (1.0 - 2.0 ** -shrink[NUM_STAGES]) * proportional
    free = (1.0 - headroom) * cap - float(obs[dynamics.OBS_MEMORY])
    assert added == 0.0 or added <= free + released + 1e-4 * cap, (change, added, free, released)


# ------------------------------------------------------------------------------------ batch probe
def batch_growing_logits(heads: ActionHeads = ABSOLUTE_HEADS) -> np.ndarray:
    """``(1, num_logits)``: a policy that wants to double the batch size and add a worker to every
    stage (staying is its second choice), and keeps the prefetch depth."""
    logits = np.zeros((1, heads.num_logits), np.float32)
    bounds = np.cumsum([0, *heads.sizes])
    for i, moves in enumerate(heads.moves):
        logits[0, bounds[i] + list(moves).index(0)] = 10.0
        if i <= NUM_STAGES:
            logits[0, bounds[i] + list(moves).index(1)] = 20.0
    return logits


def test_the_batch_probe_halves_the_batch_size_alone_then_lets_the_doubling_through_at_its_true_price():
    """Where the batch doubling's prior (here 90% of the cap) does not fit, the probe's step moves
    the batch size alone, one halving; the env's memory change then prices the doubling exactly,
    and the next step's doubling is let through. Without the probe the batch size never grows."""
    env = gym.make("RecGym-Pipeline-v0", scenario="memory-tight", action_mode="absolute")
    params = env.unwrapped.params
    heads, logits, b = ABSOLUTE_HEADS, batch_growing_logits(), NUM_STAGES
    batches = {}
    for probe in (False, True):
        shield = MemoryShield(probe_fraction=0.9, batch_probe=probe)
        obs, _ = env.reset(seed=3)
        estimate = MemoryEstimate.unknown((1,), refine=True)
        start = float(obs[dynamics.OBS_BATCH])
        batches[probe] = [start]
        for step in range(2):
            choices, allowed = choose_jit(shield, heads, logits, estimate, obs[None], params)
            after = chosen_targets(obs, np.asarray(choices)[0], heads)
            current = np.asarray(knob_values(obs, params)[0])
            if probe and step == 0:
                # Every knob stays but the batch size, which halves: each head was let choose only
                # the moves that lead there (several where clipping at a bound makes them equal).
                np.testing.assert_array_equal(after - current, [0] * NUM_STAGES + [-1, 0])
                targets = np.asarray(heads.targets(current, *knob_values(obs, params)[1:]))
                for i, ok in enumerate(heads.split(np.asarray(allowed)[0])):
                    np.testing.assert_array_equal(ok, targets[i, : heads.sizes[i]] == current[i] - (i == b))
            action = np.asarray(heads.to_env_action(choices, obs[None], params))[0]
            new_obs, _, terminated, truncated, info = env.step(action)
            assert not (terminated or truncated or info["oom"])
            estimate = update_jit(estimate, obs[None], new_obs[None])
            obs = new_obs
            batches[probe].append(float(obs[dynamics.OBS_BATCH]))
            if probe and step == 0:
                truth = true_grow_costs(env.unwrapped.state)
                assert bool(estimate.equations.exact[0, b]) and bool(estimate.measured[0, b])
                np.testing.assert_allclose(float(estimate.grow_cost[0, b]), truth[b], rtol=1e-4)
                assert truth[b] < 0.9 * float(obs[dynamics.OBS_MEMORY_CAP]) - float(obs[dynamics.OBS_MEMORY])
    assert batches[False] == [batches[False][0]] * 3  # the prior masks every doubling
    assert batches[True] == [start, start / 2, start]  # probe, then the doubling at its measured price


@settings(max_examples=60, deadline=None)
@given(obs=absolute_observations, costs=cost_lists,
       measured=st.lists(st.booleans(), min_size=NUM_KNOBS, max_size=NUM_KNOBS),
       exact=st.lists(st.booleans(), min_size=NUM_KNOBS, max_size=NUM_KNOBS), probe=st.sampled_from([0.05, 0.2, 0.9]),
       headroom=st.sampled_from([0.0, 0.1]), seed=st.integers(0, 2**31 - 1), grow_bias=st.floats(-4.0, 4.0),
       greedy=st.booleans())
def test_the_batch_probe_acts_exactly_when_the_unknown_batch_price_blocks_a_wanted_doubling(
        obs, costs, measured, exact, probe, headroom, seed, grow_bias, greedy):
    """The probe's condition, recomputed independently: the batch size's cost not exact, one
    doubling at its estimate over the free memory, at least half of the batch head's mass on
    growing it, and a halving possible. When it holds the step halves the batch size and moves
    nothing else; when it does not, the choices are the probe-less shield's."""
    heads, b = ABSOLUTE_HEADS, NUM_STAGES
    measured = np.asarray(measured) | np.asarray(exact)
    equations = MemoryEquations.empty((1,)).replace(exact=np.asarray([exact]))
    estimate = MemoryEstimate(grow_cost=np.asarray([costs], np.float32), measured=measured[None], equations=equations)
    logits = np.array(jax.random.normal(jax.random.key(seed), (1, heads.num_logits)))
    bounds = np.cumsum([0, *heads.sizes])
    batch_moves = np.asarray(heads.moves[b])
    logits[0, bounds[b]:bounds[b + 1]] += grow_bias * (batch_moves > 0)
    keys = None if greedy else jax.random.split(jax.random.key(seed + 1), 1)
    with_probe, allowed = choose_jit(MemoryShield(probe, headroom, batch_probe=True), heads, logits, estimate,
                                     obs[None], ABSOLUTE_PARAMS, keys)
    without, _ = choose_jit(MemoryShield(probe, headroom), heads, logits, estimate, obs[None], ABSOLUTE_PARAMS, keys)
    current, low, _ = (np.asarray(x) for x in knob_values(obs, ABSOLUTE_PARAMS))
    cap = float(obs[dynamics.OBS_MEMORY_CAP])
    price = costs[b] if measured[b] else np.float32(probe) * np.float32(cap)
    free = (1.0 - headroom) * cap - float(obs[dynamics.OBS_MEMORY])
    batch_logits = logits[0, bounds[b]:bounds[b + 1]].astype(np.float64)
    mass = np.exp(batch_logits - batch_logits.max())
    mass /= mass.sum()
    targets = np.clip(current[b] + batch_moves, low[b], ABSOLUTE_PARAMS.max_batch_log2)
    wanted = mass[targets > current[b]].sum()
    if abs(wanted - 0.5) < 1e-4 or abs(price - free) < 1e-4 * cap:
        return  # on the threshold: float32 and float64 may disagree
    fires = not exact[b] and price > free and wanted >= 0.5 and current[b] > low[b]
    after = chosen_targets(obs, np.asarray(with_probe)[0], heads)
    if fires:
        np.testing.assert_array_equal(after - current, [0] * NUM_STAGES + [-1, 0])
        every = np.clip(current[:, None] + np.asarray([list(m) + [0] * (max(heads.sizes) - len(m)) for m in heads.moves]),
                        low[:, None], np.asarray(knob_values(obs, ABSOLUTE_PARAMS)[2])[:, None])
        for i, ok in enumerate(heads.split(np.asarray(allowed)[0])):
            np.testing.assert_array_equal(ok, every[i, : heads.sizes[i]] == current[i] - (i == b))
    else:
        np.testing.assert_array_equal(with_probe, without)


def test_a_run_trained_with_the_batch_probe_acts_with_it_and_does_not_crash(tmp_path):
    from agents.tuner import train_run

    config = tiny(action_mode="absolute", total_steps=32 * 50, shield_batch_probe=True, out=str(tmp_path / "run"))
    train_run(config)
    policy = TunerPolicy.from_checkpoint(tmp_path / "run")
    assert policy.shield == MemoryShield(batch_probe=True)
    record = evaluate_policy(policy, "memory-tight", "absolute", 4)
    assert not any(record["oom"])
