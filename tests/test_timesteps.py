"""Timestep samplers: densities normalise, samples follow them (KS at a stated level)."""

import numpy as np
import pytest
from scipy import integrate, stats

from diffusion_oracle.reference import (
    DiscreteSchedule,
    LogitNormalTimesteps,
    LogSNRTimesteps,
    UniformTimesteps,
    VPCosine,
    VPLinear,
)

ALPHA = 1e-6  # false-alarm rate of each KS test (fixed seeds besides)


def _cdf(sampler):
    """Closed-form CDFs written here, independent of the samplers' code."""
    if isinstance(sampler, UniformTimesteps):
        lo, hi = sampler.t_min, sampler.t_max
        return lambda t: (np.asarray(t) - lo) / (hi - lo), lo, hi
    if isinstance(sampler, LogSNRTimesteps):
        sch, lmin, lmax = sampler.schedule, sampler.log_snr_min, sampler.log_snr_max
        lo, hi = sch.t_from_log_snr(lmax), sch.t_from_log_snr(lmin)
        return lambda t: (lmax - np.asarray(sch.log_snr(t))) / (lmax - lmin), lo, hi
    mu, s = sampler.mu, sampler.s
    return lambda t: stats.norm.cdf((np.log(t) - np.log1p(-np.asarray(t)) - mu) / s), 0.0, 1.0


@pytest.mark.parametrize(
    "sampler",
    [
        UniformTimesteps(VPLinear(), 0.001, 1.0),
        LogSNRTimesteps(VPLinear(), log_snr_max=12.0),
        LogSNRTimesteps(VPCosine(), -10.0, 10.0),
        LogitNormalTimesteps(0.0, 1.0),
        LogitNormalTimesteps(0.5, 0.6),
    ],
    ids=lambda s: type(s).__name__,
)
def test_density_normalises_and_samples_follow_it(sampler):
    cdf, lo, hi = _cdf(sampler)
    total = integrate.quad(sampler.pdf, lo, hi, limit=400)[0]
    assert abs(total - 1.0) <= 1e-7
    # pdf is the derivative of the CDF (central differences, relative 1e-6)
    for u in np.linspace(0.1, 0.9, 7):
        t = lo + u * (hi - lo)
        h = 1e-6 * (hi - lo)
        fd = (cdf(t + h) - cdf(t - h)) / (2 * h)
        assert abs(sampler.pdf(t) - fd) <= 1e-6 * (abs(fd) + 1e-3)
    t = sampler.sample(20_000, np.random.default_rng(5))
    assert stats.kstest(t, cdf).pvalue > ALPHA


def test_discrete_uniform_is_on_the_grid():
    s = DiscreteSchedule.linear(10)
    t = UniformTimesteps(s).sample(1000, np.random.default_rng(0))
    n = s.index_of(t)
    assert n.min() >= 1 and n.max() <= 10 and len(np.unique(n)) == 10


def test_log_snr_importance_needs_a_finite_range():
    with pytest.raises(ValueError, match="finite"):
        LogSNRTimesteps(VPCosine())
