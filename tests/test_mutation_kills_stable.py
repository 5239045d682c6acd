"""reference/_stable.py against 400-digit mpmath (issue 22, mutation testing).

Tolerance: each function is at most three correctly rounded (<= 1 ulp) elementary operations
(expm1/exp, log/log1p, a negation) composed with a condition number <= 2 on the branch the module
picks (Maechler 2012), so <= ~6 ulp; 8 * eps64 relative is that with a small margin. A wrong
branch (log1p(-exp(-x)) at x = 1e-10, or log(-expm1(-x)) at x = 40) is off by 1e-8 relative or
more, so the tolerance separates them by seven orders of magnitude.
"""

import math
import warnings

import mpmath as mp
import numpy as np
import pytest

from diffusion_oracle.reference._stable import LOG_2PI, log1mexp, log_sigmoid, softplus

EPS = float(np.finfo(np.float64).eps)
RTOL = 8 * EPS

XS = [1e-300, 1e-200, 1e-30, 1e-10, 1e-5, 0.01, 0.3, 0.69, math.log(2.0), 0.7, 1.0, 2.0, 10.0,
      36.0, 40.0, 100.0, 700.0]  # fmt: skip


def _mp(f, x):
    """f at 400 digits: the plain formulas, whose cancellation (1 - exp(-x) at x = 1e-300, a
    log of 1 + 1e-304) costs at most ~310 of them."""
    with mp.workdps(400):
        return float(f(mp.mpf(x)))


@pytest.mark.parametrize("x", XS)
def test_log1mexp_against_mpmath(x):
    want = _mp(lambda v: mp.log(1 - mp.exp(-v)), x)
    got = float(log1mexp(x))
    assert abs(got - want) <= RTOL * abs(want), (x, got, want)


def test_log1mexp_vectorised_and_endpoints():
    x = np.array(XS)
    want = np.array([_mp(lambda v: mp.log(1 - mp.exp(-v)), v) for v in XS])
    np.testing.assert_allclose(log1mexp(x), want, rtol=RTOL, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # log(0) at x = 0 is the answer, not a warning
        assert log1mexp(0.0) == -np.inf
    assert log1mexp(np.inf) == 0.0
    # exp(-800) underflows: the answer -exp(-800) rounds to -0.0 or a subnormal, never below
    assert -1e-300 < float(log1mexp(800.0)) <= 0.0
    assert log1mexp(np.array([[0.5, 50.0]])).shape == (1, 2)


SP = [-800.0, -700.0, -40.0, -5.0, -1.0, -1e-8, 0.0, 1e-8, 0.5, 1.0, 5.0, 40.0, 700.0, 800.0]


@pytest.mark.parametrize("x", SP)
def test_softplus_and_log_sigmoid_against_mpmath(x):
    sp_want = _mp(lambda v: mp.log(1 + mp.exp(v)), x)
    ls_want = _mp(lambda v: -mp.log(1 + mp.exp(-v)), x)
    sp_got, ls_got = float(softplus(x)), float(log_sigmoid(x))
    # relative to the exact value, plus the spacing of the smallest subnormal: e^-700 is a
    # normal double and must come out to the budget; e^-800 rounds to 0 and must be 0
    tiny = 5e-324
    assert abs(sp_got - float(sp_want)) <= RTOL * abs(float(sp_want)) + tiny, (sp_got, sp_want)
    assert abs(ls_got - float(ls_want)) <= RTOL * abs(float(ls_want)) + tiny, (ls_got, ls_want)


def test_log_2pi_constant():
    with mp.workdps(50):
        want = float(mp.log(2 * mp.pi))
    assert abs(LOG_2PI - want) <= EPS * want


@pytest.mark.parametrize("f, ref", [
    (log1mexp, lambda v: mp.log(1 - mp.exp(-v))),
    (softplus, lambda v: mp.log(1 + mp.exp(v))),
    (log_sigmoid, lambda v: -mp.log(1 + mp.exp(-v))),
])  # fmt: skip
def test_float32_inputs_are_computed_in_float64(f, ref):
    """The module works in float64 whatever the input's dtype: a float32 argument is exact in
    float64, and the result must be the float64 answer for it (float32 arithmetic would be off
    by ~1e-7)."""
    x = np.array([1e-5, 0.3, 2.0, 20.0], dtype=np.float32)
    got = f(x)
    assert got.dtype == np.float64
    want = np.array([_mp(ref, float(v)) for v in x])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)
