"""Checks 1 (**invariants**) and 6 (**finite**) of the conformance catalogue, on the algorithm
driver (:func:`validation.diffusers.run_scheduler`, float64 upcast).

1. timesteps finite, within the training range, non-increasing; model calls per run equal to
   ``len(scheduler.timesteps)``; the run ends at sigma = 0 (the data) where the scheduler says
   so; and each step lands on the time the next call evaluates, measured with a point-mass
   model (:class:`_PointMass`), for which every consistent deterministic step maps
   x_t = sigma_t eps to sigma_s eps exactly (DDIM, Song et al. 2021a, eq. 12 with x_0 = 0).
6. no exception and a finite output for every step count 1..12 and the case's own (every
   residue modulo the solver orders).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np

from diffusion_oracle.validation.diffusers import run_scheduler

from .common import CheckResult

if TYPE_CHECKING:
    pass

__all__ = [
    "LANDING_TOL",
    "check_invariants",
    "landing_error",
]


# a consistent step lands on the next call's sigma up to float64 round-off; 1e-5 leaves room
# for the float32 rounding of the schedulers' sigmas (6e-8) amplified by a long step's
# cancellation (x + (sigma' - sigma) d with sigma'/sigma ~ 1e-2), and is far below the smallest
# real offset, one training step in 1000 (~1e-3)
LANDING_TOL = 1e-5


class _PointMass:
    """The exact model of a point mass at 0: x0 = 0, eps = x/sigma. Every consistent
    deterministic step maps x_t = sigma_t eps to sigma_s eps exactly, so the ratio of |x| between
    consecutive calls measures where each step landed."""

    prediction = "x0"

    def __init__(self, schedule):
        self.schedule = schedule

    def __call__(self, x, t):
        return np.zeros_like(x)


def landing_error(factory, schedule, d, N):
    """max_i | |x_{i+1}|/|x_i| / (sigma_{i+1}/sigma_i) - 1 | over consecutive model calls."""
    r = run_scheduler(factory, _PointMass(schedule), np.full((1, d), 0.5), N, rng=0)
    nrm, sig = np.asarray(r.norms), np.asarray(r.sigma)
    if len(nrm) < 2:
        return 0.0
    ratio = (nrm[1:] / nrm[:-1]) / (sig[1:] / sig[:-1])
    return float(np.abs(ratio - 1.0).max())


def check_invariants(case, factory, model, tgt, frame, ref_sch, seed, checks):
    out = []
    bad, detail = [], ""
    counts = sorted(set(range(1, 13)) | set(case.steps))
    for N in counts:
        try:
            r = run_scheduler(factory, model, np.zeros((2, tgt.d)) + 0.1, N, rng=seed)
        except Exception as exc:  # noqa: BLE001 - any failure is a finding
            bad.append(N)
            detail = detail or f"N={N}: {type(exc).__name__}: {exc}"[:160]
            continue
        if not np.isfinite(r.sample).all():
            bad.append(N)
            detail = detail or f"N={N}: non-finite output"
    if bad:
        detail = f"{len(bad)} of {len(counts)} step counts fail, first {detail}"
    if 6 in checks:
        out.append(
            CheckResult(
                "finite (N = 1..12 and the tested counts)",
                not bad,
                float(len(bad)),
                detail or f"{len(counts)} step counts",
            )
        )
    if 1 not in checks:
        return out
    inv_ok, inv_detail, inv_val = True, "", 0.0
    for N in case.steps:
        sched = factory()
        sched.set_timesteps(N)
        ts = np.asarray([float(k) for k in sched.timesteps])
        r = run_scheduler(factory, model, np.zeros((1, tgt.d)) + 0.1, N, rng=seed)
        problems, notes = [], []
        if not np.isfinite(ts).all():
            problems.append("non-finite timestep")
        if frame in ("vp", "sigma") and ((ts < 0) | (ts > ref_sch.T - 1 + 1e-9)).any():
            problems.append(f"timestep outside [0, {ref_sch.T - 1}]: {ts.min():g}..{ts.max():g}")
        if (np.diff(ts) > 0).any():
            if "Ancestral" in case.scheduler:  # the second stage sits below the next step's sigma
                notes.append("timesteps re-increase between stages (ancestral re-noising)")
            else:
                problems.append("timesteps increase")
        if r.calls != len(ts):
            problems.append(f"{r.calls} model calls for {len(ts)} timesteps")
        sig = getattr(sched, "sigmas", None)
        if sig is not None:
            last = float(np.asarray(sig)[-1])
            documented_zero = sched.config.get("final_sigmas_type", "zero") == "zero"
            if last != 0.0 and documented_zero and "final_sigmas_type" in sched.config:
                problems.append(f"final sigma {last:.3g} with final_sigmas_type='zero'")
            elif last != 0.0:
                notes.append(f"ends at sigma {last:.3g}, not at the data (no zero option)")
        if problems:
            inv_ok, inv_detail = False, f"N={N}: " + "; ".join(problems)
        elif notes:
            inv_detail = "; ".join(notes)
        inv_val = max(inv_val, float(r.calls) / N)
    if not case.stochastic:
        # the landing check over every step count of check 6 (residues of T modulo N matter)
        land = {}
        for N in counts:
            with contextlib.suppress(Exception):  # failures are check 6's finding
                land[N] = landing_error(factory, ref_sch, tgt.d, N)
        off = sorted(N for N, v in land.items() if v > LANDING_TOL)
        worst = max(land, key=land.get) if land else None
        if off:
            inv_ok = False
            inv_detail = (inv_detail + "; " if inv_detail else "") + (
                f"steps land off the next call's sigma at N = {off} (relative up to "
                f"{land[worst]:.1e} at N = {worst}): the previous timestep is not the next "
                "scheduled one"
            )
        elif worst is not None:
            inv_detail = (inv_detail + "; " if inv_detail else "") + (
                f"landing error <= {land[worst]:.1e} over N = 1..12 and {list(case.steps)}"
            )
    out.append(
        CheckResult(
            "invariants (timesteps, calls, final sigma)",
            inv_ok,
            inv_val,
            (inv_detail + "; " if inv_detail else "") + f"model calls per step {inv_val:.3g}",
        )
    )
    return out
