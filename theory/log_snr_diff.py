"""lambda(t) - lambda(s) from t - s: the difference identities behind ``Schedule.log_snr_diff``
(reference/schedules.py) and ``TorchSchedule.log_snr_diff`` (accelerated/schedules.py).

Subtracting two rounded log-SNRs keeps only |lambda| eps / |lambda_t - lambda_s| of the
difference; the posterior q(x_s | x_t, x_0) needs it through -expm1(lambda_t - lambda_s)
(Kingma et al. 2021, VDM, eq. 32), so each schedule forms it from t - s instead. Each identity
below is written with log1p(x) = log(1 + x) and expm1(x) = exp(x) - 1 and proved equal to
lambda(t) - lambda(s) by the CAS (as exp of both sides, where SymPy's log rules need no branch
assumptions). ``IDENTITIES`` maps a schedule to (lambda(u), identity(s, t), symbols), so a test
can perturb one and see the check fail (:func:`check_identity`).
"""

from __future__ import annotations

import sympy as sp

from .derivations import Derivation, DerivationError, _check

s, t = sp.symbols("s t", positive=True)
b0, b1 = sp.symbols("beta_min beta_max", positive=True)
a_edm, D_edm, rho = sp.symbols("a D rho", positive=True)
s_min, s_max = sp.symbols("sigma_min sigma_max", positive=True)


def _B(u):
    return b0 * u + (b1 - b0) * u**2 / 2


# B(t) - B(s) factored through t - s (never two rounded B values)
_dB = (t - s) * (b0 + (b1 - b0) * (t + s) / 2)


def _log1p(x):
    return sp.log(1 + x)


def _expm1(x):
    return sp.exp(x) - 1


IDENTITIES = {
    # VP linear (Song et al. 2021, eq. 33): lambda = -B - log(1 - e^-B)
    "vp-linear": (
        lambda u: -_B(u) - sp.log(1 - sp.exp(-_B(u))),
        -_dB - _log1p(-_expm1(-_dB) / _expm1(_B(s))),
    ),
    # sub-VP (eq. 34): sigma = 1 - e^-B, lambda = -B - 2 log(1 - e^-B)
    "subvp": (
        lambda u: -_B(u) - 2 * sp.log(1 - sp.exp(-_B(u))),
        -_dB - 2 * _log1p(-_expm1(-_dB) / _expm1(_B(s))),
    ),
    # VE geometric: lambda = -2 (log sigma_min + t log(sigma_max / sigma_min))
    "ve": (
        lambda u: -2 * (sp.log(s_min) + u * sp.log(s_max / s_min)),
        -2 * (t - s) * sp.log(s_max / s_min),
    ),
    # EDM (Karras et al. 2022, eq. 5): lambda = -2 rho log(a + t D)
    "edm": (
        lambda u: -2 * rho * sp.log(a_edm + u * D_edm),
        -2 * rho * _log1p((t - s) * D_edm / (a_edm + s * D_edm)),
    ),
    # flow (Lipman et al. 2023): lambda = 2 log((1 - t) / t); (1 - t) - (1 - s) = -(t - s)
    "flow": (
        lambda u: 2 * (sp.log(1 - u) - sp.log(u)),
        2 * (_log1p(-(t - s) / (1 - s)) - _log1p((t - s) / s)),
    ),
}


# exact rational points in the schedules' domains (0 < s < t < 1, beta_min < beta_max, ...)
_POINTS = [
    {s: sp.Rational(1, 7), t: sp.Rational(3, 5), b0: sp.Rational(1, 10), b1: 20, a_edm:
     sp.Rational(2, 5), D_edm: 3, rho: 7, s_min: sp.Rational(1, 100), s_max: 50},
    {s: sp.Rational(4, 9), t: sp.Rational(5, 11), b0: 2, b1: 3, a_edm: 1, D_edm:
     sp.Rational(1, 3), rho: sp.Rational(5, 2), s_min: sp.Rational(1, 3), s_max: 7},
]  # fmt: skip


def check_identity(name: str, identity) -> None:
    """Raise DerivationError unless identity = lambda(t) - lambda(s) for the schedule ``name``
    of IDENTITIES: first at exact rational points to 50 digits (a wrong identity fails there at
    once), then as a proof, exp of both sides simplified by the CAS."""
    lam = IDENTITIES[name][0]
    claim = f"{name}: log_snr_diff = lambda(t) - lambda(s)"
    for point in _POINTS:
        gap = (identity - (lam(t) - lam(s))).subs(point).evalf(50)
        if not abs(gap) < sp.Float(10) ** -40:
            raise DerivationError(f"CAS check failed: {claim}; {sp.N(gap, 6)} at {point}")
    ratio = sp.exp(identity) / sp.exp(lam(t) - lam(s))
    _check(claim, sp.simplify(ratio) - 1)


def _cosine():
    """The cosine schedule (Nichol & Dhariwal 2021, eq. 17), lambda = 2 log sin(k (1 - t)) -
    log sin(k t) - log sin(k (t + 2 s0)) with k (1 + s0) = pi/2: each sine's change is
    sin(x + 2h) - sin(x) = 2 cos(x + h) sin(h), h = k (t - s)/2, and a midpoint cosine past
    pi/4 is the sine of its complement."""
    k = sp.symbols("k", positive=True)
    s0 = sp.pi / (2 * k) - 1  # k (1 + s0) = pi/2 exactly
    m, one_m, h = (t + s) / 2, ((1 - t) + (1 - s)) / 2, k * (t - s) / 2

    def zero(claim, expr):
        _check(claim, sp.simplify(sp.expand(expr.rewrite(sp.exp))))

    E = sp.expand
    zero("sin(k(1-t)) - sin(k(1-s)) = -2 sin(k(m + s0)) sin(h)",
         sp.sin(E(k * (1 - t))) - sp.sin(E(k * (1 - s))) + 2 * sp.sin(E(k * (m + s0))) * sp.sin(h))
    zero("sin(k t) - sin(k s) = 2 cos(k m) sin(h)",
         sp.sin(k * t) - sp.sin(k * s) - 2 * sp.cos(k * m) * sp.sin(h))
    zero("cos(k m) = sin(k (1 - m + s0))", sp.cos(k * m) - sp.sin(E(k * (one_m + s0))))
    zero("sin(k(t + 2 s0)) - sin(k(s + 2 s0)) = 2 cos(k(m + 2 s0)) sin(h)",
         sp.sin(E(k * (t + 2 * s0))) - sp.sin(E(k * (s + 2 * s0)))
         - 2 * sp.cos(E(k * (m + 2 * s0))) * sp.sin(h))
    zero("cos(k(m + 2 s0)) = sin(k (1 - m - s0))",
         sp.cos(E(k * (m + 2 * s0))) - sp.sin(E(k * (one_m - s0))))  # fmt: skip
    # the assembled difference: with each ratio sin(x_t)/sin(x_s) = 1 + d_x / sin(x_s)
    ps, pt, ds_, dt_, ws, wt = sp.symbols("sp_s sp_t sd_s sd_t sw_s sw_t", positive=True)
    ident = (2 * _log1p((pt - ps) / ps) - _log1p((dt_ - ds_) / ds_) - _log1p((wt - ws) / ws))
    lam_t = 2 * sp.log(pt) - sp.log(dt_) - sp.log(wt)
    lam_s = 2 * sp.log(ps) - sp.log(ds_) - sp.log(ws)
    _check("cosine: the three log-ratios sum to lambda(t) - lambda(s)",
           sp.simplify(sp.exp(ident) / sp.exp(lam_t - lam_s)) - 1)  # fmt: skip


def _discrete():
    """Discrete schedules: L = log alpha_bar is linear on each interval, lambda = L - log(1 -
    e^L), so lambda_t - lambda_s = dL - log1p(-expm1(dL) / expm1(-L_s)); and dL from the
    positions: (u_t - u_s) ell inside an interval, else the rest of s's interval, the whole steps
    between and the start of t's (checked on intervals 2 and 5 of symbolic steps)."""
    L, dL = sp.symbols("L_s dL", real=True)

    def lam(x):
        return x - sp.log(1 - sp.exp(x))

    ident = dL - _log1p(-_expm1(dL) / _expm1(-L))
    _check("discrete: lambda(L_s + dL) - lambda(L_s)",
           sp.simplify(sp.exp(ident) / sp.exp(lam(L + dL) - lam(L))) - 1)  # fmt: skip
    ell = sp.symbols("ell_1:7", negative=True)
    lab = [sum(ell[:n], sp.Integer(0)) for n in range(7)]  # log alpha_bar at the nodes
    u_s, u_t = sp.symbols("u_s u_t", positive=True)

    def L_at(u, n):  # on interval n: u in (n - 1, n]
        return lab[n - 1] + (u - (n - 1)) * ell[n - 1]

    n_s, n_t = 2, 5
    rest_s, start_t = n_s - u_s, u_t - (n_t - 1)
    across = rest_s * ell[n_s - 1] + sum(ell[n_s:n_t - 1]) + start_t * ell[n_t - 1]
    _check("discrete: dL across intervals", sp.expand(across - (L_at(u_t, n_t) - L_at(u_s, n_s))))
    _check("discrete: dL inside an interval",
           sp.expand((u_t - u_s) * ell[2] - (L_at(u_t, 3) - L_at(u_s, 3))))  # fmt: skip


def log_snr_diff() -> Derivation:
    """Check every identity of IDENTITIES, the cosine schedule's sum-to-product steps and the
    discrete schedules' position arithmetic; return the identities."""
    for name, (_, identity) in IDENTITIES.items():
        check_identity(name, identity)
    _cosine()
    _discrete()
    return Derivation(
        "log_snr_diff",
        "lambda(t) - lambda(s) from t - s without cancellation, one identity per schedule",
        {"s": s, "t": t, "beta_min": b0, "beta_max": b1, "rho": rho},
        {name: identity for name, (_, identity) in IDENTITIES.items()},
        [(f"{name}: lambda(t) - lambda(s)", identity) for name, (_, identity) in
         IDENTITIES.items()],  # fmt: skip
    )


__all__ = ["IDENTITIES", "DerivationError", "check_identity", "log_snr_diff"]
