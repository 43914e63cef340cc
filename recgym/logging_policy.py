"""Log episodes of any recgym policy, with propensities, to a Minari dataset or a Parquet file.

Command line (``python -m recgym.logging_policy --help``)::

    python -m recgym.logging_policy --env RecGym-MovieLens-v0 --policy matrix-factorization \\
        --temperature 0.2 --epsilon 0.1 --episodes 10000 --out recgym/movielens-mf-v0

writes the Minari dataset ``recgym/movielens-mf-v0`` (under ``$MINARI_DATASETS_PATH``, default
``~/.minari/datasets``); ``--format parquet --out logs/mf.parquet`` writes one Parquet file.

The logging policy is the named policy made stochastic by
:class:`~recgym.stochastic_policy.StochasticPolicy` (softmax at ``--temperature`` with an
``--epsilon``-uniform floor), so every logged action comes with its probability — the propensity
that off-policy evaluation (:mod:`recgym.ope`) divides by. Episodes run on the native vector env
(``--num-envs`` at a time, one jitted call per step for all of them) and are written one wave of
``--num-envs`` episodes at a time, so memory stays bounded however many episodes are exported;
a progress bar counts them. Episode ``e`` is reset with seed ``seed + e`` whatever ``--num-envs``
is, so the same command gives the same dataset.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from recgym.logged_data import (
    LoggedEpisodes,
    MinariWriter,
    ParquetWriter,
    env_spec_with_kwargs,
)
from recgym.policies import ScoringPolicy
from recgym.stochastic_policy import StochasticPolicy

__all__ = [
    "collect_episodes",
    "export",
    "main",
    "make_logging_env",
    "policy_from_name",
    "policy_names",
]


def _slug(name: str) -> str:
    """``"popularity (IMDB weighted)"`` -> ``"popularity-imdb-weighted"`` (command-line names)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _registry() -> dict[str, Any]:
    from recgym.evaluation import BASELINES
    from recgym.recommenders.simulator_policy import RECOMMENDER_POLICIES

    return {_slug(name): factory for name, factory in {**BASELINES, **RECOMMENDER_POLICIES}.items()}


def policy_names() -> list[str]:
    """The names :func:`policy_from_name` accepts (baselines, then the classical recommenders)."""
    return list(_registry())


def policy_from_name(name: str, env: Any, seed: int = 0) -> ScoringPolicy:
    """Build a named policy for ``env`` — the one place that maps names to policy factories.

    Args:
        name: A baseline of :data:`recgym.evaluation.BASELINES` or a recommender of
            :data:`recgym.recommenders.simulator_policy.RECOMMENDER_POLICIES`, in command-line
            form (``"matrix-factorization"``, ``"most-popular"``, ...; see :func:`policy_names`).
        env: The MovieLens env or vector env the policy will act in (recommenders are fitted on
            its world's logged training ratings; privileged baselines read its hidden state).
        seed: Seed passed to the factory.

    Returns:
        The policy (a :class:`~recgym.policies.ScoringPolicy`).
    """
    import dataclasses

    from recgym.envs.movielens import MovieLensAccess
    from recgym.evaluation import PolicyContext

    registry = _registry()
    key = _slug(name)
    if key not in registry:
        raise ValueError(f"unknown policy {name!r}; choose one of {sorted(registry)}")
    base = getattr(env, "unwrapped", env)
    params = base.params
    slate = int(params.slate_size)
    fields = {
        "env": base,
        "params": params,
        "world": base.world,
        "n_items": int(params.n_items),
        "slate_size": None if slate == 1 else slate,
        "num_envs": int(getattr(base, "num_envs", 1)),
        "seed": int(seed),
        "access": MovieLensAccess(base, cache=False) if callable(getattr(base, "true_utilities", None)) else None,
    }
    # the evaluation harness's context grows fields as it generalises: pass the ones it has
    known = {field.name for field in dataclasses.fields(PolicyContext)}
    context = PolicyContext(**{name: value for name, value in fields.items() if name in known})
    policy = registry[key](context)
    if not isinstance(policy, ScoringPolicy):
        raise TypeError(f"policy {name!r} does not score items: it cannot be made stochastic")
    return policy


def make_logging_env(env_id: str, num_envs: int, **env_kwargs: Any) -> gym.vector.VectorEnv:
    """The native vector env episodes are logged on (``gym.make_vec(..., "vector_entry_point")``)."""
    import recgym  # noqa: F401  (registers the ids)

    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **env_kwargs)


def collect_episodes(
    env: gym.vector.VectorEnv,
    policy: StochasticPolicy,
    n_episodes: int,
    seed: int = 0,
    user_ids: Sequence[int] | None = None,
) -> Iterator[LoggedEpisodes]:
    """Run ``policy`` for ``n_episodes`` seeded episodes and yield them wave by wave.

    A wave resets all ``num_envs`` envs (env ``i`` of the wave starting at episode ``e`` with seed
    ``seed + e + i``) and steps them until every episode of the wave has ended; the episodes
    beyond ``n_episodes`` in the last wave are run but not yielded.

    Args:
        env: A MovieLens native vector env (:func:`make_logging_env`).
        policy: The logging policy, acting for ``env.num_envs`` envs.
        n_episodes: Episodes to log.
        seed: Base seed of the episodes (and of the policy's draws).
        user_ids: Optional users (world user indices) to serve, episode ``e`` getting
            ``user_ids[e % len(user_ids)]`` through the ``user_id`` reset option; default: the env
            draws each user from the episode's seed.

    Yields:
        :class:`~recgym.logged_data.LoggedEpisodes` of at most ``num_envs`` episodes each.
    """
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int | np.integer) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(policy, StochasticPolicy):
        raise TypeError(
            f"the logging policy must report propensities (a StochasticPolicy), got {type(policy).__name__}"
        )
    base = env.unwrapped
    num_envs = int(base.num_envs)
    horizon = int(base.params.max_episode_steps)
    pool = None if user_ids is None else np.asarray(user_ids, dtype=np.int64)
    for wave_start in range(0, n_episodes, num_envs):
        episodes = np.arange(wave_start, wave_start + num_envs)
        users = None if pool is None else pool[episodes % len(pool)]
        wave_seed = int(np.random.SeedSequence([seed, wave_start]).generate_state(1)[0])
        policy.reset(num_envs=num_envs, seed=wave_seed)
        chunk = _run_wave(env, policy, seed + episodes, users, horizon)
        size = min(num_envs, n_episodes - wave_start)
        yield _first(chunk, size)


def _run_wave(env, policy, seeds, users, horizon) -> LoggedEpisodes:
    n = len(seeds)
    options = None if users is None else {"user_id": users}
    obs, info = env.reset(seed=[int(s) for s in seeds], options=options)
    info = _public(info)
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    infos = [info]
    lengths = np.zeros(n, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    for _ in range(horizon):
        action, propensity = policy.act_with_propensities(obs, info)
        step_propensities = policy.position_propensities.copy()
        obs, reward, terminated, truncated, info = env.step(action)
        info = _public(info)
        info["propensity"] = propensity
        if policy.slate_size is not None:
            info["position_propensities"] = step_propensities
        observations.append(obs)
        actions.append(np.asarray(action, dtype=np.int64))
        rewards.append(np.asarray(reward, dtype=np.float64))
        terminations.append(np.asarray(terminated, dtype=bool))
        truncations.append(np.asarray(truncated, dtype=bool))
        infos.append(info)
        lengths += alive
        alive &= ~(np.asarray(terminated) | np.asarray(truncated))
        if not alive.any():
            break
    return LoggedEpisodes(
        observations=np.stack(observations, axis=1).astype(np.float32),
        actions=np.stack(actions, axis=1),
        rewards=np.stack(rewards, axis=1),
        terminations=np.stack(terminations, axis=1),
        truncations=np.stack(truncations, axis=1),
        infos=_stack_infos(infos, lengths),
        lengths=lengths,
        seeds=np.asarray(seeds, dtype=np.int64),
        users=np.asarray(infos[0]["user"], dtype=np.int64),
        user_fixed=users is not None,
    )


def _public(info: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in info.items() if not key.startswith("_")}


def _stack_infos(infos: list[dict[str, np.ndarray]], lengths: np.ndarray) -> dict[str, np.ndarray]:
    """``{key: (n, T + 1, ...)}`` with the reset row filled where the reset info lacks a key, and
    everything after an episode's end zeroed (the vector env's next-step auto-reset rows)."""
    template = infos[-1]
    out = {}
    for key, last in template.items():
        rows = []
        for info in infos:
            if key in info:
                rows.append(np.asarray(info[key], dtype=last.dtype))
            else:
                fill = np.nan if key == "propensity" or key == "position_propensities" else (
                    -1 if key == "clicked_item" else 0)
                rows.append(np.full(last.shape, fill, dtype=last.dtype))
        out[key] = np.stack(rows, axis=1)
    steps = np.arange(len(infos))
    after_end = steps[None, :] > lengths[:, None]
    for value in out.values():
        value[after_end] = 0
    return out


def _first(chunk: LoggedEpisodes, size: int) -> LoggedEpisodes:
    """The first ``size`` episodes, trimmed to their longest length, padding zeroed."""
    lengths = chunk.lengths[:size]
    horizon = int(lengths.max())
    steps = np.arange(horizon)
    after = steps[None, :] >= lengths[:, None]

    def cut(value: np.ndarray, extra: int) -> np.ndarray:
        out = np.array(value[:size, : horizon + extra])
        mask = after if extra == 0 else np.concatenate([np.zeros((size, 1), bool), after], axis=1)
        out[mask] = 0
        return out

    return LoggedEpisodes(
        observations=cut(chunk.observations, 1),
        actions=cut(chunk.actions, 0),
        rewards=cut(chunk.rewards, 0),
        terminations=cut(chunk.terminations, 0),
        truncations=cut(chunk.truncations, 0),
        infos={key: cut(value, 1) for key, value in chunk.infos.items()},
        lengths=lengths,
        seeds=chunk.seeds[:size],
        users=chunk.users[:size],
        user_fixed=chunk.user_fixed,
    )


def export(
    chunks: Iterator[LoggedEpisodes],
    out: str,
    *,
    format: str = "minari",
    n_episodes: int | None = None,
    observation_space: Any = None,
    action_space: Any = None,
    env_spec: Any = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> int:
    """Stream chunks of logged episodes to a Minari dataset or a Parquet file, atomically.

    Args:
        chunks: From :func:`collect_episodes` (consumed lazily: one chunk in memory at a time).
        out: Minari dataset id (``format="minari"``) or Parquet file path.
        format: ``"minari"`` or ``"parquet"``.
        n_episodes: Total, for the progress bar.
        observation_space: Single observation space (Minari).
        action_space: Single action space (Minari).
        env_spec: Spec that rebuilds the env (Minari's ``recover_environment``).
        metadata: Dataset metadata (JSON-serialisable values).
        overwrite: Replace an existing dataset / file (only once the new one is complete).
        progress: Show a progress bar (episodes written).

    Returns:
        The number of episodes written.
    """
    if format == "minari":
        writer: Any = MinariWriter(out, observation_space, action_space, env_spec, metadata, overwrite)
    elif format == "parquet":
        writer = ParquetWriter(out, metadata, overwrite)
    else:
        raise ValueError(f"format must be 'minari' or 'parquet', got {format!r}")
    with writer, tqdm(total=n_episodes, unit="episode", disable=not progress, desc=f"logging to {out}") as bar:
        for chunk in chunks:
            writer.write(chunk)
            bar.update(len(chunk))
    return writer.total_episodes


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recgym.logging_policy",
        description="Log episodes of a recgym policy (with propensities) to Minari or Parquet.",
    )
    parser.add_argument("--env", default="RecGym-MovieLens-v0", help="registered MovieLens env id")
    parser.add_argument("--policy", default="matrix-factorization",
                        help="logging policy's scorer: one of " + ", ".join(policy_names()))
    parser.add_argument("--temperature", type=float, default=0.2,
                        help="softmax temperature in score units (0: epsilon-greedy)")
    parser.add_argument("--epsilon", type=float, default=0.1, help="uniform-exploration weight")
    parser.add_argument("--episodes", type=int, default=1000, help="episodes to log")
    parser.add_argument("--out", required=True,
                        help="Minari dataset id (e.g. recgym/movielens-mf-v0) or Parquet path")
    parser.add_argument("--format", choices=("minari", "parquet"), default="minari")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--seed", type=int, default=0, help="episode e is reset with seed + e")
    parser.add_argument("--num-envs", type=int, default=256, help="episodes stepped at once (chunk size)")
    parser.add_argument("--dataset", default=None, help="env dataset (default: the env's, ml-latest-small)")
    parser.add_argument("--users", default="train", choices=("train", "test", "all"))
    parser.add_argument("--env-kwargs", default="{}", type=json.loads,
                        help='more env arguments as JSON, e.g. \'{"slate_size": 3}\'')
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    args = _parse_args(argv)
    env_kwargs = dict(args.env_kwargs, users=args.users)
    if args.dataset is not None:
        env_kwargs["dataset"] = args.dataset
    env = make_logging_env(args.env, args.num_envs, **env_kwargs)
    scorer = policy_from_name(args.policy, env, seed=args.seed)
    policy = StochasticPolicy(scorer, temperature=args.temperature, epsilon=args.epsilon)
    metadata = {
        "algorithm_name": policy.name,
        "description": (
            f"Episodes of {policy.name} on {args.env} logged by recgym; infos['propensity'][t + 1] "
            "is the probability of actions[t] under the logging policy."
        ),
        "recgym_logging_policy": {
            "policy": args.policy, "temperature": args.temperature, "epsilon": args.epsilon,
            "seed": args.seed, "env_id": args.env, "env_kwargs": env_kwargs,
        },
    }
    chunks = collect_episodes(env, policy, args.episodes, seed=args.seed)
    written = export(
        chunks, args.out, format=args.format, n_episodes=args.episodes,
        observation_space=env.single_observation_space, action_space=env.single_action_space,
        env_spec=env_spec_with_kwargs(args.env, env_kwargs), metadata=metadata,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    print(f"wrote {written} episodes to {args.out} ({args.format})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
