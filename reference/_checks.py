"""Input validation shared by the reference: every error names the argument, the constraint
and the offending value (DESIGN.md convention 12). Never ``assert``."""

from __future__ import annotations

import math
import numbers

import numpy as np


def _r(value) -> str:
    """repr of a value with NumPy scalars shown as Python numbers (np.float64(1.0) -> 1.0)."""
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return repr(value.item())
    return repr(value)


def _show(value) -> str:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return repr(arr.item())
    flat = arr.ravel()
    head = ", ".join(repr(v.item()) for v in flat[:4])
    more = ", ..." if flat.size > 4 else ""
    return f"array(shape={arr.shape}, dtype={arr.dtype}, values=[{head}{more}])"


def as_float(value, name: str) -> np.ndarray:
    """Convert a real numeric array-like to float64; reject complex, bool, object and strings."""
    if isinstance(value, (str, bytes)):
        raise TypeError(
            f"{name} must be a real number or array of reals, got {type(value).__name__}"
        )
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must have a real numeric dtype (integer or floating), got dtype {arr.dtype}"
        )
    return arr.astype(np.float64, copy=False)


def finite(value, name: str) -> np.ndarray:
    """float64 array whose entries are all finite, else ValueError showing the first bad entry."""
    # the common cases first (every model call validates a few of them): a Python or NumPy
    # float, a float64 array
    tv = type(value)
    if tv is float or tv is np.float64:
        if math.isfinite(value):
            return np.asarray(value, dtype=np.float64)
        arr = np.asarray(value, dtype=np.float64)
    elif tv is np.ndarray and value.dtype == np.float64:
        arr = value
        if np.isfinite(arr).all():
            return arr
    else:
        arr = as_float(value, name)
    bad = ~np.isfinite(arr)
    if bad.any():
        first = arr[bad].ravel()[0]
        raise ValueError(f"{name} must be finite, got {_r(first)} (in {_show(arr)})")
    return arr


def in_interval(value, name: str, lo: float, hi: float, *, closed: str = "both") -> np.ndarray:
    """Finite float64 array inside [lo, hi] (``closed`` in 'both', 'left', 'right', 'neither')."""
    arr = finite(value, name)
    lo_ok = arr >= lo if closed in ("both", "left") else arr > lo
    hi_ok = arr <= hi if closed in ("both", "right") else arr < hi
    bad = ~(lo_ok & hi_ok)
    if bad.any():
        left = "[" if closed in ("both", "left") else "("
        right = "]" if closed in ("both", "right") else ")"
        first = arr[bad].ravel()[0]
        raise ValueError(f"{name} must lie in {left}{_r(lo)}, {_r(hi)}{right}, got {_r(first)}")
    return arr


def positive(value, name: str) -> np.ndarray:
    arr = finite(value, name)
    bad = arr <= 0
    if bad.any():
        raise ValueError(f"{name} must be > 0, got {_r(arr[bad].ravel()[0])}")
    return arr


def positive_scalar(value, name: str) -> float:
    arr = positive(value, name)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
    return float(arr)


def finite_scalar(value, name: str) -> float:
    arr = finite(value, name)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
    return float(arr)


def positive_int(value, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {_r(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {_r(value)}")
    return int(value)


def order_choice(value, name: str, options) -> int:
    """An integer (not a bool, not a float) among ``options``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {_r(value)}")
    if value not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}, got {_r(value)}")
    return int(value)


def nonneg_scalar(value, name: str) -> float:
    """A finite scalar >= 0."""
    v = finite_scalar(value, name)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {_r(v)}")
    return v


def boolean(value, name: str) -> bool:
    """A Python or NumPy bool (not 0/1, not a string)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {_r(value)}")
    return bool(value)


def choice(value, name: str, options) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}, got {_r(value)}")
    return value


def scalar_out(x: np.ndarray, like: np.ndarray):
    """Return a Python float for 0-d input, else the array."""
    return float(x) if np.ndim(like) == 0 else x
