"""Checks on the test suite itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def test_no_test_skips_on_an_import_error_of_this_repository():
    """``pytest.importorskip`` of a recgym / agents / benchmarks module would turn an import error
    (a real bug) into a silent skip; only optional third-party packages may be import-skipped."""
    own = re.compile(r"importorskip\(\s*[\"'](recgym|agents|benchmarks)\b")
    files = [*TESTS.rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in files if own.search(p.read_text())]
    assert not offenders, f"tests import-skipping this repository's modules: {offenders}"


def _memory_mappings() -> int:
    with open("/proc/self/maps") as maps:
        return sum(1 for _ in maps)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="counts the process's memory mappings (Linux)")
def test_releasing_compiled_programs_unmaps_them():
    """What ``tests/conftest.py`` relies on to keep the suite under ``vm.max_map_count``: a loaded
    program holds memory mappings while its jitted function lives, and releasing the caches between
    modules unmaps them even though the functions are still alive."""
    import jax
    import jax.numpy as jnp

    from tests.conftest import release_compiled_programs

    def program(constant):
        def f(x):
            for k in range(8):
                x = jnp.tanh(x @ x.T * (constant + k)) + jnp.sin(x)
            return x
        return jax.jit(f)

    release_compiled_programs()
    before = _memory_mappings()
    alive = [program(float(i)) for i in range(30)]
    for f in alive:
        f(jnp.ones((4, 4))).block_until_ready()
    loaded = _memory_mappings()
    assert loaded - before >= 30, f"30 loaded programs added only {loaded - before} mappings"
    release_compiled_programs()
    released = _memory_mappings()
    assert released - before < (loaded - before) / 3, (before, loaded, released)
    assert float(alive[0](jnp.ones((4, 4)))[0, 0]) == float(program(0.0)(jnp.ones((4, 4)))[0, 0])  # still callable
