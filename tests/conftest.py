"""Fixtures shared by every test module."""

from __future__ import annotations

import gc

import jax
import pytest


def release_compiled_programs() -> None:
    """Free every compiled XLA program that nothing outside JAX's caches holds.

    XLA's CPU backend maps each loaded program's kernels into memory as their own code and data
    sections, tens of memory mappings per program, and keeps them while JAX's caches hold the
    executable — for the life of the jitted function, which for the functions of ``recgym`` and
    ``agents`` is the life of the process. Linux limits a process to ``vm.max_map_count`` mappings
    (65,530 by default); past it the compiler's next ``mmap`` fails and the process dies with a
    segmentation fault inside ``backend_compile_and_load``. The whole suite in one process
    approaches that limit, so the programs are released between modules; a module that calls a
    function again compiles it again.
    """
    jax.clear_caches()
    gc.collect()


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs_after_each_module():
    """Run :func:`release_compiled_programs` when a test module ends (after its own fixtures)."""
    yield
    release_compiled_programs()
