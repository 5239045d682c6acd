"""Issue 22, inputs: the torch twin validates as the reference does, on the same bad inputs. The
landed twin accepted a boolean alpha or sigma (as 1.0) and a covariance that is not positive
definite (its negative eigenvalue clipped to 0, silently)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_oracle.reference.targets import GaussianMixture, get_target

torch = pytest.importorskip("torch")
from diffusion_oracle.accelerated.targets import TorchMixture  # noqa: E402


def _outcome(fn):
    try:
        fn()
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc).split()[0]  # the class and the argument it names first
    return None, None


BOOLS = [True, np.bool_(False), np.array([True]), [True, False]]


@pytest.mark.parametrize("which", ["alpha", "sigma"])
@pytest.mark.parametrize("value", BOOLS, ids=repr)
def test_boolean_levels_are_rejected_alike(which, value):
    gm = get_target("ring8")
    tm = TorchMixture.from_reference(gm, device="cpu")
    x = np.zeros((2 if isinstance(value, list) else 1, 2))
    kw = {"alpha": 0.8, "sigma": 0.6, which: value}
    ref = _outcome(lambda: gm.score(x, kw["alpha"], kw["sigma"]))
    tw = _outcome(lambda: tm.score(torch.as_tensor(x), kw["alpha"], kw["sigma"]))
    assert ref == tw == (TypeError, which), (ref, tw)
    if not isinstance(value, list):
        tv = torch.as_tensor(np.asarray(value))
        kw[which] = tv
        assert _outcome(lambda: tm.score(torch.as_tensor(x), kw["alpha"], kw["sigma"])) == ref


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1.0, 1.0), min_size=4, max_size=4), st.floats(0.01, 2.0),
       st.sampled_from(["negative", "zero", "asymmetric"]))  # fmt: skip
def test_bad_covariances_are_rejected_alike(entries, bad, kind):
    a = np.array(entries).reshape(2, 2)
    q, _ = np.linalg.qr(a + 3 * np.eye(2))
    lam = {"negative": [-bad, 1.0], "zero": [0.0, 1.0], "asymmetric": [bad, 1.0]}[kind]
    S = q @ np.diag(lam) @ q.T
    if kind == "asymmetric":
        S = S + np.array([[0.0, 1e-3], [0.0, 0.0]])
    covs = S[None]
    ref = _outcome(lambda: GaussianMixture([1.0], [[0.0, 0.0]], covs))
    tw = _outcome(lambda: TorchMixture([1.0], [[0.0, 0.0]], covs))
    assert ref[0] is ValueError and ref == tw, (kind, ref, tw)


@pytest.mark.parametrize("ct,covs", [("diag", [[1.0, 0.0]]), ("diag", [[1.0, -2.0]]),
                                     ("iso", [0.0]), ("iso", [-1.0])])  # fmt: skip
def test_non_positive_variances_are_rejected_alike(ct, covs):
    ref = _outcome(lambda: GaussianMixture([1.0], [[0.0, 0.0]], covs, covariance_type=ct))
    tw = _outcome(lambda: TorchMixture([1.0], [[0.0, 0.0]], covs, covariance_type=ct))
    assert ref[0] is ValueError and ref == tw, (ref, tw)


def test_a_conditioned_singular_mixture_still_reaches_the_twin():
    gm = get_target("ring8")
    cond = gm.condition(np.array([[1.0, 0.0]]), np.array([0.5]))
    tm = TorchMixture.from_reference(cond, device="cpu")
    x = np.array([[0.4, 0.3]])
    np.testing.assert_allclose(tm.score(torch.as_tensor(x), 0.8, 0.6).numpy(),
                               cond.score(x, 0.8, 0.6), rtol=1e-10)  # fmt: skip
