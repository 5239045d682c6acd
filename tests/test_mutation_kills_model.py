"""Mutation kill tests for reference/model.py (issue 22, docs/mutation.md): ExactModel.

The oracle is the Gaussian target's textbook posterior written out here (p_t = N(alpha mu, C),
C = alpha^2 Sigma + sigma^2 I: score = -C^{-1}(x - alpha mu), E[x_0|x] = mu + alpha Sigma C^{-1}
(x - alpha mu), E[eps|x] = sigma C^{-1}(x - alpha mu); v = alpha eps - sigma x_0, Salimans & Ho
2022; velocity = alpha' x_0 + sigma' eps, Lipman et al. 2023), with NumPy's solve, not the
target's Cholesky code; the schedule's alpha, sigma and derivatives are inputs. Perturbations
against out = scale * exact + bias + noise_std * z with z from the same seed. Messages pinned.
"""

import numpy as np
import pytest

from diffusion_oracle.reference import (
    PREDICTIONS,
    ExactModel,
    Gaussian,
    GaussianMixture,
    VPLinear,
)

MU = np.array([0.5, -1.0, 2.0])
SIG = np.array([[2.0, 0.3, 0.0], [0.3, 1.0, -0.2], [0.0, -0.2, 0.5]])
SCH = VPLinear(0.3, 7.0)


def oracle(x, t, pred):
    """The closed-form prediction at one time t for x of shape (n, 3)."""
    a, s = SCH.alpha(t), SCH.sigma(t)
    C = a * a * SIG + s * s * np.eye(3)
    r = np.linalg.solve(C, (x - a * MU).T).T  # C^{-1}(x - alpha mu)
    x0 = MU + a * r @ SIG.T
    eps = s * r
    return {
        "score": -r, "x0": x0, "eps": eps, "v": a * eps - s * x0,
        "velocity": SCH.d_alpha(t) * x0 + SCH.d_sigma(t) * eps,
    }[pred]  # fmt: skip


X = np.random.default_rng(5).standard_normal((4, 3)) * 2.0


@pytest.mark.parametrize("pred", PREDICTIONS)
def test_every_prediction_against_the_gaussian_closed_form(pred):
    m = ExactModel(Gaussian(MU, SIG), SCH, prediction=pred)
    assert m.prediction == pred and m.d == 3 and m.exact
    for t in (0.2, 0.7):
        got = m(X, t)
        assert np.allclose(got, oracle(X, t, pred), rtol=1e-12, atol=1e-12), (pred, t)
    # predict with another type than the model's
    other = "x0" if pred != "x0" else "score"
    assert np.allclose(m.predict(X, 0.4, other), oracle(X, 0.4, other), rtol=1e-12, atol=1e-12)
    assert np.allclose(m.predict(X, 0.4, None), oracle(X, 0.4, pred), rtol=1e-12, atol=1e-12)
    assert m.n_calls == 4


@pytest.mark.parametrize("pred", PREDICTIONS)
def test_per_sample_times_with_a_mixture_target(pred):
    """A one-component mixture is the same law; t of the batch shape, one row per time."""
    gm = GaussianMixture([1.0], MU[None], SIG[None])
    m = ExactModel(gm, SCH, prediction=pred)
    t = np.array([0.1, 0.3, 0.6, 0.9])
    got = m(X, t)
    assert got.shape == X.shape
    for i in range(4):
        ref = oracle(X[i : i + 1], t[i], pred)[0]
        assert np.allclose(got[i], ref, rtol=1e-10, atol=1e-12), (pred, i)
    # (2, 2) batch of points with (2, 2) times
    x4 = X.reshape(2, 2, 3)
    got = m(x4, t.reshape(2, 2))
    assert got.shape == (2, 2, 3)
    assert np.allclose(got[1, 0], oracle(X[2:3], t[2], pred)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pred", PREDICTIONS)
def test_a_single_point_of_shape_d(pred):
    """x of shape (d,) (documented: (..., d)) gives a prediction of shape (d,)."""
    m = ExactModel(Gaussian(MU, SIG), SCH, prediction=pred)
    got = m(X[1], 0.6)
    assert got.shape == (3,)
    assert np.allclose(got, oracle(X[1:2], 0.6, pred)[0], rtol=1e-12, atol=1e-12)


def test_perturbations_exactly():
    g = Gaussian(MU, SIG)
    bias = np.array([0.1, -0.2, 0.3])
    m = ExactModel(g, SCH, prediction="x0", bias=bias, scale=1.5)
    assert not m.exact
    assert np.allclose(m(X, 0.4), 1.5 * oracle(X, 0.4, "x0") + bias, rtol=1e-12, atol=1e-12)
    m = ExactModel(g, SCH, prediction="eps", scale=0.5, bias=0.25, noise_std=0.3, rng=7)
    z = np.random.default_rng(7).standard_normal(X.shape)
    ref = 0.5 * oracle(X, 0.4, "eps") + 0.25 + 0.3 * z
    assert np.allclose(m(X, 0.4), ref, rtol=1e-12, atol=1e-12)
    # noise only: the exact prediction plus noise_std z
    m = ExactModel(g, SCH, prediction="eps", noise_std=0.3, rng=np.random.default_rng(9))
    z = np.random.default_rng(9).standard_normal(X.shape)
    assert np.allclose(m(X, 0.4), oracle(X, 0.4, "eps") + 0.3 * z, rtol=1e-12, atol=1e-12)
    # each perturbation alone makes the model inexact; the defaults do not
    assert ExactModel(g, SCH).exact
    assert not ExactModel(g, SCH, scale=2.0).exact
    assert not ExactModel(g, SCH, bias=[0.0, 0.0, 1e-3]).exact
    assert not ExactModel(g, SCH, noise_std=0.1).exact
    assert ExactModel(g, SCH, bias=[0.0, 0.0, 0.0]).exact


def test_repr():
    g = Gaussian(MU, SIG)
    assert repr(ExactModel(g, SCH, prediction="v")) == (
        "ExactModel(Gaussian(d=3), VPLinear(beta_min=0.3, beta_max=7.0), prediction='v')"
    )
    assert repr(ExactModel(g, SCH, scale=2.0)) == (
        "ExactModel(Gaussian(d=3), VPLinear(beta_min=0.3, beta_max=7.0), prediction='eps', "
        "perturbed)"
    )


def test_messages():
    g = Gaussian(MU, SIG)
    with pytest.raises(TypeError) as e:
        ExactModel(g, "vp")
    assert str(e.value) == "schedule must be a Schedule, got str"

    class NoScore:
        d = 3

        def denoise(self, x, a, s): ...

        def eps(self, x, a, s): ...

    with pytest.raises(TypeError) as e:
        ExactModel(NoScore(), SCH)
    assert str(e.value) == "target must provide score(x, alpha, sigma), got NoScore"

    class NoDenoise:
        d = 3

        def eps(self, x, a, s): ...

        def score(self, x, a, s): ...

    with pytest.raises(TypeError) as e:
        ExactModel(NoDenoise(), SCH)
    assert str(e.value) == "target must provide denoise(x, alpha, sigma), got NoDenoise"
    with pytest.raises(ValueError) as e:
        ExactModel(g, SCH, prediction="noise")
    assert str(e.value) == (
        "prediction must be one of ['eps', 'score', 'v', 'velocity', 'x0'], got 'noise'"
    )
    with pytest.raises(ValueError) as e:
        ExactModel(g, SCH, bias=np.zeros(2))
    assert str(e.value) == "bias must be a scalar or shape (3,), got (2,)"
    with pytest.raises(ValueError) as e:
        ExactModel(g, SCH, bias=np.zeros((1, 3)))
    assert str(e.value) == "bias must be a scalar or shape (3,), got (1, 3)"
    with pytest.raises(ValueError, match=r"^bias must be finite, got nan"):
        ExactModel(g, SCH, bias=np.nan)
    with pytest.raises(ValueError, match=r"^scale must be finite, got inf"):
        ExactModel(g, SCH, scale=np.inf)
    with pytest.raises(ValueError, match=r"^noise_std must be >= 0, got -0.1$"):
        ExactModel(g, SCH, noise_std=-0.1)
    with pytest.raises(ValueError, match=r"^rng must be an int seed >= 0"):
        ExactModel(g, SCH, rng=-1)
    m = ExactModel(g, SCH)
    with pytest.raises(ValueError) as e:
        m.predict(X, 0.5, "noise")
    assert str(e.value) == (
        "prediction must be one of ['eps', 'score', 'v', 'velocity', 'x0'], got 'noise'"
    )
    with pytest.raises(ValueError) as e:
        m(np.zeros((4, 2)), 0.5)
    assert str(e.value) == "x must have shape (..., d) with d = 3, got (4, 2)"
    with pytest.raises(ValueError) as e:
        m(np.zeros(()), 0.5)
    assert str(e.value) == "x must have shape (..., d) with d = 3, got ()"
    with pytest.raises(ValueError, match=r"^x must be finite, got nan"):
        m(np.full((1, 3), np.nan), 0.5)
    with pytest.raises(ValueError, match=r"^t must lie in \[0.0, 1.0\], got 1.5$"):
        m(X, 1.5)
    gm = ExactModel(g.as_mixture(), SCH)
    with pytest.raises(ValueError) as e:
        gm(X, np.array([0.1, 0.2]))
    assert str(e.value) == "t must be a scalar or have the batch shape of x (4,), got (2,)"
    with pytest.raises(ValueError) as e:
        gm(X[:4].reshape(2, 2, 3), np.array([0.1, 0.2]))
    assert str(e.value) == "t must be a scalar or have the batch shape of x (2, 2), got (2,)"
    with pytest.raises(ValueError) as e:
        m(X, np.array([0.1, 0.2, 0.3, 0.4]))
    assert str(e.value) == "a per-sample t needs a mixture target; Gaussian takes a scalar t"
    assert m.n_calls == 0  # a rejected call is not counted
