"""Issue 22, inputs: an empty batch (0, d) is valid input. Every mixture quantity (reference and
torch twin), the exact model and every built-in sampler return an empty result of the shape a
one-point batch has without its batch axis; the landed code raised KeyError (reference) or a
torch.cat error (torch twin)."""

import numpy as np
import pytest

from diffusion_oracle.reference.grids import make_grid
from diffusion_oracle.reference.model import ExactModel
from diffusion_oracle.reference.samplers import BUILTIN_SAMPLERS
from diffusion_oracle.reference.schedules import Flow, VPLinear
from diffusion_oracle.reference.targets import get_target

QUANTITIES = ("log_prob", "score", "denoise", "eps", "laplacian", "responsibilities",
              "posterior_cov", "posterior_cov_trace", "eps_cov_trace")  # fmt: skip


@pytest.mark.parametrize("name", ["ring8", "aniso64", "bimodal1d"])
def test_reference_mixture_quantities_on_an_empty_batch(name):
    gm = get_target(name)
    for q in QUANTITIES:
        one = np.asarray(getattr(gm, q)(gm.means[:1], 0.8, 0.6))
        empty = np.asarray(getattr(gm, q)(np.zeros((0, gm.d)), 0.8, 0.6))
        assert empty.shape == (0,) + one.shape[1:], (q, empty.shape, one.shape)


@pytest.mark.parametrize("name", ["ring8", "aniso64", "bimodal1d"])
def test_torch_mixture_quantities_on_an_empty_batch(name):
    torch = pytest.importorskip("torch")
    from diffusion_oracle.accelerated.targets import TorchMixture

    gm = get_target(name)
    tm = TorchMixture.from_reference(gm, device="cpu")
    for q in ("log_prob", "score", "denoise", "eps", "laplacian", "responsibilities"):
        one = getattr(tm, q)(torch.as_tensor(gm.means[:1]), 0.8, 0.6)
        empty = getattr(tm, q)(torch.zeros((0, gm.d), dtype=torch.float64), 0.8, 0.6)
        assert tuple(empty.shape) == (0,) + tuple(one.shape[1:]), q
        ref = np.asarray(getattr(gm, q)(np.zeros((0, gm.d)), 0.8, 0.6))
        assert tuple(empty.shape) == ref.shape, q


def _schedule_and_prediction(name):
    return (Flow(), "velocity") if name.startswith("flow") else (VPLinear(), "eps")


@pytest.mark.parametrize("name", sorted(BUILTIN_SAMPLERS()))
def test_reference_samplers_on_an_empty_batch(name):
    sampler = BUILTIN_SAMPLERS()[name]
    sch, pred = _schedule_and_prediction(name)
    model = ExactModel(get_target("ring8"), sch, prediction=pred)
    assert model(np.zeros((0, 2)), 0.5).shape == (0, 2)
    out = sampler(model, np.zeros((0, 2)), make_grid(sch, 8), rng=np.random.default_rng(0))
    assert np.asarray(out).shape == (0, 2)


@pytest.mark.parametrize("name", sorted(BUILTIN_SAMPLERS()))
def test_torch_samplers_on_an_empty_batch(name):
    torch = pytest.importorskip("torch")
    from diffusion_oracle.accelerated.model import TorchExactModel
    from diffusion_oracle.accelerated.samplers import torch_sampler
    from diffusion_oracle.accelerated.schedules import torch_schedule
    from diffusion_oracle.accelerated.targets import TorchMixture

    sampler = torch_sampler(BUILTIN_SAMPLERS()[name])
    if sampler is None:
        pytest.skip(f"{name} has no torch counterpart")
    sch, pred = _schedule_and_prediction(name)
    model = TorchExactModel(TorchMixture.from_reference(get_target("ring8"), device="cpu"),
                            torch_schedule(sch), prediction=pred)  # fmt: skip
    out = sampler(model, np.zeros((0, 2)), make_grid(sch, 8), rng=np.random.default_rng(0))
    assert np.asarray(out).shape == (0, 2)
    assert torch.is_tensor(sampler(model, torch.zeros((0, 2)), make_grid(sch, 8),
                                   rng=np.random.default_rng(0)))  # fmt: skip
