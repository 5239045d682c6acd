"""Samplers in torch: the built-in samplers of the reference, written again for tensors on any
device (independent code; the tests run both from the same noise and compare).

Each is a callable ``sampler(model, x_init, grid, *, rng=None)`` like the reference's:

- ``model(x, t)`` returns the prediction named by ``model.prediction`` (eps, x0, v, score,
  velocity), e.g. a :class:`~diffusion_oracle.accelerated.model.TorchExactModel`;
- ``grid`` is a :class:`TorchGrid` or anything with the reference Grid's ``t``, ``final_zero``
  and ``schedule`` (its times are taken; every coefficient is recomputed here from a torch
  schedule in float64);
- ``x_init`` a tensor (returned on its device) or a NumPy array (the result is returned as NumPy,
  so the harness's probes and checks apply unchanged);
- ``rng`` a ``torch.Generator``, a seed, or anything with ``standard_normal(shape)`` (a NumPy
  Generator: then the noise is NumPy's, which lets the tests reproduce the reference's runs).

Per-step scalars (exponentials of log-SNR differences, expm1 forms) are Python floats computed
in float64 once per step; the state stays on the device. The final step into sigma = 0 is the
denoising jump x <- E[x_0 | x] for every sampler (as in the reference).

Formulas and citations: see each class (the same papers as reference/samplers.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch

# argument checks with the reference's messages (no maths: the samplers stay independent)
from diffusion_oracle.reference._checks import (
    _r,
    as_float,
    boolean,
    choice,
    finite,
    finite_scalar,
    nonneg_scalar,
    order_choice,
    positive_int,
)

from ._common import as_tensor, check_finite
from .model import TorchExactModel, _x0_eps, declared_prediction
from .schedules import TorchSchedule, torch_schedule

__all__ = [
    "TorchGrid",
    "TorchSampler",
    "DDPM",
    "DDIM",
    "DPMSolver1",
    "Euler",
    "Heun",
    "EDMStochastic",
    "DPMSolver2",
    "DPMSolver3",
    "DPMSolverPP2M",
    "DPMSolverPP3M",
    "DPMSolverPP2MSDE",
    "UniPC",
    "PLMS",
    "LMS",
    "EulerMaruyama",
    "PredictorCorrector",
    "FlowEuler",
    "FlowHeun",
    "torch_sampler",
]


class TorchGrid:
    """Decreasing model-evaluation times on a torch schedule with the path coefficients at each
    node as float64 Python lists (``t``, ``alpha``, ``sigma``, ``log_alpha``, ``log_sigma``,
    ``log_snr``, ``half`` = lambda/2, ``sigma_edm``, ``d_alpha``, ``d_sigma``); with
    ``final_zero`` a last node alpha = 1, sigma = 0 is appended (the data; never evaluated)."""

    def __init__(self, schedule: TorchSchedule, t, *, final_zero: bool = False):
        if not isinstance(schedule, TorchSchedule):
            raise TypeError(f"schedule must be a TorchSchedule, got {type(schedule).__name__}")
        final_zero = boolean(final_zero, "final_zero")
        t64 = finite(t, "t")  # the reference Grid's checks and messages
        if t64.ndim != 1 or t64.size < (1 if final_zero else 2):
            raise ValueError(f"t must be a 1-D grid with at least 2 nodes, got shape {t64.shape}")
        if not (np.diff(t64) < 0).all():
            i = int(np.flatnonzero(np.diff(t64) >= 0)[0])
            raise ValueError(f"t must be strictly decreasing, got t[{i}] = {_r(t64[i])}, "
                             f"t[{i + 1}] = {_r(t64[i + 1])}")  # fmt: skip
        tt = schedule._t(torch.as_tensor(t64, dtype=torch.float64))
        self.schedule, self.final_zero = schedule, bool(final_zero)
        sch = schedule
        cols = {
            "t": tt,
            "alpha": sch.alpha(tt),
            "sigma": sch.sigma(tt),
            "log_alpha": sch._log_alpha(tt),
            "log_sigma": sch._log_sigma(tt),
            "log_snr": sch._log_snr(tt),
            "d_alpha": sch._d_alpha(tt),
            "d_sigma": sch._d_sigma(tt),
        }
        if bool((cols["sigma"] == 0).any()):
            raise ValueError("grid times must have sigma > 0; the jump to sigma = 0 is final_zero")
        for k, v in cols.items():
            setattr(self, k, [float(u) for u in v])
        if self.final_zero:
            for k, v in (("t", 0.0), ("alpha", 1.0), ("sigma", 0.0), ("log_alpha", 0.0),
                         ("log_sigma", -math.inf), ("log_snr", math.inf), ("d_alpha", 0.0),
                         ("d_sigma", 0.0)):  # fmt: skip
                getattr(self, k).append(v)
        self.half = [0.5 * v for v in self.log_snr]
        self.sigma_edm = [math.exp(ls - la) if s > 0 else 0.0 for ls, la, s in
                          zip(self.log_sigma, self.log_alpha, self.sigma)]  # fmt: skip
        self.steps = len(self.t) - 1

    @classmethod
    def from_grid(cls, grid):
        """The torch grid with the times of a reference ``Grid`` (its schedule's parameters are
        read by :func:`torch_schedule`; the coefficients are recomputed)."""
        t = np.asarray(grid.t, dtype=np.float64)
        if grid.final_zero:
            t = t[:-1]
        return cls(torch_schedule(grid.schedule), t, final_zero=grid.final_zero)

    def at_log_snr(self, lam: float):
        """(t, alpha, sigma, log_alpha) at the time where the log-SNR is ``lam``."""
        sch = self.schedule
        t = sch.t_from_log_snr(torch.tensor(lam, dtype=torch.float64))
        return float(t), float(sch._alpha(t)), float(sch._sigma(t)), float(sch._log_alpha(t))


class _Ctx:
    """A run's model, grid, noise source and output conversion."""

    def __init__(self, model, grid: TorchGrid, rng, device, dtype):
        self.model, self.g, self.device, self.dtype = model, grid, device, dtype
        self.pred = declared_prediction(model)
        if isinstance(rng, torch.Generator) or hasattr(rng, "standard_normal"):
            self.rng = rng
        else:
            self.rng = torch.Generator(device=device)
            self.rng.manual_seed(int(rng) if rng is not None else int(torch.seed() % 2**63))

    def noise(self, shape):
        if isinstance(self.rng, torch.Generator):
            return torch.randn(shape, generator=self.rng, device=self.device, dtype=self.dtype)
        z = np.asarray(self.rng.standard_normal(tuple(shape)), dtype=np.float64)
        return torch.as_tensor(z, device=self.device, dtype=self.dtype)

    def at(self, x, t, alpha, sigma, d_alpha=None, d_sigma=None):
        """(x0_hat, eps_hat) from one model call at time t."""
        out = self.model(x, t)
        if not isinstance(out, torch.Tensor):
            out = torch.as_tensor(np.asarray(out), device=self.device, dtype=self.dtype)
        if out.shape != x.shape:
            raise ValueError(f"model output must have the shape of x {tuple(x.shape)}")
        if self.pred == "velocity" and d_alpha is None:
            tt = torch.tensor(t, dtype=torch.float64)
            d_alpha = float(self.g.schedule._d_alpha(tt))
            d_sigma = float(self.g.schedule._d_sigma(tt))
        return _x0_eps(out, self.pred, x, alpha, sigma, d_alpha, d_sigma)

    def node(self, x, i):
        g = self.g
        return self.at(x, g.t[i], g.alpha[i], g.sigma[i], g.d_alpha[i], g.d_sigma[i])


class TorchSampler:
    """Base: ``name``, declared ``order``, ``stochastic``, ``default_grid`` (as the reference);
    subclasses implement ``_run(ctx, x)`` or ``_step(ctx, x, i)``."""

    name = "sampler"
    order = 1
    stochastic = False
    default_grid = "uniform"

    def __repr__(self):
        return self.name

    def __call__(self, model, x_init, grid, *, rng=None):
        as_numpy = isinstance(x_init, np.ndarray)
        device = getattr(model, "device", None)
        dtype = getattr(model, "dtype", torch.float64)
        if isinstance(x_init, torch.Tensor):
            device = device or x_init.device
        x = as_tensor(x_init, "x_init", device=device or "cpu", dtype=dtype).clone()
        if x.ndim != 2:
            raise ValueError(f"x_init must have shape (n, d), got {tuple(x.shape)}")
        check_finite(x, "x_init")
        d = getattr(model, "d", None)
        if isinstance(d, int) and x.shape[1] != d:
            raise ValueError(f"x_init must have shape (n, d) with the model's d = {d}, got "
                             f"{tuple(x.shape)}")  # fmt: skip
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, t), got {type(model).__name__}")
        declared_prediction(model)
        if isinstance(grid, TorchGrid):
            g = grid
        elif hasattr(grid, "schedule") and hasattr(grid, "final_zero") and hasattr(grid, "t"):
            g = TorchGrid.from_grid(grid)
        else:
            raise TypeError(f"grid must be a Grid (see make_grid) or a TorchGrid, got "
                            f"{type(grid).__name__}")  # fmt: skip
        out = self._run(_Ctx(model, g, rng, x.device, x.dtype), x)
        return out.cpu().numpy() if as_numpy else out

    def _run(self, ctx, x):
        g = ctx.g
        for i in range(g.steps):
            if g.sigma[i + 1] == 0:
                return ctx.node(x, i)[0]
            x = self._step(ctx, x, i)
        return x

    def _step(self, ctx, x, i):
        raise NotImplementedError(f"{type(self).__name__} implements _run or _step")


def _frac(g, i):
    """1 - SNR_{i}/SNR_{i+1} = -expm1(lambda_i - lambda_{i+1})."""
    return -math.expm1(g.log_snr[i] - g.log_snr[i + 1])


class DDPM(TorchSampler):
    """Ancestral sampling with q(x_s | x_t, x0_hat) (Ho et al. 2020, Algorithm 2):
    x_s = alpha_s e x0 + (alpha_t/alpha_s)(sigma_s/sigma_t)^2 x_t + sqrt(var) z with
    e = -expm1(lambda_t - lambda_s) and var = sigma_s^2 e ("fixed_small"), sigma_t^2 e
    ("fixed_large"), or their log-interpolation with weight v ("learned_range", Nichol &
    Dhariwal 2021, eq. 15). Weak order 1.

    ``fused`` (default: automatic) runs each step as one Triton kernel (``_fused.
    fused_ddpm_steps``: the mixture's eps, the update and the noise together) when the model is a
    :class:`TorchExactModel` predicting eps on a CUDA mixture with the fused kernel and the noise
    comes from a CUDA ``torch.Generator``: the same update, with z drawn in the kernel by
    Triton's Philox generator (four float32 Box-Muller normals per counter, cast to float64;
    Triton clamps the Box-Muller uniform at 1e-7, which caps the radius at 5.68 with probability
    1e-7, so |z| <= 5.68) seeded from that generator, so a fused run is reproducible but its
    draws differ from the unfused path's. ``fused=False`` forces the unfused path."""

    stochastic = True
    default_grid = "log_snr"

    def __init__(self, variance: str = "fixed_small", *, v: float = 0.5, fused: bool | None = None):
        if not isinstance(variance, str) or variance not in (
                "fixed_small", "fixed_large", "learned_range"):  # fmt: skip
            raise ValueError(
                "variance must be one of ['fixed_large', 'fixed_small', 'learned_range'] in "
                f"torch (the reference has 'analytic'), got {variance!r}"
            )
        v = finite_scalar(v, "v")
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"v must lie in [0, 1], got {_r(v)}")
        self.variance, self.v, self.fused = variance, v, fused
        self.name = f"ddpm-{variance.replace('_', '-')}"
        if variance == "learned_range":
            self.name += f"(v={self.v:g})"

    def _var(self, g, i, e):
        small = math.exp(2.0 * g.log_sigma[i + 1]) * e
        large = math.exp(2.0 * g.log_sigma[i]) * e
        if self.variance == "fixed_small":
            return small
        if self.variance == "fixed_large":
            return large
        return math.exp(self.v * math.log(large) + (1.0 - self.v) * math.log(small))

    def _fusable(self, ctx, x):
        m = ctx.model
        ok = (
            isinstance(m, TorchExactModel)
            and m.prediction == "eps"
            and m.target.fused
            and x.is_cuda
            and isinstance(ctx.rng, torch.Generator)
            and ctx.rng.device.type == "cuda"
        )
        if self.fused and not ok:
            raise ValueError(
                "fused=True needs a TorchExactModel predicting eps on a CUDA TorchMixture with "
                "the fused kernel, and a CUDA torch.Generator"
            )
        return ok if self.fused is None else bool(self.fused)

    def _coefs(self, g, i):
        """(c0, ct, std) of step i: x' = c0 x0 + ct x + std z."""
        e = _frac(g, i)
        c0 = math.exp(g.log_alpha[i + 1]) * e
        ct = math.exp(
            g.log_alpha[i] - g.log_alpha[i + 1] + 2.0 * (g.log_sigma[i + 1] - g.log_sigma[i])
        )
        return c0, ct, math.sqrt(self._var(g, i, e))

    def _run(self, ctx, x):
        g = ctx.g
        if not self._fusable(ctx, x):
            return super()._run(ctx, x)
        from ._fused import fused_ddpm_steps

        # the fused steps, up to the final jump to sigma = 0 (a model call, as unfused);
        # eps = sigma g and x0 = (x - sigma eps)/alpha, the unfused path's conversion
        end = next((i for i in range(g.steps) if g.sigma[i + 1] == 0), g.steps)
        steps = []
        for i in range(end):
            c0, ct, std = self._coefs(g, i)
            a, s = g.alpha[i], g.sigma[i]
            steps.append((a, s, c0 / a + ct, c0 * s * s / a, std))
        x = fused_ddpm_steps(ctx.model.target, x, steps, generator=ctx.rng)
        ctx.model.n_calls += end
        return ctx.node(x, end)[0] if end < g.steps else x

    def _step(self, ctx, x, i):
        c0, ct, std = self._coefs(ctx.g, i)
        x0, _ = ctx.node(x, i)
        return c0 * x0 + ct * x + std * ctx.noise(x.shape)


class DDIM(TorchSampler):
    """DDIM (Song et al. 2021a, eq. 12 and 16): x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z,
    c = eta sigma_s sqrt(-expm1(lambda_t - lambda_s)). Order 1."""

    default_grid = "log_snr"

    def __init__(self, eta: float = 0.0):
        self.eta = nonneg_scalar(eta, "eta")
        self.stochastic = self.eta > 0
        self.name = f"ddim(eta={self.eta:g})"

    def _step(self, ctx, x, i):
        g = ctx.g
        x0, eps = ctx.node(x, i)
        s_s = g.sigma[i + 1]
        c = self.eta * s_s * math.sqrt(_frac(g, i))
        out = g.alpha[i + 1] * x0 + math.sqrt(max(s_s * s_s - c * c, 0.0)) * eps
        return out + c * ctx.noise(x.shape) if self.eta else out


class DPMSolver1(DDIM):
    """DPM-Solver-1 (Lu et al. 2022, eq. 3.7, k = 1) = DDIM(eta = 0). Order 1."""

    def __init__(self):
        super().__init__(0.0)
        self.name = "dpm-solver-1"


class Euler(TorchSampler):
    """Euler on dy/dsigma = (y - D(y, sigma))/sigma, y = x/alpha, sigma = sigma_EDM (Karras et
    al. 2022, eq. 3, Algorithm 1 without the correction). Order 1."""

    name = "euler"
    default_grid = "karras"

    def _step(self, ctx, x, i):
        g = ctx.g
        x0, _ = ctx.node(x, i)
        y = x / g.alpha[i]
        slope = (y - x0) / g.sigma_edm[i]
        return g.alpha[i + 1] * (y + (g.sigma_edm[i + 1] - g.sigma_edm[i]) * slope)


class Heun(TorchSampler):
    """Heun on the EDM ODE (Karras et al. 2022, Algorithm 1). Order 2."""

    name = "heun"
    order = 2
    default_grid = "karras"

    def _heun(self, ctx, x, i, start=None):
        g = ctx.g
        if start is None:
            t_h, a_h, s_h = g.t[i], g.alpha[i], g.sigma_edm[i]
        else:
            t_h, a_h, s_h = start
        x0, _ = ctx.at(x, t_h, a_h, a_h * s_h)
        y = x / a_h
        slope = (y - x0) / s_h
        h = g.sigma_edm[i + 1] - s_h
        y_p = y + h * slope
        x0_p, _ = ctx.node(g.alpha[i + 1] * y_p, i + 1)
        slope_p = (y_p - x0_p) / g.sigma_edm[i + 1]
        return g.alpha[i + 1] * (y + 0.5 * h * (slope + slope_p))

    def _step(self, ctx, x, i):
        return self._heun(ctx, x, i)


class EDMStochastic(Heun):
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): churn sigma_i up to
    sigma_hat = sigma_i (1 + gamma), gamma = min(S_churn/N, sqrt 2 - 1) for S_tmin <= sigma_i <=
    S_tmax, with sqrt(sigma_hat^2 - sigma_i^2) S_noise z, then a Heun step. Weak order 2."""

    stochastic = True
    order = 2

    def __init__(self, S_churn=10.0, S_tmin=0.05, S_tmax=50.0, S_noise=1.0):
        # the reference's rules: S_tmax may be +inf (EDM's default), never NaN or < S_tmin
        self.S_churn = nonneg_scalar(S_churn, "S_churn")
        self.S_tmin = nonneg_scalar(S_tmin, "S_tmin")
        tmax = as_float(S_tmax, "S_tmax")
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

    def _run(self, ctx, x):
        g = ctx.g
        n = g.steps
        for i in range(n):
            if g.sigma[i + 1] == 0:
                return ctx.node(x, i)[0]
            s = g.sigma_edm[i]
            on = self.S_tmin <= s <= self.S_tmax
            gamma = min(self.S_churn / n, math.sqrt(2.0) - 1.0) if on else 0.0
            if gamma <= 0:
                x = self._heun(ctx, x, i)
                continue
            s_hat = s * (1.0 + gamma)
            t_hat, a_hat, _, _ = g.at_log_snr(-2.0 * math.log(s_hat))
            y = x / g.alpha[i] + math.sqrt(s_hat * s_hat - s * s) * self.S_noise * ctx.noise(
                x.shape
            )
            x = self._heun(ctx, a_hat * y, i, start=(t_hat, a_hat, s_hat))
        return x


class DPMSolver2(TorchSampler):
    """DPM-Solver-2, singlestep, noise prediction (Lu et al. 2022, Algorithm 1, r1 = 1/2), with
    the half-log-SNR l and h = l_s - l_t: u = (alpha_m/alpha_t) x - sigma_m expm1(h/2) eps_t,
    x_s = (alpha_s/alpha_t) x - sigma_s expm1(h) eps(u, m). Order 2."""

    name = "dpm-solver-2"
    order = 2
    default_grid = "log_snr"

    def _run(self, ctx, x):
        g = ctx.g
        for i in range(g.steps):
            if g.sigma[i + 1] == 0:
                return ctx.node(x, i)[0]
            h = g.half[i + 1] - g.half[i]
            t_m, a_m, s_m, la_m = g.at_log_snr(2.0 * (g.half[i] + 0.5 * h))
            _, eps = ctx.node(x, i)
            u = math.exp(la_m - g.log_alpha[i]) * x - s_m * math.expm1(0.5 * h) * eps
            _, eps_m = ctx.at(u, t_m, a_m, s_m)
            x = (
                math.exp(g.log_alpha[i + 1] - g.log_alpha[i]) * x
                - g.sigma[i + 1] * math.expm1(h) * eps_m
            )
        return x


class DPMSolver3(TorchSampler):
    """DPM-Solver-3, singlestep, noise prediction (Lu et al. 2022, Algorithm 2, r1 = 1/3,
    r2 = 2/3). Three model calls per step. Order 3."""

    name = "dpm-solver-3"
    order = 3
    default_grid = "log_snr"
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0

    def step(self, ctx, x, i, eps_t=None):
        """One step from node i to i + 1 (``eps_t`` reuses the prediction at x)."""
        g = ctx.g
        h = g.half[i + 1] - g.half[i]
        r1, r2 = self.r1, self.r2
        if eps_t is None:
            eps_t = ctx.node(x, i)[1]
        la_t = g.log_alpha[i]
        t1, a1, s1, la1 = g.at_log_snr(2.0 * (g.half[i] + r1 * h))
        u1 = math.exp(la1 - la_t) * x - s1 * math.expm1(r1 * h) * eps_t
        D1 = ctx.at(u1, t1, a1, s1)[1] - eps_t
        t2, a2, s2, la2 = g.at_log_snr(2.0 * (g.half[i] + r2 * h))
        phi_r2 = math.expm1(r2 * h)
        u2 = (
            math.exp(la2 - la_t) * x
            - s2 * phi_r2 * eps_t
            - s2 * (r2 / r1) * (phi_r2 / (r2 * h) - 1.0) * D1
        )
        D2 = ctx.at(u2, t2, a2, s2)[1] - eps_t
        s_s, phi = g.sigma[i + 1], math.expm1(h)
        return (
            math.exp(g.log_alpha[i + 1] - la_t) * x
            - s_s * phi * eps_t
            - (s_s / r2) * (phi / h - 1.0) * D2
        )

    def _step(self, ctx, x, i):
        return self.step(ctx, x, i)


class DPMSolverPP2M(TorchSampler):
    """DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2): x_i = (sigma_i/sigma_{i-1}) x -
    alpha_i expm1(-h) D, D = (1 + 1/(2r)) x0_{i-1} - x0_{i-2}/(2r), r = h_{i-1}/h_i; the first
    step first order. Order 2."""

    name = "dpm-solver++(2m)"
    order = 2
    default_grid = "log_snr"

    def _run(self, ctx, x):
        g = ctx.g
        prev = None
        for i in range(g.steps):
            if g.sigma[i + 1] == 0:
                return ctx.node(x, i)[0]
            x0, _ = ctx.node(x, i)
            h = g.half[i + 1] - g.half[i]
            D = (
                x0
                if prev is None
                else (1.0 + 0.5 * h / prev[1]) * x0 - (0.5 * h / prev[1]) * prev[0]
            )
            x = (
                math.exp(g.log_sigma[i + 1] - g.log_sigma[i]) * x
                - g.alpha[i + 1] * math.expm1(-h) * D
            )
            prev = (x0, h)
        return x


class DPMSolverPP3M(TorchSampler):
    """DPM-Solver++(3M) (Lu et al. 2022b, Sec. 4), with the third-order coefficient of the
    Taylor expansion: x_i = (sigma_i/sigma_{i-1}) x - alpha_i phi_1 x0 + alpha_i phi_2 D1 -
    c2 alpha_i phi_3 D2, phi_1 = expm1(-h), phi_2 = phi_1/h + 1, phi_3 = phi_2/h - 1/2, D2 the
    divided difference (h^2 x0''/2): c2 = 2 ("corrected", order 3) or 1 as published (the
    authors' code, diffusers, k-diffusion; order 2; docs/findings.md). Warm-up: a DPM-Solver-3
    step, then a 2M step."""

    default_grid = "log_snr"

    def __init__(self, variant: str = "corrected"):
        self.variant = choice(variant, "variant", {"corrected", "published"})
        self.order = 3 if variant == "corrected" else 2
        self.name = "dpm-solver++(3m)" + ("" if variant == "corrected" else "-published")

    def _run(self, ctx, x):
        g = ctx.g
        c2 = 2.0 if self.variant == "corrected" else 1.0
        hist = []
        for i in range(g.steps):
            if g.sigma[i + 1] == 0:
                return ctx.node(x, i)[0]
            x0, eps = ctx.node(x, i)
            h = g.half[i + 1] - g.half[i]
            ratio = math.exp(g.log_sigma[i + 1] - g.log_sigma[i])
            a_s, phi_1 = g.alpha[i + 1], math.expm1(-h)
            if not hist:
                nxt = DPMSolver3().step(ctx, x, i, eps_t=eps)
            elif len(hist) == 1:
                r = hist[0][1] / h
                nxt = ratio * x - a_s * phi_1 * ((1.0 + 0.5 / r) * x0 - (0.5 / r) * hist[0][0])
            else:
                (x0_2, h_2), (x0_1, h_1) = hist
                r0, r1 = h_1 / h, h_2 / h
                d0 = (x0 - x0_1) / r0
                d1 = (x0_1 - x0_2) / r1
                D1 = d0 + (r0 / (r0 + r1)) * (d0 - d1)
                D2 = (d0 - d1) / (r0 + r1)
                phi_2 = phi_1 / h + 1.0
                phi_3 = phi_2 / h - 0.5
                nxt = ratio * x - a_s * phi_1 * x0 + a_s * phi_2 * D1 - c2 * a_s * phi_3 * D2
            hist = (hist + [(x0, h)])[-2:]
            x = nxt
        return x


class DPMSolverPP2MSDE(TorchSampler):
    """SDE-DPM-Solver++(2M), midpoint form (Lu et al. 2022b, App.): x_i = (sigma_i/sigma_{i-1})
    e^{-h} x + alpha_i (1 - e^{-2h}) x0 + (alpha_i/2)(1 - e^{-2h})(x0 - x0_prev)/r +
    sigma_i sqrt(1 - e^{-2h}) z. Weak order 2."""

    name = "sde-dpm-solver++(2m)"
    order = 2
    stochastic = True
    default_grid = "log_snr"

    def _run(self, ctx, x):
        g = ctx.g
        prev = None
        for i in range(g.steps):
            if g.sigma[i + 1] == 0:
                return ctx.node(x, i)[0]
            x0, _ = ctx.node(x, i)
            h = g.half[i + 1] - g.half[i]
            a_s, s_s = g.alpha[i + 1], g.sigma[i + 1]
            om = -math.expm1(-2.0 * h)
            nxt = math.exp(g.log_sigma[i + 1] - g.log_sigma[i] - h) * x + a_s * om * x0
            if prev is not None:
                nxt = nxt + (0.5 * a_s * om * h / prev[1]) * (x0 - prev[0])
            x = nxt + s_s * math.sqrt(om) * ctx.noise(x.shape)
            prev = (x0, h)
        return x


class UniPC(TorchSampler):
    """UniPC in data prediction (Zhao et al. 2023, Algorithms 1-2, B(h) = hh "bh1" or
    expm1(hh) "bh2", hh = -h): predictor of order p in {1, 2}, corrector reusing the next
    node's model value. Order p + 1."""

    default_grid = "log_snr"

    def __init__(self, order: int = 2, variant: str = "bh2"):
        order = order_choice(order, "order", (1, 2))
        variant = choice(variant, "variant", {"bh1", "bh2"})
        self.p, self.variant, self.order = order, variant, order + 1
        self.name = f"unipc-{self.p}({variant})"

    def _rhos(self, rks, h):
        """(h phi_1, B(h), rho_p, rho_c) for the ratios rks (the last one is 1)."""
        hh = -h
        h_phi_1 = math.expm1(hh)
        B = hh if self.variant == "bh1" else h_phi_1
        K = len(rks)
        b, hpk, fact = [], h_phi_1 / hh - 1.0, 1.0
        for i in range(1, K + 1):
            b.append(hpk * fact / B)
            fact *= i + 1
            hpk = hpk / hh - 1.0 / fact
        R = torch.tensor([[r**i for r in rks] for i in range(K)], dtype=torch.float64)
        bt = torch.tensor(b, dtype=torch.float64)
        rho_c = [0.5] if K == 1 else torch.linalg.solve(R, bt).tolist()
        rho_p = (
            [0.5]
            if K == 2
            else (torch.linalg.solve(R[:-1, :-1], bt[:-1]).tolist() if K > 2 else [])
        )
        return h_phi_1, B, rho_p, rho_c

    def _run(self, ctx, x):
        g = ctx.g
        x0_t, _ = ctx.node(x, 0)
        hist = []
        for i in range(g.steps):
            if g.sigma[i + 1] == 0:
                return ctx.node(x, i)[0]
            lt = g.half[i]
            h = g.half[i + 1] - lt
            k = min(self.p, len(hist) + 1)
            prev = list(reversed(hist[-(k - 1) :])) if k > 1 else []
            rks = [(lk - lt) / h for _, lk in prev]
            Ds = [(mk - x0_t) / r for (mk, _), r in zip(prev, rks)]
            h_phi_1, B, rho_p, rho_c = self._rhos(rks + [1.0], h)
            a_s = g.alpha[i + 1]
            base = math.exp(g.log_sigma[i + 1] - g.log_sigma[i]) * x - a_s * h_phi_1 * x0_t
            x_pred = base
            for rp, D in zip(rho_p, Ds):
                x_pred = x_pred - a_s * B * rp * D
            x0_s, _ = ctx.node(x_pred, i + 1)
            corr = rho_c[-1] * (x0_s - x0_t)
            for rc, D in zip(rho_c[:-1], Ds):
                corr = corr + rc * D
            x = base - a_s * B * corr
            hist = (hist + [(x0_t, lt)])[-3:]
            x0_t = x0_s
        return x


class PLMS(TorchSampler):
    """PLMS (Liu et al. 2022, PNDM, eq. 12, latent-diffusion warm-up): Adams-Bashforth
    extrapolation of eps, transferred by the DDIM step. Order 2 on log-SNR grids."""

    name = "plms"
    order = 2
    default_grid = "log_snr"

    @staticmethod
    def _transfer(g, x, e, i):
        return g.alpha[i + 1] * ((x - g.sigma[i] * e) / g.alpha[i]) + g.sigma[i + 1] * e

    def _run(self, ctx, x):
        g = ctx.g
        es = []
        weights = {1: (1.5, -0.5), 2: (23 / 12, -16 / 12, 5 / 12),
                   3: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}  # fmt: skip
        for i in range(g.steps):
            if g.sigma[i + 1] == 0:
                return ctx.node(x, i)[0]
            _, e = ctx.node(x, i)
            if not es:
                _, e_s = ctx.node(self._transfer(g, x, e, i), i + 1)
                e_p = 0.5 * (e + e_s)
            else:
                w = weights[len(es)]
                e_p = w[0] * e
                for wj, ej in zip(w[1:], reversed(es)):
                    e_p = e_p + wj * ej
            es = (es + [e])[-3:]
            x = self._transfer(g, x, e_p, i)
        return x


class LMS(TorchSampler):
    """Linear multistep in sigma_EDM on dy/dsigma = (y - D)/sigma (k-diffusion's sample_lms;
    Karras et al. 2022, eq. 3): the integrals over each step of the Lagrange basis through the
    last ``order`` nodes, here integrated exactly as polynomials (the reference uses quadrature).
    Order ``order``."""

    default_grid = "karras"

    def __init__(self, order: int = 4):
        self.order = self.lms_order = order_choice(order, "order", (1, 2, 3, 4))
        self.name = f"lms-{order}"

    @staticmethod
    def _coefficients(sig, i, k):
        """int_{sig_i}^{sig_{i+1}} l_j(s) ds for the Lagrange basis on sig_i, ..., sig_{i-k+1},
        in a shifted variable u = s - sig_i (keeps the polynomial coefficients small)."""
        nodes = [sig[i - m] - sig[i] for m in range(k)]
        out = []
        for j in range(k):
            poly = np.polynomial.Polynomial([1.0])
            for m in range(k):
                if m != j:
                    poly = poly * np.polynomial.Polynomial([-nodes[m], 1.0]) / (nodes[j] - nodes[m])
            anti = poly.integ()
            out.append(float(anti(sig[i + 1] - sig[i]) - anti(0.0)))
        return out

    def _run(self, ctx, x):
        g = ctx.g
        sig = g.sigma_edm
        ds = []
        for i in range(g.steps):
            if g.sigma[i + 1] == 0:
                return ctx.node(x, i)[0]
            x0, _ = ctx.node(x, i)
            y = x / g.alpha[i]
            ds = (ds + [(y - x0) / sig[i]])[-self.lms_order :]
            for c, dd in zip(self._coefficients(sig, i, len(ds)), reversed(ds)):
                y = y + c * dd
            x = g.alpha[i + 1] * y
        return x


class EulerMaruyama(TorchSampler):
    """Euler-Maruyama on the reverse SDE dx = [f x - g^2 score] dt + g dw (Song et al. 2021,
    eq. 6), backwards in t: x_s = x - (f x - g^2 score)(t - s) + g sqrt(t - s) z. Weak order 1."""

    name = "euler-maruyama"
    stochastic = True
    default_grid = "log_snr"

    def _step(self, ctx, x, i):
        g = ctx.g
        t, s = g.t[i], g.t[i + 1]
        _, eps = ctx.node(x, i)
        tt = torch.tensor(t, dtype=torch.float64)
        f, g2 = float(g.schedule._f(tt)), float(g.schedule._g_squared(tt))
        dt = t - s
        score = -eps / g.sigma[i]
        return x - (f * x - g2 * score) * dt + math.sqrt(g2 * dt) * ctx.noise(x.shape)


class PredictorCorrector(TorchSampler):
    """Predictor-corrector (Song et al. 2021, Algorithms 2-5): a DDPM predictor step, then
    ``n_corrector`` Langevin steps x <- x + e score + sqrt(2 e) z with e = 2 a (snr sigma)^2,
    a = alpha_{i+1}^2/alpha_i^2 (|z|/|score| replaced by sigma, as in the reference). Weak
    order 1."""

    stochastic = True
    order = 1
    default_grid = "log_snr"

    def __init__(self, snr: float = 0.16, n_corrector: int = 1, variance: str = "fixed_small"):
        self.snr = nonneg_scalar(snr, "snr")
        self.n_corrector = positive_int(n_corrector, "n_corrector", minimum=0)
        self.predictor = DDPM(variance)
        self.name = f"pc(snr={self.snr:g}, {variance})"

    def _run(self, ctx, x):
        g = ctx.g
        for i in range(g.steps):
            if g.sigma[i + 1] == 0:
                return ctx.node(x, i)[0]
            x = self.predictor._step(ctx, x, i)
            a = math.exp(2.0 * (g.log_alpha[i + 1] - g.log_alpha[i]))
            s = g.sigma_edm[i + 1] * g.alpha[i + 1]
            e = 2.0 * a * (self.snr * s) ** 2
            for _ in range(self.n_corrector):
                _, eps = ctx.node(x, i + 1)
                x = x - (e / g.sigma[i + 1]) * eps + math.sqrt(2.0 * e) * ctx.noise(x.shape)
        return x


class FlowEuler(TorchSampler):
    """Euler in t on dx/dt = alpha' x0 + sigma' eps (Lipman et al. 2023). Order 1."""

    name = "flow-euler"
    default_grid = "log_snr"

    def _step(self, ctx, x, i):
        g = ctx.g
        x0, eps = ctx.node(x, i)
        return x + (g.t[i + 1] - g.t[i]) * (g.d_alpha[i] * x0 + g.d_sigma[i] * eps)


class FlowHeun(TorchSampler):
    """Heun in t on dx/dt = u(x, t) (explicit trapezoidal rule). Order 2."""

    name = "flow-heun"
    order = 2
    default_grid = "log_snr"

    def _step(self, ctx, x, i):
        g = ctx.g
        dt = g.t[i + 1] - g.t[i]
        x0, eps = ctx.node(x, i)
        u = g.d_alpha[i] * x0 + g.d_sigma[i] * eps
        x0p, epsp = ctx.node(x + dt * u, i + 1)
        return x + 0.5 * dt * (u + g.d_alpha[i + 1] * x0p + g.d_sigma[i + 1] * epsp)


_BY_CLASS = {
    "DDPM": lambda s: DDPM(s.variance, v=s.v),
    "DDIM": lambda s: DDIM(s.eta),
    "DPMSolver1": lambda s: DPMSolver1(),
    "Euler": lambda s: Euler(),
    "Heun": lambda s: Heun(),
    "EDMStochastic": lambda s: EDMStochastic(s.S_churn, s.S_tmin, s.S_tmax, s.S_noise),
    "DPMSolver2": lambda s: DPMSolver2(),
    "DPMSolver3": lambda s: DPMSolver3(),
    "DPMSolverPP2M": lambda s: DPMSolverPP2M(),
    "DPMSolverPP3M": lambda s: DPMSolverPP3M(s.variant),
    "DPMSolverPP2MSDE": lambda s: DPMSolverPP2MSDE(),
    "UniPC": lambda s: UniPC(s.p, s.variant),
    "PLMS": lambda s: PLMS(),
    "LMS": lambda s: LMS(s.lms_order),
    "EulerMaruyama": lambda s: EulerMaruyama(),
    "PredictorCorrector": lambda s: PredictorCorrector(s.snr, s.n_corrector, s.predictor.variance),
    "FlowEuler": lambda s: FlowEuler(),
    "FlowHeun": lambda s: FlowHeun(),
}


def torch_sampler(sampler):
    """The torch counterpart of a built-in reference sampler (same settings, same name), or
    None when there is none (ExactODE; DDPM with the analytic variance, whose Monte Carlo
    variance estimate is the reference's own; DPM-Solver++(3M) with a library's warm-up)."""
    cls = type(sampler)
    if cls.__module__ != "diffusion_oracle.reference.samplers" or cls.__name__ not in _BY_CLASS:
        return None
    if cls.__name__ == "DDPM" and sampler.variance == "analytic":
        return None
    if cls.__name__ == "DPMSolverPP3M" and getattr(sampler, "warmup", "dpm-solver-3") != (
        "dpm-solver-3"
    ):
        return None  # the libraries' warm-ups exist in the reference only
    return _BY_CLASS[cls.__name__](sampler)
