"""Multi-process training on jax.distributed: two processes on loopback train exactly like one
process with their devices together, write one checkpoint folder, and resume together.

Each run is the real command line (``python -m agents.a2c`` through
:mod:`tests.agents.multihost_worker`) in its own process, with forced CPU devices: 2 processes of
1 device against 1 process of 2 devices, the same global batch and seed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from agents.a2c import A2CConfig, make_train
from agents.checkpoint import Checkpointer, abstract_like
from agents.config import load_config
from agents.logging import read_curve
from agents.movielens import make_env_params
from agents.runner import CHECKPOINT_DIR, CONFIG_FILE
from tests.agents.multihost_worker import INTERRUPTED

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600  # per wave of processes; a hang fails the test instead of the CI job

# 6 updates of 16 environments x 4 steps, a checkpoint every 2 updates
FLAGS = ["--dataset", "synthetic", "--total-steps", str(16 * 4 * 6), "--num-envs", "16", "--rollout-steps", "4",
         "--hidden-sizes", "32", "--embedding-dim", "8", "--updates-per-call", "2", "--checkpoint-every", "2",
         "--eval-episodes", "0", "--no-progress", "--no-tensorboard", "--parallel", "shard_map"]


def free_port() -> int:
    """A loopback port nobody listens on (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(stop_after: int, flags: list[str], devices: int, cache: Path) -> subprocess.Popen:
    # a compilation cache shared by the processes: the resumed run's processes reuse the first
    # wave's compiled programs (a third of the CPU time on 2 cores)
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices),
               JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return subprocess.Popen([sys.executable, "-m", "tests.agents.multihost_worker", str(stop_after), *flags],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(processes: list[subprocess.Popen], timeout_s: float = TIMEOUT_S) -> list[tuple[int, str]]:
    """Wait for every process (within ``timeout_s`` in all); kill and reap any left, always."""
    deadline = time.monotonic() + timeout_s
    results = []
    try:
        for process in processes:
            output, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((process.returncode, output))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
    return results


def multi_process_flags(rank: int, port: int) -> list[str]:
    return ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(rank)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process of 2 devices (whole run) beside 2 processes of 1 device (interrupted after 2 of
    3 blocks, then resumed by 2 new processes)."""
    root = tmp_path_factory.mktemp("multihost")
    single, multi, cache = root / "single", root / "multi", root / "jax-cache"
    port = free_port()
    wave = [launch(0, [*FLAGS, "--num-devices", "2", "--out", str(single)], devices=2, cache=cache)]
    wave += [launch(2, [*FLAGS, "--num-devices", "1", "--out", str(multi), *multi_process_flags(rank, port)],
                    devices=1, cache=cache) for rank in (0, 1)]
    results = finish(wave)
    assert [code for code, _ in results] == [0, INTERRUPTED, INTERRUPTED], results
    interrupted_at = Checkpointer(multi / CHECKPOINT_DIR).latest_step()

    port = free_port()
    results = finish([launch(0, ["--resume", str(multi), *multi_process_flags(rank, port)], devices=1, cache=cache)
                      for rank in (0, 1)])
    assert [code for code, _ in results] == [0, 0], results
    return {"single": single, "multi": multi, "interrupted_at": interrupted_at, "root": root}


@pytest.fixture(scope="module")
def skeleton(runs):
    """The shapes and dtypes of the runs' training state (their configs differ only in devices)."""
    config = load_config(A2CConfig, runs["multi"] / CONFIG_FILE)
    env = make_env_params(config, users="train")
    return abstract_like(make_train(config, env.params, env.core, env.item_features).init(jax.random.key(0)))


def final_state(run: Path, skeleton):
    return Checkpointer(run / CHECKPOINT_DIR).restore({"train_state": skeleton})["train_state"]


def leaves(tree):
    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
            for x in jax.tree_util.tree_leaves(tree)]


def test_two_processes_train_like_one_process_with_their_devices(runs, skeleton):
    single, multi = final_state(runs["single"], skeleton), final_state(runs["multi"], skeleton)
    assert int(multi.learner.update) == int(single.learner.update) == 6
    for a, b in zip(leaves(single.learner), leaves(multi.learner), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    for a, b in zip(leaves(single.actors), leaves(multi.actors), strict=True):
        np.testing.assert_array_equal(b, a)  # the same environments, keys from the global device index


def test_the_interrupted_run_resumed_across_processes(runs):
    assert runs["interrupted_at"] == 4  # 2 blocks of 2 updates, checkpointed, before the stop
    curve = read_curve(runs["multi"])
    np.testing.assert_array_equal(curve["global_step"], 64 * np.arange(1, 7))  # one row per update, no duplicates


def test_one_checkpoint_folder_written_once(runs):
    multi = runs["multi"]
    assert sorted(p.name for p in multi.iterdir()) == [CHECKPOINT_DIR, CONFIG_FILE, "learning_curve.csv"]
    assert Checkpointer(multi / CHECKPOINT_DIR).all_steps() == [4, 6]
    assert sorted(p.parent.name for p in runs["root"].rglob(CHECKPOINT_DIR)) == ["multi", "single"]
    assert load_config(A2CConfig, multi / CONFIG_FILE).process_id == 0  # written by process 0


def test_a_coordinator_nobody_answers_fails_within_the_join_timeout(tmp_path):
    """Process 1 of 2 whose coordinator (process 0) never starts: JAX stops it after the join
    timeout with its DEADLINE_EXCEEDED error, after the run's own message — never a hang."""
    flags = [*FLAGS, "--num-devices", "1", "--out", str(tmp_path / "run"), "--join-timeout-s", "5",
             *multi_process_flags(1, free_port())]
    start = time.monotonic()
    [(code, output)] = finish([launch(0, flags, devices=1, cache=tmp_path / "jax-cache")], timeout_s=240)
    assert code != 0
    assert "process 1 of 2: joining the run at 127.0.0.1:" in output
    assert "DEADLINE_EXCEEDED" in output
    assert time.monotonic() - start < 240
    assert not (tmp_path / "run").exists()  # nothing was written


def test_a_process_that_dies_stops_the_others(tmp_path):
    """Process 1 killed mid-training: process 0 stops with JAX's heartbeat error within the
    heartbeat timeout instead of waiting for it in the next collective."""
    out, cache = tmp_path / "run", tmp_path / "jax-cache"
    long_run = [*FLAGS, "--total-steps", str(16 * 4 * 2000), "--num-devices", "1", "--out", str(out),
                "--heartbeat-timeout-s", "5"]
    port = free_port()
    processes = [launch(0, [*long_run, *multi_process_flags(rank, port)], devices=1, cache=cache) for rank in (0, 1)]
    try:
        deadline = time.monotonic() + TIMEOUT_S
        checkpoints = out / CHECKPOINT_DIR
        while not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
            assert time.monotonic() < deadline, "the run wrote no checkpoint"
            assert all(p.poll() is None for p in processes), "a process ended before training"
            time.sleep(0.5)
        processes[1].kill()
        killed_at = time.monotonic()
        [(code, output)] = finish(processes[:1], timeout_s=120)
        assert code != 0 and time.monotonic() - killed_at < 120
        assert "heartbeat" in output
    finally:
        for process in processes:  # always reaped, whatever failed
            if process.poll() is None:
                process.kill()
            process.wait()
