"""One test per bad-input rule of the foundation issue: each raises ValueError/TypeError whose
message names the argument, the constraint and the value. No silent NaN."""

import numpy as np
import pytest

from diffusion_oracle.reference import (
    EDM,
    DiscreteSchedule,
    ExactModel,
    Gaussian,
    GaussianMixture,
    VPLinear,
    convert,
    ddpm_posterior,
    marginal,
    posterior,
    ring8,
    transition,
)


def test_betas_outside_open_unit_interval():
    with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\).*betas\[1\] = 0\.0"):
        DiscreteSchedule([0.1, 0.0, 0.2])
    with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\).*1\.5"):
        DiscreteSchedule([0.1, 1.5])
    with pytest.raises(ValueError, match=r"betas\[0\] = 1\.0"):
        DiscreteSchedule([1.0, 0.5])  # beta = 1 is allowed only as the last (zero-SNR) step
    with pytest.raises(ValueError, match="beta_max must be > beta_min"):
        VPLinear(5.0, 1.0)


def test_non_monotone_alpha_bar():
    with pytest.raises(ValueError, match=r"alpha_bar must be strictly decreasing.*0\.95"):
        DiscreteSchedule.from_alpha_bar([0.9, 0.95, 0.5])
    with pytest.raises(ValueError, match=r"alpha_bar must lie in \(0, 1\)"):
        DiscreteSchedule.from_alpha_bar([1.2, 0.5])


def test_t_or_n_out_of_range():
    s = VPLinear()
    with pytest.raises(ValueError, match=r"t must lie in \[0\.0, 1\.0\], got 1\.5"):
        s.alpha(1.5)
    with pytest.raises(ValueError, match=r"t must lie in .* got -0\.1"):
        marginal(s, np.array([0.2, -0.1]))
    d = DiscreteSchedule.linear(10)
    with pytest.raises(ValueError, match=r"n must lie in \[0, T=10\], got 11"):
        d.t_of(11)
    with pytest.raises(ValueError, match=r"n must lie in \[1, T=10\], got 0"):
        ddpm_posterior(d, 0)
    with pytest.raises(TypeError, match="n must be an integer index"):
        d.t_of(2.5)
    with pytest.raises(ValueError, match="s must be < t"):
        posterior(s, 0.5, 0.5)
    with pytest.raises(ValueError, match="s must be < t"):
        transition(s, 0.7, 0.2)
    with pytest.raises(ValueError, match=r"log_snr must lie in"):
        EDM().t_from_log_snr(50.0)
    with pytest.raises(ValueError, match="on the grid"):
        d.index_of(0.55)


def test_non_finite_values():
    s = VPLinear()
    with pytest.raises(ValueError, match="t must be finite, got nan"):
        s.sigma(float("nan"))
    with pytest.raises(ValueError, match="betas must be finite, got inf"):
        DiscreteSchedule([0.1, np.inf])
    gm = ring8()
    with pytest.raises(ValueError, match="x must be finite, got nan"):
        gm.score(np.array([[0.0, np.nan]]), 0.5, 0.5)
    with pytest.raises(ValueError, match="sigma must be finite"):
        gm.score(np.zeros((1, 2)), 0.5, np.inf)
    with pytest.raises(ValueError, match="log_snr must not be NaN"):
        s.t_from_log_snr(np.nan)
    with pytest.raises(ValueError, match="sigma_edm must be > 0, got -1.0"):
        s.t_from_sigma_edm(np.array([0.5, -1.0]))
    from diffusion_oracle.reference.samplers import EDMStochastic

    with pytest.raises(ValueError, match="S_tmax must not be NaN"):
        EDMStochastic(S_tmax=float("nan"))
    with pytest.raises(ValueError, match="means must be finite"):
        GaussianMixture([1.0], [[np.nan, 0.0]], [1.0], covariance_type="iso")


def test_covariance_not_positive_definite():
    with pytest.raises(ValueError, match=r"covs\[1\] must be positive definite, smallest"):
        GaussianMixture([0.5, 0.5], np.zeros((2, 2)), [np.eye(2), [[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(ValueError, match=r"covs\[0\] must be symmetric"):
        GaussianMixture([1.0], np.zeros((1, 2)), [[[1.0, 0.5], [0.0, 1.0]]])
    with pytest.raises(ValueError, match="diag covs must be > 0, got -1.0"):
        GaussianMixture([1.0], np.zeros((1, 2)), [[1.0, -1.0]], covariance_type="diag")
    with pytest.raises(ValueError, match="cov must be positive definite"):
        Gaussian(np.zeros(2), np.array([[1.0, 0.0], [0.0, 0.0]]))


def test_weights_not_summing_to_one():
    with pytest.raises(ValueError, match=r"weights must sum to 1 .* sum is 0\.9"):
        GaussianMixture([0.4, 0.5], np.zeros((2, 1)), [1.0, 1.0], covariance_type="iso")
    with pytest.raises(ValueError, match="weights must be > 0, got -0.5"):
        GaussianMixture([1.5, -0.5], np.zeros((2, 1)), [1.0, 1.0], covariance_type="iso")


def test_shape_mismatches():
    gm = ring8()
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., d\) with d = 2, got \(4, 3"):
        gm.denoise(np.zeros((4, 3)), 0.5, 0.5)
    with pytest.raises(ValueError, match=r"alpha must be a scalar or have the batch shape"):
        gm.denoise(np.zeros((4, 2)), np.ones(3), 0.5)
    with pytest.raises(ValueError, match=r"covs must have shape \(K, d, d\)"):
        GaussianMixture([1.0], np.zeros((1, 2)), np.eye(3)[None])
    with pytest.raises(ValueError, match="value must have the shape of x_t"):
        convert(np.zeros(3), source="eps", target="x0", x_t=np.zeros(2), alpha=0.5, sigma=0.5)
    with pytest.raises(ValueError, match="A must have shape"):
        gm.condition(np.ones((1, 3)), np.zeros(1))
    with pytest.raises(ValueError, match="t must be a scalar or have the batch shape"):
        ExactModel(gm, VPLinear())(np.zeros((4, 2)), np.full(3, 0.5))


def test_dtype_mismatches():
    gm = ring8()
    with pytest.raises(TypeError, match="x must have a real numeric dtype.*complex"):
        gm.score(np.zeros((1, 2), dtype=complex), 0.5, 0.5)
    with pytest.raises(TypeError, match="t must be a real number"):
        VPLinear().alpha("0.5")
    with pytest.raises(TypeError, match="labels must be integers"):
        GaussianMixture([1.0], np.zeros((1, 1)), [1.0], covariance_type="iso", labels=[0.5])
    with pytest.raises(TypeError, match="betas must have a real numeric dtype"):
        DiscreteSchedule(np.array([True, False]))
    with pytest.raises(TypeError, match="T must be an integer"):
        DiscreteSchedule.linear(10.0)


def test_unknown_names():
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        GaussianMixture([1.0], np.zeros((1, 1)), [1.0], covariance_type="spherical")
    with pytest.raises(ValueError, match="source must be one of"):
        convert(np.zeros(2), source="noise", target="x0", x_t=np.zeros(2), alpha=1, sigma=1)
    with pytest.raises(ValueError, match="prediction must be one of"):
        ExactModel(ring8(), VPLinear(), prediction="noise")
    with pytest.raises(ValueError, match="variance must be one of"):
        ddpm_posterior(DiscreteSchedule.linear(10), 3, variance="learned")


def test_no_silent_nan_across_the_valid_domain():
    """Every schedule quantity on a dense t grid, including the endpoints: never NaN."""
    from diffusion_oracle.reference import SCHEDULES, get_schedule

    t = np.concatenate([[0.0, 1e-300, 1e-12], np.linspace(0, 1, 1001), [1 - 1e-12, 1.0]])
    for name in SCHEDULES:
        s = get_schedule(name)
        for q in (
            "alpha",
            "sigma",
            "log_alpha",
            "log_sigma",
            "log_snr",
            "snr",
            "d_alpha",
            "d_sigma",
            "d_log_snr",
            "d_snr",
            "f",
            "g_squared",
            "g",
            "sigma_edm",
        ):
            v = np.asarray(getattr(s, q)(t))
            assert not np.isnan(v).any(), (name, q, t[np.isnan(v)][:3])
