"""diffusion_oracle.accelerated: the PyTorch implementation (GPU first, CPU works).

Independent code written from the same formulas as the float64 reference; the tests make the two
agree (float64 to relative 1e-12, float32 within the tolerance table). torch stays an optional
extra and the reference never imports it. Present so far: schedules (:func:`torch_schedule`) and
Gaussian-mixture targets (:class:`TorchMixture`); samplers, statistics and ``verify(device=...)``
follow (issue 5, in progress)."""

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
    "TorchFlow",
    "TorchMixture",
    "TorchSchedule",
    "TorchSubVP",
    "TorchVEGeometric",
    "TorchVPCosine",
    "TorchVPLinear",
    "torch_schedule",
]
