"""Forward kernels and the posterior: composition, Gaussian conditioning of the joint computed
independently in mpmath, the DDPM special case, and sampling moments."""

import math

import mpmath as mp
import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st
from mp_oracle import mp_alpha_sigma
from tolerances import tol

from diffusion_oracle import strategies as dst
from diffusion_oracle.reference import (
    DiscreteSchedule,
    VPLinear,
    ddpm_posterior,
    ddpm_step_kernel,
    marginal,
    posterior,
    sample_marginal,
    transition,
)

mp.mp.dps = 50


def _close(a, b, budget, scale=None):
    scale = abs(b) if scale is None else scale
    return abs(a - b) <= budget["rtol"] * scale + budget["atol"]


@given(dst.discrete_schedules(max_T=1000))
def test_composed_one_step_kernels_equal_the_marginal(schedule):
    """prod_n sqrt(1 - beta_n) = sqrt(alpha_bar_n) and the variance recursion
    v_n = (1 - beta_n) v_{n-1} + beta_n gives 1 - alpha_bar_n (Ho et al. 2020, eq. 4)."""
    coef, var = 1.0, 0.0
    budget = tol("composed_kernels")
    for n in range(1, schedule.T + 1):
        k = ddpm_step_kernel(schedule, n)
        coef, var = coef * k.mean_coef, k.mean_coef**2 * var + k.var
        m = marginal(schedule, schedule.t_of(n))
        assert _close(coef, m.mean_coef, budget), (n, coef, m.mean_coef)
        assert _close(var, m.var, budget), (n, var, m.var)


@given(dst.schedules(), st.lists(dst.interior_times(), min_size=3, max_size=3, unique=True))
def test_transitions_compose(schedule, times):
    """q(x_t|x_s) = int q(x_t|x_u) q(x_u|x_s) dx_u: coefficients multiply, variances add."""
    s, u, t = sorted(times)
    if schedule.alpha(s) == 0:
        return
    k1, k2, k = transition(schedule, s, u), transition(schedule, u, t), transition(schedule, s, t)
    budget = tol("kernel")
    assert _close(k1.mean_coef * k2.mean_coef, k.mean_coef, budget, scale=abs(k.mean_coef))
    assert _close(k2.mean_coef**2 * k1.var + k2.var, k.var, budget, scale=k.var)


@given(dst.schedules(), dst.interior_times(), dst.interior_times())
def test_transition_and_posterior_match_mpmath_conditioning(schedule, t1, t2):
    """The posterior q(x_s|x_t,x_0) equals Gaussian conditioning of the joint (x_s, x_t | x_0),
    computed here naively in 50-digit mpmath from alpha and sigma:
    Cov = [[sigma_s^2, a_ts sigma_s^2], [a_ts sigma_s^2, sigma_t^2]], a_ts = alpha_t / alpha_s,
    mean_s|t = alpha_s x0 + (a_ts sigma_s^2 / sigma_t^2)(x_t - alpha_t x0)."""
    s, t = sorted((t1, t2))
    assume(s < t)
    a_f, s_f = mp_alpha_sigma(schedule)
    a_s, a_t, sg_s, sg_t = a_f(mp.mpf(s)), a_f(mp.mpf(t)), s_f(mp.mpf(s)), s_f(mp.mpf(t))
    assume(a_s > 0)
    a_ts = a_t / a_s
    cov_st = a_ts * sg_s**2
    coef_xt = cov_st / sg_t**2
    coef_x0 = a_s - coef_xt * a_t
    var = sg_s**2 - cov_st**2 / sg_t**2
    trans_var = sg_t**2 - a_ts**2 * sg_s**2
    post, tr = posterior(schedule, s, t), transition(schedule, s, t)
    budget = tol("kernel")
    # lambda_t - lambda_s comes from t - s (log_snr_diff), so no absolute slack for a
    # cancelling difference of log-SNRs: each coefficient is held to the relative budget
    for name, ours, ref in [
        ("coef_xt", post.coef_xt, coef_xt),
        ("coef_x0", post.coef_x0, coef_x0),
        ("var", post.var, var),
        ("trans_coef", tr.mean_coef, a_ts),
        ("trans_var", tr.var, trans_var),
    ]:
        ref = float(ref)
        allowed = budget["rtol"] * abs(ref)
        assert abs(ours - ref) <= allowed, (name, schedule, s, t, ours, ref)


@given(dst.discrete_schedules(max_T=500), st.data())
def test_ddpm_posterior_is_the_general_posterior_on_the_grid(schedule, data):
    """The beta-based DDPM formulas (Ho et al. eq. 7) equal the log-SNR-based general s < t
    posterior at s = (n-1)/T, t = n/T; fixed_small <= fixed_large."""
    n = data.draw(st.integers(1, schedule.T))
    d = ddpm_posterior(schedule, n, variance="fixed_small")
    big = ddpm_posterior(schedule, n, variance="fixed_large")
    g = posterior(schedule, schedule.t_of(n - 1), schedule.t_of(n))
    budget = tol("kernel")
    for name in ("coef_x0", "coef_xt", "var"):
        a, b = getattr(d, name), getattr(g, name)
        assert _close(a, b, budget, scale=10 * abs(b)), (name, n, a, b)
    assert big.var == schedule.betas[n - 1]
    assert d.var <= big.var * (1 + 1e-15)
    if n == 1:
        assert d.var == 0.0 and d.log_var == -np.inf
        if schedule.T >= 2:
            assert d.log_var_clipped == ddpm_posterior(schedule, 2).log_var
    else:
        assert d.log_var_clipped == d.log_var


def test_posterior_edge_cases():
    s = DiscreteSchedule.linear(10)
    p0 = posterior(s, 0.0, 0.5)  # s = 0: x_0 is known exactly
    assert p0.var == 0.0 and p0.coef_xt == 0.0 and p0.coef_x0 == 1.0
    assert p0.log_var == -np.inf
    v = VPLinear()
    p = posterior(v, np.array([0.1, 0.2]), np.array([0.3, 0.9]))
    assert p.var.shape == (2,)
    x0, xt = np.ones((2, 3)), np.zeros((2, 3))
    assert p.mean(x0, xt).shape == (2, 3)


def test_marginal_sampling_moments(rng):
    """x_t = alpha x0 + sigma eps has mean alpha x0 and variance sigma^2: checked with n = 2e5
    draws at 5 standard errors (false-alarm rate ~6e-7 per check)."""
    sch = VPLinear()
    n, t = 200_000, 0.37
    x0 = np.full((n, 1), 2.0)
    xt, eps = sample_marginal(sch, t, x0, rng)
    a, s = sch.alpha(t), sch.sigma(t)
    se_mean = s / math.sqrt(n)
    assert abs(xt.mean() - 2.0 * a) <= 5 * se_mean
    se_var = s * s * math.sqrt(2.0 / (n - 1))
    assert abs(xt.var(ddof=1) - s * s) <= 5 * se_var
    assert np.allclose(xt, a * x0 + s * eps, rtol=0, atol=1e-15)


def test_posterior_sampling_moments(rng):
    """x_s ~ q(x_s | x_t, x_0): mean and variance at 5 standard errors with n = 2e5."""
    q = posterior(VPLinear(), 0.3, 0.6)
    n = 200_000
    x0, xt = np.full((n, 1), 1.5), np.full((n, 1), -0.4)
    xs = q.sample(x0, xt, rng)
    m = q.coef_x0 * 1.5 + q.coef_xt * -0.4
    assert abs(xs.mean() - m) <= 5 * math.sqrt(q.var / n)
    assert abs(xs.var(ddof=1) - q.var) <= 5 * q.var * math.sqrt(2.0 / (n - 1))


def test_kernel_log_prob_matches_scipy(rng):
    from scipy.stats import norm

    k = transition(VPLinear(), 0.2, 0.6)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    ref = norm.logpdf(y, loc=k.mean_coef * x, scale=k.std).sum(-1)
    assert np.allclose(k.log_prob(y, x), ref, rtol=1e-13)
