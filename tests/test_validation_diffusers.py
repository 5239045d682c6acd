"""validation.diffusers / validation.conformance (issue 6, first part): the driver runs real
diffusers schedulers with the exact model, matches the reference samplers on the same grid to
float64 rounding where the scheduler is float64 end to end, and the checks catch planted bugs.
Runs where the 'validation' extra (diffusers) is installed; CI installs it."""

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
    check_narrow_modes,
    check_order,
    narrow_mode_check,
    plot_report,
)
from diffusion_oracle.validation.diffusers import (  # noqa: E402
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
    assert "| `DDIMScheduler(clip_sample=False)` |" in out and "EulerDiscreteScheduler" in out
    row = next(ln for ln in out.splitlines() if "timestep_spacing=linspace" in ln)
    assert row.endswith("| FAIL |")
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
    with pytest.raises(ValueError, match="schedule must match the scheduler's betas"):
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
    assert all(c.passed is not False for c in res), res


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
