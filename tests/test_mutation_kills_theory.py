"""theory.guidance's results against hand-written closed forms (issue 22, mutation testing).

The CAS checks inside the derivation are identities in the scores they are given, so a wrong
score of the assumed Gaussians would keep them true; the returned expressions are therefore
evaluated here at exact rationals and compared with the closed forms for p_t = N(0, v_t),
p_t(x|c) = N(alpha m, v_t), v_t = alpha^2 + sigma^2 (eps = sigma (x - E x_t)/v_t), and the
tilt's variance gap with (alpha, sigma) the Gaussian path's.
"""

import sympy as sp

from diffusion_oracle.theory import derive

# alpha^2 + sigma^2 != 1 (61/100): at a point of the VP path (3/5, 4/5) a score that multiplies
# by alpha^2 + sigma^2 instead of dividing would agree with the closed form
VALS = dict(w=sp.Rational(3, 2), alpha=sp.Rational(3, 5), sigma=sp.Rational(1, 2),
            m=sp.Rational(7, 3), v=sp.Rational(1, 4), x=sp.Rational(-2, 7))  # fmt: skip


def _subs(expr, d):
    sym = {s.name: s for s in expr.free_symbols}
    return sp.nsimplify(expr.subs({sym[k]: val for k, val in VALS.items() if k in sym}))


def test_guidance_results_are_the_closed_forms():
    d = derive("guidance")
    assert set(d.symbols) == {"w", "alpha", "sigma", "m", "v"}
    assert {s.name for s in d.results["cfg_eps"].free_symbols} == {"w", "alpha", "sigma", "m", "x"}
    w, a, s, m, v, x = (VALS[k] for k in ("w", "alpha", "sigma", "m", "v", "x"))
    vt = a**2 + s**2
    eps_u, eps_c = s * x / vt, s * (x - a * m) / vt
    assert sp.simplify(_subs(d.results["cfg_eps"], d) - (eps_u + w * (eps_c - eps_u))) == 0
    prec_t = (1 - w) / vt + w / (a**2 * v + s**2)
    gap = 1 / prec_t - (a**2 / ((1 - w) + w / v) + s**2)
    assert sp.simplify(_subs(d.results["tilted_variance_gap"], d) - gap) == 0
    assert gap != 0
