"""Issue 22, inputs near 1e200: finite inputs whose quadratic forms overflow float64 get a
ValueError naming the largest of x, alpha, sigma (the landed code returned NaN), identically in
the reference and the torch twin; log p = -inf (the correctly rounded log of an underflowing
density) stays an answer; and far-but-representable points (|x| ~ 1e100) give the same score
and denoiser in both (the twin's responsibilities summed to K there: every exp(joint - logp)
rounded to 1, a score 8x too large on ring8)."""

import numpy as np
import pytest

from diffusion_oracle.reference.targets import get_target

torch = pytest.importorskip("torch")
from diffusion_oracle.accelerated.targets import TorchMixture  # noqa: E402

QUANTITIES = ("score", "denoise", "eps", "laplacian", "responsibilities")
CASES = [(1e200, 0.8, 0.6, "x"), (1e160, 0.8, 0.6, "x"), (0.5, 1e200, 0.6, "alpha"),
         (0.5, 0.8, 1e200, "sigma")]  # fmt: skip


@pytest.mark.parametrize("name", ["ring8", "aniso64"])
@pytest.mark.parametrize(("x", "alpha", "sigma", "arg"), CASES)
def test_overflow_is_a_clear_error_in_both(name, x, alpha, sigma, arg):
    gm = get_target(name)
    tm = TorchMixture.from_reference(gm, device="cpu")
    xs = np.full((2, gm.d), x)
    for q in QUANTITIES:
        with pytest.raises(ValueError, match=rf"^{arg} = .* is too large"):
            getattr(gm, q)(xs, alpha, sigma)
        with pytest.raises(ValueError, match=rf"^{arg} = .* is too large"):
            getattr(tm, q)(torch.as_tensor(xs), alpha, sigma)


def test_log_prob_underflows_to_minus_infinity_in_both():
    gm = get_target("ring8")
    tm = TorchMixture.from_reference(gm, device="cpu")
    xs = np.full((1, 2), 1e200)
    assert gm.log_prob(xs, 0.8, 0.6)[0] == -np.inf
    assert float(tm.log_prob(torch.as_tensor(xs), 0.8, 0.6)[0]) == -np.inf


@pytest.mark.parametrize("name", ["ring8", "aniso64", "bimodal1d"])
def test_far_points_agree_between_reference_and_twin(name):
    """At |x| = 1e100 the score is -(x - alpha mu_k)/c_k to 1e-100 relative whatever the
    responsibilities: closed form -x / (alpha^2 var + sigma^2) for the isotropic ring."""
    gm = get_target(name)
    tm = TorchMixture.from_reference(gm, device="cpu")
    xs = np.full((1, gm.d), 1e100)
    for q in ("score", "denoise", "eps"):
        ref = np.asarray(getattr(gm, q)(xs, 0.8, 0.6))
        tw = getattr(tm, q)(torch.as_tensor(xs), 0.8, 0.6).numpy()
        np.testing.assert_allclose(tw, ref, rtol=1e-12, err_msg=q)
    r = tm.responsibilities(torch.as_tensor(xs), 0.8, 0.6).numpy()
    np.testing.assert_allclose(r.sum(-1), 1.0, rtol=1e-12)
    if name == "ring8":
        var = float(gm.covs[0][0, 0])
        np.testing.assert_allclose(gm.score(xs, 0.8, 0.6), -xs / (0.64 * var + 0.36), rtol=1e-12)
