"""diffusion_oracle.testing: the helpers pass correct code and fail wrong code with a useful
message (issue 7: a user's likelihood function, a user's one-step model)."""

import numpy as np
import pytest

from diffusion_oracle import DDIM, make_grid
from diffusion_oracle.reference import ExactModel, VPLinear, pf_ode_log_likelihood, ring8
from diffusion_oracle.testing import (
    assert_flow_map_matches,
    assert_log_likelihood_matches,
    flow_map_error,
)

TARGET, SCHEDULE = ring8(), VPLinear()


def test_exact_ode_likelihood_passes_and_a_biased_one_fails():
    def ode_loglik(x):
        return pf_ode_log_likelihood(TARGET, SCHEDULE, x).log_prob

    assert_log_likelihood_matches(ode_loglik, TARGET, n=16, atol=1e-7)
    with pytest.raises(AssertionError, match=r"Mismatched points: 16 / 16") as info:
        assert_log_likelihood_matches(lambda x: ode_loglik(x) + 0.01, TARGET, n=16, atol=1e-3)
    assert "Worst point" in str(info.value) and "exact" in str(info.value)


def test_stochastic_estimators_are_checked_for_bias():
    gen = np.random.default_rng(0)

    def hutchinson(x):
        return pf_ode_log_likelihood(
            TARGET, SCHEDULE, x, divergence="hutchinson", n_probes=1, rng=gen, rtol=1e-7, atol=1e-7
        ).log_prob

    assert_log_likelihood_matches(hutchinson, TARGET, n=4, atol=1e-5, repeats=20)

    def biased(x):  # the same estimator shifted by half a nat
        return hutchinson(x) + 0.5

    with pytest.raises(AssertionError, match="standard errors"):
        assert_log_likelihood_matches(biased, TARGET, n=4, atol=1e-5, repeats=20)


def test_wrong_shapes_and_non_finite_values_are_reported():
    with pytest.raises(AssertionError, match="one value per point"):
        assert_log_likelihood_matches(lambda x: np.zeros(3), TARGET, n=8)
    with pytest.raises(AssertionError, match="non-finite"):
        assert_log_likelihood_matches(lambda x: np.full(len(x), np.nan), TARGET, n=8)


def test_the_exact_flow_map_passes_and_the_denoiser_does_not():
    exact = flow_map_error(lambda x, t: _exact_map(x, t), TARGET, SCHEDULE, 1.0, n=64)
    assert exact.rms < 1e-9
    # a classic mix-up: the Tweedie denoiser E[x_0 | x_1] is not the consistency function
    model = ExactModel(TARGET, SCHEDULE, prediction="x0")
    with pytest.raises(AssertionError, match="Not equal to the exact flow map"):
        assert_flow_map_matches(model, TARGET, SCHEDULE, 1.0, atol=1e-3, n=64)


def _exact_map(x, t):
    from diffusion_oracle.reference import flow_map

    return flow_map(TARGET, SCHEDULE, x, t, 0.0)


def test_flow_map_error_measures_a_few_step_solver_at_first_order():
    """DDIM with N steps as a 'distilled' one-step model: its error against the exact flow map
    shrinks like 1/N (DDIM is first order), which flow_map_error resolves."""
    model = ExactModel(TARGET, SCHEDULE)
    errs = []
    for N in (16, 64, 256):
        grid = make_grid(SCHEDULE, N, "uniform", t_start=0.5, t_end=0.02, final_zero=False)

        def one_step(x, t, grid=grid):
            return DDIM(0.0)(model, x, grid, rng=None)

        errs.append(flow_map_error(one_step, TARGET, SCHEDULE, 0.5, s=0.02, n=64).rms)
    slopes = -np.diff(np.log(errs)) / np.log(4)
    assert ((slopes > 0.8) & (slopes < 1.35)).all(), (errs, slopes)
