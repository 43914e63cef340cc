"""recgym.spaces.Slate: a MultiDiscrete whose samples never repeat an item, single and batched.

Regression: with a plain ``MultiDiscrete`` action space, ``env.action_space.sample()`` (what
gymnasium's and Stable-Baselines3's ``check_env`` step with) drew a repeated item now and then
(probability about ``k(k-1)/2n`` per slate) and the env's ``step`` rightly rejected it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector.utils import batch_space
from hypothesis import given, settings
from hypothesis import strategies as st

import recgym  # noqa: F401  (registers the ids)
from recgym.spaces import Slate, repeating_rows

SYNTHETIC = {"dataset": "synthetic"}


def _distinct_rows(x: np.ndarray, k: int) -> bool:
    rows = np.asarray(x).reshape(-1, k)
    return all(len(set(r.tolist())) == k for r in rows)


@settings(max_examples=100, deadline=None)
@given(k=st.integers(1, 6), rows=st.lists(st.lists(st.integers(0, 7), min_size=6, max_size=6), max_size=5))
def test_repeating_rows_flags_exactly_the_rows_with_a_repeated_item(k, rows):
    """The shared rule (Slate.contains/sample and the env's action check) against a set per row."""
    x = np.asarray([r[:k] for r in rows], dtype=np.int64).reshape(-1, k)
    assert repeating_rows(x, k).tolist() == [len(set(r.tolist())) < k for r in x]
    assert repeating_rows(x.ravel(), k).shape == (len(rows),)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 8), batch=st.integers(0, 4), seed=st.integers(0, 2**31 - 1))
def test_samples_are_distinct_in_range_and_contained(n, k, batch, seed):
    if k > n:
        with pytest.raises(ValueError, match="needs n >="):
            Slate(n, k)
        return
    space = Slate(n, k, seed=seed)
    if batch:
        space = batch_space(space, batch)
        assert isinstance(space, Slate) and space.shape == (batch, k)
    for _ in range(5):
        x = space.sample()
        assert x.shape == space.shape and x.dtype == space.dtype
        assert x.min() >= 0 and x.max() < n
        assert _distinct_rows(x, k)
        assert space.contains(x)


@pytest.mark.parametrize(("n", "k", "cells", "quantile"), [
    (4, 2, 12, 31.26),  # few repeats: all rows drawn at once, the repeating ones redrawn
    (3, 3, 6, 20.52),   # repeats likely: each row drawn without replacement
])
def test_slates_are_uniform_over_ordered_slates_on_both_paths(n, k, cells, quantile):
    space = batch_space(Slate(n, k, seed=0), 6)
    counts: dict[tuple[int, ...], int] = {}
    for _ in range(1000):
        for row in space.sample().tolist():
            counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert len(counts) == cells and all(len(set(key)) == k for key in counts)  # n!/(n-k)! ordered slates
    expected = 6000 / cells
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < quantile  # the chi-square(cells - 1) 0.999 quantile


def test_contains_rejects_repeats_out_of_range_and_wrong_shape():
    space = Slate(10, 3)
    assert space.contains(np.array([0, 9, 4]))
    assert not space.contains(np.array([1, 1, 2]))
    assert not space.contains(np.array([0, 10, 2]))
    assert not space.contains(np.array([0, 1]))
    batched = batch_space(space, 2)
    assert batched.contains(np.array([[0, 1, 2], [2, 1, 0]]))
    assert not batched.contains(np.array([[0, 1, 2], [3, 3, 0]]))


def test_same_seed_same_samples_and_batched_rows_differ():
    a, b = Slate(1000, 5, seed=7), Slate(1000, 5, seed=7)
    np.testing.assert_array_equal(np.stack([a.sample() for _ in range(4)]), np.stack([b.sample() for _ in range(4)]))
    rows = batch_space(Slate(1000, 5, seed=7), 8).sample()
    assert len({tuple(r) for r in rows.tolist()}) == 8


def test_masked_sampling_fills_positions_in_order_without_repeats():
    space = Slate(6, 3, seed=0)
    mask = tuple(np.array([1, 1, 1, 0, 0, 0], dtype=np.int8) for _ in range(3))
    for _ in range(20):
        x = space.sample(mask=mask)
        assert sorted(x.tolist()) == [0, 1, 2]
    probability = tuple(np.eye(6)[i] + 0.0 for i in (4, 4, 5))  # slot 1 wants item 4, already taken
    with pytest.raises(ValueError, match="slot 1 allows no item"):
        space.sample(probability=probability)
    with pytest.raises(ValueError, match="one mask/probability per slot"):
        space.sample(mask=mask[:2])
    with pytest.raises(ValueError, match="per slate"):
        batch_space(space, 2).sample(mask=mask)


@pytest.mark.parametrize(("n", "k"), [(0, 1), (5, 0), (2.5, 1), (True, 1), (3, 4)])
def test_bad_parameters_are_rejected(n, k):
    with pytest.raises(ValueError):
        Slate(n, k)


def test_is_a_multidiscrete_for_libraries_and_compares_by_value():
    space = Slate(10, 3)
    assert isinstance(space, gym.spaces.MultiDiscrete)
    np.testing.assert_array_equal(space.nvec, [10, 10, 10])
    assert space == Slate(10, 3) and space != Slate(10, 2) and space != gym.spaces.MultiDiscrete([10] * 3)
    assert repr(space) == "Slate(n=10, slate_size=3)"
    assert gym.spaces.flatdim(space) == 30


@pytest.mark.parametrize("extra", [{"slate_size": 3}, {"slate_size": 5, "n_candidates": 6}])
def test_movielens_random_slates_are_always_valid_steps(extra):
    """The regression: ``step(action_space.sample())`` never raises, single env and vector env."""
    env = gym.make("RecGym-MovieLens-v0", **SYNTHETIC, **extra)
    assert isinstance(env.action_space, Slate)
    env.action_space.seed(0)
    env.reset(seed=0)
    for _ in range(300):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    venv = gym.make_vec("RecGym-MovieLens-v0", num_envs=4, vectorization_mode="vector_entry_point", **SYNTHETIC, **extra)
    assert isinstance(venv.action_space, Slate) and venv.action_space.shape == (4, extra["slate_size"])
    venv.action_space.seed(0)
    venv.reset(seed=0)
    for _ in range(100):
        venv.step(venv.action_space.sample())
