"""The spec card in docs/environments/movielens.md stays identical to the code."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from recgym.envs.movielens import MovieLensParams, build_world, make_params, observation_table

PAGE = Path(__file__).resolve().parents[2] / "docs" / "environments" / "movielens.md"


def test_observation_table_matches_the_layout(movielens_home):
    text = PAGE.read_text()
    documented = text.split("<!-- observation-table:start -->")[1].split("<!-- observation-table:end -->")[0]
    assert documented.strip() == observation_table(make_params(build_world("ml-latest-small")))


def test_parameter_table_lists_every_field_with_its_default():
    text = PAGE.read_text()
    for field in dataclasses.fields(MovieLensParams):
        if field.name == "world":
            continue
        default = field.default
        shown = f'`"{default}"`' if isinstance(default, str) else (f"`{default}`" if isinstance(default, bool) else str(default))
        row = re.search(rf"^\| `{field.name}` \|[^|]*\| ([^|]+) \|", text, flags=re.MULTILINE)
        assert row, f"parameter {field.name} missing from the docs table"
        assert row.group(1).strip() == shown, f"{field.name}: docs say {row.group(1).strip()}, code {shown}"


@pytest.mark.parametrize("env_id,steps", [("RecGym-MovieLens-v0", 200), ("RecGym-MovieLensStatic-v0", 100),
                                          ("RecGym-MovieLensFairness-v0", 50)])
def test_documented_time_limits(env_id, steps):
    import gymnasium as gym

    import recgym  # noqa: F401

    env = gym.make(env_id, dataset="synthetic")
    assert env.spec.max_episode_steps == env.unwrapped.params.max_episode_steps == steps
    env.close()
    assert f"| `{env_id}` |" in PAGE.read_text()


def test_docstring_examples_run():
    import doctest

    from recgym.envs.movielens import MovieLensEnv

    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(MovieLensEnv, "MovieLensEnv", globs={}):
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0
