"""theory/: every derivation's CAS check passes, and its expressions, lambdified, agree with the
float64 reference at hypothesis-drawn points (relative 1e-12): a third implementation."""

import ast
import functools
import math
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from diffusion_oracle import strategies as dst
from diffusion_oracle.reference import convert, posterior, transition
from diffusion_oracle.theory import TOPICS, derive

RTOL = 1e-12  # lambdified closed forms vs the reference's log-space forms: a few ulps x cond


@functools.lru_cache(maxsize=None)
def _derived(topic):
    return derive(topic)  # runs the CAS checks once per session


@pytest.mark.parametrize("topic", sorted(TOPICS))
def test_derivation_checks_pass_and_render(topic):
    d = derive(topic)
    assert d.results and d.steps
    assert topic in d.text() and d.text(latex=True) != d.text()


def test_theory_is_sympy_only():
    root = Path(__file__).resolve().parents[1] / "theory"
    allowed = {"sympy", "dataclasses", "__future__"}
    for f in root.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module.split(".")[0]]
            else:
                continue
            assert set(names) <= allowed, f"{f.name} imports {names}"


def _path(schedule, t):
    return {"alpha": schedule.alpha(t), "sigma": schedule.sigma(t)}


@settings(max_examples=40)
@given(dst.schedules(), dst.interior_times(0.01, 0.99), dst.interior_times(0.01, 0.99))
def test_posterior_and_transition_match_the_reference(schedule, t1, t2):
    s, t = sorted((t1, t2))
    if not s < t or schedule.alpha(t) == 0:
        return
    d = _derived("posterior")
    sym = d.symbols
    args = [sym["alpha_s"], sym["alpha_t"], sym["sigma_s"], sym["sigma_t"]]
    vals = [schedule.alpha(s), schedule.alpha(t), schedule.sigma(s), schedule.sigma(t)]
    ref = posterior(schedule, s, t)
    for name, ours in (("coef_x0", ref.coef_x0), ("coef_xt", ref.coef_xt), ("var", ref.var)):
        f = sp.lambdify(args, d.results[name], "mpmath")
        exact = float(f(*vals))
        # the float64 inputs carry ~1 ulp each; the theory form's var has a cancellation
        # sigma_t^2 - alpha_ts^2 sigma_s^2 with condition sigma_t^2/var_ts
        cond = (
            1.0
            if name == "coef_xt"
            else vals[3] ** 2 / max(ref.var / vals[2] ** 2 * vals[3] ** 2, 1e-300)
        )
        assert math.isclose(ours, exact, rel_tol=RTOL * max(1.0, cond), abs_tol=1e-300), (
            name,
            ours,
            exact,
        )
    fm = _derived("forward_marginal")
    tr = transition(schedule, s, t)
    f = sp.lambdify(args, fm.results["alpha_ts"], "mpmath")
    assert math.isclose(tr.mean_coef, float(f(*vals)), rel_tol=RTOL)


@given(dst.schedules(), dst.interior_times(0.01, 0.99), st.floats(-5, 5), st.floats(-5, 5))
def test_conversions_match_the_reference(schedule, t, x0, eps):
    d = _derived("conversions")
    sy = d.symbols
    a, s = schedule.alpha(t), schedule.sigma(t)
    da, ds = schedule.d_alpha(t), schedule.d_sigma(t)
    subs = [sy["alpha"], sy["sigma"], sy["dalpha"], sy["dsigma"], sy["x_0"], sy["epsilon"]]
    vals = [a, s, da, ds, x0, eps]
    xt = a * x0 + s * eps
    kw = dict(x_t=np.array([xt]), alpha=a, sigma=s, d_alpha=da, d_sigma=ds)
    for name in ("v", "velocity", "score"):
        exact = float(sp.lambdify(subs, d.results[name], "mpmath")(*vals))
        ours = convert(np.array([eps]), source="eps", target=name, **kw)[0] if a > 0 else None
        if ours is not None:
            scale = abs(exact) + abs(x0) * max(1, abs(da)) + abs(eps) * max(1, abs(ds), 1 / s)
            assert abs(ours - exact) <= 1e-12 * scale * max(1.0, 1.0 / a), (name, ours, exact)


@given(st.floats(-3, 3), st.floats(-3, 3), st.floats(0.1, 4), st.floats(0.1, 4))
def test_gaussian_kl_matches_numerical_integration(m1, m2, v1, v2):
    d = _derived("gaussian_kl")
    sy = d.symbols
    kl = float(d.results["kl"].subs({sy["m_1"]: m1, sy["m_2"]: m2, sy["v_1"]: v1, sy["v_2"]: v2}))

    def integrand(x):
        l1 = -0.5 * math.log(2 * math.pi * v1) - (x - m1) ** 2 / (2 * v1)
        l2 = -0.5 * math.log(2 * math.pi * v2) - (x - m2) ** 2 / (2 * v2)
        return math.exp(l1) * (l1 - l2)

    num = integrate.quad(
        integrand,
        m1 - 40 * math.sqrt(v1),
        m1 + 40 * math.sqrt(v1),
        epsabs=1e-12,
        epsrel=1e-10,
        limit=200,
    )[0]
    assert math.isclose(kl, num, rel_tol=1e-8, abs_tol=1e-10)


def test_ddim_eta_one_variance_is_the_reference_posterior_variance():
    from diffusion_oracle.reference import VPCosine

    d = _derived("ddim_family")
    sy = d.symbols
    sch = VPCosine()
    for s, t in ((0.1, 0.2), (0.5, 0.9), (0.01, 0.99)):
        vals = {
            sy["alpha_s"]: sch.alpha(s),
            sy["alpha_t"]: sch.alpha(t),
            sy["sigma_s"]: sch.sigma(s),
            sy["sigma_t"]: sch.sigma(t),
        }
        assert math.isclose(
            float(d.results["posterior_var"].subs(vals)), posterior(sch, s, t).var, rel_tol=1e-12
        )


def test_cli_derive(tmp_path):
    import subprocess
    import sys

    exe = [sys.executable, "-m", "diffusion_oracle", "derive"]
    lst = subprocess.run([*exe, "--list"], check=True, capture_output=True, text=True).stdout
    assert all(t in lst for t in TOPICS)
    out = subprocess.run(
        [*exe, "multistep_third_order"], check=True, capture_output=True, text=True
    ).stdout
    assert "c_2*h**3/6" in out
    tex = subprocess.run(
        [*exe, "posterior", "--latex"], check=True, capture_output=True, text=True
    ).stdout
    assert "\\frac" in tex
    bad = subprocess.run([*exe, "nosuch"], capture_output=True, text=True)
    assert bad.returncode == 2 and "topic must be one of" in bad.stderr


def test_edm_preconditioning_matches_the_published_values():
    """Karras et al. 2022, Table 1 / App. B.6 with sigma_data = 0.5: at sigma = 1,
    c_skip = 0.25/1.25, c_out = 0.5/sqrt(1.25), c_in = 1/sqrt(1.25)."""
    d = _derived("edm_preconditioning")
    vals = {d.symbols["sigma"]: 1.0, d.symbols["sigma_d"]: 0.5}
    assert math.isclose(float(d.results["c_skip"].subs(vals)), 0.2, rel_tol=1e-15)
    assert math.isclose(float(d.results["c_out"].subs(vals)), 0.5 / math.sqrt(1.25), rel_tol=1e-15)
    assert math.isclose(float(d.results["c_in"].subs(vals)), 1 / math.sqrt(1.25), rel_tol=1e-15)


@given(
    st.floats(0.05, 1.0),
    st.floats(0.05, 2.0),
    st.floats(-2, 2),
    st.floats(0.1, 3),
    st.floats(-4, 4),
)
def test_tweedie_matches_the_reference_denoiser(a, s, mu, lam, x):
    from diffusion_oracle.reference import Gaussian

    d = _derived("score_equivalences")
    sy = d.symbols
    f = sp.lambdify(
        [sy["alpha"], sy["sigma"], sy["lambda"], sy["mu"], sy["x"]], d.results["tweedie"], "mpmath"
    )
    exact = float(f(a, s, lam, mu, x))
    ours = Gaussian(np.array([mu]), np.array([[lam]])).denoise(np.array([[x]]), a, s)[0, 0]
    assert math.isclose(ours, exact, rel_tol=1e-12, abs_tol=1e-12 * (abs(mu) + abs(x) / a))
