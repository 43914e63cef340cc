"""The optimiser factory clips the global norm first, then steps with Adam or RMSProp."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents.optim import make_optimizer


@pytest.mark.parametrize("name, reference", [("adam", optax.adam(0.1, eps=1e-5)),
                                             ("rmsprop", optax.rmsprop(0.1, decay=0.99, eps=1e-5))])
def test_clipping_comes_before_the_optimiser(name, reference):
    params = {"w": jnp.zeros(3)}
    grads = {"w": jnp.asarray([30.0, 40.0, 0.0])}  # global norm 50
    clipped = {"w": grads["w"] / 50.0}
    tx = make_optimizer(name, 0.1, max_grad_norm=1.0)
    updates, _ = tx.update(grads, tx.init(params), params)
    expected, _ = reference.update(clipped, reference.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), np.asarray(expected["w"]), rtol=1e-6)


def test_annealing_decays_the_step_linearly_to_zero():
    params = {"w": jnp.zeros(1)}
    tx = make_optimizer("rmsprop", 1.0, 10.0, anneal_steps=4)
    state = tx.init(params)
    sizes = []
    for _ in range(5):
        updates, state = tx.update({"w": jnp.ones(1)}, state, params)
        sizes.append(abs(float(updates["w"][0])))
    assert sizes[0] > sizes[1] > sizes[2] > sizes[3] > 0 and sizes[4] == 0.0


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "sgd"}, "optimizer must be one of"),
    ({"learning_rate": 0.0}, "learning_rate must be > 0"),
    ({"max_grad_norm": -1.0}, "max_grad_norm must be > 0"),
    ({"anneal_steps": 0}, "anneal_steps must be >= 1"),
])
def test_bad_arguments_are_named(kwargs, message):
    arguments = {"name": "adam", "learning_rate": 1e-3, "max_grad_norm": 0.5} | kwargs
    with pytest.raises(ValueError, match=message):
        make_optimizer(**arguments)
