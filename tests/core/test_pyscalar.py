"""recgym.core.pyscalar mirrors numpy on scalars (the namespace a single env's dynamics run on)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recgym.core import pyscalar

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(finite, finite)
def test_minimum_maximum_match_numpy(a, b):
    assert pyscalar.minimum(a, b) == np.minimum(a, b)
    assert pyscalar.maximum(a, b) == np.maximum(a, b)


@given(st.booleans(), finite, finite)
def test_where_matches_numpy(condition, a, b):
    assert pyscalar.where(condition, a, b) == np.where(condition, a, b)


@given(st.floats(min_value=-50, max_value=50))
def test_elementary_functions_match_numpy(x):
    assert pyscalar.exp(x) == pytest.approx(float(np.exp(x)), rel=1e-12)
    assert pyscalar.expm1(x) == pytest.approx(float(np.expm1(x)), rel=1e-12, abs=1e-300)
    assert pyscalar.floor(x) == np.floor(x)
    if x > 0:
        assert pyscalar.log(x) == pytest.approx(float(np.log(x)), rel=1e-12, abs=1e-15)


def test_types_and_constants():
    assert pyscalar.float32(np.int32(3)) == 3.0 and type(pyscalar.float32(np.int32(3))) is float
    assert pyscalar.int32(np.float32(2.0)) == 2 and type(pyscalar.int32(2.0)) is int
    assert pyscalar.inf == math.inf == np.inf
