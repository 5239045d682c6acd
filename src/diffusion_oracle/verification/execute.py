"""Stage 2 of verify: run the sampler, and record what it asked of the model.

:class:`TracingModel` wraps the model a sampler is handed: it counts calls, keeps every call's
time (and, when asked, the input and output), and notes the precision of what the sampler handed
it: that is the dtype the sampler computes in, which sets the rounding tolerances. A model
without a ``prediction`` attribute is an error (never an eps-model by default).

:func:`run_sampler` runs one sampler once and returns a :class:`Run`: the output as float64, or
the reason it is unusable (an exception, the wrong shape, non-finite values)."""

from __future__ import annotations

import traceback
from dataclasses import dataclass

import numpy as np

from diffusion_oracle.reference.parameterization import model_prediction

from .tolerances import dtype_name, unit_roundoff

__all__ = ["TracingModel", "Run", "run_sampler", "array_dtype", "coarsest"]


def array_dtype(a) -> str | None:
    """The floating dtype name of a NumPy array or torch tensor (None for other values)."""
    dt = getattr(a, "dtype", None)
    if dt is None:
        return None
    try:
        return dtype_name(dt)
    except (TypeError, ValueError):
        return None


def coarsest(*names) -> str | None:
    """The least precise of the dtype names given (None entries ignored)."""
    names = [n for n in names if n is not None]
    if not names:
        return None
    return max(names, key=unit_roundoff)


class TracingModel:
    """Counts and records the calls a sampler makes (see the module docstring).

    ``keep=True`` stores each call's input x as a float64 array (its time is always kept), for
    the first-divergence diagnosis. Attribute access falls through to the wrapped model
    (``target``, ``schedule``)."""

    def __init__(self, model, *, keep: bool = False):
        self.model = model
        self.prediction = model_prediction(model)
        self.keep = keep
        self.calls = 0
        self.times: list = []
        self.inputs: list = []
        self.dtype: str | None = None

    def reset(self):
        self.calls = 0
        self.times, self.inputs = [], []
        self.dtype = None

    def __call__(self, x, t):
        self.calls += 1
        self.dtype = coarsest(self.dtype, array_dtype(x))
        tt = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
        self.times.append(float(np.ravel(tt.astype(np.float64))[0]) if tt.size else np.nan)
        if self.keep:
            self.inputs.append(_f64(x))
        return self.model(x, t)

    def distinct_times(self) -> int:
        """How many different times the model was asked about (12 significant digits)."""
        return len({float(f"{t:.12g}") for t in self.times if np.isfinite(t)})

    def __getattr__(self, name):  # target, schedule, ... of the wrapped model
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)


def _f64(a):
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.array(a, dtype=np.float64, copy=True)


@dataclass
class Run:
    """One run: ``out`` (float64, or None when unusable), ``error`` (why), the coarsest dtype
    it showed (output, model inputs), the calls per sample and the distinct model times."""

    out: np.ndarray | None
    error: str | None
    dtype: str | None = None
    calls: int = 0
    distinct_times: int = 0


def run_sampler(sampler, model, x, grid, rng) -> Run:
    """Run ``sampler(model, x, grid, rng=rng)`` once; never raises for the sampler's faults.
    With a :class:`TracingModel` the run's calls, distinct times and dtype are recorded (samplers
    that need the exact model itself, such as guidance, are run with the bare model)."""
    traced = isinstance(model, TracingModel)
    if traced:
        model.reset()
    shape = tuple(x.shape) if hasattr(x, "shape") else None
    try:
        out = sampler(model, x, grid, rng=rng)
    except Exception as exc:  # the verdict reports it; verify must not crash
        if getattr(exc, "who", None):  # a pipeline driver's error already names who raised
            msg = str(exc)
        else:
            msg = "sampler raised " + traceback.format_exception_only(type(exc), exc)[-1].strip()
        if not traced:
            return Run(None, msg)
        return Run(None, msg, calls=model.calls)
    odt = array_dtype(out)
    if hasattr(out, "detach") and hasattr(out, "cpu"):  # a torch tensor, possibly on a GPU
        out = out.detach().cpu().numpy()
    try:
        out = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError):
        return Run(None, f"sampler returned {type(out).__name__}, not an array")
    if traced:
        run = Run(None, None, coarsest(odt, model.dtype), model.calls, model.distinct_times())
    else:
        run = Run(None, None, odt)
    if out.shape != shape:
        run.error = f"sampler returned shape {out.shape}, expected {shape}"
    elif not np.isfinite(out).all():
        run.error = f"sampler returned {int((~np.isfinite(out)).sum())} non-finite values"
    else:
        run.out = out
    return run
