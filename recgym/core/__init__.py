"""The shared functional-environment base of recgym: one implementation of the dynamics, two backends.

Every recgym environment is a :class:`FunctionalEnv`: pure dynamics written once against an array
namespace ``xp`` (``numpy`` or ``jax.numpy``), with all randomness drawn by the *caller* from a JAX
key and passed in as noise. From those hooks the base derives

* the gymnax-style JAX API — ``reset(key, params) -> (obs, state)`` and
  ``step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)`` —
  jittable, vmappable and scannable, for agents that train thousands of users under one ``jit``;
* :class:`FunctionalGymEnv`, the single gymnasium env: it draws a whole episode's noise with one
  jitted call at reset and then steps the *same* transition code with ``xp=numpy`` (a jitted JAX
  call costs 100–300 µs here, far more than a small NumPy step). Dynamics may go one step further
  for one env and run on plain Python numbers through :mod:`recgym.core.pyscalar` (short axes as
  Python sequences): NumPy spends ~0.5 µs per call on six-element arrays, Python tens of ns;
* :class:`FunctionalVectorEnv`, the native gymnasium vector env (next-step auto-reset) stepping
  ``num_envs`` copies with one jitted, vmapped JAX call per vector step.

All of them follow one key chain (:func:`episode_key_chain`): an env seeded with ``s`` starts from
``PRNGKey(s)``; each episode splits ``(next_key, reset_key, episode_key)``; step ``t`` uses
``fold_in(episode_key, t)``; the next episode starts from ``next_key``. The JAX side carries its
place on the chain in an :class:`EnvCarry`: :meth:`FunctionalEnv.start` then
:meth:`FunctionalEnv.step_autoreset` (same-step auto-reset, for agents and ``lax.scan``) or
:meth:`FunctionalEnv.step_next_reset` (what the vector env vmaps). So a seed replays the same
trajectory through ``gym.make``, ``gym.make_vec`` and a hand-written ``lax.scan``
(:func:`recgym.core.testing.check_key_chain` asserts it), and
:func:`recgym.core.testing.assert_backends_agree` checks NumPy against JAX.

How to build an environment on it
---------------------------------

1. Params and state are frozen pytree dataclasses (``flax.struct.dataclass``). Shape-determining
   settings are static fields (``field(pytree_node=False)``); coefficients and world arrays are
   pytree leaves. Validate in ``__post_init__`` with :func:`require`, which skips traced values
   (the dataclass is rebuilt with tracers inside ``jit``). Params must have ``max_episode_steps``
   and the state a scalar int ``time`` (steps taken), unless you override ``is_truncated``.
2. Subclass :class:`FunctionalEnv` and implement:

   * ``default_params()``;
   * ``reset_noise(key, params)`` / ``step_noise(key, params)`` — a dict of arrays drawn with
     ``jax.random`` (fixed shapes; these are the only random draws);
   * ``init(xp, noise, params, options)``, ``transition(xp, state, action, noise, params) ->
     Transition(state, reward, terminated, info)`` and ``observe(xp, state, params)`` — written
     with ``xp`` only: no in-place mutation (use ``xp.where``, arithmetic, fancy-index *reads*),
     no Python branching on array values (branch on static params only), float32 arrays;
   * ``observation_space(params)`` / ``action_space(params)``; optionally ``check_action`` (clear
     ``ValueError`` for bad actions), ``reset_info``, ``batch_options``.
3. Adapters are one line each::

       class MyEnv(FunctionalGymEnv):
           def __init__(self, render_mode=None, **kwargs):
               super().__init__(MyCore(), make_params(**kwargs), render_mode)

       class MyVectorEnv(FunctionalVectorEnv):
           def __init__(self, num_envs, render_mode=None, **kwargs):
               super().__init__(MyCore(), num_envs, make_params(**kwargs), render_mode)

   Register both with string entry points in :mod:`recgym.registration` (``max_episode_steps`` =
   the params' value), and run :mod:`recgym.core.testing`'s contract checks over the id.
"""

from recgym._api import document_at
from recgym.core.adapters import FunctionalGymEnv, FunctionalVectorEnv, seed_key
from recgym.core.functional import (
    EnvCarry,
    FunctionalEnv,
    Transition,
    as_jax,
    episode_key_chain,
    finite,
    is_int,
    is_traced,
    require,
)

__all__ = [
    "EnvCarry",
    "FunctionalEnv",
    "FunctionalGymEnv",
    "FunctionalVectorEnv",
    "Transition",
    "as_jax",
    "episode_key_chain",
    "finite",
    "is_int",
    "is_traced",
    "require",
    "seed_key",
]

document_at(__name__, globals(), __all__)  # documented here, not at private modules
