"""Logged interaction data on disk: Minari datasets and plain Parquet, written safely, read back.

A :class:`LoggedEpisodes` is a chunk of logged episodes, padded to a common length, with the
logging policy's propensities. Writers stream chunks to disk one at a time (memory is bounded by
one chunk) and are *atomic*: they write under a temporary name beside the target and rename it
into place only when every chunk is written, so an interrupted export (an exception, Ctrl-C, a
killed process) never leaves a dataset that loads under the requested name. An existing dataset is
never replaced unless ``overwrite=True``.

* :class:`MinariWriter` writes a `Minari <https://minari.farama.org>`_ dataset (HDF5 storage,
  ``pip install "recgym[ecosystem]"``) that ``minari.load_dataset(dataset_id)`` reads. Each
  episode keeps its seed (and the ``user_id`` reset option when the user was fixed), so
  ``env.reset(seed=episode.seed, options=...)`` replays it; its ``infos`` hold the environment's
  info of every reset and step plus ``propensity`` (see :data:`PROPENSITY_KEYS`).
* :class:`ParquetWriter` writes one row per decision (see :func:`parquet_rows`) for analysts who
  do not use RL tooling: ``pandas.read_parquet(path)``.

:func:`read_minari` and :func:`read_parquet` give the chunks back (for off-policy evaluation,
:mod:`recgym.ope`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PROPENSITY_KEYS",
    "LoggedEpisodes",
    "MinariWriter",
    "ParquetWriter",
    "parquet_rows",
    "read_minari",
    "read_parquet",
]

PROPENSITY_KEYS = ("propensity", "position_propensities")
"""The info keys the logger adds to the env's own: ``propensity`` (probability of the whole
action taken at step ``t``, in the info row of step ``t``'s outcome; NaN in the reset row) and,
for slates, ``position_propensities`` (``(k,)`` per-position factors; see
:mod:`recgym.stochastic_policy`)."""

#: Info keys that describe the decision point rather than the outcome of a step (Parquet keeps
#: them with the observation they go with).
_BEFORE_ACTION_KEYS = ("candidates",)


@dataclass
class LoggedEpisodes:
    """A chunk of logged episodes, padded along time to the longest one.

    Episode ``e`` has ``lengths[e]`` steps: observations ``0..L`` (``L + 1`` of them: the reset
    observation and the observation after every step), actions, rewards and flags ``0..L-1``.
    ``infos[key][e, 0]`` is the reset info and ``infos[key][e, t + 1]`` the info returned by step
    ``t`` — Minari's layout. Entries past an episode's length are padding (zeros).

    Attributes:
        observations: ``(B, T + 1, obs_dim)`` float32.
        actions: ``(B, T)`` int64 item ids (or candidate positions), ``(B, T, k)`` for slates.
        rewards: ``(B, T)`` float64.
        terminations: ``(B, T)`` bool (the user left).
        truncations: ``(B, T)`` bool (time limit).
        infos: ``{key: (B, T + 1, ...)}`` the env's infos plus :data:`PROPENSITY_KEYS`; keys
            absent from the reset info (``clicked_item``, ...) are filled with ``-1`` for ids and
            ``0`` otherwise in row 0.
        lengths: ``(B,)`` int64 steps per episode.
        seeds: ``(B,)`` int64 reset seed of each episode.
        users: ``(B,)`` int64 world user index of each episode.
        user_fixed: Whether the user was chosen by the ``user_id`` reset option (``True``) or drawn
            by the env from the seed (``False``); replaying needs the option only in the first case.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    infos: dict[str, np.ndarray]
    lengths: np.ndarray
    seeds: np.ndarray
    users: np.ndarray
    user_fixed: bool = False

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def propensities(self) -> np.ndarray:
        """``(B, T)`` the logging policy's probability of each logged action."""
        return self.infos["propensity"][:, 1:]

    def episode(self, e: int) -> dict[str, Any]:
        """Episode ``e`` without padding: Minari's field names, infos as ``{key: (L + 1, ...)}``."""
        n = int(self.lengths[e])
        return {
            "observations": self.observations[e, : n + 1],
            "actions": self.actions[e, :n],
            "rewards": self.rewards[e, :n],
            "terminations": self.terminations[e, :n],
            "truncations": self.truncations[e, :n],
            "infos": {key: value[e, : n + 1] for key, value in self.infos.items()},
            "seed": int(self.seeds[e]),
            "user": int(self.users[e]),
        }

    @classmethod
    def from_episodes(
        cls, episodes: list[Mapping[str, Any]], user_fixed: bool = False
    ) -> LoggedEpisodes:
        """Pad a list of :meth:`episode`-shaped dicts back into one chunk."""
        if not episodes:
            raise ValueError("need at least one episode")
        lengths = np.array([len(ep["rewards"]) for ep in episodes], dtype=np.int64)
        horizon = int(lengths.max())

        def pad(values: list[np.ndarray], steps: int) -> np.ndarray:
            first = np.asarray(values[0])
            out = np.zeros((len(values), steps) + first.shape[1:], dtype=first.dtype)
            for e, value in enumerate(values):
                out[e, : len(value)] = value
            return out

        infos = {
            key: pad([ep["infos"][key] for ep in episodes], horizon + 1)
            for key in episodes[0]["infos"]
        }
        return cls(
            observations=pad([ep["observations"] for ep in episodes], horizon + 1),
            actions=pad([ep["actions"] for ep in episodes], horizon).astype(np.int64),
            rewards=pad([ep["rewards"] for ep in episodes], horizon).astype(np.float64),
            terminations=pad([ep["terminations"] for ep in episodes], horizon).astype(bool),
            truncations=pad([ep["truncations"] for ep in episodes], horizon).astype(bool),
            infos=infos,
            lengths=lengths,
            seeds=np.array([ep["seed"] for ep in episodes], dtype=np.int64),
            users=np.array([ep["user"] for ep in episodes], dtype=np.int64),
            user_fixed=user_fixed,
        )


# --------------------------------------------------------------------------------------------
# atomic directory / file placement


def _temporary_sibling(target: Path) -> Path:
    """A hidden name beside ``target`` (same filesystem, so the final rename is atomic)."""
    return target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:12]}"


def _check_target(target: Path, overwrite: bool, what: str, flag: str) -> None:
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"{what} {target} already exists; pass {flag} to replace it (the old one is removed "
            "only once the new one is complete)"
        )


def _move_into_place(temporary: Path, target: Path) -> None:
    """Rename ``temporary`` to ``target``; an existing target is swapped out, then deleted."""
    if not target.exists():
        os.replace(temporary, target)
        return
    old = _temporary_sibling(target)
    os.replace(target, old)
    os.replace(temporary, target)
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


# --------------------------------------------------------------------------------------------
# Minari


def _require_minari():
    try:
        import minari  # noqa: F401
        from minari.dataset._storages.hdf5_storage import HDF5Storage  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "writing Minari datasets needs the minari and h5py packages: "
            'pip install "recgym[ecosystem]"'
        ) from error


class MinariWriter:
    """Stream :class:`LoggedEpisodes` chunks into a new Minari dataset, atomically.

    Use as a context manager: the dataset appears under ``dataset_id`` only when the ``with``
    block exits without an exception; on an exception the partial data is deleted. The data goes
    to a hidden directory beside the final one (Minari lists no hidden directory, and its
    ``metadata.json`` has no ``dataset_id`` until the end, so even loading it by path fails).

    Args:
        dataset_id: Minari id, ``(namespace/)name-v(version)``, e.g. ``"recgym/movielens-mf-v0"``.
        observation_space: The env's single observation space.
        action_space: The env's single action space.
        env_spec: The gymnasium spec that rebuilds the env (``dataset.recover_environment()``).
        metadata: Extra dataset metadata (JSON-serialisable): ``algorithm_name``,
            ``description``, ... and any recgym keys.
        overwrite: Replace an existing dataset of the same id (only once the new one is
            complete).

    Raises:
        FileExistsError: The dataset exists and ``overwrite`` is false (raised on entering).
    """

    def __init__(
        self,
        dataset_id: str,
        observation_space: Any,
        action_space: Any,
        env_spec: Any = None,
        metadata: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        _require_minari()
        from minari.dataset.minari_dataset import parse_dataset_id
        from minari.storage.datasets_root_dir import get_dataset_path

        parse_dataset_id(dataset_id)  # ValueError naming a malformed id
        self.dataset_id = dataset_id
        self.target = Path(get_dataset_path(dataset_id))
        self.observation_space = observation_space
        self.action_space = action_space
        self.env_spec = env_spec
        self.metadata = dict(metadata or {})
        self.overwrite = overwrite
        self.total_episodes = 0
        self._temporary: Path | None = None
        self._storage = None

    def __enter__(self) -> MinariWriter:
        from minari.dataset.minari_storage import MinariStorage

        _check_target(self.target, self.overwrite, "Minari dataset", "overwrite=True (--overwrite)")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._temporary = _temporary_sibling(self.target)
        (self._temporary / "data").mkdir(parents=True)
        self._storage = MinariStorage.new(
            self._temporary / "data",
            observation_space=self.observation_space,
            action_space=self.action_space,
            env_spec=self.env_spec,
            data_format="hdf5",
        )
        return self

    def write(self, chunk: LoggedEpisodes) -> None:
        """Append the chunk's episodes (ids continue from the previous chunk)."""
        from minari.data_collector.episode_buffer import EpisodeBuffer

        if self._storage is None:
            raise RuntimeError("use MinariWriter as a context manager: with MinariWriter(...) as w")
        buffers = []
        for e in range(len(chunk)):
            episode = chunk.episode(e)
            buffers.append(
                EpisodeBuffer(
                    id=self.total_episodes + e,
                    seed=episode["seed"],
                    options={"user_id": episode["user"]} if chunk.user_fixed else None,
                    observations=episode["observations"],
                    actions=episode["actions"],
                    rewards=episode["rewards"],
                    terminations=episode["terminations"],
                    truncations=episode["truncations"],
                    infos=episode["infos"],
                )
            )
        self._storage.update_episodes(buffers)
        self.total_episodes += len(buffers)

    def __exit__(self, exc_type, exc, traceback) -> None:
        temporary, self._temporary, self._storage = self._temporary, None, None
        if temporary is None:
            return
        if exc_type is not None:
            _remove(temporary)
            return
        try:
            from minari import __version__ as minari_version
            from minari.dataset.minari_storage import MinariStorage

            namespace = self.dataset_id.rsplit("/", 1)[0] if "/" in self.dataset_id else None
            if namespace is not None:
                _ensure_namespace(namespace)
            storage = MinariStorage.read(temporary / "data")
            # the keys that make the directory a loadable dataset come last
            storage.update_metadata(
                {**self.metadata, "dataset_id": self.dataset_id, "minari_version": minari_version}
            )
            _move_into_place(temporary, self.target)
        except BaseException:
            _remove(temporary)
            raise


def _ensure_namespace(namespace: str) -> None:
    from minari.namespace import create_namespace, list_local_namespaces

    if namespace not in list_local_namespaces():
        create_namespace(namespace, description="recgym logged interaction data")


def read_minari(dataset: Any, chunk_episodes: int = 256) -> Iterator[LoggedEpisodes]:
    """Iterate over a Minari dataset written by :class:`MinariWriter`, in padded chunks.

    Args:
        dataset: A dataset id (loaded with ``minari.load_dataset``) or a ``MinariDataset``.
        chunk_episodes: Episodes per chunk (bounds the memory used).

    Yields:
        :class:`LoggedEpisodes` in episode order.
    """
    _require_minari()
    import minari

    if chunk_episodes < 1:
        raise ValueError(f"chunk_episodes must be >= 1, got {chunk_episodes}")
    data = minari.load_dataset(dataset) if isinstance(dataset, str) else dataset
    if len(data) and "propensity" not in next(iter(data.iterate_episodes([0]))).infos:
        raise ValueError(f"dataset {data.id} has no 'propensity' infos: not a recgym logged dataset")
    indices = np.asarray(data.episode_indices)
    for start in range(0, len(indices), chunk_episodes):
        chunk = indices[start : start + chunk_episodes]
        metadata = list(data.storage.get_episode_metadata(chunk))
        user_fixed = any("options" in m for m in metadata)
        episodes = []
        for episode, meta in zip(data.iterate_episodes(chunk), metadata):
            infos = dict(episode.infos)
            episodes.append(
                {
                    "observations": episode.observations,
                    "actions": episode.actions,
                    "rewards": episode.rewards,
                    "terminations": episode.terminations,
                    "truncations": episode.truncations,
                    "infos": infos,
                    "seed": int(meta.get("seed", -1)),
                    "user": int(infos["user"][0]),
                }
            )
        yield LoggedEpisodes.from_episodes(episodes, user_fixed=user_fixed)


# --------------------------------------------------------------------------------------------
# Parquet


def parquet_rows(chunk: LoggedEpisodes, first_episode: int = 0) -> dict[str, np.ndarray]:
    """One row per decision of every episode of the chunk, as flat columns.

    Columns: ``episode`` (index in the export), ``step``, ``seed``, ``user``, ``observation``
    (the observation the action was taken on), the decision-point infos (``candidates``), the
    ``action``, its ``propensity`` (and ``position_propensities`` for slates), ``reward``,
    ``terminated``, ``truncated``, then the env's info about the step's outcome (``clicked``,
    ``clicked_item``, ``rating``, ``true_utility``, ``satiation``, ``habit``, ``budget``,
    ``slate``). Multi-valued entries are ``(rows, ...)`` arrays (fixed-size lists in Parquet).
    The final observation of each episode is only in the Minari export.

    Args:
        chunk: Logged episodes.
        first_episode: Episode index of the chunk's first episode.

    Returns:
        ``{column: (rows, ...) array}``.
    """
    steps = np.arange(chunk.rewards.shape[1])
    valid = steps[None, :] < chunk.lengths[:, None]
    episode, step = np.nonzero(valid)
    columns: dict[str, np.ndarray] = {
        "episode": (episode + first_episode).astype(np.int64),
        "step": step.astype(np.int32),
        "seed": chunk.seeds[episode],
        "user": chunk.users[episode],
        "observation": chunk.observations[episode, step],
    }
    for key in _BEFORE_ACTION_KEYS:
        if key in chunk.infos:
            columns[key] = chunk.infos[key][episode, step]
    columns["action"] = chunk.actions[episode, step]
    for key in PROPENSITY_KEYS:
        if key in chunk.infos:
            columns[key] = chunk.infos[key][episode, step + 1]
    columns["reward"] = chunk.rewards[episode, step]
    columns["terminated"] = chunk.terminations[episode, step]
    columns["truncated"] = chunk.truncations[episode, step]
    for key, value in chunk.infos.items():
        if key not in columns and key != "user":
            columns[key] = value[episode, step + 1]
    return columns


def _arrow_table(columns: Mapping[str, np.ndarray]):
    import pyarrow as pa

    arrays, fields = [], []
    for name, values in columns.items():
        values = np.ascontiguousarray(values)
        if values.ndim == 1:
            array = pa.array(values)
        else:
            width = int(np.prod(values.shape[1:]))
            flat = pa.array(values.reshape(-1))
            array = pa.FixedSizeListArray.from_arrays(flat, width)
        arrays.append(array)
        fields.append(pa.field(name, array.type, metadata={"shape": json.dumps(values.shape[1:])}))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


class ParquetWriter:
    """Stream :class:`LoggedEpisodes` chunks into one Parquet file (a row group per chunk).

    A context manager like :class:`MinariWriter`: rows go to a hidden temporary file beside
    ``path``, renamed to ``path`` when the block exits cleanly and deleted otherwise.

    Args:
        path: Target ``.parquet`` file.
        metadata: Key-value metadata stored in the file's schema (JSON-encoded).
        overwrite: Replace an existing file (only once the new one is complete).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false (raised on entering).
    """

    def __init__(
        self, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.metadata = dict(metadata or {})
        self.overwrite = overwrite
        self.total_episodes = 0
        self._temporary: Path | None = None
        self._writer = None

    def __enter__(self) -> ParquetWriter:
        _check_target(self.path, self.overwrite, "Parquet file", "overwrite=True (--overwrite)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._temporary = _temporary_sibling(self.path)
        return self

    def write(self, chunk: LoggedEpisodes) -> None:
        """Append the chunk's decisions as one row group."""
        import pyarrow.parquet as pq

        if self._temporary is None:
            raise RuntimeError("use ParquetWriter as a context manager: with ParquetWriter(...) as w")
        table = _arrow_table(parquet_rows(chunk, self.total_episodes))
        if self._writer is None:
            schema = table.schema.with_metadata(
                {key: json.dumps(value) for key, value in self.metadata.items()}
                | {"recgym_user_fixed": json.dumps(chunk.user_fixed)}
            )
            self._writer = pq.ParquetWriter(self._temporary, schema)
        self._writer.write_table(table.replace_schema_metadata(self._writer.schema.metadata))
        self.total_episodes += len(chunk)

    def __exit__(self, exc_type, exc, traceback) -> None:
        temporary, writer = self._temporary, self._writer
        self._temporary, self._writer = None, None
        if temporary is None:
            return
        try:
            if writer is not None:
                writer.close()
            if exc_type is None:
                if writer is None:
                    raise ValueError("no episodes were written")
                _move_into_place(temporary, self.path)
        finally:
            _remove(temporary)


def read_parquet(path: str | os.PathLike, chunk_episodes: int = 256) -> Iterator[LoggedEpisodes]:
    """Iterate over a Parquet export of :class:`ParquetWriter`, in padded chunks of episodes.

    The Minari-layout infos are rebuilt from the rows: the reset row holds ``user`` and the
    decision-point keys, and ``-1`` / ``0`` for the outcome keys; the final observation of each
    episode (not in the Parquet export) is zeros.

    Args:
        path: The Parquet file.
        chunk_episodes: Episodes per chunk.

    Yields:
        :class:`LoggedEpisodes` in episode order.
    """
    import pyarrow.parquet as pq

    if chunk_episodes < 1:
        raise ValueError(f"chunk_episodes must be >= 1, got {chunk_episodes}")
    file = pq.ParquetFile(path)
    user_fixed = json.loads(file.schema_arrow.metadata.get(b"recgym_user_fixed", b"false"))
    buffer: dict[str, np.ndarray] = {}
    last_group = file.num_row_groups - 1
    for group in range(file.num_row_groups):
        rows = _read_row_group(file, group)
        buffer = {name: np.concatenate([buffer[name], rows[name]]) if buffer else rows[name]
                  for name in rows}
        # episodes are written whole and in order: all but the last are complete mid-file
        while len(buffer["episode"]):
            ids = np.unique(buffer["episode"])
            ready = ids if group == last_group else ids[:-1]
            if len(ready) < chunk_episodes and not (group == last_group and len(ready)):
                break
            take = buffer["episode"] <= ready[: chunk_episodes][-1]
            yield _episodes_from_rows({name: v[take] for name, v in buffer.items()}, user_fixed)
            buffer = {name: v[~take] for name, v in buffer.items()}


def _read_row_group(file: Any, group: int) -> dict[str, np.ndarray]:
    """One row group as ``{column: (rows, ...) array}`` (fixed-size lists reshaped)."""
    table = file.read_row_group(group)
    columns = {}
    for field in table.schema:
        shape = tuple(json.loads(field.metadata[b"shape"])) if field.metadata else ()
        column = table.column(field.name).combine_chunks()
        if shape:
            values = column.flatten().to_numpy(zero_copy_only=False)
            columns[field.name] = values.reshape((len(column),) + shape)
        else:
            columns[field.name] = column.to_numpy(zero_copy_only=False)
    return columns


def _episodes_from_rows(rows: Mapping[str, np.ndarray], user_fixed: bool) -> LoggedEpisodes:
    reserved = {"episode", "step", "seed", "user", "observation", "action", "reward",
                "terminated", "truncated"}
    order = np.lexsort((rows["step"], rows["episode"]))
    rows = {name: values[order] for name, values in rows.items()}
    starts = np.flatnonzero(np.r_[True, rows["episode"][1:] != rows["episode"][:-1]])
    ends = np.r_[starts[1:], len(order)]
    episodes = []
    for start, end in zip(starts, ends):
        sl = slice(start, end)
        n = end - start
        observations = np.concatenate([rows["observation"][sl], np.zeros_like(rows["observation"][:1])])
        infos = {"user": np.full(n + 1, rows["user"][start], dtype=np.int32)}
        for name, values in rows.items():
            if name in reserved:
                continue
            block = values[sl]
            if name in _BEFORE_ACTION_KEYS:  # known at each decision: rows 0..n-1, last repeated
                infos[name] = np.concatenate([block, block[-1:]])
                continue
            fill = np.full_like(block[:1], -1 if name == "clicked_item" else 0)
            if name in PROPENSITY_KEYS:
                fill = np.full_like(block[:1], np.nan)
            infos[name] = np.concatenate([fill, block])
        episodes.append(
            {
                "observations": observations,
                "actions": rows["action"][sl],
                "rewards": rows["reward"][sl],
                "terminations": rows["terminated"][sl],
                "truncations": rows["truncated"][sl],
                "infos": infos,
                "seed": int(rows["seed"][start]),
                "user": int(rows["user"][start]),
            }
        )
    return LoggedEpisodes.from_episodes(episodes, user_fixed=user_fixed)


def env_spec_with_kwargs(env_id: str, env_kwargs: Mapping[str, Any]):
    """The registered spec of ``env_id`` with ``env_kwargs`` merged in (what rebuilds the env)."""
    import gymnasium as gym

    spec = gym.spec(env_id)
    return dataclasses.replace(spec, kwargs={**spec.kwargs, **dict(env_kwargs)})
