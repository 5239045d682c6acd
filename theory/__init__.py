"""diffusion_oracle.theory: SymPy derivations checked by the CAS (SymPy only, no NumPy).

Each derivation proves its statement when run and returns the expressions, which the tests
lambdify and compare with the float64 reference: a third, independent implementation.
``diffusion-oracle derive --list`` lists the topics.
"""

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
