"""Shared helpers of the torch implementation: tensor conversion and argument checks that name
the argument, the constraint and the value (never a bare assert, never a silent NaN)."""

from __future__ import annotations

import math

import numpy as np
import torch

LOG_2PI = math.log(2.0 * math.pi)


def resolve(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) with the defaults: CUDA when available, float64."""
    if device is None:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device must name a torch device, got {device!r}") from err
    dt = torch.float64 if dtype is None else dtype
    if dt not in (torch.float64, torch.float32):
        raise TypeError(f"dtype must be torch.float64 or torch.float32, got {dt!r}")
    return dev, dt


def as_tensor(x, name: str, *, device, dtype) -> torch.Tensor:
    """``x`` as a tensor on (device, dtype); TypeError for non-numeric input, booleans
    included (as the reference: "must have a real numeric dtype")."""
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool:
            raise TypeError(f"{name} must have a real numeric dtype (integer or floating), got "
                            "dtype bool")  # fmt: skip
        if x.is_complex():
            raise TypeError(f"{name} must be real, got dtype {x.dtype}")
        return x.to(device=device, dtype=dtype)
    # everything else as the reference's as_float: strings, booleans, complex and object
    # arrays are TypeErrors naming the dtype (torch would drop an imaginary part silently)
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a real number or array of reals, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError, RuntimeError) as err:  # ragged nested lists, ...
        raise TypeError(f"{name} must be a real number or array, got {type(x).__name__}") from err
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must have a real numeric dtype (integer or floating), got "
                        f"dtype {arr.dtype}")  # fmt: skip
    if not arr.flags.writeable:
        arr = arr.copy()  # torch cannot wrap read-only memory
    return torch.as_tensor(arr, device=device, dtype=dtype)


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """ValueError naming the first non-finite entry."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        raise ValueError(f"{name} must be finite, got {x[bad].reshape(-1)[0].item()!r}")
    return x


def check_interval(x: torch.Tensor, name: str, lo: float, hi: float) -> torch.Tensor:
    """ValueError unless lo <= x <= hi everywhere (and finite)."""
    check_finite(x, name)
    bad = (x < lo) | (x > hi)
    if bool(bad.any()):
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {x[bad].reshape(-1)[0].item()!r}")
    return x


def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-a)) for a >= 0, switching between log(-expm1(-a)) and log1p(-exp(-a)) at
    a = log 2 (Maechler 2012, "Accurately computing log(1 - exp(-|a|))")."""
    return torch.where(a < math.log(2.0), torch.log(-torch.expm1(-a)), torch.log1p(-torch.exp(-a)))
