"""diffusion-oracle: exact mathematical ground truth for diffusion models.

The public API re-exports the float64 reference (``diffusion_oracle.reference``): schedules, the
forward process and its posterior, exact conversions between predictions, targets with closed-form
diffused densities, scores and denoisers, and the exact model. Subpackages:
``diffusion_oracle.theory`` (SymPy derivations), ``diffusion_oracle.reference``,
``diffusion_oracle.validation`` (adapters for other implementations),
``diffusion_oracle.accelerated`` (PyTorch), ``diffusion_oracle.strategies`` (hypothesis).
"""

from diffusion_oracle.reference import (  # noqa: F401  (curated re-exports)
    DEFAULT_TARGETS,
    EDM,
    PREDICTIONS,
    SCHEDULES,
    DiscreteSchedule,
    EmpiricalMixture,
    ExactModel,
    Flow,
    Gaussian,
    GaussianMixture,
    LogitNormalTimesteps,
    LogSNRTimesteps,
    Schedule,
    SubVP,
    UniformTimesteps,
    VEGeometric,
    VPCosine,
    VPLinear,
    convert,
    ddpm_posterior,
    get_schedule,
    get_target,
    karras_sigmas,
    marginal,
    posterior,
    rescale_zero_terminal_snr,
    transition,
)

__version__ = "0.1.0"

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
    "GaussianMixture",
    "LogSNRTimesteps",
    "LogitNormalTimesteps",
    "Schedule",
    "SubVP",
    "UniformTimesteps",
    "VEGeometric",
    "VPCosine",
    "VPLinear",
    "__version__",
    "convert",
    "ddpm_posterior",
    "get_schedule",
    "get_target",
    "karras_sigmas",
    "marginal",
    "posterior",
    "rescale_zero_terminal_snr",
    "transition",
]
