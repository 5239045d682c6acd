"""Noise schedules: the Gaussian path x_t = alpha(t) x_0 + sigma(t) eps, eps ~ N(0, I).

Every schedule lives on t in [0, 1] (t = 0 is data, t = 1 the most noise) and gives, in float64,
alpha, sigma, their logs, log_snr = log(alpha^2 / sigma^2), snr, their t-derivatives, the SDE
coefficients f(t) = d log alpha / dt and g(t)^2 = d sigma^2/dt - 2 f sigma^2 (Song et al. 2021,
arXiv:2011.13456, eq. 5 and App. B), and the inverse t(log_snr).

Each concrete schedule implements its own closed forms (never a generic chain rule that would form
0 * inf at an endpoint). Where a closed-form inverse is ill-conditioned a few Newton steps on the
accurate forward log_snr polish it.

Discrete DDPM schedules (betas over T steps) are :class:`DiscreteSchedule`. Index-to-t mapping,
used everywhere in this package: **n in {0, 1, ..., T} <-> t = n / T**, with n = 0 the data
(alpha_bar_0 = 1) and alpha_bar_n = prod_{i<=n} (1 - beta_i) (Ho et al. 2020, arXiv:2006.11239,
eq. 4). In diffusers/improved-diffusion the 0-based timestep k corresponds to n = k + 1.
Between grid points log alpha_bar is linear in t: that is exactly the continuous VP SDE with the
piecewise-constant beta(t) = -T log(1 - beta_n) on ((n-1)/T, n/T], whose transition over one
interval is the DDPM kernel q(x_n | x_{n-1}), so the discrete chain is this SDE observed on the
grid.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
from scipy.special import expit

from ._checks import (
    _r,
    _show,
    as_float,
    boolean,
    finite,
    finite_scalar,
    in_interval,
    positive,
    positive_int,
    positive_scalar,
    scalar_out,
)
from ._stable import log1mexp, log_ratio, log_sigmoid, softplus

__all__ = [
    "Schedule",
    "VPLinear",
    "VPCosine",
    "VEGeometric",
    "EDM",
    "SubVP",
    "Flow",
    "DiscreteSchedule",
    "karras_sigmas",
    "rescale_zero_terminal_snr",
    "SCHEDULES",
    "get_schedule",
]

_HALF_PI = 0.5 * math.pi


def _safe(fn):
    """Evaluate with floating-point warnings silenced: the closed forms below produce +-inf at
    endpoints on purpose (e.g. log sigma(0) = -inf); a NaN is never produced by design."""

    def wrapper(*args, **kwargs):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return fn(*args, **kwargs)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class Schedule(ABC):
    """A Gaussian path x_t = alpha(t) x_0 + sigma(t) eps on t in [0, 1].

    Subclasses implement ``_alpha``, ``_sigma``, ``_log_alpha``, ``_log_sigma``, ``_log_snr``,
    ``_d_alpha``, ``_d_sigma``, ``_d_log_snr``, ``_f``, ``_g_squared`` and ``_t_from_log_snr`` on
    validated float64 arrays. Public methods validate ``t`` (finite, inside [0, 1]) and return a
    float for scalar input, an array otherwise.

    ``kind`` is one of "vp" (alpha^2 + sigma^2 = 1), "ve" (alpha = 1), "subvp", "flow".
    """

    kind: str = ""
    t_min: float = 0.0
    t_max: float = 1.0

    # ------------------------------------------------------------------ validation
    def _t(self, t, name: str = "t") -> np.ndarray:
        return in_interval(t, name, self.t_min, self.t_max)

    def _call(self, impl, t):
        t = self._t(t)
        return scalar_out(_safe(impl)(t), t)

    # ------------------------------------------------------------------ public API
    def alpha(self, t):
        """Signal coefficient alpha(t) of x_t = alpha x_0 + sigma eps."""
        return self._call(self._alpha, t)

    def sigma(self, t):
        """Noise coefficient sigma(t) of x_t = alpha x_0 + sigma eps."""
        return self._call(self._sigma, t)

    def log_alpha(self, t):
        """log alpha(t) (-inf where alpha = 0)."""
        return self._call(self._log_alpha, t)

    def log_sigma(self, t):
        """log sigma(t) (-inf where sigma = 0)."""
        return self._call(self._log_sigma, t)

    def log_snr(self, t):
        """lambda(t) = log SNR(t) = log(alpha^2 / sigma^2) (Kingma et al. 2021, VDM, eq. 3)."""
        return self._call(self._log_snr, t)

    def log_snr_diff(self, s, t):
        """lambda(t) - lambda(s), formed from t - s by each schedule's difference identity
        rather than by subtracting two rounded log-SNRs: accurate to a few ulps of the difference
        itself, also for s next to t where the subtraction keeps only |lambda| eps / |lambda_t -
        lambda_s| of it. The posterior q(x_s | x_t, x_0) needs it through
        -expm1(lambda_t - lambda_s) (Kingma et al. 2021, VDM, eq. 32), DPM-Solver through its
        step h = lambda_s - lambda_t (Lu et al. 2022, arXiv:2206.00927, eq. 3.4). ``s`` and ``t``
        in [0, 1], broadcast together, in either order; 0 where s = t."""
        s, t = self._t(s, "s"), self._t(t)
        try:
            s, t = np.broadcast_arrays(s, t)
        except ValueError as err:
            raise ValueError(
                f"s and t must broadcast together, got shapes {s.shape} and {t.shape}"
            ) from err
        lo, hi = np.minimum(s, t), np.maximum(s, t)
        sign = np.where(s <= t, 1.0, -1.0)
        apart = lo < hi
        lo_, hi_ = np.where(apart, lo, 0.0), np.where(apart, hi, 1.0)
        d = _safe(self._log_snr_diff)(lo_, hi_)
        # lambda = +inf at the earlier time (the data end) and finite at the later: -inf; both
        # +inf in float64 with no answer from the identity (a discrete t snapped to node 0: the
        # same level by the schedule's convention): 0
        inf_lo = np.isposinf(_safe(self._log_snr)(lo_))
        inf_hi = np.isposinf(_safe(self._log_snr)(hi_))
        d = np.where(inf_lo & ~inf_hi, -np.inf, d)
        d = np.where(inf_lo & inf_hi & np.isnan(d), 0.0, d)
        return scalar_out(np.where(apart, sign * d, 0.0), t)

    def _log_snr_diff(self, s, t):
        # fallback for a schedule without a difference identity (subclasses override)
        return self._log_snr(t) - self._log_snr(s)

    def snr(self, t):
        """SNR(t) = alpha^2 / sigma^2 = exp(lambda(t))."""
        t = self._t(t)
        return scalar_out(_safe(lambda u: np.exp(self._log_snr(u)))(t), t)

    def d_alpha(self, t):
        """d alpha / dt."""
        return self._call(self._d_alpha, t)

    def d_sigma(self, t):
        """d sigma / dt."""
        return self._call(self._d_sigma, t)

    def d_log_snr(self, t):
        """d lambda / dt (negative: the SNR decreases with t)."""
        return self._call(self._d_log_snr, t)

    def d_snr(self, t):
        """d SNR / dt = SNR * d lambda / dt (the VDM loss weight is -d SNR/dt, Kingma et al.
        2021, eq. 17)."""
        t = self._t(t)

        def impl(u):
            snr = np.exp(self._log_snr(u))
            dl = self._d_log_snr(u)
            return np.where(snr == 0.0, 0.0, snr * dl)

        return scalar_out(_safe(impl)(t), t)

    def f(self, t):
        """Drift coefficient of the forward SDE dx = f(t) x dt + g(t) dw: f = d log alpha / dt
        (Song et al. 2021, eq. 5; Kingma et al. 2021, App. A)."""
        return self._call(self._f, t)

    def g_squared(self, t):
        """Squared diffusion coefficient g(t)^2 = d sigma^2/dt - 2 f sigma^2 = -sigma^2 dlambda/dt
        (Kingma et al. 2021, App. A; Song et al. 2021, eq. 5)."""
        return self._call(self._g_squared, t)

    def g(self, t):
        """Diffusion coefficient g(t) = sqrt(g(t)^2)."""
        t = self._t(t)
        return scalar_out(_safe(lambda u: np.sqrt(self._g_squared(u)))(t), t)

    def sigma_edm(self, t):
        """EDM's noise level sigma_EDM = sigma / alpha = exp(-lambda / 2): the VE-equivalent path
        x / alpha = x_0 + sigma_EDM eps (Karras et al. 2022, arXiv:2206.00364, eq. 4)."""
        t = self._t(t)
        return scalar_out(_safe(lambda u: np.exp(-0.5 * self._log_snr(u)))(t), t)

    def log_snr_range(self) -> tuple[float, float]:
        """(lambda(t_max), lambda(t_min)): the interval of log-SNR this schedule covers."""
        lo = float(_safe(self._log_snr)(np.float64(self.t_max)))
        hi = float(_safe(self._log_snr)(np.float64(self.t_min)))
        return lo, hi

    def t_from_log_snr(self, log_snr):
        """Inverse t(lambda) of the strictly decreasing lambda(t).

        ``log_snr`` must lie in [lambda(1), lambda(0)] (+-inf allowed only where the schedule
        attains it), else ValueError."""
        lam = as_float(log_snr, "log_snr")
        if np.isnan(lam).any():
            raise ValueError("log_snr must not be NaN, got nan")
        lo, hi = self.log_snr_range()
        bad = (lam < lo) | (lam > hi)
        if bad.any():
            raise ValueError(
                f"log_snr must lie in [{_r(lo)}, {_r(hi)}] for {_r(self)}, "
                f"got {_r(lam[bad].ravel()[0])}"
            )
        out = _safe(self._t_from_log_snr)(lam)
        out = np.where(lam == hi, self.t_min, np.where(lam == lo, self.t_max, out))
        return scalar_out(np.clip(out, self.t_min, self.t_max), lam)

    def t_from_sigma_edm(self, sigma_edm):
        """Inverse of :meth:`sigma_edm`: t such that sigma/alpha = sigma_edm (> 0)."""
        arr = positive(sigma_edm, "sigma_edm")
        return self.t_from_log_snr(-2.0 * np.log(arr))

    # ------------------------------------------------------------------ helpers
    def _newton(self, t, lam, iters: int = 4):
        """Polish t so that log_snr(t) = lam with Newton steps on the accurate forward map."""
        t = np.asarray(t, dtype=np.float64).copy()
        ok = np.isfinite(lam)
        for _ in range(iters):
            lt = self._log_snr(t)
            dl = self._d_log_snr(t)
            step = np.where(
                ok & np.isfinite(lt) & np.isfinite(dl) & (dl != 0), (lt - lam) / dl, 0.0
            )
            t = np.clip(t - step, self.t_min, self.t_max)
        return t

    # ------------------------------------------------------------------ abstract
    @abstractmethod
    def _alpha(self, t): ...

    @abstractmethod
    def _sigma(self, t): ...

    @abstractmethod
    def _log_alpha(self, t): ...

    @abstractmethod
    def _log_sigma(self, t): ...

    @abstractmethod
    def _log_snr(self, t): ...

    @abstractmethod
    def _d_alpha(self, t): ...

    @abstractmethod
    def _d_sigma(self, t): ...

    @abstractmethod
    def _d_log_snr(self, t): ...

    @abstractmethod
    def _f(self, t): ...

    @abstractmethod
    def _g_squared(self, t): ...

    @abstractmethod
    def _t_from_log_snr(self, lam): ...


# ====================================================================== continuous VP


def _beta_linear_dB(schedule, s, t):
    """B(t) - B(s) = (t - s) (beta_min + (beta_max - beta_min)(t + s)/2) for the linear-beta
    schedules: from t - s, never from two rounded B values."""
    return (t - s) * (schedule.beta_min + 0.5 * (schedule.beta_max - schedule.beta_min) * (t + s))


class VPLinear(Schedule):
    """Continuous VP SDE with linear beta(t) = beta_min + t (beta_max - beta_min).

    B(t) = int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2,
    alpha = exp(-B/2), sigma = sqrt(-expm1(-B)), lambda = -B - log(-expm1(-B)),
    f = -beta/2, g^2 = beta (Song et al. 2021, arXiv:2011.13456, eq. 11 and eq. 29 ff.).

    Parameters: ``beta_min`` (beta_min > 0), ``beta_max`` (> beta_min); defaults 0.1 and 20.

    Example: ``VPLinear().log_snr(0.5)``.
    """

    kind = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = positive_scalar(beta_min, "beta_min")
        self.beta_max = positive_scalar(beta_max, "beta_max")
        if self.beta_max <= self.beta_min:
            raise ValueError(
                f"beta_max must be > beta_min={_r(self.beta_min)}, got {_r(self.beta_max)}"
            )

    def __repr__(self):
        return f"VPLinear(beta_min={_r(self.beta_min)}, beta_max={_r(self.beta_max)})"

    def beta(self, t):
        """beta(t) = beta_min + t (beta_max - beta_min)."""
        t = self._t(t)
        return scalar_out(self._beta(t), t)

    def _beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _B(self, t):
        return t * (self.beta_min + 0.5 * (self.beta_max - self.beta_min) * t)

    def _alpha(self, t):
        return np.exp(-0.5 * self._B(t))

    def _sigma(self, t):
        return np.sqrt(-np.expm1(-self._B(t)))

    def _log_alpha(self, t):
        return -0.5 * self._B(t)

    def _log_sigma(self, t):
        return 0.5 * log1mexp(self._B(t))

    def _log_snr(self, t):
        B = self._B(t)
        return -B - log1mexp(B)

    def _log_snr_diff(self, s, t):
        # lambda = -B - log(1 - e^-B): the ratio (1 - e^-B_t)/(1 - e^-B_s) is
        # 1 - expm1(-dB)/expm1(B_s); both terms have the sign of dB, no cancellation
        dB = _beta_linear_dB(self, s, t)
        out = -dB - np.log1p(-np.expm1(-dB) / np.expm1(self._B(s)))
        # dB = B_s = 0 (s, t within float64 underflow of 0: 0/0): lambda ~ -log B ~ -log t
        return np.where(dB == 0.0, -np.log1p((t - s) / s), out)

    def _d_alpha(self, t):
        return -0.5 * self._beta(t) * self._alpha(t)

    def _d_sigma(self, t):
        B = self._B(t)
        return self._beta(t) * np.exp(-B) / (2.0 * np.sqrt(-np.expm1(-B)))

    def _d_log_snr(self, t):
        return -self._beta(t) / (-np.expm1(-self._B(t)))

    def _f(self, t):
        return -0.5 * self._beta(t)

    def _g_squared(self, t):
        return self._beta(t)

    def _t_from_log_snr(self, lam):
        B = softplus(-lam)  # -log alpha^2 = -log sigmoid(lambda)
        d = self.beta_max - self.beta_min
        return 2.0 * B / (self.beta_min + np.sqrt(self.beta_min**2 + 2.0 * d * B))


class VPCosine(Schedule):
    """Continuous cosine VP schedule (Nichol & Dhariwal 2021, arXiv:2102.09672, eq. 17):
    alpha_bar(t) = cos^2(phi(t)) / cos^2(phi(0)), phi(t) = (pi/2)(t + s)/(1 + s).

    With psi = pi/2 - phi = (pi/2)(1 - t)/(1 + s) and delta = phi - phi(0) = (pi/2) t/(1 + s):
    alpha = sin(psi)/cos(phi0), sigma^2 = sin(delta) sin(phi + phi0)/cos^2(phi0) (no cancellation
    near t = 0), alpha(1) = 0 exactly. Parameter ``s`` >= 0 (default 0.008).
    """

    kind = "vp"

    def __init__(self, s: float = 0.008):
        self.s = finite_scalar(s, "s")
        if self.s < 0:
            raise ValueError(f"s must be >= 0, got {_r(self.s)}")
        self._k = _HALF_PI / (1.0 + self.s)  # d phi / dt
        self._phi0 = self._k * self.s
        self._cos_phi0 = math.cos(self._phi0)

    def __repr__(self):
        return f"VPCosine(s={_r(self.s)})"

    def _psi(self, t):
        return self._k * (1.0 - t)

    def _delta(self, t):
        return self._k * t

    def _alpha(self, t):
        return np.sin(self._psi(t)) / self._cos_phi0

    def _sigma(self, t):
        return np.sqrt(np.sin(self._delta(t)) * np.sin(self._k * (t + 2 * self.s))) / self._cos_phi0

    def _log_alpha(self, t):
        return np.log(np.sin(self._psi(t))) - math.log(self._cos_phi0)

    def _log_sigma(self, t):
        return 0.5 * (
            np.log(np.sin(self._delta(t))) + np.log(np.sin(self._k * (t + 2 * self.s)))
        ) - math.log(self._cos_phi0)

    def _log_snr(self, t):
        return (
            2.0 * np.log(np.sin(self._psi(t)))
            - np.log(np.sin(self._delta(t)))
            - np.log(np.sin(self._k * (t + 2 * self.s)))
        )

    def _log_snr_diff(self, s, t):
        # each sine ratio from sin(a + 2h) - sin(a) = 2 cos(a + h) sin(h), h = k (t - s)/2;
        # the cosines of the midpoints are taken as sines of their complements where the
        # argument passes pi/4 (m = (t + s)/2, 1 - m = ((1 - t) + (1 - s))/2 exactly)
        k, s0 = self._k, self.s
        sh = np.sin(0.5 * k * (t - s))
        m, one_m = 0.5 * (t + s), 0.5 * ((1.0 - t) + (1.0 - s))
        quarter = 0.5 * _HALF_PI
        # sin(psi): cos(psi_mid) = sin(phi_mid), phi_mid = k (m + s0) <= pi/2
        d_psi = -2.0 * np.sin(k * (m + s0)) * sh
        # sin(delta): cos(k m)
        cos_mid = np.where(k * m <= quarter, np.cos(k * m), np.sin(k * (one_m + s0)))
        d_delta = 2.0 * cos_mid * sh
        # sin(k (t + 2 s0)): cos(k (m + 2 s0)) = sin(k (1 - m - s0))
        w_mid = k * (m + 2.0 * s0)
        cos_w = np.where(w_mid <= quarter, np.cos(w_mid), np.sin(k * (one_m - s0)))
        d_w = 2.0 * cos_w * sh
        sin_psi_s, sin_psi_t = np.sin(self._psi(s)), np.sin(self._psi(t))
        sin_del_s, sin_del_t = np.sin(self._delta(s)), np.sin(self._delta(t))
        sin_w_s, sin_w_t = np.sin(k * (s + 2.0 * s0)), np.sin(k * (t + 2.0 * s0))
        return (
            2.0 * log_ratio(sin_psi_t, sin_psi_s, d_psi)
            - log_ratio(sin_del_t, sin_del_s, d_delta)
            - log_ratio(sin_w_t, sin_w_s, d_w)
        )

    def _sin_phi(self, t):
        # sin(phi) = cos(psi): take sin(phi) where phi <= pi/4 and cos(psi) where psi < pi/4, so
        # neither argument sits near pi/2 where the small result would cancel
        return np.where(
            t + self.s <= 0.5 * (1.0 + self.s), np.sin(self._k * (t + self.s)), np.cos(self._psi(t))
        )

    def _d_alpha(self, t):
        return -self._k * self._sin_phi(t) / self._cos_phi0

    def _d_sigma(self, t):
        if self.s == 0.0:  # sigma = sin(k t) exactly: d sigma = k cos(k t), finite at t = 0
            return self._k * np.sin(self._psi(t))
        # 2 sigma sigma' = k sin(2 phi) / cos^2 phi0, sin(2 phi) = 2 sin(phi) cos(phi)
        num = self._k * np.sin(self._psi(t)) * self._sin_phi(t) / self._cos_phi0**2
        return num / self._sigma(t)

    def _d_log_snr(self, t):
        sin_phi, cos_phi = self._sin_phi(t), np.sin(self._psi(t))
        if self.s == 0.0:  # lambda = 2 log cot(k t): -2k (tan + cot), -inf at t = 0 (not 0/0)
            return -2.0 * self._k * (sin_phi / cos_phi + cos_phi / sin_phi)
        return -2.0 * self._k * sin_phi / cos_phi - self._k * 2.0 * sin_phi * cos_phi / (
            np.sin(self._delta(t)) * np.sin(self._k * (t + 2 * self.s))
        )

    def _f(self, t):
        return -self._k * self._sin_phi(t) / np.sin(self._psi(t))

    def _g_squared(self, t):
        return -2.0 * self._f(t)  # VP: g^2 = -2 f

    def _t_from_log_snr(self, lam):
        # alpha^2 = sigmoid(lambda): sin(psi) = cos(phi0) sqrt(sigmoid(lambda)); psi <= pi/4 for
        # lambda <= 0 where arcsin is well conditioned. For lambda > 0 start from
        # sin(delta) sin(delta + 2 phi0) = cos^2(phi0) sigmoid(-lambda) and polish with Newton.
        sin_psi = self._cos_phi0 * np.exp(0.5 * log_sigmoid(lam))
        t_neg = 1.0 - np.arcsin(np.clip(sin_psi, 0.0, 1.0)) / self._k
        # c in log space: sigmoid(-lambda) underflows past lambda ~ 745 (and c / sin(2 phi0)
        # with it), while t(lambda) ~ e^(-lambda/2) (s = 0) is still a normal double there; a
        # start at t = 0 (lambda = inf) is never moved by Newton
        log_c = 2.0 * math.log(self._cos_phi0) + log_sigmoid(-lam)
        c = np.exp(log_c)
        two_phi0 = 2.0 * self._phi0
        arg = np.clip(math.cos(two_phi0) - 2.0 * c, -1.0, 1.0)
        delta_big = 0.5 * (np.arccos(arg) - two_phi0)
        delta = (
            np.where(c < 1e-6, np.exp(log_c - math.log(math.sin(two_phi0))), delta_big)
            if self.s > 0
            else np.arcsin(np.exp(0.5 * np.minimum(log_c, 0.0)))
        )
        t_pos = delta / self._k
        t0 = np.where(lam <= 0, t_neg, t_pos)
        return self._newton(np.clip(t0, 0.0, 1.0), lam)


# ====================================================================== VE / EDM


class VEGeometric(Schedule):
    """Variance-exploding SDE with geometric noise sigma(t) = sigma_min (sigma_max/sigma_min)^t,
    alpha = 1 (Song et al. 2021, arXiv:2011.13456, eq. 9 and 30; Song & Ermon 2019).

    lambda = -2 log sigma, f = 0, g^2 = 2 sigma^2 log(sigma_max/sigma_min).
    Defaults sigma_min = 0.01, sigma_max = 50 (score_sde CIFAR-10).
    """

    kind = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min = positive_scalar(sigma_min, "sigma_min")
        self.sigma_max = positive_scalar(sigma_max, "sigma_max")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(
                f"sigma_max must be > sigma_min={_r(self.sigma_min)}, got {_r(self.sigma_max)}"
            )
        # a difference of logs: the ratio itself may overflow (1e300 / 1e-300)
        self._log_ratio = math.log(self.sigma_max) - math.log(self.sigma_min)

    def __repr__(self):
        return f"VEGeometric(sigma_min={_r(self.sigma_min)}, sigma_max={_r(self.sigma_max)})"

    def _alpha(self, t):
        return np.ones_like(t)

    def _log_alpha(self, t):
        return np.zeros_like(t)

    def _log_sigma(self, t):
        return math.log(self.sigma_min) + t * self._log_ratio

    def _sigma(self, t):
        return np.exp(self._log_sigma(t))

    def _log_snr(self, t):
        return -2.0 * self._log_sigma(t)

    def _d_alpha(self, t):
        return np.zeros_like(t)

    def _d_sigma(self, t):
        return self._sigma(t) * self._log_ratio

    def _log_snr_diff(self, s, t):
        return -2.0 * (t - s) * self._log_ratio

    def _d_log_snr(self, t):
        return np.full_like(t, -2.0 * self._log_ratio)

    def _f(self, t):
        return np.zeros_like(t)

    def _g_squared(self, t):
        return 2.0 * self._sigma(t) ** 2 * self._log_ratio

    def _t_from_log_snr(self, lam):
        return (-0.5 * lam - math.log(self.sigma_min)) / self._log_ratio


class EDM(Schedule):
    """EDM / Karras noise schedule as a continuous path (Karras et al. 2022, arXiv:2206.00364,
    eq. 5 and Table 1): alpha = 1,
    sigma(t) = (sigma_min^(1/rho) + t (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho.

    The N-point Karras grid is sigma(t_i) with t_i = 1 - i/(N - 1), i = 0..N-1 (see
    :func:`karras_sigmas`). Defaults sigma_min = 0.002, sigma_max = 80, rho = 7.
    """

    kind = "ve"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
        self.sigma_min = positive_scalar(sigma_min, "sigma_min")
        self.sigma_max = positive_scalar(sigma_max, "sigma_max")
        self.rho = positive_scalar(rho, "rho")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(
                f"sigma_max must be > sigma_min={_r(self.sigma_min)}, got {_r(self.sigma_max)}"
            )
        self._a, hi = _rho_roots(self.sigma_min, self.sigma_max, self.rho)
        self._D = hi - self._a

    def __repr__(self):
        smin, smax = _r(self.sigma_min), _r(self.sigma_max)
        return f"EDM(sigma_min={smin}, sigma_max={smax}, rho={_r(self.rho)})"

    def _base(self, t):
        return self._a + t * self._D

    def _alpha(self, t):
        return np.ones_like(t)

    def _log_alpha(self, t):
        return np.zeros_like(t)

    def _log_sigma(self, t):
        return self.rho * np.log(self._base(t))

    def _sigma(self, t):
        return self._base(t) ** self.rho

    def _log_snr(self, t):
        return -2.0 * self._log_sigma(t)

    def _d_alpha(self, t):
        return np.zeros_like(t)

    def _d_sigma(self, t):
        return self.rho * self._D * self._base(t) ** (self.rho - 1.0)

    def _log_snr_diff(self, s, t):
        # -2 rho log(base_t / base_s), base_t - base_s = (t - s) D
        return -2.0 * self.rho * np.log1p((t - s) * self._D / self._base(s))

    def _d_log_snr(self, t):
        return -2.0 * self.rho * self._D / self._base(t)

    def _f(self, t):
        return np.zeros_like(t)

    def _g_squared(self, t):
        return 2.0 * self._sigma(t) * self._d_sigma(t)

    def _t_from_log_snr(self, lam):
        return (np.exp(-lam / (2.0 * self.rho)) - self._a) / self._D

    def karras_grid(self, n: int, *, append_zero: bool = True) -> np.ndarray:
        """The Karras sigma grid of this schedule; see :func:`karras_sigmas`."""
        return karras_sigmas(n, self.sigma_min, self.sigma_max, self.rho, append_zero=append_zero)


def _rho_roots(smin: float, smax: float, rho: float) -> tuple[float, float]:
    """(sigma_min^(1/rho), sigma_max^(1/rho)); ValueError naming rho where they leave float64
    (rho too small for the range: the grid would be NaN)."""
    try:
        lo, hi = smin ** (1.0 / rho), smax ** (1.0 / rho)
    except OverflowError:
        lo = hi = math.inf
    if not (math.isfinite(hi) and hi > lo > 0.0):
        raise ValueError(
            f"rho must be large enough that sigma_min^(1/rho) and sigma_max^(1/rho) are distinct "
            f"positive float64 numbers (sigma_min={_r(smin)}, sigma_max={_r(smax)}), got {_r(rho)}"
        )
    return lo, hi


def karras_sigmas(
    n: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    *,
    append_zero: bool = True,
) -> np.ndarray:
    """Karras et al. 2022 (arXiv:2206.00364) eq. 5 noise levels, decreasing:
    sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i < n,
    followed by sigma_n = 0 when ``append_zero``. Returns shape (n + append_zero,), float64.

    Example: ``karras_sigmas(18)[0] == 80.0``.
    """
    n = positive_int(n, "n", minimum=2)
    smin = positive_scalar(sigma_min, "sigma_min")
    smax = positive_scalar(sigma_max, "sigma_max")
    rho = positive_scalar(rho, "rho")
    if smax <= smin:
        raise ValueError(f"sigma_max must be > sigma_min={_r(smin)}, got {_r(smax)}")
    append_zero = boolean(append_zero, "append_zero")
    i = np.arange(n, dtype=np.float64)
    lo, hi = _rho_roots(smin, smax, rho)
    sig = (hi + i / (n - 1) * (lo - hi)) ** rho
    sig[0], sig[-1] = smax, smin
    return np.append(sig, 0.0) if append_zero else sig


# ====================================================================== sub-VP and flow


class SubVP(Schedule):
    """sub-VP SDE (Song et al. 2021, arXiv:2011.13456, eq. 29): alpha = exp(-B/2),
    sigma = 1 - exp(-B) = -expm1(-B), B(t) = beta_min t + (beta_max - beta_min) t^2/2;
    f = -beta/2, g^2 = beta (1 - exp(-2B)).
    """

    kind = "subvp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = positive_scalar(beta_min, "beta_min")
        self.beta_max = positive_scalar(beta_max, "beta_max")
        if self.beta_max <= self.beta_min:
            raise ValueError(
                f"beta_max must be > beta_min={_r(self.beta_min)}, got {_r(self.beta_max)}"
            )

    def __repr__(self):
        return f"SubVP(beta_min={_r(self.beta_min)}, beta_max={_r(self.beta_max)})"

    def _beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _B(self, t):
        return t * (self.beta_min + 0.5 * (self.beta_max - self.beta_min) * t)

    def _alpha(self, t):
        return np.exp(-0.5 * self._B(t))

    def _sigma(self, t):
        return -np.expm1(-self._B(t))

    def _log_alpha(self, t):
        return -0.5 * self._B(t)

    def _log_sigma(self, t):
        return log1mexp(self._B(t))

    def _log_snr(self, t):
        B = self._B(t)
        return -B - 2.0 * log1mexp(B)

    def _log_snr_diff(self, s, t):
        # lambda = -B - 2 log(1 - e^-B): the ratio (1 - e^-B_t)/(1 - e^-B_s) is
        # 1 - expm1(-dB)/expm1(B_s); both terms have the sign of dB, no cancellation
        dB = _beta_linear_dB(self, s, t)
        out = -dB - 2.0 * np.log1p(-np.expm1(-dB) / np.expm1(self._B(s)))
        # dB = B_s = 0 (s, t within float64 underflow of 0: 0/0): lambda ~ -2 log B ~ -2 log t
        return np.where(dB == 0.0, -2.0 * np.log1p((t - s) / s), out)

    def _d_alpha(self, t):
        return -0.5 * self._beta(t) * self._alpha(t)

    def _d_sigma(self, t):
        return self._beta(t) * np.exp(-self._B(t))

    def _d_log_snr(self, t):
        # -beta (1 + 2/expm1(B)) = -beta coth(B/2)
        return -self._beta(t) * (1.0 + 2.0 / np.expm1(self._B(t)))

    def _f(self, t):
        return -0.5 * self._beta(t)

    def _g_squared(self, t):
        return -self._beta(t) * np.expm1(-2.0 * self._B(t))

    def _t_from_log_snr(self, lam):
        # e^lambda = u/(1-u)^2 with u = e^{-B}; solve the quadratic in the stable root form.
        neg = lam < 0
        ln = np.where(neg, lam, -1.0)
        el = np.exp(ln)
        B_neg = -math.log(2.0) - ln + np.log(2.0 * el + 1.0 + np.sqrt(4.0 * el + 1.0))
        lp = np.where(neg, 1.0, lam)
        m = np.exp(-0.5 * lp)
        root = m * np.sqrt(4.0 + m * m)
        r = (m * m + root) / (2.0 + m * m + root)  # 1 - u
        B_pos = -np.log1p(-r)
        B = np.where(neg, B_neg, B_pos)
        d = self.beta_max - self.beta_min
        t0 = 2.0 * B / (self.beta_min + np.sqrt(self.beta_min**2 + 2.0 * d * B))
        return self._newton(np.clip(t0, 0.0, 1.0), lam)


class Flow(Schedule):
    """Flow matching / rectified flow path with the conditional-OT interpolant (Lipman et al.
    2023, arXiv:2210.02747, eq. 20; Liu et al. 2023, arXiv:2209.03003): alpha = 1 - t,
    sigma = t. lambda = 2 log((1 - t)/t), t(lambda) = sigmoid(-lambda/2),
    f = -1/(1 - t), g^2 = 2t/(1 - t). The flow velocity is u = d alpha x0 + d sigma eps = eps - x0.
    """

    kind = "flow"

    def __repr__(self):
        return "Flow()"

    def _alpha(self, t):
        return 1.0 - t

    def _sigma(self, t):
        return t.copy()

    def _log_alpha(self, t):
        return np.log1p(-t)

    def _log_sigma(self, t):
        return np.log(t)

    def _log_snr(self, t):
        return 2.0 * (np.log1p(-t) - np.log(t))

    def _log_snr_diff(self, s, t):
        # 2 (log((1 - t)/(1 - s)) - log(t/s)), both differences known exactly: -(t - s), t - s
        return 2.0 * (log_ratio(1.0 - t, 1.0 - s, -(t - s)) - np.log1p((t - s) / s))

    def _d_alpha(self, t):
        return np.full_like(t, -1.0)

    def _d_sigma(self, t):
        return np.ones_like(t)

    def _d_log_snr(self, t):
        return -2.0 / (t * (1.0 - t))

    def _f(self, t):
        return -1.0 / (1.0 - t)

    def _g_squared(self, t):
        return 2.0 * t / (1.0 - t)

    def _t_from_log_snr(self, lam):
        return expit(-0.5 * lam)


# ====================================================================== discrete DDPM


class DiscreteSchedule(Schedule):
    """Discrete DDPM schedule from betas beta_1..beta_T (Ho et al. 2020, arXiv:2006.11239, eq. 2
    and 4): alpha_n = 1 - beta_n, alpha_bar_n = prod_{i<=n} alpha_i, computed as
    exp(cumsum(log1p(-beta))). Index n in {0..T} maps to t = n/T (alpha_bar_0 = 1).

    Continuous-time view (module docstring): log alpha_bar linear in t on each ((n-1)/T, n/T],
    i.e. the VP SDE with piecewise-constant beta(t) = -T log1p(-beta_n); derivatives at a grid
    node are the left limits (the step that produced x_n).

    Valid betas lie in (0, 1); beta_T = 1 exactly is allowed (zero terminal SNR,
    Lin et al. 2024, arXiv:2305.08891), which makes alpha = 0 on ((T-1)/T, 1].

    Build with :meth:`linear`, :meth:`scaled_linear`, :meth:`cosine`, :meth:`sigmoid`,
    :meth:`log_snr_linear`, :meth:`from_alpha_bar`, or pass ``betas``.

    Example: ``DiscreteSchedule.linear(1000).alpha_bar[1000]`` is about 4.04e-5.
    """

    kind = "vp"

    def __init__(self, betas, *, name: str = "custom"):
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__} {_r(name)}")
        arr = as_float(betas, "betas")
        if arr.ndim != 1 or arr.size < 1:
            raise ValueError(
                f"betas must be a 1-D array with at least one entry, got shape {arr.shape}"
            )
        arr = finite(arr, "betas")
        last_one = arr[-1] == 1.0
        inner = arr[:-1] if last_one else arr
        bad = (inner <= 0.0) | (inner >= 1.0)
        if bad.any() or arr[-1] <= 0.0 or arr[-1] > 1.0:
            idx = int(np.flatnonzero(bad)[0]) if bad.any() else arr.size - 1
            raise ValueError(
                f"betas must lie in (0, 1) (beta_T = 1 allowed for zero terminal SNR), "
                f"got betas[{idx}] = {_r(arr[idx])}"
            )
        self.name = name
        self.T = int(arr.size)
        self.betas = arr.copy()
        self.betas.setflags(write=False)
        with np.errstate(divide="ignore"):
            self._ell = np.log1p(-self.betas)  # log alpha_n, -inf for beta = 1
        hi, lo = _compensated_cumsum(self._ell)
        log_ab = np.concatenate([[0.0], hi])
        self._log_ab_lo = np.concatenate([[0.0], lo])  # log_alpha_bar + this: the exact prefix
        self.log_alpha_bar = log_ab
        self.log_alpha_bar.setflags(write=False)
        self._lam_grid = None  # lambda_n for n = 0..T, computed on first inversion

    # ------------------------------------------------------------------ construction
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        """Linear betas, beta_n = linspace(beta_start, beta_end, T) (Ho et al. 2020, Sec. 4)."""
        T = positive_int(T, "T")
        b0, b1 = _unit_beta(beta_start, "beta_start"), _unit_beta(beta_end, "beta_end")
        return cls(np.linspace(b0, b1, T), name=f"linear(T={T}, {_r(b0)}..{_r(b1)})")

    @classmethod
    def scaled_linear(cls, T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012):
        """Latent-diffusion betas, linspace(sqrt(beta_start), sqrt(beta_end), T)^2 (Rombach et
        al. 2022; diffusers "scaled_linear")."""
        T = positive_int(T, "T")
        b0, b1 = _unit_beta(beta_start, "beta_start"), _unit_beta(beta_end, "beta_end")
        return cls(
            np.linspace(math.sqrt(b0), math.sqrt(b1), T) ** 2,
            name=f"scaled_linear(T={T}, {_r(b0)}..{_r(b1)})",
        )

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        """Cosine betas (Nichol & Dhariwal 2021, arXiv:2102.09672, eq. 17):
        beta_n = min(1 - alpha_bar(n/T)/alpha_bar((n-1)/T), max_beta),
        alpha_bar(t) = cos^2((t + s)/(1 + s) pi/2). The ratio is formed without cancellation as
        sin(phi_n - phi_{n-1}) sin(phi_n + phi_{n-1}) / cos^2(phi_{n-1})."""
        T = positive_int(T, "T")
        s = finite_scalar(s, "s")
        if s < 0:
            raise ValueError(f"s must be >= 0, got {_r(s)}")
        max_beta = finite_scalar(max_beta, "max_beta")
        if not 0.0 < max_beta <= 1.0:
            raise ValueError(f"max_beta must lie in (0, 1], got {_r(max_beta)}")
        n = np.arange(1, T + 1, dtype=np.float64)
        k = _HALF_PI / (1.0 + s)
        # integer numerators keep 1 - (n-1)/T exact near the end of the schedule
        cos_m = np.sin(k * ((T - n + 1) / T))  # cos(phi_{n-1}) = sin(pi/2 - phi_{n-1})
        # sin(phi_n + phi_{n-1}) = sin(psi_n + psi_{n-1}) with psi = pi/2 - phi: take whichever
        # sum is below pi/2 so that the sine is not evaluated next to pi
        sum_phi = k * ((2 * n - 1) / T + 2 * s)
        sum_psi = k * ((2 * T - 2 * n + 1) / T)
        sin_sum = np.where(sum_phi <= _HALF_PI, np.sin(sum_phi), np.sin(sum_psi))
        betas = np.sin(k / T) * sin_sum / cos_m**2
        return cls(np.minimum(betas, max_beta), name=f"cosine(T={T}, s={_r(s)})")

    @classmethod
    def sigmoid(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        """GeoDiff sigmoid betas (Xu et al. 2022, arXiv:2203.02923; diffusers "sigmoid"):
        beta_n = sigmoid(linspace(-6, 6, T)) (beta_end - beta_start) + beta_start.
        Not the Jabri/Chen sigmoid schedule of the same name."""
        T = positive_int(T, "T")
        b0, b1 = _unit_beta(beta_start, "beta_start"), _unit_beta(beta_end, "beta_end")
        return cls(
            expit(np.linspace(-6.0, 6.0, T)) * (b1 - b0) + b0,
            name=f"sigmoid(T={T}, {_r(b0)}..{_r(b1)})",
        )

    @classmethod
    def log_snr_linear(cls, T: int = 1000, log_snr_max: float = 10.0, log_snr_min: float = -10.0):
        """Log-SNR-linear ("logarithmic") schedule: lambda_n linear in n from log_snr_max (n=1) to
        log_snr_min (n=T); alpha_bar_n = sigmoid(lambda_n) (Kingma et al. 2021, VDM, Sec. 5;
        DPM-Solver's logSNR grid, Lu et al. 2022, arXiv:2206.00927, Sec. 3.3)."""
        T = positive_int(T, "T")
        hi, lo = (
            finite_scalar(log_snr_max, "log_snr_max"),
            finite_scalar(log_snr_min, "log_snr_min"),
        )
        if not lo < hi:
            raise ValueError(f"log_snr_min must be < log_snr_max={_r(hi)}, got {_r(lo)}")
        lam = np.linspace(hi, lo, T)
        log_ab = np.concatenate([[0.0], log_sigmoid(lam)])
        betas = -np.expm1(np.diff(log_ab))
        if betas[0] <= 0.0:
            raise ValueError(
                f"log_snr_max must leave beta_1 = sigmoid(-log_snr_max) > 0 in float64 (at most "
                f"about 744), got {_r(hi)}"
            )
        if (betas[:-1] >= 1.0).any() or (betas <= 0.0).any():
            raise ValueError(
                f"log_snr_min must keep every beta_n = 1 - alpha_bar_n/alpha_bar_(n-1) inside "
                f"(0, 1) in float64 with T={T}, log_snr_max={_r(hi)} (log-SNR steps below ~36, "
                f"alpha_bar_T > 0), got {_r(lo)}"
            )
        return cls(betas, name=f"log_snr_linear(T={T}, {_r(hi)}..{_r(lo)})")

    @classmethod
    def from_alpha_bar(cls, alpha_bar, *, name: str = "custom"):
        """From alpha_bar_1..alpha_bar_T (strictly decreasing, in [0, 1), only the last may be 0):
        beta_n = 1 - alpha_bar_n/alpha_bar_{n-1} computed as -expm1(log ratio)."""
        ab = finite(alpha_bar, "alpha_bar")
        if ab.ndim != 1 or ab.size < 1:
            raise ValueError(f"alpha_bar must be 1-D and non-empty, got shape {ab.shape}")
        if (ab[:-1] <= 0).any() or ab[-1] < 0 or (ab >= 1).any():
            bad = np.flatnonzero((ab >= 1) | (ab < 0) | np.append(ab[:-1] <= 0, False))[0]
            raise ValueError(
                f"alpha_bar must lie in (0, 1) (the last entry may be 0), got alpha_bar[{bad}] = "
                f"{_r(ab[bad])}"
            )
        full = np.concatenate([[1.0], ab])
        if not (np.diff(full) < 0).all():
            i = int(np.flatnonzero(np.diff(full) >= 0)[0])
            raise ValueError(
                f"alpha_bar must be strictly decreasing, got alpha_bar[{i}] = {_r(full[i + 1])} "
                f"after "
                f"{_r(full[i])}"
            )
        with np.errstate(divide="ignore", invalid="ignore"):
            log_ab = np.log(full)
            betas = -np.expm1(np.diff(log_ab))
        betas[-1] = 1.0 if ab[-1] == 0 else betas[-1]
        return cls(betas, name=name)

    def __repr__(self):
        return (
            f"DiscreteSchedule.{self.name}"
            if "(" in self.name
            else f"DiscreteSchedule({self.name})"
        )

    # ------------------------------------------------------------------ index access
    @property
    def alphas(self) -> np.ndarray:
        """alpha_n = 1 - beta_n for n = 1..T (array index n - 1)."""
        return 1.0 - self.betas

    @property
    def alpha_bar(self) -> np.ndarray:
        """alpha_bar_n for n = 0..T (array index n), alpha_bar_0 = 1."""
        return np.exp(self.log_alpha_bar)

    def _n(self, n) -> np.ndarray:
        if isinstance(n, (str, bytes)):
            raise TypeError(f"n must be an integer index, got str {_r(n)}")
        arr = np.asarray(n)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"n must be an integer index, got {_show(n)} of dtype {arr.dtype}")
        bad = (arr < 0) | (arr > self.T)
        if bad.any():
            raise ValueError(f"n must lie in [0, T={self.T}], got {_r(arr[bad].ravel()[0])}")
        return arr

    def t_of(self, n):
        """t = n / T, the documented index-to-time mapping."""
        n = self._n(n)
        return scalar_out(n / self.T, n)

    def index_of(self, t):
        """n = round(T t) for t on the grid (|T t - n| <= 1e-9 T), else ValueError."""
        t = self._t(t)
        n = np.rint(t * self.T)
        off = np.abs(t * self.T - n) > 1e-9 * self.T
        if off.any():
            raise ValueError(
                f"t must be on the grid n/T with T={self.T}, got {_r(t[off].ravel()[0])}"
            )
        n = n.astype(np.int64)
        return int(n) if n.ndim == 0 else n

    def log_snr_at(self, n):
        """lambda_n = log(alpha_bar_n / (1 - alpha_bar_n)) at integer n (+inf at n = 0)."""
        n = self._n(n)
        L = self.log_alpha_bar[n]
        with np.errstate(divide="ignore", invalid="ignore"):
            out = L - log1mexp(-L)
        return scalar_out(out, n)

    # ------------------------------------------------------------------ continuous embedding
    def _position(self, t):
        """(n, frac, rest, snap): t T = n - 1 + frac on interval n, rest = 1 - frac, each
        accurate to an ulp of itself; snap where t is a node."""
        u, u_lo = _two_prod(t, float(self.T))  # u + u_lo = t T exactly
        # t within a few ulps of a node n/T is the node itself (left-limit convention), so that
        # t = n / T computed in floating point lands on interval n, not on n + 1 with frac ~ 1e-16
        node = np.rint(u)
        snap = np.abs(u - node) <= 4.0 * np.finfo(float).eps * np.maximum(u, 1.0)
        u = np.where(snap, node, u)
        n = np.clip(np.ceil(u), 1, self.T).astype(np.int64)
        # u - (n - 1) and n - u are exact (Sterbenz); adding u_lo keeps the fraction accurate to
        # an ulp of itself, which matters where the last cosine step makes alpha steep in t
        frac = np.where(snap, u - (n - 1), (u - (n - 1)) + u_lo)
        rest = np.where(snap, n - u, (n - u) - u_lo)
        return n, frac, rest, snap

    def _interval(self, t):
        n, frac, _, _ = self._position(t)
        ell = self._ell[n - 1]
        with np.errstate(invalid="ignore"):
            L = self.log_alpha_bar[n - 1] + np.where(frac == 0.0, 0.0, frac * ell)
        return L, ell

    def _alpha(self, t):
        return np.exp(0.5 * self._interval(t)[0])

    def _sigma(self, t):
        return np.sqrt(-np.expm1(self._interval(t)[0])) + 0.0  # never -0.0

    def _log_alpha(self, t):
        return 0.5 * self._interval(t)[0]

    def _log_sigma(self, t):
        return 0.5 * log1mexp(-self._interval(t)[0])

    def _log_snr(self, t):
        L = self._interval(t)[0]
        return L - log1mexp(-L)

    def _log_snr_diff(self, s, t):
        # lambda = L - log(1 - e^L): lambda_t - lambda_s = dL - log1p(-expm1(dL)/expm1(-L_s)),
        # both terms <= 0. dL = L_t - L_s from the positions: (t - s) T ell inside one interval;
        # across intervals the tail of s's, the whole steps between (a difference of the
        # double-double prefix sums, accurate relative to itself) and the head of t's
        n_s, _, rest_s, snap_s = self._position(s)
        n_t, frac_t, _, snap_t = self._position(t)
        ell_s, ell_t = self._ell[n_s - 1], self._ell[n_t - 1]
        same = n_s == n_t
        # a snapped end sits on a node: t's fraction is 1, s's rest is 0
        du = np.where(snap_s | snap_t, (frac_t - 1.0) + rest_s, (t - s) * self.T)
        inside = np.where(du == 0.0, 0.0, du * ell_t)
        a, b = np.clip(n_t - 1, 0, self.T), np.clip(n_s, 0, self.T)
        lab, lo = self.log_alpha_bar, self._log_ab_lo
        middle = np.where(a == b, 0.0, (lab[a] - lab[b]) + (lo[a] - lo[b]))
        tail = np.where(rest_s == 0.0, 0.0, rest_s * ell_s)
        head = np.where(frac_t == 0.0, 0.0, frac_t * ell_t)
        dL = np.where(same, inside, tail + middle + head)
        L_s = self._interval(s)[0]
        out = dL - np.log1p(-np.expm1(dL) / (np.expm1(-L_s) + 0.0))  # +0.0: never -0.0
        # dL = 0: both ends snap to one node (node 0 included, where 0/0 would be formed)
        return np.where(dL == 0.0, 0.0, out)

    def _d_alpha(self, t):
        L, ell = self._interval(t)
        a = np.exp(0.5 * L)
        return np.where(a == 0.0, 0.0, 0.5 * self.T * ell * a)

    def _d_sigma(self, t):
        L, ell = self._interval(t)
        e = np.exp(L)
        return np.where(e == 0.0, 0.0, -e * self.T * ell / (2.0 * np.sqrt(-np.expm1(L))))

    def _d_log_snr(self, t):
        L, ell = self._interval(t)
        return self.T * ell / (-np.expm1(L))

    def _f(self, t):
        return 0.5 * self.T * self._interval(t)[1]

    def _g_squared(self, t):
        return -self.T * self._interval(t)[1]

    def _t_from_log_snr(self, lam):
        if self._lam_grid is None:  # O(T): computed once, not per call (T can be 10^6)
            self._lam_grid = self.log_snr_at(np.arange(self.T + 1))  # decreasing, +inf first
            self._neg_lam_grid = -self._lam_grid  # increasing, for searchsorted
        lam_grid = self._lam_grid
        if np.isneginf(self._ell[-1]):
            gap = np.isfinite(lam) & (lam < lam_grid[-2])
            if gap.any():
                edge = _r(lam_grid[-2])
                raise ValueError(
                    f"log_snr must be -inf or lie in [{edge}, inf] for {_r(self)}: with zero "
                    f"terminal SNR lambda jumps from lambda_(T-1) = {edge} to -inf, so (-inf, "
                    f"{edge}) is not attained; got {_r(lam[gap].ravel()[0])}"
                )
        # number of grid points with lambda_n >= lam gives the interval (n-1, n]
        n = np.searchsorted(self._neg_lam_grid, -lam, side="right")
        n = np.clip(n, 1, self.T)
        target = log_sigmoid(lam)  # log alpha_bar at the solution
        ell = self._ell[n - 1]
        frac = np.where(np.isfinite(ell), (target - self.log_alpha_bar[n - 1]) / ell, 0.0)
        return (n - 1 + np.clip(frac, 0.0, 1.0)) / self.T


def _two_prod(a, b: float):
    """Error-free product (Dekker 1971): returns p, e with p = fl(a b) and p + e = a b exactly
    (for |a b| far from overflow)."""
    split = 134217729.0  # 2**27 + 1
    p = a * b
    ca, cb = split * a, split * b
    a_hi = ca - (ca - a)
    a_lo = a - a_hi
    b_hi = cb - (cb - b)
    b_lo = b - b_hi
    e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return p, e


def _compensated_cumsum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prefix sums with Neumaier's compensated summation (Neumaier 1974) as a double-double
    (hi, lo): hi is each prefix rounded (about one ulp instead of the O(n) ulps of a running float
    sum) and hi + lo the prefix to about eps^2 of the sum of |x|, so that a difference of two
    prefixes, (hi_a - hi_b) + (lo_a - lo_b), is accurate relative to itself. -inf entries
    propagate to -inf (lo 0)."""
    hi, lo = np.empty_like(x), np.zeros_like(x)
    s = 0.0
    c = 0.0
    for i, v in enumerate(x.tolist()):
        if not math.isfinite(v) or not math.isfinite(s):
            s, c = s + v, 0.0
        else:
            t = s + v
            c += (s - t) + v if abs(s) >= abs(v) else (v - t) + s
            s = t
        hi[i] = s + c
        if math.isfinite(hi[i]):
            lo[i] = (s - hi[i]) + c  # exact: |s| >= |c| (Fast2Sum, Dekker 1971)
    return hi, lo


def _unit_beta(value, name: str) -> float:
    """A beta in (0, 1] (1 only makes sense as the last one: zero terminal SNR)."""
    v = positive_scalar(value, name)
    if v > 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {_r(v)}")
    return v


def rescale_zero_terminal_snr(schedule: DiscreteSchedule) -> DiscreteSchedule:
    """Rescale a discrete schedule to zero terminal SNR (Lin et al. 2024, arXiv:2305.08891,
    Algorithm 1): sqrt(alpha_bar) is shifted so that sqrt(alpha_bar_T) = 0 and scaled so that
    sqrt(alpha_bar_1) is unchanged. The result has beta_T = 1 (alpha_bar_T = 0, lambda_T = -inf).
    """
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(f"schedule must be a DiscreteSchedule, got {type(schedule).__name__}")
    if schedule.T < 2:
        raise ValueError(f"schedule.T must be >= 2 for rescaling, got {schedule.T}")
    a = np.exp(0.5 * schedule.log_alpha_bar[1:])  # sqrt(alpha_bar_n), n = 1..T
    a0, aT = a[0], a[-1]
    if aT == 0.0:
        return DiscreteSchedule(schedule.betas, name=schedule.name)
    scaled = (a - aT) * (a0 / (a0 - aT))
    scaled[0], scaled[-1] = a0, 0.0
    with np.errstate(divide="ignore"):
        log_ab = np.concatenate([[0.0], 2.0 * np.log(scaled)])
        betas = -np.expm1(np.diff(log_ab))
    betas[-1] = 1.0
    return DiscreteSchedule(betas, name=f"zero_terminal_snr({schedule.name})")


SCHEDULES = {
    "vp-linear": VPLinear,
    "vp-cosine": VPCosine,
    "ve": VEGeometric,
    "edm": EDM,
    "subvp": SubVP,
    "flow": Flow,
    "ddpm-linear": DiscreteSchedule.linear,
    "ddpm-scaled-linear": DiscreteSchedule.scaled_linear,
    "ddpm-cosine": DiscreteSchedule.cosine,
    "ddpm-sigmoid": DiscreteSchedule.sigmoid,
    "ddpm-log-snr-linear": DiscreteSchedule.log_snr_linear,
    "ddpm-linear-zero-snr": lambda: rescale_zero_terminal_snr(DiscreteSchedule.linear()),
}


def get_schedule(name: str) -> Schedule:
    """A named schedule with its default parameters: one of ``SCHEDULES``."""
    if not isinstance(name, str) or name not in SCHEDULES:
        raise ValueError(f"name must be one of {sorted(SCHEDULES)}, got {_r(name)}")
    return SCHEDULES[name]()
