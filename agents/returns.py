"""Advantages and returns: the one generalised advantage estimator every agent uses.

Termination and truncation stay separate (gymnasium's contract): an episode that *terminated*
reached a state with no future, so its last step bootstraps from nothing; an episode that was
*truncated* by the time limit would have gone on, so its last step bootstraps from the value of the
observation it reached (``info["final_obs"]`` of the auto-resetting step, before the reset). In
both cases the advantage trace stops there: the next step belongs to another episode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["gae"]


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    gamma: float,
    gae_lambda: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation over a time-major rollout (a reverse ``lax.scan``).

    With ``done_t = terminated_t or truncated_t``::

        delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t
        A_t     = delta_t + gamma * gae_lambda * (1 - done_t) * A_{t+1},   A_T = 0

    ``gae_lambda = 1`` gives the n-step (rollout-length) return minus the baseline;
    ``gae_lambda = 0`` the one-step TD error.

    Args:
        rewards: ``(T, ...)`` reward of step ``t``.
        values: ``(T, ...)`` value of the observation step ``t`` acted on.
        next_values: ``(T, ...)`` value of the observation step ``t`` reached, *before* any reset
            (the value of ``info["final_obs"]``); used only where ``terminated_t`` is false.
        terminated: ``(T, ...)`` bool, the episode ended in a terminal state at step ``t``.
        truncated: ``(T, ...)`` bool, the episode hit the time limit at step ``t``.
        gamma: Discount factor in [0, 1].
        gae_lambda: Trace decay in [0, 1].

    Returns:
        ``(advantages, returns)``, both ``(T, ...)`` float32, ``returns = advantages + values``
        (the value targets).
    """
    shape = jnp.shape(rewards)
    for name, array in (("values", values), ("next_values", next_values), ("terminated", terminated),
                        ("truncated", truncated)):
        if jnp.shape(array) != shape:
            raise ValueError(f"{name} must have the shape of rewards {shape}, got {jnp.shape(array)}")
    rewards = jnp.asarray(rewards, jnp.float32)
    values = jnp.asarray(values, jnp.float32)
    not_terminated = 1.0 - jnp.asarray(terminated, jnp.float32)
    continues = not_terminated * (1.0 - jnp.asarray(truncated, jnp.float32))
    deltas = rewards + gamma * not_terminated * jnp.asarray(next_values, jnp.float32) - values

    def backward(next_advantage, step):
        delta, carry_on = step
        advantage = delta + gamma * gae_lambda * carry_on * next_advantage
        return advantage, advantage

    # zeros_like of the inputs, not jnp.zeros: under shard_map the carry must be typed
    # device-varying like the per-device data it is combined with
    last = jnp.zeros_like(deltas[0] + continues[0])
    _, advantages = jax.lax.scan(backward, last, (deltas, continues), reverse=True)
    return advantages, advantages + values
