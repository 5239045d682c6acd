"""diffusion_oracle.theory: SymPy derivations checked by the CAS (SymPy only, no NumPy).

Each derivation proves its statement when run and returns the expressions, which the tests
lambdify and compare with the float64 reference: a third, independent implementation.
``diffusion-oracle derive --list`` lists the topics.
"""

from . import edm_last_step as _edm_last_step
from . import log_snr_diff as _log_snr_diff
from .derivations import (
    TOPICS,
    Derivation,
    DerivationError,
    conversions,
    ddim_family,
    derive,
    edm_preconditioning,
    elbo,
    forward_marginal,
    gaussian_kl,
    guidance,
    multistep_third_order,
    posterior,
    probability_flow,
    schedules,
    score_equivalences,
)

# registered here: the module builds on derivations (Derivation, the checks); the name
# diffusion_oracle.theory.edm_last_step stays the module
TOPICS["edm_last_step"] = _edm_last_step.edm_last_step
TOPICS["log_snr_diff"] = _log_snr_diff.log_snr_diff

__all__ = [
    "TOPICS",
    "Derivation",
    "DerivationError",
    "conversions",
    "ddim_family",
    "derive",
    "edm_preconditioning",
    "elbo",
    "forward_marginal",
    "gaussian_kl",
    "guidance",
    "multistep_third_order",
    "posterior",
    "probability_flow",
    "schedules",
    "score_equivalences",
]
