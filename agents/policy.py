"""A trained agent as a :class:`recgym.policies.Policy`: scored by the same harness as every baseline.

:class:`AgentPolicy` acts with a trained actor-critic's actor: it scores the catalogue from the
observation (with its consumption memory appended, when the run kept one: the same
:func:`agents.memory.update_memory` as in training), masks the items it served this episode (its
own memory, reset by ``begin_episode``, like the consumption memory), and serves the best item / slate (``deterministic=True``, the default for
evaluation) or draws it from the policy. It reads the observation only — never ``info``'s hidden
fields (``true_utility``, ``satiation``, ``habit``, ``budget``).

A checkpoint may hold several training seeds (``jax.vmap(train)(keys)``); the policy then acts
with one of them (``seed_index``) or with all of them in turn — environment slot ``i`` of the
batch acts with seed ``i % num_seeds`` — so one evaluation run scores the training procedure
over its seeds on paired episodes.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agents.checkpoint import Checkpointer
from agents.memory import MemorySpec, agent_input, initial_memory, update_memory
from agents.networks import (
    ActorCritic,
    greedy_slate,
    mark_served,
    sample_slate,
    served_mask,
    served_words,
)
from recgym.policies import Policy

__all__ = ["AgentPolicy"]


class AgentPolicy(Policy):
    """Serve items with a trained actor (one seed, or several seeds in turn over env slots).

    Args:
        graphdef: The network's NNX graph definition.
        params: Its trainable parameters (``nnx.State``); with ``num_seeds``, every leaf has a
            leading seed axis.
        constants: Its non-trainable variables (the item features).
        slate_size: Items per action (1: the action is one item id).
        mask_served: Never serve an item twice in an episode (as in training).
        deterministic: Serve the highest-scoring items (top-k, the mode of the Plackett–Luce
            policy) instead of sampling.
        num_seeds: Number of seeds stacked in ``params`` (``None``: a single, unstacked seed).
        name: Display name.
        memory: The consumption memory the network was trained with (``None``: none).
    """

    name = "a2c"

    def __init__(self, graphdef: Any, params: Any, constants: Any, *, slate_size: int = 1, mask_served: bool = True,
                 deterministic: bool = True, num_seeds: int | None = None, name: str | None = None,
                 memory: MemorySpec | None = None):
        super().__init__()
        self.graphdef, self.params, self.constants = graphdef, params, constants
        self.slate_size = int(slate_size)
        self.mask_served = bool(mask_served)
        self.deterministic = bool(deterministic)
        self.num_seeds = num_seeds
        self.memory = memory
        self.n_items = int(nnx.merge(graphdef, _first_seed(params, num_seeds), constants).head.n_items)
        if name is not None:
            self.name = name
        self._key = jax.random.key(0)
        self.served = np.zeros((1, served_words(self.n_items)), np.uint32)
        self.remembered = np.zeros((1, 0 if memory is None else memory.size), np.float32)
        self.first = np.ones((1,), bool)
        self._act = jax.jit(functools.partial(_act, graphdef, slate_size=self.slate_size,
                                              mask_served=self.mask_served, deterministic=self.deterministic,
                                              num_seeds=num_seeds, memory=memory))

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_training(cls, training: Any, state: Any, **kwargs: Any) -> AgentPolicy:
        """The policy of a finished :class:`agents.a2c.A2CTraining` run (``state`` from it)."""
        config = training.config
        kwargs.setdefault("slate_size", config.slate_size)
        kwargs.setdefault("mask_served", config.mask_served)
        kwargs.setdefault("memory", training.memory)
        return cls(training.graphdef, state.learner.params, training.model_constants, **kwargs)

    @classmethod
    def from_checkpoint(cls, path: str | Path, step: int | None = None, *, seed_index: int | None = None,
                        **kwargs: Any) -> AgentPolicy:
        """Load the policy saved by a training run (no dataset or training code needed).

        Args:
            path: A run folder (with ``checkpoints/``) or the checkpoints folder itself.
            step: Which checkpoint (default: the latest).
            seed_index: For a checkpoint of several seeds, act with this one only (default: all
                in turn over env slots).
            **kwargs: ``deterministic``, ``name``, ``mask_served`` overrides.

        Raises:
            FileNotFoundError: No checkpoint at ``path``.
            ValueError: ``seed_index`` out of range.
        """
        path = Path(path)
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        if not folder.is_dir():
            raise FileNotFoundError(f"no checkpoints folder at {path}")
        with Checkpointer(folder) as checkpoints:
            metadata = checkpoints.metadata(step)
            config = metadata["config"]
            num_seeds = metadata.get("num_seeds")
            memory = MemorySpec.from_dict(metadata.get("memory"))  # absent in older checkpoints: none
            input_size = metadata["observation_size"] + (0 if memory is None else memory.size)
            abstract = nnx.eval_shape(lambda: ActorCritic(
                input_size, jnp.ones((metadata["n_items"], metadata["n_item_features"])),
                tuple(config["hidden_sizes"]), config["embedding_dim"], activation=config["activation"],
                learned_item_table=config["learned_item_table"], rngs=nnx.Rngs(0)))
            graphdef, params, constants = nnx.split(abstract, nnx.Param, ...)
            if num_seeds is not None:
                params = jax.tree_util.tree_map(
                    lambda x: jax.ShapeDtypeStruct((num_seeds, *x.shape), x.dtype), params)
            restored = checkpoints.restore({"policy": {"params": params, "constants": constants}}, step)["policy"]
        params = restored["params"]
        if seed_index is not None:
            if num_seeds is None or not 0 <= seed_index < num_seeds:
                raise ValueError(f"seed_index must lie in [0, {num_seeds or 1}) for this checkpoint, got {seed_index}")
            params = jax.tree_util.tree_map(lambda x: x[seed_index], params)
            num_seeds = None
        kwargs.setdefault("slate_size", config["slate_size"])
        kwargs.setdefault("mask_served", config["mask_served"])
        return cls(graphdef, params, restored["constants"], num_seeds=num_seeds, memory=memory, **kwargs)

    # ---------------------------------------------------------------- Policy protocol
    def reset(self, num_envs: int = 1, seed: int | None = None) -> None:
        """See :meth:`recgym.policies.Policy.reset`; the seed also keys the policy's sampling."""
        self.served = np.zeros((num_envs, served_words(self.n_items)), np.uint32)
        self.remembered = np.asarray(initial_memory(self.memory, num_envs))
        self.first = np.ones((num_envs,), bool)
        if seed is not None:
            self._key = jax.random.key(seed)
        super().reset(num_envs, seed)

    def begin_episode(self, env_mask: np.ndarray) -> None:
        """Forget what was served to, and consumed in, the envs starting a new episode."""
        mask = np.asarray(env_mask, dtype=bool)
        self.served[mask] = 0
        self.first[mask] = True  # the next observation restarts the consumption memory

    def act_batch(self, observations: np.ndarray, infos: Mapping[str, Any]) -> np.ndarray:
        """``(num_envs,)`` item ids, or ``(num_envs, k)`` slates; see :meth:`recgym.policies.Policy.act_batch`.

        Reads only ``observations`` (``infos`` is ignored: the agent never sees hidden state).
        """
        observations = np.asarray(observations, np.float32)
        if observations.shape[0] != self.num_envs:
            raise ValueError(f"expected observations for num_envs={self.num_envs}, got shape {observations.shape}")
        self._key, key = jax.random.split(self._key)
        slates, served, remembered = self._act(self.params, self.constants, observations, self.served,
                                               self.remembered, self.first, key)
        self.served, self.remembered = np.array(served), np.array(remembered)
        self.first = np.zeros_like(self.first)
        slates = np.asarray(slates, np.int64)
        return slates[:, 0] if self.slate_size == 1 else slates


def _act(graphdef, params, constants, observations, served, remembered, first, key, *, slate_size: int,
         mask_served: bool, deterministic: bool, num_seeds: int | None, memory: MemorySpec | None):
    """Slates for a batch of observations, the served-items memory with them added, and the
    consumption memory after the observations (the training rollout's update)."""
    n_envs = observations.shape[0]
    remembered = update_memory(memory, remembered, observations, first)
    observations = agent_input(observations, remembered)

    def scores_of(params, observations):
        return nnx.merge(graphdef, params, constants).scores(observations)

    if num_seeds is None:
        scores = scores_of(params, observations)
    else:  # env slot i acts with seed i % num_seeds
        groups = -(-n_envs // num_seeds)
        padded = jnp.pad(observations, ((0, groups * num_seeds - n_envs), (0, 0)))
        grouped = padded.reshape(groups, num_seeds, -1)
        scores = jax.vmap(scores_of, in_axes=(0, 1), out_axes=1)(params, grouped)
        scores = scores.reshape(groups * num_seeds, -1)[:n_envs]
    blocked = served_mask(served, scores.shape[-1]) if mask_served else jnp.zeros(scores.shape, bool)
    if deterministic:
        slates = greedy_slate(scores, blocked, slate_size)
    else:
        slates = sample_slate(jax.random.split(key, n_envs), scores, blocked, slate_size)
    if mask_served:
        served = mark_served(served, slates)
    return slates, served, remembered


def _first_seed(params: Any, num_seeds: int | None) -> Any:
    """One seed's parameters (the first) of a possibly seed-stacked parameter tree."""
    return params if num_seeds is None else jax.tree_util.tree_map(lambda x: x[0], params)
