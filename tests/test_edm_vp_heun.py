"""EDM's ablation sampler, VP configuration (validation/edm.py; NVlabs/edm generate.py
``ablation_sampler``), and the derivation of its last step (theory/edm_last_step.py;
docs/edm_vp_heun.md): the published Euler step from t_{N-1} = epsilon_s into t_N = 0 keeps
c(epsilon_s) ~ 0.455 of the noise s sigma n, an error floor that no step count removes; with the
denoising jump instead the sampler lands on a point mass to round-off and converges.

The independent oracle for the numbers is the SymPy expression of the derivation, lambdified to
mpmath at 50 digits."""

import functools

import mpmath
import numpy as np
import pytest
import sympy as sp

from diffusion_oracle.reference.exact import gaussian_w2, ideal_output_law, probe_affine
from diffusion_oracle.reference.grids import make_grid
from diffusion_oracle.reference.model import ExactModel
from diffusion_oracle.reference.schedules import VPCosine, VPLinear
from diffusion_oracle.reference.targets import Gaussian, GaussianMixture
from diffusion_oracle.theory import edm_last_step as th
from diffusion_oracle.theory.derivations import Derivation
from diffusion_oracle.validation.edm import edm_ablation_heun, edm_vp_t_steps

BETA_D, BETA_MIN, EPS_S = 19.9, 0.1, 1e-3
X0 = np.array([0.3, -0.7])


@functools.lru_cache(maxsize=None)
def _derivations():
    return th.check()  # runs every CAS check once


@functools.lru_cache(maxsize=None)
def _oracle():
    """c, s, sigma, x0 coefficient s - t s' and sigma' s/sigma of EDM's VP schedule as mpmath
    functions of t (beta_d = 19.9, beta_min = 0.1), from the derivation's expressions."""
    r = _derivations()["edm_last_step"].results
    subs = {th.beta_d: sp.Float(BETA_D, 50), th.beta_min: sp.Float(BETA_MIN, 50)}
    b = r["s_vp"] * (1 - r["c_vp"]) - th.t * sp.diff(r["s_vp"], th.t)  # x_N = c x + b D
    names = {
        "c": r["c_vp"],
        "s": r["s_vp"],
        "sigma": r["sigma_vp"],
        "x0": r["x0_coef_vp"],
        "b": b,
    }
    fns = {k: sp.lambdify([th.t], v.subs(subs), "mpmath") for k, v in names.items()}

    def at(t):
        with mpmath.workdps(50):
            return {k: float(f(mpmath.mpf(float(t)))) for k, f in fns.items()}

    return at


class _PointMass:
    """The exact model of a point mass at ``x0`` (D(x) = x0 for every x); records the last call."""

    prediction = "x0"

    def __init__(self, x0):
        self.x0 = np.asarray(x0, dtype=np.float64)
        self.last = None

    def __call__(self, x, t):
        self.last = (np.array(x, dtype=np.float64), float(t))
        return np.broadcast_to(self.x0, x.shape).copy()


class _Recording:
    """Wraps a model, recording the state of its last call."""

    def __init__(self, model):
        self.model, self.prediction, self.last = model, model.prediction, None

    def __call__(self, x, t):
        self.last = (np.array(x, dtype=np.float64), float(t))
        return self.model(x, t)


def _start(grid, x0, n):
    return grid.alpha[0] * x0 + grid.sigma[0] * n


# ----------------------------------------------------------------------------- (a) derivation


def test_derivation_checks_pass_and_render():
    ds = _derivations()
    assert set(ds) == {"edm_last_step_general", "edm_last_step_point_mass", "edm_last_step"}
    for d in ds.values():
        assert isinstance(d, Derivation) and d.results and d.steps
        assert d.text(latex=True) != d.text()
    r = ds["edm_last_step"].results
    assert r["c_limit_vp"] == sp.Rational(1, 2)
    assert r["c_ve"] == sp.Rational(1, 2) and r["c_edm"] == 0


def test_vp_coefficient_at_epsilon_s():
    """c(1e-3) = 1 - t B'/(2 sigma^2) = 0.45478... (the 1/2 limit is approached slowly: the
    first-order term -(beta_d - beta_min^2)/(4 beta_min) t = -0.0497 at t = 1e-3)."""
    o = _oracle()(EPS_S)
    B, dB = BETA_MIN * EPS_S + 0.5 * BETA_D * EPS_S**2, BETA_MIN + BETA_D * EPS_S
    assert o["c"] == pytest.approx(1 - EPS_S * dB / (2 * np.expm1(B)), rel=1e-13)
    assert o["c"] == pytest.approx(0.4547821345, rel=1e-9)
    assert o["sigma"] == pytest.approx(np.sqrt(np.expm1(B)), rel=1e-13)
    assert o["s"] * o["sigma"] * o["c"] == pytest.approx(4.7684e-3, rel=1e-4)
    assert abs(o["x0"] - 1) < 1e-5  # s - t s' = 1 + O(t^2): the mean is kept to 5e-6


# ----------------------------------------------------------------------------- the transcription


def test_grid_is_edm_vp_discretization():
    """make_grid gives EDM's t_i (uniform in t from 1 to epsilon_s, then 0); on VPLinear this is
    make_grid(..., "uniform", t_end=1e-3) to round-off; EDM's recomputed betas are 19.9, 0.1."""
    sampler = edm_ablation_heun()
    for N in (2, 8, 18, 128):
        g = sampler.make_grid(VPLinear(), N)
        assert g.final_zero and g.steps == N and g.t[-1] == 0.0
        np.testing.assert_allclose(g.t, edm_vp_t_steps(N), rtol=0, atol=1e-15)
        ours = make_grid(VPLinear(), N, "uniform", t_end=EPS_S)
        np.testing.assert_allclose(g.t, ours.t, rtol=0, atol=1e-15)
    with pytest.raises(TypeError, match="VPLinear"):
        sampler.make_grid(VPCosine(), 8)
    with pytest.raises(ValueError, match="final"):
        edm_ablation_heun("midpoint")


def test_model_calls_and_prediction_invariance():
    """2N - 1 model calls at the grid's t_0..t_{N-1}; the output does not depend on which
    prediction the model returns."""
    tgt = GaussianMixture(
        [0.4, 0.6], [[-0.5, 0.2], [0.6, -0.1]], [0.02, 0.05], covariance_type="iso"
    )
    sch, N = VPLinear(), 12
    sampler = edm_ablation_heun()
    g = sampler.make_grid(sch, N)
    x = _start(g, np.zeros(2), np.random.default_rng(1).standard_normal((16, 2)))
    outs = []
    for pred in ("eps", "x0", "v", "score", "velocity"):
        m = ExactModel(tgt, sch, prediction=pred)
        ts = []

        def tracked(xx, t, m=m, ts=ts):
            ts.append(t)
            return m(xx, t)

        tracked.prediction = pred
        outs.append(sampler(tracked, x, g))
        assert len(ts) == 2 * N - 1
        assert set(ts) == set(g.t[:-1].tolist())
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- (b) point mass


@pytest.mark.parametrize("N", [8, 32, 128])
def test_euler_final_step_keeps_c_of_the_noise(N):
    """With D = x0: x_N = (s - t s') x0 + c(t) s sigma n at t = t_{N-1} = epsilon_s, where
    n = (x_{N-1}/s - x0)/sigma is the noise direction the Heun steps delivered (for small N far
    from the initial noise: VP in t is hard for Heun near t = 0; the identity holds regardless)."""
    sch = VPLinear()
    sampler = edm_ablation_heun("euler")
    g = sampler.make_grid(sch, N)
    model = _PointMass(X0)
    n0 = np.random.default_rng(N).standard_normal((64, 2))
    out = sampler(model, _start(g, X0, n0), g)
    x_last, t_last = model.last
    assert t_last == g.t[-2] and abs(t_last - EPS_S) < 1e-15
    o = _oracle()(t_last)
    n = (x_last / o["s"] - X0) / o["sigma"]
    predicted_noise = o["c"] * o["s"] * o["sigma"] * n
    np.testing.assert_allclose(out - o["x0"] * X0, predicted_noise, rtol=1e-9, atol=0)
    # the size: c s sigma |n| with c s sigma = 4.77e-3 (beside the mean's (s - t s' - 1) x0 ~ 5e-6)
    size = np.linalg.norm(out - o["x0"] * X0, axis=1) / np.linalg.norm(n, axis=1)
    np.testing.assert_allclose(size, o["c"] * o["s"] * o["sigma"], rtol=1e-6)


@pytest.mark.parametrize("N", [8, 32, 128])
@pytest.mark.parametrize("model_kind", ["point_mass", "mixture_eps", "mixture_v"])
def test_jump_lands_on_the_point_mass(N, model_kind):
    sch = VPLinear()
    sampler = edm_ablation_heun("jump")
    g = sampler.make_grid(sch, N)
    if model_kind == "point_mass":
        model = _PointMass(X0)
    else:  # one component of covariance 1e-20 I: D(x) = x0 + O(1e-20/sigma^2)
        tgt = GaussianMixture([1.0], X0[None], [1e-20], covariance_type="iso")
        model = ExactModel(tgt, sch, prediction=model_kind.split("_")[1])
    n0 = np.random.default_rng(N).standard_normal((64, 2))
    out = sampler(model, _start(g, X0, n0), g)
    assert np.abs(out - X0).max() < 1e-12


def test_euler_with_the_narrow_mixture_matches_the_derivation():
    """The same identity with the exact model of a one-component mixture of covariance 1e-20 I
    (eps prediction, converted exactly): the denoiser is x0 to round-off."""
    sch, N = VPLinear(), 32
    tgt = GaussianMixture([1.0], X0[None], [1e-20], covariance_type="iso")
    model = _Recording(ExactModel(tgt, sch, prediction="eps"))
    sampler = edm_ablation_heun("euler")
    g = sampler.make_grid(sch, N)
    out = sampler(model, _start(g, X0, np.random.default_rng(3).standard_normal((32, 2))), g)
    x_last, t_last = model.last
    o = _oracle()(t_last)
    n = (x_last / o["s"] - X0) / o["sigma"]
    np.testing.assert_allclose(
        out - o["x0"] * X0, o["c"] * o["s"] * o["sigma"] * n, rtol=1e-6, atol=1e-15
    )


# ----------------------------------------------------------------------------- (c) the floor


def test_error_floor_does_not_shrink_with_n():
    """Point mass: |x_N - x0| -> c(eps_s) s sigma |n_init| (the Heun steps converge, order 2, to
    the exact flow, which keeps n constant), not to 0; the jump variant is exact at every N."""
    sch = VPLinear()
    n0 = np.random.default_rng(7).standard_normal((32, 2))
    o = _oracle()(EPS_S)
    limit = o["x0"] * X0 + o["c"] * o["s"] * o["sigma"] * n0  # the N -> infinity landing point
    floor = np.linalg.norm(limit - X0, axis=1)
    errs, gaps = {}, {}
    for N in (512, 1024, 2048, 4096):
        g = edm_ablation_heun().make_grid(sch, N)
        out = edm_ablation_heun("euler")(_PointMass(X0), _start(g, X0, n0), g)
        errs[N] = np.linalg.norm(out - X0, axis=1)
        gaps[N] = (np.linalg.norm(out - limit, axis=1) / floor).max()
        jump = edm_ablation_heun("jump")(_PointMass(X0), _start(g, X0, n0), g)
        assert np.abs(jump - X0).max() < 1e-12
    # the Heun steps' error relative to the floor: measured 0.116, 0.029, 6.9e-3, 1.7e-3 (order 2)
    assert gaps[4096] < 3e-3  # converged onto the floor
    assert gaps[1024] / gaps[4096] > 12  # ... at order ~2
    ratio = np.mean(errs[4096]) / np.mean(errs[512])
    assert 0.9 < ratio < 1.2  # 8x the steps, the same error: no convergence to x0
    assert np.mean(errs[4096]) > 4e-3  # c s sigma ~ 4.8e-3 times E|n| ~ 1.25


def _gaussian_floor(mu, v, t):
    """As N -> infinity the Euler variant maps x ~ N(s mu, s^2 v + (s sigma)^2) at t to
    c x + b D(x) (the general identity, b = s(1 - c) - t s'); W2 to the jump's law
    N(mu, s^2 v^2 / C), C = s^2 v + (s sigma)^2 (1-D Gaussian target)."""
    o = _oracle()(t)
    a, sg = o["s"], o["s"] * o["sigma"]
    C = a * a * v + sg * sg
    k = o["c"] + o["b"] * a * v / C
    mean_e = o["c"] * a * mu + o["b"] * mu
    return float(np.hypot(mean_e - mu, abs(k) * np.sqrt(C) - a * v / np.sqrt(C)))


def test_harness_tier1_floor_on_a_gaussian():
    """What the harness's tier 1 sees (exact output law of the affine sampler vs the exact
    sampler's law on the same grid): the Euler variant's W2 tends to the derivation's floor;
    the jump variant's W2 falls at order 2, and the Euler variant's distance from the floor is
    the same interior (Heun) error."""
    mu, v = 0.3, 0.25
    tgt = Gaussian(np.array([mu]), np.array([[v]]))
    sch = VPLinear()
    model = ExactModel(tgt, sch, prediction="eps")
    w2 = {"euler": {}, "jump": {}}
    for final in w2:
        sampler = edm_ablation_heun(final)
        for N in (256, 1024, 4096):
            g = sampler.make_grid(sch, N)
            amap = probe_affine(sampler, model, g, 1)
            assert amap.residual < 1e-10
            a0, s0 = g.alpha[0], g.sigma[0]
            m, S = amap.output_law(np.array([a0 * mu]), np.array([[a0 * a0 * v + s0 * s0]]))
            mi, Si = ideal_output_law(tgt, g)
            w2[final][N] = gaussian_w2(m, S, mi, Si)
    floor = _gaussian_floor(mu, v, EPS_S)
    assert floor == pytest.approx(1.05e-4, rel=0.05)  # ~ c sigma^2 / sqrt(v)
    for N in (256, 1024, 4096):  # measured |gap| / W2_jump: 0.97, 0.96, 0.96
        assert abs(w2["euler"][N] - floor) < 1.5 * w2["jump"][N]
    assert w2["euler"][4096] == pytest.approx(floor, rel=2e-3)
    assert w2["euler"][4096] / w2["euler"][256] > 0.8  # 16x the steps: the floor stays
    for lo, hi in ((256, 1024), (1024, 4096)):
        slope = np.log(w2["jump"][lo] / w2["jump"][hi]) / np.log(4)
        assert 1.8 < slope < 2.3
    assert w2["jump"][4096] < 1e-3 * floor
