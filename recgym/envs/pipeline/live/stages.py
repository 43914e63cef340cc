"""The six stages of the live pipeline: real work on real MovieLens rows, one element at a time.

Every stage is a small class with ``process(element) -> list of elements`` (what one worker does
with one input element) and ``flush() -> list of elements`` (what it still holds when the worker
is asked to stop: the shuffle buffer, a partial batch). They run inside worker processes and use
NumPy only. An element is a chunk of rows; its ``samples`` count is in *training samples* (a
rating plus its negatives), the unit of every rate the monitor reports, so the six stages and the
trainer are measured on one scale.

* **read** — claims the next chunk of the epoch (the chunk order is a seeded permutation per
  epoch: a file-level shuffle), reads its byte range from the ratings file and checks that it
  holds whole lines (what a record reader's framing check does).
* **parse** — text to typed records: ``user``, ``movie`` (int64), ``rating`` (float32),
  ``timestamp`` (int64), validating the field count, integral ids and the rating range.
* **transform** — the features a DLRM trains on: for every rating (a positive interaction)
  ``negatives`` movies the user did not rate in the chunk, drawn by popularity (``count^0.75``,
  word2vec's unigram rule); hashed categorical ids for the user, the movie and a user x genre
  cross; the movie's genre multi-hot row (a join on the movie table); and normalised dense
  features (popularity, release year, rating time, hour of day).
* **shuffle** — a bounded shuffle buffer (tf.data's rule: once full, every incoming sample
  replaces a uniformly drawn buffered one, which is emitted). The buffer is split across the
  shuffle workers.
* **batch** — collates samples into batches of exactly ``batch_size`` rows (contiguous arrays);
  the batch size is read from shared memory, so it changes at run time.
* **prefetch** — casts and lays out each batch as the trainer's step consumes it and hands it to
  the prefetch buffer (the bounded queue in front of the trainer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from recgym.envs.pipeline.live.data import LINE_FORMATS, LiveSource
from recgym.envs.pipeline.params import STAGES

#: Feature arrays of a transformed sample and of a batch, with their per-row shape and dtype.
FEATURE_FIELDS: tuple[str, ...] = ("user", "movie", "cross", "genres", "dense", "label")
#: Dense features per sample: popularity, release year, rating time, hour of day.
NUM_DENSE = 4
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio (Fibonacci hashing)


@dataclass(frozen=True)
class StageSettings:
    """What the stages compute (fixed for a pipeline's life; every worker gets a copy).

    Attributes:
        negatives: Negative samples drawn per rating (implicit feedback; >= 0).
        hash_buckets: Buckets of each hashed categorical id (embedding-table rows).
        shuffle_buffer: Samples held by the shuffle stage, split evenly across its workers.
        seed: Seed of the epoch order, the negative sampling and the shuffle.
    """

    negatives: int = 2
    hash_buckets: int = 1 << 14
    shuffle_buffer: int = 8192
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("negatives", 0), ("hash_buckets", 2), ("shuffle_buffer", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")

    @property
    def samples_per_rating(self) -> int:
        """Training samples each rating becomes (itself and its negatives)."""
        return 1 + self.negatives


@dataclass
class Element:
    """One chunk flowing between stages.

    Attributes:
        samples: Training samples it stands for (ratings x ``samples_per_rating`` before the
            transform, rows after it).
        payload: The stage's data: bytes (after read), a dict of record arrays (after parse) or
            of feature arrays (after transform).
        epoch: Pass over the file it came from.
        chunk: Chunk index in the file.
    """

    samples: int
    payload: Any
    epoch: int = 0
    chunk: int = 0


class StageError(RuntimeError):
    """A stage met data it cannot process (the message names the file and the chunk)."""


def hash_ids(ids: np.ndarray, salt: int, buckets: int) -> np.ndarray:
    """Hashed categorical ids: Fibonacci hashing of ``ids`` salted per feature.

    Args:
        ids: int64 raw ids (any shape).
        salt: Per-feature salt, so two features' ids land in unrelated buckets.
        buckets: Number of buckets.

    Returns:
        int32 bucket ids in ``[0, buckets)``, same shape.
    """
    mixed = (ids.astype(np.uint64) + np.uint64(salt)) * _HASH_MULTIPLIER
    return ((mixed >> np.uint64(32)) % np.uint64(buckets)).astype(np.int32)


class ReadStage:
    """Read the next chunk of the epoch from the ratings file (see the module docstring)."""

    def __init__(self, source: LiveSource, settings: StageSettings):
        self.source = source
        self.settings = settings
        self._file = None
        self._order_epoch = -1
        self._order = np.empty(0, dtype=np.int64)

    def chunk_at(self, position: int) -> tuple[int, int]:
        """``(epoch, chunk index)`` of the ``position``-th chunk of the stream."""
        epoch, k = divmod(int(position), self.source.n_chunks)
        if epoch != self._order_epoch:
            self._order = np.random.default_rng([self.settings.seed, epoch]).permutation(self.source.n_chunks)
            self._order_epoch = epoch
        return epoch, int(self._order[k])

    def process(self, position: int) -> list[Element]:
        """Read the chunk at stream ``position`` (claimed from the shared cursor)."""
        epoch, chunk = self.chunk_at(position)
        start, end = (int(v) for v in self.source.chunks[chunk])
        if self._file is None:
            self._file = open(self.source.ratings_path, "rb")  # kept open across chunks
        self._file.seek(start)
        text = self._file.read(end - start)
        if len(text) != end - start or (text and not text.endswith(b"\n") and end != self._size()):
            raise StageError(
                f"{self.source.ratings_path}: chunk {chunk} (bytes {start}-{end}) is truncated; "
                "the file changed while the pipeline ran"
            )
        rows = text.count(b"\n") + (0 if text.endswith(b"\n") or not text else 1)
        return [Element(rows * self.settings.samples_per_rating, text, epoch, chunk)]

    def _size(self) -> int:
        return int(self.source.chunks[-1, 1])

    def flush(self) -> list[Element]:
        """Nothing is buffered; closes the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        return []


class ParseStage:
    """Ratings text to typed records (see the module docstring)."""

    def __init__(self, source: LiveSource, settings: StageSettings):
        self.source = source
        self.settings = settings
        self.separator, _, self.encoding = LINE_FORMATS[source.line_format]

    def process(self, element: Element) -> list[Element]:
        """Parse one chunk of lines."""
        text = element.payload.decode(self.encoding)
        tokens = text.replace(self.separator, " ").split()
        try:
            values = np.array(tokens, dtype=np.float64)
        except ValueError as err:
            raise StageError(f"{self._where(element)}: a field is not a number ({err})") from None
        if values.size % 4:
            raise StageError(f"{self._where(element)}: {values.size} fields, not 4 per line")
        values = values.reshape(-1, 4)
        ids = values[:, :2]
        if not np.all(ids == np.floor(ids)) or np.any(ids < 0):
            raise StageError(f"{self._where(element)}: user and movie ids must be non-negative integers")
        rating = values[:, 2].astype(np.float32)
        if np.any(rating < 0.5) or np.any(rating > 5.0):
            raise StageError(f"{self._where(element)}: a rating lies outside [0.5, 5]")
        records = {
            "user": ids[:, 0].astype(np.int64),
            "movie": ids[:, 1].astype(np.int64),
            "rating": rating,
            "timestamp": values[:, 3].astype(np.int64),
        }
        return [Element(element.samples, records, element.epoch, element.chunk)]

    def _where(self, element: Element) -> str:
        start, end = (int(v) for v in self.source.chunks[element.chunk])
        return f"{self.source.ratings_path}: chunk {element.chunk} (bytes {start}-{end})"

    def flush(self) -> list[Element]:
        """Nothing is buffered."""
        return []


class TransformStage:
    """Feature engineering with negative sampling (see the module docstring)."""

    def __init__(self, source: LiveSource, settings: StageSettings):
        self.source = source
        self.settings = settings
        # Popularity-proportional negatives (count^0.75): a cumulative table to search.
        counts = source.movie_counts[np.searchsorted(source.movie_ids, source.rated_movie_ids)]
        cdf = np.cumsum(counts.astype(np.float64) ** 0.75)
        self._negative_cdf = cdf / cdf[-1]
        self._t0, self._t1 = source.timestamp_range

    def process(self, element: Element) -> list[Element]:
        """Turn one chunk of ratings into its training samples."""
        rec = element.payload
        n = rec["user"].shape[0]
        k = self.settings.negatives
        rng = np.random.default_rng([self.settings.seed, element.epoch, element.chunk, 1])
        users = np.repeat(rec["user"], 1 + k)
        movies = np.repeat(rec["movie"], 1 + k)
        label = np.zeros(n * (1 + k), dtype=np.float32)
        label[:: 1 + k] = 1.0
        if k:
            negative = np.ones(users.shape[0], dtype=bool)
            negative[:: 1 + k] = False
            movies[negative] = self.sample_negatives(rng, rec["user"], rec["movie"])
        row = np.searchsorted(self.source.movie_ids, movies)
        row = np.minimum(row, len(self.source.movie_ids) - 1)
        known = self.source.movie_ids[row] == movies
        genres = self.source.movie_genres[row] * known[:, None]
        primary_genre = np.argmax(genres, axis=1)
        timestamp = np.repeat(rec["timestamp"], 1 + k)
        dense = np.empty((users.shape[0], NUM_DENSE), dtype=np.float32)
        dense[:, 0] = self.source.movie_popularity[row] * known
        dense[:, 1] = np.where(known, self.source.movie_year[row], 0.5)
        dense[:, 2] = (timestamp - self._t0) / max(self._t1 - self._t0, 1)
        dense[:, 3] = (timestamp % 86_400) / 86_400.0
        buckets = self.settings.hash_buckets
        features = {
            "user": hash_ids(users, 1, buckets),
            "movie": hash_ids(movies, 2, buckets),
            "cross": hash_ids(users * 64 + primary_genre, 3, buckets),
            "genres": genres.astype(np.float32, copy=False),
            "dense": dense,
            "label": label,
        }
        return [Element(users.shape[0], features, element.epoch, element.chunk)]

    def sample_negatives(self, rng: np.random.Generator, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
        """``negatives`` movies per rating ``(users[j], movies[j])``, drawn by ``count^0.75``.

        A draw the user rated in this chunk is a false negative: it is drawn again (twice; the
        few that clash a third time are kept — collisions are rare and a real pipeline does not
        pay for more).

        Returns:
            ``(len(users) * negatives,)`` int64 raw movie ids, rating by rating.
        """
        k = self.settings.negatives
        drawn = self._draw(rng, len(users) * k)
        owners = np.repeat(users, k)
        rated = users * (1 << 32) + movies
        for _ in range(2):
            clash = np.isin(owners * (1 << 32) + drawn, rated)
            if not clash.any():
                break
            drawn[clash] = self._draw(rng, int(clash.sum()))
        return drawn

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        picks = np.searchsorted(self._negative_cdf, rng.random(size), side="right")
        return self.source.rated_movie_ids[np.minimum(picks, len(self._negative_cdf) - 1)]

    def flush(self) -> list[Element]:
        """Nothing is buffered."""
        return []


def _concat(parts: list[dict]) -> dict:
    return {name: np.concatenate([p[name] for p in parts]) for name in FEATURE_FIELDS}


def _take(features: dict, index) -> dict:
    return {name: features[name][index] for name in FEATURE_FIELDS}


def _rows(features: dict) -> int:
    return int(features["label"].shape[0])


class ShuffleStage:
    """A bounded shuffle buffer split across the shuffle workers (see the module docstring).

    The buffer is preallocated: while it fills, samples are copied in; once full, each incoming
    sample takes the slot of a uniformly drawn buffered sample, which is emitted (O(samples) per
    chunk, as tf.data's shuffle).

    Args:
        source, settings: As every stage.
        worker_slot: This worker's slot (seeds its generator).
        share: Callable returning this worker's share of the buffer (samples); read per element,
            since it changes when the shuffle stage is resized.
    """

    def __init__(self, source: LiveSource, settings: StageSettings, worker_slot: int = 0, share=None):
        self.settings = settings
        self.rng = np.random.default_rng([settings.seed, worker_slot, 3])
        self._share = share or (lambda: settings.shuffle_buffer)
        self.buffer: dict | None = None
        self.held = 0

    def _resize(self, capacity: int, like: dict) -> list[dict]:
        """Make the buffer hold ``capacity`` samples; returns what no longer fits (drawn at random)."""
        out = []
        if self.held > capacity:
            drawn = self.rng.choice(self.held, size=self.held - capacity, replace=False)
            keep = np.ones(self.held, dtype=bool)
            keep[drawn] = False
            out.append(_take(self.buffer, drawn))
            kept = _take(self.buffer, keep)
            self.held = capacity
        else:
            kept = None if self.buffer is None else _take(self.buffer, slice(0, self.held))
        self.buffer = {name: np.empty((capacity, *like[name].shape[1:]), dtype=like[name].dtype) for name in FEATURE_FIELDS}
        if kept is not None:
            for name in FEATURE_FIELDS:
                self.buffer[name][: self.held] = kept[name]
        return out

    def process(self, element: Element) -> list[Element]:
        """Add a chunk; emit as many samples as overflow the buffer, drawn uniformly from it."""
        incoming = element.payload
        n = _rows(incoming)
        capacity = max(int(self._share()), 0)
        out = []
        if self.buffer is None or self.buffer["label"].shape[0] != capacity:
            out += self._resize(capacity, incoming)
        free = min(capacity - self.held, n)
        if free:
            for name in FEATURE_FIELDS:
                self.buffer[name][self.held : self.held + free] = incoming[name][:free]
            self.held += free
        if free < n:
            rest = _take(incoming, slice(free, None))
            m = n - free
            if capacity == 0:
                out.append(rest)
            else:
                # Distinct slots (with repeats, a later sample would evict an earlier incoming one).
                slots = self.rng.choice(capacity, size=min(m, capacity), replace=False)
                if m > capacity:  # a chunk larger than the whole buffer: the surplus passes through
                    out.append(_take(rest, slice(capacity, None)))
                    rest = _take(rest, slice(0, capacity))
                out.append(_take(self.buffer, slots))
                for name in FEATURE_FIELDS:
                    self.buffer[name][slots] = rest[name]
        if not out:
            return []
        merged = out[0] if len(out) == 1 else _concat(out)
        return [Element(_rows(merged), merged, element.epoch, element.chunk)]

    def flush(self) -> list[Element]:
        """Emit the whole buffer (shuffled): a stopping worker loses no sample."""
        if not self.held:
            return []
        out = _take(self.buffer, self.rng.permutation(self.held))
        self.buffer, self.held = None, 0
        return [Element(_rows(out), out)]


class BatchStage:
    """Collate samples into batches of exactly ``batch_size`` rows (see the module docstring).

    Args:
        source, settings: As every stage.
        batch_size: Callable returning the current batch size (read per element).
    """

    def __init__(self, source: LiveSource, settings: StageSettings, batch_size=None):
        self._batch_size = batch_size or (lambda: 256)
        self.pending: list[dict] = []
        self.held = 0

    def process(self, element: Element) -> list[Element]:
        """Add samples; emit every full batch."""
        self.pending.append(element.payload)
        self.held += _rows(element.payload)
        size = max(int(self._batch_size()), 1)
        if self.held < size:
            return []
        merged = _concat(self.pending) if len(self.pending) > 1 else self.pending[0]
        full = self.held // size
        out = [
            Element(size, {name: np.ascontiguousarray(merged[name][i * size : (i + 1) * size]) for name in FEATURE_FIELDS})
            for i in range(full)
        ]
        rest = self.held - full * size
        self.pending = [_take(merged, slice(full * size, None))] if rest else []
        self.held = rest
        return out

    def flush(self) -> list[Element]:
        """The partial batch is passed on whole (a smaller last batch, as at an epoch's end)."""
        if not self.held:
            return []
        merged = _concat(self.pending)
        self.pending, self.held = [], 0
        return [Element(_rows(merged), merged)]


class PrefetchStage:
    """Lay each batch out as the trainer's step takes it (see the module docstring).

    Every field becomes one C-contiguous array of the trainer's dtype (int32 ids, float32
    features), so the trainer hands it to its compiled step without a copy.
    """

    DTYPES = {"user": np.int32, "movie": np.int32, "cross": np.int32, "genres": np.float32,
              "dense": np.float32, "label": np.float32}

    def __init__(self, source: LiveSource, settings: StageSettings):
        pass

    def process(self, element: Element) -> list[Element]:
        """One batch in, the same batch in the trainer's layout out."""
        batch = {name: np.ascontiguousarray(element.payload[name], dtype=dtype) for name, dtype in self.DTYPES.items()}
        if len({v.shape[0] for v in batch.values()}) != 1:
            raise StageError(f"a batch's fields disagree on its size: { {k: v.shape for k, v in batch.items()} }")
        return [Element(element.samples, batch, element.epoch, element.chunk)]

    def flush(self) -> list[Element]:
        """Nothing is buffered."""
        return []


def element_bytes(source: LiveSource, settings: StageSettings) -> tuple[float, ...]:
    """Bytes one training sample occupies in each stage's output (what a buffered element holds).

    read: its share of the ratings text; parse: the four typed fields; transform onwards: the
    feature arrays (three int32 ids, the genre row, the dense features, the label).
    """
    per_sample = float(settings.samples_per_rating)
    features = 3 * 4 + 4 * source.n_genres + 4 * NUM_DENSE + 4
    return (
        source.bytes_per_rating / per_sample,
        (8 + 8 + 4 + 8) / per_sample,
        float(features),
        float(features),
        float(features),
        float(features),
    )


#: The stage classes, in pipeline order (index = stage index of :data:`~recgym.envs.pipeline.params.STAGES`).
STAGE_CLASSES = (ReadStage, ParseStage, TransformStage, ShuffleStage, BatchStage, PrefetchStage)
assert len(STAGE_CLASSES) == len(STAGES)
