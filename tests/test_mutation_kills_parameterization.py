"""reference/parameterization.py beyond the scalar round trips of tests/test_parameterization.py
(issue 22, mutation testing: the survivors of its first mutmut run).

- Coefficients per batch row (alpha, sigma, d_alpha, d_sigma of shape (n,) or (n, m) against
  x of shape (n, m, d)), through ``to_x0_eps``, ``from_x0_eps`` and ``convert``, every pair. The
  expected values are the module docstring's definitions evaluated in exact rational arithmetic
  (``fractions.Fraction``) at dyadic inputs, which float64 holds exactly; the tolerance is a few
  units of rounding of the largest term.
- Every validation message (DESIGN convention 12: the argument, the constraint, the value), for
  each public function, and the overflow message naming the divisor of each source.
"""

import itertools
import re
from fractions import Fraction as F

import numpy as np
import pytest

from diffusion_oracle.reference.parameterization import (
    PREDICTIONS,
    convert,
    from_x0_eps,
    model_prediction,
    to_x0_eps,
)

U = 2.0**-52  # float64 unit roundoff (2 u)

# three rows (n), two columns (m), d = 2; all dyadic rationals, exact in float64
ALPHA = [[F(3, 4), F(5, 8)], [F(1, 2), F(7, 8)], [F(1, 8), F(1, 4)]]
SIGMA = [[F(1, 2), F(3, 4)], [F(5, 8), F(1, 4)], [F(1), F(3, 8)]]
D_ALPHA = [[F(-1, 4), F(-3, 8)], [F(-3, 8), F(-1, 8)], [F(-1, 2), F(-5, 4)]]
D_SIGMA = [[F(1, 2), F(1, 4)], [F(1, 4), F(5, 8)], [F(3, 4), F(1, 2)]]
X0 = [[[F(3, 2), F(-1, 4)], [F(5, 4), F(1, 8)]], [[F(-7, 8), F(1, 2)], [F(0), F(-3, 2)]],
      [[F(9, 8), F(-5, 8)], [F(1, 4), F(7, 4)]]]  # fmt: skip
EPS = [[[F(-1, 2), F(3, 4)], [F(1, 8), F(-5, 4)]], [[F(1), F(-3, 8)], [F(7, 8), F(1, 4)]],
       [[F(-3, 4), F(5, 8)], [F(-1, 1), F(1, 2)]]]  # fmt: skip


def _definition(name, x0, eps, a, s, da, ds):
    """The module docstring's definitions, exact."""
    return {"eps": eps, "x0": x0, "v": a * eps - s * x0, "score": -eps / s,
            "velocity": da * x0 + ds * eps}[name]  # fmt: skip


def _exact(name, per_column):
    """(3, 2, 2) float array of the definition, coefficients of row i (and column j when
    ``per_column``, else column 0 for both columns)."""
    out = np.empty((3, 2, 2))
    for i, j, k in itertools.product(range(3), range(2), range(2)):
        c = j if per_column else 0
        coef = (ALPHA[i][c], SIGMA[i][c], D_ALPHA[i][c], D_SIGMA[i][c])
        x0, eps = X0[i][j][k], EPS[i][j][k]
        out[i, j, k] = float(_definition(name, x0, eps, *coef)) if name != "x_t" else float(
            coef[0] * x0 + coef[1] * eps
        )
    return out


def _coefs(per_column):
    pick = (lambda r: [float(v) for v in r]) if per_column else (lambda r: float(r[0]))
    return {key: np.array([pick(r) for r in rows])
            for key, rows in (("alpha", ALPHA), ("sigma", SIGMA), ("d_alpha", D_ALPHA),
                              ("d_sigma", D_SIGMA))}  # fmt: skip


def _close(got, want, scale):
    """Within 16 rounding units of the largest term (every conversion is a few operations on
    O(1) quantities divided by alpha, sigma, alpha^2 + sigma^2 or D, all >= 1/8 here)."""
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 16 * U * scale, np.abs(got - want).max()


@pytest.mark.parametrize("per_column", [False, True], ids=["coef (n,)", "coef (n, m)"])
def test_batched_coefficients_every_pair(per_column):
    kw = _coefs(per_column)
    x0, eps, x_t = _exact("x0", per_column), _exact("eps", per_column), _exact("x_t", per_column)
    scale = 64.0  # |x|, |eps| <= 2 over divisors >= 1/8, squared at most: 2 * 8 * 4
    for name in PREDICTIONS:
        want = _exact(name, per_column)
        _close(from_x0_eps(x0, eps, target=name, **kw), want, scale)
        got_x0, got_eps = to_x0_eps(want, source=name, x_t=x_t, **kw)
        _close(got_x0, x0, scale)
        _close(got_eps, eps, scale)
    for source, target in itertools.product(PREDICTIONS, PREDICTIONS):
        out = convert(_exact(source, per_column), source=source, target=target, x_t=x_t, **kw)
        _close(out, _exact(target, per_column), scale)


def test_velocity_takes_negative_derivatives():
    """Only alpha and sigma must be >= 0; alpha' < 0 on every VP path."""
    x0, eps = np.array([[1.0, -0.5]]), np.array([[0.25, 2.0]])
    u = from_x0_eps(x0, eps, target="velocity", alpha=0.5, sigma=0.75, d_alpha=-0.5, d_sigma=-0.25)
    assert np.array_equal(u, -0.5 * x0 - 0.25 * eps)


def _raises(exc, message, fn, *args, **kw):
    with pytest.raises(exc) as e:
        fn(*args, **kw)
    assert str(e.value) == message, str(e.value)


PRED = "('eps', 'x0', 'v', 'score', 'velocity')"


def test_to_x0_eps_messages():
    x = np.ones((2, 3))
    kw = dict(x_t=x, alpha=0.5, sigma=0.5)
    _raises(ValueError, f"source must be one of {PRED}, got 'foo'", to_x0_eps, x, source="foo",
            **kw)  # fmt: skip
    _raises(ValueError, "x_t must have shape (..., d), got ()", to_x0_eps, 1.0, source="eps",
            x_t=1.0, alpha=0.5, sigma=0.5)  # fmt: skip
    _raises(ValueError, "value must have the shape of x_t (2, 3), got (3,)", to_x0_eps,
            np.ones(3), source="eps", **kw)  # fmt: skip
    with pytest.raises(ValueError, match=r"^value must be finite, got nan"):
        to_x0_eps(np.full((2, 3), np.nan), source="eps", **kw)
    with pytest.raises(ValueError, match=r"^x_t must be finite, got inf"):
        to_x0_eps(x, source="eps", x_t=np.full((2, 3), np.inf), alpha=0.5, sigma=0.5)
    x4 = np.ones((4, 2))
    neg = np.array([0.5, 0.0, -0.25, -0.75])
    for name in ("alpha", "sigma"):
        coefs = {"alpha": 0.5, "sigma": 0.5, name: neg}
        _raises(ValueError, f"{name} must be >= 0, got -0.25", to_x0_eps, x4, source="v",
                x_t=x4, **coefs)  # fmt: skip
        coefs = {"alpha": 0.5, "sigma": 0.5, name: np.ones(3)}
        _raises(ValueError, f"{name} must be a scalar or match the leading shape of x_t (2, 3), "
                "got (3,)", to_x0_eps, x, source="v", x_t=x, **coefs)  # fmt: skip
    for name in ("d_alpha", "d_sigma"):
        derivs = {"d_alpha": 0.5, "d_sigma": 0.5, name: np.ones(3)}
        _raises(ValueError, f"{name} must be a scalar or match the leading shape of x_t (2, 3), "
                "got (3,)", to_x0_eps, x, source="velocity", **kw, **derivs)  # fmt: skip
        derivs = {"d_alpha": 0.5, "d_sigma": 0.5, name: np.nan}
        with pytest.raises(ValueError, match=rf"^{name} must be finite, got nan"):
            to_x0_eps(x, source="velocity", **kw, **derivs)
    _raises(ValueError, "alpha and sigma must not both be 0 (no point of a diffusion path)",
            to_x0_eps, x, source="v", x_t=x, alpha=np.array([0.0, 0.5]),
            sigma=np.array([0.0, 0.5]))  # fmt: skip


def test_to_x0_eps_messages_where_a_source_loses_information():
    x = np.ones((2, 3))
    _raises(ValueError, "cannot recover eps from x0 at sigma = 0 (x_t = alpha x0 carries no "
            "noise)", to_x0_eps, x, source="x0", x_t=x, alpha=1.0, sigma=0.0)  # fmt: skip
    _raises(ValueError, "the score is undefined at sigma = 0", to_x0_eps, x, source="score",
            x_t=x, alpha=1.0, sigma=0.0)  # fmt: skip
    for source in ("eps", "score"):
        _raises(ValueError, f"cannot recover x0 from {source} at alpha = 0 (zero terminal SNR): "
                "the data term is lost; use an x0, v or velocity prediction there", to_x0_eps,
                x, source=source, x_t=x, alpha=0.0, sigma=1.0)  # fmt: skip
    with pytest.raises(TypeError, match=r"^source='velocity' needs d_alpha and d_sigma \(the "
                       r"path's t-derivatives\), got d_alpha=None, d_sigma="):  # fmt: skip
        to_x0_eps(x, source="velocity", x_t=x, alpha=0.5, sigma=0.5, d_sigma=0.5)
    _raises(ValueError, "alpha d_sigma - sigma d_alpha must be nonzero to invert the velocity",
            to_x0_eps, x, source="velocity", x_t=x, alpha=0.5, sigma=0.25, d_alpha=-1.0,
            d_sigma=-0.5)  # fmt: skip


@pytest.mark.parametrize(
    "source, coefs, out, divisor",
    [
        ("eps", dict(alpha=1e-300, sigma=1.0), "x0", "alpha"),
        ("score", dict(alpha=1e-300, sigma=1.0), "x0", "alpha"),
        ("x0", dict(alpha=1.0, sigma=1e-300), "eps", "sigma"),
        ("v", dict(alpha=1e-300, sigma=1e-300), "x0", "alpha^2 + sigma^2"),
        ("velocity", dict(alpha=1.0, sigma=1.0, d_alpha=0.0, d_sigma=1e-300), "x0",
         "alpha d_sigma - sigma d_alpha"),
    ],
)  # fmt: skip
def test_overflow_names_the_divisor(source, coefs, out, divisor):
    x = np.full((2, 3), 1e10)
    a, s = coefs["alpha"], coefs["sigma"]
    msg = (f"{divisor} is too small for x_t and value (largest |x_t| 10000000000.0): the "
           f"recovered {out} overflows float64 (from source={source!r}, it divides by "
           f"{divisor}); alpha = {a!r}, sigma = {s!r} at their smallest")  # fmt: skip
    value = x if source == "score" else -x  # eps = -sigma score: x_t - sigma eps = 2 x_t
    _raises(ValueError, msg, to_x0_eps, value, source=source, x_t=x, **coefs)


@pytest.mark.parametrize(
    "what, value, x_t, coefs",
    [
        ("over", -1e10, 1e10, dict(alpha=1e-300, sigma=1.0)),  # 2e10 / 1e-300
        ("divide", 0.0, 1.0, dict(alpha=1e-200, sigma=1e-200)),  # v: 1e-200 / (1e-400 -> 0)
        ("invalid", 0.0, 0.0, dict(alpha=1e-200, sigma=1e-200)),  # v: 0 / 0
    ],
)
def test_floating_point_errors_become_the_value_error(what, value, x_t, coefs):
    """With NumPy's warnings as errors, an overflow, a division by zero or a 0/0 in the
    solve is reported by the ValueError naming the divisor, not by a RuntimeWarning."""
    import warnings

    source = "eps" if what == "over" else "v"
    x = np.full((1, 2), x_t)
    with warnings.catch_warnings(), np.errstate(over="warn", divide="warn", invalid="warn"):
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"is too small for x_t and value"):
            to_x0_eps(np.full((1, 2), value), source=source, x_t=x, **coefs)


def test_from_x0_eps_messages():
    x0 = np.ones((2, 3))
    kw = dict(alpha=0.5, sigma=0.5)
    _raises(ValueError, f"target must be one of {PRED}, got 'foo'", from_x0_eps, x0, x0,
            target="foo", **kw)  # fmt: skip
    _raises(ValueError, "x0 must have shape (..., d), got ()", from_x0_eps, 1.0, 1.0,
            target="v", **kw)  # fmt: skip
    _raises(ValueError, "eps must have the shape of x0 (2, 3), got (3,)", from_x0_eps, x0,
            np.ones(3), target="v", **kw)  # fmt: skip
    with pytest.raises(ValueError, match=r"^x0 must be finite, got nan"):
        from_x0_eps(np.full((2, 3), np.nan), x0, target="v", **kw)
    with pytest.raises(ValueError, match=r"^eps must be finite, got nan"):
        from_x0_eps(x0, np.full((2, 3), np.nan), target="v", **kw)
    x4 = np.ones((4, 2))
    for name in ("alpha", "sigma"):
        coefs = {**kw, name: np.array([0.5, 0.0, -0.25, -0.75])}
        _raises(ValueError, f"{name} must be >= 0, got -0.25", from_x0_eps, x4, x4, target="v",
                **coefs)  # fmt: skip
        coefs = {**kw, name: np.ones(3)}
        _raises(ValueError, f"{name} must be a scalar or match the leading shape of x0 (2, 3), "
                "got (3,)", from_x0_eps, x0, x0, target="v", **coefs)  # fmt: skip
    for name in ("d_alpha", "d_sigma"):
        derivs = {"d_alpha": 0.5, "d_sigma": 0.5, name: np.ones(3)}
        _raises(ValueError, f"{name} must be a scalar or match the leading shape of x0 (2, 3), "
                "got (3,)", from_x0_eps, x0, x0, target="velocity", **kw, **derivs)  # fmt: skip
    _raises(ValueError, "the score is undefined at sigma = 0", from_x0_eps, x0, x0,
            target="score", alpha=1.0, sigma=np.array([0.5, 0.0]))  # fmt: skip
    with pytest.raises(TypeError, match=r"^target='velocity' needs d_alpha and d_sigma \(the "
                       r"path's t-derivatives\), got d_alpha=.*, d_sigma=None$"):  # fmt: skip
        from_x0_eps(x0, x0, target="velocity", **kw, d_alpha=0.5)


def test_convert_checks_both_names_and_validates_the_identity():
    x = np.array([[0.5, -1.0], [2.0, 0.25]])
    kw = dict(x_t=x, alpha=0.5, sigma=0.75)
    _raises(ValueError, f"target must be one of {PRED}, got 'bar'", convert, x, source="foo",
            target="bar", **kw)  # fmt: skip
    _raises(ValueError, f"source must be one of {PRED}, got 'foo'", convert, x, source="foo",
            target="eps", **kw)  # fmt: skip
    for name in PREDICTIONS:
        out = convert(x, source=name, target=name, **kw, d_alpha=-0.5, d_sigma=0.5)
        assert np.array_equal(out, x) and not np.shares_memory(out, x)
        # the identity needs no division: eps -> eps at alpha = 0, x0 -> x0 at sigma = 0
        assert np.array_equal(convert(x, source=name, target=name, x_t=x, alpha=0.0, sigma=1.0), x)
        assert np.array_equal(convert(x, source=name, target=name, x_t=x, alpha=1.0, sigma=0.0), x)
        # but it is validated as any conversion
        _raises(ValueError, "alpha must be >= 0, got -0.5", convert, x, source=name, target=name,
                x_t=x, alpha=-0.5, sigma=0.5)  # fmt: skip
        _raises(ValueError, "value must have the shape of x_t (2, 2), got (2,)", convert,
                x[0], source=name, target=name, **kw)  # fmt: skip
        for bad in ("d_alpha", "d_sigma"):
            derivs = {"d_alpha": 0.5, "d_sigma": 0.5, bad: np.ones(3)}
            _raises(ValueError, f"{bad} must be a scalar or match the leading shape of x_t "
                    "(2, 2), got (3,)", convert, x, source=name, target=name, **kw,
                    **derivs)  # fmt: skip
    with pytest.raises(ValueError, match=r"^value must be finite, got nan"):
        convert(np.full((2, 2), np.nan), source="v", target="v", **kw)
    # the derivatives reach both halves of a conversion through velocity
    u = convert(x, source="eps", target="velocity", **kw, d_alpha=-0.5, d_sigma=0.25)
    back = convert(u, source="velocity", target="eps", **kw, d_alpha=-0.5, d_sigma=0.25)
    assert np.abs(back - x).max() <= 16 * U * 8


def test_model_prediction():
    class NoAttr:
        pass

    class Has:
        prediction = "v"

    class Bad:
        prediction = "noise"

    assert model_prediction(Has()) == "v"
    _raises(TypeError, f"model must declare what it predicts: set model.prediction to one of "
            f"{PRED} (got a NoAttr without a 'prediction' attribute)", model_prediction, NoAttr())
    _raises(ValueError, f"model.prediction must be one of {PRED}, got 'noise'", model_prediction,
            Bad())  # fmt: skip
    assert re.fullmatch(r"\('eps', 'x0', 'v', 'score', 'velocity'\)", PRED)
