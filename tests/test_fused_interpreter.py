"""The Triton kernels of accelerated/_fused.py on the CPU, through Triton's interpreter
(TRITON_INTERPRET=1): their logic (the affine g, the fixed log-sum-exp shift and the FIXUP
launch, the parameter kernel, padding, the denoiser and Laplacian terms, the fused DDPM step and
its noise) against the NumPy reference, on every machine, GPU or not. The interpreter evaluates
each tl operation with NumPy, so these tests check what the kernels compute, not how fast; the
CUDA tests (test_accelerated*.py) run the compiled kernels where a GPU is present.

`make test` runs this file in its own environment (.venv-kernels: Triton 3.6 and NumPy < 2.4,
which Triton 3.6's interpreter needs), with TRITON_INTERPRET=1 set before Triton is imported;
in any other run it is skipped."""

import math
import os

import numpy as np
import pytest

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip(
        "run by `make test-kernels` (TRITON_INTERPRET=1 in .venv-kernels)", allow_module_level=True
    )
torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from test_accelerated import _points, _scales  # noqa: E402
from tolerances import TORCH_RTOL  # noqa: E402

from diffusion_oracle.accelerated import _fused as F  # noqa: E402
from diffusion_oracle.accelerated.targets import TorchMixture  # noqa: E402
from diffusion_oracle.reference import GaussianMixture, aniso64, ring8  # noqa: E402


def _full5():
    """A full-covariance mixture in d = 5 (padded to 16 inside the kernel), spread-out spectra."""
    g = np.random.default_rng(4)
    qs = [np.linalg.qr(g.standard_normal((5, 5)))[0] for _ in range(3)]
    covs = np.stack([(q * np.logspace(-2, 0, 5)) @ q.T for q in qs])
    return GaussianMixture(np.array([0.2, 0.3, 0.5]), g.standard_normal((3, 5)), covs)


def _diag3():
    g = np.random.default_rng(5)
    covs = np.exp(g.uniform(-3, 0, (4, 3)))  # variances
    means = g.standard_normal((4, 3))
    return GaussianMixture(np.full(4, 0.25), means, covs, covariance_type="diag")


TARGETS = {"ring8 (iso)": ring8, "aniso64 (full)": aniso64, "full d=5": _full5, "diag": _diag3}


def _far(mixture, x, n_far, seed):
    """Replace the first n_far points by points at distance 200 from the origin: every term of
    the fixed shift underflows there, so the second (FIXUP) launch must redo their blocks."""
    g = np.random.default_rng(seed)
    u = g.standard_normal((n_far, mixture.d))
    x[:n_far] = 200.0 * u / np.linalg.norm(u, axis=1, keepdims=True)
    return x


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(TARGETS))
def test_fused_eval_matches_the_reference(name, dtype):
    mixture = TARGETS[name]()
    alpha, sigma = 0.8, 0.6
    # far points in float64 only: in float32 their logits (~1e4) carry absolute errors ~1e-3,
    # which move the responsibilities beyond the float32 tolerance on any path (the chunked
    # torch path included)
    n_far = 6 if dtype == torch.float64 else 0
    x = _far(mixture, _points(mixture, alpha, sigma, 70, 1), n_far, 2)
    tm = TorchMixture.from_reference(mixture, device="cpu", dtype=dtype, fused=False)
    what = ("score", "log_prob", "x0", "laplacian", "resp")
    out = F.fused_eval(tm, torch.tensor(x, dtype=dtype), alpha, sigma, what)
    eps = F.fused_eval(tm, torch.tensor(x, dtype=dtype), alpha, sigma, ("eps",))["eps"]
    S_g, S_log, inv_c = _scales(mixture, x, alpha, sigma)
    lam_max = max(np.linalg.eigvalsh(c).max() for c in mixture.covs)
    mu_max = np.linalg.norm(mixture.means, axis=1).max()
    rtol = TORCH_RTOL[str(dtype).split(".")[1]]
    x0_scale = mu_max + alpha * lam_max * S_g[:, None]
    lap_scale = S_g**2 + mixture.d * inv_c
    checks = {  # (ours, reference, scale): the scales of test_accelerated._compare
        "score": (out["score"], mixture.score(x, alpha, sigma), S_g[:, None]),
        "eps": (eps, mixture.eps(x, alpha, sigma), sigma * S_g[:, None]),
        "log_prob": (out["log_prob"], mixture.log_prob(x, alpha, sigma), S_log),
        "x0": (out["x0"], mixture.denoise(x, alpha, sigma), x0_scale),
        "laplacian": (out["laplacian"], mixture.laplacian(x, alpha, sigma), lap_scale),
        "resp": (out["resp"], mixture.responsibilities(x, alpha, sigma), 1.0 + S_log[:, None]),
    }
    for key, (got, ref, scale) in checks.items():
        err = np.abs(got.double().numpy() - ref)
        bound = rtol * (np.abs(ref) + scale) if key == "log_prob" else rtol * scale
        assert np.all(err <= bound), (key, float((err / bound).max()))


def test_the_far_points_need_the_second_launch():
    """The precondition of the far-point cases, from the reference: log sum_k exp(logit_k -
    m_ref) < LOG_TINY, so without the FIXUP launch their log-density would be -inf."""
    mixture = aniso64()
    alpha, sigma = 0.8, 0.6
    x = _far(mixture, _points(mixture, alpha, sigma, 10, 1), 6, 2)
    covs = alpha**2 * mixture.covs + sigma**2 * np.eye(mixture.d)
    const = np.log(mixture.weights) - 0.5 * (
        mixture.d * math.log(2 * math.pi) + np.linalg.slogdet(covs)[1]
    )
    lp = mixture.log_prob(x, alpha, sigma)
    assert np.all(lp[:6] - const.max() < F.LOG_TINY[torch.float64])
    assert np.all(lp[6:] - const.max() > F.LOG_TINY[torch.float64])


@pytest.mark.parametrize("name", ["ring8 (iso)", "full d=5"])
def test_fused_ddpm_step_and_its_noise(name):
    """x' = cx x - cg g + std z against the reference's score with the noise given, far points
    included; and the noise drawn in the kernel: the same z in both launches (read back from a
    step at the far points, against a step at x = 0 with cx = cg = 0, std = 1), mean ~0 and
    variance ~1."""
    mixture = TARGETS[name]()
    tm = TorchMixture.from_reference(mixture, device="cpu", fused=False)
    a, s, cx, cg, std = 0.7, 0.5, 1.3, 0.2, 0.4
    x = _far(mixture, _points(mixture, a, s, 80, 3), 8, 4)
    xt = torch.tensor(x)
    score = mixture.score(x, a, s)
    z = np.random.default_rng(6).standard_normal(x.shape)
    got = F.fused_ddpm_step(tm, xt, a, s, cx, cg, std, noise=torch.tensor(z)).numpy()
    want = cx * x + cg * score + std * z
    S_g = _scales(mixture, x, a, s)[0]
    bound = TORCH_RTOL["float64"] * (1.0 + cx * np.abs(x).max(1) + cg * S_g + std * 6.0)
    err = np.abs(got - want).max(1)
    assert np.all(err <= bound), float((err / bound).max())
    gen = torch.Generator().manual_seed(7)
    stepped = F.fused_ddpm_step(tm, xt, a, s, cx, cg, std, generator=gen.manual_seed(9)).numpy()
    z_read = (stepped - cx * x - cg * score) / std
    z_ref = F.fused_ddpm_step(
        tm, torch.zeros_like(xt), a, s, 0.0, 0.0, 1.0, generator=gen.manual_seed(9)
    ).numpy()
    assert np.all(np.abs(z_read - z_ref).max(1) <= bound / std)
    # 8 x 80 x d normals (d = 2 or 5): mean and variance within 5 standard errors
    zs = np.concatenate(
        [F.fused_ddpm_step(tm, torch.zeros_like(xt), a, s, 0.0, 0.0, 1.0, generator=gen).numpy()
         for _ in range(8)]
    ).ravel()  # fmt: skip
    assert abs(zs.mean()) < 5 / math.sqrt(zs.size)
    assert abs(zs.var() - 1.0) < 5 * math.sqrt(2.0 / zs.size)


def test_fused_ddpm_steps_runs_a_schedule():
    """Several steps through fused_ddpm_steps (one scalar table, one seed draw, std = 0 so the
    run is deterministic) equal the same steps taken with the reference's score."""
    mixture = ring8()
    tm = TorchMixture.from_reference(mixture, device="cpu", fused=False)
    x = torch.tensor(_points(mixture, 0.3, 0.95, 40, 8))
    steps = [(0.3, 0.95, 1.1, 0.05, 0.0), (0.5, 0.87, 1.05, 0.04, 0.0), (0.8, 0.6, 1.0, 0.02, 0.0)]
    got = F.fused_ddpm_steps(tm, x, steps, generator=torch.Generator().manual_seed(0))
    want = x
    for a, s, cx, cg, _ in steps:
        want = cx * want + cg * torch.tensor(mixture.score(want.numpy(), a, s))
    assert float((got - want).abs().max()) <= 1e-12 * float(want.abs().max() + 1.0)


def test_int64_offsets(monkeypatch):
    """The int64 offsets (taken once N d or N K reaches 2^31, too large to test directly) give
    the int32 results: forced on for a small N, for the mixture and the DDPM kernels."""
    mixture = aniso64()
    tm = TorchMixture.from_reference(mixture, device="cpu", fused=False)
    x = torch.tensor(_far(mixture, _points(mixture, 0.8, 0.6, 70, 1), 6, 2))
    what = ("score", "log_prob", "x0", "laplacian", "resp")
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    before = F.fused_eval(tm, x, 0.8, 0.6, what)
    step_before = F.fused_ddpm_step(tm, x, 0.8, 0.6, 1.1, 0.2, 0.3, noise=z)
    flags = F._flags
    monkeypatch.setattr(F, "_flags", lambda *a: {**flags(*a), "I64": True})
    assert F._flags(tm, 70, 64)["I64"]
    after = F.fused_eval(tm, x, 0.8, 0.6, what)
    for key in what:
        assert torch.equal(before[key], after[key]), key
    assert torch.equal(step_before, F.fused_ddpm_step(tm, x, 0.8, 0.6, 1.1, 0.2, 0.3, noise=z))


def test_the_second_launch_runs_only_when_needed(monkeypatch):
    """fused_eval launches FIXUP only when some point is below the fixed shift's threshold (its
    one synchronisation reads the flag the first launch sets); a non-finite x is a named
    error."""
    mixture = aniso64()
    tm = TorchMixture.from_reference(mixture, device="cpu", fused=False)
    calls = []
    launch = F._launch_fixup
    monkeypatch.setattr(F, "_launch_fixup", lambda *a: calls.append(1) or launch(*a))
    near = _points(mixture, 0.8, 0.6, 40, 1)
    F.fused_eval(tm, torch.tensor(near), 0.8, 0.6, ("score",))
    assert calls == []
    out = F.fused_eval(tm, torch.tensor(_far(mixture, near.copy(), 3, 2)), 0.8, 0.6, ("score",))
    assert calls == [1] and bool(torch.isfinite(out["score"]).all())
    # NaN, +inf and -inf against every covariance type (against iso and diagonal components an
    # infinite entry gives log p = -inf, not NaN)
    for make in TARGETS.values():
        mixture = make()
        tm = TorchMixture.from_reference(mixture, device="cpu", fused=False)
        for bad in (float("nan"), float("inf"), -float("inf")):
            x = torch.tensor(_points(mixture, 0.8, 0.6, 40, 1))
            x[5, mixture.d - 1] = bad
            with pytest.raises(ValueError, match="x must be finite"):
                F.fused_eval(tm, x, 0.8, 0.6, ("score",))



@pytest.mark.parametrize("alpha,sigma", [(0.0, 1.0), (1.0, 1e-3), (0.3, 2.5)])
def test_the_scalars_reach_the_kernels_exactly(alpha, sigma):
    """The floats travel as their 64-bit patterns (``_bits``): alpha = 0 is the pattern 0, the
    score's scale -1 a negative one; a float32 rounding of any of them would show at 1e-12."""
    assert F._bits(0.0) == 0 and F._bits(-1.0) < 0
    mixture = _full5()
    x = _points(mixture, alpha, sigma, 24, 3)
    tm = TorchMixture.from_reference(mixture, device="cpu", fused=False)
    out = F.fused_eval(tm, torch.tensor(x), alpha, sigma, ("score", "log_prob", "x0"))
    S_g, S_log, _ = _scales(mixture, x, alpha, sigma)
    rtol = TORCH_RTOL["float64"]
    lp_ref = mixture.log_prob(x, alpha, sigma)
    assert np.all(np.abs(out["log_prob"].numpy() - lp_ref) <= rtol * (np.abs(lp_ref) + S_log))
    err = np.abs(out["score"].numpy() - mixture.score(x, alpha, sigma))
    assert np.all(err <= rtol * S_g[:, None])
    if alpha > 0:  # at alpha = 0 the denoiser is the prior mean; the reference's scale differs
        lam_max = max(np.linalg.eigvalsh(c).max() for c in mixture.covs)
        x0_scale = np.linalg.norm(mixture.means, axis=1).max() + alpha * lam_max * S_g[:, None]
        err = np.abs(out["x0"].numpy() - mixture.denoise(x, alpha, sigma))
        assert np.all(err <= rtol * x0_scale)


def test_a_bad_row_is_named_next_to_a_far_row():
    """A NaN in a block that FIXUP must also redo (a far row next to it) is named through the
    first launch's flag, not smoothed over by the second launch."""
    mixture = aniso64()
    tm = TorchMixture.from_reference(mixture, device="cpu", fused=False)
    x = torch.tensor(_far(mixture, _points(mixture, 0.8, 0.6, 40, 1), 3, 2))
    x[7, 0] = float("nan")  # same block of BM >= 16 rows as the far rows 0..2
    with pytest.raises(ValueError, match="x must be finite"):
        F.fused_eval(tm, x, 0.8, 0.6, ("score",))


def test_noise_dominated_denoiser_leaves_the_kernel_for_the_exact_form():
    """Where noise dominates (alpha^2 max eig Sigma <= sigma^2) far from the data the kernel's
    plain-form responsibilities keep only |x|^2/sigma^2 ulps of their differences: E[x0|x] came
    out 1.6e-10 off at 1e3 stds, lambda = -30. With the kernel switched on, the public method
    takes the unfused path there and matches the 50-digit oracle (tests/mp_mixture.py) to the
    closed-form budget; at a signal-dominated level it keeps the kernel (and is as accurate)."""
    import sys
    from pathlib import Path

    from scipy.special import expit
    from tolerances import tol

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from accuracy_mixture import configs, points
    from mp_mixture import MpMixture, relative_error

    calls = []
    real = F.fused_eval

    def counting(*args, **kwargs):
        calls.append(args[-1])
        return real(*args, **kwargs)

    name, raw, spec = configs(quick=True)[1]  # full (Hadamard) d=64, K=16
    tm = TorchMixture(**raw, device="cpu", dtype=torch.float64, fused=False)
    tm.fused = True  # as on CUDA (fused=True itself needs a CUDA device)
    oracle = MpMixture(raw, spec)
    budget = tol("closed_form")["rtol"]
    F.fused_eval = counting
    try:
        for lam, kernel in ((-30.0, False), (30.0, True)):
            a, s = float(np.sqrt(expit(lam))), float(np.sqrt(expit(-lam)))
            X = points(raw, spec, a, s, (0.0, 1000.0), np.random.default_rng(7))
            calls.clear()
            got = tm.denoise(torch.tensor(X), a, s).numpy()
            assert bool(calls) == kernel, (lam, calls)
            for i in range(2):
                err = relative_error(got[i], oracle.evaluate(X[i], a, s)["denoise"])
                assert err <= budget, (lam, i, err)
    finally:
        F.fused_eval = real
