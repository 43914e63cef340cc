"""recgym.ope: importance-sampling estimators, target replay, and the check against the simulator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from recgym.logging_policy import collect_episodes, make_logging_env, policy_from_name
from recgym.ope import (
    ESTIMATORS,
    WeightedEpisodes,
    estimate,
    evaluate_offline,
    on_policy_value,
    target_probabilities,
)
from recgym.stochastic_policy import StochasticPolicy

ENV_ID = "RecGym-MovieLens-v0"


def weighted(rewards, ratios, lengths):
    return WeightedEpisodes(np.asarray(rewards, float), np.asarray(ratios, float), np.asarray(lengths))


def test_estimators_on_a_hand_computed_example():
    # episode 0: two steps; episode 1: one step (padding: reward 0, ratio 1)
    data = weighted([[1.0, 2.0], [3.0, 0.0]], [[2.0, 0.5], [0.5, 1.0]], [2, 1])
    w = np.array([1.0, 0.5])  # final weights
    g = np.array([3.0, 3.0])
    assert estimate(data, "ips").value == pytest.approx(np.mean(w * g))
    assert estimate(data, "snips").value == pytest.approx(np.sum(w * g) / np.sum(w))
    # per-decision: episode 0 earns 2*1 + (2*0.5)*2, episode 1 earns 0.5*3
    assert estimate(data, "pdis").value == pytest.approx(((2 + 2) + 1.5) / 2)
    # weighted per-decision: step 0 (2*1 + 0.5*3) / (2 + 0.5); step 1 (1*2 + 0.5*0) / (1 + 0.5)
    assert estimate(data, "wpdis").value == pytest.approx(3.5 / 2.5 + 2 / 1.5)
    assert estimate(data, "ips").effective_sample_size == pytest.approx(1.5**2 / 1.25)
    terms = w * g
    assert estimate(data, "ips").stderr == pytest.approx(terms.std(ddof=1) / math.sqrt(2))
    assert estimate(data, "logged").value == pytest.approx(3.0)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(2, 12), st.integers(1, 6)),
               elements=st.floats(0, 5, allow_nan=False)),
    st.data(),
)
def test_estimator_invariants(rewards, data):
    n, horizon = rewards.shape
    lengths = np.array(data.draw(st.lists(st.integers(1, horizon), min_size=n, max_size=n)))
    rewards = np.where(np.arange(horizon)[None] < lengths[:, None], rewards, 0.0)
    # weights all 1 (target == logging): every estimator is the mean logged return
    ones = weighted(rewards, np.ones_like(rewards), lengths)
    for name in ESTIMATORS:
        assert estimate(ones, name).value == pytest.approx(rewards.sum(axis=1).mean())
    # self-normalised estimators do not change when every weight is scaled by the same factor
    ratios = data.draw(hnp.arrays(np.float64, rewards.shape, elements=st.floats(0.1, 3)))
    ratios = np.where(np.arange(horizon)[None] < lengths[:, None], ratios, 1.0)
    scaled = ratios.copy()
    scaled[:, 0] *= 7.0
    for name in ("snips", "wpdis"):
        a = estimate(weighted(rewards, ratios, lengths), name).value
        b = estimate(weighted(rewards, scaled, lengths), name).value
        assert a == pytest.approx(b, rel=1e-9, abs=1e-9)
    # SNIPS is a weighted mean of the returns
    returns = rewards.sum(axis=1)
    snips = estimate(weighted(rewards, ratios, lengths), "snips").value
    assert returns.min() - 1e-9 <= snips <= returns.max() + 1e-9


def test_bad_inputs():
    data = weighted([[1.0], [2.0]], [[1.0], [1.0]], [1, 1])
    with pytest.raises(ValueError, match="estimator must be one of .* got 'dr'"):
        estimate(data, "dr")
    with pytest.raises(ValueError, match="at least 2 logged episodes, got 1"):
        estimate(weighted([[1.0]], [[1.0]], [1]), "ips")


@pytest.fixture(scope="module")
def env():
    return make_logging_env(ENV_ID, 256, dataset="synthetic")


@pytest.fixture(scope="module")
def logged(env):
    """1,024 episodes of matrix factorisation as a softmax (T = 0.5) with a 10% uniform floor."""
    logger = StochasticPolicy(policy_from_name("matrix-factorization", env), 0.5, 0.1)
    return list(collect_episodes(env, logger, 1024, seed=0))


def test_replaying_the_logging_policy_gives_back_its_propensities(env, logged):
    logger = StochasticPolicy(policy_from_name("matrix-factorization", env), 0.5, 0.1)
    chunk = logged[0]
    valid = np.arange(chunk.rewards.shape[1])[None] < chunk.lengths[:, None]
    replayed = target_probabilities(logger, chunk)
    np.testing.assert_allclose(replayed[valid], chunk.propensities[valid], rtol=1e-10)


@pytest.mark.parametrize("env_kwargs", [{"slate_size": 3}, {"n_candidates": 8}])
def test_replay_matches_logged_propensities_for_slates_and_candidates(env_kwargs):
    small = make_logging_env(ENV_ID, 16, dataset="synthetic", **env_kwargs)
    logger = StochasticPolicy(policy_from_name("item-knn", small), 0.3, 0.2)
    chunk = next(collect_episodes(small, logger, 16, seed=3))
    valid = np.arange(chunk.rewards.shape[1])[None] < chunk.lengths[:, None]
    target = StochasticPolicy(policy_from_name("item-knn", small), 0.3, 0.2)
    np.testing.assert_allclose(target_probabilities(target, chunk)[valid], chunk.propensities[valid], rtol=1e-10)


def test_a_deterministic_target_gets_probability_one_for_its_own_actions(env, logged):
    greedy = policy_from_name("matrix-factorization", env)
    chunk = logged[0]
    p = target_probabilities(greedy, chunk)
    assert set(np.unique(p).tolist()) <= {0.0, 1.0}
    # at the first step the user is cold: the greedy target's action is the best-scored item
    scorer = policy_from_name("matrix-factorization", env)
    scorer.reset(num_envs=1)
    best = int(np.argmax(scorer.scores(chunk.observations[:1, 0], {})[0]))
    np.testing.assert_array_equal(p[:, 0] == 1.0, chunk.actions[:, 0] == best)
    assert 0 < np.sum(p[:, 0]) < len(chunk)


def test_privileged_targets_are_refused(env, logged):
    with pytest.raises(ValueError, match="hidden state"):
        target_probabilities(policy_from_name("oracle-greedy", env), logged[0])


def test_off_policy_estimates_agree_with_the_simulator(env, logged):
    """IPS / SNIPS / PDIS / WPDIS of a flatter softmax vs its true value, run in the simulator.

    Tolerance: 4 combined standard errors, sqrt(se_estimate^2 + se_true^2) — the two are
    independent (different seeds) and both approximately normal, so a correct estimator fails
    with probability ~6e-5 per comparison; the run is seeded, so the outcome is fixed anyway.
    The same tolerance rejects the unweighted logged return, so the check has the power to see
    an estimator that does not reweight.
    """
    target = StochasticPolicy(policy_from_name("matrix-factorization", env), 1.0, 0.1)
    truth = on_policy_value(env, target, 1024, seed=10**6)
    estimates = evaluate_offline(logged, target, ESTIMATORS + ("logged",))
    for name in ESTIMATORS:
        got = estimates[name]
        tolerance = 4 * math.hypot(got.stderr, truth.stderr)
        assert abs(got.value - truth.value) <= tolerance, (name, got, truth)
        assert got.effective_sample_size > 100
    naive = estimates["logged"]
    assert abs(naive.value - truth.value) > 4 * math.hypot(naive.stderr, truth.stderr)


def test_on_policy_value_is_seeded(env):
    policy = StochasticPolicy(policy_from_name("most-popular", env), 1.0, 0.2)
    a = on_policy_value(env, policy, 64, seed=5)
    b = on_policy_value(env, policy, 64, seed=5)
    assert a == b and a.n_episodes == 64


def test_command_line_table_from_a_logged_minari_dataset(tmp_path, monkeypatch, capsys):
    pytest.importorskip("minari")
    pytest.importorskip("h5py")
    from recgym import ope
    from recgym.logging_policy import main as log_main

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    log_main(["--dataset", "synthetic", "--policy", "most-popular", "--temperature", "1.0",
              "--epsilon", "0.2", "--episodes", "32", "--num-envs", "16", "--out", "recgym/cli-v0",
              "--no-progress"])
    assert ope.main(["--dataset-id", "recgym/cli-v0", "--target", "most-popular:1.0:0.2",
                     "--true-episodes", "32", "--num-envs", "16"]) == 0
    out = capsys.readouterr().out
    assert "| most-popular T=1 ε=0.2 |" in out and "32 episodes of most-popular" in out
    with pytest.raises(ValueError, match="POLICY:TEMPERATURE:EPSILON"):
        ope.main(["--dataset-id", "recgym/cli-v0", "--target", "most-popular"])
