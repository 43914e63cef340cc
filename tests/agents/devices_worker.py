"""Run by test_parallel.py in a subprocess: the same A2C updates on 1, 2 and 4 forced CPU devices.

Forcing CPU devices must happen before JAX initialises, hence a separate process. Writes one
``.npz`` of the parameters after one update per (mode, device count) into the folder given.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax

jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_num_cpu_devices", 4)

import numpy as np  # noqa: E402

from agents.a2c import make_train  # noqa: E402
from recgym.envs.movielens import build_world, make_params  # noqa: E402
from tests.agents.conftest import tiny_config  # noqa: E402


def main(out: Path) -> None:
    assert len(jax.devices()) == 4, jax.devices()
    params = make_params(build_world("synthetic"), users="train")
    for mode in ("pmap", "shard_map"):
        for devices in (1, 2, 4):
            config = tiny_config(num_envs=8, num_devices=devices, parallel=mode, total_steps=8 * 4 * 2)
            train = make_train(config, params)
            state, metrics = train.run(train.init(jax.random.key(7)), 1)
            flat = {str(i): np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(state.learner.params))}
            flat["total_loss"] = np.asarray(metrics["losses/total_loss"])
            flat["observation"] = np.asarray(state.actors.observation)
            np.savez(out / f"{mode}-{devices}.npz", **flat)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
