"""The posterior q(x_s | x_t, x_0) and lambda_t - lambda_s for s next to t, against 50-digit
mpmath (issue 22: the posterior lost 5-30x rounding for s close to t on VP and 1e4-1e5x on
VE/EDM at small t; with s = t (1 - 1e-12) the error was 1e-3 on VP and 1 on VE/EDM, because
-expm1(lambda_t - lambda_s) took a difference of two rounded log-SNRs).

The oracle is the defining formulas (tests/mp_oracle.py) at 50 digits, with the discrete
schedules' documented convention: a t within 4 ulps of a node n/T is the node. Reference and
torch twin (float64, CPU) are held to the same budget, tolerances.py "kernel"."""

import math

import mpmath as mp
import numpy as np
import pytest
import torch
from mp_oracle import mp_alpha_sigma
from tolerances import tol

from diffusion_oracle.accelerated.model import posterior_coefficients
from diffusion_oracle.accelerated.schedules import torch_schedule
from diffusion_oracle.reference import (
    EDM,
    DiscreteSchedule,
    Flow,
    SubVP,
    VEGeometric,
    VPCosine,
    VPLinear,
    posterior,
    rescale_zero_terminal_snr,
)

mp.mp.dps = 50

SCHEDULES = {
    "vp-linear": VPLinear(),
    "vp-cosine": VPCosine(),
    "vp-cosine-s0": VPCosine(0.0),
    "ve": VEGeometric(),
    "edm": EDM(),
    "subvp": SubVP(),
    "flow": Flow(),
    "ddpm-linear": DiscreteSchedule.linear(1000),
    "ddpm-cosine": DiscreteSchedule.cosine(1000),
    "ddpm-zero-snr": rescale_zero_terminal_snr(DiscreteSchedule.linear(1000)),
    "ddpm-T2-zero-snr": DiscreteSchedule([0.5, 1.0]),
}
TIMES = [1e-6, 1e-4, 1e-2, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999, 0.9999, 1.0]
# s = t (1 - gap): far apart down to 1e-12 relative (where the old subtraction kept 4 digits)
GAPS = [0.9, 0.5, 1e-1, 1e-3, 1e-6, 1e-9, 1e-12]


def _pairs(schedule):
    out = []
    for t in TIMES:
        for gap in GAPS:
            s = t * (1.0 - gap)
            if 0.0 < s < t:
                out.append((s, t))
        if isinstance(schedule, DiscreteSchedule):  # the DDPM pair (n-1)/T, n/T
            n = max(1, round(t * schedule.T))
            out.append(((n - 1) / schedule.T, n / schedule.T))
    return out


def _mp_time(schedule, x):
    X = mp.mpf(x)
    if isinstance(schedule, DiscreteSchedule):
        u = X * schedule.T
        if abs(u - mp.nint(u)) <= 4 * mp.mpf(2) ** -52 * max(u, 1):
            return mp.nint(u) / schedule.T
    return X


def _mp_posterior(schedule, s, t):
    """(lambda_t - lambda_s, coef_x0, coef_xt, var) by conditioning the joint of (x_s, x_t)
    given x_0, at 50 digits; None where alpha_s = 0."""
    a, sg = mp_alpha_sigma(schedule)
    S, T = _mp_time(schedule, s), _mp_time(schedule, t)
    a_s, a_t, s_s, s_t = a(S), a(T), sg(S), sg(T)
    if a_s == 0:
        return None
    a_ts = a_t / a_s
    var_ts = s_t**2 - a_ts**2 * s_s**2
    d_lam = (2 * mp.log(a_t) if a_t != 0 else mp.mpf("-inf")) - 2 * mp.log(s_t)
    d_lam -= 2 * mp.log(a_s) - (2 * mp.log(s_s) if s_s != 0 else mp.mpf("-inf"))
    return d_lam, a_s * var_ts / s_t**2, a_ts * s_s**2 / s_t**2, var_ts * s_s**2 / s_t**2


def _rel(got, want):
    want = mp.mpf(want)
    if mp.isinf(want):
        return 0.0 if got == float(want) else math.inf
    if want == 0:
        return abs(got)
    return float(abs(mp.mpf(got) - want) / abs(want))


def _ours(impl, schedule, s, t):
    if impl == "reference":
        p = posterior(schedule, s, t)
        return schedule.log_snr_diff(s, t), p.coef_x0, p.coef_xt, p.var
    ts = torch_schedule(schedule)
    s_, t_ = torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)
    c0, ct, var = posterior_coefficients(ts, s_, t_)
    return float(ts.log_snr_diff(s_, t_)), float(c0), float(ct), float(var)


@pytest.mark.parametrize("impl", ["reference", "torch"])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_posterior_and_log_snr_difference_match_mpmath_for_s_next_to_t(name, impl):
    schedule = SCHEDULES[name]
    budget = tol("kernel")["rtol"]
    worst = []
    for s, t in _pairs(schedule):
        want = _mp_posterior(schedule, s, t)
        if want is None:
            continue
        got = _ours(impl, schedule, s, t)
        for label, g, w in zip(("log_snr_diff", "coef_x0", "coef_xt", "var"), got, want):
            err = _rel(g, w)
            if err > budget:
                worst.append((label, s, t, g, float(w), err))
    assert not worst, worst[:5]


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_log_snr_diff_order_equal_times_and_agreement_with_the_plain_difference(name):
    """Either order gives opposite signs, s = t gives 0, and far apart it is the difference of
    the two log-SNRs (where that subtraction loses nothing)."""
    schedule = SCHEDULES[name]
    ts = torch_schedule(schedule)
    s, t = np.array([0.2, 0.5, 0.5]), np.array([0.6, 0.5, 0.25])
    ref = schedule.log_snr_diff(s, t)
    tor = ts.log_snr_diff(torch.tensor(s), torch.tensor(t)).numpy()
    for d in (ref, tor):
        assert d[1] == 0.0
        assert d[0] < 0.0 < d[2]
        plain = schedule.log_snr(t) - schedule.log_snr(s)
        np.testing.assert_allclose(d[[0, 2]], plain[[0, 2]], rtol=1e-13)
    assert schedule.log_snr_diff(0.3, 0.7) == -schedule.log_snr_diff(0.7, 0.3)
    assert isinstance(schedule.log_snr_diff(0.3, 0.7), float)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_log_snr_diff_rejects_times_outside_the_unit_interval_in_both(bad):
    schedule = VPLinear()
    with pytest.raises(ValueError, match="t must"):
        schedule.log_snr_diff(bad, 0.5)
    with pytest.raises(ValueError, match="t must"):
        torch_schedule(schedule).log_snr_diff(bad, 0.5)


@pytest.mark.parametrize("impl", ["reference", "torch"])
def test_zero_terminal_snr_tail_gives_the_prior_not_nan(impl):
    """Where alpha_s = 0 (beta_T = 1), x_s is independent of x_t and x_0: N(0, sigma_s^2)
    (the torch twin returned NaN at T = 2)."""
    schedule = DiscreteSchedule([0.5, 1.0])
    s, t = 0.75, 1.0  # alpha = 0 on (1/2, 1]
    if impl == "reference":
        p = posterior(schedule, s, t)
        got = (p.coef_x0, p.coef_xt, p.var)
    else:
        c = posterior_coefficients(
            torch_schedule(schedule), torch.tensor(s, dtype=torch.float64), torch.tensor(t)
        )
        got = tuple(float(v) for v in c)
    assert got == (0.0, 0.0, 1.0)  # sigma_s^2 = 1 - alpha_s^2 = 1
