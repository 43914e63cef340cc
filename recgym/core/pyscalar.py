"""``pyscalar``: the few array-namespace functions a single environment's dynamics need, on
plain Python numbers.

A single gymnasium env steps one environment: its per-env values are scalars and its per-stage
or per-slot values are a handful of numbers. NumPy spends about half a microsecond dispatching
each call on such tiny arrays, while Python arithmetic on floats costs tens of nanoseconds, so
dynamics that keep short axes as Python sequences (see
:func:`recgym.envs.pipeline.model.stages`) run several times faster with ``xp=pyscalar`` than
with ``xp=numpy``. The functions mirror their ``numpy`` / ``jax.numpy`` namesakes on scalars, so
the same dynamics code runs unchanged on all three; values are float64 (the JAX backend computes in
float32: the two agree to float32 rounding, which :func:`recgym.core.testing.assert_backends_agree`
allows for).
"""

from __future__ import annotations

import math

#: Positive infinity, as ``numpy.inf``.
inf = math.inf
#: ``exp(x)``.
exp = math.exp
#: ``log(x)`` (``x > 0``).
log = math.log
#: ``exp(x) - 1``, accurate near 0.
expm1 = math.expm1
#: ``floor(x)`` as a float, as ``numpy.floor``.
floor = math.floor


#: The smaller of two numbers (``numpy.minimum`` on scalars; Python's ``min``).
minimum = min
#: The larger of two numbers (``numpy.maximum`` on scalars; Python's ``max``).
maximum = max


def where(condition, if_true, if_false):
    """``if_true`` where ``condition`` holds, else ``if_false`` (``numpy.where`` on scalars)."""
    return if_true if condition else if_false


#: ``float``: the scalar namespace's one floating type (``float32(x)`` converts, as in NumPy).
float32 = float
#: ``int``: the scalar namespace's one integer type.
int32 = int
