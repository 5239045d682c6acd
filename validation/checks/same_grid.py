"""Check 2 (**same grid**) of the conformance catalogue: a configuration with a reference
counterpart runs against the reference sampler on the times the scheduler used, from the same
start (and the same noise); the maximum difference relative to the sample scale, within the
rounding model of :mod:`diffusion_oracle.verification.tolerances` (float64 arithmetic, the
scheduler's float32 sigma table where it keeps one) widened by the reference's own local gain
at each start: never a number read off the scheduler's run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from diffusion_oracle.reference.grids import Grid
from diffusion_oracle.validation.diffusers import run_scheduler

from .common import CheckResult, reference_sampler, start_batch

if TYPE_CHECKING:
    pass

__all__ = [
    "check_same_grid",
]


def check_same_grid(case, factory, model, tgt, ref_sch, n, seed):
    """Check 2: same grid as the reference sampler, same start and noise."""
    if case.reference is None:
        return CheckResult("same grid as the reference", None, None, "no counterpart")
    worst, tol_worst, ok = 0.0, 0.0, True
    for N in case.steps:
        r0 = run_scheduler(factory, model, np.zeros((1, tgt.d)) + 0.1, N, rng=seed)
        times = [r0.t[0]] + [b for a, b in zip(r0.t, r0.t[1:], strict=False) if b != a]
        x = start_batch(model, times[0], n, seed)
        run = run_scheduler(factory, model, x, N, rng=np.random.default_rng(seed + 1))
        grid = Grid(ref_sch, np.asarray(times), final_zero=True)
        y = reference_sampler(case.reference)(model, x, grid, rng=np.random.default_rng(seed + 1))
        scale = max(1.0, float(np.abs(y).max()))
        dev = float(np.abs(run.sample - y).max()) / scale
        # the rounding model (diffusion_oracle.verification.tolerances): float64 arithmetic,
        # the scheduler's float32 sigma table where it keeps one, widened by the reference's
        # own local gain at each start (a finite difference of the oracle's map): never a
        # number read off the scheduler's run
        from diffusion_oracle.verification.evidence import data_m2
        from diffusion_oracle.verification.tolerances import rounding_tolerance

        tdt = "float32" if hasattr(factory(), "sigmas") else None
        tol_abs = rounding_tolerance("float64", grid, m2=data_m2(tgt), d=tgt.d,
                                     calls=len(r0.t), table_dtype=tdt)  # fmt: skip
        v = np.random.default_rng(seed + 3).standard_normal(x.shape)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        h = 1e-6 * max(1.0, float(np.abs(x).max()))
        ref = reference_sampler(case.reference)
        moved = ref(model, x + h * v, grid, rng=np.random.default_rng(seed + 1))
        gain = np.maximum(1.0, np.linalg.norm(moved - y, axis=1) / h)
        excess = np.abs(run.sample - y).max(axis=1) / (tol_abs * gain)
        tol = tol_abs * float(gain[int(np.argmax(excess))]) / scale
        worst, tol_worst = max(worst, dev), max(tol_worst, tol)
        ok = ok and bool(np.all(excess <= 1.0))
    return CheckResult(
        f"same grid as the reference ({case.reference})",
        ok,
        worst,
        f"max diff/scale {worst:.2e}, tolerance {tol_worst:.1e}",
        {"tolerance": tol_worst},
    )
