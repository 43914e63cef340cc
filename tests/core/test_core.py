"""The functional-environment base, exercised through a toy environment."""

from __future__ import annotations

import numpy as np
import pytest

from recgym.core.testing import (
    assert_backends_agree,
    check_functional_contract,
    check_gym_contract,
    check_vector_contract,
)
from tests.core.toy import NoisyWalk, WalkParams


@pytest.mark.filterwarnings("ignore:.*A Box observation space (minimum|maximum) value is:UserWarning")
def test_gym_contract():
    """(The toy walk's position has Gaussian steps, so its Box is unbounded on purpose; gymnasium's
    checker warns about infinite bounds, which is expected here.)"""
    check_gym_contract("RecGymTest-NoisyWalk-v0", n_steps=60)


def test_vector_contract():
    check_vector_contract("RecGymTest-NoisyWalk-v0", num_envs=3, n_steps=60)


def test_functional_contract():
    check_functional_contract(NoisyWalk(), WalkParams(), n_steps=25)


def test_backends_agree():
    rng = np.random.default_rng(0)
    n = assert_backends_agree(NoisyWalk(), WalkParams(noise_std=0.1, bound=50.0), seed=5,
                              actions=list(rng.integers(0, 3, 20)))
    assert n == 20


def test_backends_agree_past_the_noise_drawn_up_front():
    """An episode longer than the core's prefetched_steps draws the rest of its noise on demand."""
    n_steps = NoisyWalk().prefetched_steps(WalkParams()) + 20
    rng = np.random.default_rng(1)
    params = WalkParams(noise_std=0.1, bound=1e6, max_episode_steps=n_steps)
    n = assert_backends_agree(NoisyWalk(), params, seed=3, actions=list(rng.integers(0, 3, n_steps)))
    assert n == n_steps


def test_invalid_params_name_field_and_value():
    with pytest.raises(ValueError, match=r"noise_std must be >= 0, got -1\.0"):
        WalkParams(noise_std=-1.0)


def test_one_seed_one_trajectory_on_every_path():
    """gym.make, make_vec and a lax.scan of start/step_autoreset replay the same episodes."""
    from recgym.core.testing import check_key_chain

    assert check_key_chain("RecGymTest-NoisyWalk-v0", seed=7, n_steps=80) >= 2


def test_step_autoreset_bootstraps_from_final_obs_and_continues_the_chain():
    import jax
    import jax.numpy as jnp

    from recgym.core import EnvCarry, seed_key

    core, params = NoisyWalk(), WalkParams(bound=1e6, max_episode_steps=3)
    obs, carry = core.start(seed_key(0), params)
    assert isinstance(carry, EnvCarry) and not bool(carry.needs_reset)
    for _ in range(2):
        obs, carry, _, _, truncated, info = core.step_autoreset(carry, jnp.asarray(1), params)
        assert not bool(truncated)
        np.testing.assert_array_equal(np.asarray(obs), np.asarray(info["final_obs"]))
    first_key = carry.key
    obs, carry, _, _, truncated, info = core.step_autoreset(carry, jnp.asarray(1), params)
    assert bool(truncated) and int(carry.state.time) == 0
    assert float(info["final_obs"][1]) == 1.0 and float(obs[1]) == 0.0  # pre-reset vs fresh obs
    # the next episode starts from the chain key the carry held
    expected = core.start(first_key, params)[0]
    np.testing.assert_array_equal(np.asarray(obs), np.asarray(expected))
    assert jax.tree_util.tree_structure(carry) == jax.tree_util.tree_structure(core.start(first_key, params)[1])
