"""The forward-process posterior q(x_s | x_t, x_0) for any s < t, and the DDPM case s = t - 1
with its fixed_small / fixed_large variances."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import _r, choice, finite, scalar_out
from .forward import _leading, _pair, _rng, _schedule
from .schedules import DiscreteSchedule, Schedule

__all__ = ["PosteriorCoefficients", "posterior", "ddpm_posterior"]


@dataclass(frozen=True)
class PosteriorCoefficients:
    """q(x_s | x_t, x_0) = N(coef_x0 x_0 + coef_xt x_t, var I).

    ``log_var`` is log(var) (-inf where var = 0); ``log_var_clipped`` replaces a -inf at the
    first step with the log variance of the next step, as improved-diffusion does
    (Nichol & Dhariwal 2021, ``posterior_log_variance_clipped``)."""

    coef_x0: np.ndarray | float
    coef_xt: np.ndarray | float
    var: np.ndarray | float
    log_var: np.ndarray | float
    log_var_clipped: np.ndarray | float

    def mean(self, x0, x_t):
        """Posterior mean coef_x0 x_0 + coef_xt x_t."""
        x0, x_t = finite(x0, "x0"), finite(x_t, "x_t")
        if x0.shape != x_t.shape:
            raise ValueError(f"x0 must have the shape of x_t {x_t.shape}, got {x0.shape}")

        def bc(c):
            c = np.asarray(c, dtype=np.float64)
            _leading(c, x_t, "x_t")
            return c.reshape(c.shape + (1,) * (x0.ndim - c.ndim)) if c.ndim else c

        return bc(self.coef_x0) * x0 + bc(self.coef_xt) * x_t

    def sample(self, x0, x_t, rng=None, *, noise=None):
        """Draw x_s = mean(x0, x_t) + sqrt(var) z, z ~ N(0, I) from ``rng`` (or ``noise``)."""
        m = self.mean(x0, x_t)
        z = _rng(rng).standard_normal(m.shape) if noise is None else finite(noise, "noise")
        if z.shape != m.shape:
            raise ValueError(f"noise must have the shape of x_t {m.shape}, got {z.shape}")
        std = np.sqrt(np.asarray(self.var, dtype=np.float64))
        std = std.reshape(std.shape + (1,) * (m.ndim - std.ndim)) if std.ndim else std
        return m + std * z


def posterior(schedule: Schedule, s, t) -> PosteriorCoefficients:
    """q(x_s | x_t, x_0) for s < t (Kingma et al. 2021, VDM, eq. 5-6, App. A):

    coef_xt = alpha_{t|s} sigma_s^2 / sigma_t^2 = exp(lambda_t - lambda_s) alpha_s / alpha_t,
    coef_x0 = alpha_s sigma_{t|s}^2 / sigma_t^2 = alpha_s (-expm1(lambda_t - lambda_s)),
    var     = sigma_{t|s}^2 sigma_s^2 / sigma_t^2 = sigma_s^2 (-expm1(lambda_t - lambda_s)),

    evaluated in log space (no division by alpha_t or sigma_s). Where alpha_s = 0 (zero-terminal
    tail) x_s is independent of (x_t, x_0) and the result is N(0, sigma_s^2). For a general pair
    ``log_var_clipped`` equals ``log_var``; the clipped DDPM form is :func:`ddpm_posterior`.

    Returns :class:`PosteriorCoefficients` with arrays shaped like broadcast(s, t).
    """
    p = _pair(schedule, s, t)
    t = p.t
    with np.errstate(divide="ignore", invalid="ignore"):
        # alpha_{t|s} sigma_s^2/sigma_t^2 = exp(lambda_t - lambda_s) alpha_s/alpha_t: no log
        # sigma, so no -inf + inf where t rounds to the data end (sigma_t = 0 in float64); 0
        # where alpha_s = 0 (x_s independent of x_t) or alpha_t = 0 (x_t carries no x_0)
        none = p.dead | np.isneginf(p.la_t)
        coef_xt = np.where(
            none, 0.0, np.exp(np.where(none, 0.0, p.d_lam + p.la_s - p.la_t))
        )
        coef_x0 = np.exp(p.la_s) * p.frac
        log_var = 2.0 * p.ls_s + p.log_frac
        var = np.exp(log_var)
    return PosteriorCoefficients(
        scalar_out(coef_x0, t),
        scalar_out(coef_xt, t),
        scalar_out(var, t),
        scalar_out(log_var, t),
        scalar_out(log_var, t),
    )


def ddpm_posterior(
    schedule: DiscreteSchedule, n, *, variance: str = "fixed_small"
) -> PosteriorCoefficients:
    """DDPM reverse-step quantities for q(x_{n-1} | x_n, x_0), n in 1..T (Ho et al. 2020,
    eq. 6-7), computed from the betas:

    coef_x0 = sqrt(alpha_bar_{n-1}) beta_n / (1 - alpha_bar_n),
    coef_xt = sqrt(alpha_n) (1 - alpha_bar_{n-1}) / (1 - alpha_bar_n),
    beta_tilde_n = (1 - alpha_bar_{n-1}) / (1 - alpha_bar_n) beta_n.

    ``variance``: "fixed_small" gives var = beta_tilde_n (the true posterior variance),
    "fixed_large" gives var = beta_n (Ho et al. 2020, Sec. 3.2). ``log_var_clipped`` replaces the
    -inf of beta_tilde_1 = 0 by log beta_tilde_2 (improved-diffusion).
    """
    _schedule(schedule, DiscreteSchedule)
    choice(variance, "variance", {"fixed_small", "fixed_large"})
    n = schedule._n(n)
    if (n < 1).any():
        raise ValueError(f"n must lie in [1, T={schedule.T}], got {_r(n[n < 1].ravel()[0])}")

    def coefficients(m):
        L_prev = schedule.log_alpha_bar[m - 1]
        L = schedule.log_alpha_bar[m]
        beta = schedule.betas[m - 1]
        one_m_prev = -np.expm1(L_prev) + 0.0  # 1 - alpha_bar_{n-1} (never -0.0)
        one_m = -np.expm1(L)  # 1 - alpha_bar_n
        coef_x0 = np.exp(0.5 * L_prev) * beta / one_m
        coef_xt = np.sqrt(1.0 - beta) * one_m_prev / one_m
        beta_tilde = one_m_prev / one_m * beta
        return coef_x0, coef_xt, beta_tilde, beta

    with np.errstate(divide="ignore", invalid="ignore"):
        coef_x0, coef_xt, beta_tilde, beta = coefficients(n)
        if variance == "fixed_small":
            var = beta_tilde
            log_var = np.log(beta_tilde)
            if schedule.T >= 2:
                log_bt2 = np.log(coefficients(np.full_like(n, 2))[2])
                clipped = np.where(n == 1, log_bt2, log_var)
            else:
                clipped = log_var
        else:
            var = beta
            log_var = np.log(beta)
            clipped = log_var
    return PosteriorCoefficients(
        scalar_out(coef_x0, n),
        scalar_out(coef_xt, n),
        scalar_out(var, n),
        scalar_out(log_var, n),
        scalar_out(clipped, n),
    )
