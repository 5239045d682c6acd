"""Check 7's tolerance (validation/checks/forward.py) at its edges (issue 22, mutation testing).

Check 7 accepts an ``add_noise`` whose relative error is at most max(1e-6, T 2^-24) (diffusers
keeps alphas_cumprod as a float32 cumulative product of T factors). A scheduler stand-in returns
the exact alpha x0 + sigma eps of the reference schedule (computed here from the schedule's
betas with math.fsum, not from the check) times (1 + f tol) for f just below and just above 1,
so the check must pass the first and fail the second; any other tolerance (a different floor,
unit roundoff or T dependence) or a strict comparison flips one of them.
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from diffusion_oracle.reference import ExactModel, ring8  # noqa: E402
from diffusion_oracle.reference.schedules import DiscreteSchedule, VPLinear  # noqa: E402
from diffusion_oracle.validation.checks import forward as check7  # noqa: E402


def _alpha_sigma(betas, n):
    """alpha_bar_n = prod_{i <= n} (1 - beta_i), in log space with fsum (independent)."""
    la = math.fsum(math.log1p(-b) for b in betas[:n])
    return math.exp(0.5 * la), math.sqrt(-math.expm1(la))


class _Stub:
    """A VP scheduler whose add_noise is exact times (1 + rel)."""

    def __init__(self, betas, rel, T):
        self.betas, self.rel, self.T = betas, rel, T

    def set_timesteps(self, n):
        self.timesteps = torch.tensor(np.linspace(self.T - 1, 0, n).round().astype(np.int64))

    def add_noise(self, x0, eps, k):
        a, s = _alpha_sigma(self.betas, int(k[0]) + 1)
        return (a * x0 + s * eps) * (1.0 + self.rel)


class _Run:
    def __init__(self, err):
        self.input_error = err


@pytest.mark.parametrize("T", [1000, 10])
def test_check7_tolerance_edges(T, monkeypatch):
    sch = DiscreteSchedule.linear(T, 1e-4, 0.02) if T == 1000 else DiscreteSchedule.linear(T)
    betas = [float(b) for b in sch.betas]
    model = ExactModel(ring8(), sch, prediction="eps")
    tol = max(1e-6, T * 2.0**-24)  # the documented budget: 6.0e-5 at T = 1000, 1e-6 at T = 10
    monkeypatch.setattr(check7, "run_scheduler", lambda *a, **k: _Run(0.0))
    for f, ok in ((0.9, True), (1.1, False)):
        res = check7.check_forward(lambda f=f: _Stub(betas, f * tol, T), model, "vp", seed=0)
        assert res.passed is ok, (f, res.detail)
        # |x| is up to ~1.1, so the relative error (to max(1, |want|)) is f tol to within 10%
        assert abs(res.value - f * tol) <= 0.1 * f * tol
    # scale_model_input's error enters relative to the 0.3 input level
    for f, ok in ((0.9, True), (1.1, False)):
        monkeypatch.setattr(check7, "run_scheduler", lambda *a, f=f, **k: _Run(0.3 * f * tol))
        res = check7.check_forward(lambda: _Stub(betas, 0.0, T), model, "vp", seed=0)
        assert res.passed is ok and math.isclose(res.value, f * tol, rel_tol=1e-9)


def test_check7_floor_on_a_continuous_schedule(monkeypatch):
    """A schedule without T takes the 1e-6 floor."""
    model = ExactModel(ring8(), VPLinear(), prediction="eps")
    monkeypatch.setattr(check7, "run_scheduler", lambda *a, **k: _Run(0.3 * 0.9e-6))

    class NoNoise:
        pass

    none = check7.check_forward(NoNoise, model, "vp", 0)
    assert none.passed is None and none.value is None and none.detail == "no add_noise"
    assert none.name == "forward process (add_noise, scale_model_input)"
    for f, ok in ((0.9, True), (1.1, False)):
        monkeypatch.setattr(check7, "run_scheduler", lambda *a, f=f, **k: _Run(0.3 * f * 1e-6))

        class VE:
            def set_timesteps(self, n):
                self.timesteps = torch.arange(n - 1, -1, -1, dtype=torch.float32)
                self.sigmas = torch.linspace(10.0, 0.1, n)

            def add_noise(self, x0, eps, k):
                i = list(np.asarray(self.timesteps)).index(float(k[0]))
                return x0 + float(self.sigmas[i]) * eps

        res = check7.check_forward(VE, model, "ve", 0)
        assert res.passed is ok, res.detail


def test_check7_error_exactly_at_the_tolerance_passes(monkeypatch):
    """"within T 2^-24": an error equal to the tolerance passes (the input level is chosen so
    that input_error / 0.3 is exactly 1e-6 in float64), and the detail reports both numbers."""
    model = ExactModel(ring8(), VPLinear(), prediction="eps")
    err = 0.3e-6
    while err / 0.3 != 1e-6:
        err = np.nextafter(err, 1.0 if err / 0.3 < 1e-6 else 0.0)
    monkeypatch.setattr(check7, "run_scheduler", lambda *a, **k: _Run(err))

    class VE:
        def set_timesteps(self, n):
            self.timesteps = torch.arange(n - 1, -1, -1, dtype=torch.float32)
            self.sigmas = torch.linspace(10.0, 0.1, n)

        def add_noise(self, x0, eps, k):
            i = list(np.asarray(self.timesteps)).index(float(k[0]))
            return x0 + float(self.sigmas[i]) * eps

    res = check7.check_forward(VE, model, "ve", 0)
    assert res.passed is True and res.value == 1e-6
    assert res.name == "forward process (add_noise, scale_model_input)"
    assert res.detail == "max relative error 1.0e-06 (tolerance 1e-06)"

    class Raises(VE):
        def add_noise(self, x0, eps, k):
            raise RuntimeError("boom")

    bad = check7.check_forward(Raises, model, "ve", 0)
    assert bad.passed is False and bad.value is None and bad.detail == "RuntimeError('boom')"


def test_check7_vp_scheduler_with_ve_sigmas(monkeypatch):
    """A VP scheduler that keeps VE sigmas (the multistep solvers): the reference is
    (x0 + s eps) / sqrt(1 + s^2) at the sigma of timestep k, written here from the VE <-> VP
    relation alpha = 1/sqrt(1 + s^2), sigma = s alpha; at 0.9 / 1.1 x the tolerance."""
    sch = DiscreteSchedule.linear(1000)
    model = ExactModel(ring8(), sch, prediction="eps")
    tol = 1000 * 2.0**-24
    monkeypatch.setattr(check7, "run_scheduler", lambda *a, **k: _Run(0.0))
    for f, ok in ((0.9, True), (1.1, False)):

        class VPSigmas:
            def set_timesteps(self, n):
                self.timesteps = torch.tensor(np.linspace(999, 0, n).round().astype(np.int64))
                self.sigmas = torch.tensor(np.geomspace(80.0, 0.05, n), dtype=torch.float64)

            def add_noise(self, x0, eps, k, f=f):
                i = [int(v) for v in self.timesteps].index(int(k[0]))
                s = float(self.sigmas[i])
                return (x0 + s * eps) / math.sqrt(1.0 + s * s) * (1.0 + f * tol)

        res = check7.check_forward(VPSigmas, model, "vp", seed=0)
        assert res.passed is ok, res.detail
