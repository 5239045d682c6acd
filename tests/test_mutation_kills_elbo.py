"""bits_per_dim's data range and the prior's variance (reference/elbo.py) against closed forms
evaluated with 50-digit mpmath (issue 22, mutation testing).

bits_per_dim: bpd = nats / (d ln 2) + log2(levels / (hi - lo)) (score_sde's offset: 7 bits for
256 levels on [-1, 1]). The prior term: KL(N(a x0, s^2 I) || N(0, v I)) =
(1/2) sum_j [s^2/v - 1 - log(s^2/v) + a^2 x0_j^2 / v], written here in that textbook form (the
module uses expm1(u) - u). Tolerance: a few correctly rounded operations on O(1)-O(10^3)
quantities, 1e-13 relative (the module's expm1 form and this one differ by ~10 ulp at most).
"""

import math

import mpmath as mp
import numpy as np
import pytest

from diffusion_oracle.reference import bits_per_dim
from diffusion_oracle.reference.elbo import ELBOTerms, _prior_kl, gaussian_ddpm_elbo
from diffusion_oracle.reference.schedules import DiscreteSchedule
from diffusion_oracle.reference.targets import Gaussian


def _bpd(nats, d, levels=None, lo=-1.0, hi=1.0):
    with mp.workdps(50):
        out = mp.mpf(nats) / (d * mp.log(2))
        if levels is not None:
            out += mp.log(mp.mpf(levels) / (mp.mpf(hi) - mp.mpf(lo)), 2)
        return float(out)


@pytest.mark.parametrize(
    "nats, d, levels, rng_",
    [(1234.5, 3072, None, None), (1234.5, 3072, 256, None), (50.0, 2, 256, (0.0, 1.0)),
     (50.0, 2, 256, (-3.0, 5.0)), (7.0, 1, 2, (0.0, 255.0))],
)  # fmt: skip
def test_bits_per_dim_against_the_formula(nats, d, levels, rng_):
    kw = {} if rng_ is None else {"data_range": rng_}
    lo, hi = rng_ or (-1.0, 1.0)
    want = _bpd(nats, d, levels, lo, hi)
    got = bits_per_dim(nats, d, levels=levels, **kw)
    assert math.isclose(got, want, rel_tol=1e-13)
    terms = ELBOTerms(np.array([nats]), np.zeros((1, 1)), np.array([0.0]), d)
    assert math.isclose(terms.bits_per_dim(levels=levels, **kw), want, rel_tol=1e-13)


def test_bits_per_dim_offset_is_seven_bits_for_8bit_data_on_minus_one_one():
    assert math.isclose(bits_per_dim(0.0, 5, levels=256) - bits_per_dim(0.0, 5), 7.0, rel_tol=1e-15)


def test_bits_per_dim_bad_input_names_the_argument():
    for bad in ((1.0, 1.0), (1.0, -1.0)):
        with pytest.raises(ValueError, match="data_range must satisfy lo < hi") as info:
            bits_per_dim(1.0, 2, levels=256, data_range=bad)
        assert str(info.value).endswith(f"got ({bad[0]!r}, {bad[1]!r})")
    with pytest.raises(ValueError, match="^data_range must be finite"):
        bits_per_dim(1.0, 2, levels=256, data_range=(np.nan, 1.0))
    with pytest.raises(ValueError, match="^levels must be >= 2"):
        bits_per_dim(1.0, 2, levels=1)
    with pytest.raises(ValueError, match="^d must be >= 1"):
        bits_per_dim(1.0, 0)
    with pytest.raises(ValueError, match="^nats must be finite"):
        bits_per_dim(np.nan, 2)


def _kl_prior(a, s, x0, v):
    with mp.workdps(50):
        a, s, v = mp.mpf(a), mp.mpf(s), mp.mpf(v)
        r = s * s / v
        tot = len(x0) * (r - 1 - mp.log(r)) + sum(a * a * mp.mpf(float(xj)) ** 2 / v for xj in x0)
        return float(tot / 2)


@pytest.mark.parametrize("prior_var", [1.0, 0.25, 4.0])
def test_prior_kl_with_its_variance(prior_var):
    sch = DiscreteSchedule.linear(50)
    a, s = float(sch.alpha(1.0)), float(sch.sigma(1.0))
    x0 = np.array([[0.5, -1.0, 2.0], [0.0, 0.1, -0.3]])
    got = _prior_kl(sch, x0, prior_var)
    want = [_kl_prior(a, s, row, prior_var) for row in x0]
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("prior_var", [1.0, 0.25, 4.0])
def test_gaussian_closed_form_prior_with_its_variance(prior_var):
    """E_{x0 ~ N(mu, Sigma)} KL = (1/2) [d (r - 1 - log r) + a^2 (tr Sigma + |mu|^2) / v]."""
    sch = DiscreteSchedule.linear(50)
    mu, cov = np.array([0.3, -0.7]), np.array([[0.5, 0.1], [0.1, 0.2]])
    terms = gaussian_ddpm_elbo(Gaussian(mu, cov), sch, prior_var=prior_var)
    a, s = float(sch.alpha(1.0)), float(sch.sigma(1.0))
    with mp.workdps(50):
        r = mp.mpf(s) ** 2 / prior_var
        second = mp.mpf(0.7) + mp.mpf(0.3) ** 2 + mp.mpf(0.7) ** 2  # tr Sigma + |mu|^2
        want = float((2 * (r - 1 - mp.log(r)) + mp.mpf(a) ** 2 * second / prior_var) / 2)
    assert math.isclose(float(terms.prior[0]), want, rel_tol=1e-12)
