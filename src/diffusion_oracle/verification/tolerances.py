"""The error models behind every tolerance of :func:`diffusion_oracle.verify`.

No tolerance here is read off a run of the code under test. Each follows from a stated model:

Rounding (same-grid comparisons, affinity of the probe, landing on a point mass)
    Probabilistic rounding-error analysis (Higham & Mary 2019, "A new approach to
    probabilistic rounding error analysis", SIAM J. Sci. Comput. 41(5), Thm. 2.4): a computation
    of n floating-point operations with unit roundoff u has relative error at most
    lambda sqrt(n) u with probability at least 1 - 2n exp(-lambda^2 (1 - u)^2 / 2), the rounding
    errors being independent and mean-zero. With lambda = 8 that failure probability is below
    2.6e-14 n: the bound is a tolerance, not a typical value (typical errors are ~sqrt(n) u).

    A sampler run is counted as n = OPS_PER_CALL (model calls + steps) operations on a state of
    size S, the largest RMS size of x_t over the grid's nodes, sqrt(alpha^2 E|x0|^2 + sigma^2 d)
    (on VE/EDM paths sigma reaches sigma_max: S is then far above the data's scale). A
    discrete (DDPM) schedule adds what its definition forces on every implementation: the T
    factors of the cumulative product alpha_bar = prod (1 - beta), and
    the noise levels sigma = sqrt(1 - alpha_bar) formed from that table (diffusers, k-diffusion's
    get_sigmas_vp), which know sigma_i only to u / (2 sigma_i) absolutely and so move the state
    by u sqrt(d) alpha_i / (2 sigma_i) at that step. A continuous variance-preserving path run
    below float64 gets the same term (a float32 sampler forms sigma = sqrt(1 - alpha^2) the
    textbook way); in float64 a continuous schedule's closed forms avoid it. All terms add in
    quadrature:

        tol = lambda u sqrt(OPS_PER_CALL (calls + steps) S^2
                            + T S^2                                          [discrete]
                            + sum_i d alpha_i^2 / (4 sigma_i^2))   [discrete, or VP below float64]

    A sampler that keeps its noise-level table in a coarser dtype than it computes in (diffusers'
    sigma schedulers round sigmas through float32 even in float64 mode) adds u_table^2 sum_i
    S_i^2 under the root: each level rounded once.

    u is the unit roundoff of the dtype the sampler ran in (detected from what it handed the
    model, or declared). float64 gives ~1e-13 of the data scale, float32 ~1e-5..1e-4,
    bfloat16 ~0.1-1: a comparison whose tolerance reaches RESOLVABLE_FRACTION of the state is
    INCONCLUSIVE (rounding alone could explain any fault).

Sampling (the prior check)
    A shift of the output law smaller than what n exact draws resolve cannot be seen in the
    statistical tier and is not judged a fault: W2 <= sqrt(tr Cov / n), the standard error of
    the mean of n draws in W2 units (see :func:`prior_tolerance`).

Discretisation (orders)
    The order window [p - 0.2, p + 0.35] and the round-off floors in the harness (ground-truth
    notes Sec. 3).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "LAMBDA",
    "OPS_PER_CALL",
    "RESOLVABLE_FRACTION",
    "dtype_name",
    "unit_roundoff",
    "rounding_tolerance",
    "path_scales",
    "prior_tolerance",
]

LAMBDA = 8.0  # Higham & Mary 2019: failure probability <= 2n exp(-32) = 2.5e-14 n
# rounded operations per model call or step on each coordinate: the model's input and output
# (two roundings when the model runs in another precision), a conversion between predictions
# (a product and a sum), and the update a x + b D (two products, one sum); 8 rounds that up
OPS_PER_CALL = 8
RESOLVABLE_FRACTION = 0.1  # a same-grid tolerance above 10% of the state resolves no fault

_UNIT_ROUNDOFF = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}


def dtype_name(dtype) -> str:
    """'float64', 'float32', 'float16' or 'bfloat16' for a NumPy dtype, a torch dtype or a
    name; ValueError for anything else (integers, complex)."""
    if dtype is None:
        raise TypeError("dtype must be a floating dtype or its name, got None")
    name = str(dtype).replace("torch.", "")
    if name in ("double", "float", "half"):
        name = {"double": "float64", "float": "float32", "half": "float16"}[name]
    if name not in _UNIT_ROUNDOFF:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            pass
    if name not in _UNIT_ROUNDOFF:
        raise ValueError(f"dtype must be one of {sorted(_UNIT_ROUNDOFF)}, got {dtype!r}")
    return name


def unit_roundoff(dtype) -> float:
    """u = 2^-p for a p-bit significand: 2^-53 (float64), 2^-24 (float32), 2^-11 (float16),
    2^-8 (bfloat16)."""
    return _UNIT_ROUNDOFF[dtype_name(dtype)]


def path_scales(grid, m2: float, d: int) -> np.ndarray:
    """S_i = sqrt(alpha_i^2 m2 + sigma_i^2 d): the RMS size of the state x_t at each node, for
    data with second moment m2 = E|x0|^2 = tr Sigma + |mu|^2 in d dimensions (VE/EDM paths reach
    sigma_max, so this is not bounded by the data's scale)."""
    a, s = np.asarray(grid.alpha), np.asarray(grid.sigma)
    return np.sqrt(a * a * m2 + s * s * d)


def rounding_tolerance(dtype, grid, *, m2: float, d: int, calls: int | None = None,
                       table_dtype=None) -> float:  # fmt: skip
    """The largest difference (in the units of the state, e.g. W2 or an RMS distance) that
    rounding in ``dtype`` explains for a run on ``grid`` (module docstring):

        lambda sqrt(u^2 [OPS_PER_CALL (calls + N) S^2 + T S^2 + sum_i d alpha_i^2/(4 sigma_i^2)]
                    + u_table^2 sum_i S_i^2)

    with S = max_i S_i (:func:`path_scales`; ``m2`` the data's second moment), the T and
    noise-level terms for a discrete schedule only, and the last term when the sampler keeps its
    noise-level table in a coarser ``table_dtype`` than it computes in (diffusers' sigma tables:
    each node's level rounded once). ``calls`` is the run's model calls (default N)."""
    from diffusion_oracle.reference.schedules import DiscreteSchedule

    u = unit_roundoff(dtype)
    N = int(grid.steps)
    calls = N if calls is None else int(calls)
    Si = path_scales(grid, m2, d)
    S2 = float(np.max(Si)) ** 2
    total = OPS_PER_CALL * (calls + N) * S2
    sch = grid.schedule
    discrete = isinstance(sch, DiscreteSchedule)
    if discrete:
        # the table every implementation builds: alpha_bar = prod (1 - beta) over T factors
        total += sch.T * S2
    if discrete or (u > _UNIT_ROUNDOFF["float64"] and _variance_preserving(grid)):
        # sigma = sqrt(1 - alpha_bar) from that table, or from alpha in a low precision (the
        # textbook form): sigma_i is known only to u / (2 sigma_i)
        a, s = grid.alpha, grid.sigma
        on = s > 0
        total += float(np.sum(d * (a[on] / s[on]) ** 2 / 4.0))
    total *= u * u
    if table_dtype is not None:
        ut = unit_roundoff(table_dtype)
        if ut > u:
            total += ut * ut * float(np.sum(Si * Si))
    return LAMBDA * math.sqrt(total)


def _variance_preserving(grid) -> bool:
    """alpha^2 + sigma^2 = 1 on the grid's nodes (DDPM, VP-linear, cosine paths)."""
    a, s = np.asarray(grid.alpha), np.asarray(grid.sigma)
    return bool(np.all(np.abs(a * a + s * s - 1.0) < 1e-9))


def prior_tolerance(cov: np.ndarray, n: int) -> float:
    """sqrt(tr Cov / n): the standard error of the mean of ``n`` draws of a law with covariance
    ``cov``, in W2 units. A shift of the output law below it is invisible to n samples; the prior
    check judges the shift the usual prior N(0, (alpha_0^2 + sigma_0^2) I) causes against it."""
    return math.sqrt(float(np.trace(cov)) / max(int(n), 1))
