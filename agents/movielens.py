"""What the agents know about RecGym-MovieLens: the environment, item features, a warm start.

Everything here is *observable* data — the env's observation and item features, and the logged
statistics of the world a production recommender holds (logged popularity, the logged matrix
factorisation fitted on the users' earliest ratings) — never the simulator's hidden MF, habit,
satiation or budget.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = ["TrainingEnv", "agent_item_features", "make_env_params", "warm_start_logged_mf"]


class TrainingEnv(NamedTuple):
    """The environment an agent trains in, as :func:`make_env_params` builds it.

    Its fields: ``core``, the functional core (:class:`~recgym.envs.movielens.MovieLensCore`);
    ``params``, its params (the population asked for); ``world``, the built
    :class:`~recgym.envs.movielens.MovieLensWorld`; ``item_features``, the ``(n_items,
    n_features)`` float32 features the agent scores items by (:func:`agent_item_features`).
    """

    core: Any
    params: Any
    world: Any
    item_features: np.ndarray


def agent_item_features(world: Any, params: Any, logged_item_statistics: bool = True) -> np.ndarray:
    """The item features the agent's item head reads: the env's, plus logged item statistics.

    The env's observable item features (``params.world.item_features``: genre vector, logged CF
    embedding), and with ``logged_item_statistics`` two columns more: the item's logged popularity
    ``log(1 + ratings by train users)`` (what the most-popular baseline ranks by) and its bias in
    the logged matrix factorisation (fitted on the logged histories, like the embeddings; rating
    units). The item head standardises every column over the catalogue. Both are logged data a production recommender holds,
    never the simulator's hidden MF; without them the agent must learn each item's quality from
    its own exploration, one item at a time.

    Args:
        world: The built world (``item_popularity``, ``logged_item_bias``).
        params: The env's params (``world.item_features``).
        logged_item_statistics: Append the two logged columns.

    Returns:
        ``(n_items, n_features)`` float32; the two logged columns, when present, are the last.
    """
    features = np.asarray(params.world.item_features, np.float32)
    if not logged_item_statistics:
        return features
    columns = np.stack([np.log1p(np.asarray(world.item_popularity, np.float64)),
                        np.asarray(world.logged_item_bias, np.float64)], axis=1)
    return np.concatenate([features, columns.astype(np.float32)], axis=1)


def make_env_params(config: Any, users: str = "train") -> TrainingEnv:
    """The environment ``config`` trains on: core, params, world and the agent's item features.

    Built through the registered id (``gym.make``), so the preset, time limit and world are
    exactly those of the env the baselines are evaluated in.

    Args:
        config: An agent config with ``env``, ``dataset``, ``slate_size`` and
            ``logged_item_statistics`` (e.g. :class:`agents.a2c.A2CConfig`).
        users: Population: ``"train"`` for training, ``"test"`` for held-out users.

    Returns:
        A :class:`TrainingEnv`.
    """
    import gymnasium as gym

    import recgym  # noqa: F401  (registers the ids)

    kwargs = {"slate_size": config.slate_size} if config.slate_size > 1 else {}
    env = gym.make(config.env, dataset=config.dataset, users=users, **kwargs)
    base = env.unwrapped
    env.close()
    return TrainingEnv(base.core, base.params, base.world,
                       agent_item_features(base.world, base.params, config.logged_item_statistics))


def warm_start_logged_mf(model: Any, params: Any, inverse_temperature: float) -> None:
    """Start the actor's wide part at the logged matrix factorisation's score, times ``inverse_temperature``.

    Sets the wide bilinear block so that an item's initial score is ``inverse_temperature *
    (logged_item_bias_i + profile_embedding_u . item_embedding_i)`` — the ranking a production
    recommender serves from its logged MF (the observation's logged user embedding against the
    items' logged embeddings; see :func:`recgym.envs.movielens.observation_layout`) — plus the
    small random output of the deep part (up to a constant per observation, which a softmax
    ignores). The block accounts for the model's standardisation of observations and item
    features. Reinforcement learning then starts from that recommender instead of from a uniform
    policy (how a deployed recommender is fine-tuned).

    Args:
        model: An :class:`agents.networks.ActorCritic` whose item features came from
            :func:`agent_item_features` with ``logged_item_statistics=True``; changed in place.
        params: The env's params (the observation layout).
        inverse_temperature: Scale of the initial scores (larger: a sharper initial policy).

    Raises:
        ValueError: The model's item features do not end with the logged statistics.
    """
    from recgym.envs.movielens import observation_layout

    layout = {field.name: field for field in observation_layout(params)}
    profile = layout["profile_embedding"]
    n_genres = int(params.world.n_genres)
    n_env_features = int(params.world.n_item_features)
    wide = model.actor_wide
    n_features = wide.kernel.shape[1]
    if n_features != n_env_features + 2:
        raise ValueError(
            f"the warm start needs the logged item statistics in the item features ({n_env_features} + 2 "
            f"columns), the model has {n_features}: set logged_item_statistics"
        )
    # observation o = obs_scale * x + obs_shift, item feature f = feature_scale * f_n + feature_shift,
    # with x and f_n what the wide part sees; expand beta * (o_p . f_e + f_bias) in x and f_n.
    # jnp, not NumPy: under jit(train) the model is built inside the trace.
    obs_shift, obs_scale = model.observation_shift[...], model.observation_scale[...]
    feature_scale = model.head.feature_scale[...]
    rows = profile.start + np.arange(profile.size)   # profile embedding j meets item embedding j
    columns = n_genres + np.arange(profile.size)
    beta = inverse_temperature
    kernel = jnp.zeros(wide.kernel.shape, jnp.float32).at[rows, columns].set(
        beta * obs_scale[rows] * feature_scale[columns])
    bias = jnp.zeros(wide.bias.shape, jnp.float32).at[columns].set(beta * obs_shift[rows] * feature_scale[columns])
    bias = bias.at[n_features - 1].set(beta * feature_scale[n_features - 1])  # the logged item bias
    wide.kernel[...] = kernel
    wide.bias[...] = bias
