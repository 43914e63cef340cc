"""The Python blocks of docs/migration.md run as written, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "migration.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_the_page_has_runnable_blocks():
    assert len(python_blocks(PAGE.read_text())) >= 4


def test_migration_snippets_run(movielens_home):
    namespace: dict = {"__name__": "migration_guide"}
    for number, block in enumerate(python_blocks(PAGE.read_text())):
        exec(compile(block, f"{PAGE.name}[block {number}]", "exec"), namespace)
