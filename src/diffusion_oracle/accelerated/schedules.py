"""Noise schedules in torch: alpha, sigma, log-SNR, their t-derivatives and the SDE coefficients
f, g^2, for tensors on any device. Independent code written from the formulas (it never calls
the reference); the tests compare the two.

Build one from a reference schedule's parameters with :func:`torch_schedule`, or directly
(``TorchVPLinear(0.1, 20.0)``). Formulas and citations are the reference's (README glossary):

- VP linear: B = beta_min t + (beta_max - beta_min) t^2/2, alpha = exp(-B/2), sigma^2 = -expm1(-B)
  (Song et al. 2021, eq. 33); sub-VP: sigma = -expm1(-B) (eq. 34).
- cosine: alpha = sin(k (1 - t))/cos(phi0), sigma^2 = sin(k t) sin(k (t + 2s))/cos^2(phi0),
  k = (pi/2)/(1 + s) (Nichol & Dhariwal 2021, eq. 17, written without cancellation).
- VE geometric: sigma = sigma_min (sigma_max/sigma_min)^t; EDM: sigma = (a + t D)^rho (Karras
  et al. 2022, eq. 5); flow: alpha = 1 - t, sigma = t (Lipman et al. 2023).
- discrete DDPM: log alpha_bar linear in t on each ((n-1)/T, n/T] (Ho et al. 2020, eq. 4), left
  limits at the nodes.

f = d log alpha/dt and g^2 = -sigma^2 d lambda/dt are written per schedule (Kingma et al. 2021,
App. A), never through a generic chain rule that would form 0 * inf at the end points.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._common import (
    _r,
    as_real,
    as_tensor,
    check_interval,
    finite_real,
    finite_scalar,
    int_arg,
    log1mexp,
    positive_scalar,
)

__all__ = [
    "TorchSchedule",
    "TorchVPLinear",
    "TorchSubVP",
    "TorchVPCosine",
    "TorchVEGeometric",
    "TorchEDM",
    "TorchFlow",
    "TorchDiscrete",
    "torch_schedule",
]


def _log_quotient(num, den, diff):
    """log(num/den) given diff = num - den without cancellation: log1p(diff/den) while the
    quotient is within a half of 1, else the log of the quotient (then >= log 1.5 in size)."""
    r = diff / den
    near = r.abs() < 0.5
    return torch.where(near, torch.log1p(torch.where(near, r, 0.0)), torch.log(num / den))


class TorchSchedule:
    """A Gaussian path x_t = alpha(t) x_0 + sigma(t) eps on t in [0, 1] (t = 0 is data).

    Each public method takes ``t`` (a tensor or a number; its device and dtype are kept, a number
    becomes float64 on the CPU), checks it lies in [0, 1] and returns a tensor of its shape.
    Subclasses implement ``_log_alpha``, ``_log_sigma``, ``_d_log_alpha``, ``_d_log_sigma``
    (derivatives of the logs) and may override the others where a direct form is more accurate.
    """

    kind = ""

    def _t(self, t, name: str = "t") -> torch.Tensor:
        return self._check_t(t, name)

    @staticmethod
    def _check_t(t, name):
        if not isinstance(t, torch.Tensor):
            t = as_tensor(t, name, device="cpu", dtype=torch.float64)
        elif not t.is_floating_point():
            t = as_tensor(t, name, device=t.device, dtype=torch.float64)  # bool/complex: TypeError
        return check_interval(t, name, 0.0, 1.0)

    def alpha(self, t):
        """alpha(t)."""
        return self._alpha(self._t(t))

    def sigma(self, t):
        """sigma(t)."""
        return self._sigma(self._t(t))

    def log_snr(self, t):
        """lambda(t) = log(alpha^2/sigma^2) (Kingma et al. 2021, eq. 3)."""
        return self._log_snr(self._t(t))

    def log_snr_diff(self, s, t):
        """lambda(t) - lambda(s) from t - s by the schedule's difference identity, accurate to a
        few ulps of the difference also for s next to t (Kingma et al. 2021, eq. 32 needs it
        through expm1; the reference's method of the same name, written separately). Either
        order; 0 where s = t."""
        ss, tt = self._check_t(s, "s"), self._t(t)
        try:
            ss, tt = torch.broadcast_tensors(ss, tt)
        except RuntimeError as err:
            raise ValueError(f"s and t must broadcast together, got shapes {tuple(ss.shape)} and "
                             f"{tuple(tt.shape)}") from err  # fmt: skip
        tt = tt.to(ss.device, ss.dtype) if tt.dtype != ss.dtype else tt
        lo, hi = torch.minimum(ss, tt), torch.maximum(ss, tt)
        apart = lo < hi
        lo_, hi_ = torch.where(apart, lo, 0.0), torch.where(apart, hi, 1.0)
        d = self._log_snr_diff(lo_, hi_)
        # the earlier time at the data end (lambda = +inf), the later not: -inf; both there in
        # float64 with no answer from the identity (a discrete t snapped to node 0): 0
        inf_lo, inf_hi = torch.isposinf(self._log_snr(lo_)), torch.isposinf(self._log_snr(hi_))
        d = torch.where(inf_lo & ~inf_hi, -torch.inf, d)
        d = torch.where(inf_lo & inf_hi & torch.isnan(d), 0.0, d)
        d = torch.where(ss <= tt, d, -d)
        return torch.where(apart, d, torch.zeros_like(d))

    def _log_snr_diff(self, s, t):
        return self._log_snr(t) - self._log_snr(s)

    def d_alpha(self, t):
        """d alpha/dt."""
        return self._d_alpha(self._t(t))

    def d_sigma(self, t):
        """d sigma/dt."""
        return self._d_sigma(self._t(t))

    def d_log_snr(self, t):
        """d lambda/dt."""
        return self._d_log_snr(self._t(t))

    def f(self, t):
        """Drift f = d log alpha/dt of dx = f x dt + g dw (Song et al. 2021, eq. 5)."""
        return self._f(self._t(t))

    def g_squared(self, t):
        """g^2 = d sigma^2/dt - 2 f sigma^2 = -sigma^2 d lambda/dt (Kingma et al. 2021, App. A)."""
        return self._g_squared(self._t(t))

    def t_from_log_snr(self, log_snr, *, iterations: int = 64):
        """The inverse t(lambda) of the decreasing lambda(t), by bisection on [0, 1] in float64
        (``iterations`` halvings: 64 reach the spacing of doubles near 1). One schedule-agnostic
        method, independent of the reference's per-schedule closed forms and Newton steps; the
        tests compare the two. lambda outside [lambda(1), lambda(0)] is a ValueError."""
        iterations = int_arg(iterations, "iterations")
        if isinstance(log_snr, torch.Tensor):
            lam = as_tensor(log_snr, "log_snr", device=log_snr.device, dtype=torch.float64)
        else:
            lam = as_tensor(log_snr, "log_snr", device="cpu", dtype=torch.float64)
        if bool(torch.isnan(lam).any()):
            raise ValueError("log_snr must not be NaN, got nan")
        ends = self._log_snr(torch.tensor([1.0, 0.0], dtype=torch.float64, device=lam.device))
        lo_l, hi_l = float(ends[0]), float(ends[1])
        bad = (lam < lo_l) | (lam > hi_l)
        if bool(bad.any()):
            raise ValueError(
                f"log_snr must lie in [{lo_l!r}, {hi_l!r}], got {lam[bad].reshape(-1)[0].item()!r}"
            )
        self._check_attained(lam)
        lo = torch.zeros_like(lam)  # lambda(lo) >= lam
        hi = torch.ones_like(lam)  # lambda(hi) <= lam
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            above = self._log_snr(mid) >= lam
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def _check_attained(self, lam):
        """ValueError for log-SNR values inside [lambda(1), lambda(0)] that lambda(t) skips (none
        for a continuous lambda; see :class:`TorchDiscrete`)."""

    # generic forms from the logs; subclasses override where a direct form is better
    def _alpha(self, t):
        return torch.exp(self._log_alpha(t))

    def _sigma(self, t):
        return torch.exp(self._log_sigma(t))

    def _log_snr(self, t):
        return 2.0 * (self._log_alpha(t) - self._log_sigma(t))

    def _d_alpha(self, t):
        return self._alpha(t) * self._d_log_alpha(t)

    def _d_sigma(self, t):
        return self._sigma(t) * self._d_log_sigma(t)

    def _d_log_snr(self, t):
        return 2.0 * (self._d_log_alpha(t) - self._d_log_sigma(t))

    def _f(self, t):
        return self._d_log_alpha(t)

    def _g_squared(self, t):
        return -(self._sigma(t) ** 2) * self._d_log_snr(t)


class _BetaLinear(TorchSchedule):
    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = positive_scalar(beta_min, "beta_min")
        self.beta_max = positive_scalar(beta_max, "beta_max")
        if self.beta_max <= self.beta_min:
            raise ValueError(
                f"beta_max must be > beta_min={_r(self.beta_min)}, got {_r(self.beta_max)}"
            )

    def _beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _B(self, t):
        return t * (self.beta_min + 0.5 * (self.beta_max - self.beta_min) * t)

    def _log_alpha(self, t):
        return -0.5 * self._B(t)

    def _dB(self, s, t):
        # B(t) - B(s) factored through t - s
        return (t - s) * (self.beta_min + 0.5 * (self.beta_max - self.beta_min) * (t + s))

    def _d_log_alpha(self, t):
        return -0.5 * self._beta(t)

    def _f(self, t):
        return -0.5 * self._beta(t)


class TorchVPLinear(_BetaLinear):
    """VP SDE with linear beta(t); sigma = sqrt(-expm1(-B)) (module docstring)."""

    kind = "vp"

    def _sigma(self, t):
        return torch.sqrt(-torch.expm1(-self._B(t)))

    def _log_sigma(self, t):
        return 0.5 * log1mexp(self._B(t))

    def _log_snr(self, t):
        B = self._B(t)
        return -B - log1mexp(B)

    def _log_snr_diff(self, s, t):
        # lambda = -B - log(1 - e^{-B}): (1 - e^{-B_t})/(1 - e^{-B_s}) = 1 - expm1(-dB)/expm1(B_s)
        # (no overflow for large dB, unlike expm1(dB))
        dB = self._dB(s, t)
        out = -dB - torch.log1p(-torch.expm1(-dB) / torch.expm1(self._B(s)))
        # dB = B_s = 0 (both ends within float64 underflow of 0): lambda ~ -log t, no 0/0
        return torch.where(dB == 0, -torch.log1p((t - s) / s), out)

    def _d_sigma(self, t):
        B = self._B(t)
        return self._beta(t) * torch.exp(-B) / (2.0 * torch.sqrt(-torch.expm1(-B)))

    def _d_log_snr(self, t):
        return self._beta(t) / torch.expm1(-self._B(t))

    def _g_squared(self, t):
        return self._beta(t)


class TorchSubVP(_BetaLinear):
    """Sub-VP SDE: sigma = -expm1(-B) (Song et al. 2021, eq. 34)."""

    kind = "subvp"

    def _sigma(self, t):
        return -torch.expm1(-self._B(t))

    def _log_sigma(self, t):
        return log1mexp(self._B(t))

    def _log_snr(self, t):
        B = self._B(t)
        return -B - 2.0 * log1mexp(B)

    def _log_snr_diff(self, s, t):
        # lambda = -B - 2 log(-expm1(-B)); (1 - e^{-B_t})/(1 - e^{-B_s}) = 1 + e^{-B_s}
        # (1 - e^{-dB}) / (1 - e^{-B_s}) = 1 - expm1(-dB)/expm1(B_s)
        dB = self._dB(s, t)
        out = -dB - 2.0 * torch.log1p(-torch.expm1(-dB) / torch.expm1(self._B(s)))
        # dB = B_s = 0 (both ends within float64 underflow of 0): lambda ~ -2 log t, no 0/0
        return torch.where(dB == 0, -2.0 * torch.log1p((t - s) / s), out)

    def _d_sigma(self, t):
        return self._beta(t) * torch.exp(-self._B(t))

    def _d_log_snr(self, t):
        # d/dt [-B - 2 log(1 - e^{-B})] = -beta (1 + 2 e^{-B}/(1 - e^{-B})) = -beta coth(B/2)
        return -self._beta(t) / torch.tanh(0.5 * self._B(t))

    def _g_squared(self, t):
        return -self._beta(t) * torch.expm1(-2.0 * self._B(t))


class TorchVPCosine(TorchSchedule):
    """Cosine VP schedule with offset ``s`` (module docstring)."""

    kind = "vp"

    def __init__(self, s: float = 0.008):
        self.s = finite_scalar(s, "s")
        if self.s < 0:
            raise ValueError(f"s must be >= 0, got {_r(self.s)}")
        self.k = 0.5 * math.pi / (1.0 + self.s)
        self.cos_phi0 = math.cos(self.k * self.s)

    def _alpha(self, t):
        return torch.sin(self.k * (1.0 - t)) / self.cos_phi0

    def _sigma(self, t):
        return torch.sqrt(torch.sin(self.k * t) * torch.sin(self.k * (t + 2 * self.s))) / (
            self.cos_phi0
        )

    def _log_alpha(self, t):
        return torch.log(torch.sin(self.k * (1.0 - t))) - math.log(self.cos_phi0)

    def _log_sigma(self, t):
        return 0.5 * (
            torch.log(torch.sin(self.k * t)) + torch.log(torch.sin(self.k * (t + 2 * self.s)))
        ) - math.log(self.cos_phi0)

    def _log_snr(self, t):
        return (
            2.0 * torch.log(torch.sin(self.k * (1.0 - t)))
            - torch.log(torch.sin(self.k * t))
            - torch.log(torch.sin(self.k * (t + 2 * self.s)))
        )

    def _log_snr_diff(self, s, t):
        # sin(x + 2h) - sin(x) = 2 cos(x + h) sin(h) with h = k (t - s)/2 for each of the
        # three sines of _log_snr; a midpoint cosine past pi/4 is taken as the sine of its
        # complement, formed from 1 - t and 1 - s
        k, s0 = self.k, self.s
        two_sin_h = 2.0 * torch.sin(0.5 * k * (t - s))
        mid, comp = 0.5 * (t + s), 0.5 * ((1.0 - t) + (1.0 - s))

        def cos_of(arg, complement):
            return torch.where(arg <= 0.25 * math.pi, torch.cos(arg), torch.sin(complement))

        alpha_part = _log_quotient(
            torch.sin(k * (1.0 - t)),
            torch.sin(k * (1.0 - s)),
            -torch.sin(k * (mid + s0)) * two_sin_h,
        )
        first = _log_quotient(
            torch.sin(k * t), torch.sin(k * s), cos_of(k * mid, k * (comp + s0)) * two_sin_h
        )
        second = _log_quotient(
            torch.sin(k * (t + 2 * s0)),
            torch.sin(k * (s + 2 * s0)),
            cos_of(k * (mid + 2 * s0), k * (comp - s0)) * two_sin_h,
        )
        return 2.0 * alpha_part - first - second

    def _d_log_alpha(self, t):
        return -self.k / torch.tan(self.k * (1.0 - t))

    def _d_log_sigma(self, t):
        return (
            0.5
            * self.k
            * (1.0 / torch.tan(self.k * t) + 1.0 / torch.tan(self.k * (t + 2 * self.s)))
        )

    def _d_alpha(self, t):
        return -self.k * torch.cos(self.k * (1.0 - t)) / self.cos_phi0

    def _g_squared(self, t):
        # VP: g^2 = -2 f = 2 k / tan(k (1 - t)) (not -sigma^2 d lambda/dt: 0 * inf at t = 0)
        return -2.0 * self._d_log_alpha(t)

    def _d_sigma(self, t):
        if self.s == 0.0:  # sigma = sin(k t): k cos(k t), finite at t = 0 (not 0/0)
            return self.k * torch.sin(self.k * (1.0 - t))
        # d sigma^2/dt = k sin(2 phi)/cos^2(phi0) with phi = k (t + s)
        return (
            self.k
            * torch.sin(2.0 * self.k * (t + self.s))
            / (2.0 * self.cos_phi0**2 * self._sigma(t))
        )


class TorchVEGeometric(TorchSchedule):
    """VE SDE: alpha = 1, sigma = sigma_min (sigma_max/sigma_min)^t (Song et al. 2021, eq. 30)."""

    kind = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min = positive_scalar(sigma_min, "sigma_min")
        self.sigma_max = positive_scalar(sigma_max, "sigma_max")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(
                f"sigma_max must be > sigma_min={_r(self.sigma_min)}, got {_r(self.sigma_max)}"
            )
        self.log_ratio = math.log(self.sigma_max) - math.log(self.sigma_min)  # no overflow

    def _log_alpha(self, t):
        return torch.zeros_like(t)

    def _alpha(self, t):
        return torch.ones_like(t)

    def _log_sigma(self, t):
        return math.log(self.sigma_min) + t * self.log_ratio

    def _log_snr_diff(self, s, t):
        return -2.0 * self.log_ratio * (t - s)

    def _d_log_alpha(self, t):
        return torch.zeros_like(t)

    def _d_log_sigma(self, t):
        return torch.full_like(t, self.log_ratio)

    def _g_squared(self, t):
        return 2.0 * self.log_ratio * self._sigma(t) ** 2


class TorchEDM(TorchSchedule):
    """EDM / Karras: alpha = 1, sigma = (a + t D)^rho, a = sigma_min^(1/rho),
    D = sigma_max^(1/rho) - a (Karras et al. 2022, eq. 5)."""

    kind = "ve"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
        self.sigma_min = positive_scalar(sigma_min, "sigma_min")
        self.sigma_max = positive_scalar(sigma_max, "sigma_max")
        self.rho = positive_scalar(rho, "rho")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(
                f"sigma_max must be > sigma_min={_r(self.sigma_min)}, got {_r(self.sigma_max)}"
            )
        try:
            self.a, hi = self.sigma_min ** (1.0 / self.rho), self.sigma_max ** (1.0 / self.rho)
        except OverflowError:
            self.a = hi = math.inf
        if not (math.isfinite(hi) and hi > self.a > 0.0):
            raise ValueError(
                f"rho must be large enough that sigma_min^(1/rho) and sigma_max^(1/rho) are "
                f"distinct positive float64 numbers (sigma_min={_r(self.sigma_min)}, "
                f"sigma_max={_r(self.sigma_max)}), got {_r(self.rho)}"
            )
        self.D = hi - self.a

    def _alpha(self, t):
        return torch.ones_like(t)

    def _log_alpha(self, t):
        return torch.zeros_like(t)

    def _sigma(self, t):
        return (self.a + t * self.D) ** self.rho

    def _log_sigma(self, t):
        return self.rho * torch.log(self.a + t * self.D)

    def _log_snr_diff(self, s, t):
        # -2 rho log((a + t D)/(a + s D))
        return -2.0 * self.rho * torch.log1p(self.D * (t - s) / (self.a + s * self.D))

    def _d_log_alpha(self, t):
        return torch.zeros_like(t)

    def _d_log_sigma(self, t):
        return self.rho * self.D / (self.a + t * self.D)


class TorchFlow(TorchSchedule):
    """Conditional-OT flow path alpha = 1 - t, sigma = t (Lipman et al. 2023, eq. 20)."""

    kind = "flow"

    def _alpha(self, t):
        return 1.0 - t

    def _sigma(self, t):
        return t.clone()

    def _log_alpha(self, t):
        return torch.log1p(-t)

    def _log_sigma(self, t):
        return torch.log(t)

    def _log_snr_diff(self, s, t):
        # lambda = 2 log((1 - t)/t)
        return 2.0 * (_log_quotient(1.0 - t, 1.0 - s, s - t) - torch.log1p((t - s) / s))

    def _d_alpha(self, t):
        return torch.full_like(t, -1.0)

    def _d_sigma(self, t):
        return torch.ones_like(t)

    def _d_log_alpha(self, t):
        return -1.0 / (1.0 - t)

    def _d_log_sigma(self, t):
        return 1.0 / t

    def _d_log_snr(self, t):
        return -2.0 / (t * (1.0 - t))

    def _g_squared(self, t):
        return 2.0 * t / (1.0 - t)


class TorchDiscrete(TorchSchedule):
    """Discrete DDPM schedule from betas beta_1..beta_T, embedded in continuous time: n/T is node
    n and log alpha_bar is linear in t between nodes (Ho et al. 2020, eq. 4; the VP SDE with
    piecewise-constant beta). Derivatives at a node are left limits; beta_T = 1 (zero terminal
    SNR) gives alpha = 0 on the last interval."""

    kind = "vp"

    def __init__(self, betas):
        arr = as_real(betas, "betas")
        if arr.ndim != 1 or arr.size < 1:
            raise ValueError(
                f"betas must be a 1-D array with at least one entry, got shape {arr.shape}"
            )
        arr = finite_real(arr, "betas")
        inner = arr[:-1] if arr[-1] == 1.0 else arr
        bad = (inner <= 0.0) | (inner >= 1.0)
        if bad.any() or arr[-1] <= 0.0 or arr[-1] > 1.0:
            idx = int(np.flatnonzero(bad)[0]) if bad.any() else arr.size - 1
            raise ValueError(
                f"betas must lie in (0, 1) (beta_T = 1 allowed for zero terminal SNR), "
                f"got betas[{idx}] = {_r(arr[idx])}"
            )
        b = arr.tolist()
        self.T = len(b)
        ell = [math.log1p(-x) if x < 1 else -math.inf for x in b]
        # log alpha_bar_n by Kahan-compensated summation (T float64 additions would lose
        # up to ~T/2 ulps of the largest partial sum)
        # (acc - comp is the prefix to ~eps^2: kept as the pair, so that a difference of two
        # prefixes is accurate relative to itself)
        log_ab, low, acc, comp = [0.0], [0.0], 0.0, 0.0
        for v in ell:
            if v == -math.inf:
                acc, comp = -math.inf, 0.0
            else:
                y = v - comp
                tot = acc + y
                comp = (tot - acc) - y
                acc = tot
            log_ab.append(acc)
            low.append(-comp)
        self._ell = torch.tensor(ell, dtype=torch.float64)
        self._log_ab = torch.tensor(log_ab, dtype=torch.float64)
        self._log_ab_low = torch.tensor(low, dtype=torch.float64)

    def _check_attained(self, lam):
        # zero terminal SNR: lambda jumps from lambda_(T-1) to -inf on the last interval, so a
        # finite log_snr below lambda_(T-1) has no t (bisection would return (T-1)/T silently)
        if not math.isinf(float(self._ell[-1])):
            return
        node = torch.tensor((self.T - 1) / self.T, dtype=torch.float64, device=lam.device)
        edge = float(self._log_snr(node))
        gap = torch.isfinite(lam) & (lam < edge)
        if bool(gap.any()):
            raise ValueError(
                f"log_snr must be -inf or lie in [{edge!r}, inf] for a zero-terminal-SNR "
                f"schedule: lambda jumps from lambda_(T-1) = {edge!r} to -inf, so (-inf, "
                f"{edge!r}) is not attained; got {lam[gap].reshape(-1)[0].item()!r}"
            )

    def _node(self, t):
        # (n, u, u_lo, snap): t T = u + u_lo exactly (Veltkamp/Dekker splitting), on interval
        # n = ceil(u); a u within 4 ulps of a node is that node (u_lo = 0 there)
        u = t * self.T
        # 2^ceil(p/2) + 1 for a p-bit significand: 53 (float64), 24 (float32)
        split = 134217729.0 if t.dtype == torch.float64 else 4097.0
        ct, cT = split * t, split * float(self.T)
        t_hi = ct - (ct - t)
        T_hi = cT - (cT - float(self.T))
        t_lo, T_lo = t - t_hi, float(self.T) - T_hi
        u_lo = ((t_hi * T_hi - u) + t_hi * T_lo + t_lo * T_hi) + t_lo * T_lo
        node = torch.round(u)
        snap = (u - node).abs() <= 4.0 * torch.finfo(t.dtype).eps * torch.clamp(u, min=1.0)
        u = torch.where(snap, node, u)
        u_lo = torch.where(snap, torch.zeros_like(u_lo), u_lo)
        return torch.clamp(torch.ceil(u), 1, self.T).long(), u, u_lo, snap

    def _interval(self, t):
        ell, lab = self._ell.to(t.device, t.dtype), self._log_ab.to(t.device, t.dtype)
        n, u, u_lo, _ = self._node(t)
        frac = (u - (n - 1).to(t.dtype)) + u_lo
        e = ell[n - 1]
        L = lab[n - 1] + torch.where(frac == 0, torch.zeros_like(frac), frac * e)
        return L, e

    def _alpha(self, t):
        return torch.exp(0.5 * self._interval(t)[0])

    def _sigma(self, t):
        return torch.sqrt(-torch.expm1(self._interval(t)[0]))

    def _log_alpha(self, t):
        return 0.5 * self._interval(t)[0]

    def _log_sigma(self, t):
        return 0.5 * log1mexp(-self._interval(t)[0])

    def _log_snr(self, t):
        L = self._interval(t)[0]
        return L - log1mexp(-L)

    def _log_snr_diff(self, s, t):
        # lambda = L - log(-expm1(L)) with L = log alpha_bar piecewise linear in u = t T:
        # lambda_t - lambda_s = dL - log1p(expm1(dL) / expm1(L_s) * e^{L_s}) written as
        # dL - log1p(-expm1(dL)/expm1(-L_s)). dL is (u_t - u_s) ell inside one interval, else
        # the rest of s's interval, the whole steps between (the difference of the compensated
        # partial sums, kept with their low parts) and the start of t's
        ell, lab = self._ell.to(t.device, t.dtype), self._log_ab.to(t.device, t.dtype)
        n_s, u_s, lo_s, snap_s = self._node(s)
        n_t, u_t, lo_t, snap_t = self._node(t)
        du = torch.where(snap_s | snap_t, (u_t - u_s) + (lo_t - lo_s), (t - s) * self.T)
        e_s, e_t = ell[n_s - 1], ell[n_t - 1]
        within = torch.where(du == 0, torch.zeros_like(du), du * e_t)
        rest_s = (n_s.to(t.dtype) - u_s) - lo_s
        start_t = (u_t - (n_t - 1).to(t.dtype)) + lo_t
        low = self._log_ab_low.to(t.device, t.dtype)
        hi_i, lo_i = torch.clamp(n_t - 1, min=0), n_s
        steps = torch.where(
            hi_i == lo_i, torch.zeros_like(du), (lab[hi_i] - lab[lo_i]) + (low[hi_i] - low[lo_i])
        )
        across = (
            torch.where(rest_s == 0, torch.zeros_like(du), rest_s * e_s)
            + steps
            + torch.where(start_t == 0, torch.zeros_like(du), start_t * e_t)
        )
        dL = torch.where(n_s == n_t, within, across)
        L_s = self._interval(s)[0]
        out = dL - torch.log1p(-torch.expm1(dL) / (torch.expm1(-L_s) + 0.0))  # not -0.0
        # dL = 0: both ends snap to one node (node 0 included, where 0/0 would be formed)
        return torch.where(dL == 0, torch.zeros_like(out), out)

    def _d_log_alpha(self, t):
        return 0.5 * self.T * self._interval(t)[1]

    def _d_alpha(self, t):
        L, e = self._interval(t)
        a = torch.exp(0.5 * L)
        return torch.where(a == 0, torch.zeros_like(a), 0.5 * self.T * e * a)

    def _d_sigma(self, t):
        # d sigma/dt = -T ell e^L / (2 sigma)
        L, e = self._interval(t)
        s = torch.sqrt(-torch.expm1(L))
        return torch.where(
            torch.exp(L) == 0, torch.zeros_like(s), -self.T * e * torch.exp(L) / (2 * s)
        )

    def _d_log_snr(self, t):
        # lambda = L - log(1 - e^L): d/dt = T ell (1 + e^L/(1 - e^L)) = T ell / (1 - e^L)
        L, e = self._interval(t)
        return self.T * e / (-torch.expm1(L))

    def _f(self, t):
        return 0.5 * self.T * self._interval(t)[1]

    def _g_squared(self, t):
        # -sigma^2 d lambda/dt = -T ell
        return -self.T * self._interval(t)[1]


def torch_schedule(schedule) -> TorchSchedule:
    """The torch counterpart of a reference schedule, built from its parameters only."""
    name = type(schedule).__name__
    if name == "VPLinear":
        return TorchVPLinear(schedule.beta_min, schedule.beta_max)
    if name == "SubVP":
        return TorchSubVP(schedule.beta_min, schedule.beta_max)
    if name == "VPCosine":
        return TorchVPCosine(schedule.s)
    if name == "VEGeometric":
        return TorchVEGeometric(schedule.sigma_min, schedule.sigma_max)
    if name == "EDM":
        return TorchEDM(schedule.sigma_min, schedule.sigma_max, schedule.rho)
    if name == "Flow":
        return TorchFlow()
    if name == "DiscreteSchedule":
        return TorchDiscrete(schedule.betas)
    if isinstance(schedule, TorchSchedule):
        return schedule
    raise TypeError(f"schedule must be a built-in reference schedule, got {name}")
