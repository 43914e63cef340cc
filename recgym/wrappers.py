"""Gymnasium wrappers that let general-purpose RL libraries drive recgym envs unchanged.

* :class:`DistinctSlate` — for slate actions (``MultiDiscrete``): libraries such as
  Stable-Baselines3 sample each slate position independently, so their slates repeat items, which
  the env rejects. The wrapper makes every action valid by a fixed rule, so the agent sees an
  ordinary MDP over the same ``MultiDiscrete`` space.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["DistinctSlate", "distinct_slate"]


def distinct_slate(action: np.ndarray, n_choices: int) -> np.ndarray:
    """Replace repeated entries of a slate by the lowest choices not already in it.

    The first occurrence of each item keeps its position; every later repeat becomes the smallest
    index (item id, or candidate position) absent from the slate. A slate of distinct items is
    returned unchanged.

    Args:
        action: ``(k,)`` integer slate, entries in ``[0, n_choices)``.
        n_choices: Items (or candidates) to choose from, ``>= k``.

    Returns:
        ``(k,)`` int64 slate of distinct entries.
    """
    slate = np.asarray(action, dtype=np.int64).reshape(-1)
    if len(slate) > n_choices:
        raise ValueError(f"a slate of {len(slate)} distinct items needs n_choices >= {len(slate)}, got {n_choices}")
    _, first = np.unique(slate, return_index=True)
    repeated = np.setdiff1d(np.arange(len(slate)), first)
    if len(repeated) == 0:
        return slate
    unused = np.setdiff1d(np.arange(n_choices), slate)[: len(repeated)]
    out = slate.copy()
    out[repeated] = unused
    return out


class DistinctSlate(gym.ActionWrapper):
    """Make any ``MultiDiscrete`` slate valid by de-duplicating it (see :func:`distinct_slate`).

    Args:
        env: A recgym env with ``slate_size > 1`` (action space ``MultiDiscrete([n] * k)``).

    Example:
        >>> import gymnasium as gym
        >>> import recgym
        >>> env = DistinctSlate(gym.make("RecGym-MovieLens-v0", dataset="synthetic", slate_size=3))
        >>> _ = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step([4, 4, 0])
        >>> info["slate"].tolist()
        [4, 1, 0]
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, gym.spaces.MultiDiscrete) or len(set(space.nvec.tolist())) != 1:
            raise TypeError(
                f"DistinctSlate wraps slate envs (MultiDiscrete([n] * k)), got action space {space}"
            )
        self.n_choices = int(space.nvec[0])

    def action(self, action: Any) -> np.ndarray:
        """The de-duplicated slate the wrapped env executes."""
        return distinct_slate(action, self.n_choices)
