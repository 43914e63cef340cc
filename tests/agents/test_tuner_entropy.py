"""The tuner's entropy-bonus schedule (``TunerConfig.anneal_entropy``): constant by default, linear
to 0 over the run when annealed, logged, and the loss it weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.config import parse_config
from agents.parallel import DeviceAxis
from agents.tuner import TunerConfig, make_train
from tests.agents.conftest import tiny_tuner_config as tiny_config


def leaves(tree):
    return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
            for x in jax.tree_util.tree_leaves(tree)]


def test_the_weight_is_constant_by_default_and_linear_to_zero_when_annealed():
    config = tiny_config(entropy_coef=0.02)  # 6 updates
    assert make_train(config).entropy_weight(jnp.int32(3)) == 0.02
    annealed = make_train(tiny_config(entropy_coef=0.02, anneal_entropy=True))
    weights = [float(annealed.entropy_weight(jnp.int32(u))) for u in range(7)]
    np.testing.assert_allclose(weights, [0.02 * (1 - u / 6) for u in range(7)], rtol=1e-6, atol=1e-9)


def test_the_annealed_run_logs_its_weight_and_departs_after_the_first_update():
    # Every update is one call of the same compiled one-update block, so each config compiles once.
    def updates(train):
        state, states, metrics = train.init(jax.random.key(0)), [], []
        for _ in range(train.config.num_updates):
            state, block = train.run(state, 1)
            states.append(state)
            metrics.append(block)
        return states, {name: np.concatenate([np.asarray(m[name]) for m in metrics]) for name in metrics[0]}

    plain_states, plain_metrics = updates(make_train(tiny_config(action_mode="absolute")))
    annealed_states, metrics = updates(make_train(tiny_config(action_mode="absolute", anneal_entropy=True)))
    assert len(annealed_states) == 6
    assert "charts/entropy_coef" not in plain_metrics  # the default's learning-curve columns stay
    np.testing.assert_allclose(metrics["charts/entropy_coef"], [0.005 * (1 - u / 6) for u in range(6)], rtol=1e-6)
    # At update 0 the two weights are equal, so the first update is the same; later ones differ.
    for a, b in zip(leaves(plain_states[0].learner.params), leaves(annealed_states[0].learner.params)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(plain_states[-1].learner.params),
                                                          leaves(annealed_states[-1].learner.params)))
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves(annealed_states[-1].learner.params))


def test_the_loss_subtracts_the_given_weight_times_the_entropy():
    train = make_train(tiny_config(action_mode="absolute"))
    state = train.init(jax.random.key(2))
    _, batch = train._rollout(DeviceAxis(), train.env_params, state.learner.params,
                              state.pipelines, jax.random.key(3))
    flat = jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:]), batch)
    advantages = jnp.linspace(-1.0, 1.0, flat.reward.shape[0])
    targets = jnp.zeros_like(advantages)
    total0, aux0 = train._loss(state.learner.params, flat, advantages, targets, 0.0)
    total1, aux1 = train._loss(state.learner.params, flat, advantages, targets, 0.1)
    default, _ = train._loss(state.learner.params, flat, advantages, targets)
    np.testing.assert_allclose(float(total0 - total1), 0.1 * float(aux0["losses/entropy"]), rtol=1e-5)
    np.testing.assert_allclose(float(default), float(total0) - 0.005 * float(aux0["losses/entropy"]), rtol=1e-5)


def test_the_flag_parses_and_must_be_a_bool():
    assert parse_config(TunerConfig, ["--anneal-entropy"])[0].anneal_entropy is True
    assert parse_config(TunerConfig, [])[0].anneal_entropy is False
    with pytest.raises(ValueError, match="anneal_entropy"):
        TunerConfig(anneal_entropy=1)
