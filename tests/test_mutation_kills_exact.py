"""Mutation kill tests for reference/exact.py (issue 22, docs/mutation.md).

Oracles: a hand-written affine "sampler" with known (M, c, N_k) for probe_affine; the law of an
affine map of a Gaussian written out (M S M^T + sum N N^T); the 2-Wasserstein distance between
Gaussians from the textbook formula (Dowson & Landau 1982) in 50-digit mpmath (matrix square
roots by mpmath) and, for commuting covariances, sum (sqrt(a) - sqrt(b))^2; the probability-flow
map of a Gaussian from C1^(1/2) C0^(-1/2) (SciPy's sqrtm); the output law of an exact sampler
from the diffused Gaussian's moments.
"""

import re

import mpmath as mp
import numpy as np
import pytest
from scipy.linalg import sqrtm

from diffusion_oracle.reference import Gaussian, VPLinear
from diffusion_oracle.reference.exact import (
    AffineMap,
    ProbeError,
    _ProbeRNG,
    exact_flow_gaussian,
    gaussian_w2,
    ideal_output_law,
    probe_affine,
)
from diffusion_oracle.reference.grids import Grid

D = 3
M_TRUE = np.array([[0.9, 0.1, 0.0], [-0.2, 1.1, 0.3], [0.05, 0.0, 0.7]])
C_TRUE = np.array([0.3, -0.4, 0.1])
N_TRUE = np.array(
    [[[0.5, 0.0, 0.1], [0.2, 0.3, 0.0], [0.0, -0.1, 0.4]],
     [[0.1, 0.2, 0.0], [0.0, 0.6, -0.3], [0.25, 0.0, 0.2]]]
)  # fmt: skip


def affine_sampler(model, x, grid, *, rng):
    """x M^T + c + sum_k z_k N_k^T with z_k = rng.standard_normal(x.shape), rows independent."""
    out = x @ M_TRUE.T + C_TRUE
    for k in range(2):
        out = out + rng.standard_normal(x.shape) @ N_TRUE[k].T
    return out


def test_probe_affine_recovers_a_known_map():
    amap = probe_affine(affine_sampler, None, None, D, check_rng=3)
    assert isinstance(amap, AffineMap)
    assert np.allclose(amap.M, M_TRUE, rtol=0, atol=1e-15)
    assert np.allclose(amap.c, C_TRUE, rtol=0, atol=1e-15)
    assert amap.N.shape == (2, D, D)
    assert np.allclose(amap.N, N_TRUE, rtol=0, atol=1e-15)
    assert amap.residual <= 1e-15
    # output law of x ~ N(m, S): written out
    m, S = np.array([1.0, 0.0, -1.0]), np.diag([1.0, 2.0, 0.5])
    mean, cov = amap.output_law(m, S)
    ref = M_TRUE @ S @ M_TRUE.T + N_TRUE[0] @ N_TRUE[0].T + N_TRUE[1] @ N_TRUE[1].T
    assert np.allclose(mean, M_TRUE @ m + C_TRUE, rtol=0, atol=1e-14)
    assert np.allclose(cov, ref, rtol=0, atol=1e-14) and (cov == cov.T).all()


def test_probe_affine_without_noise_and_a_nonlinear_sampler():
    def det(model, x, grid, *, rng):
        return x @ M_TRUE.T + C_TRUE

    amap = probe_affine(det, None, None, D)
    assert amap.N.shape == (0, D, D) and np.allclose(amap.M, M_TRUE, atol=1e-15)
    mean, cov = amap.output_law(np.zeros(D), np.eye(D))
    assert np.allclose(cov, M_TRUE @ M_TRUE.T, atol=1e-14)

    def cubic(model, x, grid, *, rng):
        return x + 0.1 * x**3 + rng.standard_normal(x.shape)

    amap = probe_affine(cubic, None, None, D, check_rng=1)
    # x in {0, e_j} is affine-probed exactly; the random input shows the cubic term
    assert np.allclose(amap.M, 1.1 * np.eye(D), atol=1e-15)
    g = np.random.default_rng(1)
    x = g.standard_normal((3, D)) * 2.0
    z = g.standard_normal((3, D))
    actual = x + 0.1 * x**3 + z
    pred = x @ amap.M.T + z
    scale = np.abs(actual).max() + np.abs(pred).max() + 1.0
    assert amap.residual == pytest.approx(np.abs(actual - pred).max() / scale, rel=1e-12)
    assert amap.residual > 1e-3


def test_probe_affine_errors():
    def wrong_shape(model, x, grid, *, rng):
        return x[:, :1]

    with pytest.raises(ProbeError) as e:
        probe_affine(wrong_shape, None, None, D)
    assert str(e.value) == "sampler returned shape (2, 1) for input (2, 3)"

    def scalar_noise(model, x, grid, *, rng):
        return x + rng.standard_normal() + rng.standard_normal(x.shape[0])[:, None]

    with pytest.raises(ProbeError) as e:
        probe_affine(scalar_noise, None, None, D)
    # the recorded shapes hold NumPy integers (np.int64(2) in NumPy 2's repr): either form
    assert re.fullmatch(
        r"sampler drew noise of shapes \[\(\), \((np\.int64\()?2\)?,\)\]; probing needs each "
        r"draw to have the state's shape \(n, d\) = \(2, 3\)",
        str(e.value),
    ), str(e.value)
    assert issubclass(ProbeError, RuntimeError)


def test_probe_rng():
    r = _ProbeRNG()
    z = r.standard_normal((2, 3))
    assert z.shape == (2, 3) and not z.any()
    assert r.standard_normal().shape == ()
    assert r.standard_normal(4).shape == (4,)
    assert r.calls == 3 and r.shapes == [(2, 3), (), (4,)]
    assert (r.normal(1.5, 2.0, size=(2,)) == 1.5).all() and r.calls == 4
    r.inject = lambda k, shape: np.full(shape, float(k))
    assert (r.standard_normal((2,)) == 4.0).all()
    assert (r.normal(1.0, 2.0, size=(1,)) == 1.0 + 2.0 * 5.0).all()
    assert (_ProbeRNG().normal(size=(2,)) == 0.0).all()
    # numpy's defaults (loc 0, scale 1) and the requested shape
    r = _ProbeRNG()
    r.inject = lambda k, shape: np.ones(shape)
    out = r.normal(size=(2, 3))
    assert out.shape == (2, 3) and (out == 1.0).all() and r.shapes == [(2, 3)]
    assert r.normal(0.5).shape == () and r.normal(0.5) == 1.5


def test_probe_affine_passes_model_and_grid_and_checks_with_seed_0():
    """The sampler is called with the given model and grid in every run; the affinity check
    draws its input and noise from default_rng(check_rng), 0 by default."""

    def uses_both(model, x, grid, *, rng):
        return model * x + grid + 0.1 * x**2 + rng.standard_normal(x.shape)

    amap = probe_affine(uses_both, 2.0, 0.5, D)
    assert np.allclose(amap.M, 2.1 * np.eye(D), atol=1e-15)  # e_j: 2 + 0.1
    assert np.allclose(amap.c, 0.5, atol=1e-15)
    assert np.allclose(amap.N, np.eye(D)[None], atol=1e-15)
    g = np.random.default_rng(0)
    x = g.standard_normal((3, D)) * 2.0
    z = g.standard_normal((3, D))
    actual = 2.0 * x + 0.5 + 0.1 * x**2 + z
    pred = x @ amap.M.T + amap.c + z
    scale = np.abs(actual).max() + np.abs(pred).max() + 1.0
    assert amap.residual == pytest.approx(np.abs(actual - pred).max() / scale, rel=1e-12)


def mp_w2(m1, S1, m2, S2):
    """The textbook W2^2 = |m1 - m2|^2 + tr S1 + tr S2 - 2 tr (S2^1/2 S1 S2^1/2)^1/2, 50 digits."""
    with mp.workdps(50):
        A, B = mp.matrix(S1.tolist()), mp.matrix(S2.tolist())
        R = mp.sqrtm(B)
        inner = mp.sqrtm(R * A * R)
        tr = sum(A[i, i] + B[i, i] - 2 * inner[i, i] for i in range(A.rows))
        dm = sum((mp.mpf(a) - mp.mpf(b)) ** 2 for a, b in zip(m1, m2))
        return mp.sqrt(dm + mp.re(tr))


def test_gaussian_w2_against_the_textbook_formula():
    g = np.random.default_rng(2)
    Q, _ = np.linalg.qr(g.standard_normal((3, 3)))
    S2 = Q @ np.diag([1.0, 2.0, 0.5]) @ Q.T
    S2 = 0.5 * (S2 + S2.T)
    m1, m2 = np.array([0.1, 0.2, -0.3]), np.array([0.0, 0.5, 0.0])
    P = np.array([[1.0, 0.2, 0.0], [0.2, 0.5, 0.1], [0.0, 0.1, 0.3]])
    for eps in (0.5, 1e-2, 1e-4):  # 0.5: the direct branch; smaller: the perturbative one
        S1 = S2 + eps * P
        got = gaussian_w2(m1, S1, m2, S2)
        ref = mp_w2(m1, S1, m2, S2)
        assert abs(got - float(ref)) <= 1e-10 * float(ref), (eps, got, ref)
        got0 = gaussian_w2(m1, S1, m1, S2)  # equal means: the covariance term alone
        ref0 = mp_w2(m1, S1, m1, S2)
        assert abs(got0 - float(ref0)) <= 1e-8 * float(ref0), (eps, got0, ref0)
    assert gaussian_w2(m1, S2, m1, S2) == 0.0
    assert gaussian_w2(m1, S2, m2, S2) == pytest.approx(np.linalg.norm(m1 - m2), rel=1e-12)


def test_gaussian_w2_commuting_covariances():
    """Diagonal covariances: W2^2 = sum (sqrt a - sqrt b)^2 = sum (a - b)^2 / (sqrt a + sqrt b)^2
    (no cancellation), relative accuracy also for a tiny difference."""
    a = np.array([1.0, 2.0, 0.5, 4.0])
    for rel in (0.3, 1e-3, 1e-7):
        b = a * (1.0 + rel * np.array([1.0, -0.5, 0.25, 2.0]))
        ref = np.sqrt((((a - b) / (np.sqrt(a) + np.sqrt(b))) ** 2).sum())
        got = gaussian_w2(np.zeros(4), np.diag(a), np.zeros(4), np.diag(b))
        assert got == pytest.approx(ref, rel=1e-6), rel
    # S2 singular (a zero eigenvalue): the direct branch, still exact
    got = gaussian_w2(np.zeros(2), np.diag([1.0, 4.0]), np.zeros(2), np.diag([0.0, 1.0]))
    assert got == pytest.approx(np.sqrt(1.0 + 1.0), rel=1e-12)
    with pytest.raises(ValueError, match=r"^S1 must be finite"):
        gaussian_w2(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match=r"^m2 must be finite"):
        gaussian_w2(np.zeros(2), np.eye(2), np.array([0.0, np.inf]), np.eye(2))


def test_exact_flow_gaussian_against_the_matrix_square_roots():
    mu = np.array([0.5, -1.0, 2.0])
    Sig = np.array([[2.0, 0.3, 0.0], [0.3, 1.0, -0.2], [0.0, -0.2, 0.5]])
    tg = Gaussian(mu, Sig)
    a0, s0, a1, s1 = 0.3, 0.95, 0.9, 0.4
    C0 = a0**2 * Sig + s0**2 * np.eye(3)
    C1 = a1**2 * Sig + s1**2 * np.eye(3)
    A_ref = np.real(sqrtm(C1) @ np.linalg.inv(sqrtm(C0)))
    A, b = exact_flow_gaussian(tg, a0, s0, a1, s1)
    assert np.allclose(A, A_ref, rtol=0, atol=1e-12)
    assert np.allclose(b, a1 * mu - A_ref @ (a0 * mu), rtol=0, atol=1e-12)
    assert np.allclose(A @ C0 @ A.T, C1, rtol=0, atol=1e-12)  # pushes p_0 onto p_1


def test_ideal_output_law():
    mu = np.array([0.5, -1.0])
    Sig = np.array([[2.0, 0.3], [0.3, 0.5]])
    tg = Gaussian(mu, Sig)
    sch = VPLinear(0.3, 7.0)
    t = np.array([0.9, 0.5, 0.2])
    # no final jump: p at the last node, N(alpha mu, alpha^2 Sigma + sigma^2 I)
    g = Grid(sch, t)
    a, s = sch.alpha(0.2), sch.sigma(0.2)
    m, S = ideal_output_law(tg, g)
    assert np.allclose(m, a * mu, rtol=0, atol=1e-14)
    assert np.allclose(S, a * a * Sig + s * s * np.eye(2), rtol=0, atol=1e-14)
    # with the final jump: the law of E[x0 | x] for x ~ p at the last model node (t = 0.2):
    # mean mu, covariance (alpha Sigma C^-1) C (alpha Sigma C^-1)^T = alpha^2 Sigma C^-1 Sigma
    g = Grid(sch, t, final_zero=True)
    m, S = ideal_output_law(tg, g)
    C = a * a * Sig + s * s * np.eye(2)
    K = a * Sig @ np.linalg.inv(C)
    assert np.allclose(m, mu, rtol=0, atol=1e-14)
    assert np.allclose(S, K @ C @ K.T, rtol=0, atol=1e-13) and (S == S.T).all()
    m[0] = 99.0  # a copy, not the target's mean
    assert tg.mean_vec[0] == 0.5


def test_probe_affine_when_the_check_run_draws_more_noise():
    """A sampler that draws an extra noise term only for a nonzero input: its noise is not a
    fixed set of draws, so no affine map of (x, z_1..z_K) describes it. The dry run (zero input)
    sees K = 1 draw, the probe batch (basis inputs) 2: a ProbeError that says so (the probe
    used to give the extra draw zeros and report an exact map that hid the extra noise)."""

    def extra(model, x, grid, *, rng):
        out = x + rng.standard_normal(x.shape)
        if x.any():
            out = out + 0.5 * rng.standard_normal(x.shape)
        return out

    with pytest.raises(ProbeError, match=r"^sampler drew 2 noise arrays of shapes \[\(7, 3\)\] "
                       r"for input \(7, 3\); probing needs the same 1 draws"):  # fmt: skip
        probe_affine(extra, None, None, D)


def test_gaussian_w2_branches_and_accuracy():
    g = np.random.default_rng(4)
    Q, _ = np.linalg.qr(g.standard_normal((3, 3)))
    S2 = Q @ np.diag([1.0, 2.0, 0.5]) @ Q.T
    S2 = 0.5 * (S2 + S2.T)
    m = np.zeros(3)
    P = np.array([[1.0, 0.2, 0.0], [0.2, 0.5, 0.1], [0.0, 0.1, 0.3]])
    # tiny difference: the textbook formula cancels to ~eps/1e-12; the perturbative branch keeps
    # the relative accuracy (the iteration converged, not stopped early)
    for eps in (1e-6, 3e-3, 0.04):
        S1 = S2 + eps * P
        ref = mp_w2(m, S1, m, S2)
        assert abs(gaussian_w2(m, S1, m, S2) - float(ref)) <= 1e-9 * float(ref), eps
    # a large difference: S1 = 4 S2 commutes with S2, W2^2 = tr (2 R - R)^2 = tr S2 = 3.5
    assert gaussian_w2(m, 4.0 * S2, m, S2) == pytest.approx(np.sqrt(3.5), rel=1e-12)
    # S2 singular, its zero eigenvalue rounded to -4.4e-16 by eigh for this rotation (clipped:
    # no NaN from its square root); S1 = a I commutes with it
    Q, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((3, 3)))
    S2s = Q @ np.diag([0.0, 1.0, 2.0]) @ Q.T
    S2s = 0.5 * (S2s + S2s.T)
    a = 1.5
    ref = np.sqrt(
        (np.sqrt(a) - 0.0) ** 2 + (np.sqrt(a) - 1.0) ** 2 + (np.sqrt(a) - np.sqrt(2)) ** 2
    )
    assert gaussian_w2(m, a * np.eye(3), m, S2s) == pytest.approx(ref, rel=1e-7)
    # S1 = S2 singular (rotation seed 1): R S1 R has an eigenvalue rounded to -7e-32, clipped
    Q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))
    S = Q @ np.diag([0.0, 1.0, 2.0]) @ Q.T
    S = 0.5 * (S + S.T)
    mm = np.array([0.3, 0.0, -0.4])
    assert gaussian_w2(m, S, mm, S) == pytest.approx(0.5, abs=1e-7)
    with pytest.raises(ValueError, match=r"^m1 must be finite"):
        gaussian_w2(np.array([np.nan, 0.0]), np.eye(2), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match=r"^S2 must be finite"):
        gaussian_w2(np.zeros(2), np.eye(2), np.zeros(2), np.full((2, 2), np.inf))
