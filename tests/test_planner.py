"""recgym.envs.movielens.planner: the privileged model-predictive planner (synthetic world).

What it must do: reproduce oracle-greedy at a one-step horizon, read the hidden state through the
access object only, plan with the core's own dynamics on its local world, be deterministic for a
seed, trace once, reject bad settings clearly, and be a ceiling (beat the myopic oracle where
the future matters, tie with it where it does not).
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recgym.core import as_jax
from recgym.envs.movielens import (
    MovieLensAccess,
    MovieLensCore,
    MovieLensVectorEnv,
    PlannerConfig,
    PlannerPolicy,
    boredom_cost,
    build_world,
    make_params,
    true_utilities,
)
from recgym.envs.movielens.planner import _local_state, _local_world, _Rollouts
from recgym.evaluation import BASELINES, evaluate, make_eval_env, paired_ratio_ci
from recgym.policies import OracleGreedyPolicy, Policy

# Small settings keep the tests fast; behaviour does not depend on the sizes.
FAST = PlannerConfig(horizon=4, candidates=3, base_candidates=2, samples=4, shortlist=12)


class ActionLog(Policy):
    """Wraps a policy; keeps the actions it served to the envs the harness still scores."""

    def __init__(self, inner: Policy, access: MovieLensAccess) -> None:
        super().__init__()
        self.inner, self.access, self.name = inner, access, inner.name
        self.served: list[np.ndarray] = []

    def reset(self, num_envs: int = 1, seed: int | None = None) -> None:
        self.num_envs = num_envs
        self.inner.reset(num_envs, seed)

    def act_batch(self, observations, infos):
        actions = np.asarray(self.inner.act_batch(observations, infos))
        self.served.append(actions.reshape(self.num_envs, -1)[self.access.active()])
        return actions


def run_logged(env, factory, n_episodes, seed=0):
    logs = []

    def logged(ctx):
        logs.append(ActionLog(factory(ctx), ctx.access))
        return logs[-1]

    result = evaluate(logged, env, n_episodes, seed=seed)
    return result, np.concatenate(logs[0].served), logs[0].inner


@pytest.fixture(scope="module")
def dynamic_env():
    return make_eval_env("RecGym-MovieLens-v0", num_envs=8, dataset="synthetic")


@pytest.fixture(scope="module")
def slate_env():
    return make_eval_env("RecGym-MovieLens-v0", num_envs=8, dataset="synthetic", slate_size=3)


# ------------------------------------------------------------------ H = 1 is oracle-greedy
@pytest.mark.parametrize("env_name", ["dynamic_env", "slate_env"])
def test_one_step_horizon_serves_oracle_greedy_over_whole_episodes(env_name, request):
    env = request.getfixturevalue(env_name)
    one_step = replace(FAST, horizon=1)
    oracle, oracle_actions, _ = run_logged(env, BASELINES["oracle-greedy"], 12)
    planner, planner_actions, _ = run_logged(
        env, lambda ctx: PlannerPolicy(ctx.access, one_step, ctx.slate_size), 12)
    np.testing.assert_array_equal(planner_actions, oracle_actions)
    np.testing.assert_array_equal(planner.episodes["return"], oracle.episodes["return"])
    assert oracle_actions.shape[0] == oracle.episodes["length"].sum() > 12  # whole episodes, every step


def test_one_step_horizon_keeps_oracle_greedys_tie_breaking():
    # Clipped utilities tie at the rating maximum: the lower item id must win, as in the oracle.
    env = MovieLensVectorEnv(4, dataset="synthetic", users="test", habit_satisfaction_weight=0.0,
                             rating_max=3.0)
    access = MovieLensAccess(env)
    obs, info = env.reset(seed=1)
    assert (access.true_utilities() == 3.0).sum(axis=1).min() > 1  # several items tie at the top
    planner = PlannerPolicy(access, replace(FAST, horizon=1))
    oracle = OracleGreedyPolicy(access, env.params.n_items)
    planner.reset(4, seed=0)
    oracle.reset(4)
    for _ in range(5):
        served = planner.act_batch(obs, info)
        np.testing.assert_array_equal(served, oracle.act_batch(obs, info))
        obs, _, _, _, info = env.step(served)
        access.invalidate()


# ------------------------------------------------------------------ what the planner reads
class GuardedVectorEnv(MovieLensVectorEnv):
    """A vector env whose hidden state cannot be read while ``guarded`` is set."""

    guarded = False

    @property
    def state(self):
        if self.guarded:
            raise AssertionError("the env's state was read outside the privileged access object")
        return super().state


class RecordingAccess:
    """The privileged access, as the planner sees it: records every read, exposes no env."""

    def __init__(self, env: GuardedVectorEnv) -> None:
        self._env, self._access = env, MovieLensAccess(env)
        self.calls: list[str] = []

    @property
    def params(self):
        self.calls.append("params")
        return self._access.params

    def _read(self, name):
        self.calls.append(name)
        self._env.guarded = False  # the access object itself may read the env
        try:
            return getattr(self._access, name)()
        finally:
            self._env.guarded = True

    def active(self):
        return self._read("active")

    def true_utilities(self):
        return self._read("true_utilities")

    def boredom_cost(self):
        return self._read("boredom_cost")

    def hidden_state(self):
        return self._read("hidden_state")

    def invalidate(self):
        self._access.invalidate()


@pytest.mark.parametrize("slate_size", [1, 3])
def test_the_planner_reads_hidden_state_only_through_the_access_object(slate_size):
    env = GuardedVectorEnv(8, dataset="synthetic", users="test", slate_size=slate_size)
    access = RecordingAccess(env)
    policy = PlannerPolicy(access, FAST, None if slate_size == 1 else slate_size)
    policy.reset(8, seed=0)
    obs, info = env.reset(seed=0)
    for _ in range(6):
        env.guarded = True
        # observations and infos carry nothing the planner uses
        actions = policy.act_batch(np.full_like(obs, np.nan), {})
        env.guarded = False
        obs, _, _, _, info = env.step(actions)
        access.invalidate()
    reads = set(access.calls)
    assert reads <= {"params", "active", "true_utilities", "boredom_cost", "hidden_state"}
    assert {"active", "true_utilities", "hidden_state"} <= reads
    assert access.calls.count("hidden_state") == 6  # the rollouts start from the state it is given
    assert not hasattr(access, "env")


def test_the_planner_does_not_see_the_envs_noise():
    # Env i of two vector envs holds the same user in the same state, with different key chains
    # (seeds): the planner's own seed alone decides its rollouts, so it serves env i the same.
    served = []
    for first_seed in (3, 40_000):
        env = MovieLensVectorEnv(8, dataset="synthetic", users="test")
        access = MovieLensAccess(env)
        users = np.asarray(env.params.world.user_pool[:8])
        obs, info = env.reset(seed=first_seed, options={"user_id": users})
        policy = PlannerPolicy(access, replace(FAST, confidence=0.0, samples=2))
        for policy_seed in range(3):
            policy.reset(8, seed=policy_seed)
            served.append(policy.act_batch(obs, info))
    np.testing.assert_array_equal(served[:3], served[3:])


# ------------------------------------------------------------------ planning with the core itself
def test_the_local_world_is_the_world_restricted_to_the_shortlist():
    """The core on the planner's local world gives the full world's utilities, rewards and states."""
    params = as_jax(make_params(build_world("synthetic")))
    core = MovieLensCore(params)
    step = jax.jit(core.step)
    rng = np.random.default_rng(0)
    _, state = core.reset(jax.random.key(3), params)
    items = jnp.asarray(rng.choice(params.n_items, 40, replace=False), jnp.int32)
    for t in range(6):  # a few consumptions first, so the seen set, habit and satiation are not empty
        _, state, *_ = step(jax.random.key(100 + t), state, items[t], params)
    local = params.replace(world=_local_world(params.world, state.user, items))
    local_state = _local_state(state, items)
    np.testing.assert_array_equal(true_utilities(jnp, local_state, local), true_utilities(jnp, state, params)[items])
    np.testing.assert_array_equal(boredom_cost(jnp, local_state, local), boredom_cost(jnp, state, params)[items])
    full, mine = state, local_state
    for t in range(25):
        position = int(rng.integers(len(items)))
        key = jax.random.key(7 + t)
        _, full, full_reward, full_end, _, _ = step(key, full, items[position], params)
        _, mine, my_reward, my_end, _, _ = step(key, mine, jnp.int32(position), local)
        assert float(my_reward) == pytest.approx(float(full_reward), abs=1e-6)
        assert bool(my_end) == bool(full_end)
        for field in ("satiation", "habit", "budget", "time"):
            np.testing.assert_allclose(getattr(mine, field), getattr(full, field), atol=1e-6)


# ------------------------------------------------------------------ determinism and tracing
def test_same_seed_same_actions(dynamic_env):
    noisy = replace(FAST, confidence=0.0, samples=2)  # every sample matters: seeds change choices
    factory = lambda ctx: PlannerPolicy(ctx.access, noisy)  # noqa: E731
    first, first_actions, _ = run_logged(dynamic_env, factory, 8, seed=0)
    again, again_actions, _ = run_logged(dynamic_env, factory, 8, seed=0)
    np.testing.assert_array_equal(first_actions, again_actions)
    assert first.episodes.equals(again.episodes)
    other, other_actions, _ = run_logged(dynamic_env, factory, 8, seed=1)
    assert len(other_actions) != len(first_actions) or not np.array_equal(other_actions, first_actions)


def test_one_trace_across_many_steps_and_waves(dynamic_env):
    only_here = replace(FAST, horizon=3)  # settings no other test compiles
    result, served, policy = run_logged(dynamic_env, lambda ctx: PlannerPolicy(ctx.access, only_here), 16)
    assert policy.trace_count == 1 and len(served) == result.episodes["length"].sum() > 100
    _, _, second = run_logged(dynamic_env, lambda ctx: PlannerPolicy(ctx.access, only_here), 8)
    assert second.trace_count == 0  # same settings and shapes: the compilation is shared


def test_inactive_envs_are_not_planned():
    env = MovieLensVectorEnv(8, dataset="synthetic", users="test")
    access = MovieLensAccess(env)
    obs, info = env.reset(seed=0)
    policy = PlannerPolicy(access, FAST)
    policy.reset(8, seed=0)
    planned = policy.act_batch(obs, info)
    access.set_active(np.arange(8) % 2 == 0)
    policy.reset(8, seed=0)
    partly = policy.act_batch(obs, info)
    np.testing.assert_array_equal(partly[::2], planned[::2])  # an env's plan ignores the other envs
    np.testing.assert_array_equal(partly[1::2], 0)
    assert policy.trace_count <= 1


def test_access_reports_every_env_active_outside_the_harness():
    env = MovieLensVectorEnv(3, dataset="synthetic")
    access = MovieLensAccess(env)
    np.testing.assert_array_equal(access.active(), [True, True, True])
    mask = np.array([True, False, True])
    access.set_active(mask)
    mask[0] = False  # the access keeps its own copy
    np.testing.assert_array_equal(access.active(), [True, False, True])


# ------------------------------------------------------------------ bad settings
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"horizon": 0}, r"PlannerConfig.horizon must be an integer >= 1 or None \(to the end of the episode\), got 0"),
        ({"horizon": 2.0}, r"PlannerConfig.horizon must be an integer >= 1 or None \(to the end of the episode\), got 2.0"),
        ({"candidates": 0}, r"PlannerConfig.candidates must be an integer >= 1, got 0"),
        ({"base_candidates": 0}, r"PlannerConfig.base_candidates must be an integer >= 1, got 0"),
        ({"samples": True}, r"PlannerConfig.samples must be an integer >= 1, got True"),
        ({"shortlist": 4}, r"PlannerConfig.shortlist must be >= candidates \+ base_candidates = 6, got 4"),
        ({"base_policy": "random"}, r"PlannerConfig.base_policy must be one of .*, got 'random'"),
        ({"boredom_weight": -1.0}, r"PlannerConfig.boredom_weight must be >= 0 and finite, got -1.0"),
        ({"confidence": float("nan")}, r"PlannerConfig.confidence must be >= 0 and finite, got nan"),
        ({"samples": 1}, r"PlannerConfig.samples must be >= 2 when confidence > 0 .*got 1"),
    ],
)
def test_bad_config_values_name_the_field_and_value(change, message):
    with pytest.raises(ValueError, match=message):
        PlannerConfig(**{"candidates": 4, "base_candidates": 2, "shortlist": 32} | change)


def test_envs_and_configs_the_planner_cannot_serve():
    slates = MovieLensAccess(MovieLensVectorEnv(2, dataset="synthetic", slate_size=5))
    with pytest.raises(ValueError, match="slate_size=None does not match the env's slate_size=5"):
        PlannerPolicy(slates)
    with pytest.raises(ValueError, match=r"PlannerConfig.shortlist must be >= 10, the candidates of slates of 5"):
        PlannerPolicy(slates, replace(FAST, shortlist=8), slate_size=5)
    candidates = MovieLensAccess(MovieLensVectorEnv(2, dataset="synthetic", n_candidates=10))
    with pytest.raises(ValueError, match=r"candidate mode \(n_candidates=10\) is not supported"):
        PlannerPolicy(candidates)
    clicks = MovieLensAccess(MovieLensVectorEnv(2, dataset="synthetic", reward_type="click"))
    with pytest.raises(ValueError, match="reward_type='click' is not supported"):
        PlannerPolicy(clicks)
    access = MovieLensAccess(MovieLensVectorEnv(2, dataset="synthetic"))
    too_long = PlannerConfig(shortlist=access.params.n_items + 1)
    with pytest.raises(ValueError, match=rf"shortlist must be <= the catalogue size n_items={access.params.n_items}"):
        PlannerPolicy(access, too_long)
    policy = PlannerPolicy(access, FAST)
    policy.reset(3)
    with pytest.raises(ValueError, match="the access answers for 2 envs, the policy acts for num_envs=3"):
        policy.act_batch(np.zeros((3, 1)), {})


# ------------------------------------------------------------------ a ceiling
def test_the_planner_beats_the_myopic_oracle_where_the_future_matters(dynamic_env):
    greedy = evaluate(BASELINES["oracle-greedy"], dynamic_env, 24, seed=0).episodes["return"]
    planner = evaluate(BASELINES["planner"], dynamic_env, 24, seed=0).episodes["return"]
    ratio, low, _ = paired_ratio_ci(planner.to_numpy(), greedy.to_numpy())
    assert low > 1.1, f"planner / oracle-greedy = {ratio:.3f}, lower 95% bound {low:.3f}"


def test_the_planner_ties_with_the_oracle_in_the_static_world():
    static = make_eval_env("RecGym-MovieLensStatic-v0", num_envs=8, dataset="synthetic")
    greedy = evaluate(BASELINES["oracle-greedy"], static, 8, seed=0).episodes["return"].to_numpy()
    planner = evaluate(BASELINES["planner"], static, 8, seed=0).episodes["return"].to_numpy()
    ratio, low, high = paired_ratio_ci(planner, greedy)
    assert low <= 1.0 <= high and abs(ratio - 1.0) < 0.02


# ------------------------------------------------------------------ rollouts to the end of the episode
def _python_rollout(params, state, slate, key, steps, slots, boredom_weight):
    """The return of serving ``slate`` then the boredom-aware base policy, one core step at a time."""
    core = MovieLensCore(params)
    total, action = 0.0, slate
    for t in range(steps):
        noise = core.step_noise(jax.random.fold_in(key, t), params)
        state, reward, terminated, _ = core.transition(jnp, state, action, noise, params)
        total += float(reward)
        if bool(terminated) or bool(core.is_truncated(jnp, state, params)):
            break
        scores = np.asarray(true_utilities(jnp, state, params) - boredom_weight * boredom_cost(jnp, state, params))
        order = np.argsort(-scores, kind="stable")  # best first, the lower id of equals first
        action = jnp.int32(order[0]) if slots == 1 else jnp.asarray(order[:slots], jnp.int32)
    return total, t + 1


@pytest.mark.parametrize("slots", [1, 3])
def test_a_rollout_to_the_end_is_the_core_stepped_until_the_user_leaves(slots):
    params = as_jax(make_params(build_world("synthetic"), slate_size=slots, max_episode_steps=60))
    rollouts = _Rollouts(replace(FAST, horizon=None), slots, 3, 3)
    simulate = jax.jit(lambda state, slate, key: rollouts.simulated_return(params, state, slate, key))
    _, state = MovieLensCore(params).reset(jax.random.key(5), params)
    slate = jnp.arange(2, 2 + slots, dtype=jnp.int32)
    lengths = set()
    for sample in range(4):
        key = jax.random.key(sample)
        expected, length = _python_rollout(params, state, slate if slots > 1 else slate[0], key,
                                           params.max_episode_steps, slots, FAST.boredom_weight)
        lengths.add(length)
        assert float(simulate(state, slate, key)) == pytest.approx(expected, rel=1e-5)
    assert max(lengths) > 4  # the rollouts run past the finite horizon


@pytest.mark.parametrize("horizon", [None, 7])
def test_early_exit_does_not_change_the_simulated_returns(horizon):
    params = as_jax(make_params(build_world("synthetic"), slate_size=3, max_episode_steps=80))
    config = replace(FAST, horizon=horizon)
    _, start = MovieLensCore(params).reset(jax.random.key(2), params)
    keys = jax.random.split(jax.random.key(9), 16)
    slate = jnp.arange(3, dtype=jnp.int32)

    def returns(early_exit):
        rollouts = _Rollouts(config, 3, 3, 3, early_exit=early_exit)
        return jax.jit(jax.vmap(lambda key: rollouts.simulated_return(params, start, slate, key)))(keys)

    exiting, full = returns(True), returns(False)
    np.testing.assert_allclose(exiting, full, rtol=1e-6)
    assert np.unique(np.asarray(full)).size > 1  # the samples differ: the check compares real rollouts


def test_the_default_planner_plans_to_the_end_of_the_episode():
    assert PlannerConfig().horizon is None
    with pytest.raises(ValueError, match=r"PlannerConfig.horizon must be an integer >= 1 or None"):
        PlannerConfig(horizon=-3)
