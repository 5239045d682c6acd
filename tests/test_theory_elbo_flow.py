"""theory/ topics 'elbo', 'schedules' and 'probability_flow' tied to the reference: the SymPy
results, lambdified (float64 and 50-digit mpmath), against the float64 reference at
hypothesis-drawn points, including the extreme log-SNR range [-30, 30]."""

import functools
import math

import mpmath as mp
import numpy as np
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_oracle import strategies as dst
from diffusion_oracle.reference import (
    DiscreteSchedule,
    Flow,
    Gaussian,
    VPCosine,
    VPLinear,
    ddpm_posterior,
    posterior,
)
from diffusion_oracle.theory import derive

# closed form vs the reference's stable form, both float64: a few ulps times the condition of
# the expression (stated per test where it exceeds 1)
RTOL = 1e-12
# 50-digit mpmath evaluation of a theory expression vs float64 reference: the reference is
# accurate to a few ulps (docs/accuracy.md: worst 3.1e-15 over log-SNR [-30, 30])
RTOL_MP = 2e-14


@functools.lru_cache(maxsize=None)
def _derived(topic):
    return derive(topic)


def _mp(topic, name, args):
    """The result ``name`` as a function evaluated with 50-digit mpmath arithmetic."""
    d = _derived(topic)
    f = sp.lambdify([d.symbols[a] for a in args], d.results[name], "mpmath")

    def at_50_digits(*vals):
        with mp.workdps(50):
            return f(*(mp.mpf(v) for v in vals))

    return at_50_digits


# ----------------------------------------------------------------------------------- elbo


@settings(max_examples=40)
@given(
    st.sampled_from(["linear", "cosine", "scaled_linear"]),
    st.integers(10, 2000),
    st.floats(0.0, 1.0),
)
def test_ddpm_eps_weight_is_the_snr_ratio_and_the_posterior_x0_weight(kind, T, u):
    """Ho et al. eq. 12's weight beta^2/(2 beta_tilde alpha (1 - abar)) evaluated on a discrete
    schedule equals (SNR_{n-1}/SNR_n - 1)/2 (VDM) from the reference's log-SNR, and the x0 weight
    (SNR_{n-1} - SNR_n)/2 equals coef_x0^2/(2 var) of the reference posterior."""
    sch = getattr(DiscreteSchedule, kind)(T=T)
    n = 2 + int(u * (T - 2))  # n >= 2: the L_{t-1} terms (beta_tilde_1 = 0)
    ab = sch.alpha_bar
    post = ddpm_posterior(sch, n)
    w_ddpm = _mp("elbo", "weight_eps_ddpm", ["alpha_bar_s", "alpha_bar_t", "s2"])
    ours = float(w_ddpm(mp.mpf(ab[n - 1]), mp.mpf(ab[n]), mp.mpf(post.var)))
    ls, lt = sch.log_snr_at(n - 1), sch.log_snr_at(n)
    ref = 0.5 * math.expm1(ls - lt)  # (SNR_s/SNR_t - 1)/2 in log-space
    # the closed form takes beta = 1 - abar_t/abar_s from the alpha_bars: cancellation
    # 1/beta_n, plus the conditioning of expm1 near 0
    cond = 1.0 / sch.betas[n - 1] + 1.0 / abs(ls - lt)
    assert math.isclose(ours, ref, rel_tol=RTOL * cond), (ours, ref)
    t_s, t_t = sch.t_of(n - 1), sch.t_of(n)
    vals = [sch.alpha(t_s), sch.alpha(t_t), sch.sigma(t_s), sch.sigma(t_t)]
    w_x0 = _mp("elbo", "weight_x0", ["alpha_s", "alpha_t", "sigma_s", "sigma_t"])
    pc = posterior(sch, t_s, t_t)
    ref_x0 = pc.coef_x0**2 / (2 * pc.var)
    exact = float(w_x0(*map(mp.mpf, vals)))
    assert math.isclose(ref_x0, exact, rel_tol=RTOL * cond), (ref_x0, exact)


@given(st.floats(-30, 30))
def test_cosine_log_snr_density_matches_the_reference(lam):
    """Uniform t on the cosine schedule (s = 0) induces p(lambda) = sech(lambda/2)/(2 pi) =
    1/|lambda'(t(lambda))|; compared with the reference's inverse and derivative."""
    sch = VPCosine(s=0.0)
    t_exact = _mp("elbo", "cosine_t_of_log_snr", ["lambda"])(mp.mpf(lam))
    t = float(sch.t_from_log_snr(lam))
    assert math.isclose(t, float(t_exact), rel_tol=RTOL_MP), (t, t_exact)
    dens = float(_mp("elbo", "cosine_log_snr_density", ["lambda"])(mp.mpf(lam)))
    ref = 1.0 / abs(sch.d_log_snr(t))
    # t carries its own rounding of relative size eps; p = sin(pi t)/(2 pi) as a function of t
    # amplifies it by |t d log p/dt| = |pi t cot(pi t)|
    cond = 1.0 + t * abs(math.pi / math.tan(math.pi * t))
    assert math.isclose(ref, dens, rel_tol=RTOL_MP * cond), (ref, dens)


def test_cosine_log_snr_density_integrates_to_one_numerically():
    from scipy import integrate

    p = sp.lambdify(
        [_derived("elbo").symbols["lambda"]], _derived("elbo").results["cosine_log_snr_density"]
    )
    # sech(l/2) decays like 2 exp(-|l|/2): beyond |l| = 150 the tail is below 1e-32
    total = integrate.quad(p, -150, 150, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
    assert math.isclose(total, 1.0, rel_tol=1e-12)


# ------------------------------------------------------------------------------- schedules


@st.composite
def _vp_linear(draw):
    b0 = draw(st.floats(0.01, 1.0))
    return VPLinear(b0, b0 + draw(st.floats(0.5, 30.0)))


@given(_vp_linear(), st.floats(0, 1))
def test_vp_linear_closed_forms_in_mpmath_over_the_extreme_log_snr_range(sch, u):
    """theory's t(lambda) and lambda(t), evaluated with 50 digits, against the reference, for
    lambda in the schedule's range intersected with [-30, 30]."""
    lo, hi = sch.log_snr_range()
    lo, hi = max(lo, -30.0), min(hi, 30.0)
    lam = lo + u * (hi - lo)
    args = ["t", "beta_min", "beta_max"]
    b = [mp.mpf(sch.beta_min), mp.mpf(sch.beta_max)]
    t_exact = _mp("schedules", "vp_linear_t_of_log_snr", ["lambda", "beta_min", "beta_max"])(
        mp.mpf(lam), *b
    )
    assert math.isclose(float(sch.t_from_log_snr(lam)), float(t_exact), rel_tol=RTOL_MP)
    t = float(t_exact)
    for name, ours in (
        ("vp_linear_log_snr", sch.log_snr(t)),
        ("vp_linear_alpha", sch.alpha(t)),
        ("vp_linear_sigma", sch.sigma(t)),
        ("vp_linear_f", sch.f(t)),
        ("vp_linear_g_squared", sch.g_squared(t)),
    ):
        exact = float(_mp("schedules", name, args)(mp.mpf(t), *b))
        # lambda(t) near lambda = 0 is an absolute quantity; relative elsewhere
        assert math.isclose(ours, exact, rel_tol=RTOL_MP, abs_tol=RTOL_MP), (name, ours, exact)


@given(st.floats(-30, 30))
def test_flow_and_cosine_closed_forms(lam):
    t_exact = _mp("schedules", "flow_t_of_log_snr", ["lambda"])(mp.mpf(lam))
    fl = Flow()
    assert math.isclose(float(fl.t_from_log_snr(lam)), float(t_exact), rel_tol=RTOL_MP)
    t = float(t_exact)
    if 0 < t < 1:
        for name, ours in (
            ("flow_log_snr", fl.log_snr(t)),
            ("flow_f", fl.f(t)),
            ("flow_g_squared", fl.g_squared(t)),
        ):
            exact = float(_mp("schedules", name, ["t"])(mp.mpf(t)))
            assert math.isclose(ours, exact, rel_tol=RTOL_MP, abs_tol=RTOL_MP), (name, ours, exact)
    cos = VPCosine(s=0.0)
    tc = float(cos.t_from_log_snr(lam))
    for name, ours in (
        ("cosine_log_snr", cos.log_snr(tc)),
        ("cosine_d_log_snr", cos.d_log_snr(tc)),
    ):
        exact = float(_mp("schedules", name, ["t"])(mp.mpf(tc)))
        assert math.isclose(ours, exact, rel_tol=RTOL_MP, abs_tol=RTOL_MP), (name, ours, exact)


@given(st.floats(-30, 30))
def test_vp_sigmoid_forms(lam):
    a2 = float(_mp("schedules", "vp_alpha_sq", ["lambda"])(mp.mpf(lam)))
    s2 = float(_mp("schedules", "vp_sigma_sq", ["lambda"])(mp.mpf(lam)))
    sch = VPLinear(0.1, 80.0)  # lambda(1) = -40.0: the whole range [-30, 30] is attained
    t = float(sch.t_from_log_snr(lam))
    assert math.isclose(sch.alpha(t) ** 2, a2, rel_tol=RTOL_MP)
    assert math.isclose(sch.sigma(t) ** 2, s2, rel_tol=RTOL_MP)


# ------------------------------------------------------------------------ probability flow


@given(dst.schedules(), dst.interior_times(0.01, 0.99))
def test_sde_coefficients_match_every_schedule(schedule, t):
    """f = alpha'/alpha and g^2 = 2 sigma sigma' - 2 f sigma^2 (from the Fokker-Planck
    derivation), fed the reference's alpha, sigma and their derivatives, equal the reference's
    per-schedule closed forms f(t), g^2(t) (which do not use that route, docs/design.md 4)."""
    if isinstance(schedule, DiscreteSchedule):
        t = schedule.t_of(max(1, round(t * schedule.T)))  # left limits at nodes
    a, s = schedule.alpha(t), schedule.sigma(t)
    if a == 0:
        return
    da, ds = schedule.d_alpha(t), schedule.d_sigma(t)
    args = ["alpha", "sigma", "dalpha", "dsigma"]
    f = float(_mp("probability_flow", "f", args)(a, s, da, ds))
    g2 = float(_mp("probability_flow", "g_squared", args)(a, s, da, ds))
    assert math.isclose(schedule.f(t), f, rel_tol=RTOL, abs_tol=1e-300), (schedule.f(t), f)
    # g^2 = 2 s (s' - f s): cancellation when sigma' ~ f sigma (VP near t = 1)
    cond = (abs(ds) + abs(f * s)) / max(abs(ds - f * s), 1e-300)
    assert math.isclose(schedule.g_squared(t), g2, rel_tol=RTOL * cond), (schedule.g_squared(t), g2)


@settings(max_examples=40)
@given(
    dst.continuous_schedules(),
    dst.interior_times(0.01, 0.99),
    st.floats(-2, 2),
    st.floats(0.05, 3),
    st.floats(-4, 4),
)
def test_pf_ode_drift_is_the_reference_velocity(schedule, t, mu, var, x):
    """f x - g^2 score/2 with the exact Gaussian score equals the reference's flow velocity
    alpha' E[x0|x] + sigma' E[eps|x] for the same Gaussian data."""
    a, s = schedule.alpha(t), schedule.sigma(t)
    da, ds = schedule.d_alpha(t), schedule.d_sigma(t)
    target = Gaussian(np.array([mu]), np.array([[var]]))
    xx = np.array([[x]])
    score = target.score(xx, a, s)[0, 0]
    drift = float(
        _mp(
            "probability_flow", "pf_ode_drift", ["alpha", "sigma", "dalpha", "dsigma", "x", "score"]
        )(a, s, da, ds, x, score)
    )
    ours = target.velocity(xx, a, s, da, ds)[0, 0]
    scale = abs(da) * (abs(x) / a + abs(mu)) + abs(ds) * (abs(x) + abs(mu)) / s + abs(drift)
    assert abs(ours - drift) <= RTOL * scale, (ours, drift)
