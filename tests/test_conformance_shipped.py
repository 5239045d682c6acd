"""Conformance checks 8 (as shipped) and 9 (documented grid), issue 21: the two bugs open
upstream against diffusers 0.42.1 are reported with their diagnosis, and correct configurations
stay clean. The pins are the installed release's behaviour (pyproject: diffusers >= 0.42.1,
< 0.43); a release that fixes a bug makes its test fail, and the test is then updated to pin
the fix. Expected values: the published formulas computed here (Karras et al. 2022, eq. 5;
Esser et al. 2024, eq. 23) and k-diffusion's get_sigmas_karras (another implementation)."""

from __future__ import annotations

import re

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

from diffusion_oracle.validation.checks.documented import (  # noqa: E402
    check_documented,
    documented_sigmas,
)
from diffusion_oracle.validation.checks.shipped import check_shipped  # noqa: E402
from diffusion_oracle.validation.conformance import Case, conformance_report, md_cell  # noqa: E402

SMALL = tuple(range(1, 13))


def test_dpmsolver_cosine_karras_raises_as_shipped():
    """diffusers issue 12771: DPMSolverMultistepScheduler(beta_schedule='squaredcos_cap_v2',
    use_karras_sigmas=True) in float32 raises IndexError from N = 4 on and repeats timesteps
    (the float64 upcast hides the crash: check 6 passed it)."""
    case = Case("DPMSolverMultistepScheduler", {"beta_schedule": "squaredcos_cap_v2",
                                                "use_karras_sigmas": True}, order=2)  # fmt: skip
    steps = tuple(range(1, 26))
    res = check_shipped(case, half=False, steps=steps)
    assert res.passed is False
    # the oracle: diffusers itself, driven by a bare loop (zero model output: the crash is in
    # the step's indexing, not in the network), and its timesteps as set
    crashes, repeats = [], []
    for n in steps:
        sched = diffusers.DPMSolverMultistepScheduler(beta_schedule="squaredcos_cap_v2",
                                                      use_karras_sigmas=True)  # fmt: skip
        sched.set_timesteps(n)
        ts = sched.timesteps.tolist()
        if len(set(ts)) < len(ts):
            repeats.append(n)
        x = torch.zeros(1, 2, 1, 1)
        try:
            for t in sched.timesteps:
                x = sched.step(torch.zeros_like(x), t, x).prev_sample
        except IndexError:
            crashes.append(n)
    assert crashes == list(range(4, 26)) and repeats == list(range(4, 26))
    assert [n for n, _ in res.data["float32"]["crash"]] == crashes
    assert "IndexError in DPMSolverMultistepScheduler.step" in res.detail
    # every repeat is named: as a repeated step where the repeated label is more than half a
    # unit off its level, else as quantization (reported)
    named = {n for n, _ in res.data["float32"]["repeated"]} | {
        n for n, _ in res.data["float32"]["quantized"]}
    assert named == set(repeats) and res.data["float32"]["repeated"]


def test_flow_match_shift_applied_twice():
    """diffusers issue 13243: FlowMatchEulerDiscreteScheduler(shift=3.0) shifts its already
    shifted sigma_min again: the last sigma is 0.00893 where shift(1/T) = 3/1002 = 0.00299."""
    res = check_documented(Case("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, order=1))
    assert res.passed is False
    want_last = 3.0 * 1e-3 / (1.0 + 2.0 * 1e-3)
    assert f"the last sigma 0.00892857 where the formula gives {want_last:.6g}" in res.detail


@pytest.mark.parametrize(
    "case",
    [
        Case("FlowMatchEulerDiscreteScheduler", {}, order=1),
        Case("EulerDiscreteScheduler", {"use_karras_sigmas": True}, "euler", order=1),
        Case("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, order=2),
        Case("EulerDiscreteScheduler", {"use_exponential_sigmas": True}, "euler", order=1),
        Case("FlowMatchEulerDiscreteScheduler", {"use_dynamic_shifting": True},
             set_timesteps={"mu": 0.8}, order=1),
    ],
    ids=lambda c: c.label,
)
def test_documented_grids_of_correct_configurations_pass(case):
    assert check_documented(case).passed is True


def test_documented_karras_is_k_diffusions_karras():
    """The documented Karras grid equals k-diffusion's get_sigmas_karras (float32, another
    implementation) on the same ends to float32 rounding times rho."""
    kd = pytest.importorskip("diffusion_oracle.validation.k_diffusion")
    try:
        ks = kd.load_sampling()
    except ImportError:
        pytest.skip("k-diffusion is not installed")
    sched = diffusers.EulerDiscreteScheduler(use_karras_sigmas=True)
    want, _, what, _ = documented_sigmas(sched, 12)
    got = ks.get_sigmas_karras(12, float(want[-1]), float(want[0])).double().numpy()[:-1]
    np.testing.assert_allclose(got, want, rtol=4 * 7 * 2.0**-24)
    assert "rho = 7" in what


def test_flow_formula_is_esser_eq_23():
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=2.0)
    want, _, _, _ = documented_sigmas(sched, 5)
    u = np.linspace(1.0, 1e-3, 5)
    np.testing.assert_allclose(want, 2 * u / (1 + u), rtol=1e-15)


@pytest.mark.parametrize(
    "case",
    [
        Case("DDIMScheduler", {"clip_sample": False, "timestep_spacing": "trailing"}, "ddim",
             order=1),
        Case("EulerDiscreteScheduler", {"prediction_type": "v_prediction"}, "euler", order=1),
        Case("FlowMatchEulerDiscreteScheduler", {}, order=1),
        Case("HeunDiscreteScheduler", {}, "heun", order=2),
        Case("KDPM2DiscreteScheduler", {}, order=2),
        Case("PNDMScheduler", {"skip_prk_steps": True}),
    ],
    ids=lambda c: c.label,
)
def test_correct_configurations_are_clean_as_shipped(case):
    """Negative controls, and the calls-per-step patterns: Heun 2N - 1 calls on N levels,
    KDPM2 2N - 1 calls on 2N - 1 levels, PLMS without its Runge-Kutta warm-up N + 1 calls."""
    res = check_shipped(case, half=False, steps=SMALL)
    assert res.passed is True, res.detail


class RepeatsALabel(diffusers.DDIMScheduler):
    """A planted fault: the fourth timestep repeats the third."""

    def set_timesteps(self, *args, **kwargs):
        super().set_timesteps(*args, **kwargs)
        ts = self.timesteps.clone()
        if len(ts) > 3:
            ts[3] = ts[2]
        self.timesteps = ts


def test_a_repeated_timestep_is_named(monkeypatch):
    monkeypatch.setattr(diffusers, "RepeatsALabel", RepeatsALabel, raising=False)
    res = check_shipped(Case("RepeatsALabel", {"clip_sample": False}), half=False, steps=SMALL)
    assert res.passed is False
    assert "repeated timesteps at N = 4..12 (9 values) (N = 4: label" in res.detail
    assert "repeated at call 3" in res.detail


def test_report_cells_escape_pipes(monkeypatch):
    """A detail with a '|' (k-diffusion's table broke on one) stays in its cell."""
    assert md_cell("a | b\nc") == "a \\| b c"
    case = Case("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, order=1)
    text, rows = conformance_report([case], progress=False, checks=(9,))
    row = [ln for ln in text.splitlines() if ln.startswith("| `FlowMatch")][0]
    cells = [c for c in row.replace("\\|", "").split("|")[1:-1]]
    assert len(cells) == 3 and "FAIL" in cells[1] and cells[2].strip() == "FAIL"


def test_every_exported_scheduler_is_catalogued_or_listed_with_a_reason():
    from diffusion_oracle.validation.conformance import (
        CASES,
        NOT_CATALOGUED,
        exported_schedulers,
        not_catalogued,
    )

    exported = set(exported_schedulers())
    assert len(exported) >= 40  # diffusers 0.42.1 exports 49
    catalogued = {c.scheduler for c in CASES}
    assert catalogued <= exported, catalogued - exported
    missing = not_catalogued()
    assert set(missing) == exported - catalogued
    assert all(missing[n] == NOT_CATALOGUED[n] for n in missing), [
        n for n in missing if n not in NOT_CATALOGUED]  # fmt: skip


def test_every_k_diffusion_sampler_is_catalogued_or_listed_with_a_reason():
    kd = pytest.importorskip("diffusion_oracle.validation.k_diffusion")
    try:
        exported = set(kd.exported_samplers())
    except ImportError:
        pytest.skip("k-diffusion is not installed")
    catalogued = {fn for _, fn, _, _, _ in kd.conformance_cases()}
    assert exported - catalogued == set(kd.NOT_CATALOGUED), exported - catalogued
    assert len(exported) == 13


def test_the_report_lists_what_it_does_not_catalogue():
    case = Case("FlowMatchEulerDiscreteScheduler", {}, order=1)
    text, _ = conformance_report([case], progress=False, checks=(9,))
    assert "Not catalogued (" in text
    assert re.search(r"\| `VQDiffusionScheduler` +\| vector-quantized", text)


def test_baseline_separates_new_known_and_fixed(tmp_path):
    from diffusion_oracle.validation.checks import baseline as bl
    from diffusion_oracle.validation.conformance import CheckResult

    a = Case("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, order=1)
    b = Case("DDIMScheduler", {"clip_sample": False}, "ddim", order=1)
    rows = [(a, [CheckResult("documented grid (sigmas)", False, 1.0, "last sigma off")]),
            (b, [CheckResult("as shipped (float32)", True, 0.0, "clean")])]  # fmt: skip
    base = bl.from_rows(rows, "diffusers", "0.42.1")
    assert base["deviations"][a.label]["documented grid"]["upstream"] == (
        "huggingface/diffusers#13243")
    path = bl.save(base, tmp_path / "b.json")
    known = bl.load(path)
    later = [(a, [CheckResult("documented grid (sigmas)", True, 0.0, "fixed")]),
             (b, [CheckResult("as shipped (float32)", False, 3.0, "raises at N = 7")])]  # fmt: skip
    cmp = bl.compare(later, known)
    assert cmp["new"] == [(b.label, "as shipped", "raises at N = 7")]
    assert cmp["fixed"] == [(a.label, "documented grid")] and cmp["known"] == []
    assert bl.compare(rows, known)["known"] == [(a.label, "documented grid",
                                                 "huggingface/diffusers#13243")]  # fmt: skip
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ValueError, match="no 'deviations' object"):
        bl.load(tmp_path / "bad.json")


def test_cli_baseline_fails_only_on_new_deviations(tmp_path, capsys):
    from diffusion_oracle.cli import main

    argv = ["conformance", "diffusers", "--schedulers", "FlowMatchEulerDiscreteScheduler",
            "--checks", "9", "--jobs", "1", "--baseline", str(tmp_path / "known.json")]  # fmt: skip
    assert main(argv[:-2]) == 1  # the shift bug FAILs check 9
    assert main(argv + ["--update-baseline"]) == 0
    assert main(argv) == 0  # known now
    assert "1 known deviations, 0 new, 0 fixed" in capsys.readouterr().out


def test_the_checked_in_baseline_names_the_open_upstream_bugs():
    from diffusion_oracle.validation.checks import baseline as bl

    known = bl.load(bl.DEFAULT_BASELINE)["deviations"]
    cos = "DPMSolverMultistepScheduler(beta_schedule=squaredcos_cap_v2, use_karras_sigmas=True)"
    assert known[cos]["as shipped"]["upstream"] == "huggingface/diffusers#12771"
    flow = known["FlowMatchEulerDiscreteScheduler(shift=3.0)"]["documented grid"]
    assert flow["upstream"] == "huggingface/diffusers#13243"


class AddNoiseAtTheStart(diffusers.EulerDiscreteScheduler):
    """A planted fault (an old diffusers bug class): add_noise reads sigmas[0] whatever the
    begin index, so img2img latents carry the full noise while the network is told less."""

    def add_noise(self, original_samples, noise, timesteps):
        return original_samples + noise * self.sigmas[0]


def test_img2img_start_is_judged(monkeypatch):
    from diffusion_oracle.validation.checks.usage import check_img2img

    good = check_img2img(Case("EulerDiscreteScheduler", {}, "euler", order=1))
    assert good.passed is True
    monkeypatch.setattr(diffusers, "AddNoiseAtTheStart", AddNoiseAtTheStart, raising=False)
    bad = check_img2img(Case("AddNoiseAtTheStart", {}))
    assert bad.passed is False
    assert "N = 10, strength 0.3: add_noise puts the latents at log-SNR" in bad.detail
    assert "while the first step assumes log-SNR" in bad.detail
    ddim = check_img2img(Case("DDIMScheduler", {"clip_sample": False}, "ddim", order=1))
    flow = check_img2img(Case("FlowMatchEulerDiscreteScheduler", {}, order=1))
    assert ddim.passed is True and flow.passed is True  # add_noise and scale_noise


def test_documented_refusals_and_quantized_repeats_are_reported_not_judged():
    """LCM refuses N above its original 50 steps with a ValueError from set_timesteps (a
    documented limit, reported); Karras sigmas denser than the training steps make integer
    labels repeat on distinct levels, each the nearest step (quantization, reported); DPM-2
    ancestral calls its midpoint at sigma_next (log-midpoint of sigma and sigma_next^2 /
    sigma): 2N - 1 calls on N levels, consecutive repeats allowed."""
    lcm = check_shipped(Case("LCMScheduler", {}, stochastic=True), half=False,
                        steps=(4, 60))  # fmt: skip
    assert lcm.passed is True and "refuses N = 60" in lcm.detail
    kar = check_shipped(Case("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
                        half=False, steps=(100,))  # fmt: skip
    assert kar.passed is True and "integer labels repeat on distinct levels at N = 100" in (
        kar.detail)
    anc = check_shipped(Case("KDPM2AncestralDiscreteScheduler", {}, stochastic=True),
                        half=False, steps=SMALL)  # fmt: skip
    assert anc.passed is True and anc.detail.startswith("float32: 12 step counts clean")


def test_sigmoid_betas_frame_on_the_reference_sigmoid_schedule():
    """beta_schedule="sigmoid" (DDPM, GeoDiff) maps to the reference sigmoid schedule (it was
    refused: 'no reference counterpart'): log alpha_bar = cumsum log(1 - beta) with
    beta = sigmoid(linspace(-6, 6, T)) (beta_end - beta_start) + beta_start."""
    from scipy.special import expit

    from diffusion_oracle.validation.diffusers import training_schedule

    ref = training_schedule(diffusers.DDPMScheduler(beta_schedule="sigmoid"))
    betas = expit(np.linspace(-6.0, 6.0, 1000)) * (0.02 - 1e-4) + 1e-4
    np.testing.assert_allclose(np.asarray(ref.log_alpha_bar[1:]), np.cumsum(np.log1p(-betas)),
                               rtol=1e-12)  # fmt: skip
    res = check_shipped(Case("DDPMScheduler", {"clip_sample": False, "beta_schedule": "sigmoid"},
                             stochastic=True), half=False, steps=SMALL)  # fmt: skip
    assert res.passed is True


class AddNoiseHalfAStepOff(diffusers.DDIMScheduler):
    """A planted near-threshold fault: add_noise at the level 0.45 training steps noisier
    than the label (the label is the level for DDIM: no half unit is allowed)."""

    def add_noise(self, original_samples, noise, timesteps):
        ab = self.alphas_cumprod.double()
        k = int(timesteps.reshape(-1)[0])
        lab = torch.log(ab[k]) + 0.45 * (torch.log(ab[k + 1]) - torch.log(ab[k]))
        a = torch.exp(0.5 * lab)
        return (a * original_samples + torch.sqrt(1 - a * a) * noise).to(original_samples.dtype)


class AddNoiseOnTheLabel(diffusers.DPMSolverMultistepScheduler):
    """A planted fault: with Karras sigmas the integer label is not the step's level; an
    add_noise that uses alphas_cumprod[label] leaves the latents off sigmas[begin]."""

    def add_noise(self, original_samples, noise, timesteps):
        ab = self.alphas_cumprod.double()[int(timesteps.reshape(-1)[0])]
        return (ab.sqrt() * original_samples + (1 - ab).sqrt() * noise).to(original_samples.dtype)


def test_img2img_start_has_no_half_step_slack(monkeypatch):
    from diffusion_oracle.validation.checks.usage import check_img2img

    monkeypatch.setattr(diffusers, "AddNoiseHalfAStepOff", AddNoiseHalfAStepOff, raising=False)
    monkeypatch.setattr(diffusers, "AddNoiseOnTheLabel", AddNoiseOnTheLabel, raising=False)
    assert check_img2img(Case("AddNoiseHalfAStepOff", {"clip_sample": False})).passed is False
    assert check_img2img(Case("AddNoiseOnTheLabel", {"use_karras_sigmas": True})).passed is False
    assert check_img2img(Case("DPMSolverMultistepScheduler", {"use_karras_sigmas": True})).passed


def test_baseline_fingerprints_stale_entries_and_partial_updates():
    """A crash at new N in a known as-shipped deviation is new; a check that raised is never
    known; listed entries the run could not confirm are stale; a partial update keeps the
    entries of the checks and cases it did not run."""
    from diffusion_oracle.validation.checks import baseline as bl
    from diffusion_oracle.validation.conformance import CheckResult

    a = Case("DPMSolverMultistepScheduler", {}, order=2)
    b = Case("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, order=1)

    def shipped(ns):
        return CheckResult("as shipped (float32)", False, 1.0, f"raises at N = {ns}",
                           {"float32": {"crash": [(n, "x") for n in ns]}})  # fmt: skip

    grid = CheckResult("documented grid (sigmas)", False, 1.0, "last sigma off")
    base = bl.from_rows([(a, [shipped([1000])]), (b, [grid])], "diffusers", "0.42.1")
    assert bl.compare([(a, [shipped([1000])])], base)["known"]
    cmp = bl.compare([(a, [shipped(list(range(1, 51)))])], base)
    assert cmp["new"] and not cmp["known"]  # the same check, a crash at every N: new
    raised = CheckResult("as shipped", False, None, "the check raised KeyError('x')")
    assert bl.compare([(a, [raised])], base)["new"]
    assert ("FlowMatchEulerDiscreteScheduler(shift=3.0)", "documented grid",
            "the case did not run") in cmp["stale"]  # fmt: skip
    skipped = CheckResult("documented grid (sigmas)", None, None, "not documented here")
    assert (b.label, "documented grid", "not judged in this run") in bl.compare(
        [(b, [skipped])], base)["stale"]  # fmt: skip
    part = bl.from_rows([(a, [CheckResult("img2img start", True, 0.0, "ok")])], "diffusers",
                        "0.42.1", previous=base)  # fmt: skip
    assert part["deviations"] == base["deviations"]
