"""Gymnasium spaces recgym defines beyond gymnasium's own.

* :class:`Slate` — the action space of a slate of ``k`` distinct items out of ``n``: a
  ``MultiDiscrete([n] * k)`` (so every library that understands ``MultiDiscrete`` understands it)
  whose :meth:`~Slate.sample` draws the ``k`` items without replacement and whose
  :meth:`~Slate.contains` rejects a slate that repeats an item — the same rule the env's
  ``step`` enforces, so ``env.step(env.action_space.sample())`` is always a valid step.

Batched (``gymnasium.vector.utils.batch_space``, what the vector envs use), a ``Slate`` of shape
``(k,)`` becomes a ``Slate`` of shape ``(num_envs, k)``: every row is a slate of distinct items.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import numpy as np
from gymnasium.spaces import MultiDiscrete
from gymnasium.vector.utils import batch_space

__all__ = ["Slate", "repeating_rows"]


def repeating_rows(slates: Any, slate_size: int) -> np.ndarray:
    """Which slates repeat an item: a bool per row of ``slates`` reshaped to ``(-1, slate_size)``.

    The one rule behind :meth:`Slate.contains`, :meth:`Slate.sample` and the MovieLens env's
    action check (``slate contains duplicate items``).
    """
    rows = np.sort(np.asarray(slates).reshape(-1, slate_size), axis=1)
    return np.any(rows[:, 1:] == rows[:, :-1], axis=1)


class Slate(MultiDiscrete):
    """``k`` distinct items out of ``n``: a ``MultiDiscrete`` whose samples never repeat an item.

    Args:
        n: Items to choose from (the catalogue, or the candidates in candidate mode).
        slate_size: ``k``, items per slate; ``1 <= k <= n``.
        dtype: Integer dtype of the actions.
        seed: Seed (or generator) of the space's own sampler.
        batch_shape: Leading dimensions (``()`` for one slate; ``(num_envs,)`` for a batch, each
            row a slate of its own).

    Raises:
        ValueError: If ``n`` or ``slate_size`` is not a positive integer, or ``slate_size > n``.

    Example:
        >>> space = Slate(100, 5, seed=0)
        >>> action = space.sample()
        >>> len(set(action.tolist())) == 5 and space.contains(action)
        True
        >>> space.contains(np.array([1, 2, 3, 4, 1]))
        False
    """

    def __init__(
        self,
        n: int,
        slate_size: int,
        dtype: Any = np.int64,
        seed: int | np.random.Generator | None = None,
        batch_shape: tuple[int, ...] = (),
    ):
        for name, value in (("n", n), ("slate_size", slate_size)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if slate_size > n:
            raise ValueError(f"a slate of {slate_size} distinct items needs n >= {slate_size}, got n={n}")
        self.n_items, self.slate_size, self.batch_shape = int(n), int(slate_size), tuple(int(b) for b in batch_shape)
        super().__init__(np.full(self.batch_shape + (self.slate_size,), self.n_items), dtype=dtype, seed=seed)

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        """Draw slates of distinct items, uniformly over ordered slates (without replacement).

        With ``mask`` or ``probability`` (``MultiDiscrete``'s per-position arguments) the positions
        are filled in order, each from its own mask/probability restricted to the items not yet in
        the slate.

        Raises:
            ValueError: If a position's mask (after removing the items already chosen) allows no item.
        """
        if mask is None and probability is None:
            return self._uniform(int(np.prod(self.batch_shape, dtype=int))).astype(self.dtype).reshape(self.shape)
        if self.batch_shape:
            raise ValueError("mask/probability sampling is per slate: sample each row from an unbatched Slate")
        weights = mask if mask is not None else probability
        if len(weights) != self.slate_size:
            raise ValueError(f"expected one mask/probability per slot ({self.slate_size}), got {len(weights)}")
        return np.asarray(self._distinct(list(weights), "mask" if mask is not None else "probability"), dtype=self.dtype)

    def _uniform(self, rows: int) -> np.ndarray:
        """``(rows, k)`` slates, each uniform over the ordered slates of distinct items."""
        n, k, rng = self.n_items, self.slate_size, self.np_random
        if k * (k - 1) > n:  # repeats likely: draw each row without replacement (O(n) a row)
            return np.stack([rng.choice(n, size=k, replace=False) for _ in range(rows)]) if rows else np.zeros((0, k), int)
        # Few repeats (probability < 1/2 a row): draw all rows at once and redraw the rows that
        # repeat an item — conditioning independent uniform draws on distinctness keeps them uniform.
        out = rng.integers(0, n, size=(rows, k))
        while True:
            repeat = repeating_rows(out, k)
            if not repeat.any():
                return out
            out[repeat] = rng.integers(0, n, size=(int(repeat.sum()), k))

    def _distinct(self, weights: list[np.ndarray], kind: str) -> list[int]:
        chosen: list[int] = []
        for slot, w in enumerate(weights):
            w = np.asarray(w, dtype=np.float64)
            if w.shape != (self.n_items,):
                raise ValueError(f"the {kind} of slot {slot} must have shape ({self.n_items},), got {w.shape}")
            w = w.copy()
            w[chosen] = 0.0
            if not np.any(w > 0):
                raise ValueError(f"the {kind} of slot {slot} allows no item not already in the slate {chosen}")
            chosen.append(int(self.np_random.choice(self.n_items, p=w / w.sum())))
        return chosen

    def contains(self, x: Any) -> bool:
        """In range and shape (as ``MultiDiscrete``), and no slate repeats an item."""
        if not super().contains(x):
            return False
        return not bool(repeating_rows(x, self.slate_size).any())

    def __repr__(self) -> str:
        batch = f", batch_shape={self.batch_shape}" if self.batch_shape else ""
        return f"Slate(n={self.n_items}, slate_size={self.slate_size}{batch})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Slate) and super().__eq__(other)


@batch_space.register(Slate)
def _batch_slate(space: Slate, n: int = 1) -> Slate:
    return Slate(
        space.n_items, space.slate_size, dtype=space.dtype, seed=deepcopy(space.np_random), batch_shape=(n,) + space.batch_shape
    )
