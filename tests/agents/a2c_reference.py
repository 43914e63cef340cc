"""Reference A2C parameters, pinned so that a faster update can be held to learning the same thing.

``python -m tests.agents.a2c_reference`` trains every case of :data:`CASES` for
:data:`NUM_UPDATES` updates and writes the parameters to :data:`REFERENCE_FILE`. The committed
file was written by the update as it stood before the exact savings of issue #10 (commit
``ba17367`` of ``main``); ``tests/agents/test_a2c_exact.py`` trains the same cases with the current
code and requires the same parameters to float tolerance. Regenerate it only for a change that is
meant to change what A2C learns (and say so in the changelog).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from agents.a2c import make_train
from recgym.envs.movielens import build_world, make_params
from tests.agents.conftest import tiny_config

REFERENCE_FILE = Path(__file__).parent / "data" / "a2c_reference_params.npz"
"""Where the reference parameters live (one array per case and parameter leaf)."""

NUM_UPDATES = 6
"""Updates each case trains for."""

CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (config overrides of tiny_config, env param overrides)
    "single": ({}, {}),
    "slates": ({"slate_size": 3}, {"slate_size": 3}),
    # episodes of 3 steps inside rollouts of 8: two or three truncations per env and rollout, at
    # every position of the rollout, the last one included (bootstrapped from final_obs)
    "truncating": ({"rollout_steps": 8, "learned_item_table": True}, {"max_episode_steps": 3}),
    # episodes of 7 steps: at most one truncation per env before the rollout's last step
    "truncating_once": ({"rollout_steps": 8}, {"max_episode_steps": 7}),
    "plain": ({"mask_served": False, "normalize_advantages": False, "optimizer": "rmsprop", "anneal_lr": False,
               "activation": "relu", "gae_lambda": 1.0}, {}),
}
"""The configurations pinned: single items, slates, truncation mid-rollout, options off."""


def case_training(name: str):
    """The training of case ``name`` (its config and synthetic-world params)."""
    config_overrides, env_overrides = CASES[name]
    config = tiny_config(total_steps=10**6, **config_overrides)
    return make_train(config, make_params(build_world("synthetic"), users="train", **env_overrides))


def trained_params(name: str, seed: int = 0) -> list[np.ndarray]:
    """Parameter leaves of case ``name`` after :data:`NUM_UPDATES` updates from ``key(seed)``."""
    training = case_training(name)
    state, _ = training.run(training.init(jax.random.key(seed)), NUM_UPDATES)
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(state.learner.params)]


def main(out: Path = REFERENCE_FILE) -> None:
    """Write every case's parameters to ``out``."""
    arrays = {f"{name}/{i}": leaf for name in CASES for i, leaf in enumerate(trained_params(name))}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(f"wrote {len(arrays)} arrays to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REFERENCE_FILE)
