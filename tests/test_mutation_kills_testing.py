"""assert_log_likelihood_matches' bias bound (diffusion_oracle.testing) at its edges (issue 22,
mutation testing).

With ``repeats`` > 1 the documented bound is |mean - exact| <= atol + rtol |exact| + z s/sqrt(R),
s the sample standard deviation (ddof 1) of the R calls. A stand-in estimator returns
exact + b + c e_r with e = (+1, -1, +1, -1) (mean exact + b, s = c sqrt(4/3)); b at 0.98 and
1.02 times the bound (computed here from those closed forms) must pass and fail. Any other z,
ddof, sqrt(R) or a dropped term moves the bound by more than 2%.
"""

import math

import numpy as np
import pytest

from diffusion_oracle.reference import ring8
from diffusion_oracle.testing import assert_log_likelihood_matches

TARGET = ring8()


def _estimator(b, c):
    calls = []

    def f(x):
        e = 1.0 if len(calls) % 2 == 0 else -1.0
        calls.append(1)
        return TARGET.log_prob(x) + b + c * e

    return f


@pytest.mark.parametrize("z, atol, rtol", [(4.5, 1e-5, 0.0), (2.0, 0.0, 1e-3), (3.0, 1e-3, 1e-3)])
def test_bias_bound_edges(z, atol, rtol):
    x = TARGET.sample(8, np.random.default_rng(0))
    exact = np.abs(TARGET.log_prob(x))
    c, R = 0.01, 4
    se = c * math.sqrt(4.0 / 3.0) / math.sqrt(R)
    bound = atol + rtol * exact.min() + z * se  # the tightest point decides
    kw = dict(x=x, atol=atol, rtol=rtol, repeats=R)
    if z != 4.5:
        kw["z"] = z
    assert_log_likelihood_matches(_estimator(0.98 * bound, c), TARGET, **kw)
    with pytest.raises(AssertionError, match="standard errors"):
        assert_log_likelihood_matches(_estimator(1.02 * bound, c), TARGET, **kw)
    # a negative bias is as bad as a positive one
    with pytest.raises(AssertionError, match="mean of 4 calls"):
        assert_log_likelihood_matches(_estimator(-1.02 * bound, c), TARGET, **kw)


def test_deterministic_bound_edges():
    """repeats = 1: |actual - exact| <= atol + rtol |exact|, no spread term."""
    x = TARGET.sample(8, np.random.default_rng(1))
    exact = np.abs(TARGET.log_prob(x))
    bound = 1e-4 + 1e-3 * exact.min()
    assert_log_likelihood_matches(_estimator(0.98 * bound, 0.0), TARGET, x=x, atol=1e-4, rtol=1e-3)
    with pytest.raises(AssertionError, match="Mismatched points"):
        assert_log_likelihood_matches(
            _estimator(1.02 * bound, 0.0), TARGET, x=x, atol=1e-4, rtol=1e-3
        )


def test_two_repeats_already_use_the_spread():
    """repeats = 2 is a stochastic check too: draws exact + b +- c, s = c sqrt(2), se = c."""
    x = TARGET.sample(8, np.random.default_rng(2))
    bound = 4.5 * 0.01
    assert_log_likelihood_matches(_estimator(0.98 * bound, 0.01), TARGET, x=x, atol=0, repeats=2)
    with pytest.raises(AssertionError, match=r"4.5 standard errors \(mean of 2 calls; target"):
        assert_log_likelihood_matches(
            _estimator(1.02 * bound, 0.01), TARGET, x=x, atol=0, repeats=2
        )


def test_defaults_and_messages():
    """atol = 1e-5, rtol = 0, n = 64 exact draws, repeats = 1 by default; the report names the
    estimator, the tolerances and, only for repeats > 1, the standard errors."""
    assert_log_likelihood_matches(_estimator(0.98e-5, 0.0), TARGET)
    with pytest.raises(AssertionError) as info:
        assert_log_likelihood_matches(_estimator(1.02e-5, 0.0), TARGET)
    msg = str(info.value)
    assert msg.startswith("Not equal to the exact log-density within atol=1e-05, rtol=0 (")
    assert "(log_likelihood; target" in msg and "standard errors" not in msg
    assert "Mismatched points: 64 / 64" in msg
    for name in ("atol", "rtol", "z"):
        with pytest.raises(ValueError, match=f"^{name} must be >= 0, got -1.0"):
            assert_log_likelihood_matches(_estimator(0.0, 0.0), TARGET, **{name: -1.0})
    with pytest.raises(ValueError, match="^repeats must be >= 1"):
        assert_log_likelihood_matches(_estimator(0.0, 0.0), TARGET, repeats=0)
    with pytest.raises(AssertionError, match=r"^log_likelihood returned non-finite values"):
        assert_log_likelihood_matches(lambda x: np.full(len(x), np.inf), TARGET, n=8)
    with pytest.raises(AssertionError, match=r"expected shape \(8,\), got \(3,\)$"):
        assert_log_likelihood_matches(lambda x: np.zeros(3), TARGET, n=8)
    with pytest.raises(AssertionError, match=r"expected shape \(8,\), got \(16,\)$"):
        assert_log_likelihood_matches(lambda x: np.zeros((len(x), 2)), TARGET, n=8)


def test_points_are_draws_of_the_diffused_target_and_the_bound_is_inclusive():
    """Without x: n draws x_t = alpha x0 + sigma eps from the documented seed 0 (x0 first, then
    the noise, from one generator), compared with log p_t at (alpha, sigma)."""
    seen = []

    def exact_t(x):
        seen.append(x)
        return TARGET.log_prob(x, 0.8, 0.6)

    assert_log_likelihood_matches(exact_t, TARGET, n=10, alpha=0.8, sigma=0.6, atol=1e-12)
    g = np.random.default_rng(0)
    x0 = TARGET.sample(10, rng=g)
    np.testing.assert_array_equal(seen[0], 0.8 * x0 + 0.6 * g.standard_normal(x0.shape))
    with pytest.raises(AssertionError):  # p_0 is not p_t
        assert_log_likelihood_matches(TARGET.log_prob, TARGET, n=10, alpha=0.8, sigma=0.6)
    # inclusive: an error exactly equal to atol (the input chosen as the largest error) passes
    x = TARGET.sample(8, np.random.default_rng(5))
    exact = TARGET.log_prob(x)
    err = np.abs((exact + 1e-3) - exact).max()
    assert_log_likelihood_matches(lambda x: TARGET.log_prob(x) + 1e-3, TARGET, x=x, atol=err)
