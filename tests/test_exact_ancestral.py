"""ExactAncestral, the exact ancestral sampler of a Gaussian-mixture target, against oracles that
do not share its code: closed-form Gaussian laws (Monte Carlo moments and the exact affine
probe), exact projected mixture CDFs (Kolmogorov-Smirnov, chi-square), Bayes' rule integrated
numerically with scipy.integrate.quad, and dense-matrix linear-Gaussian conditioning."""

import math

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import logsumexp, ndtr

from diffusion_oracle.reference import (
    EDM,
    EmpiricalMixture,
    ExactModel,
    Flow,
    Gaussian,
    GaussianMixture,
    VPLinear,
    get_target,
)
from diffusion_oracle.reference.exact import probe_affine
from diffusion_oracle.reference.grids import Grid, make_grid
from diffusion_oracle.reference.posterior import posterior
from diffusion_oracle.reference.samplers import DDPM, ExactAncestral

ALPHA = 1e-3  # significance level of the statistical tests (fixed seeds: deterministic verdicts)
GAUSS = Gaussian(np.array([0.5, -1.0]), np.array([[0.25, 0.1], [0.1, 0.09]]))


def _expected_law(target_mean, target_cov, grid):
    """Law of an exact sample at the last node: the target itself after a final jump to
    sigma = 0, else N(alpha mu, alpha^2 Sigma + sigma^2 I) at t_N (closed form)."""
    if grid.final_zero:
        return target_mean, target_cov
    a, s = grid.alpha[-1], grid.sigma[-1]
    return a * target_mean, a * a * target_cov + s * s * np.eye(target_mean.size)


def _initial(target, grid, n, seed):
    """n exact draws of p_{t_0}."""
    return target.diffuse(grid.alpha[0], grid.sigma[0]).sample(n, np.random.default_rng(seed))


def _grid(steps, final_zero, schedule=None):
    return make_grid(schedule or VPLinear(), steps, "log_snr", final_zero=final_zero)


# ---------------------------------------------------------------------------- (1) Gaussian


@pytest.mark.parametrize(
    "steps,final_zero,as_mixture",
    [(1, False, False), (2, False, True), (5, False, False), (2, True, True), (5, True, False)],
)
def test_gaussian_moments_within_five_standard_errors(steps, final_zero, as_mixture):
    """Mean and covariance of n = 200_000 outputs against the exact law. Standard errors of a
    Gaussian sample: SE(mean_j) = sqrt(S_jj / n), SE(cov_ij) = sqrt((S_ii S_jj + S_ij^2) / n)
    (Var(x_i x_j) = S_ii S_jj + S_ij^2 for a centred Gaussian; Anderson 2003, Thm. 3.4.4);
    every entry must lie within 5 SE. The target is given as a Gaussian or as its one-component
    GaussianMixture (the sampler converts the former)."""
    n = 200_000
    target = GAUSS.as_mixture() if as_mixture else GAUSS
    grid = _grid(steps, final_zero)
    model = ExactModel(target, grid.schedule, prediction="eps")
    x = _initial(GAUSS, grid, n, seed=10 + steps)
    out = ExactAncestral()(model, x, grid, rng=np.random.default_rng(20 + steps))
    m, S = _expected_law(GAUSS.mean_vec, GAUSS.cov, grid)
    se_m = np.sqrt(np.diag(S) / n)
    se_S = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S * S) / n)
    assert np.all(np.abs(out.mean(0) - m) < 5 * se_m), (out.mean(0), m, se_m)
    S_hat = np.cov(out, rowvar=False)
    assert np.all(np.abs(S_hat - S) < 5 * se_S), (S_hat, S, se_S)
    assert model.n_calls == grid.steps


@pytest.mark.parametrize("schedule", [VPLinear(), EDM()], ids=repr)
@pytest.mark.parametrize("steps,final_zero", [(1, False), (3, False), (2, True), (5, True)])
def test_gaussian_output_law_exact_by_affine_probe(schedule, steps, final_zero):
    """On a Gaussian target the sampler is affine in (x_init, noise): the probe of
    reference.exact recovers the map and its output law from x_init ~ p_{t_0} exactly, without
    Monte Carlo. It must be the exact law at every N, to rounding."""
    grid = _grid(steps, final_zero, schedule)
    model = ExactModel(GAUSS, schedule, prediction="x0")
    A = probe_affine(ExactAncestral(), model, grid, 2)
    assert A.residual < 1e-12
    a0, s0 = grid.alpha[0], grid.sigma[0]
    m, S = A.output_law(a0 * GAUSS.mean_vec, a0 * a0 * GAUSS.cov + s0 * s0 * np.eye(2))
    m_ref, S_ref = _expected_law(GAUSS.mean_vec, GAUSS.cov, grid)
    np.testing.assert_allclose(m, m_ref, rtol=0, atol=1e-11 * (1 + np.abs(m_ref).max()))
    np.testing.assert_allclose(S, S_ref, rtol=0, atol=1e-11 * np.abs(S_ref).max())


# ------------------------------------------------------------------ (2) mixtures: KS, chi-square


def _projected_cdf(target, u, grid):
    """CDF of u . x for x from the exact law at the grid's last node: a 1-D mixture with
    means alpha u.mu_k and variances alpha^2 u^T Sigma_k u + sigma^2 |u|^2 (computed here from
    the target's parameters, not by the sampler's code)."""
    a, s = (1.0, 0.0) if grid.final_zero else (grid.alpha[-1], grid.sigma[-1])
    covs = np.einsum("kd,de->kde", target._evals, np.eye(target.d)) if target._evecs is None \
        else target.covs  # fmt: skip
    loc = a * target.means @ u
    scale = np.sqrt(a * a * np.einsum("i,kij,j->k", u, covs, u) + s * s * (u @ u))
    w = target.weights
    return lambda y: (w * ndtr((np.asarray(y)[..., None] - loc) / scale)).sum(-1)


def _mixture_checks(target, grid, out):
    """p-values: KS of projections against the exact projected CDF; chi-square of the
    frequencies of the regions around each mode against their exact (or, for ring8, exact to
    1e-13) probabilities."""
    pvals = {}
    dirs = [np.array([1.0])] if target.d == 1 else [
        np.array([math.cos(t), math.sin(t)]) for t in (0.3, 1.2, 2.0)
    ]  # fmt: skip
    for j, u in enumerate(dirs):
        pvals[f"ks{j}"] = stats.kstest(out @ u, _projected_cdf(target, u, grid)).pvalue
    n = out.shape[0]
    if target.d == 1:  # two half-lines split at c; exact probabilities from the projected CDF
        c = 0.1
        p_lo = float(_projected_cdf(target, np.array([1.0]), grid)(c))
        counts = np.array([(out[:, 0] < c).sum(), (out[:, 0] >= c).sum()])
        expected = n * np.array([p_lo, 1.0 - p_lo])
    else:
        # nearest mode (on the diffused ring when the grid ends at sigma > 0); a mode's sector
        # boundary lies sin(pi/8) = 0.38 from it, at least 7 of its standard deviations, so the
        # sector probabilities equal the weights to ~1e-13
        a = 1.0 if grid.final_zero else grid.alpha[-1]
        d2 = ((out[:, None, :] - a * target.means[None]) ** 2).sum(-1)
        counts = np.bincount(d2.argmin(1), minlength=target.K)
        expected = n * target.weights
    pvals["chi2"] = stats.chisquare(counts, expected).pvalue
    return pvals


@pytest.mark.parametrize("name", ["ring8", "bimodal1d"])
@pytest.mark.parametrize("steps", [2, 8])
@pytest.mark.parametrize("final_zero", [True, False])
def test_mixture_output_law_ks_and_chi_square(name, steps, final_zero):
    """KS of projections and chi-square of mode frequencies at level 1e-3 (fixed seeds), for
    N in (2, 8), ending at the data (final jump) or at t_end = 0.3 (sigma > 0)."""
    target = get_target(name)
    sch = VPLinear()
    grid = make_grid(sch, steps, "log_snr", final_zero=final_zero,
                     t_end=None if final_zero else 0.3)  # fmt: skip
    n = 20_000
    x = _initial(target, grid, n, seed=100 + steps)
    out = ExactAncestral()(ExactModel(target, sch), x, grid, rng=np.random.default_rng(7 + steps))
    pvals = _mixture_checks(target, grid, out)
    assert min(pvals.values()) > ALPHA, pvals


def test_mixture_checks_have_power():
    """The same checks reject DDPM at N = 2 on ring8 (its 2-step output law is far from the
    target): the tests above would catch an inexact transition."""
    target = get_target("ring8")
    grid = _grid(2, True)
    x = _initial(target, grid, 20_000, seed=102)
    out = DDPM()(ExactModel(target, grid.schedule), x, grid, rng=np.random.default_rng(9))
    assert min(_mixture_checks(target, grid, out).values()) < ALPHA


# ------------------------------------------------- (3) one transition against Bayes' rule by quad

MIX1 = GaussianMixture([0.4, 0.6], [[-1.2], [0.8]], [0.15**2, 0.5**2], covariance_type="iso")


def _transition_cases():
    return [
        ("vp", Grid(VPLinear(), [0.6, 0.35])),
        ("vp-final", Grid(VPLinear(), [0.2], final_zero=True)),
        ("edm", Grid(EDM(), [0.5, 0.3])),
        ("flow-from-noise", Grid(Flow(), [1.0, 0.7])),  # alpha_t = 0: x_s independent of x_t
    ]


def _bayes_oracle(grid, x_t):
    """Unnormalised density of p(x_s | x_t) = p_s(x_s) q(x_t | x_s) / p_t(x_t) for MIX1, with
    p_s = sum_k w_k N(alpha_s mu_k, alpha_s^2 v_k + sigma_s^2) and q(x_t | x_s) =
    N(alpha_{t|s} x_s, sigma_t^2 - alpha_{t|s}^2 sigma_s^2): scipy.stats densities only."""
    a_t, s_t, a_s, s_s = grid.alpha[0], grid.sigma[0], grid.alpha[1], grid.sigma[1]
    w, mu, v = MIX1.weights, MIX1.means[:, 0], np.array([0.15**2, 0.5**2])
    a_ts = a_t / a_s
    sd_ts = math.sqrt(s_t**2 - a_ts**2 * s_s**2)
    sd_s = np.sqrt(a_s**2 * v + s_s**2)

    def f(y):
        p_s = (w * stats.norm.pdf(y, a_s * mu, sd_s)).sum()
        return p_s * stats.norm.pdf(x_t, a_ts * y, sd_ts)

    return f, a_s * mu, sd_s


@pytest.mark.parametrize("case", range(4), ids=[c[0] for c in _transition_cases()])
@pytest.mark.parametrize("x_t", [0.1, -1.5])
def test_one_transition_against_numerical_bayes(case, x_t):
    """p(x_s | x_t) integrated with quad (normaliser, CDF at 9 points, mean, variance, fourth
    central moment): the mixture law ExactAncestral.transition reports matches it to 1e-8, and
    n = 100_000 draws of one sampler step from x_t match its mean and variance within 5 SE
    (SE(mean) = sqrt(var/n), SE(var) = sqrt((mu_4 - var^2)/n)) and its CDF by KS at 1e-3."""
    _, grid = _transition_cases()[case]
    f, locs, sds = _bayes_oracle(grid, x_t)
    lo, hi = (locs - 12 * sds).min(), (locs + 12 * sds).max()
    pts = np.sort(locs)

    def quad(g, a, b):
        inner = [p for p in pts if a < p < b]
        opts = dict(points=inner or None, limit=200, epsabs=1e-13, epsrel=1e-10)
        return integrate.quad(g, a, b, **opts)[0]

    Z = quad(f, lo, hi)
    mean = quad(lambda y: y * f(y), lo, hi) / Z
    var = quad(lambda y: (y - mean) ** 2 * f(y), lo, hi) / Z
    mu4 = quad(lambda y: (y - mean) ** 4 * f(y), lo, hi) / Z
    ys = mean + math.sqrt(var) * np.linspace(-2.0, 2.0, 9)
    cdf_oracle = np.array([quad(f, lo, y) / Z for y in ys])

    sampler = ExactAncestral()
    r, means, covs = sampler.transition(MIX1, np.array([[x_t]]), grid, 0)
    sd = np.sqrt(covs[:, 0, 0])

    def cdf(y):
        return (r[0] * ndtr((np.asarray(y)[..., None] - means[0, :, 0]) / sd)).sum(-1)

    np.testing.assert_allclose(cdf(ys), cdf_oracle, rtol=0, atol=1e-8)
    np.testing.assert_allclose((r[0] * means[0, :, 0]).sum(), mean, rtol=0, atol=1e-8)

    n = 100_000
    model = ExactModel(MIX1, grid.schedule)
    xs = sampler(model, np.full((n, 1), x_t), grid, rng=np.random.default_rng(31 + case))[:, 0]
    assert abs(xs.mean() - mean) < 5 * math.sqrt(var / n)
    assert abs(xs.var() - var) < 5 * math.sqrt((mu4 - var * var) / n)
    assert stats.kstest(xs, cdf).pvalue > ALPHA


def _dense_transition(target, x, a_t, s_t, a_s, s_s):
    """Independent oracle for full covariances: responsibilities from scipy's multivariate
    normal log-densities, and per component the conditional of the joint Gaussian of
    (x_s, x_t) with dense solves (Bishop 2006, PRML eq. 2.81-2.82)."""
    d = target.d
    a, b2 = a_t / a_s, s_t**2 - (a_t / a_s) ** 2 * s_s**2
    logp, ms, Ps = [], [], []
    for k in range(target.K):
        S = target.covs[k]
        D = a_s**2 * S + s_s**2 * np.eye(d)
        C = a * a * D + b2 * np.eye(d)
        logp.append(np.log(target.weights[k])
                    + stats.multivariate_normal(a_t * target.means[k], C).logpdf(x))  # fmt: skip
        G = np.linalg.solve(C, a * D).T  # a D C^{-1}
        ms.append(a_s * target.means[k] + (x - a_t * target.means[k]) @ G.T)
        Ps.append(D - G @ (a * D))
    logp = np.array(logp).T
    return np.exp(logp - logsumexp(logp, axis=1, keepdims=True)), np.stack(ms, 1), np.stack(Ps)


def test_transition_full_covariance_against_dense_conditioning():
    """A 2-D mixture of two rotated, anisotropic components: weights, means and covariances of
    p(x_s | x_t) from .transition equal the dense linear-Gaussian conditional to 1e-10."""
    covs = np.array([[[0.3, 0.12], [0.12, 0.08]], [[0.05, -0.02], [-0.02, 0.4]]])
    target = GaussianMixture([0.35, 0.65], [[1.0, -0.5], [-0.7, 0.9]], covs)
    x = np.random.default_rng(3).standard_normal((6, 2))
    for grid in (Grid(VPLinear(), [0.7, 0.4]), Grid(EDM(), [0.4, 0.2])):
        r, m, P = ExactAncestral().transition(target, x, grid, 0)
        a_t, s_t, a_s, s_s = grid.alpha[0], grid.sigma[0], grid.alpha[1], grid.sigma[1]
        r2, m2, P2 = _dense_transition(target, x, a_t, s_t, a_s, s_s)
        np.testing.assert_allclose(r, r2, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(m, m2, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(P, P2, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["ring8", "bimodal1d"])
def test_transition_mean_and_covariance_match_model_and_forward_posterior(name):
    """Tower property: E[x_s | x_t] = coef_x0 E[x_0 | x_t] + coef_xt x_t with the model's x0
    prediction and reference.posterior's coefficients, and Cov[x_s | x_t] = coef_x0^2
    Cov[x_0 | x_t] + var I with the target's posterior covariance; at the final node the mean is
    the model's x0 itself."""
    target = get_target(name)
    grid = _grid(5, True)
    model = ExactModel(target, grid.schedule, prediction="x0")
    sampler = ExactAncestral()
    x = _initial(target, grid, 50, seed=5)
    for i in range(grid.steps):
        r, m, P = sampler.transition(model, x, grid, i)
        mean = np.einsum("nk,nkd->nd", r, m)
        cov = np.einsum("nk,kde->nde", r, P) + np.einsum("nk,nkd,nke->nde", r, m, m)
        cov -= np.einsum("nd,ne->nde", mean, mean)
        x0 = model(x, grid.t[i])
        post_cov = target.posterior_cov(x, grid.alpha[i], grid.sigma[i])
        if i == grid.steps - 1:  # the final node, sigma = 0
            ref_mean, ref_cov = x0, post_cov
        else:
            q = posterior(grid.schedule, grid.t[i + 1], grid.t[i])
            ref_mean = q.mean(x0, x)
            ref_cov = q.coef_x0**2 * post_cov + q.var * np.eye(target.d)
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(cov, ref_cov, rtol=1e-8, atol=1e-12)
        x = sampler._step_exact(target, x, grid, i, np.random.default_rng(i))


# ---------------------------------------------------------------------- (4) protocol and errors


class _NoTarget:
    prediction = "eps"

    def __call__(self, x, t):
        return np.zeros_like(x)


def test_model_without_target_raises_type_error():
    grid = _grid(3, True)
    with pytest.raises(TypeError, match="target GaussianMixture"):
        ExactAncestral()(_NoTarget(), np.zeros((4, 2)), grid, rng=0)
    bad = _NoTarget()
    bad.target = "ring8"
    with pytest.raises(TypeError, match="target str"):
        ExactAncestral()(bad, np.zeros((4, 2)), grid, rng=0)


def test_protocol_attributes_calls_draws_and_edge_cases():
    s = ExactAncestral()
    assert (s.name, s.order, s.stochastic, s.default_grid) == (
        "exact-ancestral", 0, True, "log_snr")  # fmt: skip
    target = get_target("ring8")
    grid = _grid(4, True)
    model = ExactModel(target, grid.schedule)

    class Recorder:
        def __init__(self):
            self.g, self.shapes = np.random.default_rng(0), []

        def standard_normal(self, shape):
            self.shapes.append(tuple(shape))
            return self.g.standard_normal(shape)

    rec = Recorder()
    out = s(model, _initial(target, grid, 5, seed=1), grid, rng=rec)
    assert out.shape == (5, 2) and np.isfinite(out).all()
    assert model.n_calls == grid.steps
    assert rec.shapes == [(5, 2)] * (2 * grid.steps)  # component pick + Gaussian, per step
    empty = s(model, np.zeros((0, 2)), grid, rng=0)
    assert empty.shape == (0, 2)
    with pytest.raises(ValueError, match="d = 2"):
        s(model, np.zeros((3, 1)), grid, rng=0)


def test_empirical_mixture_returns_data_points():
    """Singular components (a finite data set): the final draw is one of the data points,
    exactly, chosen with the right frequencies (chi-square)."""
    data = np.array([[0.0, 1.0], [2.0, -1.0], [-1.5, -0.5]])
    target = EmpiricalMixture(data, weights=[0.2, 0.5, 0.3])
    grid = _grid(3, True)
    n = 6000
    x = _initial(target, grid, n, seed=4)
    out = ExactAncestral()(ExactModel(target, grid.schedule), x, grid, rng=5)
    hit = (out[:, None, :] == data[None]).all(-1)
    assert hit.sum(1).tolist() == [1] * n
    assert stats.chisquare(hit.sum(0), n * target.weights).pvalue > ALPHA
