"""The consumer of the live pipeline: real training steps of a small DLRM-style model (JAX/Flax NNX).

The model follows DLRM (Naumov et al., 2019): a bottom MLP embeds the dense features; embedding
tables embed the hashed user, movie and user x genre ids; the genre multi-hot row is an
embedding bag (sum pooling, a bias-free linear map); the pairwise dot products of those five
vectors, with the bottom MLP's output, feed a top MLP that predicts the click (here: whether the
user rated the movie — a positive — or it is a sampled negative). Loss: sigmoid cross-entropy;
optimiser: ``clip_by_global_norm`` then Adam (:func:`make_optimizer`).

:func:`trainer_main` is the trainer process: it compiles one step per allowed batch size, then
takes batches from the prefetch buffer as fast as it can and records, in shared memory, how many
samples it trained on, how long it computed and how long it waited for data.

This module imports JAX only inside functions: the worker processes import it without JAX.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import numpy as np

from recgym.envs.pipeline.live.stages import NUM_DENSE


@dataclass(frozen=True)
class ModelSettings:
    """Size of the DLRM trained by the trainer process.

    Attributes:
        embedding_dim: Width of every embedding and of the bottom MLP's output.
        hidden: Width of the hidden layers of the bottom and top MLPs.
        learning_rate: Adam's learning rate (the dense parameters).
        embedding_learning_rate: SGD learning rate of the embedding rows.
        max_grad_norm: Global-norm gradient clipping threshold.
        seed: Seed of the parameter initialisation.
    """

    embedding_dim: int = 16
    hidden: int = 64
    learning_rate: float = 1e-3
    embedding_learning_rate: float = 0.05
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("embedding_dim", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("learning_rate", "embedding_learning_rate", "max_grad_norm"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


#: The hashed categorical features, each with its own embedding table.
SPARSE_FEATURES: tuple[str, ...] = ("user", "movie", "cross")


def make_model(settings: ModelSettings, n_genres: int):
    """Build the dense part of the DLRM (a Flax NNX module), initialised from ``settings.seed``.

    The embedding tables are kept apart (:func:`make_tables`): as in DLRM, they are updated
    sparsely — only the rows a batch touches — while the MLPs use Adam.

    Args:
        settings: Model size and seed.
        n_genres: Width of the genre multi-hot row.

    Returns:
        The module; ``model(rows, batch)`` maps the batch's gathered embedding rows (a dict of
        ``(B, d)`` arrays by :data:`SPARSE_FEATURES`) and the batch to ``(B,)`` logits.
    """
    import jax.numpy as jnp
    from flax import nnx

    n_vectors = 2 + len(SPARSE_FEATURES)  # bottom MLP output, genre bag, one per sparse feature
    rows_i, cols_i = np.triu_indices(n_vectors, k=1)
    pairs = (tuple(rows_i.tolist()), tuple(cols_i.tolist()))  # static: Python ints

    class DLRM(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            d, h = settings.embedding_dim, settings.hidden
            self.genres = nnx.Linear(n_genres, d, use_bias=False, rngs=rngs)  # embedding bag (sum)
            self.bottom_hidden = nnx.Linear(NUM_DENSE, h, rngs=rngs)
            self.bottom_out = nnx.Linear(h, d, rngs=rngs)
            self.top_hidden = nnx.Linear(d + len(pairs[0]), h, rngs=rngs)
            self.top_out = nnx.Linear(h, 1, rngs=rngs)

        def __call__(self, rows, batch):
            dense = self.bottom_out(nnx.relu(self.bottom_hidden(batch["dense"])))
            vectors = jnp.stack([dense, self.genres(batch["genres"]), *(rows[k] for k in SPARSE_FEATURES)], axis=1)
            dots = jnp.einsum("bid,bjd->bij", vectors, vectors)[:, np.asarray(pairs[0]), np.asarray(pairs[1])]
            hidden = nnx.relu(self.top_hidden(jnp.concatenate([dense, dots], axis=1)))
            return self.top_out(hidden)[:, 0]

    return DLRM(nnx.Rngs(settings.seed))


def make_tables(settings: ModelSettings, hash_buckets: int) -> dict:
    """The embedding tables, ``(hash_buckets, embedding_dim)`` float32 each, N(0, 1/d) initialised."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.fold_in(jax.random.key(settings.seed), 1), len(SPARSE_FEATURES))
    scale = 1.0 / np.sqrt(settings.embedding_dim)
    return {name: scale * jax.random.normal(k, (hash_buckets, settings.embedding_dim), dtype=jnp.float32)
            for name, k in zip(SPARSE_FEATURES, keys)}


def make_optimizer(settings: ModelSettings):
    """The dense parameters' optimiser: ``clip_by_global_norm`` then Adam, as one optax chain."""
    import optax

    return optax.chain(optax.clip_by_global_norm(settings.max_grad_norm), optax.adam(settings.learning_rate))


def make_train_step(model, optimizer, settings: ModelSettings):
    """A jitted ``step(params, opt_state, tables, batch, weight) -> (params, opt_state, tables, loss)``.

    The dense parameters take an Adam step; each embedding table takes an SGD step on the rows
    the batch used (``settings.embedding_learning_rate``; repeated rows accumulate), in place
    (the tables are donated). ``weight`` is ``(B,)`` with 0 on padding rows (a partial batch
    padded to a compiled size). The model's graph is split once and merged inside the step.
    """
    import functools

    import jax
    import optax
    from flax import nnx

    graphdef, _ = nnx.split(model)

    def loss_fn(params, rows, batch, weight):
        logits = nnx.merge(graphdef, params)(rows, batch)
        losses = optax.sigmoid_binary_cross_entropy(logits, batch["label"])
        return (losses * weight).sum() / weight.sum()

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def step(params, opt_state, tables, batch, weight):
        rows = {name: tables[name][batch[name]] for name in SPARSE_FEATURES}
        loss, (grads, row_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1))(params, rows, batch, weight)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        tables = {name: tables[name].at[batch[name]].add(-settings.embedding_learning_rate * row_grads[name])
                  for name in SPARSE_FEATURES}
        return optax.apply_updates(params, updates), opt_state, tables, loss

    return step


def synthetic_batch(batch_size: int, hash_buckets: int, n_genres: int, rng: np.random.Generator) -> dict:
    """A batch of the trainer's layout with random values (to compile and to time the trainer alone)."""
    return {
        "user": rng.integers(0, hash_buckets, batch_size, dtype=np.int32),
        "movie": rng.integers(0, hash_buckets, batch_size, dtype=np.int32),
        "cross": rng.integers(0, hash_buckets, batch_size, dtype=np.int32),
        "genres": (rng.random((batch_size, n_genres)) < 0.15).astype(np.float32),
        "dense": rng.random((batch_size, NUM_DENSE), dtype=np.float32),
        "label": (rng.random(batch_size) < 0.3).astype(np.float32),
    }


def limit_jax_to_one_thread() -> None:
    """Ask XLA's CPU backend for one compute thread, on the CPU (call before JAX initialises).

    The trainer is one process among the pipeline's workers on the same cores: one thread keeps
    its CPU use that of one worker, as the model assumes of a stage.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the trainer computes on the CPU: no accelerator probing


def default_compilation_cache_dir() -> str:
    """Where the trainer keeps its compiled steps between runs: ``jax-live-trainer`` in recgym's
    cache folder (:func:`recgym.datasets.cache_dir`)."""
    from recgym.datasets import cache_dir

    return str(cache_dir() / "jax-live-trainer")


class TrainerCounters:
    """Indices of the trainer's cumulative counters in its shared float64 array."""

    STEPS = 0
    SAMPLES = 1
    BUSY_S = 2  # seconds computing training steps
    IDLE_S = 3  # seconds waiting for a batch
    CPU_S = 4  # the trainer process's CPU seconds (all threads)
    LOSS = 5  # loss of the last step
    READY = 6  # 1 once every batch size is compiled
    BUSY_SINCE = 7  # monotonic time the current step started, 0 while waiting
    HEARTBEAT = 8  # monotonic time of the last loop iteration
    SIZE = 9


def trainer_main(counters, prefetch_buffer, stop_flag, settings: ModelSettings, hash_buckets: int,
                 n_genres: int, batch_sizes: tuple[int, ...], poll_s: float, report_error=None,
                 cpus=None, compilation_cache_dir: str | None = None) -> None:
    """The trainer process: compile, then train on every batch the prefetch buffer delivers.

    Args:
        counters: Shared float64 array of :class:`TrainerCounters`.
        prefetch_buffer: The :class:`~recgym.envs.pipeline.live.runtime.PrefetchBuffer` to drain.
        stop_flag: Shared int; the loop ends when it is non-zero.
        settings: Model size and seed.
        hash_buckets: Embedding-table rows (as the transform stage hashes).
        n_genres: Genre vocabulary size.
        batch_sizes: Batch sizes to compile ahead (a partial batch is padded to the next one).
        poll_s: Longest wait for a batch before checking the stop flag and the parent.
        report_error: Called with the traceback text if the loop raises (the process then exits
            with code 1).
        cpus: CPUs to run on (``None``: any).
        compilation_cache_dir: JAX's persistent compilation cache for this process (``None``: off);
            a warm cache turns seconds of compiling per batch size into a fraction of one.
    """
    try:
        from recgym.envs.pipeline.live.runtime import pin_to_cpus

        pin_to_cpus(cpus)
        _train(counters, prefetch_buffer, stop_flag, settings, hash_buckets, n_genres, batch_sizes, poll_s,
               compilation_cache_dir)
    except BaseException:
        if report_error is not None:
            import traceback

            report_error(traceback.format_exc())
        os._exit(1)


def _train(counters, prefetch_buffer, stop_flag, settings, hash_buckets, n_genres, batch_sizes, poll_s,
           compilation_cache_dir) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the controller's to handle
    parent = os.getppid()
    limit_jax_to_one_thread()
    import jax

    if compilation_cache_dir is not None:
        jax.config.update("jax_compilation_cache_dir", str(compilation_cache_dir))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

    from flax import nnx

    c = np.frombuffer(counters, dtype=np.float64)
    model = make_model(settings, n_genres)
    optimizer = make_optimizer(settings)
    step = make_train_step(model, optimizer, settings)
    _, params = nnx.split(model)
    opt_state = optimizer.init(params)
    tables = make_tables(settings, hash_buckets)
    sizes = sorted(set(int(b) for b in batch_sizes))
    rng = np.random.default_rng(settings.seed)
    for size in sizes:  # compile every shape now, not in the middle of a tuning interval
        params, opt_state, tables, loss = step(params, opt_state, tables,
                                               synthetic_batch(size, hash_buckets, n_genres, rng),
                                               np.full(size, 1e-6, dtype=np.float32))
        jax.block_until_ready(loss)
    c[TrainerCounters.READY] = 1.0
    while not stop_flag.value:
        now = time.monotonic()
        c[TrainerCounters.HEARTBEAT] = now
        if os.getppid() != parent:
            break
        element = prefetch_buffer.get(timeout=poll_s)
        got = time.monotonic()
        c[TrainerCounters.IDLE_S] += got - now
        if element is None:
            continue
        batch = element.payload
        n = int(batch["label"].shape[0])
        size = next((s for s in sizes if s >= n), n)
        weight = np.zeros(size, dtype=np.float32)
        weight[:n] = 1.0
        if size != n:
            batch = {k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
        c[TrainerCounters.BUSY_SINCE] = got
        params, opt_state, tables, loss = step(params, opt_state, tables, batch, weight)
        loss = float(loss)  # waits for the step: the trainer consumes at its real speed
        done = time.monotonic()
        c[TrainerCounters.BUSY_SINCE] = 0.0
        c[TrainerCounters.BUSY_S] += done - got
        c[TrainerCounters.STEPS] += 1
        c[TrainerCounters.SAMPLES] += n
        c[TrainerCounters.LOSS] = loss
        c[TrainerCounters.CPU_S] = time.process_time()
