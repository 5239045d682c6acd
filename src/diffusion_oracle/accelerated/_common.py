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


# ---------------------------------------------------------------------------- scalar arguments
# The torch side's own checks of numeric parameters (constructors, options), with the messages
# of the reference's (reference/_checks.py): the argument, the constraint and the value.


def _r(value) -> str:
    """repr with NumPy/torch scalars shown as Python numbers."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return repr(value.item())
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return repr(value.item())
    return repr(value)


def as_real(value, name: str) -> np.ndarray:
    """A real number or array (NumPy, torch or nested lists) as float64 NumPy; TypeError for
    strings, booleans, complex and object input, naming the type or dtype."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must have a real numeric dtype (integer or floating), got "
                            f"dtype {value.dtype}")  # fmt: skip
        value = value.double().numpy()
    if isinstance(value, (str, bytes)):
        raise TypeError(
            f"{name} must be a real number or array of reals, got {type(value).__name__}"
        )
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as err:  # ragged nested lists
        raise TypeError(f"{name} must be a real number or array, got {type(value).__name__}") \
            from err  # fmt: skip
    if arr.dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must have a real numeric dtype (integer or floating), got dtype {arr.dtype}"
        )
    return arr.astype(np.float64, copy=False)


def finite_real(value, name: str) -> np.ndarray:
    arr = as_real(value, name)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} must be finite, got {_r(arr[bad].ravel()[0])}")
    return arr


def finite_scalar(value, name: str) -> float:
    arr = finite_real(value, name)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
    return float(arr)


def positive_scalar(value, name: str) -> float:
    v = finite_scalar(value, name)
    if v <= 0:
        raise ValueError(f"{name} must be > 0, got {_r(v)}")
    return v


def nonneg_scalar(value, name: str) -> float:
    v = finite_scalar(value, name)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {_r(v)}")
    return v


def int_arg(value, name: str, *, minimum: int = 1) -> int:
    """An integer (not a bool, not a float) >= minimum."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {_r(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {_r(value)}")
    return int(value)


def choice(value, name: str, options) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}, got {_r(value)}")
    return value


def boolean(value, name: str) -> bool:
    """A Python or NumPy bool (not 0/1, not a string), as the reference's ``boolean``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {_r(value)}")
    return bool(value)


def generator_arg(generator, name: str = "generator", *, device=None, numpy_ok: bool = False):
    """None, a ``torch.Generator`` (of ``device``'s type when given: torch draws with a generator
    only on its own device type) or, where ``numpy_ok``, a NumPy Generator (anything with
    ``standard_normal``). TypeError for anything else, ValueError for a generator on the wrong
    device, each naming the argument and the value (never torch's AttributeError or
    RuntimeError from inside the draw)."""
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        if device is not None and generator.device.type != torch.device(device).type:
            raise ValueError(
                f"{name} must be a torch.Generator on the {torch.device(device).type} device "
                f"(where the draws are made), got a Generator on {generator.device}"
            )
        return generator
    if numpy_ok and hasattr(generator, "standard_normal"):
        return generator
    kinds = "None, a torch.Generator or a NumPy Generator" if numpy_ok else \
        "None or a torch.Generator"  # fmt: skip
    raise TypeError(f"{name} must be {kinds}, got {type(generator).__name__} {_r(generator)}")
