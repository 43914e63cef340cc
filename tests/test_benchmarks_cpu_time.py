"""benchmarks.cpu_time: the CPU-time A/B measure of one gym.make env."""

import gymnasium as gym
import pytest

from benchmarks.cpu_time import main, steps_per_cpu_second


def test_one_rate_per_round_and_positive():
    rates = steps_per_cpu_second("RecGym-Pipeline-v0", {"action_mode": "absolute"}, n_steps=2500, rounds=2)
    assert len(rates) == 2 and all(r > 0 for r in rates)


def test_cli_prints_the_median(capsys):
    main(["RecGym-Pipeline-v0", "--steps", "2100", "--rounds", "1"])
    assert "steps/CPU-s" in capsys.readouterr().out


def test_unknown_env_id_fails_clearly():
    with pytest.raises(gym.error.Error):
        steps_per_cpu_second("RecGym-NoSuchEnv-v0", {}, n_steps=10, rounds=1)
