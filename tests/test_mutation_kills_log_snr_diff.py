"""Mutation kill tests for theory/log_snr_diff.py (issue 22, docs/mutation.md).

Each schedule's lambda(u) in IDENTITIES against the textbook log-SNR written out here (Song et
al. 2021 eq. 33-34, Karras et al. 2022 eq. 5, Lipman et al. 2023), and each identity against
lambda(t) - lambda(s) of that textbook form, at exact rational points to 40 digits; the check's
two stages (the rational points, then the proof) each shown to reject a wrong identity; the
returned Derivation's names and values.
"""

import pytest
import sympy as sp

from diffusion_oracle.theory import TOPICS
from diffusion_oracle.theory import log_snr_diff as th

R = sp.Rational
b0, b1, s_min, s_max = th.b0, th.b1, th.s_min, th.s_max
a_edm, D_edm, rho, s, t = th.a_edm, th.D_edm, th.rho, th.s, th.t


def B(u):
    return b0 * u + (b1 - b0) * u**2 / 2


TEXTBOOK = {
    "vp-linear": lambda u: 2 * sp.log(sp.exp(-B(u) / 2) / sp.sqrt(1 - sp.exp(-B(u)))),
    "subvp": lambda u: 2 * sp.log(sp.exp(-B(u) / 2) / (1 - sp.exp(-B(u)))),
    "ve": lambda u: -2 * sp.log(s_min * (s_max / s_min) ** u),
    "edm": lambda u: -2 * sp.log((a_edm + u * D_edm) ** rho),
    "flow": lambda u: 2 * sp.log((1 - u) / u),
}
POINTS = [
    {s: R(1, 5), t: R(7, 9), b0: R(3, 10), b1: 7, a_edm: R(1, 4), D_edm: 2, rho: 3,
     s_min: R(1, 20), s_max: 30},
    {s: R(2, 3), t: R(2, 3) + R(1, 10**6), b0: 1, b1: 12, a_edm: 2, D_edm: R(1, 2), rho: 5,
     s_min: R(1, 2), s_max: 4},
]  # fmt: skip


def derived():
    # not cached: mutmut maps a mutant to the tests that call the mutated function; a cached
    # result would tie the derivation to the first test only
    return TOPICS["log_snr_diff"]()


def val(expr, point):
    return sp.N(expr.subs(point), 50)


@pytest.mark.parametrize("name", sorted(TEXTBOOK))
def test_lambda_and_identity_against_the_textbook(name):
    lam, identity = th.IDENTITIES[name]
    d = derived() if name == "flow" else None
    for point in POINTS:
        for u in (s, t):
            assert abs(val(lam(u) - TEXTBOOK[name](u), point)) < 1e-40, (name, u)
        ref = val(TEXTBOOK[name](t) - TEXTBOOK[name](s), point)
        assert abs(val(identity, point) - ref) < 1e-40 * (1 + abs(ref)), (name, point)
    if d is not None:
        assert all(d.results[k] == th.IDENTITIES[k][1] for k in TEXTBOOK)


def test_the_derivation_record():
    d = derived()
    assert d.topic == "log_snr_diff"
    assert set(d.results) == set(TEXTBOOK) == set(th.IDENTITIES)
    assert d.symbols == {"s": s, "t": t, "beta_min": b0, "beta_max": b1, "rho": rho}
    assert [step for _, step in d.steps] == [th.IDENTITIES[k][1] for k in th.IDENTITIES]
    assert all(
        text == f"{k}: lambda(t) - lambda(s)" for (text, _), k in zip(d.steps, th.IDENTITIES)
    )
    assert d.summary.startswith("lambda(t) - lambda(s) from t - s")
    for x in (s, t, b0, b1, a_edm, D_edm, rho, s_min, s_max):
        assert x.is_positive, x


def test_a_wrong_identity_fails_at_the_rational_points():
    identity = th.IDENTITIES["flow"][1]
    with pytest.raises(th.DerivationError) as e:
        th.check_identity("flow", identity + (t - s) / 100)
    assert str(e.value).startswith("CAS check failed: flow: log_snr_diff = lambda(t) - lambda(s); ")
    # the gap (t - s)/100 = 16/3500 at the first point, to 6 digits
    assert "; 0.00457143 at {s: 1/7, t: 3/5" in str(e.value)


def test_a_wrong_identity_that_vanishes_at_the_points_fails_the_proof():
    """A perturbation zero at both rational points (s = 1/7 and s = 4/9) passes the first stage;
    the CAS proof must still reject it."""
    identity = th.IDENTITIES["ve"][1]
    bump = (s - R(1, 7)) * (s - R(4, 9)) * (t - s)
    with pytest.raises(th.DerivationError) as e:
        th.check_identity("ve", identity + bump)
    assert str(e.value).startswith(
        "CAS check failed: ve: log_snr_diff = lambda(t) - lambda(s); residual "
    )
    th.check_identity("ve", identity)


@pytest.mark.parametrize("name", sorted(TEXTBOOK))
def test_each_identity_passes_and_a_neighbour_fails(name):
    identity = th.IDENTITIES[name][1]
    th.check_identity(name, identity)
    other = "flow" if name != "flow" else "ve"
    with pytest.raises(th.DerivationError):
        th.check_identity(name, th.IDENTITIES[other][1])
