"""Fixtures of the live-pipeline tests: the ml-latest-small source, loaded once."""

from __future__ import annotations

import pytest

from recgym.envs.pipeline.live.data import LiveSource, load_source


@pytest.fixture(scope="session")
def source(movielens_home) -> LiveSource:
    """ml-latest-small as the live pipeline streams it (skips where the copies are absent)."""
    return load_source("ml-latest-small")
