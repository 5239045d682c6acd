"""The pipeline-faithful k-diffusion route (issue 20): a sampler runs on a model wrapper
(CompVisDenoiser, DiscreteEpsDDPMDenoiser, CompVisVDenoiser, quantize=True as real use has it)
around the exact network, which answers at the level the wrapper's label t names; the level
probe measures the sample's true level and verify judges the labels. Expected values: the DDPM
training table from the betas (Ho et al. 2020, closed form), the Karras sigmas (Karras et al.
2022, eq. 5) and nearest/linear-in-log-sigma labels computed here with NumPy; never a number
read off the driver."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("torchsde", reason="the validation extra is not installed")
torch = pytest.importorskip("torch")
kd = pytest.importorskip("diffusion_oracle.validation.k_diffusion")
try:
    KS = kd.load_sampling()
    EXT = kd.load_module("external")
except ImportError:  # pragma: no cover - k-diffusion itself missing
    pytest.skip("k-diffusion is not installed", allow_module_level=True)

from diffusion_oracle import Heun, Verdict, from_k_diffusion, verify  # noqa: E402
from diffusion_oracle.reference.schedules import DiscreteSchedule  # noqa: E402
from diffusion_oracle.validation.pipeline import PipelineError, judge_labels  # noqa: E402

STEPS = [8, 16, 32]


def _row(report, name):
    return next(c for c in report.checks if c.name == name)


def _table():
    """log sigma_VE of linear(1000) from the betas: alpha_bar_k = prod_{j <= k} (1 - beta_j)."""
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1.0 - betas)
    return 0.5 * np.log((1.0 - ab) / ab)


def _karras(n, lo, hi, rho=7.0):
    i = np.arange(n) / (n - 1)
    return (hi ** (1 / rho) + i * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho


# ------------------------------------------------------------------------- the labels
@pytest.mark.parametrize("quantize", [True, False])
def test_labels_are_the_documented_map_of_the_karras_sigmas(quantize):
    """The network is told t = sigma_to_t(sigma): the nearest training step (quantize=True) or
    the fractional step linear in log sigma between entries, for the Karras sigmas on the
    wrapper's range; and the probe measures the input at exactly those sigmas."""
    s = from_k_diffusion(KS.sample_euler, wrapper="CompVisDenoiser", quantize=quantize)
    tr = s.trace(s.schedule, 12)
    ls = _table()
    # the wrapper's range as it holds it: sqrt((1 - alpha_bar) / alpha_bar) of the float32
    # alphas_cumprod buffer, in float32 (8e-5 relative off the table at sigma_min, where
    # 1 - alpha_bar = 1e-4 cancels)
    ab32 = np.exp(-np.logaddexp(0.0, 2.0 * ls)).astype(np.float32)
    lo, hi = (float(np.sqrt((np.float32(1) - a) / a)) for a in (ab32[0], ab32[-1]))
    sig = _karras(12, lo, hi)
    exact = np.interp(np.log(sig), ls, np.arange(1000.0))
    labels = np.asarray(tr.labels)
    if quantize:
        # the nearest training step, except within float32 reach of a tie (log sigma known to
        # ~1e-7 relative over a table spacing >= 2e-3: 1e-3 of a step)
        assert np.all(labels == np.round(labels))
        clear = np.abs(exact - np.floor(exact) - 0.5) > 1e-3
        assert np.all(labels[clear] == np.round(exact[clear]))
        assert np.all(np.abs(labels - exact) <= 0.5 + 1e-3)
    else:
        # float32: log sigma to ~1e-7 (relative) over a table spacing of >= 2e-3
        np.testing.assert_allclose(labels, exact, atol=1e-3)
    # the probe reads each input's level: in float64 (a float64 table, so its own range) the
    # sigmas carry k-diffusion's float32 construction: (a + i b)^rho amplifies the base's
    # rounding by rho = 7, relative 4 rho u32 in sigma (as check_schedules), twice in lambda
    s64 = from_k_diffusion(KS.sample_euler, wrapper="CompVisDenoiser", quantize=quantize,
                           dtype="float64")  # fmt: skip
    sig64 = _karras(12, math.exp(ls[0]), math.exp(ls[-1]))
    np.testing.assert_allclose(s64.trace(s64.schedule, 12).lam_in, -2.0 * np.log(sig64), rtol=0,
                               atol=2 * 4 * 7 * 2.0**-24)  # fmt: skip


class TruncatingDenoiser(EXT.CompVisDenoiser):
    """A planted fault: labels truncated to the training step below instead of the nearest."""

    def sigma_to_t(self, sigma, quantize=None):
        return super().sigma_to_t(sigma, quantize=False).floor().long()


class OffByOneDenoiser(EXT.CompVisDenoiser):
    """A planted fault: node n = k + 1 handed as the label (the k / n confusion)."""

    def sigma_to_t(self, sigma, quantize=None):
        return super().sigma_to_t(sigma, quantize) + 1


def sample_euler_lookahead(model, x, sigmas, extra_args=None, disable=None):
    """A planted fault: Euler with the denoiser asked at the next sigma."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        ask = sigmas[i + 1] if sigmas[i + 1] > 0 else sigmas[i]
        d = (x - model(x, ask * s_in)) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


@pytest.mark.parametrize(
    "fn, wrapper, expect",
    [
        (KS.sample_euler, TruncatingDenoiser, "off by"),
        (KS.sample_euler, OffByOneDenoiser, "off by"),
        (sample_euler_lookahead, "CompVisDenoiser", "call 0"),
    ],
    ids=["truncated", "off-by-one", "lookahead"],
)
def test_planted_label_faults_fail_with_the_diagnosis(fn, wrapper, expect):
    s = from_k_diffusion(fn, wrapper=wrapper, order=1)
    rep = verify(s, "ring8", steps=STEPS, tiers=(1,), progress=False)
    row = _row(rep, "labels name the sample's level")
    assert row.verdict is Verdict.FAIL and rep.verdict is Verdict.FAIL
    assert "the network is told t=" in row.reason and "while the sample is at sigma" in row.reason
    assert expect in row.reason


@pytest.mark.parametrize(
    "fn, wrapper, quantize, dtype, order",
    [
        (KS.sample_euler, "CompVisDenoiser", True, "float32", 1),
        (KS.sample_heun, "CompVisVDenoiser", False, "float64", 2),
        (KS.sample_dpmpp_2m, "DiscreteEpsDDPMDenoiser", True, "float32", 2),
        (KS.sample_euler, TruncatingDenoiser.__mro__[1], False, "float32", 1),
    ],
    ids=["euler-compvis-q", "heun-v-f64", "dpmpp2m-eps-q", "euler-unmodified-base"],
)
def test_unmodified_wrappers_pass(fn, wrapper, quantize, dtype, order):
    s = from_k_diffusion(fn, wrapper=wrapper, quantize=quantize, dtype=dtype, order=order)
    rep = verify(s, "ring8", steps=[8, 16, 32, 64], tiers=(1, 2), progress=False)
    assert _row(rep, "labels name the sample's level").verdict is Verdict.PASS
    assert rep.verdict is Verdict.PASS, rep
    assert rep.dtype == dtype


def test_float64_wrapper_run_is_the_reference_on_the_same_grid():
    """quantize=False in float64: the run equals the reference Heun on the levels it goes
    through (the float32 sigmas are the only rounding)."""
    s = from_k_diffusion(KS.sample_heun, wrapper="CompVisDenoiser", quantize=False,
                         dtype="float64", order=2)  # fmt: skip
    rep = verify(s, "ring8", steps=[8, 16, 32], tiers=(1,), reference=Heun(), progress=False)
    assert rep.verdict is Verdict.PASS, rep
    # judged within verify's rounding model (float64 run, float32 sigmas): the same-grid row
    same = next(c for c in rep.checks if c.name == "same-grid reference")
    assert same.verdict is Verdict.PASS and same.law


def test_stochastic_samplers_have_their_noise_intercepted():
    """Ancestral and SDE samplers draw through noise_sampler; churn through torch.randn_like:
    the probe measures their levels (labels PASS)."""
    for fn, kw in ((KS.sample_euler_ancestral, {}), (KS.sample_dpmpp_2m_sde, {}),
                   (KS.sample_euler, {"s_churn": 1.0, "s_tmax": 10.0})):  # fmt: skip
        s = from_k_diffusion(fn, wrapper="CompVisDenoiser", stochastic=True, **kw)
        tr = s.trace(s.schedule, 10)
        assert tr.available and tr.stochastic, (fn.__name__, tr.why)
        assert judge_labels([tr]).verdict is Verdict.PASS


def test_churn_above_the_trained_range_is_a_named_label_fault():
    """sample_euler's churn raises the first level to sigma_max (1 + gamma), above the network's
    last training level (sigma 157 of linear(1000)); the wrapper clamps the label to T - 1 = 999:
    the network is told 999 while the sample is at sigma_max (1 + gamma) (k-diffusion's
    gamma = min(s_churn / N, sqrt(2) - 1): 0.1 at N = 10)."""
    s = from_k_diffusion(KS.sample_euler, wrapper="CompVisDenoiser", stochastic=True,
                         s_churn=1.0)  # fmt: skip
    row = judge_labels([s.trace(s.schedule, 10)])
    sig_max = math.exp(_table()[-1])
    assert row.verdict is Verdict.FAIL and "call 0" in row.reason and "t=999" in row.reason
    assert f"sigma {sig_max * 1.1:.4g}" in row.reason
    assert "outside the network's training range" in row.reason


def sample_euler_global_noise(model, x, sigmas, extra_args=None, disable=None):
    """Euler ancestral-like: noise from torch.randn, which the probe cannot intercept."""
    for i in range(len(sigmas) - 1):
        x = x + (sigmas[i + 1] - sigmas[i]) * (x - model(x, sigmas[i] * x.new_ones(len(x)))) / (
            sigmas[i])  # fmt: skip
        x = x + 1e-3 * torch.randn(x.shape, dtype=x.dtype)
    return x


def test_noise_the_probe_cannot_see_is_said_not_judged():
    s = from_k_diffusion(sample_euler_global_noise, wrapper="CompVisDenoiser", stochastic=True)
    row = s.checks(s.schedule, [6])[0]
    assert row.verdict is Verdict.SKIPPED and "outside noise_sampler" in row.reason


def sample_raises(model, x, sigmas, extra_args=None, disable=None):
    model(x, sigmas[0] * x.new_ones(len(x)))
    raise IndexError("index 1000 is out of bounds")


def test_a_sampler_that_raises_is_a_fail_row_naming_it():
    s = from_k_diffusion(sample_raises, wrapper="CompVisDenoiser")
    rep = verify(s, "ring8", steps=STEPS, tiers=(1,), progress=False)
    row = _row(rep, "runs")
    assert row.verdict is Verdict.FAIL
    assert "k-diffusion raised IndexError in sample_raises on CompVisDenoiser" in row.reason
    with pytest.raises(PipelineError) as e:
        s.trace(s.schedule, 4)
    assert e.value.who == "sampler"


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="wrapper must be one of"):
        from_k_diffusion(KS.sample_euler, wrapper="OpenAIDenoiserX")
    with pytest.raises(ValueError, match="sigmas must be one of"):
        from_k_diffusion(KS.sample_euler, wrapper="CompVisDenoiser", sigmas="polyexp")
    with pytest.raises(ValueError, match="dtype must be"):
        from_k_diffusion(KS.sample_euler, wrapper="CompVisDenoiser", dtype="float16")
    with pytest.raises(TypeError, match="schedule must be a DiscreteSchedule"):
        from diffusion_oracle import VPLinear

        from_k_diffusion(KS.sample_euler, wrapper="CompVisDenoiser", schedule=VPLinear())
    s = from_k_diffusion(KS.sample_euler, wrapper="CompVisDenoiser")
    with pytest.raises(ValueError, match="schedule must be the network's training table"):
        verify(s, "ring8", DiscreteSchedule.scaled_linear(1000), steps=STEPS, progress=False)


def test_quantized_labels_repeat_without_a_repeated_step():
    """With quantize=True and N = 256 Karras sigmas, two sigmas near sigma_min round to the same
    training step (the label check allows half a unit); the sample's levels stay distinct, so
    the model-calls check counts the measured levels and passes, and the landing check runs on
    the measured grid (it raised StopIteration when the grid's node count differed from N)."""
    s = from_k_diffusion(KS.sample_euler, wrapper="CompVisDenoiser", order=1)
    labels = s.trace(s.schedule, 256).labels
    assert len(set(labels)) < len(labels)  # the labels do repeat
    rep = verify(s, "ring8", steps=[64, 128, 256], tiers=(1,), progress=False)
    assert _row(rep, "model calls").verdict is Verdict.PASS
    assert _row(rep, "final step (landing)").verdict is Verdict.PASS
    assert rep.verdict is Verdict.PASS, rep


@pytest.mark.parametrize("n", [16, 64, 256])
def test_planted_faults_fail_at_large_n_too(n):
    """The review's planted faults at step counts where a rounding model that grew linearly
    with the path (c803acc..66d1816) reached whole training steps: labels one step high at the
    last sigmas, and one step high for 0.3 < sigma < 2 (ancestral and deterministic)."""

    class OffByOneLow(EXT.CompVisDenoiser):
        def sigma_to_t(self, sigma, quantize=None):
            t = super().sigma_to_t(sigma, quantize)
            return torch.where(sigma < 0.0101, t + 1, t)

    class MidPlusOne(EXT.CompVisDenoiser):
        def sigma_to_t(self, sigma, quantize=None):
            t = super().sigma_to_t(sigma, quantize)
            return torch.where((sigma > 0.3) & (sigma < 2), t + 1, t)

    for wrapper in (OffByOneLow, MidPlusOne):
        for fn in (KS.sample_euler, KS.sample_euler_ancestral):
            s = from_k_diffusion(fn, wrapper=wrapper, quantize=False)
            assert judge_labels([s.trace(s.schedule, n)]).verdict is Verdict.FAIL, (wrapper, fn)


def test_a_draw_multiplied_by_zero_is_not_stochastic():
    """sample_euler draws torch.randn_like every step and uses it only with churn: measured
    deterministic (the draw never reaches the sample), so verify runs its tier 2."""
    s = from_k_diffusion(KS.sample_euler, wrapper="CompVisDenoiser", stochastic=None)
    assert s.stochastic is False
    s = from_k_diffusion(KS.sample_euler_ancestral, wrapper="CompVisDenoiser", stochastic=None)
    assert s.stochastic is True
