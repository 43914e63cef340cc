"""The agent's consumption memory: decayed sums of the genres the user consumed this episode.

RecGym-MovieLens's observation shows only the last ``history_length`` interactions, but the
user's boredom (a per-genre satiation) and habit build up over the whole session. A production
recommender logs what each user consumed; this memory is that log, kept by the agent from the
observation stream alone: after every step it decays and adds the genre vector of the latest
interaction if it was a click (read from the new observation's ``history[0].genres`` and
``history[0].clicked``). One trace per decay ``d`` in the config::

    m_d <- d * m_d + g(latest) * clicked(latest)        m_d = 0 at every episode start

It never reads the simulator's hidden state (satiation, habit, budget). :func:`update_memory` is
the one function that computes it: the training rollout (inside ``jit``) and
:class:`agents.policy.AgentPolicy` at evaluation both call it, so a checkpoint acts the same in
both. The network reads :func:`agent_input`: the observation with the memory appended.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["MemorySpec", "agent_input", "check_decays", "initial_memory", "update_memory"]


def check_decays(decays: Sequence[float]) -> tuple[float, ...]:
    """The decays as a tuple of floats, each checked to lie in ``[0, 1)``.

    Raises:
        ValueError: A decay is not a finite number in ``[0, 1)`` (a decay of 1 or more would
            let the memory grow without bound over a session).
    """
    values = tuple(decays)
    bad = [d for d in values if isinstance(d, bool) or not isinstance(d, (int, float))
           or not math.isfinite(d) or not 0.0 <= d < 1.0]
    if bad:
        raise ValueError(f"memory_decays must each lie in [0, 1), got {list(values)} (bad: {bad})")
    return tuple(float(d) for d in values)


@dataclasses.dataclass(frozen=True)
class MemorySpec:
    """Where the memory reads the observation, and its decays.

    Attributes:
        decays: One decayed trace per decay (empty: no memory).
        genres_start: Index of the latest interaction's genre vector in the observation.
        n_genres: Length of a genre vector.
        clicked_index: Index of the latest interaction's clicked flag in the observation.
    """

    decays: tuple[float, ...]
    genres_start: int
    n_genres: int
    clicked_index: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "decays", check_decays(self.decays))

    @property
    def size(self) -> int:
        """Entries the memory adds to the network's input: ``len(decays) * n_genres``."""
        return len(self.decays) * self.n_genres

    @classmethod
    def from_params(cls, decays: Sequence[float], params: Any) -> MemorySpec:
        """The spec for RecGym-MovieLens ``params``, located by its observation layout.

        Raises:
            ValueError: A decay outside ``[0, 1)``, or an observation without history.
        """
        from recgym.envs.movielens import observation_layout

        decays = check_decays(decays)
        layout = {field.name: field for field in observation_layout(params)}
        if "history[0].genres" not in layout:
            raise ValueError("the consumption memory reads the observation's history, but history_length is 0")
        genres = layout["history[0].genres"]
        return cls(decays, genres.start, genres.size, layout["history[0].clicked"].start)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (checkpoint metadata)."""
        return {"decays": list(self.decays), "genres_start": self.genres_start, "n_genres": self.n_genres,
                "clicked_index": self.clicked_index}

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> MemorySpec | None:
        """Inverse of :meth:`to_dict`; ``None`` (an old checkpoint, or no memory) gives ``None``."""
        if not values or not values.get("decays"):
            return None
        return cls(tuple(values["decays"]), int(values["genres_start"]), int(values["n_genres"]),
                   int(values["clicked_index"]))


def initial_memory(spec: MemorySpec | None, batch: int) -> jax.Array:
    """``(batch, spec.size)`` zeros (``(batch, 0)`` without a memory)."""
    return jnp.zeros((batch, 0 if spec is None else spec.size), jnp.float32)


def update_memory(spec: MemorySpec | None, memory: jax.Array, observation: jax.Array,
                  first: jax.Array) -> jax.Array:
    """The memory after ``observation``: decayed, plus the latest interaction's genres if clicked.

    Args:
        spec: The memory's layout and decays (``None``: no memory, ``memory`` returned as is).
        memory: ``(..., spec.size)`` the memory before ``observation`` (trace ``j`` of decay
            ``decays[j]`` is entries ``j * n_genres`` to ``(j + 1) * n_genres``).
        observation: ``(..., observation_size)`` the new observation.
        first: ``(...)`` bool, ``observation`` starts an episode (the memory restarts from 0).

    Returns:
        ``(..., spec.size)`` float32.
    """
    if spec is None or not spec.decays:
        return memory
    g = spec.n_genres
    genres = observation[..., spec.genres_start:spec.genres_start + g]
    consumed = genres * observation[..., spec.clicked_index:spec.clicked_index + 1]      # (..., g)
    traces = memory.reshape(*memory.shape[:-1], len(spec.decays), g)
    decays = jnp.asarray(spec.decays, jnp.float32)[:, None]
    decayed = jnp.where(jnp.asarray(first)[..., None, None], 0.0, decays * traces)
    return (decayed + consumed[..., None, :]).reshape(memory.shape).astype(jnp.float32)


def agent_input(observation: jax.Array, memory: jax.Array) -> jax.Array:
    """What the network reads: ``(..., observation_size + memory size)``, the memory appended."""
    return jnp.concatenate([observation, memory.astype(observation.dtype)], axis=-1)
