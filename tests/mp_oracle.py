"""mpmath (50 digits) oracles for the schedules: the defining formulas written naively, with
the precision doing the work that the float64 code does with stable rewrites. Derivatives come
from mpmath's numerical differentiation at that precision, independent of the closed-form
derivatives under test."""

import mpmath as mp

from diffusion_oracle.reference import (
    EDM,
    DiscreteSchedule,
    Flow,
    SubVP,
    VEGeometric,
    VPCosine,
    VPLinear,
)

mp.mp.dps = 50


def mp_alpha_sigma(schedule):
    """(alpha(t), sigma(t)) as mpmath functions of an mpf t, from the defining formulas."""
    if isinstance(schedule, (VPLinear, SubVP)):
        b0, b1 = mp.mpf(schedule.beta_min), mp.mpf(schedule.beta_max)

        def B(t):
            return b0 * t + (b1 - b0) * t**2 / 2

        if isinstance(schedule, VPLinear):
            return (lambda t: mp.exp(-B(t) / 2)), (lambda t: mp.sqrt(1 - mp.exp(-B(t))))
        return (lambda t: mp.exp(-B(t) / 2)), (lambda t: 1 - mp.exp(-B(t)))
    if isinstance(schedule, VPCosine):
        s = mp.mpf(schedule.s)

        def a(t):
            # cos(pi/2 (t + s)/(1 + s)) written as the sine of its complement, so that
            # alpha(1) is exactly 0 at any precision (the zero-SNR end)
            return mp.sin(mp.pi / 2 * (1 - t) / (1 + s)) / mp.cos(mp.pi / 2 * s / (1 + s))

        return a, (lambda t: mp.sqrt(1 - a(t) ** 2))
    if isinstance(schedule, VEGeometric):
        lo, hi = mp.mpf(schedule.sigma_min), mp.mpf(schedule.sigma_max)
        return (lambda t: mp.mpf(1)), (lambda t: lo * (hi / lo) ** t)
    if isinstance(schedule, EDM):
        lo, hi, rho = mp.mpf(schedule.sigma_min), mp.mpf(schedule.sigma_max), mp.mpf(schedule.rho)
        return (lambda t: mp.mpf(1)), (
            lambda t: (lo ** (1 / rho) + t * (hi ** (1 / rho) - lo ** (1 / rho))) ** rho
        )
    if isinstance(schedule, Flow):
        return (lambda t: 1 - t), (lambda t: t)
    if isinstance(schedule, DiscreteSchedule):
        T = schedule.T
        betas = [mp.mpf(float(b)) for b in schedule.betas]  # the float64 betas, taken as exact
        logab = [mp.mpf(0)]
        for b in betas:
            logab.append(logab[-1] + (mp.log(1 - b) if b < 1 else mp.mpf("-inf")))

        def L(t):
            u = t * T
            n = int(mp.ceil(u)) if u > 0 else 1
            n = min(max(n, 1), T)
            frac = u - (n - 1)
            step = logab[n] - logab[n - 1]
            return logab[n - 1] + (frac * step if frac != 0 else 0)

        return (lambda t: mp.exp(L(t) / 2)), (lambda t: mp.sqrt(1 - mp.exp(L(t))))
    raise TypeError(type(schedule))


def mp_quantities(schedule, t):
    """Dict of mpf values at the mpf time t: alpha, sigma, log_snr and derivatives, f, g^2."""
    a, s = mp_alpha_sigma(schedule)

    def lam(u):
        return 2 * mp.log(a(u)) - 2 * mp.log(s(u))

    out = {"alpha": a(t), "sigma": s(t), "log_snr": lam(t)}
    if isinstance(schedule, DiscreteSchedule):
        # derivatives are left limits; t within 4 ulps of a node n/T counts as the node (the
        # documented convention), so differentiate there from the left
        u = t * schedule.T
        if abs(u - mp.nint(u)) <= 4 * mp.mpf(2) ** -52 * max(u, 1):
            t = mp.nint(u) / schedule.T
    # one-sided differences stay inside the domain and (for discrete schedules) inside the
    # interval whose slope defines the left-limit derivative
    direction = -1 if isinstance(schedule, DiscreteSchedule) or t > mp.mpf("0.5") else 1
    h = mp.mpf(10) ** -25 * max(mp.mpf(10) ** -20, min(t, 1 - t))
    kw = dict(direction=direction, h=h)
    out["d_alpha"] = mp.diff(a, t, **kw)
    out["d_sigma"] = mp.diff(s, t, **kw)
    out["d_log_snr"] = mp.diff(lam, t, **kw)
    out["f"] = out["d_alpha"] / out["alpha"]
    out["g_squared"] = 2 * out["sigma"] * out["d_sigma"] - 2 * out["f"] * out["sigma"] ** 2
    return out, lam


def mp_t_from_log_snr(schedule, target, t0):
    """The root t of lambda(t) = target in mpmath: bracket around the float guess t0 (lambda is
    strictly decreasing), then the bracketing Illinois solver; checked to 1e-35."""
    _, lam = mp_quantities(schedule, mp.mpf("0.5"))
    target = mp.mpf(target)
    t0 = mp.mpf(t0)

    def f(u):
        return lam(u) - target

    width = mp.mpf(10) ** -12 * max(min(t0, 1 - t0), mp.mpf(10) ** -30)
    for _ in range(200):
        a, b = max(t0 - width, t0 / 2), min(t0 + width, (1 + t0) / 2)
        if a > 0 and b < 1 and f(a) > 0 > f(b):
            break
        width *= 4
    else:
        raise AssertionError("could not bracket the root")
    fa = f(a)
    for _ in range(400):  # bisection: monotone f, robust, each step halves the bracket
        m = (a + b) / 2
        fm = f(m)
        if fm == 0:
            a = b = m
            break
        if (fm > 0) == (fa > 0):
            a, fa = m, fm
        else:
            b = m
        if b - a <= mp.mpf(10) ** -48 * abs(m):
            break
    t = (a + b) / 2
    if abs(f(t)) > mp.mpf(10) ** -35 * max(1, abs(target)):
        raise AssertionError("mpmath root finding did not converge")
    return t


def mp_time(schedule, x):
    """The float64 time x as an mpf; for a discrete schedule within 4 ulps of a node n/T, the
    node itself (the documented convention of DiscreteSchedule)."""
    X = mp.mpf(x)
    if isinstance(schedule, DiscreteSchedule):
        u = X * schedule.T
        if abs(u - mp.nint(u)) <= 4 * mp.mpf(2) ** -52 * max(u, 1):
            return mp.nint(u) / schedule.T
    return X


def mp_posterior(schedule, s, t):
    """(lambda_t - lambda_s, coef_x0, coef_xt, var) of q(x_s | x_t, x_0) by conditioning the
    joint of (x_s, x_t) given x_0 (Kingma et al. 2021, App. A), at 50 digits from the defining
    alpha and sigma; None where alpha_s = 0."""
    a, sg = mp_alpha_sigma(schedule)
    S, T = mp_time(schedule, s), mp_time(schedule, t)
    a_s, a_t, s_s, s_t = a(S), a(T), sg(S), sg(T)
    if a_s == 0:
        return None
    a_ts = a_t / a_s
    var_ts = s_t**2 - a_ts**2 * s_s**2
    d_lam = (2 * mp.log(a_t) if a_t != 0 else mp.mpf("-inf")) - 2 * mp.log(s_t)
    d_lam -= 2 * mp.log(a_s) - (2 * mp.log(s_s) if s_s != 0 else mp.mpf("-inf"))
    return d_lam, a_s * var_ts / s_t**2, a_ts * s_s**2 / s_t**2, var_ts * s_s**2 / s_t**2
