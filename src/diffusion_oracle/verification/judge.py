"""Stage 4 of verify: turn evidence into :class:`~.report.Check` rows. One function per check;
each says what decided it. The rules:

runs            every run gave finite output of the right shape.
model calls     each run asked the model about at least N distinct times (N steps: one level
                per step at least; the final jump is evaluated at t_{N-1}); fewer means a
                dropped or repeated step.
order (tier k)  judged only on a refining grid family with >= 2 step counts above the round-off
                floor; against the declared order's window [p - 0.2, p + 0.35] (tier 1 may
                superconverge on the linear Gaussian problem); with no declared order, every
                consistent sampler converges at order >= 1, so the window is [0.8, inf). A
                rough family (rounded integer timesteps) counts only an attained order (PASS);
                otherwise SKIPPED with the reason; a
                single step count is INCONCLUSIVE. Errors at the round-off floor everywhere are
                'exact'. Below the window with local slopes still rising: INCONCLUSIVE (add
                larger step counts). Pathwise: the median per-start slope, INCONCLUSIVE when
                under 90% of starts reach the window and the RMS error's slope is below it.
same-grid       W2 between the sampler's and the reference's exact output laws, against the
reference       rounding tolerance of the dtype the sampler ran in; a failure names the first
                divergence (diagnose.py).
final step      the point-mass landing: RMS distance to mu within the rounding tolerance.
prior           the output shift from starting at N(0, (alpha_0^2 + sigma_0^2) I) rather than
                the exact p_{t_0} (nonzero terminal SNR; Lin et al. 2024) within the sampling
                resolution sqrt(tr Cov / n); ``accept_prior_mismatch=True`` accepts it knowingly
                (the row then says so and passes).
tier 3          the four tests at their declared rate; a failure is explained by grid_floor.
"""

from __future__ import annotations

import math

from .report import Check, Verdict

__all__ = [
    "ORDER_WINDOW",
    "ERROR_FLOOR",
    "PATH_FLOOR",
    "judge_runs",
    "judge_calls",
    "judge_order",
    "judge_reference",
    "judge_landing",
    "judge_prior",
    "judge_tier3",
    "floor_at",
]

ORDER_WINDOW = (-0.2, 0.35)  # measured slope must lie in [p - 0.2, p + 0.35] (ground-truth Sec. 3)
MIN_ORDER = 1.0  # what every consistent sampler reaches when none is declared
ERROR_FLOOR = 1e-11  # tier-1 errors below this (relative to the data scale) are round-off
# tier 2 compares with a DOP853 solve at rtol = atol = 1e-12 over ~10^2..10^3 steps, whose own
# global error reaches ~1e-9 of the data scale: pathwise errors below 1e-8 are not slope
PATH_FLOOR = 1e-8


def judge_runs(rows, broken) -> Check:
    if broken:
        return Check("runs", Verdict.FAIL, broken)
    return Check("runs", Verdict.PASS, "finite output of the right shape at every step count")


def judge_calls(rows, grids) -> Check:
    """At least N distinct model times per run of N steps."""
    bad = [r for r in rows if r.distinct_times is not None and r.distinct_times < r.steps]
    ev = {str(r.steps): {"calls": r.nfe, "distinct_times": r.distinct_times} for r in rows}
    if bad:
        r = bad[0]
        g = grids[r.steps]
        return Check(
            "model calls", Verdict.FAIL,
            f"at N = {r.steps} the sampler asked the model about {r.distinct_times} distinct "
            f"times in {r.nfe} calls; N steps need at least N levels (t_0 .. t_N-1 = "
            f"{g.t[0]:.4g} .. {g.t[g.steps - 1]:.4g}): a step is dropped or repeated",
            evidence=ev,
        )  # fmt: skip
    if not any(r.distinct_times is not None for r in rows):
        return Check("model calls", Verdict.SKIPPED, "no tier-1 run to count calls in")
    calls = ", ".join(f"{r.steps}: {r.nfe}" for r in rows if r.nfe is not None)
    return Check(
        "model calls", Verdict.PASS,
        f">= N distinct model times at every N (calls per run, N: NFE = {calls})", evidence=ev,
    )  # fmt: skip


def floor_at(floor, n) -> float:
    """A round-off floor given as one number or per step count (a dict N -> floor)."""
    return float(floor[n]) if isinstance(floor, dict) else float(floor)


def judge_order(label, tier, fit, errors, steps, declared, *, refines, family, floor, notes,
                rounding_floor=False, missing=None, rms_fit=None):  # fmt: skip
    """One order row (module docstring). ``floor`` is a number or per-N dict (the larger of the
    reference's floor and the rounding bound of the sampler's dtype); ``rounding_floor`` says a
    floor is a rounding bound coarser than float64's (errors under it are unresolved, not
    exact); ``missing`` why some errors could not be measured; ``rms_fit`` the RMS error's fit
    (pathwise: the median per-start slope is judged, and a minority of starts that converges
    slower with an RMS slope below the window leaves the row INCONCLUSIVE)."""
    ev = {"steps": list(steps), "errors": errors, "declared": declared, "family": family}
    measured = [e for e in errors if e is not None]
    if not measured:
        if missing:
            return Check(label, Verdict.INCONCLUSIVE, f"no errors measured: {missing}", tier,
                         evidence=ev)  # fmt: skip
        return Check(label, Verdict.SKIPPED, "no errors measured (see the step rows)", tier)
    if all(e <= floor_at(floor, n) for n, e in zip(steps, errors) if e is not None):
        top = max(floor_at(floor, n) for n in steps)
        if rounding_floor or len(measured) < len(errors):
            return Check(
                label, Verdict.INCONCLUSIVE,
                f"errors <= {max(measured):.1e} lie under the rounding floor of the sampler's "
                f"dtype ({top:.1e}) at every step count measured: no order is resolved",
                tier, evidence=ev,
            )  # fmt: skip
        return Check(
            label, Verdict.PASS,
            f"exact on this problem: error <= {max(measured):.1e} at every step count "
            f"(round-off floor {top:.1e})", tier, law=tier == 1, evidence=ev,
        )  # fmt: skip
    p = MIN_ORDER if declared is None else declared
    if fit is None:
        above = len([1 for n, e in zip(steps, errors) if e is not None and e > floor_at(floor, n)])
        return Check(
            label, Verdict.INCONCLUSIVE,
            f"an order needs at least 2 step counts with errors above the round-off floor; got "
            f"{above} (steps {list(steps)})", tier, evidence=ev,
        )  # fmt: skip
    ev["measured"] = fit.slope
    if declared is None:
        lo, hi = MIN_ORDER + ORDER_WINDOW[0], math.inf
        how = f"no order declared: judged as a consistent sampler, order >= {lo:.2f}"
    else:
        lo, hi = declared + ORDER_WINDOW[0], declared + ORDER_WINDOW[1]
        how = f"declared {declared} (window [{lo:.2f}, {hi:.2f}])"
    reason = f"measured {fit.slope:.2f} over steps {fit.window} on {family} grids, {how}"
    if not refines:
        # a grid family that is not a fixed smooth function of i/N (rounded integer timesteps
        # of a discrete schedule, whose coefficients are themselves piecewise, and whose N
        # cannot grow past T): an order may be lost there without a fault (multistep methods on
        # rough steps; the full-chain error as N -> T), so only an attained order is evidence,
        # and nothing on such a family is a FAIL
        if fit.slope >= lo:
            return Check(label, Verdict.PASS, reason + "; attained on a rough family", tier,
                         law=tier == 1, evidence=ev)  # fmt: skip
        return Check(
            label, Verdict.SKIPPED,
            f"measured {fit.slope:.2f}, not judged: the grid family ({family}) does not refine "
            "smoothly (its nodes are not a fixed smooth function of i/N, e.g. rounded integer "
            f"timesteps), on which an order-{p:g} method may lose order without a fault; the "
            "same-grid reference comparison is the check there", tier, evidence=ev,
        )  # fmt: skip
    ok = lo <= fit.slope <= hi
    if tier == 1 and fit.slope > hi:
        # on a Gaussian the problem is linear and some error terms vanish, so tier 1 can
        # superconverge (multistep methods, optimal variances): there it is a lower bound
        ok = True
        notes.append(
            f"tier 1 superconverges: measured {fit.slope:.2f} > {hi:.2f} (the Gaussian problem "
            "is linear); tier 2 is the general check"
        )
    if ok and fit.reached is not None and rms_fit is not None:
        # pathwise: the median start converges at the order; a minority that does not, while
        # the RMS error (the law's) converges slower, is not a pass
        ev["share_of_starts_at_order"] = fit.reached
        ev["rms_slope"] = rms_fit.slope
        if fit.reached < 0.9 and rms_fit.slope < lo:
            return Check(
                label, Verdict.INCONCLUSIVE,
                reason + f"; but only {fit.reached:.0%} of the starts converge at >= {lo:.2f} "
                f"and the RMS error's slope is {rms_fit.slope:.2f}: a minority of starts "
                "converges slower (pre-asymptotic, or a fault on those starts): add larger step "
                "counts", tier, evidence=ev,
            )  # fmt: skip
    if not ok and fit.slope < lo:
        # pre-asymptotic: the local slopes still rise, so these step counts do not decide it
        # (a rise is also what an error converging to a wrong limit through zero looks like:
        # never a pass)
        if len(fit.local) >= 2 and fit.local[-1] > fit.local[-2]:
            slopes = " -> ".join(f"{v:.2f}" for v in fit.local[-3:])
            reason += f"; local slopes still rising ({slopes}): add larger step counts"
            return Check(label, Verdict.INCONCLUSIVE, reason, tier, evidence=ev)
    return Check(label, Verdict.PASS if ok else Verdict.FAIL, reason, tier, law=tier == 1 and ok,
                 evidence=ev)  # fmt: skip


def judge_reference(rows, tols, ref_name, dtype, divergence, scale) -> Check:
    """Same-grid reference: worst ratio of W2 to the rounding tolerance over the step counts."""
    pairs = [(r, tols[r.steps]) for r in rows if r.w2_reference is not None]
    name = "same-grid reference"
    if not pairs:
        why = next((r.error for r in rows if r.error), "no tier-1 output law")
        return Check(
            name, Verdict.INCONCLUSIVE,
            f"the comparison with {ref_name} needs the exact output law, unavailable: {why}", 1,
        )  # fmt: skip
    ev = {str(r.steps): {"w2": r.w2_reference, "tol": t} for r, t in pairs}
    r, t = max(pairs, key=lambda p: p[0].w2_reference / p[1])
    scale_note = f"rounding tolerance for {dtype} over {r.steps} steps"
    if r.w2_reference > t:
        why = (
            f"; first divergence: {divergence}"
            if divergence is not None
            else "; on 8 starts of the target the two runs stay within rounding call by call "
            "(the difference shows in the exact law on the moment-matched Gaussian)"
        )
        return Check(
            name, Verdict.FAIL,
            f"W2 to {ref_name}'s output law {r.w2_reference:.2e} at N = {r.steps} > "
            f"{t:.1e} ({scale_note}){why}", 1, evidence=ev,
        )  # fmt: skip
    from .tolerances import RESOLVABLE_FRACTION

    if t > RESOLVABLE_FRACTION * scale:
        return Check(
            name, Verdict.INCONCLUSIVE,
            f"W2 to {ref_name}'s output law {r.w2_reference:.2e} <= {t:.1e}, but rounding in "
            f"{dtype} over {r.steps} steps is as large as the law itself: no fault resolvable",
            1, evidence=ev,
        )  # fmt: skip
    return Check(
        name, Verdict.PASS,
        f"W2 to {ref_name}'s output law within the rounding bound of {dtype} at every step "
        f"count (closest: {r.w2_reference:.2e} <= {t:.1e} at N = {r.steps})", 1, law=True,
        evidence=ev,
    )  # fmt: skip


def judge_landing(results) -> Check:
    """The point-mass landing at each step count tried."""
    name = "final step (landing)"
    errs = [x for x in results if x.error]
    if errs:
        return Check(name, Verdict.FAIL, f"the point-mass run failed: {errs[0].error}")
    ev = {str(x.steps): {"rms": x.rms, "alpha": x.alpha, "sigma": x.sigma, "tol": x.tol}
          for x in results}  # fmt: skip
    from .tolerances import RESOLVABLE_FRACTION

    bad = [x for x in results if x.rms > x.tol]
    blind = [x for x in results if x.tol > RESOLVABLE_FRACTION * x.scale]
    if blind and not bad:
        x = blind[0]
        return Check(
            name, Verdict.INCONCLUSIVE,
            f"rounding in {x.dtype} over {x.steps} steps ({x.tol:.1e}) reaches "
            f"{x.tol / x.scale:.0%} of the point's size: no landing fault is resolvable "
            f"(distance {x.rms:.1e})", evidence=ev,
        )  # fmt: skip
    if bad:
        x = bad[0]
        return Check(
            name, Verdict.FAIL,
            f"on a point mass at mu every correct sampler returns mu; at N = {x.steps} the "
            f"output is {x.rms:.2e} from mu (tolerance {x.tol:.1e}, {x.dtype}): it lands at "
            f"alpha = {x.alpha:.4g}, sigma = {x.sigma:.3g} (sigma_EDM "
            f"{x.sigma / max(abs(x.alpha), 1e-300):.3g}) instead of the data (alpha = 1, "
            "sigma = 0): the last step keeps part of the noise (it stops at sigma > 0, or its "
            "update into sigma = 0 is not the jump to E[x0 | x]) or uses a wrong final alpha",
            evidence=ev,
        )  # fmt: skip
    worst = max(results, key=lambda x: x.rms / x.tol)
    return Check(
        name, Verdict.PASS,
        f"lands on a point mass within rounding at N = "
        f"{', '.join(str(x.steps) for x in results)} (worst {worst.rms:.1e} <= {worst.tol:.1e})",
        evidence=ev,
    )  # fmt: skip


def judge_prior(w, N, tol, n, accept: bool, alpha0, sigma0) -> Check:
    """``w``: the W2 shift of the exact sampler's output law (evidence.prior_shift) at N."""
    name = "prior (terminal SNR)"
    ev = {"w2_prior": w, "tol": tol, "n": n, "alpha_0": alpha0, "sigma_0": sigma0}
    snr = alpha0**2 / sigma0**2 if sigma0 > 0 else math.inf
    base = (
        f"starting from N(0, (alpha_0^2 + sigma_0^2) I) instead of the exact p_t0 "
        f"(alpha_0 = {alpha0:.3g}: terminal SNR {snr:.2e}) moves the exact output law by "
        f"W2 = {w:.2e} at N = {N}; what n = {n} samples resolve: {tol:.1e}"
    )
    if w <= tol:
        return Check(name, Verdict.PASS, base, 1, evidence=ev)
    if accept:
        return Check(name, Verdict.PASS, base + "; accepted knowingly (accept_prior_mismatch)",
                     1, evidence=ev)  # fmt: skip
    return Check(
        name, Verdict.FAIL,
        base + ": the schedule's last marginal is not N(0, I) (nonzero terminal SNR, Lin et al. "
        "2024); rescale to zero terminal SNR, or pass accept_prior_mismatch=True to accept it",
        1, evidence=ev,
    )  # fmt: skip


def judge_tier3(t3, floor) -> list:
    """One row per test; failures carry the grid-floor explanation."""
    out = []
    for t in t3.stats:
        reason = f"p = {t.pvalue:.3g} (alpha {t.alpha:g}); {t.detail}"
        ev = {"pvalue": t.pvalue, "alpha": t.alpha, "statistic": t.statistic, "n": t3.n,
              "steps": t3.steps}  # fmt: skip
        if not t.passed and floor is not None:
            reason += f"; {floor.explain(t.name)}"
            ev["grid_floor"] = {"failed": floor.failed, "sigma_edm": floor.sigma_edm,
                                "shrink": floor.shrink}  # fmt: skip
        out.append(Check(f"tier 3 {t.name}", Verdict.PASS if t.passed else Verdict.FAIL, reason,
                         3, law=True, evidence=ev))  # fmt: skip
    return out
