"""Run by test_a2c.py in a subprocess: several seeds trained at once (``jax.jit(jax.vmap(train))``)
and each seed on its own (``jax.jit(train)``).

In a child process so that the test can bound it with a timeout: the deadlock this guards against
(batched LAPACK calls blocking every thread of XLA's CPU pool, see
:meth:`agents.a2c.A2CTraining.initial_params`) hangs in native code, where no Python-level timeout
reaches. Writes ``vmapped.npz`` and ``seed<i>.npz`` (the learner's parameters, flattened, and
the loss curve) into the folder given.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

from agents.a2c import make_train
from recgym.envs.movielens import build_world, make_params
from tests.agents.conftest import tiny_config

SEEDS = 3
"""Seeds trained at once (more than the 2 threads of XLA's pool on a 2-core machine)."""


def flat(state, metrics) -> dict[str, np.ndarray]:
    """The learner's parameter leaves by position, and the loss curve."""
    arrays = {str(i): np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(state.learner.params))}
    return arrays | {"total_loss": np.asarray(metrics["losses/total_loss"])}


def main(out: Path) -> None:
    params = make_params(build_world("synthetic"), users="train")
    train = make_train(tiny_config(total_steps=16 * 4 * 3), params)
    keys = jax.random.split(jax.random.key(0), SEEDS)
    np.savez(out / "vmapped.npz", **flat(*jax.block_until_ready(jax.jit(jax.vmap(train))(keys))))
    single = jax.jit(train)
    for i in range(SEEDS):
        np.savez(out / f"seed{i}.npz", **flat(*single(keys[i])))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
