"""reference/posterior.py's PosteriorCoefficients beyond tests/test_forward_posterior.py (issue 22,
mutation testing: the survivors of its first mutmut run): ``mean`` and ``sample`` with per-row
coefficients (shape (n,) against x of shape (n, d) and (n, m, d)) against the definition
N(coef_x0 x_0 + coef_xt x_t, var I) with the given noise or the seed's normals, and every
validation message (DESIGN convention 12)."""

import numpy as np
import pytest

from diffusion_oracle.reference import PosteriorCoefficients

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
