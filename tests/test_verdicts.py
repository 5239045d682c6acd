"""Issue 19: verdicts a user can trust. Each numbered test is an item of the issue's "what we
saw" list: it failed on the landed code (verify PASSed with nothing checked, FAILed correct
float32 code, missed last-step faults, ...) and passes now. Expected verdicts come from the
mathematics of the planted fault (a point mass must be landed on exactly; a float32 run of a
correct sampler differs from its float64 self by rounding only), never from a run of verify."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_adapters import MiniDDIMScheduler
from test_harness import X0AsEps

from diffusion_oracle import Check, Verdict, VerifyReport, verify
from diffusion_oracle.reference import EDM, ExactModel, VEGeometric, VPLinear, get_target
from diffusion_oracle.reference.grids import make_grid
from diffusion_oracle.reference.samplers import DDIM, DDPM, Heun, _predict
from diffusion_oracle.verification.plan import STREAMS, stream
from diffusion_oracle.verification.report import overall_verdict
from diffusion_oracle.verification.tolerances import rounding_tolerance, unit_roundoff

STEPS = (16, 32, 64, 128)
FAST = dict(progress=False, tier3_steps=64, n_samples=1000)


def _verdicts(report):
    return {c.name: c.verdict for c in report.checks}


def _failed(report):
    return [c.name for c in report.checks if c.verdict is Verdict.FAIL]


# ------------------------------------------------------------------ item 1: no PASS unjudged
def _prior_sampler(model, x, grid, *, rng):
    """Returns the prior itself: the right shape, the wrong law."""
    return rng.standard_normal(x.shape)


def _point_cloud(model, x, grid, *, rng):
    """Returns a fixed point cloud whatever it is given."""
    return np.tile(np.array([[1.0, 0.0], [0.0, 1.0]]), (x.shape[0] // 2 + 1, 1))[: x.shape[0]]


def test_1_tier_four_is_an_error_not_a_pass():
    with pytest.raises(ValueError, match=r"tiers must be drawn from \(1, 2, 3\), got \(4,\)"):
        verify(DDIM(), "ring8", tiers=(4,), progress=False)


def test_1_no_tiers_is_inconclusive():
    r = verify(DDIM(), "ring8", steps=(8, 16), tiers=(), progress=False)
    assert r.verdict is Verdict.INCONCLUSIVE and not r.passed
    assert "no check judged the output law" in str(r)


def test_1_one_step_count_gives_no_order_and_no_pass():
    r = verify(DDIM(), "ring8", steps=[16], tiers=(1, 2), progress=False)
    assert r.verdict is Verdict.INCONCLUSIVE, str(r)
    assert r.check("order (tier 1, exact)").verdict is Verdict.INCONCLUSIVE
    assert "at least 2 step counts" in r.check("order (tier 1, exact)").reason


@pytest.mark.parametrize("sampler", [_prior_sampler, _point_cloud], ids=["prior", "cloud"])
def test_1_wrong_law_without_declared_order_does_not_pass(sampler):
    """No order declared and tier 3 off: tier 1 still judges convergence (order >= 1 for any
    consistent sampler) and the landing; the prior/cloud samplers converge to nothing."""
    r = verify(sampler, "ring8", steps=(8, 16, 32), tiers=(1, 2), progress=False)
    assert r.verdict is Verdict.FAIL, str(r)
    # and with tier 3 on, the law itself is judged
    r3 = verify(sampler, "ring8", steps=(8, 16, 32), tiers=(3,), **FAST)
    assert r3.verdict is Verdict.FAIL and any(n.startswith("tier 3") for n in _failed(r3))


def test_1_pass_names_what_decided_it():
    r = verify(DDIM(), "ring8", steps=(16, 32, 64), **FAST)
    assert r.verdict is Verdict.PASS, str(r)
    assert "tier 3 NLL (two-sided)" in r.decided_by
    assert all(c.reason for c in r.checks)
    line = str(r).splitlines()[-1]
    assert line.startswith("verdict: PASS (") and "judged by" in line


def test_overall_verdict_rules():
    p = Check("a", Verdict.PASS, "ok", law=True)
    q = Check("b", Verdict.PASS, "ok")
    f = Check("c", Verdict.FAIL, "bad")
    i = Check("d", Verdict.INCONCLUSIVE, "?")
    s = Check("e", Verdict.SKIPPED, "n/a")
    assert overall_verdict([p, q, s])[0] is Verdict.PASS
    assert overall_verdict([q, s])[0] is Verdict.INCONCLUSIVE  # no law judged
    assert overall_verdict([p, i])[:2] == (Verdict.INCONCLUSIVE, ["d"])
    assert overall_verdict([p, i, f])[:2] == (Verdict.FAIL, ["c"])
    assert overall_verdict([])[0] is Verdict.INCONCLUSIVE


# ------------------------------------------------------------------ item 2: precision
class DDIM32(DDIM):
    """DDIM (eta = 0) computed in float32, as a user's float32 pipeline runs it: the state,
    the coefficients and the model's output all in float32. ``coef_error`` scales the x0
    coefficient by (1 + coef_error) at every step (a planted fault)."""

    def __init__(self, coef_error=0.0, dtype=np.float32):
        super().__init__(0.0)
        self.coef_error, self.dt = coef_error, dtype
        fault = f"(fault {coef_error:g})" if coef_error else ""
        self.name = f"ddim-{np.dtype(dtype).name}{fault}"

    def _run(self, model, x, grid, rng):
        dt = self.dt
        x = x.astype(dt)
        a = grid.alpha.astype(dt)
        s = grid.sigma.astype(dt)
        for i in range(grid.steps):
            out = np.asarray(model(x, grid.t[i]), dtype=dt)  # the model is told eps
            x0 = (x - s[i] * out) / a[i]
            if grid.sigma[i + 1] == 0:
                return x0
            x = (a[i + 1] * (1 + self.coef_error)) * x0 + s[i + 1] * out
        return x


def test_2_correct_float32_code_passes_its_same_grid_reference():
    """Used to FAIL (fixed tolerance ~1e-9) or to drop the comparison ('not affine')."""
    r = verify(DDIM32(), "ring8", steps=STEPS, reference=DDIM(0.0), tiers=(1,), progress=False)
    assert r.dtype == "float32"
    ref = r.check("same-grid reference")
    assert ref.verdict is Verdict.PASS and "float32" in ref.reason, str(r)
    assert r.passed, str(r)


def test_2_a_coefficient_fault_far_above_float32_rounding_fails():
    """A relative coefficient error of 300 u (u = 2^-24) at every step moves the output law by
    over 1000x this implementation's own float32 rounding (measured 1e-7..5e-7) and about 3x
    the rounding bound at N >= 32 (which allows for a float32 sampler forming sigma from alpha):
    the same-grid row fails and names the coefficients."""
    r = verify(DDIM32(coef_error=300 * unit_roundoff("float32")), "ring8", steps=STEPS,
               reference=DDIM(0.0), tiers=(1,), progress=False)  # fmt: skip
    ref = r.check("same-grid reference")
    assert ref.verdict is Verdict.FAIL, str(r)
    assert "coefficients" in ref.reason


class DDIM32Textbook(DDIM32):
    """float32 DDIM written the common way: alpha_bar from the schedule and sigma =
    sqrt(1 - alpha_bar) formed in float32 (the cancellation at small sigma is real rounding)."""

    def _run(self, model, x, grid, rng):
        f = np.float32
        x = x.astype(f)
        ab = grid.alpha.astype(f) ** 2
        a, s = np.sqrt(ab), np.sqrt(f(1) - ab)
        for i in range(grid.steps):
            out = np.asarray(model(x, grid.t[i]), dtype=f)
            x0 = (x - s[i] * out) / a[i]
            if grid.sigma[i + 1] == 0:
                return x0
            x = a[i + 1] * x0 + s[i + 1] * out
        return x


@pytest.mark.parametrize("seed", range(5))
def test_2_textbook_float32_ddim_passes_same_grid_and_landing(seed):
    r = verify(DDIM32Textbook(), "ring8", steps=STEPS, reference=DDIM(0.0), tiers=(1,),
               seed=seed, progress=False)  # fmt: skip
    assert r.check("same-grid reference").passed and r.check("final step (landing)").passed, str(r)


@pytest.mark.parametrize(
    "target, schedule",
    [("bimodal1d", EDM()), ("ring8", VEGeometric()), ("aniso64", VPLinear())],
    ids=["edm", "ve", "aniso64"],
)
def test_2_equal_methods_in_float64_agree_within_the_bound(target, schedule):
    """Euler (Karras Alg. 1) and DDIM(eta = 0) are the same method (the first-order update is
    exact in sigma_EDM): in float64 they must agree within the rounding bound on every path,
    including VE/EDM, where the state reaches sigma_max (the bound's S is the path's)."""
    from diffusion_oracle import Euler

    r = verify(Euler(), target, schedule, steps=(10, 20, 40), reference=DDIM(0.0), tiers=(1,),
               progress=False)  # fmt: skip
    assert r.check("same-grid reference").passed, str(r)
    assert r.check("final step (landing)").passed, str(r)


@pytest.mark.parametrize("schedule", [EDM(), VEGeometric()], ids=["edm", "ve"])
def test_2_stochastic_sampler_lands_on_ve_paths(schedule):
    from diffusion_oracle import EulerMaruyama

    r = verify(EulerMaruyama(), "ring8", schedule, steps=(8, 64), tiers=(1,), progress=False)
    assert r.check("final step (landing)").passed, str(r)


def test_2_assert_matches_reference_takes_its_tolerance_from_the_dtype():
    """The testing helper used a fixed rtol of 1e-9, which fails correct float32 code."""
    from diffusion_oracle.testing import assert_matches_reference

    assert_matches_reference(DDIM32(), DDIM(0.0), steps=(10, 25), grid="log_snr")
    with pytest.raises(AssertionError, match="float32 rounding bound.*first divergence: coeff"):
        assert_matches_reference(DDIM32(coef_error=300 * unit_roundoff("float32")), DDIM(0.0),
                                 steps=(50,), grid="log_snr")  # fmt: skip


def test_2_float16_tolerance_is_honest_about_what_it_resolves():
    """In float16 rounding over many steps reaches the size of the state: the same-grid row is
    INCONCLUSIVE (not a PASS that could hide any fault), and so is the report."""
    r = verify(DDIM32(dtype=np.float16), "ring8", steps=(64, 128), reference=DDIM(0.0),
               tiers=(1,), progress=False)  # fmt: skip
    assert r.dtype == "float16"
    assert r.check("same-grid reference").verdict is Verdict.INCONCLUSIVE, str(r)
    assert r.verdict is not Verdict.PASS


def test_2_rounding_tolerance_follows_the_model():
    """The formula of the module docstring, evaluated by hand on three kinds of path."""
    from diffusion_oracle.reference import DiscreteSchedule
    from diffusion_oracle.reference.grids import respaced_grid

    sch = DiscreteSchedule.linear(1000)
    g = respaced_grid(sch, 10, "trailing")
    on = g.sigma > 0
    S2 = float(np.max(g.alpha**2 * 3.0 + g.sigma**2 * 2))
    want = 8.0 * 2.0**-24 * math.sqrt(
        8 * 20 * S2 + 1000 * S2 + float(np.sum(2 * (g.alpha[on] / g.sigma[on]) ** 2 / 4))
    )
    assert rounding_tolerance("float32", g, m2=3.0, d=2) == pytest.approx(want, rel=1e-12)
    e = make_grid(EDM(), 10, "karras")  # VE: S reaches sigma_max sqrt(d)
    S2e = 1.0 + 80.0**2 * 2
    assert rounding_tolerance("float64", e, m2=1.0, d=2) == pytest.approx(
        8.0 * 2.0**-53 * math.sqrt(8 * 20 * S2e), rel=1e-12
    )
    v = make_grid(VPLinear(), 10, "log_snr")  # continuous VP in float64: no sigma-table term
    S2v = float(np.max(v.alpha**2 * 1.0 + v.sigma**2 * 2))
    assert rounding_tolerance("float64", v, m2=1.0, d=2, calls=30) == pytest.approx(
        8.0 * 2.0**-53 * math.sqrt(8 * 40 * S2v), rel=1e-12
    )


# ------------------------------------------------------------------ item 3: grids
class UserHeun:
    """Heun (Karras Alg. 1) as a user writes it: a plain class with an order and no
    default_grid."""

    name = "user-heun"
    order = 2

    def __call__(self, model, x, grid, *, rng=None):
        x = np.array(x, dtype=np.float64)
        for i in range(grid.steps):
            x0, _ = _predict(model, x, grid, i)
            s, s1 = grid.sigma_edm[i], grid.sigma_edm[i + 1]
            a, a1 = grid.alpha[i], grid.alpha[i + 1]
            xv = x / a
            d = (xv - x0) / s
            xn = xv + (s1 - s) * d
            if s1 > 0:
                x0n, _ = _predict(model, xn * a1, grid, i + 1)
                xn = xv + (s1 - s) * 0.5 * (d + (xn - x0n) / s1)
            x = xn * a1
        return x


README_STEPS = (16, 32, 64, 128)  # the README's CLI example


def test_3_user_sampler_gets_its_references_grid_and_passes():
    """Through the README's route (steps 16..128) a correct user Heun used to get a uniform
    grid and FAIL its pathwise order."""
    r = verify(UserHeun(), "ring8", steps=README_STEPS, reference=Heun(), tiers=(1, 2),
               progress=False)  # fmt: skip
    assert r.grid == "karras" and "reference" in r.notes[0]
    assert r.passed, str(r)


def test_3_user_sampler_without_reference_gets_log_snr_and_passes():
    r = verify(UserHeun(), "ring8", steps=README_STEPS, tiers=(1, 2), progress=False)
    assert r.grid == "log_snr" and "no default_grid declared" in r.notes[0]
    assert r.passed, str(r)


def test_3_orders_are_not_judged_on_rough_grid_families():
    """Discrete respaced grids (rounded timesteps) do not refine smoothly: an order below the
    window is SKIPPED with the reason, never a FAIL of correct code."""
    from diffusion_oracle.reference import DiscreteSchedule

    r = verify(DDIM(), "ring8", DiscreteSchedule.linear(1000), steps=(10, 20, 50, 100, 200),
               grid="trailing", tiers=(2,), progress=False)  # fmt: skip
    row = r.check("order (tier 2, pathwise)")
    assert row.verdict in (Verdict.SKIPPED, Verdict.PASS) and "respaced-trailing" in row.reason


def test_3_default_dpmsolver_multistep_is_not_failed_on_its_rough_grid():
    """diffusers' default DPMSolverMultistepScheduler through from_diffusers: its rounded
    integer timesteps cost the multistep method its order (measured 1.62 < 1.80) while it
    matches DPM-Solver++(2M) on the same grid to rounding: PASS, with the order row skipped."""
    diffusers = pytest.importorskip("diffusers")
    from diffusion_oracle import DiscreteSchedule, DPMSolverPP2M, from_diffusers

    sch = DiscreteSchedule.linear(1000)
    s = from_diffusers(lambda: diffusers.DPMSolverMultistepScheduler(), sch, order=2)
    r = verify(s, "ring8", sch, steps=(10, 20, 40, 80), reference=DPMSolverPP2M(), tiers=(1,),
               progress=False)  # fmt: skip
    assert r.check("same-grid reference").verdict is Verdict.PASS, str(r)
    assert r.check("order (tier 1, exact)").verdict in (Verdict.SKIPPED, Verdict.PASS), str(r)
    assert r.verdict is Verdict.PASS, str(r)


# ------------------------------------------------------------------ item 4: the last step
class StopsEarly(DDIM):
    """Stops at t_{N-1} and returns x_t there (no final jump), the sigma > 0 fault."""

    name = "broken: stops at sigma > 0"

    def _jump(self, model, x, grid, i):
        return x


class WrongFinalAlpha(DDIM):
    """The last step's jump divides by a wrong alpha (the previous node's)."""

    name = "broken: wrong final alpha"

    def _jump(self, model, x, grid, i):
        return _predict(model, x, grid, i)[0] * grid.alpha[i] / grid.alpha[i - 1]


@pytest.mark.parametrize("broken", [StopsEarly(), WrongFinalAlpha()], ids=lambda s: s.name)
def test_4_last_step_faults_fail_the_landing(broken):
    """Used to PASS with a same-grid reference: the jump is the last step, and the reference's
    comparison at t_end = 5% of the narrow std did not resolve it."""
    r = verify(broken, "ring8", steps=STEPS, tiers=(1,), progress=False)
    land = r.check("final step (landing)")
    assert land.verdict is Verdict.FAIL, str(r)
    assert "lands at alpha" in land.reason


def test_4_landing_reads_the_level_a_run_stops_at():
    """DDIM stopped at sigma_s returns alpha_s mu + sigma_s z on a point mass: the report reads
    (alpha_s, sigma_s) back; the values are the grid's, an independent closed form."""
    from diffusion_oracle.verification.evidence import landing

    g = make_grid(VPLinear(), 16, "log_snr", t_end=0.02)
    res = landing(StopsEarly(), get_target("ring8"), VPLinear(), "eps", g, seed=0, n=4000)
    i = g.steps - 1
    assert res.alpha == pytest.approx(g.alpha[i], rel=1e-3)
    assert res.sigma == pytest.approx(g.sigma[i], rel=0.05)  # an RMS over 4000 x 2 draws


class ShortDDIMScheduler(MiniDDIMScheduler):
    """test_adapters' diffusers-style DDIM configured like diffusers' set_alpha_to_one=False:
    its last step lands on alpha_bar_0 = 1 - beta_0 (sigma = 0.01) instead of the data."""

    def step(self, eps, t, sample):
        prev = t - self.T // self.n
        ab = self.alphas_cumprod[t]
        ab_prev = self.alphas_cumprod[max(prev, 0)]
        x0 = (sample - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
        return (np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev) * eps,)


def test_4_from_diffusers_route_names_a_scheduler_that_stops_short():
    """Through from_diffusers a scheduler whose last step stops at sigma = 0.01 used to PASS
    (the order fit does not see a last-step floor this small)."""
    from diffusion_oracle import DiscreteSchedule, from_diffusers

    sch = DiscreteSchedule.linear(1000)
    s = from_diffusers(lambda: ShortDDIMScheduler(sch.betas), sch, order=1)
    r = verify(s, "ring8", sch, steps=(10, 20, 50, 100), tiers=(1,), progress=False)
    land = r.check("final step (landing)")
    assert land.verdict is Verdict.FAIL, str(r)
    # it lands at the level of alpha_bar_0: sigma = sqrt(beta_0 / (1 - beta_0)) ~ 0.01
    assert "sigma = 0.01" in land.reason, land.reason


# ------------------------------------------------------------------ item 5: terminal SNR
def test_5_prior_mismatch_is_a_judged_check_that_can_be_accepted():
    kw = dict(steps=(16, 32, 64), tiers=(1,), progress=False)
    r = verify(Heun(), "bimodal1d", EDM(sigma_max=10.0), **kw)
    assert _failed(r) == ["prior (terminal SNR)"], str(r)
    ok = verify(Heun(), "bimodal1d", EDM(sigma_max=10.0), accept_prior_mismatch=True, **kw)
    assert ok.verdict is Verdict.PASS
    # the default VP-linear schedule's terminal SNR (4e-5) is far below what n samples resolve
    assert verify(DDIM(), "ring8", **kw).check("prior (terminal SNR)").passed


# ------------------------------------------------------------------ item 6: dropped steps
class DropsAStep(DDIM):
    """Skips the model call of step 1: it reuses step 0's eps (one call fewer per run)."""

    name = "broken: drops a step"

    def _run(self, model, x, grid, rng):
        eps = None
        for i in range(grid.steps):
            if i != 1 or eps is None:
                x0, eps = _predict(model, x, grid, i)
            else:
                x0 = (x - grid.sigma[i] * eps) / grid.alpha[i]
            if grid.sigma[i + 1] == 0:
                return x0
            x = grid.alpha[i + 1] * x0 + grid.sigma[i + 1] * eps
        return x


def test_6_fewer_model_times_than_steps_fail():
    r = verify(DropsAStep(), "ring8", steps=STEPS, tiers=(1,), progress=False)
    calls = r.check("model calls")
    assert calls.verdict is Verdict.FAIL and "15 distinct" in calls.reason, str(r)


# ------------------------------------------------------------------ item 7: isolation
class RaisingReference(DDIM):
    name = "raising reference"

    def _run(self, model, x, grid, rng):
        raise RuntimeError("reference exploded")


def test_7_a_check_that_raises_is_its_own_fail_and_the_others_run():
    r = verify(DDIM(), "ring8", steps=STEPS, reference=RaisingReference(), tiers=(1,),
               progress=False)  # fmt: skip
    v = _verdicts(r)
    assert v["same-grid reference"] is Verdict.FAIL, str(r)
    assert "reference exploded" in r.check("same-grid reference").reason
    assert v["runs"] is Verdict.PASS and v["final step (landing)"] is Verdict.PASS
    assert v["order (tier 1, exact)"] is Verdict.PASS


def test_7_conformance_checks_run_on_their_own(monkeypatch):
    pytest.importorskip("diffusers")
    from diffusion_oracle.validation import conformance as cf

    def boom(*a, **k):
        raise RuntimeError("same-grid exploded")

    monkeypatch.setattr(cf, "check_same_grid", boom)  # check_case calls it by this name
    case = next(c for c in cf.CASES if c.scheduler == "DDIMScheduler" and not c.inverse)
    res = cf.check_case(case, n=16, checks=(1, 2, 6))
    names = {r.name: r for r in res}
    assert names["same grid as the reference"].passed is False
    assert "same-grid exploded" in names["same grid as the reference"].detail
    assert any(r.name.startswith("finite") for r in res)


# ------------------------------------------------------------------ item 8: diagnosis
class OffByOneTime(DDIM):
    name = "broken: off-by-one timestep"

    def _run(self, model, x, grid, rng):
        class Shifted:
            prediction = model.prediction

            def __call__(self, x, t):
                return model(x, max(t - 1e-3, 1e-5))

        return super()._run(Shifted(), x, grid, rng)


class NoiseTooLarge(DDPM):
    name = "broken: noise scale x1.1"

    def _run(self, model, x, grid, rng):
        class Louder:
            def standard_normal(self, size=None):
                return 1.1 * rng.standard_normal(size)

        return super()._run(model, x, grid, Louder())


class WrongCoefficient(DDIM):
    name = "broken: coefficient at step 3"

    def _run(self, model, x, grid, rng):
        for i in range(grid.steps):
            x0, eps = _predict(model, x, grid, i)
            if grid.sigma[i + 1] == 0:
                return x0
            x = grid.alpha[i + 1] * x0 * (1.01 if i == 3 else 1.0) + grid.sigma[i + 1] * eps
        return x


class LastJumpOff(DDIM):
    name = "broken: last jump scaled"

    def _jump(self, model, x, grid, i):
        return 1.001 * _predict(model, x, grid, i)[0]


@pytest.mark.parametrize(
    "broken, reference, prediction, ingredient",
    [
        (OffByOneTime(), DDIM(0.0), "eps", "model time"),
        (X0AsEps(), DDIM(0.0), "x0", "prediction"),
        (NoiseTooLarge(), DDPM(), "eps", "noise"),
        (WrongCoefficient(), DDIM(0.0), "eps", "coefficients"),
        (LastJumpOff(), DDIM(0.0), "eps", "final step"),
    ],
    ids=["time", "prediction", "noise", "coefficients", "final"],
)
def test_8_first_divergence_names_the_ingredient(broken, reference, prediction, ingredient):
    r = verify(broken, "ring8", steps=(16, 32), reference=reference, prediction=prediction,
               tiers=(1,), progress=False)  # fmt: skip
    ref = r.check("same-grid reference")
    assert ref.verdict is Verdict.FAIL, str(r)
    assert f"first divergence: {ingredient}:" in ref.reason, ref.reason
    if ingredient in ("model time", "coefficients", "noise"):
        assert "step " in ref.reason and "sigma" in ref.reason


def test_8_first_divergence_of_the_coefficient_fault_is_its_step():
    """The coefficient is wrong in step 3's update: the state parts at the call of step 4."""
    from diffusion_oracle.verification.diagnose import first_divergence

    tg, sch = get_target("ring8"), VPLinear()
    g = make_grid(sch, 16, "log_snr")
    x = tg.diffuse(g.alpha[0], g.sigma[0]).sample(8, np.random.default_rng(0))
    div = first_divergence(WrongCoefficient(), DDIM(0.0), ExactModel(tg, sch), g, x, 0, 1e-12)
    assert div.ingredient == "coefficients" and div.call == 4 and div.step == 4
    assert div.t == pytest.approx(g.t[4])


def test_8_tier3_failure_caused_by_the_grid_says_so():
    """A correct sampler whose grid's last level is not small against the modes (sigma_EDM =
    0.029 against ring8's std 0.05, the Stable Diffusion schedule's sigma_min) fails tier 3 as
    the exact sampler on that grid does; the report says it is the grid."""
    t_end = float(VPLinear().t_from_log_snr(-2 * math.log(0.029)))
    r = verify(Heun(), "ring8", steps=(32, 64), tiers=(3,), t_end=t_end, **FAST)
    failed = [c for c in r.checks if c.verdict is Verdict.FAIL]
    assert failed, str(r)
    assert all("a property of the grid" in c.reason for c in failed), str(r)
    assert "sigma_EDM = 0.029" in failed[0].reason


def test_8_diffusers_euler_on_the_sd_schedule_is_explained_by_the_grid():
    """The issue's case: a correct diffusers Euler with the Stable Diffusion betas FAILs the NLL
    test on ring8 (under-dispersed); the report now says the exact sampler on that grid fails
    it too, and why: sigma_min = 0.029 against the modes' std 0.05, variance factor
    1/(1 + (0.0292/0.05)^2) = 0.746."""
    diffusers = pytest.importorskip("diffusers")
    from diffusion_oracle import from_diffusers
    from diffusion_oracle.validation.diffusers import training_schedule

    def f():
        return diffusers.EulerDiscreteScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
        )

    sch = training_schedule(f())
    r = verify(from_diffusers(f, sch, order=1), "ring8", sch, steps=(25, 50), tiers=(3,),
               n_samples=2000, progress=False)  # fmt: skip
    nll = r.check("tier 3 NLL (two-sided)")
    assert nll.verdict is Verdict.FAIL and "under-dispersed" in nll.reason, str(r)
    assert "the exact sampler on this grid fails" in nll.reason and "0.746" in nll.reason


# ------------------------------------------------------------------ item 9: misc
def test_9_model_without_prediction_is_an_error():
    g = make_grid(VPLinear(), 8, "log_snr")
    x = np.zeros((3, 2))

    def bare(x, t):
        return np.zeros_like(x)

    with pytest.raises(TypeError, match="model must declare what it predicts"):
        DDIM()(bare, x, g, rng=0)
    torch = pytest.importorskip("torch")
    from diffusion_oracle.accelerated.samplers import torch_sampler

    with pytest.raises(TypeError, match="model must declare what it predicts"):
        torch_sampler(DDIM())(bare, torch.zeros(3, 2, dtype=torch.float64), g, rng=0)


def test_9_consecutive_seeds_share_no_random_stream():
    """Every (seed, stream) pair is an independent generator: the first draws of all streams of
    seeds 0..3 are all different (they used to overlap: seed + 1 of one run was seed + 2 of
    the next)."""
    firsts = [stream(seed, name).standard_normal() for seed in range(4) for name in STREAMS]
    assert len(set(firsts)) == len(firsts)


def test_9_ve_heun_runs():
    r = verify(Heun(), "ring8", VEGeometric(), steps=(8, 16), tiers=(1,), progress=False)
    assert r.check("runs").passed, str(r)


# ------------------------------------------------------------------ item 10: EDM's VP Heun
def test_10_edm_vp_heun_last_euler_step_is_a_true_finding():
    """docs/edm_vp_heun.md: EDM's ablation sampler in VP time ends with an Euler step in t,
    which near t = 0 (sigma ~ sqrt(t)) keeps about half the remaining noise: the landing names
    it; with the last step replaced by the jump the same sampler passes."""
    from diffusion_oracle.validation.edm import edm_ablation_heun

    kw = dict(steps=(32, 64, 128), tiers=(1,), progress=False)
    r = verify(edm_ablation_heun(final="euler"), "ring8", **kw)
    land = r.check("final step (landing)")
    assert land.verdict is Verdict.FAIL and "keeps part of the noise" in land.reason, str(r)
    ok = verify(edm_ablation_heun(final="jump"), "ring8", **kw)
    assert ok.check("final step (landing)").passed, str(ok)


# ------------------------------------------------------------------ report object, CLI
def test_report_is_typed_and_serialises():
    r = verify(DDIM(), "ring8", steps=(8, 16), tiers=(1,), progress=False)
    assert isinstance(r, VerifyReport)
    d = json.loads(r.to_json())
    assert d["verdict"] == r.verdict.value and d["checks"][0]["name"] == "runs"
    assert {c["verdict"] for c in d["checks"]} <= {v.value for v in Verdict}
    md = r.to_markdown()
    assert md.startswith(f"### {r.sampler}: {r.verdict.value}") and "| check | verdict |" in md


def test_cli_flags_and_exit_codes(tmp_path):
    import subprocess
    import sys
    import textwrap

    (tmp_path / "um.py").write_text(
        textwrap.dedent("""
        from diffusion_oracle.reference.samplers import DDIM
        good = DDIM()
    """)
    )
    exe = [sys.executable, "-m", "diffusion_oracle", "verify", "um:good"]
    res = subprocess.run(
        [*exe, "--steps", "16", "--tiers", "1", "--json", str(tmp_path / "r.json")],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 3, res.stdout + res.stderr  # INCONCLUSIVE: one step count
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["verdict"] == "INCONCLUSIVE"
    ok = subprocess.run(
        [*exe, "--steps", "16,32,64", "--tiers", "1", "--reference", "ddim(eta=0)",
         "--dtype", "float64", "--json", "-"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["verdict"] == "PASS"
    bad = subprocess.run([*exe, "--reference", "nosuch"], cwd=tmp_path, capture_output=True,
                         text=True)  # fmt: skip
    assert bad.returncode == 2 and "reference must be a built-in sampler name" in bad.stderr


# ------------------------------------------------------------------ calibration
@pytest.mark.slow
def test_false_alarm_rate_of_verify_on_an_exact_sampler():
    """200 seeds of an exact sampler (ExactAncestral: exact draws of the target at every N)
    through the whole of verify (runs, calls, tier-1 order, landing, prior, the four tier-3
    tests): the deterministic checks never fail, and the FAIL count stays below the binomial
    (200, 0.01) 99.9% quantile, 0.01 being tier 3's declared family rate."""
    from scipy.stats import binom

    from diffusion_oracle.reference.samplers import ExactAncestral

    reps, level = 200, 0.01
    fails = {}
    for seed in range(reps):
        r = verify(ExactAncestral(), "ring8", steps=(4, 8), tiers=(1, 3), tier3_steps=4,
                   seed=1000 + seed, progress=False)  # fmt: skip
        assert r.verdict is not Verdict.INCONCLUSIVE, str(r)
        for name in _failed(r):
            fails[name] = fails.get(name, 0) + 1
    assert all(n.startswith("tier 3") for n in fails), fails
    n_fail = sum(fails.values())
    assert n_fail <= binom.ppf(0.999, reps, level), (fails, binom.ppf(0.999, reps, level))


# ------------------------------------------------------------------ review: both directions
def test_last_step_is_judged_whatever_tiers_run():
    """Landing, model calls and prior used to run only with tier 1: a sampler that never takes
    its final jump PASSed with tiers=(3,)."""
    r = verify(StopsEarly(), "ring8", steps=(32, 64), tiers=(3,), **FAST)
    assert r.check("final step (landing)").verdict is Verdict.FAIL, str(r)
    # it also skips the model call of the last level: N - 1 distinct times
    assert r.check("model calls").verdict is Verdict.FAIL, str(r)
    assert r.check("prior (terminal SNR)").passed


class PartlyEuler(Heun):
    """Heun that falls back to Euler (first order) on the starts with x_0 > 0.6 late in the
    run: a fault on a minority of starts."""

    name = "broken: euler on a minority of starts"

    def _step(self, model, x, grid, i, rng):
        good = super()._step(model, x, grid, i, rng)
        x0, _ = _predict(model, x, grid, i)
        y = x / grid.alpha[i]
        d = (y - x0) / grid.sigma_edm[i]
        eul = grid.alpha[i + 1] * (y + (grid.sigma_edm[i + 1] - grid.sigma_edm[i]) * d)
        bad = (y[:, 0] > 0.6) & (grid.sigma_edm[i] < 1.0)
        return np.where(bad[:, None], eul, good)


def test_a_fault_on_a_minority_of_starts_is_not_a_pass():
    r = verify(PartlyEuler(), "ring8", steps=(32, 64, 128, 256), tiers=(2,), progress=False)
    row = r.check("order (tier 2, pathwise)")
    assert row.verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE), str(r)
    assert r.verdict is not Verdict.PASS


def test_order_rules_need_evidence():
    """judge_order on synthetic error series (an independent closed form of each case)."""
    from diffusion_oracle.harness import fit_order
    from diffusion_oracle.verification.judge import judge_order

    steps = [16, 32, 64, 128]
    # converging to a wrong limit, with a zero crossing that mimics a rising slope
    wrong = [abs(0.2 / n - 1e-3) for n in steps]
    row = judge_order("o", 1, fit_order(steps, wrong, 2), wrong, steps, 2, refines=True,
                      family="log_snr", floor=1e-14, notes=[])  # fmt: skip
    assert row.verdict is not Verdict.PASS and not row.law
    # rough family: an order above the window is never a FAIL there
    fast = [float(n) ** -2.6 for n in steps]
    row = judge_order("o", 2, fit_order(steps, fast, 2), fast, steps, 2, refines=False,
                      family="respaced-trailing", floor=1e-14, notes=[])  # fmt: skip
    assert row.verdict is Verdict.PASS
    slow = [float(n) ** -1.0 for n in steps]
    row = judge_order("o", 2, fit_order(steps, slow, 2), slow, steps, 2, refines=False,
                      family="respaced-trailing", floor=1e-14, notes=[])  # fmt: skip
    assert row.verdict is Verdict.SKIPPED
    # errors under a float32 rounding floor are unresolved, not exact
    tiny = [1e-9] * 4
    row = judge_order("o", 1, None, tiny, steps, 2, refines=True, family="log_snr",
                      floor=1e-6, notes=[], rounding_floor=True)  # fmt: skip
    assert row.verdict is Verdict.INCONCLUSIVE


class MovesHalfAMode(Heun):
    """Correct steps, then half of mode 0's samples moved onto mode 4 (a weight fault)."""

    name = "broken: moves half a mode"

    def _run(self, model, x, grid, rng):
        out = super()._run(model, x, grid, rng)
        bad = (out[:, 0] > 0.9) & (np.abs(out[:, 1]) < 0.3)
        bad &= np.arange(len(out)) % 2 == 0
        out[bad] = -out[bad]
        return out


def test_grid_explanation_is_per_test():
    """On the sigma_EDM = 0.029 grid the NLL failure is the grid's; a weight fault's
    responsibilities failure is the sampler's own, and the report says so for that test."""
    t_end = float(VPLinear().t_from_log_snr(-2 * math.log(0.029)))
    r = verify(MovesHalfAMode(), "ring8", steps=(32, 64), tiers=(3,), t_end=t_end,
               tier3_steps=64, n_samples=4000, progress=False)  # fmt: skip
    resp = r.check("tier 3 responsibilities")
    assert resp.verdict is Verdict.FAIL and "the deviation is the sampler's own" in resp.reason


@pytest.mark.parametrize(
    "kw, needle, exc",
    [
        (dict(seed=-1), "seed must be an integer >= 0, got -1", ValueError),
        (dict(prediction="epsilon"), "prediction must be one of", ValueError),
        (dict(tier3_steps=-5), "tier3_steps must be an integer >= 2, got -5", ValueError),
        # the wrong type is a TypeError (as the reference's positive_int)
        (dict(n_samples="many"), "n_samples must be an integer >= 2, got str 'many'", TypeError),
    ],
)
def test_bad_arguments_are_named(kw, needle, exc):
    with pytest.raises(exc, match=needle):
        verify(DDIM(), "ring8", steps=(8, 16), progress=False, **kw)


def test_diffusers_tier3_steps_stay_within_the_schedule():
    """An order-1 scheduler asked for tier 3 at the default 1024 steps used to raise
    'num_inference_steps 1024 cannot be larger than 1000'."""
    diffusers = pytest.importorskip("diffusers")
    from diffusion_oracle import DiscreteSchedule, from_diffusers

    sch = DiscreteSchedule.linear(1000)
    s = from_diffusers(lambda: diffusers.DDIMScheduler(num_train_timesteps=1000), sch, order=1)
    r = verify(s, "ring8", sch, steps=(10, 20), tiers=(3,), n_samples=1000, progress=False)
    assert r.check("runs").passed and "1000 steps" in " ".join(r.notes), str(r)


def test_2_prediction_type_tolerance_is_not_read_off_a_float32_run(monkeypatch):
    """Conformance check 3 took its tolerance as 10x the scheduler's own float64-vs-float32
    difference: a float32 run far off (here shifted by 8) made the tolerance absorb a real
    fault of 0.8 in the v_prediction path. Its tolerance now comes from the rounding model."""
    pytest.importorskip("diffusers")
    from diffusion_oracle.validation import conformance as cf
    from diffusion_oracle.validation.checks import invariance

    real = invariance.run_scheduler

    def planted(factory, model, x, N, rng=None, upcast=True):
        r = real(factory, model, x, N, rng=rng, upcast=upcast)
        if factory().config.get("prediction_type") == "v_prediction":
            r.sample = r.sample + 0.8  # the fault
        if not upcast:
            r.sample = r.sample + 8.0  # a float32 run far off
        return r

    monkeypatch.setattr(invariance, "run_scheduler", planted)  # check 3's module
    case = next(c for c in cf.CASES if c.scheduler == "DDIMScheduler" and not c.inverse)
    res = cf.check_case(case, n=16, checks=(3,))
    inv = next(r for r in res if r.name.startswith("prediction_type invariance"))
    assert inv.passed is False, inv
