"""PipelineParams are pytree data: one compilation for every named scenario, vmap over scenarios."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recgym.core import seed_key
from recgym.envs.pipeline.core import PipelineCore
from recgym.envs.pipeline.params import (
    SCENARIOS,
    PipelineParams,
    PipelineProfile,
    RandomRanges,
    make_params,
)

#: The named scenarios that differ only in leaves (``random`` sets the static ``randomize``).
SAME_STRUCTURE = [name for name in SCENARIOS if name != "random"]
# oversubscription_basis picks the slowdown formula (Python control flow), so it is static too.
STATIC = {"action_mode", "max_episode_steps", "randomize", "max_cores_per_stage", "min_batch_log2",
          "max_batch_log2", "max_prefetch", "oversubscription_basis"}


def _stack(params_list):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *params_list)


def test_coefficients_are_leaves_and_only_shape_settings_are_static():
    params = make_params("drift")
    _, treedef = jax.tree_util.tree_flatten(params)
    static = {f.name for f in dataclasses.fields(PipelineParams) if not f.metadata.get("pytree_node", True)}
    assert static == STATIC
    assert "scenario" not in {f.name for f in dataclasses.fields(PipelineParams)}
    # every profile and range value, every per-stage entry and every coefficient is a leaf:
    # profile 4 per-stage fields + 11 scalars; 12 (low, high) ranges; 1 per-stage field + 13 scalars
    assert len(jax.tree_util.tree_leaves(params)) == (4 * 6 + 11) + 12 * 2 + (6 + 13)
    # the named scenarios share one tree structure (the scenario name is not in it)
    for name in SAME_STRUCTURE:
        assert jax.tree_util.tree_structure(make_params(name)) == treedef, name
    assert jax.tree_util.tree_structure(make_params("random")) != treedef


def test_jit_traces_once_across_scenarios_and_coefficients():
    core = PipelineCore()
    traces = {"reset": 0, "step": 0, "step_autoreset": 0}

    def reset(key, params):
        traces["reset"] += 1
        return core.reset(key, params)

    def step(key, state, action, params):
        traces["step"] += 1
        return core.step(key, state, action, params)

    def step_autoreset(carry, action, params):
        traces["step_autoreset"] += 1
        return core.step_autoreset(carry, action, params)

    reset_j, step_j, autoreset_j = jax.jit(reset), jax.jit(step), jax.jit(step_autoreset)
    start_j = jax.jit(core.start)
    variants = [make_params(name) for name in SAME_STRUCTURE] + [
        make_params("steady", cost_jitter=0.5),
        make_params("steady", measurement_noise=0),  # an int where a float is expected: no retrace
        make_params("drift", change_step=10, initial_prefetch=3, oom_penalty=7.0),
    ]
    key = jax.random.PRNGKey(0)
    first_obs = []
    for params in variants:
        obs, state = reset_j(key, params)
        step_j(key, state, jnp.int32(4), params)
        _, carry = start_j(key, params)
        autoreset_j(carry, jnp.int32(4), params)
        first_obs.append(np.asarray(obs))
        # jitted with traced params == the same call with the params as Python constants
        np.testing.assert_allclose(obs, core.reset(key, params)[0], rtol=1e-5)
    assert traces == {"reset": 1, "step": 1, "step_autoreset": 1}, traces
    assert start_j._cache_size() == 1
    # and the params were not baked in: the scenarios' first observations differ
    assert not np.allclose(first_obs[0], first_obs[SAME_STRUCTURE.index("memory-tight")])
    assert not np.allclose(first_obs[0], first_obs[len(SAME_STRUCTURE)])  # cost_jitter 0.2 -> 0.5


def test_vmap_over_params_stacked_from_different_scenarios_equals_each_scenario():
    core = PipelineCore()
    names = SAME_STRUCTURE
    stacked = _stack([make_params(name) for name in names])
    n_steps = 70  # past the change step (50): drift and machine-change take effect
    actions = jnp.asarray(np.random.default_rng(0).integers(0, 17, n_steps), dtype=jnp.int32)
    key = seed_key(3)

    def rollout(params):
        obs, carry = core.start(key, params)

        def body(carry, action):
            obs, carry, reward, terminated, truncated, info = core.step_autoreset(carry, action, params)
            return carry, (obs, reward, terminated, info["available_cores"], info["memory_cap_gib"])

        _, trajectory = jax.lax.scan(body, carry, actions)
        return obs, trajectory

    batched = jax.jit(jax.vmap(rollout))(stacked)
    for i, name in enumerate(names):
        alone = jax.jit(rollout)(make_params(name))
        for got, want in zip(jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(alone)):
            np.testing.assert_allclose(np.asarray(got)[i], np.asarray(want), rtol=1e-5, atol=1e-5, err_msg=name)
    # the scenarios really differ inside the batch: cores and memory move only where they should
    available, memory_cap = np.asarray(batched[1][3]), np.asarray(batched[1][4])
    machine = names.index("machine-change")
    assert available[machine, -1] == 8 and available[names.index("steady"), -1] == 16
    assert memory_cap[machine, -1] == 24 and memory_cap[names.index("memory-tight"), 0] == 40


def test_vmap_over_random_ranges_equals_each_range():
    """The ``random`` scenario's ranges are leaves too: one compiled core draws worlds from several."""
    core = PipelineCore()
    variants = [make_params("random"), make_params("random", random_ranges=RandomRanges(
        core_budget=(4, 6), memory_gib=(100.0, 120.0), cpu_scale_log=(1.0, 1.5)))]
    keys = jax.random.split(seed_key(0), 8)

    def worlds(params):
        return jax.vmap(lambda key: core.start(key, params)[1].state.world)(keys)

    batched = jax.jit(jax.vmap(worlds))(_stack(variants))
    for i, params in enumerate(variants):
        alone = worlds(params)  # the ranges as Python constants
        for got, want in zip(jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(alone)):
            np.testing.assert_allclose(np.asarray(got)[i], np.asarray(want), rtol=1e-5)
    budgets = np.asarray(batched.core_budget)
    assert budgets[0].max() > 6 and set(budgets[1].tolist()) <= {4.0, 5.0, 6.0}
    assert np.all((np.asarray(batched.memory_gib)[1] >= 100.0) & (np.asarray(batched.memory_gib)[1] <= 120.0))


def test_stacked_params_are_validated_elementwise():
    good = _stack([make_params("steady"), make_params("drift")])
    assert good.event_cost_factor[1].shape == (2,)
    with pytest.raises(ValueError, match=r"measurement_noise must be in \[0.0, 2.0\], got 'array of shape \(2,\)'"):
        good.replace(measurement_noise=jnp.asarray([0.05, -1.0]))
    with pytest.raises(ValueError, match=r"core_budget must be an int >= 1"):
        good.replace(profile=good.profile.replace(core_budget=jnp.asarray([16, 0])))


def test_validation_is_skipped_for_traced_values():
    params = make_params("steady")

    def with_noise(noise):  # an invalid value inside jit is not checked (its value is unknown)
        return params.replace(measurement_noise=noise).measurement_noise * 2.0

    assert float(jax.jit(with_noise)(-1.0)) == -2.0
    with pytest.raises(ValueError, match="measurement_noise must be in"):
        params.replace(measurement_noise=-1.0)
    shapes = jax.eval_shape(lambda p: PipelineCore().reset(jax.random.PRNGKey(0), p), params)
    assert shapes[0].shape == (26,)


def test_python_numbers_are_normalised_so_one_structure_compiles_once():
    a = make_params("steady", measurement_noise=0, change_step=np.int64(50), event_cost_factor=[1, 2, 1, 1, 1, 1])
    b = make_params("steady", measurement_noise=0.0, event_cost_factor=(1.0, 2.0, 1.0, 1.0, 1.0, 1.0))
    assert a == b
    assert type(a.measurement_noise) is float and type(a.change_step) is int
    assert a.event_cost_factor == (1.0, 2.0, 1.0, 1.0, 1.0, 1.0)
    avals = [[jax.typeof(x) for x in jax.tree_util.tree_leaves(p)] for p in (a, b)]
    assert avals[0] == avals[1]
    profile = PipelineProfile(core_budget=np.int32(8), element_kib=np.full(6, 3.0))
    assert type(profile.core_budget) is int and profile.element_kib == (3.0,) * 6


def test_scenarios_table_and_make_params():
    assert list(SCENARIOS) == ["steady", "drift", "machine-change", "noisy-neighbours", "memory-tight", "random"]
    fields = {f.name for f in dataclasses.fields(PipelineParams)}
    for name, overrides in SCENARIOS.items():
        assert set(overrides) <= fields, name
        params = make_params(name, "absolute")
        assert params.action_mode == "absolute"
        for field, value in overrides.items():
            assert getattr(params, field) == value, (name, field)
    assert make_params("drift", event_cost_factor=(1.0,) * 6).event_cost_factor == (1.0,) * 6  # overrides win
    with pytest.raises(ValueError, match=r"unknown PipelineParams field\(s\) \['bogus'\]; valid fields: .*'cost_jitter'"):
        make_params(bogus=1)
    with pytest.raises(ValueError, match=r"track_optimum is an argument of gym.make.*PipelineOptimum"):
        make_params(track_optimum=True)
    with pytest.raises(ValueError, match=r"scenario must be one of \('steady', .*\), got 'sunny'"):
        make_params("sunny")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: RandomRanges(memory_gib=(64.0, 24.0)), r"RandomRanges.memory_gib\[1\] must be finite and >= the low end 64.0, got 24.0"),
        (lambda: RandomRanges(cpu_scale_log=(0.0, 2.0)), r"RandomRanges.cpu_scale_log\[0\] must be > 0 \(the range is log-uniform\), got 0.0"),
        (lambda: RandomRanges(core_budget=(0, 4)), r"RandomRanges.core_budget\[0\] must be an int >= 1, got 0"),
        (lambda: RandomRanges(serial_fraction=(0.0, 1.0)), r"RandomRanges.serial_fraction\[1\] must be < 1, got 1.0"),
        (lambda: RandomRanges(memory_gib=(1.0,)), r"RandomRanges.memory_gib must be a \(low, high\) pair"),
        (lambda: make_params(initial_batch_log2=20), r"initial_batch_log2 must be in \[6, 13\], got 20"),
        (lambda: make_params(initial_prefetch=2.5), r"initial_prefetch must be an int, got 2.5"),
        (lambda: make_params(max_episode_steps=0), r"max_episode_steps must be >= 1, got 0"),
        (lambda: make_params(randomize="yes"), r"randomize must be a bool, got 'yes'"),
        (lambda: make_params(profile="fast"), r"profile must be a PipelineProfile, got 'fast'"),
        (lambda: make_params(event_cost_factor=(1.0, 0.0, 1, 1, 1, 1)), r"event_cost_factor\['parse'\] must be in \(0.0, inf\], got 0.0"),
        (lambda: make_params(neighbour_p_on=float("nan")), r"neighbour_p_on must be in \[0.0, 1.0\], got nan"),
    ],
)
def test_bad_values_name_the_field_and_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@settings(max_examples=30, deadline=None)
@given(noise=st.floats(-1.0, 3.0, allow_nan=False), jitter=st.floats(-1.0, 4.0, allow_nan=False))
def test_coefficients_in_range_are_accepted_and_others_rejected(noise, jitter):
    valid = 0.0 <= noise <= 2.0 and 0.0 <= jitter <= 3.0
    if valid:
        params = make_params(measurement_noise=noise, cost_jitter=jitter)
        assert params.measurement_noise == noise and params.cost_jitter == jitter
    else:
        with pytest.raises(ValueError, match="measurement_noise|cost_jitter"):
            make_params(measurement_noise=noise, cost_jitter=jitter)
