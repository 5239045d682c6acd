"""Check 9, documented grids (issue 21): timestep spacings (Lin et al. 2024, arXiv:2305.08891,
Table 2, and the DPM-Solver family's N + 1-point variant), their sigmas, zero terminal SNR
(Algorithm 1) and beta sigmas. Expected values are written here independently: the paper's
own T = 1000, S = 10 rows as integer literals, Table 2's 1-indexed formulas in exact integer /
Fraction arithmetic, the repository's reference rescale_zero_terminal_snr, scipy's Beta
quantiles. Planted faults (an off-by-one leading offset, a trailing grid shifted by one, a
solver on the S = N grid, a sigma off its label, alpha_bar shifted instead of its square
root) must FAIL with the entry named; diffusers 0.42.1's own grids are pinned."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

from diffusion_oracle.validation.checks.documented import (  # noqa: E402
    beta_sigmas,
    check_documented,
    documented_sigmas,
    documented_timesteps,
    table2_timesteps,
    zero_snr_alphas_cumprod,
)
from diffusion_oracle.validation.conformance import Case  # noqa: E402

FEW = (1, 2, 3, 4, 7, 10, 16, 25, 50)

# Lin et al. 2024, Table 2, T = 1000, S = 10, 1-indexed, as printed
PAPER_ROWS = {
    "linspace": [1, 112, 223, 334, 445, 556, 667, 778, 889, 1000],
    "leading": [1, 101, 201, 301, 401, 501, 601, 701, 801, 901],
    "trailing": [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000],
}


@pytest.mark.parametrize("spacing", sorted(PAPER_ROWS))
def test_table2_is_the_papers_row_minus_one(spacing):
    got, ties = table2_timesteps(spacing, 1000, 10)
    assert got.tolist() == [t - 1 for t in reversed(PAPER_ROWS[spacing])]
    assert not ties.any()


def _paper_1_indexed(spacing, T, S):
    """Table 2's formulas, 1-indexed, in exact arithmetic: a list of sets (both neighbours
    at a half-integral value)."""
    if spacing == "leading":
        return [{t} for t in range(1, T + 1, T // S)][:S]
    if spacing == "linspace":
        vals = [1 + Fraction((T - 1) * k, S - 1) if S > 1 else Fraction(1) for k in range(S)]
    else:
        vals = sorted(Fraction(T) - Fraction(T * j, S) for j in range(S))
    return [{v.numerator // v.denominator, -(-v.numerator // v.denominator)} if
            v.denominator == 2 else {round(v)} for v in vals]  # fmt: skip


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("T,S", [(1000, 1), (1000, 3), (1000, 7), (1000, 16), (1000, 61),
                                 (1000, 999), (100, 33), (4000, 25)])  # fmt: skip
def test_table2_against_the_1_indexed_formulas(spacing, T, S):
    got, ties = table2_timesteps(spacing, T, S)
    want = _paper_1_indexed(spacing, T, S)[::-1]
    assert len(got) == S == len(want)
    assert all(int(g) + 1 in w for g, w in zip(got, want))
    assert [len(w) == 2 for w in want] == ties.tolist()


def test_linspace_ties_are_accepted_either_way():
    """(T - 1) k / (S - 1) = 499.5 at T = 1000, S = 3: a tie; np.round gives 500 (half to
    even), and the check accepts it (and would accept 499)."""
    got, ties = table2_timesteps("linspace", 1000, 3)
    assert ties.tolist() == [False, True, False] and got[1] in (499, 500)
    res = check_documented(Case("DDIMScheduler", {"clip_sample": False,
                                                  "timestep_spacing": "linspace"}),
                           spacing_steps=(3, 5, 25))  # fmt: skip
    assert res.passed is True, res.detail


@pytest.mark.parametrize(
    "case",
    [
        Case("DDIMScheduler", {"clip_sample": False}, "ddim", order=1),
        Case("DDIMScheduler", {"clip_sample": False, "steps_offset": 1}),
        Case("DDPMScheduler", {"clip_sample": False, "timestep_spacing": "trailing"}),
        Case("PNDMScheduler", {"skip_prk_steps": True}),
        Case("EulerDiscreteScheduler", {"prediction_type": "v_prediction"}, "euler", order=1),
        Case("EulerDiscreteScheduler", {"timestep_spacing": "leading", "steps_offset": 1}),
        Case("HeunDiscreteScheduler", {"timestep_spacing": "trailing"}),
        Case("KDPM2DiscreteScheduler", {"timestep_spacing": "leading"}),
        Case("DDIMInverseScheduler", {"clip_sample": False}),
        Case("FlowMatchEulerDiscreteScheduler", {}, order=1),
    ],
    ids=lambda c: c.label,
)
def test_correct_spacings_pass(case):
    """Negative controls (N = 61 is the trailing bug below, left out here)."""
    res = check_documented(case, spacing_steps=FEW)
    assert res.passed is True, res.detail


def test_ddim_trailing_passes_below_61_and_fails_at_61():
    """diffusers 0.42.1: np.arange(T, 0, -T / N) with a float step gains an entry at N = 61
    (and 61 more N <= 1000): 62 labels, the last -1 (alphas_cumprod[-1] is the noisiest
    level). Table 2's arange in exact arithmetic has N entries."""
    assert len(np.arange(1000, 0, -1000 / 61)) == 62  # the float arange itself
    s = diffusers.DDIMScheduler(timestep_spacing="trailing")
    s.set_timesteps(61)
    assert len(s.timesteps) == 62 and int(s.timesteps[-1]) == -1
    case = Case("DDIMScheduler", {"clip_sample": False, "timestep_spacing": "trailing"})
    assert check_documented(case, spacing_steps=tuple(range(1, 61))).passed is True
    res = check_documented(case, spacing_steps=(10, 61))
    assert res.passed is False
    assert res.detail.startswith("N = 61: 62 timesteps where Table 2 trailing gives 61 "
                                 "(the extra entry 61: label -1)")  # fmt: skip


class LeadingOffByOne(diffusers.DDIMScheduler):
    """A planted fault: leading labels one step late (steps_offset applied twice)."""

    def set_timesteps(self, *args, **kwargs):
        super().set_timesteps(*args, **kwargs)
        self.timesteps = self.timesteps + 1


class TrailingShifted(diffusers.EulerDiscreteScheduler):
    """A planted fault: trailing labels one step early, sigmas read at them."""

    def set_timesteps(self, *args, **kwargs):
        super().set_timesteps(*args, **kwargs)
        self.timesteps = self.timesteps - 1


class SolverOnTheSEqualsNGrid(diffusers.DPMSolverMultistepScheduler):
    """A planted fault: the solver called on Table 2's S = N linspace (t = 0 a call)."""

    def set_timesteps(self, num_inference_steps=None, *args, **kwargs):
        super().set_timesteps(num_inference_steps, *args, **kwargs)
        t = np.linspace(0, 999, num_inference_steps).round()[::-1].astype(np.int64)
        self.timesteps = torch.from_numpy(t.copy())


class SigmaOffItsLabel(diffusers.EulerDiscreteScheduler):
    """A planted fault: every intermediate sigma 0.1% high (its label unchanged)."""

    def set_timesteps(self, *args, **kwargs):
        super().set_timesteps(*args, **kwargs)
        self.sigmas[1:-1] = self.sigmas[1:-1] * 1.001


def _plant(monkeypatch, cls):
    monkeypatch.setattr(diffusers, cls.__name__, cls, raising=False)


def test_planted_leading_offset_fails_with_the_entry(monkeypatch):
    _plant(monkeypatch, LeadingOffByOne)
    res = check_documented(Case("LeadingOffByOne", {"clip_sample": False}), spacing_steps=(10,))
    assert res.passed is False
    assert res.detail.startswith("N = 10, entry 0: timestep 901, Table 2 leading gives 900 "
                                 "(difference +1; exact equality after rounding)")  # fmt: skip
    plot = res.data.pop("plot")
    assert res.data == {"steps": 10, "entry": 0, "got": 901.0, "want": 900.0}
    assert plot["mark"] == 0 and plot["series"]["scheduler"][1][0] == 901.0


def test_planted_trailing_shift_fails_with_the_entry(monkeypatch):
    _plant(monkeypatch, TrailingShifted)
    res = check_documented(Case("TrailingShifted", {"timestep_spacing": "trailing"}),
                           spacing_steps=(4, 10))  # fmt: skip
    assert res.passed is False
    assert "N = 4, entry 0: timestep 998, Table 2 trailing gives 999 (difference -1" in res.detail


def test_planted_solver_grid_fails(monkeypatch):
    _plant(monkeypatch, SolverOnTheSEqualsNGrid)
    res = check_documented(Case("SolverOnTheSEqualsNGrid", {}), spacing_steps=(10,))
    assert res.passed is False
    # the N + 1-point grid: round(999 k / 10) for k = 10..1 -> 999, 899, ...; S = N: 888
    assert ("N = 10, entry 1: timestep 888, Table 2 linspace over N + 1 points, the lowest "
            "the end point (Lu et al. 2022, time uniform) gives 899") in res.detail


def test_planted_sigma_fault_fails_on_the_sigma(monkeypatch):
    _plant(monkeypatch, SigmaOffItsLabel)
    res = check_documented(Case("SigmaOffItsLabel", {"timestep_spacing": "leading"}),
                           spacing_steps=(10,))  # fmt: skip
    assert res.passed is False
    assert res.detail.startswith("N = 10, entry 1: sigma ")
    assert "the table at timestep 800 gives" in res.detail and "relative 0.001" in res.detail


@pytest.mark.parametrize("name", ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
                                  "DEISMultistepScheduler", "DPMSolverSinglestepScheduler",
                                  "SASolverScheduler"])  # fmt: skip
def test_solvers_follow_the_n_plus_one_point_grid(name):
    """The DPM-Solver family: round(999 k / N), k = N..1 (Lu et al. 2022's time-uniform grid
    with its end point t = 0 the destination), written here from the formula."""
    res = check_documented(Case(name, {}), spacing_steps=FEW)
    assert res.passed is True, res.detail
    assert "over N + 1 points" in res.detail
    s = diffusers.__dict__[name]()
    want, _, _, _, _ = documented_timesteps(s, 7)
    assert want.tolist() == [round(999 * k / 7) for k in range(7, 0, -1)]


def test_final_sigma_min_is_the_training_sigma():
    res = check_documented(Case("DPMSolverMultistepScheduler", {"final_sigmas_type": "sigma_min"}),
                           spacing_steps=FEW)  # fmt: skip
    assert res.passed is True, res.detail


def test_unrounded_linspace_is_judged_only_where_interpolation_is_documented():
    euler = check_documented(Case("EulerDiscreteScheduler", {}), spacing_steps=FEW)
    assert euler.passed is True and "unrounded" in euler.detail
    heun = check_documented(Case("HeunDiscreteScheduler", {}), spacing_steps=FEW)
    assert heun.passed is None and heun.detail.startswith("not judged: Table 2 linspace, unrounded")


def test_undocumented_configurations_are_reported_not_judged():
    lcm = check_documented(Case("LCMScheduler", {}), spacing_steps=FEW)
    assert lcm.passed is None and "not a Table 2 spacing" in lcm.detail
    off = check_documented(Case("DDIMScheduler", {"timestep_spacing": "trailing",
                                                  "steps_offset": 1}),
                           spacing_steps=FEW)  # fmt: skip
    assert off.passed is None and "steps_offset = 1 with trailing" in off.detail
    clip = check_documented(Case("DPMSolverMultistepScheduler",
                                 {"beta_schedule": "squaredcos_cap_v2",
                                  "lambda_min_clipped": -5.1}), spacing_steps=FEW)  # fmt: skip
    assert clip.passed is None and "lambda_min_clipped" in clip.detail


def test_zero_snr_is_algorithm_1():
    """Algorithm 1 here against the reference module's rescale_zero_terminal_snr (another
    implementation, log-space betas) on the configured betas."""
    from diffusion_oracle.reference.schedules import DiscreteSchedule, rescale_zero_terminal_snr

    s = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                beta_end=0.012, rescale_betas_zero_snr=True)  # fmt: skip
    want, tol = zero_snr_alphas_cumprod(s)
    ref = rescale_zero_terminal_snr(DiscreteSchedule.scaled_linear(1000, 0.00085, 0.012))
    ab = np.exp(np.asarray(ref.log_alpha_bar[1:]))
    np.testing.assert_allclose(want[:-1], ab[:-1], rtol=1e-12)
    assert want[-1] == 0.0 and want[0] == pytest.approx(1 - 0.00085, rel=1e-15)
    assert np.all(tol[:-1] > 0) and tol[0] < 1e-5


class ShiftsAlphaBar(diffusers.DDIMScheduler):
    """A planted fault: Algorithm 1's shift and scale applied to alpha_bar instead of its
    square root."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        b = torch.linspace(self.config.beta_start, self.config.beta_end,
                           self.config.num_train_timesteps, dtype=torch.float32)  # fmt: skip
        ab = torch.cumprod(1 - b, 0)
        self.alphas_cumprod = (ab - ab[-1]) * ab[0] / (ab[0] - ab[-1])


def test_zero_snr_pass_fail_and_the_euler_terminal(monkeypatch):
    ok = check_documented(Case("DDIMScheduler", {"clip_sample": False,
                                                 "rescale_betas_zero_snr": True}),
                          spacing_steps=FEW)  # fmt: skip
    assert ok.passed is True and "the last exactly 0" in ok.detail
    _plant(monkeypatch, ShiftsAlphaBar)
    bad = check_documented(Case("ShiftsAlphaBar", {"clip_sample": False,
                                                   "rescale_betas_zero_snr": True}),
                           spacing_steps=FEW)  # fmt: skip
    assert bad.passed is False
    assert bad.detail.startswith("zero terminal SNR (Lin et al. 2024, Algorithm 1): "
                                 "alphas_cumprod[")  # fmt: skip
    # the named entry is off Algorithm 1 (the reference module) by more than float32 knows
    from diffusion_oracle.reference.schedules import DiscreteSchedule, rescale_zero_terminal_snr

    k = bad.data["entry"]
    ref = np.exp(np.asarray(rescale_zero_terminal_snr(DiscreteSchedule.linear(
        1000, 1e-4, 0.02)).log_alpha_bar[1:]))  # fmt: skip
    fault = ShiftsAlphaBar(clip_sample=False, rescale_betas_zero_snr=True).alphas_cumprod
    assert abs(float(fault[k]) / ref[k] - 1) > 4e-6 and k < 10
    euler = check_documented(Case("EulerDiscreteScheduler", {"rescale_betas_zero_snr": True}),
                             spacing_steps=FEW)  # fmt: skip
    assert euler.passed is True  # the spacing PASSes; the terminal 2^-24 is reported
    assert "the last is 2^-24 where Algorithm 1 gives 0" in euler.detail


def test_beta_sigmas_are_computed_both_ways_and_not_judged():
    from scipy import stats

    s = diffusers.EulerDiscreteScheduler(use_beta_sigmas=True)
    lab = np.cumsum(np.log1p(-np.linspace(1e-4, 0.02, 1000)))
    sig = np.sqrt(np.expm1(-lab))
    q = np.array([stats.beta.ppf(1 - i / 9, 0.6, 0.6) for i in range(10)])
    np.testing.assert_allclose(beta_sigmas(s, 10, "sigma"), sig[0] + q * (sig[-1] - sig[0]),
                               rtol=1e-12)  # fmt: skip
    np.testing.assert_allclose(beta_sigmas(s, 10, "timestep"), sig[np.rint(q * 999).astype(int)],
                               rtol=1e-12)  # fmt: skip
    res = check_documented(Case("EulerDiscreteScheduler", {"use_beta_sigmas": True}))
    assert res.passed is None and res.detail.startswith("not judged (two readings")
    assert "the sigma-linear reading within" in res.detail


def test_karras_on_spaced_ends_is_reported_not_judged():
    """Euler converts the sigmas at the spaced timesteps: with SD's leading spacing (offset 1)
    its Karras grid runs between sigma(901) and sigma(1) of the training table (Karras et al.
    eq. 5 written here in float64), not the model's range; no docstring names either range,
    so check 9 reports it, and a wrong rho still FAILs."""
    from diffusers import EulerDiscreteScheduler

    kw = {"use_karras_sigmas": True, "timestep_spacing": "leading", "steps_offset": 1}
    ab = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    sig = np.sqrt((1.0 - ab) / ab)
    lo, hi = sig[1], sig[901]
    w = np.linspace(0.0, 1.0, 10)
    want = (hi ** (1 / 7) + w * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7
    sched = EulerDiscreteScheduler(**kw)
    sched.set_timesteps(10)
    # diffusers' float32 alphas_cumprod: sigma(1) = sqrt((1 - ab) / ab) with 1 - ab = 3e-4
    # carries ~2^-24 / (2 * 3e-4) = 1e-4 relative, into every entry through the end's weight
    np.testing.assert_allclose(sched.sigmas[:-1].double().numpy(), want, rtol=2e-4)
    res = check_documented(Case("EulerDiscreteScheduler", kw))
    assert res.passed is None and "between the spaced timesteps' sigmas" in res.detail

    class Rho6(EulerDiscreteScheduler):
        def _convert_to_karras(self, in_sigmas, num_inference_steps):
            lo_, hi_ = float(in_sigmas[-1]), float(in_sigmas[0])
            r = np.linspace(0, 1, num_inference_steps)
            return (hi_ ** (1 / 6) + r * (lo_ ** (1 / 6) - hi_ ** (1 / 6))) ** 6

    import diffusers

    diffusers.Rho6Euler = Rho6
    try:
        bad = check_documented(Case("Rho6Euler", kw))
    finally:
        del diffusers.Rho6Euler
    assert bad.passed is False and "N = 4, entry" in bad.detail  # neither reading holds


def test_bad_input_names_the_argument():
    from diffusion_oracle.validation.checks.documented import table2_timesteps

    case = Case("EulerDiscreteScheduler", {"use_karras_sigmas": True})
    with pytest.raises(ValueError, match="steps must name at least one"):
        check_documented(case, steps=())
    with pytest.raises(ValueError, match="spacing_steps must name at least one"):
        check_documented(case, spacing_steps=())
    with pytest.raises(ValueError, match="S must be <= T"):
        table2_timesteps("leading", 10, 20)
    with pytest.raises(ValueError, match="offset must be >= 0"):
        table2_timesteps("leading", 1000, 10, offset=-5)
    with pytest.raises(TypeError, match="S must be an integer"):
        table2_timesteps("linspace", 1000, True)
    with pytest.raises(ValueError, match="N must be >= 1"):
        documented_sigmas(case.factory()(), 0)
