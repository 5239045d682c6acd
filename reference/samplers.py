"""Reference samplers (float64), each a plain callable ``sampler(model, x_init, grid, *, rng)``.

``model(x, t)`` returns a prediction of the type named by its ``prediction`` attribute (one of
eps, x0, v, score, velocity; "eps" when absent); samplers convert it exactly with
:func:`~diffusion_oracle.reference.parameterization.to_x0_eps`. ``grid`` is a
:class:`~diffusion_oracle.reference.grids.Grid` (decreasing times, path coefficients cached);
``x_init`` has shape (n, d) and lies at ``grid.t[0]``; noise is drawn only through
``rng.standard_normal(x.shape)``, so a harness can control it. Every sampler declares ``order``
(the global order of convergence of the output law, weak order for stochastic samplers) and
``stochastic``.

Notation: x_t = alpha_t x0 + sigma_t eps, lambda = log-SNR, h = half-log-SNR step
(lambda_s - lambda_t)/2 for a step t -> s, y = x / alpha and sigma_EDM = sigma / alpha (the EDM
variables). A step into the final node (sigma = 0) is the denoising jump x <- E[x0 | x]
(the limit of every first-order step), taken by every sampler, so that samplers differ only on
the interior of the grid.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.integrate import solve_ivp

from ._checks import (
    _r,
    as_float,
    choice,
    finite,
    finite_scalar,
    nonneg_scalar,
    order_choice,
    positive_int,
    positive_scalar,
)
from .forward import _rng
from .grids import Grid
from .parameterization import model_prediction, to_x0_eps

__all__ = [
    "Sampler",
    "DDPM",
    "DDIM",
    "ddim_invert",
    "Euler",
    "Heun",
    "EDMStochastic",
    "DPMSolver1",
    "DPMSolver2",
    "DPMSolverPP2M",
    "DPMSolver3",
    "DPMSolverPP3M",
    "DPMSolverPP2MSDE",
    "EulerMaruyama",
    "UniPC",
    "LMS",
    "PLMS",
    "FlowEuler",
    "PredictorCorrector",
    "FlowHeun",
    "ExactODE",
    "ExactAncestral",
    "BUILTIN_SAMPLERS",
]


def _predict(model, x, grid: Grid, i: int):
    """(x0_hat, eps_hat) at grid node i from one model call."""
    return _predict_at(
        model, x, grid, grid.t[i], grid.alpha[i], grid.sigma[i], grid.d_alpha[i], grid.d_sigma[i]
    )


def _predict_at(model, x, grid, t, alpha, sigma, d_alpha=None, d_sigma=None):
    pred = model_prediction(model)
    out = np.asarray(model(x, t), dtype=np.float64)
    if out.shape != x.shape:
        raise ValueError(f"model output must have the shape of x {x.shape}, got {out.shape}")
    if pred == "velocity" and d_alpha is None:
        d_alpha, d_sigma = grid.schedule.d_alpha(t), grid.schedule.d_sigma(t)
    return to_x0_eps(
        out, source=pred, x_t=x, alpha=alpha, sigma=sigma, d_alpha=d_alpha, d_sigma=d_sigma
    )


def _check_inputs(x_init, grid, model=None, name="x_init"):
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a Grid (see make_grid), got {type(grid).__name__}")
    x = finite(x_init, name)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got {x.shape}")
    d = getattr(model, "d", None)
    if isinstance(d, int) and x.shape[1] != d:
        raise ValueError(f"{name} must have shape (n, d) with the model's d = {d}, got {x.shape}")
    if model is not None and not callable(model):
        raise TypeError(f"model must be callable as model(x, t), got {type(model).__name__}")
    return x.copy()


class Sampler:
    """Base class: ``name``, declared ``order``, ``stochastic``, preferred ``default_grid``."""

    name = "sampler"
    order = 1
    stochastic = False
    default_grid = "uniform"

    def __repr__(self):
        return self.name

    def __call__(self, model, x_init, grid, *, rng=None):
        x = _check_inputs(x_init, grid, model)
        rng = _rng(rng)
        return self._run(model, x, grid, rng)

    def _jump(self, model, x, grid, i):
        return _predict(model, x, grid, i)[0]

    def _run(self, model, x, grid, rng):
        """Step through the grid with :meth:`_step`; the step into sigma = 0 is the jump."""
        for i in range(grid.steps):
            if grid.sigma[i + 1] == 0:
                return self._jump(model, x, grid, i)
            x = self._step(model, x, grid, i, rng)
        return x

    def _step(self, model, x, grid, i, rng):  # one step from node i to node i + 1
        raise NotImplementedError(f"{type(self).__name__} implements _run or _step")


class DDPM(Sampler):
    """Ancestral sampling with the posterior q(x_s | x_t, x0 = x0_hat) on any grid (Ho et al. 2020,
    Algorithm 2; respaced grids as in Nichol & Dhariwal 2021, Sec. 4):

        x_s = coef_x0 x0_hat + coef_xt x_t + sqrt(var) z,
        coef_x0 = alpha_s (-expm1(lambda_t - lambda_s)),
        coef_xt = (alpha_t/alpha_s) sigma_s^2/sigma_t^2,

    with var = sigma_s^2 (-expm1(lambda_t - lambda_s)) ("fixed_small", beta_tilde) or the forward
    transition variance sigma_t^2 (-expm1(lambda_t - lambda_s)) ("fixed_large", beta on a VP
    grid), or

    - "learned_range": log var = v log beta + (1 - v) log beta_tilde with a fixed interpolation
      ``v`` in [0, 1] (Nichol & Dhariwal 2021, eq. 15; their network outputs v per pixel);
    - "analytic": the optimal scalar variance of Analytic-DPM (Bao et al. 2022,
      arXiv:2201.06503, Thm. 1), in this notation
      var* = beta_tilde + coef_x0^2 (sigma_t^2/alpha_t^2) (1 - sigma_t^2 E|score|^2 / d)
           = beta_tilde + coef_x0^2 E[tr Cov[x0 | x_t]] / d        (second-order Tweedie),
      evaluated in the second form (the first cancels catastrophically at low SNR, where
      1 - sigma^2 E|score|^2/d ~ SNR), with the expectation over ``n_mc`` exact samples of p_t
      from the model's target (Bao et al. estimate E|score|^2 from training data).

    Weak order 1.
    """

    stochastic = True
    default_grid = "log_snr"

    def __init__(self, variance: str = "fixed_small", *, v: float = 0.5, n_mc: int = 500):
        self.variance = choice(
            variance, "variance", {"fixed_small", "fixed_large", "learned_range", "analytic"}
        )
        self.v = finite_scalar(v, "v")
        if not 0.0 <= self.v <= 1.0:
            raise ValueError(f"v must lie in [0, 1], got {_r(self.v)}")
        self.n_mc = positive_int(n_mc, "n_mc")
        self.name = f"ddpm-{variance.replace('_', '-')}"
        if variance == "learned_range":
            self.name += f"(v={self.v:g})"

    def _mean_post_var(self, model, grid, i):
        """E_{p_t} tr Cov[x0 | x_t] / d at node i from exact samples of the model's target."""
        tg = getattr(model, "target", None)
        if tg is None or not hasattr(tg, "posterior_cov_trace"):
            raise TypeError(
                "variance='analytic' needs an ExactModel (its target gives the "
                "posterior covariance)"
            )
        a, s = grid.alpha[i], grid.sigma[i]
        y = tg.diffuse(a, s).sample(self.n_mc, np.random.default_rng(12345 + i))
        return float(tg.posterior_cov_trace(y, a, s).mean()) / tg.d

    def _variance(self, model, grid, i, coef_x0, frac):
        ls_t, ls_s = grid.log_sigma[i], grid.log_sigma[i + 1]
        small = math.exp(2.0 * ls_s) * frac  # beta_tilde
        large = math.exp(2.0 * ls_t) * frac  # beta
        if self.variance == "fixed_small":
            return small
        if self.variance == "fixed_large":
            return large
        if self.variance == "learned_range":
            return math.exp(self.v * math.log(large) + (1.0 - self.v) * math.log(small))
        return small + coef_x0 * coef_x0 * self._mean_post_var(model, grid, i)

    def _step(self, model, x, grid, i, rng):
        x0, _ = _predict(model, x, grid, i)
        la_t, la_s = grid.log_alpha[i], grid.log_alpha[i + 1]
        ls_t, ls_s = grid.log_sigma[i], grid.log_sigma[i + 1]
        frac = -math.expm1(grid.log_snr[i] - grid.log_snr[i + 1])
        coef_x0 = math.exp(la_s) * frac
        coef_xt = math.exp(la_t - la_s + 2.0 * (ls_s - ls_t))
        var = self._variance(model, grid, i, coef_x0, frac)
        return coef_x0 * x0 + coef_xt * x + math.sqrt(var) * rng.standard_normal(x.shape)


class DDIM(Sampler):
    """DDIM (Song et al. 2021a, arXiv:2010.02502, eq. 12) on any path:

        x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,
        c = eta sigma_s sqrt(-expm1(lambda_t - lambda_s))   (eq. 16: c = eta x posterior std).

    eta = 0 is the deterministic DDIM (= DPM-Solver-1 = Euler in the EDM ODE), eta = 1 is DDPM
    with fixed_small variance. Order 1 (weak order 1 for eta > 0).
    """

    default_grid = "log_snr"

    def __init__(self, eta: float = 0.0):
        self.eta = finite_scalar(eta, "eta")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got {_r(self.eta)}")
        self.stochastic = self.eta > 0
        self.name = f"ddim(eta={self.eta:g})"

    def _step(self, model, x, grid, i, rng):
        x0, eps = _predict(model, x, grid, i)
        a_s, s_s = grid.alpha[i + 1], grid.sigma[i + 1]
        c = self.eta * s_s * math.sqrt(-math.expm1(grid.log_snr[i] - grid.log_snr[i + 1]))
        x = a_s * x0 + math.sqrt(max(s_s * s_s - c * c, 0.0)) * eps
        if self.eta:
            x = x + c * rng.standard_normal(x.shape)
        return x


class DPMSolver1(DDIM):
    """DPM-Solver-1 (Lu et al. 2022, arXiv:2206.00927, eq. 3.7 with k = 1):
    x_s = (alpha_s/alpha_t) x_t - sigma_s expm1(h) eps_hat, h the half-log-SNR step, which is
    algebraically DDIM with eta = 0 (Lu et al. 2022, Sec. 4.1); implemented as that, on the
    DPM-Solver default log-SNR grid. Order 1."""

    default_grid = "log_snr"

    def __init__(self):
        super().__init__(0.0)
        self.name = "dpm-solver-1"


def ddim_invert(model, x0, grid: Grid, *, model_time: str = "current"):
    """Deterministic DDIM inversion (Song et al. 2021a, Sec. 4.3; Dhariwal & Nichol 2021, App. F):
    walk ``grid`` from its last node to its first, each step from level (alpha, sigma) at t to
    (alpha', sigma') at t' > t:

        x_{t'} = alpha' x0_hat + sigma' eps_hat,   x0_hat = (x_t - sigma eps_hat) / alpha.

    ``model_time="current"``: eps_hat = eps(x_t, t), the model at the level the sample is at
    (Dhariwal & Nichol 2021, App. F); ``x0`` lies at ``grid.t[-1]``, which must have sigma > 0
    (a grid with ``final_zero=False``). ``model_time="next"``: eps_hat = eps(x_t, t'), the model
    called at the destination time (the convention of diffusers' DDIMInverseScheduler, which
    steps from timestep k - T/N to k calling the network at k); then the walk may start at the
    data itself, the ``final_zero`` node (alpha = 1, sigma = 0: x0_hat = x). Returns the latent
    at ``grid.t[0]``. Order 1 (both: the time offset of "next" changes eps_hat by O(h), and
    eps_hat enters with the O(h) weight sigma' - alpha' sigma / alpha)."""
    x = _check_inputs(x0, grid, model, name="x0")
    model_time = choice(model_time, "model_time", ("current", "next"))
    if grid.final_zero and model_time == "current":
        raise ValueError(
            "ddim_invert with model_time='current' needs a grid without the final jump "
            "(final_zero=False): the model cannot be evaluated at sigma = 0"
        )
    for i in range(grid.steps, 0, -1):
        if model_time == "current":
            x0_hat, eps = _predict(model, x, grid, i)
        else:
            _, eps = _predict(model, x, grid, i - 1)  # eps(x_t, t'), x taken at level t'
            x0_hat = (x - grid.sigma[i] * eps) / grid.alpha[i]
        x = grid.alpha[i - 1] * x0_hat + grid.sigma[i - 1] * eps
    return x


class Euler(Sampler):
    """Euler on the probability-flow ODE in EDM form, dy/dsigma = (y - D(y, sigma))/sigma with
    y = x/alpha, sigma = sigma_EDM (Karras et al. 2022, eq. 3 and Algorithm 1 without the
    correction). Identical to DDIM(eta=0) on the same grid. Order 1."""

    name = "euler"
    default_grid = "karras"

    def _step(self, model, x, grid, i, rng):
        x0, _ = _predict(model, x, grid, i)
        y = x / grid.alpha[i]
        d = (y - x0) / grid.sigma_edm[i]
        return grid.alpha[i + 1] * (y + (grid.sigma_edm[i + 1] - grid.sigma_edm[i]) * d)


class Heun(Sampler):
    """Heun's second-order method on the EDM ODE (Karras et al. 2022, Algorithm 1): an Euler
    predictor, then the trapezoidal corrector with the derivative at the predicted point; the
    step into sigma = 0 is the denoising jump (Euler). Order 2."""

    name = "heun"
    order = 2
    default_grid = "karras"

    def _heun_step(self, model, x, grid, i, t_hat=None, s_hat=None):
        # from (t_hat, sigma_hat) (default: node i) to node i + 1
        if t_hat is None:
            t_hat, a_hat, s_hat = grid.t[i], grid.alpha[i], grid.sigma_edm[i]
        else:
            a_hat = grid.schedule.alpha(t_hat)
        x0, _ = _predict_at(model, x, grid, t_hat, a_hat, a_hat * s_hat)
        y = x / a_hat
        d = (y - x0) / s_hat
        h = grid.sigma_edm[i + 1] - s_hat
        y_pred = y + h * d
        x_pred = grid.alpha[i + 1] * y_pred
        x0_2, _ = _predict(model, x_pred, grid, i + 1)
        d2 = (y_pred - x0_2) / grid.sigma_edm[i + 1]
        return grid.alpha[i + 1] * (y + 0.5 * h * (d + d2))

    def _step(self, model, x, grid, i, rng):
        return self._heun_step(model, x, grid, i)


class EDMStochastic(Heun):
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): at each step with
    S_tmin <= sigma_i <= S_tmax raise the noise level to sigma_hat = sigma_i (1 + gamma),
    gamma = min(S_churn/N, sqrt(2) - 1), by adding sqrt(sigma_hat^2 - sigma_i^2) S_noise z, then
    take a Heun step from sigma_hat to sigma_{i+1}. Parameters S_churn, S_tmin, S_tmax, S_noise
    (in sigma_EDM units). With S_churn = 0 it is :class:`Heun`. Weak order 2 for S_noise = 1
    (adding noise is exact for the marginals; the Heun steps carry the error), visible once
    N > S_churn / (sqrt(2) - 1), where the cap on gamma stops binding: the default S_churn = 10
    (EDM used 40 on ImageNet) shows it from N = 25 on."""

    stochastic = True
    order = 2

    def __init__(
        self,
        S_churn: float = 10.0,
        S_tmin: float = 0.05,
        S_tmax: float = 50.0,
        S_noise: float = 1.0,
    ):
        self.S_churn = nonneg_scalar(S_churn, "S_churn")
        self.S_tmin = nonneg_scalar(S_tmin, "S_tmin")
        tmax = as_float(S_tmax, "S_tmax")  # +inf allowed (EDM's default)
        if tmax.ndim:
            raise ValueError(f"S_tmax must be a scalar, got shape {tmax.shape}")
        self.S_tmax = float(tmax)
        if math.isnan(self.S_tmax):
            raise ValueError("S_tmax must not be NaN, got nan")
        if self.S_tmax < self.S_tmin:
            raise ValueError(f"S_tmax must be >= S_tmin={_r(self.S_tmin)}, got {_r(self.S_tmax)}")
        self.S_noise = nonneg_scalar(S_noise, "S_noise")
        self.stochastic = self.S_churn > 0
        self.name = f"edm-stochastic(S_churn={self.S_churn:g})"

    def _run(self, model, x, grid, rng):
        n = grid.steps
        for i in range(n):
            if grid.sigma[i + 1] == 0:
                return self._jump(model, x, grid, i)
            s = grid.sigma_edm[i]
            gamma = (
                min(self.S_churn / n, math.sqrt(2) - 1) if self.S_tmin <= s <= self.S_tmax else 0.0
            )
            if gamma > 0:
                s_hat = s * (1 + gamma)
                lam_hat = -2.0 * math.log(s_hat)
                lo, _ = grid.schedule.log_snr_range()
                if lam_hat < lo:
                    raise ValueError(
                        f"S_churn raises sigma_EDM to {s_hat:.4g}, beyond the schedule's range; "
                        "lower S_churn or S_tmax"
                    )
                t_hat = float(grid.schedule.t_from_log_snr(lam_hat))
                a_hat = grid.schedule.alpha(t_hat)
                y = x / grid.alpha[i]
                y = y + math.sqrt(s_hat * s_hat - s * s) * self.S_noise * rng.standard_normal(
                    x.shape
                )
                x = self._heun_step(model, a_hat * y, grid, i, t_hat=t_hat, s_hat=s_hat)
            else:
                x = self._heun_step(model, x, grid, i)
        return x


class DPMSolver2(Sampler):
    """DPM-Solver-2, singlestep, noise prediction (Lu et al. 2022, arXiv:2206.00927,
    Algorithm 1 with r1 = 1/2), half-log-SNR lambda = log(alpha/sigma), h = lambda_s - lambda_t:

        u   = (alpha_m/alpha_t) x_t - sigma_m expm1(h/2) eps(x_t, t),    lambda_m = lambda_t + h/2,
        x_s = (alpha_s/alpha_t) x_t - sigma_s expm1(h) eps(u, m).

    Two model calls per step. Order 2."""

    name = "dpm-solver-2"
    order = 2
    default_grid = "log_snr"

    def _run(self, model, x, grid, rng):
        sch = grid.schedule
        for i in range(grid.steps):
            if grid.sigma[i + 1] == 0:
                return self._jump(model, x, grid, i)
            lt, ls = grid.half_log_snr[i], grid.half_log_snr[i + 1]
            h = ls - lt
            t_m = float(sch.t_from_log_snr(2.0 * (lt + 0.5 * h)))
            la_m, s_m = sch.log_alpha(t_m), sch.sigma(t_m)
            _, eps = _predict(model, x, grid, i)
            u = math.exp(la_m - grid.log_alpha[i]) * x - s_m * math.expm1(0.5 * h) * eps
            _, eps_m = _predict_at(model, u, grid, t_m, math.exp(la_m), s_m)
            x = (
                math.exp(grid.log_alpha[i + 1] - grid.log_alpha[i]) * x
                - grid.sigma[i + 1] * math.expm1(h) * eps_m
            )
        return x


class DPMSolverPP2M(Sampler):
    """DPM-Solver++(2M), multistep, data prediction (Lu et al. 2022b, arXiv:2211.01095,
    Algorithm 2):

        x_i = (sigma_i/sigma_{i-1}) x_{i-1} - alpha_i expm1(-h_i) D_i,
        D_i = (1 + 1/(2 r_i)) x0_{i-1} - 1/(2 r_i) x0_{i-2},  r_i = h_{i-1}/h_i,

    first step first order (D_1 = x0_0). One model call per step. Order 2."""

    name = "dpm-solver++(2m)"
    order = 2
    default_grid = "log_snr"

    def _run(self, model, x, grid, rng):
        prev_x0, prev_h = None, None
        for i in range(grid.steps):
            if grid.sigma[i + 1] == 0:
                return self._jump(model, x, grid, i)
            x0, _ = _predict(model, x, grid, i)
            h = grid.half_log_snr[i + 1] - grid.half_log_snr[i]
            if prev_x0 is None:
                D = x0
            else:
                r = prev_h / h
                D = (1.0 + 0.5 / r) * x0 - (0.5 / r) * prev_x0
            ratio = math.exp(grid.log_sigma[i + 1] - grid.log_sigma[i])
            x = ratio * x - grid.alpha[i + 1] * math.expm1(-h) * D
            prev_x0, prev_h = x0, h
        return x


class DPMSolver3(Sampler):
    """DPM-Solver-3, singlestep, noise prediction (Lu et al. 2022, arXiv:2206.00927,
    Algorithm 2 with r1 = 1/3, r2 = 2/3), lambda the half-log-SNR, h = lambda_s - lambda_t,
    phi_1(z) = expm1(z), e_t = eps(x_t, t):

        u1  = (alpha_1/alpha_t) x_t - sigma_1 phi_1(r1 h) e_t,       lambda_1 = lambda_t + r1 h
        D1  = eps(u1, 1) - e_t
        u2  = (alpha_2/alpha_t) x_t - sigma_2 phi_1(r2 h) e_t
              - sigma_2 (r2/r1) (phi_1(r2 h)/(r2 h) - 1) D1,         lambda_2 = lambda_t + r2 h
        D2  = eps(u2, 2) - e_t
        x_s = (alpha_s/alpha_t) x_t - sigma_s phi_1(h) e_t - (sigma_s/r2) (phi_1(h)/h - 1) D2.

    Three model calls per step. Order 3."""

    name = "dpm-solver-3"
    order = 3
    default_grid = "log_snr"
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0

    def step(self, model, x, grid, i, eps_t=None):
        """One DPM-Solver-3 step from node i to i + 1 (``eps_t`` reuses a prediction at x)."""
        sch = grid.schedule
        lt, ls = grid.half_log_snr[i], grid.half_log_snr[i + 1]
        h = ls - lt
        r1, r2 = self.r1, self.r2
        if eps_t is None:
            _, eps_t = _predict(model, x, grid, i)
        la_t = grid.log_alpha[i]

        def node(r):
            t_r = float(sch.t_from_log_snr(2.0 * (lt + r * h)))
            return t_r, sch.log_alpha(t_r), sch.sigma(t_r)

        t1, la1, s1 = node(r1)
        u1 = math.exp(la1 - la_t) * x - s1 * math.expm1(r1 * h) * eps_t
        D1 = _predict_at(model, u1, grid, t1, math.exp(la1), s1)[1] - eps_t
        t2, la2, s2 = node(r2)
        u2 = (
            math.exp(la2 - la_t) * x
            - s2 * math.expm1(r2 * h) * eps_t
            - s2 * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1.0) * D1
        )
        D2 = _predict_at(model, u2, grid, t2, math.exp(la2), s2)[1] - eps_t
        s_s = grid.sigma[i + 1]
        return (
            math.exp(grid.log_alpha[i + 1] - la_t) * x
            - s_s * math.expm1(h) * eps_t
            - (s_s / r2) * (math.expm1(h) / h - 1.0) * D2
        )

    def _step(self, model, x, grid, i, rng):
        return self.step(model, x, grid, i)


class DPMSolverPP3M(Sampler):
    """DPM-Solver++(3M), multistep, data prediction (Lu et al. 2022b, arXiv:2211.01095, Sec. 4;
    third-order multistep update of the authors' code). With lambda the half-log-SNR, the exact
    step is x_i = (sigma_i/sigma_{i-1}) x_{i-1} + sigma_i int e^lambda x0(lambda) d lambda, and
    Taylor-expanding x0 about lambda_{i-1} gives

        x_i = (sigma_i/sigma_{i-1}) x_{i-1} - alpha_i phi_1 x0 + alpha_i h phi_2 x0'
              - alpha_i h^2 phi_3 x0'' + O(h^4),
        phi_1 = expm1(-h), phi_2 = phi_1/h + 1, phi_3 = phi_2/h - 1/2.

    From the last three predictions (r0 = h_{i-1}/h, r1 = h_{i-2}/h):
    D1_0 = (x0_{i-1} - x0_{i-2})/r0, D1_1 = (x0_{i-2} - x0_{i-3})/r1,
    D1 = D1_0 + r0/(r0 + r1) (D1_0 - D1_1) = h x0' + O(h^3) and
    D2 = (D1_0 - D1_1)/(r0 + r1) = h^2 x0''/2 + O(h^3) (a divided difference, so half of
    h^2 x0''). Hence the third-order update is

        x_i = ... - alpha_i phi_1 x0 + alpha_i phi_2 D1 - 2 alpha_i phi_3 D2.

    ``variant="published"`` uses ``- alpha_i phi_3 D2`` as the authors' code and its copies do
    (DPM-Solver, diffusers' DPMSolverMultistep order 3, k-diffusion's dpmpp_3m_sde); that term is
    then half its Taylor coefficient and the method is second order, which the tier-1 and tier-2
    measurements show (docs/findings.md). Order 3 ("corrected"), 2 ("published").

    ``warmup`` sets the first two steps, before three predictions exist: "dpm-solver-3" (a
    DPM-Solver-3 singlestep step, then a 2M step, so that the start does not cap the order), or
    the implementations' own: "diffusers" (DPM-Solver++(1), then the 2M midpoint step
    x_i = ratio x - alpha_i phi_1 (D0 + D1/2), D1 = (x0 - x0_prev)/r, as
    ``DPMSolverMultistepScheduler`` does) and "k-diffusion" (DPM-Solver++(1), then
    x_i = ratio x - alpha_i phi_1 x0 + alpha_i phi_2 (x0 - x0_prev)/r, as ``sample_dpmpp_3m_sde``
    does). The two published warm-ups differ from each other at O(h^3) per step."""

    default_grid = "log_snr"

    def __init__(self, variant: str = "corrected", *, warmup: str = "dpm-solver-3"):
        self.variant = choice(variant, "variant", {"corrected", "published"})
        self.warmup = choice(warmup, "warmup", {"dpm-solver-3", "diffusers", "k-diffusion"})
        self.order = 3 if variant == "corrected" else 2
        self.name = "dpm-solver++(3m)" + ("" if variant == "corrected" else "-published")
        if warmup != "dpm-solver-3":
            self.name += f"[{warmup} warm-up]"

    def _run(self, model, x, grid, rng):
        c2 = 2.0 if self.variant == "corrected" else 1.0
        hist = []  # (x0, h) of previous nodes, most recent last
        for i in range(grid.steps):
            if grid.sigma[i + 1] == 0:
                return self._jump(model, x, grid, i)
            x0, eps = _predict(model, x, grid, i)
            h = grid.half_log_snr[i + 1] - grid.half_log_snr[i]
            ratio = math.exp(grid.log_sigma[i + 1] - grid.log_sigma[i])
            a_s = grid.alpha[i + 1]
            phi_1 = math.expm1(-h)
            if not hist and self.warmup == "dpm-solver-3":
                x_next = DPMSolver3().step(model, x, grid, i, eps_t=eps)
            elif not hist:  # DPM-Solver++(1)
                x_next = ratio * x - a_s * phi_1 * x0
            elif len(hist) == 1 and self.warmup == "k-diffusion":
                r = hist[-1][1] / h
                phi_2 = phi_1 / h + 1.0
                x_next = ratio * x - a_s * phi_1 * x0 + a_s * phi_2 * (x0 - hist[-1][0]) / r
            elif len(hist) == 1:
                r = hist[-1][1] / h
                D = (1.0 + 0.5 / r) * x0 - (0.5 / r) * hist[-1][0]
                x_next = ratio * x - a_s * phi_1 * D
            else:
                (x0_2, h_2), (x0_1, h_1) = hist[-2], hist[-1]
                r0, r1 = h_1 / h, h_2 / h
                D1_0 = (x0 - x0_1) / r0
                D1_1 = (x0_1 - x0_2) / r1
                D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1)
                D2 = (D1_0 - D1_1) / (r0 + r1)
                phi_2 = phi_1 / h + 1.0
                phi_3 = phi_2 / h - 0.5
                x_next = ratio * x - a_s * phi_1 * x0 + a_s * phi_2 * D1 - c2 * a_s * phi_3 * D2
            hist = (hist + [(x0, h)])[-2:]
            x = x_next
        return x


class DPMSolverPP2MSDE(Sampler):
    """SDE-DPM-Solver++(2M), midpoint form (Lu et al. 2022b, arXiv:2211.01095, App.;
    k-diffusion's sample_dpmpp_2m_sde with eta = 1):

        x_i = (sigma_i/sigma_{i-1}) e^{-h} x_{i-1} + alpha_i (1 - e^{-2h}) x0_{i-1}
              + (alpha_i/2) (1 - e^{-2h}) (x0_{i-1} - x0_{i-2})/r + sigma_i sqrt(1 - e^{-2h}) z,

    r = h_{i-1}/h_i; the first step has no correction (it is DDPM posterior sampling = DDIM(1)).
    One model call per step. Weak order 2, as Lu et al. 2022b state for this solver (measured in
    the tests on the exact output law)."""

    name = "sde-dpm-solver++(2m)"
    order = 2
    stochastic = True
    default_grid = "log_snr"

    def _run(self, model, x, grid, rng):
        prev = None
        for i in range(grid.steps):
            if grid.sigma[i + 1] == 0:
                return self._jump(model, x, grid, i)
            x0, _ = _predict(model, x, grid, i)
            h = grid.half_log_snr[i + 1] - grid.half_log_snr[i]
            a_s, s_s = grid.alpha[i + 1], grid.sigma[i + 1]
            one_m = -math.expm1(-2.0 * h)
            x_next = math.exp(grid.log_sigma[i + 1] - grid.log_sigma[i] - h) * x + a_s * one_m * x0
            if prev is not None:
                r = prev[1] / h
                x_next = x_next + 0.5 * a_s * one_m * (x0 - prev[0]) / r
            x = x_next + s_s * math.sqrt(one_m) * rng.standard_normal(x.shape)
            prev = (x0, h)
        return x


class UniPC(Sampler):
    """UniPC, multistep predictor-corrector in data prediction (Zhao et al. 2023,
    arXiv:2302.04867, Algorithms 1-2, the B(h) variants of Sec. 3.3): with lambda the
    half-log-SNR, h = lambda_s - lambda_t, hh = -h,

        x_s^~ = (sigma_s/sigma_t) x_t - alpha_s expm1(hh) x0_t                  (the DDIM part)
        UniP:  x_s = x_s^~ - alpha_s B(h) sum_k rho^p_k D_k,   D_k = (x0_{t_k} - x0_t)/r_k,
        UniC:  x_s^c = x_s^~ - alpha_s B(h) (sum_k rho^c_k D_k + rho^c_K (x0(x_s, s) - x0_t)),

    r_k = (lambda_{t_k} - lambda_t)/h for the previous nodes t_k, the rho from R rho = b with
    R_ij = r_j^(i-1), b_i = i! phi_{i+1}(hh) h / B(h) (rho = 1/2 in the one-coefficient cases),
    B(h) = hh ("bh1") or expm1(hh) ("bh2"). The model value at the predicted x_s is reused as the
    next step's x0_t, so the corrector costs no extra call. ``order`` is the predictor's order p
    (warm-up with lower orders); with the corrector the method has order p + 1."""

    default_grid = "log_snr"

    def __init__(self, order: int = 2, variant: str = "bh2"):
        self.p = order_choice(order, "order", (1, 2))
        self.variant = choice(variant, "variant", {"bh1", "bh2"})
        self.order = self.p + 1
        self.name = f"unipc-{self.p}({variant})"

    def _coefficients(self, rks, h):
        hh = -h
        h_phi_1 = math.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1.0
        B_h = hh if self.variant == "bh1" else math.expm1(hh)
        K = len(rks)
        R = np.array([np.power(rks, i) for i in range(K)])
        b, fact = [], 1.0
        for i in range(1, K + 1):
            b.append(h_phi_k * fact / B_h)
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1.0 / fact
        return h_phi_1, B_h, R, np.array(b)

    def _run(self, model, x, grid, rng):
        x0_t, _ = _predict(model, x, grid, 0)
        hist = []  # (x0, half-log-SNR) of earlier nodes, most recent last
        for i in range(grid.steps):
            if grid.sigma[i + 1] == 0:
                return self._jump(model, x, grid, i)
            lam_t, lam_s = grid.half_log_snr[i], grid.half_log_snr[i + 1]
            h = lam_s - lam_t
            k = min(self.p, len(hist) + 1)  # predictor order available at this step
            prev = hist[-(k - 1) :] if k > 1 else []
            rks = [(lam_k - lam_t) / h for _, lam_k in reversed(prev)]
            Ds = [(m_k - x0_t) / r for (m_k, _), r in zip(reversed(prev), rks)]
            h_phi_1, B_h, R, b = self._coefficients(np.array(rks + [1.0]), h)
            a_s = grid.alpha[i + 1]
            base = math.exp(grid.log_sigma[i + 1] - grid.log_sigma[i]) * x - a_s * h_phi_1 * x0_t
            if Ds:
                rhos_p = [0.5] if k == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
                x_pred = base - a_s * B_h * sum(rp * D for rp, D in zip(rhos_p, Ds))
            else:
                x_pred = base
            rhos_c = [0.5] if k == 1 else np.linalg.solve(R, b)
            x0_s, _ = _predict(model, x_pred, grid, i + 1)
            corr = sum(rc * D for rc, D in zip(rhos_c[:-1], Ds)) if Ds else 0.0
            x = base - a_s * B_h * (corr + rhos_c[-1] * (x0_s - x0_t))
            hist = (hist + [(x0_t, lam_t)])[-3:]
            x0_t = x0_s
        return x


class PLMS(Sampler):
    """Pseudo linear multistep, PLMS (Liu et al. 2022, PNDM, arXiv:2202.09778, eq. 12, with the
    latent-diffusion warm-up): the noise prediction is extrapolated with Adams-Bashforth weights
    in the step index and transferred with the DDIM step x_s = alpha_s x0(e') + sigma_s e',
    x0(e') = (x_t - sigma_t e')/alpha_t:

        step 1: e' = (e_t + e(x~, s))/2 with x~ the DDIM step from e_t   (two calls)
        step 2: e' = (3 e_t - e_{t-1})/2,   step 3: e' = (23 e_t - 16 e_{t-1} + 5 e_{t-2})/12,
        then    e' = (55 e_t - 59 e_{t-1} + 37 e_{t-2} - 9 e_{t-3})/24.

    The weights assume equal steps of sigma_EDM, the variable in which the DDIM transfer is
    exact in eps. On a grid whose steps vary smoothly (log-SNR, Karras) the mismatch of the
    fixed-step weights is O(h) relative, which leaves second order (4 is reached only on equal
    sigma steps); on a uniform-t VP grid sigma_EDM ~ sqrt(t) is not smooth at t = 0 and the
    measured order drops to about 1.1. Order 2 on the default log-SNR grid (measured: 2.01
    exact, 1.86 pathwise)."""

    name = "plms"
    order = 2
    default_grid = "log_snr"

    def _transfer(self, x, e, grid, i):
        x0 = (x - grid.sigma[i] * e) / grid.alpha[i]
        return grid.alpha[i + 1] * x0 + grid.sigma[i + 1] * e

    def _run(self, model, x, grid, rng):
        es = []
        for i in range(grid.steps):
            if grid.sigma[i + 1] == 0:
                return self._jump(model, x, grid, i)
            _, e = _predict(model, x, grid, i)
            if not es:
                x_t = self._transfer(x, e, grid, i)
                _, e_s = _predict(model, x_t, grid, i + 1)
                e_p = 0.5 * (e + e_s)
            elif len(es) == 1:
                e_p = (3 * e - es[-1]) / 2
            elif len(es) == 2:
                e_p = (23 * e - 16 * es[-1] + 5 * es[-2]) / 12
            else:
                e_p = (55 * e - 59 * es[-1] + 37 * es[-2] - 9 * es[-3]) / 24
            es = (es + [e])[-3:]
            x = self._transfer(x, e_p, grid, i)
        return x


class LMS(Sampler):
    """Linear multistep in sigma_EDM on the EDM ODE dy/dsigma = (y - D(y, sigma))/sigma
    (k-diffusion's sample_lms; Karras et al. 2022 eq. 3): the derivative is extrapolated with the
    Lagrange polynomial through the last ``order`` derivatives, whose integrals over the step
    give the coefficients (computed with scipy.integrate.quad). The first steps use the history
    available (the first is Euler). Declared order: ``order``. Strictly, the Euler start caps
    the asymptotic order at 2, but it is taken at sigma_max where the ODE is nearly linear
    (its local error ~ h^2 / sigma_max^3), so the cap is invisible at practical step counts:
    LMS-4 measures 3.90 (exact) and 3.71 (pathwise, still rising) over 128-512 steps on ring8,
    LMS-2 1.98 and 1.86."""

    default_grid = "karras"

    def __init__(self, order: int = 4):
        self.lms_order = order_choice(order, "order", (1, 2, 3, 4))
        self.order = self.lms_order
        self.name = f"lms-{order}"

    @staticmethod
    def _coefficient(sig, i, j, k):
        from scipy.integrate import quad

        def basis(tau):
            prod = 1.0
            for m in range(k):
                if m != j:
                    prod *= (tau - sig[i - m]) / (sig[i - j] - sig[i - m])
            return prod

        return quad(basis, sig[i], sig[i + 1], epsrel=1e-13, epsabs=1e-15)[0]

    def _run(self, model, x, grid, rng):
        sig = grid.sigma_edm
        ds = []
        for i in range(grid.steps):
            if grid.sigma[i + 1] == 0:
                return self._jump(model, x, grid, i)
            x0, _ = _predict(model, x, grid, i)
            y = x / grid.alpha[i]
            ds = (ds + [(y - x0) / sig[i]])[-self.lms_order :]
            k = len(ds)
            coeffs = [self._coefficient(sig, i, j, k) for j in range(k)]
            y = y + sum(c * d for c, d in zip(coeffs, reversed(ds)))
            x = grid.alpha[i + 1] * y
        return x


class EulerMaruyama(Sampler):
    """Euler-Maruyama on the reverse SDE dx = [f x - g^2 score] dt + g dw (Song et al. 2021,
    eq. 6; Anderson 1982), time running backwards, dt = s - t < 0:

        x_s = x_t - (f(t) x_t - g(t)^2 score(x_t)) (t - s) + g(t) sqrt(t - s) z,

    score = -eps_hat/sigma. Weak order 1."""

    name = "euler-maruyama"
    stochastic = True
    default_grid = "log_snr"

    def _step(self, model, x, grid, i, rng):
        sch = grid.schedule
        t, s = grid.t[i], grid.t[i + 1]
        _, eps = _predict(model, x, grid, i)
        score = -eps / grid.sigma[i]
        f, g2 = sch.f(t), sch.g_squared(t)
        dt = t - s
        return x - (f * x - g2 * score) * dt + math.sqrt(g2 * dt) * rng.standard_normal(x.shape)


class PredictorCorrector(Sampler):
    """Predictor-corrector sampling (Song et al. 2021, arXiv:2011.13456, Algorithms 2-3): an
    ancestral (reverse-diffusion) predictor step, then ``n_corrector`` Langevin steps at the new
    noise level, x <- x + eps_L score(x) + sqrt(2 eps_L) z, with the step size of Algorithms
    4-5, eps_L = 2 a_i (snr |z| / |score|)^2, a_i = alpha_{t_{i+1}}^2/alpha_{t_i}^2 (1 for VE).
    Song et al. take |z|/|score| from the batch; here it is replaced by its typical value sigma
    (E|score|^2 ~ d / sigma^2 once the noise dominates), which keeps the sampler affine in its
    state so tier 1 applies.

    The Langevin step does not shrink with the grid, but its stationary bias at a level is
    O(eps_L / (alpha^2 lambda + sigma^2)) = O(snr^2 sigma^2 / (alpha^2 lambda + sigma^2)), which
    vanishes toward the data end, so the output law converges with the predictor's weak order 1;
    the exact-model corrector pulls each level toward p_t and lowers the error constant (the
    tests measure both)."""

    stochastic = True
    order = 1
    default_grid = "log_snr"

    def __init__(self, snr: float = 0.16, n_corrector: int = 1, variance: str = "fixed_small"):
        self.snr = nonneg_scalar(snr, "snr")
        self.n_corrector = positive_int(n_corrector, "n_corrector", minimum=0)
        self.predictor = DDPM(variance)
        self.name = f"pc(snr={self.snr:g}, {variance})"

    def _run(self, model, x, grid, rng):
        for i in range(grid.steps):
            if grid.sigma[i + 1] == 0:
                return self._jump(model, x, grid, i)
            x = self.predictor._step(model, x, grid, i, rng)
            a_i = math.exp(2.0 * (grid.log_alpha[i + 1] - grid.log_alpha[i]))
            s = grid.sigma_edm[i + 1] * grid.alpha[i + 1]  # sigma at the new node
            eps_l = 2.0 * a_i * (self.snr * s) ** 2
            for _ in range(self.n_corrector):
                _, eps = _predict(model, x, grid, i + 1)
                score = -eps / grid.sigma[i + 1]
                x = x + eps_l * score + math.sqrt(2.0 * eps_l) * rng.standard_normal(x.shape)
        return x


class FlowEuler(Sampler):
    """Euler in t on the probability-flow ODE dx/dt = u(x, t) = alpha' x0_hat + sigma' eps_hat
    (Lipman et al. 2023; Liu et al. 2023 rectified flow; for the flow path u = eps - x0).
    Order 1."""

    name = "flow-euler"
    default_grid = "log_snr"

    def _step(self, model, x, grid, i, rng):
        x0, eps = _predict(model, x, grid, i)
        u = grid.d_alpha[i] * x0 + grid.d_sigma[i] * eps
        return x + (grid.t[i + 1] - grid.t[i]) * u


class FlowHeun(Sampler):
    """Heun in t on dx/dt = u(x, t) (explicit trapezoidal rule). Order 2."""

    name = "flow-heun"
    order = 2
    default_grid = "log_snr"

    def _step(self, model, x, grid, i, rng):
        dt = grid.t[i + 1] - grid.t[i]
        x0, eps = _predict(model, x, grid, i)
        u = grid.d_alpha[i] * x0 + grid.d_sigma[i] * eps
        xp = x + dt * u
        x0p, epsp = _predict(model, xp, grid, i + 1)
        up = grid.d_alpha[i + 1] * x0p + grid.d_sigma[i + 1] * epsp
        return x + 0.5 * dt * (u + up)


class ExactODE(Sampler):
    """A high-accuracy solve of the probability-flow ODE between the grid's first and last
    sigma > 0 nodes, then the final jump: the exact flow map up to ``rtol``. Integrates the EDM
    form dy/d log(sigma) = y - D(y, sigma), y = x/alpha (Karras et al. 2022, eq. 3; smooth in
    log sigma), with scipy's DOP853 (Hairer et al.), ``rtol`` = ``atol`` = 1e-12 by default;
    from a first node with alpha = 0 (flow matching at t = 1), where y does not exist, the
    angle form of ``reference.flow_map`` on the exact model's target. Only the grid's endpoints
    matter. Order: exact (reported as 0: no discretisation)."""

    name = "exact-ode"
    order = 0
    default_grid = "uniform"

    def __init__(self, rtol: float = 1e-12, atol: float = 1e-12):
        self.rtol = positive_scalar(rtol, "rtol")
        self.atol = positive_scalar(atol, "atol")

    def flow(self, model, x, grid, i0, i1):
        """The exact PF-ODE map from node i0 to node i1 (both with sigma > 0)."""
        sch = grid.schedule
        shape = x.shape
        y0 = (x / grid.alpha[i0]).ravel()
        s0, s1 = math.log(grid.sigma_edm[i0]), math.log(grid.sigma_edm[i1])

        def rhs(log_s, y):
            sig = math.exp(log_s)
            t = float(sch.t_from_log_snr(-2.0 * log_s))
            a = sch.alpha(t)
            yy = y.reshape(shape)
            x0, _ = _predict_at(model, a * yy, grid, t, a, a * sig)
            return (yy - x0).ravel()

        sol = solve_ivp(rhs, (s0, s1), y0, method="DOP853", rtol=self.rtol, atol=self.atol)
        if not sol.success:
            raise RuntimeError(f"PF-ODE solve failed: {sol.message}")
        return grid.alpha[i1] * sol.y[:, -1].reshape(shape)

    def _run(self, model, x, grid, rng):
        last = grid.steps - 1 if grid.final_zero else grid.steps
        if last > 0 and grid.alpha[0] == 0.0:
            # a path that starts at alpha = 0 (flow matching at t = 1): y = x/alpha does not
            # exist there; the angle form of reference.flow_map starts anywhere, and needs the
            # exact model's target
            target = getattr(model, "target", None)
            if target is None:
                raise ValueError(
                    "ExactODE from a node with alpha = 0 needs an exact model with a .target "
                    f"(the angle form of flow_map), got {type(model).__name__}"
                )
            from .likelihood import flow_map

            x = flow_map(target, grid.schedule, x, grid.t[0], grid.t[last], rtol=self.rtol,
                         atol=self.atol)  # fmt: skip
        elif last > 0:
            x = self.flow(model, x, grid, 0, last)
        if grid.final_zero:
            x = self._jump(model, x, grid, last)
        return x


def BUILTIN_SAMPLERS():
    """The built-in samplers with their default settings, by name."""
    samplers = [
        DDPM("fixed_small"),
        DDPM("fixed_large"),
        DDIM(0.0),
        DDIM(1.0),
        Euler(),
        Heun(),
        EDMStochastic(),
        DPMSolver2(),
        DPMSolver3(),
        DPMSolverPP2M(),
        DPMSolverPP3M(),
        DPMSolverPP3M("published"),
        DPMSolverPP2MSDE(),
        UniPC(2, "bh1"),
        UniPC(2, "bh2"),
        LMS(2),
        PLMS(),
        PredictorCorrector(0.16),
        DDPM("learned_range", v=0.5),
        DDPM("analytic"),
        EulerMaruyama(),
        FlowEuler(),
        FlowHeun(),
    ]
    return {s.name: s for s in samplers}


class ExactAncestral(Sampler):
    """The exact ancestral sampler of a Gaussian-mixture target: an oracle for calibrating
    statistical checks. Each step t -> s (node i to node i + 1) draws x_s from the exact
    transition p(x_s | x_t) of the diffused target ``model.target`` (a GaussianMixture, an
    EmpiricalMixture or a Gaussian), with the grid's alpha, sigma; from x_init ~ p_{t_0} the
    output is then an exact draw of p_{t_N} for every N (of the target itself when the grid ends
    at sigma = 0: the last step draws x_0 ~ p(x_0 | x_{t_{N-1}}), not the denoising jump
    E[x_0 | x] the other samplers take). Order 0: no discretisation error at any N.

    Derivation. Write a = alpha_t/alpha_s and b^2 = sigma_{t|s}^2 = sigma_t^2 - a^2 sigma_s^2
    = sigma_t^2 (-expm1(lambda_t - lambda_s)) (Kingma et al. 2021, VDM, eq. 2-3). Given the
    component k of p_0 = sum_k w_k N(mu_k, Sigma_k), x_s ~ N(alpha_s mu_k, D_k) with
    D_k = alpha_s^2 Sigma_k + sigma_s^2 I, and the forward process is Markov:
    x_t | x_s ~ N(a x_s, b^2 I). The linear-Gaussian conditional (Bishop 2006, PRML Sec. 2.3.3,
    eq. 2.113-2.117, with A = a I, L^{-1} = b^2 I) gives

        x_s | x_t, k ~ N(m_k, P_k),   C_k = a^2 D_k + b^2 I = alpha_t^2 Sigma_k + sigma_t^2 I,
        m_k = alpha_s mu_k + a D_k C_k^{-1} (x_t - alpha_t mu_k),
        P_k = D_k - a^2 D_k C_k^{-1} D_k = b^2 D_k C_k^{-1},

    and P(k | x_t) = r_k(x_t), the responsibilities of the diffused mixture
    sum_k w_k N(alpha_t mu_k, C_k). Hence

        p(x_s | x_t) = sum_k r_k(x_t) N(x_s; m_k, P_k).

    At the final node (alpha_s = 1, sigma_s = 0, b^2 = sigma_t^2) this is the posterior
    p(x_0 | x_t): m_k = mu_k + alpha_t Sigma_k C_k^{-1}(x_t - alpha_t mu_k) and
    P_k = Sigma_k - alpha_t^2 Sigma_k C_k^{-1} Sigma_k = sigma_t^2 Sigma_k C_k^{-1}. It is the
    same law as the two-stage draw x_0 ~ p(x_0 | x_t) = sum_k r_k N(m0_k, P0_k), then
    x_s ~ q(x_s | x_t, x_0) = N(coef_x0 x_0 + coef_xt x_t, beta_tilde I) (Ho et al. 2020,
    eq. 6-7; :func:`~diffusion_oracle.reference.posterior.posterior`): per component the
    composite is N(coef_x0 m0_k + coef_xt x_t, coef_x0^2 P0_k + beta_tilde I) = N(m_k, P_k), so
    E[x_s | x_t] = coef_x0 E[x_0 | x_t] + coef_xt x_t. The one-stage form is used: one Gaussian
    draw per step instead of two.

    Numerics: Sigma_k = Q_k diag(lam_k) Q_k^T is the target's own eigendecomposition, shared by
    D_k, C_k and P_k, so per eigenvalue lam the gain and variance are

        a d/c = (alpha_t alpha_s lam + (alpha_t/alpha_s) sigma_s^2) / c,   b^2 d / c,
        d = alpha_s^2 lam + sigma_s^2,  c = alpha_t^2 lam + sigma_t^2 > 0,

    products and quotients of nonnegative numbers: no cancellation, no matrix inverse, and
    singular components (lam = 0, EmpiricalMixture) are exact (their x_0 draw is the data point).

    Randomness, all through ``rng.standard_normal((n, d))``: per step, when K > 1, one draw whose
    first column z picks the component by inversion of the cumulative responsibilities at
    u = Phi(z) (Phi = scipy.special.ndtr; the upper tail is inverted from Phi(-z) against the
    reverse cumulative sums, so both tails keep relative precision); then one draw w giving
    x_s = m_k + Q_k diag(sqrt(b^2 d/c)) Q_k^T w (the symmetric square root of P_k). For K = 1 the
    sampler is affine in (x_init, w), so the tier-1 probe applies (its output law on a
    final_zero grid is the target, not the law of the denoising jump that
    :func:`~diffusion_oracle.reference.exact.ideal_output_law` describes).

    The model is called once per step at (x_{t_i}, t_i), as every sampler does (NFE counts, the
    shape check); its output is not used: the draw comes from ``model.target`` alone, so the
    sampler stays exact when the model is perturbed. For an exact model its x0 prediction is
    sum_k r_k m0_k (see :meth:`transition` and the tests).
    """

    name = "exact-ancestral"
    order = 0
    stochastic = True
    default_grid = "log_snr"

    @staticmethod
    def _mixture(model, target=None):
        """``target`` (default: ``model.target``) as a GaussianMixture; TypeError when it is
        not a GaussianMixture or Gaussian."""
        from .targets import Gaussian, GaussianMixture

        if target is None:
            target = getattr(model, "target", None)
        if isinstance(target, Gaussian):
            return target.as_mixture()
        if not isinstance(target, GaussianMixture):
            raise TypeError(
                "ExactAncestral needs a model with a .target GaussianMixture (or Gaussian), such "
                f"as ExactModel; got {type(model).__name__} with target "
                f"{type(target).__name__ if target is not None else 'None'}"
            )
        return target

    @staticmethod
    def _coefficients(target, grid: Grid, i: int):
        """(gain, var): the eigenvalues of a D_k C_k^{-1} and P_k = b^2 D_k C_k^{-1} for the step
        from node i to node i + 1, each of shape (K, d) in the eigenbasis of Sigma_k."""
        a_t, s_t = float(grid.alpha[i]), float(grid.sigma[i])
        a_s, s_s = float(grid.alpha[i + 1]), float(grid.sigma[i + 1])
        frac = -math.expm1(float(grid.log_snr[i]) - float(grid.log_snr[i + 1]))
        ratio = 0.0 if a_t == 0.0 else math.exp(float(grid.log_alpha[i] - grid.log_alpha[i + 1]))
        lam = np.asarray(target._evals, dtype=np.float64)
        d = a_s * a_s * lam + s_s * s_s
        c = a_t * a_t * lam + s_t * s_t
        gain = (a_t * a_s * lam + ratio * s_s * s_s) / c
        var = d * (s_t * s_t * frac) / c
        return gain, var

    def transition(self, target, x, grid: Grid, i: int):
        """The exact law p(x_{t_{i+1}} | x_{t_i} = x) = sum_k r[:, k] N(means[:, k], covs[k]) of
        ``target`` (a GaussianMixture or Gaussian, or a model carrying one) on ``grid``;
        returns (r (n, K), means (n, K, d), covs (K, d, d)). For tests and diagnostics; the
        sampler draws from it without forming these arrays."""
        tg = self._mixture(target, getattr(target, "target", target))
        x = finite(x, "x")
        if x.ndim != 2 or x.shape[1] != tg.d:
            raise ValueError(f"x must have shape (n, d) with d = {tg.d}, got {x.shape}")
        if grid.sigma[i] <= 0:
            raise ValueError(f"node {i} must have sigma > 0 (a transition starts inside the path)")
        a_t, a_s = float(grid.alpha[i]), float(grid.alpha[i + 1])
        gain, var = self._coefficients(tg, grid, i)
        r = tg.responsibilities(x, a_t, float(grid.sigma[i])) if x.shape[0] else np.ones((0, tg.K))
        means = np.empty((x.shape[0], tg.K, tg.d))
        covs = np.empty((tg.K, tg.d, tg.d))
        for k in range(tg.K):
            y = x - a_t * tg.means[k]
            Q = None if tg._evecs is None else tg._evecs[k]
            if Q is not None:
                y = y @ Q
            y = gain[k] * y
            means[:, k] = a_s * tg.means[k] + (y if Q is None else y @ Q.T)
            P = np.diag(var[k]) if Q is None else (Q * var[k]) @ Q.T
            covs[k] = 0.5 * (P + P.T)
        return r, means, covs

    @staticmethod
    def _choose(r, z):
        """Component index per row by inverse-CDF sampling of the rows of ``r`` at Phi(z)."""
        from scipy.special import ndtr

        K = r.shape[1]
        r = r / r.sum(axis=1, keepdims=True)
        lower = z < 0
        # the smaller tail probability, floored at the smallest normal number so that
        # components of responsibility exactly 0 at either end are never chosen
        u = np.maximum(ndtr(np.where(lower, z, -z)), np.finfo(np.float64).tiny)[:, None]
        cum = np.cumsum(r, axis=1)  # sum_{j <= k} r_j
        tail = np.cumsum(r[:, ::-1], axis=1)[:, ::-1]  # sum_{j >= k} r_j
        k_lo = np.minimum((cum < u).sum(axis=1), K - 1)  # cum_{k-1} < Phi(z) <= cum_k
        k_hi = np.maximum((tail >= u).sum(axis=1) - 1, 0)  # tail_{k+1} < Phi(-z) <= tail_k
        return np.where(lower, k_lo, k_hi)

    def _run(self, model, x, grid, rng):
        tg = self._mixture(model)
        n, d = x.shape
        if d != tg.d:
            raise ValueError(f"x_init must have shape (n, d) with d = {tg.d}, got {x.shape}")
        if n == 0:
            return x
        for i in range(grid.steps):
            out = np.asarray(model(x, grid.t[i]))
            if out.shape != x.shape:
                raise ValueError(
                    f"model output must have the shape of x {x.shape}, got {out.shape}"
                )
            x = self._step_exact(tg, x, grid, i, rng)
        return x

    def _step_exact(self, tg, x, grid, i, rng):
        n, d = x.shape
        a_t, a_s = float(grid.alpha[i]), float(grid.alpha[i + 1])
        gain, var = self._coefficients(tg, grid, i)
        if tg.K > 1:
            r = tg.responsibilities(x, a_t, float(grid.sigma[i]))
            comp = self._choose(r, rng.standard_normal((n, d))[:, 0])
        else:
            comp = np.zeros(n, dtype=np.intp)
        w = rng.standard_normal((n, d))
        std = np.sqrt(var)
        out = np.empty_like(x)
        for k in np.unique(comp):
            rows = comp == k
            y = x[rows] - a_t * tg.means[k]
            wk = w[rows]
            Q = None if tg._evecs is None else tg._evecs[k]
            if Q is not None:  # to the eigenbasis of Sigma_k
                y, wk = y @ Q, wk @ Q
            y = gain[k] * y + std[k] * wk
            out[rows] = a_s * tg.means[k] + (y if Q is None else y @ Q.T)
        return out
