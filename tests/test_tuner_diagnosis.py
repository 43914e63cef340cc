"""benchmarks.tuner_diagnosis: the breakdown adds up, the oracle's steady state has nothing to fix, and
the per-episode trace reads the true doubling cost and the tuner's own decision."""

from __future__ import annotations

import types

import gymnasium as gym
import jax
import numpy as np
import pytest

import recgym  # noqa: F401  (registers the ids)
from agents.tuner import (
    ActionHeads,
    MemoryShield,
    TunerConfig,
    TunerPolicy,
    fresh_estimate,
    make_train,
)
from benchmarks.tuner_diagnosis import (
    PHASES,
    batch_growth,
    diagnose,
    episode_rows,
    knob_breakdown,
    main,
    phase_breakdown,
    run_episodes,
    serial_fraction_overrides,
)
from recgym.envs.pipeline import dynamics, make_params
from recgym.envs.pipeline.baselines import make_baseline
from recgym.envs.pipeline.params import NUM_STAGES


def oracle(params):
    return make_baseline("oracle", params)


def static_even(params):
    return make_baseline("static-even", params)


@pytest.mark.parametrize("factory", [oracle, static_even])
def test_the_phase_losses_add_up_to_the_shortfall_of_the_mean(factory):
    record = run_episodes(factory, "random", "absolute", [500_000, 500_001, 500_002])
    rows = phase_breakdown(record)
    assert len(rows) == 3 * len(PHASES)
    total = sum(row["loss"] for row in rows)
    assert total == pytest.approx(1.0 - record["efficiency"].mean(), abs=1e-9)
    assert sum(row["share of steps"] for row in rows) == pytest.approx(1.0)


def test_the_oracle_holds_the_optimum_in_the_steady_state_and_static_even_does_not():
    knobs = knob_breakdown(run_episodes(oracle, "steady", "absolute", [500_000, 500_001]))
    assert knobs["efficiency"] == pytest.approx(1.0, abs=1e-4)
    for fix in ("fix_prefetch", "fix_workers", "fix_batch"):
        assert knobs[fix] == pytest.approx(1.0, abs=1e-4)
    assert all(k["mean |difference|"] == 0 for k in knobs["knobs"].values())
    even = knob_breakdown(run_episodes(static_even, "steady", "absolute", [500_000, 500_001]))
    assert even["efficiency"] < 0.6
    # The optimum's workers (with the deepest prefetch that fits) close most of static-even's gap.
    assert even["fix_workers"] > even["efficiency"] + 0.3
    assert np.isfinite(even["knobs"]["total workers"]["mean difference"])
    # steady has no neighbour: every steady-state step is an "off" one.
    assert knobs["neighbour"]["on"] is None and knobs["neighbour"]["off"]["steps"] == knobs["steps"]
    assert knobs["neighbour"]["off"]["total workers - optimum"] == 0


def test_the_neighbour_split_partitions_the_steady_state_steps():
    record = run_episodes(static_even, "noisy-neighbours", "absolute", [500_000, 500_001, 500_002])
    knobs = knob_breakdown(record)
    off, on = knobs["neighbour"]["off"], knobs["neighbour"]["on"]
    assert off["steps"] + on["steps"] == knobs["steps"]
    # Weighted by their steps, the two halves give back the whole's figures.
    whole = knobs["knobs"]["total workers"]["mean difference"]
    halves = (off["steps"] * off["total workers - optimum"] + on["steps"] * on["total workers - optimum"]) / knobs["steps"]
    assert halves == pytest.approx(whole)
    assert (off["steps"] * off["efficiency"] + on["steps"] * on["efficiency"]) / knobs["steps"] == pytest.approx(
        knobs["efficiency"])
    # static-even ignores the neighbour, and the optimum uses fewer workers while it holds cores.
    assert on["optimum total workers"] < off["optimum total workers"]


def test_the_diagnosis_refuses_the_held_out_seeds():
    with pytest.raises(ValueError, match="validation seeds"):
        diagnose(oracle, "absolute", random_pipelines=2, scenario_seeds=0, seed=999_999)  # reaches 1,000,000


def test_the_doubling_cost_is_what_doubling_the_batch_size_adds_to_the_memory_in_use():
    seed = 500_003
    record = run_episodes(static_even, "memory-tight", "absolute", [seed])
    env = gym.make("RecGym-Pipeline-v0", scenario="memory-tight", action_mode="absolute")
    params = env.unwrapped.params
    obs, _ = env.reset(seed=seed)
    cores = np.rint(obs[dynamics.OBS_CORES]).astype(int)
    batch_log2 = int(np.rint(np.log2(obs[dynamics.OBS_BATCH])))
    action = np.asarray([*(cores - 1), batch_log2 + 1 - params.min_batch_log2, int(obs[dynamics.OBS_PREFETCH])])
    after, *_ = env.step(action)
    measured = float(after[dynamics.OBS_MEMORY] - obs[dynamics.OBS_MEMORY])
    assert measured > 0
    assert record["doubling_cost"][0, 0] == pytest.approx(measured, rel=1e-4)
    # Policies that are not tuners have no decision to read.
    assert np.isnan(record["growth_mass"]).all() and np.isnan(record["doubling_price"]).all()


def fake_tuner(mode: str, logits: np.ndarray, allowed: np.ndarray, shield: MemoryShield | None):
    params = make_params("memory-tight", mode)
    heads = ActionHeads.from_config(TunerConfig(action_mode=mode), params)
    estimate = jax.tree_util.tree_map(np.asarray, fresh_estimate(shield, (len(logits),)))
    return types.SimpleNamespace(heads=heads, env_params=params, shield=shield, estimate=estimate,
                                 last_decision={"logits": logits, "allowed": allowed}), params


def observations(params, mode: str, n: int = 2) -> np.ndarray:
    env = gym.make("RecGym-Pipeline-v0", scenario="memory-tight", action_mode=mode)
    return np.stack([env.reset(seed=500_000 + i)[0] for i in range(n)])


def test_batch_growth_in_absolute_mode_reads_the_batch_head_and_the_shield_prior():
    heads = ActionHeads.from_config(TunerConfig(action_mode="absolute"), make_params("memory-tight", "absolute"))
    bounds = np.cumsum(heads.sizes)
    start, stop = int(bounds[NUM_STAGES - 1]), int(bounds[NUM_STAGES])
    logits = np.zeros((2, heads.num_logits), np.float32)
    logits[:, start:stop] = np.log(np.arange(1, stop - start + 1, dtype=np.float32))  # p proportional to 1, 2, ...
    allowed = np.ones_like(logits, bool)
    allowed[1, start:stop] = False
    shield = MemoryShield()
    tuner, params = fake_tuner("absolute", logits, allowed, shield)
    obs = observations(params, "absolute")
    mass, masked, price = batch_growth(tuner, obs)
    current = np.rint(np.log2(obs[:, dynamics.OBS_BATCH])).astype(int)
    probs = np.arange(1, stop - start + 1) / np.sum(np.arange(1, stop - start + 1))
    for i in range(2):
        targets = np.clip(current[i] + np.asarray(heads.moves[NUM_STAGES]), params.min_batch_log2,
                          params.max_batch_log2)
        expected = probs[targets > current[i]].sum()
        assert 0 < expected < 1
        assert mass[i] == pytest.approx(expected, rel=1e-5)
    assert masked[0] == 0.0 and masked[1] == pytest.approx(mass[1], rel=1e-6)
    # Nothing measured yet: the shield prices a doubling at its prior, a share of the cap.
    np.testing.assert_allclose(price, shield.probe_fraction * obs[:, dynamics.OBS_MEMORY_CAP], rtol=1e-6)


def test_batch_growth_in_increment_mode_is_the_batch_x2_action():
    heads = ActionHeads.from_config(TunerConfig(), make_params("memory-tight", "increment"))
    logits = np.zeros((2, heads.num_logits), np.float32)
    allowed = np.ones_like(logits, bool)
    allowed[0, 2 * NUM_STAGES] = False
    tuner, params = fake_tuner("increment", logits, allowed, None)
    mass, masked, price = batch_growth(tuner, observations(params, "increment"))
    np.testing.assert_allclose(mass, 1.0 / heads.num_logits, rtol=1e-6)
    np.testing.assert_allclose(masked, [1.0 / heads.num_logits, 0.0], rtol=1e-6)
    assert np.isnan(price).all()


def test_a_tuner_records_the_decision_it_acted_on_and_the_trace_reads_it():
    config = TunerConfig(action_mode="absolute", scenario="memory-tight", total_steps=2048, num_envs=32,
                         rollout_steps=8, hidden_width=16, progress=False, tensorboard=False)
    training = make_train(config)
    state = training.init(jax.random.key(0))
    params = make_params("memory-tight", "absolute")
    policy = TunerPolicy.from_training(training, state, params)
    policy.reset(num_envs=2)
    obs = observations(params, "absolute")
    actions = policy.act_batch(obs, {})
    decision = policy.last_decision
    assert decision["logits"].shape == decision["allowed"].shape == (2, training.heads.num_logits)
    np.testing.assert_array_equal(np.asarray(training.heads.to_env_action(decision["choices"], obs, params)), actions)
    assert np.all(decision["allowed"][np.arange(2)[:, None], decision["choices"] + np.cumsum(
        [0, *training.heads.sizes[:-1]])])  # each chosen move was allowed

    seeds = [500_000, 500_001]
    record = run_episodes(lambda p: TunerPolicy.from_training(training, state, p), "memory-tight", "absolute", seeds)
    alive = record["alive"]
    assert np.all((record["growth_mass"][alive] >= 0) & (record["growth_mass"][alive] <= 1 + 1e-6))
    assert np.all(record["growth_masked"][alive] <= record["growth_mass"][alive] + 1e-6)
    assert np.all(record["doubling_price"][alive] > 0)
    rows = episode_rows(record, seeds)
    assert [row["seed"] for row in rows] == seeds
    for row, efficiency in zip(rows, record["efficiency"].mean(axis=1)):
        assert row["efficiency"] == pytest.approx(efficiency)
        assert 0 <= row["masked"] <= 1 + 1e-6 and row["doubling cost"] > 0


def test_the_episodes_command_prints_one_row_per_episode(capsys):
    assert main(["--oracle", "--episodes", "steady", "--scenario-seeds", "2"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == 2 + 2 and table[2].startswith("| 500000 |")
    with pytest.raises(SystemExit):
        main(["--oracle", "--episodes", "no-such-scenario"])


def test_the_serial_fraction_override_sets_every_stages_amdahl_fraction():
    # With perfectly scaling stages the optimum uses more workers than with the profile's
    # fractions, and the oracle still holds it; the override reaches random's draws too.
    profile = knob_breakdown(run_episodes(oracle, "steady", "absolute", [500_000]))
    perfect = knob_breakdown(run_episodes(oracle, "steady", "absolute", [500_000], serial_fraction=0.0))
    assert perfect["efficiency"] == pytest.approx(1.0, abs=1e-4)
    assert perfect["neighbour"]["off"]["optimum total workers"] > profile["neighbour"]["off"]["optimum total workers"]
    for scenario in ("steady", "random"):
        env = gym.make("RecGym-Pipeline-v0", scenario=scenario, action_mode="absolute",
                       **serial_fraction_overrides(scenario, "absolute", 0.05))
        env.reset(seed=500_000)
        np.testing.assert_allclose(np.asarray(env.unwrapped.state.world.serial_fraction, np.float64), 0.05, rtol=1e-6)
    for bad in (1.5, -0.1):
        with pytest.raises(ValueError, match="serial_fraction.* must be in \\[0.0, 0.999\\]"):
            serial_fraction_overrides("steady", "absolute", bad)
