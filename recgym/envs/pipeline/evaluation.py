"""RecGym-Pipeline in the evaluation harness: efficiency against the exact optimum, per episode.

:class:`PipelineMetrics` is the env's plug-in of :func:`recgym.evaluation.evaluate`. A step's
efficiency is the true throughput over the exact optimum of that step's conditions, read from the
step ``info`` that the optimum instrumentation adds (``gym.make(..., track_optimum=True)``, which
:func:`recgym.evaluation.make_eval_env` passes); every step after an OOM crash counts as 0 (the
trainer is down), so a crash costs the rest of the episode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from recgym.evaluation import EpisodeMetrics

#: The per-episode metric columns of RecGym-Pipeline evaluations (beside ``return`` and ``length``).
PIPELINE_COLUMNS: tuple[str, ...] = (
    "efficiency",
    "efficiency_before_change",
    "efficiency_after_change",
    "oom",
    "steps_to_90",
)


class PipelineMetrics(EpisodeMetrics):
    """Episode metrics of RecGym-Pipeline: how close a tuner keeps the pipeline to its optimum.

    Columns (:data:`PIPELINE_COLUMNS`): ``efficiency`` (mean per-step efficiency over the whole
    horizon, steps after a crash counting 0), ``efficiency_before_change`` / ``efficiency_after_change``
    (the same mean over steps ``1 .. change_step`` and ``change_step + 1 .. horizon``; in scenarios
    without a change event, two halves of the same conditions), ``oom`` (1.0 if the episode ended in
    an OOM crash) and ``steps_to_90`` (the first step whose efficiency reached 0.9; NaN if none did).
    Episodes are the harness's seeded ones: evaluate on :func:`~recgym.envs.pipeline.held_out_seeds`
    (``seed=HELD_OUT_SEED_START``) to stay clear of training seeds.
    """

    columns = PIPELINE_COLUMNS
    env_kwargs = {"track_optimum": True}

    def __init__(self, env: Any, n_episodes: int, seed: int) -> None:
        super().__init__(env, n_episodes, seed)
        self.horizon = int(env.params.max_episode_steps)
        self.change_step = int(env.params.change_step)

    def begin_wave(self, episodes: np.ndarray, info: Mapping[str, Any]) -> None:
        """Allocate the wave's per-step efficiencies (0 where no step was taken)."""
        self.efficiency = np.zeros((len(episodes), self.horizon))
        self.crashed = np.zeros(len(episodes), dtype=bool)

    def record_step(self, t: int, alive: np.ndarray, actions: np.ndarray, reward: np.ndarray,
                    info: Mapping[str, Any]) -> None:
        """The step's efficiency and crash flag, from the optimum instrumentation's ``info``."""
        if "efficiency" not in info:
            raise ValueError(
                "the step info has no 'efficiency': evaluate RecGym-Pipeline with the optimum "
                "instrumentation, e.g. make_eval_env('RecGym-Pipeline-v0', ...) or "
                "gym.make('RecGym-Pipeline-v0', track_optimum=True)"
            )
        n = len(alive)
        self.efficiency[:, t] = np.where(alive, np.asarray(info["efficiency"], dtype=np.float64).reshape(n), 0.0)
        self.crashed |= alive & np.asarray(info["oom"], dtype=bool).reshape(n)

    def end_wave(self, size: int) -> dict[str, np.ndarray]:
        """The wave's per-episode columns."""
        eff = self.efficiency[:size]
        change = min(max(self.change_step, 1), self.horizon - 1)
        reached = eff >= 0.9
        first = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1.0, np.nan)
        return {
            "efficiency": eff.mean(axis=1),
            "efficiency_before_change": eff[:, :change].mean(axis=1),
            "efficiency_after_change": eff[:, change:].mean(axis=1),
            "oom": self.crashed[:size].astype(np.float64),
            "steps_to_90": first,
        }

    def settings(self) -> dict[str, Any]:
        """The horizon and the change step."""
        return {"horizon": self.horizon, "change_step": self.change_step}
