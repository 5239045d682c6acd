"""Likelihoods, the exact flow map, the irreducible loss and the ELBO terms in torch.

The same mathematics as ``reference.likelihood`` and ``reference.elbo``, written again for
batched tensors on any device:

- :func:`flow_map` and :func:`pf_ode_log_likelihood` integrate the PF-ODE in the angle
  theta = atan2(sigma, alpha) (reference.likelihood's module docstring) with an adaptive
  Dormand-Prince 5(4) solver written here (Dormand & Prince 1980; the step control of Hairer,
  Norsett & Wanner, Solving ODEs I, Sec. II.4), all points advancing together on the device
  (the reference uses scipy's DOP853 on the flattened batch);
- :func:`irreducible_loss`, :func:`ddpm_elbo`, :func:`gaussian_kl` and
  :func:`discretized_gaussian_log_likelihood` (exact log-CDFs, ``torch.special.log_ndtr``).

Results reuse the reference's dataclasses (:class:`~diffusion_oracle.reference.Estimate`,
:class:`~diffusion_oracle.reference.ODELikelihood` with tensors,
:class:`~diffusion_oracle.reference.ELBOTerms` with NumPy arrays)."""

from __future__ import annotations

import math

import torch

from diffusion_oracle.reference import ELBOTerms, Estimate, ODELikelihood

from ._common import (
    _r,
    as_tensor,
    boolean,
    check_finite,
    finite_scalar,
    generator_arg,
    int_arg,
    positive_scalar,
)
from .model import declared_prediction, posterior_coefficients, to_x0_eps
from .schedules import TorchDiscrete, TorchSchedule
from .targets import TorchMixture

__all__ = [
    "ddpm_elbo",
    "vdm_elbo",
    "discretized_gaussian_log_likelihood",
    "flow_map",
    "gaussian_kl",
    "irreducible_loss",
    "pf_ode_log_likelihood",
]

# Dormand-Prince 5(4) tableau (Dormand & Prince 1980, Table 2), FSAL
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b - b4 for b, b4 in zip(_B, _B4, strict=True))


def _dopri5(f, y, t0: float, t1: float, rtol: float, atol: float, max_steps: int = 100_000):
    """Integrate dy/dt = f(t, y) from t0 to t1 (either direction) for y of shape (n, m): the
    error of each row is the RMS of e_i / (atol + rtol max(|y_i|, |y_new,i|)) and a step is
    accepted when the worst row's is <= 1. Returns (y(t1), number of f evaluations)."""
    if y.numel() == 0:  # an empty batch: nothing to integrate (its error norm would be NaN)
        return y, 0
    span = t1 - t0
    direction = 1.0 if span > 0 else -1.0
    k1 = f(t0, y)
    nfev = 1
    scale = atol + rtol * y.abs()
    d0, d1 = (y / scale).square().mean().sqrt(), (k1 / scale).square().mean().sqrt()
    h = 1e-6 if float(d0) < 1e-5 or float(d1) < 1e-5 else 0.01 * float(d0 / d1)
    h = min(h, abs(span))
    t = t0
    for _ in range(max_steps):
        if direction * (t1 - t) <= 0:
            return y, nfev
        h = min(h, abs(t1 - t))
        hs = direction * h
        ks = [k1]
        for i in range(1, 7):
            yi = y + hs * sum(a * k for a, k in zip(_A[i], ks, strict=False) if a != 0.0)
            ks.append(f(t + _C[i] * hs, yi))
        nfev += 6
        y_new = y + hs * sum(b * k for b, k in zip(_B, ks, strict=True) if b != 0.0)
        err = hs * sum(e * k for e, k in zip(_E, ks, strict=True) if e != 0.0)
        sc = atol + rtol * torch.maximum(y.abs(), y_new.abs())
        err_norm = float((err / sc).square().mean(-1).sqrt().max())
        if not math.isfinite(err_norm):
            raise RuntimeError(f"PF-ODE solve produced a non-finite value at t = {t!r}")
        if err_norm <= 1.0:
            t, y, k1 = t + hs, y_new, ks[6]
            if direction * (t1 - t) <= 1e-15 * abs(span):
                return y, nfev
        factor = 0.9 * err_norm ** (-0.2) if err_norm > 0 else 5.0
        h *= min(5.0, max(0.2, factor))
    raise RuntimeError(f"PF-ODE solve did not finish in {max_steps} steps")


def _angle(schedule: TorchSchedule, t, name="t"):
    tt = schedule._check_t(finite_scalar(t, name), name)
    a, s = float(schedule._alpha(tt)), float(schedule._sigma(tt))
    return math.atan2(s, a), math.hypot(a, s)


def _check(target, schedule):
    if not isinstance(target, TorchMixture):
        raise TypeError(f"target must be a TorchMixture, got {type(target).__name__}")
    if not isinstance(schedule, TorchSchedule):
        raise TypeError(f"schedule must be a TorchSchedule, got {type(schedule).__name__}")


def _points(target, x, name="x"):
    x = check_finite(as_tensor(x, name, device=target.device, dtype=target.dtype), name)
    if x.ndim != 2 or x.shape[1] != target.d:
        raise ValueError(f"{name} must have shape (n, d) with d = {target.d}, got {tuple(x.shape)}")
    return x


def _drift(target, w, theta):
    c, s = math.cos(theta), math.sin(theta)
    out, _ = target._eval(w, c, s, ("x0", "eps"))
    return -s * out["x0"] + c * out["eps"]


def flow_map(target, schedule, x, t, s=0.0, *, rtol: float = 1e-11, atol: float = 1e-11):
    """The exact PF-ODE map x_t -> x_s of a :class:`TorchMixture` on a :class:`TorchSchedule`,
    x of shape (n, d): reference.flow_map's equation (w = x/rho, dw/dtheta = -sin E[x_0|w] +
    cos E[eps|w]) solved with the batched Dormand-Prince 5(4) of this module; agrees with the
    reference's DOP853 to about 1e-9 at the default tolerances."""
    _check(target, schedule)
    x = _points(target, x)
    th0, rho0 = _angle(schedule, t)
    th1, rho1 = _angle(schedule, s, "s")
    rtol, atol = positive_scalar(rtol, "rtol"), positive_scalar(atol, "atol")
    if th0 == th1:
        return x * (rho1 / rho0)
    w, _ = _dopri5(lambda th, w: _drift(target, w, th), x / rho0, th0, th1, rtol, atol)
    return rho1 * w


def pf_ode_log_likelihood(
    target,
    schedule,
    x,
    *,
    t0: float = 0.0,
    t1: float = 1.0,
    prior: str = "exact",
    divergence: str = "exact",
    n_probes: int = 16,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-10,
) -> ODELikelihood:
    """log p_{t0}(x) through the PF-ODE, as reference.pf_ode_log_likelihood (Song et al. 2021,
    eq. 39; Chen et al. 2018, Thm. 1), for a :class:`TorchMixture`. ``divergence`` "exact" uses
    the mixture's closed-form :meth:`~TorchMixture.velocity_divergence`; "hutchinson" the
    estimator z^T (dg/dw) z with ``n_probes`` fixed probes, each Jacobian-vector product by
    forward-mode autodiff (``torch.func.jvp``: what a user's own likelihood code does; Grathwohl
    et al. 2019). Returns :class:`ODELikelihood` with tensors (``probe_var_exact`` is None)."""
    _check(target, schedule)
    if prior not in ("exact", "gaussian"):
        raise ValueError(f"prior must be 'exact' or 'gaussian', got {prior!r}")
    if divergence not in ("exact", "hutchinson"):
        raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
    x = _points(target, x)
    n, d = x.shape
    th0, rho0 = _angle(schedule, t0, "t0")
    th1, rho1 = _angle(schedule, t1, "t1")
    rtol, atol = positive_scalar(rtol, "rtol"), positive_scalar(atol, "atol")
    if not th1 > th0:
        raise ValueError(f"t1 must come after t0 on the path (more noise), got t0={t0}, t1={t1}")
    hutch = divergence == "hutchinson"
    P = int_arg(n_probes, "n_probes") if hutch else 1
    generator = generator_arg(generator, device="cpu")  # the probes are drawn on the CPU
    if hutch:
        shape = (P, n, d)
        z = torch.randn(shape, generator=generator, dtype=target.dtype, device="cpu")
        if probe == "rademacher":
            z = torch.sign(z)
        z = z.to(target.device)

    def rhs(theta, y):
        w = y[:, :d]
        c, s = math.cos(theta), math.sin(theta)
        dw = _drift(target, w, theta)
        if not hutch:
            div = target.velocity_divergence(w, c, s, -s, c)
            return torch.cat([dw, -div[:, None]], 1)
        # all probes in one forward-mode pass over the batch repeated P times
        w_rep = w.repeat(P, 1)
        _, jz = torch.func.jvp(lambda v: _drift(target, v, theta), (w_rep,), (z.reshape(P * n, d),))
        quad = (z.reshape(P * n, d) * jz).sum(1).reshape(P, n)
        return torch.cat([dw, -quad.T], 1)

    y0 = torch.cat([x / rho0, torch.zeros(n, P, dtype=x.dtype, device=x.device)], 1)
    if hutch and target.fused:  # forward-mode autodiff needs the differentiable torch path
        saved, target.fused = target.fused, False
    else:
        saved = None
    try:
        y1, nfev = _dopri5(rhs, y0, th0, th1, rtol, atol)
    finally:
        if saved is not None:
            target.fused = saved
    x_end = rho1 * y1[:, :d]
    delta_w = -y1[:, d:]  # int div over theta, per probe
    if prior == "exact":
        tt = schedule._t(torch.as_tensor(float(t1), dtype=torch.float64))
        log_prior = target.log_prob(x_end, float(schedule._alpha(tt)), float(schedule._sigma(tt)))
    else:
        tt = schedule._t(torch.as_tensor(float(t1), dtype=torch.float64))
        s1 = float(schedule._sigma(tt))
        log_prior = -0.5 * (d * math.log(2 * math.pi * s1 * s1) + (x_end**2).sum(1) / (s1 * s1))
    delta = delta_w.mean(1) + d * math.log(rho1 / rho0)
    stderr = probe_std = None
    if hutch:
        probe_std = delta_w.std(1) if P > 1 else torch.full_like(delta, float("nan"))
        stderr = probe_std / math.sqrt(P)
    return ODELikelihood(log_prior + delta, log_prior, delta, x_end, stderr, probe_std, None, nfev)


def irreducible_loss(
    target,
    schedule,
    t,
    *,
    prediction: str = "eps",
    n: int = 1_000_000,
    generator: torch.Generator | None = None,
) -> Estimate:
    """E|y - E[y | x_t]|^2 at time t for the prediction y (x0, eps, v, score, velocity): the
    Rao-Blackwellised Monte Carlo mean of the exact posterior trace over ``n`` exact draws of
    x_t, as reference.irreducible_loss (same formulas, same choice of the divisor-free form).
    Returns :class:`Estimate`."""
    _check(target, schedule)
    if prediction not in ("x0", "eps", "v", "score", "velocity"):
        raise ValueError(
            f"prediction must be one of x0, eps, v, score, velocity, got {prediction!r}"
        )
    tt = schedule._t(finite_scalar(t, "t"))
    a, s = float(schedule._alpha(tt)), float(schedule._sigma(tt))
    if prediction == "score" and s == 0:
        raise ValueError(f"the score loss needs sigma > 0, got sigma(t={float(t)!r}) = 0")
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
        da, ds = float(schedule._d_alpha(tt)), float(schedule._d_sigma(tt))
        factor = (ds - da * s / a) ** 2 if use_eps else (da - ds * a / s) ** 2
    n = int_arg(n, "n", minimum=2)
    generator = generator_arg(generator, device=target.device)
    x_t = target.sample(n, generator, alpha=a, sigma=s)
    key = "eps_cov_trace" if use_eps else "x0_cov_trace"
    out, _ = target._eval(x_t, a, s, (key,))
    vals = factor * out[key]
    return Estimate(float(vals.mean()), float(vals.std() / math.sqrt(n)), False)


def _positive(value, name: str) -> float:
    return positive_scalar(value, name)


def _real(x, name: str) -> torch.Tensor:
    """A finite real tensor (a tensor keeps its device and floating dtype; else float64)."""
    if isinstance(x, torch.Tensor):
        dt = x.dtype if x.is_floating_point() else torch.float64
        return check_finite(as_tensor(x, name, device=x.device, dtype=dt), name)
    return check_finite(as_tensor(x, name, device="cpu", dtype=torch.float64), name)


def gaussian_kl(mean1, log_var1, mean2, log_var2):
    """KL(N(mean1, e^{log_var1}) || N(mean2, e^{log_var2})) per coordinate (nats), in the expm1
    form (1/2)[expm1(u) - u + (mean1 - mean2)^2 e^{-log_var2}], u = log_var1 - log_var2."""
    m1, m2 = _real(mean1, "mean1"), _real(mean2, "mean2")
    lv1, lv2 = _real(log_var1, "log_var1"), _real(log_var2, "log_var2")
    try:
        torch.broadcast_shapes(m1.shape, lv1.shape, m2.shape, lv2.shape)
    except RuntimeError as err:
        raise ValueError(
            f"mean1, log_var1, mean2 and log_var2 must broadcast together, got shapes "
            f"{tuple(m1.shape)}, {tuple(lv1.shape)}, {tuple(m2.shape)}, {tuple(lv2.shape)}"
        ) from err
    u = lv1 - lv2
    dm = m1 - m2
    # (|m1 - m2| e^{-log_var2/2})^2: no 0 * inf, no inf * 0 (as the reference)
    scaled = torch.where(dm == 0, torch.zeros_like(dm), dm.abs() * torch.exp(-0.5 * lv2))
    out = 0.5 * (torch.expm1(u) - u + scaled * scaled)
    bad = ~torch.isfinite(out)
    if bool(bad.any()):
        uu, dd, l2 = (torch.broadcast_to(v, out.shape)[bad].reshape(-1)[0].item()
                      for v in (u, dm, lv2))  # fmt: skip
        if not math.isfinite(uu) or uu > 709.0:
            raise ValueError(
                f"log_var1 - log_var2 must be at most about 709 for a KL within float64 (it "
                f"grows as e^(log_var1 - log_var2) / 2), got log_var1 - log_var2 = {uu!r}"
            )
        raise ValueError(
            f"mean1 - mean2 must be small enough against e^(log_var2/2) for a KL within float64 "
            f"((mean1 - mean2)^2 e^(-log_var2) / 2 overflows), got mean1 - mean2 = {dd!r} "
            f"with log_var2 = {l2!r}"
        )
    return out


def discretized_gaussian_log_likelihood(x, mean, log_var, *, levels: int = 256):
    """log P(x) of ``levels``-level data on [-1, 1] under N(mean, e^{log_var}) integrated over
    its bin (Ho et al. 2020, eq. 13), from exact log-CDFs on the side of 0 where they do not
    round (reference.discretized_gaussian_log_likelihood). Per coordinate, nats."""
    levels = int_arg(levels, "levels", minimum=2)
    x, mean, log_var = _real(x, "x"), _real(mean, "mean"), _real(log_var, "log_var")
    half = 1.0 / (levels - 1)
    k = (x + 1.0) / (2.0 * half)
    off = ((k - torch.round(k)).abs() > 1e-6) | (x.abs() > 1 + 1e-12)
    if bool(off.any()):
        raise ValueError(f"x must lie on the {levels} levels of [-1, 1] (k * 2/{levels - 1} - 1), "
                         f"got {x[off].reshape(-1)[0].item()!r}")  # fmt: skip
    try:
        torch.broadcast_shapes(x.shape, mean.shape, log_var.shape)
    except RuntimeError as err:
        raise ValueError(f"x, mean and log_var must broadcast together, got shapes "
                         f"{tuple(x.shape)}, {tuple(mean.shape)}, {tuple(log_var.shape)}") \
            from err  # fmt: skip
    inv_std = torch.exp(-0.5 * log_var)
    inf = torch.full_like(x, math.inf)
    upper = torch.where(x > 1.0 - half, inf, (x + half - mean) * inv_std)
    lower = torch.where(x < -1.0 + half, -inf, (x - half - mean) * inv_std)
    flip = (lower + upper) > 0
    hi = torch.where(flip, -lower, upper)
    lo = torch.where(flip, -upper, lower)
    lhi, llo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return lhi + torch.log(-torch.expm1(llo - lhi))


def _examples(model, x0) -> torch.Tensor:
    """x0 as a finite float64 (n, d) tensor on the model's device (CPU when it has none)."""
    dev = getattr(model, "device", None)
    x0 = check_finite(as_tensor(x0, "x0", device=dev or "cpu", dtype=torch.float64), "x0")
    if x0.ndim != 2:
        raise ValueError(f"x0 must have shape (n, d), got {tuple(x0.shape)}")
    return x0


def _learned_log_var(variance, x_t, m) -> torch.Tensor:
    """``variance(x_t, m)``, a model's log variance: finite, real, and a scalar, one per example
    ((N,) or (N, 1)) or one per coordinate (N, d), as the reference reads it."""
    name = "variance(x_n, n)"
    lv = variance(x_t, m)
    lv = check_finite(as_tensor(lv, name, device=x_t.device, dtype=x_t.dtype), name)
    shape = tuple(lv.shape)
    if lv.ndim == 1:
        lv = lv[:, None]  # one per example
    if lv.ndim > x_t.ndim or any(a not in (1, b) for a, b in zip(lv.shape, x_t.shape)):
        raise ValueError(
            f"{name} must return a scalar or an array of shape (N,), (N, 1) or (N, d) = "
            f"{tuple(x_t.shape)}, got shape {shape}"
        )
    return lv


def ddpm_elbo(
    model,
    schedule,
    x0,
    *,
    variance: str = "fixed_small",
    decoder: str = "gaussian",
    decoder_var=None,
    levels: int = 256,
    prior_var: float = 1.0,
    generator=None,
    reduce_diffusion: bool = False,
) -> ELBOTerms:
    """The DDPM bound's terms (reference.ddpm_elbo: Ho et al. 2020, eq. 5, 12-13) for a torch
    ``model(x, t)`` (``prediction`` attribute) on a :class:`TorchDiscrete` schedule, all examples
    of ``x0`` (n, d) at once per step, one draw of x_n per example and term. The reverse-step
    coefficients come from the general posterior q(x_s | x_t, x_0) at s = (n-1)/T, t = n/T
    (:func:`~diffusion_oracle.accelerated.model.posterior_coefficients`), not from the betas.
    ``variance``: "fixed_small" (beta_tilde, clipped to beta_tilde_2 at n = 1 for the decoder),
    "fixed_large" (beta), or a callable ``(x_n, n) -> log variance`` (a model's learned
    variance: a scalar, (N,) or (N, 1) per example, or (N, d); as the reference reads it).
    ``reduce_diffusion`` (a bool) keeps only the per-example sum of the diffusion terms (an
    (n, 1) column instead of (n, T - 1): for large n). ``generator``: a torch.Generator (on any
    device), or a NumPy Generator whose draws (in the reference's order, n = T..1) make
    the result equal the reference's. Returns :class:`ELBOTerms` with NumPy arrays."""
    if not isinstance(schedule, TorchDiscrete):
        raise TypeError(f"schedule must be a TorchDiscrete, got {type(schedule).__name__}")
    if not callable(variance) and (
        not isinstance(variance, str) or variance not in ("fixed_small", "fixed_large")
    ):
        raise ValueError(
            f"variance must be 'fixed_small', 'fixed_large' or a callable, got {_r(variance)}"
        )
    if decoder not in ("gaussian", "discretized"):
        raise ValueError(f"decoder must be 'gaussian' or 'discretized', got {decoder!r}")
    x0 = _examples(model, x0)
    prior_var = _positive(prior_var, "prior_var")
    if decoder_var is not None:
        decoder_var = _positive(decoder_var, "decoder_var")
    levels = int_arg(levels, "levels", minimum=2)
    reduce_diffusion = boolean(reduce_diffusion, "reduce_diffusion")
    generator = generator_arg(generator, numpy_ok=True)
    N, d = x0.shape
    T = schedule.T
    pred = declared_prediction(model)
    f64 = {"dtype": torch.float64}

    def coefficients(m):
        s_, t_ = torch.tensor((m - 1) / T, **f64), torch.tensor(m / T, **f64)
        if m == 1:  # q(x_0 | x_1, x_0) is a point mass: coef_x0 = 1, coef_xt = 0, var = 0
            return 1.0, 0.0, 0.0
        c0, ct, var = posterior_coefficients(schedule, s_, t_)
        return float(c0), float(ct), float(var)

    def log_var_of(m):
        c0, ct, var = coefficients(m if (m > 1 or variance == "fixed_large") else 2)
        if variance == "fixed_small":
            return math.log(var)
        tt = torch.tensor(m / T, **f64)
        ss = torch.tensor((m - 1) / T, **f64)
        # beta_n = 1 - alpha_bar_n / alpha_bar_{n-1} = -expm1(2 (log alpha_n - log alpha_{n-1}))
        la = schedule._log_alpha(tt) - schedule._log_alpha(ss)
        return float(torch.log(-torch.expm1(2.0 * la)))

    diffusion = torch.zeros(N, 1 if reduce_diffusion else T - 1, dtype=x0.dtype, device=x0.device)
    decoder_term = None
    for m in range(T, 0, -1):
        t = m / T
        tt = torch.tensor(t, **f64)
        a, s = float(schedule._alpha(tt)), float(schedule._sigma(tt))
        if hasattr(generator, "standard_normal"):  # a NumPy Generator: the reference's draws
            noise = torch.from_numpy(generator.standard_normal(tuple(x0.shape))).to(x0.device)
        else:
            where = generator.device if generator is not None else x0.device
            noise = torch.randn(x0.shape, generator=generator, device=where, **f64).to(x0.device)
        x_t = a * x0 + s * noise
        out = model(x_t, t)
        kw = {}
        if pred == "velocity":
            kw = {"d_alpha": float(schedule._d_alpha(tt)), "d_sigma": float(schedule._d_sigma(tt))}
        x0_hat, _ = to_x0_eps(out, source=pred, x_t=x_t, alpha=a, sigma=s, **kw)
        lv = log_var_of(m) if not callable(variance) else _learned_log_var(variance, x_t, m)
        if m >= 2:
            c0, ct, var = coefficients(m)
            kl = gaussian_kl(
                c0 * x0 + ct * x_t,
                torch.full_like(x0, math.log(var)),
                c0 * x0_hat + ct * x_t,
                torch.broadcast_to(torch.as_tensor(lv, dtype=x0.dtype, device=x0.device), x0.shape),
            ).sum(-1)
            if reduce_diffusion:
                diffusion[:, 0] += kl
            else:
                diffusion[:, m - 2] = kl
        else:
            if decoder_var is not None:
                lv = math.log(_positive(decoder_var, "decoder_var"))
            lvt = torch.broadcast_to(
                torch.as_tensor(lv, dtype=x0.dtype, device=x0.device), x0.shape
            )
            if decoder == "gaussian":
                ll = -0.5 * (math.log(2 * math.pi) + lvt + (x0 - x0_hat) ** 2 * torch.exp(-lvt))
            else:
                ll = discretized_gaussian_log_likelihood(x0, x0_hat, lvt, levels=levels)
            decoder_term = -ll.sum(-1)
    t1 = torch.tensor(1.0, **f64)
    la, ls = float(schedule._log_alpha(t1)), float(schedule._log_sigma(t1))
    prior_var = _positive(prior_var, "prior_var")
    u = 2.0 * ls - math.log(prior_var)
    mean_part = math.exp(2.0 * la) * (x0 * x0).sum(-1) / prior_var if math.isfinite(la) else 0.0
    prior = 0.5 * (d * (math.expm1(u) - u) + mean_part) + torch.zeros(N, **f64).to(x0.device)

    def np_(v):
        return v.detach().cpu().numpy()

    return ELBOTerms(np_(prior), np_(diffusion), np_(decoder_term), d)


def vdm_elbo(
    model,
    schedule,
    x0,
    *,
    t_min: float,
    decoder_var=None,
    prior_var: float = 1.0,
    generator=None,
) -> ELBOTerms:
    """The continuous-time bound (Kingma et al. 2021, VDM, eq. 17) as reference.vdm_elbo: log-SNR
    stratified over the examples, one draw each, the diffusion term (1/2)(lambda_max -
    lambda_min) e^lambda |x_0 - x0_hat|^2, the decoder N(x0_hat(x_{t_min}), var_dec I) and the
    prior; ``model(x, t)`` is called once with a per-example t (shape (N,)), as in training.
    ``generator``: a torch.Generator, or a NumPy Generator whose draws (uniform, shuffle,
    normal, normal: the reference's order) make the result equal the reference's."""
    if not isinstance(schedule, TorchSchedule):
        raise TypeError(f"schedule must be a TorchSchedule, got {type(schedule).__name__}")
    t_min = finite_scalar(t_min, "t_min")
    if not 0.0 < t_min < 1.0:
        raise ValueError(f"t_min must lie in (0, 1), got {t_min!r}")
    x0 = _examples(model, x0)
    prior_var = _positive(prior_var, "prior_var")
    if decoder_var is not None:
        decoder_var = _positive(decoder_var, "decoder_var")
    generator = generator_arg(generator, numpy_ok=True)
    N, d = x0.shape
    f64 = {"dtype": torch.float64}
    lam_hi = float(schedule._log_snr(torch.tensor(t_min, **f64)))
    lam_lo = float(schedule._log_snr(torch.tensor(1.0, **f64)))
    if not math.isfinite(lam_lo):
        raise ValueError("the schedule's log-SNR at t = 1 must be finite (not zero terminal SNR)")
    if hasattr(generator, "standard_normal"):
        u_np = (torch.arange(N, **f64).numpy() + generator.uniform(size=N)) / N
        generator.shuffle(u_np)
        u = torch.from_numpy(u_np)

        def normal():
            return torch.from_numpy(generator.standard_normal((N, d))).to(x0.device)
    else:
        where = generator.device if generator is not None else x0.device
        u = (
            torch.arange(N, **f64) + torch.rand(N, generator=generator, device=where, **f64).cpu()
        ) / N
        u = u[torch.randperm(N, generator=generator, device=where).cpu()]

        def normal():
            return torch.randn(N, d, generator=generator, device=where, **f64).to(x0.device)

    lam = lam_lo + (lam_hi - lam_lo) * u
    t = schedule.t_from_log_snr(lam)
    a = schedule._alpha(t).to(x0.device)[:, None]
    s = schedule._sigma(t).to(x0.device)[:, None]
    x_t = a * x0 + s * normal()
    pred = declared_prediction(model)
    kw = {}
    if pred == "velocity":
        kw = {
            "d_alpha": schedule._d_alpha(t).to(x0.device),
            "d_sigma": schedule._d_sigma(t).to(x0.device),
        }
    x0_hat, _ = to_x0_eps(
        model(x_t, t.to(x0.device)), source=pred, x_t=x_t, alpha=a[:, 0], sigma=s[:, 0], **kw
    )
    diffusion = (
        0.5 * (lam_hi - lam_lo) * torch.exp(lam.to(x0.device)) * ((x0 - x0_hat) ** 2).sum(-1)
    )
    tm = torch.tensor(t_min, **f64)
    a1, s1 = float(schedule._alpha(tm)), float(schedule._sigma(tm))
    x1 = a1 * x0 + s1 * normal()
    kw1 = {}
    if pred == "velocity":
        kw1 = {"d_alpha": float(schedule._d_alpha(tm)), "d_sigma": float(schedule._d_sigma(tm))}
    x0_hat1, _ = to_x0_eps(model(x1, t_min), source=pred, x_t=x1, alpha=a1, sigma=s1, **kw1)
    lv = -lam_hi if decoder_var is None else math.log(_positive(decoder_var, "decoder_var"))
    decoder_term = 0.5 * (
        d * (math.log(2 * math.pi) + lv) + ((x0 - x0_hat1) ** 2).sum(-1) * math.exp(-lv)
    )
    t1 = torch.tensor(1.0, **f64)
    la, ls = float(schedule._log_alpha(t1)), float(schedule._log_sigma(t1))
    prior_var = _positive(prior_var, "prior_var")
    uu = 2.0 * ls - math.log(prior_var)
    prior = 0.5 * (d * (math.expm1(uu) - uu) + math.exp(2.0 * la) * (x0 * x0).sum(-1) / prior_var)

    def np_(v):
        return v.detach().cpu().numpy()

    return ELBOTerms(np_(prior), np_(diffusion)[:, None], np_(decoder_term), d)
