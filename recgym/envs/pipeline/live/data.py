"""The live pipeline's source: a MovieLens ratings file cut into line-aligned byte chunks.

:func:`load_source` resolves a dataset exactly as :func:`recgym.datasets.load_movielens` does
(explicit path, ``$RECGYM_DATA_HOME``, the user cache, a checksummed download; a missing or
corrupt dataset raises the data layer's own error), validates it with that loader, and returns a
:class:`LiveSource`: the ratings file's path and line format, its byte ranges of about
``chunk_bytes`` each (cut at line ends, so a chunk is whole rows), and the per-movie lookup
tables the transform stage joins against (genre multi-hot rows, release year, popularity). A
:class:`LiveSource` is small and picklable: it is what every worker process receives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Line formats of the ratings files the live pipeline reads: field separator, whether the first
#: line is a header, text encoding. Keys are :class:`recgym.datasets.DatasetSpec` formats.
LINE_FORMATS: dict[str, tuple[str, bool, str]] = {
    "ml-latest": (",", True, "utf-8"),
    "ratings-csv": (",", True, "utf-8"),
    "ml-100k": ("\t", False, "latin-1"),
    "ml-1m": ("::", False, "latin-1"),
}

#: Default chunk size (bytes of ratings text per pipeline element): about 1,000 ratings of
#: ml-latest-small, large enough that per-element IPC is a small part of each stage's cost.
DEFAULT_CHUNK_BYTES = 24_000


@dataclass(frozen=True, eq=False)
class LiveSource:
    """A ratings file ready to stream, with the item tables the transform stage needs.

    Attributes:
        name: Dataset name or path as given.
        ratings_path: Absolute path of the ratings file.
        line_format: Key of :data:`LINE_FORMATS`.
        chunks: ``(n_chunks, 2)`` int64 byte ranges ``[start, end)`` of whole lines (the header
            excluded).
        n_ratings: Ratings in the file.
        movie_ids: ``(n_movies,)`` int64 raw movie ids, sorted (the join key).
        movie_genres: ``(n_movies, n_genres)`` float32 genre multi-hot rows.
        movie_year: ``(n_movies,)`` float32 release year scaled to ``[0, 1]`` over the catalogue
            (0.5 where unknown).
        movie_popularity: ``(n_movies,)`` float32 ``log1p(ratings)`` scaled to ``[0, 1]``.
        movie_counts: ``(n_movies,)`` int64 ratings of each movie.
        rated_movie_ids: ``(n_rated,)`` int64 raw ids of the movies with a rating (negative
            sampling draws from them).
        timestamp_range: ``(first, last)`` rating time (Unix seconds), to scale timestamps.
        genre_names: The genre vocabulary, in column order of :attr:`movie_genres`.
    """

    name: str
    ratings_path: Path
    line_format: str
    chunks: np.ndarray
    n_ratings: int
    movie_ids: np.ndarray
    movie_genres: np.ndarray
    movie_year: np.ndarray
    movie_popularity: np.ndarray
    movie_counts: np.ndarray
    rated_movie_ids: np.ndarray
    timestamp_range: tuple[int, int]
    genre_names: tuple[str, ...]

    @property
    def n_chunks(self) -> int:
        """Number of chunks per pass over the file (one epoch)."""
        return int(self.chunks.shape[0])

    @property
    def n_genres(self) -> int:
        """Size of the genre vocabulary."""
        return len(self.genre_names)

    @property
    def bytes_per_rating(self) -> float:
        """Mean bytes of ratings text per rating (the on-disk record size)."""
        return float((self.chunks[:, 1] - self.chunks[:, 0]).sum()) / max(self.n_ratings, 1)


def _ratings_file(name_or_path: str | os.PathLike, data_home, download: bool) -> tuple[Path, str]:
    """The ratings file and its dataset format, resolved like :func:`load_movielens` does."""
    from recgym.datasets.errors import DatasetNotFoundError, UnknownDatasetError
    from recgym.datasets.movielens import _detect, resolve
    from recgym.datasets.specs import DATASETS

    name = os.fspath(name_or_path)
    if name in DATASETS:
        spec = DATASETS[name]
        folder, _ = resolve(spec, data_home=data_home, download=download, progressbar=False)
        return folder / spec.ratings_file, spec.format
    if name == "synthetic":
        raise UnknownDatasetError(
            "the live pipeline streams a ratings file from disk; 'synthetic' has none. Use a "
            "MovieLens name (e.g. 'ml-latest-small') or a path to a dataset folder"
        )
    path = Path(name).expanduser()
    if not path.exists():
        from recgym.datasets import load_movielens

        load_movielens(name, download=False)  # raises the data layer's error for this name
    folder = path if path.is_dir() else path.parent
    detected = _detect(folder) if folder.is_dir() else None
    if detected is None:
        raise DatasetNotFoundError(
            f"{path}: no ratings file found; the live pipeline needs a dataset name or a folder "
            "holding ratings.csv (+ movies.csv), u.data or ratings.dat"
        )
    fmt, rfile = detected
    return (path if path.is_file() else folder / rfile), fmt


def line_chunks(path: Path, chunk_bytes: int, header: bool) -> np.ndarray:
    """Byte ranges of about ``chunk_bytes`` each, cut just after a newline.

    Each cut is found by seeking to the nominal offset and scanning to the next line end, so
    the file is never read whole.

    Args:
        path: The text file.
        chunk_bytes: Target chunk size in bytes (> 0).
        header: Skip the first line.

    Returns:
        ``(n_chunks, 2)`` int64 ``[start, end)`` ranges covering every line after the header.
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes!r}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        start = len(f.readline()) if header else 0
        cuts = [start]
        while cuts[-1] < size:
            f.seek(min(cuts[-1] + chunk_bytes, size))
            if f.tell() < size:
                f.readline()  # to the end of the line the nominal cut falls in
            cuts.append(min(f.tell(), size))
    return np.stack([cuts[:-1], cuts[1:]], axis=1).astype(np.int64)


def load_source(
    name_or_path: str | os.PathLike = "ml-latest-small",
    *,
    data_home: str | os.PathLike | None = None,
    download: bool = True,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> LiveSource:
    """Resolve and validate a MovieLens dataset and cut its ratings file into chunks.

    Args:
        name_or_path: A dataset name (``"ml-latest-small"``, ``"ml-100k"``, ``"ml-1m"``, ...) or
            a path to a dataset folder or ratings file.
        data_home: Replaces ``$RECGYM_DATA_HOME`` (see :func:`recgym.datasets.load_movielens`).
        download: Allow a download when the dataset is nowhere on disk.
        chunk_bytes: Target bytes of ratings text per chunk (one pipeline element).

    Returns:
        The source.

    Raises:
        recgym.datasets.DatasetError: The data layer's errors (unknown name, missing dataset with
            the file and folder it needs, corrupt or malformed files).
        ValueError: A dataset whose format the live pipeline cannot stream, or a bad
            ``chunk_bytes``.
    """
    from recgym.datasets import load_movielens

    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int | np.integer) or chunk_bytes < 64:
        raise ValueError(f"chunk_bytes must be an int >= 64, got {chunk_bytes!r}")
    ratings_path, fmt = _ratings_file(name_or_path, data_home, download)
    if fmt not in LINE_FORMATS:
        raise ValueError(f"the live pipeline cannot stream {fmt!r} ratings files (formats: {sorted(LINE_FORMATS)})")
    named = os.fspath(name_or_path)
    # The loader validates every row and builds the item tables; the live stages then re-read
    # the same file as text (the work a real ingestion pipeline does on every epoch).
    from recgym.datasets.specs import DATASETS

    dataset = load_movielens(named if named in DATASETS else ratings_path, data_home=data_home, download=download,
                             progressbar=False)
    ratings = dataset.ratings
    order = np.argsort(dataset.raw_item_ids, kind="stable")
    movie_ids = np.asarray(dataset.raw_item_ids, dtype=np.int64)[order]
    counts = np.bincount(ratings["item_id"].to_numpy(), minlength=dataset.n_items)[order]
    popularity = np.log1p(counts.astype(np.float64))
    years = dataset.items["year"].to_numpy(dtype=np.float64, na_value=np.nan)[order]
    known = np.isfinite(years)
    year_scaled = np.full(len(years), 0.5)
    if known.any():
        low, high = np.nanmin(years), np.nanmax(years)
        year_scaled[known] = (years[known] - low) / max(high - low, 1.0)
    _, header, _ = LINE_FORMATS[fmt]
    timestamps = ratings["timestamp"].to_numpy()
    return LiveSource(
        name=named,
        ratings_path=ratings_path.resolve(),
        line_format=fmt,
        chunks=line_chunks(ratings_path, int(chunk_bytes), header),
        n_ratings=len(ratings),
        movie_ids=movie_ids,
        movie_genres=np.asarray(dataset.genre_matrix, dtype=np.float32)[order],
        movie_year=year_scaled.astype(np.float32),
        movie_popularity=(popularity / max(popularity.max(), 1.0)).astype(np.float32),
        movie_counts=counts.astype(np.int64),
        rated_movie_ids=np.unique(np.asarray(dataset.raw_item_ids)[ratings["item_id"].to_numpy()]).astype(np.int64),
        timestamp_range=(int(timestamps.min()), int(timestamps.max())),
        genre_names=tuple(dataset.genre_names),
    )
