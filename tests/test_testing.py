"""diffusion_oracle.testing and the pytest plugin: the helpers pass correct code and fail wrong
code with a useful message (issue 7: a user's likelihood function, a user's one-step model;
issue 6: a sampler's order, agreement with a reference sampler, a sample's distribution)."""

import re

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


# ------------------------------------------------------------------ samplers and distributions


def test_assert_sampler_converges_passes_a_correct_order_and_fails_a_wrong_claim():
    from diffusion_oracle import Euler, Heun
    from diffusion_oracle.testing import assert_sampler_converges

    steps = [16, 32, 64, 128]
    rep = assert_sampler_converges(Heun(), steps=steps)  # declares order 2
    assert rep.passed
    with pytest.raises(AssertionError, match=r"does not converge at order 2") as info:
        assert_sampler_converges(Euler(), order=2, steps=steps)
    assert re.search(r"order \(tier 1, exact\): measured (0\.9\d|1\.0\d)", str(info.value))


def test_assert_sampler_converges_reports_a_broken_sampler():
    from diffusion_oracle.testing import assert_sampler_converges

    def nan_sampler(model, x_init, grid, *, rng=None):
        return np.full_like(x_init, np.nan)

    with pytest.raises(AssertionError, match="NaN|non-finite|finite"):
        assert_sampler_converges(nan_sampler, order=1, steps=[8, 16, 32])


def test_assert_matches_reference_equal_and_perturbed():
    from diffusion_oracle import DDIM, DPMSolver1
    from diffusion_oracle.testing import assert_matches_reference

    assert_matches_reference(DPMSolver1(), DDIM(0.0), steps=(8, 20))  # the same method

    def scaled(model, x_init, grid, *, rng=None):
        return 1.0001 * DDIM(0.0)(model, x_init, grid, rng=rng)

    with pytest.raises(AssertionError, match=r"Not equal to the reference .* at 8 steps"):
        assert_matches_reference(scaled, DDIM(0.0), steps=(8,))


def test_assert_distribution_matches_exact_samples_and_a_dropped_mode():
    from diffusion_oracle.testing import assert_distribution_matches

    x = TARGET.sample(4000, rng=5)
    assert len(assert_distribution_matches(x, "ring8")) == 4
    keep = TARGET.responsibilities(x).argmax(1) != 3  # mode 3 dropped
    with pytest.raises(AssertionError, match="responsibilities"):
        assert_distribution_matches(x[keep], TARGET)
    with pytest.raises(ValueError, match="samples must have shape"):
        assert_distribution_matches(np.zeros((30, 3)), TARGET)


def test_pytest_plugin_fixtures_in_a_fresh_project(tmp_path):
    """The installed entry point gives a project the fixtures without any set-up."""
    import subprocess
    import sys

    (tmp_path / "test_user.py").write_text(
        "from diffusion_oracle import Heun, DDIM, DPMSolver1\n"
        "def test_heun(oracle):\n"
        "    oracle.assert_converges(Heun(), steps=[16, 32, 64, 128])\n"
        "def test_same(oracle):\n"
        "    oracle.assert_matches_reference(DPMSolver1(), DDIM(0.0), steps=(8,))\n"
        "def test_samples(oracle):\n"
        "    oracle.assert_distribution_matches(oracle.sample(3000))\n"
        "def test_model(exact_model, oracle_target):\n"
        "    m = exact_model(prediction='x0')\n"
        "    assert m.prediction == 'x0' and m.target is oracle_target\n"
    )
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 passed" in res.stdout
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--oracle-target", "bimodal1d", "-k", "model", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
