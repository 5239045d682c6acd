"""Guidance and inpainting against exact ground truth: at w = 1 (s = 1) classifier-free and
classifier guidance sample the class-conditional law exactly; a flipped guidance sign fails;
replacement inpainting is measurably biased against the exact conditional."""

import numpy as np
import pytest

from diffusion_oracle import verify
from diffusion_oracle.reference import ExactModel, VPLinear, ring8
from diffusion_oracle.reference.guidance import (
    CFG,
    ClassifierGuidance,
    GuidedModel,
    Replacement,
)
from diffusion_oracle.reference.samplers import DDPM, DPMSolverPP2M, Heun

STEPS = (16, 32, 64, 128, 256)


def _failed(r):
    return [v.name for v in r.verdicts if not v.passed]


@pytest.mark.parametrize(
    "sampler, label",
    [
        (CFG(Heun(), 3, 1.0), 3),
        (CFG(Heun(), 3, 1.0, negative=5), 3),
        (ClassifierGuidance(DPMSolverPP2M(), 2, 1.0), 2),
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_unit_guidance_samples_the_conditional(sampler, label):
    gm = ring8()
    r = verify(sampler, gm, steps=STEPS, truth=gm.select(label), progress=False)
    assert r.passed, str(r)
    assert r.order_tier2 is not None  # pathwise against the exact guided flow


def test_flipped_guidance_sign_fails():
    class FlippedCFG(CFG):
        def __call__(self, model, x_init, grid, *, rng=None):
            base, cond = self._models(model)
            return self.sampler(GuidedModel(base, cond, self.w, sign=-1.0), x_init, grid, rng=rng)

    gm = ring8()
    s = FlippedCFG(Heun(), 3, 1.0)
    s.name = "broken: guidance sign flipped"
    r = verify(s, gm, steps=STEPS, truth=gm.select(3), tiers=(3,), progress=False)
    assert not r.passed and any(n.startswith("tier 3") for n in _failed(r)), str(r)


def test_guided_scores_are_exact_combinations():
    """CFG at w in the eps space, and classifier guidance as score + s grad log p(c | x):
    with the exact classifier, grad log p_t(c | x) = score_c - score, so s = 1 is the
    conditional score; checked against finite differences of class_log_posterior."""
    gm, sch = ring8(), VPLinear()
    x = gm.diffuse(0.6, 0.8).sample(5, np.random.default_rng(0))
    t = float(sch.t_from_log_snr(np.log(0.36 / 0.64)))
    a, s = sch.alpha(t), sch.sigma(t)
    base, cond = ExactModel(gm, sch), ExactModel(gm.select(1), sch)
    for w in (0.0, 1.0, 2.5):
        g = GuidedModel(base, cond, w)(x, t)
        assert np.allclose(g, (1 - w) * base.predict(x, t, "eps") + w * cond.predict(x, t, "eps"))
    h = 1e-6
    grad = np.zeros_like(x)
    for i in range(2):
        e = np.zeros(2)
        e[i] = h
        grad[:, i] = (
            gm.class_log_posterior(x + e, a, s)[:, 1] - gm.class_log_posterior(x - e, a, s)[:, 1]
        ) / (2 * h)
    score_c = gm.select(1).score(x, a, s)
    assert np.allclose(gm.score(x, a, s) + grad, score_c, rtol=1e-5, atol=1e-5)
    lp = gm.class_log_posterior(x, a, s)
    assert np.allclose(np.exp(lp).sum(-1), 1.0)


def test_replacement_inpainting_is_biased_against_the_exact_conditional():
    """Observing x_1 = 0.6 on ring8: replacement puts mass on modes the exact conditional
    excludes (tier 3 fails), while sampling with the exact conditional model passes."""
    gm = ring8()
    rp = Replacement(mask=[True, False], y=[0.6])
    truth = rp.ground_truth(gm)
    r = verify(rp, gm, steps=STEPS, truth=truth, progress=False)
    assert "tier 3 NLL (two-sided)" in _failed(r), str(r)
    # positive control: the exact (noisy-observation) conditional is a mixture; a correct
    # sampler on it passes every tier
    cond = gm.condition(np.array([[1.0, 0.0]]), np.array([0.6]), 0.05**2)
    assert verify(DDPM(), cond, steps=STEPS, progress=False).passed


def test_guidance_needs_labels():
    from diffusion_oracle.reference import GaussianMixture

    g = GaussianMixture([1.0], np.zeros((1, 2)), np.ones((1, 2)), covariance_type="diag")
    s = CFG(Heun(), 0, 1.0)
    with pytest.raises(ValueError, match="needs a target with class labels"):
        s(ExactModel(g, VPLinear()), np.zeros((1, 2)), None)
    with pytest.raises(TypeError, match="needs the harness's ExactModel"):
        s(lambda x, t: x, np.zeros((1, 2)), None)
