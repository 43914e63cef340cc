"""recgym.wrappers: slates that general-purpose RL libraries sample become valid actions."""

from __future__ import annotations

import doctest

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import recgym.wrappers
from recgym.wrappers import DistinctSlate, distinct_slate


@given(st.integers(1, 6).flatmap(lambda k: st.tuples(
    st.just(k), st.integers(k, 9).flatmap(lambda n: st.tuples(
        st.just(n), st.lists(st.integers(0, n - 1), min_size=k, max_size=k))))))
def test_distinct_slate_keeps_first_occurrences_and_fills_with_unused_items(case):
    k, (n, slate) = case
    out = distinct_slate(np.array(slate), n)
    assert len(set(out.tolist())) == k and out.min() >= 0 and out.max() < n
    seen = set()
    for position, item in enumerate(slate):
        if item not in seen:
            assert out[position] == item  # first occurrences stay where they were
        seen.add(item)
    if len(set(slate)) == k:
        assert out.tolist() == slate


def test_wrapped_env_accepts_duplicates_and_serves_distinct_items():
    env = DistinctSlate(gym.make("RecGym-MovieLens-v0", dataset="synthetic", slate_size=3))
    env.reset(seed=0)
    for _ in range(5):
        _, _, terminated, truncated, info = env.step(np.array([2, 2, 2]))
        assert sorted(info["slate"].tolist()) == [0, 1, 2]
        if terminated or truncated:
            break


def test_docstring_example_runs():
    result = doctest.testmod(recgym.wrappers)
    assert result.attempted > 0 and result.failed == 0


def test_bad_inputs():
    with pytest.raises(TypeError, match="DistinctSlate wraps slate envs"):
        DistinctSlate(gym.make("RecGym-MovieLens-v0", dataset="synthetic"))
    with pytest.raises(ValueError, match="needs n_choices >= 3, got 2"):
        distinct_slate(np.array([0, 0, 1]), 2)
