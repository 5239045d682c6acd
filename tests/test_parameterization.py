"""Conversions among eps, x0, v, score and flow velocity: exact round trips for every path and
agreement with the target's independently computed predictions."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tolerances import tol

from diffusion_oracle import strategies as dst
from diffusion_oracle.reference import PREDICTIONS, DiscreteSchedule, convert, ring8
from diffusion_oracle.reference import rescale_zero_terminal_snr as ztsnr

VEC = st.lists(st.floats(-10, 10), min_size=3, max_size=3).map(np.array)


def _path(schedule, t):
    return dict(
        alpha=schedule.alpha(t),
        sigma=schedule.sigma(t),
        d_alpha=schedule.d_alpha(t),
        d_sigma=schedule.d_sigma(t),
    )


def _definition(name, x0, eps, p):
    """eps, x0, v = alpha eps - sigma x0, score = -eps/sigma, velocity = alpha' x0 + sigma' eps."""
    return {
        "eps": lambda: eps,
        "x0": lambda: x0,
        "v": lambda: p["alpha"] * eps - p["sigma"] * x0,
        "score": lambda: -eps / p["sigma"],
        "velocity": lambda: p["d_alpha"] * x0 + p["d_sigma"] * eps,
    }[name]()


@given(
    dst.schedules(),
    dst.interior_times(0.01, 0.99),
    VEC,
    VEC,
    st.sampled_from(PREDICTIONS),
    st.sampled_from(PREDICTIONS),
)
def test_round_trip_every_pair(schedule, t, x0, eps, source, target):
    p = _path(schedule, t)
    if p["alpha"] == 0:
        return
    x_t = p["alpha"] * x0 + p["sigma"] * eps
    # the five predictions written out from their definitions (module docstring), not through
    # the code under test (from_x0_eps), so a wrong coefficient there cannot cancel
    value = _definition(source, x0, eps, p)
    out = convert(value, source=source, target=target, x_t=x_t, **p)
    back = convert(out, source=target, target=source, x_t=x_t, **p)
    expected = _definition(target, x0, eps, p)
    b = tol("roundtrip")
    # the conditioning of the 2x2 system: |value| scales and 1/alpha, 1/sigma, 1/D factors
    a, s = p["alpha"], p["sigma"]
    D = abs(a * p["d_sigma"] - s * p["d_alpha"])
    gain = max(1.0, 1.0 / a, 1.0 / s, (abs(p["d_alpha"]) + abs(p["d_sigma"])) / max(D, 1e-300))
    scale = (
        (np.abs(x0).max() + np.abs(eps).max() + 1.0)
        * gain
        * max(1.0, abs(p["d_alpha"]) + abs(p["d_sigma"]), 1.0 / s)
    )
    assert np.abs(out - expected).max() <= b["rtol"] * scale
    assert np.abs(back - value).max() <= b["rtol"] * scale


def test_conversions_agree_with_the_target():
    """The target computes E[x0|x] and E[eps|x] directly; converting one into the other with the
    path identities must give the other (a check of both)."""
    from diffusion_oracle.reference import VPCosine

    gm, sch = ring8(), VPCosine()
    x = gm.diffuse(0.6, 0.8).sample(50, np.random.default_rng(0))
    for t in (0.05, 0.3, 0.7, 0.95):
        a, s = sch.alpha(t), sch.sigma(t)
        kw = dict(x_t=x, alpha=a, sigma=s, d_alpha=sch.d_alpha(t), d_sigma=sch.d_sigma(t))
        x0, eps = gm.denoise(x, a, s), gm.eps(x, a, s)
        assert np.allclose(convert(eps, source="eps", target="x0", **kw), x0, rtol=1e-9, atol=1e-9)
        assert np.allclose(convert(x0, source="x0", target="eps", **kw), eps, rtol=1e-9, atol=1e-9)
        sc = gm.score(x, a, s)
        assert np.allclose(convert(sc, source="score", target="eps", **kw), eps, atol=1e-12)
        v = gm.v(x, a, s)
        assert np.allclose(convert(v, source="v", target="x0", **kw), x0, atol=1e-12)
        u = gm.velocity(x, a, s, sch.d_alpha(t), sch.d_sigma(t))
        assert np.allclose(convert(u, source="velocity", target="eps", **kw), eps, atol=1e-10)


def test_zero_terminal_snr_needs_v_or_x0():
    """At alpha = 0, eps and score carry no information about x0: a clear error, not NaN/inf."""
    sch = ztsnr(DiscreteSchedule.linear(1000))
    x = np.ones((2, 3))
    kw = dict(x_t=x, alpha=sch.alpha(1.0), sigma=sch.sigma(1.0))
    with pytest.raises(ValueError, match="alpha = 0"):
        convert(x, source="eps", target="x0", **kw)
    v_to_x0 = convert(x, source="v", target="x0", **kw)
    assert np.allclose(v_to_x0, -x)  # x0 = alpha x_t - sigma v with alpha = 0, sigma = 1
    with pytest.raises(ValueError, match="sigma = 0"):
        convert(x, source="x0", target="eps", x_t=x, alpha=1.0, sigma=0.0)


def test_velocity_needs_the_derivatives():
    x = np.ones(3)
    with pytest.raises(TypeError, match="d_alpha and d_sigma"):
        convert(x, source="velocity", target="x0", x_t=x, alpha=0.5, sigma=0.5)
