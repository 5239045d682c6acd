"""Exact PF-ODE likelihood, flow map, divergence and irreducible loss (issue 7) against
independent oracles: finite differences, closed-form Gaussian flows, the closed-form mixture
density, mpmath quadrature and a 30-digit mpmath ODE solve for a 1-D mixture."""

import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_oracle.reference import (
    EDM,
    Flow,
    Gaussian,
    GaussianMixture,
    VEGeometric,
    VPCosine,
    VPLinear,
    bimodal1d,
    flow_map,
    irreducible_loss,
    pf_ode_log_likelihood,
    ring8,
)
from diffusion_oracle.reference.exact import exact_flow_gaussian

SCHEDULES = [VPLinear(), VPCosine(), EDM(), Flow(), VEGeometric()]
# DOP853 at rtol = atol = 1e-12 over a smooth path of length <= pi/2 in theta: global error a
# few times the tolerance times the path's growth factor (<= ~100 for these targets).
RTOL_FLOW = 1e-10
# log-likelihood: the same solve at rtol 1e-11 plus the integral of the divergence, whose
# accumulated error is ~ tolerance x (number of steps ~ 100) x |div| ~ 1e-8 nats.
ATOL_LOGP = 1e-8
# Central differences with h = 1e-6 on O(1) smooth functions: truncation h^2 f''' ~ 1e-12,
# cancellation eps |f| / h ~ 1e-10.
ATOL_FD = 1e-8
Z_MC = 4.5  # |z| bound of the Monte Carlo comparisons (two-sided 7e-6 each)

ANISO = Gaussian(np.array([1.0, -0.5]), np.array([[0.5, 0.2], [0.2, 0.3]]))
MIX3 = GaussianMixture(
    [0.3, 0.7],
    np.array([[0.5, -1.0, 0.2], [-0.4, 0.8, 0.0]]),
    np.stack([0.2 * np.eye(3), np.array([[0.3, 0.1, 0.0], [0.1, 0.2, 0.05], [0.0, 0.05, 0.1]])]),
)


# --------------------------------------------------------------------------- derivatives


@pytest.mark.parametrize("target", [ring8(), bimodal1d(), MIX3, ANISO], ids=repr)
@settings(max_examples=20)
@given(a=st.floats(0.05, 1.0), s=st.floats(0.05, 1.0), da=st.floats(-2, 2), ds=st.floats(-2, 2))
def test_velocity_jacobian_and_divergence_match_finite_differences(target, a, s, da, ds):
    x = np.random.default_rng(0).normal(size=(4, target.d))
    J = target.velocity_jacobian(x, a, s, da, ds)
    h = 1e-6
    for i in range(target.d):
        e = np.zeros(target.d)
        e[i] = h
        col = (target.velocity(x + e, a, s, da, ds) - target.velocity(x - e, a, s, da, ds)) / (
            2 * h
        )
        scale = max(1.0, np.abs(col).max())
        assert np.abs(J[..., :, i] - col).max() <= ATOL_FD * scale
    div = target.velocity_divergence(x, a, s, da, ds)
    np.testing.assert_allclose(div, np.trace(J, axis1=-2, axis2=-1), rtol=1e-12, atol=1e-12)
    # the same value from the Laplacian: d alpha'/alpha + (alpha' s^2/alpha - sigma' s) Delta
    lap = target.laplacian(x, a, s)
    alt = target.d * da / a + (da * s * s / a - ds * s) * lap
    np.testing.assert_allclose(div, alt, rtol=1e-10, atol=1e-10 * (1 + np.abs(lap).max()))


def test_gaussian_jacobian_equals_its_one_component_mixture():
    x = np.random.default_rng(1).normal(size=(3, 2))
    J1 = ANISO.velocity_jacobian(x, 0.7, 0.4, -0.3, 0.9)
    J2 = ANISO.as_mixture().velocity_jacobian(x, 0.7, 0.4, -0.3, 0.9)
    np.testing.assert_allclose(J1, J2, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- flow map


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
@pytest.mark.parametrize("t,s", [(1.0, 0.0), (0.7, 0.2), (0.2, 0.9)])
def test_flow_map_of_a_gaussian_is_the_closed_form(schedule, t, s):
    x = np.random.default_rng(2).normal(size=(6, 2))
    A, b = exact_flow_gaussian(
        ANISO, schedule.alpha(t), schedule.sigma(t), schedule.alpha(s), schedule.sigma(s)
    )
    want = x @ A.T + b
    got = flow_map(ANISO, schedule, x, t, s)
    assert np.abs(got - want).max() <= RTOL_FLOW * np.abs(want).max()


def _mp_flow_bimodal(x1, th0, th1, dps=20):
    """20-digit Taylor-series ODE solve (mpmath.odefun) of dw/dtheta = -sin E[x0|w] + cos E[eps|w]
    for the 1-D target bimodal1d, with its own mixture formulas."""
    tgt = bimodal1d()
    w_k = [mp.mpf(float(v)) for v in tgt.weights]
    mu = [mp.mpf(float(v)) for v in tgt.means[:, 0]]
    var = [mp.mpf(float(v)) for v in tgt.covs[:, 0, 0]]
    with mp.workdps(dps):

        def f(th, w):
            c, s = mp.cos(th), mp.sin(th)
            comps = []
            for wk, m, v in zip(w_k, mu, var, strict=True):
                C = c * c * v + s * s
                comps.append((wk * mp.npdf(w, c * m, mp.sqrt(C)), m, v, C))
            tot = sum(p for p, *_ in comps)
            x0 = sum(p * (m + c * v * (w - c * m) / C) for p, m, v, C in comps) / tot
            eps = sum(p * s * (w - c * m) / C for p, m, v, C in comps) / tot
            return -s * x0 + c * eps

        # odefun integrates forward only: run in phi = th0 - theta
        sol = mp.odefun(lambda phi, w: -f(mp.mpf(th0) - phi, w), 0, mp.mpf(x1))
        return float(sol(mp.mpf(th0) - mp.mpf(th1)))


def test_flow_map_of_a_mixture_matches_a_20_digit_ode_solve():
    tgt, sch = bimodal1d(), VPCosine()
    t, s = 0.8, 0.05  # theta decreases: towards the data
    th0 = math.atan2(sch.sigma(t), sch.alpha(t))
    th1 = math.atan2(sch.sigma(s), sch.alpha(s))
    rho0, rho1 = math.hypot(sch.alpha(t), sch.sigma(t)), math.hypot(sch.alpha(s), sch.sigma(s))
    x = np.array([[-1.3], [0.4]])
    got = flow_map(tgt, sch, x, t, s)
    want = [rho1 * _mp_flow_bimodal(xi / rho0, th0, th1) for xi in x[:, 0]]
    np.testing.assert_allclose(got[:, 0], want, rtol=RTOL_FLOW, atol=RTOL_FLOW)


def test_flow_map_round_trip_and_pushforward():
    tgt, sch = ring8(), VPLinear()
    x1 = np.random.default_rng(3).normal(size=(200, 2))
    x0 = flow_map(tgt, sch, x1, 1.0, 0.0)
    back = flow_map(tgt, sch, x0, 0.0, 1.0)
    assert np.abs(back - x1).max() < 1e-8
    # the map sends p_1 to p_0: images of exact p_1 draws have the right responsibilities
    xt = tgt.sample(2000, rng=4) * sch.alpha(1.0) + sch.sigma(1.0) * np.random.default_rng(
        5
    ).standard_normal((2000, 2))
    r = tgt.responsibilities(flow_map(tgt, sch, xt, 1.0, 0.0)).mean(0)
    se = np.sqrt(tgt.weights * (1 - tgt.weights) / 2000)
    assert (np.abs(r - tgt.weights) < Z_MC * se).all()


# --------------------------------------------------------------------------- likelihood


@pytest.mark.parametrize("schedule", [VPLinear(), EDM(), Flow()], ids=repr)
@pytest.mark.parametrize("target", [ring8(), bimodal1d(), MIX3, ANISO], ids=repr)
def test_pf_ode_log_likelihood_is_the_exact_log_density(target, schedule):
    x = target.sample(40, rng=6)
    res = pf_ode_log_likelihood(target, schedule, x)
    want = target.log_prob(x, schedule.alpha(0.0), schedule.sigma(0.0))
    assert np.abs(res.log_prob - want).max() < ATOL_LOGP
    assert res.stderr is None


def test_gaussian_prior_changes_only_the_prior_term():
    tgt, sch = ring8(), VPLinear()
    x = tgt.sample(20, rng=7)
    ex = pf_ode_log_likelihood(tgt, sch, x)
    ga = pf_ode_log_likelihood(tgt, sch, x, prior="gaussian")
    np.testing.assert_allclose(ga.delta, ex.delta, rtol=0, atol=1e-12)
    s1 = sch.sigma(1.0)
    want = -0.5 * (2 * math.log(2 * math.pi * s1 * s1) + (ex.x_end**2).sum(1) / s1**2)
    np.testing.assert_allclose(ga.log_prior, want, rtol=1e-13)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_estimate_is_unbiased_with_the_exact_variance(probe):
    tgt, sch = MIX3, VPLinear()
    x = tgt.sample(6, rng=8)
    P = 400
    res = pf_ode_log_likelihood(
        tgt,
        sch,
        x,
        divergence="hutchinson",
        n_probes=P,
        probe=probe,
        exact_probe_variance=True,
        rng=9,
    )
    exact = tgt.log_prob(x)
    z = (res.log_prob - exact) / res.stderr
    assert (np.abs(z) < Z_MC).all(), z
    # empirical probe variance vs the exact 2 sum_{i != j} M_ij^2 (or 2 |M|_F^2): the sample
    # variance of P iid draws has relative sd ~ sqrt((kurtosis - 1)/P) <= ~0.2 for these laws
    ratio = res.probe_std**2 / res.probe_var_exact
    assert (np.abs(ratio - 1) < 0.6).all() and abs(ratio.mean() - 1) < 0.25, ratio


# --------------------------------------------------------------------------- irreducible loss


def _mp_irreducible_eps_bimodal(a, s):
    """E_{p_t}[Var(eps | x_t)] for bimodal1d by 30-digit quadrature, from its own formulas."""
    tgt = bimodal1d()
    ws = [mp.mpf(float(v)) for v in tgt.weights]
    mus = [mp.mpf(float(v)) for v in tgt.means[:, 0]]
    vs = [mp.mpf(float(v)) for v in tgt.covs[:, 0, 0]]
    with mp.workdps(30):
        a, s = mp.mpf(a), mp.mpf(s)

        def integrand(x):
            ps, e1, e2 = [], [], []
            for w, m, v in zip(ws, mus, vs, strict=True):
                C = a * a * v + s * s
                p = w * mp.npdf(x, a * m, mp.sqrt(C))
                mean_eps = s * (x - a * m) / C  # E[eps | x, k]
                var_eps = 1 - s * s / C  # Var[eps | x, k]
                ps.append(p)
                e1.append(mean_eps)
                e2.append(var_eps + mean_eps**2)
            tot = sum(ps)
            m1 = sum(p * e for p, e in zip(ps, e1, strict=True)) / tot
            m2 = sum(p * e for p, e in zip(ps, e2, strict=True)) / tot
            return tot * (m2 - m1 * m1)

        pts = sorted({float(a * m) for m in mus})
        return float(mp.quad(integrand, [-mp.inf] + pts + [mp.inf]))


@pytest.mark.parametrize("t", [0.05, 0.3, 0.7])
def test_irreducible_loss_of_a_mixture_matches_quadrature(t):
    sch = VPLinear()
    a, s = sch.alpha(t), sch.sigma(t)
    want = _mp_irreducible_eps_bimodal(a, s)
    got = irreducible_loss(bimodal1d(), sch, t, n=50_000, rng=10)
    assert not got.exact
    assert abs(got.value - want) < Z_MC * got.stderr, (got, want)


def test_irreducible_loss_of_a_gaussian_is_exact():
    sch = VPCosine()
    lam = np.linalg.eigvalsh(ANISO.cov)
    for t in (0.0, 0.4, 1.0):
        a, s = sch.alpha(t), sch.sigma(t)
        v = a * a * lam + s * s
        got = irreducible_loss(ANISO, sch, t, prediction="eps")
        assert got.exact and got.value == pytest.approx((a * a * lam / v).sum(), rel=1e-13)
        x0 = irreducible_loss(ANISO, sch, t, prediction="x0").value
        assert x0 == pytest.approx((s * s * lam / v).sum(), rel=1e-13, abs=1e-300)


@pytest.mark.parametrize("prediction", ["x0", "eps", "v", "score", "velocity"])
def test_irreducible_loss_is_the_loss_of_the_exact_model(prediction):
    """The Rao-Blackwellised floor against the plain Monte Carlo loss E|y - E[y|x_t]|^2 with
    (x_0, eps) drawn and the exact conditional mean (an independent estimator)."""
    tgt, sch, t = ring8(), Flow(), 0.35
    a, s = sch.alpha(t), sch.sigma(t)
    da, ds = sch.d_alpha(t), sch.d_sigma(t)
    gen = np.random.default_rng(11)
    n = 40_000
    x0 = tgt.sample(n, rng=gen)
    eps = gen.standard_normal(x0.shape)
    xt = a * x0 + s * eps
    x0h, epsh = tgt.denoise(xt, a, s), tgt.eps(xt, a, s)
    y, yh = {
        "x0": (x0, x0h),
        "eps": (eps, epsh),
        "v": (a * eps - s * x0, a * epsh - s * x0h),
        "score": (-eps / s, -epsh / s),
        "velocity": (da * x0 + ds * eps, da * x0h + ds * epsh),
    }[prediction]
    loss = ((y - yh) ** 2).sum(1)
    got = irreducible_loss(tgt, sch, t, prediction=prediction, n=n, rng=12)
    se = math.hypot(loss.std(ddof=1) / math.sqrt(n), got.stderr)
    assert abs(loss.mean() - got.value) < Z_MC * se


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="t1 must come after t0"):
        pf_ode_log_likelihood(ring8(), VPLinear(), np.zeros((2, 2)), t0=0.5, t1=0.2)
    with pytest.raises(ValueError, match="divergence"):
        pf_ode_log_likelihood(ring8(), VPLinear(), np.zeros((2, 2)), divergence="skilling")
    with pytest.raises(ValueError, match="x must have shape"):
        flow_map(ring8(), VPLinear(), np.zeros((2, 3)), 1.0)
    with pytest.raises(ValueError, match="prediction"):
        irreducible_loss(ring8(), VPLinear(), 0.5, prediction="noise")
    with pytest.raises(ValueError, match="sigma > 0"):
        irreducible_loss(ring8(), VPLinear(), 0.0, prediction="score")
    with pytest.raises(TypeError, match="target"):
        flow_map(object(), VPLinear(), np.zeros((1, 2)), 1.0)


def test_cli_likelihood_report_and_plot(tmp_path, capsys):
    from diffusion_oracle.cli import main

    code = main(["likelihood", "--n", "300", "--schedule", "ddpm-cosine", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    assert code == 0
    for needle in ("-ELBO", "exact -log p(x_0)", "gap", "floor of L_simple", "max |ODE - exact|"):
        assert needle in text
    assert (tmp_path / "likelihood_ring8_ddpm-cosine.png").stat().st_size > 10_000
    assert main(["likelihood", "--n", "1"]) == 2
    assert "--n must be >= 2" in capsys.readouterr().err
