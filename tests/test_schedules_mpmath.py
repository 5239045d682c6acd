"""Schedules against mpmath at 50 digits across log-SNR in [-30, 30] (or the schedule's range).

Expected values come from tests/mp_oracle.py: the defining formulas evaluated naively at 50
digits, derivatives by mpmath numerical differentiation, the inverse by bisection. The allowed
error is the tolerance-table budget plus the variation of the exact function over t +- 4 ulp (the
float64 input t itself is only meaningful to a few ulps; near steep spots such as the last
cosine step this is the condition number at work, not an implementation error).
"""

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mp_oracle import mp_quantities, mp_t_from_log_snr
from tolerances import EPS64, tol

from diffusion_oracle import strategies as dst
from diffusion_oracle.reference import (
    EDM,
    SCHEDULES,
    DiscreteSchedule,
    SubVP,
    VEGeometric,
    VPCosine,
    VPLinear,
    get_schedule,
    rescale_zero_terminal_snr,
)

QUANTITIES = ("alpha", "sigma", "log_snr", "d_alpha", "d_sigma", "d_log_snr", "f", "g_squared")
LOG_QUANTITIES = ("log_snr",)  # compared in absolute terms at |lambda| < 1 (relative to SNR)

EXTRA = {
    "vp-linear-small": VPLinear(0.05, 5.0),
    "vp-cosine-s0": VPCosine(0.0),
    "subvp-wide": SubVP(0.01, 40.0),
    "ve-wide": VEGeometric(1e-3, 500.0),
    "edm-rho3": EDM(0.01, 100.0, 3.0),
    "ddpm-cosine-T50": DiscreteSchedule.cosine(50),
    "ddpm-linear-T20-zsnr": rescale_zero_terminal_snr(DiscreteSchedule.linear(20)),
    "ddpm-log-snr-wide": DiscreteSchedule.log_snr_linear(400, 30.0, -30.0),
}
ALL = {**{k: get_schedule(k) for k in SCHEDULES}, **EXTRA}


def _lambda_grid(schedule, n=17):
    lo, hi = schedule.log_snr_range()
    lo, hi = max(lo, -30.0), min(hi, 30.0)
    lams = np.linspace(lo, hi, n)
    if isinstance(schedule, DiscreteSchedule) and np.isneginf(schedule._ell[-1]):
        lams = lams[lams >= schedule.log_snr_at(schedule.T - 1)]  # the zero-SNR jump
    return lams


def _allowed(q, schedule, t64, ref, budget):
    """rtol * |ref| (+ atol) plus the exact variation over t +- 4 ulp."""
    spread = mp.mpf(0)
    for sgn in (-1, 1):
        tp = mp.mpf(t64) * (1 + sgn * 4 * mp.mpf(EPS64))
        if 0 < tp < 1:
            spread = max(spread, abs(mp_quantities(schedule, tp)[0][q] - ref))
    scale = max(abs(ref), 1) if q in LOG_QUANTITIES else abs(ref)
    return budget["rtol"] * float(scale) + budget["atol"] + float(spread)


@pytest.mark.parametrize("name", sorted(ALL))
def test_closed_forms_match_mpmath(name):
    schedule = ALL[name]
    worst = {}
    for lam in _lambda_grid(schedule):
        t64 = float(schedule.t_from_log_snr(lam))
        if not 0.0 < t64 < 1.0:
            continue
        ref, _ = mp_quantities(schedule, mp.mpf(t64))
        for q in QUANTITIES:
            ours = getattr(schedule, q)(t64)
            budget = tol("closed_form") if q in ("alpha", "sigma", "log_snr") else tol("derivative")
            err = abs(ours - float(ref[q]))
            allowed = _allowed(q, schedule, t64, ref[q], budget)
            worst[q] = max(worst.get(q, 0.0), err / allowed if allowed else err)
            assert err <= allowed, (
                f"{name}: {q}(t={t64!r}) = {ours!r}, mpmath {mp.nstr(ref[q], 20)}, "
                f"error {err:.3g} > allowed {allowed:.3g}"
            )
    assert worst, f"{name}: no interior points tested"


@pytest.mark.parametrize("name", sorted(ALL))
def test_inverse_matches_mpmath(name):
    schedule = ALL[name]
    budget = tol("inverse")
    for lam in _lambda_grid(schedule):
        t64 = float(schedule.t_from_log_snr(lam))
        if not 0.0 < t64 < 1.0:
            continue
        t_ref = mp_t_from_log_snr(schedule, lam, t64)
        err = abs(t64 - float(t_ref))
        allowed = budget["rtol"] * float(t_ref) + 1e-15  # 1e-15: ~4.5 ulp of 1, see tolerances
        assert err <= allowed, f"{name}: t({lam!r}) = {t64!r}, mpmath {mp.nstr(t_ref, 20)}"


def test_log_snr_spans_minus_30_to_30_without_nan():
    """The valid domain includes log-SNR from -30 to 30 wherever the schedule reaches it."""
    for name in ("vp-cosine", "flow", "ddpm-linear-zero-snr"):
        s = get_schedule(name)
        lams = np.linspace(-30, 30, 61)
        if name == "ddpm-linear-zero-snr":
            lams = lams[lams >= s.log_snr_at(s.T - 1)]
        t = s.t_from_log_snr(lams)
        for q in QUANTITIES:
            assert np.isfinite(getattr(s, q)(t)).all(), (name, q)
    s = EXTRA["ddpm-log-snr-wide"]
    t = s.t_from_log_snr(np.linspace(-30, 30, 61))
    assert all(np.isfinite(getattr(s, q)(t)).all() for q in QUANTITIES)


@settings(max_examples=15)
@given(dst.schedules(), dst.interior_times(1e-6, 1 - 1e-6))
def test_random_schedules_match_mpmath(schedule, t):
    if isinstance(schedule, DiscreteSchedule) and np.isneginf(schedule._ell[-1]):
        # alpha = 0 on the last zero-SNR interval; stay clear of its start (t +- 4 ulp is probed)
        t = min(t, (schedule.T - 1) / schedule.T * (1 - 1e-9))
    ref, _ = mp_quantities(schedule, mp.mpf(t))
    for q in ("alpha", "sigma", "log_snr", "d_log_snr", "g_squared"):
        ours = getattr(schedule, q)(t)
        allowed = _allowed(q, schedule, t, ref[q], tol("closed_form"))
        assert abs(ours - float(ref[q])) <= allowed, (schedule, q, t, ours, mp.nstr(ref[q], 17))


@given(st.integers(2, 64), st.floats(1e-3, 1.0), st.floats(1.5, 1e3), st.floats(1.0, 10.0))
def test_karras_sigmas_match_mpmath(n, smin, ratio, rho):
    from diffusion_oracle.reference import karras_sigmas

    smax = smin * ratio
    ours = karras_sigmas(n, smin, smax, rho)
    assert ours.shape == (n + 1,) and ours[-1] == 0.0
    a, b, r = mp.mpf(smax) ** (1 / mp.mpf(rho)), mp.mpf(smin) ** (1 / mp.mpf(rho)), mp.mpf(rho)
    for i in range(n):
        ref = (a + mp.mpf(i) / (n - 1) * (b - a)) ** r
        assert abs(ours[i] - float(ref)) <= 1e-13 * float(ref)
    assert (np.diff(ours) < 0).all()
