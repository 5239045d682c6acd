"""Tier 1, exact and deterministic evidence for Gaussian targets (DESIGN.md; ground-truth.md
Sec. 2).

With a Gaussian target the exact model is affine in x, so every common sampler maps its input and
its noise affinely: x_out = M x_init + c + sum_k N_k z_k. :func:`probe_affine` recovers (M, c, N_k)
from a black-box sampler with batched runs (a dry run that counts the draws; one batch of the basis
inputs with zero noise and of zero inputs with unit noise in one coordinate of one draw per row),
and checks affinity on a random input with random noise in a batch of its own. The
output law from x_init ~ N(m, S) is then exactly N(M m + c, M S M^T + sum_k N_k N_k^T): no Monte
Carlo. :func:`gaussian_w2` gives the exact 2-Wasserstein distance to the target law without the
cancellation of the textbook formula.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh

from ._checks import finite
from .grids import Grid
from .targets import Gaussian

__all__ = [
    "AffineMap",
    "RecordingRNG",
    "probe_affine",
    "gaussian_w2",
    "ideal_output_law",
    "exact_flow_gaussian",
]


class _ProbeRNG:
    """Stands in for numpy's Generator: returns zeros, or unit noise in chosen rows, and records
    the shapes of the draws."""

    def __init__(self, mode="zero", d=None):
        self.mode, self.d, self.calls, self.shapes = mode, d, 0, []
        self.inject = None  # callable(call_index, shape) -> array

    def standard_normal(self, size=None, dtype=np.float64):
        """Zeros, or the injected probe noise, of the requested shape (recorded)."""
        shape = () if size is None else tuple(int(s) for s in np.atleast_1d(size))
        self.shapes.append(shape)
        k = self.calls
        self.calls += 1
        if self.inject is not None:
            return self.inject(k, shape)
        return np.zeros(shape)

    def normal(self, loc=0.0, scale=1.0, size=None):
        """loc + scale * standard_normal(size)."""
        return loc + scale * self.standard_normal(size)


class ProbeError(RuntimeError):
    """The sampler cannot be probed as an affine map (see the message)."""


@dataclass
class AffineMap:
    """x_out = M x_init + c + sum_k N_k z_k, with N of shape (K, d, d) (draw k, output, input)."""

    M: np.ndarray
    c: np.ndarray
    N: np.ndarray
    residual: float  # relative mismatch on a random input and random noise (affinity check)

    def output_law(self, mean, cov):
        """Mean and covariance of x_out when x_init ~ N(mean, cov), independent unit noise."""
        m = self.M @ mean + self.c
        S = self.M @ cov @ self.M.T
        if self.N.size:
            S = S + np.einsum("kij,klj->il", self.N, self.N)
        return m, 0.5 * (S + S.T)


class RecordingRNG:
    """Wraps a numpy Generator for a sampler run whose draws :func:`probe_affine` may reuse as
    its affinity check: ``standard_normal`` and ``normal`` pass through and each draw's standard
    normal is kept (``draws``); any other method also passes through but marks the record
    unusable (``other``)."""

    def __init__(self, rng):
        self.rng, self.draws, self.other = rng, [], False

    def standard_normal(self, size=None, dtype=np.float64):
        """The wrapped generator's draw, recorded."""
        z = self.rng.standard_normal(size, dtype=dtype)
        self.draws.append(np.array(z, dtype=np.float64, copy=True))
        return z

    def normal(self, loc=0.0, scale=1.0, size=None):
        """loc + scale * standard_normal(size) (recorded as the standard normal)."""
        return loc + scale * self.standard_normal(size)

    def __getattr__(self, name):
        if name in ("rng", "draws", "other"):
            raise AttributeError(name)
        self.other = True
        return getattr(self.rng, name)


def probe_affine(sampler, model, grid: Grid, d: int, *, check_rng=0, run=None) -> AffineMap:
    """Recover the affine map of ``sampler`` driven by ``model`` on ``grid`` in dimension ``d``.

    Requires: rows of the batch processed independently, noise drawn with
    ``rng.standard_normal(x.shape)`` (each draw the shape of the state), and an affine model.
    Raises :class:`ProbeError` otherwise (the message says which requirement failed).

    Runs: a dry run (how many draws, of which shapes), one batch of the basis inputs with zero
    noise and the unit-noise rows, and an affinity check on a random input with random noise in
    a batch of its own (a sampler that couples the rows of a batch does not reproduce the map
    probed in the other batch). ``run = (x_init, recording, out)``: a run the caller already made
    from ``x_init`` with a :class:`RecordingRNG` and its output; when its draws all have the
    state's shape it replaces both the dry run and the check run (its input and noise are the
    check's)."""
    eye = np.eye(d)
    recorded = None
    if run is not None:
        x_run, rec, out_run = run
        x_run = np.asarray(x_run, dtype=np.float64)
        if (
            out_run is not None
            and not rec.other
            and x_run.ndim == 2
            and x_run.shape[1] == d
            and np.shape(out_run) == x_run.shape
            and all(z.shape == x_run.shape for z in rec.draws)
        ):
            recorded = x_run, rec.draws, np.asarray(out_run, dtype=np.float64)
    if recorded is None:
        # 1. dry run: how many draws, of which shapes
        dry = _ProbeRNG()
        x_dry = np.zeros((2, d))
        out = np.asarray(sampler(model, x_dry, grid, rng=dry))
        if out.shape != x_dry.shape:
            raise ProbeError(f"sampler returned shape {out.shape} for input {x_dry.shape}")
        if any(s != (2, d) for s in dry.shapes):
            raise ProbeError(
                f"sampler drew noise of shapes {sorted(set(dry.shapes))}; probing needs each "
                f"draw to have the state's shape (n, d) = (2, {d})"
            )
        K = dry.calls
    else:
        K = len(recorded[1])
    # 2. one batch: the basis inputs (rows 0..d, zero noise), then the unit-noise rows: row
    # d + 1 + k*d + j receives e_j at draw k (zero input)
    base = d + 1
    xb = np.vstack([np.zeros((1, d)), eye, np.zeros((K * d, d))])
    rng = _ProbeRNG()

    def inject(k, shape):
        z = np.zeros(shape)
        if k < K and shape == xb.shape:
            z[base + k * d + np.arange(d), np.arange(d)] = 1.0
        return z

    rng.inject = inject
    ob = np.asarray(sampler(model, xb, grid, rng=rng))
    if ob.shape != xb.shape:
        raise ProbeError(f"sampler returned shape {ob.shape} for input {xb.shape}")
    if rng.calls != K or any(s != xb.shape for s in rng.shapes):
        raise ProbeError(
            f"sampler drew {rng.calls} noise arrays of shapes {sorted(set(rng.shapes))} for "
            f"input {xb.shape}; probing needs the same {K} draws, each of the state's shape"
        )
    c = ob[0]
    M = (ob[1:base] - c).T
    N = (ob[base:] - c).reshape(K, d, d).transpose(0, 2, 1) if K else np.zeros((0, d, d))
    # 3. affinity check on a random input and random noise (the caller's run, or a fresh one)
    if recorded is not None:
        x, zs, actual = recorded
    else:
        g = np.random.default_rng(check_rng)
        x = g.standard_normal((3, d)) * 2.0
        zs = [g.standard_normal((3, d)) for _ in range(K)]
        rng = _ProbeRNG()
        rng.inject = lambda k, shape: zs[k] if k < K else np.zeros(shape)
        actual = np.asarray(sampler(model, x, grid, rng=rng))
    pred = x @ M.T + c
    for k in range(K):
        pred = pred + zs[k] @ N[k].T
    scale = np.abs(actual).max() + np.abs(pred).max() + 1.0
    residual = float(np.abs(actual - pred).max() / scale)
    return AffineMap(M, c, N, residual)


def gaussian_w2(m1, S1, m2, S2) -> float:
    """W2 between N(m1, S1) and N(m2, S2) (Dowson & Landau 1982; Olkin & Pukelsheim 1982):
    W2^2 = |m1 - m2|^2 + tr S1 + tr S2 - 2 tr (S2^(1/2) S1 S2^(1/2))^(1/2).

    The covariance term is computed without cancellation: with Delta = S1 - S2 and R = S2^(1/2),
    (R S1 R)^(1/2) = S2 + E where E solves S2 E + E S2 + E^2 = R Delta R, so the term is
    tr Delta - 2 tr E, an O(|Delta|^2) quantity formed from O(|Delta|) ones (relative error
    ~eps |S|/|Delta| instead of eps |S|/|Delta|^2). E is found in the eigenbasis of S2 by a
    fixed-point iteration; for large Delta the direct formula is used."""
    m1, m2, S1, S2 = (finite(v, n) for v, n in ((m1, "m1"), (m2, "m2"), (S1, "S1"), (S2, "S2")))
    dm2 = float(((m1 - m2) ** 2).sum())
    s, Q = eigh(0.5 * (S2 + S2.T))
    s = np.clip(s, 0.0, None)
    D = Q.T @ (S1 - S2) @ Q
    D = 0.5 * (D + D.T)
    r = np.sqrt(s)
    small = s.min() > 0 and np.abs(D).max() < 0.1 * s.min()
    if small:
        G = r[:, None] * D * r[None, :]
        L = s[:, None] + s[None, :]
        E = G / L
        for _ in range(100):
            E_new = (G - E @ E) / L
            if np.abs(E_new - E).max() <= 1e-17 * (np.abs(E_new).max() + 1e-300):
                E = E_new
                break
            E = E_new
        cov_term = float(np.trace(D) - 2.0 * np.trace(E))
    else:
        C = r[:, None] * (Q.T @ S1 @ Q) * r[None, :]
        w = np.clip(eigh(0.5 * (C + C.T), eigvals_only=True), 0.0, None)
        cov_term = float(np.trace(S1) + s.sum() - 2.0 * np.sqrt(w).sum())
    return float(np.sqrt(max(dm2 + max(cov_term, 0.0), 0.0)))


def exact_flow_gaussian(target: Gaussian, alpha0, sigma0, alpha1, sigma1):
    """The exact probability-flow map of a Gaussian target between (alpha0, sigma0) and
    (alpha1, sigma1): x1 = alpha1 mu + Q diag(sqrt(v1/v0)) Q^T (x0 - alpha0 mu), v = alpha^2 lam +
    sigma^2 per eigenvalue lam of Sigma (ground-truth.md Sec. 2.1; Wang & Vastola 2023). Returns
    (A, b) with x1 = A x0 + b."""
    lam, Q = eigh(target.cov)
    v0 = alpha0**2 * lam + sigma0**2
    v1 = alpha1**2 * lam + sigma1**2
    A = (Q * np.sqrt(v1 / v0)) @ Q.T
    b = alpha1 * target.mean_vec - A @ (alpha0 * target.mean_vec)
    return A, b


def ideal_output_law(target: Gaussian, grid: Grid):
    """The law an exact sampler produces on ``grid`` from x_init ~ p_{t_0}: p_{t_N} when the grid
    ends at sigma > 0; with the final jump, the law of E[x0 | x] for x ~ p_{t_{N-1}}, i.e.
    N(mu, alpha^2 Sigma C^{-1} Sigma) (the jump's own error is then not counted as
    discretisation error). Returns (mean, cov)."""
    i = grid.steps - 1 if grid.final_zero else grid.steps
    a, s = grid.alpha[i], grid.sigma[i]
    C = a * a * target.cov + s * s * np.eye(target.d)
    if not grid.final_zero:
        return a * target.mean_vec, C
    # alpha^2 Sigma C^{-1} Sigma, with C^{-1} Sigma from a solve (Sigma and C commute)
    cov = a * a * target.cov @ np.linalg.solve(C, target.cov)
    return target.mean_vec.copy(), 0.5 * (cov + cov.T)
