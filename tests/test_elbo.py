"""ELBO terms (issue 7): every closed form against an independent oracle.

Oracles: theory/ (SymPy, lambdified at 50 digits), mpmath log-CDFs, and the reverse-chain
decomposition of the bound for Gaussian data, -ELBO = H(x_0) + KL(q(x_T) || p(x_T)) +
sum_n E KL(q(x_{n-1} | x_n) || p(x_{n-1} | x_n)), computed from joint covariances with
slogdet/solve: a different factorisation of the same bound from the forward-posterior one
under test, sharing no code with it."""

import functools
import math

import mpmath as mp
import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_oracle.reference import (
    DiscreteSchedule,
    ExactModel,
    Gaussian,
    VPCosine,
    VPLinear,
    bits_per_dim,
    ddpm_elbo,
    ddpm_posterior,
    discretized_gaussian_log_likelihood,
    gaussian_ddpm_elbo,
    gaussian_kl,
    gaussian_vdm_elbo,
    irreducible_loss,
    l_simple,
    loss_weights,
    ring8,
    vdm_elbo,
)
from diffusion_oracle.theory import derive as _derive

# float64 closed form vs a 50-digit evaluation of the same formula: a few roundings of O(1)
# quantities (expm1 form: no cancellation), 1e-13 relative with headroom.
RTOL_MP = 1e-13
# Closed-form terms vs the reverse-chain oracle: T <= 1000 terms, each from a d x d solve and
# slogdet of a conditional covariance (Sc = C_{n-1} - a C_{n-1} C_n^{-1} C_{n-1}, relative
# error ~ cond * eps / (beta_n) ~ 1e-12 at beta_n = 1e-4) summed: 1e-10 absolute on a total
# of O(1) nats.
ATOL_ORACLE = 1e-10
# Monte Carlo vs exact expectation: |z| < 4.5 (two-sided 7e-6 per comparison; about 20
# comparisons in this file: family false-alarm < 2e-4).
Z_MC = 4.5


def _vp_discrete(T, schedule=None):
    """T nodes of a continuous VP schedule at t = n/T as a DiscreteSchedule (same end points for
    every T)."""
    sch = schedule or VPLinear()
    return DiscreteSchedule.from_alpha_bar(np.exp(2.0 * sch.log_alpha(np.arange(1, T + 1) / T)))


def _reverse_chain_oracle(target, schedule, var, decoder_var):
    """-ELBO of the exact-mean model with per-step variances var[n-1] (n = 1..T; n = 1 is the
    decoder with decoder_var) and prior N(0, I), by the reverse factorisation."""
    d, T, S, mu = target.d, schedule.T, target.cov, target.mean_vec
    I = np.eye(d)
    ab = np.exp(schedule.log_alpha_bar)
    total = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * S)[1]  # entropy H(x_0)
    for n in range(1, T + 1):
        Cp = ab[n - 1] * S + (1 - ab[n - 1]) * I
        Cn = ab[n] * S + (1 - ab[n]) * I
        Sc = Cp - (ab[n] / ab[n - 1]) * Cp @ np.linalg.solve(Cn, Cp)  # Cov[x_{n-1} | x_n]
        Sc = 0.5 * (Sc + Sc.T)
        v = decoder_var if n == 1 else var[n - 1]
        total += 0.5 * (np.trace(Sc) / v - d - np.linalg.slogdet(Sc)[1] + d * np.log(v))
    mT, CT = np.sqrt(ab[T]) * mu, ab[T] * S + (1 - ab[T]) * I
    total += 0.5 * (np.trace(CT) + mT @ mT - d - np.linalg.slogdet(CT)[1])
    return total


derive = functools.lru_cache(maxsize=None)(_derive)  # each SymPy derivation runs its checks once

ANISO = Gaussian(
    np.array([1.0, -0.5, 0.3]),
    np.array([[0.5, 0.2, 0.0], [0.2, 0.3, 0.05], [0.0, 0.05, 0.1]]),
)


# ------------------------------------------------------------------------ primitives


@settings(max_examples=60)
@given(st.floats(-30, 30), st.floats(-30, 30), st.floats(-20, 20), st.floats(-20, 20))
def test_gaussian_kl_matches_theory_at_50_digits(m1, m2, lv1, lv2):
    d = derive("gaussian_kl")
    f = sp.lambdify([d.symbols[k] for k in ("m_1", "m_2", "v_1", "v_2")], d.results["kl"], "mpmath")
    with mp.workdps(50):
        want = f(mp.mpf(m1), mp.mpf(m2), mp.exp(mp.mpf(lv1)), mp.exp(mp.mpf(lv2)))
        got = gaussian_kl(m1, lv1, m2, lv2)
        assert abs(mp.mpf(float(got)) - want) <= RTOL_MP * abs(want) + 1e-300


def test_gaussian_kl_is_exactly_zero_for_equal_laws():
    assert gaussian_kl(0.3, -7.0, 0.3, -7.0) == 0.0


@settings(max_examples=60)
@given(st.integers(0, 255), st.floats(-3, 3), st.floats(-12, 4))
def test_discretized_decoder_matches_mpmath_log_cdf_difference(k, mean, log_var):
    x = k / 127.5 - 1.0
    got = float(discretized_gaussian_log_likelihood(x, mean, log_var))
    with mp.workdps(50):
        std = mp.exp(mp.mpf(log_var) / 2)
        half = mp.mpf(1) / 255
        b = mp.inf if k == 255 else (mp.mpf(x) + half - mp.mpf(mean)) / std
        a = -mp.inf if k == 0 else (mp.mpf(x) - half - mp.mpf(mean)) / std
        # Phi(b) - Phi(a) = Phi(-a) - Phi(-b): written with the tails (1 - Phi(13) would leave
        # only 8 of the 50 digits); mpmath keeps full relative precision in each tail
        want = mp.log(mp.ncdf(-a) - mp.ncdf(-b) if a > 0 else mp.ncdf(b) - mp.ncdf(a))
    # log of a difference of CDFs computed from log-CDFs on the non-rounding side: a few ulps
    # of |log P| (scipy's log_ndtr is accurate to ~1e-15 relative).
    assert abs(got - float(want)) <= 1e-12 * max(1.0, abs(float(want)))


def test_discretized_decoder_is_a_distribution_and_far_tails_are_finite():
    levels = np.arange(256) / 127.5 - 1.0
    for mean, lv in [(0.0, -4.0), (0.9, -10.0), (-2.5, 0.5)]:
        lp = discretized_gaussian_log_likelihood(levels, mean, lv)
        assert abs(np.logaddexp.reduce(lp)) < 1e-12
    # 30 standard deviations away: tanh approximations give -inf or 0; the exact value is finite
    lp = discretized_gaussian_log_likelihood(np.array([1.0 - 2 / 255]), -1.0, math.log(1e-3))
    assert np.isfinite(lp).all() and lp[0] < -1000


def test_discretized_decoder_rejects_off_grid_data():
    with pytest.raises(ValueError, match="levels"):
        discretized_gaussian_log_likelihood(np.array([0.001]), 0.0, 0.0)


def test_bits_per_dim_is_the_one_conversion():
    assert bits_per_dim(math.log(2) * 12, 3) == pytest.approx(4.0, rel=1e-15)
    # density on [-1, 1] of 256-level data: + log2(128) = 7 bits (score_sde's offset)
    assert bits_per_dim(0.0, 5, levels=256) == pytest.approx(7.0, rel=1e-15)
    with pytest.raises(ValueError, match="d"):
        bits_per_dim(1.0, 0)


# ------------------------------------------------------------------------ closed forms


@pytest.mark.parametrize("T", [10, 100, 1000])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
def test_gaussian_elbo_equals_the_reverse_chain_decomposition(T, variance):
    sch = _vp_discrete(T) if T < 1000 else DiscreteSchedule.linear(1000)
    n = np.arange(1, T + 1)
    small = np.exp(np.asarray(ddpm_posterior(sch, n).log_var_clipped))
    large = np.asarray(ddpm_posterior(sch, n, variance="fixed_large").var)
    var = {
        "fixed_small": small,
        "fixed_large": large,
        "learned_range": np.exp(0.5 * np.log(small) + 0.5 * np.log(large)),
    }[variance]
    got = gaussian_ddpm_elbo(ANISO, sch, variance=variance)
    want = _reverse_chain_oracle(ANISO, sch, var, var[0])
    assert abs(got.mean() - want) <= ATOL_ORACLE
    assert got.stderr() == 0.0


@pytest.mark.parametrize("lam", [0.3, 1.0, 4.0])
def test_optimal_variance_makes_the_bound_the_entropy_for_isotropic_data(lam):
    """With the Analytic-DPM variance the reverse kernels are exact for isotropic Gaussian data:
    -ELBO = H(x_0) + KL(q(x_T) || N(0, I)) (ground-truth.md Sec. 5: 0.816952131 at lam = 0.3)."""
    d = 2
    g = Gaussian(np.zeros(d), lam * np.eye(d))
    sch = DiscreteSchedule.linear(1000)
    got = gaussian_ddpm_elbo(g, sch, variance="optimal").mean()
    ab = math.exp(sch.log_alpha_bar[-1])
    vT = ab * lam + 1 - ab
    kl_T = 0.5 * d * (vT - 1 - math.log(vT))
    entropy = 0.5 * d * math.log(2 * math.pi * math.e * lam)
    assert got == pytest.approx(entropy + kl_T, abs=1e-12)
    if lam == 0.3:
        assert got / d == pytest.approx(0.816952131, abs=1e-9)


def test_loss_weights_match_theory():
    d = derive("elbo")
    sch = DiscreteSchedule.linear(1000)
    T = sch.T
    ab = np.exp(sch.log_alpha_bar)
    n = np.arange(2, T + 1)
    args = [d.symbols["alpha_bar_s"], d.symbols["alpha_bar_t"], d.symbols["s2"]]
    w_ddpm = sp.lambdify(args, d.results["weight_eps_ddpm"], "numpy")
    for variance in ("fixed_small", "fixed_large"):
        s2 = np.asarray(ddpm_posterior(sch, n, variance=variance).var)
        got = loss_weights(sch, prediction="eps", variance=variance)[1:]
        np.testing.assert_allclose(got, w_ddpm(ab[n - 1], ab[n], s2), rtol=1e-12)
    a_s, a_t = np.sqrt(ab[n - 1]), np.sqrt(ab[n])
    s_s, s_t = (
        np.sqrt(-np.expm1(sch.log_alpha_bar[n - 1])),
        np.sqrt(-np.expm1(sch.log_alpha_bar[n])),
    )
    sym = [d.symbols[k] for k in ("alpha_s", "alpha_t", "sigma_s", "sigma_t")]
    w_x0 = sp.lambdify(sym, d.results["weight_x0"], "numpy")(a_s, a_t, s_s, s_t)
    w_eps = sp.lambdify(sym, d.results["weight_eps"], "numpy")(a_s, a_t, s_s, s_t)
    # SNR_s - SNR_t in the theory form cancels at small beta: relative 1e-9 (cond ~ SNR/dSNR)
    np.testing.assert_allclose(loss_weights(sch, prediction="x0")[1:], w_x0, rtol=1e-9)
    np.testing.assert_allclose(loss_weights(sch, prediction="eps")[1:], w_eps, rtol=1e-9)
    # the v and score weights follow from the error relations
    w = loss_weights(sch, prediction="x0")
    t = np.arange(1, T + 1) / T
    a, s = sch.alpha(t), sch.sigma(t)
    np.testing.assert_allclose(
        loss_weights(sch, prediction="v"), w * s**2 / (a**2 + s**2) ** 2, rtol=1e-13
    )
    np.testing.assert_allclose(loss_weights(sch, prediction="score"), w * s**4 / a**2, rtol=1e-13)


def test_continuous_loss_matches_theory_and_is_the_limit_of_the_discrete_bound():
    d = derive("elbo")
    A, B = d.symbols["SNR_0"], d.symbols["SNR_1"]
    f = sp.lambdify([A, B], d.results["vdm_loss_unit_gaussian"], "numpy")
    sch = VPCosine()
    t_min = 1e-3
    g1 = Gaussian(np.zeros(1), np.eye(1))
    got = gaussian_vdm_elbo(g1, sch, t_min=t_min).diffusion[0, 0]
    assert got == pytest.approx(f(sch.snr(t_min), sch.snr(1.0)), rel=1e-13)
    # discrete bound with nodes on [t_min, 1]: fixed_small diffusion terms converge to it at 1/T
    cont = gaussian_vdm_elbo(ANISO, sch, t_min=t_min).diffusion[0, 0]
    gaps = []
    Ts = [4096, 16384, 65536]  # asymptotic from ~4096 (local slopes 1.41, 1.21, 1.08 below)
    for T in Ts:
        tn = t_min + (1 - t_min) * np.arange(T) / (T - 1)
        disc = DiscreteSchedule.from_alpha_bar(np.exp(2 * sch.log_alpha(tn)))
        terms = gaussian_ddpm_elbo(ANISO, disc)
        gaps.append(terms.diffusion.sum() - cont)
    gaps = np.array(gaps)
    assert (gaps > 0).all() and (np.diff(gaps) < 0).all()
    slope = np.polyfit(np.log(Ts), np.log(gaps), 1)[0]
    assert -1.1 < slope < -0.9, slope


# ------------------------------------------------------------------------ Monte Carlo


@pytest.mark.parametrize(
    "prediction,variance",
    [("eps", "fixed_small"), ("v", "fixed_large"), ("x0", "learned_range")],
)
def test_monte_carlo_terms_agree_with_the_closed_form(prediction, variance):
    sch = _vp_discrete(50)
    model = ExactModel(ANISO, sch, prediction=prediction)
    x0 = ANISO.sample(4000, rng=1)
    mc = ddpm_elbo(model, sch, x0, variance=variance, v=0.5, rng=2)
    exact = gaussian_ddpm_elbo(ANISO, sch, variance=variance)
    assert abs(mc.mean() - exact.mean()) < Z_MC * mc.stderr()
    # each term's mean as well (the diffusion terms one by one would be 50 tests: their sum)
    for name in ("prior", "decoder"):
        vals = getattr(mc, name)
        se = vals.std(ddof=1) / math.sqrt(len(vals)) + 1e-15
        assert abs(vals.mean() - getattr(exact, name)[0]) < Z_MC * se, name


def test_elbo_never_exceeds_the_exact_log_likelihood_on_a_mixture():
    target = ring8()
    gaps = {}
    for T in (10, 100):
        sch = _vp_discrete(T)
        x0 = target.sample(3000, rng=T)
        terms = ddpm_elbo(ExactModel(target, sch), sch, x0, variance="fixed_large", rng=T + 1)
        gap = terms.total + target.log_prob(x0)  # -ELBO - (-log p) >= 0 per example in mean
        se = gap.std(ddof=1) / math.sqrt(len(gap))
        assert gap.mean() > Z_MC * se, (T, gap.mean(), se)
        gaps[T] = (gap.mean(), se)
    # more steps, tighter bound (Kingma et al. 2021, App. F)
    diff = gaps[10][0] - gaps[100][0]
    assert diff > Z_MC * math.hypot(gaps[10][1], gaps[100][1])


def test_vdm_monte_carlo_matches_the_gaussian_closed_form():
    sch = VPLinear()
    x0 = ANISO.sample(4000, rng=3)
    mc = vdm_elbo(ExactModel(ANISO, sch), sch, x0, t_min=1e-3, rng=4)
    exact = gaussian_vdm_elbo(ANISO, sch, t_min=1e-3)
    assert abs(mc.mean() - exact.mean()) < Z_MC * mc.stderr()


def test_l_simple_of_the_exact_model_is_its_irreducible_floor():
    target = ring8()
    sch = _vp_discrete(20)
    x0 = target.sample(20000, rng=5)
    val, se = l_simple(ExactModel(target, sch), sch, x0, rng=6)
    floors = [irreducible_loss(target, sch, n / 20, n=20000, rng=n) for n in range(1, 21)]
    floor = np.mean([f.value for f in floors])
    floor_se = math.sqrt(sum(f.stderr**2 for f in floors)) / 20
    assert abs(val - floor) < Z_MC * math.hypot(se, floor_se)


def test_bad_inputs_are_named():
    sch = _vp_discrete(10)
    m = ExactModel(ANISO, sch)
    with pytest.raises(TypeError, match="DiscreteSchedule"):
        ddpm_elbo(m, VPLinear(), ANISO.sample(4, rng=0))
    with pytest.raises(ValueError, match="x0 must have shape"):
        ddpm_elbo(m, sch, np.zeros(3))
    with pytest.raises(ValueError, match="variance"):
        ddpm_elbo(m, sch, ANISO.sample(4, rng=0), variance="wide")
    with pytest.raises(ValueError, match="decoder"):
        ddpm_elbo(m, sch, ANISO.sample(4, rng=0), decoder="laplace")
    with pytest.raises(ValueError, match="t_min"):
        vdm_elbo(m, VPLinear(), ANISO.sample(4, rng=0), t_min=0.0)
    with pytest.raises(TypeError, match="Gaussian"):
        gaussian_ddpm_elbo(ring8(), sch)
    x = ANISO.sample(4, rng=0)
    for call in (
        lambda: ddpm_elbo(m, sch, x, decoder_var=-1.0),
        lambda: gaussian_ddpm_elbo(ANISO, sch, decoder_var=0.0),
        lambda: vdm_elbo(m, VPLinear(), x, t_min=1e-3, decoder_var=-2.0),
        lambda: gaussian_vdm_elbo(ANISO, VPLinear(), t_min=1e-3, decoder_var=0.0),
    ):
        with pytest.raises(ValueError, match="decoder_var must be > 0"):
            call()
    for call in (
        lambda: gaussian_ddpm_elbo(ANISO, sch, prior_var=0.0),
        lambda: vdm_elbo(m, VPLinear(), x, t_min=1e-3, prior_var=-1.0),
        lambda: gaussian_vdm_elbo(ANISO, VPLinear(), t_min=1e-3, prior_var=0.0),
    ):
        with pytest.raises(ValueError, match="prior_var must be > 0"):
            call()
    with pytest.raises(ValueError, match="n_timesteps must lie in 1..10"):
        l_simple(m, sch, x, n_timesteps=np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="n_timesteps must be 4 integers"):
        l_simple(m, sch, x, n_timesteps=np.array([1.5, 1, 2, 3]))


def test_learned_variance_callables_equal_their_fixed_counterparts():
    """A model's learned variance enters as a callable (x_n, n) -> log var; one that returns
    log beta_n (or v = 1 for learned_range) reproduces fixed_large from the same draws."""
    sch = _vp_discrete(30)
    model = ExactModel(ANISO, sch)
    x0 = ANISO.sample(200, rng=0)
    log_beta = np.log(np.asarray(ddpm_posterior(sch, np.arange(1, 31), variance="fixed_large").var))
    fixed = ddpm_elbo(model, sch, x0, variance="fixed_large", rng=1)
    per_point = ddpm_elbo(
        model, sch, x0, variance=lambda x, n: np.full(x.shape[0], log_beta[n - 1]), rng=1
    )
    ranged = ddpm_elbo(
        model, sch, x0, variance="learned_range", v=lambda x, n: np.ones((x.shape[0], 1)), rng=1
    )
    for other in (per_point, ranged):
        np.testing.assert_allclose(other.total, fixed.total, rtol=1e-13)
    # a learned variance per coordinate changes the terms (and stays above the exact bound)
    wide = ddpm_elbo(
        model, sch, x0, variance=lambda x, n: np.full(x.shape, log_beta[n - 1] + 1), rng=1
    )
    assert wide.mean() > fixed.mean()
