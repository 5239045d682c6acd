"""The inversion checks of the conformance catalogue (``Case.inverse``: DDIMInverseScheduler):
increasing timesteps and each step starting where the previous one landed (check 1), the
reference ``ddim_invert(model_time="next")`` on the same grid (2), parameterization invariance
(3), tier 1 against the exact law at the last timestep and the round trip through the forward
scheduler (4, :func:`check_inverse_order`). DDIM inversion: Song et al. 2021a
(arXiv:2010.02502), Sec. 4.3; Dhariwal & Nichol 2021, App. F.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from diffusion_oracle.reference.grids import Grid
from diffusion_oracle.reference.model import ExactModel
from diffusion_oracle.reference.targets import get_target
from diffusion_oracle.validation.diffusers import run_scheduler, scheduler_class, training_schedule

from .common import CheckResult
from .invariance import check_invariance
from .invariants import LANDING_TOL
from .order import ORDER_STEPS, refined_case

if TYPE_CHECKING:
    from diffusion_oracle.validation.conformance import Case

__all__ = [
    "check_inverse",
    "check_inverse_order",
]


# ------------------------------------------------------------------------------ inversion
class _ZeroEps:
    """A probe model predicting eps = 0: a DDIM-type step from level (a, s) to (a', s') then
    maps x to (a'/a) x, so the ratio of consecutive samples reads the level each step starts
    from."""

    prediction = "eps"

    def __init__(self, schedule):
        self.schedule = schedule

    def __call__(self, x, t):
        return np.zeros_like(x)


def _inverse_grid(ref_sch, times):
    """The reference grid of an inversion whose destinations are ``times`` (increasing), walked
    from its last node (the data: DDIMInverseScheduler's set_alpha_to_one start) to its first."""
    return Grid(ref_sch, np.asarray(times[::-1], dtype=np.float64), final_zero=True)


def check_inverse(case, factory, model, tgt, ref_sch, n, seed, checks):
    """Checks 1-7 of an inversion scheduler (data -> noise; DDIMInverseScheduler steps from
    timestep k - T//N to k calling the model at k, starting at the data, alpha = 1)."""
    out = []
    counts = sorted(set(range(1, 13)) | set(case.steps))
    x_data = tgt.sample(2, rng=np.random.default_rng(seed))
    bad, detail = [], ""
    for N in counts:
        try:
            r = run_scheduler(factory, model, x_data, N, rng=seed)
            if not np.isfinite(r.sample).all():
                raise FloatingPointError("non-finite output")
        except Exception as exc:  # noqa: BLE001 - any failure is a finding
            bad.append(N)
            detail = detail or f"N={N}: {type(exc).__name__}: {exc}"[:160]
    if 6 in checks:
        out.append(CheckResult(
            "finite (N = 1..12 and the tested counts)", not bad, float(len(bad)),
            (f"{len(bad)} of {len(counts)} step counts fail, first {detail}" if bad
             else f"{len(counts)} step counts"),
        ))  # fmt: skip
    if 1 in checks:
        out.append(_inverse_invariants(case, factory, tgt, ref_sch, counts))
    if 2 in checks:
        out.append(_inverse_same_grid(case, factory, model, tgt, ref_sch, n, seed))
    if 3 in checks:
        out.append(check_invariance(case, model, tgt, n, seed, x_start=tgt.sample(
            n, rng=np.random.default_rng(seed))))  # fmt: skip
    if 7 in checks:
        out.append(CheckResult("forward process (add_noise, scale_model_input)", None, None,
                               "no add_noise"))  # fmt: skip
    if 4 in checks:
        out.append(check_inverse_order(case, target=tgt))
    if 5 in checks:
        out.append(CheckResult(
            "tier 3 on narrow modes", None, None,
            "inversion: its output law near t = 1 is nearly Gaussian and does not resolve "
            "narrow modes; check 4's round trip is its pathwise evidence",
        ))  # fmt: skip
    return out


def _inverse_invariants(case, factory, tgt, ref_sch, counts):
    """Check 1 for an inversion: timesteps finite, in range, strictly increasing, one call per
    step, and each step starting from the level the previous one landed on (the first from the
    data), read with the eps = 0 probe: step i maps x to (a(k_i) / a_start_i) x."""
    problems, worst, off = [], 0.0, []
    for N in counts:
        sched = factory()
        sched.set_timesteps(N)
        ts = np.asarray([float(k) for k in sched.timesteps])
        if not np.isfinite(ts).all() or (ts < 0).any() or (ts > ref_sch.T - 1).any():
            problems.append(f"N={N}: timesteps outside [0, {ref_sch.T - 1}]")
        if (np.diff(ts) <= 0).any():
            problems.append(f"N={N}: timesteps not strictly increasing")
        r = run_scheduler(factory, _ZeroEps(ref_sch), np.ones((1, tgt.d)), N, rng=0)
        if r.calls != len(ts):
            problems.append(f"N={N}: {r.calls} model calls for {len(ts)} timesteps")
        norms = np.asarray(r.norms + [float(np.linalg.norm(r.sample))])
        a_dest = np.asarray(r.alpha)  # the documented destination: the called timestep
        a_start = a_dest / (norms[1:] / norms[:-1])
        a_prev = np.concatenate([[1.0], a_dest[:-1]])  # the data, then the last landing
        err = float(np.abs(a_start / a_prev - 1.0).max())
        worst = max(worst, err)
        if err > LANDING_TOL:
            off.append(N)
    if off:
        problems.append(
            f"steps start off the level the previous step landed on at N = {off} (relative "
            f"alpha up to {worst:.1e})"
        )
    detail = "; ".join(problems) if problems else (
        f"increasing timesteps, one call per step, start level = previous landing to "
        f"{worst:.1e} over N = 1..12 and {list(case.steps)}"
    )  # fmt: skip
    return CheckResult("invariants (timesteps, calls, final sigma)", not problems, worst, detail)


def _inverse_same_grid(case, factory, model, tgt, ref_sch, n, seed):
    """Check 2 for an inversion: against the reference ``ddim_invert(model_time="next")`` on the
    scheduler's destinations, from the same data; tolerance as check 2."""
    from diffusion_oracle.reference.samplers import ddim_invert

    worst, tol_worst, ok = 0.0, 0.0, True
    x = tgt.sample(n, rng=np.random.default_rng(seed))
    for N in case.steps:
        run = run_scheduler(factory, model, x, N)
        f32 = run_scheduler(factory, model, x, N, upcast=False)
        y = ddim_invert(model, x, _inverse_grid(ref_sch, run.t), model_time="next")
        scale = max(1.0, float(np.abs(y).max()))
        dev = float(np.abs(run.sample - y).max()) / scale
        tol = max(1e-9, 10.0 * float(np.abs(run.sample - f32.sample).max()) / scale)
        worst, tol_worst, ok = max(worst, dev), max(tol_worst, tol), ok and dev <= tol
    return CheckResult(
        f"same grid as the reference ({case.reference})", ok, worst,
        f"max diff/scale {worst:.2e}, tolerance {tol_worst:.1e} (ddim_invert, model at the "
        "destination time)", {"tolerance": tol_worst},
    )  # fmt: skip


def check_inverse_order(case: Case, target="ring8", steps=ORDER_STEPS) -> CheckResult:
    """Check 4 for an inversion: tier 1 on the target's moment-matched Gaussian. The inversion
    is affine there; its output law from the data law N(m, C) against the exact law at its last
    destination t_N, N(alpha m, alpha^2 C + sigma^2 I) (the exact flow map carries p_0 to p_t),
    W2 at each N and the least-squares slope over the last three, judged against the declared
    order in the harness's window (the configuration refined, :func:`refined_case`). Also
    reported: the round trip, the inversion followed by the forward scheduler (DDIMScheduler
    with the same configuration and N), RMS distance to the start relative to the data scale.
    DDIM inversion: Song et al. 2021a (arXiv:2010.02502), Sec. 4.3; Dhariwal & Nichol 2021,
    App. F; the exact Gaussian flow map: docs/design.md (ground truth, tier 1)."""
    from diffusion_oracle.harness import ORDER_WINDOW, _moment_gaussian, fit_order
    from diffusion_oracle.reference.exact import gaussian_w2, probe_affine

    name = "order (tier 1, exact Gaussian)"
    if not case.inverse:
        raise ValueError(f"case must be an inversion (Case.inverse = True), got {case.label}")
    steps = [int(v) for v in steps]
    if len(steps) < 3 or steps != sorted(set(steps)) or steps[0] < 2:
        raise ValueError(f"steps must be >= 3 increasing step counts >= 2, got {steps}")
    tgt = get_target(target) if isinstance(target, str) else target
    fine = refined_case(case)
    factory = fine.factory()
    sch = training_schedule(factory())
    gauss = _moment_gaussian(tgt)
    model = ExactModel(gauss, sch)
    fwd_cls = scheduler_class(case.scheduler.replace("Inverse", ""))
    fwd = lambda: fwd_cls.from_config(factory().config)  # noqa: E731
    x = gauss.sample(256, rng=np.random.default_rng(1))
    scale = math.sqrt(float(np.trace(gauss.cov)))
    w2, trip = [], []
    for N in steps:

        def inv(model, x, grid, *, rng=None, N=N):
            return run_scheduler(factory, model, x, N, rng=rng).sample

        A = probe_affine(inv, model, None, gauss.d)
        t_end = run_scheduler(factory, model, np.zeros((1, gauss.d)), N).t[-1]
        a, s = float(sch.alpha(t_end)), float(sch.sigma(t_end))
        m, S = A.output_law(gauss.mean_vec, gauss.cov)
        exact = (a * gauss.mean_vec, a * a * gauss.cov + s * s * np.eye(gauss.d))
        w2.append(gaussian_w2(m, S, *exact))
        back = run_scheduler(fwd, model, inv(model, x, None), N).sample
        trip.append(float(np.sqrt(((back - x) ** 2).sum(1).mean())) / scale)
    fit = fit_order(steps, w2, case.order)
    tfit = fit_order(steps, trip, 1)
    data = {"steps": steps, "w2": w2, "declared": case.order}
    evidence = (
        f"W2 {w2[0]:.1e} .. {w2[-1]:.1e} at N = {steps[0]}..{steps[-1]}; measured "
        + (f"{fit.slope:.2f}" if fit else "n/a (round-off floor)")
        + f"; round trip with {fwd_cls.__name__} {trip[0]:.1e} .. {trip[-1]:.1e}"
        + (f" (slope {tfit.slope:.2f})" if tfit else "")
    )
    if fit is None or case.order is None:
        return CheckResult(name, None, fit.slope if fit else None, evidence, data)
    lo = case.order + ORDER_WINDOW[0]
    evidence += f", declared {case.order} (window from {lo:.2f})"
    ok = fit.slope >= lo and (tfit is None or tfit.slope >= lo)
    return CheckResult(name, ok, fit.slope, evidence, data)
