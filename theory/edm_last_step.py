"""The last step of EDM's general sampler (Karras et al. 2022, Algorithm 1; NVlabs/edm
``generate.py``, ``ablation_sampler``) is an Euler step in t from t_{N-1} to t_N = 0 of

    dx/dt = (sigma'/sigma + s'/s) x - (sigma' s / sigma) D(x/s; sigma)          (Karras eq. 4)

(the Heun correction is skipped there because sigma(0) = 0). This module derives, with the
CAS, what that step leaves behind, and compares it with the denoising jump x -> D(x/s; sigma).

Statements (each checked by SymPy when the function runs; failures raise DerivationError):

1. For any denoiser value D at x (abstract sigma(t), s(t)), the Euler step from t to 0 gives

       x_N = D + c(t) (x - s D) + (s - t s' - 1) D,   c(t) = 1 - t sigma'/sigma - t s'/s,

   and x - s D = s sigma eps_hat is the predicted noise (in x units): the step keeps the
   fraction c(t) of the noise; the jump keeps none.
2. For a point mass at x0 (D = x0 for every x) with x = s (x0 + sigma n), n the noise
   direction, x(t) = s(t) (x0 + sigma(t) n) solves the ODE exactly (n is constant along the
   flow, so the exact flow and the jump both land on x0), and the Euler step lands on

       x_N = s x0 (1 - t s'/s) + s sigma n (1 - t sigma'/sigma - t s'/s).

3. Schedules (EDM Table 1): VP sigma = sqrt(exp(B) - 1), B = beta_min t + beta_d t^2/2,
   s = 1/sqrt(1 + sigma^2) = exp(-B/2): c = 1 - t B'/(2 sigma^2) -> 1/2 as t -> 0,
   c = 1/2 - (beta_d - beta_min^2)/(4 beta_min) t + O(t^2); VE sigma = sqrt(t), s = 1: c = 1/2
   for every t; EDM sigma = t, s = 1: c = 0 (the Euler step to 0 is the jump exactly);
   sigma = a t^p, s = 1: c = 1 - p. Linear sigma = t with VP scaling: c = sigma^2/(1+sigma^2).

SymPy only (tests/test_theory.py enforces it). Entry point :func:`check` runs everything.
"""

from __future__ import annotations

import sympy as sp

from .derivations import Derivation, DerivationError

__all__ = [
    "euler_to_zero_general",
    "euler_to_zero_point_mass",
    "noise_coefficient",
    "vp_sigma",
    "vp_scale",
    "schedule_coefficients",
    "edm_last_step",
    "check",
]

t = sp.Symbol("t", positive=True)
beta_d, beta_min = sp.symbols("beta_d beta_min", positive=True)
x0, n, X, D = sp.symbols("x_0 n x D", real=True)
a_, p_ = sp.symbols("a p", positive=True)


def _check(claim: str, expr) -> None:
    """Raise DerivationError unless ``expr`` simplifies to zero."""
    r = sp.simplify(expr)
    if r != 0:
        raise DerivationError(f"CAS check failed: {claim}; residual {r}")


def _abstract():
    """sigma(t), s(t) as undefined functions of t (the statement holds for every path)."""
    return sp.Function("sigma")(t), sp.Function("s")(t)


def _ode_rhs(sig, s, x, den):
    """Karras et al. 2022 eq. 4: dx/dt = (sigma'/sigma + s'/s) x - sigma' s / sigma D."""
    ds, dsig = sp.diff(s, t), sp.diff(sig, t)
    return (dsig / sig + ds / s) * x - dsig * s / sig * den


def _euler_to_zero(sig, s, x, den):
    """x_N = x + (t_N - t) f(t, x) with t_N = 0 (ablation_sampler's last step, h = -t)."""
    return x + (0 - t) * _ode_rhs(sig, s, x, den)


def noise_coefficient(sig, s):
    """c(t) = 1 - t sigma'/sigma - t s'/s: the fraction of the noise s sigma n that one Euler step
    from t to 0 keeps, for sigma, s given as SymPy expressions in :data:`t`."""
    return 1 - t * sp.diff(sig, t) / sig - t * sp.diff(s, t) / s


def vp_sigma(bd=beta_d, bmin=beta_min):
    """EDM's VP noise level sigma(t) = sqrt(exp(beta_d t^2/2 + beta_min t) - 1) (Table 1)."""
    return sp.sqrt(sp.exp(bd * t**2 / 2 + bmin * t) - 1)


def vp_scale(bd=beta_d, bmin=beta_min):
    """EDM's VP scaling s(t) = 1/sqrt(1 + sigma(t)^2) (Table 1)."""
    return 1 / sp.sqrt(1 + vp_sigma(bd, bmin) ** 2)


def euler_to_zero_general() -> Derivation:
    """Statement 1: for any denoiser value D, x_N - D = c (x - s D) + (s - t s' - 1) D."""
    sig, s = _abstract()
    xN = _euler_to_zero(sig, s, X, D)
    c = noise_coefficient(sig, s)
    bias = s - t * sp.diff(s, t) - 1
    claimed = D + c * (X - s * D) + bias * D
    _check("Euler step to 0: x_N = D + c (x - s D) + (s - t s' - 1) D", xN - claimed)
    edm = {sig: t, s: sp.Integer(1)}
    xN_edm = sp.simplify(xN.subs(edm).doit())
    _check("EDM scaling (sigma = t, s = 1): the Euler step to 0 is the jump x_N = D", xN_edm - D)
    return Derivation(
        "edm_last_step_general",
        "one Euler step in t from t to 0 keeps the fraction c(t) of the predicted noise",
        {"t": t, "x": X, "D": D},
        {"x_N": xN, "c": c, "x0_bias": bias},
        [
            ("ODE right-hand side (Karras et al. 2022, eq. 4)", _ode_rhs(sig, s, X, D)),
            ("Euler step with h = 0 - t", xN),
            ("noise coefficient c(t)", c),
            ("x_N - D - c (x - s D), the D-coefficient", sp.simplify(xN - D - c * (X - s * D))),
            ("EDM scaling sigma = t, s = 1: x_N", xN_edm),
        ],
    )


def euler_to_zero_point_mass() -> Derivation:
    """Statement 2: point mass at x0, x = s (x0 + sigma n): exact flow and Euler landing point."""
    sig, s = _abstract()
    x = s * (x0 + sig * n)
    _check(
        "x(t) = s (x0 + sigma n) solves the ODE with D = x0 (n constant along the flow)",
        sp.diff(x, t) - _ode_rhs(sig, s, x, x0),
    )
    xN = _euler_to_zero(sig, s, x, x0)
    c = noise_coefficient(sig, s)
    claimed = s * x0 * (1 - t * sp.diff(s, t) / s) + s * sig * n * c
    _check("x_N = s x0 (1 - t s'/s) + s sigma n (1 - t sigma'/sigma - t s'/s)", xN - claimed)
    return Derivation(
        "edm_last_step_point_mass",
        "point mass: the exact flow lands on x0, the Euler step on x0 + c s sigma n (+ O(t^2) x0)",
        {"t": t, "x_0": x0, "n": n},
        {"x_N": claimed, "noise": s * sig * c, "x0_coef": s - t * sp.diff(s, t)},
        [
            ("state at t_{N-1}", x),
            ("Euler step to 0", sp.expand(xN)),
            ("landing point", claimed),
        ],
    )


def schedule_coefficients() -> dict:
    """c(t) (and the x0 coefficient s - t s') for EDM's schedules, as SymPy expressions in t."""
    out = {}
    sv, ss = vp_sigma(), vp_scale()
    out["vp"] = (noise_coefficient(sv, ss), ss - t * sp.diff(ss, t))
    out["ve"] = (noise_coefficient(sp.sqrt(t), sp.Integer(1)), sp.Integer(1))
    out["edm"] = (noise_coefficient(t, sp.Integer(1)), sp.Integer(1))
    sl = 1 / sp.sqrt(1 + t**2)
    out["linear_vp_scaling"] = (noise_coefficient(t, sl), sl - t * sp.diff(sl, t))
    out["power"] = (noise_coefficient(a_ * t**p_, sp.Integer(1)), sp.Integer(1))
    return out


def edm_last_step() -> Derivation:
    """Statements 1-3 and the VP/VE/EDM limits; returns the VP coefficient as a function of
    (t, beta_d, beta_min) in ``results["c_vp"]`` for numerical evaluation."""
    general = euler_to_zero_general()
    point = euler_to_zero_point_mass()
    co = schedule_coefficients()
    c_vp, x0c_vp = co["vp"]
    B = beta_min * t + beta_d * t**2 / 2
    closed = 1 - t * sp.diff(B, t) / (2 * (sp.exp(B) - 1))
    _check("VP: s = exp(-B/2)", vp_scale() - sp.exp(-B / 2))
    _check("VP: c = 1 - t B'/(2 sigma^2)", c_vp - closed)
    lim = sp.limit(closed, t, 0, "+")
    if sp.simplify(lim - sp.Rational(1, 2)) != 0:
        raise DerivationError(f"CAS check failed: VP c(t) -> 1/2 as t -> 0; got {lim}")
    ser = sp.series(closed, t, 0, 2).removeO()
    slope = -(beta_d - beta_min**2) / (4 * beta_min)
    claim = "VP: c = 1/2 - (beta_d - beta_min^2)/(4 beta_min) t + O(t^2)"
    _check(claim, sp.expand(ser - sp.Rational(1, 2) - slope * t))
    bias_vp = sp.series(x0c_vp - 1, t, 0, 3).removeO()
    claim = "VP: s - t s' - 1 = (beta_d/4 - beta_min^2/8) t^2 + O(t^3)"
    _check(claim, sp.expand(bias_vp - (beta_d / 4 - beta_min**2 / 8) * t**2))
    _check("VE (sigma = sqrt t, s = 1): c = 1/2 for every t", co["ve"][0] - sp.Rational(1, 2))
    _check("EDM (sigma = t, s = 1): c = 0 for every t", co["edm"][0])
    _check("sigma = a t^p, s = 1: c = 1 - p", co["power"][0] - (1 - p_))
    claim = "linear sigma = t with VP scaling: c = t^2/(1 + t^2)"
    _check(claim, co["linear_vp_scaling"][0] - t**2 / (1 + t**2))
    return Derivation(
        "edm_last_step",
        "EDM Algorithm 1's Euler step into t = 0 keeps c(t_{N-1}) of the noise: 1/2 for VE, "
        "-> 1/2 for VP, 0 for EDM's sigma = t, s = 1 (where it is the denoising jump)",
        {"t": t, "beta_d": beta_d, "beta_min": beta_min},
        {
            "c_vp": c_vp,
            "c_vp_closed": closed,
            "x0_coef_vp": x0c_vp,
            "sigma_vp": vp_sigma(),
            "s_vp": vp_scale(),
            "c_ve": co["ve"][0],
            "c_edm": co["edm"][0],
            "c_limit_vp": lim,
            "c_series_vp": ser,
            "x_N_general": general.results["x_N"],
            "x_N_point_mass": point.results["x_N"],
        },
        general.steps
        + point.steps
        + [
            ("VP c(t) closed form", closed),
            ("VP c(t) as t -> 0+", lim),
            ("VP c(t) to first order", ser),
            ("VP x0 coefficient s - t s' - 1 to second order", bias_vp),
            ("VE c(t)", co["ve"][0]),
            ("EDM c(t)", co["edm"][0]),
            ("sigma = a t^p, s = 1: c(t)", sp.simplify(co["power"][0])),
        ],
    )


def check() -> dict:
    """Run every CAS check of this module (raises DerivationError on failure); returns the
    derivations by topic."""
    return {
        "edm_last_step_general": euler_to_zero_general(),
        "edm_last_step_point_mass": euler_to_zero_point_mass(),
        "edm_last_step": edm_last_step(),
    }
