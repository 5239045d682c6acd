"""Exact conversions among the five predictions of a diffusion model, for every Gaussian path
x_t = alpha x_0 + sigma eps:

    eps,  x0,  v = alpha eps - sigma x0  (Salimans & Ho 2022, arXiv:2202.00512, Sec. 4),
    score = grad log q(x_t) = -E[eps | x_t] / sigma  (Song et al. 2021, eq. 11 ff.; Vincent 2011),
    velocity u = alpha' x0 + sigma' eps  (Lipman et al. 2023, eq. 9; Albergo et al. 2023).

Every conversion goes through the pair (x0, eps), solving the 2x2 linear system that relates the
source prediction and x_t to it; no division by alpha or sigma happens unless the source itself
forces it (eps or score -> x0 needs alpha > 0; x0 -> eps and score need sigma > 0), and that
case raises a ValueError instead of returning inf or NaN.
"""

from __future__ import annotations

import numpy as np

from ._checks import _r, finite

__all__ = ["PREDICTIONS", "convert", "to_x0_eps", "from_x0_eps", "model_prediction"]

PREDICTIONS = ("eps", "x0", "v", "score", "velocity")


def _coef(c, name, x, *, nonneg=False, like="x_t"):
    c = finite(c, name)
    if c.ndim == 0:  # a scalar (the common case)
        if nonneg and float(c) < 0:
            raise ValueError(f"{name} must be >= 0, got {_r(c)}")
        return c
    if c.ndim and c.shape != x.shape[: c.ndim]:
        raise ValueError(
            f"{name} must be a scalar or match the leading shape of {like} {x.shape}, got "
            f"{c.shape}"
        )
    if nonneg and (c < 0).any():
        raise ValueError(f"{name} must be >= 0, got {_r(c[c < 0].ravel()[0])}")
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim)) if c.ndim else c


def _derivs(d_alpha, d_sigma, x, like):
    """The path's t-derivatives, validated when given (None stays None)."""
    return tuple(None if v is None else _coef(v, name, x, like=like)
                 for name, v in (("d_alpha", d_alpha), ("d_sigma", d_sigma)))  # fmt: skip


def model_prediction(model) -> str:
    """What ``model(x, t)`` returns: its ``prediction`` attribute, one of :data:`PREDICTIONS`.

    A model without the attribute is an error, not an eps-model by default: reading an x0 or v
    network's output as eps gives a wrong sampler with no other symptom.

    Example: ``model_prediction(ExactModel(ring8(), VPLinear(), prediction="v"))`` is ``"v"``."""
    if not hasattr(model, "prediction"):
        raise TypeError(
            f"model must declare what it predicts: set model.prediction to one of {PREDICTIONS} "
            f"(got a {type(model).__name__} without a 'prediction' attribute)"
        )
    pred = model.prediction
    _check_name(pred, "model.prediction")
    return pred


def _check_name(name, arg):
    if name not in PREDICTIONS:
        raise ValueError(f"{arg} must be one of {PREDICTIONS}, got {_r(name)}")


def to_x0_eps(value, *, source, x_t, alpha, sigma, d_alpha=None, d_sigma=None):
    """(x0, eps) from a prediction of type ``source`` at x_t:

    eps:      x0 = (x_t - sigma eps) / alpha                      (needs alpha > 0)
    x0:       eps = (x_t - alpha x0) / sigma                      (needs sigma > 0)
    v:        x0 = (alpha x_t - sigma v)/N, eps = (sigma x_t + alpha v)/N, N = alpha^2 + sigma^2
    score:    eps = -sigma score, then as eps                     (needs alpha > 0)
    velocity: x0 = (sigma' x_t - sigma u)/D, eps = (alpha u - alpha' x_t)/D,
              D = alpha sigma' - sigma alpha'

    ``alpha``, ``sigma`` (and ``d_alpha``, ``d_sigma`` for velocity) are scalars or arrays over the
    leading axes of ``x_t``. Returns two arrays shaped like ``x_t``.
    """
    _check_name(source, "source")
    x = finite(x_t, "x_t")
    if x.ndim < 1:
        raise ValueError(f"x_t must have shape (..., d), got {x.shape}")
    val = finite(value, "value")
    if val.shape != x.shape:
        raise ValueError(f"value must have the shape of x_t {x.shape}, got {val.shape}")
    a = _coef(alpha, "alpha", x, nonneg=True)
    s = _coef(sigma, "sigma", x, nonneg=True)
    d_alpha, d_sigma = _derivs(d_alpha, d_sigma, x, "x_t")
    if ((a == 0) & (s == 0)).any():
        raise ValueError("alpha and sigma must not both be 0 (no point of a diffusion path)")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        x0, eps = _solve(source, x, val, a, s, d_alpha, d_sigma)
    for name, out in (("x0", x0), ("eps", eps)):
        if not np.isfinite(out).all():
            divisor = {"x0": "sigma", "eps": "alpha", "score": "alpha", "v": "alpha^2 + sigma^2",
                       "velocity": "alpha d_sigma - sigma d_alpha"}[source]  # fmt: skip
            raise ValueError(
                f"{divisor} is too small for x_t and value (largest |x_t| "
                f"{_r(np.abs(x).max())}): the recovered {name} overflows float64 (from "
                f"source={source!r}, it divides by {divisor}); alpha = {_r(np.min(a))}, "
                f"sigma = {_r(np.min(s))} at their smallest"
            )
    return x0, eps


def _solve(source, x, val, a, s, d_alpha, d_sigma):
    if source == "x0":
        if (s == 0).any():
            raise ValueError(
                "cannot recover eps from x0 at sigma = 0 (x_t = alpha x0 carries no noise)"
            )
        return val, (x - a * val) / s
    if source in ("eps", "score"):
        eps = val if source == "eps" else -s * val
        if source == "score" and (s == 0).any():
            raise ValueError("the score is undefined at sigma = 0")
        if (a == 0).any():
            raise ValueError(
                f"cannot recover x0 from {source} at alpha = 0 (zero terminal SNR): the data term "
                "is lost; use an x0, v or velocity prediction there"
            )
        return (x - s * eps) / a, eps
    if source == "v":
        n = a * a + s * s
        return (a * x - s * val) / n, (s * x + a * val) / n
    # velocity
    if d_alpha is None or d_sigma is None:
        raise TypeError("source='velocity' needs d_alpha and d_sigma (the path's t-derivatives), "
                        f"got d_alpha={d_alpha!r}, d_sigma={d_sigma!r}")  # fmt: skip
    da, ds = d_alpha, d_sigma
    D = a * ds - s * da
    if (D == 0).any():
        raise ValueError("alpha d_sigma - sigma d_alpha must be nonzero to invert the velocity")
    return (ds * x - s * val) / D, (a * val - da * x) / D


def from_x0_eps(x0, eps, *, target, alpha, sigma, d_alpha=None, d_sigma=None):
    """The prediction ``target`` from (x0, eps): x0, eps, v = alpha eps - sigma x0,
    score = -eps/sigma (needs sigma > 0), velocity = alpha' x0 + sigma' eps."""
    _check_name(target, "target")
    x0, eps = finite(x0, "x0"), finite(eps, "eps")
    if x0.ndim < 1:
        raise ValueError(f"x0 must have shape (..., d), got {x0.shape}")
    if eps.shape != x0.shape:
        raise ValueError(f"eps must have the shape of x0 {x0.shape}, got {eps.shape}")
    a = _coef(alpha, "alpha", x0, nonneg=True, like="x0")
    s = _coef(sigma, "sigma", x0, nonneg=True, like="x0")
    d_alpha, d_sigma = _derivs(d_alpha, d_sigma, x0, "x0")
    if target == "x0":
        return x0
    if target == "eps":
        return eps
    if target == "v":
        return a * eps - s * x0
    if target == "score":
        if (s == 0).any():
            raise ValueError("the score is undefined at sigma = 0")
        return -eps / s
    if d_alpha is None or d_sigma is None:
        raise TypeError("target='velocity' needs d_alpha and d_sigma (the path's t-derivatives), "
                        f"got d_alpha={d_alpha!r}, d_sigma={d_sigma!r}")  # fmt: skip
    return d_alpha * x0 + d_sigma * eps


def convert(value, *, source, target, x_t, alpha, sigma, d_alpha=None, d_sigma=None):
    """Convert a prediction between parameterizations (see module docstring for the equations).

    Example::

        x0 = convert(eps_hat, source="eps", target="x0", x_t=x, alpha=a, sigma=s)
    """
    _check_name(target, "target")
    _check_name(source, "source")
    if source == target:  # validated as any conversion, then returned as given
        to_x0_eps(value, source="v", x_t=x_t, alpha=alpha, sigma=sigma, d_alpha=d_alpha,
                  d_sigma=d_sigma)  # fmt: skip
        return finite(value, "value").copy()
    x0, eps = to_x0_eps(
        value, source=source, x_t=x_t, alpha=alpha, sigma=sigma, d_alpha=d_alpha, d_sigma=d_sigma
    )
    return from_x0_eps(
        x0, eps, target=target, alpha=alpha, sigma=sigma, d_alpha=d_alpha, d_sigma=d_sigma
    )
