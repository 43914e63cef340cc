"""The simulator's ``"demand"`` oversubscription basis and CPU-trainer share, and profile files."""

from __future__ import annotations

import dataclasses
import itertools
import json

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import recgym  # noqa: F401  (registers the ids)
from recgym.envs.pipeline import dynamics, model, optimum
from recgym.envs.pipeline.params import (
    NUM_STAGES,
    PipelineProfile,
    load_profile,
    make_params,
    save_profile,
)

SMALL = dict(max_cores_per_stage=3, min_batch_log2=6, max_batch_log2=8, max_prefetch=3, initial_batch_log2=6)


def _world(rng, params, share, efficiency=1.0):
    """A random small machine with CPU-bound stages (costs of a live pipeline's order)."""
    world = dynamics.sample_world(np, params, rng.random(dynamics.WORLD_UNIFORMS, dtype=np.float32))
    f32 = np.float32
    return dynamics.PipelineWorld(**{
        **vars(world),
        "cpu_seconds": rng.uniform(1e-7, 3e-6, NUM_STAGES).astype(f32),
        "serial_fraction": rng.uniform(0.0, 0.3, NUM_STAGES).astype(f32),
        "worker_memory_gib": rng.uniform(0.002, 0.02, NUM_STAGES).astype(f32),
        "element_gib": rng.uniform(1e-7, 1e-6, NUM_STAGES).astype(f32),
        "batch_overhead_seconds": f32(rng.uniform(1e-5, 5e-4)),
        "io_samples_per_second": f32(rng.uniform(1e5, 1e7)),
        "core_budget": f32(rng.integers(1, 5)),
        "memory_gib": f32(rng.uniform(0.45, 0.6)),
        "trainer_memory_gib": f32(0.35),
        "shuffle_buffer": f32(rng.integers(0, 20000)),
        "trainer_batch_seconds": f32(rng.uniform(1e-4, 1e-3)),
        "trainer_sample_seconds": f32(rng.uniform(5e-7, 3e-6)),
        "trainer_cpu_fraction": f32(share),
        "core_efficiency": f32(efficiency),
    })


def _brute_force(params, world, cond):
    cores = np.asarray(list(itertools.product(*[range(1, params.max_cores_per_stage + 1)] * NUM_STAGES)), np.int32)
    n = len(cores)
    best = 0.0
    for b in range(params.min_batch_log2, params.max_batch_log2 + 1):
        for p in range(params.max_prefetch + 1):
            perf = dynamics.performance(
                np, world,
                dynamics.Conditions(np.broadcast_to(cond.cpu_seconds, (n, NUM_STAGES)),
                                    np.broadcast_to(cond.available_cores, (n,)),
                                    np.broadcast_to(cond.memory_cap_gib, (n,))),
                cores, np.full(n, b, np.int32), np.full(n, p, np.int32),
                params.oversubscription_overhead, params.oversubscription_basis,
            )
            best = max(best, float(np.max(np.where(perf.oom, 0.0, perf.throughput))))
    return best


@pytest.mark.parametrize("efficiency", [1.0, 0.6])
@pytest.mark.parametrize("share", [0.0, 1.0])
@pytest.mark.parametrize("overhead", [0.0, 0.05])
@pytest.mark.parametrize("seed", range(4))
def test_optimum_equals_brute_force_on_the_demand_basis(seed, overhead, share, efficiency):
    params = make_params("steady", oversubscription_basis="demand", oversubscription_overhead=overhead, **SMALL)
    world = _world(np.random.default_rng(seed), params, share, efficiency)
    cond = dynamics.conditions(np, world, np.asarray(False), np.asarray(False))
    best = optimum.optimal_config(np, params, world, cond)
    expected = _brute_force(params, world, cond)
    assert float(best.throughput) == pytest.approx(expected, rel=1e-5)
    if bool(best.feasible):
        perf = dynamics.performance(np, world, cond, best.cores, best.batch_log2, best.prefetch, overhead, "demand")
        assert not bool(perf.oom)
        assert float(perf.throughput) == pytest.approx(float(best.throughput), rel=1e-6)


def _cpu_bound_world(share: float):
    params = make_params("steady", oversubscription_basis="demand", oversubscription_overhead=0.0)
    world = dynamics.sample_world(np, params, np.full(dynamics.WORLD_UNIFORMS, 0.5, np.float32))
    return params, dataclasses.replace(
        world, cpu_seconds=(1e-7, 2e-7, 5e-7, 1e-7, 1e-7, 1e-7), serial_fraction=(0.0,) * NUM_STAGES,
        batch_overhead_seconds=0.0, io_samples_per_second=1e9, trainer_batch_seconds=0.0,
        trainer_sample_seconds=1e-6, trainer_cpu_fraction=share, core_budget=2.0)


def test_a_cpu_bound_pipeline_delivers_cores_over_cpu_seconds_per_sample():
    """Stages far faster than the cores can feed, a CPU trainer: X -> A / (sum s_i + 1/mu)."""
    params, world = _cpu_bound_world(1.0)
    for available in (0.5, 1.0, 2.0):
        cond = dynamics.Conditions(list(world.cpu_seconds), available, 1e6)
        perf = dynamics.performance(np, world, cond, [4] * NUM_STAGES, 10, 16, 0.0, "demand")
        demand = sum(world.cpu_seconds) + world.trainer_sample_seconds
        # The M/M/1/K factor of a 16-deep buffer is ~1; the trainer's single core caps at 1/t_sample.
        assert perf.throughput == pytest.approx(min(available / demand, 1e6), rel=0.02)


@pytest.mark.parametrize("efficiency", [1.0, 0.75, 0.3])
def test_core_efficiency_caps_a_cpu_bound_pipeline_at_its_share_of_the_machine(efficiency):
    """The pipeline runs on ``min(efficiency * budget, available)`` cores: a CPU-bound pipeline (its
    trainer on the cores) on the whole 2-core machine delivers ``efficiency`` times as much;
    neighbours taking fewer cores than its idle gaps cost it nothing; one that needs less is
    unchanged."""
    _, world = _cpu_bound_world(1.0)  # core_budget 2
    lean = dataclasses.replace(world, core_efficiency=efficiency)
    for available in (0.5, 1.0, 2.0):
        cond = dynamics.Conditions(list(world.cpu_seconds), available, 1e6)
        full = dynamics.performance(np, world, cond, [4] * NUM_STAGES, 10, 16, 0.0, "demand")
        partial = dynamics.performance(np, lean, cond, [4] * NUM_STAGES, 10, 16, 0.0, "demand")
        share = min(efficiency * 2.0, available) / available
        assert partial.throughput == pytest.approx(share * full.throughput, rel=1e-5)
    # A trainer capped by its own single core (1,000 samples/s: one core busy) on a 4-core
    # machine: even 0.3 of it (1.2 cores) serves its demand, so the efficiency changes nothing.
    slow = dataclasses.replace(world, trainer_sample_seconds=1e-3, core_budget=4.0)
    cond = dynamics.Conditions(list(world.cpu_seconds), 4.0, 1e6)
    assert dynamics.performance(np, dataclasses.replace(slow, core_efficiency=efficiency), cond, [4] * NUM_STAGES,
                                10, 16, 0.0, "demand").throughput == pytest.approx(
        dynamics.performance(np, slow, cond, [4] * NUM_STAGES, 10, 16, 0.0, "demand").throughput, rel=1e-6)


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, float("nan")])
def test_core_efficiency_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError, match="core_efficiency"):
        PipelineProfile(core_efficiency=bad)


def test_blocked_workers_cost_nothing_on_the_demand_basis_but_everything_on_the_allocated():
    params, world = _cpu_bound_world(0.0)
    world = dataclasses.replace(world, trainer_sample_seconds=1e-9)  # the stages are the bottleneck
    cond = dynamics.Conditions(list(world.cpu_seconds), 2.0, 1e6)
    few, many = [1] * NUM_STAGES, [1, 1, 1, 4, 4, 4]  # more workers where the work is not
    demand = [dynamics.performance(np, world, cond, c, 10, 4, 0.0, "demand").throughput for c in (few, many)]
    allocated = [dynamics.performance(np, world, cond, c, 10, 4, 0.0, "allocated").throughput for c in (few, many)]
    assert demand[1] == pytest.approx(demand[0])
    assert allocated[1] < 0.5 * allocated[0]


@given(st.integers(6, 40), st.floats(0.5, 16.0), st.floats(0.01, 20.0), st.floats(0.0, 2.0))
@settings(max_examples=60, deadline=None)
def test_demand_factor_is_a_share_that_falls_with_demand_and_workers(workers, cores, busy, overhead):
    factor = model.demand_oversubscription_factor(np, np.float64(busy), np.float64(workers), np.float64(cores), overhead)
    assert 0.0 < factor <= 1.0
    if busy <= cores and workers <= cores:
        assert factor == 1.0
    assert model.demand_oversubscription_factor(np, busy * 1.5, workers, cores, overhead) <= factor
    assert model.demand_oversubscription_factor(np, busy, workers + 1, cores, overhead) <= factor


def test_an_accelerator_trainer_is_not_slowed():
    assert model.shared_trainer_rate(np, 1000.0, 0.25, 0.0) == 1000.0
    assert model.shared_trainer_rate(np, 1000.0, 0.25, 1.0) == 250.0


def test_bad_basis_and_share_are_rejected_naming_the_field():
    with pytest.raises(ValueError, match="oversubscription_basis"):
        make_params(oversubscription_basis="busy")
    with pytest.raises(ValueError, match="trainer_cpu_fraction"):
        PipelineProfile(trainer_cpu_fraction=1.5)


profiles = st.builds(
    PipelineProfile,
    cpu_seconds_per_sample=st.tuples(*[st.floats(1e-9, 1e-3)] * NUM_STAGES),
    serial_fraction=st.tuples(*[st.floats(0.0, 0.9)] * NUM_STAGES),
    core_budget=st.integers(1, 64),
    trainer_cpu_fraction=st.floats(0.0, 1.0),
    trainer_batch_seconds=st.floats(0.0, 0.1),
    core_efficiency=st.floats(0.05, 1.0),
)


@given(profiles, st.sampled_from(["allocated", "demand"]), st.floats(0.0, 3.0))
@settings(max_examples=25, deadline=None)
def test_a_profile_file_round_trips(tmp_path_factory, profile, basis, overhead):
    path = tmp_path_factory.mktemp("profiles") / "profile.json"
    save_profile(path, profile, {"oversubscription_basis": basis, "oversubscription_overhead": overhead}, {"note": 1})
    loaded = load_profile(path)
    assert loaded.profile == profile
    assert loaded.params == {"oversubscription_basis": basis, "oversubscription_overhead": overhead}
    assert loaded.metadata == {"note": 1}


def test_gym_make_simulates_a_profile_file(tmp_path):
    profile = PipelineProfile(core_budget=2, trainer_cpu_fraction=1.0)
    path = save_profile(tmp_path / "p.json", profile, {"oversubscription_basis": "demand", "oversubscription_overhead": 0.02})
    env = gym.make("RecGym-Pipeline-v0", profile=str(path), max_cores_per_stage=4, track_optimum=True)
    params = env.unwrapped.params
    assert params.profile == profile
    assert (params.oversubscription_basis, params.oversubscription_overhead) == ("demand", 0.02)
    obs, info = env.reset(seed=0)
    assert obs[dynamics.OBS_BUDGET] == 2.0 and info["optimum"] > 0
    # An explicit override wins over the file's value.
    env = gym.make("RecGym-Pipeline-v0", profile=path, oversubscription_overhead=0.5)
    assert env.unwrapped.params.oversubscription_overhead == 0.5


def test_a_profile_file_from_before_core_efficiency_loads_work_conserving(tmp_path):
    """Profiles written before the field existed carry no ``core_efficiency``: they read as 1."""
    path = save_profile(tmp_path / "p.json", PipelineProfile(core_budget=2, core_efficiency=0.7),
                        {"oversubscription_basis": "demand"})
    raw = json.loads(path.read_text())
    del raw["profile"]["core_efficiency"]
    path.write_text(json.dumps(raw))
    assert load_profile(path).profile.core_efficiency == 1.0


def test_bad_profile_files_raise_naming_the_file_and_field(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_profile(path)
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="recgym-pipeline-profile"):
        load_profile(path)
    path.write_text(json.dumps({"format": "recgym-pipeline-profile/1", "profile": {"core_budget": 0}}))
    with pytest.raises(ValueError, match="core_budget"):
        load_profile(path)
    path.write_text(json.dumps({"format": "recgym-pipeline-profile/1", "profile": {"cores": 2}}))
    with pytest.raises(ValueError, match="unknown PipelineProfile field"):
        load_profile(path)
    with pytest.raises(FileNotFoundError):
        load_profile(tmp_path / "missing.json")
    with pytest.raises(ValueError, match=r"profile must be a PipelineProfile, got '\S*missing.json' \(not a Pipeline"):
        make_params(profile=str(tmp_path / "missing.json"))


def test_the_jitted_vector_env_on_the_demand_basis_is_the_single_env():
    # oversubscription_basis is a static field: the jitted, vmapped core must take the same branch
    # (and give the same optimum) as the single env's NumPy path.
    params = make_params("noisy-neighbours", "absolute", profile=PipelineProfile(core_budget=4, trainer_cpu_fraction=1.0),
                         oversubscription_basis="demand", oversubscription_overhead=0.05, **SMALL)
    venv = gym.make_vec("RecGym-Pipeline-v0", num_envs=3, vectorization_mode="vector_entry_point", params=params,
                        track_optimum=True)
    obs, info = venv.reset(seed=0)
    singles = [gym.make("RecGym-Pipeline-v0", params=params, track_optimum=True) for _ in range(3)]
    single = [env.reset(seed=i) for i, env in enumerate(singles)]
    actions = np.random.default_rng(0).integers(0, [3] * NUM_STAGES + [3, 4], size=(5, 3, NUM_STAGES + 2))
    for step_actions in actions:
        for i in range(3):
            np.testing.assert_allclose(obs[i], single[i][0], rtol=1e-4)
            assert info["optimum"][i] == pytest.approx(single[i][1]["optimum"], rel=1e-4)
        obs, _, _, _, info = venv.step(step_actions)
        single = [(o, i_) for o, _, _, _, i_ in (env.step(a) for env, a in zip(singles, step_actions))]
    # the vector env took the demand branch: on the allocated basis the same world measures otherwise
    obs, _ = venv.reset(seed=0)
    allocated, _ = gym.make("RecGym-Pipeline-v0", params=params.replace(oversubscription_basis="allocated")).reset(seed=0)
    assert abs(obs[0, dynamics.OBS_THROUGHPUT] / allocated[dynamics.OBS_THROUGHPUT] - 1.0) > 0.05
