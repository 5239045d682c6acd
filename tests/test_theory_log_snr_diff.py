"""The difference identities of Schedule.log_snr_diff (theory/log_snr_diff.py): the CAS proves
each, and a perturbed identity fails its check (so the check is not vacuous). The float code's
agreement with 50-digit mpmath is tests/test_numerics_posterior.py."""

import pytest
import sympy as sp

from diffusion_oracle.theory import TOPICS
from diffusion_oracle.theory.log_snr_diff import IDENTITIES, DerivationError, check_identity, s, t


def test_every_identity_is_proved():
    d = TOPICS["log_snr_diff"]()
    assert set(d.results) == set(IDENTITIES)


@pytest.mark.parametrize("name", sorted(IDENTITIES))
@pytest.mark.parametrize(
    "perturb",
    [
        lambda e: e * (1 + sp.Rational(1, 10**6)),  # a relative error of 1e-6
        lambda e: e + (t - s) ** 2 / 1000,  # a wrong second-order term in t - s
        lambda e: e.subs(s, t / 2),  # the identity of another pair
    ],
    ids=["scaled", "second-order", "other-pair"],
)
def test_a_perturbed_identity_fails_its_check(name, perturb):
    identity = IDENTITIES[name][1]
    check_identity(name, identity)  # the unperturbed one passes
    with pytest.raises(DerivationError):
        check_identity(name, perturb(identity))
