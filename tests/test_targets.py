"""Gaussian-mixture ground truth: derivatives against finite differences, Tweedie, normalisation,
the one-component mixture against the independent Gaussian, Monte Carlo checks of the posterior
mean and covariance, responsibility-weight recovery, and the linear-observation conditional.

Statistical checks state their failure budget: each compares at 5 standard errors
(two-sided false-alarm ~5.7e-7 per comparison) with fixed seeds.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate
from scipy.stats import multivariate_normal
from tolerances import tol

from diffusion_oracle import strategies as dst
from diffusion_oracle.reference import (
    EmpiricalMixture,
    Gaussian,
    GaussianMixture,
    VPLinear,
    aniso64,
    bimodal1d,
    get_target,
    ring8,
)

Z = 5.0  # standard errors allowed in statistical comparisons (see module docstring)


def _path():
    return st.tuples(st.floats(0.05, 1.0), st.floats(0.05, 1.5))


def _points(gm, a, s, seed, n=4):
    return gm.diffuse(a, s).sample(n, np.random.default_rng(seed))


@given(dst.gaussian_mixtures(), _path(), st.integers(0, 2**31))
def test_score_is_the_gradient_of_log_prob(gm, path, seed):
    """Central differences with step h = 1e-5 * length scale: truncation ~ h^2 |f'''| and
    rounding ~ eps |log p| / h, both below 1e-6 relative to the score scale 1/length."""
    a, s = path
    x = _points(gm, a, s, seed)
    ell = math.sqrt(s * s + a * a * gm._evals.min())
    h = 1e-5 * ell
    fd = np.empty_like(x)
    for i in range(gm.d):
        e = np.zeros(gm.d)
        e[i] = h
        fd[:, i] = (gm.log_prob(x + e, a, s) - gm.log_prob(x - e, a, s)) / (2 * h)
    score = gm.score(x, a, s)
    scale = 1.0 / ell + np.abs(score).max()
    assert np.abs(score - fd).max() <= 1e-6 * scale


@given(dst.gaussian_mixtures(), _path(), st.integers(0, 2**31))
def test_laplacian_is_the_divergence_of_the_score(gm, path, seed):
    a, s = path
    x = _points(gm, a, s, seed)
    ell2 = s * s + a * a * gm._evals.min()
    h = 1e-5 * math.sqrt(ell2)
    div = np.zeros(x.shape[0])
    for i in range(gm.d):
        e = np.zeros(gm.d)
        e[i] = h
        div += (gm.score(x + e, a, s)[:, i] - gm.score(x - e, a, s)[:, i]) / (2 * h)
    lap = gm.laplacian(x, a, s)
    scale = gm.d / ell2 + np.abs(lap).max() + (gm.score(x, a, s) ** 2).sum(-1).max()
    assert np.abs(lap - div).max() <= 1e-5 * scale


@given(dst.gaussian_mixtures(), _path(), st.integers(0, 2**31))
def test_tweedie_and_the_prediction_identities(gm, path, seed):
    """E[x0|x] = (x + sigma^2 score)/alpha (Tweedie; stable here, alpha >= 0.05), alpha E[x0|x] +
    sigma E[eps|x] = x, E[eps|x] = -sigma score; second-order Tweedie
    Cov[x0|x] = (sigma^2/alpha^2)(I + sigma^2 Hessian) in trace form via the Laplacian."""
    a, s = path
    x = _points(gm, a, s, seed)
    score, x0, eps = gm.score(x, a, s), gm.denoise(x, a, s), gm.eps(x, a, s)
    size = np.abs(x).max() + np.abs(x0).max() + 1.0
    cond = 1.0 / a  # the Tweedie route divides by alpha
    assert np.abs(x0 - (x + s * s * score) / a).max() <= 1e-12 * size * cond
    assert np.abs(a * x0 + s * eps - x).max() <= 1e-12 * size
    assert np.abs(eps + s * score).max() <= 1e-12 * (np.abs(eps).max() + 1)
    tr_cov = np.trace(gm.posterior_cov(x, a, s), axis1=-2, axis2=-1)
    tr_tweedie = (s * s / (a * a)) * (gm.d + s * s * gm.laplacian(x, a, s))
    assert np.allclose(tr_cov, tr_tweedie, rtol=1e-8, atol=1e-10 * (s / a) ** 2 * gm.d)


@given(dst.spd_matrices(d=3, max_condition=1e3), _path(), st.integers(0, 2**31))
def test_one_component_mixture_equals_the_gaussian(cov, path, seed):
    """Mixture machinery (eigendecomposition, logsumexp) against the independent Cholesky
    Gaussian. Error budget: c eps cond(C) (tolerances 'solve_per_cond')."""
    a, s = path
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal(3)
    g = Gaussian(mu, cov)
    gm = GaussianMixture([1.0], mu[None], cov[None])
    x = g.diffuse(a, s).sample(5, rng)
    C = a * a * cov + s * s * np.eye(3)
    rt = tol("solve_per_cond")["rtol"] * np.linalg.cond(C)
    for name in ("score", "denoise", "eps", "v", "laplacian", "posterior_cov", "log_prob"):
        ours, ref = getattr(gm, name)(x, a, s), getattr(g, name)(x, a, s)
        scale = np.abs(ref).max() + 1e-300
        if name == "log_prob":
            scale = np.abs(ref).max() + 1.0
        assert np.abs(ours - ref).max() <= rt * scale, (name, ours, ref)
    assert np.allclose(gm.responsibilities(x, a, s), 1.0)


def test_gaussian_against_scipy(rng):
    g = Gaussian(np.array([1.0, -2.0]), np.array([[2.0, 0.3], [0.3, 0.5]]))
    x = rng.standard_normal((6, 2))
    C = 0.49 * g.cov + 0.51 * np.eye(2)
    ref = multivariate_normal(0.7 * g.mean_vec, C).logpdf(x)
    assert np.allclose(g.log_prob(x, 0.7, math.sqrt(0.51)), ref, rtol=1e-13)


def test_log_prob_integrates_to_one_in_1d():
    gm = bimodal1d()
    for a, s in [(1.0, 0.0), (0.8, 0.6), (0.05, 1.0)]:

        def p(x, a=a, s=s):
            return float(np.exp(gm.log_prob(np.array([[x]]), a, s))[0])

        pts = sorted(set((a * gm.means[:, 0]).tolist()))
        total = sum(
            integrate.quad(p, lo, hi, limit=400, epsabs=1e-13, epsrel=1e-12)[0]
            for lo, hi in zip([-np.inf, *pts], [*pts, np.inf])
        )
        assert abs(total - 1.0) <= 1e-10, (a, s, total)


def test_log_prob_integrates_to_one_in_2d():
    """ring8 (mode std 0.05) on a fine grid: the trapezoid rule on a box covering +-12 std of
    every component converges spectrally for Gaussians; 1e-9 is far above its error."""
    gm = ring8()
    for a, s in [(1.0, 0.0), (0.9, 0.2), (0.3, 0.95)]:
        sd = math.sqrt(a * a * 0.05**2 + s * s)
        lim = a * 1.0 + 12 * sd
        n = int(2 * lim / (sd / 6)) + 1
        g = np.linspace(-lim, lim, n)
        X, Y = np.meshgrid(g, g)
        p = np.exp(gm.log_prob(np.stack([X.ravel(), Y.ravel()], 1), a, s)).reshape(X.shape)
        total = np.trapezoid(np.trapezoid(p, g, axis=1), g)
        assert abs(total - 1.0) <= 1e-9, (a, s, total)


@pytest.mark.parametrize("name", ["bimodal1d", "ring8", "aniso64"])
def test_posterior_mean_and_covariance_by_importance_sampling(name):
    """E[x0|x_t] and Cov[x0|x_t] against self-normalised importance sampling with x0 ~ p_0 and
    weights N(x_t; alpha x0, sigma^2 I). Delta-method standard errors; the check requires an
    effective sample size >= 500 so that the standard error is itself reliable."""
    gm = get_target(name)
    rng = np.random.default_rng(7)
    a, s = (0.8, 0.6) if name != "aniso64" else (0.3, 0.954)
    n = 400_000 if name != "aniso64" else 200_000
    x0 = gm.sample(n, rng)
    for x in gm.diffuse(a, s).sample(3, rng):
        logw = -0.5 * ((x - a * x0) ** 2).sum(-1) / (s * s)
        w = np.exp(logw - logw.max())
        w /= w.sum()
        ess = 1.0 / (w * w).sum()
        assert ess >= 500, f"effective sample size {ess:.0f} too small for a reliable check"
        m_exact = gm.denoise(x[None], a, s)[0]
        m_is = w @ x0
        se = np.sqrt((w * w) @ (x0 - m_is) ** 2)
        assert (np.abs(m_is - m_exact) <= Z * se + 1e-12).all(), (m_is, m_exact, se)
        C_exact = gm.posterior_cov(x[None], a, s)[0]
        dev = x0 - m_exact
        idx = np.arange(min(gm.d, 6))  # a 6x6 block is enough and keeps memory small
        f = dev[:, idx, None] * dev[:, None, idx]
        C_is = np.einsum("n,nij->ij", w, f)
        se_c = np.sqrt(np.einsum("n,nij->ij", w * w, (f - C_is) ** 2))
        block = C_exact[np.ix_(idx, idx)]
        assert (np.abs(C_is - block) <= Z * se_c + 1e-12).all(), (C_is, block, se_c)


@pytest.mark.parametrize("name", ["bimodal1d", "ring8", "aniso64"])
@pytest.mark.parametrize("path", [(1.0, 0.0), (0.7, 0.714), (0.1, 0.995)])
def test_mean_responsibilities_recover_the_weights(name, path):
    """E_{p_t}[r_k(X)] = w_k at every t: with n exact samples the mean responsibility has
    standard error <= sqrt(w (1 - w) / n) (r in [0, 1] with mean w)."""
    gm = get_target(name)
    a, s = path
    n = 40_000 if name != "aniso64" else 10_000
    x = gm.diffuse(a, s).sample(n, np.random.default_rng(11))
    r = gm.responsibilities(x, a, s) if s > 0 else gm.responsibilities(x)
    bound = Z * np.sqrt(gm.weights * (1 - gm.weights) / n)
    assert (np.abs(r.mean(0) - gm.weights) <= bound).all()


@given(dst.gaussian_mixtures(d=2, with_labels=False), st.integers(0, 2**31))
def test_diffuse_is_the_closed_form_marginal(gm, seed):
    a, s = 0.6, 0.8
    pt = gm.diffuse(a, s)
    assert np.allclose(pt.means, a * gm.means)
    assert np.allclose(pt.covs, a * a * gm.covs + s * s * np.eye(2), rtol=1e-12, atol=1e-15)
    x = _points(gm, a, s, seed)
    assert np.allclose(pt.log_prob(x), gm.log_prob(x, a, s), rtol=1e-12, atol=1e-12)


def test_condition_matches_joint_gaussian_conditioning(rng):
    """For one Gaussian the conditional given y = A x + n is the Schur complement of the joint
    covariance [[S, S A^T], [A S, A S A^T + R]], solved here with numpy.linalg.solve."""
    d, m = 4, 2
    B = rng.standard_normal((d, d))
    S = B @ B.T + 0.5 * np.eye(d)
    mu = rng.standard_normal(d)
    A = rng.standard_normal((m, d))
    R = 0.1 * np.eye(m)
    y = rng.standard_normal(m)
    cond = GaussianMixture([1.0], mu[None], S[None]).condition(A, y, R)
    Syy = A @ S @ A.T + R
    Sxy = S @ A.T
    mean_ref = mu + Sxy @ np.linalg.solve(Syy, y - A @ mu)
    cov_ref = S - Sxy @ np.linalg.solve(Syy, Sxy.T)
    assert np.allclose(cond.means[0], mean_ref, rtol=1e-12, atol=1e-12)
    assert np.allclose(cond.covs[0], cov_ref, rtol=1e-11, atol=1e-12)


def test_condition_mixture_weights_and_inpainting(rng):
    """Mixture weights follow the evidence w_k N(y; A mu_k, A S_k A^T + R) (scipy logpdf), and
    noise-free inpainting (A selects coordinates, R = 0) pins the observed coordinates."""
    gm = ring8()
    A = np.array([[1.0, 0.0]])
    y = np.array([0.6])
    c = gm.condition(A, y, 0.01**2)
    ev = np.array(
        [
            multivariate_normal(A @ gm.means[k], A @ gm.covs[k] @ A.T + 0.01**2).logpdf(y)
            for k in range(gm.K)
        ]
    )
    w = np.exp(np.log(gm.weights) + ev - (np.log(gm.weights) + ev).max())
    assert np.allclose(c.weights, w / w.sum(), rtol=1e-12)
    c0 = gm.condition(A, y, 0.0)
    assert np.allclose(c0.means[:, 0], 0.6, atol=1e-14)
    assert np.allclose(c0.covs[:, 0, 0], 0.0, atol=1e-15)
    xs = c0.sample(1000, rng)
    assert np.allclose(xs[:, 0], 0.6, atol=1e-12)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        c0.score(np.zeros((1, 2)), 1.0, 0.0)
    assert np.isfinite(c0.score(np.zeros((1, 2)), 0.9, 0.1)).all()


def test_condition_against_importance_sampling():
    """The conditional mean of ring8 given a noisy observation of the first coordinate, against
    self-normalised importance sampling from the prior (5 standard errors)."""
    gm = ring8()
    rng = np.random.default_rng(3)
    A, y, R = np.array([[1.0, 0.0]]), np.array([0.5]), 0.2**2
    x0 = gm.sample(400_000, rng)
    logw = -0.5 * (x0[:, 0] - 0.5) ** 2 / R
    w = np.exp(logw - logw.max())
    w /= w.sum()
    m_is = w @ x0
    se = np.sqrt((w * w) @ (x0 - m_is) ** 2)
    m = gm.condition(A, y, R).mean()
    assert (np.abs(m - m_is) <= Z * se).all()


def test_empirical_mixture_is_the_ideal_denoiser(rng):
    data = rng.standard_normal((7, 3))
    em = EmpiricalMixture(data)
    x = rng.standard_normal((5, 3))
    s = 0.4
    logits = -0.5 * ((x[:, None, :] - data[None]) ** 2).sum(-1) / s**2
    w = np.exp(logits - logits.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    assert np.allclose(em.denoise(x, 1.0, s), w @ data, rtol=1e-12, atol=1e-14)
    assert np.allclose(em.posterior_cov(x, 1.0, s).shape, (5, 3, 3))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        em.log_prob(x, 1.0, 0.0)


def test_log_space_survives_high_dimensions_and_far_points():
    """Where pdf-then-log underflows (EDM2 toy in float32), log space stays finite."""
    gm = aniso64()
    x = np.full((2, 64), 40.0)
    for a, s in [(1.0, 1e-3), (0.999, 0.045), (0.01, 1.0)]:
        for q in ("log_prob", "score", "denoise", "eps", "laplacian"):
            assert np.isfinite(getattr(gm, q)(x, a, s)).all(), (q, a, s)


def test_per_point_times(rng):
    """alpha, sigma given per point equal the scalar calls point by point."""
    gm = ring8()
    sch = VPLinear()
    t = np.array([0.1, 0.5, 0.9])
    x = rng.standard_normal((3, 2))
    a, s = sch.alpha(t), sch.sigma(t)
    batch = gm.denoise(x, a, s)
    for i in range(3):
        assert np.allclose(batch[i], gm.denoise(x[i : i + 1], a[i], s[i])[0], rtol=1e-15)


def test_mixture_moments_and_labels(rng):
    gm = ring8()
    assert np.allclose(gm.mean(), 0.0, atol=1e-15)
    assert np.allclose(gm.covariance(), (0.5 + 0.05**2) * np.eye(2), rtol=1e-13)
    sub = gm.select(3)
    assert sub.K == 1 and np.allclose(sub.means[0], gm.means[3])
    labs, p = gm.class_probs()
    assert np.allclose(p, 1 / 8)
    x, comp = gm.sample(20_000, rng, return_components=True)
    assert np.abs(x.mean(0)).max() <= Z * math.sqrt(0.5 / 20_000)
    assert set(np.unique(comp)) == set(range(8))


def test_eps_near_sigma_zero_and_x0_near_alpha_zero_are_finite():
    """Policy: no division by alpha near t = T or by sigma near t = 0."""
    gm = bimodal1d()
    x = np.array([[0.3], [1.2]])
    assert np.isfinite(gm.eps(x, 1.0, 1e-300)).all()
    assert np.isfinite(gm.denoise(x, 1e-300, 1.0)).all()
    assert np.isfinite(gm.denoise(x, 0.0, 1.0)).all()
    assert np.allclose(gm.denoise(x, 0.0, 1.0), gm.mean())  # no information: the prior mean
