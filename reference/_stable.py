"""Numerically stable scalar primitives (float64, vectorised)."""

from __future__ import annotations

import numpy as np

LOG_2PI = float(np.log(2.0 * np.pi))


def log1mexp(x):
    """log(1 - exp(-x)) for x >= 0, accurate for all x (Maechler 2012, "Accurately computing
    log(1 - exp(-|a|))"): log(-expm1(-x)) for x <= log 2, log1p(-exp(-x)) above.
    Returns -inf at x = 0 and 0 at x = inf."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        small = x <= np.log(2.0)
        xs = np.where(small, x, 1.0)
        xl = np.where(small, 1.0, x)
        return np.where(small, np.log(-np.expm1(-xs)), np.log1p(-np.exp(-xl)))


def softplus(x):
    """log(1 + exp(x)), stable for all x."""
    return np.logaddexp(0.0, np.asarray(x, dtype=np.float64))


def log_sigmoid(x):
    """log(1 / (1 + exp(-x))) = -softplus(-x)."""
    return -softplus(-np.asarray(x, dtype=np.float64))


def log_ratio(num, den, diff):
    """log(num / den) for num >= 0, den > 0, given diff = num - den formed without cancellation
    (by a difference identity of the caller's closed form): log1p(diff / den) where the ratio is
    within [1/2, 3/2] (there log(num / den) would keep only the digits that rounding the quotient
    left to a result near 0), log(num / den) elsewhere (a result of size >= log(3/2), so the
    quotient's half-ulp rounding is a relative error of a few ulps). -inf where num = 0."""
    num, den, diff = (np.asarray(v, dtype=np.float64) for v in (num, den, diff))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = diff / den
        near = np.abs(r) < 0.5
        return np.where(near, np.log1p(np.where(near, r, 0.0)), np.log(num / den))
