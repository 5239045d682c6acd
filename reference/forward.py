"""Forward process kernels: q(x_t | x_0), q(x_t | x_s) for s < t, and the one-step DDPM kernel
q(x_n | x_{n-1}); each is a Gaussian N(mean_coef * x, var I), with sampling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import _r, finite, scalar_out
from ._stable import LOG_2PI, log1mexp
from .schedules import DiscreteSchedule, Schedule

__all__ = ["GaussianKernel", "marginal", "transition", "ddpm_step_kernel", "sample_marginal"]


def _rng(rng) -> np.random.Generator:
    """A NumPy Generator from ``rng``: None (fresh entropy), an int seed >= 0 (not a bool), a
    Generator, or any object drawing noise the same way (``standard_normal``: probes)."""
    if isinstance(rng, np.random.Generator) or hasattr(rng, "standard_normal"):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, (int, np.integer)):
        raise TypeError(
            f"rng must be None, an int seed >= 0 or a numpy Generator, got "
            f"{type(rng).__name__} {_r(rng)}"
        )
    if rng < 0:
        raise ValueError(f"rng must be an int seed >= 0 (or None or a Generator), got {_r(rng)}")
    return np.random.default_rng(int(rng))


def _leading(c: np.ndarray, x: np.ndarray, name: str) -> None:
    """Coefficients over a batch of times must match the leading axes of the points."""
    if c.ndim and (x.ndim < c.ndim or x.shape[: c.ndim] != c.shape):
        raise ValueError(
            f"{name} must have the coefficients' shape {c.shape} as its leading axes, got shape "
            f"{x.shape}"
        )


@dataclass(frozen=True)
class GaussianKernel:
    """The kernel y | x ~ N(mean_coef * x, var * I). ``mean_coef`` and ``var`` are floats or
    arrays over a batch of times (broadcast against the leading axis of ``x``)."""

    mean_coef: np.ndarray | float
    var: np.ndarray | float

    def __post_init__(self):
        finite(self.mean_coef, "mean_coef")
        var = finite(self.var, "var")
        if (var < 0).any():
            raise ValueError(f"var must be >= 0, got {_r(var[var < 0].ravel()[0])}")

    @property
    def std(self):
        """sqrt(var)."""
        return np.sqrt(self.var)

    @property
    def log_var(self):
        """log(var), -inf for a degenerate kernel."""
        with np.errstate(divide="ignore"):
            return np.log(self.var)

    def _bc(self, c, x):
        c = np.asarray(c, dtype=np.float64)
        _leading(c, x, "x")
        return c.reshape(c.shape + (1,) * (x.ndim - c.ndim)) if c.ndim else c

    def mean(self, x):
        """E[y | x] = mean_coef * x."""
        x = finite(x, "x")
        return self._bc(self.mean_coef, x) * x

    def sample(self, x, rng=None, *, noise=None):
        """Draw y = mean_coef x + sqrt(var) z, z ~ N(0, I) from ``rng`` (or the given ``noise``)."""
        x = finite(x, "x")
        z = _rng(rng).standard_normal(x.shape) if noise is None else finite(noise, "noise")
        if z.shape != x.shape:
            raise ValueError(f"noise must have the shape of x {x.shape}, got {z.shape}")
        return self._bc(self.mean_coef, x) * x + self._bc(self.std, x) * z

    def log_prob(self, y, x):
        """log N(y; mean_coef x, var I), summed over the last axis (nats)."""
        y, x = finite(y, "y"), finite(x, "x")
        if y.shape != x.shape:
            raise ValueError(f"y must have the shape of x {x.shape}, got {y.shape}")
        d = x.shape[-1] if x.ndim else 1
        var = np.asarray(self.var, dtype=np.float64)
        _leading(var, x[..., 0] if x.ndim else x, "x")
        if (var <= 0).any():
            raise ValueError("log_prob needs var > 0; this kernel is degenerate (var = 0)")
        r = y - self._bc(self.mean_coef, x) * x
        var_b = var.reshape(var.shape + (1,) * (x.ndim - 1 - var.ndim)) if var.ndim else var
        sq = np.sum(r * r, axis=-1) if x.ndim else r * r
        return -0.5 * (d * (LOG_2PI + np.log(var_b)) + sq / var_b)


@dataclass(frozen=True)
class _Pair:
    """Log-space quantities of a pair s < t shared by q(x_t | x_s) and q(x_s | x_t, x_0)."""

    s: np.ndarray
    t: np.ndarray
    la_s: np.ndarray  # log alpha_s
    la_t: np.ndarray
    ls_s: np.ndarray  # log sigma_s
    ls_t: np.ndarray
    dead: np.ndarray  # alpha_s = 0 (zero-terminal tail): x_s carries nothing of x_0
    frac: np.ndarray  # sigma_{t|s}^2 / sigma_t^2 = -expm1(lambda_t - lambda_s)
    log_frac: np.ndarray
    d_lam: np.ndarray  # lambda_t - lambda_s


def _schedule(schedule, cls=Schedule) -> Schedule:
    if not isinstance(schedule, cls):
        raise TypeError(
            f"schedule must be a {cls.__name__}, got {type(schedule).__name__} {_r(schedule)}"
        )
    return schedule


def _pair(schedule: Schedule, s, t) -> _Pair:
    _schedule(schedule)
    s = schedule._t(s, "s")
    t = schedule._t(t)
    try:
        s, t = np.broadcast_arrays(s, t)
    except ValueError as err:
        raise ValueError(
            f"s and t must broadcast together, got shapes {s.shape} and {t.shape}"
        ) from err
    if not (s < t).all():
        i = np.flatnonzero(~(s < t).ravel())[0]
        raise ValueError(f"s must be < t, got s = {_r(s.ravel()[i])}, t = {_r(t.ravel()[i])}")
    with np.errstate(divide="ignore", invalid="ignore"):
        la_s, la_t = np.asarray(schedule.log_alpha(s)), np.asarray(schedule.log_alpha(t))
        ls_s, ls_t = np.asarray(schedule.log_sigma(s)), np.asarray(schedule.log_sigma(t))
        d_lam = np.asarray(schedule.log_snr_diff(s, t))  # lambda_t - lambda_s, no cancellation
        dead = np.isneginf(la_s)
        frac = np.where(dead, 1.0, -np.expm1(np.where(dead, 0.0, d_lam)))
        log_frac = np.where(dead, 0.0, log1mexp(np.where(dead, 1.0, -d_lam)))
    return _Pair(s, t, la_s, la_t, ls_s, ls_t, dead, frac, log_frac, d_lam)


def marginal(schedule: Schedule, t) -> GaussianKernel:
    """q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I) (Ho et al. 2020, eq. 4; Kingma et al. 2021,
    eq. 1). ``t`` scalar or array; returns the kernel with coefficients of that shape."""
    t = _schedule(schedule)._t(t)
    return GaussianKernel(
        scalar_out(schedule.alpha(t), t), scalar_out(np.asarray(schedule.sigma(t)) ** 2, t)
    )


def transition(schedule: Schedule, s, t) -> GaussianKernel:
    """q(x_t | x_s) for s < t (Kingma et al. 2021, VDM, eq. 2-3):
    alpha_{t|s} = alpha_t / alpha_s, sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2
    = -sigma_t^2 expm1(lambda_t - lambda_s)  (no cancellation).
    Where alpha_s = 0 (zero-terminal-SNR tail) the kernel is N(0, sigma_t^2)."""
    p = _pair(schedule, s, t)
    coef = np.where(p.dead, 0.0, np.exp(p.la_t - np.where(p.dead, 0.0, p.la_s)))
    var = np.asarray(schedule.sigma(p.t)) ** 2 * p.frac
    t = p.t
    return GaussianKernel(scalar_out(coef, t), scalar_out(var, t))


def ddpm_step_kernel(schedule: DiscreteSchedule, n) -> GaussianKernel:
    """One DDPM forward step q(x_n | x_{n-1}) = N(sqrt(1 - beta_n) x_{n-1}, beta_n I)
    (Ho et al. 2020, eq. 2), computed from beta_n directly; n in 1..T."""
    _schedule(schedule, DiscreteSchedule)
    n = schedule._n(n)
    if (n < 1).any():
        raise ValueError(f"n must lie in [1, T={schedule.T}], got {_r(n[n < 1].ravel()[0])}")
    beta = schedule.betas[n - 1]
    coef = np.sqrt(1.0 - beta)
    return GaussianKernel(scalar_out(coef, n), scalar_out(beta, n))


def sample_marginal(schedule: Schedule, t, x0, rng=None, *, noise=None):
    """Draw x_t = alpha_t x_0 + sigma_t eps; returns (x_t, eps). ``t`` is a scalar or has the
    leading shape of ``x0``."""
    x0 = finite(x0, "x0")
    t_arr = _schedule(schedule)._t(t)
    if t_arr.ndim and t_arr.shape != x0.shape[: t_arr.ndim]:
        raise ValueError(
            f"t must be scalar or match the leading shape of x0 {x0.shape}, got {t_arr.shape}"
        )
    eps = _rng(rng).standard_normal(x0.shape) if noise is None else finite(noise, "noise")
    if eps.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {x0.shape}, got {eps.shape}")
    k = marginal(schedule, t_arr)
    return k.sample(x0, noise=eps), eps
