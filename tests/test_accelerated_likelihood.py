"""accelerated.likelihood and the second-order TorchMixture quantities (issue 7, accelerated)
against the float64 reference and the closed-form log-density. CPU always, CUDA when present."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="the torch extra is not installed")

from tolerances import TORCH_RTOL  # noqa: E402

from diffusion_oracle import strategies as dst  # noqa: E402
from diffusion_oracle.accelerated import TorchExactModel, TorchMixture, torch_schedule  # noqa: E402
from diffusion_oracle.accelerated import likelihood as tl  # noqa: E402
from diffusion_oracle.reference import (  # noqa: E402
    EDM,
    DiscreteSchedule,
    ExactModel,
    Flow,
    VPLinear,
    aniso64,
    ddpm_elbo,
    discretized_gaussian_log_likelihood,
    flow_map,
    gaussian_kl,
    irreducible_loss,
    ring8,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
device_param = pytest.mark.parametrize("device", DEVICES)
# Two adaptive solvers (DOP853 at 1e-12, Dormand-Prince 5(4) at 1e-11), each with global error
# a few times its tolerance over a smooth path: 1e-9 relative to the size of the points.
RTOL_SOLVERS = 1e-9
# PF-ODE log-likelihood vs the closed form: solver tolerance 1e-10 over ~100 steps.
ATOL_LOGP = 1e-8
Z_MC = 4.5  # two-sided 7e-6 per Monte Carlo comparison


def _scales(mix, x, a, s):
    """Sizes of the terms that cancel (tests/test_accelerated.py): S_g = max_k (|x| + a |mu_k|)
    / c_min, the posterior means' size mu_max + a lam_max S_g, and 1/c_min."""
    lam = np.array([np.linalg.eigvalsh(c) for c in mix.covs])
    a_, s_ = np.reshape(a, (-1, 1)), np.reshape(s, (-1, 1))
    c_min = a_**2 * lam.min(1) + s_**2
    size = np.linalg.norm(x, axis=1)[:, None] + a_ * np.linalg.norm(mix.means, axis=1)
    S_g = (size / c_min).max(1)
    m = np.linalg.norm(mix.means, axis=1).max() + np.ravel(a) * lam.max() * S_g
    return S_g, m, (1.0 / c_min).max(1), lam.max()


@device_param
@settings(max_examples=40, deadline=None)
@given(
    dst.gaussian_mixtures(),
    st.floats(0.05, 1.0),
    st.floats(0.02, 2.0),
    st.floats(-3, 3),
    st.floats(-3, 3),
    st.integers(0, 2**31 - 1),
    st.booleans(),
)
def test_second_order_quantities_match_the_reference(device, mix, a, s, da, ds, seed, per_point):
    g = np.random.default_rng(seed)
    n = 40
    x = a * mix.sample(n, g) + s * g.standard_normal((n, mix.d))
    x[:4] *= 3.0
    if per_point:
        a, s = g.uniform(0.05, 1.0, n), g.uniform(0.02, 2.0, n)
    tm = TorchMixture.from_reference(mix, device=device)
    xt = torch.tensor(x, device=device)
    f64 = {"device": device, "dtype": torch.float64}
    at, st_ = torch.as_tensor(a, **f64), torch.as_tensor(s, **f64)
    S_g, m, inv_c, lam_max = _scales(mix, x, a, s)
    d = mix.d
    s_ = np.asarray(s)
    checks = {
        "posterior_cov_trace": d * lam_max + m**2,
        "eps_cov_trace": d + s_**2 * S_g**2,
    }
    for name, scale in checks.items():
        ref = getattr(mix, name)(x, a, s)
        got = getattr(tm, name)(xt, at, st_).cpu().numpy()
        assert np.all(np.abs(got - ref) <= TORCH_RTOL["float64"] * scale), name
    ref = mix.velocity_divergence(x, a, s, da, ds)
    got = tm.velocity_divergence(xt, at, st_, da, ds).cpu().numpy()
    scale = abs(da) * (np.asarray(a) * d * lam_max * inv_c + m * S_g) + abs(ds) * s_ * (
        d * inv_c + S_g**2
    )
    assert np.all(np.abs(got - ref) <= TORCH_RTOL["float64"] * scale)


@device_param
@pytest.mark.parametrize("schedule", [VPLinear(), EDM(), Flow()], ids=repr)
def test_flow_map_agrees_with_the_reference(device, schedule):
    tgt = ring8()
    tm = TorchMixture.from_reference(tgt, device=device)
    x = np.random.default_rng(0).normal(size=(64, 2))
    want = flow_map(tgt, schedule, x, 1.0, 0.0)
    got = tl.flow_map(tm, torch_schedule(schedule), torch.tensor(x, device=device), 1.0, 0.0)
    assert np.abs(got.cpu().numpy() - want).max() <= RTOL_SOLVERS * np.abs(want).max()


@device_param
@pytest.mark.parametrize("target", [ring8, aniso64], ids=["ring8", "aniso64"])
def test_ode_log_likelihood_is_the_exact_log_density(device, target):
    tgt = target()
    tm = TorchMixture.from_reference(tgt, device=device)
    sch = VPLinear()
    x = tgt.sample(32, rng=1)
    res = tl.pf_ode_log_likelihood(tm, torch_schedule(sch), torch.tensor(x, device=device))
    assert np.abs(res.log_prob.cpu().numpy() - tgt.log_prob(x)).max() < ATOL_LOGP


@device_param
def test_hutchinson_by_forward_mode_autodiff_is_unbiased(device):
    tgt = ring8()
    tm = TorchMixture.from_reference(tgt, device=device)
    x = tgt.sample(4, rng=2)
    res = tl.pf_ode_log_likelihood(
        tm,
        torch_schedule(VPLinear()),
        torch.tensor(x, device=device),
        divergence="hutchinson",
        n_probes=16,
        probe="gaussian",
        generator=torch.Generator().manual_seed(3),
        rtol=1e-7,
        atol=1e-7,
    )
    z = (res.log_prob.cpu().numpy() - tgt.log_prob(x)) / res.stderr.cpu().numpy()
    assert (np.abs(z) < Z_MC).all(), z
    assert tm.fused == TorchMixture.from_reference(tgt, device=device).fused  # restored


@device_param
@pytest.mark.parametrize("prediction", ["x0", "eps", "v", "score", "velocity"])
def test_irreducible_loss_agrees_with_the_reference(device, prediction):
    tgt, sch = ring8(), VPLinear()
    tm = TorchMixture.from_reference(tgt, device=device)
    ref = irreducible_loss(tgt, sch, 0.3, prediction=prediction, n=50_000, rng=4)
    got = tl.irreducible_loss(
        tm,
        torch_schedule(sch),
        0.3,
        prediction=prediction,
        n=50_000,
        generator=torch.Generator(device=device).manual_seed(5),
    )
    assert abs(ref.value - got.value) < Z_MC * math.hypot(ref.stderr, got.stderr)


@device_param
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("decoder", ["gaussian", "discretized"])
def test_elbo_terms_equal_the_reference_from_the_same_noise(device, variance, decoder):
    tgt = ring8()
    sch = DiscreteSchedule.from_alpha_bar(np.exp(2 * VPLinear().log_alpha(np.arange(1, 41) / 40)))
    x0 = tgt.sample(200, rng=6)
    if decoder == "discretized":
        x0 = np.clip(np.round((x0 + 1) * 127.5) / 127.5 - 1, -1, 1)
    ref = ddpm_elbo(
        ExactModel(tgt, sch),
        sch,
        x0,
        variance=variance,
        decoder=decoder,
        rng=np.random.default_rng(7),
    )
    model = TorchExactModel(TorchMixture.from_reference(tgt, device=device), torch_schedule(sch))
    got = tl.ddpm_elbo(
        model,
        torch_schedule(sch),
        x0,
        variance=variance,
        decoder=decoder,
        generator=np.random.default_rng(7),
    )
    # the same terms by two implementations (posterior from the betas vs from log-SNR
    # differences): O(1) nats with a few roundings each, relative 1e-12
    for name in ("prior", "diffusion", "decoder"):
        r, g = getattr(ref, name), getattr(got, name)
        np.testing.assert_allclose(g, r, rtol=TORCH_RTOL["float64"], atol=1e-12, err_msg=name)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 255), st.floats(-3, 3), st.floats(-12, 4), st.floats(-5, 5))
def test_kl_and_discretized_decoder_agree_with_the_reference(k, mean, log_var, lv2):
    x = np.array([k / 127.5 - 1.0])

    def t(v):
        return torch.tensor(v, dtype=torch.float64)

    ref = discretized_gaussian_log_likelihood(x, mean, log_var)
    got = tl.discretized_gaussian_log_likelihood(t(x), t([mean]), t([log_var])).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-13)
    ref = gaussian_kl(mean, log_var, 0.3, lv2)
    got = tl.gaussian_kl(t(mean), t(log_var), t(0.3), t(lv2)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-300)


def test_bad_input_is_named():
    tm = TorchMixture.from_reference(ring8(), device="cpu")
    ts = torch_schedule(VPLinear())
    with pytest.raises(TypeError, match="TorchMixture"):
        tl.flow_map(ring8(), ts, torch.zeros(2, 2), 1.0)
    with pytest.raises(ValueError, match="x must have shape"):
        tl.flow_map(tm, ts, torch.zeros(2, 3), 1.0)
    with pytest.raises(ValueError, match="divergence"):
        tl.pf_ode_log_likelihood(tm, ts, torch.zeros(2, 2), divergence="skilling")
    with pytest.raises(ValueError, match="t1 must come after t0"):
        tl.pf_ode_log_likelihood(tm, ts, torch.zeros(2, 2), t0=0.5, t1=0.1)
    with pytest.raises(TypeError, match="TorchDiscrete"):
        tl.ddpm_elbo(TorchExactModel(tm, ts), ts, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="prediction"):
        tl.irreducible_loss(tm, ts, 0.5, prediction="noise")
    with pytest.raises(ValueError, match=r"prior_var must be > 0, got 0\.0"):
        tl.vdm_elbo(TorchExactModel(tm, ts), ts, np.zeros((2, 2)), t_min=1e-3, prior_var=0.0)
    with pytest.raises(ValueError, match="decoder_var must be > 0, got -1"):
        tl.vdm_elbo(TorchExactModel(tm, ts), ts, np.zeros((2, 2)), t_min=1e-3, decoder_var=-1)
    with pytest.raises(ValueError, match="levels must be >= 2, got 1"):
        tl.discretized_gaussian_log_likelihood(torch.zeros(1), torch.zeros(1), torch.zeros(1),
                                               levels=1)  # fmt: skip


@device_param
def test_learned_variance_and_vdm_terms_equal_the_reference(device):
    from diffusion_oracle.reference import vdm_elbo

    tgt = ring8()
    sch = DiscreteSchedule.from_alpha_bar(np.exp(2 * VPLinear().log_alpha(np.arange(1, 21) / 20)))
    x0 = tgt.sample(100, rng=8)
    tm = TorchMixture.from_reference(tgt, device=device)

    def ref_var(x, n):  # a 'learned' log-variance depending on x_n
        return -4.0 + 0.1 * np.tanh(x[:, :1]) - 0.05 * n

    def torch_var(x, n):
        return -4.0 + 0.1 * torch.tanh(x[:, :1]) - 0.05 * n

    ref = ddpm_elbo(ExactModel(tgt, sch), sch, x0, variance=ref_var, rng=np.random.default_rng(9))
    got = tl.ddpm_elbo(
        TorchExactModel(tm, torch_schedule(sch)),
        torch_schedule(sch),
        x0,
        variance=torch_var,
        generator=np.random.default_rng(9),
    )
    np.testing.assert_allclose(got.total, ref.total, rtol=TORCH_RTOL["float64"])
    sch_c = VPLinear()
    ref = vdm_elbo(ExactModel(tgt, sch_c), sch_c, x0, t_min=1e-3, rng=np.random.default_rng(10))
    got = tl.vdm_elbo(
        TorchExactModel(tm, torch_schedule(sch_c)),
        torch_schedule(sch_c),
        x0,
        t_min=1e-3,
        generator=np.random.default_rng(10),
    )
    # t(lambda) by bisection (torch) vs Newton (reference): the same t to ~1 ulp, so the terms
    # agree to the conditioning of x_t in t (|d x_t/dt| / |x_t| <= ~10): 1e-12 relative with 10x
    for name in ("prior", "diffusion", "decoder"):
        np.testing.assert_allclose(
            getattr(got, name),
            getattr(ref, name),
            rtol=10 * TORCH_RTOL["float64"],
            atol=1e-13,
            err_msg=name,
        )
