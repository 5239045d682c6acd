"""Issue 22, accuracy: the torch twin's isotropic mixtures computed |x - alpha mu_k|^2 as
|x|^2 - 2 alpha x.mu_k + alpha^2 |mu_k|^2, which cancels near a mode far from the origin: log p
was 9.7e-11 relative off on modes 50 from the origin (the reference, with direct differences,
6e-14). Both against 50-digit mpmath. Error model: log p adds terms of size
d/2 |log 2 pi c_k| + |x - alpha mu_k|^2 / (2 c_k) + |log w_k|; a few hundred rounding units of
that size (1e-13 of it) bound a stable evaluation."""

import mpmath as mp
import numpy as np
import pytest

from diffusion_oracle.reference.targets import GaussianMixture

torch = pytest.importorskip("torch")
from diffusion_oracle.accelerated.targets import TorchMixture  # noqa: E402

mp.mp.dps = 50
K, D = 4, 3


def _mixture():
    rng = np.random.default_rng(0)
    return GaussianMixture(np.full(K, 1 / K), rng.standard_normal((K, D)) * 50,
                           np.array([1e-3, 2e-3, 5e-4, 1e-3]), covariance_type="iso")  # fmt: skip


def _mp_log_prob_and_size(gm, x, a, s):
    a, s = mp.mpf(a), mp.mpf(s)
    terms, sizes = [], []
    for k in range(K):
        c = a * a * mp.mpf(float(gm.covs[k][0, 0])) + s * s
        dist = sum((mp.mpf(float(x[i])) - a * mp.mpf(float(gm.means[k][i]))) ** 2
                   for i in range(D))  # fmt: skip
        t = mp.log(mp.mpf(1) / K) - (D * mp.log(2 * mp.pi * c) + dist / c) / 2
        terms.append(t)
        sizes.append(abs(D * mp.log(2 * mp.pi * c) / 2) + dist / (2 * c) + mp.log(K))
    top = max(terms)
    size = sizes[terms.index(top)]  # the dominant component's terms: what log p is made of
    return float(top + mp.log(sum(mp.exp(t - top) for t in terms))), float(size)


@pytest.mark.parametrize(("alpha", "sigma"), [(0.9, 0.05), (1.0, 0.01), (0.5, 0.5)])
def test_iso_log_prob_matches_mpmath_near_far_modes(alpha, sigma):
    gm = _mixture()
    tm = TorchMixture.from_reference(gm, device="cpu", dtype=torch.float64)
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = alpha * gm.means[rng.integers(K)] + sigma * rng.standard_normal(D)
        want, size = _mp_log_prob_and_size(gm, x, alpha, sigma)
        ref = float(gm.log_prob(x[None], alpha, sigma)[0])
        tw = float(tm.log_prob(torch.as_tensor(x[None]), alpha, sigma)[0])
        assert abs(ref - want) <= 1e-13 * size, (ref, want, size)
        assert abs(tw - want) <= 1e-13 * size, (tw, want, size)
