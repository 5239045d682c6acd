"""Mutation kill tests for reference/schedules.py (issue 22, docs/mutation.md).

Every expected value comes from an independent oracle: the defining formulas of each schedule
at 50 digits in mpmath (tests/mp_oracle.py: alpha and sigma written naively, derivatives by
mpmath's numerical differentiation), the papers' formulas written out here (Ho et al. 2020 eq. 4,
Nichol & Dhariwal 2021 eq. 17, Karras et al. 2022 eq. 5, Lin et al. 2024 Algorithm 1, the
diffusers "sigmoid" betas) and exact rational arithmetic (fractions.Fraction) for the error-free
helpers. Never a value computed by the module under test. Messages are pinned to name the
argument, the constraint and the value.
"""

import math
import warnings
from fractions import Fraction

import mpmath as mp
import numpy as np
import pytest
from mp_oracle import mp_alpha_sigma, mp_time

from diffusion_oracle.reference import (
    EDM,
    SCHEDULES,
    DiscreteSchedule,
    Flow,
    Schedule,
    SubVP,
    VEGeometric,
    VPCosine,
    VPLinear,
    get_schedule,
    karras_sigmas,
    rescale_zero_terminal_snr,
)
from diffusion_oracle.reference.schedules import _compensated_cumsum, _two_prod

mp.mp.dps = 50

# small dyadic betas, one interval much steeper than the others
BETAS = np.array([0.125, 0.0625, 0.5, 0.25, 0.375])
ZBETAS = np.array([0.125, 0.25, 0.5, 1.0])  # beta_T = 1: zero terminal SNR

# factories: every schedule is built inside the test that uses it (mutmut attributes a
# constructor's mutants only to tests that run it; a schedule built at import is built once,
# unmutated)
CONT = {
    "vp-linear": lambda: VPLinear(0.3, 7.0),
    "vp-cosine": lambda: VPCosine(0.008),
    "vp-cosine-s0": lambda: VPCosine(0.0),
    "vp-cosine-s02": lambda: VPCosine(0.2),
    "vp-cosine-s1": lambda: VPCosine(1.0),
    "ve": lambda: VEGeometric(0.05, 20.0),
    "edm": lambda: EDM(0.01, 30.0, 5.0),
    "subvp": lambda: SubVP(0.3, 7.0),
    "flow": lambda: Flow(),
}
DISC = {
    "ddpm-5": lambda: DiscreteSchedule(BETAS),
    "ddpm-zsnr": lambda: DiscreteSchedule(ZBETAS),
}
ALL = {**CONT, **DISC}
# off the nodes of the discrete schedules (T = 5 and 4)
TIMES = [1e-3, 0.1, 0.37, 0.55, 0.62, 0.77, 0.93]


def mp_lam(schedule):
    a, s = mp_alpha_sigma(schedule)

    def lam(u):
        au, su = a(u), s(u)
        if au == 0:
            return mp.mpf("-inf")
        if su == 0:
            return mp.mpf("inf")
        return 2 * mp.log(au) - 2 * mp.log(su)

    return lam


def mp_values(schedule, t):
    """Every public quantity at the mpf time t from the defining alpha, sigma."""
    a, s = mp_alpha_sigma(schedule)
    lam = mp_lam(schedule)
    # one-sided differences staying inside the interval (left limit for discrete schedules)
    kw = dict(direction=-1, h=mp.mpf(10) ** -28)
    da, ds, dl = mp.diff(a, t, **kw), mp.diff(s, t, **kw), mp.diff(lam, t, **kw)
    A, S, L = a(t), s(t), lam(t)
    f = da / A
    g2 = 2 * S * ds - 2 * f * S**2
    return {
        "alpha": A, "sigma": S, "log_alpha": mp.log(A), "log_sigma": mp.log(S),
        "log_snr": L, "snr": mp.exp(L), "d_alpha": da, "d_sigma": ds, "d_log_snr": dl,
        "d_snr": mp.exp(L) * dl, "f": f, "g_squared": g2, "g": mp.sqrt(g2),
        "sigma_edm": S / A,
    }  # fmt: skip


QUANTS = ("alpha", "sigma", "log_alpha", "log_sigma", "log_snr", "snr", "d_alpha", "d_sigma",
          "d_log_snr", "d_snr", "f", "g_squared", "g", "sigma_edm")  # fmt: skip


def close(got, ref, rtol=1e-12, atol=0.0):
    ref = float(ref)
    return abs(got - ref) <= rtol * abs(ref) + atol


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_quantity_against_the_definition(name):
    sch = ALL[name]()
    ts = np.array(TIMES)
    for q in QUANTS:
        arr = getattr(sch, q)(ts)
        assert isinstance(arr, np.ndarray) and arr.shape == ts.shape, (name, q)
        for i, t in enumerate(TIMES):
            if name == "ddpm-zsnr" and t > 0.75:  # alpha = 0 on the last interval (end values)
                continue
            ref = mp_values(sch, mp.mpf(t))[q]
            one = getattr(sch, q)(t)
            assert type(one) is float, (name, q)
            atol = 1e-13 if q in ("log_alpha", "log_snr") else 0.0
            assert close(one, ref, 1e-11, atol), (name, q, t, one, mp.nstr(ref, 17))
            assert arr[i] == one, (name, q, t)


@pytest.mark.parametrize("name", ["vp-linear", "subvp"])
def test_beta_of_the_linear_schedules(name):
    sch = CONT[name]()
    if hasattr(sch, "beta"):
        assert sch.beta(0.25) == pytest.approx(0.3 + 0.25 * 6.7, rel=1e-15)
        assert sch.beta(np.array([0.0, 1.0])).tolist() == pytest.approx([0.3, 7.0], rel=1e-15)
    # g^2 = beta for VP-linear, beta (1 - e^{-2B}) for sub-VP (Song et al. 2021, eq. 11, 29)
    t = 0.4
    beta = 0.3 + t * 6.7
    B = 0.3 * t + 6.7 * t * t / 2
    want = beta if name == "vp-linear" else beta * -math.expm1(-2 * B)
    assert sch.g_squared(t) == pytest.approx(want, rel=1e-14)
    assert sch.f(t) == pytest.approx(-0.5 * beta, rel=1e-15)


def test_end_values():
    """The documented limits at t = 0 and 1 (no NaN, no warning)."""
    with np.errstate(all="raise"):
        v = VPLinear(0.3, 7.0)
        assert v.sigma(0.0) == 0.0 and v.log_sigma(0.0) == -math.inf
        assert v.log_snr(0.0) == math.inf and v.snr(0.0) == math.inf
        c = VPCosine(0.008)
        assert c.alpha(1.0) == 0.0 and c.log_alpha(1.0) == -math.inf
        assert c.log_snr(1.0) == -math.inf and c.snr(1.0) == 0.0
        assert c.d_snr(1.0) == 0.0
        assert c.sigma(0.0) == 0.0
        f = Flow()
        assert f.alpha(1.0) == 0.0 and f.sigma(0.0) == 0.0 and f.log_snr(1.0) == -math.inf
        z = DiscreteSchedule(ZBETAS)
        assert z.alpha(1.0) == 0.0 and z.d_alpha(1.0) == 0.0 and z.d_snr(0.9) == 0.0
        assert z.sigma(0.0) == 0.0 and math.copysign(1.0, z.sigma(0.0)) == 1.0
        assert z.d_sigma(0.9) == 0.0


@pytest.mark.parametrize("name", sorted(ALL))
def test_log_snr_range_and_inverse_against_the_definition(name):
    sch = ALL[name]()
    lam = mp_lam(sch)
    lo, hi = sch.log_snr_range()
    assert lo == float(lam(mp.mpf(1))) or close(lo, lam(mp.mpf(1)), 1e-13)
    assert hi == (math.inf if sch.kind != "ve" else float(lam(mp.mpf(0))))
    for t in TIMES:
        if isinstance(sch, DiscreteSchedule) and np.isneginf(sch._ell[-1]) and t > 0.75:
            continue
        target = float(lam(mp.mpf(t)))
        got = sch.t_from_log_snr(target)
        assert type(got) is float
        assert abs(got - t) <= 1e-11 * t, (name, t, got)
        # the EDM-sigma inverse: sigma/alpha = exp(-lambda/2)
        got2 = sch.t_from_sigma_edm(math.exp(-0.5 * target))
        assert abs(got2 - t) <= 1e-11 * t, (name, t, got2)
    arr = sch.t_from_log_snr(np.array([hi, lo]))
    assert arr.tolist() == [0.0, 1.0] or (np.isneginf(lo) and arr[0] == 0.0)


def test_inverse_messages():
    v = VPLinear(0.3, 7.0)
    lo = v.log_snr_range()[0]
    with pytest.raises(ValueError) as e:
        v.t_from_log_snr(lo - 1.0)
    assert str(e.value) == (
        f"log_snr must lie in [{lo!r}, inf] for VPLinear(beta_min=0.3, beta_max=7.0), "
        f"got {lo - 1.0!r}"
    )
    with pytest.raises(ValueError, match=r"^log_snr must not be NaN, got nan$"):
        v.t_from_log_snr(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match=r"^sigma_edm must be > 0, got 0.0$"):
        v.t_from_sigma_edm(0.0)
    z = DiscreteSchedule(ZBETAS)
    gap = float(z.log_snr_at(3))
    with pytest.raises(ValueError) as e:
        z.t_from_log_snr(gap - 1.0)
    assert str(e.value) == (
        f"log_snr must be -inf or lie in [{gap!r}, inf] for DiscreteSchedule(custom): with zero "
        f"terminal SNR lambda jumps from lambda_(T-1) = {gap!r} to -inf, so (-inf, {gap!r}) is "
        f"not attained; got {gap - 1.0!r}"
    )
    assert z.t_from_log_snr(-math.inf) == 1.0
    assert z.t_from_log_snr(gap) == 0.75  # lambda_(T-1) itself is attained, at t = (T-1)/T


# pairs (s, t): s < t, s > t, close, far, across intervals, on nodes of T = 5 and 4
PAIRS = [(0.1, 0.37), (0.37, 0.1), (0.55, 0.55 + 1e-9), (0.3, 0.9), (0.2, 0.4), (0.4, 0.6),
         (1e-3, 0.62), (0.25, 0.5), (0.05, 0.15), (0.61, 0.63)]  # fmt: skip


@pytest.mark.parametrize("name", sorted(ALL))
def test_log_snr_diff_against_the_definition(name):
    sch = ALL[name]()
    lam = mp_lam(sch)
    s = np.array([p[0] for p in PAIRS])
    t = np.array([p[1] for p in PAIRS])
    arr = sch.log_snr_diff(s, t)
    for i, (a, b) in enumerate(PAIRS):
        if isinstance(sch, DiscreteSchedule) and np.isneginf(sch._ell[-1]) and max(a, b) > 0.75:
            continue
        ref = lam(mp_time(sch, b)) - lam(mp_time(sch, a))
        got = sch.log_snr_diff(a, b)
        assert type(got) is float
        assert close(got, ref, 1e-10), (name, a, b, got, mp.nstr(ref, 17))
        assert arr[i] == got
    assert sch.log_snr_diff(0.3, 0.3) == 0.0
    # the data end: lambda(0) = +inf (not VE/EDM), so the difference to any later t is -inf
    if sch.kind != "ve":
        assert sch.log_snr_diff(0.0, 0.5) == -math.inf
        assert sch.log_snr_diff(0.5, 0.0) == math.inf
    else:
        assert close(sch.log_snr_diff(0.0, 0.5), lam(mp.mpf(0.5)) - lam(mp.mpf(0)), 1e-13)
    assert sch.log_snr_diff(0.0, 0.0) == 0.0
    # broadcasting: (2, 1) with (3,)
    out = sch.log_snr_diff(np.array([[0.1], [0.2]]), np.array([0.3, 0.4, 0.5]))
    assert out.shape == (2, 3)
    assert close(out[1, 2], lam(mp.mpf(0.5)) - lam(mp.mpf(0.2)), 1e-10)


def test_log_snr_diff_messages_and_tiny_times():
    v = VPLinear(0.3, 7.0)
    with pytest.raises(ValueError) as e:
        v.log_snr_diff(np.zeros(2), np.full(3, 0.5))
    assert str(e.value) == "s and t must broadcast together, got shapes (2,) and (3,)"
    with pytest.raises(ValueError, match=r"^s must lie in \[0.0, 1.0\], got 1.5$"):
        v.log_snr_diff(1.5, 0.5)
    with pytest.raises(ValueError, match=r"^t must lie in \[0.0, 1.0\], got -0.5$"):
        v.log_snr_diff(0.5, -0.5)
    # s, t so small that B underflows to 0: lambda ~ -log t (VP), -2 log t (sub-VP)
    s, t = 1e-320, 3e-320
    assert v.log_snr_diff(s, t) == pytest.approx(-math.log(3.0), rel=1e-3)
    assert SubVP(0.3, 7.0).log_snr_diff(s, t) == pytest.approx(-2 * math.log(3.0), rel=1e-3)
    # dB = (t - s) beta_min, B_s and B_t all underflow to 0 (beta_min = 0.1, t = 3 s = 3 x the
    # smallest subnormal): the limit lambda ~ -log(beta_min t) gives -log(t/s) = -log 3
    s, t = 5e-324, 1.5e-323
    v = VPLinear(0.1, 20.0)
    assert v.log_snr_diff(s, t) == pytest.approx(-math.log(3.0), rel=1e-12)
    assert v.log_snr_diff(t, s) == pytest.approx(math.log(3.0), rel=1e-12)
    assert SubVP(0.1, 20.0).log_snr_diff(s, t) == pytest.approx(-2 * math.log(3.0), rel=1e-12)
    # the cosine schedule's midpoint branches (k m above and below pi/4), far apart in t
    c = VPCosine(0.3)
    lam = mp_lam(c)
    for a, b in [(0.7, 0.95), (0.01, 0.2), (0.45, 0.99)]:
        assert close(c.log_snr_diff(a, b), lam(mp.mpf(b)) - lam(mp.mpf(a)), 1e-12)
    # discrete: both ends on one node, and t = 1 with zero terminal SNR
    d = DiscreteSchedule(BETAS)
    assert d.log_snr_diff(0.4, 0.4 * (1 + 2e-16)) == 0.0
    z = DiscreteSchedule(ZBETAS)
    assert z.log_snr_diff(0.5, 1.0) == -math.inf
    # both ends snap to the node T of a zero-SNR schedule (ell_T = -inf): the same level, 0
    assert z.log_snr_diff(1.0 - 1e-16, 1.0) == 0.0
    assert z.log_snr_diff(1.0, 1.0 - 1e-16) == 0.0


@pytest.mark.parametrize("name", sorted(DISC))
def test_discrete_log_snr_diff_at_and_near_nodes(name):
    sch = DISC[name]()
    lam = mp_lam(sch)
    T = sch.T
    for a, b in [(1 / T, 3 / T), (2 / T, 2 / T + 0.05), (1 / T - 0.05, 2 / T), (0.02, 1 / T),
                 (1 / T, 1 / T + 1e-12), (3 / T, 3 / T - 1e-11), (0.1, 0.11)]:  # fmt: skip
        # nodes computed in float are the nodes themselves (the 4-ulp snap)
        got = sch.log_snr_diff(a, b)
        ref = lam(mp_time(sch, b)) - lam(mp_time(sch, a))
        assert close(got, ref, 1e-9), (name, a, b, got, mp.nstr(ref, 17))


def test_discrete_index_access():
    d = DiscreteSchedule(BETAS, name="mine")
    ab = [Fraction(1)]
    for b in BETAS:
        ab.append(ab[-1] * (1 - Fraction(float(b))))
    assert d.T == 5 and d.name == "mine" and repr(d) == "DiscreteSchedule(mine)"
    assert d.alphas.tolist() == [float(1 - Fraction(float(b))) for b in BETAS]
    assert np.allclose(d.alpha_bar, [float(x) for x in ab], rtol=1e-15, atol=0)
    for n in range(6):
        abn = mp.mpf(ab[n].numerator) / ab[n].denominator
        assert close(d.log_alpha_bar[n], mp.log(abn), 1e-15, 1e-300)
        ref = mp.inf if n == 0 else mp.log(abn / (1 - abn))
        got = d.log_snr_at(n)
        assert type(got) is float and (got == ref if n == 0 else close(got, ref, 1e-14))
    assert d.log_snr_at(np.array([1, 2])).shape == (2,)
    assert d.t_of(2) == 0.4 and type(d.t_of(2)) is float
    assert d.t_of(np.array([0, 5])).tolist() == [0.0, 1.0]
    assert d.index_of(0.4) == 2 and type(d.index_of(0.4)) is int
    idx = d.index_of(np.array([0.0, 0.2, 1.0]))
    assert idx.tolist() == [0, 1, 5] and idx.dtype == np.int64  # integer indices
    assert (d.t_of(idx) == [0.0, 0.2, 1.0]).all()
    assert d.index_of(0.4 + 1e-10) == 2  # within 1e-9 T of the node
    with pytest.raises(ValueError, match=r"^t must be on the grid n/T with T=5, got 0.5$"):
        d.index_of(0.5)
    with pytest.raises(ValueError, match=r"^n must lie in \[0, T=5\], got 6$"):
        d.t_of(np.array([1, 6]))
    with pytest.raises(ValueError, match=r"^n must lie in \[0, T=5\], got -1$"):
        d.log_snr_at(-1)
    with pytest.raises(TypeError, match=r"^n must be an integer index, got str '2'$"):
        d.t_of("2")
    with pytest.raises(TypeError, match=r"^n must be an integer index, got 2.0 of dtype float64$"):
        d.t_of(2.0)
    # read-only arrays
    with pytest.raises(ValueError):
        d.betas[0] = 0.5
    with pytest.raises(ValueError):
        d.log_alpha_bar[0] = 0.5


def test_discrete_derivatives_at_a_node_are_left_limits():
    d = DiscreteSchedule(BETAS)
    T = 5
    for n in range(1, 6):
        ell = math.log1p(-BETAS[n - 1])
        assert d.f(n / T) == pytest.approx(0.5 * T * ell, rel=1e-15)
        assert d.g_squared(n / T) == pytest.approx(-T * ell, rel=1e-15)
    # at t = 0 the first interval's slope
    assert d.f(0.0) == pytest.approx(0.5 * T * math.log1p(-BETAS[0]), rel=1e-15)


def test_discrete_construction_messages():
    with pytest.raises(TypeError, match=r"^name must be a str, got int 3$"):
        DiscreteSchedule(BETAS, name=3)
    with pytest.raises(ValueError) as e:
        DiscreteSchedule(np.zeros((2, 2)) + 0.1)
    assert str(e.value) == "betas must be a 1-D array with at least one entry, got shape (2, 2)"
    with pytest.raises(ValueError) as e:
        DiscreteSchedule(np.array([]))
    assert str(e.value) == "betas must be a 1-D array with at least one entry, got shape (0,)"
    msg = "betas must lie in (0, 1) (beta_T = 1 allowed for zero terminal SNR), got "
    for betas, tail in [([0.1, 0.0, 0.2], "betas[1] = 0.0"), ([0.1, 1.0, 0.2], "betas[1] = 1.0"),
                        ([0.1, 0.2, 1.5], "betas[2] = 1.5"), ([0.1, 0.2, 0.0], "betas[2] = 0.0"),
                        ([0.1, 0.2, -0.1], "betas[2] = -0.1"), ([1.0], None)]:  # fmt: skip
        if tail is None:
            DiscreteSchedule(np.array(betas))  # a single beta = 1 is the zero-SNR last one
            continue
        with pytest.raises(ValueError) as e:
            DiscreteSchedule(np.array(betas))
        assert str(e.value) == msg + tail
    with pytest.raises(ValueError, match=r"^betas must be finite"):
        DiscreteSchedule(np.array([0.1, np.nan]))


def test_discrete_constructors_against_their_formulas():
    T = 7
    # Ho et al. 2020: linspace(beta_start, beta_end, T)
    d = DiscreteSchedule.linear(T, 0.01, 0.2)
    ref = [0.01 + (0.2 - 0.01) * i / (T - 1) for i in range(T)]
    assert np.allclose(d.betas, ref, rtol=1e-14, atol=0)
    assert repr(d) == "DiscreteSchedule.linear(T=7, 0.01..0.2)"
    # latent diffusion: linspace(sqrt b0, sqrt b1, T)^2
    d = DiscreteSchedule.scaled_linear(T, 0.01, 0.25)
    ref = [(0.1 + 0.4 * i / (T - 1)) ** 2 for i in range(T)]
    assert np.allclose(d.betas, ref, rtol=1e-14, atol=0)
    assert repr(d) == "DiscreteSchedule.scaled_linear(T=7, 0.01..0.25)"
    # diffusers "sigmoid": sigmoid(linspace(-6, 6, T)) (b1 - b0) + b0
    d = DiscreteSchedule.sigmoid(T, 0.01, 0.2)
    ref = [1 / (1 + mp.exp(6 - 12 * mp.mpf(i) / (T - 1))) * (0.2 - 0.01) + 0.01 for i in range(T)]
    assert np.allclose(d.betas, [float(r) for r in ref], rtol=1e-14, atol=0)
    assert repr(d) == "DiscreteSchedule.sigmoid(T=7, 0.01..0.2)"
    # Nichol & Dhariwal eq. 17, s = 0.1, clipped at max_beta = 0.6
    d = DiscreteSchedule.cosine(T, 0.1, 0.6)
    s = mp.mpf(0.1)

    def ab(t):
        return mp.cos((t + s) / (1 + s) * mp.pi / 2) ** 2

    ref = [min(1 - ab(mp.mpf(n) / T) / ab(mp.mpf(n - 1) / T), mp.mpf(0.6)) for n in range(1, T + 1)]
    assert np.allclose(d.betas, [float(r) for r in ref], rtol=1e-13, atol=0)
    assert d.betas[-1] == 0.6 and d.betas[0] < 0.6
    assert repr(d) == "DiscreteSchedule.cosine(T=7, s=0.1)"
    # log-SNR linear: lambda_n = linspace(hi, lo, T), alpha_bar_n = sigmoid(lambda_n)
    d = DiscreteSchedule.log_snr_linear(T, 4.0, -5.0)
    lam = [mp.mpf(4) - 9 * mp.mpf(i) / (T - 1) for i in range(T)]
    abar = [mp.mpf(1)] + [1 / (1 + mp.exp(-x)) for x in lam]
    ref = [1 - abar[n] / abar[n - 1] for n in range(1, T + 1)]
    assert np.allclose(d.betas, [float(r) for r in ref], rtol=1e-13, atol=0)
    assert repr(d) == "DiscreteSchedule.log_snr_linear(T=7, 4.0..-5.0)"
    for n in range(1, T + 1):
        assert close(d.log_snr_at(n), lam[n - 1], 1e-13, 1e-14)
    # from alpha_bar: beta_n = 1 - ab_n / ab_(n-1), the last may be 0 (beta_T = 1)
    abar = np.array([0.9, 0.6, 0.3, 0.0])
    d = DiscreteSchedule.from_alpha_bar(abar, name="ab")
    assert np.allclose(d.betas, [0.1, 1 - 0.6 / 0.9, 0.5, 1.0], rtol=1e-15, atol=0)
    assert d.betas[-1] == 1.0 and repr(d) == "DiscreteSchedule(ab)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # log(0) of the last entry is silenced, not warned
        assert DiscreteSchedule.from_alpha_bar(np.array([0.5, 0.0])).betas.tolist() == [0.5, 1.0]
    d = DiscreteSchedule.from_alpha_bar([0.5, 0.25])
    assert d.betas.tolist() == [0.5, 0.5] and d.name == "custom"


def test_discrete_constructor_messages():
    with pytest.raises(ValueError, match=r"^T must be >= 1, got 0$"):
        DiscreteSchedule.linear(0)
    for ctor in (DiscreteSchedule.linear, DiscreteSchedule.scaled_linear,
                 DiscreteSchedule.sigmoid):  # fmt: skip
        with pytest.raises(ValueError, match=r"^beta_start must lie in \(0, 1\], got 1.5$"):
            ctor(5, 1.5, 0.5)
        with pytest.raises(ValueError, match=r"^beta_end must be > 0, got 0.0$"):
            ctor(5, 0.1, 0.0)
        assert ctor(5, 0.1, 1.0).T == 5  # beta = 1 is inside (0, 1]
    with pytest.raises(ValueError, match=r"^s must be >= 0, got -0.1$"):
        DiscreteSchedule.cosine(5, -0.1)
    with pytest.raises(ValueError, match=r"^max_beta must lie in \(0, 1\], got 0.0$"):
        DiscreteSchedule.cosine(5, 0.008, 0.0)
    with pytest.raises(ValueError, match=r"^max_beta must lie in \(0, 1\], got 1.5$"):
        DiscreteSchedule.cosine(5, 0.008, 1.5)
    assert DiscreteSchedule.cosine(5, 0.0, 1.0).betas[-1] == 1.0
    with pytest.raises(ValueError, match=r"^log_snr_min must be < log_snr_max=2.0, got 2.0$"):
        DiscreteSchedule.log_snr_linear(5, 2.0, 2.0)
    with pytest.raises(ValueError) as e:
        DiscreteSchedule.log_snr_linear(5, 800.0, 1.0)
    assert str(e.value) == ("log_snr_max must leave beta_1 = sigmoid(-log_snr_max) > 0 in float64 "
                            "(at most about 744), got 800.0")  # fmt: skip
    with pytest.raises(ValueError) as e:
        DiscreteSchedule.log_snr_linear(3, 10.0, -200.0)
    assert str(e.value) == (
        "log_snr_min must keep every beta_n = 1 - alpha_bar_n/alpha_bar_(n-1) inside (0, 1) in "
        "float64 with T=3, log_snr_max=10.0 (log-SNR steps below ~36, alpha_bar_T > 0), "
        "got -200.0"
    )
    with pytest.raises(ValueError) as e:
        DiscreteSchedule.from_alpha_bar(np.array([[0.5]]))
    assert str(e.value) == "alpha_bar must be 1-D and non-empty, got shape (1, 1)"
    with pytest.raises(ValueError) as e:
        DiscreteSchedule.from_alpha_bar(np.array([]))
    assert str(e.value) == "alpha_bar must be 1-D and non-empty, got shape (0,)"
    m = "alpha_bar must lie in (0, 1) (the last entry may be 0), got "
    for ab, tail in [
        ([0.5, 0.0, 0.1], "alpha_bar[1] = 0.0"),
        ([0.5, 1.0], "alpha_bar[1] = 1.0"),
        ([0.5, -0.1], "alpha_bar[1] = -0.1"),
        ([1.0, 0.5], "alpha_bar[0] = 1.0"),
    ]:
        with pytest.raises(ValueError) as e:
            DiscreteSchedule.from_alpha_bar(np.array(ab))
        assert str(e.value) == m + tail, ab
    with pytest.raises(ValueError) as e:
        DiscreteSchedule.from_alpha_bar(np.array([0.5, 0.6, 0.1]))
    assert str(e.value) == "alpha_bar must be strictly decreasing, got alpha_bar[1] = 0.6 after 0.5"
    with pytest.raises(ValueError) as e:
        DiscreteSchedule.from_alpha_bar(np.array([0.5, 0.5]))
    assert str(e.value) == "alpha_bar must be strictly decreasing, got alpha_bar[1] = 0.5 after 0.5"


def test_rescale_zero_terminal_snr_against_lin_et_al():
    """Lin et al. 2024, Algorithm 1, written out: sqrt(ab) shifted by sqrt(ab_T), scaled by
    sqrt(ab_1)/(sqrt(ab_1) - sqrt(ab_T)); betas from the ratios, beta_T = 1."""
    d = DiscreteSchedule(BETAS, name="b")
    ab = [mp.mpf(1)]
    for b in BETAS:
        ab.append(ab[-1] * (1 - mp.mpf(float(b))))
    a = [mp.sqrt(x) for x in ab[1:]]
    a0, aT = a[0], a[-1]
    new = [(x - aT) * a0 / (a0 - aT) for x in a]
    nab = [mp.mpf(1)] + [x * x for x in new]
    ref = [1 - nab[n] / nab[n - 1] for n in range(1, len(nab))]
    z = rescale_zero_terminal_snr(d)
    assert z.betas[-1] == 1.0 and z.T == 5
    assert np.allclose(z.betas[:-1], [float(r) for r in ref[:-1]], rtol=1e-13, atol=0)
    assert z.betas[0] == pytest.approx(BETAS[0], rel=1e-15)
    assert repr(z) == "DiscreteSchedule.zero_terminal_snr(b)"
    # already zero terminal SNR: a copy, same betas and name
    z0 = DiscreteSchedule(ZBETAS, name="z")
    zz = rescale_zero_terminal_snr(z0)
    assert zz is not z0 and zz.betas.tolist() == ZBETAS.tolist() and zz.name == "z"
    with pytest.raises(TypeError, match=r"^schedule must be a DiscreteSchedule, got VPLinear$"):
        rescale_zero_terminal_snr(VPLinear())
    with pytest.raises(ValueError, match=r"^schedule.T must be >= 2 for rescaling, got 1$"):
        rescale_zero_terminal_snr(DiscreteSchedule([0.5]))


def test_karras_sigmas_against_eq_5():
    n, smin, smax, rho = 6, 0.05, 40.0, 3.0
    lo, hi = mp.mpf(smin) ** (1 / mp.mpf(rho)), mp.mpf(smax) ** (1 / mp.mpf(rho))
    ref = [(hi + mp.mpf(i) / (n - 1) * (lo - hi)) ** rho for i in range(n)]
    got = karras_sigmas(n, smin, smax, rho, append_zero=False)
    assert got.shape == (n,) and got.dtype == np.float64
    assert got[0] == smax and got[-1] == smin
    assert np.allclose(got, [float(r) for r in ref], rtol=1e-14, atol=0)
    full = karras_sigmas(n, smin, smax, rho)
    assert full.shape == (n + 1,) and full[-1] == 0.0 and (full[:-1] == got).all()
    assert (EDM(smin, smax, rho).karras_grid(n) == full).all()
    assert (EDM(smin, smax, rho).karras_grid(n, append_zero=False) == got).all()
    # defaults: Karras et al. sigma_min 0.002, sigma_max 80, rho 7
    d = karras_sigmas(3)
    mid = (80.0 ** (1 / 7) + 0.5 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    assert d[0] == 80.0 and d[2] == 0.002 and d[1] == pytest.approx(mid, rel=1e-14)
    assert karras_sigmas(2, 0.5, 1.0).tolist() == [1.0, 0.5, 0.0]


def test_karras_and_constructor_messages():
    with pytest.raises(ValueError, match=r"^n must be >= 2, got 1$"):
        karras_sigmas(1)
    with pytest.raises(ValueError, match=r"^sigma_max must be > sigma_min=2.0, got 1.0$"):
        karras_sigmas(5, 2.0, 1.0)
    with pytest.raises(ValueError, match=r"^sigma_max must be > sigma_min=2.0, got 2.0$"):
        karras_sigmas(5, 2.0, 2.0)
    with pytest.raises(TypeError, match=r"^append_zero must be a bool, got int 1$"):
        karras_sigmas(5, append_zero=1)
    with pytest.raises(ValueError) as e:
        karras_sigmas(5, 0.5, 2.0, 1e-4)  # 2^(1e4) overflows: the OverflowError is caught
    assert str(e.value) == (
        "rho must be large enough that sigma_min^(1/rho) and sigma_max^(1/rho) are distinct "
        "positive float64 numbers (sigma_min=0.5, sigma_max=2.0), got 0.0001"
    )
    with pytest.raises(ValueError, match=r"^rho must be large enough.*got 0.0001$"):
        EDM(0.5, 2.0, 1e-4)
    with pytest.raises(ValueError, match=r"^rho must be large enough.*got 0.001$"):
        EDM(0.5, 2.0**1000, 1e-3)  # (2^1000)^1000 overflows too
    with pytest.raises(ValueError, match=r"^rho must be large enough.*got 0.5$"):
        EDM(1e-300, 1.0, 0.5)  # sigma_min^2 underflows to 0: lo = 0
    with pytest.raises(ValueError, match=r"^rho must be large enough"):
        EDM(0.5, 0.5 + 1e-12, 1e6)  # both roots round to 1.0: not distinct
    for cls, a, b in [
        (VPLinear, "beta_min", "beta_max"),
        (SubVP, "beta_min", "beta_max"),
        (VEGeometric, "sigma_min", "sigma_max"),
        (EDM, "sigma_min", "sigma_max"),
    ]:
        with pytest.raises(ValueError) as e:
            cls(2.0, 1.0)
        assert str(e.value) == f"{b} must be > {a}=2.0, got 1.0", cls
        with pytest.raises(ValueError) as e:
            cls(2.0, 2.0)
        assert str(e.value) == f"{b} must be > {a}=2.0, got 2.0", cls
        with pytest.raises(ValueError, match=rf"^{a} must be > 0, got 0.0$"):
            cls(0.0, 1.0)
        with pytest.raises(ValueError, match=rf"^{b} must be > 0, got -1.0$"):
            cls(0.5, -1.0)
    with pytest.raises(ValueError, match=r"^rho must be > 0, got 0.0$"):
        EDM(0.1, 1.0, 0.0)
    with pytest.raises(ValueError, match=r"^s must be >= 0, got -0.5$"):
        VPCosine(-0.5)
    with pytest.raises(ValueError, match=r"^s must be finite"):
        VPCosine(math.inf)


def test_reprs_and_parameters():
    assert repr(VPLinear(0.3, 7.0)) == "VPLinear(beta_min=0.3, beta_max=7.0)"
    assert repr(SubVP(0.3, 7.0)) == "SubVP(beta_min=0.3, beta_max=7.0)"
    assert repr(VPCosine(0.2)) == "VPCosine(s=0.2)"
    assert repr(VEGeometric(0.05, 20.0)) == "VEGeometric(sigma_min=0.05, sigma_max=20.0)"
    assert repr(EDM(0.01, 30.0, 5.0)) == "EDM(sigma_min=0.01, sigma_max=30.0, rho=5.0)"
    assert repr(Flow()) == "Flow()"
    kinds = {"vp-linear": "vp", "vp-cosine": "vp", "ve": "ve", "edm": "ve", "subvp": "subvp",
             "flow": "flow", "ddpm-5": "vp"}  # fmt: skip
    for k, v in kinds.items():
        assert ALL[k]().kind == v
    # defaults (the papers' values)
    assert (VPLinear().beta_min, VPLinear().beta_max) == (0.1, 20.0)
    assert (SubVP().beta_min, SubVP().beta_max) == (0.1, 20.0)
    assert VPCosine().s == 0.008
    assert (VEGeometric().sigma_min, VEGeometric().sigma_max) == (0.01, 50.0)
    e = EDM()
    assert (e.sigma_min, e.sigma_max, e.rho) == (0.002, 80.0, 7.0)
    lin = DiscreteSchedule.linear()
    assert lin.T == 1000 and lin.betas[0] == 1e-4 and lin.betas[-1] == 0.02
    sl = DiscreteSchedule.scaled_linear()
    assert sl.T == 1000 and sl.betas[0] == pytest.approx(0.00085, rel=1e-14)
    assert sl.betas[-1] == pytest.approx(0.012, rel=1e-14)
    cs = DiscreteSchedule.cosine()
    assert (
        cs.T == 1000
        and cs.betas[-1] == 0.999
        and repr(cs) == "DiscreteSchedule.cosine(T=1000, s=0.008)"
    )
    sg = DiscreteSchedule.sigmoid()
    assert sg.T == 1000 and repr(sg) == "DiscreteSchedule.sigmoid(T=1000, 0.0001..0.02)"
    ls = DiscreteSchedule.log_snr_linear()
    assert ls.T == 1000 and repr(ls) == "DiscreteSchedule.log_snr_linear(T=1000, 10.0..-10.0)"


def test_get_schedule():
    want = {"vp-linear": "VPLinear(beta_min=0.1, beta_max=20.0)", "vp-cosine": "VPCosine(s=0.008)",
            "ve": "VEGeometric(sigma_min=0.01, sigma_max=50.0)",
            "edm": "EDM(sigma_min=0.002, sigma_max=80.0, rho=7.0)",
            "subvp": "SubVP(beta_min=0.1, beta_max=20.0)", "flow": "Flow()",
            "ddpm-linear": "DiscreteSchedule.linear(T=1000, 0.0001..0.02)",
            "ddpm-scaled-linear": "DiscreteSchedule.scaled_linear(T=1000, 0.00085..0.012)",
            "ddpm-cosine": "DiscreteSchedule.cosine(T=1000, s=0.008)",
            "ddpm-sigmoid": "DiscreteSchedule.sigmoid(T=1000, 0.0001..0.02)",
            "ddpm-log-snr-linear": "DiscreteSchedule.log_snr_linear(T=1000, 10.0..-10.0)",
            "ddpm-linear-zero-snr":
                "DiscreteSchedule.zero_terminal_snr(linear(T=1000, 0.0001..0.02))"}  # fmt: skip
    assert set(SCHEDULES) == set(want)
    for k, r in want.items():
        assert repr(get_schedule(k)) == r
    with pytest.raises(ValueError) as e:
        get_schedule("vp")
    assert str(e.value) == f"name must be one of {sorted(want)}, got 'vp'"
    with pytest.raises(ValueError) as e:
        get_schedule(3)
    assert str(e.value) == f"name must be one of {sorted(want)}, got 3"


def test_two_prod_is_error_free():
    """Dekker's product: p = fl(a b) and p + e = a b exactly (Fraction arithmetic)."""
    a = np.array([0.1, 1 / 3, 12345.678, -7.25e-3, 3.0])
    b = 1000.0 / 3.0
    p, e = _two_prod(a, b)
    for x, pp, ee in zip(a.tolist(), p.tolist(), e.tolist()):
        assert pp == x * b
        assert Fraction(pp) + Fraction(ee) == Fraction(x) * Fraction(b), x


def test_compensated_cumsum_is_a_double_double_prefix():
    x = np.array([1.0, 1e-17, -1.0 + 2**-30, 3e-18, 1e-16, -0.5, 0.25e-16, 2.0])
    hi, lo = _compensated_cumsum(x)
    run = Fraction(0)
    for i, v in enumerate(x.tolist()):
        run += Fraction(v)
        assert hi[i] == float(run), i  # each prefix correctly rounded here
        assert abs(Fraction(hi[i]) + Fraction(lo[i]) - run) <= Fraction(1, 2**100), i
    # large then small: the small terms are kept in lo
    hi, lo = _compensated_cumsum(np.array([2.0**60, 1.0, 1.0, -(2.0**60)]))
    assert hi.tolist() == [2.0**60, 2.0**60, 2.0**60 + 2, 2.0]
    assert lo[1] == 1.0 and lo[3] == 0.0
    # -inf propagates with lo = 0
    hi, lo = _compensated_cumsum(np.array([-0.5, -math.inf, -1.0]))
    assert hi.tolist() == [-0.5, -math.inf, -math.inf] and lo.tolist() == [0.0, 0.0, 0.0]


def test_discrete_position_snaps_float_nodes():
    """t = n/T computed in float (an ulp off) is the node itself: the left interval's values."""
    T = 1000
    d = DiscreteSchedule.linear(T)
    for n in (7, 29, 999):
        t = (n * 0.1) / (T * 0.1)  # an ulp-off node for some n
        got = d.log_alpha(t)
        assert got == pytest.approx(0.5 * d.log_alpha_bar[n], rel=1e-15)
        # derivative: the left interval's slope (interval n)
        assert d.f(t) == pytest.approx(0.5 * T * math.log1p(-d.betas[n - 1]), rel=1e-14)


def mp_inverse(sch, lam):
    """t(lambda) solved in closed form from each schedule's definition, at 50 digits of the
    result (the quadratic's root cancels: worked at 1500 digits)."""
    with mp.workdps(1500):
        return +_mp_inverse(sch, mp.mpf(lam))


def _mp_inverse(sch, lam):
    if isinstance(sch, (VPLinear, SubVP)):
        b0, b1 = mp.mpf(sch.beta_min), mp.mpf(sch.beta_max)
        if isinstance(sch, VPLinear):  # alpha^2 = e^-B = sigmoid(lambda)
            B = mp.log(1 + mp.exp(-lam))
        else:  # e^lambda = u / (1 - u)^2, u = e^-B: the root of the quadratic in u below 1
            e = mp.exp(lam)
            u = ((2 * e + 1) - mp.sqrt(4 * e + 1)) / (2 * e)
            B = -mp.log(u)
        d = b1 - b0  # B = b0 t + d t^2 / 2
        return 2 * B / (b0 + mp.sqrt(b0**2 + 2 * d * B))
    if isinstance(sch, VPCosine):  # alpha^2 = sigmoid(lambda) = sin^2(psi) / cos^2(phi0)
        s = mp.mpf(sch.s)
        k = mp.pi / 2 / (1 + s)
        psi = mp.asin(mp.cos(k * s) * mp.sqrt(1 / (1 + mp.exp(-lam))))
        return 1 - psi / k
    if isinstance(sch, VEGeometric):  # sigma = exp(-lambda/2)
        lo, hi = mp.mpf(sch.sigma_min), mp.mpf(sch.sigma_max)
        return (-lam / 2 - mp.log(lo)) / (mp.log(hi) - mp.log(lo))
    if isinstance(sch, EDM):
        r = mp.mpf(sch.rho)
        a, b = mp.mpf(sch.sigma_min) ** (1 / r), mp.mpf(sch.sigma_max) ** (1 / r)
        return (mp.exp(-lam / 2) ** (1 / r) - a) / (b - a)
    if isinstance(sch, Flow):  # (1 - t)/t = e^(lambda/2)
        return 1 / (1 + mp.exp(lam / 2))
    raise TypeError(type(sch))


@pytest.mark.parametrize("name", sorted(CONT))
def test_inverse_over_the_whole_log_snr_range(name):
    """t(lambda) at log-SNR from -40 to 60 (or the schedule's range), in particular far out at
    both ends where the starting guess of the Newton polish matters: against the closed-form
    inverse at 50 digits."""
    sch = CONT[name]()
    lo, hi = sch.log_snr_range()
    near_lo = [lo + 1e-6, lo + 1e-3, lo + 0.05, lo + 0.1] if np.isfinite(lo) else []
    lams = [x for x in np.linspace(-40.0, 60.0, 51).tolist() + [-1e-3, 1e-3, 1e-7, 0.0, 300.0]
            + near_lo if lo < x < hi]  # fmt: skip
    got = sch.t_from_log_snr(np.array(lams))
    for x, g in zip(lams, got.tolist()):
        ref = mp_inverse(sch, x)
        assert close(g, ref, 1e-12, 1e-300), (name, x, g, mp.nstr(ref, 17))


def test_a_schedule_without_a_difference_identity_subtracts():
    """The base class's fallback: lambda(t) - lambda(s) from the two log-SNRs (a user schedule
    that implements only the abstract methods)."""

    class Plain(Flow):
        _log_snr_diff = Schedule._log_snr_diff

    lam = mp_lam(Flow())
    p = Plain()
    for a, b in [(0.2, 0.7), (0.7, 0.2), (0.05, 0.06)]:
        assert close(p.log_snr_diff(a, b), lam(mp.mpf(b)) - lam(mp.mpf(a)), 1e-12), (a, b)


@pytest.mark.parametrize("s0", [0.008, 0.0, 0.3])
def test_cosine_log_snr_diff_for_close_pairs(s0):
    """Close pairs, where log_ratio takes the difference identities' d (log1p(d / sin)), on
    both sides of the midpoint switch at pi/4: against the 50-digit definition, to a few ulps
    of the difference itself."""
    c = VPCosine(s0)
    lam = mp_lam(c)
    for a, h in [(0.05, 1e-7), (0.2, 1e-6), (0.3, 0.02), (0.45, 0.01), (0.7, 1e-5),
                 (0.9, 1e-8), (0.999, 1e-7)]:  # fmt: skip
        b = a + h
        ref = lam(mp.mpf(b)) - lam(mp.mpf(a))
        got = c.log_snr_diff(a, b)
        assert close(got, ref, 1e-12), (s0, a, b, got, mp.nstr(ref, 17))


def test_cosine_inverse_beyond_exp_underflow():
    """Fixed in this pass: c = cos^2(phi0) sigmoid(-lambda) is formed in log space."""
    c = VPCosine(0.0)
    for lam in (710.0, 800.0, 1400.0):
        ref = mp_inverse(c, lam)  # (2/pi) arcsin(sigmoid(-lambda)^(1/2)): 4.3e-155 at 710
        assert close(c.t_from_log_snr(lam), ref, 1e-12), lam


def test_discrete_log_snr_diff_keeps_the_prefix_sums_low_parts():
    """log alpha_bar ~ -20.8 after 30 steps of beta = 1/2, then 100 steps of beta = 1e-9: a
    difference of two rounded prefixes has an error of an ulp of 20.8 (3.6e-15) against a dL of
    a few 1e-8, so only the double-double prefix (hi + lo) keeps lambda_t - lambda_s to 1e-12."""
    d = DiscreteSchedule(np.array([0.5] * 30 + [1e-9] * 100))
    lam = mp_lam(d)
    T = d.T
    for a, b in [(35.5, 60.5), (31.25, 129.5), (40.0, 90.0), (30.0, 31.0), (29.5, 64.75)]:
        s, t = a / T, b / T
        ref = lam(mp_time(d, t)) - lam(mp_time(d, s))
        got = d.log_snr_diff(s, t)
        assert close(got, ref, 1e-12), (a, b, got, mp.nstr(ref, 17))
        assert close(d.log_snr_diff(t, s), -ref, 1e-12), (a, b)


def test_more_messages_name_their_argument():
    for args, text in [((5, 0.0), "sigma_min must be > 0, got 0.0"),
                       ((5, 0.1, -1.0), "sigma_max must be > 0, got -1.0"),
                       ((5, 0.1, 1.0, 0.0), "rho must be > 0, got 0.0")]:  # fmt: skip
        with pytest.raises(ValueError) as e:
            karras_sigmas(*args)
        assert str(e.value) == text
    for ctor in (DiscreteSchedule.scaled_linear, DiscreteSchedule.sigmoid,
                 DiscreteSchedule.log_snr_linear, DiscreteSchedule.cosine):  # fmt: skip
        with pytest.raises(ValueError) as e:
            ctor(0)
        assert str(e.value) == "T must be >= 1, got 0", ctor
    with pytest.raises(ValueError, match=r"^log_snr_max must be finite, got nan"):
        DiscreteSchedule.log_snr_linear(5, np.nan, 1.0)
    with pytest.raises(ValueError, match=r"^log_snr_min must be finite, got -inf"):
        DiscreteSchedule.log_snr_linear(5, 1.0, -np.inf)
    with pytest.raises(ValueError, match=r"^max_beta must be finite, got nan"):
        DiscreteSchedule.cosine(5, 0.008, np.nan)
    with pytest.raises(ValueError, match=r"^s must be finite, got nan"):
        DiscreteSchedule.cosine(5, np.nan)


def test_equal_times_at_the_ends_give_zero():
    """s = t is 0 also where lambda is -inf (t = 1 of the cosine and flow paths) or +inf."""
    for sch in (VPCosine(0.008), Flow(), VPLinear(), DiscreteSchedule(ZBETAS)):
        assert sch.log_snr_diff(1.0, 1.0) == 0.0, sch
        assert sch.log_snr_diff(0.0, 0.0) == 0.0, sch
        out = sch.log_snr_diff(np.array([1.0, 0.0, 0.5]), np.array([1.0, 0.0, 0.5]))
        assert out.tolist() == [0.0, 0.0, 0.0], sch


def test_cosine_d_sigma_at_the_data_end_and_s_one():
    """s = 0: sigma = sin(k t), d sigma/dt = k cos(k t) = pi/2 at t = 0 (finite, not 0/0)."""
    assert VPCosine(0.0).d_sigma(0.0) == pytest.approx(math.pi / 2, rel=1e-15)
    assert VPCosine(0.0).d_sigma(0.25) == pytest.approx(
        math.pi / 2 * math.cos(math.pi / 8), rel=1e-14
    )
    c = VPCosine(1.0)  # the general formula (not the s = 0 one) at s = 1
    ref = mp_values(c, mp.mpf(0.3))["d_sigma"]
    assert close(c.d_sigma(0.3), ref, 1e-12)


def test_cosine_inverse_at_very_negative_log_snr():
    """lambda = -700: t = 1 - O(e^-350) rounds to 1.0; the Newton polish must not move the
    start t0 = 1 (alpha(1) = 0, lambda(1) = -inf there)."""
    for s0 in (0.008, 0.0):
        assert VPCosine(s0).t_from_log_snr(-700.0) == 1.0
        assert VPCosine(s0).t_from_log_snr(np.array([-700.0, -40.0]))[0] == 1.0


def test_rescaling_emits_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # log(0) of the new alpha_bar_T is silenced
        z = rescale_zero_terminal_snr(DiscreteSchedule(BETAS))
    assert z.betas[-1] == 1.0


def test_cosine_derivatives_next_to_the_data_end():
    """s = 0, t = 1e-8: sin(phi) = sin(k t) is 1.6e-8; taking it as cos(psi) next to pi/2 would
    keep only ~1e-8 of it. Against the 50-digit definitions; d lambda/dt = -inf at t = 0."""
    c = VPCosine(0.0)
    ref = mp_values(c, mp.mpf(1e-8))
    for q in ("d_alpha", "f", "d_log_snr", "g_squared", "d_sigma"):
        assert close(getattr(c, q)(1e-8), ref[q], 1e-12), q
    assert c.d_log_snr(0.0) == -math.inf
    with pytest.raises(TypeError) as e:
        c.t_from_log_snr("1.0")
    assert str(e.value) == "log_snr must be a real number or array of reals, got str"


def test_inverse_stays_inside_the_unit_interval():
    """Next to lambda(1) the closed-form inverse can round to 1 + 2^-52 (this VP-linear
    schedule): t(lambda) is clipped to [0, 1]; and lambda(1) itself gives t = 1 exactly."""
    v = VPLinear(0.458962910585845, 6.748180865458667)
    lo = v.log_snr_range()[0]
    near = np.nextafter(lo, np.inf)
    got = v.t_from_log_snr(near)
    assert got <= 1.0 and got == pytest.approx(1.0, abs=1e-15)
    assert v.t_from_log_snr(lo) == 1.0
    v = VPLinear(0.6272548579821254, 48.927940560486654)  # the inverse's formula gives 1 + ulp
    assert v.t_from_log_snr(v.log_snr_range()[0]) == 1.0
    with pytest.raises(TypeError) as e:
        DiscreteSchedule("0.1")
    assert str(e.value) == "betas must be a real number or array of reals, got str"


def test_closed_forms_raise_no_floating_point_warning():
    """The public methods silence the overflow of exp(lambda) next to the data end (SNR = inf)
    and the log(0) at the ends: +-inf values, no RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert VPLinear().snr(1e-320) == math.inf
        assert VPLinear().d_snr(1e-320) == -math.inf
        assert EDM().sigma_edm(1.0) == pytest.approx(80.0, rel=1e-14)
        assert VPCosine().snr(1.0) == 0.0


def test_a_bad_beta_before_a_final_one_is_reported():
    with pytest.raises(ValueError) as e:
        DiscreteSchedule(np.array([0.1, 1.5, 1.0]))
    assert str(e.value).endswith("got betas[1] = 1.5")
