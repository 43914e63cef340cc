"""Baseline tuners: each follows its rule, and every one drives the env in both action modes."""

from __future__ import annotations

import numpy as np
import pytest

from recgym.envs.pipeline import dynamics
from recgym.envs.pipeline.baselines import (
    BASELINES,
    AllCores,
    Autotune,
    PlumberLP,
    RandomSearch,
    RayAutoscaler,
    StaticEvenSplit,
    Target,
    make_baseline,
    target_to_action,
)
from recgym.envs.pipeline.env import PipelineEnv
from recgym.envs.pipeline.params import make_params
from recgym.envs.pipeline.wrappers import PipelineOptimum


def _obs(cores=(1,) * 6, rates=(10.0,) * 6, util=(1.0,) * 6, batch=256, prefetch=1, throughput=5.0,
         idle=0.5, memory=20.0, cap=32.0, available=16.0, budget=16.0):
    obs = np.zeros(dynamics.OBS_DIM, np.float32)
    obs[dynamics.OBS_CORES] = cores
    obs[dynamics.OBS_RATES] = rates
    obs[dynamics.OBS_UTILISATION] = util
    obs[dynamics.OBS_BATCH], obs[dynamics.OBS_PREFETCH], obs[dynamics.OBS_THROUGHPUT] = batch, prefetch, throughput
    obs[dynamics.OBS_IDLE], obs[dynamics.OBS_MEMORY], obs[dynamics.OBS_MEMORY_CAP] = idle, memory, cap
    obs[dynamics.OBS_AVAILABLE], obs[dynamics.OBS_BUDGET] = available, budget
    return obs


INFO = {"element_gib": np.full(6, 1e-6, np.float32), "shuffle_buffer": np.float32(1000.0)}


def test_target_to_action_increment_frees_before_spending():
    params = make_params(action_mode="increment")
    obs = _obs(cores=(3, 1, 1, 1, 1, 1))
    target = Target((1, 1, 4, 1, 1, 1), 8, 1)
    assert target_to_action(params, obs, target) == 1  # read -1 first
    obs = _obs(cores=(1, 1, 1, 1, 1, 1))
    assert target_to_action(params, obs, target) == 4  # then transform +1
    assert target_to_action(params, obs, Target((1,) * 6, 9, 1)) == 12  # batch x2
    assert target_to_action(params, obs, Target((1,) * 6, 8, 0)) == 15  # prefetch -1
    assert target_to_action(params, obs, Target((1,) * 6, 8, 1)) == dynamics.NOOP_ACTION


def test_target_to_action_absolute_is_the_configuration():
    params = make_params(action_mode="absolute")
    action = target_to_action(params, _obs(), Target((2, 3, 4, 1, 1, 40), 10, 3))
    np.testing.assert_array_equal(action, [1, 2, 3, 0, 0, 31, 4, 3])  # 40 workers clipped to 32


def test_static_even_split_and_all_cores_are_decided_once():
    params = make_params(action_mode="absolute")
    even, every = StaticEvenSplit(params), AllCores(params)
    assert even.target(_obs(available=16), INFO).cores == (3, 3, 3, 3, 2, 2)
    assert even.target(_obs(available=4), INFO).cores == (3, 3, 3, 3, 2, 2)  # never revisited
    assert every.target(_obs(available=16), INFO).cores == (16,) * 6
    even.reset()
    assert even.target(_obs(available=7), INFO).cores == (2, 1, 1, 1, 1, 1)


def test_plumber_lp_balances_linear_rates_then_freezes():
    params = make_params(action_mode="absolute")
    tuner = PlumberLP(params, profile_steps=2)
    # Per-worker rates 10, 20, 5, 40, 40, 40 k/s: the LP equalises rate x cores over 16 cores.
    obs = _obs(rates=(10, 20, 5, 40, 40, 40))
    assert tuner.target(obs, INFO).cores == (1,) * 6  # still profiling
    cores = tuner.target(obs, INFO).cores
    assert sum(cores) == 16
    assert cores[2] == max(cores) and cores[2] >= 6 and cores[0] >= 2 * cores[3] - 1
    assert tuner.target(_obs(rates=(40, 40, 40, 40, 40, 1)), INFO).cores == cores  # one-shot


def test_autotune_climbs_until_the_cpu_target_and_never_tunes_batch():
    params = make_params(action_mode="absolute")
    target = Autotune(params).target(_obs(rates=(10, 20, 5, 40, 40, 40), throughput=5.0, idle=0.9), INFO)
    assert target.batch_log2 == 8
    # The slowest stage (5k/s per worker) needs 8 workers to reach the CPU target (40k/s); zero-gain
    # ties go to the first knob in pipeline order (read), as in tf.data's hill climb.
    assert target.cores[2] == 8 and target.cores[1] == 2
    assert target.cores[0] >= 4


def test_autotune_ram_rule_counts_only_buffers():
    params = make_params(action_mode="absolute")
    huge_elements = {"element_gib": np.full(6, 0.01, np.float32), "shuffle_buffer": np.float32(0.0)}
    # Buffers of 256 x 0.01 GiB per batch: the half-memory budget (16 GiB) stops the climb early.
    small = Autotune(params).target(_obs(rates=(10,) * 6, idle=0.9), huge_elements)
    big = Autotune(params).target(_obs(rates=(10,) * 6, idle=0.9), INFO)
    assert sum(small.cores) + small.prefetch < sum(big.cores) + big.prefetch
    # The trainer's own memory is invisible to it: a nearly full machine changes nothing.
    assert Autotune(params).target(_obs(rates=(10,) * 6, idle=0.9, memory=31.9), INFO) == big


def test_ray_autoscaler_thresholds():
    params = make_params(action_mode="absolute")
    tuner = RayAutoscaler(params)
    obs = _obs(cores=(2, 2, 2, 2, 2, 2), util=(0.3, 0.8, 1.6, 0.4, 0.9, 0.9), available=12)
    # read and shuffle below 0.5 lose a worker; transform above 1 gains one (2 cores freed).
    assert tuner.target(obs, INFO).cores == (1, 2, 3, 1, 2, 2)
    with pytest.raises(ValueError, match="downscale"):
        RayAutoscaler(params, upscale=0.4, downscale=0.5)


def test_random_search_is_seeded_and_commits_to_its_best():
    params = make_params(action_mode="absolute")
    a, b = RandomSearch(params, budget=3), RandomSearch(params, budget=3)
    a.reset(seed=1)
    b.reset(seed=1)
    tried = []
    for x in (1.0, 9.0, 2.0):
        ta, tb = a.target(_obs(throughput=x), INFO), b.target(_obs(throughput=x), INFO)
        assert ta == tb and sum(ta.cores) == 16
        tried.append(ta)
    final = a.target(_obs(throughput=2.0), INFO)
    assert final == tried[0]  # the observation after the first configuration measured 9.0


@pytest.mark.parametrize("action_mode", ["increment", "absolute"])
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_drives_the_env(name, action_mode):
    env = PipelineOptimum(PipelineEnv(scenario="random", action_mode=action_mode))  # the oracle reads the optimum
    policy = make_baseline(name, env.unwrapped.params)
    obs, info = env.reset(seed=11)
    policy.reset(seed=11)
    for _ in range(25):
        action = policy.act(obs, info)
        assert env.action_space.contains(np.asarray(action, dtype=env.action_space.dtype))
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break


def test_unknown_baseline():
    with pytest.raises(ValueError, match="unknown baseline 'inTune'"):
        make_baseline("inTune", make_params())


def test_act_batch_on_a_vector_env_matches_single_envs():
    import gymnasium as gym

    venv = gym.make_vec("RecGym-Pipeline-v0", num_envs=3, vectorization_mode="vector_entry_point",
                        action_mode="absolute", scenario="drift")
    batched = PlumberLP(make_params("drift", "absolute"))
    batched.reset(num_envs=3, seed=0)
    singles = [PipelineEnv(scenario="drift", action_mode="absolute") for _ in range(3)]
    tuners = [PlumberLP(env.params) for env in singles]
    obs, infos = venv.reset(seed=20)
    single = [env.reset(seed=20 + i) for i, env in enumerate(singles)]
    for _ in range(6):
        actions = batched.act_batch(obs, infos)
        assert actions.shape == (3, 8)
        for i, (env, tuner) in enumerate(zip(singles, tuners)):
            np.testing.assert_array_equal(actions[i], tuner.act(*single[i]))
            single[i] = env.step(actions[i])[0::4]
        obs, _, _, _, infos = venv.step(actions)
    with pytest.raises(RuntimeError, match="num_envs=3"):
        batched.act(obs[0], {})
    batched.begin_episode(np.array([True, False, False]))
    assert batched._memory[0]["fixed"] is None and batched._memory[1]["fixed"] is not None


def test_a_tuner_sets_its_attributes_after_the_base_constructor():
    """The base constructor calls no overridable method, so a subclass's ``_fresh`` may read what
    its own ``__init__`` sets after ``super().__init__`` (the natural order)."""
    from recgym.envs.pipeline.baselines import PipelineTuner

    class Countdown(PipelineTuner):
        name = "countdown"

        def __init__(self, params, horizon):
            super().__init__(params)
            self.horizon = horizon

        def _fresh(self):
            return {"left": self.horizon}

        def target(self, observation, info, memory=None):
            memory = self._memories()[0] if memory is None else memory
            memory["left"] -= 1
            return Target((1,) * 6, self.params.initial_batch_log2, max(memory["left"], 0))

    params = make_params(action_mode="absolute")
    tuner = Countdown(params, horizon=5)
    assert tuner.act(_obs(), INFO)[-1] == 4 and tuner.act(_obs(), INFO)[-1] == 3
    tuner.reset()  # a new episode starts from the horizon again
    assert tuner.act(_obs(), INFO)[-1] == 4
    tuner.reset(num_envs=2)
    assert tuner.act_batch(np.stack([_obs(), _obs()]), {})[:, -1].tolist() == [4, 4]


def test_oracle_without_the_optimum_wrapper_says_what_to_do():
    env = PipelineEnv(action_mode="absolute")
    obs, info = env.reset(seed=0)
    oracle = make_baseline("oracle", env.params)
    with pytest.raises(KeyError, match=r"track_optimum=True.*PipelineOptimum"):
        oracle.act(obs, info)
