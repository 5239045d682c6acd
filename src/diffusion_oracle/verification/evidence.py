"""Stage 3 of verify: collect the evidence, tier by tier, without judging it.

- :func:`tier1`: on the target's moment-matched Gaussian the exact model is affine, so the
  sampler's output law is computed exactly (:func:`~diffusion_oracle.reference.exact.probe_affine`);
  W2 to the ideal law on the grid, to the data law, to a reference's law on the same grid, and the
  shift the usual prior N(0, (alpha_0^2 + sigma_0^2) I) causes. Also the run's model calls, its
  distinct model times and its dtype.
- :func:`tier2`: deterministic samplers on the target against the exact flow map, same starts.
- :func:`tier3`: samples at one step count against the exact law, four tests.
- :func:`landing`: the sampler driven by the exact model of a point mass at mu: every correct
  sampler's last step lands on mu (the final step to sigma = 0 maps x to E[x0 | x] = mu); a run
  that stops at sigma > 0 or uses a wrong final alpha keeps part of x, which reads as the level
  (alpha, sigma) it landed at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from diffusion_oracle.reference import ExactModel, Gaussian, GaussianMixture
from diffusion_oracle.reference.exact import (
    RecordingRNG,
    gaussian_w2,
    ideal_output_law,
    probe_affine,
)
from diffusion_oracle.reference.samplers import ExactODE

from .execute import TracingModel, coarsest, run_sampler
from .plan import stream, stream_seed
from .tolerances import LAMBDA, rounding_tolerance

__all__ = [
    "moment_gaussian",
    "data_m2",
    "Tier1",
    "tier1",
    "tier2",
    "Tier3",
    "tier3",
    "Landing",
    "landing",
    "point_mass",
    "prior_shift",
]

_FLOW_CACHE: dict = {}
_MMD_CACHE: dict = {}


def moment_gaussian(target: GaussianMixture) -> Gaussian:
    """The Gaussian with the target's mean and covariance (tier 1's problem)."""
    return Gaussian(target.mean(), target.covariance())


def data_m2(target) -> float:
    """E|x0|^2 = tr Sigma + |mu|^2 of the target (the rounding model's data moment)."""
    cov = target.covariance() if callable(getattr(target, "covariance", None)) else target.cov
    mu = target.mean() if callable(getattr(target, "mean", None)) else target.mean_vec
    return float(np.trace(cov)) + float(mu @ mu)


def fingerprint(target) -> str:
    """A content hash of a mixture (weights, means, covariance factors), for caches."""
    import hashlib

    h = hashlib.sha1()
    for arr in (
        target.weights,
        target.means,
        target._evals,
        target._evecs if target._evecs is not None else np.zeros(0),
    ):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------ tier 1
@dataclass
class Tier1:
    """Tier-1 outcome: ``broken`` (the first run error: the sampler cannot run), per step count
    the rounding tolerance of a same-grid comparison, and the probe failures (non-affine
    samplers: tier 1 unavailable)."""

    broken: str | None = None
    tol: dict = field(default_factory=dict)
    unavailable: dict = field(default_factory=dict)
    dtype: str | None = None
    reference_error: str | None = None


def tier1(sampler, target, schedule, prediction, grids, rows, seed, *, reference=None,
          dtype=None, table_dtype=None, acc=None, progress=None) -> Tier1:  # fmt: skip
    """Fill ``rows`` (StepResult per N) with tier-1 evidence (module docstring)."""
    gauss = moment_gaussian(target)
    res = Tier1()
    run = sampler
    base = ExactModel(gauss, schedule, prediction=prediction)
    if acc is not None and acc.sampler is not None:
        base, run = acc.gaussian_model(gauss), acc.sampler
    model = TracingModel(base)
    m2 = data_m2(target)
    out_scale = max(1.0, math.sqrt(m2))  # the size of the output, for relative residuals
    d = target.d
    for row in rows:
        g = grids[row.steps]
        x0 = gauss.diffuse(g.alpha[0], g.sigma[0]).sample(4, stream(seed, "tier1-start"))
        # the run's input and draws are kept: they are the probe's affinity check
        rec = RecordingRNG(stream(seed, "tier1-noise"))
        r = run_sampler(run, model, x0.copy(), g, rec)
        row.nfe, row.distinct_times = r.calls, r.distinct_times
        row.dtype = coarsest(dtype, r.dtype) or "float64"
        res.dtype = coarsest(res.dtype, row.dtype)
        tol = rounding_tolerance(row.dtype, g, m2=m2, d=d, calls=r.calls, table_dtype=table_dtype)
        res.tol[row.steps] = tol
        if r.error:
            row.error = r.error
            res.broken = res.broken or r.error
            _tick(progress)
            continue
        try:
            A = probe_affine(run, base, g, d, run=(x0, rec, r.out))
        except Exception as exc:  # ProbeError or anything the sampler raised: reported
            res.unavailable[row.steps] = f"not probed as an affine map: {exc}"
            row.error = f"tier 1 unavailable: {exc}"
            _tick(progress)
            continue
        # affinity: what rounding in the sampler's dtype explains, relative to the state
        if A.residual > tol / out_scale:
            res.unavailable[row.steps] = (
                f"not affine: residual {A.residual:.1e} of the state, above the rounding bound "
                f"{tol / out_scale:.1e} for {row.dtype} over {g.steps} steps (a sampler that "
                "computes in a lower precision than it hands the model: pass dtype=)"
            )
            row.error = f"not affine (residual {A.residual:.1e}): tier 1 unavailable"
            _tick(progress)
            continue
        a0, s0 = g.alpha[0], g.sigma[0]
        start_cov = a0 * a0 * gauss.cov + s0 * s0 * np.eye(d)
        m, S = A.output_law(a0 * gauss.mean_vec, start_cov)
        mi, Si = ideal_output_law(gauss, g)
        row.w2 = gaussian_w2(m, S, mi, Si)
        row.w2_data = gaussian_w2(m, S, gauss.mean_vec, gauss.cov)
        # the prior mismatch: the same sampler started from the usual prior
        # N(0, (alpha_0^2 + sigma_0^2) I) instead of the exact p_{t_0}
        mp_, Sp = A.output_law(np.zeros(d), (a0 * a0 + s0 * s0) * np.eye(d))
        row.w2_prior = gaussian_w2(mp_, Sp, m, S)
        if reference is not None:
            try:  # the reference's own failure is the same-grid check's, not tier 1's
                R = probe_affine(reference, ExactModel(gauss, schedule, prediction=prediction),
                                 g, d)  # fmt: skip
                mr, Sr = R.output_law(a0 * gauss.mean_vec, start_cov)
                row.w2_reference = gaussian_w2(m, S, mr, Sr)
            except Exception as exc:
                res.reference_error = res.reference_error or f"{type(exc).__name__}: {exc}"
        _tick(progress)
    return res


def _tick(bar, n=1):
    if bar is not None:
        bar.update(n)


# ------------------------------------------------------------------------------ tier 2
def tier2(sampler, target, schedule, prediction, grids, rows, seed, *, acc=None, progress=None):
    """Fill ``row.path_error``: RMS distance of the sampler's endpoints to the exact flow map's
    from 32 shared starts (the flow solve is cached by its endpoints). Returns (the first run
    error or None, {N: per-start distances}) for the per-start order fit."""
    model = ExactModel(target, schedule, prediction=prediction)
    exact_sampler = getattr(sampler, "exact_counterpart", None) or ExactODE()
    broken = None
    per_start = {}
    for row in rows:
        g = grids[row.steps]
        starts = target.diffuse(g.alpha[0], g.sigma[0]).sample(32, stream(seed, "tier2-start"))
        last = g.steps - 1 if g.final_zero else g.steps
        key = (
            fingerprint(target),
            repr(schedule),
            prediction,
            g.t[0],
            g.t[last],
            seed,
            getattr(exact_sampler, "name", ""),
            g.final_zero,
        )
        if key not in _FLOW_CACHE:
            _FLOW_CACHE[key] = exact_sampler(model, starts, g)
        exact = _FLOW_CACHE[key]
        if acc is not None and acc.sampler is not None:
            r = run_sampler(acc.sampler, acc.model, starts, g,
                            np.random.default_rng(stream_seed(seed, "tier2-noise")))  # fmt: skip
        else:
            r = run_sampler(sampler, model, starts, g, stream(seed, "tier2-noise"))
        if r.error:
            row.error, broken = r.error, broken or r.error
        else:
            dist = np.sqrt(((r.out - exact) ** 2).sum(1))
            per_start[row.steps] = dist
            row.path_error = float(np.sqrt((dist**2).mean()))
        _tick(progress)
    return broken, per_start


# ------------------------------------------------------------------------------ tier 3
@dataclass
class Tier3:
    """Tier-3 outcome: the tests, the samples, n, the step count and grid, the law tested."""

    stats: list
    samples: np.ndarray | None
    n: int
    steps: int
    grid: object
    law: object
    error: str | None = None
    alpha_each: float = 0.0


def tier3_tests(law, x, alpha_each, seed):
    """The four one-sample tests of ``x`` against ``law`` (responsibilities, projected KS,
    two-sided NLL, MMD), each at ``alpha_each``."""
    from diffusion_oracle.reference.stats import (
        mmd_test,
        nll_test,
        projected_ks_test,
        responsibility_test,
    )

    n_mmd = min(len(x), 500)
    null = mmd_null_cached(law, n_mmd, alpha_each)
    return [
        responsibility_test(law, x, alpha=alpha_each, rng=stream(seed, "stats-resp")),
        projected_ks_test(law, x, alpha=alpha_each, rng=stream(seed, "stats-ks")),
        nll_test(law, x, alpha=alpha_each, rng=stream(seed, "stats-nll")),
        mmd_test(law, x[:n_mmd], alpha=alpha_each, null=null),
    ]


def mmd_null_cached(law, n_mmd, alpha_each):
    """The MMD test's null at sample size ``n_mmd`` and level ``alpha_each``: a property of
    (law, n), drawn once from a fixed stream and kept (a Monte Carlo test keeps its level for any
    null sample drawn independently of x). Computing it before worker processes fork (the
    ``verify`` command does) lets every worker share it."""
    from diffusion_oracle.reference.stats import mmd_null

    mseed = stream_seed(0, "stats-mmd")
    key = (fingerprint(law), n_mmd, mseed, alpha_each)
    if key not in _MMD_CACHE:
        _MMD_CACHE[key] = mmd_null(law, n_mmd, replicates=int(2 / alpha_each) - 1, rng=mseed)
    return _MMD_CACHE[key]


def tier3(sampler, target, schedule, prediction, grid, n, seed, alpha_each, *, law=None,
          acc=None) -> Tier3:  # fmt: skip
    """Run the sampler from n exact draws of p_{t_0} on ``grid`` and test its output."""
    law = target if law is None else law
    model = ExactModel(target, schedule, prediction=prediction)
    start = law if law.d == target.d else target  # inpainting starts unconditionally
    on_device = acc is not None and acc.sampler is not None and law is target
    if on_device:  # start, noise and samples on the device
        gen = acc.generator(stream_seed(seed, "tier3"))
        x_init = acc.mixture.sample(n, gen, alpha=grid.alpha[0], sigma=grid.sigma[0])
        r = run_sampler(acc.sampler, acc.model, x_init, grid, gen)
    else:
        rng = stream(seed, "tier3")
        x_init = start.diffuse(grid.alpha[0], grid.sigma[0]).sample(n, rng)
        r = run_sampler(sampler, model, x_init, grid, rng)
    res = Tier3([], None, n, grid.steps, grid, law, r.error, alpha_each)
    if r.error:
        return res
    out = r.out
    if on_device:
        res.samples = out
        res.stats = acc.statistics(out, alpha_each, stream_seed(seed, "stats-mmd"))
        return res
    coords = getattr(sampler, "truth_coordinates", None)
    if coords is not None:
        out = out[:, coords]  # the law under test lives on these coordinates
    res.samples = out
    res.stats = tier3_tests(law, out, alpha_each, seed)
    return res


# ------------------------------------------------------------------------------ landing
# the point mass: an isotropic component of variance 1e-40 (std 1e-20): the exact denoiser is mu
# up to c/sigma^2 |x - alpha mu| <= 1e-40 / 1e-6, and a sampler that draws x0 from the exact
# posterior scatters by 1e-20 sqrt(d): both far below any rounding (and added to the tolerance)
POINT_MASS_VAR = 1e-40


def point_mass(target: GaussianMixture) -> GaussianMixture:
    """A point mass at the target's component mean farthest from 0 (so that a wrong final alpha
    shows; the unit vector when every mean is 0)."""
    k = int(np.argmax((target.means**2).sum(1)))
    mu = target.means[k].copy()
    if not np.any(mu):
        mu = np.ones(target.d) / math.sqrt(target.d)
    return GaussianMixture([1.0], mu[None], [POINT_MASS_VAR], covariance_type="iso")


@dataclass
class Landing:
    """The point-mass run: RMS distance of the outputs to mu, the level it corresponds to
    (alpha, sigma) from out = alpha mu + sigma z, and the tolerance."""

    steps: int
    rms: float
    alpha: float
    sigma: float
    tol: float
    dtype: str
    error: str | None = None
    scale: float = 1.0  # |mu|: a tolerance above 10% of it resolves no landing fault
    calls: int = 0
    distinct_times: int = 0


def landing(sampler, target, schedule, prediction, grid, seed, *, dtype=None, table_dtype=None,
            n=64) -> Landing:  # fmt: skip
    """Run the sampler on the point mass (see :func:`point_mass`) from n exact starts."""
    pm = point_mass(target)
    mu = pm.means[0]
    model = TracingModel(ExactModel(pm, schedule, prediction=prediction))
    rng = stream(seed, "landing")
    z = rng.standard_normal((n, target.d))
    x = grid.alpha[0] * mu + grid.sigma[0] * z
    r = run_sampler(sampler, model, x, grid, rng)
    dt = coarsest(dtype, r.dtype) or "float64"
    tol = rounding_tolerance(dt, grid, m2=float(mu @ mu), d=target.d, calls=r.calls,
                             table_dtype=table_dtype)  # fmt: skip
    tol += LAMBDA * math.sqrt(POINT_MASS_VAR * target.d)  # the point mass's own width
    scale = float(np.sqrt(mu @ mu))
    if r.error:
        return Landing(grid.steps, math.nan, math.nan, math.nan, tol, dt, r.error, scale,
                       r.calls, r.distinct_times)  # fmt: skip
    out = r.out
    rms = float(np.sqrt(((out - mu) ** 2).sum(1).mean()))
    # read the level back: out = alpha mu + sigma z for a deterministic sampler (on a point mass
    # the noise direction z of the start is kept along the whole path); least squares over all
    # entries, and the RMS of what z does not explain (stochastic samplers' fresh noise)
    A = np.stack([np.broadcast_to(mu, out.shape).ravel(), z.ravel()], 1)
    (a, c), *_ = np.linalg.lstsq(A, out.ravel(), rcond=None)
    rest = out.ravel() - A @ np.array([a, c])
    s = float(math.sqrt(c * c + float(np.mean(rest**2))))
    return Landing(grid.steps, rms, float(a), s, tol, dt, None, scale, r.calls, r.distinct_times)


# ------------------------------------------------------------------------------ prior
def prior_shift(target, grid) -> float:
    """W2 between the output laws of the exact sampler on ``grid`` started from the exact
    p_{t_0} and from the usual prior N(0, (alpha_0^2 + sigma_0^2) I), on the moment-matched
    Gaussian: both starts pushed through the exact flow map to the last node before the jump
    (:func:`~diffusion_oracle.reference.exact.exact_flow_gaussian`, affine), then through the
    exact jump E[x0 | x] = mu + alpha Sigma C^{-1} (x - alpha mu) when the grid ends at
    sigma = 0. A property of the schedule's terminal SNR (Lin et al. 2024), not of the sampler:
    it is judged whatever tiers run."""
    from diffusion_oracle.reference.exact import exact_flow_gaussian

    gauss = moment_gaussian(target)
    d = target.d
    a0, s0 = float(grid.alpha[0]), float(grid.sigma[0])
    i = grid.steps - 1 if grid.final_zero else grid.steps
    a1, s1 = float(grid.alpha[i]), float(grid.sigma[i])
    A, b = exact_flow_gaussian(gauss, a0, s0, a1, s1)
    if grid.final_zero:  # the jump, affine: x0 = J x + c
        C = a1 * a1 * gauss.cov + s1 * s1 * np.eye(d)
        J = a1 * np.linalg.solve(C, gauss.cov).T
        c = gauss.mean_vec - J @ (a1 * gauss.mean_vec)
        A, b = J @ A, J @ b + c
    m_exact = A @ (a0 * gauss.mean_vec) + b
    S_exact = A @ (a0 * a0 * gauss.cov + s0 * s0 * np.eye(d)) @ A.T
    m_prior = b
    S_prior = (a0 * a0 + s0 * s0) * (A @ A.T)
    return gaussian_w2(m_exact, 0.5 * (S_exact + S_exact.T), m_prior, 0.5 * (S_prior + S_prior.T))
