"""The trainer's DLRM: it learns, padding is ignored, embedding updates are sparse."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from recgym.envs.pipeline.live.trainer import (
    SPARSE_FEATURES,
    ModelSettings,
    make_model,
    make_optimizer,
    make_tables,
    make_train_step,
    synthetic_batch,
)

BUCKETS, GENRES = 256, 20


def _setup(seed=0):
    settings = ModelSettings(embedding_dim=8, hidden=16, learning_rate=1e-2, embedding_learning_rate=0.5, seed=seed)
    model = make_model(settings, GENRES)
    optimizer = make_optimizer(settings)
    _, params = nnx.split(model)
    return settings, model, optimizer, params, optimizer.init(params), make_tables(settings, BUCKETS)


@pytest.fixture(scope="module")
def step():
    """One compiled step for the module (compiling is the slow part)."""
    settings, model, optimizer, *_ = _setup()
    return make_train_step(model, optimizer, settings)


def _copy(tree):
    import jax

    return jax.tree_util.tree_map(lambda x: np.array(x), tree)


def test_training_steps_lower_the_loss_on_a_fixed_batch(step):
    settings, model, optimizer, params, opt_state, tables = _setup()
    batch = synthetic_batch(128, BUCKETS, GENRES, np.random.default_rng(0))
    weight = np.ones(128, np.float32)
    losses = []
    for _ in range(60):
        params, opt_state, tables, loss = step(params, opt_state, tables, batch, weight)
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.6 * losses[0]


def test_padding_rows_with_zero_weight_change_nothing(step):
    settings, model, optimizer, params, opt_state, tables = _setup()
    batch = synthetic_batch(64, BUCKETS, GENRES, np.random.default_rng(1))
    padded = {k: np.concatenate([v, synthetic_batch(64, BUCKETS, GENRES, np.random.default_rng(2))[k]]) for k, v in batch.items()}
    weight = np.concatenate([np.ones(64, np.float32), np.zeros(64, np.float32)])
    a = step(_copy(params), _copy(opt_state), _copy(tables), batch, np.ones(64, np.float32))
    b = step(_copy(params), _copy(opt_state), _copy(tables), padded, weight)
    assert float(a[3]) == pytest.approx(float(b[3]), rel=1e-5)
    for name in SPARSE_FEATURES:
        np.testing.assert_allclose(np.asarray(a[2][name]), np.asarray(b[2][name]), rtol=1e-5, atol=1e-7)


def test_embedding_updates_touch_only_the_rows_a_batch_uses(step):
    settings, model, optimizer, params, opt_state, tables = _setup()
    batch = synthetic_batch(64, BUCKETS, GENRES, np.random.default_rng(3))
    before = _copy(tables)
    _, _, after, _ = step(params, opt_state, tables, batch, np.ones(64, np.float32))
    for name in SPARSE_FEATURES:
        changed = np.flatnonzero(np.any(np.asarray(after[name]) != before[name], axis=1))
        assert set(changed) <= set(batch[name].tolist()) and len(changed) > 0


def test_initialisation_follows_the_seed():
    tables_a = _setup(seed=5)[-1]
    tables_b = _setup(seed=5)[-1]
    tables_c = _setup(seed=6)[-1]
    np.testing.assert_array_equal(np.asarray(tables_a["user"]), np.asarray(tables_b["user"]))
    assert not np.array_equal(np.asarray(tables_a["user"]), np.asarray(tables_c["user"]))


def test_bad_model_settings_name_the_field():
    with pytest.raises(ValueError, match="embedding_dim"):
        ModelSettings(embedding_dim=0)
    with pytest.raises(ValueError, match="learning_rate"):
        ModelSettings(learning_rate=-1.0)
