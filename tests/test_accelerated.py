"""accelerated/ (torch) against the float64 reference: schedules and mixture quantities over
hypothesis-drawn schedules, mixtures, times and shapes; float64 to relative 1e-12, float32 within
the tolerance table. Every test runs on the CPU and again on CUDA where a GPU is present."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="the torch extra is not installed")

from tolerances import EPS64, TORCH_RTOL  # noqa: E402

from diffusion_oracle import strategies as dst  # noqa: E402
from diffusion_oracle.accelerated.schedules import torch_schedule  # noqa: E402
from diffusion_oracle.accelerated.targets import TorchMixture  # noqa: E402
from diffusion_oracle.reference import DiscreteSchedule, GaussianMixture, aniso64, ring8  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
device_param = pytest.mark.parametrize("device", DEVICES)

SCHEDULE_QUANTITIES = (
    "alpha",
    "sigma",
    "log_snr",
    "d_alpha",
    "d_sigma",
    "d_log_snr",
    "f",
    "g_squared",
)


@device_param
@settings(max_examples=60, deadline=None)
@given(dst.schedules(), st.lists(dst.interior_times(1e-3, 1 - 1e-3), min_size=1, max_size=8))
def test_schedules_match_the_reference(device, schedule, ts):
    ts = np.array(ts)
    if isinstance(schedule, DiscreteSchedule):
        ts = ts[schedule.alpha(ts) > 0]  # zero terminal SNR: alpha = 0 on the last interval
        if ts.size == 0:
            return
    ours = torch_schedule(schedule)
    tt = torch.tensor(ts, dtype=torch.float64, device=device)
    # the reference forms t*T without rounding; torch rounds it once: a relative error of
    # |t d log q/dt| eps in each quantity q (binding on the steep last cosine interval)
    cond = (
        1.0
        + ts * np.abs(np.asarray(schedule.d_log_snr(ts)))
        + ts * np.abs(np.asarray(schedule.f(ts)))
    )
    for name in SCHEDULE_QUANTITIES:
        ref = np.asarray(getattr(schedule, name)(ts))
        got = getattr(ours, name)(tt).cpu().numpy()
        scale = np.abs(ref) if name != "log_snr" else np.maximum(np.abs(ref), 1.0)
        err = np.abs(got - ref)
        ok = err <= TORCH_RTOL["float64"] * cond * scale + 1e-300
        assert ok.all(), (name, schedule, ts[~ok], got[~ok], ref[~ok])


def _points(mixture, alpha, sigma, n, seed):
    """Points from the diffused mixture plus a few far outside it."""
    g = np.random.default_rng(seed)
    x = alpha * mixture.sample(n, g) + sigma * g.standard_normal((n, mixture.d))
    x[: max(1, n // 10)] *= 3.0
    return x


def _scales(mixture, x, alpha, sigma):
    """(S_g, S_log, 1/c_min): the size of the terms that cancel in g_k = C_k^{-1}(x - alpha mu_k)
    and in the Mahalanobis terms, per point: (|x| + alpha |mu_k|)/c_min and
    (|x| + alpha |mu_k|)^2/c_min, maximised over k (c_min the smallest eigenvalue of C_k)."""
    lam = np.array([np.linalg.eigvalsh(c).min() for c in mixture.covs])
    a = np.reshape(alpha, (-1, 1))
    c_min = a**2 * lam + np.reshape(sigma, (-1, 1)) ** 2  # (n or 1, K)
    size = np.linalg.norm(x, axis=1)[:, None] + a * np.linalg.norm(mixture.means, axis=1)
    return (size / c_min).max(1), (size**2 / c_min).max(1), (1.0 / c_min).max(1)


def _compare(mixture, tm, x, alpha, sigma, rtol, device):
    dtype = tm.dtype
    xt = torch.tensor(x, dtype=dtype, device=device)
    S_g, S_log, inv_c = _scales(mixture, x, np.asarray(alpha), np.asarray(sigma))
    S_g = S_g[:, None]
    at = torch.as_tensor(alpha, dtype=dtype, device=device)
    st_ = torch.as_tensor(sigma, dtype=dtype, device=device)
    a_col = np.asarray(alpha).reshape(-1, 1) if np.ndim(alpha) else alpha
    s_col = np.asarray(sigma).reshape(-1, 1) if np.ndim(sigma) else sigma
    lam_max = max(np.linalg.eigvalsh(c).max() for c in mixture.covs)
    mu_max = np.linalg.norm(mixture.means, axis=1).max()
    checks = {
        "log_prob": np.abs(mixture.log_prob(x, alpha, sigma)) + S_log,
        "responsibilities": 1.0 + S_log[:, None],
        "score": S_g,
        "eps": s_col * S_g,
        "denoise": mu_max + a_col * lam_max * S_g,
        # sum_k r_k |g_k|^2 - |score|^2 cancels at S_g^2; tr C_k^{-1} is at most d / c_min
        "laplacian": S_g[:, 0] ** 2 + mixture.d * inv_c,
    }
    for name, scale in checks.items():
        ref = getattr(mixture, name)(x, alpha, sigma)
        got = getattr(tm, name)(xt, at, st_).cpu().numpy()
        err = np.abs(got - ref)
        bound = rtol * scale
        assert np.all(err <= bound), (name, float((err / bound).max()))


@device_param
@settings(max_examples=40, deadline=None)
@given(
    dst.gaussian_mixtures(),
    st.floats(0.05, 1.0),
    st.floats(0.02, 2.0),
    st.integers(0, 2**31 - 1),
    st.booleans(),
)
def test_mixture_matches_the_reference_float64(device, mixture, alpha, sigma, seed, per_point):
    x = _points(mixture, alpha, sigma, 50, seed)
    if per_point:  # one (alpha, sigma) per point: training-style batches
        g = np.random.default_rng(seed + 1)
        alpha = g.uniform(0.05, 1.0, 50)
        sigma = g.uniform(0.02, 2.0, 50)
    tm = TorchMixture.from_reference(mixture, device=device, chunk_elems=7 * mixture.K * mixture.d)
    _compare(mixture, tm, x, alpha, sigma, TORCH_RTOL["float64"], device)


@device_param
@pytest.mark.parametrize("target", [ring8, aniso64], ids=["ring8", "aniso64"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_builtin_targets_over_time(device, target, dtype):
    mixture = target()
    tm = TorchMixture.from_reference(mixture, device=device, dtype=dtype)
    for t_alpha in (0.999, 0.9, 0.5, 0.1):
        alpha, sigma = t_alpha, math.sqrt(1 - t_alpha**2)
        x = _points(mixture, alpha, sigma, 300, 0)
        _compare(mixture, tm, x, alpha, sigma, TORCH_RTOL[str(dtype).split(".")[1]], device)


@device_param
def test_chunking_does_not_change_results(device):
    mixture = aniso64()
    xn = _points(mixture, 0.7, 0.7, 1000, 3)
    x = torch.tensor(xn, device=device)
    kw = dict(device=device, fused=False)  # chunks are the torch path's (the kernel has none)
    whole = TorchMixture.from_reference(mixture, **kw).score(x, 0.7, 0.7)
    tiny = TorchMixture.from_reference(mixture, chunk_elems=1, **kw).score(x, 0.7, 0.7)
    # one row per chunk changes only the GEMM's blocking: differences at rounding level of the
    # cancelling terms
    S_g = torch.tensor(_scales(mixture, xn, 0.7, 0.7)[0][:, None], device=device)
    assert bool(((whole - tiny).abs() <= 100 * EPS64 * S_g).all())


@pytest.mark.parametrize("device", DEVICES)
def test_bad_input_is_named(device):
    tm = TorchMixture.from_reference(ring8(), device=device)  # fused kernel on CUDA
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="x must be finite"):
            tm.score(torch.tensor([[0.3, 0.1], [0.0, bad]], device=device), 0.5, 0.5)
        with pytest.raises(ValueError, match="x must be finite"):
            tm.denoise(torch.tensor([[bad, 0.0]], device=device), torch.tensor(0.5), 0.5)
    with pytest.raises(ValueError, match="x must have shape"):
        tm.score(torch.zeros(3, 5), 0.5, 0.5)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        tm.score(torch.zeros(3, 2), 0.5, -1.0)
    with pytest.raises(ValueError, match="x must be finite"):
        tm.score(torch.tensor([[0.0, float("nan")]]), 0.5, 0.5)
    with pytest.raises(ValueError, match="alpha must be finite"):
        tm.score(torch.zeros(3, 2), float("nan"), 0.5)
    with pytest.raises(ValueError, match="alpha must be a scalar or have the batch shape"):
        tm.score(torch.zeros(3, 2), torch.ones(4), 0.5)
    with pytest.raises(ValueError, match=r"weights must sum to 1 .*sum is 1\.1"):
        TorchMixture([0.5, 0.6], [[0.0], [1.0]], [1.0, 1.0], covariance_type="iso", device="cpu")
    with pytest.raises(ValueError, match="covs must have shape"):
        TorchMixture([1.0], [[0.0, 0.0]], [1.0, 1.0], covariance_type="iso", device="cpu")
    with pytest.raises(ValueError, match="device must name a torch device"):
        TorchMixture([1.0], [[0.0]], [1.0], covariance_type="iso", device="nosuch")
    with pytest.raises(TypeError, match="dtype must be"):
        TorchMixture([1.0], [[0.0]], [1.0], covariance_type="iso", dtype=torch.float16)
    with pytest.raises(ValueError, match="t must lie in"):
        torch_schedule(DiscreteSchedule.linear()).alpha(torch.tensor([1.5]))
    with pytest.raises(TypeError, match="schedule must be a built-in"):
        torch_schedule(object())


cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda_only
@pytest.mark.parametrize("target", [ring8, aniso64], ids=["ring8", "aniso64"])
def test_fused_far_points_take_the_online_sweep(target):
    """Points so far from every component that every exp(logit_k - m_ref) underflows the fixed
    shift's threshold (m_ref = max_k of the logits' constants): the kernel redoes their block
    with the online recurrence and still equals the reference."""
    from diffusion_oracle.accelerated._fused import LOG_TINY

    mixture = target()
    alpha, sigma = 0.9, math.sqrt(1 - 0.81)
    g = np.random.default_rng(7)
    x = _points(mixture, alpha, sigma, 64, 7)
    direction = g.standard_normal((8, mixture.d))
    x[:8] = 200.0 * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    # the precondition, from the reference: log sum_k exp(logit_k - m_ref) < log TINY
    covs = alpha**2 * mixture.covs + sigma**2 * np.eye(mixture.d)
    const = np.log(mixture.weights) - 0.5 * (
        mixture.d * math.log(2 * math.pi) + np.linalg.slogdet(covs)[1]
    )
    lp = mixture.log_prob(x, alpha, sigma)
    assert np.all(lp[:8] - const.max() < LOG_TINY[torch.float64]), lp[:8] - const.max()
    tm = TorchMixture.from_reference(mixture, device="cuda")
    assert tm.fused
    _compare(mixture, tm, x, alpha, sigma, TORCH_RTOL["float64"], "cuda")


@cuda_only
def test_fused_eval_score_and_eps_together():
    """One kernel call asked for the score and eps: eps = -sigma score, both against the
    reference."""
    from diffusion_oracle.accelerated._fused import fused_eval

    mixture = aniso64()
    x = _points(mixture, 0.6, 0.8, 200, 11)
    tm = TorchMixture.from_reference(mixture, device="cuda")
    out = fused_eval(tm, torch.tensor(x, device="cuda"), 0.6, 0.8, ("score", "eps", "log_prob"))
    S_g = _scales(mixture, x, 0.6, 0.8)[0][:, None]
    for name, ref, scale in (
        ("score", mixture.score(x, 0.6, 0.8), S_g),
        ("eps", mixture.eps(x, 0.6, 0.8), 0.8 * S_g),
    ):
        err = np.abs(out[name].cpu().numpy() - ref)
        assert np.all(err <= TORCH_RTOL["float64"] * scale), (name, float(err.max()))


@cuda_only
def test_fused_kernel_limits_its_dimension():
    """Full covariances beyond d = 128 (the kernel's d x d tiles would not fit in shared memory)
    take the chunked torch path by default; asking for the kernel is a named error."""
    g = np.random.default_rng(3)
    d = 130
    mixture = GaussianMixture(
        np.array([0.4, 0.6]), g.standard_normal((2, d)), np.stack([np.eye(d), 0.5 * np.eye(d)])
    )
    tm = TorchMixture.from_reference(mixture, device="cuda")
    assert not tm.fused
    x = _points(mixture, 0.8, 0.6, 20, 0)
    _compare(mixture, tm, x, 0.8, 0.6, TORCH_RTOL["float64"], "cuda")
    with pytest.raises(ValueError, match="fused=True needs d <= 128"):
        TorchMixture.from_reference(mixture, device="cuda", fused=True)
