"""``pyscalar``: the few array-namespace functions a single environment's dynamics need, on
plain Python numbers.

A single gymnasium env steps one environment: its per-env values are scalars and its per-stage
or per-slot values are a handful of numbers. NumPy spends about half a microsecond dispatching
each call on such tiny arrays, while Python arithmetic on floats costs tens of nanoseconds, so
dynamics that keep short axes as Python sequences (see
:func:`recgym.envs.pipeline.model.stages`) run several times faster with ``xp=pyscalar`` than
with ``xp=numpy``. The names mirror their ``numpy`` / ``jax.numpy`` namesakes on scalars, so the
same dynamics code runs unchanged on all three:

* ``exp``, ``log``, ``expm1``, ``floor`` — :mod:`math`'s functions;
* ``minimum``, ``maximum`` — Python's ``min`` and ``max`` of two numbers;
* :func:`where` — a conditional expression;
* ``float32`` / ``int32`` — ``float`` / ``int`` (the namespace's floating and integer types);
* ``inf``.

Values are float64 (the JAX backend computes in float32): the backends agree to float32
rounding, which :func:`recgym.core.testing.assert_backends_agree` allows for.
"""

from __future__ import annotations

import math

inf = math.inf
exp = math.exp
log = math.log
expm1 = math.expm1
floor = math.floor
minimum = min
maximum = max
float32 = float
int32 = int


def where(condition, if_true, if_false):
    """``if_true`` where ``condition`` holds, else ``if_false`` (``numpy.where`` on scalars)."""
    return if_true if condition else if_false
