"""pytest plugin: put the oracle in a project's own tests in a few lines.

Loaded automatically once diffusion-oracle is installed (entry point ``pytest11``); disable
with ``-p no:diffusion_oracle``. Fixtures:

- ``oracle_target``: the target (default ring8; ``--oracle-target NAME`` picks another
  built-in one).
- ``oracle_schedule``: the schedule (default VPLinear(); ``--oracle-schedule NAME``).
- ``exact_model``: a factory ``exact_model(prediction="eps", schedule=None, target=None)`` of
  the Bayes-optimal model of the target (:class:`~diffusion_oracle.reference.ExactModel`).
- ``oracle``: the assertions of :mod:`diffusion_oracle.testing` bound to that target and
  schedule: ``oracle.assert_converges(sampler, order)``, ``oracle.assert_matches_reference(
  sampler, reference)``, ``oracle.assert_distribution_matches(samples)``,
  ``oracle.assert_log_likelihood_matches(fn)``, ``oracle.assert_flow_map_matches(model, t)``,
  plus ``oracle.sample(n, t)``: exact draws of p_t.

Example (a project's ``tests/test_my_sampler.py``)::

    from my_package import my_heun

    def test_my_heun_is_second_order(oracle):
        oracle.assert_converges(my_heun, order=2)
"""

from __future__ import annotations

import numpy as np
import pytest


def pytest_addoption(parser):
    group = parser.getgroup("diffusion-oracle")
    group.addoption(
        "--oracle-target",
        default="ring8",
        help="built-in target of the diffusion-oracle fixtures (default: ring8)",
    )
    group.addoption(
        "--oracle-schedule",
        default="vp-linear",
        help="built-in schedule of the diffusion-oracle fixtures (default: vp-linear)",
    )


class Oracle:
    """The :mod:`diffusion_oracle.testing` assertions bound to one target and schedule."""

    def __init__(self, target, schedule, seed: int = 0):
        self.target, self.schedule, self.seed = target, schedule, seed

    def __repr__(self):
        return f"Oracle(target={self.target!r}, schedule={self.schedule!r})"

    def sample(self, n: int, t: float = 0.0):
        """n exact draws of p_t (t = 0: the data)."""
        a, s = float(self.schedule.alpha(t)), float(self.schedule.sigma(t))
        return self.target.diffuse(a, s).sample(n, np.random.default_rng(self.seed))

    def assert_converges(self, sampler, order=None, **kw):
        from diffusion_oracle.testing import assert_sampler_converges

        kw.setdefault("seed", self.seed)
        return assert_sampler_converges(
            sampler, order, target=self.target, schedule=self.schedule, **kw
        )

    def assert_matches_reference(self, sampler, reference, **kw):
        from diffusion_oracle.testing import assert_matches_reference

        kw.setdefault("seed", self.seed)
        return assert_matches_reference(
            sampler, reference, target=self.target, schedule=self.schedule, **kw
        )

    def assert_distribution_matches(self, samples, **kw):
        from diffusion_oracle.testing import assert_distribution_matches

        kw.setdefault("seed", self.seed)
        return assert_distribution_matches(samples, self.target, **kw)

    def assert_log_likelihood_matches(self, log_likelihood, **kw):
        from diffusion_oracle.testing import assert_log_likelihood_matches

        return assert_log_likelihood_matches(log_likelihood, self.target, **kw)

    def assert_flow_map_matches(self, model, t, **kw):
        from diffusion_oracle.testing import assert_flow_map_matches

        return assert_flow_map_matches(model, self.target, self.schedule, t, **kw)


@pytest.fixture
def oracle_target(request):
    from diffusion_oracle.reference import get_target

    return get_target(request.config.getoption("--oracle-target"))


@pytest.fixture
def oracle_schedule(request):
    from diffusion_oracle.reference import get_schedule

    return get_schedule(request.config.getoption("--oracle-schedule"))


@pytest.fixture
def exact_model(oracle_target, oracle_schedule):
    from diffusion_oracle.reference import ExactModel

    def make(prediction="eps", schedule=None, target=None):
        return ExactModel(
            oracle_target if target is None else target,
            oracle_schedule if schedule is None else schedule,
            prediction=prediction,
        )

    return make


@pytest.fixture
def oracle(oracle_target, oracle_schedule):
    return Oracle(oracle_target, oracle_schedule)
