"""Conformance checks 11 (inpainting loops) and 12 (step with a generator), issue 21: usage
loops driven through their real signatures. Expected levels come from closed forms written
here in float64 (the training tables from the betas), never from the checker's output."""

import math

import numpy as np
import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

from diffusion_oracle.validation.checks.inpainting import (  # noqa: E402
    check_inpainting,
    diffusers_blend,
    inpaint_law,
    judge_inpaint_levels,
    probe_inpaint_levels,
    probe_repaint_levels,
    product_target,
)
from diffusion_oracle.validation.checks.usage import check_generator  # noqa: E402
from diffusion_oracle.validation.conformance import (  # noqa: E402
    CASES,
    NOT_CATALOGUED,
    Case,
    check_case,
)
from diffusion_oracle.validation.pipeline import Pipeline  # noqa: E402


def _lam_vp(ab):
    return math.log(ab) - math.log1p(-ab)


def _alpha_bar(beta_start, beta_end, T=1000):
    return np.cumprod(1.0 - np.linspace(beta_start, beta_end, T))


@pytest.mark.parametrize(
    "case",
    [
        Case("DDIMScheduler", {"clip_sample": False, "timestep_spacing": "trailing"}),
        Case("EulerDiscreteScheduler", {"prediction_type": "v_prediction"}),
        Case("FlowMatchEulerDiscreteScheduler", {}),
        Case("DDPMScheduler", {"clip_sample": False}, stochastic=True),
        Case("HeunDiscreteScheduler", {}),
    ],
    ids=lambda c: c.label,
)
def test_correct_schedulers_pass_the_inpainting_check(case):
    res = check_inpainting(case)
    assert res.passed is True, res.detail
    assert "GaussianMixture.condition" in res.detail


def test_repaint_undo_step_re_noises_with_the_wrong_betas():
    """RePaint's undo_step(x, t_last) applies betas[t_last .. t_last + n - 1] to a sample the
    previous step left at alphas_cumprod[t_last - n], so after the jump the network is told
    label t while the sample is noisier. Closed form (linear betas 1e-4..0.02, T = 1000, N = 25,
    n = 40): after step(400) the sample is at alpha_bar[360]; ten undo steps apply betas[400..799]
    and the next call says label 760. Pins diffusers 0.42.1 (related: diffusers#1581, off-by-one
    errors in RePaint, closed without this change)."""
    from diffusers import RePaintScheduler

    it = probe_repaint_levels(RePaintScheduler, 25)
    ok, _, why = judge_inpaint_levels(it, repaint=True)
    ab = _alpha_bar(1e-4, 0.02)
    state = _lam_vp(ab[360] * ab[799] / ab[399])
    label = _lam_vp(ab[760])
    assert not ok
    assert "label 760" in why
    i = int(why.split()[1])  # the first failing call: the first call after the first jump
    assert it.model_labels[i] == 760.0 and it.model_labels[i - 1] == 400.0
    assert it.unknown.lam_in[i] == pytest.approx(state, abs=1e-4)
    assert float(it.unknown.convention.log_snr(760.0)) == pytest.approx(label, abs=1e-6)
    # the whole row: check 11 FAILs RePaint on the levels
    res = check_case(next(c for c in CASES if c.scheduler == "RePaintScheduler"), checks=(11,))
    assert res[-1].passed is False and "label 760" in res[-1].detail
    assert "RePaintScheduler" not in NOT_CATALOGUED


def test_repaint_with_the_right_undo_interval_passes(monkeypatch):
    """The same scheduler with undo_step re-noising over betas[t - n + 1 .. t] (from
    alpha_bar[t - n] to alpha_bar[t]; from the data when t - n < 0) passes check 11, levels and
    law: the check's verdict hinges on that interval."""
    import diffusers
    from diffusers import RePaintScheduler
    from diffusers.schedulers import scheduling_repaint as mod

    class FixedUndoRePaint(RePaintScheduler):
        def undo_step(self, sample, timestep, generator=None):
            n = self.config.num_train_timesteps // self.num_inference_steps
            # below timestep 0 every level is the data (step(0) lands on alpha_bar = 1); the
            # noise through the module's randn_tensor, which the probe intercepts
            for k in range(max(int(timestep) - n + 1, 0), int(timestep) + 1):
                beta = self.betas[k]
                noise = mod.randn_tensor(sample.shape, generator=generator, dtype=sample.dtype)
                sample = (1 - beta) ** 0.5 * sample + beta**0.5 * noise
            return sample

    for N in (10, 25):
        ok, worst, why = judge_inpaint_levels(probe_repaint_levels(FixedUndoRePaint, N),
                                              repaint=True)  # fmt: skip
        assert ok, why
        assert worst <= 1.0
    monkeypatch.setattr(diffusers, "FixedUndoRePaint", FixedUndoRePaint, raising=False)
    res = check_inpainting(Case("FixedUndoRePaint", {"clip_sample": False}, stochastic=True))
    assert res.passed is True, res.detail
    assert "RePaint" in res.detail and "GaussianMixture.condition" in res.detail


def test_kdpm2_blends_the_known_region_at_the_main_sigma_at_its_midpoint_calls():
    """KDPM2's add_noise reads sigmas[index of the label]; at a midpoint label (the interleaved
    timesteps_interpol) that is the next main sigma s1, while the first stage left the sample at
    the geometric midpoint sqrt(s0 s1). Closed form: linear betas 0.00085..0.012, linspace
    timesteps 999, 888 at N = 10."""
    ab = _alpha_bar(0.00085, 0.012)
    sig = np.sqrt((1 - ab) / ab)
    s0, s1 = sig[999], sig[888]
    res = check_inpainting(Case("KDPM2DiscreteScheduler", {}), law=False)
    assert res.passed is False
    want_state, want_known = -2 * math.log(math.sqrt(s0 * s1)), -2 * math.log(s1)
    assert "call 1 " in res.detail
    assert f"{want_state:.6g}" in res.detail and f"{want_known:.6g}" in res.detail


def test_a_blend_at_the_current_timestep_fails():
    """A user's loop that noises the known region to timesteps[i] after step i (instead of
    timesteps[i + 1]) leaves it one step noisier than the sample: FAIL at call 1."""

    def late_blend(image, noise, mask):
        hook = diffusers_blend(image, noise, mask)

        def blend(i, sched, labels, sample):
            shifted = [labels[0]] + list(labels)  # labels[i + 1] -> labels[i]
            return hook(i, sched, shifted, sample)

        return blend

    case = Case("DDIMScheduler", {"clip_sample": False, "timestep_spacing": "trailing"})
    it = probe_inpaint_levels(case.factory(), 10, Pipeline(), blend=late_blend)
    ok, _, why = judge_inpaint_levels(it)
    ab = _alpha_bar(1e-4, 0.02)
    # trailing N = 10: labels 999, 899, ...; call 1 is at 899, the known region at 999
    assert not ok and why.startswith("call 1 (label 899)")
    assert f"{_lam_vp(ab[899]):.6g}" in why and f"{_lam_vp(ab[999]):.6g}" in why


def _ks_ps(detail):
    import re

    return [float(v) for v in re.findall(r"p=([0-9.e+-]+)", detail)]


@pytest.mark.parametrize("fault", ["inverted mask", "mask ignored"])
def test_blend_faults_fail_the_law_on_both_regions(fault):
    """An inverted mask (the known region sampled, the region to repaint overwritten by the
    noised image) and a loop that writes the noised image everywhere both FAIL the law, on the
    known region (off y) and on the repainted one (the image holds OFF_LAW = 5 there, far off
    the conditional law: every KS p-value is ~0)."""

    def faulty(image, noise, mask):
        m = 1.0 - np.asarray(mask) if fault == "inverted mask" else np.zeros_like(mask)
        return diffusers_blend(image, noise, m)

    case = Case("DDIMScheduler", {"clip_sample": False, "timestep_spacing": "trailing"})
    ok, p, detail = inpaint_law(case.factory(), Pipeline(), steps=50, n=500, blend=faulty)
    assert not ok and max(_ks_ps(detail)) < 1e-10, detail
    ok2, _, detail2 = inpaint_law(case.factory(), Pipeline(), steps=50, n=500)
    assert ok2, detail2


def test_a_blend_at_the_wrong_level_passes_the_law_and_fails_the_levels():
    """What each half judges: a loop that blends the clean image (never noised) leaves the
    law of a product target unchanged (the separable score never reads the known region), and
    the level probe names call 1."""

    def clean(image, noise, mask):
        hook = diffusers_blend(image, noise, mask)

        def blend(i, sched, labels, sample):
            return hook(len(labels) - 1, sched, labels, sample)  # the last step's: no noise

        return blend

    case = Case("DDIMScheduler", {"clip_sample": False, "timestep_spacing": "trailing"})
    ok, _, detail = inpaint_law(case.factory(), Pipeline(), steps=50, n=500, blend=clean)
    assert ok, detail
    it = probe_inpaint_levels(case.factory(), 10, Pipeline(), blend=clean)
    ok, _, why = judge_inpaint_levels(it)
    assert not ok and why.startswith("call 1 ")


def test_bad_input_names_the_argument():
    case = Case("DDIMScheduler", {"clip_sample": False})
    with pytest.raises(ValueError, match="steps must name at least one"):
        check_inpainting(case, steps=())
    with pytest.raises(ValueError, match="n must be >= 10"):
        inpaint_law(case.factory(), Pipeline(), n=1)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        check_generator(Case("DDPMScheduler", {}, stochastic=True), steps=0)


def test_product_target_conditional_law_is_the_marginal():
    """GaussianMixture.condition on the product target leaves the repainted coordinates' law
    the marginal: weights, means and covariances of the four planar components (independent
    check of the law the inpainting check samples against)."""
    tgt = product_target()
    A = np.zeros((2, 4))
    A[0, 0] = A[1, 1] = 1.0
    cond = tgt.condition(A, np.array([0.5, -0.2]))
    w = np.asarray(cond.weights).reshape(2, 4).sum(0)
    np.testing.assert_allclose(w, [0.1, 0.2, 0.3, 0.4], rtol=1e-12)
    ang = np.arange(4) * np.pi / 2 + 0.3
    np.testing.assert_allclose(np.asarray(cond.means)[:4, 2:],
                               np.stack([np.cos(ang), np.sin(ang)], 1), atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(np.asarray(cond.means)[:, :2], [[0.5, -0.2]] * 8, atol=1e-12)
    covs = np.asarray(cond.covs)
    np.testing.assert_allclose(covs[:, :2, :], 0.0, atol=1e-12)  # the known block: pinned
    np.testing.assert_allclose(covs[:, 2:, 2:], np.broadcast_to(0.25**2 * np.eye(2), (8, 2, 2)),
                               rtol=1e-12)  # fmt: skip


# ------------------------------------------------------------------------------- check 12
def test_generator_check_passes_ddpm():
    res = check_generator(Case("DDPMScheduler", {"clip_sample": False}, stochastic=True))
    assert res.passed is True, res.detail


def _ddpm_variant(kind):
    from diffusers import DDPMScheduler

    class Variant(DDPMScheduler):
        def step(self, model_output, timestep, sample, generator=None, return_dict=True):
            if kind == "global":
                generator = None  # draws from torch's global generator
            elif kind == "fixed":
                generator = torch.Generator().manual_seed(123)  # ignores the caller's
            return super().step(model_output, timestep, sample, generator=generator,
                                return_dict=return_dict)  # fmt: skip

    Variant.__name__ = f"DDPM{kind}"
    return Variant


@pytest.mark.parametrize(("kind", "words"), [("global", "outside the generator"),
                                             ("fixed", "ignores its generator")])
def test_generator_check_names_noise_outside_or_ignoring_the_generator(kind, words, monkeypatch):
    import diffusers

    cls = _ddpm_variant(kind)
    monkeypatch.setattr(diffusers, cls.__name__, cls, raising=False)
    res = check_generator(Case(cls.__name__, {"clip_sample": False}, stochastic=True))
    assert res.passed is False and words in res.detail


def test_generator_check_reports_documented_exceptions_and_deterministic_cases():
    sde = check_generator(Case("DPMSolverSDEScheduler", {}, stochastic=True))
    assert sde.passed is None and "noise_sampler_seed" in sde.detail
    det = check_generator(Case("DDIMScheduler", {"clip_sample": False}))
    assert det.passed is None


def test_one_plot_per_failing_row(tmp_path):
    """plot_failures draws one figure per row with a FAIL (a panel per failing check: the
    check's series with the first divergence marked, or its detail), none for passing rows."""
    from diffusion_oracle.validation.checks.common import CheckResult
    from diffusion_oracle.validation.conformance import plot_failures

    kd = Case("KDPM2DiscreteScheduler", {})
    res = check_inpainting(kd, law=False)
    assert res.passed is False and res.data["plot"]["mark"] == 1
    rows = [(kd, [res, CheckResult("as shipped", False, 1.0, "text | only")]),
            (Case("DDIMScheduler", {}), [CheckResult("invariants", True, 0.0, "ok")]),
            ("sample_euler", [CheckResult("same grid", False, 1.0, "differs")])]  # fmt: skip
    paths = plot_failures(rows, tmp_path, "diffusers")
    assert len(paths) == 2 and all(p.exists() and p.stat().st_size > 1000 for p in paths)
    assert paths[0].name.startswith("fail_diffusers_KDPM2DiscreteScheduler")


def test_the_checked_in_baseline_is_the_catalogues_and_names_the_new_findings():
    """validation/baselines/diffusers.json (written by a full run): every entry is a catalogued
    configuration with a diagnosis, as-shipped entries carry their fingerprint, the three
    findings of issue 21's usage loops and spacings are there, and the negative controls
    have no entry."""
    from diffusion_oracle.validation.checks import baseline as bl

    known = bl.load(bl.DEFAULT_BASELINE)["deviations"]
    labels = {c.label for c in CASES}
    assert set(known) <= labels, set(known) - labels
    for lab, checks in known.items():
        for key, entry in checks.items():
            assert entry["detail"], (lab, key)
            if key == "as shipped":
                assert entry["fingerprint"], (lab, key)
    assert "label 760" in known["RePaintScheduler(clip_sample=False)"]["inpainting"]["detail"]
    assert "call 1 " in known["KDPM2DiscreteScheduler()"]["inpainting"]["detail"]
    trailing = known["DDIMScheduler(clip_sample=False, timestep_spacing=trailing)"]
    assert "label -1" in trailing["documented grid"]["detail"]
    for control in ("EulerDiscreteScheduler(prediction_type=v_prediction)",
                    "FlowMatchEulerDiscreteScheduler()"):  # fmt: skip
        assert control not in known


@pytest.mark.parametrize("label", ["EulerDiscreteScheduler(prediction_type=v_prediction)",
                                   "FlowMatchEulerDiscreteScheduler()"])
def test_negative_controls_pass_every_check(label):
    """Issue 21's negative controls: correct configurations PASS every check that judges
    them (1-12), none FAILs."""
    case = next(c for c in CASES if c.label == label)
    res = check_case(case)
    assert not [c for c in res if c.passed is False], [c.detail for c in res if c.passed is False]
    judged = {c.name.split(" (")[0] for c in res if c.passed is True}
    # (Euler's narrow-mode statistics are not judged: its linspace grid does not refine in
    # lambda, docs/findings.md 9)
    assert {"as shipped", "documented grid", "img2img start", "inpainting", "invariants",
            "order"} <= judged, judged


def test_a_row_with_nothing_judged_is_inconclusive_and_bad_steps_name_the_argument():
    """A report row whose checks all came back not judged is INCONCLUSIVE, not PASS; the probes
    and the k-diffusion as-shipped check refuse empty or non-positive step counts."""
    from diffusion_oracle.validation.checks.common import CheckResult, row_verdict
    from diffusion_oracle.validation.k_diffusion import check_wrapper_shipped

    na = CheckResult("inpainting", None, None, "not measurable")
    assert row_verdict([na]) == "INCONCLUSIVE"
    assert row_verdict([na, CheckResult("as shipped", True, 0.0, "clean")]) == "PASS"
    assert row_verdict([na, CheckResult("as shipped", False, 1.0, "raises")]) == "FAIL"
    case = Case("DDIMScheduler", {"clip_sample": False})
    with pytest.raises(ValueError, match="steps must be >= 1"):
        probe_inpaint_levels(case.factory(), 0, Pipeline())
    with pytest.raises(ValueError, match="steps must name at least one"):
        check_wrapper_shipped("sample_euler", "sample_euler", {}, steps=())
