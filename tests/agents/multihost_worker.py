"""Run by test_multihost.py: one process of an A2C command-line run, optionally interrupted.

``python -m tests.agents.multihost_worker STOP_AFTER_BLOCKS A2C_FLAGS...`` runs
``agents.a2c.main(A2C_FLAGS)``; with ``STOP_AFTER_BLOCKS > 0`` the run stops after that many
blocks of updates (and their checkpoints), as an interrupted run does, and the process exits with
:data:`INTERRUPTED`.
"""

from __future__ import annotations

import sys

from agents import a2c

INTERRUPTED = 3
"""Exit status of a run stopped by ``STOP_AFTER_BLOCKS``."""


def main(argv: list[str]) -> int:
    stop_after = int(argv[0])
    if stop_after:
        original = a2c.A2CTraining.run
        calls = {"n": 0}

        def interrupted_run(self, state, num_updates):
            calls["n"] += 1
            if calls["n"] > stop_after:
                raise KeyboardInterrupt
            return original(self, state, num_updates)

        a2c.A2CTraining.run = interrupted_run
    try:
        return a2c.main(argv[1:])
    except KeyboardInterrupt:
        return INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
