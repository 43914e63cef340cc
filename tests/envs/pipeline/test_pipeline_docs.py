"""The spec card (PipelineEnv's docstring) runs, and docs/environments/pipeline.md matches the code."""

from __future__ import annotations

import doctest
from pathlib import Path

import gymnasium as gym
import pytest

import recgym  # noqa: F401  (registers the ids)
from recgym.envs.pipeline.core import observation_table, summary_table
from recgym.envs.pipeline.env import PipelineEnv
from recgym.envs.pipeline.wrappers import PipelineOptimum

PAGE = Path(__file__).resolve().parents[3] / "docs" / "environments" / "pipeline.md"


def _between(marker: str) -> str:
    text = PAGE.read_text()
    return text.split(f"<!-- {marker}:start -->")[1].split(f"<!-- {marker}:end -->")[0].strip()


def test_summary_rows_match_the_spaces():
    assert _between("summary-table") == summary_table()
    # generated from the real space objects, not typed in
    assert f"`{gym.make('RecGym-Pipeline-v0').action_space}`" in summary_table()
    assert f"`{gym.make('RecGym-Pipeline-v0', action_mode='absolute').action_space}`" in summary_table()


def test_observation_table_matches_the_space():
    assert _between("observation-table") == observation_table()


def test_spec_card_sections_in_gymnasium_order():
    doc = PipelineEnv.__doc__
    sections = ["Description", "Action Space", "Observation Space", "Rewards", "Starting State", "Episode End",
                "Arguments", "Vectorized", "Version History"]
    positions = [doc.index(f"**{name}.**") for name in sections]
    assert positions == sorted(positions)
    episode_end = doc[doc.index("**Episode End.**"):doc.index("**Arguments.**")]
    assert "Termination" in episode_end and "Truncation" in episode_end


@pytest.mark.parametrize("documented", [PipelineEnv, PipelineOptimum])
def test_docstring_examples_run(documented):
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(documented, documented.__name__, globs={}):
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0


def test_documented_time_limit_is_the_made_envs():
    # No registration carries a time limit (the core truncates itself); the made env's spec reports it.
    assert gym.make("RecGym-Pipeline-v0").spec.max_episode_steps == 100
    assert "truncated after 100 tuning intervals" in summary_table()
