"""The posterior q(x_s | x_t, x_0) and lambda_t - lambda_s for s next to t, against 50-digit
mpmath (issue 22: the posterior lost 5-30x rounding for s close to t on VP and 1e4-1e5x on
VE/EDM at small t; with s = t (1 - 1e-12) the error was 1e-3 on VP and 1 on VE/EDM, because
-expm1(lambda_t - lambda_s) took a difference of two rounded log-SNRs).

The oracle is the defining formulas (tests/mp_oracle.py) at 50 digits, with the discrete
schedules' documented convention: a t within 4 ulps of a node n/T is the node. Reference and
torch twin (float64; CPU, and CUDA where there is one) are held to the same budget,
tolerances.py "kernel". The grid and the evaluation are tools/accuracy_posterior.py's, which
prints the table of docs/accuracy.md."""

import sys
from pathlib import Path

import mpmath as mp
import numpy as np
import pytest
import torch
from mp_oracle import mp_posterior
from tolerances import tol

from diffusion_oracle.accelerated.model import posterior_coefficients
from diffusion_oracle.accelerated.schedules import torch_schedule
from diffusion_oracle.reference import DiscreteSchedule, VPLinear, posterior

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from accuracy_posterior import LABELS, evaluate, pairs, rel, schedules  # noqa: E402

mp.mp.dps = 50
SCHEDULES = schedules()
IMPLS = ["reference", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_posterior_and_log_snr_difference_match_mpmath_for_s_next_to_t(name, impl):
    schedule = SCHEDULES[name]
    budget = tol("kernel")["rtol"]
    worst = []
    for s, t in pairs(schedule):
        want = mp_posterior(schedule, s, t)
        if want is None:
            continue
        got = evaluate(impl, schedule, s, t)
        for label, g, w in zip(LABELS, got, want):
            err = rel(g, w)
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
    """A bad s is named s (it was reported as t), a bad t as t."""
    schedule = VPLinear()
    for s, t, name in ((bad, 0.5, "s"), (0.5, bad, "t")):  # the message names the bad one
        with pytest.raises(ValueError, match=f"^{name} must"):
            schedule.log_snr_diff(s, t)
        with pytest.raises(ValueError, match=f"^{name} must"):
            torch_schedule(schedule).log_snr_diff(s, t)
    with pytest.raises(ValueError, match=r"^s must"):
        posterior(schedule, bad, 0.5)


@pytest.mark.parametrize("impl", ["reference", "cpu"])
def test_whole_steps_between_keep_their_digits_at_T_4000(impl):
    """s nine or more steps before t: the difference of two prefix sums of log alpha_bar kept
    only |log alpha_bar| eps of itself (2.5e-14 in lambda_t - lambda_s at T = 4000 near t = 1);
    the double-double prefix keeps it to the budget."""
    schedule = DiscreteSchedule.linear(4000)
    for t in (0.5, 0.999, 1.0):
        for m in (9.5, 20.5, 100.5):
            s = t - m / 4000
            want = mp_posterior(schedule, s, t)
            got = evaluate(impl, schedule, s, t)
            for label, g, w in zip(LABELS, got, want):
                assert rel(g, w) <= tol("kernel")["rtol"], (label, s, t, rel(g, w))


def test_torch_vp_linear_difference_does_not_overflow():
    """expm1(B_t - B_s) overflowed past 709 in the twin (-inf where the reference gave
    -742.54...); both now use the expm1(-dB) form. Oracle: mpmath from the definition."""
    schedule = VPLinear(0.1, 1500.0)
    s, t = 0.1, 1.0

    def lam(u):
        B = mp.mpf(0.1) * u + (mp.mpf(1500.0) - mp.mpf(0.1)) * u**2 / 2
        return -mp.log(mp.expm1(B))

    want = lam(mp.mpf(t)) - lam(mp.mpf(s))
    for got in (schedule.log_snr_diff(s, t), float(torch_schedule(schedule).log_snr_diff(s, t))):
        assert rel(got, want) <= tol("closed_form")["rtol"], got


@pytest.mark.parametrize("schedule", [DiscreteSchedule.linear(1000), VPLinear()], ids=str)
def test_the_data_end_is_an_answer_never_nan(schedule):
    """t that rounds to the data end (a discrete node 0 within 4 ulps; B(t) underflowing):
    log_snr_diff is 0 where both are the same level by the discrete convention and -inf from
    s = 0 on VP (lambda(t) is finite there, ~ -log(beta_min t)); the posterior is then x_s = x_t
    (same level) or x_s = x_0 (s = 0 strictly before t), never NaN (both impls were NaN)."""
    discrete = isinstance(schedule, DiscreteSchedule)
    tiny = 1e-300 if discrete else 5e-324
    ts = torch_schedule(schedule)
    for got in (schedule.log_snr_diff(0.0, tiny), float(ts.log_snr_diff(0.0, tiny))):
        assert got == (0.0 if discrete else -np.inf)
    for got in (schedule.log_snr_diff(0.0, 0.5), float(ts.log_snr_diff(0.0, 0.5))):
        assert got == -np.inf
    p = posterior(schedule, 0.0, tiny)
    zero, t_ = (torch.tensor(v, dtype=torch.float64) for v in (0.0, tiny))
    tw = tuple(float(v) for v in posterior_coefficients(ts, zero, t_))
    want = (0.0, 1.0, 0.0) if discrete else (1.0, 0.0, 0.0)  # (coef_x0, coef_xt, var)
    assert (p.coef_x0, p.coef_xt, p.var) == want
    assert tw == want
