"""Schedule invariants over random schedules (hypothesis), discrete-schedule construction
against mpmath and against published values from other implementations."""

import math

import mpmath as mp
import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st
from tolerances import EPS64, tol

from diffusion_oracle import strategies as dst
from diffusion_oracle.reference import (
    DiscreteSchedule,
    Flow,
    VEGeometric,
    VPLinear,
    rescale_zero_terminal_snr,
)

mp.mp.dps = 50


@given(dst.schedules(), dst.interior_times(), dst.interior_times())
def test_log_snr_decreasing_and_coefficients_valid(schedule, t1, t2):
    lo, hi = sorted((t1, t2))
    a, s = schedule.alpha(lo), schedule.sigma(lo)
    assert a >= 0 and s >= 0
    if lo < hi:
        assert schedule.log_snr(lo) >= schedule.log_snr(hi)
    if schedule.kind == "vp":
        # alpha and sigma come from separate closed forms, each within ~1.5 ulp (docs/accuracy):
        # alpha^2 + sigma^2 is then within 2 * 1.5 ulp + 2 roundings = 5 ulp = 1.1e-15
        assert abs(a * a + s * s - 1.0) <= 5 * EPS64
    if schedule.kind == "ve":
        assert a == 1.0


@given(dst.schedules(), dst.interior_times())
def test_sde_coefficients_identities(schedule, t):
    """f = alpha'/alpha and g^2 = d sigma^2/dt - 2 f sigma^2 = -sigma^2 lambda' (Kingma et al.
    2021, App. A): three routes, implemented separately, must agree."""
    a, s = schedule.alpha(t), schedule.sigma(t)
    da, ds = schedule.d_alpha(t), schedule.d_sigma(t)
    f, g2, dl = schedule.f(t), schedule.g_squared(t), schedule.d_log_snr(t)
    if a == 0 or not np.isfinite(g2):
        return
    assert math.isclose(f, da / a, rel_tol=1e-12, abs_tol=1e-300)
    route2 = 2 * s * ds - 2 * f * s * s
    route3 = -s * s * dl
    scale = 2 * abs(s * ds) + 2 * abs(f) * s * s
    assert abs(g2 - route2) <= 1e-12 * scale
    assert math.isclose(g2, route3, rel_tol=1e-12)


@given(dst.schedules(), dst.interior_times())
@example(Flow(), 0.5)
@example(VEGeometric(), 1e-3)
def test_inverse_round_trip(schedule, t):
    if isinstance(schedule, DiscreteSchedule) and np.isneginf(schedule._ell[-1]):
        t = min(t, (schedule.T - 1) / schedule.T)
    lam = schedule.log_snr(t)
    back = schedule.t_from_log_snr(lam)
    # relative in t, plus the absolute floor of the inverse's constant terms (tolerances.py)
    # the inverse's own budget (tolerances.py), plus the forward map's rounding of lambda,
    # ~4 ulp |lambda|, carried into t by 1/|lambda'(t)| (large when the schedule's log-SNR range
    # is narrow, e.g. an EDM schedule with sigma_max/sigma_min = 2)
    carried = 4 * EPS64 * max(abs(lam), 1.0) / abs(schedule.d_log_snr(t))
    assert abs(back - t) <= tol("inverse")["rtol"] * t + 1e-15 + carried, (schedule, t, back)


@given(dst.discrete_schedules(max_T=300))
def test_alpha_bar_is_the_product_of_alphas(schedule):
    ab = schedule.alpha_bar
    assert ab[0] == 1.0 and ab.shape == (schedule.T + 1,)
    assert (np.diff(ab) < 0).all()
    prod = mp.mpf(1)
    for n, b in enumerate(schedule.betas, start=1):
        prod *= 1 - mp.mpf(float(b))
        # compared in log space: alpha_bar may underflow float64 for aggressive schedules
        ref = mp.log(prod) if prod > 0 else -mp.inf
        got = schedule.log_alpha_bar[n]
        assert got == ref or abs(got - float(ref)) <= 1e-14 * abs(float(ref)), (n, got, ref)
    # grid access and the continuous embedding agree at every node
    n = np.arange(schedule.T + 1)
    la = 2 * np.asarray(schedule.log_alpha(schedule.t_of(n)))
    fin = np.isfinite(schedule.log_alpha_bar)
    assert np.allclose(la[fin], schedule.log_alpha_bar[fin], rtol=1e-14, atol=1e-300)
    assert (la[~fin] == -np.inf).all()


@given(st.integers(2, 2000), st.floats(0.0, 0.05), st.floats(0.5, 0.999))
def test_cosine_betas_match_mpmath(T, s, max_beta):
    sch = DiscreteSchedule.cosine(T, s, max_beta)
    s_mp = mp.mpf(s)

    def ab(t):
        return mp.cos((t + s_mp) / (1 + s_mp) * mp.pi / 2) ** 2

    for n in sorted({1, 2, T // 2, T - 1, T} - {0}):
        ref = min(1 - ab(mp.mpf(n) / T) / ab(mp.mpf(n - 1) / T), mp.mpf(max_beta))
        assert abs(sch.betas[n - 1] - float(ref)) <= 1e-13 * float(ref)


def test_published_values_from_other_implementations():
    """Anchors computed by improved-diffusion / diffusers (float64 numpy) and quoted in the
    research notes: linear alpha_bar_T, and cosine alpha_bar_T ~ 2.43e-9, alpha_bar_{T-1} ~
    2.43e-6 with only the last beta clipped to 0.999."""
    lin = DiscreteSchedule.linear(1000)
    assert math.isclose(lin.alpha_bar[-1], 4.0358e-5, rel_tol=2e-4)
    cos = DiscreteSchedule.cosine(1000)
    assert math.isclose(cos.alpha_bar[-1], 2.43e-9, rel_tol=5e-3)
    assert math.isclose(cos.alpha_bar[-2], 2.43e-6, rel_tol=5e-3)
    assert (cos.betas == 0.999).sum() == 1 and cos.betas[-1] == 0.999
    assert (cos.log_snr_at(np.arange(1, 1001)) < 2 * -5.1).sum() == 4  # DPM-Solver's clip


@given(dst.discrete_schedules(max_T=500))
def test_zero_terminal_snr_rescaling(schedule):
    """Lin et al. 2024 Algorithm 1: alpha_bar_T = 0, alpha_bar_1 kept, sqrt(alpha_bar) an affine
    image of the original."""
    z = rescale_zero_terminal_snr(schedule)
    assert z.alpha_bar[-1] == 0.0 and z.betas[-1] == 1.0
    assert math.isclose(z.alpha_bar[1], schedule.alpha_bar[1], rel_tol=1e-14)
    a_old, a_new = np.sqrt(schedule.alpha_bar[1:]), np.sqrt(z.alpha_bar[1:])
    a0, aT = a_old[0], a_old[-1]
    if aT > 0:
        expected = (a_old - aT) * a0 / (a0 - aT)
        # the shift cancels: condition number a0 / (a0 - aT) on both sides, 50 ulp each
        cond = a0 / (a0 - aT)
        assert np.allclose(a_new, expected, rtol=0, atol=50 * 2.2e-16 * cond)
    assert z.log_snr(1.0) == -np.inf and z.alpha(1.0) == 0.0
    assert np.isfinite(z.d_alpha(np.linspace(0, 1, 33))).all()


def test_index_mapping_is_n_over_T():
    s = DiscreteSchedule.linear(1000)
    assert s.t_of(0) == 0.0 and s.t_of(1000) == 1.0 and s.t_of(250) == 0.25
    assert s.index_of(0.25) == 250
    n = np.arange(1001)
    assert (s.index_of(s.t_of(n)) == n).all()
    # derivative at a node is the left limit: the step that produced x_n
    assert math.isclose(s.f(s.t_of(1)), 0.5 * 1000 * math.log1p(-1e-4), rel_tol=1e-15)


def test_from_alpha_bar_round_trip():
    s = DiscreteSchedule.scaled_linear(300)
    back = DiscreteSchedule.from_alpha_bar(s.alpha_bar[1:])
    assert np.allclose(back.betas, s.betas, rtol=1e-12, atol=0)


def test_vp_linear_inverse_in_closed_form():
    s = VPLinear(0.1, 20.0)
    for t in (1e-12, 1e-6, 0.3, 1.0):
        assert math.isclose(s.t_from_log_snr(s.log_snr(t)), t, rel_tol=1e-13)
