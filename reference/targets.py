"""Targets with exact ground truth: a Gaussian, a Gaussian mixture (isotropic, diagonal or full
covariances, optional class labels) and an empirical mixture (a finite data set).

Diffusing p_0 = sum_k w_k N(mu_k, Sigma_k) along x_t = alpha x_0 + sigma eps gives again a mixture,
p_t = sum_k w_k N(alpha mu_k, C_k), C_k = alpha^2 Sigma_k + sigma^2 I. With the responsibilities
r_k(x) = softmax_k[log w_k + log N(x; alpha mu_k, C_k)] and g_k = C_k^{-1}(x - alpha mu_k):

    score            grad log p_t   = -sum_k r_k g_k
    denoiser         E[x_0 | x_t]   =  sum_k r_k (mu_k + alpha Sigma_k g_k)     (Tweedie, no /alpha)
    noise            E[eps | x_t]   =  sum_k r_k sigma g_k                        (no /sigma)
    Laplacian        Delta log p_t  =  sum_k r_k (|g_k|^2 - tr C_k^{-1}) - |score|^2
    posterior cov.   Cov[x_0 | x_t] =  sum_k r_k (sigma^2 Sigma_k C_k^{-1} + (m_k - m)(m_k - m)^T)

(Efron 2011, "Tweedie's formula and selection bias"; Song et al. 2021, arXiv:2011.13456;
Karras et al. 2022, arXiv:2206.00364, App. B.3; research note ground-truth.md Sec. 1.) Each
covariance is eigendecomposed once, Sigma_k = Q_k diag(Lambda_k) Q_k^T, so that for every
(alpha, sigma) C_k^{-1} = Q_k diag(1/(alpha^2 Lambda_k + sigma^2)) Q_k^T and
log det C_k = sum log(alpha^2 Lambda_k + sigma^2): no explicit inverse, no per-time
factorisation, everything in log space. :class:`Gaussian` is an independent implementation with a
Cholesky factor of C per level (kept for the levels a run revisits), used as an oracle for the
one-component mixture.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import cho_factor, cho_solve, eigh, solve_triangular
from scipy.special import softmax

from ._checks import _r, finite, finite_scalar, positive_int, positive_scalar
from ._stable import LOG_2PI
from .forward import _rng

__all__ = [
    "Gaussian",
    "GaussianMixture",
    "EmpiricalMixture",
    "ring8",
    "bimodal1d",
    "aniso64",
    "DEFAULT_TARGETS",
    "get_target",
]

# bound on N * K * d per chunk: 16k float64 = 128 KB per intermediate, below glibc's default
# mmap threshold, so temporaries are recycled instead of mapped and faulted in on every call
# (measured 20% faster on the ring8 hot path than 2e6)
_CHUNK_ELEMS = 16_000
_WEIGHT_SUM_TOL = 1e-10  # sum of weights must be 1 within this (float64 input, K <= 1e4)
# below this narrowest diffused variance, overflow is blamed on the small level (_overflow_error)
_TINY_VARIANCE = 1e-150


def _sum_d(v):
    """Sum over axis 1 (the coordinates) of a (K, d, n) array. For few coordinates a loop over
    them, in the same order: NumPy's reduction over a middle axis is 10-20x slower there (189 vs
    10 us at K = 8, d = 2, n = 1000)."""
    if v.shape[1] > 16:
        return v.sum(1)
    out = v[:, 0].copy()
    for i in range(1, v.shape[1]):
        out += v[:, i]
    return out


def _check_path(alpha, sigma, batch_shape, *, singular: bool):
    """alpha, sigma as float64 arrays broadcast to the flattened batch, validated."""
    a = finite(alpha, "alpha")
    s = finite(sigma, "sigma")
    n = math.prod(batch_shape)
    if a.ndim == 0 and s.ndim == 0:  # one level for the batch (the common case): float tests
        af, sf = float(a), float(s)
        for name, v in (("alpha", af), ("sigma", sf)):
            if v < 0:
                raise ValueError(f"{name} must be >= 0, got {_r(v)}")
        if af == 0 and sf == 0:
            raise ValueError("alpha and sigma must not both be 0")
        if singular and sf == 0:
            raise ValueError(
                "sigma must be > 0 for a target with singular (zero-variance) components: the "
                "density does not exist at sigma = 0"
            )
        return np.broadcast_to(a, (n,)), np.broadcast_to(s, (n,))
    for name, v in (("alpha", a), ("sigma", s)):
        if (v < 0).any():
            raise ValueError(f"{name} must be >= 0, got {_r(v[v < 0].ravel()[0])}")
        if v.ndim and v.shape != batch_shape:
            raise ValueError(
                f"{name} must be a scalar or have the batch shape of x {batch_shape}, got {v.shape}"
            )
    if ((a == 0) & (s == 0)).any():
        raise ValueError("alpha and sigma must not both be 0")
    if singular and (s == 0).any():
        raise ValueError(
            "sigma must be > 0 for a target with singular (zero-variance) components: the density "
            "does not exist at sigma = 0"
        )
    a = np.broadcast_to(a.reshape(-1) if a.ndim else a, (n,))
    s = np.broadcast_to(s.reshape(-1) if s.ndim else s, (n,))
    return a, s


def _overflow_error(x_max: float, a, s, lam_min: float) -> ValueError:
    """The error for finite inputs whose quadratic forms |x - alpha mu_k|^2 / c_k (c_k =
    alpha^2 Sigma_k + sigma^2 along an eigenvector) overflow float64. When the narrowest diffused
    variance alpha^2 lambda_min + sigma^2 is below 1e-150 (tiny alpha and sigma: it underflows,
    or the scores exceed float64) it names the smaller-scale level, else the largest of x, alpha,
    sigma. (log p = -inf alone is not an error: it is the correctly rounded log of an
    underflowing density.)"""
    a, s = np.asarray(a, dtype=np.float64), np.asarray(s, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore"):
        c = a * a * max(lam_min, 0.0) + s * s
    i = int(np.argmin(c))
    if c[i] < _TINY_VARIANCE:
        a_i, s_i = float(a[i]), float(s[i])
        name, val, other, oval = (
            ("sigma", s_i, "alpha", a_i)
            if s_i * s_i >= a_i * a_i * max(lam_min, 0.0)
            else ("alpha", a_i, "sigma", s_i)
        )
        return ValueError(
            f"{name} = {val:.6g} is too small (with {other} = {oval:.6g}): the narrowest "
            f"diffused variance alpha^2 lambda_min + sigma^2 = {float(c[i]):.6g} must be at least "
            "1e-150, else the mixture's quadratic forms |x - alpha mu_k|^2 / (alpha^2 Sigma_k + "
            "sigma^2) and the scores overflow float64"
        )
    name, val = max((("x", x_max), ("alpha", float(np.abs(a).max())),
                     ("sigma", float(np.abs(s).max()))), key=lambda t: t[1])  # fmt: skip
    return ValueError(
        f"{name} = {val:.6g} is too large: the mixture's quadratic forms |x - alpha mu_k|^2 / "
        "(alpha^2 Sigma_k + sigma^2) overflow float64; keep |x|, alpha and sigma well below "
        "1e150 (rescale the data)"
    )


# the quantities whose digits the responsibilities' differences reach (GaussianMixture's
# noise-dominated form is used for these only)
_R_SENSITIVE = frozenset({"resp", "x0", "cov", "cov_trace", "eps_cov_trace", "laplacian",
                          "tr_jac", "jac"})  # fmt: skip


class GaussianMixture:
    """p_0(x) = sum_k w_k N(x; mu_k, Sigma_k) with exact diffused quantities (module docstring).

    Parameters
    ----------
    weights : (K,) positive, summing to 1 (within 1e-10).
    means : (K, d).
    covs : (K, d, d) symmetric positive definite if ``covariance_type="full"``; (K, d) positive
        variances if "diag"; (K,) positive variances if "iso".
    labels : optional (K,) integer class label per component.

    Every method takes x of shape (..., d) and alpha, sigma as scalars or arrays of the batch shape
    (...,); outputs have shape (...,) for scalars per point and (..., d) for vectors.

    Example::

        gm = GaussianMixture([0.3, 0.7], [[-1.0], [1.0]], [0.1, 0.2], covariance_type="iso")
        gm.denoise(np.array([[0.5]]), alpha=0.8, sigma=0.6)
    """

    def __init__(self, weights, means, covs, *, covariance_type: str = "full", labels=None):
        means = finite(means, "means")
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {means.shape}")
        K, d = means.shape
        w = self._check_weights(weights, K)
        covs = finite(covs, "covs")
        if covariance_type == "full":
            if covs.shape != (K, d, d):
                raise ValueError(f"covs must have shape (K, d, d) = {(K, d, d)}, got {covs.shape}")
            evals = np.empty((K, d))
            evecs = np.empty((K, d, d))
            for k in range(K):
                S = covs[k]
                scale = max(np.abs(S).max(), np.finfo(float).tiny)
                if np.abs(S - S.T).max() > 1e-12 * scale:
                    raise ValueError(
                        f"covs[{k}] must be symmetric, max |S - S^T| = {_r(np.abs(S - S.T).max())}"
                    )
                lam, Q = eigh(0.5 * (S + S.T))
                if lam[0] <= d * np.finfo(float).eps * max(lam[-1], 0.0) or lam[0] <= 0:
                    raise ValueError(
                        f"covs[{k}] must be positive definite, smallest eigenvalue {_r(lam[0])} "
                        f"(largest {_r(lam[-1])})"
                    )
                evals[k], evecs[k] = lam, Q
        elif covariance_type == "diag":
            if covs.shape != (K, d):
                raise ValueError(
                    f"covs must have shape (K, d) = {(K, d)} for diag, got {covs.shape}"
                )
            if (covs <= 0).any():
                raise ValueError(f"diag covs must be > 0, got {_r(covs[covs <= 0].ravel()[0])}")
            evals, evecs = covs.copy(), None
        elif covariance_type == "iso":
            if covs.shape != (K,):
                raise ValueError(f"covs must have shape (K,) = {(K,)} for iso, got {covs.shape}")
            if (covs <= 0).any():
                raise ValueError(f"iso covs must be > 0, got {_r(covs[covs <= 0].ravel()[0])}")
            evals, evecs = np.repeat(covs[:, None], d, axis=1), None
        else:
            raise ValueError(
                f"covariance_type must be one of ['diag', 'full', 'iso'], got {_r(covariance_type)}"
            )
        self._init(w, means, evals, evecs, labels, covariance_type, singular=False)

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _check_weights(weights, K):
        w = finite(weights, "weights")
        if w.shape != (K,):
            raise ValueError(f"weights must have shape (K,) = {(K,)}, got {w.shape}")
        if (w <= 0).any():
            raise ValueError(f"weights must be > 0, got {_r(w[w <= 0].ravel()[0])}")
        if abs(w.sum() - 1.0) > _WEIGHT_SUM_TOL:
            raise ValueError(
                f"weights must sum to 1 (within {_WEIGHT_SUM_TOL}), sum is {_r(w.sum())}"
            )
        return w

    def _init(self, w, means, evals, evecs, labels, covariance_type, *, singular):
        self.weights = np.array(w, dtype=np.float64)
        self.log_weights = np.log(self.weights)
        self.means = np.array(means, dtype=np.float64)
        self.K, self.d = self.means.shape
        self.covariance_type = covariance_type
        self._evals = np.array(evals, dtype=np.float64)
        self._lam_max = float(self._evals.max())  # largest eigenvalue of any Sigma_k
        self._mu_c = self.means - self.means.mean(0)  # centred means, for u . (mu_j - mu_k)
        self._d2 = None  # |mu_j - mu_k|^2, formed on first use
        self._evecs = None if evecs is None else np.array(evecs, dtype=np.float64)
        self._singular = bool(singular or (self._evals <= 0).any())
        if labels is not None:
            lab = np.asarray(labels)
            if lab.dtype.kind not in "iu":
                raise TypeError(f"labels must be integers, got dtype {lab.dtype}")
            if lab.shape != (self.K,):
                raise ValueError(f"labels must have shape (K,) = {(self.K,)}, got {lab.shape}")
            self.labels = lab.astype(np.int64)
        else:
            self.labels = None
        for arr in (self.weights, self.log_weights, self.means, self._evals):
            arr.setflags(write=False)

    @classmethod
    def _from_eig(cls, w, means, evals, evecs, labels=None, covariance_type="full", singular=False):
        obj = cls.__new__(cls)
        GaussianMixture._init(
            obj, w, means, evals, evecs, labels, covariance_type, singular=singular
        )
        return obj

    def __repr__(self):
        name, ct = type(self).__name__, self.covariance_type
        return f"{name}(K={self.K}, d={self.d}, covariance_type={_r(ct)})"

    # ------------------------------------------------------------------ data-space facts
    @property
    def covs(self) -> np.ndarray:
        """(K, d, d) covariance matrices Sigma_k."""
        if self._evecs is None:
            return np.einsum("kd,de->kde", self._evals, np.eye(self.d))
        return np.einsum("kij,kj,klj->kil", self._evecs, self._evals, self._evecs)

    def mean(self) -> np.ndarray:
        """E[x_0] = sum_k w_k mu_k."""
        return self.weights @ self.means

    def covariance(self) -> np.ndarray:
        """Cov[x_0] = sum_k w_k (Sigma_k + (mu_k - m)(mu_k - m)^T) (law of total covariance)."""
        dm = self.means - self.mean()
        return np.einsum("k,kij->ij", self.weights, self.covs) + np.einsum(
            "k,ki,kj->ij", self.weights, dm, dm
        )

    def diffuse(self, alpha, sigma) -> GaussianMixture:
        """The exact marginal p_t of x_t = alpha x_0 + sigma eps:
        sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I) (scalar alpha, sigma)."""
        a, s = _check_path(alpha, sigma, (), singular=False)
        a, s = float(a[0]), float(s[0])
        return GaussianMixture._from_eig(
            self.weights,
            a * self.means,
            a * a * self._evals + s * s,
            self._evecs,
            self.labels,
            self.covariance_type,
            singular=self._singular and s == 0,
        )

    def sample(self, n: int, rng=None, *, return_components: bool = False):
        """n exact draws from p_0; with ``return_components`` also the component index of each."""
        n = positive_int(n, "n")
        g = _rng(rng)
        comp = g.choice(self.K, size=n, p=self.weights)
        z = g.standard_normal((n, self.d)) * np.sqrt(np.maximum(self._evals[comp], 0.0))
        if self._evecs is not None:  # rotate per component: no (n, d, d) gather
            for k in np.unique(comp):
                rows = comp == k
                z[rows] = z[rows] @ self._evecs[k].T
        x = self.means[comp] + z
        return (x, comp) if return_components else x

    def select(self, label: int) -> GaussianMixture:
        """The class-conditional mixture p_0(x | c = label): components with that label,
        weights renormalised."""
        if self.labels is None:
            raise ValueError("select needs a mixture with labels; this one has labels=None")
        idx = np.flatnonzero(self.labels == label)
        if idx.size == 0:
            raise ValueError(
                f"label must be one of {sorted(set(self.labels.tolist()))}, got {_r(label)}"
            )
        w = self.weights[idx] / self.weights[idx].sum()
        return GaussianMixture._from_eig(
            w,
            self.means[idx],
            self._evals[idx],
            None if self._evecs is None else self._evecs[idx],
            self.labels[idx],
            self.covariance_type,
            singular=self._singular,
        )

    def class_probs(self) -> tuple[np.ndarray, np.ndarray]:
        """(labels, p(c)) with p(c) = sum of the weights of the components labelled c."""
        if self.labels is None:
            raise ValueError("class_probs needs a mixture with labels; this one has labels=None")
        labs = np.unique(self.labels)
        return labs, np.array([self.weights[self.labels == c].sum() for c in labs])

    # ------------------------------------------------------------------ core evaluation
    def _prep(self, x, alpha, sigma):
        x = finite(x, "x")
        if x.ndim < 1 or x.shape[-1] != self.d:
            raise ValueError(f"x must have shape (..., d) with d = {self.d}, got {x.shape}")
        batch = x.shape[:-1]
        a, s = _check_path(alpha, sigma, batch, singular=self._singular)
        return x.reshape(-1, self.d), a, s, batch

    def _pair_d2(self):
        """|mu_j - mu_k|^2 for all pairs, (K, K), from direct differences (row by row)."""
        if self._d2 is None:
            self._d2 = np.stack([((self.means - m) ** 2).sum(1) for m in self.means])
        return self._d2

    def _rotate(self, z):
        """Q_k^T z for z of shape (K, d, n)."""
        return z if self._evecs is None else np.einsum("kde,kdn->ken", self._evecs, z)

    def _unrotate(self, y):
        """Q_k y for y of shape (K, d, n)."""
        return y if self._evecs is None else np.einsum("kde,ken->kdn", self._evecs, y)

    def _chunks(self, n):
        size = max(256, _CHUNK_ELEMS // max(1, self.K * self.d))  # >= 256: bound the overhead
        for i in range(0, n, size):
            yield slice(i, min(n, i + size))

    def _eval(self, x, alpha, sigma, what):
        """Evaluate the quantities in ``what`` chunk by chunk; returns dict of flat arrays."""
        xf, a, s, batch = self._prep(x, alpha, sigma)
        n = xf.shape[0]
        if n == 0:  # an empty batch: empty results of the right shapes (one dummy point, cut)
            one = np.ones(1)
            res = self._eval_chunk(self.means[:1].copy(), one, one, what)
            return {k: v[:0] for k, v in res.items()}, batch
        out = {}
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # reported below
            for sl in self._chunks(n):
                res = self._eval_chunk(xf[sl], a[sl], s[sl], what)
                for key, val in res.items():
                    out.setdefault(key, []).append(val)
        out = {k: v[0] if len(v) == 1 else np.concatenate(v, axis=0) for k, v in out.items()}
        if any(np.isnan(v).any() for v in out.values()):
            raise _overflow_error(float(np.abs(xf).max()), a, s, float(self._evals.min()))
        return out, batch

    def _eval_chunk(self, x, a, s, what):
        # Layout (K, d, n): the batch axis innermost, so every elementwise operation and every
        # reduction over components or coordinates runs over long contiguous rows (20-30x
        # faster than (n, K, d) when d and K are small).
        if (a == a[0]).all() and (s == s[0]).all():  # one time for the chunk: C_k computed once
            a, s = a[:1], s[:1]
        a1, s1 = a[None, None, :], s[None, None, :]  # (1, 1, n or 1)
        lam = self._evals[:, :, None]  # (K, d, 1)
        xT = np.ascontiguousarray(x.T)  # (d, n): a strided x.T costs 3x in the line below
        z = xT[None, :, :] - a1 * self.means[:, :, None]  # (K, d, n)
        y = self._rotate(z)
        c = a1 * a1 * lam + s1 * s1  # eigenvalues of C_k, (K, d, n or 1)
        yc = y / c
        maha = _sum_d(y * yc)  # (K, n)
        logdet = _sum_d(np.log(c))
        # Noise-dominated points (alpha^2 max eig Sigma <= sigma^2): far from the data every
        # maha_k is about |x|^2 / sigma^2 and the responsibilities hang on their differences,
        # which the plain form keeps only to |x|^2/sigma^2 ulps (2e-10 relative in E[x0|x] at
        # 1e3 stds, lambda = -30). With 1/c = 1/sigma^2 - alpha^2 lam/(sigma^2 c) and
        # u = x - alpha mu_j for the leading component j, |x - alpha mu_k|^2 = |u|^2 +
        # 2 alpha u.(mu_j - mu_k) + alpha^2 |mu_j - mu_k|^2: the common |u|^2/sigma^2 leaves
        # every maha_k exactly and is added back to log p once.
        # Only what the responsibilities' digits reach pays for it: log p and the score are
        # relatively accurate in the plain form (every term ~ the result there).
        high = (s > 0) & (a * a * self._lam_max <= s * s) & bool(_R_SENSITIVE & set(what))
        shift = 0.0
        if high.any():
            n = x.shape[0]
            a_n, s_n = np.broadcast_to(a, (n,)), np.broadcast_to(np.where(high, s, 1.0), (n,))
            j = (self.log_weights[:, None] - 0.5 * (logdet + maha)).argmax(0)  # (n,)
            u = x - a_n[:, None] * self.means[j]  # (n, d), direct differences
            um = self._mu_c @ u.T  # u . (mu_k - mean of mu), (K, n)
            cols = np.arange(n)
            corr = _sum_d(yc * y * lam)  # sum_i y_i^2 lam_i / c_i, (K, n)
            cross = 2.0 * a_n * (um[j, cols] - um) + a_n * a_n * self._pair_d2()[j].T
            maha_hi = (cross - a_n * a_n * corr) / (s_n * s_n)
            half_u2 = 0.5 * (u * u).sum(1) / (s_n * s_n)
            # near overflow (|x| ~ 1e150 and up) the plain form's inf is the answer
            use = high & np.isfinite(maha_hi).all(0) & np.isfinite(half_u2)
            maha = np.where(use, maha_hi, maha)
            shift = np.where(use, half_u2, 0.0)
        log_comp = -0.5 * (self.d * LOG_2PI + logdet + maha)
        joint = self.log_weights[:, None] + log_comp  # (K, n)
        # log-sum-exp over components with the max shifted out (Blanchard et al. 2021)
        jmax = joint.max(axis=0)
        jmax = np.where(np.isfinite(jmax), jmax, 0.0)
        e = np.exp(joint - jmax)
        tot = e.sum(axis=0)
        logp = jmax + np.log(tot) - shift
        r = e / tot  # (K, n)
        cache = {}

        def g_k():
            """g_k = C_k^{-1}(x - alpha mu_k) in the data basis, (K, d, n)."""
            if "g" not in cache:
                cache["g"] = self._unrotate(yc)
            return cache["g"]

        def means_k():
            """(E[x0|x,k], E[x0|x]): (K, d, n) and (d, n)."""
            if "m" not in cache:
                m_k = self.means[:, :, None] + self._unrotate(a1 * lam * yc)
                cache["m"] = m_k, (r[:, None, :] * m_k).sum(0)
            return cache["m"]

        def spread():
            """g_k - gbar, (K, d, n). At noise-dominated points it is
            -(alpha/sigma^2)(m_k - m): every g_k is about x / sigma^2 there and their spread is
            lost in the subtraction, the component means' is not."""
            if "dg" not in cache:
                g = g_k()
                dg = g - (r[:, None, :] * g).sum(0)[None]
                if high.any():
                    m_k, m = means_k()
                    s_h = np.where(high, s, 1.0)
                    dg = np.where(high, -(a / (s_h * s_h)) * (m_k - m[None]), dg)
                cache["dg"] = dg
            return cache["dg"]
        res = {}
        if "log_prob" in what:
            res["log_prob"] = logp
        if "resp" in what:
            res["resp"] = r.T
        if {"score", "laplacian"} & set(what):
            score = -(r[:, None, :] * g_k()).sum(0)  # (d, n)
            if "score" in what:
                res["score"] = score.T
            if "laplacian" in what:
                # sum_k r_k |g_k|^2 - |gbar|^2 = sum_k r_k |g_k - gbar|^2 (the variance of g
                # under r): the left side cancels far from the data, where every |g_k| is large
                # and their spread small; the right side has no cancellation
                dg = spread()
                res["laplacian"] = (r * _sum_d(dg * dg)).sum(0) - (r * _sum_d(1.0 / c)).sum(0)
        if {"x0", "cov", "cov_trace"} & set(what):
            m_k, m = means_k()  # E[x0|x,k] (K, d, n) and E[x0|x] (d, n)
            if "x0" in what:
                res["x0"] = m.T
            post = s1 * s1 * lam / c  # eigenvalues of Cov[x0|x,k], (K, d, n or 1)
            dm = m_k - m[None]  # (K, d, n)
            if "cov_trace" in what:
                within = (r * _sum_d(post)).sum(0)
                spread = (r * _sum_d(dm * dm)).sum(0)
                res["cov_trace"] = within + spread
            if "cov" in what:
                post_n = np.broadcast_to(post, dm.shape)
                if self._evecs is None:
                    within = np.einsum("kn,kdn->nd", r, post_n)
                    cov = np.einsum("nd,de->nde", within, np.eye(self.d))
                else:
                    cov = np.einsum("kn,kij,kjn,klj->nil", r, self._evecs, post_n, self._evecs)
                cov = cov + np.einsum("kn,kin,kjn->nij", r, dm, dm)
                res["cov"] = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        if "eps" in what:
            res["eps"] = (r[:, None, :] * self._unrotate(s1 * yc)).sum(0).T
        if "eps_cov_trace" in what:
            # tr Cov[eps|x] = sum_k r_k [tr(I - sigma^2 C_k^{-1}) + sigma^2 |g_k - gbar|^2], with
            # I - sigma^2 C_k^{-1} = alpha^2 Sigma_k C_k^{-1}: no division by sigma
            dg = spread()
            within = (r * _sum_d(a1 * a1 * lam / c)).sum(0)
            res["eps_cov_trace"] = within + s * s * (r * _sum_d(dg * dg)).sum(0)
        if {"tr_jac", "jac"} & set(what):
            # Jacobians of E[x0|x] and E[eps|x] without a division by alpha or sigma:
            # J_x0 = sum_k r_k [alpha Sigma_k C_k^{-1} - (m_k - m)(g_k - gbar)^T],
            # J_eps = sigma sum_k r_k [C_k^{-1} - (g_k - gbar)(g_k - gbar)^T], gbar = sum r_k g_k,
            # from d r_k/dx = -r_k (g_k - gbar) and d m_k/dx = alpha Sigma_k C_k^{-1}.
            dg = spread()  # (K, d, n)
            m_k, m = means_k()
            dm = m_k - m[None]
            if "tr_jac" in what:
                lam_c = _sum_d(lam / c)  # tr(Sigma_k C_k^{-1}), (K, n or 1)
                inv_c = _sum_d(1.0 / c)  # tr C_k^{-1}
                res["tr_jac_x0"] = a * (r * lam_c).sum(0) - (r * _sum_d(dm * dg)).sum(0)
                res["tr_jac_eps"] = s * ((r * inv_c).sum(0) - (r * _sum_d(dg * dg)).sum(0))
            if "jac" in what:
                Q = (
                    np.broadcast_to(np.eye(self.d), (self.K, self.d, self.d))
                    if self._evecs is None
                    else self._evecs
                )
                full = (self.K, self.d, x.shape[0])  # einsum does not broadcast size-1 axes
                lam_c = np.broadcast_to(lam / c, full)
                inv_c = np.broadcast_to(1.0 / c, full)
                sc = np.einsum("kn,kij,kjn,klj->nil", r, Q, lam_c, Q)  # sum r_k Sigma_k C_k^-1
                ic = np.einsum("kn,kij,kjn,klj->nil", r, Q, inv_c, Q)  # sum r_k C_k^{-1}
                j0 = a[:, None, None] * sc - np.einsum("kn,kin,kjn->nij", r, dm, dg)
                je = s[:, None, None] * (ic - np.einsum("kn,kin,kjn->nij", r, dg, dg))
                res["jac_x0"] = 0.5 * (j0 + np.swapaxes(j0, 1, 2))
                res["jac_eps"] = je
        return res

    # ------------------------------------------------------------------ public quantities
    def log_prob(self, x, alpha=1.0, sigma=0.0):
        """log p_t(x) = logsumexp_k [log w_k + log N(x; alpha mu_k, C_k)] (nats), shape (...)."""
        out, batch = self._eval(x, alpha, sigma, ("log_prob",))
        return out["log_prob"].reshape(batch)

    def responsibilities(self, x, alpha=1.0, sigma=0.0):
        """r_k(x) = P(component k | x_t = x), shape (..., K); E_{p_t}[r_k] = w_k."""
        out, batch = self._eval(x, alpha, sigma, ("resp",))
        return out["resp"].reshape(batch + (self.K,))

    def score(self, x, alpha, sigma):
        """grad_x log p_t(x) = -sum_k r_k C_k^{-1}(x - alpha mu_k), shape (..., d)."""
        out, batch = self._eval(x, alpha, sigma, ("score",))
        return out["score"].reshape(batch + (self.d,))

    def denoise(self, x, alpha, sigma):
        """Tweedie denoiser E[x_0 | x_t = x] = sum_k r_k (mu_k + alpha Sigma_k g_k), shape
        (..., d)."""
        out, batch = self._eval(x, alpha, sigma, ("x0",))
        return out["x0"].reshape(batch + (self.d,))

    def eps(self, x, alpha, sigma):
        """E[eps | x_t = x] = sigma sum_k r_k g_k = -sigma score, shape (..., d)."""
        out, batch = self._eval(x, alpha, sigma, ("eps",))
        return out["eps"].reshape(batch + (self.d,))

    def v(self, x, alpha, sigma):
        """E[v | x_t = x] = alpha E[eps|x] - sigma E[x_0|x] (Salimans & Ho 2022, eq. 7)."""
        out, batch = self._eval(x, alpha, sigma, ("eps", "x0"))
        a, s = _check_path(alpha, sigma, batch, singular=self._singular)
        v = a[:, None] * out["eps"] - s[:, None] * out["x0"]
        return v.reshape(batch + (self.d,))

    def velocity(self, x, alpha, sigma, d_alpha, d_sigma):
        """Probability-flow / flow-matching velocity u_t(x) = alpha' E[x_0|x] + sigma' E[eps|x]
        (Lipman et al. 2023, eq. 9; Song et al. 2021, eq. 13), shape (..., d)."""
        out, batch = self._eval(x, alpha, sigma, ("eps", "x0"))
        da, ds = self._derivs(batch, d_alpha, d_sigma, out["x0"].shape[0])
        u = da[:, None] * out["x0"] + ds[:, None] * out["eps"]
        return u.reshape(batch + (self.d,))

    @staticmethod
    def _derivs(batch, d_alpha, d_sigma, n):
        """d_alpha, d_sigma as flat arrays of the n points: finite, scalars or batch-shaped."""
        out = []
        for name, v in (("d_alpha", d_alpha), ("d_sigma", d_sigma)):
            v = finite(v, name)
            if v.ndim and v.shape != batch:
                raise ValueError(
                    f"{name} must be a scalar or have the batch shape of x {batch}, got {v.shape}"
                )
            out.append(np.broadcast_to(v.reshape(-1), (n,)))
        return out

    def velocity_divergence(self, x, alpha, sigma, d_alpha, d_sigma):
        """Exact divergence of the probability-flow velocity u = alpha' E[x_0|x] + sigma'
        E[eps|x]: div u = alpha' tr J_x0 + sigma' tr J_eps with

            tr J_x0 = alpha sum_k r_k tr(Sigma_k C_k^{-1}) - sum_k r_k (m_k - m).(g_k - gbar),
            tr J_eps = sigma [sum_k r_k tr C_k^{-1} - sum_k r_k |g_k - gbar|^2]
                     = -sigma Delta log p_t,

        g_k = C_k^{-1}(x - alpha mu_k), gbar = sum_k r_k g_k, m_k = E[x_0|x, k]: the same value as
        d alpha'/alpha + (alpha' sigma^2/alpha - sigma' sigma) Delta log p_t (ground-truth.md
        Sec. 1.2; Song et al. 2021, arXiv:2011.13456, App. D.2) without its division by alpha.
        Shape (...). The instantaneous change of variables d log p_t(x(t))/dt = -div u along the
        PF-ODE (Chen et al. 2018, Thm. 1) makes this the exact likelihood integrand."""
        out, batch = self._eval(x, alpha, sigma, ("tr_jac",))
        da, ds = self._derivs(batch, d_alpha, d_sigma, out["tr_jac_x0"].shape[0])
        return (da * out["tr_jac_x0"] + ds * out["tr_jac_eps"]).reshape(batch)

    def velocity_jacobian(self, x, alpha, sigma, d_alpha, d_sigma):
        """The Jacobian du/dx = alpha' J_x0 + sigma' J_eps of the PF-ODE velocity (symmetric: J_x0
        = (alpha/sigma^2) Cov[x_0|x], second-order Tweedie), from the per-component formulas of
        :meth:`velocity_divergence`; shape (..., d, d). Its trace is the divergence; a Hutchinson
        probe z^T (du/dx) z has variance 2 sum_{i != j} J_ij^2 (Rademacher z) or 2 |J|_F^2
        (Gaussian z) (Hutchinson 1990)."""
        out, batch = self._eval(x, alpha, sigma, ("jac",))
        da, ds = self._derivs(batch, d_alpha, d_sigma, out["jac_x0"].shape[0])
        J = da[:, None, None] * out["jac_x0"] + ds[:, None, None] * out["jac_eps"]
        return J.reshape(batch + (self.d, self.d))

    def laplacian(self, x, alpha, sigma):
        """Delta log p_t(x) = sum_k r_k (|g_k|^2 - tr C_k^{-1}) - |score|^2, computed as
        sum_k r_k |g_k - gbar|^2 - sum_k r_k tr C_k^{-1} (gbar = sum_k r_k g_k = -score; the same
        quantity without the cancellation of |g_k|^2 against |score|^2 far from the data),
        shape (...)."""
        out, batch = self._eval(x, alpha, sigma, ("laplacian",))
        return out["laplacian"].reshape(batch)

    def posterior_cov(self, x, alpha, sigma):
        """Cov[x_0 | x_t = x] = sum_k r_k (sigma^2 Sigma_k C_k^{-1} + (m_k - m)(m_k - m)^T),
        shape (..., d, d)."""
        out, batch = self._eval(x, alpha, sigma, ("cov", "x0"))
        return out["cov"].reshape(batch + (self.d, self.d))

    def marginal(self, indices) -> GaussianMixture:
        """The marginal law of the coordinates ``indices``: the same weights, the sub-vectors of
        the means and the sub-blocks of the covariances (eigendecomposed anew)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (self.d,):
                raise ValueError(f"indices must be a boolean mask of shape ({self.d},) or integer "
                                 f"coordinates, got a mask of shape {idx.shape}")  # fmt: skip
            idx = np.flatnonzero(idx)
        elif idx.size and idx.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers or a boolean mask, got {indices!r} "
                            f"(dtype {idx.dtype})")  # fmt: skip
        if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= self.d:
            raise ValueError(f"indices must select coordinates in [0, {self.d}), got {indices!r}")
        if np.unique(idx).size != idx.size:
            raise ValueError(f"indices must not repeat a coordinate, got {indices!r}")
        covs = self.covs[:, idx][:, :, idx]
        evals = np.empty((self.K, idx.size))
        evecs = np.empty((self.K, idx.size, idx.size))
        for k in range(self.K):
            evals[k], evecs[k] = eigh(covs[k])
        evals = np.where(
            np.abs(evals) <= 10 * idx.size * np.finfo(float).eps * evals.max(), 0.0, evals
        )
        return GaussianMixture._from_eig(
            self.weights, self.means[:, idx], evals, evecs, self.labels, "full"
        )

    def class_log_posterior(self, x, alpha=1.0, sigma=0.0):
        """The exact classifier log p_t(c | x) = logsumexp_{k: label_k = c} [log w_k + log N_k]
        - log p_t(x), for each label c in ``np.unique(labels)``; shape (..., C) (Dhariwal &
        Nichol 2021 use a trained p(c | x_t); here it is exact)."""
        if self.labels is None:
            raise ValueError("class_log_posterior needs a mixture with labels; labels=None")
        r = self.responsibilities(x, alpha, sigma)
        labs = np.unique(self.labels)
        with np.errstate(divide="ignore"):
            return np.log(np.stack([r[..., self.labels == c].sum(-1) for c in labs], axis=-1))

    def posterior_cov_trace(self, x, alpha, sigma):
        """tr Cov[x_0 | x_t = x] = sum_k r_k (sigma^2 tr(Sigma_k C_k^{-1}) + |m_k - m|^2), shape
        (...), without forming the d x d matrices."""
        out, batch = self._eval(x, alpha, sigma, ("cov_trace",))
        return out["cov_trace"].reshape(batch)

    def eps_cov_trace(self, x, alpha, sigma):
        """tr Cov[eps | x_t = x] = sum_k r_k (alpha^2 tr(Sigma_k C_k^{-1}) + sigma^2 |g_k -
        gbar|^2), shape (...): the pointwise irreducible eps-prediction loss, computed without
        dividing (alpha/sigma)^2 tr Cov[x_0|x] by sigma."""
        out, batch = self._eval(x, alpha, sigma, ("eps_cov_trace",))
        return out["eps_cov_trace"].reshape(batch)

    # ------------------------------------------------------------------ linear observations
    def condition(self, A, y, noise_cov=0.0) -> GaussianMixture:
        """The exact conditional p_0(x | y) for y = A x + n, n ~ N(0, R) (inpainting, inverse
        problems). Per component (Bishop 2006, PRML eq. 2.113-2.117):

        S_k = A Sigma_k A^T + R,  K_k = Sigma_k A^T S_k^{-1},
        mu_k' = mu_k + K_k (y - A mu_k),  Sigma_k' = Sigma_k - K_k A Sigma_k,
        w_k' proportional to w_k N(y; A mu_k, S_k)  (normalised in log space).

        ``A``: (m, d); ``y``: (m,); ``noise_cov``: scalar variance (R = noise_cov I) or (m, m)
        PSD matrix; R = 0 is allowed when every S_k is positive definite (noise-free inpainting:
        A selects coordinates). The result may have singular covariances (zero variance along
        observed directions when R = 0); it then needs sigma > 0 for densities.
        """
        A = finite(A, "A")
        if A.ndim != 2 or A.shape[1] != self.d:
            raise ValueError(f"A must have shape (m, d) with d = {self.d}, got {A.shape}")
        m = A.shape[0]
        y = finite(y, "y")
        if y.shape != (m,):
            raise ValueError(f"y must have shape (m,) = {(m,)}, got {y.shape}")
        R = finite(noise_cov, "noise_cov")
        if R.ndim == 0:
            if R < 0:
                raise ValueError(f"noise_cov must be >= 0, got {_r(float(R))}")
            R = float(R) * np.eye(m)
        elif R.shape != (m, m):
            raise ValueError(f"noise_cov must be a scalar or shape {(m, m)}, got {R.shape}")
        else:
            if np.abs(R - R.T).max() > 1e-12 * max(np.abs(R).max(), np.finfo(float).tiny):
                raise ValueError(
                    f"noise_cov must be symmetric, max |R - R^T| = {_r(np.abs(R - R.T).max())}"
                )
            lam_r = np.linalg.eigvalsh(0.5 * (R + R.T))
            if lam_r[0] < -m * np.finfo(float).eps * max(lam_r[-1], 0.0):
                raise ValueError(
                    f"noise_cov must be positive semi-definite, smallest eigenvalue {_r(lam_r[0])}"
                )
        covs = self.covs
        new_means = np.empty_like(self.means)
        new_covs = np.empty_like(covs)
        log_ev = np.empty(self.K)
        for k in range(self.K):
            S = A @ covs[k] @ A.T + R
            S = 0.5 * (S + S.T)
            try:
                cf = cho_factor(S, lower=True)
            except np.linalg.LinAlgError:
                raise ValueError(
                    f"A Sigma_{k} A^T + noise_cov must be positive definite (is A of full row "
                    "rank, or noise_cov > 0?)"
                ) from None
            r = y - A @ self.means[k]
            sol = cho_solve(cf, r)
            Kt = cho_solve(cf, A @ covs[k])  # S^{-1} A Sigma_k  = K_k^T
            new_means[k] = self.means[k] + Kt.T @ r
            C = covs[k] - covs[k] @ A.T @ Kt
            new_covs[k] = 0.5 * (C + C.T)
            logdet = 2.0 * np.log(np.diag(cf[0])).sum()
            log_ev[k] = -0.5 * (m * LOG_2PI + logdet + r @ sol)
        lw = self.log_weights + log_ev
        w = softmax(lw)
        keep = w > 0  # components whose evidence underflows float64 carry no mass
        w, new_means, new_covs = w[keep] / w[keep].sum(), new_means[keep], new_covs[keep]
        labels = None if self.labels is None else self.labels[keep]
        K = int(keep.sum())
        evals = np.empty((K, self.d))
        evecs = np.empty((K, self.d, self.d))
        for k in range(K):
            lam, Q = eigh(new_covs[k])
            # Sigma - K A Sigma leaves directions that are zero exactly (noise-free observations)
            # as rounding of size ~ d eps lambda_max; 10x that is snapped to 0
            tol = self.d * np.finfo(float).eps * max(lam[-1], 0.0) * 10
            evals[k] = np.where(np.abs(lam) <= tol, 0.0, lam)
            if (evals[k] < 0).any():
                raise ValueError(
                    f"conditional covariance {k} is not PSD: smallest eigenvalue {_r(lam[0])}"
                )
            evecs[k] = Q
        return GaussianMixture._from_eig(w, new_means, evals, evecs, labels, "full")


class EmpiricalMixture(GaussianMixture):
    """The empirical distribution of a finite data set, p_0 = sum_i w_i delta(x - x_i): a mixture
    with zero covariances, C_i = sigma^2 I. Its denoiser is EDM's "ideal denoiser" (Karras et al.
    2022, eq. 57; Scarvelis et al. 2023, arXiv:2310.12395). Densities need sigma > 0.

    Parameters: ``data`` (n, d) finite; ``weights`` optional (n,), default uniform.
    """

    def __init__(self, data, weights=None):
        data = finite(data, "data")
        if data.ndim != 2 or data.shape[0] < 1:
            raise ValueError(f"data must have shape (n, d) with n >= 1, got {data.shape}")
        n, d = data.shape
        w = np.full(n, 1.0 / n) if weights is None else self._check_weights(weights, n)
        self._init(w, data, np.zeros((n, d)), None, None, "iso", singular=True)


class Gaussian:
    """A single Gaussian N(mu, Sigma), diffused to N(alpha mu, C), C = alpha^2 Sigma + sigma^2 I.
    Everything is affine in x: score = -C^{-1}(x - alpha mu), E[x_0|x] = mu + alpha Sigma C^{-1}
    (x - alpha mu), E[eps|x] = sigma C^{-1}(x - alpha mu), Cov[x_0|x] = Sigma - alpha^2 Sigma C^{-1}
    Sigma, Delta log p_t = -tr C^{-1} (ground-truth.md Sec. 2.1).

    Computed with one Cholesky factor of C per call (per time, not per point), independently of
    :class:`GaussianMixture`. ``mean`` (d,), ``cov`` (d, d) symmetric positive definite.
    """

    def __init__(self, mean, cov):
        mu = finite(mean, "mean")
        if mu.ndim != 1:
            raise ValueError(f"mean must have shape (d,), got {mu.shape}")
        self.d = mu.shape[0]
        S = finite(cov, "cov")
        if S.shape != (self.d, self.d):
            raise ValueError(f"cov must have shape {(self.d, self.d)}, got {S.shape}")
        if np.abs(S - S.T).max() > 1e-12 * max(np.abs(S).max(), np.finfo(float).tiny):
            raise ValueError(f"cov must be symmetric, max |S - S^T| = {_r(np.abs(S - S.T).max())}")
        try:
            cho_factor(S, lower=True)
        except np.linalg.LinAlgError:
            raise ValueError(
                f"cov must be positive definite, smallest eigenvalue {_r(np.linalg.eigvalsh(S)[0])}"
            ) from None
        self.mean_vec = mu.copy()
        self.cov = 0.5 * (S + S.T)

    def __repr__(self):
        return f"Gaussian(d={self.d})"

    def as_mixture(self) -> GaussianMixture:
        """The same law as a one-component :class:`GaussianMixture`."""
        return GaussianMixture([1.0], self.mean_vec[None], self.cov[None])

    def _setup(self, x, alpha, sigma):
        x = finite(x, "x")
        if x.ndim < 1 or x.shape[-1] != self.d:
            raise ValueError(f"x must have shape (..., d) with d = {self.d}, got {x.shape}")
        a, s = self._levels(alpha, sigma)
        C, cf = self._factor(a, s)
        r = (x - a * self.mean_vec).reshape(-1, self.d)
        return x.shape[:-1], a, s, C, cf, r

    def _factor(self, a: float, s: float):
        """C = a^2 Sigma + s^2 I and its Cholesky factor, kept per level (a sampler's runs ask
        about the same few hundred levels; bounded, and dropped if ``cov`` is reassigned)."""
        cache = self.__dict__.get("_factors")
        if cache is None or cache[0] is not self.cov or len(cache[1]) >= 4096:
            cache = self._factors = (self.cov, {})
        hit = cache[1].get((a, s))
        if hit is None:
            C = a * a * self.cov + s * s * np.eye(self.d)
            hit = cache[1][(a, s)] = C, cho_factor(C, lower=True)
        return hit

    @staticmethod
    def _levels(alpha, sigma) -> tuple[float, float]:
        """(alpha, sigma) as floats: finite scalars >= 0, not both 0."""
        out = []
        for name, v in (("alpha", alpha), ("sigma", sigma)):
            v = finite(v, name)
            if v.ndim:
                raise ValueError(f"{name} must be a scalar for Gaussian, got shape {v.shape}")
            if v < 0:
                raise ValueError(f"{name} must be >= 0, got {_r(v)}")
            out.append(float(v))
        if out[0] == 0 and out[1] == 0:
            raise ValueError("alpha and sigma must not both be 0")
        return out[0], out[1]

    def diffuse(self, alpha, sigma) -> Gaussian:
        """N(alpha mu, alpha^2 Sigma + sigma^2 I)."""
        a, s = self._levels(alpha, sigma)
        return Gaussian(a * self.mean_vec, a * a * self.cov + s * s * np.eye(self.d))

    def sample(self, n: int, rng=None):
        """n exact draws: mu + L z with Sigma = L L^T."""
        n = positive_int(n, "n")
        L = np.linalg.cholesky(self.cov)
        return self.mean_vec + _rng(rng).standard_normal((n, self.d)) @ L.T

    def log_prob(self, x, alpha=1.0, sigma=0.0):
        """log N(x; alpha mu, C) via the Cholesky factor (nats), shape (...)."""
        batch, a, s, C, cf, r = self._setup(x, alpha, sigma)
        z = solve_triangular(cf[0], r.T, lower=True)
        logdet = 2.0 * np.log(np.diag(cf[0])).sum()
        return (-0.5 * (self.d * LOG_2PI + logdet + (z * z).sum(0))).reshape(batch)

    def score(self, x, alpha, sigma):
        """-C^{-1}(x - alpha mu), shape (..., d)."""
        batch, a, s, C, cf, r = self._setup(x, alpha, sigma)
        return (-cho_solve(cf, r.T).T).reshape(batch + (self.d,))

    def denoise(self, x, alpha, sigma):
        """mu + alpha Sigma C^{-1}(x - alpha mu), shape (..., d)."""
        batch, a, s, C, cf, r = self._setup(x, alpha, sigma)
        return (self.mean_vec + a * (self.cov @ cho_solve(cf, r.T)).T).reshape(batch + (self.d,))

    def eps(self, x, alpha, sigma):
        """sigma C^{-1}(x - alpha mu), shape (..., d)."""
        batch, a, s, C, cf, r = self._setup(x, alpha, sigma)
        return (s * cho_solve(cf, r.T).T).reshape(batch + (self.d,))

    def v(self, x, alpha, sigma):
        """E[v | x] = alpha E[eps|x] - sigma E[x_0|x] (Salimans & Ho 2022), shape (..., d)."""
        a, s = self._levels(alpha, sigma)
        return a * self.eps(x, a, s) - s * self.denoise(x, a, s)

    def velocity(self, x, alpha, sigma, d_alpha, d_sigma):
        """u = alpha' E[x_0|x] + sigma' E[eps|x] (Lipman et al. 2023, eq. 9), shape (..., d)."""
        da, ds = finite_scalar(d_alpha, "d_alpha"), finite_scalar(d_sigma, "d_sigma")
        return da * self.denoise(x, alpha, sigma) + ds * self.eps(x, alpha, sigma)

    def laplacian(self, x, alpha, sigma):
        """-tr C^{-1} (constant in x), shape (...)."""
        batch, a, s, C, cf, r = self._setup(x, alpha, sigma)
        tr = np.trace(cho_solve(cf, np.eye(self.d)))
        return np.full(batch, -tr)

    def velocity_divergence(self, x, alpha, sigma, d_alpha, d_sigma):
        """div u = alpha' alpha tr(Sigma C^{-1}) + sigma' sigma tr C^{-1} (constant in x), shape
        (...); see :meth:`GaussianMixture.velocity_divergence`."""
        J = self.velocity_jacobian(x, alpha, sigma, d_alpha, d_sigma)
        return np.trace(J, axis1=-2, axis2=-1)

    def velocity_jacobian(self, x, alpha, sigma, d_alpha, d_sigma):
        """du/dx = alpha' alpha Sigma C^{-1} + sigma' sigma C^{-1} (constant in x), shape
        (..., d, d); independent Cholesky implementation."""
        batch, a, s, C, cf, r = self._setup(x, alpha, sigma)
        da, ds = finite_scalar(d_alpha, "d_alpha"), finite_scalar(d_sigma, "d_sigma")
        J = da * a * cho_solve(cf, self.cov) + ds * s * cho_solve(cf, np.eye(self.d))
        J = 0.5 * (J + J.T)
        return np.broadcast_to(J, batch + (self.d, self.d)).copy()

    def eps_cov_trace(self, x, alpha, sigma):
        """tr(alpha^2 Sigma C^{-1}) (independent of x), shape (...)."""
        batch, a, s, C, cf, r = self._setup(x, alpha, sigma)
        return np.full(batch, a * a * np.trace(cho_solve(cf, self.cov)))

    def posterior_cov_trace(self, x, alpha, sigma):
        """tr(sigma^2 Sigma C^{-1}) (independent of x), shape (...)."""
        return np.trace(self.posterior_cov(x, alpha, sigma), axis1=-2, axis2=-1)

    def posterior_cov(self, x, alpha, sigma):
        """Sigma - alpha^2 Sigma C^{-1} Sigma = sigma^2 Sigma C^{-1} (independent of x; the second
        form has no cancellation at small sigma), shape (..., d, d)."""
        batch, a, s, C, cf, r = self._setup(x, alpha, sigma)
        P = s * s * cho_solve(cf, self.cov)  # C^{-1} Sigma = Sigma C^{-1} (they commute)
        P = 0.5 * (P + P.T)
        return np.broadcast_to(P, batch + (self.d, self.d)).copy()


# ====================================================================== default targets


def ring8(radius: float = 1.0, std: float = 0.05) -> GaussianMixture:
    """2-D ring of 8 narrow isotropic modes at angles 2 pi k/8, equal weights, class label k.
    ``radius`` >= 0, ``std`` > 0 (finite scalars)."""
    radius = finite_scalar(radius, "radius")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {_r(radius)}")
    std = positive_scalar(std, "std")
    ang = 2.0 * np.pi * np.arange(8) / 8.0
    means = radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    return GaussianMixture(
        np.full(8, 1 / 8), means, np.full(8, std**2), covariance_type="iso", labels=np.arange(8)
    )


def bimodal1d() -> GaussianMixture:
    """1-D bimodal: 0.3 N(-1, 0.2^2) + 0.7 N(1.5, 0.3^2) (unequal weights and widths, so a
    sampler that confuses the modes or their masses is caught)."""
    return GaussianMixture(
        [0.3, 0.7], [[-1.0], [1.5]], [0.2**2, 0.3**2], covariance_type="iso", labels=[0, 1]
    )


def aniso64(seed: int = 20240601) -> GaussianMixture:
    """64-D mixture of 16 full-covariance components: random rotations, eigenvalues log-spaced
    over three decades (1e-3..1), means of norm about 3, Dirichlet(5) weights; fixed seed, so the
    target is the same everywhere. Labels: component index modulo 4. ``seed``: an integer >= 0."""
    g = np.random.default_rng(positive_int(seed, "seed", minimum=0))
    K, d = 16, 64
    means = g.standard_normal((K, d))
    means *= 3.0 / np.linalg.norm(means, axis=1, keepdims=True)
    covs = np.empty((K, d, d))
    for k in range(K):
        Q, R = np.linalg.qr(g.standard_normal((d, d)))
        Q = Q * np.sign(np.diag(R))
        lam = np.logspace(-3, 0, d)[g.permutation(d)]
        covs[k] = (Q * lam) @ Q.T
        covs[k] = 0.5 * (covs[k] + covs[k].T)
    w = g.dirichlet(np.full(K, 5.0))
    w = w / w.sum()
    return GaussianMixture(w, means, covs, labels=np.arange(K) % 4)


DEFAULT_TARGETS = {"ring8": ring8, "bimodal1d": bimodal1d, "aniso64": aniso64}


def get_target(name: str) -> GaussianMixture:
    """A named default target: one of ``DEFAULT_TARGETS`` ("ring8", "bimodal1d", "aniso64")."""
    if name not in DEFAULT_TARGETS:
        raise ValueError(f"name must be one of {sorted(DEFAULT_TARGETS)}, got {_r(name)}")
    return DEFAULT_TARGETS[name]()
