"""Test configuration: hypothesis profiles and a guard that the installed package is tested.

Profiles (select with HYPOTHESIS_PROFILE):
  dev  quick local runs, random seeds (default outside CI);
  ci   more examples, derandomized so that CI is reproducible (used by `make test`);
  stress  400 random examples per property, for hunting edge cases before a release;
  nightly  the fuzz suite's long run (`make fuzz`): tests/fuzz_api.py draws 250 examples per
           (callable, argument) and 400 valid inputs per callable under it, against 8 and 10 in
           ci; the other properties get stress's 400 random examples.
"""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "stress",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "nightly",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers (tolerances, oracles)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
