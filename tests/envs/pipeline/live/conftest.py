"""Fixtures of the live-pipeline tests: the ml-latest-small source, loaded once."""

from __future__ import annotations

import time

import psutil
import pytest

from recgym.envs.pipeline.live.data import LiveSource, load_source


@pytest.fixture(scope="session")
def source(movielens_home) -> LiveSource:
    """ml-latest-small as the live pipeline streams it (skips where the copies are absent)."""
    return load_source("ml-latest-small")


def descendants() -> set[int]:
    """Live descendants of this process, but Python's shared resource tracker."""
    out = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                out.add(child.pid)
        except psutil.Error:
            pass
    return out


@pytest.fixture
def no_orphans():
    """Fails the test if any process it started is still alive at its end."""
    before = descendants()
    yield
    deadline = time.monotonic() + 5.0
    while descendants() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert descendants() - before == set()


@pytest.fixture(scope="session")
def count_descendants():
    """:func:`descendants`, for tests that count processes themselves."""
    return descendants
