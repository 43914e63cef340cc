"""Advantage actor-critic (A2C, the synchronous A3C) for recgym's recommender environments.

PureJaxRL's shape: :func:`make_train` returns a pure ``train(key) -> (train_state, metrics)``
whose rollout (``vmap`` over environments of the functional core, ``lax.scan`` over steps),
advantages (:func:`agents.returns.gae`) and update (one optax step) run under one ``jit``;
``jax.vmap(train)(keys)`` trains several seeds at once. Over several devices each device steps
its share of the environments and the gradients are averaged (:mod:`agents.parallel`, ``pmap``
or ``shard_map``).

The policy scores the whole catalogue with a factorised item head over the env's observable item
features (:class:`agents.networks.ActorCritic`) and draws slates without replacement
(Plackett–Luce); the agent reads only the observation and its own memory of the items it served
this episode — never the simulator's hidden state.

Command line (every flag is a field of :class:`A2CConfig`)::

    python -m agents.a2c --env RecGym-MovieLens-v0 --total-steps 20_000_000 --num-devices 2 \\
        --seed 0 --out runs/a2c
    python -m agents.a2c --resume runs/a2c      # continue an interrupted run

See docs/agents.md.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from agents.config import config_to_dict
from agents.memory import MemorySpec, agent_input, check_decays, initial_memory, update_memory
from agents.movielens import make_env_params, warm_start_logged_mf
from agents.networks import (
    ACTIVATIONS,
    ActorCritic,
    item_log_prob,
    mark_served,
    sample_slate,
    served_mask,
    served_words,
    slate_log_prob,
    standardisation,
)
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

__all__ = [
    "A2CConfig",
    "A2CTraining",
    "ActorState",
    "LearnerState",
    "TrainState",
    "Transition",
    "main",
    "make_train",
]



@dataclasses.dataclass(frozen=True)
class A2CConfig(RunConfig):
    """Advantage actor-critic on a recgym recommender environment (one field per command-line flag).

    The run-control fields (seed, total_steps, devices and processes, checkpoints, out, resume,
    progress) are inherited from :class:`agents.runner.RunConfig`.

    Attributes:
        env: Registered recgym environment id to train on (its preset and time limit).
        dataset: MovieLens dataset name or path (see recgym.datasets), or "synthetic".
        slate_size: Items recommended per step: 1 for single items, k > 1 for slates of k
            distinct items.
        num_envs: Environments stepped in parallel, all devices and processes together
            (divisible by num_devices * num_processes).
        rollout_steps: Steps per environment between updates: the n of the n-step returns.
        gamma: Discount factor of the returns.
        gae_lambda: GAE trace decay: 1 gives n-step returns, 0 one-step TD errors.
        learning_rate: Step size of the optimiser (the initial one when annealed).
        anneal_lr: Decay the step size linearly to 0 over the run.
        optimizer: "adam" or "rmsprop" (after global-norm clipping).
        max_grad_norm: Clip the gradient's global L2 norm to this.
        entropy_coef: Weight of the entropy bonus in the loss.
        value_coef: Weight of the value loss in the loss.
        normalize_advantages: Standardise the advantages over the global batch at each update.
        reward_scale: Rewards are multiplied by this before the returns (the critic predicts
            scaled returns; ratings sum to hundreds per session).
        hidden_sizes: Hidden-layer widths of the actor's and of the critic's MLP.
        embedding_dim: Size of the learned item factors of the factorised item head (the query adds one entry per item feature for the wide, bilinear part).
        activation: Hidden-layer activation: "tanh" or "relu".
        learned_item_table: Add a learned per-item embedding table to the embedding computed
            from the item features.
        logged_item_statistics: Add each item's logged popularity and logged-MF bias to its
            features (logged data, like the embeddings; see agents.movielens.agent_item_features).
        warm_start: Start the actor at the logged matrix factorisation's scores times this inverse
            temperature (agents.movielens.warm_start_logged_mf; needs logged_item_statistics);
            0 learns from a uniform policy.
        mask_served: Never serve an item twice in an episode (from the agent's own memory of
            what it served, not from the env).
        memory_decays: Decays of the agent's consumption memory, each in [0, 1): per decay d, the
            sum over this episode's clicks of d^(steps since) times the clicked item's genre
            vector, kept from the observations (agents.memory) and fed to the actor and the
            critic with the observation; none: no memory.
        eval_episodes: Episodes of held-out (test) users the trained agent is evaluated on at
            the end, with the harness and episodes of every baseline (0: no evaluation).
        eval_seed: Base seed of the evaluation episodes (0: the episodes of the results tables).
        eval_baselines: Baselines evaluated on the same episodes for comparison (names of
            recgym.evaluation.BASELINES or recgym.recommenders.simulator_policy.RECOMMENDER_POLICIES).
    """

    env: str = "RecGym-MovieLens-v0"
    dataset: str = "ml-latest-small"
    slate_size: int = 1
    num_envs: int = 256
    rollout_steps: int = 16
    gamma: float = 0.99
    gae_lambda: float = 0.95
    learning_rate: float = 1e-3
    anneal_lr: bool = True
    optimizer: str = "adam"
    max_grad_norm: float = 0.5
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    normalize_advantages: bool = True
    reward_scale: float = 0.1
    hidden_sizes: tuple[int, ...] = (256, 256)
    embedding_dim: int = 32
    activation: str = "tanh"
    learned_item_table: bool = False
    logged_item_statistics: bool = True
    warm_start: float = 0.0
    mask_served: bool = True
    memory_decays: tuple[float, ...] = ()
    eval_episodes: int = 610
    eval_seed: int = 0
    eval_baselines: tuple[str, ...] = ("most-popular", "popularity (IMDB weighted)", "matrix factorization",
                                       "oracle-greedy", "boredom-aware")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("slate_size", "num_envs", "rollout_steps", "embedding_dim"):
            require(lambda v: is_int(v) and v >= 1, name, getattr(self, name), "an integer >= 1")
        for name in ("eval_episodes", "eval_seed"):
            require(lambda v: is_int(v) and v >= 0, name, getattr(self, name), "an integer >= 0")
        for name in ("gamma", "gae_lambda"):
            require(lambda v: 0.0 <= v <= 1.0, name, getattr(self, name), "in [0, 1]")
        for name in ("learning_rate", "max_grad_norm", "reward_scale"):
            require(lambda v: math.isfinite(v) and v > 0, name, getattr(self, name), "finite and > 0")
        for name in ("entropy_coef", "value_coef", "warm_start"):
            require(lambda v: math.isfinite(v) and v >= 0, name, getattr(self, name), "finite and >= 0")
        require(lambda v: v in OPTIMIZERS, "optimizer", self.optimizer, f"one of {OPTIMIZERS}")
        require(lambda v: v in ACTIVATIONS, "activation", self.activation, f"one of {tuple(ACTIVATIONS)}")
        require(lambda v: len(v) >= 1 and all(is_int(h) and h >= 1 for h in v), "hidden_sizes", self.hidden_sizes,
                "one or more integers >= 1")
        require(lambda v: v % self.total_devices == 0, "num_envs", self.num_envs,
                f"divisible by num_devices * num_processes = {self.total_devices}")
        require(lambda v: not v or self.logged_item_statistics, "warm_start", self.warm_start,
                "0 without logged_item_statistics (the warm start reads the logged item bias)")
        try:
            object.__setattr__(self, "memory_decays", check_decays(self.memory_decays))
        except TypeError:
            raise ValueError(f"memory_decays must be a sequence of numbers in [0, 1), got {self.memory_decays!r}") from None

    @property
    def steps_per_update(self) -> int:
        """Environment steps per update: ``num_envs * rollout_steps``."""
        return self.num_envs * self.rollout_steps


def _flat(x: jax.Array) -> jax.Array:
    """Merge a rollout field's leading ``(steps, n)`` axes into one batch axis."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def _variance(x: jax.Array, axis: DeviceAxis) -> jax.Array:
    """Variance of ``x`` over the global batch (every device's share)."""
    mean = axis.mean(jnp.mean(x))
    return axis.mean(jnp.mean((x - mean) ** 2))


# ------------------------------------------------------------------------------------ state
@struct.dataclass
class LearnerState:
    """What the update changes: identical on every device.

    Attributes:
        params: The network's trainable parameters (``nnx.State``).
        opt_state: The optax optimiser state.
        key: The learner's typed PRNG key; each update splits off its rollout key.
        update: int32 scalar, updates done.
    """

    params: Any
    opt_state: Any
    key: jax.Array
    update: jax.Array


@struct.dataclass
class ActorState:
    """What the rollout changes: one row per environment (sharded over devices).

    Attributes:
        env: The environments' :class:`~recgym.core.EnvCarry` (state and key chain), leading
            axis ``num_envs``.
        observation: ``(num_envs, observation_size)`` the current observations.
        served: ``(num_envs, ceil(n_items / 32))`` uint32 bitsets of the items served this
            episode (the agent's own memory).
        memory: ``(num_envs, memory size)`` the consumption memory after the current observations
            (:func:`agents.memory.update_memory`; ``(num_envs, 0)`` without one).
        episode_return: ``(num_envs,)`` float32 reward summed so far this episode (unscaled).
        episode_length: ``(num_envs,)`` int32 steps so far this episode.
    """

    env: EnvCarry
    observation: jax.Array
    served: jax.Array
    memory: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array


@struct.dataclass
class TrainState:
    """The whole state of a training run (what a checkpoint holds).

    Attributes:
        learner: :class:`LearnerState` (replicated over devices).
        actors: :class:`ActorState` (the global batch of environments).
    """

    learner: LearnerState
    actors: ActorState


@struct.dataclass
class Transition:
    """One rollout step of every local environment (fields gain a leading time axis in the scan).

    Attributes:
        observation: ``(n, input_size)`` what the policy acted on: the observation with the
            consumption memory appended (:func:`agents.memory.agent_input`).
        served: ``(n, words)`` the served-items bitsets the policy acted with.
        slate: ``(n, slate_size)`` int32 items served.
        reward: ``(n,)`` float32 reward (unscaled).
        terminated: ``(n,)`` bool, the user left.
        truncated: ``(n,)`` bool, the time limit was reached.
        final_observation: ``(n, input_size)`` the observation reached before any reset, with
            the memory after it appended (the critic's bootstrap input).
        finished_return: ``(n,)`` return of the episode that ended at this step (0 otherwise).
        finished_length: ``(n,)`` length of the episode that ended at this step (0 otherwise).
        scores: ``(n, n_items)`` float32 the actor's item scores the slate was drawn from. The
            update's parameters are the rollout's, so these are the scores the loss would
            compute again; the update reuses them (see :meth:`A2CTraining._gradients`).
    """

    observation: jax.Array
    served: jax.Array
    slate: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_observation: jax.Array
    finished_return: jax.Array
    finished_length: jax.Array
    scores: jax.Array


# ------------------------------------------------------------------------------------ training
def observation_statistics(core: Any, env_params: Any, key: jax.Array, slate_size: int, num_envs: int = 256,
                           num_steps: int = 20, memory: MemorySpec | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-entry mean and scale of the network's inputs under uniformly random slates (a short rollout).

    The network standardises its inputs with these fixed statistics (stored with it), so that
    entries of very different sizes (genre shares of ~0.05, embeddings of ~1, flags) move its
    outputs alike per unit of parameter change. Random slates fill the interaction history the
    way an exploring policy does; the statistics depend only on the env and ``key``.

    Args:
        core: The functional core.
        env_params: Its params.
        key: Draws the environments and the random slates.
        slate_size: Items per action.
        num_envs: Environments of the rollout.
        num_steps: Steps of the rollout (every step's observation counts).
        memory: The consumption memory appended to the observations (``None``: none); its
            entries are standardised alike, from the same rollout.

    Returns:
        ``(shift, scale)``, each ``(input_size,)`` float32 (scale floored at 0.01).
    """
    start_key, action_key = jax.random.split(key)
    n_items = int(env_params.n_choices)

    @jax.jit
    def rollout(start_key, action_key, scores):
        observation, env = jax.vmap(core.start, in_axes=(0, None))(jax.random.split(start_key, num_envs), env_params)
        remembered = update_memory(memory, initial_memory(memory, num_envs), observation, jnp.ones(num_envs, bool))

        def step(carry, step_key):
            env, remembered = carry
            slate = sample_slate(jax.random.split(step_key, num_envs), scores, jnp.zeros(scores.shape, bool),
                                 slate_size)
            action = slate[:, 0] if slate_size == 1 else slate
            observation, env, _, terminated, truncated, _ = jax.vmap(core.step_autoreset, in_axes=(0, 0, None))(
                env, action, env_params)
            remembered = update_memory(memory, remembered, observation, terminated | truncated)
            return (env, remembered), agent_input(observation, remembered)

        _, inputs = jax.lax.scan(step, (env, remembered), jax.random.split(action_key, num_steps))
        first = agent_input(observation, remembered)
        return jnp.concatenate([first[None], inputs]).reshape(-1, first.shape[-1])

    # uniform scores as an argument: as a constant XLA would spend seconds folding the sampler
    shift, scale = standardisation(rollout(start_key, action_key, jnp.zeros((num_envs, n_items))))
    return np.asarray(shift), np.asarray(scale)


class A2CTraining:
    """A2C for one config and one environment: ``init``, compiled update blocks, and ``train``.

    Built by :func:`make_train`. Calling it, ``training(key)``, is the pure ``train(key) ->
    (train_state, metrics)``: init, then every update of the run in one ``lax.scan``, under one
    ``jit``; with ``num_devices=1`` it can be ``jax.vmap``-ed over keys (seeds).

    Attributes:
        config: The config.
        core: The environment's functional core.
        env_params: Its params (the training population).
        observation_size: Length of an observation vector.
        memory: The consumption memory's :class:`~agents.memory.MemorySpec` (``None``: no memory).
        input_size: Length of the network's input: the observation and the memory.
        n_items: Catalogue size.
        graphdef: The network's NNX graph definition (static).
        model_constants: The network's non-trainable variables (item features, observation
            statistics).
        observation_shift: ``(input_size,)`` mean network input under random slates.
        observation_scale: ``(input_size,)`` its standard deviation (floored).
        traces: How many times the update body was traced (a recompilation guard for tests).
    """

    def __init__(self, config: A2CConfig, env_params: Any, core: Any = None, item_features: Any = None):
        if core is None:
            from recgym.envs.movielens import MovieLensCore

            core = MovieLensCore()
        if int(env_params.slate_size) != config.slate_size:
            raise ValueError(f"config.slate_size={config.slate_size} but the env params have "
                             f"slate_size={env_params.slate_size}")
        self.config = config
        self.core = core
        self.env_params = jax.device_put(env_params)
        observation, _ = jax.eval_shape(core.start, jax.random.key(0), self.env_params)
        self.observation_size = int(observation.shape[-1])
        self.memory = MemorySpec.from_params(config.memory_decays, env_params) if config.memory_decays else None
        self.input_size = self.observation_size + (0 if self.memory is None else self.memory.size)
        if item_features is None:
            item_features = env_params.world.item_features
        self.item_features = np.asarray(item_features, np.float32)
        self.n_items = int(self.item_features.shape[0])
        if self.n_items != int(env_params.n_items):
            raise ValueError(f"item_features has {self.n_items} rows but the env has {env_params.n_items} items")
        # Derived from the config's seed, on streams of their own (training draws from key(seed)).
        statistics_key, skeleton_key = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 1))
        self.observation_shift, self.observation_scale = observation_statistics(
            core, self.env_params, statistics_key, config.slate_size, memory=self.memory)
        # The graph and the constants; this model's own parameters are not used (init draws them).
        self.graphdef, _, self.model_constants = nnx.split(self.build_model(skeleton_key), nnx.Param, ...)
        self.optimizer = make_optimizer(
            config.optimizer, config.learning_rate, config.max_grad_norm,
            anneal_steps=config.num_updates if config.anneal_lr else None)
        self.traces = 0
        self._compiled: dict[int, Any] = {}

    # ---------------------------------------------------------------- model
    def build_model(self, key: jax.Array) -> ActorCritic:
        """A freshly initialised network (parameters drawn from ``key``, warm-started if configured)."""
        c = self.config
        model = ActorCritic(self.input_size, self.item_features, c.hidden_sizes, c.embedding_dim,
                            activation=c.activation, learned_item_table=c.learned_item_table,
                            observation_shift=self.observation_shift, observation_scale=self.observation_scale,
                            rngs=nnx.Rngs(params=key))
        if c.warm_start:
            warm_start_logged_mf(model, self.env_params, c.warm_start)
        return model

    def initial_params(self, key: jax.Array) -> Any:
        """The trainable parameters of :meth:`build_model` (``nnx.State``), drawn from ``key``.

        ``jax.vmap`` over keys runs this one key after the other (``sequential_vmap``), not as
        one batched computation: the orthogonal initialisers factorise random matrices with
        LAPACK (``geqrf``), and jaxlib 0.10.2 runs a *batched* LAPACK call by queueing the batch
        on XLA's CPU intra-op thread pool and blocking a pool thread until it is done. When the
        thunk executor runs as many independent batched factorisations at once (the actor's and
        the critic's layers) as the pool has threads — two on a 2-core machine — every pool thread
        blocks on work no thread is left to run: ``jax.jit(jax.vmap(train))(keys)`` deadlocked
        intermittently, every thread waiting. Unbatched, the factorisations never queue work.
        The parameters are the same either way (same key, same values).
        """
        @jax.custom_batching.sequential_vmap
        def draw(key: jax.Array) -> Any:
            return nnx.split(self.build_model(key), nnx.Param, ...)[1]

        return draw(key)

    def model(self, params: Any) -> ActorCritic:
        """The network with ``params`` (``nnx.merge`` of the graph, the params and the constants)."""
        return nnx.merge(self.graphdef, params, self.model_constants)

    # ---------------------------------------------------------------- init
    def init(self, key: jax.Array) -> TrainState:
        """The state before the first update, all randomness drawn from ``key``.

        Args:
            key: A typed PRNG key (``jax.random.key(seed)``).
        """
        model_key, env_key, learner_key = jax.random.split(key, 3)
        params = self.initial_params(model_key)
        env_keys = jax.random.split(env_key, self.config.num_envs)
        observation, env = jax.vmap(self.core.start, in_axes=(0, None))(env_keys, self.env_params)
        n = self.config.num_envs
        actors = ActorState(
            env=env,
            observation=observation,
            served=jnp.zeros((n, served_words(self.n_items)), jnp.uint32),
            memory=update_memory(self.memory, initial_memory(self.memory, n), observation, jnp.ones((n,), bool)),
            episode_return=jnp.zeros((n,), jnp.float32),
            episode_length=jnp.zeros((n,), jnp.int32),
        )
        learner = LearnerState(params=params, opt_state=self.optimizer.init(params), key=learner_key,
                               update=jnp.zeros((), jnp.int32))
        return TrainState(learner=learner, actors=actors)

    # ---------------------------------------------------------------- one update (per device)
    def _rollout(self, axis: DeviceAxis, env_params: Any, params: Any, actors: ActorState,
                 rollout_key: jax.Array) -> tuple[ActorState, Transition]:
        c = self.config
        model = self.model(params)
        n_local = actors.observation.shape[0]
        env_ids = axis.index() * n_local + jnp.arange(n_local)   # global: the same draws on any device count

        def env_step(actors: ActorState, t: jax.Array):
            step_key = jax.random.fold_in(rollout_key, t)
            env_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, env_ids)
            blocked = (served_mask(actors.served, self.n_items) if c.mask_served
                       else jnp.zeros((n_local, self.n_items), bool))
            inputs = agent_input(actors.observation, actors.memory)
            scores = model.scores(inputs)
            slate = sample_slate(env_keys, scores, blocked, c.slate_size)
            action = slate[:, 0] if c.slate_size == 1 else slate
            observation, env, reward, terminated, truncated, info = jax.vmap(
                self.core.step_autoreset, in_axes=(0, 0, None))(actors.env, action, env_params)
            done = terminated | truncated
            served = actors.served
            if c.mask_served:
                served = jnp.where(done[:, None], jnp.uint32(0), mark_served(served, slate))
            memory, final_memory = self._memory_step(actors.memory, observation, info["final_obs"], done)
            episode_return = actors.episode_return + reward
            episode_length = actors.episode_length + 1
            transition = Transition(
                observation=inputs, served=actors.served, slate=slate, reward=reward,
                terminated=terminated, truncated=truncated,
                final_observation=agent_input(info["final_obs"], final_memory),
                finished_return=jnp.where(done, episode_return, 0.0),
                finished_length=jnp.where(done, episode_length, 0), scores=scores,
            )
            next_actors = ActorState(env=env, observation=observation, served=served, memory=memory,
                                     episode_return=jnp.where(done, 0.0, episode_return),
                                     episode_length=jnp.where(done, 0, episode_length))
            return axis.varying(next_actors), transition

        return jax.lax.scan(env_step, actors, jnp.arange(c.rollout_steps))

    def _memory_step(self, memory: jax.Array, observation: jax.Array, final_observation: jax.Array,
                     done: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(memory, final_memory)`` after a step: after the (possibly reset) next observation,
        and after the observation reached before any reset (for the critic's bootstrap)."""
        return (update_memory(self.memory, memory, observation, done),
                update_memory(self.memory, memory, final_observation, jnp.zeros_like(done)))

    def _loss(self, params: Any, batch: Transition, axis: DeviceAxis):
        """The A2C loss of ``batch`` at ``params`` and its metrics: the definition.

        Every network output is computed here from the batch's observations, as written;
        :meth:`_gradients` computes ``jax.grad`` of this with less work (the tests hold the two
        equal).
        """
        steps, n_local = batch.reward.shape
        model = self.model(params)
        scores, values = model(_flat(batch.observation))
        next_values = jax.lax.stop_gradient(model.value(batch.final_observation))
        return self._objective(scores, values.reshape(steps, n_local), next_values, batch, axis)

    def _objective(self, scores: jax.Array, values: jax.Array, next_values: jax.Array, batch: Transition,
                   axis: DeviceAxis, fused: bool = False):
        """The loss as a function of the network's outputs over the batch.

        Args:
            scores: ``(steps * n, n_items)`` the actor's scores of the batch's observations.
            values: ``(steps, n)`` the critic's values of the batch's observations.
            next_values: ``(steps, n)`` the critic's values of the observations reached (the
                final observations; no gradient flows through them).
            batch: The rollout.
            axis: The device axis (advantages are standardised over the global batch).
            fused: Single items: differentiate the log-probabilities and entropies with the
                closed-form gradient of :func:`agents.networks.item_log_prob` (same values and
                gradient as :func:`agents.networks.slate_log_prob`'s, in fewer passes).

        Returns:
            ``(total, aux)``: the loss and its metrics. Its gradient flows only through
            ``scores`` (policy loss and entropy) and ``values`` (value loss).
        """
        c = self.config
        advantages, targets = gae(batch.reward * c.reward_scale, jax.lax.stop_gradient(values), next_values,
                                  batch.terminated, batch.truncated, c.gamma, c.gae_lambda)
        if c.normalize_advantages:  # over the global batch, whatever the device count
            advantages = (advantages - axis.mean(advantages.mean())) / jnp.sqrt(_variance(advantages, axis) + 1e-8)
        blocked = (served_mask(_flat(batch.served), self.n_items) if c.mask_served
                   else jnp.zeros(scores.shape, bool))
        log_prob_and_entropy = item_log_prob if fused and c.slate_size == 1 else slate_log_prob
        log_prob, entropy = log_prob_and_entropy(scores, blocked, _flat(batch.slate))
        policy_loss = -jnp.mean(log_prob * _flat(advantages))
        value_loss = 0.5 * jnp.mean((values - targets) ** 2)
        entropy = jnp.mean(entropy)
        total = policy_loss + c.value_coef * value_loss - c.entropy_coef * entropy
        explained = 1.0 - _variance(targets - jax.lax.stop_gradient(values), axis) / (_variance(targets, axis) + 1e-8)
        aux = {"losses/policy_loss": policy_loss, "losses/value_loss": value_loss, "losses/entropy": entropy,
               "losses/total_loss": total, "losses/explained_variance": explained}
        return total, aux

    def _gradients(self, params: Any, batch: Transition, axis: DeviceAxis):
        """``jax.grad(self._loss, has_aux=True)(params, batch, axis)``, computed with less work.

        The same gradient by the chain rule through the network's outputs, without the forward
        passes the rollout already made or that repeat one another:

        * the actor's scores of the batch's observations are the rollout's (``batch.scores``: same
          parameters, same observations), so the update runs no forward pass of the item head —
          only the actor's torso again, for the activations its backward pass needs;
        * for single items the log-probabilities' and entropies' gradient is taken in closed form
          (:func:`agents.networks.item_log_prob`) rather than through the masked softmax's steps;
        * the value of a final observation equals the value of the next step's observation
          wherever the episode went on (the env returns the same observation), so only the
          final observations of truncated steps and of the rollout's last step are valued
          (:meth:`_next_values`).

        Returns:
            ``(grads, aux)`` as ``jax.grad(..., has_aux=True)`` of :meth:`_loss` returns them.
        """
        steps, n_local = batch.reward.shape
        observations = _flat(batch.observation)

        def network(params):
            model = self.model(params)
            return model.scores(observations), model.value(observations)

        # The scores' forward output is unused (the rollout's are used): XLA drops the item
        # head's forward matmul and keeps what the backward pass needs (torso activations, queries).
        (_, values), pullback = jax.vjp(network, params)
        values = values.reshape(steps, n_local)
        next_values = jax.lax.stop_gradient(self._next_values(params, values, batch))
        (score_grads, value_grads), aux = jax.grad(self._objective, argnums=(0, 1), has_aux=True)(
            _flat(batch.scores), values, next_values, batch, axis, True)
        (grads,) = pullback((score_grads, value_grads.reshape(-1)))
        return grads, aux

    def _next_values(self, params: Any, values: jax.Array, batch: Transition) -> jax.Array:
        """``(steps, n)`` the critic's values of ``batch.final_observation``, reusing ``values``.

        Where step ``t < steps - 1`` did not end its episode, its final observation *is* the
        observation of step ``t + 1``, whose value is ``values[t + 1]``. Where it terminated the
        value is never used (no bootstrap; the next value is kept, finite). Only truncated steps
        and the last step need the critic: the last step's ``n`` final observations, and the
        truncated ones gathered into ``n`` rows (at most one truncation per environment in a
        rollout shorter than an episode); a rollout with more truncations than that values
        every final observation, as :meth:`_loss` does.
        """
        steps, n_local = values.shape
        model = self.model(params)
        last = model.value(batch.final_observation[-1])
        if steps == 1:
            return last[None]
        truncated = batch.truncated[:-1].reshape(-1)
        finals = batch.final_observation[:-1].reshape(truncated.shape[0], -1)
        following = values[1:].reshape(-1)

        def gathered():
            rows = jnp.nonzero(truncated, size=n_local, fill_value=truncated.shape[0])[0]
            valued = model.value(finals.at[rows].get(mode="fill", fill_value=0.0))
            return following.at[rows].set(valued, mode="drop")

        def every():
            return jnp.where(truncated, model.value(finals), following)

        inner = jax.lax.cond(jnp.sum(truncated) <= n_local, gathered, every)
        return jnp.concatenate([inner.reshape(steps - 1, n_local), last[None]])

    def _update(self, axis: DeviceAxis, env_params: Any, learner: LearnerState,
                actors: ActorState) -> tuple[LearnerState, ActorState, dict[str, jax.Array]]:
        self.traces += 1  # Python side effect: runs once per trace, never per executed update
        key, rollout_key = jax.random.split(learner.key)
        actors, batch = self._rollout(axis, env_params, learner.params, actors, rollout_key)
        grads, aux = self._gradients(learner.params, batch, axis)
        grads = axis.mean_gradients(grads)
        updates, opt_state = self.optimizer.update(grads, learner.opt_state, learner.params)
        params = optax.apply_updates(learner.params, updates)
        finished = axis.sum(jnp.sum(batch.terminated | batch.truncated))
        metrics = axis.mean(aux)
        metrics |= {
            "losses/grad_norm": optax.tree.norm(grads),
            "charts/learning_rate": self._learning_rate(learner.update),
            "charts/episodes": finished,
            "charts/episodic_return": axis.sum(jnp.sum(batch.finished_return)) / finished,
            "charts/episodic_length": axis.sum(jnp.sum(batch.finished_length)) / finished,
            "charts/reward_per_step": axis.mean(jnp.mean(batch.reward)),
            "global_step": (learner.update + 1) * self.config.steps_per_update,
        }
        learner = LearnerState(params=params, opt_state=opt_state, key=key, update=learner.update + 1)
        return learner, actors, metrics

    def _learning_rate(self, update: jax.Array) -> jax.Array:
        c = self.config
        if not c.anneal_lr:
            return jnp.float32(c.learning_rate)
        return c.learning_rate * jnp.maximum(0.0, 1.0 - update / c.num_updates)

    def _block(self, axis: DeviceAxis, env_params: Any, learner: LearnerState, actors: ActorState,
               *, num_updates: int):
        def body(carry, _):
            learner, actors = carry
            learner, actors, metrics = self._update(axis, env_params, learner, actors)
            return (learner, actors), metrics

        (learner, actors), metrics = jax.lax.scan(body, (learner, actors), None, length=num_updates)
        return learner, actors, metrics

    # ---------------------------------------------------------------- public API
    def run(self, state: TrainState, num_updates: int) -> tuple[TrainState, dict[str, jax.Array]]:
        """Run ``num_updates`` updates from ``state`` (one compiled call, cached per block size).

        Returns:
            ``(state, metrics)``: metrics are ``{name: (num_updates,) array}``, one entry per update.
        """
        if num_updates not in self._compiled:
            step = functools.partial(self._block, num_updates=num_updates)
            self._compiled[num_updates] = data_parallel(step, self.config.parallel, self.config.num_devices)
        learner, actors, metrics = self._compiled[num_updates](self.env_params, state.learner, state.actors)
        return TrainState(learner=learner, actors=actors), metrics

    def __call__(self, key: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        """``train(key)``: initialise from ``key`` and run every update of the config."""
        state = self.init(key)
        if self.config.single_device:  # pure: jittable and vmappable as a whole
            learner, actors, metrics = self._block(DeviceAxis(), self.env_params, state.learner, state.actors,
                                                   num_updates=self.config.num_updates)
            return TrainState(learner=learner, actors=actors), metrics
        return self.run(state, self.config.num_updates)

    def checkpoint_metadata(self, num_seeds: int | None = None) -> dict[str, Any]:
        """What :class:`agents.policy.AgentPolicy` needs to rebuild the network from a checkpoint."""
        return {
            "algorithm": "a2c",
            "config": config_to_dict(self.config),
            "observation_size": self.observation_size,
            "input_size": self.input_size,
            "memory": None if self.memory is None else self.memory.to_dict(),
            "n_items": self.n_items,
            "n_item_features": int(self.item_features.shape[1]),
            "num_seeds": num_seeds,
        }

    def checkpoint_items(self, state: TrainState) -> dict[str, Any]:
        """What a checkpoint of ``state`` holds: the whole state (to resume) and the policy's
        parameters and constants (to act, see :meth:`agents.policy.AgentPolicy.from_checkpoint`)."""
        return {"train_state": state,
                "policy": {"params": state.learner.params, "constants": self.model_constants}}


def make_train(config: A2CConfig, env_params: Any, core: Any = None, item_features: Any = None) -> A2CTraining:
    """Build A2C training for ``config`` on the environment with ``env_params``.

    Args:
        config: The run's :class:`A2CConfig`.
        env_params: Params of the training environment (e.g. ``make_params(world, users="train")``
            or :func:`agents.movielens.make_env_params`); its ``slate_size`` must equal ``config.slate_size``.
        core: The environment's functional core (default: ``MovieLensCore()``).
        item_features: ``(n_items, n_features)`` features of the item head (default: the env's
            ``params.world.item_features``; :func:`agents.movielens.agent_item_features` adds
            logged statistics).

    Returns:
        ``train``: call ``train(key)`` for ``(train_state, metrics)`` (see :class:`A2CTraining`).

    Example:
        >>> import jax
        >>> from recgym.envs.movielens import build_world, make_params
        >>> params = make_params(build_world("synthetic"), users="train")
        >>> config = A2CConfig(dataset="synthetic", total_steps=2048, num_envs=64, rollout_steps=8)
        >>> train = make_train(config, params)
        >>> state, metrics = jax.jit(train)(jax.random.key(0))
        >>> metrics["losses/total_loss"].shape
        (4,)
    """
    return A2CTraining(config, env_params, core, item_features)


# ------------------------------------------------------------------------------------ command line
def _resolve_config(argv: Sequence[str] | None) -> A2CConfig:
    return resolve_config(A2CConfig, argv, prog="python -m agents.a2c")


def train_run(config: A2CConfig) -> tuple[A2CTraining, TrainState]:
    """Train as the command line does: blocks of updates, logging, checkpoints, resume.

    Args:
        config: The run's config; with ``config.resume`` the run continues from the last
            checkpoint in that folder.

    Returns:
        ``(training, final_state)``.

    Raises:
        FloatingPointError: A loss became non-finite (the last good checkpoint is kept).
    """
    env = make_env_params(config, users="train")
    training = make_train(config, env.params, env.core, env.item_features)
    state = run_training(config, training, nan_hint="Lower learning_rate, max_grad_norm or reward_scale.")
    return training, state


def evaluate_against_baselines(policy: Any, config: A2CConfig, n_episodes: int, seed: int,
                               baselines: Sequence[str]) -> dict[str, Any]:
    """Score ``policy`` and ``baselines`` on the same held-out episodes, with paired ratios.

    Args:
        policy: The trained agent (a :class:`recgym.policies.Policy`).
        config: Gives the env id, dataset and slate size.
        n_episodes: Episodes (test users cycled, episode ``e`` seeded ``seed + e``).
        seed: Base seed of the episodes.
        baselines: Names in ``BASELINES`` or ``RECOMMENDER_POLICIES``.

    Returns:
        ``{"rows": [...], "text": str}``: one row per policy (mean return, 95% CI, paired ratio
        of the agent to it with its 95% CI) and the same as a printable table.
    """
    from recgym.evaluation import BASELINES, evaluate, make_eval_env, mean_ci, paired_ratio_ci
    from recgym.recommenders.simulator_policy import RECOMMENDER_POLICIES

    factories = {**BASELINES, **RECOMMENDER_POLICIES}
    unknown = [name for name in baselines if name not in factories]
    if unknown:
        raise ValueError(f"eval_baselines: unknown baseline(s) {unknown}; choose from {sorted(factories)}")
    kwargs = {"slate_size": config.slate_size} if config.slate_size > 1 else {}
    env = make_eval_env(config.env, num_envs=min(n_episodes, 256), users="test", dataset=config.dataset, **kwargs)
    agent = evaluate(policy, env, n_episodes, seed=seed).episodes["return"].to_numpy()
    rows = [{"policy": policy.name, "return": mean_ci(agent), "agent / policy": None}]
    for name in baselines:
        returns = evaluate(factories[name], env, n_episodes, seed=seed, name=name).episodes["return"].to_numpy()
        rows.append({"policy": name, "return": mean_ci(returns), "agent / policy": paired_ratio_ci(agent, returns)})
    env.close()
    lines = [f"{config.env} (slate_size={config.slate_size}), {n_episodes} held-out episodes, seed {seed}",
             f"{'policy':32s} {'return (95% CI)':>20s}   agent / policy (paired 95% CI)"]
    for row in rows:
        mean, half = row["return"]
        ratio = row["agent / policy"]
        shown = "" if ratio is None else f"{ratio[0]:.3f} [{ratio[1]:.3f}, {ratio[2]:.3f}]"
        lines.append(f"{row['policy']:32s} {mean:10.1f} ± {half:<7.1f}   {shown}")
    return {"rows": rows, "text": "\n".join(lines)}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m agents.a2c --help``).

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
    if config.eval_episodes:
        from agents.policy import AgentPolicy

        policy = AgentPolicy.from_training(training, state)
        report = evaluate_against_baselines(policy, config, config.eval_episodes, config.eval_seed,
                                            config.eval_baselines)
        print(report["text"])
        if config.out:
            rows = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()} for row in report["rows"]]
            (Path(config.out) / "evaluation.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
