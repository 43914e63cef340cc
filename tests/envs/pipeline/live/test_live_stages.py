"""The six stages' work on one element, in-process (no worker processes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recgym.datasets import DatasetNotFoundError, UnknownDatasetError
from recgym.envs.pipeline.live.data import line_chunks, load_source
from recgym.envs.pipeline.live.stages import (
    FEATURE_FIELDS,
    BatchStage,
    Element,
    ParseStage,
    PrefetchStage,
    ReadStage,
    ShuffleStage,
    StageError,
    StageSettings,
    TransformStage,
    element_bytes,
    hash_ids,
)


def _through(source, settings, stages, items):
    for stage in stages:
        out = []
        for item in items:
            out += stage.process(item)
        items = out
    return items


def test_chunks_cover_every_line_after_the_header_once(source):
    raw = source.ratings_path.read_bytes()
    header = raw.index(b"\n") + 1
    pieces = [raw[s:e] for s, e in source.chunks]
    assert b"".join(pieces) == raw[header:]
    assert all(p.endswith(b"\n") for p in pieces)
    assert sum(p.count(b"\n") for p in pieces) == source.n_ratings


@given(st.integers(64, 5000))
@settings(max_examples=20, deadline=None)
def test_line_chunks_of_any_size_tile_the_file(tmp_path_factory, chunk_bytes):
    path = tmp_path_factory.mktemp("lines") / "r.csv"
    rng = np.random.default_rng(chunk_bytes)
    lines = [f"{u},{m},{r},{t}\n" for u, m, r, t in rng.integers(1, 10**6, size=(300, 4))]
    path.write_text("userId,movieId,rating,timestamp\n" + "".join(lines))
    chunks = line_chunks(path, chunk_bytes, header=True)
    raw = path.read_bytes()
    assert chunks[0, 0] == raw.index(b"\n") + 1 and chunks[-1, 1] == len(raw)
    assert np.all(chunks[1:, 0] == chunks[:-1, 1])
    assert all(raw[e - 1 : e] == b"\n" for _, e in chunks)


def test_parse_reads_the_same_records_as_pandas(source):
    settings = StageSettings()
    read, parse = ReadStage(source, settings), ParseStage(source, settings)
    k = int(np.argmin(source.chunks[:, 0]))  # the first chunk of the file
    epoch_order = np.random.default_rng([settings.seed, 0]).permutation(source.n_chunks)
    position = int(np.flatnonzero(epoch_order == k)[0])
    (raw,) = read.process(position)
    assert raw.chunk == k and raw.epoch == 0
    (records,) = parse.process(raw)
    expected = pd.read_csv(source.ratings_path, nrows=len(records.payload["user"]))
    np.testing.assert_array_equal(records.payload["user"], expected["userId"].to_numpy())
    np.testing.assert_array_equal(records.payload["movie"], expected["movieId"].to_numpy())
    np.testing.assert_array_equal(records.payload["rating"], expected["rating"].to_numpy(np.float32))
    np.testing.assert_array_equal(records.payload["timestamp"], expected["timestamp"].to_numpy())
    assert records.samples == len(expected) * settings.samples_per_rating


def test_the_epoch_order_is_a_seeded_permutation(source):
    a, b = ReadStage(source, StageSettings(seed=1)), ReadStage(source, StageSettings(seed=1))
    first = [a.chunk_at(p) for p in range(source.n_chunks)]
    assert sorted(c for _, c in first) == list(range(source.n_chunks))
    assert first == [b.chunk_at(p) for p in range(source.n_chunks)]
    assert [c for _, c in first] != [ReadStage(source, StageSettings(seed=2)).chunk_at(p)[1] for p in range(source.n_chunks)]
    assert a.chunk_at(source.n_chunks) [0] == 1  # the next pass is epoch 1


def test_malformed_text_names_the_file_and_chunk(source):
    parse = ParseStage(source, StageSettings())
    with pytest.raises(StageError, match=r"ratings\.csv: chunk 3 .*not a number"):
        parse.process(Element(3, b"1,2,x,4\n", 0, 3))
    with pytest.raises(StageError, match="not 4 per line"):
        parse.process(Element(3, b"1,2,4.0\n", 0, 3))
    with pytest.raises(StageError, match="outside"):
        parse.process(Element(3, b"1,2,9.0,4\n", 0, 3))


def test_transform_makes_positives_and_unrated_negatives(source):
    settings = StageSettings(negatives=3, hash_buckets=1 << 10)
    records = _through(source, settings, [ReadStage(source, settings), ParseStage(source, settings)], [0])[0]
    (features,) = TransformStage(source, settings).process(records)
    f = features.payload
    n = len(records.payload["user"])
    assert features.samples == n * 4 == len(f["label"])
    np.testing.assert_array_equal(f["label"].reshape(n, 4), np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)))
    assert all(f[name].dtype == np.int32 and f[name].min() >= 0 and f[name].max() < 1 << 10
               for name in ("user", "movie", "cross"))
    np.testing.assert_array_equal(f["movie"][::4], hash_ids(records.payload["movie"], 2, 1 << 10))
    # Genre rows are the movies' own (positives: the rated movie's row of the dataset).
    rows = np.searchsorted(source.movie_ids, records.payload["movie"])
    np.testing.assert_array_equal(f["genres"][::4], source.movie_genres[rows])
    assert f["dense"].shape == (n * 4, 4) and np.all((f["dense"] >= 0) & (f["dense"] <= 1))
    # Same seed, same chunk: the same negatives.
    again = TransformStage(source, settings).process(records)[0].payload
    np.testing.assert_array_equal(again["movie"], f["movie"])


def test_negatives_are_popular_movies_the_user_did_not_rate(source):
    transform = TransformStage(source, StageSettings(negatives=4))
    popularity = source.movie_popularity[np.searchsorted(source.movie_ids, source.rated_movie_ids)]
    rated = source.rated_movie_ids[np.argsort(-popularity)[:500]]  # the user rated the 500 most popular
    users = np.full(500, 7, dtype=np.int64)
    negatives = transform.sample_negatives(np.random.default_rng(0), users, rated)
    unchecked = transform._draw(np.random.default_rng(0), negatives.size)
    assert negatives.shape == (2000,)
    # Drawn by count^0.75, ~30% of plain draws hit those 500; after two redraws ~3% (0.3^3).
    assert np.isin(unchecked, rated).mean() > 0.25
    assert np.isin(negatives, rated).mean() < 0.06
    drawn_popularity = source.movie_popularity[np.searchsorted(source.movie_ids, negatives)]
    assert drawn_popularity.mean() > popularity.mean()


def _features(rng, n, genres=20):
    return {
        "user": rng.integers(0, 100, n).astype(np.int32),
        "movie": np.arange(n, dtype=np.int32),  # unique: identifies each sample
        "cross": rng.integers(0, 100, n).astype(np.int32),
        "genres": rng.random((n, genres), dtype=np.float32),
        "dense": rng.random((n, 4), dtype=np.float32),
        "label": rng.random(n).astype(np.float32),
    }


@given(st.lists(st.integers(1, 300), min_size=1, max_size=15), st.integers(0, 600))
@settings(max_examples=40, deadline=None)
def test_shuffle_loses_and_invents_no_sample(sizes, capacity):
    rng = np.random.default_rng(len(sizes) * 1000 + capacity)
    shuffle = ShuffleStage(None, StageSettings(), share=lambda: capacity)
    fed, out, offset = [], [], 0
    for n in sizes:
        f = _features(rng, n)
        f["movie"] += offset
        offset += n
        fed.append(f["movie"])
        emitted = shuffle.process(Element(n, f))
        out += [e.payload for e in emitted]
        assert shuffle.held == min(offset, capacity)  # full before it emits anything
    flushed = [e.payload for e in shuffle.flush()]
    seen = np.concatenate([o["movie"] for o in out + flushed])
    np.testing.assert_array_equal(np.sort(seen), np.concatenate(fed))
    for o in out + flushed:  # rows stay whole
        np.testing.assert_array_equal(o["genres"].shape, (len(o["movie"]), 20))


def test_shuffle_mixes_across_chunks():
    rng = np.random.default_rng(0)
    shuffle = ShuffleStage(None, StageSettings(), share=lambda: 1000)
    out = []
    for k in range(10):
        f = _features(rng, 500)
        f["movie"] += 500 * k
        out += [e.payload["movie"] for e in shuffle.process(Element(500, f))]
    emitted = np.concatenate(out)
    assert emitted.min() < 500 and len(np.unique(emitted // 500)) >= 3  # drawn from several chunks


@given(st.lists(st.integers(1, 500), min_size=1, max_size=12), st.sampled_from([1, 7, 64, 256]))
@settings(max_examples=40, deadline=None)
def test_batches_have_exactly_the_batch_size_and_keep_every_sample(sizes, batch_size):
    rng = np.random.default_rng(batch_size)
    batch = BatchStage(None, StageSettings(), batch_size=lambda: batch_size)
    out, offset = [], 0
    for n in sizes:
        f = _features(rng, n)
        f["movie"] += offset
        offset += n
        out += batch.process(Element(n, f))
    assert all(e.samples == batch_size == len(e.payload["label"]) for e in out)
    rest = batch.flush()
    assert sum(e.samples for e in out + rest) == offset
    np.testing.assert_array_equal(np.concatenate([e.payload["movie"] for e in out + rest]), np.arange(offset))


def test_the_batch_size_changes_at_run_time():
    rng = np.random.default_rng(0)
    size = [64]
    batch = BatchStage(None, StageSettings(), batch_size=lambda: size[0])
    first = batch.process(Element(200, _features(rng, 200)))
    size[0] = 16
    second = batch.process(Element(40, _features(rng, 40)))
    assert [e.samples for e in first] == [64] * 3 and [e.samples for e in second] == [16] * 3


def test_prefetch_lays_batches_out_for_the_trainer():
    rng = np.random.default_rng(0)
    f = {k: (v.astype(np.int64) if v.dtype == np.int32 else v) for k, v in _features(rng, 32).items()}
    f["genres"] = np.asfortranarray(f["genres"])
    (out,) = PrefetchStage(None, StageSettings()).process(Element(32, f))
    assert all(out.payload[k].flags.c_contiguous for k in FEATURE_FIELDS)
    assert out.payload["user"].dtype == np.int32 and out.payload["genres"].dtype == np.float32
    with pytest.raises(StageError, match="disagree"):
        PrefetchStage(None, StageSettings()).process(Element(32, {**f, "label": f["label"][:5]}))


def test_element_sizes(source):
    sizes = element_bytes(source, StageSettings(negatives=2))
    assert sizes[2:] == (12 + 4 * source.n_genres + 16 + 4,) * 4
    assert 0 < sizes[0] < 20 and sizes[1] == pytest.approx(28 / 3)


def test_bad_stage_settings_name_the_field():
    with pytest.raises(ValueError, match="negatives"):
        StageSettings(negatives=-1)
    with pytest.raises(ValueError, match="hash_buckets"):
        StageSettings(hash_buckets=1)
    with pytest.raises(ValueError, match="seed"):
        StageSettings(seed=-3)


def test_a_missing_dataset_raises_the_data_layers_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RECGYM_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("recgym.datasets.movielens.cache_dir", lambda: tmp_path / "cache")
    with pytest.raises(DatasetNotFoundError, match="ml-latest-small"):
        load_source("ml-latest-small", download=False)
    with pytest.raises(UnknownDatasetError, match="synthetic"):
        load_source("synthetic")
    with pytest.raises(DatasetNotFoundError, match="no ratings file"):
        load_source(tmp_path)
    with pytest.raises(ValueError, match="chunk_bytes"):
        load_source("ml-latest-small", chunk_bytes=10)
