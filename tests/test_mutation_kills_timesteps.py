"""reference/timesteps.py beyond tests/test_timesteps.py (issue 22, mutation testing: the
survivors of its first mutmut run; the samplers there are built at collection time, outside any
test, so their constructors were never checked).

- the densities against closed forms written here: VPLinear's |d lambda/dt| / (range) with
  alpha_bar = exp(-(b0 t + (b1 - b0) t^2/2)), and the logit-normal density from SciPy's normal
  density; 0 outside the range (the range's ends included), 0 at t = 0 and 1 without a
  floating-point warning;
- the draws: shape, range, reproducible from a seed, the grid of a discrete schedule including
  the end nodes whose t T lands an ulp off the integer, and t = sigmoid(mu + s z) with z the
  generator's normals (the class docstring);
- every validation message (DESIGN convention 12).
"""

import math
import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit, logit

from diffusion_oracle.reference import (
    EDM,
    DiscreteSchedule,
    LogitNormalTimesteps,
    LogSNRTimesteps,
    UniformTimesteps,
    VPCosine,
    VPLinear,
)


def _raises(exc, message, fn, *args, **kw):
    with pytest.raises(exc) as e:
        fn(*args, **kw)
    assert str(e.value) == message, str(e.value)


def _strict_fp():
    """NumPy's floating-point warnings as errors (a pdf must not emit any)."""
    w = warnings.catch_warnings()
    w.__enter__()
    warnings.simplefilter("error")
    e = np.errstate(divide="warn", invalid="warn", over="warn")
    e.__enter__()
    return w, e


def test_uniform_messages():
    sch = VPLinear()
    _raises(TypeError, "schedule must be a Schedule, got int", UniformTimesteps, 3)
    _raises(ValueError, "t_min must lie in [0.0, 1.0], got 1.5", UniformTimesteps, sch, 1.5)
    _raises(ValueError, "t_min must be a scalar, got shape (2,)", UniformTimesteps, sch, [0, 0.1])
    _raises(ValueError, "t_max must lie in [0.0, 1.0], got 1.5", UniformTimesteps, sch, 0.1, 1.5)
    _raises(ValueError, "t_max must be a scalar, got shape (1,)", UniformTimesteps, sch, 0.1,
            [0.5])  # fmt: skip
    _raises(ValueError, "t_max must be > t_min=0.5, got 0.5", UniformTimesteps, sch, 0.5, 0.5)
    _raises(ValueError, "t_max must be > t_min=0.5, got 0.25", UniformTimesteps, sch, 0.5, 0.25)
    u = UniformTimesteps(sch, 0.25, 0.75)
    assert u.schedule is sch and u.t_min == 0.25 and u.t_max == 0.75
    _raises(ValueError, "t must lie in [0.25, 0.75], got 0.9", u.pdf, 0.9)
    _raises(ValueError, "n must be >= 1, got 0", u.sample, 0)
    _raises(TypeError, "n must be an integer, got float 2.0", u.sample, 2.0)


def test_uniform_density_and_draws():
    u = UniformTimesteps(VPLinear(), 0.25, 0.75)
    assert u.pdf(0.5) == 2.0 and isinstance(u.pdf(0.5), float)
    p = u.pdf(np.array([0.25, 0.5, 0.75]))
    assert isinstance(p, np.ndarray) and p.tolist() == [2.0, 2.0, 2.0]
    t = u.sample(2000, 3)
    assert t.shape == (2000,) and t.min() >= 0.25 and t.max() <= 0.75
    assert np.array_equal(t, u.sample(2000, 3))  # the seed decides the draws
    assert stats.kstest(t, stats.uniform(0.25, 0.5).cdf).pvalue > 1e-6


def test_discrete_uniform_takes_the_end_nodes_an_ulp_off():
    """t_min T and t_max T an ulp off an integer (0.07 * 100 = 7.000000000000001, 0.29 * 100
    = 28.999999999999996) still mean the nodes 7 and 29; t_min = 0 starts at n = 1."""
    assert 0.07 * 100 != 7 and 0.29 * 100 != 29
    sch = DiscreteSchedule.linear(100)
    n = np.round(UniformTimesteps(sch, 0.07, 0.29).sample(4000, 1) * 100).astype(int)
    assert set(n.tolist()) == set(range(7, 30))
    n = np.round(UniformTimesteps(DiscreteSchedule.linear(10), 0.0, 1.0).sample(500, 2) * 10)
    assert set(n.astype(int).tolist()) == set(range(1, 11))
    n = np.round(UniformTimesteps(DiscreteSchedule.linear(10), 0.3, 0.6).sample(500, 2) * 10)
    assert set(n.astype(int).tolist()) == {3, 4, 5, 6}


def _vp_linear_dlam(t, b0=0.1, b1=20.0):
    """|d lambda/dt| of VPLinear: lambda = log(abar/(1 - abar)), abar = exp(-B), so
    d lambda/dt = -B'/(1 - abar)."""
    B = b0 * t + (b1 - b0) * t * t / 2
    return (b0 + (b1 - b0) * t) / -math.expm1(-B)


def test_log_snr_messages():
    _raises(TypeError, "schedule must be a Schedule, got str", LogSNRTimesteps, "vp")
    sch = VPCosine()
    for kw, span in (({}, "-inf, inf"), ({"log_snr_min": -5.0}, "-5.0, inf"),
                     ({"log_snr_max": 5.0}, "-inf, 5.0")):  # fmt: skip
        with pytest.raises(ValueError) as e:
            LogSNRTimesteps(sch, **kw)
        want = (f"log_snr_min and log_snr_max must be finite; {sch!r} spans [{span}], pass them "
                "explicitly")  # fmt: skip
        assert str(e.value) == want, kw
    with pytest.raises(ValueError, match=r"^log_snr_min must be finite, got nan"):
        LogSNRTimesteps(sch, np.nan, 1.0)
    with pytest.raises(ValueError, match=r"^log_snr_max must be finite, got inf"):
        LogSNRTimesteps(sch, 1.0, np.inf)
    _raises(ValueError, "log_snr_max must be a scalar, got shape (2,)", LogSNRTimesteps, sch,
            -1.0, [1.0, 2.0])  # fmt: skip
    _raises(ValueError, "log_snr_min must be a scalar, got shape (1,)", LogSNRTimesteps, sch,
            [-1.0], 2.0)  # fmt: skip
    _raises(ValueError, "log_snr_min must be < log_snr_max=1.0, got 2.0", LogSNRTimesteps, sch,
            2.0, 1.0)  # fmt: skip
    _raises(ValueError, "log_snr_min must be < log_snr_max=1.0, got 1.0", LogSNRTimesteps, sch,
            1.0, 1.0)  # fmt: skip
    # the range must lie inside the schedule's (EDM: sigma in [0.002, 80])
    lo, hi = EDM().log_snr_range()
    with pytest.raises(ValueError, match=r"^log_snr must lie in"):
        LogSNRTimesteps(EDM(), lo - 1.0, hi)
    with pytest.raises(ValueError, match=r"^log_snr must lie in"):
        LogSNRTimesteps(EDM(), lo, hi + 1.0)
    s = LogSNRTimesteps(sch, -4.0, 6.0)
    assert s.schedule is sch and (s.log_snr_min, s.log_snr_max) == (-4.0, 6.0)
    assert type(s.log_snr_min) is float and type(s.log_snr_max) is float
    _raises(ValueError, "n must be >= 1, got 0", s.sample, 0)


def test_log_snr_density_against_the_closed_form():
    sch = VPLinear()
    s = LogSNRTimesteps(sch, -5.0, 5.0)
    inside = [t for t in np.linspace(0.05, 0.95, 19) if -5 <= sch.log_snr(t) <= 5]
    outside = [t for t in np.linspace(0.05, 0.95, 19) if not -5 <= sch.log_snr(t) <= 5]
    assert len(inside) >= 5 and len(outside) >= 5
    w, e = _strict_fp()
    try:
        for t in inside:
            assert math.isclose(s.pdf(t), _vp_linear_dlam(t) / 10.0, rel_tol=1e-12), t
        assert all(s.pdf(t) == 0.0 for t in outside)
        p = s.pdf(np.array(inside[:2] + outside[:2]))
        assert isinstance(p, np.ndarray) and p.shape == (4,) and p.dtype == np.float64
        assert p[2:].tolist() == [0.0, 0.0] and (p[:2] > 0).all()
        # the range's ends belong to it: a range whose ends are lambda(0.3) and lambda(0.6)
        t_hi, t_lo = 0.3, 0.6
        r = LogSNRTimesteps(sch, float(sch.log_snr(t_lo)), float(sch.log_snr(t_hi)))
        assert r.pdf(t_hi) > 0 and r.pdf(t_lo) > 0
    finally:
        e.__exit__(None, None, None)
        w.__exit__(None, None, None)


def test_log_snr_draws():
    sch = VPLinear()
    s = LogSNRTimesteps(sch, -5.0, 5.0)
    t = s.sample(3000, 11)
    assert t.shape == (3000,) and np.array_equal(t, s.sample(3000, 11))
    lam = np.asarray(sch.log_snr(t))
    assert lam.min() >= -5.0 - 1e-9 and lam.max() <= 5.0 + 1e-9
    assert stats.kstest(lam, stats.uniform(-5.0, 10.0).cdf).pvalue > 1e-6


def test_logit_normal_messages_and_defaults():
    d = LogitNormalTimesteps()
    assert (d.mu, d.s) == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"^mu must be finite, got nan"):
        LogitNormalTimesteps(np.nan)
    _raises(ValueError, "mu must be a scalar, got shape (2,)", LogitNormalTimesteps, [0.0, 1.0])
    _raises(ValueError, "s must be > 0, got 0.0", LogitNormalTimesteps, 0.0, 0.0)
    _raises(ValueError, "s must be a scalar, got shape (2,)", LogitNormalTimesteps, 0.0, [1, 2])
    _raises(ValueError, "t must lie in [0.0, 1.0], got 1.5", d.pdf, 1.5)
    _raises(ValueError, "n must be >= 1, got 0", d.sample, 0)


@pytest.mark.parametrize("mu, s", [(0.0, 1.0), (0.5, 0.6), (-1.0, 2.0)])
def test_logit_normal_density_and_draws(mu, s):
    d = LogitNormalTimesteps(mu, s)
    t = np.array([0.01, 0.2, 0.5, 0.7, 0.99])
    want = stats.norm.pdf(logit(t), mu, s) / (t * (1 - t))
    w, e = _strict_fp()
    try:
        got = d.pdf(t)
        assert isinstance(got, np.ndarray) and np.allclose(got, want, rtol=1e-12, atol=0)
        assert math.isclose(d.pdf(0.2), want[1], rel_tol=1e-12)
        ends = d.pdf(np.array([0.0, 1.0]))
        assert ends.tolist() == [0.0, 0.0] and d.pdf(0.0) == 0.0 and d.pdf(1.0) == 0.0
    finally:
        e.__exit__(None, None, None)
        w.__exit__(None, None, None)
    draws = d.sample(1000, 4)
    z = np.random.default_rng(4).standard_normal(1000)
    assert draws.shape == (1000,) and np.array_equal(draws, expit(mu + s * z))
