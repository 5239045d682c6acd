"""validation.diffusers / validation.conformance (issue 6, first part): the driver runs real
diffusers schedulers with the exact model, matches the reference samplers on the same grid to
float64 rounding where the scheduler is float64 end to end, and the checks catch planted bugs.
Runs where the 'validation' extra (diffusers) is installed; CI installs it."""

import re

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers", reason="the validation extra is not installed")

from diffusion_oracle import DDIM, Heun  # noqa: E402
from diffusion_oracle.reference import ExactModel, ring8  # noqa: E402
from diffusion_oracle.reference.grids import Grid  # noqa: E402
from diffusion_oracle.validation.conformance import (  # noqa: E402
    CASES,
    Case,
    check_case,
    check_consistency,
    check_inverse_order,
    check_narrow_modes,
    check_order,
    consistency_narrow_modes,
    narrow_mode_check,
    plot_report,
)
from diffusion_oracle.validation.diffusers import (  # noqa: E402
    ConsistencyModel,
    frame_of,
    run_scheduler,
    training_schedule,
)

# float64 end to end (betas from the reference, no float32 casts on the path): the scheduler
# and the reference run the same arithmetic in different association orders, ~N ulps
RTOL_F64 = 1e-12


FAST = (1, 2, 3, 6, 7)  # the checks without the order ladder and the tier-3 sample


def _by_name(name):
    return {c.label: c for c in CASES}[name]


@pytest.mark.parametrize(
    "case,ref",
    [
        (Case("DDIMScheduler", {"clip_sample": False}), DDIM(0.0)),
        (Case("HeunDiscreteScheduler", {}), Heun()),
    ],
    ids=["ddim", "heun"],
)
def test_float64_scheduler_equals_the_reference_on_its_grid(case, ref):
    factory = case.factory()
    sch = training_schedule(factory())
    model = ExactModel(ring8(), sch)
    dry = run_scheduler(factory, model, np.ones((1, 2)), 20, rng=0)
    times = [dry.t[0]] + [b for a, b in zip(dry.t, dry.t[1:], strict=False) if b != a]
    g = np.random.default_rng(1)
    x = sch.alpha(times[0]) * ring8().sample(100, rng=g) + sch.sigma(times[0]) * g.standard_normal(
        (100, 2)
    )
    got = run_scheduler(factory, model, x, 20, rng=2).sample
    want = ref(model, x, Grid(sch, np.array(times), final_zero=True), rng=2)
    assert np.abs(got - want).max() <= RTOL_F64 * np.abs(want).max()


def test_frames_and_training_schedules():
    assert frame_of(diffusers.DDIMScheduler()) == "vp"
    assert frame_of(diffusers.EulerDiscreteScheduler()) == "sigma"
    assert frame_of(diffusers.EDMEulerScheduler()) == "edm"
    assert frame_of(diffusers.FlowMatchEulerDiscreteScheduler()) == "flow"
    sch = training_schedule(diffusers.DDPMScheduler(beta_schedule="scaled_linear"))
    ours = np.exp(sch.log_alpha_bar[1:])
    theirs = diffusers.DDPMScheduler(beta_schedule="scaled_linear").alphas_cumprod.double().numpy()
    # theirs: a float32 cumulative product of 1000 factors (relative error up to ~T 2^-24)
    np.testing.assert_allclose(theirs, ours, rtol=1000 * 2.0**-24)


def test_catalogue_passes_where_the_reference_agrees():
    for label in (
        "DDIMScheduler(clip_sample=False)",
        "DDPMScheduler(clip_sample=False)",
        "DPMSolverMultistepScheduler(solver_order=3)",
    ):
        res = check_case(_by_name(label), n=64, checks=FAST)
        assert all(c.passed is not False for c in res), (label, res)
        same = next(c for c in res if c.name.startswith("same grid"))
        assert same.passed and same.value < 1e-5  # float64 DDIM/DDPM: ~1e-15; 3M: float32 sigmas


def test_planted_bugs_fail_their_checks(monkeypatch):
    # off-by-one alphas: alpha_bar_prev read one step late fails the same-grid check
    class Shifted(diffusers.DDIMScheduler):
        def step(self, model_output, timestep, sample, *args, **kwargs):
            ac = self.alphas_cumprod
            self.alphas_cumprod = ac.roll(-1)
            try:
                return super().step(model_output, timestep, sample, *args, **kwargs)
            finally:
                self.alphas_cumprod = ac

    monkeypatch.setattr(diffusers, "ShiftedDDIM", Shifted, raising=False)
    res = check_case(Case("ShiftedDDIM", {"clip_sample": False}, "ddim"), n=64, checks=(2,))
    same = next(c for c in res if c.name.startswith("same grid"))
    assert same.passed is False and same.value > 1e-3

    # a scheduler that returns NaN for an odd step count fails the finiteness sweep
    class NaNAt7(diffusers.DDIMScheduler):
        def step(self, model_output, timestep, sample, *args, **kwargs):
            out = super().step(model_output, timestep, sample, *args, **kwargs)
            if self.num_inference_steps == 7:
                out.prev_sample[:] = float("nan")
            return out

    monkeypatch.setattr(diffusers, "NaNAt7", NaNAt7, raising=False)
    res = check_case(Case("NaNAt7", {"clip_sample": False}), n=16, checks=(6,))
    fin = next(c for c in res if c.name.startswith("finite"))
    assert fin.passed is False and "N=7" in fin.detail


def test_pndm_v_prediction_is_not_equivalent_to_epsilon():
    """A deviation found by check 3 (docs/findings.md): PNDM combines the raw model outputs of
    several steps and converts v to eps afterwards with the current alpha, so with an exact
    model its samples depend on the parameterization (5e-2 of the sample scale at 10 steps)."""
    res = check_case(_by_name("PNDMScheduler(skip_prk_steps=True)"), n=64, checks=(3,))
    inv = next(c for c in res if c.name.startswith("prediction_type"))
    assert inv.passed is False and inv.value > 1e-2


def test_cli_conformance_subset(tmp_path, capsys):
    from diffusion_oracle.cli import main

    code = main(
        ["conformance", "diffusers", "--schedulers", "DDIMScheduler,EulerDiscreteScheduler",
         "--checks", "1,2,3,6,7", "--out", str(tmp_path)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1  # DDIM with linspace spacing fails the landing check (finding 7)
    assert re.search(r"\| `DDIMScheduler\(clip_sample=False\)` +\|", out)
    assert "EulerDiscreteScheduler" in out
    row = next(ln for ln in out.splitlines() if "timestep_spacing=linspace" in ln)
    assert re.search(r"\| FAIL +\|$", row)
    assert (tmp_path / "conformance_diffusers.md").read_text().startswith("# diffusers")
    assert main(["conformance", "diffusers", "--schedulers", "NoSuchScheduler"]) == 2


def test_a_catalogued_scheduler_runs_through_verify():
    """Tier 1 on the scheduler's own grids: DDIM first order, Heun second order (exact W2 on the
    moment-matched Gaussian, float64 mode)."""
    from diffusion_oracle import verify

    for label, lo, hi in (
        ("DDIMScheduler(clip_sample=False)", 0.9, 1.15),
        ("HeunDiscreteScheduler()", 1.9, 2.15),
    ):
        case = _by_name(label)
        sch = training_schedule(case.factory()())
        rep = verify(case.sampler(), "ring8", sch, steps=[20, 40, 80, 160], tiers=(1,),
                     progress=False)  # fmt: skip
        assert lo < rep.order_tier1.slope < hi, (label, rep.order_tier1)


def test_from_diffusers_runs_sigma_schedulers_and_checks_the_schedule():
    """The adapter used to pass loop indices as timesteps, which Euler-type schedulers reject;
    real diffusers schedulers now run through the validation driver."""
    from diffusion_oracle import DiscreteSchedule, from_diffusers, verify

    sch = DiscreteSchedule.linear(1000)
    s = from_diffusers(
        lambda: diffusers.EulerDiscreteScheduler(num_train_timesteps=1000), sch, order=1
    )
    rep = verify(s, "ring8", sch, steps=[10, 20, 40, 80], tiers=(1,), progress=False)
    assert rep.passed and 0.9 < rep.order_tier1.slope < 1.15
    assert [r.nfe for r in rep.rows] == [10, 20, 40, 80]  # one model call per step
    with pytest.raises(ValueError, match="schedule must match the scheduler's configuration"):
        from_diffusers(lambda: diffusers.DDIMScheduler(), DiscreteSchedule.cosine(1000))


def test_config_space_findings_and_fixes():
    """Three deviations of diffusers 0.42.1 that the checks find (docs/findings.md), and the
    Karras-sigma VP solver that the driver reads correctly."""
    # DDIM with timestep_spacing="linspace" steps to t - T//N, not to the next scheduled
    # timestep: the landing check sees it, and the same-grid check
    res = check_case(
        _by_name("DDIMScheduler(clip_sample=False, timestep_spacing=linspace)"), n=32, checks=FAST
    )
    inv = next(c for c in res if c.name.startswith("invariants"))
    assert inv.passed is False and "land off" in inv.detail
    # UniPC bh1 returns NaN at its last step into sigma = 0 (B_h = h = -inf), fine with sigma_min
    res = check_case(_by_name("UniPCMultistepScheduler(solver_type=bh1)"), n=16, checks=FAST)
    fin = next(c for c in res if c.name.startswith("finite"))
    assert fin.passed is False and "13 of 13" in fin.detail
    ok = check_case(
        Case("UniPCMultistepScheduler", {"solver_type": "bh1", "final_sigmas_type": "sigma_min"}),
        n=16,
        checks=FAST,
    )
    assert next(c for c in ok if c.name.startswith("finite")).passed
    # Karras sigmas in a VP multistep solver: the update uses sigmas[step_index], not the
    # integer timestep's alpha_bar; read that way it equals DPM-Solver++(2M) on its grid
    res = check_case(
        _by_name("DPMSolverMultistepScheduler(use_karras_sigmas=True)"), n=32, checks=FAST
    )
    assert all(c.passed is not False for c in res), res
    # zero terminal SNR with v-prediction runs and matches DDIM (eps is undefined there)
    label = ("DDIMScheduler(clip_sample=False, rescale_betas_zero_snr=True, "
             "timestep_spacing=trailing, prediction_type=v_prediction)")  # fmt: skip
    res = check_case(_by_name(label), n=32, checks=FAST)
    assert all(c.passed is not False for c in res if not c.name.startswith("invariants")), res
    # ... but "trailing" DDIM also steps to t - T//N: where N does not divide T = 1000 it lands
    # one training step off the next scheduled timestep (diffusers issue #9261)
    inv = next(c for c in res if c.name.startswith("invariants"))
    assert inv.passed is False and "N = [3, 6, 7, 9, 11, 12]" in inv.detail, inv.detail


def test_run_scheduler_input_errors_are_named():
    model = ExactModel(ring8(), training_schedule(diffusers.DDIMScheduler()))
    with pytest.raises(ValueError, match="steps must be"):
        run_scheduler(diffusers.DDIMScheduler, model, np.zeros((1, 2)), 0)

    class NoSchedule:
        prediction = "eps"

        def __call__(self, x, t):
            return x

    with pytest.raises(TypeError, match="model.schedule"):
        run_scheduler(diffusers.DDIMScheduler, NoSchedule(), np.zeros((1, 2)), 5)


def test_order_check_judges_the_declared_order():
    """Check 4: Euler on Karras sigmas (a grid family that refines in lambda) measures order 1
    on the exact Gaussian and passes; declared second order, the same run fails; DDIM's
    'leading' grids do not refine in lambda (last step k = T/N -> 0), so a wrong declaration is
    reported, not judged."""
    steps = (16, 32, 64, 128)
    euler = _by_name("EulerDiscreteScheduler(use_karras_sigmas=True)")
    ok = check_order(euler, steps=steps)
    assert ok.passed is True and 0.8 <= ok.value <= 1.35, ok
    wrong = Case(euler.scheduler, euler.kwargs, order=2)
    bad = check_order(wrong, steps=steps)
    assert bad.passed is False and abs(bad.value - ok.value) < 1e-12, bad
    ddim = Case("DDIMScheduler", {"clip_sample": False}, order=2)
    res = check_order(ddim, steps=steps)
    assert res.passed is None and "do not refine" in res.detail, res


def test_narrow_mode_check_sees_residual_noise():
    """Check 5's two-sample tests: a correct sampler on a fine log-SNR grid passes against the
    ideal law on its grid; the same sampler leaving noise of std 0.01 in its output (a last
    sigma of 0.01 not removed) widens the std-0.025 modes by ~8% and fails."""
    from diffusion_oracle.reference import VPLinear
    from diffusion_oracle.reference.grids import make_grid

    sch = VPLinear()
    grid = make_grid(sch, 256, "log_snr", t_end=float(sch.t_from_log_snr(2 * np.log(1 / 2e-3))))
    good = narrow_mode_check(Heun(), sch, grid, n=3000)
    assert good.passed is True, good.detail

    def noisy(model, x, g, *, rng=None):
        return Heun()(model, x, g, rng=rng) + 0.01 * np.random.default_rng(5).standard_normal(
            x.shape
        )

    bad = narrow_mode_check(noisy, sch, grid, n=3000)
    assert bad.passed is False and "mode width / ideal 1.0" in bad.detail, bad.detail


def test_narrow_mode_check_on_a_scheduler_and_the_plots(tmp_path):
    """Check 5 on a diffusers scheduler (refined schedule, trailing spacing, 512 steps: passes),
    and the report's plots from check 4 and check 2 results."""
    case = _by_name("DDIMScheduler(clip_sample=False, timestep_spacing=trailing)")
    res = check_narrow_modes(case, steps=512, n=2000)
    assert res.passed is True, res.detail
    rows = [(case, [check_order(case, steps=(16, 32, 64)),
                    *check_case(case, n=16, checks=(2,))])]  # fmt: skip
    paths = plot_report(rows, tmp_path)
    assert {p.name for p in paths} == {
        "conformance_diffusers_orders.png",
        "conformance_diffusers_same_grid.png",
    }
    assert all(p.stat().st_size > 5000 for p in paths)


def test_law_check_input_errors_are_named():
    from diffusion_oracle.reference import VPLinear
    from diffusion_oracle.reference.grids import make_grid

    grid = make_grid(VPLinear(), 8, "log_snr")
    with pytest.raises(ValueError, match="n must be"):
        narrow_mode_check(Heun(), VPLinear(), grid, n=0)
    with pytest.raises(TypeError, match="grid must be a Grid"):
        narrow_mode_check(Heun(), VPLinear(), [1.0, 0.5], n=10)
    with pytest.raises(ValueError, match="steps must be"):
        check_order(_by_name("EDMEulerScheduler()"), steps=(32, 16))
    lcm = _by_name("LCMScheduler()")
    with pytest.raises(ValueError, match="steps must be"):
        check_consistency(lcm, steps=(0, 2))
    with pytest.raises(ValueError, match="n must be"):
        consistency_narrow_modes(lcm, steps=2, n=-1)
    with pytest.raises(ValueError, match="steps must be"):
        check_inverse_order([c for c in CASES if c.inverse][0], steps=(8, 4, 16))
    with pytest.raises(ValueError, match="case must be an inversion"):
        check_inverse_order(lcm)
    with pytest.raises(TypeError, match="LCMScheduler or TCDScheduler"):
        ConsistencyModel(ring8(), training_schedule(lcm.factory()()), _by_name(
            "DDIMScheduler(clip_sample=False)").factory(), 4)  # fmt: skip


def test_landing_check_over_every_step_count():
    """Check 1's landing sweep covers N = 1..12: trailing DDIM lands one training step off at
    the N that do not divide T (1.6e-3 .. 1.1e-2 relative in sigma); Euler, whose float32
    sigma_max sits outside the schedule's range by rounding, lands exactly at N = 2 (the driver
    converts the model's prediction at the scheduler's own level)."""
    res = check_case(_by_name("DDIMScheduler(clip_sample=False, timestep_spacing=trailing)"),
                     checks=(1,))  # fmt: skip
    assert res[0].passed is False and "N = [3, 6, 7, 9, 11, 12]" in res[0].detail
    res = check_case(_by_name("EulerDiscreteScheduler()"), checks=(1,))
    assert res[0].passed is True and "landing error" in res[0].detail, res[0].detail


def test_ddim_inverse_checks():
    """DDIMInverseScheduler: leading spacing starts each step where the previous one landed and
    equals the reference ddim_invert(model_time="next") on its grid to float64 rounding;
    trailing spacing starts off at N not dividing T; prediction_type="sample" divides by
    sqrt(1 - alpha_bar) = 0 at the data (non-finite samples); the inversion converges at order
    1 to the exact law at its last timestep (tier 1), and so does the round trip."""
    lead, trail = [c for c in CASES if c.inverse and c.scheduler == "DDIMInverseScheduler"]
    res = {c.name.split(" (")[0]: c for c in check_case(lead, n=64, checks=(1, 2, 3, 6, 7))}
    assert res["invariants"].passed and res["finite"].passed, res
    assert res["same grid as the reference"].passed
    assert res["same grid as the reference"].value < 1e-12
    assert res["prediction_type invariance"].passed is False
    assert "sample: non-finite" in res["prediction_type invariance"].detail
    assert res["forward process"].passed is None  # no add_noise
    inv = check_case(trail, checks=(1,))[0]
    assert inv.passed is False and "[3, 6, 7, 9, 11, 12]" in inv.detail, inv.detail
    order = check_inverse_order(lead, steps=(16, 32, 64, 128))
    assert order.passed is True and 0.8 <= order.value <= 1.35, order.detail
    assert "round trip" in order.detail


def test_consistency_schedulers_with_the_exact_consistency_model(monkeypatch):
    """LCM and TCD driven by the exact consistency model: LCM returns the data law at every N
    (tier 1 to its float32 boundary scalings; tier 3 on narrow modes); TCD's last step lands on
    training timestep 0 (sigma 0.029), not on the data: its law is exact there (tier 1 to
    1e-15) and its narrow modes are 1.5x too wide. A planted fault (LCM without the noise
    injection between steps) fails tier 1."""
    lcm, tcd = _by_name("LCMScheduler()"), _by_name("TCDScheduler()")
    ok = check_consistency(lcm)
    assert ok.passed is True and ok.value < 1e-7, ok.detail
    bad = check_consistency(tcd)
    assert bad.passed is False and "lands on training timestep 0" in bad.detail, bad.detail
    modes = consistency_narrow_modes(lcm, steps=2, n=2000)
    assert modes.passed is True, modes.detail
    wide = consistency_narrow_modes(tcd, steps=2, n=2000)
    assert wide.passed is False and "mode width / data 1.5" in wide.detail, wide.detail

    class NoNoise(diffusers.LCMScheduler):
        def step(self, model_output, timestep, sample, *args, **kwargs):
            import torch

            real = diffusers.schedulers.scheduling_lcm.randn_tensor
            diffusers.schedulers.scheduling_lcm.randn_tensor = lambda shape, **kw: torch.zeros(
                shape, dtype=torch.float64
            )
            try:
                return super().step(model_output, timestep, sample, *args, **kwargs)
            finally:
                diffusers.schedulers.scheduling_lcm.randn_tensor = real

    monkeypatch.setattr(diffusers, "LCMScheduler", NoNoise)
    planted = check_consistency(Case("LCMScheduler", {}, stochastic=True), steps=(2, 4))
    assert planted.passed is False and planted.value > 1e-3, planted.detail


def test_narrow_mode_failures_on_grids_that_do_not_refine_are_not_judged():
    """Check 5: a deviation on a grid family whose largest lambda step does not shrink is the
    grid's (no N removes it) and is reported without a verdict; on a refining family it fails."""
    from diffusion_oracle.reference import VPLinear
    from diffusion_oracle.reference.grids import make_grid

    sch = VPLinear()
    grid = make_grid(sch, 128, "log_snr", t_end=float(sch.t_from_log_snr(2 * np.log(1 / 2e-3))))

    def noisy(model, x, g, *, rng=None):
        return Heun()(model, x, g, rng=rng) + 0.01 * np.random.default_rng(5).standard_normal(
            x.shape
        )

    flat = narrow_mode_check(noisy, sch, grid, n=3000, refines=(False, 2.0, 1.9))
    assert flat.passed is None and "does not refine" in flat.detail, flat.detail
    fine = narrow_mode_check(noisy, sch, grid, n=3000, refines=(True, 0.4, 0.1))
    assert fine.passed is False


def test_flow_matching_tier2_starts_at_alpha_zero():
    """The flow-matching scheduler starts at t = 1 (alpha = 0), where the EDM-form flow map
    cannot start; ExactODE then uses the angle form, and tier 2 measures its order."""
    from diffusion_oracle import verify

    case = _by_name("FlowMatchEulerDiscreteScheduler()")
    sch = training_schedule(case.factory()())
    rep = verify(case.sampler(), "ring8", sch, [16, 32, 64, 128], tiers=(2,), progress=False,
                 prediction="velocity")  # fmt: skip
    assert rep.order_tier2 is not None and 0.8 <= rep.order_tier2.slope <= 1.35, str(rep)
