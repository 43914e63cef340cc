"""Checks on the test suite itself."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def test_no_test_skips_on_an_import_error_of_this_repository():
    """``pytest.importorskip`` of a recgym / agents / benchmarks module would turn an import error
    (a real bug) into a silent skip; only optional third-party packages may be import-skipped."""
    own = re.compile(r"importorskip\(\s*[\"'](recgym|agents|benchmarks)\b")
    files = [*TESTS.rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in files if own.search(p.read_text())]
    assert not offenders, f"tests import-skipping this repository's modules: {offenders}"
