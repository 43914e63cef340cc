"""Reusable contract checks for every environment built on :mod:`recgym.core`.

Use them from pytest over every registered id, e.g.::

    @pytest.mark.parametrize("env_id", ["RecGym-MovieLens-v0", ...])
    def test_contract(env_id):
        check_gym_contract(env_id, kwargs={"dataset": "synthetic"})

Every check asserts (raises ``AssertionError`` with a message); none merely calls a predicate.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.utils.env_checker import check_env

from recgym.core.adapters import FunctionalGymEnv, seed_key
from recgym.core.functional import FunctionalEnv

__all__ = [
    "assert_backends_agree",
    "check_key_chain",
    "check_functional_contract",
    "check_gym_contract",
    "check_vector_contract",
    "rollout_gym",
]


def _assert_in_space(space: gym.Space, value: Any, what: str) -> None:
    value = np.asarray(value)
    assert value.dtype == space.dtype, f"{what}: dtype {value.dtype} != space dtype {space.dtype}"
    assert value.shape == space.shape, f"{what}: shape {value.shape} != space shape {space.shape}"
    assert space.contains(value), f"{what} is outside {space}: {value}"


def rollout_gym(env: gym.Env, seed: int, n_steps: int, action_seed: int = 0) -> list[tuple]:
    """Run ``n_steps`` random actions (auto-resetting by hand); return the transitions.

    Each entry is ``(obs, reward, terminated, truncated)`` with ``obs`` a NumPy array; the first
    entry is the reset observation with reward ``nan``.
    """
    env.action_space.seed(action_seed)
    obs, _ = env.reset(seed=seed)
    out = [(np.array(obs), np.nan, False, False)]
    for _ in range(n_steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        out.append((np.array(obs), reward, terminated, truncated))
        if terminated or truncated:
            obs, _ = env.reset()
            out.append((np.array(obs), np.nan, False, False))
    return out


def _same(a: list[tuple], b: list[tuple], atol: float = 0.0) -> bool:
    if len(a) != len(b):
        return False
    for (oa, ra, ta, ua), (ob, rb, tb, ub) in zip(a, b):
        if oa.shape != ob.shape or not np.allclose(oa, ob, atol=atol, rtol=0, equal_nan=True):
            return False
        if not (np.isnan(ra) and np.isnan(rb)) and abs(ra - rb) > atol:
            return False
        if (ta, ua) != (tb, ub):
            return False
    return True


def check_gym_contract(env_id: str, kwargs: dict | None = None, n_steps: int = 200) -> None:
    """The single-env contract for a registered id.

    Checks: gymnasium's ``check_env``; reset/step observations in the space with its dtype and
    shape; finite float rewards; bool flags; ``max_episode_steps`` of the spec equals the core's;
    same seed gives the same trajectory bit for bit; different seeds differ; stepping before reset
    raises.
    """
    kwargs = dict(kwargs or {})
    env = gym.make(env_id, **kwargs)
    check_env(env.unwrapped, skip_render_check=True)
    core_limit = getattr(env.unwrapped.params, "max_episode_steps", None)
    assert env.spec.max_episode_steps == core_limit, (
        f"{env_id}: spec max_episode_steps={env.spec.max_episode_steps} != core's {core_limit}"
    )
    obs, info = env.reset(seed=0)
    assert isinstance(info, dict)
    _assert_in_space(env.observation_space, obs, f"{env_id} reset observation")
    env.action_space.seed(1)
    for t in range(n_steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        _assert_in_space(env.observation_space, obs, f"{env_id} observation at step {t}")
        assert isinstance(reward, float) and np.isfinite(reward), f"{env_id}: reward {reward!r}"
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
        assert isinstance(info, dict)
        if terminated or truncated:
            obs, _ = env.reset()
    a = rollout_gym(gym.make(env_id, **kwargs), seed=123, n_steps=n_steps)
    b = rollout_gym(gym.make(env_id, **kwargs), seed=123, n_steps=n_steps)
    assert _same(a, b), f"{env_id}: the same seed gave different trajectories"
    c = rollout_gym(gym.make(env_id, **kwargs), seed=124, n_steps=n_steps)
    assert not _same(a, c), f"{env_id}: seeds 123 and 124 gave the same trajectory"
    fresh = gym.make(env_id, **kwargs)
    try:
        fresh.step(fresh.action_space.sample())
    except gym.error.Error:
        pass
    else:  # pragma: no cover - the assertion is the failure
        raise AssertionError(f"{env_id}: step() before reset() did not raise")


def check_vector_contract(env_id: str, kwargs: dict | None = None, num_envs: int = 3, n_steps: int = 120,
                          atol: float = 1e-4) -> None:
    """The native vector env contract: spaces, next-step auto-reset, equality with single envs.

    ``gym.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point")`` seeded with ``s``
    must reproduce ``num_envs`` single envs seeded ``s + i`` given the same actions, across
    episode ends (floats to ``atol``, flags exactly).
    """
    kwargs = dict(kwargs or {})
    venv = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    assert "autoreset_mode" in venv.metadata, f"{env_id}: vector env lacks metadata['autoreset_mode']"
    singles = [gym.make(env_id, **kwargs) for _ in range(num_envs)]
    obs, _ = venv.reset(seed=7)
    _assert_in_space(venv.observation_space, obs, f"{env_id} vector reset observation")
    single_obs = [e.reset(seed=7 + i)[0] for i, e in enumerate(singles)]
    np.testing.assert_allclose(obs, np.stack(single_obs), atol=atol, err_msg=f"{env_id} reset obs")
    venv.action_space.seed(3)
    needs_reset = np.zeros(num_envs, dtype=bool)
    episodes_ended = 0
    for t in range(n_steps):
        actions = venv.action_space.sample()
        obs, reward, terminated, truncated, _ = venv.step(actions)
        _assert_in_space(venv.observation_space, obs, f"{env_id} vector observation at step {t}")
        assert reward.shape == (num_envs,) and np.all(np.isfinite(reward))
        for i, env in enumerate(singles):
            if needs_reset[i]:
                o = env.reset()[0]
                r, te, tr = 0.0, False, False
            else:
                o, r, te, tr, _ = env.step(actions[i])
            msg = f"{env_id}: vector env {i} differs from its single env at step {t}"
            np.testing.assert_allclose(obs[i], o, atol=atol, err_msg=msg)
            np.testing.assert_allclose(reward[i], r, atol=atol, err_msg=msg)
            assert (bool(terminated[i]), bool(truncated[i])) == (te, tr), msg
        needs_reset = np.logical_or(terminated, truncated)
        episodes_ended += int(needs_reset.sum())
    assert episodes_ended > 0, f"{env_id}: no episode ended in {n_steps} steps; auto-reset untested"
    venv.close()


def check_functional_contract(core: FunctionalEnv, params: Any = None, n_steps: int = 30,
                              batch: int = 4) -> None:
    """The pure JAX contract: jit with a single trace, vmap shapes/dtypes, finiteness, determinism.

    Steps ``start`` / ``step_autoreset`` under ``jit`` for ``n_steps`` with random actions and
    asserts one trace; vmaps reset and step over ``batch`` keys and checks shapes against the spaces.
    """
    params = core.default_params() if params is None else params
    obs_space, act_space = core.observation_space(params), core.action_space(params)
    traces = {"start": 0, "step": 0}

    def start(key):
        traces["start"] += 1
        return core.start(key, params)

    def step(carry, action):
        traces["step"] += 1
        return core.step_autoreset(carry, action, params)

    start_j, step_j = jax.jit(start), jax.jit(step)
    act_space.seed(0)
    obs, carry = start_j(jax.random.PRNGKey(0))
    _assert_in_space(obs_space, np.asarray(obs), "functional reset observation")
    for t in range(n_steps):
        obs, carry, reward, terminated, truncated, info = step_j(carry, jnp.asarray(act_space.sample()))
        _assert_in_space(obs_space, np.asarray(obs), f"functional observation at step {t}")
        _assert_in_space(obs_space, np.asarray(info["final_obs"]), f"final_obs at step {t}")
        assert np.isfinite(float(reward)), f"non-finite reward at step {t}"
        assert np.asarray(terminated).dtype == bool and np.asarray(truncated).dtype == bool
    assert traces == {"start": 1, "step": 1}, f"retraced: {traces}"

    keys = jax.random.split(jax.random.PRNGKey(1), batch)
    vobs, vstate = jax.jit(jax.vmap(lambda k: core.reset(k, params)))(keys)
    assert vobs.shape == (batch, *obs_space.shape) and vobs.dtype == obs_space.dtype
    actions = jnp.asarray(np.stack([act_space.sample() for _ in range(batch)]))
    out = jax.jit(jax.vmap(lambda k, s, a: core.step(k, s, a, params)))(keys, vstate, actions)
    vobs2, _, vreward, vterm, vtrunc, _ = out
    assert vobs2.shape == (batch, *obs_space.shape) and vobs2.dtype == obs_space.dtype
    assert vreward.shape == (batch,) and vterm.shape == (batch,) and vtrunc.shape == (batch,)
    # determinism of the pure API
    again = jax.jit(jax.vmap(lambda k, s, a: core.step(k, s, a, params)))(keys, vstate, actions)
    for x, y in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _is_number_tuple(x: Any) -> bool:
    return isinstance(x, tuple) and not hasattr(x, "_fields") and all(isinstance(v, int | float) for v in x)


def _array_leaves(tree: Any) -> list:
    """Leaves of a NumPy-backend state, a tuple of Python numbers (how a single env may hold a
    short axis, see :mod:`recgym.core.pyscalar`) counting as one array leaf, as on JAX."""
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree, is_leaf=_is_number_tuple)]


def assert_backends_agree(core: FunctionalEnv, params: Any, seed: int, actions: list[Any],
                          atol: float = 1e-5, options: dict | None = None) -> int:
    """Step the NumPy backend and the JAX backend on the same noise and compare every output.

    The NumPy side is a :class:`~recgym.core.adapters.FunctionalGymEnv` seeded with ``seed``; the
    JAX side calls :meth:`FunctionalEnv.reset` / :meth:`FunctionalEnv.step` with the keys of
    :func:`~recgym.core.functional.episode_key_chain`. Observations, rewards and float state to
    ``atol``; flags, integer state and integer info exactly.

    Returns:
        The number of steps compared (stops at the end of the episode).
    """
    from recgym.core.adapters import seed_key
    from recgym.core.functional import episode_key_chain

    env = FunctionalGymEnv(core, params)
    obs_np, _ = env.reset(seed=seed, options=options)
    _, reset_key, episode_key = episode_key_chain(seed_key(seed))
    obs_jx, state_jx = core.reset(reset_key, params, options)
    np.testing.assert_allclose(obs_np, np.asarray(obs_jx), atol=atol)
    step = jax.jit(lambda k, s, a: core.step(k, s, a, params))
    for t, action in enumerate(actions):
        obs_np, r_np, te_np, tr_np, info_np = env.step(action)
        k = jax.random.fold_in(episode_key, t)
        obs_jx, state_jx, r_jx, te_jx, tr_jx, info_jx = step(k, state_jx, jnp.asarray(action))
        msg = f"backends differ at step {t}"
        np.testing.assert_allclose(obs_np, np.asarray(obs_jx), atol=atol, err_msg=msg)
        np.testing.assert_allclose(r_np, float(r_jx), atol=atol, err_msg=msg)
        assert (te_np, tr_np) == (bool(te_jx), bool(tr_jx)), msg
        for leaf_np, leaf_jx in zip(_array_leaves(env.state), jax.tree_util.tree_leaves(state_jx)):
            leaf_jx = np.asarray(leaf_jx)
            if np.issubdtype(leaf_jx.dtype, np.floating):
                np.testing.assert_allclose(leaf_np, leaf_jx, atol=atol, err_msg=msg)
            else:
                np.testing.assert_array_equal(leaf_np, leaf_jx, err_msg=msg)
        for name in info_np:
            a, b = np.asarray(info_np[name]), np.asarray(info_jx[name])
            if np.issubdtype(b.dtype, np.floating):
                np.testing.assert_allclose(a, b, atol=atol, err_msg=f"{msg}: info[{name!r}]")
            else:
                np.testing.assert_array_equal(a, b, err_msg=f"{msg}: info[{name!r}]")
        if te_np or tr_np:
            return t + 1
    return len(actions)


def check_key_chain(env_id: str, seed: int = 0, n_steps: int = 80, kwargs: dict | None = None,
                    atol: float = 1e-4) -> int:
    """One seed, one trajectory, on every path: ``gym.make``, ``gym.make_vec`` and ``lax.scan``.

    Runs the same actions (across episode ends) through the single env seeded ``seed`` (calling
    ``reset()`` after each episode), env 0 of a native vector env reset with ``seed`` (next-step
    auto-reset), and a jitted ``lax.scan`` of the core's ``step_autoreset`` from
    ``start(PRNGKey(seed))``; asserts equal observations (the next episode's first where one
    ended), rewards and flags.

    Returns:
        The number of episodes that ended (an episode boundary must be crossed: at least 1).
    """
    kwargs = dict(kwargs or {})
    env = gym.make(env_id, **kwargs)
    core, params = env.unwrapped.core, env.unwrapped.params
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(n_steps)]

    single = []
    obs, _ = env.reset(seed=seed)
    first = np.array(obs)
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
        single.append((np.array(obs), float(reward), bool(terminated), bool(truncated)))
    env.close()

    def body(carry, action):
        obs, carry, reward, terminated, truncated, _ = core.step_autoreset(carry, action, params)
        return carry, (obs, reward, terminated, truncated)

    obs0, carry = jax.jit(lambda k: core.start(k, params))(seed_key(seed))
    _, scanned = jax.jit(lambda c, a: jax.lax.scan(body, c, a))(carry, jnp.asarray(np.stack(actions)))
    scanned = jax.device_get(scanned)

    venv = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", **kwargs)
    vobs, _ = venv.reset(seed=seed)
    vector = []
    for action in actions:
        batch = np.stack([action, action])
        vobs, reward, terminated, truncated, _ = venv.step(batch)
        entry = [np.array(vobs[0]), float(reward[0]), bool(terminated[0]), bool(truncated[0])]
        if entry[2] or entry[3]:  # next-step auto-reset: the next call starts the next episode
            vobs, *_ = venv.step(batch)
            entry[0] = np.array(vobs[0])
        vector.append(tuple(entry))
    venv.close()

    np.testing.assert_allclose(first, np.asarray(obs0), atol=atol, err_msg=f"{env_id}: start != reset(seed)")
    ended = 0
    for t, (o, r, te, tr) in enumerate(single):
        for path, (o2, r2, te2, tr2) in (
            ("lax.scan of step_autoreset", (scanned[0][t], float(scanned[1][t]), bool(scanned[2][t]), bool(scanned[3][t]))),
            ("make_vec env 0", vector[t]),
        ):
            msg = f"{env_id}: {path} differs from gym.make at step {t}"
            np.testing.assert_allclose(o, np.asarray(o2), atol=atol, err_msg=msg)
            np.testing.assert_allclose(r, r2, atol=atol, err_msg=msg)
            assert (te, tr) == (te2, tr2), msg
        ended += te or tr
    assert ended > 0, f"{env_id}: no episode ended in {n_steps} steps; the chain across episodes is untested"
    return ended
