"""ExactModel: every parameterization from the target's closed forms, perturbations, call counts."""

import numpy as np
import pytest

from diffusion_oracle.reference import (
    PREDICTIONS,
    ExactModel,
    Flow,
    Gaussian,
    VPLinear,
    convert,
    ring8,
)


@pytest.mark.parametrize("schedule", [VPLinear(), Flow()], ids=repr)
def test_all_parameterizations_are_consistent(schedule):
    gm = ring8()
    m = ExactModel(gm, schedule)
    rng = np.random.default_rng(0)
    for t in (0.1, 0.5, 0.9):
        x = gm.diffuse(schedule.alpha(t), schedule.sigma(t)).sample(20, rng)
        kw = dict(
            x_t=x,
            alpha=schedule.alpha(t),
            sigma=schedule.sigma(t),
            d_alpha=schedule.d_alpha(t),
            d_sigma=schedule.d_sigma(t),
        )
        preds = {p: m.predict(x, t, p) for p in PREDICTIONS}
        for p in PREDICTIONS:
            for q in PREDICTIONS:
                conv = convert(preds[p], source=p, target=q, **kw)
                assert np.allclose(conv, preds[q], rtol=1e-8, atol=1e-8), (p, q, t)
    assert m.n_calls == 3 * len(PREDICTIONS)


def test_flow_velocity_is_eps_minus_x0():
    gm, sch = ring8(), Flow()
    m = ExactModel(gm, sch, prediction="velocity")
    x = np.random.default_rng(1).standard_normal((10, 2))
    assert np.allclose(m(x, 0.4), m.predict(x, 0.4, "eps") - m.predict(x, 0.4, "x0"), atol=1e-14)


def test_perturbations():
    gm, sch = ring8(), VPLinear()
    x = np.random.default_rng(2).standard_normal((50_000, 2))
    exact = ExactModel(gm, sch)(x, 0.3)
    biased = ExactModel(gm, sch, bias=[0.1, -0.2], scale=1.5)(x, 0.3)
    assert np.allclose(biased, 1.5 * exact + np.array([0.1, -0.2]), atol=1e-14)
    noisy = ExactModel(gm, sch, noise_std=0.3, rng=4)(x, 0.3)
    resid = noisy - exact
    # 5 standard errors on the mean (sd 0.3/sqrt(n)) and on the variance
    assert np.abs(resid.mean(0)).max() <= 5 * 0.3 / np.sqrt(x.shape[0])
    assert abs(resid.var() - 0.09) <= 5 * 0.09 * np.sqrt(2 / resid.size)
    assert ExactModel(gm, sch).exact and not ExactModel(gm, sch, scale=2.0).exact


def test_per_sample_times_and_gaussian_target():
    gm, sch = ring8(), VPLinear()
    x = np.random.default_rng(3).standard_normal((4, 2))
    t = np.array([0.1, 0.2, 0.3, 0.4])
    m = ExactModel(gm, sch, prediction="v")
    batch = m(x, t)
    for i in range(4):
        assert np.allclose(batch[i], m(x[i : i + 1], t[i])[0], rtol=1e-14, atol=1e-15)
    g = ExactModel(Gaussian(np.zeros(2), np.eye(2)), sch)
    assert g(x, 0.5).shape == (4, 2)
    with pytest.raises(ValueError, match="scalar t"):
        g(x, t)
