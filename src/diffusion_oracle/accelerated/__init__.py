"""diffusion_oracle.accelerated: the PyTorch implementation (GPU first, CPU works).

Independent code written from the same formulas as the float64 reference; the tests make the two
agree (float64 to relative 1e-12, float32 within the tolerance table). torch stays an optional
extra and the reference never imports it. Schedules (:func:`torch_schedule`), Gaussian-mixture
targets (:class:`TorchMixture`, a fused Triton kernel on CUDA), the forward process, posterior,
conversions and :class:`TorchExactModel` (``accelerated.model``), the built-in samplers
(``accelerated.samplers``, :func:`torch_sampler`), the tier-3 statistics
(``accelerated.stats``; ``verify(device=...)`` runs on them), and the ELBO terms, PF-ODE
likelihood, flow map and irreducible loss (``accelerated.likelihood``)."""

from .model import TorchExactModel
from .samplers import TorchGrid, torch_sampler
from .schedules import (
    TorchDiscrete,
    TorchEDM,
    TorchFlow,
    TorchSchedule,
    TorchSubVP,
    TorchVEGeometric,
    TorchVPCosine,
    TorchVPLinear,
    torch_schedule,
)
from .targets import TorchMixture

__all__ = [
    "TorchDiscrete",
    "TorchEDM",
    "TorchExactModel",
    "TorchGrid",
    "TorchFlow",
    "TorchMixture",
    "TorchSchedule",
    "TorchSubVP",
    "TorchVEGeometric",
    "TorchVPCosine",
    "TorchVPLinear",
    "torch_sampler",
    "torch_schedule",
]
