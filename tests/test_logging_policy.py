"""recgym.logging_policy / recgym.logged_data: logged episodes with propensities, Minari and Parquet.

Runs on the seeded synthetic world; Minari datasets go to a temporary MINARI_DATASETS_PATH.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

from recgym.logged_data import LoggedEpisodes, parquet_rows, read_minari, read_parquet
from recgym.logging_policy import (
    collect_episodes,
    export,
    main,
    make_logging_env,
    policy_from_name,
    policy_names,
)
from recgym.stochastic_policy import StochasticPolicy

minari = pytest.importorskip("minari")
pytest.importorskip("h5py")

ENV_ID = "RecGym-MovieLens-v0"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def minari_home(tmp_path, monkeypatch):
    home = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(home))
    return home


def logging_run(n_episodes=40, num_envs=16, seed=0, **env_kwargs):
    env = make_logging_env(ENV_ID, num_envs, dataset="synthetic", **env_kwargs)
    policy = StochasticPolicy(policy_from_name("most-popular", env), temperature=0.5, epsilon=0.1)
    return env, list(collect_episodes(env, policy, n_episodes, seed=seed))


@pytest.fixture(scope="module")
def logged():
    return logging_run()


def episodes_of(chunks):
    return [chunk.episode(e) for chunk in chunks for e in range(len(chunk))]


def assert_same_episode(got, expected):
    for key in ("observations", "actions", "rewards", "terminations", "truncations"):
        np.testing.assert_array_equal(np.asarray(got[key]), expected[key], err_msg=key)
    assert set(got["infos"]) == set(expected["infos"])
    for key, value in expected["infos"].items():
        np.testing.assert_array_equal(got["infos"][key], value, err_msg=key)


def write_minari(env, chunks, dataset_id="recgym/test-v0", **kwargs):
    return export(
        iter(chunks), dataset_id, observation_space=env.single_observation_space,
        action_space=env.single_action_space, progress=False, **kwargs,
    )


def test_logged_episodes_are_well_formed(logged):
    env, chunks = logged
    assert [len(c) for c in chunks] == [16, 16, 8]
    for chunk in chunks:
        steps = np.arange(chunk.rewards.shape[1])
        valid = steps[None] < chunk.lengths[:, None]
        last = chunk.lengths - 1
        rows = np.arange(len(chunk))
        # every episode ends exactly at its last step, by termination or truncation
        ended = chunk.terminations | chunk.truncations
        assert ended[rows, last].all()
        assert not ended[steps[None] < last[:, None]].any()
        p = chunk.propensities
        assert ((p > 0) & (p <= 1))[valid].all() and (p[~valid] == 0).all()
        assert np.isnan(chunk.infos["propensity"][:, 0]).all()
        assert (chunk.infos["user"][rows, 0] == chunk.users).all()
        # the env's own info of the step is stored with the step's outcome
        np.testing.assert_array_equal(chunk.infos["slate"][:, 1:, 0][valid], chunk.actions[valid])


def test_replaying_a_logged_episode_in_the_env_gives_the_same_trajectory(logged):
    _, chunks = logged
    env = gym.make(ENV_ID, dataset="synthetic")
    for e in (0, 5):
        episode = chunks[0].episode(e)
        obs, info = env.reset(seed=episode["seed"])
        assert info["user"] == episode["user"]
        for t, action in enumerate(episode["actions"]):
            obs, reward, terminated, truncated, info = env.step(int(action))
            np.testing.assert_allclose(obs, episode["observations"][t + 1], atol=1e-5)
            assert reward == pytest.approx(episode["rewards"][t], abs=1e-4)
            assert info["clicked_item"] == episode["infos"]["clicked_item"][t + 1]
        assert (terminated, truncated) == (episode["terminations"][-1], episode["truncations"][-1])


def test_same_seed_same_log_whatever_the_number_of_envs(logged):
    _, chunks = logged
    _, again = logging_run(n_episodes=24, num_envs=8)
    # the policy's draws are seeded per wave, so only episodes whose waves agree are identical:
    # the first wave of both runs starts at episode 0
    for got, expected in zip(episodes_of(again)[:8], episodes_of(chunks)[:8]):
        np.testing.assert_array_equal(got["observations"][0], expected["observations"][0])
        assert got["seed"] == expected["seed"] and got["user"] == expected["user"]
    _, same = logging_run()
    for got, expected in zip(episodes_of(same), episodes_of(chunks)):
        assert_same_episode(got, expected)


def test_minari_round_trip_is_exact(logged):
    env, chunks = logged
    assert write_minari(env, chunks, metadata={"algorithm_name": "test"}) == 40
    dataset = minari.load_dataset("recgym/test-v0")
    expected = episodes_of(chunks)
    assert dataset.total_episodes == 40
    assert dataset.total_steps == sum(len(ep["rewards"]) for ep in expected)
    seeds = [m["seed"] for m in dataset.storage.get_episode_metadata(range(40))]
    assert seeds == [ep["seed"] for ep in expected]
    for got, want in zip(dataset.iterate_episodes(), expected):
        assert_same_episode(
            {"observations": got.observations, "actions": got.actions, "rewards": got.rewards,
             "terminations": got.terminations, "truncations": got.truncations, "infos": got.infos},
            want,
        )
    back = episodes_of(read_minari("recgym/test-v0", chunk_episodes=7))
    assert len(back) == 40
    for got, want in zip(back, expected):
        assert_same_episode(got, want)
        assert (got["seed"], got["user"]) == (want["seed"], want["user"])


def test_minari_dataset_recovers_its_environment(logged):
    from recgym.logged_data import env_spec_with_kwargs

    env, chunks = logged
    spec = env_spec_with_kwargs(ENV_ID, {"dataset": "synthetic"})
    write_minari(env, chunks, env_spec=spec)
    recovered = minari.load_dataset("recgym/test-v0").recover_environment()
    assert recovered.unwrapped.world.dataset == env.unwrapped.world.dataset
    assert recovered.observation_space == env.single_observation_space


def test_parquet_export_has_one_row_per_decision(logged, tmp_path):
    env, chunks = logged
    path = tmp_path / "log.parquet"
    assert export(iter(chunks), str(path), format="parquet", progress=False) == 40
    table = pd.read_parquet(path)
    expected = {}
    first = 0
    for chunk in chunks:
        for key, value in parquet_rows(chunk, first).items():
            expected.setdefault(key, []).append(value)
        first += len(chunk)
    expected = {key: np.concatenate(parts) for key, parts in expected.items()}
    assert list(table.columns) == list(expected)
    assert len(table) == sum(int(c.lengths.sum()) for c in chunks)
    for key, value in expected.items():
        np.testing.assert_array_equal(np.stack(table[key].to_numpy()).reshape(value.shape), value)
    assert table.groupby("episode")["step"].max().add(1).tolist() == [
        len(ep["rewards"]) for ep in episodes_of(chunks)]
    back = episodes_of(read_parquet(path, chunk_episodes=9))
    for got, want in zip(back, episodes_of(chunks)):
        for key in ("actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(got[key], want[key])
        np.testing.assert_array_equal(got["observations"][:-1], want["observations"][:-1])
        for key in ("propensity", "clicked_item", "rating"):
            np.testing.assert_array_equal(got["infos"][key][1:], want["infos"][key][1:])


def test_an_existing_dataset_is_kept_unless_overwrite(logged, tmp_path):
    env, chunks = logged
    write_minari(env, chunks[:1])
    with pytest.raises(FileExistsError, match=r"recgym/test-v0 already exists; pass overwrite=True"):
        write_minari(env, chunks)
    assert minari.load_dataset("recgym/test-v0").total_episodes == 16
    write_minari(env, chunks, overwrite=True)
    assert minari.load_dataset("recgym/test-v0").total_episodes == 40
    path = tmp_path / "log.parquet"
    export(iter(chunks[:1]), str(path), format="parquet", progress=False)
    with pytest.raises(FileExistsError, match="log.parquet already exists"):
        export(iter(chunks), str(path), format="parquet", progress=False)


def interrupted(chunks, after):
    yield from chunks[:after]
    raise KeyboardInterrupt


def test_an_interrupted_export_leaves_nothing_that_loads(logged, minari_home, tmp_path):
    env, chunks = logged
    with pytest.raises(KeyboardInterrupt):
        write_minari(env, interrupted(chunks, 2))
    with pytest.raises(FileNotFoundError):
        minari.load_dataset("recgym/test-v0")
    assert minari.list_local_datasets() == {}
    assert not [p for p in minari_home.rglob("*") if ".partial-" in p.name]
    # an interrupted overwrite keeps the old, complete dataset
    write_minari(env, chunks[:1])
    with pytest.raises(KeyboardInterrupt):
        write_minari(env, interrupted(chunks, 2), overwrite=True)
    assert minari.load_dataset("recgym/test-v0").total_episodes == 16
    path = tmp_path / "log.parquet"
    with pytest.raises(KeyboardInterrupt):
        export(interrupted(chunks, 1), str(path), format="parquet", progress=False)
    assert list(tmp_path.glob("*parquet*")) == []


def test_a_killed_export_leaves_no_dataset_that_loads(minari_home, tmp_path):
    """SIGKILL mid-export (no clean-up runs): the id does not load, nothing half-written is listed."""
    env = dict(os.environ, MINARI_DATASETS_PATH=str(minari_home), RECGYM_CACHE_DIR=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "recgym.logging_policy", "--dataset", "synthetic", "--policy",
               "most-popular", "--episodes", "100000", "--num-envs", "8", "--out", "recgym/killed-v0",
               "--no-progress"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        partial = []
        while time.monotonic() < deadline and process.poll() is None:
            partial = [p for p in minari_home.rglob("main_data.hdf5") if p.stat().st_size > 0]
            if partial:
                break
            time.sleep(0.2)
        assert partial, "the export never started writing"
        time.sleep(1.0)  # let a few chunks land
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    with pytest.raises(FileNotFoundError):
        minari.load_dataset("recgym/killed-v0")
    assert minari.list_local_datasets() == {}
    left = partial[0].parent  # the hidden temporary dataset: not loadable even by path
    assert ".partial-" in str(left)
    with pytest.raises((KeyError, ValueError)):
        minari.MinariDataset(left)


def test_cli_writes_a_parquet_log(tmp_path):
    path = tmp_path / "cli.parquet"
    argv = ["--dataset", "synthetic", "--policy", "most-popular", "--episodes", "10",
            "--num-envs", "4", "--format", "parquet", "--out", str(path), "--no-progress",
            "--env-kwargs", '{"slate_size": 2}']
    assert main(argv) == 0
    table = pd.read_parquet(path)
    assert table["episode"].nunique() == 10
    factors = np.stack(table["position_propensities"].to_numpy())
    np.testing.assert_allclose(factors.prod(axis=1), table["propensity"])
    with pytest.raises(FileExistsError):
        main(argv)
    assert main(argv + ["--overwrite"]) == 0


def test_candidate_mode_logs_the_candidates(tmp_path):
    env, chunks = logging_run(n_episodes=8, num_envs=8, n_candidates=5)
    chunk = chunks[0]
    valid = np.arange(chunk.rewards.shape[1])[None] < chunk.lengths[:, None]
    served = np.take_along_axis(chunk.infos["candidates"][:, :-1], chunk.actions[..., None], axis=2)[..., 0]
    np.testing.assert_array_equal(served[valid], chunk.infos["slate"][:, 1:, 0][valid])


def test_bad_inputs(logged):
    env, _ = logged
    with pytest.raises(ValueError, match="unknown policy 'nope'; choose one of"):
        policy_from_name("nope", env)
    assert {"random", "most-popular", "matrix-factorization", "item-knn"} <= set(policy_names())
    with pytest.raises(TypeError, match="must report propensities"):
        next(collect_episodes(env, policy_from_name("random", env), 4))
    policy = StochasticPolicy(policy_from_name("random", env))
    with pytest.raises(ValueError, match="n_episodes must be a positive integer, got 0"):
        next(collect_episodes(env, policy, 0))
    with pytest.raises(ValueError, match="format must be 'minari' or 'parquet', got 'csv'"):
        export(iter([]), "x", format="csv")
    with pytest.raises(ValueError, match="Malformed dataset ID"):
        write_minari(env, [], dataset_id="not an id!")
    with pytest.raises(ValueError, match="need at least one episode"):
        LoggedEpisodes.from_episodes([])
