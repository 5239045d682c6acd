"""Check 7's glue (validation/checks/forward.py) that its tolerance tests do not see (issue 22,
mutation testing: the survivors of tests/test_mutation_kills_checks.py).

- the check is a function of its seed: the same seed gives the same verdict and value, another
  seed other draws (an unseeded generator anywhere in it makes the value change between calls);
- the scale_model_input run gets the check's own factory, model and seed and a constant input,
  and its error enters relative to that input's level (a stand-in whose input error is exactly
  1e-7 of the level must give 1e-7, whatever the level);
- a scheduler that raises fails the check under its name, with the exception's repr cut to 160
  characters (the report's column width).
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from diffusion_oracle.reference import ExactModel, ring8  # noqa: E402
from diffusion_oracle.reference.schedules import DiscreteSchedule  # noqa: E402
from diffusion_oracle.validation.checks import forward as check7  # noqa: E402

NAME = "forward process (add_noise, scale_model_input)"


def _alpha_sigma(betas, n):
    """alpha_bar_n = prod_{i <= n} (1 - beta_i), in log space with fsum (independent)."""
    la = math.fsum(math.log1p(-b) for b in betas[:n])
    return math.exp(0.5 * la), math.sqrt(-math.expm1(la))


class _Run:
    def __init__(self, err):
        self.input_error = err


def _model():
    sch = DiscreteSchedule.linear(100)
    return ExactModel(ring8(), sch, prediction="eps"), [float(b) for b in sch.betas]


def _data_dependent(betas):
    """add_noise exact up to a relative error that depends on the drawn x0 and eps (below the
    tolerance), so the check's value tells which draws it made."""

    class Stub:
        def set_timesteps(self, n):
            self.timesteps = torch.tensor(np.linspace(99, 0, n).round().astype(np.int64))

        def add_noise(self, x0, eps, k):
            a, s = _alpha_sigma(betas, int(k[0]) + 1)
            exact = a * x0 + s * eps
            return exact + 1e-7 * torch.tanh(x0 * eps)

    return Stub


def test_check7_is_a_function_of_its_seed(monkeypatch):
    model, betas = _model()
    monkeypatch.setattr(check7, "run_scheduler", lambda *a, **k: _Run(0.0))
    stub = _data_dependent(betas)
    first = check7.check_forward(stub, model, "vp", seed=0)
    again = check7.check_forward(stub, model, "vp", seed=0)
    other = check7.check_forward(stub, model, "vp", seed=1)
    assert first.passed is True and 0 < first.value < 1e-7
    assert again.value == first.value and again.detail == first.detail
    assert other.value != first.value


def test_check7_runs_the_scheduler_it_is_given_relative_to_the_input_level(monkeypatch):
    model, betas = _model()
    stub = _data_dependent(betas)
    calls = []

    def run_scheduler(factory, m, x_init, steps, *, rng):
        x = np.asarray(x_init, dtype=np.float64)
        calls.append((factory, m, x, steps, rng))
        assert factory is stub and m is model and rng == 7
        assert x.ndim == 2 and x.shape[0] >= 1 and x.shape[1] == model.d
        assert isinstance(steps, int) and steps >= 1
        level = float(np.abs(x).max())
        assert level > 0 and (x == x.flat[0]).all()  # a constant input level
        return _Run(3e-5 * level)  # an input error 3e-5 of the level (the data scale)

    monkeypatch.setattr(check7, "run_scheduler", run_scheduler)
    res = check7.check_forward(stub, model, "vp", seed=7)
    assert len(calls) == 1
    # T = 100: tolerance max(1e-6, 100 2^-24) = 6.0e-6 < 3e-5; the add_noise error is < 1e-7
    assert res.passed is False
    assert math.isclose(res.value, 3e-5, rel_tol=1e-12)


def test_check7_a_raising_scheduler_fails_under_its_name(monkeypatch):
    model, betas = _model()
    monkeypatch.setattr(check7, "run_scheduler", lambda *a, **k: _Run(0.0))
    msg = "x" * 300
    stub = _data_dependent(betas)

    class Raises(stub):
        def add_noise(self, x0, eps, k):
            raise RuntimeError(msg)

    bad = check7.check_forward(Raises, model, "vp", seed=0)
    assert bad.name == NAME
    assert bad.passed is False and bad.value is None
    assert bad.detail == repr(RuntimeError(msg))[:160] and len(bad.detail) == 160
