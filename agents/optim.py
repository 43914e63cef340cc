"""The optimiser factory: global-norm gradient clipping, then Adam or RMSProp, one optax chain.

Every agent builds its optimiser here, so clipping always comes first (on the raw, averaged
gradients) and the learning-rate schedule lives in one place.
"""

from __future__ import annotations

import optax

__all__ = ["OPTIMIZERS", "make_optimizer"]

OPTIMIZERS = ("adam", "rmsprop")
"""Names :func:`make_optimizer` accepts."""


def make_optimizer(
    name: str,
    learning_rate: float,
    max_grad_norm: float,
    *,
    anneal_steps: int | None = None,
    eps: float = 1e-5,
    rmsprop_decay: float = 0.99,
) -> optax.GradientTransformation:
    """``clip_by_global_norm(max_grad_norm)`` then Adam or RMSProp.

    Args:
        name: ``"adam"`` or ``"rmsprop"`` (RMSProp with ``rmsprop_decay``, as in the A3C paper
            and Stable-Baselines3's A2C).
        learning_rate: Step size (initial step size when annealed).
        max_grad_norm: Clip the gradients' global L2 norm to this; ``inf`` disables clipping.
        anneal_steps: Decay the step size linearly to 0 over this many updates; ``None`` keeps it
            constant.
        eps: The optimiser's epsilon (1e-5, as CleanRL and SB3 use for A2C/PPO).
        rmsprop_decay: RMSProp's squared-gradient decay.

    Returns:
        The optax chain. Its state records the update count, so the schedule resumes with it.

    Raises:
        ValueError: Unknown ``name`` or a non-positive ``learning_rate`` / ``max_grad_norm`` /
            ``anneal_steps``.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    if not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0, got {max_grad_norm!r}")
    if anneal_steps is not None and anneal_steps < 1:
        raise ValueError(f"anneal_steps must be >= 1, got {anneal_steps!r}")
    schedule = (optax.linear_schedule(learning_rate, 0.0, anneal_steps) if anneal_steps is not None
                else learning_rate)
    if name == "adam":
        step = optax.adam(schedule, eps=eps)
    else:
        step = optax.rmsprop(schedule, decay=rmsprop_decay, eps=eps)
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), step)
