"""Check 3 (**parameterization invariance**) of the conformance catalogue: the exact model given
as epsilon, sample (x_0) and v prediction (Salimans & Ho 2022, v = alpha eps - sigma x_0) gives
the same samples in float64, within what float32 rounding of the scheduler's noise levels
explains over the run (:func:`diffusion_oracle.verification.tolerances.rounding_tolerance`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from diffusion_oracle.validation.diffusers import run_scheduler, scheduler_class

from .common import CheckResult, start_batch

if TYPE_CHECKING:
    pass

__all__ = [
    "check_invariance",
]


def check_invariance(case, model, tgt, n, seed, x_start=None):
    name = "prediction_type invariance (eps, x0, v)"
    N = case.steps[0]
    factory = case.factory()
    if x_start is None:
        t0 = run_scheduler(factory, model, np.zeros((1, tgt.d)) + 0.1, N).t[0]
        x = start_batch(model, t0, n, seed)
    else:
        x = np.asarray(x_start, dtype=np.float64)
    cls = scheduler_class(case.scheduler)
    outs, skipped, broken = {}, [], []
    zero_snr = float(model.schedule.alpha(1.0)) == 0.0
    for pt in ("epsilon", "sample", "v_prediction"):
        if zero_snr and pt == "epsilon":
            skipped.append("epsilon (undefined at zero terminal SNR)")
            continue
        fac = lambda pt=pt: cls(**{**case.kwargs, "prediction_type": pt})  # noqa: E731
        try:
            y = run_scheduler(fac, model, x, N, rng=np.random.default_rng(seed + 2)).sample
        except (NotImplementedError, ValueError) as exc:
            if "must be finite" in str(exc):  # the model was handed a non-finite sample
                broken.append(pt)
                continue
            if "prediction_type" not in str(exc):
                return CheckResult(name, False, None, repr(exc)[:160])
            skipped.append(pt)  # documented as unsupported by the scheduler
            continue
        if np.isfinite(y).all():
            outs[pt] = y
        else:
            broken.append(pt)
    if broken:
        rest = ""
        if len(outs) >= 2:
            first = next(iter(outs.values()))
            dev = max(float(np.abs(v - first).max()) for v in outs.values())
            dev /= max(1.0, float(np.abs(first).max()))
            rest = f"; {' vs '.join(outs)}: max diff/scale {dev:.2e}"
        return CheckResult(
            name, False, math.inf,
            f"prediction_type {', '.join(broken)}: non-finite samples (N = {N}) where "
            f"{', '.join(outs) or 'no type'} stays finite{rest}",
        )  # fmt: skip
    if len(outs) < 2:
        return CheckResult(name, None, None, f"supports only {sorted(outs)}")
    first = next(iter(outs.values()))
    scale = max(1.0, float(np.abs(first).max()))
    dev = max(float(np.abs(v - first).max()) for v in outs.values()) / scale
    # the conversions are exact in float64; what remains is the scheduler's own noise levels,
    # computed in float32 before the upcast: each type converts through them differently, so
    # they may differ by what float32 rounding explains over this run (the rounding model of
    # diffusion_oracle.verification.tolerances, relative to the state), never by more
    from diffusion_oracle.verification.tolerances import rounding_tolerance

    g = case.sampler().make_grid(model.schedule, N)
    # relative to the state (dev is divided by the sample scale): m2 = 1, the unit data moment
    tol = rounding_tolerance("float32", g, m2=1.0, d=tgt.d, calls=2 * N)
    note = f"; {', '.join(skipped)} unsupported" if skipped else ""
    return CheckResult(
        name, dev <= tol, dev, f"max diff/scale {dev:.2e}, tolerance {tol:.1e}{note}"
    )
