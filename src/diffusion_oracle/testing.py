"""Assertions for a project's own test suite: check your code against exact answers.

Each helper draws its inputs from the exact target, calls your function, compares with the
closed form, the exact flow map or the reference samplers of :mod:`diffusion_oracle.reference`,
and fails with a numpy.testing-style message (how many points disagree, the worst one, both
values) or with the failing verdicts of the verification report.

- :func:`assert_sampler_converges`: a sampler converges at its order (tiers 1 and 2 of
  :func:`diffusion_oracle.verify`: exact Gaussian W2 and pathwise error against the exact flow).
- :func:`assert_matches_reference`: a sampler equals a reference sampler on the same grid, from
  the same start, with the same noise.
- :func:`assert_distribution_matches`: samples pass the four tier-3 tests against a target.
- :func:`assert_log_likelihood_matches`: a log-likelihood function (an ODE likelihood, a
  Hutchinson estimator, a normalizing flow's log p) against the exact log-density.
- :func:`flow_map_error` / :func:`assert_flow_map_matches`: a one-step, distilled or
  consistency model x_t -> x_0 against the exact probability-flow map.

The pytest plugin (:mod:`diffusion_oracle.pytest_plugin`, loaded automatically once the package
is installed) offers these as the ``oracle`` fixture.

Functions may return NumPy arrays or torch tensors (moved to the CPU)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffusion_oracle.reference import Schedule, flow_map
from diffusion_oracle.reference._checks import finite_scalar, positive_int
from diffusion_oracle.reference.forward import _rng

__all__ = [
    "FlowMapError",
    "assert_distribution_matches",
    "assert_flow_map_matches",
    "assert_log_likelihood_matches",
    "assert_matches_reference",
    "assert_sampler_converges",
    "flow_map_error",
]


def _numpy(value, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).ravel())
        raise AssertionError(
            f"{name} returned non-finite values at {bad.size} of {arr.size} entries "
            f"(first at flat index {bad[0]}: {arr.ravel()[bad[0]]!r})"
        )
    return arr


def _tol(value, name):
    v = finite_scalar(value, name)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {v!r}")
    return float(v)


def _points(target, x, n, rng, alpha=1.0, sigma=0.0):
    if x is not None:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != target.d:
            raise ValueError(f"x must have shape (n, {target.d}), got {x.shape}")
        return x
    gen = _rng(rng)
    x0 = target.sample(positive_int(n, "n"), rng=gen)
    if sigma == 0.0 and alpha == 1.0:
        return x0
    return alpha * x0 + sigma * gen.standard_normal(x0.shape)


def _report(header, actual, desired, x, err, allowed):
    bad = err > allowed
    k = int(np.argmax(err - allowed))
    with np.printoptions(precision=6, threshold=8, edgeitems=3):
        return (
            f"{header}\n"
            f"Mismatched points: {int(bad.sum())} / {bad.size} ({100.0 * bad.mean():.3g}%)\n"
            f"Max absolute difference: {err.max():.6g}\n"
            f"Worst point x[{k}] = {x[k]}: actual {actual[k]}, exact {desired[k]}, "
            f"difference {err[k]:.6g}, allowed {float(np.broadcast_to(allowed, err.shape)[k]):.6g}"
        )


def assert_log_likelihood_matches(
    log_likelihood,
    target,
    *,
    x=None,
    n: int = 64,
    atol: float = 1e-5,
    rtol: float = 0.0,
    repeats: int = 1,
    z: float = 4.5,
    rng=0,
    alpha: float = 1.0,
    sigma: float = 0.0,
):
    """Assert that ``log_likelihood(x)`` (shape (n,), nats) equals the exact log p(x) of
    ``target`` (a GaussianMixture or Gaussian, diffused to (alpha, sigma) if given; Song et al.
    2021, App. D: the PF-ODE likelihood is exact up to its solver tolerance):

        |actual - exact| <= atol + rtol |exact|                        (repeats = 1), or
        |mean - exact|   <= atol + rtol |exact| + z * stderr           (repeats > 1: a stochastic
                                                                        estimator, e.g.
                                                                        Hutchinson's, called
                                                                        ``repeats`` times)

    at ``n`` exact draws from the target (or the given ``x``). The stochastic form also checks
    unbiasedness: a biased estimator fails once enough repeats shrink the standard error.

    Example::

        assert_log_likelihood_matches(lambda x: my_ode_loglik(x), ring8(), atol=1e-4)
    """
    atol, rtol, z = _tol(atol, "atol"), _tol(rtol, "rtol"), _tol(z, "z")
    repeats = positive_int(repeats, "repeats")
    xt = _points(target, x, n, rng, float(alpha), float(sigma))
    exact = target.log_prob(xt, alpha, sigma)
    draws = np.stack(
        [_numpy(log_likelihood(xt), "log_likelihood").reshape(-1) for _ in range(repeats)]
    )
    if draws.shape[1] != xt.shape[0]:
        raise AssertionError(
            f"log_likelihood must return one value per point: expected shape ({xt.shape[0]},), "
            f"got {draws.shape[1:]}"
        )
    actual = draws.mean(0)
    allowed = atol + rtol * np.abs(exact)
    if repeats > 1:
        allowed = allowed + z * draws.std(0, ddof=1) / math.sqrt(repeats)
    err = np.abs(actual - exact)
    if (err > allowed).any():
        what = f"mean of {repeats} calls" if repeats > 1 else "log_likelihood"
        raise AssertionError(
            _report(
                f"Not equal to the exact log-density within atol={atol:g}, rtol={rtol:g}"
                + (f", {z:g} standard errors" if repeats > 1 else "")
                + f" ({what}; target {target!r})",
                actual,
                exact,
                xt,
                err,
                allowed,
            )
        )


@dataclass(frozen=True)
class FlowMapError:
    """Errors of a one-step model against the exact flow map, over ``n`` points: ``rms`` =
    sqrt(mean |f - f*|^2) (per point, summed over coordinates), ``max`` the largest |f - f*|,
    ``relative_rms`` = rms / sqrt(mean |f*|^2), ``per_point`` (n,) norms, and the points
    ``x_t`` with ``exact`` and ``actual`` outputs."""

    rms: float
    max: float
    relative_rms: float
    per_point: np.ndarray
    x_t: np.ndarray
    exact: np.ndarray
    actual: np.ndarray


def flow_map_error(model, target, schedule: Schedule, t, *, s=0.0, x=None, n=256, rng=0):
    """Measure ``model(x_t, t)`` (a one-step / distilled / consistency model's prediction of
    x_s, by default x_0) against the exact probability-flow map of ``target`` on ``schedule``
    (:func:`diffusion_oracle.reference.flow_map`; the consistency function f(x_t, t) of Song et
    al. 2023, arXiv:2303.01469, eq. 3), at ``n`` exact draws x_t ~ p_t (or the given ``x``).

    Returns :class:`FlowMapError`. Note that the target of a consistency model is the flow map
    f*(x_t), not the denoiser E[x_0 | x_t] (which :func:`assert_flow_map_matches` tells apart:
    the two differ except at t = 0 or for a point mass)."""
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    t = float(t)
    a, sg = float(schedule.alpha(t)), float(schedule.sigma(t))
    x_t = _points(target, x, n, rng, a, sg)
    exact = flow_map(target, schedule, x_t, t, s)
    actual = _numpy(model(x_t, t), "model")
    if actual.shape != exact.shape:
        raise AssertionError(f"model must return shape {exact.shape}, got {actual.shape}")
    per = np.sqrt(((actual - exact) ** 2).sum(1))
    rms = float(np.sqrt((per**2).mean()))
    scale = float(np.sqrt((exact**2).sum(1).mean()))
    return FlowMapError(rms, float(per.max()), rms / scale, per, x_t, exact, actual)


def assert_flow_map_matches(
    model, target, schedule: Schedule, t, *, s=0.0, atol=1e-6, rtol=0.0, x=None, n=256, rng=0
):
    """Assert |model(x_t, t) - f*(x_t)| <= atol + rtol |f*(x_t)| at every point, f* the exact
    flow map to time ``s`` (see :func:`flow_map_error`), with a numpy.testing-style message.

    Example::

        assert_flow_map_matches(my_consistency_model, ring8(), VPLinear(), 1.0, atol=1e-3)
    """
    atol, rtol = _tol(atol, "atol"), _tol(rtol, "rtol")
    res = flow_map_error(model, target, schedule, t, s=s, x=x, n=n, rng=rng)
    allowed = atol + rtol * np.sqrt((res.exact**2).sum(1))
    if (res.per_point > allowed).any():
        raise AssertionError(
            _report(
                f"Not equal to the exact flow map x_{t:g} -> x_{s:g} within atol={atol:g}, "
                f"rtol={rtol:g} (rms error {res.rms:.6g}, relative {res.relative_rms:.3g}; "
                f"target {target!r}, schedule {schedule!r})",
                res.actual,
                res.exact,
                res.x_t,
                res.per_point,
                allowed,
            )
        )
    return res


class _Declared:
    """``sampler`` with the declared order ``order`` (everything else forwarded)."""

    def __init__(self, sampler, order):
        self._sampler, self.order = sampler, order
        self.name = getattr(sampler, "name", getattr(sampler, "__name__", repr(sampler)))

    def __getattr__(self, item):
        return getattr(self._sampler, item)

    def __call__(self, *args, **kwargs):
        return self._sampler(*args, **kwargs)


def assert_sampler_converges(
    sampler, order=None, *, target="ring8", schedule=None, steps=None, tiers=(1, 2), **verify_kw
):
    """Assert that ``sampler`` (the protocol of :func:`diffusion_oracle.verify`:
    ``sampler(model, x_init, grid, *, rng)``) converges at ``order`` (default: its ``order``
    attribute): the least-squares slope of the exact tier-1 W2 (moment-matched Gaussian) and of
    the tier-2 pathwise error against the exact PF-ODE flow map, over geometric step counts,
    must lie in [order - 0.2, order + 0.35] (tier 1 may superconverge). Also fails when the
    sampler raises, returns NaN or the wrong shape. Returns the :class:`Report`.

    Example::

        assert_sampler_converges(my_heun, order=2)
    """
    from diffusion_oracle.harness import DEFAULT_STEPS, verify

    declared = getattr(sampler, "order", None) if order is None else order
    if declared is None:
        raise ValueError("order must be given (or the sampler must have an 'order' attribute)")
    run = sampler if order is None else _Declared(sampler, order)
    report = verify(
        run, target, schedule, steps=DEFAULT_STEPS if steps is None else steps, tiers=tiers,
        progress=False, **verify_kw,
    )  # fmt: skip
    from diffusion_oracle.verification.report import Verdict

    failed = [c for c in report.checks if c.verdict is Verdict.FAIL]
    orders = [c for c in report.checks if c.name.startswith("order (")]
    judged = [c for c in orders if c.verdict is Verdict.PASS]
    if failed:
        failed_text = "\n".join(f"  {c.name}: {c.reason}" for c in failed)
    elif not judged:
        why = "; ".join(f"{c.name}: {c.verdict.value}: {c.reason}" for c in orders)
        failed_text = "no order could be judged" + (f" ({why})" if why else "")
    else:
        return report
    raise AssertionError(
        f"Sampler {report.sampler} does not converge at order {declared}:\n{failed_text}\n\n"
        f"{report}"
    )


def assert_matches_reference(
    sampler,
    reference,
    *,
    target="ring8",
    schedule=None,
    steps=(10, 25),
    grid: str = "uniform",
    prediction: str = "eps",
    n: int = 256,
    rtol: float | None = None,
    seed: int = 0,
):
    """Assert that ``sampler`` produces the samples of ``reference`` (a built-in sampler such
    as ``DDIM(0.0)`` or ``DPMSolverPP2M()``) on the same grid, from the same ``n`` exact draws of
    p_{t_0} and the same noise stream: max |x - x_ref| <= rtol * max(1, max |x_ref|) at every
    step count. A sampler that chooses its own times (``make_grid``) runs on its grid, and so
    does the reference. The tolerance is the rounding bound of the dtype the sampler ran in
    (:mod:`diffusion_oracle.verification.tolerances`: float64 ~1e-13, float32 ~1e-5 of the
    state), or ``rtol`` times the sample scale when given; a failure names the first divergence
    (model time, noise, prediction, coefficients, calls, final step).

    Example::

        assert_matches_reference(my_ddim, DDIM(0.0), steps=(10, 50))
    """
    from diffusion_oracle.reference import ExactModel, VPLinear, get_target
    from diffusion_oracle.reference.grids import make_grid

    tgt = get_target(target) if isinstance(target, str) else target
    sch = VPLinear() if schedule is None else schedule
    from diffusion_oracle.verification.diagnose import first_divergence
    from diffusion_oracle.verification.evidence import data_m2
    from diffusion_oracle.verification.execute import TracingModel, array_dtype, coarsest
    from diffusion_oracle.verification.tolerances import rounding_tolerance

    rtol = None if rtol is None else _tol(rtol, "rtol")
    model = ExactModel(tgt, sch, prediction=prediction)
    for N in steps:
        g = sampler.make_grid(sch, N) if hasattr(sampler, "make_grid") else make_grid(sch, N, grid)
        gen = np.random.default_rng(seed)
        x_init = tgt.diffuse(g.alpha[0], g.sigma[0]).sample(positive_int(n, "n"), gen)
        traced = TracingModel(model)
        raw = sampler(traced, x_init.copy(), g, rng=np.random.default_rng(seed + 1))
        got = _numpy(raw, "sampler")
        want = reference(model, x_init.copy(), g, rng=np.random.default_rng(seed + 1))
        if got.shape != want.shape:
            raise AssertionError(f"sampler must return shape {want.shape}, got {got.shape}")
        scale = max(1.0, float(np.abs(want).max()))
        if rtol is None:  # the rounding model in the dtype the sampler ran in
            dt = coarsest(traced.dtype, array_dtype(raw)) or "float64"
            allowed = rounding_tolerance(dt, g, m2=data_m2(tgt), d=tgt.d, calls=traced.calls)
            # rounding made along the way is carried to the output by the map itself: near a
            # boundary between modes the flow map amplifies it. Its local gain at each start,
            # from the reference (the oracle) by a finite difference, widens that start's bound
            v = np.random.default_rng(seed + 2).standard_normal(x_init.shape)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            h = 1e-6 * max(1.0, float(np.abs(x_init).max()))
            moved = reference(model, x_init + h * v, g, rng=np.random.default_rng(seed + 1))
            gain = np.linalg.norm(np.asarray(moved) - want, axis=1) / h
            allowed = allowed * np.maximum(1.0, gain)
            how = f"the {dt} rounding bound ({allowed.min():.2g}..{allowed.max():.2g})"
        else:
            allowed = rtol * scale
            how = f"rtol={rtol:g} of the sample scale {scale:.3g}"
        err = np.abs(got - want).max(axis=1)
        allowed = np.broadcast_to(np.asarray(allowed, dtype=np.float64), err.shape)
        if (err > allowed).any():
            div = first_divergence(sampler, reference, model, g, x_init[:8], seed,
                                   float(np.min(allowed)))  # fmt: skip
            raise AssertionError(
                _report(
                    f"Not equal to the reference {reference!r} within {how} at {N} steps "
                    f"({g.steps} grid intervals; same start and noise)"
                    + (f"; first divergence: {div}" if div is not None else ""),
                    got,
                    want,
                    x_init,
                    err,
                    allowed,
                )
            )


def assert_distribution_matches(samples, target, *, alpha: float = 0.01, seed: int = 0):
    """Assert that ``samples`` (n, d) are draws from ``target`` (a GaussianMixture or a built-in
    name): the four tier-3 tests of :func:`diffusion_oracle.verify` (responsibilities,
    projected KS against the exact CDFs, two-sided NLL, MMD with the exact mean embedding), each
    at ``alpha``/4 so that the family false-alarm rate is ``alpha``. The failure message lists
    the failing tests with their statistics. Returns the four test results.

    Example::

        assert_distribution_matches(my_sampler_output, "ring8")
    """
    from diffusion_oracle.reference import get_target
    from diffusion_oracle.reference import stats as rstats

    tgt = get_target(target) if isinstance(target, str) else target
    x = _numpy(samples, "samples")
    if x.ndim != 2 or x.shape[1] != tgt.d:
        raise ValueError(f"samples must have shape (n, {tgt.d}), got {x.shape}")
    if x.shape[0] < 20:
        raise ValueError(f"samples must hold at least 20 draws, got {x.shape[0]}")
    a = _tol(alpha, "alpha") / 4
    n_mmd = min(x.shape[0], 500)
    results = [
        rstats.responsibility_test(tgt, x, alpha=a, rng=seed + 1),
        rstats.projected_ks_test(tgt, x, alpha=a, rng=seed + 2),
        rstats.nll_test(tgt, x, alpha=a, rng=seed + 3),
        rstats.mmd_test(tgt, x[:n_mmd], alpha=a, replicates=int(2 / a) - 1, rng=seed + 4),
    ]
    failed = [r for r in results if not r.passed]
    if failed:
        raise AssertionError(
            f"Samples ({x.shape[0]} x {x.shape[1]}) are not from {tgt!r} (family false-alarm "
            f"rate {alpha:g}, {a:g} per test):\n" + "\n".join(f"  {r}" for r in failed)
        )
    return results
