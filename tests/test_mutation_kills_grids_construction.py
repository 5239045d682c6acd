"""reference/grids.py: respaced grids and the Grid record (issue 22, mutation testing: the
survivors of its first mutmut run).

- ``respaced_grid`` against the published table (Lin et al. 2024, arXiv:2305.08891, Table 2:
  T = 1000, 10 steps, each spacing) and against the docstring's formulas evaluated here in exact
  rational arithmetic for step counts that do not divide T;
- ``Grid``'s cached columns against VPLinear's closed form written here (beta(t) = b0 + (b1 -
  b0) t, alpha^2 = exp(-int beta), alpha^2 + sigma^2 = 1), its final node (the data: alpha 1,
  sigma 0, log-SNR +inf, ...), its repr, and every validation message.
"""

import math
import warnings
from fractions import Fraction as F

import numpy as np
import pytest

from diffusion_oracle.reference.grids import Grid, make_grid, respaced_grid
from diffusion_oracle.reference.schedules import DiscreteSchedule, VPLinear

T = 1000
TABLE2 = {  # Lin et al. 2024, Table 2 (0-based timesteps, T = 1000, 10 sampling steps)
    "linspace": [999, 888, 777, 666, 555, 444, 333, 222, 111, 0],
    "leading": [900, 800, 700, 600, 500, 400, 300, 200, 100, 0],
    "trailing": [999, 899, 799, 699, 599, 499, 399, 299, 199, 99],
}


def _half_even(q: F) -> int:
    """round half to even of a rational (NumPy's and Python's rounding)."""
    return round(q)


def _expected(spacing, T, N, offset=0):
    """The docstring's formulas, exact; repeated timesteps removed, decreasing."""
    if spacing == "full":
        k = list(range(T - 1, -1, -1))
    elif spacing == "leading":
        k = [i * (T // N) + offset for i in range(N)][::-1]
    elif spacing == "trailing":
        k = [_half_even(T - F(i * T, N)) - 1 for i in range(N)]
    else:
        k = [_half_even(F(i * (T - 1), N - 1)) if N > 1 else 0 for i in range(N)][::-1]
    return sorted(set(k), reverse=True)


def _check(g, sch, k):
    want_t = [F(v + 1, sch.T) for v in k]
    assert g.t.tolist() == [float(v) for v in want_t] + [0.0]
    assert g.final_zero is True and g.steps == len(k) and g.refines is False
    assert g.sigma[-1] == 0.0 and g.alpha[-1] == 1.0


@pytest.mark.parametrize("spacing", sorted(TABLE2))
def test_respaced_grid_is_the_published_table(spacing):
    sch = DiscreteSchedule.linear(T)
    g = respaced_grid(sch, 10, spacing)
    _check(g, sch, TABLE2[spacing])
    assert g.family == f"respaced-{spacing}"
    if spacing == "leading":  # diffusers' steps_offset = 1 shifts every timestep up by one
        shifted = [v + 1 for v in TABLE2[spacing]]
        _check(respaced_grid(sch, 10, spacing, steps_offset=1), sch, shifted)


def test_respaced_grid_defaults_to_trailing_without_offset():
    sch = DiscreteSchedule.linear(T)
    assert respaced_grid(sch, 10).t.tolist() == respaced_grid(sch, 10, "trailing").t.tolist()
    _check(respaced_grid(sch, 10), sch, TABLE2["trailing"])


@pytest.mark.parametrize("N", [1, 2, 3, 7, 29, 31, 58, 62, 97, 99, 100])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_respaced_grid_formulas(spacing, N):
    sch = DiscreteSchedule.linear(100)
    g = respaced_grid(sch, N, spacing)
    if spacing != "linspace":
        _check(g, sch, _expected(spacing, 100, N))
        return
    # linspace(0, T - 1, N) lands on exact halves for some N (T = 100, N = 99: node 49 is 49.5);
    # float linspace puts such a node an ulp to either side (diffusers rounds the same float
    # array), so at an exact tie either neighbour is accepted
    nodes = [F(i * 99, N - 1) if N > 1 else F(0) for i in range(N)][::-1]
    got = [round(v * 100) - 1 for v in g.t[:-1]]
    assert len(got) == N
    for k, q in zip(got, nodes):
        assert k in ({math.floor(q), math.ceil(q)} if q.denominator == 2 else {round(q)}), (k, q)
    assert g.t[-1] == 0.0 and g.final_zero and g.steps == N


def test_respaced_grid_full():
    sch = DiscreteSchedule.linear(12)
    g = respaced_grid(sch, 12, "full")
    _check(g, sch, list(range(11, -1, -1)))
    assert g.family == "respaced-full"


def _raises(exc, message, fn, *args, **kw):
    with pytest.raises(exc) as e:
        fn(*args, **kw)
    assert str(e.value) == message, str(e.value)


def test_respaced_grid_messages():
    sch = DiscreteSchedule.linear(10)
    _raises(TypeError, "schedule must be a DiscreteSchedule, got VPLinear", respaced_grid,
            VPLinear(), 5)  # fmt: skip
    _raises(ValueError, "spacing must be one of ['full', 'leading', 'linspace', 'trailing'], "
            "got 'even'", respaced_grid, sch, 5, "even")  # fmt: skip
    _raises(TypeError, "steps must be an integer, got float 5.0", respaced_grid, sch, 5.0)
    _raises(ValueError, "steps must be >= 1, got 0", respaced_grid, sch, 0)
    for bad in (True, 1.0, "1"):
        _raises(TypeError, f"steps_offset must be an integer, got {type(bad).__name__} {bad!r}",
                respaced_grid, sch, 5, "leading", steps_offset=bad)  # fmt: skip
    assert respaced_grid(sch, 5, "leading", steps_offset=np.int64(1)).t[0] == 1.0
    _raises(ValueError, "steps must be <= T = 10, got 11", respaced_grid, sch, 11)
    _raises(ValueError, "spacing 'full' takes every step: steps must be T = 10, got 5",
            respaced_grid, sch, 5, "full")  # fmt: skip
    # leading k = 8, 6, 4, 2, 0: offset 1 reaches 9 = T - 1 (allowed), 2 passes it, -1 goes below 0
    assert respaced_grid(sch, 5, "leading", steps_offset=1).t[0] == 1.0
    for off in (2, -1):
        _raises(ValueError, f"steps_offset={off} moves timesteps outside [0, 9]", respaced_grid,
                sch, 5, "leading", steps_offset=off)  # fmt: skip


def _vp_linear(t, b0=0.1, b1=20.0):
    """VPLinear in closed form: log alpha = -(b0 t + (b1 - b0) t^2 / 2) / 2."""
    la = -(b0 * t + (b1 - b0) * t * t / 2) / 2
    a = math.exp(la)
    s = math.sqrt(-math.expm1(2 * la))
    da = -a * (b0 + (b1 - b0) * t) / 2
    return dict(alpha=a, sigma=s, log_alpha=la, log_sigma=math.log(s),
                log_snr=2 * la - 2 * math.log(s), sigma_edm=s / a, d_alpha=da,
                d_sigma=-a * da / s)  # fmt: skip


@pytest.mark.parametrize("final_zero", [False, True])
def test_grid_columns_and_final_node(final_zero):
    sch = VPLinear()
    t = [0.9, 0.5, 0.2]
    g = Grid(sch, t, final_zero=final_zero)
    assert g.schedule is sch and g.family == "custom" and g.refines is False
    assert g.steps == len(t) - 1 + final_zero and len(g) == len(t) + final_zero
    assert g.t.tolist() == t + [0.0] * final_zero
    for i, ti in enumerate(t):
        for name, want in _vp_linear(ti).items():
            got = getattr(g, name)[i]
            assert math.isclose(got, want, rel_tol=1e-12), (name, ti, got, want)
        assert math.isclose(g.half_log_snr[i], math.log(g.alpha[i] / g.sigma[i]), rel_tol=1e-12)
    if final_zero:  # the data: alpha 1, sigma 0, lambda +inf, sigma_EDM 0, no motion
        final = dict(alpha=1.0, sigma=0.0, log_alpha=0.0, log_sigma=-np.inf, log_snr=np.inf,
                     sigma_edm=0.0, d_alpha=0.0, d_sigma=0.0, half_log_snr=np.inf,
                     t=0.0)  # fmt: skip
        for name, want in final.items():
            assert getattr(g, name)[-1] == want, name
    for name in ("alpha", "sigma", "log_snr", "half_log_snr", "d_sigma", "t"):
        assert getattr(g, name).dtype == np.float64


def test_grid_with_one_node_and_the_final_jump():
    g = Grid(VPLinear(), [0.5], final_zero=True)
    assert g.steps == 1 and g.t.tolist() == [0.5, 0.0]


def test_grid_repr():
    sch = VPLinear()
    assert repr(Grid(sch, [0.9, 0.5, 0.25])) == (
        "Grid(VPLinear(beta_min=0.1, beta_max=20.0), steps=2, t=0.9..0.25, family='custom')"
    )
    assert repr(Grid(sch, [0.9, 0.5, 0.25], final_zero=True, family="mine")) == (
        "Grid(VPLinear(beta_min=0.1, beta_max=20.0), steps=3, t=0.9..0, family='mine', final "
        "jump to sigma=0)"
    )


def test_grid_messages():
    sch = VPLinear()
    _raises(TypeError, "schedule must be a Schedule, got int", Grid, 3, [0.5, 0.2])
    _raises(TypeError, "final_zero must be a bool, got int 1", Grid, sch, [0.5, 0.2], final_zero=1)
    with pytest.raises(ValueError, match=r"^t must be finite, got nan"):
        Grid(sch, [0.5, np.nan])
    for t, fz in (([[0.5], [0.2]], False), ([0.5], False), ([[0.5]], True), ([], True)):
        shape = np.shape(t)
        _raises(ValueError, f"t must be a 1-D grid with at least 2 nodes, got shape {shape}",
                Grid, sch, t, final_zero=fz)  # fmt: skip
    _raises(ValueError, "t must be strictly decreasing, got t[1] = 0.5, t[2] = 0.5", Grid, sch,
            [0.9, 0.5, 0.5, 0.2])  # fmt: skip
    _raises(ValueError, "t must be strictly decreasing, got t[0] = 0.9, t[1] = 0.95", Grid, sch,
            [0.9, 0.95, 0.97, 0.2])  # fmt: skip
    _raises(ValueError, "t must lie in [0.0, 1.0], got 1.5", Grid, sch, [1.5, 0.2])
    msg = "grid times must have sigma > 0; the jump to sigma = 0 is final_zero=True"
    _raises(ValueError, msg, Grid, sch, [0.5, 0.0])
    # the log of sigma = 0 on the way is not a RuntimeWarning: the ValueError is the report
    with warnings.catch_warnings(), np.errstate(divide="warn", invalid="warn", over="warn"):
        warnings.simplefilter("error")
        _raises(ValueError, msg, Grid, sch, [0.5, 0.0])
        _raises(ValueError, msg, Grid, DiscreteSchedule.linear(10), [0.5, 0.0])


def test_make_grid_messages():
    sch = VPLinear()
    _raises(TypeError, "schedule must be a Schedule, got int", make_grid, 3, 4)
    _raises(TypeError, "final_zero must be a bool, got int 1", make_grid, sch, 4, final_zero=1)
    _raises(TypeError, "steps must be an integer, got float 4.0", make_grid, sch, 4.0)
    _raises(ValueError, "steps must be >= 2, got 1", make_grid, sch, 1)  # with the final jump
    assert make_grid(sch, 1, final_zero=False).t.tolist() == [1.0, 1e-3]
    _raises(ValueError, "kind must be one of ['karras', 'log_snr', 'uniform'], got 'even'",
            make_grid, sch, 4, "even")  # fmt: skip
    _raises(ValueError, "rho must be > 0, got 0.0", make_grid, sch, 4, "karras", rho=0.0)
    _raises(ValueError, "t_start must lie in [0.0, 1.0], got 1.5", make_grid, sch, 4,
            t_start=1.5)  # fmt: skip
    _raises(ValueError, "t_start must be a scalar, got shape (2,)", make_grid, sch, 4,
            t_start=[0.5, 0.4])  # fmt: skip
    # the default t_end (1e-3 where sigma(t_min) = 0) must lie below t_start
    _raises(ValueError, "t_start must be > t_end=0.001, got 0.001", make_grid, sch, 4,
            t_start=1e-3)  # fmt: skip
    _raises(ValueError, "t_end must lie in [0.0, 1.0], got -0.5", make_grid, sch, 4, t_end=-0.5)
    _raises(ValueError, "t_end must be a scalar, got shape (2,)", make_grid, sch, 4,
            t_end=[0.1, 0.2])  # fmt: skip
    _raises(ValueError, "t_end must be < t_start=0.5, got 0.5", make_grid, sch, 4, t_start=0.5,
            t_end=0.5)  # fmt: skip
    _raises(ValueError, "t_end must have sigma > 0 (the final jump to 0 is separate), got 0.0",
            make_grid, sch, 4, t_end=0.0)  # fmt: skip


def test_make_grid_names_the_infinite_end_value():
    from diffusion_oracle.reference.schedules import VPCosine

    sch = VPCosine()
    for kind, what, val in (("log_snr", "log-SNR", "-inf"), ("karras", "sigma_EDM", "inf")):
        _raises(ValueError, f"a {kind} grid needs a finite {what} at t_start; {sch!r} has {val} "
                "at t=1.0: pass t_start < 1.0", make_grid, sch, 4, kind)  # fmt: skip


def test_make_grid_coinciding_nodes_are_reported():
    """3 intervals from 0.5 down to two ulps below it (ulp 2^-54 there): the interior nodes
    0.5 - 2^-53/3 and 0.5 - 2^-53 2/3 both round to one ulp below 0.5, so nodes 1 and 2
    coincide, with 0.5 before them and t_end after."""
    sch = VPLinear()
    t1 = 0.5 - 2**-53
    one_ulp = 0.5 - 2**-54
    with pytest.raises(ValueError) as e:
        make_grid(sch, 4, t_start=0.5, t_end=t1)
    assert str(e.value) == (
        f"steps=4 is too many for a uniform grid from t_start=0.5 to t_end={t1!r} on {sch!r}: "
        f"nodes 1 and 2 coincide in float64 (t = {one_ulp!r}, {one_ulp!r})"
    )


def test_make_grid_raises_no_floating_point_warning():
    """A karras grid from a huge sigma_EDM (VEGeometric up to 1e150) on the way: values, not
    RuntimeWarnings."""
    from diffusion_oracle.reference.schedules import VEGeometric

    with warnings.catch_warnings(), np.errstate(divide="warn", invalid="warn", over="warn"):
        warnings.simplefilter("error")
        for sch in (VEGeometric(1e-3, 1e150), VPLinear()):
            for kind in ("karras", "log_snr", "uniform"):
                g = make_grid(sch, 8, kind)
                assert (np.diff(g.t[:-1]) < 0).all() and g.sigma[-1] == 0.0  # t_end may be 0 (VE)
