"""theory/derivations.py's record of a derivation (issue 22, mutation testing).

- ``_check`` raises DerivationError, naming the claim, exactly when the expression does not
  simplify to 0 (every CAS check of the module goes through it);
- ``Derivation.text`` and ``_repr_markdown_`` render the summary and the numbered steps in the
  documented layout; ``derive`` rejects an unknown topic;
- each derivation names its topic, and its symbols carry the assumptions its statements are
  proven under (module docstring: "builds its statement from symbols with assumptions"): a
  derivation proven over another domain would be returned under the same names, and consumers
  that substitute or lambdify by name would not notice.

The CAS checks' substance is exercised by tests/test_theory.py (they pass; the results against
the float64 reference) and tests/test_mutation_kills_theory.py (guidance's results against
hand-written closed forms).
"""

import pytest
import sympy as sp

from diffusion_oracle.theory import derive
from diffusion_oracle.theory.derivations import Derivation, DerivationError, _check


def test_check_raises_exactly_when_the_residual_is_nonzero():
    a = sp.symbols("a", positive=True)
    _check("an identity", sp.sqrt(a**2) - a)  # 0 under a > 0: no error
    _check("zero", sp.Integer(0))
    for residual in (a, sp.Integer(1), sp.Integer(-1), sp.sqrt(a**2) - a + 1):
        with pytest.raises(DerivationError, match=r"^CAS check failed: my claim; residual "):
            _check("my claim", residual)
    with pytest.raises(DerivationError) as e:
        _check("c", a + 1)
    assert str(e.value) == "CAS check failed: c; residual a + 1"
    assert issubclass(DerivationError, AssertionError)


def test_derivation_renders_its_steps():
    x = sp.symbols("x")
    steps = [("first", x**2), ("second", 1 / x)]
    d = Derivation("topic", "a summary", {"x": x}, {"r": x**2}, steps)
    assert d.text() == "topic: a summary\n\n1. first\n   x**2\n2. second\n   1/x"
    latex = "topic: a summary\n\n1. first\n   x^{2}\n2. second\n   \\frac{1}{x}"
    assert d.text(latex=True) == latex
    assert d._repr_markdown_() == (
        "**topic**: a summary\n\n1. first\n\n$$ x^{2} $$\n\n2. second\n\n$$ \\frac{1}{x} $$\n"
    )
    assert Derivation("t", "s", {}, {}).steps == []


def test_derive_rejects_an_unknown_topic():
    with pytest.raises(ValueError, match=r"^topic must be one of \['conversions', .*got 'nosuch'"):
        derive("nosuch")


# the domain of every returned symbol, and of the other free symbols of the results
DOMAINS = {
    "forward_marginal": {"alpha_s": "positive", "alpha_t": "positive", "sigma_s": "positive",
                         "sigma_t": "positive", "alpha_1": "positive", "alpha_2": "positive"},
    "posterior": {"alpha_s": "positive", "alpha_t": "positive", "sigma_s": "positive",
                  "sigma_t": "positive"},
    "gaussian_kl": {"m_1": "real", "m_2": "real", "v_1": "positive", "v_2": "positive"},
    "conversions": {"alpha": "real", "sigma": "real", "dalpha": "real", "dsigma": "real",
                    "x_0": "real", "epsilon": "real"},
    "guidance": {"w": "positive", "alpha": "positive", "sigma": "positive", "m": "positive",
                 "v": "positive", "x": "real"},
}  # fmt: skip


@pytest.mark.parametrize("topic", sorted(DOMAINS))
def test_derivation_names_its_topic_and_keeps_its_assumptions(topic):
    d = derive(topic)
    assert d.topic == topic and d.text().startswith(f"{topic}: ")
    seen = dict(d.symbols)
    for expr in d.results.values():
        seen.update({s.name: s for s in expr.free_symbols})
    assert set(d.symbols) <= set(DOMAINS[topic]) and set(seen) == set(DOMAINS[topic])
    for name, sym in seen.items():
        assert sym.name == name, (topic, name)
        if DOMAINS[topic][name] == "positive":
            assert sym.is_positive is True, (topic, name)
        else:  # real, of either sign
            assert sym.is_real is True and sym.is_positive is None, (topic, name)


RESULTS = {
    "forward_marginal": {"alpha_ts", "var_ts", "two_step_var"},
    "posterior": {"coef_x0", "coef_xt", "var"},
    "gaussian_kl": {"kl"},
    "conversions": {"x_t", "v", "velocity", "score", "x0_from_v", "eps_from_v",
                    "x0_from_velocity", "eps_from_velocity"},
    "guidance": {"cfg_eps", "tilted_variance_gap"},
}  # fmt: skip


@pytest.mark.parametrize("topic", sorted(RESULTS))
def test_derivation_returns_its_results_by_name(topic):
    assert set(derive(topic).results) == RESULTS[topic]


def test_forward_marginal_results_are_the_closed_forms():
    """alpha_{t|s} = alpha_t/alpha_s, sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2 (Kingma
    et al. 2021, eq. 2-3), two DDPM steps: 1 - a1 a2; at exact rationals."""
    d = derive("forward_marginal")
    R = sp.Rational
    vals = {"alpha_s": R(4, 5), "alpha_t": R(1, 2), "sigma_s": R(1, 3), "sigma_t": R(7, 8),
            "alpha_1": R(2, 3), "alpha_2": R(3, 7)}  # fmt: skip

    def at(expr):
        return expr.subs({s: vals[s.name] for s in expr.free_symbols})

    a_ts = sp.Rational(1, 2) / sp.Rational(4, 5)
    assert at(d.results["alpha_ts"]) == a_ts
    assert at(d.results["var_ts"]) == sp.Rational(7, 8) ** 2 - a_ts**2 * sp.Rational(1, 3) ** 2
    assert at(d.results["two_step_var"]) == 1 - sp.Rational(2, 3) * sp.Rational(3, 7)
