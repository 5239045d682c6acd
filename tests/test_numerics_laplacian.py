"""Issue 22, accuracy: GaussianMixture.laplacian (reference and torch twin) against a 50-digit
mpmath evaluation of Delta log p_t, from the modes out to 1e3 stds away. The landed formula
sum_k r_k (|g_k|^2 - tr C_k^{-1}) - |score|^2 cancels far from the data (every |g_k| large,
their spread small): it returned values of the wrong sign or 0 there. The stable form is
sum_k r_k |g_k - gbar|^2 - sum_k r_k tr C_k^{-1}.

Error model: the stable form adds two terms of one sign each, so its relative error is a few
rounding units times the ratio of the terms to the result; the tolerance is 1e-12 relative to
sum_k r_k (|g_k - gbar|^2 + tr C_k^{-1}) (the size of what is added), i.e. ~5000 u64.
"""

import mpmath as mp
import numpy as np
import pytest

from diffusion_oracle.reference.targets import GaussianMixture

mp.mp.dps = 50
TOL = 1e-12


def _mixture(kind):
    rng = np.random.default_rng(3)
    d, K = 3, 2
    means = np.array([[1.0, -0.5, 0.2], [-1.2, 0.8, 0.4]])
    if kind == "full":
        A = rng.standard_normal((K, d, d)) * 0.3
        covs = A @ np.swapaxes(A, 1, 2) + 0.05 * np.eye(d)
        return GaussianMixture([0.35, 0.65], means, covs)
    return GaussianMixture([0.35, 0.65], means, np.array([[0.2, 0.1, 0.3], [0.05, 0.4, 0.15]]),
                           covariance_type="diag")  # fmt: skip


def _mp_laplacian(gm, x, alpha, sigma):
    """Delta log p_t(x) at 50 digits, and the size of the terms the stable form adds."""
    a, s = mp.mpf(alpha), mp.mpf(sigma)
    d = gm.d
    X = mp.matrix([mp.mpf(float(v)) for v in x])
    logs, gs, trs = [], [], []
    for k in range(gm.K):
        S = mp.matrix([[mp.mpf(float(gm.covs[k][i, j])) for j in range(d)] for i in range(d)])
        C = a * a * S + s * s * mp.eye(d)
        Ci = C**-1
        diff = X - a * mp.matrix([mp.mpf(float(v)) for v in gm.means[k]])
        g = Ci * diff
        maha = (diff.T * g)[0]
        logs.append(mp.log(mp.mpf(float(gm.weights[k])))
                    - (d * mp.log(2 * mp.pi) + mp.log(mp.det(C)) + maha) / 2)  # fmt: skip
        gs.append(g)
        trs.append(sum(Ci[i, i] for i in range(d)))
    top = max(logs)
    e = [mp.exp(v - top) for v in logs]
    r = [v / sum(e) for v in e]
    gbar = sum((r[k] * gs[k] for k in range(gm.K)), mp.matrix(d, 1))
    g2 = sum(r[k] * (gs[k].T * gs[k])[0] for k in range(gm.K))
    tr = sum(r[k] * trs[k] for k in range(gm.K))
    lap = g2 - tr - (gbar.T * gbar)[0]
    spread = sum(r[k] * ((gs[k] - gbar).T * (gs[k] - gbar))[0] for k in range(gm.K))
    return float(lap), float(spread + tr)


def _points(gm):
    rng = np.random.default_rng(11)
    u = rng.standard_normal(gm.d)
    u /= np.linalg.norm(u)
    scale = float(np.sqrt(np.max(gm.covs)))
    return [gm.means[0], 0.5 * (gm.means[0] + gm.means[1])] + [
        gm.means[1] + k * scale * u for k in (3.0, 30.0, 1e3)]  # fmt: skip


LEVELS = [(1.0, 0.0), (0.8, 0.6), (1.0, 0.1), (0.1, 1.0)]


@pytest.mark.parametrize("kind", ["full", "diag"])
def test_reference_laplacian_matches_mpmath_everywhere(kind):
    gm = _mixture(kind)
    for alpha, sigma in LEVELS:
        for x in _points(gm):
            want, size = _mp_laplacian(gm, x, alpha, sigma)
            got = float(gm.laplacian(x[None], alpha, sigma)[0])
            assert abs(got - want) <= TOL * size, (kind, alpha, sigma, x, got, want)


@pytest.mark.parametrize("kind", ["full", "diag", "iso"])
def test_torch_laplacian_matches_mpmath_everywhere(kind):
    torch = pytest.importorskip("torch")
    from diffusion_oracle.accelerated.targets import TorchMixture

    if kind == "iso":
        gm = GaussianMixture([0.35, 0.65], _mixture("diag").means, np.array([0.2, 0.05]),
                             covariance_type="iso")  # fmt: skip
    else:
        gm = _mixture(kind)
    tm = TorchMixture.from_reference(gm, device="cpu", dtype=torch.float64)
    for alpha, sigma in LEVELS:
        for x in _points(gm):
            want, size = _mp_laplacian(gm, x, alpha, sigma)
            got = float(tm.laplacian(torch.as_tensor(x[None]), alpha, sigma)[0])
            assert abs(got - want) <= TOL * size, (kind, alpha, sigma, x, got, want)


def _mp_denoise(gm, x, alpha, sigma):
    """E[x_0 | x_t = x] at 50 digits (Tweedie: sum_k r_k (mu_k + alpha Sigma_k g_k))."""
    a, s = mp.mpf(alpha), mp.mpf(sigma)
    d = gm.d
    X = mp.matrix([mp.mpf(float(v)) for v in x])
    logs, mks = [], []
    for k in range(gm.K):
        S = mp.matrix([[mp.mpf(float(gm.covs[k][i, j])) for j in range(d)] for i in range(d)])
        C = a * a * S + s * s * mp.eye(d)
        mu = mp.matrix([mp.mpf(float(v)) for v in gm.means[k]])
        g = C**-1 * (X - a * mu)
        logs.append(mp.log(mp.mpf(float(gm.weights[k])))
                    - (mp.log(mp.det(C)) + ((X - a * mu).T * g)[0]) / 2)  # fmt: skip
        mks.append(mu + a * S * g)
    top = max(logs)
    e = [mp.exp(v - top) for v in logs]
    m = sum((e[k] / sum(e) * mks[k] for k in range(gm.K)), mp.matrix(d, 1))
    return np.array([float(v) for v in m])


@pytest.mark.parametrize("kind", ["full", "diag"])
def test_denoise_matches_mpmath_at_large_noise(kind):
    """E[x_0 | x] from sigma = 0.1 to 1e4 (VE-like alpha = 1) and at alpha = 1e-3: within
    1e-14 of the data scale (max |mu_k| + max sqrt(eig Sigma_k)), reference and torch twin. The
    result itself tends to the data mean at large sigma and may be near 0, so its relative
    error is not the measure: the terms summed are of the data scale."""
    torch = pytest.importorskip("torch")
    from diffusion_oracle.accelerated.targets import TorchMixture

    gm = _mixture(kind)
    tm = TorchMixture.from_reference(gm, device="cpu", dtype=torch.float64)
    scale = float(np.abs(gm.means).max() + np.sqrt(np.max(gm.covs)))
    rng = np.random.default_rng(5)
    for alpha, sigma in [(1.0, 0.1), (1.0, 100.0), (1.0, 1e3), (1.0, 1e4), (1e-3, 1.0)]:
        for _ in range(4):
            x = alpha * gm.means[rng.integers(gm.K)] + sigma * rng.standard_normal(gm.d)
            want = _mp_denoise(gm, x, alpha, sigma)
            ref = gm.denoise(x[None], alpha, sigma)[0]
            tw = tm.denoise(torch.as_tensor(x[None]), alpha, sigma)[0].numpy()
            assert np.abs(ref - want).max() <= 1e-14 * scale, (alpha, sigma, ref, want)
            assert np.abs(tw - want).max() <= 1e-14 * scale, (alpha, sigma, tw, want)
