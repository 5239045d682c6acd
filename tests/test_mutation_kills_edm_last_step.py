"""Mutation kill tests for theory/edm_last_step.py (issue 22, docs/mutation.md).

The derivation's results against closed forms written out here (Karras et al. 2022, eq. 4 and
Table 1: VP sigma = sqrt(exp(beta_d t^2/2 + beta_min t) - 1), s = 1/sqrt(1 + sigma^2); VE
sigma = sqrt(t); EDM sigma = t), evaluated at exact rational points or compared by SymPy
differentiation of the test's own expressions; the Euler step x + (0 - t) f(t, x) written out
from eq. 4 for concrete paths. Each check is shown to raise on a wrong statement.
"""

import pytest
import sympy as sp

from diffusion_oracle.theory import TOPICS
from diffusion_oracle.theory import edm_last_step as th
from diffusion_oracle.theory.derivations import Derivation, DerivationError

t = th.t
R = sp.Rational


def derived():
    # not cached: mutmut maps a mutant to the tests that call the mutated function; a cached
    # result would tie the derivation to the first test only
    return th.check()


def at(expr, **vals):
    sub = {t: vals.get("t", R(1, 3)), th.beta_d: vals.get("bd", R(39, 2)),
           th.beta_min: vals.get("bmin", R(1, 10))}  # fmt: skip
    return sp.nsimplify(sp.N(expr.subs(sub), 60), rational=False)


def euler(sigma, s, x, D):
    """One Euler step of Karras eq. 4 from t to 0, written out."""
    f = (sp.diff(sigma, t) / sigma + sp.diff(s, t) / s) * x - sp.diff(sigma, t) * s / sigma * D
    return x - t * f


def test_check_returns_the_three_derivations():
    ds = derived()
    assert set(ds) == {"edm_last_step_general", "edm_last_step_point_mass", "edm_last_step"}
    for name, d in ds.items():
        assert isinstance(d, Derivation) and d.topic == name and d.steps
    assert TOPICS["edm_last_step"] is th.edm_last_step


def test_vp_results_against_table_1():
    r = derived()["edm_last_step"].results
    bd, bmin = th.beta_d, th.beta_min
    B = bd * t**2 / 2 + bmin * t
    sigma = sp.sqrt(sp.exp(B) - 1)
    s = 1 / sp.sqrt(1 + sigma**2)
    c = 1 - t * sp.diff(sigma, t) / sigma - t * sp.diff(s, t) / s
    for name, want in [("sigma_vp", sigma), ("s_vp", s), ("c_vp", c),
                       ("c_vp_closed", 1 - t * (bmin + bd * t) / (2 * (sp.exp(B) - 1))),
                       ("x0_coef_vp", s - t * sp.diff(s, t))]:  # fmt: skip
        for point in ({}, {"t": R(7, 5), "bd": R(3), "bmin": R(2)}):
            got = at(r[name], **point)
            ref = at(want, **point)
            assert abs(got - ref) <= sp.Float(10) ** -40 * (1 + abs(ref)), (name, point)
    assert r["c_limit_vp"] == R(1, 2)
    d = derived()["edm_last_step"]
    assert d.symbols == {"t": t, "beta_d": bd, "beta_min": bmin}
    # its own steps after the general and point-mass ones: the VP closed form, the limit, the
    # first-order series, the x0 coefficient's second-order term, VE, EDM, sigma = a t^p
    tail = [e for _, e in d.steps[-7:]]
    assert sp.simplify(tail[0] - r["c_vp_closed"]) == 0 and tail[1] == R(1, 2)
    assert sp.expand(tail[2] - (R(1, 2) - (bd - bmin**2) / (4 * bmin) * t)) == 0
    assert sp.expand(tail[3] - (bd / 4 - bmin**2 / 8) * t**2) == 0
    assert sp.simplify(tail[4]) == R(1, 2) and sp.simplify(tail[5]) == 0
    assert sp.simplify(tail[6] - (1 - th.p_)) == 0
    assert len(d.steps) == 5 + 3 + 7
    assert r["c_ve"] == R(1, 2) and r["c_edm"] == 0
    slope = -(bd - bmin**2) / (4 * bmin)
    assert sp.expand(r["c_series_vp"] - (R(1, 2) + slope * t)) == 0
    # the VP c(t) is close to its first-order series at small t (a wrong slope is not)
    small = {"t": R(1, 10**6)}  # the slope term is ~5e-5 there, the second-order one ~5e-9
    assert abs(at(r["c_vp"], **small) - at(R(1, 2) + slope * t, **small)) < 1e-7


def test_general_and_point_mass_landing_points():
    X, D, x0, n = th.X, th.D, th.x0, th.n
    g = derived()["edm_last_step_general"]
    p = derived()["edm_last_step_point_mass"]
    # a concrete path (smooth, positive, c(t) not identically 0: sigma = t^2 + t with
    # s = 1/(1 + t) would give sigma s = t, where c = 0 and the noise term vanishes)
    sig, s = t**2 + 2 * t, 1 / (1 + t**2)
    sig_f, s_f = sp.Function("sigma")(t), sp.Function("s")(t)

    def concrete(e):
        return sp.simplify(e.subs({sig_f: sig, s_f: s}).doit())

    want = euler(sig, s, X, D)
    assert sp.simplify(concrete(g.results["x_N"]) - want) == 0
    c = 1 - t * sp.diff(sig, t) / sig - t * sp.diff(s, t) / s
    assert sp.simplify(c) != 0
    assert sp.simplify(concrete(g.results["c"]) - c) == 0
    assert sp.simplify(concrete(g.results["x0_bias"]) - (s - t * sp.diff(s, t) - 1)) == 0
    x = s * (x0 + sig * n)
    assert sp.simplify(concrete(p.results["x_N"]) - euler(sig, s, x, x0)) == 0
    assert sp.simplify(concrete(p.results["noise"]) - s * sig * c) == 0
    assert sp.simplify(concrete(p.results["x0_coef"]) - (s - t * sp.diff(s, t))) == 0
    # the displayed steps: eq. 4's right-hand side, the Euler step, c, the D-coefficient
    # s - t s' - 1 of statement 1, and the EDM scaling's x_N = D
    f = (sp.diff(sig, t) / sig + sp.diff(s, t) / s) * X - sp.diff(sig, t) * s / sig * D
    want_steps = [f, want, c, (s - t * sp.diff(s, t) - 1) * D, D]
    assert len(g.steps) == 5
    for (_, expr), ref in zip(g.steps, want_steps):
        assert sp.simplify(concrete(expr) - ref) == 0, expr
    want_p = [x, euler(sig, s, x, x0), euler(sig, s, x, x0)]
    assert len(p.steps) == 3
    for (_, expr), ref in zip(p.steps, want_p):
        assert sp.simplify(concrete(expr) - ref) == 0, expr
    r = derived()["edm_last_step"].results
    assert r["x_N_general"] == g.results["x_N"] and r["x_N_point_mass"] == p.results["x_N"]
    assert set(g.symbols) == {"t", "x", "D"} and set(p.symbols) == {"t", "x_0", "n"}


def test_schedule_coefficients():
    co = th.schedule_coefficients()
    assert set(co) == {"vp", "ve", "edm", "linear_vp_scaling", "power"}
    assert sp.simplify(co["ve"][0] - R(1, 2)) == 0 and co["ve"][1] == 1
    assert sp.simplify(co["edm"][0]) == 0 and co["edm"][1] == 1
    assert sp.simplify(co["power"][0] - (1 - th.p_)) == 0 and co["power"][1] == 1
    sl = 1 / sp.sqrt(1 + t**2)
    assert sp.simplify(co["linear_vp_scaling"][0] - t**2 / (1 + t**2)) == 0
    assert sp.simplify(co["linear_vp_scaling"][1] - (sl - t * sp.diff(sl, t))) == 0
    # vp_sigma / vp_scale with explicit parameters
    B = 3 * t**2 / 2 + 2 * t
    assert sp.simplify(th.vp_sigma(3, 2) - sp.sqrt(sp.exp(B) - 1)) == 0
    assert sp.simplify(th.vp_scale(3, 2) - sp.exp(-B / 2)) == 0
    assert sp.simplify(th.noise_coefficient(t**3, sp.exp(t)) - (1 - 3 - t)) == 0


def test_checks_raise_on_a_wrong_statement():
    th._check("holds", t - t)
    with pytest.raises(DerivationError) as e:
        th._check("two is one", sp.Integer(1))
    assert str(e.value) == "CAS check failed: two is one; residual 1"
    assert issubclass(DerivationError, AssertionError)
