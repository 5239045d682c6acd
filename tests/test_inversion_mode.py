"""verify's inversion mode (issue 20): an inversion scheduler is judged from the data towards
the noise against the exact inverted law, under the labelling convention it follows. Expected
values are independent of the driver: the exact inverted law is the VP marginal
N(alpha m, alpha^2 C + sigma^2 I) at the end level (closed form); the DDIM inversions of both
conventions come from reference.samplers.ddim_invert (a separate implementation); the levels
from the schedulers' documented timesteps."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers")
# diffusers 0.42.1 builds its sigma tables through np.array(tensor): a DeprecationWarning per
# call under NumPy 2, hundreds of thousands of lines in the log
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
pytest.importorskip("torch")

from diffusion_oracle import Verdict, from_diffusers, verify  # noqa: E402
from diffusion_oracle.reference import ExactModel, get_target  # noqa: E402
from diffusion_oracle.reference.exact import gaussian_w2, probe_affine  # noqa: E402
from diffusion_oracle.reference.grids import Grid  # noqa: E402
from diffusion_oracle.reference.samplers import ddim_invert  # noqa: E402
from diffusion_oracle.reference.targets import Gaussian  # noqa: E402
from diffusion_oracle.validation.diffusers import run_pipeline, training_schedule  # noqa: E402

logging.getLogger("diffusers").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", module="diffusers")

STEPS = [8, 16, 32, 64]
LABELS = "labels name the sample's level"
ORDER = "order (tier 1, exact inversion)"


def _row(report, name):
    return next(c for c in report.checks if c.name == name)


def ddim_inverse():
    return diffusers.DDIMInverseScheduler(clip_sample=False)


def dpm_inverse_karras():
    return diffusers.DPMSolverMultistepInverseScheduler(use_karras_sigmas=True)


def test_ddim_inverse_is_the_destination_ddim_inversion_and_converges():
    s = from_diffusers(ddim_inverse, order=1, inverse=True)
    rep = verify(s, "ring8", steps=STEPS, reference="ddim", progress=False)
    assert rep.verdict is Verdict.PASS, rep
    assert "model at the destination level" in _row(rep, LABELS).reason
    same = _row(rep, "same levels as the DDIM inversion")
    assert same.verdict is Verdict.PASS and "destination level" in same.reason
    assert _row(rep, ORDER).verdict is Verdict.PASS
    assert rep.dtype == "float32"


def test_the_rows_are_the_closed_form_inverted_law():
    """Independently of the driver: DDIMInverseScheduler (float64) is the reference DDIM
    inversion with the model at the destination (``ddim_invert(model_time="next")``) on its
    documented timesteps k (node (k + 1) / T), from the data; its output law on the
    moment-matched Gaussian N(m, C) (affine: read exactly with probe_affine) against the closed
    form N(alpha m, alpha^2 C + sigma^2 I) at the last timestep is the row's W2."""
    s = from_diffusers(ddim_inverse, order=1, inverse=True, dtype="float64")
    tgt = get_target("ring8")
    rep = verify(s, tgt, steps=[8, 16], progress=False)
    g = Gaussian(tgt.mean(), tgt.covariance())
    sch = training_schedule(ddim_inverse())
    model = ExactModel(g, sch)
    for row in rep.rows:
        sched = ddim_inverse()
        sched.set_timesteps(row.steps)
        ks = [int(k) for k in sched.timesteps]
        grid = Grid(sch, np.asarray([(k + 1) / sch.T for k in ks[::-1]]), final_zero=True)

        def inv(model, x, _grid, *, rng=None, grid=grid):
            return ddim_invert(model, x, grid, model_time="next")

        m, S = probe_affine(inv, model, None, g.d).output_law(g.mean_vec, g.cov)
        t_end = (ks[-1] + 1) / sch.T
        a, sg = float(sch.alpha(t_end)), float(sch.sigma(t_end))
        want = gaussian_w2(m, S, a * g.mean_vec, a * a * g.cov + sg * sg * np.eye(g.d))
        assert row.w2 == pytest.approx(want, rel=1e-9), row.steps
        # and the driver's run is that DDIM inversion, draw by draw
        x = g.sample(64, rng=np.random.default_rng(row.steps))
        r = run_pipeline(ddim_inverse, model, x, row.steps, upcast=True)
        np.testing.assert_allclose(r.sample, inv(model, x, None), rtol=0, atol=1e-12)


def test_dpm_solver_inverse_is_judged_under_the_current_level():
    """A correct DPMSolverMultistepInverseScheduler (on c803acc verify had no inversion mode:
    its runs were read as a sampler towards the data) PASSes at its order 2 on Karras sigmas,
    model at the current level; it is not a DDIM inversion (reported, and FAILed only when
    reference='ddim' asks)."""
    s = from_diffusers(dpm_inverse_karras, order=2, inverse=True)
    rep = verify(s, "ring8", steps=STEPS, progress=False)
    assert rep.verdict is Verdict.PASS, rep
    assert "model at the current level" in _row(rep, LABELS).reason
    assert rep.order_tier1.slope > 1.5  # second order, not DDIM's first
    assert any("model at the current level on the same levels" in n for n in rep.notes)
    rep = verify(s, "ring8", steps=STEPS, reference="ddim", progress=False)
    assert _row(rep, "same levels as the DDIM inversion").verdict is Verdict.FAIL


def test_v_prediction_ddim_inverse_is_not_the_ddim_inversion():
    """finding 12: DDIMInverseScheduler(prediction_type='v_prediction') uses v as eps at its
    first step from the data; it still converges (the error is one step's), but it is not the
    DDIM inversion of its convention."""
    f = lambda: diffusers.DDIMInverseScheduler(clip_sample=False,  # noqa: E731
                                               prediction_type="v_prediction")  # fmt: skip
    rep = verify(from_diffusers(f, order=1, inverse=True), "ring8", steps=STEPS,
                 reference="ddim", progress=False)  # fmt: skip
    same = _row(rep, "same levels as the DDIM inversion")
    assert same.verdict is Verdict.FAIL and rep.verdict is Verdict.FAIL


class AheadLabels(diffusers.DDIMInverseScheduler):
    """A planted fault: the network is told the level one step beyond the destination."""

    def set_timesteps(self, *args, **kwargs):
        super().set_timesteps(*args, **kwargs)
        back = self.config.num_train_timesteps // self.num_inference_steps
        self.timesteps = self.timesteps + back

    def step(self, model_output, timestep, sample, **kwargs):
        back = self.config.num_train_timesteps // self.num_inference_steps
        return super().step(model_output, timestep - back, sample, **kwargs)


def test_planted_label_lag_fails_under_both_conventions():
    s = from_diffusers(lambda: AheadLabels(clip_sample=False), order=1, inverse=True)
    rep = verify(s, "ring8", steps=[8, 16], progress=False)
    row = _row(rep, LABELS)
    assert row.verdict is Verdict.FAIL and "the network is told t=" in row.reason
    assert rep.verdict is Verdict.FAIL


def test_a_flow_inversion_that_runs_towards_the_data_fails_in_verify():
    f = lambda: diffusers.DPMSolverMultistepInverseScheduler(  # noqa: E731
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0)  # fmt: skip
    rep = verify(from_diffusers(f, order=2, inverse=True), "ring8", steps=[8, 16],
                 progress=False)  # fmt: skip
    assert "runs towards the data" in _row(rep, LABELS).reason
    assert rep.verdict is Verdict.FAIL


def test_inversion_mode_arguments():
    s = from_diffusers(ddim_inverse, order=1, inverse=True)
    with pytest.raises(ValueError, match="reference must be None or 'ddim'"):
        verify(s, "ring8", steps=[8, 16], reference="heun", progress=False)


def test_a_flow_inversion_is_judged_in_the_flow_frame():
    """FlowMatchEuler with invert_sigmas runs sigma 0 -> 1 (the data to pure noise): the exact
    inverted law is N(0, I) at its end, its W2 halves with N (order 1); the VP-frame marginals
    of 66d1816 stalled at 0.3 (and the end at sigma = 1 raised a math domain error)."""
    f = lambda: diffusers.FlowMatchEulerDiscreteScheduler(invert_sigmas=True)  # noqa: E731
    rep = verify(from_diffusers(f, order=1, inverse=True), "ring8", steps=STEPS, progress=False)
    assert rep.verdict is Verdict.PASS, rep
    w2 = [r.w2 for r in rep.rows]
    assert all(0.4 < b / a < 0.6 for a, b in zip(w2[:-1], w2[1:]))


def test_a_stochastic_inversion_is_not_judged():
    s = from_diffusers(ddim_inverse, order=1, inverse=True, stochastic=True)
    rep = verify(s, "ring8", steps=[8, 16], progress=False)
    assert rep.verdict is Verdict.INCONCLUSIVE and "stochastic" in rep.checks[0].reason
