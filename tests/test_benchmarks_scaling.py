"""The scaling script prints one well-formed JSON record per batch size."""

from __future__ import annotations

import json

from benchmarks import scaling


def test_scaling_reports_throughput_per_batch_size(capsys):
    assert scaling.main(["--env", "pipeline", "--envs", "8", "16", "--steps", "2", "--repeats", "1"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["num_envs"] for r in records] == [8, 16]
    assert all(r["env_steps_per_s"] > 0 and r["devices"] == 1 and r["steps"] == 2 for r in records)


def test_scaling_reports_training_throughput(capsys):
    assert scaling.main(["--env", "movielens", "--train", "--dataset", "synthetic", "--envs", "8",
                         "--updates", "1", "--repeats", "1"]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["mode"] == "a2c-training" and record["num_envs"] == 8 and record["env_steps_per_s"] > 0
