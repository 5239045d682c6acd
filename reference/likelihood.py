"""Exact likelihoods, the exact flow map and the irreducible denoising loss of a target.

- :func:`flow_map`: the probability-flow ODE map x_t -> x_s (s = 0: the consistency function
  f(x_t, t) of Song et al. 2023, arXiv:2303.01469, eq. 3), solved to rtol 1e-12.
- :func:`pf_ode_log_likelihood`: log p_{t0}(x) by the instantaneous change of variables along
  the PF-ODE (Chen et al. 2018, Thm. 1; Song et al. 2021, arXiv:2011.13456, App. D.2), with the
  exact divergence (closed-form for mixtures) or Hutchinson's estimator (Grathwohl et al. 2019,
  FFJORD), whose variance is reported and, optionally, computed exactly.
- :func:`irreducible_loss`: E|y - E[y | x_t]|^2 at each t for the prediction y in {x0, eps, v,
  score, velocity}: the floor of the denoising loss (L_simple for eps).

The ODEs run in the angle theta = atan2(sigma, alpha) with w = x / sqrt(alpha^2 + sigma^2): the
PF-ODE of every path x_t = alpha x_0 + sigma eps is, after this rescaling, the ODE of the
trigonometric path (alpha, sigma) = (cos theta, sin theta),

    dw/dtheta = -sin(theta) E[x_0 | w] + cos(theta) E[eps | w],

smooth on the closed interval [0, pi/2] (data to pure noise), so one integrator serves VP, VE,
EDM and flow schedules without the singular time derivatives at sigma = 0 (Kingma et al. 2021,
Sec. 4: only the end points of the SNR matter). The marginals agree: if w(theta) solves it,
x = rho(t) w(theta(t)) solves dx/dt = alpha' E[x_0|x] + sigma' E[eps|x] (checked by tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

from ._checks import _r, boolean, choice, finite, in_interval, positive_int, positive_scalar
from .forward import _rng
from .schedules import Schedule

__all__ = [
    "Estimate",
    "ODELikelihood",
    "flow_map",
    "irreducible_loss",
    "pf_ode_log_likelihood",
]


@dataclass(frozen=True)
class Estimate:
    """A value with its Monte Carlo standard error (0 when ``exact``)."""

    value: float
    stderr: float
    exact: bool

    def __float__(self):
        return self.value


def _check_target(target):
    for meth in ("denoise", "eps", "velocity_divergence", "log_prob"):
        if not hasattr(target, meth):
            raise TypeError(
                f"target must be a GaussianMixture or Gaussian (needs {meth}), got "
                f"{type(target).__name__}"
            )


def _time(t, name: str = "t") -> float:
    arr = in_interval(t, name, 0.0, 1.0)
    if arr.ndim:
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
    return float(arr)


def _angle(schedule: Schedule, t, name: str = "t"):
    t = _time(t, name)
    a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
    return math.atan2(s, a), math.hypot(a, s)


def _rhs_flow(target, shape):
    def rhs(theta, w):
        c, s = math.cos(theta), math.sin(theta)
        ww = w.reshape(shape)
        return (-s * target.denoise(ww, c, s) + c * target.eps(ww, c, s)).ravel()

    return rhs


def flow_map(target, schedule: Schedule, x, t, s=0.0, *, rtol: float = 1e-12, atol: float = 1e-12):
    """The exact PF-ODE map x_t -> x_s of ``target`` diffused along ``schedule`` (Song et al.
    2021, eq. 13), for x of shape (..., d) and times t, s in [0, 1] (either order):

        x_s = rho_s w(theta_s),  w(theta_t) = x_t / rho_t,  rho = sqrt(alpha^2 + sigma^2),
        dw/dtheta = -sin(theta) E[x_0|w] + cos(theta) E[eps|w]   at (alpha, sigma) = (cos, sin),

    integrated with DOP853 at ``rtol``/``atol`` (module docstring). With s = 0 on a path whose
    sigma(0) = 0 this is the consistency function f(x_t, t) (Song et al. 2023, eq. 3) that a
    one-step or distilled model approximates. Needs alpha > 0 at both ends where sigma is 0 only
    at theta = 0; a point mass target (singular covariance) needs sigma > 0 at both ends.

    Example: ``x0 = flow_map(ring8(), VPLinear(), x1, 1.0)``."""
    _check_target(target)
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    x = finite(x, "x")
    if x.ndim < 1 or x.shape[-1] != target.d:
        raise ValueError(f"x must have shape (..., d) with d = {target.d}, got {x.shape}")
    th0, rho0 = _angle(schedule, t)
    th1, rho1 = _angle(schedule, s, "s")
    rtol, atol = positive_scalar(rtol, "rtol"), positive_scalar(atol, "atol")
    if th0 == th1:
        return x * (rho1 / rho0)
    shape = x.shape
    sol = solve_ivp(
        _rhs_flow(target, shape),
        (th0, th1),
        (x / rho0).ravel(),
        method="DOP853",
        rtol=rtol,
        atol=atol,
    )
    if not sol.success:
        raise RuntimeError(f"PF-ODE solve failed: {sol.message}")
    return rho1 * sol.y[:, -1].reshape(shape)


@dataclass(frozen=True)
class ODELikelihood:
    """Result of :func:`pf_ode_log_likelihood`, per point (shape (n,)), nats.

    ``log_prob`` = ``log_prior`` + ``delta``: the log-density at t0; ``x_end`` the PF-ODE image
    at t1; ``delta`` = int div u dt along the path (for Hutchinson, the probe mean);
    ``probe_std`` the standard deviation of one probe's estimate around the probe mean (None for
    the exact divergence); ``probe_var_exact`` the exact variance of one probe's estimate
    (2 sum_{i != j} M_ij^2 for Rademacher, 2 |M|_F^2 for Gaussian probes, M = int du/dx dt),
    when requested; ``stderr`` = probe_std / sqrt(n_probes); ``nfev`` the solver's evaluations."""

    log_prob: np.ndarray
    log_prior: np.ndarray
    delta: np.ndarray
    x_end: np.ndarray
    stderr: np.ndarray | None
    probe_std: np.ndarray | None
    probe_var_exact: np.ndarray | None
    nfev: int


def pf_ode_log_likelihood(
    target,
    schedule: Schedule,
    x,
    *,
    t0: float = 0.0,
    t1: float = 1.0,
    prior: str = "exact",
    divergence: str = "exact",
    n_probes: int = 16,
    probe: str = "rademacher",
    exact_probe_variance: bool = False,
    rng=None,
    rtol: float = 1e-11,
    atol: float = 1e-11,
) -> ODELikelihood:
    """log p_{t0}(x) through the probability-flow ODE (Song et al. 2021, eq. 39; Chen et al.
    2018, Thm. 1):

        log p_{t0}(x(t0)) = log p_{t1}(x(t1)) + int_{t0}^{t1} div u(x(t), t) dt,

    computed in theta (module docstring): with w = x/rho and g(theta) = dw/dtheta,
    log p_t(x) = log p_theta(w) - d log rho and d log p_theta(w(theta))/dtheta = -div_w g, where
    div_w g = -sin(theta) tr J_x0 + cos(theta) tr J_eps is the target's exact
    :meth:`velocity_divergence` at (cos, sin, -sin, cos).

    ``divergence``: "exact", or "hutchinson": z^T (dg/dw) z with ``n_probes`` probes z
    ("rademacher" or "gaussian"), each held fixed along the path as in FFJORD and k-diffusion's
    ``log_likelihood``; all probes share one trajectory (the path does not depend on z).
    ``exact_probe_variance`` also integrates M = int dg/dw (d^2 more states per point) to give
    the exact variance of one probe's estimate. ``prior``: "exact" (log p_{t1} of the diffused
    target: the result is then the exact log p_{t0} up to the solver tolerance) or "gaussian"
    (N(0, sigma_{t1}^2 I), the usual N(0, I) or N(0, sigma_max^2 I) prior). Returns
    :class:`ODELikelihood` (nats per point). ``x`` of shape (n, d).

    Example: ``pf_ode_log_likelihood(ring8(), VPLinear(), x).log_prob`` equals
    ``ring8().log_prob(x)`` to about 1e-9."""
    _check_target(target)
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    x = finite(x, "x")
    if x.ndim != 2 or x.shape[1] != target.d:
        raise ValueError(f"x must have shape (n, d) with d = {target.d}, got {x.shape}")
    choice(prior, "prior", {"exact", "gaussian"})
    choice(divergence, "divergence", {"exact", "hutchinson"})
    choice(probe, "probe", {"rademacher", "gaussian"})
    n, d = x.shape
    th0, rho0 = _angle(schedule, t0, "t0")
    th1, rho1 = _angle(schedule, t1, "t1")
    rtol, atol = positive_scalar(rtol, "rtol"), positive_scalar(atol, "atol")
    if not th1 > th0:
        raise ValueError(f"t1 must come after t0 on the path (more noise), got t0={t0}, t1={t1}")
    hutch = divergence == "hutchinson"
    P = positive_int(n_probes, "n_probes") if hutch else 1
    exact_probe_variance = boolean(exact_probe_variance, "exact_probe_variance")
    gen = _rng(rng)  # checked also where unused (divergence="exact")
    if hutch:
        z = (
            gen.choice([-1.0, 1.0], size=(P, n, d))
            if probe == "rademacher"
            else gen.standard_normal((P, n, d))
        )
    track_M = hutch and exact_probe_variance
    sizes = [n * d, n * P] + ([n * d * d] if track_M else [])
    cuts = np.cumsum(sizes)[:-1]

    def rhs(theta, y):
        c, s = math.cos(theta), math.sin(theta)
        parts = np.split(y, cuts)
        w = parts[0].reshape(n, d)
        dw = -s * target.denoise(w, c, s) + c * target.eps(w, c, s)
        out = [dw.ravel()]
        if hutch:
            J = target.velocity_jacobian(w, c, s, -s, c)  # dg/dw, (n, d, d)
            out.append(-np.einsum("pni,nij,pnj->pn", z, J, z).T.ravel())
            if track_M:
                out.append(J.ravel())
        else:
            out.append(-target.velocity_divergence(w, c, s, -s, c))
        return np.concatenate(out)

    y0 = np.concatenate([(x / rho0).ravel(), np.zeros(sum(sizes[1:]))])
    sol = solve_ivp(
        rhs,
        (th0, th1),
        y0,
        method="DOP853",
        rtol=rtol,
        atol=atol,
    )
    if not sol.success:
        raise RuntimeError(f"PF-ODE solve failed: {sol.message}")
    parts = np.split(sol.y[:, -1], cuts)
    w1 = parts[0].reshape(n, d)
    # d log p_theta(w)/dtheta = -div: log p_th0(w0) = log p_th1(w1) + int div = log p1 - acc
    acc = parts[1].reshape(n, P)
    delta_w = -acc  # int_{th0}^{th1} div_w g dtheta, per probe
    x_end = rho1 * w1
    if prior == "exact":
        log_prior = target.log_prob(x_end, schedule.alpha(t1), schedule.sigma(t1))
    else:
        s1 = float(schedule.sigma(t1))
        log_prior = -0.5 * (
            d * (math.log(2 * math.pi) + 2 * math.log(s1)) + (x_end**2).sum(1) / s1**2
        )
    # log p_t(x) = log p_theta(x/rho) - d log rho, so
    # log p_t0(x) = log p_t1(x_end) + d log(rho1/rho0) + delta_w
    delta = delta_w.mean(1) + d * math.log(rho1 / rho0)
    probe_std = stderr = var_exact = None
    if hutch:
        probe_std = delta_w.std(1, ddof=1) if P > 1 else np.full(n, np.nan)
        stderr = probe_std / math.sqrt(P)
        if track_M:
            M = parts[2].reshape(n, d, d)
            M = 0.5 * (M + np.swapaxes(M, 1, 2))
            fro = (M * M).sum((1, 2))
            var_exact = (
                2.0 * (fro - (np.diagonal(M, axis1=1, axis2=2) ** 2).sum(1))
                if probe == "rademacher"
                else 2.0 * fro
            )
    return ODELikelihood(
        log_prior + delta, log_prior, delta, x_end, stderr, probe_std, var_exact, sol.nfev
    )


_PREDICTIONS = ("x0", "eps", "v", "score", "velocity")


def irreducible_loss(
    target, schedule: Schedule, t, *, prediction: str = "eps", n: int = 100_000, rng=None
) -> Estimate:
    """The irreducible denoising loss at time t, E_{x_0, eps} |y - E[y | x_t]|^2 summed over
    coordinates, for y the ``prediction`` target: the smallest value the (unweighted) loss of a
    network predicting y can reach at t (for eps: the floor of L_simple's term t; Ho et al. 2020,
    eq. 14). By the law of total variance it is E_{x_t ~ p_t} tr Cov[y | x_t], with

        x0:  tr Cov[x_0|x_t],    eps: tr Cov[eps|x_t],    score: tr Cov[eps|x_t] / sigma^2,
        v:   ((alpha^2 + sigma^2)/alpha)^2 tr Cov[eps|x_t]
             = ((alpha^2 + sigma^2)/sigma)^2 tr Cov[x_0|x_t],
        velocity: (sigma' - alpha' sigma/alpha)^2 tr Cov[eps|x_t]
             = (alpha' - sigma' alpha/sigma)^2 tr Cov[x_0|x_t],

    (alpha(x_0 - x0_hat) + sigma(eps - eps_hat) = 0 makes every error a multiple of one; the
    form without a small divisor is used). For a Gaussian target the trace is constant and the
    value exact; for a mixture it is a Rao-Blackwellised Monte Carlo mean over ``n`` exact draws
    of x_t (the posterior trace is exact per point), reported with its standard error.

    Example: ``irreducible_loss(ring8(), VPLinear(), 0.3).value``."""
    _check_target(target)
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    choice(prediction, "prediction", set(_PREDICTIONS))
    t = _time(t)
    a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
    if prediction == "score" and s == 0:
        raise ValueError(f"the score loss needs sigma > 0, got sigma(t={_r(t)}) = 0")
    use_eps = a >= s
    if prediction == "x0":
        use_eps, factor = False, 1.0
    elif prediction == "eps":
        use_eps, factor = True, 1.0
    elif prediction == "score":
        use_eps, factor = True, 1.0 / (s * s)
    elif prediction == "v":
        r2 = a * a + s * s
        factor = (r2 / a) ** 2 if use_eps else (r2 / s) ** 2
    else:
        da, ds = float(schedule.d_alpha(t)), float(schedule.d_sigma(t))
        factor = (ds - da * s / a) ** 2 if use_eps else (da - ds * a / s) ** 2
    trace = target.eps_cov_trace if use_eps else target.posterior_cov_trace
    if not hasattr(target, "weights"):  # Gaussian: the trace does not depend on x_t
        val = float(trace(np.zeros((1, target.d)), a, s)[0])
        return Estimate(factor * val, 0.0, True)
    n = positive_int(n, "n", minimum=2)
    gen = _rng(rng)
    x_t = a * target.sample(n, rng=gen) + s * gen.standard_normal((n, target.d))
    vals = factor * trace(x_t, a, s)
    return Estimate(float(vals.mean()), float(vals.std(ddof=1) / math.sqrt(n)), False)
