"""Training-time samplers of t, each with its density so that a loss can be reweighted.

Sampling t from density p(t) is equivalent to weighting a uniform-t loss by p(t) (Kingma et al.
2021 VDM, Sec. 5; Kingma & Gao 2023, arXiv:2303.00848, Sec. 4): ``pdf`` gives that weight.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit, logit

from ._checks import _r, finite_scalar, in_interval, positive_int, positive_scalar, scalar_out
from .forward import _rng
from .schedules import DiscreteSchedule, Schedule

__all__ = ["UniformTimesteps", "LogSNRTimesteps", "LogitNormalTimesteps"]


def _unit_scalar(value, name: str) -> float:
    v = in_interval(value, name, 0.0, 1.0)
    if v.ndim:
        raise ValueError(f"{name} must be a scalar, got shape {v.shape}")
    return float(v)


class UniformTimesteps:
    """t ~ U[t_min, t_max] (Ho et al. 2020 Algorithm 1 for a :class:`DiscreteSchedule`, where
    t = n/T with n ~ U{1..T}). ``pdf(t) = 1/(t_max - t_min)`` (continuous)."""

    def __init__(self, schedule: Schedule, t_min: float = 0.0, t_max: float = 1.0):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.t_min = _unit_scalar(t_min, "t_min")
        self.t_max = _unit_scalar(t_max, "t_max")
        if self.t_max <= self.t_min:
            raise ValueError(f"t_max must be > t_min={_r(self.t_min)}, got {_r(self.t_max)}")

    def sample(self, n: int, rng=None) -> np.ndarray:
        """n draws of t, shape (n,): U[t_min, t_max], or n/T with n uniform on the grid."""
        n = positive_int(n, "n")
        g = _rng(rng)
        if isinstance(self.schedule, DiscreteSchedule):
            T = self.schedule.T
            lo = max(1, math.ceil(self.t_min * T - 1e-9))
            hi = min(T, math.floor(self.t_max * T + 1e-9))
            return g.integers(lo, hi + 1, size=n) / T
        return g.uniform(self.t_min, self.t_max, size=n)

    def pdf(self, t):
        """p(t) = 1 / (t_max - t_min) on [t_min, t_max] (continuous view)."""
        t = in_interval(t, "t", self.t_min, self.t_max)
        return scalar_out(np.full(t.shape, 1.0 / (self.t_max - self.t_min)), t)


class LogSNRTimesteps:
    """Log-SNR importance sampling: lambda ~ U[log_snr_min, log_snr_max], t = t(lambda)
    (Kingma et al. 2021, VDM, Sec. 5; Kingma & Gao 2023, Sec. 4: a density over log-SNR).
    Its density in t is p(t) = |d lambda/dt| / (log_snr_max - log_snr_min).

    The range defaults to the schedule's own log-SNR range and must be finite."""

    def __init__(self, schedule: Schedule, log_snr_min=None, log_snr_max=None):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        self.schedule = schedule
        lo, hi = schedule.log_snr_range()
        lo = lo if log_snr_min is None else finite_scalar(log_snr_min, "log_snr_min")
        hi = hi if log_snr_max is None else finite_scalar(log_snr_max, "log_snr_max")
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(
                f"log_snr_min and log_snr_max must be finite; {_r(schedule)} spans [{lo}, {hi}], "
                "pass them explicitly"
            )
        if lo >= hi:
            raise ValueError(f"log_snr_min must be < log_snr_max={_r(hi)}, got {_r(lo)}")
        self.log_snr_min, self.log_snr_max = float(lo), float(hi)
        # validates that the range lies inside the schedule's
        schedule.t_from_log_snr(np.array([lo, hi]))

    def sample(self, n: int, rng=None) -> np.ndarray:
        """n draws t = t(lambda), lambda ~ U[log_snr_min, log_snr_max], shape (n,)."""
        n = positive_int(n, "n")
        lam = _rng(rng).uniform(self.log_snr_min, self.log_snr_max, size=n)
        return np.asarray(self.schedule.t_from_log_snr(lam))

    def pdf(self, t):
        """p(t) = |d lambda/dt| / (log_snr_max - log_snr_min) inside the range, else 0."""
        t = self.schedule._t(t)
        lam = np.asarray(self.schedule.log_snr(t))
        dens = np.abs(np.asarray(self.schedule.d_log_snr(t))) / (
            self.log_snr_max - self.log_snr_min
        )
        inside = (lam >= self.log_snr_min) & (lam <= self.log_snr_max)
        return scalar_out(np.where(inside, dens, 0.0), t)


class LogitNormalTimesteps:
    """Logit-normal t = sigmoid(mu + s z), z ~ N(0, 1) (Esser et al. 2024, SD3,
    arXiv:2403.03206, eq. 19): p(t) = exp(-(logit t - mu)^2/(2 s^2)) / (s sqrt(2 pi) t (1 - t))."""

    def __init__(self, mu: float = 0.0, s: float = 1.0):
        self.mu = finite_scalar(mu, "mu")
        self.s = positive_scalar(s, "s")

    def sample(self, n: int, rng=None) -> np.ndarray:
        """n draws t = sigmoid(mu + s z), z ~ N(0, 1), shape (n,)."""
        n = positive_int(n, "n")
        return expit(self.mu + self.s * _rng(rng).standard_normal(n))

    def pdf(self, t):
        """The logit-normal density (class docstring); 0 at t = 0 and t = 1."""
        t = in_interval(t, "t", 0.0, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (logit(t) - self.mu) / self.s
            dens = np.exp(-0.5 * z * z) / (self.s * math.sqrt(2 * math.pi) * t * (1.0 - t))
        return scalar_out(np.where((t > 0) & (t < 1), dens, 0.0), t)
