"""The InTune-style pipeline tuner: PPO over the vectorised RecGym-Pipeline-v0 core.

After Netflix's InTune (Nagrecha et al., RecSys '23): an RL agent distributes a trainer machine's
CPU cores over the stages of a DLRM ingestion pipeline, and chooses its batch size and prefetch
depth, to feed the trainer as fast as possible without running out of memory. The agent here is
PPO (clipped surrogate, GAE with truncation bootstrapping) with separate actor and critic MLPs,
trained on the ``random`` scenario — a fresh pipeline drawn from
:class:`~recgym.envs.pipeline.params.RandomRanges` at every reset, with a change event and a noisy
neighbour — and evaluated on held-out scenario seeds and on every named scenario.

PureJaxRL's shape: :func:`make_train` returns a pure ``train(key) -> (state, metrics)`` whose
rollout (``vmap`` of :meth:`PipelineCore.step_autoreset` over pipelines, ``lax.scan`` over
steps), advantages (:func:`agents.returns.gae`) and PPO epochs run under one ``jit``. The agent
reads only the observation (what a pipeline monitor measures) and its own memory of the previous
observation; the optimum is never computed in training.

Command line (every flag is a field of :class:`TunerConfig`)::

    python -m agents.tuner --total-steps 20_000_000 --seed 0 --out runs/tuner
    python -m agents.tuner --resume runs/tuner      # continue an interrupted run

See docs/agents_tuner.md.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from agents.checkpoint import Checkpointer
from agents.config import config_to_dict
from agents.networks import ACTIVATIONS, MLP
from agents.optim import OPTIMIZERS, make_optimizer
from agents.parallel import DeviceAxis, data_parallel
from agents.returns import gae
from agents.runner import (  # noqa: F401 (CHECKPOINT_DIR and CONFIG_FILE re-exported)
    CHECKPOINT_DIR,
    CONFIG_FILE,
    RunConfig,
    initialize_processes,
    resolve_config,
    run_training,
)
from recgym.core import EnvCarry, is_int, require
from recgym.envs.pipeline import (
    ACTION_MODES,
    SCENARIOS,
    PipelineCore,
    PipelineParams,
    dynamics,
    make_params,
)
from recgym.envs.pipeline.params import NUM_STAGES, STAGES
from recgym.policies import Policy

__all__ = [
    "DECODINGS",
    "DEFAULT_GAMMA",
    "FEATURE_SIZE",
    "HEAD_ADVANTAGES",
    "HEAD_INPUTS",
    "TRAINING_REWARDS",
    "MEAN_DECODED_KNOBS",
    "ActionHeads",
    "EQUATIONS_KEPT",
    "MemoryEquations",
    "MemoryEstimate",
    "MemoryShield",
    "TunerConfig",
    "TunerNetwork",
    "TunerPolicy",
    "TunerState",
    "TunerTraining",
    "VALIDATION_SEED_START",
    "absolute_move_costs",
    "choose_actions",
    "decoded_choice",
    "episode_throughput_scale",
    "feature_sizes",
    "fresh_estimate",
    "head_advantages",
    "head_inputs",
    "knob_values",
    "main",
    "make_train",
    "observation_features",
    "observation_head_inputs",
    "parallel_efficiency",
    "proportional_shares",
    "refine_with_equations",
    "select_checkpoint",
    "shield_allowed_actions",
    "update_memory_estimate",
    "validation_score",
]

HEAD_ADVANTAGES: tuple[str, ...] = ("joint", "prefix", "chain")
"""The forms of :attr:`TunerConfig.head_advantages` (see :func:`head_advantages`)."""

TRAINING_REWARDS: tuple[str, ...] = ("measured", "true")
"""The choices of :attr:`TunerConfig.training_reward`: the monitor's measured throughput or the
simulator's noise-free one."""

DEFAULT_GAMMA: dict[str, float] = {"increment": 0.98, "absolute": 0.5}
"""The discount of each action mode when :attr:`TunerConfig.gamma` is None. In absolute mode a step
sets the whole allocation of the next interval, so its reward is nearly all the consequence of that
one choice; a long horizon only adds the noise of later choices to every advantage (0.5 raised the
validation mean over five seeds from 0.866 to 0.900, docs/agents_tuner.md). In increment mode a
one-knob move pays off only once the other knobs follow, over many steps."""


@dataclasses.dataclass(frozen=True)
class TunerConfig(RunConfig):
    """PPO tuner for RecGym-Pipeline-v0 (one field per command-line flag).

    The run-control fields (seed, total_steps, devices and processes, checkpoints, out, resume,
    progress) are inherited from :class:`agents.runner.RunConfig`; the tuner changes the defaults
    of total_steps (20,000,000), updates_per_call (20) and checkpoint_every (200).

    Attributes:
        scenario: Scenario trained on: "random" (a new pipeline from the documented ranges at
            every reset) or a named one.
        action_mode: "increment" (InTune's one-knob moves) or "absolute" (a whole configuration
            per step, chosen as bounded moves of every knob at once).
        num_envs: Pipelines stepped in parallel, all devices and processes together (divisible by
            num_devices * num_processes).
        rollout_steps: Steps per pipeline between updates.
        gamma: Discount factor of the returns; none: the action mode's own, DEFAULT_GAMMA (0.98 in
            increment mode, whose one-knob moves pay off over many steps; 0.5 in absolute mode,
            where a step sets the next interval's whole allocation).
        gae_lambda: GAE trace decay.
        learning_rate: Adam step size (the initial one when annealed).
        anneal_lr: Decay the step size linearly to 0 over the run.
        optimizer: "adam" or "rmsprop" (after global-norm clipping).
        max_grad_norm: Clip the gradient's global L2 norm to this.
        update_epochs: PPO epochs over each rollout.
        num_minibatches: Minibatches per epoch (the rollout's steps x pipelines split evenly).
        clip_coef: PPO's probability-ratio clip.
        entropy_coef: Weight of the entropy bonus in the loss (the initial one when annealed).
        anneal_entropy: Decay the entropy bonus linearly to 0 over the run, as the step size, so
            the policy is pushed towards broad distributions early and not at the end.
        value_coef: Weight of the value loss in the loss.
        oom_penalty: Reward on the step that runs the trainer out of memory, in units of the
            episode's throughput scale (the episode also ends: every later reward is lost).
        training_reward: The throughput the training loop is rewarded with: "measured" (the
            monitor's noisy reading, the one a live pipeline reports; the default) or "true" (the
            simulator's noise-free throughput: a simulation-only training signal that removes the
            measurement noise from the advantages; the policy still reads only the observation,
            and evaluation is unchanged).
        memory_shield: Mask the moves whose memory, estimated from the measured memory in use,
            would exceed the cap (in training and when acting; in absolute mode knob by knob).
        shield_probe_fraction: The shield's assumed memory cost of a move not yet measured in the
            episode, as a fraction of the memory cap.
        shield_headroom: Fraction of the memory cap the shield keeps free.
        shield_refine: The shield keeps the equations of its absolute-mode steps and tightens its
            bounds with them once the other knobs in them are measured exactly (see
            MemoryEquations). Runs saved before the option existed read False.
        shield_measure_batch: With shield_refine, the shield also prices the batch size from a
            several-knob step that changed it (the memory change less the exactly known cost of
            the other knobs it moved) and keeps the prefetch's exact cost across batch-size
            changes (see update_memory_estimate). Without it a batch size never changed alone
            stays priced at shield_probe_fraction of the cap. Runs saved before it read False.
        shield_shrink_credit: With shield_refine, absolute mode: a shrink whose release the
            shield knows from below (workers of a stage holding single samples, once exact;
            halvings of the batch size, once its cost is exact) pays for the growth of the knobs
            chosen after it in the same step, and the prefetch is priced at a halved batch size
            (see MemoryShield). Without it a shrink frees nothing in the shield's arithmetic.
            Runs saved before it read False.
        shield_batch_probe: With shield_refine, absolute mode: when the batch size's cost is not
            known exactly, one doubling at its estimate does not fit, and the policy puts at least
            half of the batch head's mass on growing it, the shield makes the step a probe: every
            knob stays but the batch size, which halves, so the memory change measures the batch
            size's cost exactly (see MemoryShield). Runs saved before it read False.
        share_features: Give the networks, besides the measured rates, each stage's
            proportional share of the available cores (split by its measured CPU-seconds per
            sample) against its workers, and the balanced throughput against the measured one
            (see observation_features). Runs saved before the option existed read False.
        scaling_features: Also give the networks each stage's measured parallel efficiency: its
            rate now over its workers times its one-worker rate in the episode's first observation
            (every episode starts at one worker per stage), from which its Amdahl fraction — how
            much one more worker adds — can be read; a single measurement does not show it (see
            observation_features). Runs saved before the option existed read False.
        hidden_width: Width of the stage encoders and torsos of the actor and of the critic.
        activation: Hidden-layer activation: "tanh" or "relu".
        core_moves: Absolute mode: the moves a stage's worker count may make in one step.
        batch_moves: Absolute mode: the moves of log2(batch size) in one step.
        prefetch_moves: Absolute mode: the moves of the prefetch depth in one step.
        batch_values: Absolute mode: the batch-size head chooses the batch size itself (every size
            from the smallest to the largest) instead of a move from the current one.
        share_targets: Absolute mode: extra choices of each stage's worker head besides its
            core_moves: set the stage's workers to this multiple of its proportional share of the
            available cores (split by the measured CPU-seconds per sample, see
            proportional_shares), rounded. Empty (the default): moves only.
        share_deadband: With share_targets: a share target (rounded, before it is clipped to the
            bounds) within this many workers of the stage's current count keeps the current count, so that small corrections the moves
            made are not undone by the next step's share target (0: none).
        head_advantages: Absolute mode: the advantage each of the eight heads is trained with.
            "joint": one advantage for the joint action (PPO's usual form). "prefix": head i's
            own, the return minus a learned baseline of the state and the earlier heads' choices
            a_<i (unbiased). "chain": the gain of head i's choice along the chain of those
            baselines, b(s, a_<=i) - b(s, a_<i), the return for the last head (lower variance;
            biased where the baselines are wrong). Both clip each head's probability ratio.
        autoregressive: Absolute mode: each head's distribution is conditioned on the choices of
            the heads before it in the same step (each stage's workers, then the batch size, then
            the prefetch depth): a small network corrects the head's logits from what the earlier
            heads moved and the stages' total workers after those moves against the available
            cores (see head_inputs), so that heads sampled one after the other can coordinate —
            one stage's large move need not coincide with another's. Off: the heads are
            independent given the state (factorised).
        eval_random_pipelines: Held-out random pipelines the trained tuner is evaluated on at the
            end (0: no evaluation).
        eval_scenario_seeds: Held-out seeds of each named scenario in the final evaluation.
    """

    #: What a saved config without these fields meant (:func:`agents.config.config_from_dict`):
    #: a run saved before the proportional-share features existed was trained without them.
    SAVED_DEFAULTS: ClassVar[dict[str, Any]] = {"share_features": False, "scaling_features": False,
                                                "shield_refine": False,
                                                "shield_measure_batch": False, "shield_shrink_credit": False,
                                                "shield_batch_probe": False}

    total_steps: int = 20_000_000  # run-control defaults of the tuner (documented in RunConfig)
    updates_per_call: int = 20
    checkpoint_every: int = 200
    scenario: str = "random"
    action_mode: str = "increment"
    num_envs: int = 512
    rollout_steps: int = 32
    gamma: float | None = None
    gae_lambda: float = 0.95
    learning_rate: float = 3e-4
    anneal_lr: bool = True
    optimizer: str = "adam"
    max_grad_norm: float = 0.5
    update_epochs: int = 4
    num_minibatches: int = 4
    clip_coef: float = 0.2
    entropy_coef: float = 0.005
    anneal_entropy: bool = False
    value_coef: float = 0.5
    oom_penalty: float = 10.0
    training_reward: str = "measured"
    memory_shield: bool = True
    shield_probe_fraction: float = 0.05
    shield_headroom: float = 0.0
    shield_refine: bool = True
    shield_measure_batch: bool = False
    shield_shrink_credit: bool = False
    shield_batch_probe: bool = False
    share_features: bool = True
    scaling_features: bool = False
    hidden_width: int = 64
    activation: str = "tanh"
    core_moves: tuple[int, ...] = (-8, -4, -2, -1, 0, 1, 2, 4, 8)
    batch_moves: tuple[int, ...] = (-2, -1, 0, 1, 2)
    prefetch_moves: tuple[int, ...] = (-8, -4, -2, -1, 0, 1, 2, 4, 8)
    batch_values: bool = False
    share_targets: tuple[float, ...] = ()
    share_deadband: int = 0
    head_advantages: str = "joint"
    autoregressive: bool = False
    eval_random_pipelines: int = 200
    eval_scenario_seeds: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_envs", "hidden_width", "rollout_steps", "update_epochs", "num_minibatches"):
            require(lambda v: is_int(v) and v >= 1, name, getattr(self, name), "an integer >= 1")
        for name in ("eval_random_pipelines", "eval_scenario_seeds"):
            require(lambda v: is_int(v) and v >= 0, name, getattr(self, name), "an integer >= 0")
        require(lambda v: v in SCENARIOS, "scenario", self.scenario, f"one of {tuple(SCENARIOS)}")
        require(lambda v: v in ACTION_MODES, "action_mode", self.action_mode, f"one of {ACTION_MODES}")
        if self.gamma is not None:
            require(lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0.0 <= v <= 1.0, "gamma",
                    self.gamma, "in [0, 1]")
        require(lambda v: 0.0 <= v <= 1.0, "gae_lambda", self.gae_lambda, "in [0, 1]")
        for name in ("learning_rate", "max_grad_norm", "clip_coef"):
            require(lambda v: math.isfinite(v) and v > 0, name, getattr(self, name), "finite and > 0")
        for name in ("entropy_coef", "value_coef", "oom_penalty"):
            require(lambda v: math.isfinite(v) and v >= 0, name, getattr(self, name), "finite and >= 0")
        options = tuple(f"shield_{name}" for name in SHIELD_OPTIONS)
        for name in ("memory_shield", "batch_values", "anneal_entropy", "share_features", "scaling_features",
                     "shield_refine", "autoregressive", *options):
            require(lambda v: isinstance(v, bool), name, getattr(self, name), "a bool")
        for name in options:
            if getattr(self, name) and not self.shield_refine:
                raise ValueError(f"{name}=True needs shield_refine=True: it reads the exact costs the kept "
                                 "equations track")
        for name in ("shield_probe_fraction", "shield_headroom"):
            require(lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0.0 <= v < 1.0, name,
                    getattr(self, name), "in [0, 1)")
        require(lambda v: v in TRAINING_REWARDS, "training_reward", self.training_reward,
                f"one of {TRAINING_REWARDS}")
        require(lambda v: v in OPTIMIZERS, "optimizer", self.optimizer, f"one of {OPTIMIZERS}")
        require(lambda v: v in HEAD_ADVANTAGES, "head_advantages", self.head_advantages, f"one of {HEAD_ADVANTAGES}")
        if self.head_advantages != "joint" and self.action_mode != "absolute":
            raise ValueError(f"head_advantages={self.head_advantages!r} needs action_mode='absolute' "
                             f"(increment mode has one head), got {self.action_mode!r}")
        require(lambda v: v in ACTIVATIONS, "activation", self.activation, f"one of {tuple(ACTIVATIONS)}")
        for name in ("core_moves", "batch_moves", "prefetch_moves"):
            require(lambda v: len(v) >= 2 and all(is_int(m) for m in v) and 0 in v and len(set(v)) == len(v),
                    name, getattr(self, name), "distinct integers including 0")
        require(lambda v: all(isinstance(m, int | float) and not isinstance(m, bool) and math.isfinite(m) and m > 0
                              for m in v) and len(set(v)) == len(v),
                "share_targets", self.share_targets, "distinct finite numbers > 0")
        require(lambda v: is_int(v) and v >= 0, "share_deadband", self.share_deadband, "an integer >= 0")
        if self.autoregressive and self.action_mode != "absolute":
            raise ValueError(f"autoregressive=True needs action_mode='absolute' (increment mode has one head), "
                             f"got {self.action_mode!r}")
        if self.share_targets and self.action_mode != "absolute":
            raise ValueError(f"share_targets needs action_mode='absolute' (increment mode moves one knob by one "
                             f"step), got {self.action_mode!r}")
        require(lambda v: v % self.total_devices == 0, "num_envs", self.num_envs,
                f"divisible by num_devices * num_processes = {self.total_devices}")
        per_device = (self.num_envs // self.total_devices) * self.rollout_steps
        require(lambda v: per_device % v == 0, "num_minibatches", self.num_minibatches,
                f"a divisor of the per-device batch {per_device}")

    @property
    def discount(self) -> float:
        """The discount the returns use: ``gamma``, or the action mode's :data:`DEFAULT_GAMMA` when it is None."""
        return DEFAULT_GAMMA[self.action_mode] if self.gamma is None else float(self.gamma)

    @property
    def steps_per_update(self) -> int:
        """Environment steps per update: ``num_envs * rollout_steps``."""
        return self.num_envs * self.rollout_steps

    @property
    def shielded(self) -> bool:
        """Whether the memory shield acts (``memory_shield``, in either action mode)."""
        return self.memory_shield


# ------------------------------------------------------------------------------------ observation
def _log(x: jax.Array) -> jax.Array:
    # Rates read 0 after a crash (and only then); the floor keeps the features finite there.
    return jnp.log(jnp.maximum(x, 1e-3))


def _log_shares(obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log share (..., 6), log total (..., 1))``: each stage's proportional share of the available
    cores and the total CPU-seconds per sample it is split by (see :func:`proportional_shares`)."""
    log_seconds = jnp.log(obs[..., dynamics.OBS_CORES]) - _log(obs[..., dynamics.OBS_RATES])
    log_total = jax.nn.logsumexp(log_seconds, axis=-1, keepdims=True)
    return jnp.log(obs[..., dynamics.OBS_AVAILABLE, None]) + log_seconds - log_total, log_total


def proportional_shares(observation: jax.Array) -> jax.Array:
    """Each stage's proportional share of the available cores, from one observation.

    A stage's workers over its measured rate are its CPU-seconds per sample; the available cores
    split in proportion to them give every stage the same rate — the balanced allocation of a
    perfectly parallel pipeline. It reads only the observation (the monitor's measurements). The
    stages' Amdahl fractions, the read stage's storage ceiling, the trainer's rate and the memory
    cap move the optimum away from it; it is a starting point the policy corrects.

    Args:
        observation: ``(..., 26)`` an observation.

    Returns:
        ``(..., 6)`` float32 workers (not rounded), summing to the available cores.
    """
    return jnp.exp(_log_shares(observation)[0])


def _stage_and_global(obs: jax.Array, share_features: bool) -> tuple[jax.Array, jax.Array]:
    """Scale-free features of one observation: ``(..., 6, 5)`` per stage and ``(..., 10)`` global
    (``(..., 6, 6)`` and ``(..., 11)`` with the proportional shares)."""
    cores = obs[..., dynamics.OBS_CORES]
    rates = obs[..., dynamics.OBS_RATES]
    available = obs[..., dynamics.OBS_AVAILABLE, None]
    cap = jnp.maximum(obs[..., dynamics.OBS_MEMORY_CAP, None], 1e-3)
    log_rates = _log(rates)
    log_bottleneck = jnp.min(log_rates, axis=-1, keepdims=True)
    stage_extra, global_extra = [], []
    if share_features:
        # The proportional share: the workers each stage would have if the available cores were
        # split in proportion to its measured CPU-seconds per sample (one worker's: cores / rate),
        # against the workers it has; and the throughput of that balanced, perfectly parallel
        # allocation against the measured one. Both are a sum over the stages that the network's
        # pooling (mean and max of per-stage embeddings) would only approximate.
        log_share, log_total = _log_shares(obs)
        stage_extra = [jnp.clip(log_share - jnp.log(cores), -4.0, 4.0) / 2.0]
        global_extra = [jnp.clip(jnp.log(available) - log_total - _log(obs[..., dynamics.OBS_THROUGHPUT, None]),
                                 -8.0, 8.0) / 2.0]
    stage = jnp.stack([
        jnp.log(cores) / jnp.log(32.0),
        cores / available,
        # Each stage's capacity, and one worker's, relative to the bottleneck's: how many workers
        # a stage has to spare, and how many the bottleneck would need to catch up.
        jnp.clip(log_rates - log_bottleneck, 0.0, 8.0) / 2.0,
        jnp.clip(log_rates - jnp.log(cores) - log_bottleneck, -8.0, 8.0) / 2.0,
        jnp.clip(_log(obs[..., dynamics.OBS_UTILISATION]), -8.0, 8.0) / 2.0,
        *stage_extra,
    ], axis=-1)
    overall = jnp.concatenate([
        # The absolute scale against the trainer (which consumes 50-100k samples/s).
        (log_bottleneck - jnp.log(50.0)) / 2.0,
        jnp.clip(_log(obs[..., dynamics.OBS_THROUGHPUT, None]) - log_bottleneck, -8.0, 8.0) / 2.0,
        obs[..., dynamics.OBS_IDLE, None],
        (jnp.log2(jnp.maximum(obs[..., dynamics.OBS_BATCH, None], 1.0)) - 6.0) / 7.0,
        obs[..., dynamics.OBS_PREFETCH, None] / 16.0,
        obs[..., dynamics.OBS_MEMORY, None] / cap,
        jnp.log(cap) / 4.0,
        jnp.sum(cores, axis=-1, keepdims=True) / available,
        jnp.log(available) / 4.0,
        available / jnp.maximum(obs[..., dynamics.OBS_BUDGET, None], 1.0),
        *global_extra,
    ], axis=-1)
    return stage, overall


STAGE_FEATURES = 2 * 6 + 1 + NUM_STAGES
"""Features per stage in :func:`observation_features`: 6 per observation for two observations
(5 without the proportional shares), the change of the stage's workers, and the stage's one-hot
identity."""
GLOBAL_FEATURES = 2 * 11 + 2
"""Global features in :func:`observation_features`: 11 per observation for two observations (10
without the proportional shares), the change of memory use and of log throughput."""
FEATURE_SIZE = NUM_STAGES * STAGE_FEATURES + GLOBAL_FEATURES
"""Length of :func:`observation_features` (with the proportional shares, the default): the
per-stage block (stage-major), then the global one."""


def feature_sizes(share_features: bool = True, scaling_features: bool = False) -> tuple[int, int]:
    """``(per-stage, global)`` feature counts of :func:`observation_features`."""
    scaling = int(scaling_features)
    if share_features:
        return STAGE_FEATURES + scaling, GLOBAL_FEATURES
    return STAGE_FEATURES - 2 + scaling, GLOBAL_FEATURES - 2


def parallel_efficiency(observation: jax.Array, first_observation: jax.Array) -> jax.Array:
    """Each stage's measured rate over its workers times its one-worker rate in the episode's first
    observation.

    Every episode starts at one worker per stage, so the first observation measures each stage's
    one-worker rate. With ``c`` workers an Amdahl stage of serial fraction ``f`` runs
    ``c / (1 + f (c - 1))`` times faster, so the ratio is ``1 / (1 + f (c - 1))`` — 1 for a stage
    that scales perfectly, lower the more its serial part holds it back — times what slows every
    stage alike (oversubscribed cores) and any change of the stage's cost since the episode
    started. A single measurement cannot tell these stages apart: it shows a stage's rate, not
    what one more worker would add. Reads only the two observations.

    Args:
        observation: ``(..., 26)`` the latest observation.
        first_observation: ``(..., 26)`` the episode's first observation.

    Returns:
        ``(..., 6)`` float32, positive.
    """
    def per_worker(obs):
        return jnp.maximum(obs[..., dynamics.OBS_RATES], 1e-6) / jnp.maximum(obs[..., dynamics.OBS_CORES], 1.0)

    return per_worker(observation) / per_worker(first_observation)


def observation_features(observation: jax.Array, previous_observation: jax.Array,
                         share_features: bool = True, first_observation: jax.Array | None = None) -> jax.Array:
    """What the tuner's networks read: scale-free features of the last two measurements.

    Rates span orders of magnitude across pipelines, so they enter as logs relative to the
    bottleneck's; memory as a fraction of the cap; cores as a fraction of those available. The
    previous observation (the agent's own memory; the current one again at an episode's start)
    and the change between the two let the agent see what its last move did — e.g. how much
    memory the workers it added cost, which no single measurement shows. With
    ``share_features`` (:attr:`TunerConfig.share_features`) each observation also gives each
    stage's proportional share of the available cores (split by its measured CPU-seconds per
    sample) against its workers, and the balanced throughput against the measured one. Given the
    episode's ``first_observation`` (:attr:`TunerConfig.scaling_features`), each stage also gets the
    log of its :func:`parallel_efficiency`.

    Args:
        observation: ``(..., 26)`` the latest observation.
        previous_observation: ``(..., 26)`` the one before it.
        share_features: Include the proportional-share features.
        first_observation: ``(..., 26)`` the episode's first observation, or None (no
            parallel-efficiency feature).

    Returns:
        ``(..., NUM_STAGES * s + g)`` float32 with ``(s, g) = feature_sizes(share_features,
        first_observation is not None)``
        (:data:`FEATURE_SIZE` with the shares): ``NUM_STAGES`` blocks of ``s`` (one per stage, in
        pipeline order), then ``g`` global ones (see :func:`split_features`).
    """
    stage_now, global_now = _stage_and_global(observation, share_features)
    stage_before, global_before = _stage_and_global(previous_observation, share_features)
    cap = jnp.maximum(observation[..., dynamics.OBS_MEMORY_CAP, None], 1e-3)
    core_change = observation[..., dynamics.OBS_CORES] - previous_observation[..., dynamics.OBS_CORES]
    identity = jnp.broadcast_to(jnp.eye(NUM_STAGES), (*observation.shape[:-1], NUM_STAGES, NUM_STAGES))
    stage = [stage_now, stage_before, core_change[..., None] / 4.0, identity]
    if first_observation is not None:
        efficiency = parallel_efficiency(observation, first_observation)
        stage.append(jnp.clip(jnp.log(efficiency), -4.0, 1.0)[..., None])
    stage = jnp.concatenate(stage, axis=-1)
    overall = jnp.concatenate([
        global_now, global_before,
        (observation[..., dynamics.OBS_MEMORY, None] - previous_observation[..., dynamics.OBS_MEMORY, None]) / cap,
        jnp.clip(_log(observation[..., dynamics.OBS_THROUGHPUT, None]) - _log(previous_observation[..., dynamics.OBS_THROUGHPUT, None]),
                 -4.0, 4.0),
    ], axis=-1)
    flat_stage = stage.reshape(*stage.shape[:-2], NUM_STAGES * stage.shape[-1])
    return jnp.concatenate([flat_stage, overall], axis=-1).astype(jnp.float32)


def split_features(features: jax.Array, share_features: bool = True,
                   scaling_features: bool = False) -> tuple[jax.Array, jax.Array]:
    """``(..., NUM_STAGES * s + g)`` -> ``(per-stage (..., 6, s), global (..., g))``, ``(s, g) =
    feature_sizes(share_features, scaling_features)``."""
    per_stage, _ = feature_sizes(share_features, scaling_features)
    stage = features[..., : NUM_STAGES * per_stage]
    return stage.reshape(*stage.shape[:-1], NUM_STAGES, per_stage), features[..., NUM_STAGES * per_stage:]


def episode_throughput_scale(observation: jax.Array) -> jax.Array:
    """An observable throughput scale of a pipeline, from its first observation (k samples/s).

    The rate the machine's core budget would reach if every stage scaled perfectly: with one
    worker per stage the measured rates give each stage's CPU seconds per sample, and
    ``budget / sum_i seconds_i`` is the throughput of a perfectly balanced, perfectly parallel
    pipeline. Rewards are divided by it, so that pipelines of very different speeds weigh alike.

    Args:
        observation: ``(..., 26)`` an episode's first observation.

    Returns:
        ``(...)`` float32, positive.
    """
    seconds = observation[..., dynamics.OBS_CORES] / jnp.maximum(observation[..., dynamics.OBS_RATES], 1e-3)
    return jnp.maximum(observation[..., dynamics.OBS_BUDGET] / jnp.sum(seconds, axis=-1), 1e-3)


# ------------------------------------------------------------------------------------ actions
@dataclasses.dataclass(frozen=True)
class ActionHeads:
    """How the policy's categorical heads become an environment action.

    ``increment`` mode: one head over the 17 increment actions. ``absolute`` mode: one head per
    knob — each stage's workers, log2 of the batch size, the prefetch depth — choosing a *move*
    from the knob's current value (read from the observation, which reports the allocation
    exactly); the moves are applied together and clipped to the bounds, and the result is the
    absolute action. Moves rather than values: the same move means the same thing in every
    pipeline, and a large move lets the agent jump in one step. A head may instead choose its
    knob's value itself (``values``; the batch size with ``batch_values``): a batch size means the
    same thing in every pipeline, and the head's most likely choice is then the size the policy
    prefers, where a move head's is often "stay" (see docs/agents_tuner.md).

    Attributes:
        mode: ``"increment"`` or ``"absolute"``.
        moves: Per head, the moves it chooses from (absolute mode; a value head's: the values);
            empty in increment mode.
        sizes: Number of choices of each head.
        values: Per head, whether it chooses the knob's value rather than a move (absolute mode;
            empty: every head chooses moves).
        share_targets: Absolute mode: each stage's worker head chooses, after its moves, among
            these multiples of the stage's proportional share of the available cores
            (:func:`proportional_shares`, rounded): a target that means the same thing in every
            pipeline and lies near the optimum, where a move's right size depends on how far the
            stage is from it. Empty: moves only.
        share_deadband: A share target within this many workers of the current count keeps the
            current count.
    """

    mode: str
    moves: tuple[tuple[int, ...], ...]
    sizes: tuple[int, ...]
    values: tuple[bool, ...] = ()
    share_targets: tuple[float, ...] = ()
    share_deadband: int = 0

    @classmethod
    def from_config(cls, config: TunerConfig, params: PipelineParams) -> ActionHeads:
        """The heads of ``config.action_mode`` for an env with ``params``."""
        if config.action_mode == "increment":
            return cls("increment", (), (params.num_increment_actions,))
        batch = (tuple(range(params.min_batch_log2, params.max_batch_log2 + 1)) if config.batch_values
                 else tuple(config.batch_moves))
        moves = (tuple(config.core_moves),) * NUM_STAGES + (batch, tuple(config.prefetch_moves))
        values = (False,) * NUM_STAGES + (config.batch_values, False)
        shares = tuple(float(m) for m in config.share_targets)
        sizes = tuple(len(m) + (len(shares) if i < NUM_STAGES else 0) for i, m in enumerate(moves))
        return cls("absolute", moves, sizes, values, shares, int(config.share_deadband))

    def targets(self, current: jax.Array, low: jax.Array, high: jax.Array,
                shares: jax.Array | None = None) -> jax.Array:
        """Absolute mode: each head's choices as the knob values they lead to, clipped to the bounds.

        Args:
            current: ``(..., num_heads)`` the knobs' current values (:func:`knob_values`).
            low: ``(num_heads,)`` lower bounds.
            high: ``(num_heads,)`` upper bounds.
            shares: ``(..., NUM_STAGES)`` the stages' proportional shares
                (:func:`proportional_shares`); needed with ``share_targets``.

        Returns:
            ``(..., num_heads, max(sizes))`` int32: the value of each knob after each choice (the
            padding past a head's choices repeats the current value).
        """
        width = max(self.sizes)
        table = np.zeros((len(self.sizes), width), np.int32)
        is_value = np.zeros((len(self.sizes), width), bool)
        for i, moves in enumerate(self.moves):
            table[i, : len(moves)] = moves
            is_value[i, : len(moves)] = bool(self.values[i]) if self.values else False
        target = jnp.where(jnp.asarray(is_value), jnp.asarray(table), current[..., None] + jnp.asarray(table))
        if self.share_targets:
            if shares is None:
                raise ValueError("heads with share_targets need the stages' proportional shares")
            start = len(self.moves[0])
            scaled = jnp.round(shares[..., None] * jnp.asarray(self.share_targets, jnp.float32)).astype(jnp.int32)
            now = current[..., :NUM_STAGES, None]
            scaled = jnp.where(jnp.abs(scaled - now) <= self.share_deadband, now, scaled)
            target = target.at[..., :NUM_STAGES, start : start + len(self.share_targets)].set(scaled)
        return jnp.clip(target, low[:, None], high[:, None])

    def observation_targets(self, observation: jax.Array, params: PipelineParams) -> jax.Array:
        """:meth:`targets` of the knobs the observation reports (:func:`knob_values`)."""
        shares = proportional_shares(observation) if self.share_targets else None
        return self.targets(*knob_values(observation, params), shares=shares)

    @property
    def num_logits(self) -> int:
        """Total logits over all heads."""
        return sum(self.sizes)

    @property
    def per_stage_logits(self) -> int:
        """Logits each stage contributes: its +1 / -1 moves (increment), or its moves (absolute)."""
        return 2 if self.mode == "increment" else self.sizes[0]

    def split(self, logits: jax.Array) -> list[jax.Array]:
        """``(..., num_logits)`` -> one ``(..., size)`` array per head."""
        bounds = np.cumsum(self.sizes)[:-1].tolist()
        return jnp.split(logits, bounds, axis=-1)

    def to_env_action(self, choices: jax.Array, observation: jax.Array, params: PipelineParams) -> jax.Array:
        """The environment action of head choices ``(..., num_heads)`` int32 given the observation.

        Returns:
            ``(...)`` int32 increment actions, or ``(..., 8)`` int32 absolute actions (workers - 1
            per stage, batch-size index, prefetch depth), always within the action space.
        """
        if self.mode == "increment":
            return choices[..., 0]
        low = knob_values(observation, params)[1]
        target = jnp.take_along_axis(self.observation_targets(observation, params), choices[..., None], axis=-1)[..., 0]
        return target - low


def knob_values(observation: jax.Array, params: PipelineParams) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The absolute-mode knobs' current values and bounds, read from the observation.

    Knobs in head order: each stage's workers, log2 of the batch size, the prefetch depth.

    Args:
        observation: ``(..., 26)`` an observation (it reports the allocation exactly).
        params: The env's params (the bounds).

    Returns:
        ``(current (..., 8), low (8,), high (8,))`` int32.
    """
    current = jnp.concatenate([
        observation[..., dynamics.OBS_CORES],
        jnp.log2(jnp.maximum(observation[..., dynamics.OBS_BATCH, None], 1.0)),
        observation[..., dynamics.OBS_PREFETCH, None],
    ], axis=-1)
    low = jnp.asarray([1] * NUM_STAGES + [params.min_batch_log2, 0], jnp.int32)
    high = jnp.asarray([params.max_cores_per_stage] * NUM_STAGES + [params.max_batch_log2, params.max_prefetch],
                       jnp.int32)
    return jnp.round(current).astype(jnp.int32), low, high


HEAD_INPUTS = 2 * (NUM_STAGES + 2) + 1
"""Size of what each absolute-mode head is conditioned on in an autoregressive policy (:func:`head_inputs`)."""


def head_inputs(targets: jax.Array, current: jax.Array, choices: jax.Array, available: jax.Array) -> jax.Array:
    """What each absolute-mode head of an autoregressive policy is conditioned on: the earlier heads' choices.

    For head ``i`` (knob order: each stage's workers, the batch size, the prefetch depth), the
    moves the heads ``j < i`` chose, each as ``sign(d) log2(1 + |d|) / 3`` of its knob's change
    ``d`` (0 for the heads not yet decided), which heads are decided, and the log of the stages'
    total workers after the decided moves (the undecided stages at their current count) over
    the available cores. Only what the observation reports and the choices enter.

    Args:
        targets: ``(..., H, W)`` the knob value each head's choice leads to (:meth:`ActionHeads.targets`).
        current: ``(..., H)`` the knobs' current values (:func:`knob_values`).
        choices: ``(..., H)`` int32 head choices (only those of the heads before each head are read).
        available: ``(...)`` the available cores (from the observation).

    Returns:
        ``(..., H, HEAD_INPUTS)`` float32.
    """
    num_heads = current.shape[-1]
    chosen = jnp.take_along_axis(targets, choices[..., None], axis=-1)[..., 0]
    delta = (chosen - current).astype(jnp.float32)
    moved = jnp.sign(delta) * jnp.log2(1.0 + jnp.abs(delta)) / 3.0
    decided = jnp.asarray(np.tril(np.ones((num_heads, num_heads), np.float32), -1))  # row i: the heads j < i
    workers = jnp.where(decided[:, :NUM_STAGES] > 0, chosen[..., None, :NUM_STAGES],
                        current[..., None, :NUM_STAGES]).sum(axis=-1).astype(jnp.float32)
    load = jnp.log(workers / jnp.maximum(available, 1.0)[..., None])
    return jnp.concatenate([moved[..., None, :] * decided, jnp.broadcast_to(decided, (*delta.shape[:-1], *decided.shape)),
                            load[..., None]], axis=-1)


def observation_head_inputs(heads: ActionHeads, observation: jax.Array, params: PipelineParams,
                            choices: jax.Array) -> jax.Array:
    """:func:`head_inputs` of the knobs the observation reports."""
    return head_inputs(heads.observation_targets(observation, params), knob_values(observation, params)[0], choices,
                       observation[..., dynamics.OBS_AVAILABLE])


def _head_log_probs(heads: ActionHeads, logits: jax.Array, choices: jax.Array) -> tuple[list[jax.Array], jax.Array]:
    """Each head's log-probability of its choice (a list, head order) and the summed entropy."""
    per_head = []
    entropy = jnp.zeros(logits.shape[:-1])
    for i, head in enumerate(heads.split(logits)):
        logp = jax.nn.log_softmax(head, axis=-1)
        per_head.append(jnp.take_along_axis(logp, choices[..., i : i + 1], axis=-1)[..., 0])
        entropy = entropy - jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return per_head, entropy


def _joint_log_prob(per_head: list[jax.Array]) -> jax.Array:
    """The joint log-probability: the heads' parts summed in head order (as it always was summed)."""
    log_prob = jnp.zeros_like(per_head[0])
    for head_log_prob in per_head:
        log_prob = log_prob + head_log_prob
    return log_prob


def _log_probs(heads: ActionHeads, logits: jax.Array, choices: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Log-probability of ``choices`` (summed over heads) and the summed entropy."""
    per_head, entropy = _head_log_probs(heads, logits, choices)
    return _joint_log_prob(per_head), entropy


def _one_hot_choices(heads: ActionHeads, choices: jax.Array) -> jax.Array:
    """``(..., num_heads)`` choices -> ``(..., num_logits)``: each head's one-hot, heads side by side."""
    return jnp.concatenate([jax.nn.one_hot(choices[..., i], size) for i, size in enumerate(heads.sizes)], axis=-1)


def _prefix_masks(heads: ActionHeads) -> np.ndarray:
    """``(num_heads - 1, num_logits)``: row ``i - 1`` keeps the one-hots of heads ``< i`` (i = 1 ... H-1)."""
    owner = np.repeat(np.arange(len(heads.sizes)), heads.sizes)
    return (owner[None, :] < np.arange(1, len(heads.sizes))[:, None]).astype(np.float32)


def head_advantages(form: str, targets: jax.Array, values: jax.Array, prefix_values: jax.Array) -> jax.Array:
    """Each head's advantage from the joint one and the action-prefix baselines.

    With ``b_0 = V(s)`` and ``b_i = b(s, a_<i)`` (the critic's estimate of the return given the
    state and the first ``i`` heads' choices) and ``G`` the GAE target (the joint advantage plus
    ``V(s)``, so the first head's advantage is the joint one in both forms):

    * ``"prefix"``: ``A_i = G - b_i`` — a baseline that depends only on what head ``i`` is
      conditioned on, so the policy gradient stays unbiased (Wu et al., ICLR 2018, "action-dependent
      factorized baselines", in the autoregressive form the memory shield's masking needs).
    * ``"chain"``: ``A_i = b_{i+1} - b_i`` with ``b_H = G``; the heads' advantages add up to the
      joint one (they telescope), each is head ``i``'s own gain along the chain.

    Args:
        form: ``"prefix"`` or ``"chain"``.
        targets: ``(...)`` the GAE targets (returns).
        values: ``(...)`` ``V(s)``, the baseline of the first head.
        prefix_values: ``(..., H - 1)`` ``b_1 ... b_{H-1}``.

    Returns:
        ``(..., H)`` per-head advantages.
    """
    baselines = jnp.concatenate([values[..., None], prefix_values], axis=-1)  # b_0 ... b_{H-1}
    if form == "prefix":
        return targets[..., None] - baselines
    if form == "chain":
        return jnp.concatenate([prefix_values, targets[..., None]], axis=-1) - baselines
    raise ValueError(f"form must be 'prefix' or 'chain', got {form!r}")


def _sample(heads: ActionHeads, key: jax.Array, logits: jax.Array) -> jax.Array:
    keys = jax.random.split(key, len(heads.sizes))
    return jnp.stack([jax.random.categorical(k, head, axis=-1) for k, head in zip(keys, heads.split(logits))],
                     axis=-1).astype(jnp.int32)


def _greedy(heads: ActionHeads, logits: jax.Array) -> jax.Array:
    return jnp.stack([jnp.argmax(head, axis=-1) for head in heads.split(logits)], axis=-1).astype(jnp.int32)


DECODINGS: tuple[str, ...] = ("mode", "mean")
"""How a deterministic tuner turns each head's distribution into one choice (:func:`choose_actions`):
``"mode"`` each head's most likely choice; ``"mean"`` (absolute mode) the worker and batch-size heads'
choice nearest the expected knob value (:data:`MEAN_DECODED_KNOBS`), the prefetch head's mode."""

MEAN_DECODED_KNOBS: tuple[bool, ...] = (True,) * NUM_STAGES + (True, False)
"""Absolute-mode heads (each stage's workers, the batch size, the prefetch depth) that ``"mean"``
decoding decodes by the expected knob value. Not the prefetch depth: its distribution stays broad
where it matters least, and decoded by its mean it held memory-tight's prefetch at its initial depth
(validation seeds, docs/agents_tuner.md)."""


def decoded_choice(logits: jax.Array, targets: jax.Array, allowed: jax.Array, by_mean: bool | jax.Array) -> jax.Array:
    """One head's deterministic choice: its mode, or the allowed choice nearest its expected value.

    A move head's distribution over an ordered knob can put most of its mass on one side of
    "stay" and still have "stay" as its single most likely choice; decoded by its mode the tuner
    then stops short of where the policy points. Decoded by the mean, it takes the allowed choice
    whose knob value lies nearest the expected knob value under the (masked) distribution, the
    likelier of equally near ones (several moves clipped to a bound lead to the same value).

    Args:
        logits: ``(size,)`` the head's logits, masked choices at :data:`MASKED_LOGIT`.
        targets: ``(size,)`` the knob value each choice leads to (:meth:`ActionHeads.targets`).
        allowed: ``(size,)`` bool, the choices the shield lets through (at least one).
        by_mean: Decode by the mean (else by the mode).

    Returns:
        int32 scalar, the choice.
    """
    probabilities = jax.nn.softmax(jnp.where(allowed, logits, MASKED_LOGIT))
    targets = targets.astype(jnp.float32)
    distance = jnp.where(allowed, jnp.abs(targets - jnp.sum(probabilities * targets)), jnp.inf)
    nearest = distance <= jnp.min(distance) + 1e-4
    mean_choice = jnp.argmax(jnp.where(nearest, probabilities, -1.0))
    mode_choice = jnp.argmax(jnp.where(allowed, logits, MASKED_LOGIT))
    return jnp.where(by_mean, mean_choice, mode_choice).astype(jnp.int32)


# ------------------------------------------------------------------------------------ memory shield
#: Knobs whose growth the memory shield prices, in :class:`MemoryEstimate` order: one worker more
#: of each stage, the batch size doubled, the prefetch depth one batch deeper.
SHIELD_KNOBS: tuple[str, ...] = (*(f"{s} +1 worker" for s in STAGES), "batch x2", "prefetch +1")
#: The :class:`MemoryShield` options that read the kept equations (``refine``), each off by default;
#: ``TunerConfig.shield_<name>`` sets one for a run.
SHIELD_OPTIONS: tuple[str, ...] = ("measure_batch", "shrink_credit", "batch_probe")
#: Stages whose workers hold a whole batch in flight, so that their per-worker memory grows with the
#: batch size (the batch and prefetch stages).
_BATCH_HOLDING = np.asarray([False] * (NUM_STAGES - 2) + [True, True])
#: Knobs (in :data:`SHIELD_KNOBS` order) whose growth adds memory proportional to the batch size: the
#: batch-holding stages' workers and the prefetch buffer's batches.
_HOLDS_BATCH_KNOB = np.concatenate([_BATCH_HOLDING, [False, True]])
#: Knobs (in :data:`SHIELD_KNOBS` order) that are a batch-holding stage's workers.
_BATCH_HOLDING_KNOB = np.concatenate([_BATCH_HOLDING, [False, False]])
#: Increment action -> the knob (index into :data:`SHIELD_KNOBS`) it grows, or -1 for a move that
#: cannot add memory (a shrink or the no-op).
_GROWN_KNOB = np.asarray([i if sign > 0 else -1 for i in range(NUM_STAGES) for sign in (1, -1)]
                         + [NUM_STAGES, -1, NUM_STAGES + 1, -1, -1], np.int32)


@struct.dataclass
class MemoryEstimate:
    """What the memory shield has learnt, within one episode, about what each move costs.

    Estimated only from the observation's memory in use (which a monitor reads as the process
    tree's RSS): when a step changes exactly one knob, the change of memory in use *is* that
    knob's cost. Every estimate is exact or an upper bound under the memory model (memory =
    trainer + per-worker resident memory + in-flight elements + buffers, linear in the workers of
    each stage and in the batch size): a batch-holding stage's worker cost ``w + e B`` is doubled
    when ``B`` doubles (an upper bound) and kept when it halves; the batch doubling's cost (the
    memory proportional to ``B``) gains a whole batch-holding worker's cost (an upper bound) or
    exactly the buffer's growth.

    Attributes:
        grow_cost: ``(..., 8)`` float32 GiB: the memory each knob of :data:`SHIELD_KNOBS` would add.
        measured: ``(..., 8)`` bool: whether that cost has been measured this episode (the shield
            assumes a prior cost for the others, see :func:`shield_allowed_actions`).
        equations: The absolute-mode steps kept to tighten the bounds later
            (:class:`MemoryEquations`), or ``None`` (the estimate of runs saved before they existed,
            ``TunerConfig.shield_refine``).
    """

    grow_cost: jax.Array
    measured: jax.Array
    equations: MemoryEquations | None = None

    @classmethod
    def unknown(cls, batch_shape: tuple[int, ...] = (), refine: bool = False,
                measure_batch: bool = False) -> MemoryEstimate:
        """Nothing measured yet (an episode's start); ``refine`` keeps :class:`MemoryEquations`
        (``measure_batch``: see :attr:`MemoryEquations.measure_batch`)."""
        if measure_batch and not refine:
            raise ValueError("measure_batch=True needs refine=True (it reads the equations' exact costs)")
        n = NUM_STAGES + 2
        return cls(grow_cost=jnp.zeros((*batch_shape, n), jnp.float32),
                   measured=jnp.zeros((*batch_shape, n), bool),
                   equations=MemoryEquations.empty(batch_shape, measure_batch) if refine else None)


#: How many several-knob steps :class:`MemoryEquations` keeps (the most recent ones).
EQUATIONS_KEPT = 8


@struct.dataclass
class MemoryEquations:
    """The memory shield's record of its absolute-mode steps, to tighten their bounds later.

    An absolute-mode step that moves several knobs with the batch size fixed gives one exact linear
    equation in the knobs' unit costs (memory is linear in them): ``sum_j units_j c_j = change``.
    Taken alone it bounds each grown knob by the whole change (:func:`update_memory_estimate`);
    once the other knobs of the equation are measured *exactly* (a later one-knob step, or another
    equation), the same equation gives the remaining knob's cost exactly. For example, a first
    step that adds two transform workers and one batch of prefetch (+2.05 GiB) bounds a prefetch
    batch by 2.05 GiB; after a step that adds two transform workers alone (+2.0 GiB) the first
    equation gives 0.05 GiB. Without the record, that bound stays 40 times the cost and masks
    every deeper prefetch in a pipeline with less than 2 GiB to spare.

    Attributes:
        units: ``(..., EQUATIONS_KEPT, 8)`` float32: each kept step's growth of each knob (workers,
            0 for the batch size, batches of prefetch; negative for a shrink).
        change: ``(..., EQUATIONS_KEPT)`` float32 GiB: the memory change of each kept step.
        valid: ``(..., EQUATIONS_KEPT)`` bool: which slots hold an equation.
        exact: ``(..., 8)`` bool: which knobs' estimates are exact (not only upper bounds).
        measure_batch: (static) Also price the batch size from the several-knob steps that change
            it, by subtracting the other moved knobs' exact costs, and keep the prefetch's exact
            cost across batch-size changes (``TunerConfig.shield_measure_batch``; see
            :func:`update_memory_estimate`).
    """

    units: jax.Array
    change: jax.Array
    valid: jax.Array
    exact: jax.Array
    measure_batch: bool = struct.field(pytree_node=False, default=False)

    @classmethod
    def empty(cls, batch_shape: tuple[int, ...] = (), measure_batch: bool = False) -> MemoryEquations:
        """No equation kept, nothing exact (all zeros, as :meth:`TunerPolicy.begin_episode` resets it)."""
        n = NUM_STAGES + 2
        return cls(units=jnp.zeros((*batch_shape, EQUATIONS_KEPT, n), jnp.float32),
                   change=jnp.zeros((*batch_shape, EQUATIONS_KEPT), jnp.float32),
                   valid=jnp.zeros((*batch_shape, EQUATIONS_KEPT), bool),
                   exact=jnp.zeros((*batch_shape, n), bool), measure_batch=measure_batch)


def _measure_batch(exact_before: jax.Array, cost: jax.Array, grow_cost: jax.Array, measured: jax.Array,
                   exact: jax.Array, units: jax.Array, memory_change: jax.Array, batch_ratio: jax.Array,
                   batch_changed: jax.Array, changed: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The ``measure_batch`` part of :func:`update_memory_estimate` (see there): ``cost`` and
    ``exact_before`` are the estimate before the step, ``grow_cost``, ``measured`` and ``exact``
    the step's update so far."""
    b, p = NUM_STAGES, NUM_STAGES + 1
    ratio = jnp.where(batch_changed, batch_ratio, 2.0)
    # The prefetch's cost per batch is B e_P: a batch-size change scales an exact one exactly.
    prefetch_exact = exact_before[..., p] & batch_changed
    grow_cost = grow_cost.at[..., p].set(jnp.where(prefetch_exact, cost[..., p] * ratio, grow_cost[..., p]))
    exact = exact.at[..., p].set(exact[..., p] | prefetch_exact)
    # A several-knob step with the batch size: every other moved knob exact and not a batch-holding
    # stage's worker (whose w + e B the step would change by an unknown split).
    moved = (units != 0).at[..., b].set(False)
    known = exact_before & ~jnp.asarray(_BATCH_HOLDING_KNOB)
    usable = batch_changed & (changed >= 2) & jnp.all(~moved | known, axis=-1)
    prefetch_part = units[..., p] * ratio * cost[..., p]
    workers_part = jnp.sum(jnp.where(moved, units * cost, 0.0)[..., :NUM_STAGES], axis=-1)
    scaled = memory_change - workers_part - prefetch_part  # (r - 1) M(B)
    doubling = jnp.maximum(ratio * scaled / (ratio - 1.0) + prefetch_part, 0.0)  # M(rB)
    grow_cost = grow_cost.at[..., b].set(jnp.where(usable, doubling, grow_cost[..., b]))
    measured = measured.at[..., b].set(measured[..., b] | usable)
    exact = exact.at[..., b].set(exact[..., b] | usable)
    return grow_cost, measured, exact


def refine_with_equations(equations: MemoryEquations, grow_cost: jax.Array,
                          measured: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Tighten the shield's estimates with the kept equations (see :class:`MemoryEquations`).

    For equation ``e`` and a knob ``k`` it grew, ``c_k <= (change_e - sum_{j != k} u_ej c_j) / u_ek``
    holds with the other grown knobs' costs taken from below (their exact value, else 0) and the
    shrunk knobs' from above (their estimate; no bound while any of them is unmeasured). Each knob
    keeps the smallest of its bounds; the bound is exact when every other knob of the equation is.

    Args:
        equations: The kept equations and exact flags (batch shape ``(...)``).
        grow_cost: ``(..., 8)`` the estimates before refining.
        measured: ``(..., 8)`` which of them are set.

    Returns:
        ``(grow_cost, measured, exact)`` refined.
    """
    u = equations.units
    exact = equations.exact
    grown, shrunk = u > 0, u < 0
    cost = grow_cost[..., None, :]
    # Per equation: the other knobs' contribution, grown ones from below, shrunk ones from above.
    lower = jnp.where(exact[..., None, :], cost, 0.0)
    contribution = jnp.where(grown, u * lower, jnp.where(shrunk, u * cost, 0.0))
    unknown_release = jnp.any(shrunk & ~measured[..., None, :], axis=-1)
    others = jnp.sum(contribution, axis=-1, keepdims=True) - contribution
    bound = jnp.maximum((equations.change[..., None] - others) / jnp.where(grown, u, 1.0), 0.0)
    usable = grown & (equations.valid & ~unknown_release)[..., None]
    tightest = jnp.min(jnp.where(usable, bound, jnp.inf), axis=-2)
    bounded = jnp.any(usable, axis=-2)
    moved = u != 0
    others_exact = jnp.sum(moved & ~exact[..., None, :], axis=-1, keepdims=True) - (moved & ~exact[..., None, :]) == 0
    exact_from = jnp.any(usable & others_exact, axis=-2)
    new_cost = jnp.where(bounded, jnp.where(measured, jnp.minimum(grow_cost, tightest), tightest), grow_cost)
    return new_cost, measured | bounded, exact | exact_from


def update_memory_estimate(estimate: MemoryEstimate, previous_observation: jax.Array,
                           observation: jax.Array) -> MemoryEstimate:
    """Learn what the move between two consecutive observations of one episode cost.

    A step that changed exactly one knob (every increment-mode step) measures that knob's cost
    exactly. A step that changed several knobs with the batch size fixed (an absolute-mode step)
    bounds each grown knob's unit cost from above: the memory change, plus what the shrunk knobs
    released by their own estimates, divided by its growth (no bound while a shrunk knob is
    unmeasured). A step that changed the batch size with other knobs measures nothing, but scales
    the batch-proportional costs by the batch size's growth. A step that changed nothing leaves the
    estimate as it was. An estimate with :class:`MemoryEquations` also keeps each several-knob step
    as an equation and tightens every bound with the kept ones (:func:`refine_with_equations`).

    With ``equations.measure_batch`` a step that changed the batch size from ``B`` to ``rB``
    together with other knobs measures the batch size too, when each other knob it moved has an
    exact cost that the batch size does not change (a worker of a stage that holds single samples)
    or scales exactly (the prefetch buffer's batches, ``r`` times dearer at ``rB``): the memory
    change less those knobs' part is ``(r - 1) M(B)``, ``M`` the batch-proportional memory, and the
    next doubling costs ``M(rB) = r M(B) + r dP c_P`` (``dP`` the prefetch's change, ``c_P`` its
    cost per batch at ``B``), exactly. The prefetch's exact cost is then also kept across
    batch-size changes (scaled by ``r``), where without the option its exact flag is dropped.

    Args:
        estimate: The estimate before the step (batch shape ``(...)``).
        previous_observation: ``(..., 26)`` the observation before the step.
        observation: ``(..., 26)`` the one after it.

    Returns:
        The updated estimate.
    """
    cores_change = observation[..., dynamics.OBS_CORES] - previous_observation[..., dynamics.OBS_CORES]
    batch_ratio = observation[..., dynamics.OBS_BATCH] / jnp.maximum(previous_observation[..., dynamics.OBS_BATCH], 1.0)
    prefetch_change = observation[..., dynamics.OBS_PREFETCH] - previous_observation[..., dynamics.OBS_PREFETCH]
    memory_change = observation[..., dynamics.OBS_MEMORY] - previous_observation[..., dynamics.OBS_MEMORY]
    batch_changed = batch_ratio != 1.0
    changed = jnp.sum(cores_change != 0, axis=-1) + batch_changed + (prefetch_change != 0)
    single = (changed == 1)[..., None]
    # A crash reads 0 rates; its step is the episode's last, and its memory change is still exact.
    cost, measured = estimate.grow_cost, estimate.measured
    workers, batch, prefetch = cost[..., :NUM_STAGES], cost[..., NUM_STAGES], cost[..., NUM_STAGES + 1]

    # One stage's workers moved by k: each of them costs memory_change / k.
    stage_moved = cores_change != 0
    per_worker = memory_change[..., None] / jnp.where(stage_moved, cores_change, 1.0)
    stage_workers = jnp.where(stage_moved, per_worker, workers)
    grown_holders = jnp.sum(jnp.where(_BATCH_HOLDING & (cores_change > 0), memory_change[..., None], 0.0), axis=-1)
    # The prefetch depth moved by k: k batches of the buffer, all of it proportional to B.
    prefetch_moved = prefetch_change != 0
    stage_batch = batch + grown_holders
    # The batch size went from B to rB: the B-proportional memory M(B) changed by (r - 1) M(B), so
    # the next doubling costs M(rB) = r change / (r - 1) (twice the change after a doubling, minus
    # the change after a halving).
    safe_ratio = jnp.where(batch_changed, batch_ratio, 2.0)
    batch_after = safe_ratio * memory_change / (safe_ratio - 1.0)
    holders_after = jnp.where(_BATCH_HOLDING, workers * jnp.maximum(safe_ratio, 1.0)[..., None], workers)
    prefetch_after = prefetch * safe_ratio

    new_cost = jnp.where(
        batch_changed[..., None],
        jnp.concatenate([holders_after, batch_after[..., None], prefetch_after[..., None]], axis=-1),
        jnp.where(
            prefetch_moved[..., None],
            jnp.concatenate([workers, (batch + memory_change)[..., None],
                             (memory_change / jnp.where(prefetch_moved, prefetch_change, 1.0))[..., None]], axis=-1),
            jnp.concatenate([stage_workers, stage_batch[..., None], prefetch[..., None]], axis=-1)))
    knob_moved = jnp.concatenate([stage_moved, batch_changed[..., None], prefetch_moved[..., None]], axis=-1)

    # Several knobs moved at once with the batch size fixed (an absolute-mode step): memory is then
    # linear in the workers and the prefetch depth with non-negative unit costs, so a grown knob's
    # unit cost is at most (the memory change + what the shrunk knobs released) / its growth, the
    # release bounded by the shrunk knobs' own estimates (upper bounds: no bound while any of them
    # is unmeasured). Already measured, a knob keeps the smaller of its two upper bounds.
    units = jnp.concatenate([cores_change, jnp.zeros_like(prefetch_change)[..., None], prefetch_change[..., None]],
                            axis=-1)
    grown, shrunk = units > 0, units < 0
    released = jnp.sum(jnp.where(shrunk, -units * cost, 0.0), axis=-1)
    bound = jnp.maximum((memory_change + released)[..., None] / jnp.where(grown, units, 1.0), 0.0)
    several = ((changed >= 2) & ~batch_changed & jnp.all(measured | ~shrunk, axis=-1))[..., None]
    several_unit = jnp.where(grown, jnp.where(measured, jnp.minimum(cost, bound), bound), cost)
    # The memory proportional to the batch size grows by the grown batch-holding workers' and buffer batches' cost.
    proportional_growth = jnp.sum(jnp.where(grown & _HOLDS_BATCH_KNOB, units * several_unit, 0.0), axis=-1)
    several_cost = several_unit.at[..., NUM_STAGES].set(batch + proportional_growth)

    # The batch size moved with other knobs: nothing is measured, but the batch-proportional costs
    # scale with it (by r when it grew; kept, an upper bound, when it shrank); the batch doubling's
    # cost gains the grown batch-holding knobs' costs, unknown while any of them is unmeasured.
    mixed = ((changed >= 2) & batch_changed)[..., None]
    grown_up = jnp.where(batch_changed, jnp.maximum(batch_ratio, 1.0), 1.0)
    mixed_unit = jnp.where(_HOLDS_BATCH_KNOB, cost * grown_up[..., None], cost)
    grown_holders_known = jnp.all(measured | ~(grown & _HOLDS_BATCH_KNOB), axis=-1)
    mixed_batch = grown_up * (batch + jnp.sum(jnp.where(grown & _HOLDS_BATCH_KNOB, units * cost, 0.0), axis=-1))
    mixed_cost = mixed_unit.at[..., NUM_STAGES].set(mixed_batch)
    mixed_measured = measured.at[..., NUM_STAGES].set(measured[..., NUM_STAGES] & grown_holders_known)
    grow_cost = jnp.where(single, jnp.maximum(new_cost, 0.0),
                          jnp.where(several, several_cost, jnp.where(mixed, mixed_cost, cost)))
    measured = jnp.where(mixed, mixed_measured, measured | (single & knob_moved) | (several & grown))
    if estimate.equations is None:
        return MemoryEstimate(grow_cost=grow_cost, measured=measured)

    # Kept equations (MemoryEquations): a batch-size change rescales the batch-proportional costs,
    # so the equations and exact flags that involve them are dropped (the others still hold).
    eq = estimate.equations
    holds = jnp.asarray(_HOLDS_BATCH_KNOB) | (jnp.arange(NUM_STAGES + 2) == NUM_STAGES)
    # The batch doubling's cost also grows by what a batch-holding move adds, exactly only when that
    # move is a single prefetch step (a worker's resident memory is counted in, an upper bound).
    holder_moved = jnp.any((units != 0) & _HOLDS_BATCH_KNOB, axis=-1)
    batch_inexact = holder_moved & ~(single[..., 0] & prefetch_moved)
    exact = jnp.where(batch_changed[..., None], eq.exact & ~holds, eq.exact)
    exact = exact.at[..., NUM_STAGES].set(exact[..., NUM_STAGES] & ~batch_inexact) | (single & knob_moved)
    valid = eq.valid & ~(batch_changed[..., None] & jnp.any((eq.units != 0) & holds, axis=-1))
    record = ((changed >= 2) & ~batch_changed)[..., None]
    units_kept = jnp.where(record[..., None], jnp.concatenate([units[..., None, :], eq.units[..., :-1, :]], axis=-2),
                           eq.units)
    change_kept = jnp.where(record, jnp.concatenate([memory_change[..., None], eq.change[..., :-1]], axis=-1),
                            eq.change)
    valid_kept = jnp.where(record, jnp.concatenate([jnp.ones_like(valid[..., :1]), valid[..., :-1]], axis=-1), valid)
    if eq.measure_batch:
        grow_cost, measured, exact = _measure_batch(eq.exact, cost, grow_cost, measured, exact, units, memory_change,
                                                    batch_ratio, batch_changed, changed)
    kept = eq.replace(units=units_kept, change=change_kept, valid=valid_kept, exact=exact)
    grow_cost, measured, exact = refine_with_equations(kept, grow_cost, measured)
    return MemoryEstimate(grow_cost=grow_cost, measured=measured, equations=kept.replace(exact=exact))


def shield_allowed_actions(estimate: MemoryEstimate, observation: jax.Array, probe_fraction: float,
                           headroom: float) -> jax.Array:
    """Which increment actions the memory shield lets through.

    A move that grows a knob is let through only if the memory in use plus the knob's estimated
    cost stays within ``(1 - headroom)`` of the cap; a knob not yet measured this episode is
    assumed to cost ``probe_fraction`` of the cap. Shrinks and the no-op are always allowed, so at
    least one action always is.

    Args:
        estimate: The episode's :class:`MemoryEstimate` (batch shape ``(...)``).
        observation: ``(..., 26)`` the latest observation.
        probe_fraction: Assumed cost of an unmeasured move, as a fraction of the memory cap.
        headroom: Fraction of the cap kept free.

    Returns:
        ``(..., 17)`` bool, one per increment action.
    """
    cap = observation[..., dynamics.OBS_MEMORY_CAP, None]
    cost = jnp.where(estimate.measured, estimate.grow_cost, probe_fraction * cap)
    fits = observation[..., dynamics.OBS_MEMORY, None] + cost <= (1.0 - headroom) * cap
    grown = jnp.asarray(_GROWN_KNOB)
    return jnp.where(grown >= 0, jnp.take(fits, jnp.maximum(grown, 0), axis=-1), True)


@dataclasses.dataclass(frozen=True)
class MemoryShield:
    """The tuner's memory shield: moves whose estimated memory exceeds the cap are masked.

    A safety layer between the policy and the pipeline, reading only what a monitor measures (the
    memory in use and the cap, see :class:`MemoryEstimate`): the policy's logits of the masked
    moves are set to a large negative number before it samples or takes its most likely choice,
    in training as when acting, so PPO learns the shielded policy (absolute mode: knob by knob,
    given the growth the knobs before chose, see :func:`choose_actions`). It never reads the world's
    per-worker memory nor the optimum. It cannot foresee a fall of the cap (a change event):
    ``headroom`` keeps a margin for that.

    Attributes:
        probe_fraction: Assumed cost of a move not yet measured in the episode, as a fraction of
            the memory cap.
        headroom: Fraction of the memory cap kept free.
        refine: Keep each episode's several-knob steps as equations and tighten the bounds with
            them (:class:`MemoryEquations`); False: the shield of runs saved before it existed.
        measure_batch: With ``refine``, also price the batch size from the several-knob steps that
            change it (:attr:`MemoryEquations.measure_batch`).
        shrink_credit: With ``refine``, absolute mode: let a shrink whose release is known from
            below pay for the growth of the heads after it in the same step. Workers of a stage
            that holds single samples release their exact cost; ``k`` halvings of the batch size
            release ``(1 - 2^-k)`` of the batch-proportional memory once that is exact (less the
            upper-bound cost of any batch-holding workers shrunk before it), and the prefetch head
            then prices its batches at the halved batch size. Without it a shrink frees nothing in
            the shield's arithmetic (see :func:`choose_actions`).
        batch_probe: With ``refine``, absolute mode: when the batch size's cost is not known
            exactly (unmeasured, it is priced at ``probe_fraction`` of the cap), one doubling at its
            estimate does not fit, and the policy puts at least half of the batch head's mass on
            growing it, the step becomes a probe: every head but the batch size's is restricted to
            "stay" and the batch head to one halving. A halving releases memory, so the probe is
            safe, and as a one-knob step it measures the batch-proportional memory exactly
            (:func:`update_memory_estimate`); without it a policy whose steps always move the batch
            size with other knobs can keep it priced at the prior for the whole episode. Masked
            like the shield's other choices, so the training loss sees the forced step's exact
            (zero) log-probability.

    Raises:
        ValueError: ``measure_batch``, ``shrink_credit`` or ``batch_probe`` without ``refine``.
    """

    probe_fraction: float = 0.05
    headroom: float = 0.0
    refine: bool = True
    measure_batch: bool = False
    shrink_credit: bool = False
    batch_probe: bool = False

    def __post_init__(self) -> None:
        for name in SHIELD_OPTIONS:
            if getattr(self, name) and not self.refine:
                raise ValueError(f"MemoryShield({name}=True) needs refine=True: it reads the exact costs the "
                                 "kept equations track")

    @classmethod
    def from_config(cls, config: TunerConfig) -> MemoryShield | None:
        """The shield of ``config`` (``None`` when it is switched off)."""
        if not config.shielded:
            return None
        return cls(config.shield_probe_fraction, config.shield_headroom, config.shield_refine,
                   **{name: getattr(config, f"shield_{name}") for name in SHIELD_OPTIONS})

    def allowed(self, estimate: MemoryEstimate, observation: jax.Array) -> jax.Array:
        """``(..., 17)`` bool: the increment actions let through (see :func:`shield_allowed_actions`)."""
        return shield_allowed_actions(estimate, observation, self.probe_fraction, self.headroom)


def fresh_estimate(shield: MemoryShield | None, batch_shape: tuple[int, ...]) -> MemoryEstimate:
    """An episode's first :class:`MemoryEstimate` under ``shield`` (with equations when it refines)."""
    if shield is None:
        return MemoryEstimate.unknown(batch_shape)
    return MemoryEstimate.unknown(batch_shape, refine=shield.refine, measure_batch=shield.measure_batch)


def allowed_choices(shield: MemoryShield | None, heads: ActionHeads, estimate: MemoryEstimate,
                    observation: jax.Array) -> jax.Array:
    """``(..., heads.num_logits)`` bool: the choices the shield lets through (all without one)."""
    if shield is None:
        return jnp.ones((*observation.shape[:-1], heads.num_logits), bool)
    if heads.mode != "increment":
        raise ValueError("absolute-mode choices are masked knob by knob: use choose_actions")
    return shield.allowed(estimate, observation)


#: Logit of a masked choice: finite, so that log-probabilities and entropies stay finite.
MASKED_LOGIT = -1e9


def mask_logits(logits: jax.Array, allowed: jax.Array) -> jax.Array:
    """``logits`` with the choices not ``allowed`` made (numerically) impossible."""
    return jnp.where(allowed, logits, MASKED_LOGIT)


def absolute_move_costs(estimate: MemoryEstimate, observation: jax.Array, params: PipelineParams,
                        heads: ActionHeads, probe_fraction: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """What each absolute-mode knob's moves would add to the memory in use, by the shield's estimate.

    Per knob, the growth of each move once clipped to the knob's bounds (a shrink and the no-op
    grow nothing), priced at the knob's estimated unit cost (``probe_fraction`` of the cap while
    unmeasured). Shrinks are counted as freeing nothing: the estimates are upper bounds, so what
    a shrink releases is not known from below.

    Args:
        estimate: One episode's :class:`MemoryEstimate` (no batch dimensions).
        observation: ``(26,)`` the latest observation.
        params: The env's params (the knobs' bounds).
        heads: The absolute-mode action heads.
        probe_fraction: Assumed unit cost of an unmeasured knob, as a fraction of the memory cap.

    Returns:
        ``(growth, unit_cost, proportional)``: ``growth`` ``(8, max_moves)`` int32 the units each
        move adds (workers, doublings of the batch size, batches of prefetch; 0 past a head's
        moves), ``unit_cost`` ``(8,)`` GiB per unit (the batch knob's entry is the memory
        proportional to the batch size, which one doubling adds), and ``proportional`` the latter.
    """
    cap = observation[dynamics.OBS_MEMORY_CAP]
    unit_cost = jnp.where(estimate.measured, estimate.grow_cost, probe_fraction * cap)
    current = knob_values(observation, params)[0]
    growth = jnp.maximum(heads.observation_targets(observation, params) - current[:, None], 0)
    return growth, unit_cost, unit_cost[NUM_STAGES]


def _batch_probe_wanted(heads: ActionHeads, batch_logits: jax.Array, estimate: MemoryEstimate, targets: jax.Array,
                        current: jax.Array, doubling: jax.Array, budget: jax.Array) -> jax.Array:
    """Whether the shield's batch probe acts this step (one env; see :attr:`MemoryShield.batch_probe`).

    When the batch size's cost is not known exactly, one doubling at its estimate (``doubling``,
    the prior while unmeasured) does not fit the ``budget``, the policy puts at least half of the
    batch head's mass on growing it, and a one-knob halving is on offer (every head has a "stay"
    choice and the batch head a halving).
    """
    b = NUM_STAGES
    exact = estimate.equations.exact[b] & estimate.measured[b]
    batch_targets = targets[b, : heads.sizes[b]]
    grow_mass = jnp.sum(jnp.where(batch_targets > current[b], jax.nn.softmax(batch_logits), 0.0))
    can = jnp.any(batch_targets == current[b] - 1)
    for i, size in enumerate(heads.sizes):
        if i != b:
            can = can & jnp.any(targets[i, :size] == current[i])
    return ~exact & (doubling > budget) & (grow_mass >= 0.5) & can


HeadCondition = Callable[[int, jax.Array, jax.Array], jax.Array]
"""``condition(i, head_logits, inputs) -> head_logits``: head ``i``'s logits given the earlier heads'
choices (:meth:`TunerNetwork.condition_head`, of an autoregressive network)."""


def _conditioned_head(condition: HeadCondition | None, index: int, head: jax.Array, targets: jax.Array,
                      current: jax.Array, chosen: list[jax.Array], observation: jax.Array) -> jax.Array:
    """Head ``index``'s logits given the choices ``chosen`` of the heads before it (one env)."""
    if condition is None:
        return head
    so_far = jnp.stack([*chosen, *[jnp.zeros((), jnp.int32)] * (len(current) - len(chosen))]).astype(jnp.int32)
    inputs = head_inputs(targets, current, so_far, observation[dynamics.OBS_AVAILABLE])[index]
    return condition(index, head, inputs)


def _absolute_sequential_choice(heads: ActionHeads, params: PipelineParams, decoding: str,
                                condition: HeadCondition, logits: jax.Array, observation: jax.Array,
                                key: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """One env's absolute-mode choices without a shield, knob by knob, each head conditioned on the earlier ones."""
    current = knob_values(observation, params)[0]
    targets = heads.observation_targets(observation, params)
    keys = None if key is None else jax.random.split(key, len(heads.sizes))
    choices = []
    for i, head in enumerate(heads.split(logits)):
        head = _conditioned_head(condition, i, head, targets, current, choices, observation)
        ok = jnp.ones(heads.sizes[i], bool)
        if keys is None:
            choice = decoded_choice(head, targets[i, : heads.sizes[i]], ok, decoding == "mean" and MEAN_DECODED_KNOBS[i])
        else:
            choice = jax.random.categorical(keys[i], head)
        choices.append(choice.astype(jnp.int32))
    return jnp.stack(choices), jnp.ones(heads.num_logits, bool)


def _absolute_shielded_choice(shield: MemoryShield, heads: ActionHeads, params: PipelineParams, decoding: str,
                              condition: HeadCondition | None, logits: jax.Array, estimate: MemoryEstimate,
                              observation: jax.Array, key: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """One env's absolute-mode choices under the shield, knob by knob (see :func:`choose_actions`)."""
    growth, unit_cost, proportional = absolute_move_costs(estimate, observation, params, heads, shield.probe_fraction)
    budget = (1.0 - shield.headroom) * observation[dynamics.OBS_MEMORY_CAP] - observation[dynamics.OBS_MEMORY]
    current = knob_values(observation, params)[0]
    targets = heads.observation_targets(observation, params)
    keys = None if key is None else jax.random.split(key, len(heads.sizes))
    batch_factor = jnp.ones((), jnp.float32)
    if shield.shrink_credit:
        # What a shrink releases, from below: exact costs only (see MemoryShield.shrink_credit).
        exact = estimate.equations.exact & estimate.measured
        shrink = jnp.maximum(current[:, None] - targets, 0).astype(jnp.float32)
        release_low = jnp.where(exact[NUM_STAGES], unit_cost[NUM_STAGES], 0.0)  # M(B), the batch-proportional memory
    split = heads.split(logits)
    if shield.batch_probe:
        probe = _batch_probe_wanted(heads, split[NUM_STAGES], estimate, targets, current, proportional, budget)
    choices, allowed = [], []
    for i, head in enumerate(split):
        head = _conditioned_head(condition, i, head, targets, current, choices, observation)
        grows = growth[i, : heads.sizes[i]].astype(jnp.float32)
        if i < NUM_STAGES:
            extra = grows * unit_cost[i]
        elif i == NUM_STAGES:
            # Doubling the batch size k times multiplies the memory proportional to it by 2^k.
            extra = (2.0**grows - 1.0) * proportional
        else:
            # A batch of prefetch at the batch size chosen just before.
            extra = grows * unit_cost[i] * batch_factor
        ok = (grows == 0) | (extra <= budget)
        if shield.batch_probe:
            # The probe: every knob stays but the batch size, which halves (see MemoryShield.batch_probe).
            ok = jnp.where(probe, targets[i, : heads.sizes[i]] == current[i] - (i == NUM_STAGES), ok)
        masked = jnp.where(ok, head, MASKED_LOGIT)
        if keys is None:
            choice = decoded_choice(head, targets[i, : heads.sizes[i]], ok,
                                    decoding == "mean" and MEAN_DECODED_KNOBS[i])
        else:
            choice = jax.random.categorical(keys[i], masked)
        budget = budget - extra[choice]
        if i < NUM_STAGES and _BATCH_HOLDING[i]:
            proportional = proportional + grows[choice] * unit_cost[i]
        if i == NUM_STAGES:
            batch_factor = 2.0 ** grows[choice]
        if shield.shrink_credit:
            shrunk = shrink[i, : heads.sizes[i]][choice]
            if i < NUM_STAGES and _BATCH_HOLDING[i]:
                # A batch-holding worker's w + e B (an upper bound) is at least its e B: what is
                # left of the batch-proportional memory after the shrink is at least M(B) less it.
                release_low = jnp.maximum(release_low - shrunk * unit_cost[i], 0.0)
            elif i < NUM_STAGES:
                budget = budget + jnp.where(exact[i], shrunk * unit_cost[i], 0.0)
            elif i == NUM_STAGES:
                # k halvings release (1 - 2^-k) of the batch-proportional memory, and the prefetch
                # head then prices its batches at the smaller batch size.
                budget = budget + (1.0 - 2.0**-shrunk) * release_low
                batch_factor = batch_factor * 2.0**-shrunk
        choices.append(choice.astype(jnp.int32))
        allowed.append(ok)
    return jnp.stack(choices), jnp.concatenate(allowed)


def choose_actions(shield: MemoryShield | None, heads: ActionHeads, logits: jax.Array, estimate: MemoryEstimate,
                   observation: jax.Array, params: PipelineParams,
                   keys: jax.Array | None = None, decoding: str = "mode",
                   condition: HeadCondition | None = None) -> tuple[jax.Array, jax.Array]:
    """The policy's head choices under the memory shield, sampled or deterministic.

    Increment mode: the moves :func:`shield_allowed_actions` rejects are masked before the single
    head chooses. Absolute mode: the heads choose one after the other (each stage's workers, the
    batch size, the prefetch depth), each knob's growing moves masked when their estimated memory
    (:func:`absolute_move_costs`) would exceed what the cap, less the headroom, leaves after the
    memory in use and the growth the earlier knobs chose — autoregressive masking, so that each
    head's masked softmax is a normalised conditional distribution and the sum of the chosen
    moves' log-probabilities under the stored masks is the joint action's exact log-probability.
    Shrinks and the no-op are never masked, so every head always has a choice. Without a shield
    nothing is masked. With ``condition`` (an autoregressive policy, absolute mode) each head's
    logits are first conditioned on the choices the heads before it made (:func:`head_inputs`);
    ``logits`` are then the unconditioned ones, which the batch probe's trigger reads.

    Args:
        shield: The :class:`MemoryShield`, or ``None``.
        heads: The action heads.
        logits: ``(n, num_logits)`` the network's logits.
        estimate: The :class:`MemoryEstimate` of each env (batch shape ``(n,)``).
        observation: ``(n, 26)`` the latest observations.
        params: The env's params (the absolute knobs' bounds).
        keys: ``(n,)`` one sampling key per env, or ``None`` for deterministic choices.
        decoding: Deterministic choices (``keys`` None): ``"mode"`` each head's most likely
            choice; ``"mean"`` (absolute mode) the heads of :data:`MEAN_DECODED_KNOBS` take the
            allowed choice nearest their expected knob value (:func:`decoded_choice`).
        condition: An autoregressive network's :meth:`TunerNetwork.condition_head` (absolute mode), or None.

    Returns:
        ``(choices (n, num_heads) int32, allowed (n, num_logits) bool)``: ``allowed`` is the mask
        each head chose under (what the PPO loss masks the same logits with).
    """
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {DECODINGS}, got {decoding!r}")
    if decoding == "mean" and heads.mode != "absolute":
        raise ValueError("decoding='mean' needs absolute-mode heads (increment mode's one head is not ordered)")
    if condition is not None and heads.mode != "absolute":
        raise ValueError("condition (an autoregressive policy) needs absolute-mode heads")
    if shield is None and condition is not None:
        choose = functools.partial(_absolute_sequential_choice, heads, params, decoding, condition)
        if keys is None:
            return jax.vmap(lambda lg, obs: choose(lg, obs, None))(logits, observation)
        return jax.vmap(choose)(logits, observation, keys)
    if shield is not None and heads.mode == "absolute":
        choose = functools.partial(_absolute_shielded_choice, shield, heads, params, decoding, condition)
        if keys is None:
            return jax.vmap(lambda lg, est, obs: choose(lg, est, obs, None))(logits, estimate, observation)
        return jax.vmap(choose)(logits, estimate, observation, keys)
    allowed = allowed_choices(shield, heads, estimate, observation)
    masked = mask_logits(logits, allowed)
    if keys is None and decoding == "mean":
        targets = heads.observation_targets(observation, params)
        choices = [jax.vmap(decoded_choice, in_axes=(0, 0, 0, None))(head, targets[:, i, : heads.sizes[i]], ok,
                                                                      MEAN_DECODED_KNOBS[i])
                   for i, (head, ok) in enumerate(zip(heads.split(logits), heads.split(allowed)))]
        return jnp.stack(choices, axis=-1), allowed
    if keys is None:
        return _greedy(heads, masked), allowed
    return jax.vmap(functools.partial(_sample, heads))(keys, masked), allowed


# ------------------------------------------------------------------------------------ networks
class _StageTower(nnx.Module):
    """One tower of :class:`TunerNetwork`: a stage encoder shared by the six stages, pooled over
    them, and a torso over the pool and the global features."""

    def __init__(self, width: int, activation: str, share_features: bool, rngs: nnx.Rngs,
                 scaling_features: bool = False):
        per_stage, overall = feature_sizes(share_features, scaling_features)
        self.encoder = MLP(per_stage + overall, (width,), width, activation=activation, rngs=rngs)
        self.torso = MLP(2 * width + overall, (width,), width, activation=activation, rngs=rngs)
        self.act = ACTIVATIONS[activation]
        self.share_features = share_features
        self.scaling_features = scaling_features

    def __call__(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(per-stage embeddings (..., 6, width), context (..., width))``."""
        stage, overall = split_features(features, self.share_features, self.scaling_features)
        context = jnp.broadcast_to(overall[..., None, :], (*stage.shape[:-1], overall.shape[-1]))
        embedded = self.act(self.encoder(jnp.concatenate([stage, context], axis=-1)))
        pooled = jnp.concatenate([embedded.mean(axis=-2), embedded.max(axis=-2), overall], axis=-1)
        return embedded, self.act(self.torso(pooled))


class TunerNetwork(nnx.Module):
    """Actor and critic with one encoder shared by the six stages (each has its own weights).

    A stage's decisions (grow it, shrink it, by how much) come from the same weights for every
    stage, applied to that stage's features with the global context — so "grow the bottleneck"
    is learned once, not six times — while its one-hot identity lets it learn what differs
    between stages (the read stage's I/O ceiling, the batch stage's per-batch cost). Pooled over
    stages, the embeddings feed the global decisions (batch size, prefetch depth, no-op) and the
    value.

    Args:
        heads: The action heads (their layout: per-stage heads first, in pipeline order).
        width: Hidden width of the encoders and torsos.
        activation: ``"tanh"`` or ``"relu"``.
        head_critic: Also build the action-prefix critic (:meth:`prefix_values`).
        autoregressive: Also build the head conditioner (:meth:`conditioned_logits`): each head's
            logits corrected from the earlier heads' choices (absolute mode).
        share_features: Whether its input has the proportional-share features
            (:func:`observation_features`).
        scaling_features: Whether its input has the parallel-efficiency features.
        rngs: Parameter initialisation keys.
    """

    def __init__(self, heads: ActionHeads, width: int = 64, *, activation: str = "tanh", head_critic: bool = False,
                 share_features: bool = True, scaling_features: bool = False, autoregressive: bool = False,
                 rngs: nnx.Rngs):
        self.per_stage = heads.per_stage_logits
        self.share_features = share_features
        self.scaling_features = scaling_features
        init = nnx.initializers.orthogonal(0.01)
        self.actor = _StageTower(width, activation, share_features, rngs, scaling_features)
        self.stage_logits = nnx.Linear(2 * width, self.per_stage, kernel_init=init, rngs=rngs)
        self.global_logits = nnx.Linear(width, heads.num_logits - NUM_STAGES * self.per_stage, kernel_init=init,
                                        rngs=rngs)
        self.critic = _StageTower(width, activation, share_features, rngs, scaling_features)
        self.value_head = nnx.Linear(width, 1, kernel_init=nnx.initializers.orthogonal(1.0), rngs=rngs)
        self.heads = heads
        # b(s, a_<i): the critic's context and the earlier heads' one-hot choices (later ones zero)
        self.prefix_critic = (MLP(width + heads.num_logits, (width,), 1, activation=activation, rngs=rngs)
                              if head_critic else None)
        if autoregressive and heads.mode != "absolute":
            raise ValueError("autoregressive needs absolute-mode heads (increment mode has one head)")
        # Corrections of a head's logits from its own logits and the earlier heads' choices; a small
        # output gain, so that training starts from the factorised policy.
        self.head_conditioner = (MLP(HEAD_INPUTS + max(heads.sizes), (width,), max(heads.sizes), activation=activation,
                                     out_scale=0.01, rngs=rngs) if autoregressive else None)

    def __call__(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(..., FEATURE_SIZE)`` -> ``(logits (..., num_logits), value (...))``."""
        _, critic_context = self.critic(features)
        return self._logits(features), self.value_head(critic_context)[..., 0]

    def _logits(self, features: jax.Array) -> jax.Array:
        embedded, context = self.actor(features)
        both = jnp.concatenate([embedded, jnp.broadcast_to(context[..., None, :], embedded.shape)], axis=-1)
        stage = self.stage_logits(both)
        return jnp.concatenate([stage.reshape(*stage.shape[:-2], -1), self.global_logits(context)], axis=-1)

    @property
    def autoregressive(self) -> bool:
        """Whether the heads are conditioned on the earlier heads' choices (:meth:`conditioned_logits`)."""
        return self.head_conditioner is not None

    def _head_correction(self, head_logits: jax.Array, inputs: jax.Array) -> jax.Array:
        width = max(self.heads.sizes)
        pad = [(0, 0)] * (head_logits.ndim - 1) + [(0, width - head_logits.shape[-1])]
        correction = self.head_conditioner(jnp.concatenate([inputs, jnp.pad(head_logits, pad)], axis=-1))
        return correction[..., : head_logits.shape[-1]]

    def conditioned_logits(self, logits: jax.Array, inputs: jax.Array) -> jax.Array:
        """Every head's logits given the earlier heads' choices (``autoregressive``; else ``logits``).

        Args:
            logits: ``(..., num_logits)`` the network's logits (:meth:`__call__`).
            inputs: ``(..., H, HEAD_INPUTS)`` each head's :func:`head_inputs` (from the choices made).

        Returns:
            ``(..., num_logits)``: head ``i``'s part is :meth:`condition_head` of its logits and ``inputs[..., i, :]``.
        """
        if self.head_conditioner is None:
            return logits
        return jnp.concatenate([head + self._head_correction(head, inputs[..., i, :])
                                for i, head in enumerate(self.heads.split(logits))], axis=-1)

    def condition_head(self, index: int, head_logits: jax.Array, inputs: jax.Array) -> jax.Array:
        """One head's logits given the earlier heads' choices: ``head_logits`` (``(..., size)``, head
        ``index``'s part of the network's logits) plus the conditioner's correction from them and
        ``inputs`` (``(..., HEAD_INPUTS)``, that head's :func:`head_inputs`)."""
        if self.head_conditioner is None:
            return head_logits
        return head_logits + self._head_correction(head_logits, inputs)

    def prefix_values(self, features: jax.Array, choices: jax.Array) -> jax.Array:
        """The action-prefix baselines ``b(s, a_<i)`` for ``i = 1 ... H-1`` (``head_critic`` only).

        Args:
            features: ``(..., FEATURE_SIZE)``.
            choices: ``(..., H)`` int32 head choices.

        Returns:
            ``(..., H - 1)``.
        """
        return self._prefix_values(self.critic(features)[1], choices)

    def with_prefix_values(self, features: jax.Array, choices: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(logits, value, prefix values)`` with each tower run once (``head_critic`` only)."""
        _, critic_context = self.critic(features)
        return (self._logits(features), self.value_head(critic_context)[..., 0],
                self._prefix_values(critic_context, choices))

    def _prefix_values(self, critic_context: jax.Array, choices: jax.Array) -> jax.Array:
        if self.prefix_critic is None:
            raise ValueError("this network was built without head_critic")
        prefixes = _one_hot_choices(self.heads, choices)[..., None, :] * jnp.asarray(_prefix_masks(self.heads))
        context = jnp.broadcast_to(critic_context[..., None, :], (*prefixes.shape[:-1], critic_context.shape[-1]))
        return self.prefix_critic(jnp.concatenate([context, prefixes], axis=-1))[..., 0]


# ------------------------------------------------------------------------------------ state
@struct.dataclass
class LearnerState:
    """What the update changes (identical on every device).

    Attributes:
        params: The network's parameters (``nnx.State``).
        opt_state: The optax optimiser state.
        key: The learner's typed PRNG key; each update splits off its rollout and minibatch keys.
        update: int32 scalar, updates done.
    """

    params: Any
    opt_state: Any
    key: jax.Array
    update: jax.Array


@struct.dataclass
class PipelinesState:
    """What the rollout changes: one row per pipeline (sharded over devices).

    Attributes:
        env: The pipelines' :class:`~recgym.core.EnvCarry` (state and key chain).
        observation: ``(n, 26)`` the latest observations.
        previous_observation: ``(n, 26)`` the observations before them (the agent's memory).
        throughput_scale: ``(n,)`` each episode's reward scale (:func:`episode_throughput_scale`).
        episode_return: ``(n,)`` scaled reward summed so far this episode.
        episode_length: ``(n,)`` int32 steps so far this episode.
        memory_estimate: The memory shield's :class:`MemoryEstimate` of each pipeline's episode.
        first_observation: ``(n, 26)`` each episode's first observation (with
            :attr:`TunerConfig.scaling_features`; None without).
    """

    env: EnvCarry
    observation: jax.Array
    previous_observation: jax.Array
    throughput_scale: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array
    memory_estimate: MemoryEstimate
    first_observation: jax.Array | None = None


@struct.dataclass
class TunerState:
    """The whole state of a training run (what a checkpoint holds).

    Attributes:
        learner: :class:`LearnerState` (replicated over devices).
        pipelines: :class:`PipelinesState` (the global batch of pipelines).
    """

    learner: LearnerState
    pipelines: PipelinesState


@struct.dataclass
class Rollout:
    """One rollout step of every local pipeline (fields gain a leading time axis in the scan).

    Attributes:
        features: ``(n, FEATURE_SIZE)`` what the policy acted on.
        choices: ``(n, heads)`` int32 head choices.
        allowed: ``(n, num_logits)`` bool, the choices the memory shield let through (masked logits).
        log_prob: ``(n,)`` their log-probability under the acting policy.
        head_log_prob: ``(n, heads)`` each head's part of ``log_prob``.
        value: ``(n,)`` the critic's value of ``features``.
        reward: ``(n,)`` scaled reward.
        terminated: ``(n,)`` bool, the trainer ran out of memory.
        truncated: ``(n,)`` bool, the time limit was reached.
        next_features: ``(n, FEATURE_SIZE)`` features of the observation reached, before any reset.
        finished_return: ``(n,)`` return of the episode that ended at this step (0 otherwise).
        crashed: ``(n,)`` bool, an episode ended in an OOM crash here.
        head_inputs: ``(n, heads, HEAD_INPUTS)`` what each head was conditioned on
            (:func:`head_inputs`; an autoregressive policy only, else None).
    """

    features: jax.Array
    choices: jax.Array
    allowed: jax.Array
    log_prob: jax.Array
    head_log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    next_features: jax.Array
    finished_return: jax.Array
    crashed: jax.Array
    head_inputs: jax.Array | None = None


# ------------------------------------------------------------------------------------ training
def training_params(config: TunerConfig) -> PipelineParams:
    """The env params the tuner trains on: ``config.scenario`` in ``config.action_mode``."""
    return make_params(config.scenario, config.action_mode)


class TunerTraining:
    """PPO for one config: ``init``, compiled update blocks, and ``train``.

    Built by :func:`make_train`. Calling it, ``training(key)``, is the pure ``train(key) ->
    (state, metrics)``: init, then every update of the run in one ``lax.scan``, under one ``jit``;
    with ``num_devices=1`` it can be ``jax.vmap``-ed over keys (seeds).

    Attributes:
        config: The config.
        core: The pipeline's functional core.
        env_params: The params trained on.
        heads: The action heads.
        shield: The :class:`MemoryShield` (``None``: none).
        graphdef: The network's NNX graph definition (static).
        traces: How many times the update body was traced (a recompilation guard for tests).
    """

    def __init__(self, config: TunerConfig, env_params: PipelineParams | None = None):
        env_params = training_params(config) if env_params is None else env_params
        if env_params.action_mode != config.action_mode:
            raise ValueError(f"config.action_mode={config.action_mode!r} but the env params have "
                             f"action_mode={env_params.action_mode!r}")
        self.config = config
        self.core = PipelineCore(env_params)
        self.env_params = env_params
        self.heads = ActionHeads.from_config(config, env_params)
        self.shield = MemoryShield.from_config(config)
        # Only the structure: the abstract model draws no parameters (init(key) does).
        self.graphdef, _ = nnx.split(nnx.eval_shape(lambda: self.build_model(jax.random.key(0))))
        self.optimizer = make_optimizer(
            config.optimizer, config.learning_rate, config.max_grad_norm,
            anneal_steps=(config.num_updates * config.update_epochs * config.num_minibatches
                          if config.anneal_lr else None))
        self.traces = 0
        self._compiled: dict[int, Any] = {}

    # ---------------------------------------------------------------- model
    def build_model(self, key: jax.Array) -> TunerNetwork:
        """A freshly initialised network (parameters drawn from ``key``)."""
        c = self.config
        return TunerNetwork(self.heads, c.hidden_width, activation=c.activation,
                            head_critic=c.head_advantages != "joint", share_features=c.share_features,
                            scaling_features=c.scaling_features, autoregressive=c.autoregressive,
                            rngs=nnx.Rngs(params=key))

    def model(self, params: Any) -> TunerNetwork:
        """The network with ``params``."""
        return nnx.merge(self.graphdef, params)

    # ---------------------------------------------------------------- init
    def _fresh_estimate(self, batch_shape: tuple[int, ...]) -> MemoryEstimate:
        # The config's estimate (with equations when it refines, shielded or not: the checkpointed layout).
        return MemoryEstimate.unknown(batch_shape, refine=self.config.shield_refine,
                                      measure_batch=self.config.shield_measure_batch)

    def init(self, key: jax.Array) -> TunerState:
        """The state before the first update, all randomness drawn from ``key`` (a typed key)."""
        model_key, env_key, learner_key = jax.random.split(key, 3)
        _, params = nnx.split(self.build_model(model_key))
        env_keys = jax.random.split(env_key, self.config.num_envs)
        observation, env = jax.vmap(self.core.start, in_axes=(0, None))(env_keys, self.env_params)
        n = self.config.num_envs
        pipelines = PipelinesState(
            env=env, observation=observation, previous_observation=observation,
            throughput_scale=episode_throughput_scale(observation),
            episode_return=jnp.zeros((n,), jnp.float32), episode_length=jnp.zeros((n,), jnp.int32),
            memory_estimate=self._fresh_estimate((n,)),
            first_observation=observation if self.config.scaling_features else None)
        learner = LearnerState(params=params, opt_state=self.optimizer.init(params), key=learner_key,
                               update=jnp.zeros((), jnp.int32))
        return TunerState(learner=learner, pipelines=pipelines)

    # ---------------------------------------------------------------- one update (per device)
    def _rollout(self, axis: DeviceAxis, env_params: PipelineParams, params: Any, pipelines: PipelinesState,
                 rollout_key: jax.Array) -> tuple[PipelinesState, Rollout]:
        c = self.config
        model = self.model(params)
        n_local = pipelines.observation.shape[0]
        env_ids = axis.index() * n_local + jnp.arange(n_local)  # global: the same draws on any device count

        def env_step(p: PipelinesState, t: jax.Array):
            step_key = jax.random.fold_in(rollout_key, t)
            env_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, env_ids)
            features = observation_features(p.observation, p.previous_observation, c.share_features,
                                            p.first_observation)
            logits, value = model(features)
            choices, allowed = choose_actions(self.shield, self.heads, logits, p.memory_estimate, p.observation,
                                              env_params, env_keys,
                                              condition=model.condition_head if c.autoregressive else None)
            inputs = None
            if c.autoregressive:  # the heads' logits as they were sampled, given the earlier heads' choices
                inputs = observation_head_inputs(self.heads, p.observation, env_params, choices)
                logits = model.conditioned_logits(logits, inputs)
            per_head, _ = _head_log_probs(self.heads, mask_logits(logits, allowed), choices)
            log_prob = _joint_log_prob(per_head)
            action = self.heads.to_env_action(choices, p.observation, env_params)
            observation, env, env_reward, terminated, truncated, info = jax.vmap(
                self.core.step_autoreset, in_axes=(0, 0, None))(p.env, action, env_params)
            done = terminated | truncated
            if c.training_reward == "true":  # the simulator's noise-free throughput, in the observation's unit
                measured = info["throughput"] * dynamics.RATE_UNIT
            else:
                measured = info["final_obs"][:, dynamics.OBS_THROUGHPUT]
            reward = jnp.where(terminated, -c.oom_penalty, measured / p.throughput_scale)
            episode_return = p.episode_return + reward
            rollout = Rollout(
                features=features, choices=choices, allowed=allowed, log_prob=log_prob,
                head_log_prob=jnp.stack(per_head, axis=-1), value=value, reward=reward,
                terminated=terminated, truncated=truncated,
                next_features=observation_features(info["final_obs"], p.observation, c.share_features,
                                                   p.first_observation),
                finished_return=jnp.where(done, episode_return, 0.0), crashed=terminated, head_inputs=inputs)
            next_p = PipelinesState(
                env=env, observation=observation,
                previous_observation=jnp.where(done[:, None], observation, p.observation),
                throughput_scale=jnp.where(done, episode_throughput_scale(observation), p.throughput_scale),
                episode_return=jnp.where(done, 0.0, episode_return),
                episode_length=jnp.where(done, 0, p.episode_length + 1),
                memory_estimate=jax.tree_util.tree_map(
                    lambda fresh, learnt: jnp.where(done.reshape(-1, *[1] * (fresh.ndim - 1)), fresh, learnt),
                    self._fresh_estimate((n_local,)),
                    update_memory_estimate(p.memory_estimate, p.observation, info["final_obs"])),
                first_observation=None if p.first_observation is None
                else jnp.where(done[:, None], observation, p.first_observation))
            return next_p, rollout

        return jax.lax.scan(env_step, pipelines, jnp.arange(c.rollout_steps))

    def entropy_weight(self, update: jax.Array) -> jax.Array | float:
        """The entropy bonus's weight at ``update`` (0-based): ``entropy_coef`` (a constant), or
        with ``anneal_entropy`` that weight decayed linearly to 0 at the last update."""
        c = self.config
        if not c.anneal_entropy:
            return c.entropy_coef
        return jnp.float32(c.entropy_coef) * jnp.maximum(0.0, 1.0 - update / c.num_updates).astype(jnp.float32)

    def _loss(self, params: Any, batch: Rollout, advantages: jax.Array, targets: jax.Array,
              entropy_coef: jax.Array | float | None = None):
        """PPO's loss on a minibatch; ``advantages`` is ``(n,)``, or ``(n, heads)`` per head;
        ``entropy_coef`` the bonus's weight (None: the config's ``entropy_coef``)."""
        c = self.config
        entropy_coef = c.entropy_coef if entropy_coef is None else entropy_coef
        model = self.model(params)
        if c.head_advantages == "joint":
            logits, values = model(batch.features)
        else:
            logits, values, prefix = model.with_prefix_values(batch.features, batch.choices)
        if batch.head_inputs is not None:
            logits = model.conditioned_logits(logits, batch.head_inputs)
        logits = mask_logits(logits, batch.allowed)
        if c.head_advantages == "joint":
            log_prob, entropy = _log_probs(self.heads, logits, batch.choices)
            ratio = jnp.exp(log_prob - batch.log_prob)
            policy_loss = -jnp.mean(jnp.minimum(ratio * advantages,
                                                jnp.clip(ratio, 1.0 - c.clip_coef, 1.0 + c.clip_coef) * advantages))
            value_loss = 0.5 * jnp.mean((values - targets) ** 2)
        else:  # each head's own ratio, clipped, times its own advantage; summed over heads
            per_head, entropy = _head_log_probs(self.heads, logits, batch.choices)
            head_ratio = jnp.exp(jnp.stack(per_head, axis=-1) - batch.head_log_prob)
            clipped = jnp.clip(head_ratio, 1.0 - c.clip_coef, 1.0 + c.clip_coef)
            policy_loss = -jnp.mean(jnp.sum(jnp.minimum(head_ratio * advantages, clipped * advantages), axis=-1))
            ratio = jnp.prod(head_ratio, axis=-1)  # the joint ratio, for the logged KL and clip fraction
            value_loss = 0.5 * jnp.mean((values - targets) ** 2) + 0.5 * jnp.mean((prefix - targets[:, None]) ** 2)
        entropy = jnp.mean(entropy)
        total = policy_loss + c.value_coef * value_loss - entropy_coef * entropy
        aux = {"losses/policy_loss": policy_loss, "losses/value_loss": value_loss, "losses/entropy": entropy,
               "losses/total_loss": total,
               "losses/approx_kl": jnp.mean((ratio - 1.0) - jnp.log(ratio)),
               "losses/clip_fraction": jnp.mean(jnp.abs(ratio - 1.0) > c.clip_coef)}
        return total, aux

    def _update(self, axis: DeviceAxis, env_params: PipelineParams, learner: LearnerState,
                pipelines: PipelinesState) -> tuple[LearnerState, PipelinesState, dict[str, jax.Array]]:
        self.traces += 1  # Python side effect: runs once per trace, never per executed update
        c = self.config
        key, rollout_key, epoch_key = jax.random.split(learner.key, 3)
        pipelines, batch = self._rollout(axis, env_params, learner.params, pipelines, rollout_key)
        _, next_values = self.model(learner.params)(batch.next_features)
        advantages, targets = gae(batch.reward, batch.value, next_values, batch.terminated, batch.truncated,
                                  c.discount, c.gae_lambda)
        mean = axis.mean(advantages.mean())
        std = jnp.sqrt(axis.mean(jnp.mean((advantages - mean) ** 2)) + 1e-8)
        if c.head_advantages == "joint":
            advantages = (advantages - mean) / std
        else:  # per head, centred per head, on the joint advantage's scale (a head that matters
            # little keeps small advantages rather than being blown up to unit variance)
            prefix = self.model(learner.params).prefix_values(batch.features, batch.choices)
            per_head = head_advantages(c.head_advantages, targets, batch.value, prefix)
            head_mean = axis.mean(per_head.mean(axis=(0, 1)))
            advantages = (per_head - head_mean) / std

        flat = jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:]),
                                      (batch, advantages, targets))
        size = flat[1].shape[0]
        per_minibatch = size // c.num_minibatches
        entropy_coef = self.entropy_weight(learner.update)

        def epoch(carry, key):
            params, opt_state = carry
            order = jax.random.permutation(key, size)
            shuffled = jax.tree_util.tree_map(
                lambda x: x[order].reshape(c.num_minibatches, per_minibatch, *x.shape[1:]), flat)

            def minibatch(carry, mb):
                params, opt_state = carry
                mb_batch, mb_adv, mb_targets = mb
                grads, aux = jax.grad(self._loss, has_aux=True)(params, mb_batch, mb_adv, mb_targets, entropy_coef)
                grads = axis.mean_gradients(grads)
                updates, opt_state = self.optimizer.update(grads, opt_state, params)
                params = optax.apply_updates(params, updates)
                return (params, opt_state), aux | {"losses/grad_norm": optax.tree.norm(grads)}

            return jax.lax.scan(minibatch, (params, opt_state), shuffled)

        epoch_keys = jax.random.split(epoch_key, c.update_epochs)
        (params, opt_state), aux = jax.lax.scan(epoch, (learner.params, learner.opt_state), epoch_keys)
        done = batch.terminated | batch.truncated
        finished = axis.sum(jnp.sum(done))
        metrics = axis.mean(jax.tree_util.tree_map(jnp.mean, aux))
        metrics |= {
            "charts/episodes": finished,
            "charts/episodic_return": axis.sum(jnp.sum(batch.finished_return)) / jnp.maximum(finished, 1),
            "charts/oom_crashes": axis.sum(jnp.sum(batch.crashed)),
            "charts/reward_per_step": axis.mean(jnp.mean(jnp.where(batch.terminated, 0.0, batch.reward))),
            "global_step": (learner.update + 1) * c.steps_per_update,
        }
        if c.anneal_entropy:  # logged only when it moves (a run's learning-curve columns stay fixed)
            metrics["charts/entropy_coef"] = entropy_coef
        learner = LearnerState(params=params, opt_state=opt_state, key=key, update=learner.update + 1)
        return learner, pipelines, metrics

    def _block(self, axis: DeviceAxis, env_params: PipelineParams, learner: LearnerState, pipelines: PipelinesState,
               *, num_updates: int):
        def body(carry, _):
            learner, pipelines = carry
            learner, pipelines, metrics = self._update(axis, env_params, learner, pipelines)
            return (learner, pipelines), metrics

        (learner, pipelines), metrics = jax.lax.scan(body, (learner, pipelines), None, length=num_updates)
        return learner, pipelines, metrics

    # ---------------------------------------------------------------- public API
    def run(self, state: TunerState, num_updates: int) -> tuple[TunerState, dict[str, jax.Array]]:
        """Run ``num_updates`` updates from ``state`` (one compiled call, cached per block size).

        Returns:
            ``(state, metrics)``: ``{name: (num_updates,) array}``, one entry per update.
        """
        if num_updates not in self._compiled:
            step = functools.partial(self._block, num_updates=num_updates)
            self._compiled[num_updates] = data_parallel(step, self.config.parallel, self.config.num_devices)
        learner, pipelines, metrics = self._compiled[num_updates](self.env_params, state.learner, state.pipelines)
        return TunerState(learner=learner, pipelines=pipelines), metrics

    def __call__(self, key: jax.Array) -> tuple[TunerState, dict[str, jax.Array]]:
        """``train(key)``: initialise from ``key`` and run every update of the config."""
        state = self.init(key)
        if self.config.single_device:  # pure: jittable and vmappable as a whole
            learner, pipelines, metrics = self._block(DeviceAxis(), self.env_params, state.learner,
                                                      state.pipelines, num_updates=self.config.num_updates)
            return TunerState(learner=learner, pipelines=pipelines), metrics
        return self.run(state, self.config.num_updates)

    def checkpoint_metadata(self) -> dict[str, Any]:
        """What :meth:`TunerPolicy.from_checkpoint` needs to rebuild the network."""
        stage, global_ = feature_sizes(self.config.share_features, self.config.scaling_features)
        return {"algorithm": "ppo-tuner", "config": config_to_dict(self.config),
                "feature_size": NUM_STAGES * stage + global_}

    def checkpoint_items(self, state: TunerState) -> dict[str, Any]:
        """What a checkpoint of ``state`` holds: the whole state (to resume) and the policy's
        parameters (to act, see :meth:`TunerPolicy.from_checkpoint`)."""
        return {"train_state": state, "policy": {"params": state.learner.params}}


def make_train(config: TunerConfig, env_params: PipelineParams | None = None) -> TunerTraining:
    """Build PPO training of the tuner for ``config``.

    Args:
        config: The run's :class:`TunerConfig`.
        env_params: Params of the training env (default: ``config.scenario`` in
            ``config.action_mode``); their action mode must be the config's.

    Returns:
        ``train``: call ``train(key)`` for ``(state, metrics)`` (see :class:`TunerTraining`).

    Example:
        >>> import jax
        >>> config = TunerConfig(total_steps=2048, num_envs=64, rollout_steps=8)
        >>> state, metrics = jax.jit(make_train(config))(jax.random.key(0))
        >>> metrics["losses/total_loss"].shape
        (4,)
    """
    return TunerTraining(config, env_params)


# ------------------------------------------------------------------------------------ policy
class TunerPolicy(Policy):
    """A trained tuner as a :class:`recgym.policies.Policy` (single env, vector env, live pipeline).

    It reads only the observation and remembers the previous one per env (reset by
    ``begin_episode``); ``info`` is ignored. After each :meth:`act_batch`, :attr:`last_decision`
    holds what the decision was made from (for diagnosis: the logits, each head's conditioned on the
    earlier heads' choices for an autoregressive network, the shield's masks and the choices). Deterministic by default, as evaluated: in absolute
    mode the worker and batch-size heads take the allowed choice nearest their expected knob value
    and the prefetch head its most likely one (``decoding="mean"``); in increment mode the one
    head's most likely choice.

    Args:
        graphdef: The network's NNX graph definition.
        params: Its parameters (``nnx.State``).
        heads: The action heads the network was trained with.
        env_params: Params of the env it acts in (the action mode and bounds must match).
        shield: The :class:`MemoryShield` it acts under (the one it was trained with; ``None``:
            none). It keeps a :class:`MemoryEstimate` per env, forgotten by ``begin_episode``.
        deterministic: Decode each head's distribution (``decoding``) instead of sampling.
        decoding: How a deterministic tuner decodes (:data:`DECODINGS`): ``"mode"`` each head's
            most likely choice, ``"mean"`` (absolute mode only) see :func:`choose_actions`. None:
            ``"mean"`` in absolute mode, ``"mode"`` in increment mode.
        name: Display name.

    Raises:
        ValueError: The env's action mode is not the tuner's, or an unknown decoding (or
            ``"mean"`` in increment mode).
    """

    name = "ppo-tuner"

    def __init__(self, graphdef: Any, params: Any, heads: ActionHeads, env_params: PipelineParams, *,
                 shield: MemoryShield | None = None, deterministic: bool = True, decoding: str | None = None,
                 name: str | None = None):
        super().__init__()
        if env_params.action_mode != heads.mode:
            raise ValueError(f"the tuner was trained for action_mode={heads.mode!r}, "
                             f"the env has action_mode={env_params.action_mode!r}")
        if decoding is None:
            decoding = "mean" if heads.mode == "absolute" else "mode"
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}, got {decoding!r}")
        if decoding == "mean" and heads.mode != "absolute":
            raise ValueError("decoding='mean' needs an absolute-mode tuner (increment mode's one head is not ordered)")
        self.decoding = decoding
        self.graphdef, self.params, self.heads = graphdef, params, heads
        self.env_params = env_params
        self.shield = shield
        self.deterministic = bool(deterministic)
        if name is not None:
            self.name = name
        self.previous = None
        self.first: np.ndarray | None = None
        self.estimate: MemoryEstimate | None = None
        #: The last :meth:`act_batch` call's decision, as NumPy arrays: ``logits`` ``(num_envs,
        #: heads.num_logits)`` the network's logits before the shield, ``allowed`` (same shape) the
        #: choices the shield let through (each absolute-mode head's mask given the earlier heads'
        #: choices) and ``choices`` ``(num_envs, num_heads)`` the chosen moves; ``None`` before the
        #: first call. :attr:`estimate` is the shield's estimate the decision was made with.
        self.last_decision: dict[str, np.ndarray] | None = None
        self._act = _compiled_policy_act(graphdef, heads, shield, self.deterministic, decoding)

    @classmethod
    def from_training(cls, training: TunerTraining, state: TunerState, env_params: PipelineParams | None = None,
                      **kwargs: Any) -> TunerPolicy:
        """The policy of a finished training run, acting in ``env_params`` (default: the training env's)."""
        kwargs.setdefault("shield", training.shield)
        return cls(training.graphdef, state.learner.params, training.heads,
                   training.env_params if env_params is None else env_params, **kwargs)

    @classmethod
    def from_checkpoint(cls, path: str | Path, env_params: PipelineParams | None = None, step: int | None = None,
                        **kwargs: Any) -> TunerPolicy:
        """Load a trained tuner (no training state needed).

        Args:
            path: A run folder (with ``checkpoints/``) or the checkpoints folder itself.
            env_params: Params of the env it will act in (default: the training scenario's).
            step: Which checkpoint (default: the latest).
            **kwargs: ``deterministic``, ``decoding``, ``name``, ``shield`` (default: the run config's; a run
                saved before the shield existed, in either mode, gets the default shield: pass
                ``shield=None`` to act as it was trained).

        Raises:
            FileNotFoundError: No checkpoint at ``path``.
        """
        path = Path(path)
        folder = path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path
        if not folder.is_dir():
            raise FileNotFoundError(f"no checkpoints folder at {path}")
        with Checkpointer(folder) as checkpoints:
            metadata = checkpoints.metadata(step)
            config = config_from_saved(metadata["config"])
            params = training_params(config) if env_params is None else env_params
            heads = ActionHeads.from_config(config, params)
            abstract = nnx.eval_shape(lambda: TunerNetwork(heads, config.hidden_width, activation=config.activation,
                                                           head_critic=config.head_advantages != "joint",
                                                           share_features=config.share_features,
                                                           scaling_features=config.scaling_features,
                                                           autoregressive=config.autoregressive,
                                                           rngs=nnx.Rngs(0)))
            graphdef, state = nnx.split(abstract)
            restored = checkpoints.restore({"policy": {"params": state}}, step)["policy"]["params"]
        kwargs.setdefault("shield", MemoryShield.from_config(config))
        return cls(graphdef, restored, heads, params, **kwargs)

    def reset(self, num_envs: int = 1, seed: int | None = None) -> None:
        """See :meth:`recgym.policies.Policy.reset`; the seed also seeds the policy's sampling."""
        self.previous = None
        self.first = None
        self.estimate = None
        self.last_decision = None
        super().reset(num_envs, seed)

    def begin_episode(self, env_mask: np.ndarray) -> None:
        """Forget the previous (and first) observation of the envs starting a new episode."""
        mask = np.asarray(env_mask, dtype=bool)
        if self.previous is not None:
            self.previous[mask] = np.nan
        if self.first is not None:
            self.first[mask] = np.nan
        if self.estimate is not None:
            self.estimate = jax.tree_util.tree_map(lambda x: np.where(mask.reshape(-1, *[1] * (x.ndim - 1)), 0, x),
                                                   self.estimate)

    def act_batch(self, observations: np.ndarray, infos: Mapping[str, Any]) -> np.ndarray:
        """``(num_envs,)`` increment actions or ``(num_envs, 8)`` absolute actions (int64).

        Reads only ``observations`` (``infos`` is ignored: the tuner never sees the optimum).
        """
        observations = np.asarray(observations, np.float32)
        if observations.ndim != 2 or observations.shape != (self.num_envs, dynamics.OBS_DIM):
            raise ValueError(f"expected observations of shape ({self.num_envs}, {dynamics.OBS_DIM}), got {observations.shape}")
        if self.previous is None:
            self.previous = np.full_like(observations, np.nan)
        if self.estimate is None:
            self.estimate = jax.tree_util.tree_map(np.asarray, fresh_estimate(self.shield, (self.num_envs,)))
        previous = np.where(np.isnan(self.previous), observations, self.previous)
        # The episode's first observation (what the parallel-efficiency features divide by).
        self.first = observations.copy() if self.first is None else np.where(np.isnan(self.first), observations,
                                                                              self.first)
        # Sampling keys come from the policy's seeded generator (Policy.rng, set by reset(seed=)).
        key = jax.random.key(int(self.rng.integers(2**31)))
        actions, estimate, decision = self._act(self.params, self.env_params, observations, previous, self.first,
                                                self.estimate, key)
        self.estimate = jax.tree_util.tree_map(np.array, estimate)
        self.last_decision = {name: np.asarray(value) for name, value in decision.items()}
        self.previous = observations.copy()
        return np.asarray(actions, np.int64)

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> Any:
        """The action for one env (an ``int`` in increment mode, an ``(8,)`` array in absolute mode)."""
        if self.num_envs != 1:
            raise RuntimeError(f"act() serves one env but the policy was reset for num_envs={self.num_envs}")
        action = self.act_batch(np.asarray(observation)[None], {})[0]
        return int(action) if self.heads.mode == "increment" else action


@functools.lru_cache(maxsize=32)
def _compiled_policy_act(graphdef: Any, heads: ActionHeads, shield: MemoryShield | None, deterministic: bool,
                         decoding: str) -> Any:
    # One jitted function per network structure, shared by every policy built from it (a policy per
    # episode or per scenario must not recompile).
    return jax.jit(functools.partial(_policy_act, graphdef, heads, shield, deterministic, decoding))


def _policy_act(graphdef, heads: ActionHeads, shield: MemoryShield | None, deterministic: bool, decoding: str,
                params, env_params, observations, previous, first, estimate, key):
    # The estimate learns what the last move cost (a fresh episode's previous observation is the
    # current one: nothing moved), then the shield masks what no longer fits.
    estimate = update_memory_estimate(estimate, previous, observations)
    model = nnx.merge(graphdef, params)
    first = first if getattr(model, "scaling_features", False) else None
    logits, _ = model(observation_features(observations, previous, model.share_features, first))
    keys = None if deterministic else jax.random.split(key, observations.shape[0])
    autoregressive = getattr(model, "head_conditioner", None) is not None
    choices, allowed = choose_actions(shield, heads, logits, estimate, observations, env_params, keys, decoding,
                                      condition=model.condition_head if autoregressive else None)
    if autoregressive:  # each head's logits as it chose, given the earlier heads' choices
        logits = model.conditioned_logits(logits, observation_head_inputs(heads, observations, env_params, choices))
    decision = {"logits": logits, "allowed": allowed, "choices": choices}
    return heads.to_env_action(choices, observations, env_params), estimate, decision


def config_from_saved(values: dict[str, Any]) -> TunerConfig:
    """A :class:`TunerConfig` from its saved JSON form (see :data:`TunerConfig.SAVED_DEFAULTS`)."""
    from agents.config import config_from_dict

    return config_from_dict(TunerConfig, values)


# ------------------------------------------------------------------------------------ evaluation
#: Columns of :func:`evaluation_rows` (those of the pipeline baselines table, plus the action mode).
EVALUATION_COLUMNS = ("policy", "action mode", "scenario", "efficiency", "before change", "after change",
                      "OOM crashes", "steps to 90%")


def evaluate_policy(policy: Any, scenario: str, action_mode: str, n_episodes: int, *, seed: int | None = None,
                    num_envs: int = 100, **overrides: Any) -> dict[str, Any]:
    """Score a pipeline policy on held-out episodes with the project's evaluation harness.

    The episodes and the scoring are those of every pipeline baseline
    (:func:`recgym.evaluation.evaluate` with :class:`~recgym.envs.pipeline.evaluation.PipelineMetrics`):
    episode ``e`` is the one a single env seeded ``seed + e`` gives; a step's efficiency is the true
    throughput over the exact optimum of that step's conditions, 0 after an OOM crash.

    Args:
        policy: A :class:`~recgym.policies.Policy`, or a factory ``factory(ctx) -> Policy``
            (``ctx.params`` are the env's params, e.g. for :func:`~recgym.envs.pipeline.baselines.make_baseline`).
        scenario: Scenario name.
        action_mode: ``"increment"`` or ``"absolute"``.
        n_episodes: Episodes (scenario seeds).
        seed: First scenario seed (default :data:`~recgym.envs.pipeline.params.HELD_OUT_SEED_START`).
        num_envs: Episodes stepped together in the native vector env.
        **overrides: :class:`~recgym.envs.pipeline.params.PipelineParams` fields (e.g. a shifted
            ``random_ranges`` for the generalisation table).

    Returns:
        ``{"name", "scenario", "action_mode", "seeds", "efficiency", "before", "after", "oom",
        "steps_to_90"}`` with one value per episode (lists).
    """
    from recgym.envs.pipeline import HELD_OUT_SEED_START
    from recgym.evaluation import evaluate, make_eval_env

    seed = HELD_OUT_SEED_START if seed is None else seed
    env = make_eval_env("RecGym-Pipeline-v0", num_envs=min(num_envs, n_episodes), scenario=scenario,
                        action_mode=action_mode, track_optimum=True, **overrides)
    try:
        result = evaluate(policy, env, n_episodes, seed=seed)
    finally:
        env.close()
    table = result.episodes
    steps = table["steps_to_90"].to_numpy()
    return {
        "name": result.policy, "scenario": scenario, "action_mode": action_mode,
        "seeds": table["seed"].astype(int).tolist(),
        "efficiency": table["efficiency"].tolist(),
        "before": table["efficiency_before_change"].tolist(),
        "after": table["efficiency_after_change"].tolist(),
        "oom": table["oom"].astype(bool).tolist(),
        "steps_to_90": [None if math.isnan(s) else int(s) for s in steps],
    }


def evaluation_row(record: Mapping[str, Any]) -> dict[str, str]:
    """A results-table row of :func:`evaluate_policy`'s record (mean ± 95% t-interval over episodes)."""
    from recgym.evaluation import mean_ci

    mean, half = mean_ci(record["efficiency"])
    reached = [s for s in record["steps_to_90"] if s is not None]
    n = len(record["efficiency"])
    return {
        "policy": record["name"], "action mode": record["action_mode"], "scenario": record["scenario"],
        "efficiency": f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}",
        "before change": f"{np.mean(record['before']):.3f}", "after change": f"{np.mean(record['after']):.3f}",
        "OOM crashes": f"{sum(record['oom'])}/{n}",
        "steps to 90%": f"{int(np.median(reached))} ({len(reached)}/{n})" if reached else "-",
    }


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = EVALUATION_COLUMNS) -> str:
    """Rows as a GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def evaluate_against_baselines(policy_for: Any, action_mode: str, random_pipelines: int, scenario_seeds: int,
                               baselines: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The tuner and baseline tuners on held-out random pipelines and on every named scenario.

    Args:
        policy_for: ``policy_for(env_params) -> Policy``: the tuner acting in a scenario's env.
        action_mode: The action mode of every run.
        random_pipelines: Held-out ``random`` pipelines (0: skip that scenario).
        scenario_seeds: Held-out seeds of each named scenario (0: skip them).
        baselines: Names of :data:`recgym.envs.pipeline.baselines.BASELINES` run on the same episodes.

    Returns:
        One :func:`evaluate_policy` record per (policy, scenario), the tuner's first in each scenario.
    """
    from recgym.envs.pipeline.baselines import make_baseline

    records = []
    for scenario in SCENARIOS:
        n = random_pipelines if scenario == "random" else scenario_seeds
        if n == 0:
            continue
        records.append(evaluate_policy(lambda ctx: policy_for(ctx.params), scenario, action_mode, n))
        for name in baselines:
            records.append(evaluate_policy(lambda ctx, name=name: make_baseline(name, ctx.params), scenario,
                                           action_mode, n))
    return records


VALIDATION_SEED_START = 500_000
"""First validation scenario seed. Checkpoints are chosen on episodes seeded from here: below
:data:`~recgym.envs.pipeline.HELD_OUT_SEED_START` (the held-out episodes results are reported on)
and never met in training, whose pipelines come from the run's JAX key chain, not integer seeds."""


def validation_score(policy_for: Any, action_mode: str, *, random_pipelines: int = 100, scenario_seeds: int = 20,
                     seed: int = VALIDATION_SEED_START) -> dict[str, Any]:
    """A tuner's mean efficiency on the validation episodes of every scenario.

    Args:
        policy_for: ``policy_for(env_params) -> Policy``: the tuner acting in a scenario's env.
        action_mode: The action mode it acts in.
        random_pipelines: Validation ``random`` pipelines (seeds ``seed, seed + 1, ...``).
        scenario_seeds: Validation seeds of each named scenario (the same seeds).
        seed: First validation seed; every seed used lies below
            :data:`~recgym.envs.pipeline.HELD_OUT_SEED_START`.

    Returns:
        A dict: ``score`` the mean over scenarios of the mean episode efficiency, ``scenarios``
        each scenario's mean episode efficiency, ``oom`` the OOM crashes over all episodes and
        ``seeds`` every seed evaluated.

    Raises:
        ValueError: A count is negative, none is positive, or the seeds reach the held-out ones.
    """
    from recgym.envs.pipeline import HELD_OUT_SEED_START

    for name, value in (("random_pipelines", random_pipelines), ("scenario_seeds", scenario_seeds)):
        require(lambda v: is_int(v) and v >= 0, name, value, "an integer >= 0")
    if random_pipelines + scenario_seeds == 0:
        raise ValueError("random_pipelines and scenario_seeds are both 0: nothing to validate on")
    last = seed + max(random_pipelines, scenario_seeds) - 1
    require(lambda v: is_int(v) and v >= 0 and last < HELD_OUT_SEED_START, "seed", seed,
            f"an integer >= 0 whose last validation seed ({last}) is below the held-out seeds "
            f"({HELD_OUT_SEED_START})")
    scenarios, oom, seeds = {}, 0, set()
    for scenario in SCENARIOS:
        n = random_pipelines if scenario == "random" else scenario_seeds
        if n == 0:
            continue
        record = evaluate_policy(lambda ctx: policy_for(ctx.params), scenario, action_mode, n, seed=seed)
        scenarios[scenario] = float(np.mean(record["efficiency"]))
        oom += int(sum(record["oom"]))
        seeds.update(record["seeds"])
    return {"score": float(np.mean(list(scenarios.values()))), "scenarios": scenarios, "oom": oom,
            "seeds": sorted(seeds)}


def select_checkpoint(candidates: Mapping[Any, Any], action_mode: str, *, random_pipelines: int = 100,
                      scenario_seeds: int = 20, seed: int = VALIDATION_SEED_START) -> tuple[Any, dict[Any, Any]]:
    """Choose, among a run's checkpoints, the one with the best validation score.

    Every candidate is scored by :func:`validation_score` on the same validation episodes (never
    the held-out ones); the first of equal scores wins.

    Args:
        candidates: ``{label: policy_for}``, e.g. ``{update: lambda env_params: TunerPolicy(...)}``.
        action_mode: The action mode the candidates act in.
        random_pipelines: Validation ``random`` pipelines.
        scenario_seeds: Validation seeds of each named scenario.
        seed: First validation seed.

    Returns:
        ``(best label, {label: validation_score(...)})``.

    Raises:
        ValueError: No candidates, or bad validation sizes (see :func:`validation_score`).
    """
    if not candidates:
        raise ValueError("candidates is empty: no checkpoint to select")
    scores = {label: validation_score(policy_for, action_mode, random_pipelines=random_pipelines,
                                      scenario_seeds=scenario_seeds, seed=seed)
              for label, policy_for in candidates.items()}
    best = max(scores, key=lambda label: scores[label]["score"])
    return best, scores


# ------------------------------------------------------------------------------------ command line
def _resolve_config(argv: Sequence[str] | None) -> TunerConfig:
    return resolve_config(TunerConfig, argv, prog="python -m agents.tuner")


def train_run(config: TunerConfig) -> tuple[TunerTraining, TunerState]:
    """Train as the command line does: blocks of updates, logging, checkpoints, resume.

    Returns:
        ``(training, final_state)``.

    Raises:
        FloatingPointError: A loss became non-finite (the last good checkpoint is kept).
    """
    training = make_train(config)
    return training, run_training(config, training)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m agents.tuner --help``).

    With ``--num-processes N`` every process runs this with the same flags but ``--process-id``;
    they join (``jax.distributed``) before anything touches a device, and process 0 reports.
    """
    config = _resolve_config(argv)
    initialize_processes(config)
    start = time.perf_counter()
    training, state = train_run(config)
    if config.process_id != 0:
        return 0
    print(f"trained {config.num_updates * config.steps_per_update:,} steps in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    if config.eval_random_pipelines or config.eval_scenario_seeds:
        from recgym.envs.pipeline.baselines import BASELINES

        records = evaluate_against_baselines(
            lambda env_params: TunerPolicy.from_training(training, state, env_params), config.action_mode,
            config.eval_random_pipelines, config.eval_scenario_seeds, baselines=tuple(BASELINES))
        print(markdown_table([evaluation_row(r) for r in records]))
        if config.out:
            (Path(config.out) / "evaluation.json").write_text(json.dumps(records, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
