"""The torch samplers, model, forward process, posterior and tier-3 statistics against the
reference: the same grid and the same (NumPy) noise give the same samples; CUDA when present."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_accelerated import _scales
from tolerances import TORCH_RTOL

from diffusion_oracle import strategies as dst
from diffusion_oracle.accelerated import TorchMixture, torch_schedule
from diffusion_oracle.accelerated import model as tmodel
from diffusion_oracle.accelerated import samplers as tsamp
from diffusion_oracle.accelerated import stats as tstats
from diffusion_oracle.reference import ExactModel, GaussianMixture, bimodal1d, ring8
from diffusion_oracle.reference import stats as rstats
from diffusion_oracle.reference.forward import sample_marginal
from diffusion_oracle.reference.grids import make_grid, respaced_grid
from diffusion_oracle.reference.parameterization import PREDICTIONS, convert
from diffusion_oracle.reference.posterior import posterior
from diffusion_oracle.reference.samplers import BUILTIN_SAMPLERS, DDIM, ExactODE
from diffusion_oracle.reference.schedules import EDM, DiscreteSchedule, Flow, VPCosine, VPLinear

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
device_param = pytest.mark.parametrize("device", DEVICES)

# a sampler run composes ~N steps of float64 arithmetic whose rounding differs between the two
# implementations (fused kernel vs NumPy, other association orders); each step is a contraction
# or at most a mild expansion on these targets, so the runs agree to a small multiple of
# N x eps x (data scale): 1e-11 relative to the sample scale at N <= 64 steps
SAMPLER_RTOL = 1e-11


def _torch_model(target, schedule, prediction, device):
    tm = TorchMixture.from_reference(target, device=device)
    return tmodel.TorchExactModel(tm, torch_schedule(schedule), prediction=prediction)


@device_param
@pytest.mark.parametrize("name", sorted(BUILTIN_SAMPLERS()))
def test_every_builtin_sampler_matches_the_reference(device, name):
    ref = BUILTIN_SAMPLERS()[name]
    ts = tsamp.torch_sampler(ref)
    if ref.name == "ddpm-analytic":
        assert ts is None  # its variance is a Monte Carlo estimate of the reference's own
        return
    assert ts is not None and ts.name == ref.name and ts.order == ref.order
    target, schedule = ring8(), VPLinear()
    for prediction, kind, steps in (("eps", ref.default_grid, 12), ("v", "uniform", 7)):
        grid = make_grid(schedule, steps, kind, t_end=1e-3)
        x = target.diffuse(grid.alpha[0], grid.sigma[0]).sample(16, np.random.default_rng(1))
        want = ref(ExactModel(target, schedule, prediction=prediction), x, grid,
                   rng=np.random.default_rng(5))  # fmt: skip
        got = ts(_torch_model(target, schedule, prediction, device), x, grid,
                 rng=np.random.default_rng(5))  # fmt: skip
        assert isinstance(got, np.ndarray)
        scale = np.abs(want).max() + 1.0
        assert np.abs(got - want).max() <= SAMPLER_RTOL * scale, (prediction, kind)


@device_param
@pytest.mark.parametrize(
    "schedule", [VPCosine(), EDM(), Flow(), DiscreteSchedule.linear(1000)], ids=repr
)
def test_samplers_on_other_paths(device, schedule):
    """Intermediate nodes (DPM-Solver-3) use the torch inverse t(lambda); discrete grids too."""
    target = bimodal1d()
    if isinstance(schedule, DiscreteSchedule):
        grid = respaced_grid(schedule, 10, "trailing")
    else:
        ends = dict(t_start=schedule.t_from_log_snr(-8.0), t_end=schedule.t_from_log_snr(8.0))
        grid = make_grid(schedule, 10, "log_snr", **ends)
    x = target.diffuse(grid.alpha[0], grid.sigma[0]).sample(8, np.random.default_rng(2))
    pred = "v" if isinstance(schedule, Flow) else "eps"
    for name in ("dpm-solver-3", "edm-stochastic(S_churn=10)", "unipc-2(bh2)", "lms-2"):
        ref = BUILTIN_SAMPLERS()[name]
        want = ref(ExactModel(target, schedule, prediction=pred), x, grid,
                   rng=np.random.default_rng(3))  # fmt: skip
        got = tsamp.torch_sampler(ref)(_torch_model(target, schedule, pred, device), x, grid,
                                       rng=np.random.default_rng(3))  # fmt: skip
        assert np.abs(got - want).max() <= SAMPLER_RTOL * (np.abs(want).max() + 1.0), name


@device_param
def test_torch_generator_runs_stay_on_the_device(device):
    grid = make_grid(VPLinear(), 20, "log_snr", t_end=1e-3)
    model = _torch_model(ring8(), VPLinear(), "eps", device)
    gen = torch.Generator(device=device).manual_seed(0)
    x = model.target.sample(1000, gen, alpha=grid.alpha[0], sigma=grid.sigma[0])
    out = tsamp.DDPM()(model, x, grid, rng=torch.Generator(device=device).manual_seed(1))
    assert out.device.type == device and out.shape == (1000, 2)
    assert bool(torch.isfinite(out).all())


@settings(max_examples=30, deadline=None)
@given(dst.schedules(), st.floats(0.05, 0.95), st.floats(0.05, 0.95),
       st.sampled_from(PREDICTIONS), st.integers(0, 2**31 - 1))  # fmt: skip
def test_model_forward_posterior_conversions_match(schedule, u, v, pred, seed):
    s, t = sorted((u, v))
    if t - s < 1e-3:
        t = s + 1e-3
    tsch = torch_schedule(schedule)
    g = np.random.default_rng(seed)
    x0, eps = g.standard_normal((2, 5, 3))
    rtol = TORCH_RTOL["float64"]
    # forward marginal
    want, _ = sample_marginal(schedule, t, x0, noise=eps)
    got = tmodel.forward_sample(tsch, torch.tensor(x0), t, torch.tensor(eps)).numpy()
    assert np.allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())
    # posterior coefficients
    post = posterior(schedule, s, t)
    c0, ct, var = (float(c) for c in tmodel.posterior_coefficients(tsch, s, t))
    for a, b in ((c0, post.coef_x0), (ct, post.coef_xt), (var, post.var)):
        assert abs(a - float(b)) <= rtol * abs(float(b)) + 1e-300
    # conversions through the torch model's parameterizations, at one point
    a, sg = float(schedule.alpha(t)), float(schedule.sigma(t))
    # zero terminal SNR (alpha = 0 on the last discrete interval): eps and score lose x0 there,
    # which both implementations refuse with a ValueError (tested in test_bad_input)
    assume(a > 0)
    da, ds = float(schedule.d_alpha(t)), float(schedule.d_sigma(t))
    xt = a * x0 + sg * eps
    val = convert(eps, source="eps", target=pred, x_t=xt, alpha=a, sigma=sg, d_alpha=da,
                  d_sigma=ds)  # fmt: skip
    tx0, te = tmodel.to_x0_eps(torch.tensor(val), source=pred, x_t=torch.tensor(xt), alpha=a,
                               sigma=sg, d_alpha=da, d_sigma=ds)  # fmt: skip
    size = np.abs(xt).max() + np.abs(val).max() + 1.0
    cond = 1.0 / min(a, sg, 1.0) ** 2  # the inverses divide by alpha, sigma or alpha^2 + sigma^2
    assert np.abs(te.numpy() - eps).max() <= 10 * rtol * cond * size
    back = tmodel.from_x0_eps(tx0, te, target=pred, alpha=a, sigma=sg, d_alpha=da, d_sigma=ds)
    assert np.abs(back.numpy() - val).max() <= 10 * rtol * cond * size


@device_param
@pytest.mark.parametrize("pred", PREDICTIONS)
def test_exact_model_matches_reference(device, pred):
    target, schedule = ring8(), VPCosine()
    ref = ExactModel(target, schedule, prediction=pred)
    tmod = _torch_model(target, schedule, pred, device)
    x = target.diffuse(0.6, 0.8).sample(64, np.random.default_rng(0))
    for t in (0.1, 0.5, 0.9):
        want = ref(x, t)
        got = tmod(torch.tensor(x), t).cpu().numpy()
        assert np.abs(got - want).max() <= 1e-12 * (np.abs(want).max() + np.abs(x).max() / 0.01)
    tt = np.linspace(0.1, 0.9, 64)  # one time per point
    want = ref(x, tt)
    got = tmod(torch.tensor(x), torch.tensor(tt)).cpu().numpy()
    assert np.abs(got - want).max() <= 1e-12 * (np.abs(want).max() + np.abs(x).max() / 0.01)


@device_param
def test_statistics_agree_with_the_reference_verdicts(device):
    """Exact samples pass all four tests on both paths; samples missing a mode fail the
    responsibility test on both. The p-values differ only by the nulls' Monte Carlo."""
    target = ring8()
    tm = TorchMixture.from_reference(target, device=device)
    good = target.sample(3000, np.random.default_rng(11))
    w7 = target.weights[:7] / target.weights[:7].sum()  # mode 8 dropped
    dropped = GaussianMixture(w7, target.means[:7], target.covs[:7], covariance_type="full")
    bad = dropped.sample(3000, np.random.default_rng(12))
    null_r = rstats.mmd_null(target, 500, replicates=99, rng=1)
    null_t = tstats.mmd_null(tm, 500, replicates=99, rng=1)
    assert abs(null_r[0] - null_t[0]) <= 0.05 * null_r[0]  # bandwidth: median of exact pairs
    st_t = tstats._self_term(tm, null_r[0])  # the closed-form self term at the same bandwidth
    assert abs(null_r[1] - st_t) <= 1e-12 * null_r[1]
    # dropping one of eight equal modes leaves the density at the samples unchanged (the NLL
    # test passes on both paths); the responsibilities see it
    for x, expect in ((good, (True, True)), (bad, (False, True))):
        for rf, tf, e in ((rstats.responsibility_test, tstats.responsibility_test, expect[0]),
                          (rstats.nll_test, tstats.nll_test, expect[1])):  # fmt: skip
            r, t = rf(target, x, alpha=0.01), tf(tm, torch.tensor(x), alpha=0.01)
            assert r.passed == t.passed == e, (r, t)
    for x in (good,):
        r = rstats.projected_ks_test(target, x, alpha=0.01)
        t = tstats.projected_ks_test(tm, torch.tensor(x), alpha=0.01)
        # the statistic itself is deterministic given the directions: the axes come first (d=2)
        assert abs(r.pvalue - t.pvalue) <= 1e-9 and r.passed and t.passed
        r = rstats.mmd_test(target, x[:500], alpha=0.01, null=null_r)
        t = tstats.mmd_test(tm, torch.tensor(x[:500]), alpha=0.01, null=null_t)
        assert r.passed and t.passed
        assert abs(r.statistic - tstats._mmd2(tm, torch.tensor(x[:500]), null_r[0], null_r[1])) <= (
            1e-12 * (abs(r.statistic) + null_r[1])
        )


def test_sampler_input_errors_are_named():
    grid = make_grid(VPLinear(), 4, "uniform")
    model = _torch_model(ring8(), VPLinear(), "eps", "cpu")
    with pytest.raises(ValueError, match="x_init must have shape"):
        tsamp.DDIM()(model, np.zeros(3), grid)
    with pytest.raises(ValueError, match="x_init must be finite"):
        tsamp.DDIM()(model, np.full((2, 2), np.nan), grid)
    with pytest.raises(ValueError, match="eta must be"):
        tsamp.DDIM(-1.0)
    with pytest.raises(ValueError, match="variance must be one of"):
        tsamp.DDPM("analytic")
    with pytest.raises(ValueError, match="log_snr must lie in"):
        torch_schedule(VPLinear()).t_from_log_snr(-100.0)
    assert tsamp.torch_sampler(ExactODE()) is None and tsamp.torch_sampler(DDIM(0.5)).eta == 0.5


# ---------------------------------------------------------------- the fused DDPM step (CUDA)

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda_only
@pytest.mark.parametrize("target", [ring8, "full"], ids=["iso", "full"])
def test_fused_ddpm_step_equals_the_unfused_formula(target):
    from diffusion_oracle.accelerated._fused import fused_ddpm_step

    if target == "full":
        g = np.random.default_rng(0)
        qs = [np.linalg.qr(g.standard_normal((8, 8)))[0] for _ in range(4)]
        covs = np.stack([(q * np.logspace(-2, 0, 8)) @ q.T for q in qs])
        mix = GaussianMixture(g.dirichlet(np.ones(4)), g.standard_normal((4, 8)), covs)
    else:
        mix = target()
    tm = TorchMixture.from_reference(mix, device="cuda")
    gen = torch.Generator("cuda").manual_seed(0)
    a, s = 0.7, 0.5
    x = tm.sample(5000, gen, alpha=a, sigma=s)
    # the first block's points far from every component: every term of the kernel's fixed
    # shift underflows, so its second launch redoes that block with the online recurrence
    far = torch.randn(40, mix.d, generator=gen, device="cuda", dtype=torch.float64)
    x[:40] = 200.0 * far / far.norm(dim=1, keepdim=True)
    z = torch.randn(x.shape, generator=gen, device="cuda", dtype=torch.float64)
    cx, cg, std = 1.3, 0.2, 0.4
    xn = x.cpu().numpy()
    score = torch.tensor(mix.score(xn, a, s), device="cuda")  # the reference's (NumPy)
    got = fused_ddpm_step(tm, x, a, s, cx, cg, std, noise=z)
    want = cx * x + cg * score + std * z  # g = -score
    # the kernel's g rounds at the size of the cancelling terms
    S_g = _scales(mix, xn, a, s)[0]
    bound = TORCH_RTOL["float64"] * (1.0 + cx * np.abs(xn).max(1) + cg * S_g + std * 6.0)
    err = (got - want).abs().max(1).values.cpu().numpy()
    assert np.all(err <= bound), float((err / bound).max())
    # the in-kernel noise: both launches draw the same z (one Philox stream per entry). z read
    # back from the step (far rows: second launch) equals the noise of a step at x = 0 with
    # cx = cg = 0, std = 1 (first launch only)
    seed = 123
    stepped = fused_ddpm_step(tm, x, a, s, cx, cg, std, generator=gen.manual_seed(seed))
    z_read = (stepped - cx * x - cg * score) / std
    zeros = torch.zeros_like(x)
    z_ref = fused_ddpm_step(tm, zeros, a, s, 0.0, 0.0, 1.0, generator=gen.manual_seed(seed))
    err = (z_read - z_ref).abs().max(1).values.cpu().numpy()
    assert np.all(err <= bound / std), float((err / bound * std).max())


@cuda_only
def test_fused_noise_is_standard_normal():
    from scipy import stats as sps

    from diffusion_oracle.accelerated._fused import fused_ddpm_step

    tm = TorchMixture.from_reference(ring8(), device="cuda")
    x = torch.zeros(200_000, 2, device="cuda", dtype=torch.float64)
    gen = torch.Generator("cuda").manual_seed(1)
    z1 = fused_ddpm_step(tm, x, 0.7, 0.5, 0.0, 0.0, 1.0, generator=gen).cpu().numpy()
    z2 = fused_ddpm_step(tm, x, 0.7, 0.5, 0.0, 0.0, 1.0, generator=gen).cpu().numpy()
    flat = z1.ravel()
    # family of 3 checks at 1e-4 each
    assert sps.kstest(flat, "norm").pvalue > 1e-4
    assert abs(np.corrcoef(z1[:, 0], z1[:, 1])[0, 1]) < 4.5 / np.sqrt(len(z1))
    assert abs(np.corrcoef(flat, z2.ravel())[0, 1]) < 4.5 / np.sqrt(flat.size)  # new seed


@cuda_only
def test_fused_ddpm_run_samples_the_target():
    target = ring8()
    sch = VPLinear()
    grid = make_grid(sch, 256, "log_snr")
    model = _torch_model(target, sch, "eps", "cuda")
    gen = torch.Generator("cuda").manual_seed(2)
    x_init = model.target.sample(20_000, gen, alpha=grid.alpha[0], sigma=grid.sigma[0])
    sampler = tsamp.DDPM(fused=True)
    out = sampler(model, x_init, grid, rng=gen)
    assert model.n_calls == 256  # 255 fused steps and the final jump
    for test in (tstats.responsibility_test, tstats.projected_ks_test):
        assert test(model.target, out, alpha=1e-3, rng=3).passed
    with pytest.raises(ValueError, match="fused=True needs"):
        tsamp.DDPM(fused=True)(model, x_init[:10], grid, rng=np.random.default_rng(0))


def test_library_warmups_have_no_torch_counterpart():
    from diffusion_oracle.reference.samplers import DPMSolverPP3M

    assert tsamp.torch_sampler(DPMSolverPP3M("published")) is not None
    assert tsamp.torch_sampler(DPMSolverPP3M("published", warmup="diffusers")) is None
