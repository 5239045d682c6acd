"""A 50-digit mpmath oracle for Gaussian-mixture quantities at large d and K, and the mixtures
it can afford to evaluate exactly.

Every component is held in its eigenbasis, C_k(t) = Q_k (alpha^2 D_k + sigma^2) Q_k^T, with Q_k
applied as an operator: the identity (diagonal and isotropic covariances) or a signed Sylvester
Hadamard rotation Q_k = diag(s_k) H / sqrt(d), applied by the fast Walsh-Hadamard transform in
O(d log d) mpf operations. :func:`hadamard_mixture` builds float64 covariances
S_k = Q_k D_k Q_k^T that are *exactly* representable (integer eigenvalues over 256, d a power
of 2: every entry is a short dyadic sum), so the oracle's factorisation is the exact one of the
matrix the float64 code receives. Small full covariances use mpmath's own symmetric eigensolver.

The quantities are computed from their definitions, independently of the reference's
formulas: log p = logsumexp_k [log w_k + log N_k], score = -sum_k r_k g_k with
g_k = C_k^{-1}(x - alpha mu_k), the denoiser by Tweedie E[x_0|x] = (x + sigma^2 score)/alpha,
Delta log p = sum_k r_k (|g_k|^2 - tr C_k^{-1}) - |score|^2 (cancellation is harmless at 50
digits), tr Cov[x_0|x] = (sigma^2/alpha^2)(d + sigma^2 Delta log p) and
tr Cov[eps|x] = d + sigma^2 Delta log p (second-order Tweedie, Efron 2011).
"""

from __future__ import annotations

import mpmath as mp
import numpy as np

mp.mp.dps = 50

QUANTITIES = ("log_prob", "score", "denoise", "laplacian", "posterior_cov_trace", "eps_cov_trace")


def _fwht(v):
    """Unnormalised Walsh-Hadamard transform of a list of mpf (length a power of 2)."""
    v = list(v)
    h = 1
    while h < len(v):
        for i in range(0, len(v), 2 * h):
            for j in range(i, i + h):
                a, b = v[j], v[j + h]
                v[j], v[j + h] = a + b, a - b
        h *= 2
    return v


def _hadamard(d):
    H = np.array([[1.0]])
    while H.shape[0] < d:
        H = np.block([[H, H], [H, -H]])
    return H


def hadamard_mixture(d, K, rng, *, cond=256.0, weights=None):
    """A full-covariance mixture whose covariances are exact in float64: S_k = Q_k D_k Q_k^T,
    Q_k = diag(s_k) H / sqrt(d), D_k = integers / 256 spread over a ratio ``cond``. Returns
    (raw, spec): ``GaussianMixture``'s arguments as a dict and the oracle's description."""
    if d & (d - 1):
        raise ValueError(f"d must be a power of 2, got {d}")
    H = _hadamard(d)
    lo = 256
    hi = int(lo * cond)
    covs, spec = [], []
    for _ in range(K):
        D = rng.integers(lo, hi + 1, size=d).astype(np.float64) / 256.0
        signs = rng.choice([-1.0, 1.0], size=d)
        Q = signs[:, None] * H  # / sqrt(d) on both sides gives the 1/d below
        covs.append((Q * D) @ Q.T / d)  # exact: integer sums over a power of 2
        spec.append(("hadamard", signs, D))
    means = rng.standard_normal((K, d)) * 2.0
    w = np.full(K, 1.0 / K) if weights is None else weights
    return dict(weights=w, means=means, covs=np.array(covs), covariance_type="full"), spec


def spec_of(raw):
    """The oracle's description of a diag / iso / small full mixture given by its raw inputs
    (``GaussianMixture``'s arguments; ``GaussianMixture.covs`` is a reconstruction from the
    float64 eigendecomposition, not the matrix it was given). Full covariances must be exactly
    symmetric; their eigenbasis is mpmath's at 50 digits."""
    covs, kind = np.asarray(raw["covs"], dtype=float), raw.get("covariance_type", "full")
    K, d = np.shape(raw["means"])
    out = []
    for k in range(K):
        if kind == "diag":
            out.append(("identity", None, covs[k]))
        elif kind == "iso":
            out.append(("identity", None, np.full(d, covs[k])))
        else:
            if not np.array_equal(covs[k], covs[k].T):
                raise ValueError(f"covs[{k}] must be exactly symmetric for the oracle")
            E, Q = mp.eigsy(mp.matrix([[mp.mpf(float(v)) for v in row] for row in covs[k]]))
            out.append(("dense", Q, [E[i] for i in range(d)]))
    return out


class MpMixture:
    """The oracle for one mixture given by its raw inputs (``GaussianMixture``'s arguments) and
    ``spec`` from :func:`hadamard_mixture` or :func:`spec_of`."""

    def __init__(self, raw, spec):
        self.K, self.d = np.shape(raw["means"])
        self.log_w = [mp.log(mp.mpf(float(w))) for w in raw["weights"]]
        self.means = [[mp.mpf(float(v)) for v in row] for row in raw["means"]]
        self.spec = []
        for kind, rot, D in spec:
            D = [mp.mpf(v) if not isinstance(v, mp.mpf) else v for v in np.asarray(D).tolist()] \
                if kind != "dense" else D  # fmt: skip
            rot = [mp.mpf(float(v)) for v in rot] if kind == "hadamard" else rot
            self.spec.append((kind, rot, D))
        self._inv_sqrt_d = 1 / mp.sqrt(self.d)

    def _to_eig(self, k, v):
        kind, rot, _ = self.spec[k]
        if kind == "identity":
            return v
        if kind == "hadamard":  # Q^T v = H^T diag(s) v / sqrt(d); H symmetric
            return [c * self._inv_sqrt_d for c in _fwht([s * c for s, c in zip(rot, v)])]
        return list(rot.T * mp.matrix(v))

    def _from_eig(self, k, y):
        kind, rot, _ = self.spec[k]
        if kind == "identity":
            return y
        if kind == "hadamard":  # Q y = diag(s) H y / sqrt(d)
            return [s * c * self._inv_sqrt_d for s, c in zip(rot, _fwht(y))]
        return list(rot * mp.matrix(y))

    def evaluate(self, x, alpha, sigma):
        """Dict of the QUANTITIES at one point x (float64 array, taken as exact)."""
        a, s = mp.mpf(alpha), mp.mpf(sigma)
        d = self.d
        X = [mp.mpf(float(v)) for v in x]
        logs, gs, trs = [], [], []
        for k in range(self.K):
            ev = [a * a * D + s * s for D in self.spec[k][2]]
            y = self._to_eig(k, [xi - a * m for xi, m in zip(X, self.means[k])])
            maha = mp.fsum(c * c / e for c, e in zip(y, ev))
            logdet = mp.fsum(mp.log(e) for e in ev)
            logs.append(self.log_w[k] - (d * mp.log(2 * mp.pi) + logdet + maha) / 2)
            gs.append(self._from_eig(k, [c / e for c, e in zip(y, ev)]))
            trs.append(mp.fsum(1 / e for e in ev))
        top = max(logs)
        e = [mp.exp(v - top) for v in logs]
        tot = mp.fsum(e)
        r = [v / tot for v in e]
        log_prob = top + mp.log(tot)
        score = [-mp.fsum(r[k] * gs[k][i] for k in range(self.K)) for i in range(d)]
        g2 = mp.fsum(r[k] * mp.fsum(c * c for c in gs[k]) for k in range(self.K))
        lap = g2 - mp.fsum(r[k] * trs[k] for k in range(self.K)) - mp.fsum(c * c for c in score)
        denoise = [(xi + s * s * c) / a for xi, c in zip(X, score)]
        eps_tr = d + s * s * lap
        return {
            "log_prob": log_prob,
            "score": score,
            "denoise": denoise,
            "laplacian": lap,
            "posterior_cov_trace": s * s / (a * a) * eps_tr,
            "eps_cov_trace": eps_tr,
        }


def relative_error(got, want, floor=0.0):
    """|got - want| / max(|want|, floor) (2-norm for vectors), got float64, want mpf. ``floor``
    is the size below which the quantity's digits are not determined by its inputs' (the score
    at a mode, where it is ~0 and its digits are those of x - alpha mu_k)."""
    if isinstance(want, list):
        num = mp.sqrt(mp.fsum((mp.mpf(float(g)) - w) ** 2 for g, w in zip(np.ravel(got), want)))
        den = mp.sqrt(mp.fsum(w * w for w in want))
    else:
        num, den = abs(mp.mpf(float(got)) - want), abs(want)
    den = max(den, mp.mpf(floor))
    return float(num / den) if den else float(num)


def score_floor(x, spec, alpha, sigma):
    """|x| / c_min, c_min = alpha^2 min eig Sigma + sigma^2: the size of C^{-1} x, the scale at
    which the score's rounding lives (its relative condition number at a mode is unbounded)."""
    lo = min(float(np.min(np.asarray(D, dtype=float))) for _, _, D in spec)
    return float(np.linalg.norm(x)) / (alpha**2 * lo + sigma**2)
