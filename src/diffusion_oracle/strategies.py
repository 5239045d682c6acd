"""Public hypothesis strategies for schedules, times, SPD matrices and Gaussian mixtures, so
other projects can property-test their diffusion code against the oracle.

Requires ``hypothesis`` (the ``test`` extra). Example::

    from hypothesis import given
    from diffusion_oracle import strategies as dst

    @given(dst.schedules(), dst.unit_times())
    def test_alpha_in_range(schedule, t):
        assert 0.0 <= schedule.alpha(t)
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from diffusion_oracle.reference import (
    EDM,
    DiscreteSchedule,
    Flow,
    GaussianMixture,
    SubVP,
    VEGeometric,
    VPCosine,
    VPLinear,
    rescale_zero_terminal_snr,
)

__all__ = [
    "continuous_schedules",
    "discrete_schedules",
    "schedules",
    "unit_times",
    "interior_times",
    "spd_matrices",
    "gaussian_mixtures",
    "sizes",
    "noise_levels",
]

# The documented accuracy domain of the targets: d up to 512 dimensions, K up to 256 components.
MAX_D = 512
MAX_K = 256
# a full-covariance draw keeps K d^2 below this (8 MB of covariances; the eigendecompositions
# stay well under a second): large d then comes with few components
_FULL_BUDGET = 1 << 20


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@st.composite
def sizes(draw, hi: int):
    """An integer in [1, hi], weighted towards small sizes so that draws stay cheap: 1..5 in 70%
    of draws, up to 64 in 20%, up to ``hi`` in 10% (hypothesis shrinks towards 1)."""
    hi = int(hi)
    tier = draw(st.integers(0, 9))
    if tier < 7:
        return draw(st.integers(1, min(5, hi)))
    if tier < 9:
        return draw(st.integers(1, min(64, hi)))
    return draw(st.integers(1, hi))


@st.composite
def noise_levels(draw, max_alpha: float = 1.0, max_sigma: float = 80.0):
    """(alpha, sigma) of a point on a diffusion path, alpha in [0, max_alpha], sigma in
    [0, max_sigma], not both 0: ordinary levels, tiny ones (down to 1e-300, the data end of
    every path, alpha -> 0 at zero terminal SNR) and the endpoints 0 themselves."""

    def level(hi):
        return draw(st.one_of(_floats(0.0, hi), _floats(1e-300, 1e-3),
                              st.sampled_from([0.0, 1e-300, 1e-150, 1e-8, hi])))  # fmt: skip

    a, s = level(max_alpha), level(max_sigma)
    if a == 0.0 and s == 0.0:
        s = draw(_floats(1e-300, max_sigma).filter(lambda v: v > 0))
    return a, s


@st.composite
def continuous_schedules(draw):
    """Any continuous schedule with parameters drawn from its valid domain."""
    kind = draw(st.sampled_from(["vp-linear", "vp-cosine", "ve", "edm", "subvp", "flow"]))
    if kind in ("vp-linear", "subvp"):
        bmin = draw(_floats(0.01, 2.0))
        bmax = draw(_floats(bmin + 0.5, 40.0))
        return (VPLinear if kind == "vp-linear" else SubVP)(bmin, bmax)
    if kind == "vp-cosine":
        return VPCosine(draw(_floats(0.0, 0.05)))
    if kind == "ve":
        smin = draw(_floats(1e-3, 0.5))
        return VEGeometric(smin, draw(_floats(smin * 2, 200.0)))
    if kind == "edm":
        smin = draw(_floats(1e-3, 0.5))
        return EDM(smin, draw(_floats(smin * 2, 200.0)), draw(_floats(1.0, 10.0)))
    return Flow()


@st.composite
def discrete_schedules(draw, max_T: int = 1000):
    """Any discrete DDPM schedule: linear, scaled_linear, cosine, sigmoid, log-SNR-linear, with
    or without zero-terminal-SNR rescaling."""
    T = draw(st.integers(2, max_T))
    kind = draw(st.sampled_from(["linear", "scaled_linear", "cosine", "sigmoid", "log_snr_linear"]))
    if kind in ("linear", "sigmoid"):
        b0 = draw(_floats(1e-5, 1e-2))
        sch = getattr(DiscreteSchedule, kind)(T, b0, draw(_floats(b0 * 1.01, 0.5)))
    elif kind == "scaled_linear":
        b0 = draw(_floats(1e-5, 1e-2))
        sch = DiscreteSchedule.scaled_linear(T, b0, draw(_floats(b0 * 1.01, 0.5)))
    elif kind == "cosine":
        sch = DiscreteSchedule.cosine(T, draw(_floats(0.0, 0.05)), draw(_floats(0.5, 0.999)))
    else:
        hi = draw(_floats(-5.0, 20.0))
        sch = DiscreteSchedule.log_snr_linear(T, hi, draw(_floats(-20.0, hi - 0.5)))
    if draw(st.booleans()) and draw(st.booleans()):
        sch = rescale_zero_terminal_snr(sch)
    return sch


def schedules():
    """Any built-in schedule kind with random valid parameters."""
    return st.one_of(continuous_schedules(), discrete_schedules())


def unit_times():
    """t in [0, 1], endpoints included."""
    return st.one_of(st.sampled_from([0.0, 1.0]), _floats(0.0, 1.0))


def interior_times(lo: float = 1e-3, hi: float = 1.0 - 1e-3):
    """t strictly inside (0, 1), where alpha > 0 and sigma > 0 for every schedule."""
    return _floats(lo, hi)


@st.composite
def spd_matrices(draw, d: int, max_condition: float = 1e3, scale=(0.01, 4.0)):
    """A symmetric positive definite d x d matrix Q diag(lam) Q^T, condition <= max_condition."""
    seed = draw(st.integers(0, 2**32 - 1))
    g = np.random.default_rng(seed)
    Q, R = np.linalg.qr(g.standard_normal((d, d)))
    Q = Q * np.sign(np.diag(R))
    top = draw(_floats(*scale))
    log_c = draw(_floats(0.0, float(np.log(max_condition))))
    lam = top * np.exp(-log_c * g.uniform(0.0, 1.0, d))
    lam[0] = top
    S = (Q * lam) @ Q.T
    return 0.5 * (S + S.T)


@st.composite
def gaussian_mixtures(
    draw,
    d=None,
    K=None,
    covariance_type=None,
    max_condition: float = 1e3,
    with_labels: bool = False,
):
    """A GaussianMixture with K components in d dimensions (drawn when not given, up to the
    documented domain d <= 512, K <= 256, weighted towards small sizes; a full-covariance draw
    keeps K d^2 <= 2^20, so large d comes with few components). Weights are Dirichlet, in a
    quarter of the draws extreme: one component carries all but 1e-9 of the mass."""
    ctype = (
        draw(st.sampled_from(["full", "diag", "iso"]))
        if covariance_type is None
        else covariance_type
    )
    d = draw(sizes(MAX_D)) if d is None else d
    if K is None:
        k_max = MAX_K if ctype != "full" else max(1, min(MAX_K, _FULL_BUDGET // (d * d)))
        K = draw(sizes(k_max))
    seed = draw(st.integers(0, 2**32 - 1))
    g = np.random.default_rng(seed)
    if K > 1 and draw(st.integers(0, 3)) == 0:  # extreme weights
        w = np.full(K, 1e-9 / (K - 1))
        w[g.integers(K)] = 1.0 - 1e-9
    else:
        w = g.dirichlet(np.full(K, 2.0)) + 1e-3
        w = w / w.sum()
    spread = draw(_floats(0.0, 4.0))
    means = spread * g.standard_normal((K, d))
    if ctype == "full":
        covs = np.stack([draw(spd_matrices(d, max_condition)) for _ in range(K)])
    elif ctype == "diag":
        covs = np.exp(g.uniform(np.log(0.01), np.log(2.0), (K, d)))
    else:
        covs = np.exp(g.uniform(np.log(0.01), np.log(2.0), K))
    labels = g.integers(0, 3, K) if with_labels else None
    return GaussianMixture(w, means, covs, covariance_type=ctype, labels=labels)
