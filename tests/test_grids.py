"""Time grids: every schedule x every spacing gives a valid grid or a ValueError naming the
argument; grids record their family and whether they refine (what an order fit needs)."""

import math

import numpy as np
import pytest

from diffusion_oracle.harness import default_t_end, verify
from diffusion_oracle.reference.grids import (
    DISCRETE_SPACINGS,
    GRID_KINDS,
    Grid,
    make_grid,
    respaced_grid,
)
from diffusion_oracle.reference.samplers import Heun
from diffusion_oracle.reference.schedules import (
    EDM,
    SCHEDULES,
    DiscreteSchedule,
    VEGeometric,
    VPLinear,
    karras_sigmas,
)
from diffusion_oracle.reference.targets import get_target

STEPS = (2, 3, 8, 64, 513)
RING8 = get_target("ring8")


def _check_grid(g, sch, kind, steps, final_zero, t_start, t_end, rho=7.0):
    """The grid's own invariants, and its spacing read back from the cached columns."""
    m = g.t.size - final_zero  # model-evaluation nodes
    assert g.steps == steps and g.final_zero == final_zero
    assert g.t[0] == t_start and g.t[m - 1] == t_end
    t = g.t[:m]
    assert (np.diff(t) < 0).all() and t.min() >= sch.t_min and t.max() <= sch.t_max
    assert (g.sigma[:m] > 0).all()
    if final_zero:
        assert g.t[-1] == 0.0 and g.sigma[-1] == 0.0 and g.log_snr[-1] == np.inf
    lam = g.log_snr[:m]
    if kind == "uniform":
        v = t
    else:
        assert np.isfinite(lam).all() and (np.diff(lam) > 0).all()
        v = lam if kind == "log_snr" else np.exp(-lam / (2.0 * rho))  # sigma_EDM^(1/rho)
    if m > 2:  # equal steps in the grid's variable
        d = np.diff(v)
        np.testing.assert_allclose(d, d.mean(), rtol=1e-8, atol=0)


@pytest.mark.parametrize("t_end_from", ["default", "default_t_end"])
@pytest.mark.parametrize("kind", GRID_KINDS)
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_make_grid_is_valid_or_names_t_start(name, kind, t_end_from):
    """Every built-in schedule, spacing and step count, at the default t_end and at the t_end
    verify uses on ring8: a valid grid, or (only where lambda(t_start) = -inf, so that no grid in
    log-SNR or sigma_EDM exists) a ValueError naming t_start. VE + karras and EDM + log_snr used
    to overshoot the schedule's log-SNR range by an ulp at t_end and crash in t_from_log_snr."""
    sch = SCHEDULES[name]()
    t_end = None if t_end_from == "default" else default_t_end(sch, RING8)
    t_start = sch.t_max
    expected_error = kind != "uniform" and not np.isfinite(sch.log_snr(t_start))
    for steps in STEPS:
        for final_zero in (True, False):
            if expected_error:
                what = "log-SNR" if kind == "log_snr" else "sigma_EDM"
                with pytest.raises(ValueError, match=f"needs a finite {what} at t_start") as e:
                    make_grid(sch, steps, kind, t_end=t_end, final_zero=final_zero)
                assert f"pass t_start < {t_start!r}" in str(e.value)
                continue
            g = make_grid(sch, steps, kind, t_end=t_end, final_zero=final_zero)
            want_end = t_end
            if want_end is None:
                want_end = sch.t_min if sch.sigma(sch.t_min) > 0 else 1e-3
            _check_grid(g, sch, kind, steps, final_zero, t_start, want_end)


@pytest.mark.parametrize("name", ["vp-cosine", "flow", "ddpm-linear-zero-snr"])
@pytest.mark.parametrize("kind", ["log_snr", "karras"])
def test_zero_terminal_snr_schedules_take_a_log_snr_grid_below_t_1(name, kind):
    """The documented way out of the t_start error above: t_start < 1 gives a valid grid."""
    sch = SCHEDULES[name]()
    t_end = default_t_end(sch, RING8)
    for steps in STEPS:
        g = make_grid(sch, steps, kind, t_start=0.99, t_end=t_end)
        _check_grid(g, sch, kind, steps, True, 0.99, t_end)


def test_ve_karras_end_node_stays_in_the_log_snr_range():
    """(sigma_min^(1/rho))^rho rounds to 0.010000000000000004 > sigma_min = 0.01 on VEGeometric:
    the end node's log-SNR was 2 ulps above lambda(0) and t_from_log_snr raised."""
    sch = VEGeometric()
    for steps in (2, 8, 16):
        g = make_grid(sch, steps, "karras")
        assert g.t[-2] == 0.0 and g.log_snr[-2] == sch.log_snr_range()[1]


def test_edm_log_snr_and_karras_grids_reach_sigma_min():
    """EDM + log_snr: l0 + 1 * (l1 - l0) != l1 rounded past lambda(0); EDM + karras with rho = 1
    did the same. A log-SNR grid on EDM is well defined (sigma_EDM is finite at both ends)."""
    sch = EDM()
    lo, hi = sch.log_snr_range()
    for steps in (2, 3, 7, 64):
        g = make_grid(sch, steps, "log_snr")
        assert g.log_snr[0] == lo and g.log_snr[-2] == hi
        assert g.sigma_edm[0] == pytest.approx(80.0) and g.sigma_edm[-2] == pytest.approx(0.002)
        for rho in (1.0, 3.0, 7.0, 50.0):
            g = make_grid(sch, steps, "karras", rho=rho)
            assert g.t[-2] == 0.0 and g.t[0] == 1.0 and g.family == f"karras(rho={rho:g})"


def test_karras_grid_on_edm_is_karras_sigmas():
    """On EDM with the schedule's own rho the karras grid is eq. 5 of Karras et al. 2022, i.e. the
    schedule's t_i = 1 - i/(N-1) (independent closed forms)."""
    sch = EDM()
    for n in (2, 5, 18, 100):
        g = make_grid(sch, n, "karras", final_zero=False, rho=sch.rho)
        want = karras_sigmas(n + 1, sch.sigma_min, sch.sigma_max, sch.rho, append_zero=False)
        np.testing.assert_allclose(g.sigma_edm, want, rtol=1e-12)
        np.testing.assert_allclose(g.t, 1.0 - np.arange(n + 1) / n, rtol=0, atol=1e-12)


def test_karras_grid_with_overflowing_sigma_edm_at_t_start():
    """VPLinear(beta_max=2900): lambda(1) = -1450 is finite but sigma_EDM(1) = e^725 overflows;
    the karras nodes are formed in log-SNR, so the grid exists (it used to raise)."""
    sch = VPLinear(beta_max=2900.0)
    assert math.isinf(sch.sigma_edm(1.0)) and np.isfinite(sch.log_snr(1.0))
    g = make_grid(sch, 16, "karras")
    _check_grid(g, sch, "karras", 16, True, 1.0, 1e-3)


def test_too_many_steps_is_a_value_error_naming_steps():
    """Nodes that coincide in float64 (Flow down to t_end = 5e-324, where lambda ~ 1489 and
    t = sigmoid(-lambda/2) underflows) are reported against steps, not as a bad t."""
    with pytest.raises(ValueError, match=r"steps=513 is too many for a log_snr grid"):
        make_grid(SCHEDULES["flow"](), 513, "log_snr", t_start=0.8, t_end=5e-324)


def test_verify_heun_on_ve_with_the_karras_grid():
    """The reported crash: verify on VEGeometric with Heun's default (karras) grid."""
    r = verify(Heun(), "ring8", VEGeometric(), steps=[8, 16], progress=False, tiers=(1,))
    assert all(np.isfinite(row.w2) for row in r.rows)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_default_t_end_is_a_valid_end_time(name):
    """harness.default_t_end on each built-in target: a time with sigma > 0 and sigma_EDM at
    most 5% of the target's smallest standard deviation (or the schedule's end)."""
    sch = SCHEDULES[name]()
    for target in ("ring8", "bimodal1d", "aniso64"):
        tgt = get_target(target)
        t = default_t_end(sch, tgt)
        assert sch.t_min <= t < sch.t_max and sch.sigma(t) > 0
        s_min = math.sqrt(float(np.linalg.eigvalsh(tgt.covs).min()))
        assert sch.sigma_edm(t) <= 0.05 * s_min * (1 + 1e-9) or t == sch.t_min


# ---------------------------------------------------------------- family and refines


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_make_grid_records_its_family_and_refines(name):
    sch = SCHEDULES[name]()
    t_start = 1.0 if np.isfinite(sch.log_snr(1.0)) else 0.99
    for kind in GRID_KINDS:
        for rho in (7.0, 2.5):
            g = make_grid(sch, 8, kind, t_start=t_start, rho=rho)
            assert g.family == (f"karras(rho={rho:g})" if kind == "karras" else kind)
            assert g.refines is True


def test_make_grid_family_names():
    sch = VPLinear()
    assert make_grid(sch, 10, "uniform").family == "uniform"
    assert make_grid(sch, 10, "log_snr").family == "log_snr"
    assert make_grid(sch, 10, "karras").family == "karras(rho=7)"
    assert make_grid(sch, 10, "karras", rho=2.5).family == "karras(rho=2.5)"
    for kind in GRID_KINDS:
        assert make_grid(sch, 10, kind, t_start=0.9, t_end=0.01).refines is True


@pytest.mark.parametrize("kind", GRID_KINDS)
def test_make_grid_families_refine(kind):
    """The property ``refines`` promises: with fixed t_start, t_end the nodes are a function of
    i/N, so the grid of 2N steps contains the grid of N steps as every other node, and the
    largest step shrinks like 1/N."""
    sch = VPLinear()
    grids = [make_grid(sch, n, kind, final_zero=False) for n in (16, 32, 64)]
    for a, b in zip(grids, grids[1:]):
        np.testing.assert_allclose(b.t[::2], a.t, rtol=1e-12, atol=0)
        assert np.abs(np.diff(b.t)).max() < 0.51 * np.abs(np.diff(a.t)).max()


def test_respaced_grids_do_not_refine():
    s = DiscreteSchedule.linear(1000)
    for spacing in DISCRETE_SPACINGS:
        g = respaced_grid(s, 1000 if spacing == "full" else 10, spacing)
        assert g.family == f"respaced-{spacing}" and g.refines is False
    # rounding to integer timesteps: "leading" at 6 steps does not contain its 3-step nodes
    a, b = respaced_grid(s, 3, "leading"), respaced_grid(s, 6, "leading")
    assert not set(np.rint(a.t * 1000)) <= set(np.rint(b.t * 1000))


def test_custom_grid_defaults_and_overrides():
    sch = VPLinear()
    g = Grid(sch, np.array([1.0, 0.5, 0.02]))
    assert g.family == "custom" and g.refines is False
    assert "family='custom'" in repr(g)
    g = Grid(sch, np.array([1.0, 0.5]), final_zero=True, family="mine", refines=np.bool_(True))
    assert g.family == "mine" and g.refines is True and type(g.refines) is bool


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"family": 3}, TypeError, "family must be a str, got int"),
        ({"family": ""}, ValueError, "family must be a non-empty str, got ''"),
        ({"refines": "yes"}, TypeError, "refines must be a bool, got str"),
        ({"refines": 1}, TypeError, "refines must be a bool, got int"),
    ],
)
def test_grid_family_and_refines_are_validated(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Grid(VPLinear(), np.array([1.0, 0.5]), **kwargs)
