"""diffusion_oracle.reference: the numerically exact float64 NumPy/SciPy reference.

No torch here. Public names are re-exported from private-by-convention modules; see the README
glossary for the notation (alpha, sigma, log_snr, alpha_bar, ...).
"""

from .elbo import (
    ELBOTerms,
    bits_per_dim,
    ddpm_elbo,
    discretized_gaussian_log_likelihood,
    gaussian_ddpm_elbo,
    gaussian_kl,
    gaussian_vdm_elbo,
    l_simple,
    loss_weights,
    vdm_elbo,
)
from .forward import GaussianKernel, ddpm_step_kernel, marginal, sample_marginal, transition
from .likelihood import (
    Estimate,
    ODELikelihood,
    flow_map,
    irreducible_loss,
    pf_ode_log_likelihood,
)
from .model import ExactModel
from .parameterization import PREDICTIONS, convert, from_x0_eps, to_x0_eps
from .posterior import PosteriorCoefficients, ddpm_posterior, posterior
from .schedules import (
    EDM,
    SCHEDULES,
    DiscreteSchedule,
    Flow,
    Schedule,
    SubVP,
    VEGeometric,
    VPCosine,
    VPLinear,
    get_schedule,
    karras_sigmas,
    rescale_zero_terminal_snr,
)
from .targets import (
    DEFAULT_TARGETS,
    EmpiricalMixture,
    Gaussian,
    GaussianMixture,
    aniso64,
    bimodal1d,
    get_target,
    ring8,
)
from .timesteps import LogitNormalTimesteps, LogSNRTimesteps, UniformTimesteps

__all__ = [
    "DEFAULT_TARGETS",
    "DiscreteSchedule",
    "EDM",
    "ELBOTerms",
    "EmpiricalMixture",
    "Estimate",
    "ExactModel",
    "Flow",
    "Gaussian",
    "GaussianKernel",
    "GaussianMixture",
    "LogSNRTimesteps",
    "LogitNormalTimesteps",
    "ODELikelihood",
    "PREDICTIONS",
    "PosteriorCoefficients",
    "SCHEDULES",
    "Schedule",
    "SubVP",
    "UniformTimesteps",
    "VEGeometric",
    "VPCosine",
    "VPLinear",
    "aniso64",
    "bimodal1d",
    "bits_per_dim",
    "convert",
    "ddpm_elbo",
    "ddpm_posterior",
    "ddpm_step_kernel",
    "discretized_gaussian_log_likelihood",
    "flow_map",
    "from_x0_eps",
    "gaussian_ddpm_elbo",
    "gaussian_kl",
    "gaussian_vdm_elbo",
    "get_schedule",
    "get_target",
    "irreducible_loss",
    "karras_sigmas",
    "l_simple",
    "loss_weights",
    "marginal",
    "pf_ode_log_likelihood",
    "posterior",
    "rescale_zero_terminal_snr",
    "ring8",
    "sample_marginal",
    "to_x0_eps",
    "transition",
    "vdm_elbo",
]
