"""A2C training: one trace, finite losses, determinism, resume, the non-finite guard, learning."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from agents import a2c
from agents.a2c import A2CConfig, make_train
from agents.movielens import make_env_params
from tests.agents.conftest import tiny_config


def leaves(tree):
    """Every leaf as a NumPy array (typed PRNG keys as their key data)."""
    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
            for x in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize("memory_decays", [(), (0.8, 0.95)])
def test_the_update_traces_once_across_many_updates(synthetic_params, memory_decays):
    train = make_train(tiny_config(memory_decays=memory_decays), synthetic_params)
    state = train.init(jax.random.key(0))
    for _ in range(4):
        state, _ = train.run(state, 2)
    assert train.traces == 1
    assert int(state.learner.update) == 8


def test_every_loss_is_finite_over_a_short_run(synthetic_params):
    train = make_train(tiny_config(total_steps=16 * 4 * 10), synthetic_params)
    state, metrics = jax.jit(train)(jax.random.key(1))
    for name, values in metrics.items():
        if name.startswith("losses/"):
            assert np.all(np.isfinite(np.asarray(values))), name
    assert np.all(np.isfinite(leaves(state.learner.params)[0]))
    assert np.asarray(metrics["global_step"]).tolist() == [64 * (i + 1) for i in range(10)]


@pytest.mark.parametrize("memory_decays", [(), (0.8, 0.95)])
def test_same_seed_same_parameters_and_another_seed_others(synthetic_params, memory_decays):
    train = jax.jit(make_train(tiny_config(memory_decays=memory_decays), synthetic_params))
    first, second, other = (train(jax.random.key(s))[0].learner.params for s in (3, 3, 4))
    for a, b in zip(leaves(first), leaves(second)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(first), leaves(other)))


def test_vmap_over_seeds_equals_training_each_seed(tmp_path):
    """``jax.jit(jax.vmap(train))(keys)`` finishes and gives every seed's own run (in a child
    process with a timeout: a deadlock in XLA's runtime hangs in native code)."""
    root = Path(__file__).parents[2]
    try:
        subprocess.run([sys.executable, "-m", "tests.agents.vmap_seeds_worker", str(tmp_path)], cwd=root,
                       check=True, timeout=900, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    except subprocess.TimeoutExpired:
        pytest.fail("jax.jit(jax.vmap(train))(keys) did not finish in 900 s: a deadlock (no CPU used) is the "
                    "batched-LAPACK one of A2CTraining.initial_params")
    batched = dict(np.load(tmp_path / "vmapped.npz"))
    for seed in range(3):
        single = dict(np.load(tmp_path / f"seed{seed}.npz"))
        assert single.keys() == batched.keys()
        for name in single:
            np.testing.assert_allclose(batched[name][seed], single[name], rtol=1e-5, atol=1e-6,
                                       err_msg=f"seed {seed}, leaf {name}")


def test_vmap_over_seeds_runs_no_batched_lapack_call(synthetic_params):
    """Why the test above no longer hangs, checked deterministically: under ``vmap`` over seeds
    the orthogonal initialisers' QR factorisations stay unbatched (a batched LAPACK call blocks
    a thread of XLA's CPU pool on work queued to the same pool, and enough of them at once
    deadlock it)."""
    train = make_train(tiny_config(), synthetic_params)
    text = jax.jit(jax.vmap(train)).lower(jax.random.split(jax.random.key(0), 4)).as_text()
    lapack_calls = re.findall(r"custom_call @lapack_\w+\(.*?num_batch_dims = \"(\d+)\"", text)
    assert lapack_calls, "no LAPACK call found: the check no longer sees the orthogonal initialisers"
    assert set(lapack_calls) == {"0"}, f"batched LAPACK calls under vmap: num_batch_dims {sorted(set(lapack_calls))}"


def test_slate_training_serves_distinct_unserved_items(synthetic_slate_params):
    config = tiny_config(slate_size=3)
    train = make_train(config, synthetic_slate_params)
    state = train.init(jax.random.key(0))
    _, batch = jax.jit(lambda s, k: train._rollout(a2c.DeviceAxis(), train.env_params, s.learner.params,
                                                   s.actors, k))(state, jax.random.key(1))
    slates = np.asarray(batch.slate)                                     # (steps, envs, 3)
    assert all(len(set(row)) == 3 for row in slates.reshape(-1, 3).tolist())
    served = np.asarray(a2c.served_mask(batch.served, train.n_items))    # what each step had served
    chosen = np.take_along_axis(served, slates, axis=-1)
    assert not chosen.any(), "an item served earlier in the episode was served again"


def test_config_and_env_must_agree_on_the_slate_size(synthetic_params):
    with pytest.raises(ValueError, match="slate_size"):
        make_train(tiny_config(slate_size=3), synthetic_params)


def test_training_beats_random_on_held_out_users():
    """A real learning test: a short seeded run on the synthetic world, scored by the harness."""
    from agents.policy import AgentPolicy
    from recgym.evaluation import BASELINES, evaluate, make_eval_env, paired_ratio_ci

    config = A2CConfig(dataset="synthetic", total_steps=64 * 8 * 60, num_envs=64, rollout_steps=8,
                       hidden_sizes=(64,), embedding_dim=16, learning_rate=3e-3, eval_episodes=0,
                       progress=False, tensorboard=False)
    env = make_env_params(config)
    train = make_train(config, env.params, env.core, env.item_features)
    state, _ = jax.jit(train)(jax.random.key(0))
    env = make_eval_env(config.env, num_envs=120, dataset="synthetic")
    agent = evaluate(AgentPolicy.from_training(train, state), env, 120, seed=0).episodes["return"]
    random = evaluate(BASELINES["random"], env, 120, seed=0).episodes["return"]
    ratio, low, _ = paired_ratio_ci(agent.to_numpy(), random.to_numpy())
    assert low > 1.2, f"trained / random = {ratio:.2f}, lower bound {low:.2f}"


def test_the_docs_config_table_is_the_config():
    from pathlib import Path

    from agents.config import config_table

    page = (Path(__file__).parents[2] / "docs" / "agents.md").read_text()
    start, end = "<!-- config-table:start -->\n", "\n<!-- config-table:end -->"
    assert page[page.index(start) + len(start):page.index(end)] == config_table(A2CConfig)


def test_the_command_line_rejects_a_bad_value_by_name(capsys):
    with pytest.raises(SystemExit):
        a2c.main(["--gamma", "2", "--dataset", "synthetic"])
    assert "gamma" in capsys.readouterr().err


def test_the_warm_start_builds_under_jit_like_eagerly():
    config = tiny_config(warm_start=5.0)
    env = make_env_params(config)  # the item features with the logged statistics the warm start reads
    train = make_train(config, env.params, env.core, env.item_features)
    eager = train.init(jax.random.key(0)).learner.params
    traced = jax.jit(train.init)(jax.random.key(0)).learner.params
    for a, b in zip(leaves(eager), leaves(traced)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert any(np.any(x != 0) for x in leaves(eager["actor_wide"]))  # the warm start set the wide part


def test_the_warm_start_scores_items_by_the_logged_matrix_factorisation():
    import jax.numpy as jnp
    from flax import nnx

    from agents.movielens import agent_item_features, warm_start_logged_mf
    from agents.networks import ActorCritic
    from recgym.envs.movielens import MovieLensCore, build_world, make_params, observation_layout

    world = build_world("synthetic")
    params = make_params(world, users="train")
    features = agent_item_features(world, params)
    observations = np.asarray(jax.vmap(MovieLensCore().start, in_axes=(0, None))(
        jax.random.split(jax.random.key(0), 3), params)[0])
    rng = np.random.default_rng(0)
    model = ActorCritic(observations.shape[1], features, (8,), 4, rngs=nnx.Rngs(0),
                        observation_shift=rng.normal(size=observations.shape[1]),
                        observation_scale=rng.uniform(0.5, 2.0, size=observations.shape[1]))
    model.actor.out.kernel[...] = jnp.zeros_like(model.actor.out.kernel[...])  # the deep part off
    model.actor.out.bias[...] = jnp.zeros_like(model.actor.out.bias[...])
    warm_start_logged_mf(model, params, 2.0)
    profile = {field.name: field for field in observation_layout(params)}["profile_embedding"]
    n_genres = int(params.world.n_genres)
    logged_embedding = features[:, n_genres:n_genres + profile.size]
    expected = 2.0 * (observations[:, profile.start:profile.start + profile.size] @ logged_embedding.T
                      + features[:, -1])
    scores = np.asarray(model.scores(jnp.asarray(observations)))
    # a softmax ignores a constant per observation
    np.testing.assert_allclose(scores - scores.mean(axis=1, keepdims=True),
                               expected - expected.mean(axis=1, keepdims=True), rtol=1e-3, atol=1e-3)
