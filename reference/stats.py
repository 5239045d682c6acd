"""Tier 3, statistical evidence: one-sample tests of samples against an exact Gaussian mixture.

Each test has a declared false-alarm rate ``alpha`` and a null that is exact or calibrated by
exact sampling from the target (DESIGN.md, tier 3; ground-truth.md Sec. 4):

- :func:`responsibility_test`: E_p[r_k(X)] = w_k for every component; z-tests with the null
  variance of r_k estimated from exact samples, Bonferroni over the K components. Catches
  mode-mass errors that score-based discrepancies miss.
- :func:`projected_ks_test`: Kolmogorov-Smirnov against the exact CDF of random 1-D projections
  (a projected mixture is a 1-D mixture with closed-form CDF), Bonferroni over the projections.
- :func:`nll_test`: two-sided z-test of the mean negative log-likelihood under the target against
  its null mean and variance from exact samples (an under-dispersed sampler scores a *lower* NLL,
  so a one-sided test would miss it).
- :func:`mmd_test`: unbiased MMD^2 with a Gaussian kernel against the target, whose kernel mean
  embedding is closed-form for a mixture; the null quantile comes from exact-sample replicates.

:func:`responsibility_sample_size` derives n from the smallest weight error to resolve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from scipy.spatial.distance import pdist
from scipy.special import logsumexp

from ._checks import _r, finite, finite_scalar, positive_int, positive_scalar
from .forward import _rng
from .targets import GaussianMixture

__all__ = [
    "TestResult",
    "responsibility_test",
    "projected_ks_test",
    "nll_test",
    "mmd_test",
    "mmd_null",
    "responsibility_sample_size",
]


@dataclass
class TestResult:
    """One statistical verdict: ``passed`` is ``pvalue >= alpha`` (or ``statistic <= threshold``
    for calibrated quantile tests); ``detail`` says what was compared."""

    name: str
    statistic: float
    pvalue: float
    alpha: float
    passed: bool
    detail: str

    def __str__(self):
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"{self.name}: {verdict} (p = {self.pvalue:.3g}, alpha = {self.alpha:g}; {self.detail})"
        )


def _samples(x, target):
    if not isinstance(target, GaussianMixture):
        raise TypeError(
            f"target must be a GaussianMixture, got {type(target).__name__} {_r(target)}"
        )
    x = finite(x, "x")
    if x.ndim != 2 or x.shape[1] != target.d:
        raise ValueError(f"x must have shape (n, {target.d}), got {x.shape}")
    if x.shape[0] < 2:  # a test of no or one sample has no verdict (its variance is undefined)
        raise ValueError(f"x must hold at least 2 samples for a test, got shape {x.shape}")
    return x


def _level(alpha) -> float:
    """A test's false-alarm rate: a scalar in (0, 1)."""
    a = finite_scalar(alpha, "alpha")
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {_r(a)}")
    return a


def responsibility_sample_size(
    w: float, delta_w: float, *, alpha: float, K: int, power: float = 0.9
) -> int:
    """n to detect a weight error ``delta_w`` of a component of weight ``w`` with the given
    power at level alpha/K (two-sided): n = (z_{1-alpha/(2K)} + z_power)^2 w (1 - w) / delta_w^2
    (the null variance of r_k is at most w (1 - w))."""
    w = finite_scalar(w, "w")
    if not 0.0 < w < 1.0:
        raise ValueError(f"w must lie in (0, 1), got {_r(w)}")
    delta_w = positive_scalar(delta_w, "delta_w")
    alpha, K = _level(alpha), positive_int(K, "K")
    power = finite_scalar(power, "power")
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must lie in (0, 1), got {_r(power)}")
    z = sps.norm.ppf(1 - alpha / (2 * K)) + sps.norm.ppf(power)
    return int(math.ceil(z * z * w * (1 - w) / (delta_w * delta_w)))


def responsibility_test(
    target: GaussianMixture, x, *, alpha: float = 1e-3, null_n: int = 50_000, rng=0
) -> TestResult:
    """z_k = (mean_i r_k(x_i) - w_k) / sqrt(Var_p[r_k]/n) for each component k, Var_p from
    ``null_n`` exact samples (the bound w_k (1 - w_k) for components too rare to estimate it);
    two-sided, Bonferroni: pass if min_k p_k >= alpha / K."""
    x = _samples(x, target)
    alpha, null_n = _level(alpha), positive_int(null_n, "null_n", minimum=2)
    n = x.shape[0]
    r = target.responsibilities(x)
    y = target.sample(null_n, _rng(rng))
    r_null = target.responsibilities(y)
    var = r_null.var(0, ddof=1)
    # a component that fewer than 30 null samples visit has an unreliable variance estimate:
    # use the bound Var[r_k] <= w_k (1 - w_k) there (conservative)
    few = (r_null > 1e-3).sum(0) < 30
    var = np.where(few, target.weights * (1 - target.weights), var)
    se = np.sqrt(var / n + var / null_n)
    z = (r.mean(0) - target.weights) / np.maximum(se, 1e-300)
    p = 2 * sps.norm.sf(np.abs(z))
    k = int(np.argmin(p))
    pmin = float(min(1.0, p.min() * target.K))
    return TestResult(
        "responsibilities",
        float(np.abs(z).max()),
        pmin,
        alpha,
        pmin >= alpha,
        f"worst component {k}: mean r = {r.mean(0)[k]:.4f} vs w = {target.weights[k]:.4f}, n = {n}",
    )


def _projected_cdf(target, u):
    mu = target.means @ u
    sd = np.sqrt(np.einsum("i,kij,j->k", u, target.covs, u))

    def cdf(z):
        z = np.asarray(z, dtype=np.float64)[..., None]
        return (target.weights * sps.norm.cdf((z - mu) / sd)).sum(-1)

    return cdf


def projected_ks_test(
    target: GaussianMixture, x, *, n_proj: int = 16, alpha: float = 1e-3, rng=0
) -> TestResult:
    """KS of u^T x against the exact CDF sum_k w_k Phi((z - u^T mu_k)/sqrt(u^T Sigma_k u)) for
    ``n_proj`` random unit directions u (the coordinate axes first when d <= n_proj);
    Bonferroni: pass if min p >= alpha / n_proj."""
    x = _samples(x, target)
    alpha, n_proj = _level(alpha), positive_int(n_proj, "n_proj")
    g = _rng(rng)
    dirs = []
    if target.d <= n_proj:
        dirs.extend(np.eye(target.d))
    while len(dirs) < n_proj:
        u = g.standard_normal(target.d)
        dirs.append(u / np.linalg.norm(u))
    ps = np.array([sps.kstest(x @ u, _projected_cdf(target, u)).pvalue for u in dirs])
    pmin = float(min(1.0, ps.min() * n_proj))
    return TestResult(
        "projected KS",
        float(ps.min()),
        pmin,
        alpha,
        pmin >= alpha,
        f"{n_proj} projections, smallest raw p = {ps.min():.3g}, n = {x.shape[0]}",
    )


def nll_test(
    target: GaussianMixture, x, *, alpha: float = 1e-3, null_n: int = 200_000, rng=0
) -> TestResult:
    """Two-sided z-test of mean(-log p_0(x_i)) against its law under exact sampling: null mean
    and variance of -log p_0(Y) from ``null_n`` exact samples (the null mean's own Monte Carlo
    error enters the standard error)."""
    x = _samples(x, target)
    alpha, null_n = _level(alpha), positive_int(null_n, "null_n", minimum=2)
    n = x.shape[0]
    nll = -target.log_prob(x)
    y = target.sample(null_n, _rng(rng))
    ref = -target.log_prob(y)
    mu0, var0 = ref.mean(), ref.var(ddof=1)
    z = (nll.mean() - mu0) / math.sqrt(var0 / n + var0 / null_n)
    p = float(2 * sps.norm.sf(abs(z)))
    side = "lower (under-dispersed?)" if z < 0 else "higher"
    return TestResult(
        "NLL (two-sided)",
        float(z),
        p,
        alpha,
        p >= alpha,
        f"mean NLL {nll.mean():.4f} vs exact {mu0:.4f} nats ({side}), n = {n}",
    )


def _mean_embedding(target, x, ell2):
    """E_Y k(x, Y) for k(x, y) = exp(-|x - y|^2 / (2 ell^2)), Y ~ target:
    sum_k w_k (ell^2)^{d/2} det(ell^2 I + Sigma_k)^{-1/2} exp(-(x - mu_k)^T (ell^2 I + Sigma_k)^{-1}
    (x - mu_k) / 2)."""
    sm = target.diffuse(1.0, math.sqrt(ell2))  # components N(mu_k, Sigma_k + ell^2 I)
    # log N(x; mu_k, Sigma_k + ell^2 I) + (d/2) log(2 pi ell^2) = log of the embedding term
    return np.exp(sm.log_prob(x) + 0.5 * target.d * math.log(2 * math.pi * ell2))


def _self_term(target, ell2):
    """E k(Y, Y') for independent Y, Y' ~ target, closed form over pairs of components."""
    d = target.d
    covs = target.covs
    tot = []
    for j in range(target.K):
        for k in range(target.K):
            C = covs[j] + covs[k] + ell2 * np.eye(d)
            dm = target.means[j] - target.means[k]
            sign, logdet = np.linalg.slogdet(C)
            quad = dm @ np.linalg.solve(C, dm)
            with np.errstate(divide="ignore"):  # a zero weight contributes exp(-inf) = 0
                lw = np.log(target.weights[j] * target.weights[k])
            tot.append(lw + 0.5 * d * math.log(ell2) - 0.5 * logdet - 0.5 * quad)
    return float(np.exp(logsumexp(tot)))


def _mmd2(target, x, ell2, self_term):
    # the off-diagonal pairs once each, their squared distances from direct differences
    # (scipy's pdist): half the kernel evaluations of the full matrix and no cancellation
    n = x.shape[0]
    xx = 2.0 * np.exp(pdist(x, "sqeuclidean") * (-0.5 / ell2)).sum() / (n * (n - 1))
    return xx - 2 * _mean_embedding(target, x, ell2).mean() + self_term


def mmd_test(
    target: GaussianMixture, x, *, alpha: float = 1e-2, replicates: int = 199, rng=0, null=None
) -> TestResult:
    """Unbiased MMD^2 (Gretton et al. 2012, JMLR, eq. 3 with one side exact) with a Gaussian
    kernel of bandwidth the median inter-point distance of exact samples. The cross and self terms
    against the target are closed-form. The null distribution of the statistic at this n is
    ``replicates`` statistics of exact samples (pass ``null`` = (ell2, self_term, sorted null
    statistics) to reuse it); p = (1 + #{null >= stat}) / (replicates + 1)."""
    x = _samples(x, target)
    alpha = _level(alpha)
    n = x.shape[0]
    g = _rng(rng)
    if null is None:
        null = mmd_null(target, n, replicates=replicates, rng=g)
    ell2, self_term, null_stats = null
    stat = _mmd2(target, x, ell2, self_term)
    p = (1 + int((null_stats >= stat).sum())) / (len(null_stats) + 1)
    return TestResult(
        "MMD (Gaussian kernel)",
        float(stat),
        float(p),
        alpha,
        p >= alpha,
        f"MMD^2 = {stat:.3g}, null 99% quantile {np.quantile(null_stats, 0.99):.3g}, n = {n}",
    )


def mmd_null(target: GaussianMixture, n: int, *, replicates: int = 199, rng=0):
    """(ell2, self_term, null statistics) for :func:`mmd_test` at sample size n."""
    if not isinstance(target, GaussianMixture):
        raise TypeError(
            f"target must be a GaussianMixture, got {type(target).__name__} {_r(target)}"
        )
    n = positive_int(n, "n", minimum=2)
    replicates = positive_int(replicates, "replicates")
    g = _rng(rng)
    y = target.sample(min(2000, max(n, 200)), g)
    ell2 = float(np.median(pdist(y, "sqeuclidean"))) / 2.0 or 1.0
    self_term = _self_term(target, ell2)
    null_stats = np.sort(
        [_mmd2(target, target.sample(n, g), ell2, self_term) for _ in range(replicates)]
    )
    return ell2, self_term, null_stats
