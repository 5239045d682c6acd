"""diffusion_oracle.reference: the numerically exact float64 NumPy/SciPy reference.

No torch here. Public names are re-exported from private-by-convention modules; see the README
glossary for the notation (alpha, sigma, log_snr, alpha_bar, ...).
"""

from .forward import GaussianKernel, ddpm_step_kernel, marginal, sample_marginal, transition
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
    "EDM",
    "PREDICTIONS",
    "SCHEDULES",
    "DiscreteSchedule",
    "EmpiricalMixture",
    "ExactModel",
    "Flow",
    "Gaussian",
    "GaussianKernel",
    "GaussianMixture",
    "LogSNRTimesteps",
    "LogitNormalTimesteps",
    "PosteriorCoefficients",
    "Schedule",
    "SubVP",
    "UniformTimesteps",
    "VEGeometric",
    "VPCosine",
    "VPLinear",
    "aniso64",
    "bimodal1d",
    "convert",
    "ddpm_posterior",
    "ddpm_step_kernel",
    "from_x0_eps",
    "get_schedule",
    "get_target",
    "karras_sigmas",
    "marginal",
    "posterior",
    "rescale_zero_terminal_snr",
    "ring8",
    "sample_marginal",
    "to_x0_eps",
    "transition",
]
