"""Off-policy evaluation: estimate a policy's value from episodes another policy logged.

Given episodes logged by a stochastic policy ``b`` with its propensities ``b(a_t | x_t)``
(:mod:`recgym.logging_policy`), the value of a target policy ``pi`` — its expected episode return
— is estimated by reweighting the logged rewards with the likelihood ratios
``rho_t = pi(a_t | x_t) / b(a_t | x_t)``. With ``w_{e,t} = prod_{s <= t} rho_{e,s}`` the cumulative
weight of episode ``e`` up to step ``t``, ``W_e`` its weight at the end and ``G_e`` its return:

* **IPS** (trajectory-wise inverse propensity scoring): ``mean_e W_e G_e``. Unbiased.
* **SNIPS** (self-normalised IPS, weighted importance sampling): ``sum_e W_e G_e / sum_e W_e``.
  Biased by ``O(1/n)``, far lower variance, and always within the range of the logged returns.
* **PDIS** (per-decision IPS): ``mean_e sum_t w_{e,t} r_{e,t}``: a reward is reweighted only by
  the decisions before it. Unbiased, lower variance than IPS.
* **WPDIS** (self-normalised per-decision): ``sum_t (sum_e w_{e,t} r_{e,t}) / (sum_e w_{e,t})``,
  where an episode that has ended keeps its last weight and earns 0.

All need the support condition: ``pi`` may only take actions ``b`` could take (``b > 0``), which
the epsilon floor of :class:`~recgym.stochastic_policy.StochasticPolicy` guarantees for every
servable item. Standard errors come from the estimators' influence functions (the plain standard
error of the mean for IPS and PDIS; the delta method for the self-normalised ones), and the
effective sample size ``(sum W)^2 / sum W^2`` says how many logged episodes the estimate is
really worth: when it collapses, the estimate cannot be trusted whatever its standard error says.

The target's probabilities of the logged actions come from replaying it over the logged
observations and infos (:func:`target_probabilities`): it must be a policy of the logged data
(a recommender, a trained agent, a baseline on logged popularity), not one that reads the
simulator's hidden state. :func:`on_policy_value` runs a policy in the simulator to get the true
value the estimates are checked against.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recgym.logged_data import LoggedEpisodes, read_minari, read_parquet
from recgym.policies import ScoringPolicy
from recgym.stochastic_policy import StochasticPolicy

__all__ = [
    "ESTIMATORS",
    "OPEEstimate",
    "WeightedEpisodes",
    "estimate",
    "evaluate_offline",
    "on_policy_value",
    "target_probabilities",
    "weighted_episodes",
]


@dataclass(frozen=True)
class OPEEstimate:
    """A policy-value estimate.

    Attributes:
        estimator: ``"ips"``, ``"snips"``, ``"pdis"``, ``"wpdis"``, ``"logged"`` (the logging
            policy's own mean return) or ``"on-policy"`` (a simulator run).
        value: Estimated expected episode return (reward units).
        stderr: Its standard error.
        n_episodes: Episodes used.
        effective_sample_size: ``(sum W)^2 / sum W^2`` of the trajectory weights (``n_episodes``
            for unweighted estimates).
    """

    estimator: str
    value: float
    stderr: float
    n_episodes: int
    effective_sample_size: float

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """``value -/+ z * stderr`` (a normal-approximation confidence interval)."""
        return self.value - z * self.stderr, self.value + z * self.stderr


@dataclass
class WeightedEpisodes:
    """Logged rewards with the target / logging likelihood ratios, padded to a common length.

    Attributes:
        rewards: ``(n, T)`` rewards (0 past an episode's end).
        ratios: ``(n, T)`` ``pi(a_t | x_t) / b(a_t | x_t)`` (1 past an episode's end).
        lengths: ``(n,)`` steps per episode.
    """

    rewards: np.ndarray
    ratios: np.ndarray
    lengths: np.ndarray

    @property
    def cumulative_weights(self) -> np.ndarray:
        """``(n, T)`` ``w_{e,t}``, the product of the ratios up to and including step ``t``."""
        return np.cumprod(self.ratios, axis=1)

    @property
    def episode_weights(self) -> np.ndarray:
        """``(n,)`` ``W_e``, the product of all of an episode's ratios."""
        return self.cumulative_weights[:, -1]

    @property
    def returns(self) -> np.ndarray:
        """``(n,)`` undiscounted episode returns ``G_e``."""
        return self.rewards.sum(axis=1)


def _ratio_estimate(numerators: np.ndarray, denominators: np.ndarray) -> tuple[float, float]:
    """``sum_t mean_e a_{e,t} / mean_e b_{e,t}`` and its delta-method standard error.

    Args:
        numerators: ``(n, m)`` per-episode terms ``a_{e,t}``.
        denominators: ``(n, m)`` per-episode terms ``b_{e,t}``.
    """
    n = numerators.shape[0]
    a = numerators.mean(axis=0)
    b = denominators.mean(axis=0)
    ok = b > 0
    value = float(np.sum(a[ok] / b[ok]))
    influence = ((numerators[:, ok] - (a[ok] / b[ok]) * denominators[:, ok]) / b[ok]).sum(axis=1)
    stderr = float(influence.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return value, stderr


def estimate(data: WeightedEpisodes, estimator: str) -> OPEEstimate:
    """One estimator's value of the target policy from weighted logged episodes.

    Args:
        data: From :func:`weighted_episodes`.
        estimator: ``"ips"``, ``"snips"``, ``"pdis"``, ``"wpdis"`` or ``"logged"`` (the unweighted
            mean logged return: the logging policy's value, a reference, not an estimate of the
            target's).

    Returns:
        The :class:`OPEEstimate`.
    """
    n = len(data.lengths)
    if n < 2:
        raise ValueError(f"need at least 2 logged episodes, got {n}")
    weights = data.episode_weights
    ess = float(weights.sum() ** 2 / np.sum(weights**2)) if np.any(weights > 0) else 0.0
    returns = data.returns
    if estimator == "logged":
        return OPEEstimate("logged", float(returns.mean()), float(returns.std(ddof=1) / math.sqrt(n)), n, float(n))
    if estimator == "ips":
        terms = weights * returns
        value, stderr = float(terms.mean()), float(terms.std(ddof=1) / math.sqrt(n))
    elif estimator == "pdis":
        terms = (data.cumulative_weights * data.rewards).sum(axis=1)
        value, stderr = float(terms.mean()), float(terms.std(ddof=1) / math.sqrt(n))
    elif estimator == "snips":
        value, stderr = _ratio_estimate((weights * returns)[:, None], weights[:, None])
    elif estimator == "wpdis":
        cumulative = data.cumulative_weights
        value, stderr = _ratio_estimate(cumulative * data.rewards, cumulative)
    else:
        raise ValueError(f"estimator must be one of {ESTIMATORS + ('logged',)}, got {estimator!r}")
    return OPEEstimate(estimator, value, stderr, n, ess)


ESTIMATORS: tuple[str, ...] = ("ips", "snips", "pdis", "wpdis")
"""The off-policy estimators :func:`estimate` implements (see the module docstring)."""


def _as_stochastic(policy: ScoringPolicy) -> StochasticPolicy:
    if isinstance(policy, StochasticPolicy):
        core = policy.base
    elif isinstance(policy, ScoringPolicy):
        core, policy = policy, StochasticPolicy(policy, temperature=0.0, epsilon=0.0)
    else:
        raise TypeError(f"the target must be a recgym ScoringPolicy, got {type(policy).__name__}")
    if getattr(core, "access", None) is not None:
        raise ValueError(
            f"{core.name} reads the simulator's hidden state, which a log does not hold: it cannot "
            "be evaluated off-policy (run it in the simulator with on_policy_value instead)"
        )
    return policy


def target_probabilities(policy: ScoringPolicy, chunk: LoggedEpisodes) -> np.ndarray:
    """The target policy's probability of every logged action, replayed over the logged episodes.

    The policy acts for the chunk's episodes at once (one env per episode), sees each logged
    observation and info, and its memory (served items, a recommender's history) follows the
    logged actions (:meth:`~recgym.stochastic_policy.StochasticPolicy.action_probabilities`).

    Args:
        policy: The target: a :class:`~recgym.stochastic_policy.StochasticPolicy`, or any
            deterministic :class:`~recgym.policies.ScoringPolicy` (probability 1 for its own
            action, 0 otherwise).
        chunk: Logged episodes.

    Returns:
        ``(B, T)`` probabilities (1 past an episode's end).
    """
    target = _as_stochastic(policy)
    n, horizon = chunk.rewards.shape
    target.reset(num_envs=n, seed=0)  # replay draws nothing: the seed only fixes the state
    probabilities = np.ones((n, horizon))
    valid = np.arange(horizon)[None, :] < chunk.lengths[:, None]
    for t in range(horizon):
        infos = {key: value[:, t] for key, value in chunk.infos.items()}
        p = target.action_probabilities(chunk.observations[:, t], infos, chunk.actions[:, t])
        probabilities[:, t] = np.where(valid[:, t], p, 1.0)
    return probabilities


def _chunks(logged: Any, chunk_episodes: int) -> Iterable[LoggedEpisodes]:
    if isinstance(logged, LoggedEpisodes):
        return [logged]
    if isinstance(logged, str):
        if logged.endswith(".parquet"):
            return read_parquet(logged, chunk_episodes)
        return read_minari(logged, chunk_episodes)
    if type(logged).__name__ == "MinariDataset":
        return read_minari(logged, chunk_episodes)
    return logged


def weighted_episodes(
    logged: Any, target: ScoringPolicy, chunk_episodes: int = 256
) -> WeightedEpisodes:
    """Replay ``target`` over logged episodes and pair each logged reward with its ratio.

    Args:
        logged: A Minari dataset id or ``MinariDataset``, a ``.parquet`` path, a
            :class:`~recgym.logged_data.LoggedEpisodes`, or an iterable of them.
        target: The policy to evaluate (see :func:`target_probabilities`).
        chunk_episodes: Episodes replayed at once when reading from disk.

    Returns:
        The :class:`WeightedEpisodes` of every logged episode.
    """
    rewards, ratios, lengths = [], [], []
    for chunk in _chunks(logged, chunk_episodes):
        valid = np.arange(chunk.rewards.shape[1])[None, :] < chunk.lengths[:, None]
        logging = np.where(valid, chunk.propensities, 1.0)
        if np.any(logging <= 0) or not np.all(np.isfinite(logging)):
            raise ValueError("logged propensities must be finite and > 0 on every logged step")
        rewards.append(np.where(valid, chunk.rewards, 0.0))
        ratios.append(target_probabilities(target, chunk) / logging)
        lengths.append(chunk.lengths)
    if not lengths:
        raise ValueError("no logged episodes")
    horizon = max(r.shape[1] for r in rewards)

    def pad(blocks: Sequence[np.ndarray], fill: float) -> np.ndarray:
        return np.concatenate([np.pad(b, ((0, 0), (0, horizon - b.shape[1])), constant_values=fill)
                               for b in blocks])

    return WeightedEpisodes(pad(rewards, 0.0), pad(ratios, 1.0), np.concatenate(lengths))


def evaluate_offline(
    logged: Any,
    target: ScoringPolicy,
    estimators: Sequence[str] = ESTIMATORS,
    chunk_episodes: int = 256,
) -> dict[str, OPEEstimate]:
    """Every requested estimate of ``target``'s value from logged episodes.

    Args:
        logged: See :func:`weighted_episodes`.
        target: The policy to evaluate.
        estimators: Names among :data:`ESTIMATORS` (and ``"logged"``).
        chunk_episodes: Episodes replayed at once.

    Returns:
        ``{estimator: OPEEstimate}``.

    Example:
        ``evaluate_offline("recgym/movielens-mf-v0", target)["snips"].interval()``
    """
    data = weighted_episodes(logged, target, chunk_episodes)
    return {name: estimate(data, name) for name in estimators}


def on_policy_value(
    env: Any, policy: StochasticPolicy | ScoringPolicy, n_episodes: int, seed: int = 0
) -> OPEEstimate:
    """The policy's value measured in the simulator: its mean return over seeded episodes.

    Args:
        env: A MovieLens vector env (:func:`recgym.logging_policy.make_logging_env`) with the
            same world, population and parameters as the logged data.
        policy: The policy (a deterministic scoring policy is run greedily).
        n_episodes: Episodes to run.
        seed: Base seed (use seeds the log did not use, so the two are independent).

    Returns:
        ``OPEEstimate("on-policy", mean return, its standard error, n_episodes, n_episodes)``.
    """
    from recgym.logging_policy import collect_episodes

    stochastic = policy if isinstance(policy, StochasticPolicy) else StochasticPolicy(policy, 0.0, 0.0)
    returns = np.concatenate([chunk.rewards.sum(axis=1) for chunk in
                              collect_episodes(env, stochastic, n_episodes, seed=seed)])
    stderr = float(returns.std(ddof=1) / math.sqrt(len(returns))) if len(returns) > 1 else math.nan
    return OPEEstimate("on-policy", float(returns.mean()), stderr, len(returns), float(len(returns)))


def _parse_target(text: str) -> tuple[str, float, float]:
    """``"matrix-factorization:0.5:0.1"`` -> (policy name, temperature, epsilon)."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"a target is POLICY:TEMPERATURE:EPSILON, got {text!r}")
    return parts[0], float(parts[1]), float(parts[2])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recgym.ope``: estimate targets from a logged Minari dataset, and check them.

    Prints a Markdown table: for every target, its true value (a simulator run on seeds the log did
    not use), each estimate with its standard error, its error, and the effective sample size.
    """
    import argparse
    import json

    from recgym.logging_policy import make_logging_env, policy_from_name

    parser = argparse.ArgumentParser(prog="python -m recgym.ope", description=main.__doc__)
    parser.add_argument("--dataset-id", required=True, help="Minari dataset written by recgym.logging_policy")
    parser.add_argument("--target", action="append", required=True,
                        help="POLICY:TEMPERATURE:EPSILON, e.g. matrix-factorization:1.0:0.1 (repeatable)")
    parser.add_argument("--true-episodes", type=int, default=10_000, help="simulator episodes per true value")
    parser.add_argument("--num-envs", type=int, default=256)
    args = parser.parse_args(argv)

    import minari

    dataset = minari.load_dataset(args.dataset_id)
    setup = dataset.storage.metadata["recgym_logging_policy"]
    env = make_logging_env(setup["env_id"], args.num_envs, **setup["env_kwargs"])
    print(f"dataset {args.dataset_id}: {dataset.total_episodes} episodes of {setup['policy']} "
          f"(T={setup['temperature']}, eps={setup['epsilon']}) on {setup['env_id']} {json.dumps(setup['env_kwargs'])}")
    print("| target | true value | " + " | ".join(ESTIMATORS) + " | ESS |")
    print("| --- | --- | " + " | ".join("---" for _ in ESTIMATORS) + " | --- |")
    for text in args.target:
        name, temperature, epsilon = _parse_target(text)
        target = StochasticPolicy(policy_from_name(name, env), temperature, epsilon)
        estimates = evaluate_offline(dataset, target)
        truth = on_policy_value(env, target, args.true_episodes, seed=10**7)
        cells = [f"{e.value:.2f} ± {e.stderr:.2f} ({e.value - truth.value:+.2f})" for e in estimates.values()]
        ess = estimates["ips"].effective_sample_size
        print(f"| {name} T={temperature:g} ε={epsilon:g} | {truth.value:.2f} ± {truth.stderr:.2f} | "
              + " | ".join(cells) + f" | {ess:,.0f} |")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
