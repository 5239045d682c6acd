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
    size S (|x| over the path: sqrt(tr E[x x^T]) of the data plus the noise, <= sqrt(tr Sigma +
    |mu|^2 + d)). A discrete (DDPM) schedule adds what its definition forces on every
    implementation: the T factors of the cumulative product alpha_bar = prod (1 - beta), and
    the noise levels sigma = sqrt(1 - alpha_bar) formed from that table (diffusers, k-diffusion's
    get_sigmas_vp), which know sigma_i only to u / (2 sigma_i) absolutely and so move the state
    by u sqrt(d) alpha_i / (2 sigma_i) at that step. A continuous schedule has no such table
    (sigma(t) has closed forms without the cancellation), so no such term. All terms add in
    quadrature:

        tol = lambda u sqrt(OPS_PER_CALL (calls + steps) S^2
                            + T S^2 + sum_i d alpha_i^2 / (4 sigma_i^2))     [discrete only]

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


def rounding_tolerance(dtype, grid, *, scale: float, d: int, calls: int | None = None) -> float:
    """The largest difference (in the units of the state, e.g. W2 or an RMS distance) that
    rounding in ``dtype`` explains for a run on ``grid`` (module docstring):
    lambda u sqrt(OPS_PER_CALL (calls + N) S^2 + T S^2 + sum_i d alpha_i^2 / (4 sigma_i^2)).

    ``scale`` is S, the size of the state; ``calls`` the model calls of the run (default N);
    a discrete schedule of T steps adds its alpha_bar product and the representation error of
    its noise levels."""
    from diffusion_oracle.reference.schedules import DiscreteSchedule

    u = unit_roundoff(dtype)
    N = int(grid.steps)
    calls = N if calls is None else int(calls)
    total = OPS_PER_CALL * (calls + N) * scale**2
    sch = grid.schedule
    if isinstance(sch, DiscreteSchedule):
        # the table every implementation builds: alpha_bar = prod (1 - beta) over T factors,
        # then sigma = sqrt(1 - alpha_bar), which knows sigma_i only to u / (2 sigma_i)
        total += sch.T * scale**2
        a, s = grid.alpha, grid.sigma
        on = s > 0
        total += float(np.sum(d * (a[on] / s[on]) ** 2 / 4.0))
    return LAMBDA * u * math.sqrt(total)


def prior_tolerance(cov: np.ndarray, n: int) -> float:
    """sqrt(tr Cov / n): the standard error of the mean of ``n`` draws of a law with covariance
    ``cov``, in W2 units. A shift of the output law below it is invisible to n samples; the prior
    check judges the shift the usual prior N(0, (alpha_0^2 + sigma_0^2) I) causes against it."""
    return math.sqrt(float(np.trace(cov)) / max(int(n), 1))
