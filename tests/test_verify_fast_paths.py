"""The fast paths of verify on the CPU (issue 23): each keeps the evidence it replaces.

- tier 1 probes a sampler in one batch and checks affinity on the tier-1 run's own input and
  draws (``probe_affine(..., run=...)``): the same map as a standalone probe, row coupling still
  caught, every fallback taken;
- ExactModel keeps each scalar time's level, Gaussian each level's Cholesky factor: the values are
  the closed forms', bad input is still refused, the caches are bounded and follow ``cov``;
- the mixture's coordinate sums (``_sum_d``) and the MMD's pair distances (pdist) against
  direct sums;
- the MMD null is computed once (``warm_caches``) and reused by tier 3;
- ``finite``'s fast path refuses what the general path refuses, with the same message.
"""

import math

import numpy as np
import pytest

from diffusion_oracle.reference import ExactModel, Gaussian, VPLinear, ring8
from diffusion_oracle.reference._checks import finite
from diffusion_oracle.reference.exact import ProbeError, RecordingRNG, probe_affine
from diffusion_oracle.reference.grids import make_grid
from diffusion_oracle.reference.samplers import DDIM, DDPM, Heun
from diffusion_oracle.reference.stats import _mean_embedding, _mmd2
from diffusion_oracle.reference.targets import _sum_d

GAUSS = Gaussian(np.array([0.5, -1.0]), np.array([[0.25, 0.1], [0.1, 0.09]]))


def _grid(n=12):
    return make_grid(VPLinear(), n, "log_snr")


def _recorded_run(sampler, model, grid, n=4, seed=3):
    x = np.random.default_rng(seed).standard_normal((n, 2))
    rec = RecordingRNG(np.random.default_rng(seed + 1))
    out = sampler(model, x.copy(), grid, rng=rec)
    return x, rec, out


@pytest.mark.parametrize("sampler", [DDPM(), DDIM(), Heun()], ids=repr)
def test_probe_with_recorded_run_is_the_standalone_probe(sampler):
    """The map from the one-batch probe with the tier-1 run as its check equals the standalone
    probe's, and both predict a fresh run with fresh noise to rounding."""
    model, g = ExactModel(GAUSS, VPLinear()), _grid()
    run = _recorded_run(sampler, model, g)
    A = probe_affine(sampler, model, g, 2, run=run)
    B = probe_affine(sampler, model, g, 2)
    np.testing.assert_array_equal(A.M, B.M)
    np.testing.assert_array_equal(A.c, B.c)
    np.testing.assert_array_equal(A.N, B.N)
    assert A.N.shape[0] == len(run[1].draws)
    assert A.residual < 1e-13 and B.residual < 1e-13
    # an independent run: x_out = M x + c + sum_k N_k z_k with the draws it made
    x, rec, out = _recorded_run(sampler, model, g, n=5, seed=11)
    pred = x @ A.M.T + A.c + sum(z @ Nk.T for z, Nk in zip(rec.draws, A.N))
    np.testing.assert_allclose(out, pred, rtol=0, atol=1e-13)


class _Coupled:
    """Euler-like, but every output is shifted by the batch mean: affine per batch, not a map of
    each row (the batch the probe sees is not the batch the tier-1 run sees)."""

    name = "coupled"

    def __call__(self, model, x, grid, *, rng=None):
        x = np.array(x, dtype=float)
        z = rng.standard_normal(x.shape)
        return 0.9 * x + 0.1 * z + 0.5 * x.mean(0)


def test_row_coupling_is_caught_with_the_recorded_run():
    model, g = ExactModel(GAUSS, VPLinear()), _grid()
    s = _Coupled()
    run = _recorded_run(s, model, g)
    assert probe_affine(s, model, g, 2, run=run).residual > 1e-3
    assert probe_affine(s, model, g, 2).residual > 1e-3


class _DrawsOther:
    """Draws through rng.random as well: the record is unusable, the probe falls back to its dry
    run (whose stand-in has no ``random``: the sampler's own error, as before)."""

    def __call__(self, model, x, grid, *, rng=None):
        return np.array(x, dtype=float) + 0.0 * rng.random()


def test_recording_rng_marks_other_methods_and_the_probe_falls_back():
    model, g = ExactModel(GAUSS, VPLinear()), _grid()
    x, rec, out = _recorded_run(_DrawsOther(), model, g)
    assert rec.other and rec.draws == []
    with pytest.raises(AttributeError):
        probe_affine(_DrawsOther(), model, g, 2, run=(x, rec, out))


class _BatchDependentDraws:
    """Draws once for a batch of 2 rows, twice otherwise."""

    def __call__(self, model, x, grid, *, rng=None):
        x = np.array(x, dtype=float)
        for _ in range(1 if len(x) == 2 else 2):
            x = x + rng.standard_normal(x.shape)
        return x


def test_a_draw_count_that_depends_on_the_batch_is_a_probe_error():
    model, g = ExactModel(GAUSS, VPLinear()), _grid()
    with pytest.raises(ProbeError, match="probing needs the same 1 draws"):
        probe_affine(_BatchDependentDraws(), model, g, 2)


def test_a_record_of_the_wrong_shape_is_not_used():
    """Draws of another shape than the state: the standalone probe runs (and says why)."""

    class Wide:
        def __call__(self, model, x, grid, *, rng=None):
            return np.array(x, dtype=float) + rng.standard_normal((len(x), 3))[:, :2]

    model, g = ExactModel(GAUSS, VPLinear()), _grid()
    run = _recorded_run(Wide(), model, g)
    with pytest.raises(ProbeError, match="each draw to have the state's shape"):
        probe_affine(Wide(), model, g, 2, run=run)


def test_exact_model_level_cache_gives_the_closed_form_and_still_validates():
    sch, tg = VPLinear(), ring8()
    model = ExactModel(tg, sch, prediction="eps")
    x = np.random.default_rng(0).standard_normal((5, 2))
    for t in (0.3, np.float64(0.3), np.asarray(0.3), 0.7):
        # the closed form from the schedule's own formulas: alpha = exp(-B/2), sigma^2 = 1 - a^2
        B = sch.beta_min * float(t) + 0.5 * (sch.beta_max - sch.beta_min) * float(t) ** 2
        a, s = math.exp(-0.5 * B), math.sqrt(-math.expm1(-B))
        np.testing.assert_allclose(model(x, t), tg.eps(x, a, s), rtol=1e-14, atol=1e-15)
    for bad, err in ((float("nan"), ValueError), (1.5, ValueError), (-0.1, ValueError)):
        with pytest.raises(err, match="t must"):
            model(x, bad)
    model(x, 0.3)
    with pytest.raises(ValueError, match="t must"):  # a valid cached time does not cover these
        model(x, float("inf"))
    for i in range(ExactModel._LEVELS_MAX + 10):
        model(x[:1], 0.01 + 0.9 * i / (ExactModel._LEVELS_MAX + 10))
    assert len(model._levels) <= ExactModel._LEVELS_MAX


def test_gaussian_factor_cache_follows_cov():
    g = Gaussian(np.zeros(2), np.eye(2))
    x = np.array([[1.0, 2.0]])
    a, s = 0.6, 0.8
    np.testing.assert_allclose(g.eps(x, a, s), s * x / (a * a + s * s), rtol=1e-15)
    g.cov = np.diag([4.0, 0.25])  # reassigned: the factors of the old cov must not be used
    C = a * a * np.diag([4.0, 0.25]) + s * s * np.eye(2)
    np.testing.assert_allclose(g.eps(x, a, s), s * x / np.diag(C), rtol=1e-15)


@pytest.mark.parametrize("d", [1, 2, 16, 17, 64])
def test_sum_d_is_the_sum_over_coordinates(d):
    v = np.random.default_rng(d).standard_normal((3, d, 7))
    exact = np.array([[math.fsum(v[k, :, j]) for j in range(7)] for k in range(3)])
    np.testing.assert_allclose(_sum_d(v), exact, rtol=0, atol=1e-14 * d)
    assert _sum_d(v[:, :, :1]).shape == (3, 1)


def test_mmd2_kernel_mean_is_the_pairwise_definition():
    """The U-statistic's kernel mean over i != j from explicit differences, against the pdist
    form (through _mmd2, with the closed-form terms subtracted back out)."""
    tg = ring8()
    x = tg.sample(40, np.random.default_rng(1))
    ell2 = 0.37
    n = len(x)
    direct = math.fsum(
        math.exp(-float(((x[i] - x[j]) ** 2).sum()) / (2 * ell2))
        for i in range(n)
        for j in range(n)
        if i != j
    ) / (n * (n - 1))
    got = _mmd2(tg, x, ell2, 0.0) + 2 * _mean_embedding(tg, x, ell2).mean()
    assert abs(got - direct) < 1e-14


def test_warm_caches_computes_the_null_tier3_uses(monkeypatch):
    import diffusion_oracle.reference.stats as st
    import diffusion_oracle.verification.evidence as ev
    from diffusion_oracle.harness import TIER3_ALPHA, warm_caches

    monkeypatch.setattr(ev, "_MMD_CACHE", {})
    warm_caches("ring8")
    assert len(ev._MMD_CACHE) == 1

    def refuse(*a, **k):
        raise AssertionError("the null was computed again")

    monkeypatch.setattr(st, "mmd_null", refuse)
    x = ring8().sample(2000, np.random.default_rng(0))
    tests = ev.tier3_tests(ring8(), x, TIER3_ALPHA / 4, 0)
    assert len(tests) == 4
    warm_caches("ring8", tiers=(1, 2))  # no tier 3: nothing to compute
    assert len(ev._MMD_CACHE) == 1


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), np.float64("-inf"), np.array([1.0, np.nan]), [0.0, math.inf]],
)
def test_finite_fast_path_refuses_like_the_general_path(value):
    with pytest.raises(ValueError, match=r"^x must be finite, got (nan|inf|-inf) \(in "):
        finite(value, "x")


def test_finite_fast_path_returns_float64_arrays():
    for v in (0.5, np.float64(0.5)):
        out = finite(v, "x")
        assert isinstance(out, np.ndarray) and out.ndim == 0 and out.dtype == np.float64
    a = np.arange(3.0)
    assert finite(a, "x") is a
    assert finite(np.arange(3), "x").dtype == np.float64


def test_the_builtin_run_uses_one_blas_thread(monkeypatch, capsys):
    """`diffusion-oracle verify` (the built-in table) runs with one BLAS thread and one torch
    thread per process (its many small array operations only contend for the cores otherwise),
    and gives the limits back after the run."""
    torch = pytest.importorskip("torch")
    from threadpoolctl import threadpool_info, threadpool_limits

    import diffusion_oracle.reference.samplers as rs
    from diffusion_oracle import cli

    seen = []

    class Probe(DDIM):
        name = "probe"

        def __call__(self, model, x_init, grid, *, rng=None):
            seen.extend(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
            seen.append(torch.get_num_threads())
            return super().__call__(model, x_init, grid, rng=rng)

    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    monkeypatch.setattr(rs, "BUILTIN_SAMPLERS", lambda: {"probe": Probe()})
    # two threads before the run (make test pins one through the environment)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threadpool_limits(limits=2, user_api="blas"):
            assert set(blas_threads()) == {2}
            code = cli.main(["verify", "--jobs", "1", "--tiers", "1", "--steps", "8,16,32"])
            capsys.readouterr()
            assert code == 0 and seen and set(seen) == {1}
            assert set(blas_threads()) == {2} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_no_gpu_driver_means_the_cpu_default_without_torch(monkeypatch):
    """On Linux without an NVIDIA or AMD GPU driver, verify's default device is the CPU and the
    accelerated path is not set up (torch is not imported to ask); with a driver, or elsewhere
    than Linux, torch decides."""
    import diffusion_oracle.harness as H

    monkeypatch.setattr(H.sys, "platform", "linux")
    monkeypatch.setattr(H.os.path, "exists", lambda p: False)
    assert H._no_gpu_driver()
    assert H._Accelerated.make(None, DDIM(), ring8(), VPLinear(), "eps") is None
    for driver in ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg"):
        monkeypatch.setattr(H.os.path, "exists", lambda p, d=driver: p == d)
        assert not H._no_gpu_driver(), driver
    monkeypatch.setattr(H.sys, "platform", "win32")
    monkeypatch.setattr(H.os.path, "exists", lambda p: False)
    assert not H._no_gpu_driver()
