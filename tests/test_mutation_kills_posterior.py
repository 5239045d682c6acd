"""reference/posterior.py beyond tests/test_forward_posterior.py (issue 22, mutation testing: the
survivors of its first mutmut run): ``PosteriorCoefficients.mean`` and ``sample`` with per-row
coefficients (shape (n,) against x of shape (n, d) and (n, m, d)) against the definition
N(coef_x0 x_0 + coef_xt x_t, var I) with the given noise or the seed's normals;
``ddpm_posterior`` per step against Ho et al. 2020, eq. 6-7 computed here from the betas (its
n = 1 zeros are +0.0, its clipped log variance, T = 1), without a floating-point warning; every
validation message (DESIGN convention 12)."""

import math
import warnings

import numpy as np
import pytest

from diffusion_oracle.reference import DiscreteSchedule, PosteriorCoefficients, ddpm_posterior

C0, C1, VAR = np.array([0.5, 2.0]), np.array([1.5, -1.0]), np.array([0.25, 4.0])
P = PosteriorCoefficients(C0, C1, VAR, np.log(VAR), np.log(VAR))
X0 = np.array([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]])
XT = np.array([[0.5, 1.0, -1.0], [2.0, -2.0, 4.0]])
Z = np.array([[1.0, -1.0, 2.0], [0.5, 0.0, -0.5]])


def _raises(exc, message, fn, *args, **kw):
    with pytest.raises(exc) as e:
        fn(*args, **kw)
    assert str(e.value) == message, str(e.value)


def test_mean_and_sample_per_row():
    mean = C0[:, None] * X0 + C1[:, None] * XT
    assert np.array_equal(P.mean(X0, XT), mean)
    assert np.array_equal(P.sample(X0, XT, noise=Z), mean + np.sqrt(VAR)[:, None] * Z)
    z5 = np.random.default_rng(5).standard_normal((2, 3))
    assert np.array_equal(P.sample(X0, XT, 5), mean + np.sqrt(VAR)[:, None] * z5)
    x3, y3 = np.stack([X0, -X0], 1), np.stack([XT, 2 * XT], 1)  # (2, 2, 3)
    z3 = np.stack([Z, Z[::-1]], 1)
    m3 = C0[:, None, None] * x3 + C1[:, None, None] * y3
    assert np.array_equal(P.mean(x3, y3), m3)
    assert np.array_equal(P.sample(x3, y3, noise=z3), m3 + np.sqrt(VAR)[:, None, None] * z3)
    s = PosteriorCoefficients(0.5, 1.5, 4.0, np.log(4.0), np.log(4.0))
    assert np.array_equal(s.sample(X0, XT, noise=Z), 0.5 * X0 + 1.5 * XT + 2.0 * Z)


def test_messages():
    with pytest.raises(ValueError, match=r"^x0 must be finite, got nan"):
        P.mean(np.full((2, 3), np.nan), XT)
    with pytest.raises(ValueError, match=r"^x_t must be finite, got inf"):
        P.mean(X0, np.full((2, 3), np.inf))
    _raises(ValueError, "x0 must have the shape of x_t (2, 3), got (3,)", P.mean, X0[0], XT)
    _raises(ValueError, "noise must have the shape of x_t (2, 3), got (3,)", P.sample, X0, XT,
            noise=Z[0])  # fmt: skip
    with pytest.raises(ValueError, match=r"^noise must be finite, got nan"):
        P.sample(X0, XT, noise=np.full((2, 3), np.nan))


def _ddpm(betas, n):
    """Ho et al. 2020, eq. 6-7 from the betas (fsum of log1p, independent of the reference)."""
    la = [math.fsum(math.log1p(-b) for b in betas[:k]) for k in range(len(betas) + 1)]
    prev, cur, b = -math.expm1(la[n - 1]), -math.expm1(la[n]), betas[n - 1]
    return (math.exp(0.5 * la[n - 1]) * b / cur, math.sqrt(1 - b) * prev / cur, prev / cur * b)


def test_ddpm_posterior_per_step():
    sch = DiscreteSchedule.linear(10)
    betas = [float(b) for b in sch.betas]
    n = np.array([1, 2, 10])
    with warnings.catch_warnings(), np.errstate(divide="warn", invalid="warn", over="warn"):
        warnings.simplefilter("error")  # log(beta_tilde_1 = 0) = -inf is no RuntimeWarning
        small = ddpm_posterior(sch, n)
        large = ddpm_posterior(sch, n, variance="fixed_large")
    for field in ("coef_x0", "coef_xt", "var", "log_var", "log_var_clipped"):
        assert isinstance(getattr(small, field), np.ndarray)
    for i, k in enumerate(n):
        c0, c1, bt = _ddpm(betas, int(k))
        assert math.isclose(small.coef_x0[i], c0, rel_tol=1e-12)
        assert math.isclose(small.coef_xt[i], c1, rel_tol=1e-12, abs_tol=0)
        assert math.isclose(small.var[i], bt, rel_tol=1e-12, abs_tol=0)
        assert large.var[i] == betas[k - 1] and large.log_var[i] == math.log(betas[k - 1])
    # n = 1: x_0 is x_1's only source; the zeros are +0.0 ("never -0.0"), the clipped log
    # variance is log beta_tilde_2 (improved-diffusion)
    assert small.var[0] == 0.0 and not np.signbit(small.var[0])
    assert small.coef_xt[0] == 0.0 and not np.signbit(small.coef_xt[0])
    assert small.log_var[0] == -np.inf
    assert math.isclose(small.log_var_clipped[0], math.log(_ddpm(betas, 2)[2]), rel_tol=1e-12)
    assert small.log_var_clipped[1:].tolist() == small.log_var[1:].tolist()
    one = ddpm_posterior(DiscreteSchedule([0.3]), 1)  # T = 1: nothing to clip to
    assert one.log_var == -np.inf and one.log_var_clipped == -np.inf and one.var == 0.0
    _raises(TypeError, "schedule must be a DiscreteSchedule, got str 'x'", ddpm_posterior, "x", 1)
    _raises(ValueError, "n must lie in [1, T=10], got 0", ddpm_posterior, sch,
            np.array([2, 1, 0]))  # fmt: skip


def test_general_posterior_log_variances():
    """For a general pair log_var = log(var) and log_var_clipped equals it (docstring)."""
    from diffusion_oracle.reference import VPLinear, posterior

    p = posterior(VPLinear(), np.array([0.1, 0.4]), np.array([0.3, 0.9]))
    assert np.allclose(p.log_var, np.log(p.var), rtol=1e-13, atol=0)
    assert np.array_equal(p.log_var_clipped, p.log_var)
    q = posterior(VPLinear(), 0.2, 0.5)
    assert isinstance(q.log_var_clipped, float) and q.log_var_clipped == q.log_var
