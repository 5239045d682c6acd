"""The tolerance table: one place, keyed by dtype, each entry with the reason for its size.
Tolerances are never loosened to make a test pass; a failure is investigated.

eps64 = 2.2e-16 (float64 unit roundoff 1.1e-16).
"""

import numpy as np

EPS64 = float(np.finfo(np.float64).eps)

TOL = {
    np.float64: {
        # A schedule's closed form (alpha, sigma, log_snr, their logs): a handful of correctly
        # rounded elementary functions combined without cancellation (expm1/log1p/log1mexp
        # forms), condition number <= ~10: error <= ~50 ulp = 1.1e-14. 1e-13 is that with 10x
        # headroom, the target the foundation issue sets.
        "closed_form": dict(rtol=1e-13, atol=0.0),
        # t-derivatives and the SDE coefficients f, g^2: one more product/quotient of the same
        # quantities; same budget.
        "derivative": dict(rtol=1e-13, atol=0.0),
        # The inverse t(lambda), relative in t. A Newton-polished root of an accurate forward map:
        # a few ulps of t, plus the forward map's own error divided by |t lambda'(t)| >= ~1.
        "inverse": dict(rtol=1e-13, atol=1e-300),
        # Posterior / forward-kernel coefficients: products and quotients of closed forms above
        # plus one expm1 of lambda_t - lambda_s (condition |d|/|expm1(d)| <= 1). The difference
        # is formed from t - s by each schedule's identity (log_snr_diff), so it carries a few
        # ulps of itself, not |lambda| eps / |lambda_t - lambda_s| (which reached 1e-3 for
        # s = t (1 - 1e-12)). Each coefficient is exp of a sum of <= 4 logs of size <= 30 plus
        # that factor: <= ~150 ulp = 3.3e-14 by the model, measured 7e-15; the 1e-13.
        "kernel": dict(rtol=1e-13, atol=0.0),
        # Composition of T <= 1000 one-step kernels: each step rounds at ~1 ulp, errors add
        # linearly, 1000 * 2 ulp = 4.4e-13; 1e-12 leaves 2x.
        "composed_kernels": dict(rtol=1e-12, atol=0.0),
        # Exact algebraic round trips between predictions: a 2x2 solve with coefficients of size
        # O(1) and determinant alpha^2 + sigma^2 or a path Jacobian bounded away from 0;
        # relative to the size of the inputs, ~10 ulp. Compared with atol scaled by |input|.
        "roundtrip": dict(rtol=1e-12, atol=1e-12),
        # Two independent algorithms for one Gaussian quantity (eigendecomposition vs Cholesky):
        # backward-stable solves, relative error <= c * eps * cond(C); tests multiply by the
        # condition number of C (<= 1e3 in the strategies), c = 100.
        "solve_per_cond": dict(rtol=100 * EPS64, atol=0.0),
    },
}


# The torch implementation (accelerated/) against the reference: two independent float64
# implementations of the same closed forms, each within ~50 ulp, so 1e-12 (the figure)
# leaves ~20x. Mixture quantities are compared relative to the size of the terms that cancel
# inside them (|x| + alpha |mu_k| over the smallest eigenvalue of C_k, see test_accelerated.py):
# the GEMM rotation and the isotropic |x|^2 - 2 alpha x.mu + alpha^2 |mu|^2 expansion round at
# that scale, not at the size of the result.
TORCH_RTOL = {
    "float64": 1e-12,
    # float32 unit roundoff 6e-8; sums over d <= 64 coordinates and K components, exp/log of
    # Mahalanobis terms up to ~1e2 (relative error 1e2 * 6e-8 in the responsibilities):
    # ~1e-5 relative to the cancelling scale; 1e-4 leaves 10x.
    "float32": 1e-4,
}


def tol(name, dtype=np.float64):
    return TOL[dtype][name]
