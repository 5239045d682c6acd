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
]


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


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
    """A GaussianMixture with K components in d dimensions (drawn when not given)."""
    d = draw(st.integers(1, 5)) if d is None else d
    K = draw(st.integers(1, 5)) if K is None else K
    ctype = (
        draw(st.sampled_from(["full", "diag", "iso"]))
        if covariance_type is None
        else covariance_type
    )
    seed = draw(st.integers(0, 2**32 - 1))
    g = np.random.default_rng(seed)
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
