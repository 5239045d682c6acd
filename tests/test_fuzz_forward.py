"""Fuzz suite (issue 22, inputs), forward process and posterior: reference.forward (marginal,
transition, ddpm_step_kernel, sample_marginal, GaussianKernel and its methods, the rng argument),
reference.posterior (posterior, ddpm_posterior, PosteriorCoefficients.mean/sample) and the torch
twin's accelerated.model (forward_sample, posterior_coefficients, to_x0_eps, from_x0_eps,
TorchExactModel). Valid input gives finite results of the documented shape; one invalid argument
gives a ValueError/TypeError naming it, its constraint and the value; the reference and the twin
reject alike. Machinery and catalogues: tests/fuzz_api.py."""

import numpy as np
import pytest
from fuzz_api import (
    BOOL,
    NONE,
    VALID_EXAMPLES,
    Arg,
    Bad,
    Spec,
    bad_points,
    choice_of,
    expect_rejected,
    expect_valid,
    fuzz_settings,
    outcome,
    params,
    points,
    real_scalar,
    shape_of,
)
from hypothesis import given
from hypothesis import strategies as st

from diffusion_oracle.reference import (
    EDM,
    DiscreteSchedule,
    Flow,
    GaussianKernel,
    VPCosine,
    VPLinear,
    ddpm_posterior,
    ddpm_step_kernel,
    from_x0_eps,
    marginal,
    posterior,
    rescale_zero_terminal_snr,
    ring8,
    sample_marginal,
    to_x0_eps,
    transition,
)

torch = pytest.importorskip("torch")
from diffusion_oracle.accelerated import model as tm  # noqa: E402
from diffusion_oracle.accelerated.schedules import torch_schedule  # noqa: E402
from diffusion_oracle.accelerated.targets import TorchMixture  # noqa: E402

D = 3
VP = VPLinear()
DISC = DiscreteSchedule.cosine(20)
ZERO_SNR = rescale_zero_terminal_snr(DiscreteSchedule.linear(10))
SCHEDS = [VP, VPCosine(), EDM(), Flow(), DISC, ZERO_SNR]
TWINS = [torch_schedule(s) for s in SCHEDS]

_t_bad = real_scalar(0.0, 1.0, scalar_only=False)[1] + [
    Bad(np.array([0.5, 1.5]), ("1.5",), "an entry above 1"),
    Bad(np.array([True, False]), ("bool",), "bool array")]  # fmt: skip
_ref_sched_bad = [Bad("vp-linear", ("str",), "a name"), NONE,
                  Bad(torch_schedule(VP), ("TorchVPLinear",), "a torch schedule")]  # fmt: skip
_torch_sched_bad = [Bad("vp-linear", ("str",), "a name"), NONE,
                    Bad(VP, ("VPLinear",), "a reference schedule")]  # fmt: skip
_disc_bad = [Bad(VP, ("VPLinear",), "continuous"), Bad("ddpm", ("str",), "a name"), NONE]
_rng_bad = [BOOL, Bad(-1, ("-1",), "negative seed"), Bad(2.5, ("float", "2.5"), "float seed"),
            Bad("0", ("str", "'0'"), "str seed"), Bad([1, 2], ("list",), "a list")]  # fmt: skip
_rng_valid = st.one_of(st.none(), st.integers(0, 2**40),
                       st.integers(0, 99).map(np.random.default_rng))  # fmt: skip
# a point set of any shape is valid for the kernels (they act coordinate-wise)
_x_bad = [b for b in bad_points(D) if b.why not in ("wrong d", "a scalar")]


def _n_bad(T):
    return [Bad(0, ("0",), "0 (no step into the data)"), Bad(T + 1, (str(T + 1),), "above T"),
            Bad(-3, ("-3",), "negative"), Bad(2.5, ("float", "2.5"), "float"),
            BOOL, Bad("3", ("str", "'3'"), "str"), NONE,
            Bad(np.array([1, T + 5]), (str(T + 5),), "an entry above T")]  # fmt: skip


@st.composite
def _pair_kwargs(draw, scheds, n=None):
    """(schedule, s, t) with s < t, scalars or arrays of 3."""
    sch = draw(st.sampled_from(scheds))
    if n is None and draw(st.booleans()):
        s = draw(st.floats(0.0, 0.95))
        return {"schedule": sch, "s": s, "t": draw(st.floats(s, 1.0).filter(lambda v: v > s))}
    s = np.array([draw(st.floats(0.0, 0.95)) for _ in range(3)])
    t = np.array([draw(st.floats(v, 1.0).filter(lambda w, v=v: w > v)) for v in s])
    return {"schedule": sch, "s": s, "t": t}


def _pair_base(scheds):
    return st.fixed_dictionaries({"schedule": st.sampled_from(scheds),
                                  "s": st.floats(0.05, 0.3), "t": st.floats(0.6, 0.9)})


_order_bad = [Bad(0.95, ("0.95",), "s after t"), Bad(np.full(7, 0.1), ("(7,)",), "no broadcast")]
_pair_args = [Arg("s", st.none(), _t_bad + _order_bad[:1]),
              Arg("t", st.none(), _t_bad + [Bad(0.01, ("0.01",), "t before s")])]  # fmt: skip


def _coef_shape(out, kw):
    want = np.broadcast_shapes(np.shape(kw["s"]), np.shape(kw["t"]))
    for v in out if isinstance(out, tuple) else (out.mean_coef if hasattr(out, "mean_coef")
                                                 else out.coef_x0,):  # fmt: skip
        assert shape_of(v) == want, (shape_of(v), want)


@st.composite
def _sample_kwargs(draw):
    x0 = np.asarray(draw(points(D)), dtype=np.float64)
    t = draw(st.one_of(st.floats(0.0, 1.0),
                       st.just(None).map(lambda _: np.full(x0.shape[0], 0.5))))  # fmt: skip
    noise = draw(st.sampled_from([None, "z"]))
    return {"schedule": draw(st.sampled_from(SCHEDS)), "t": t, "x0": x0,
            "rng": draw(_rng_valid),
            "noise": None if noise is None else np.ones_like(x0)}  # fmt: skip


KERNEL = marginal(VP, 0.4)
BATCH_KERNEL = marginal(VP, np.array([0.2, 0.5, 0.9]))  # coefficients over a batch of 3
POST = posterior(VP, 0.3, 0.6)


@st.composite
def _xy(draw, names=("x",), n=None):
    x = np.asarray(draw(points(D)), dtype=np.float64)
    if n is not None:
        x = np.random.default_rng(draw(st.integers(0, 99))).standard_normal((n, D))
    out = {names[0]: x}
    for nm in names[1:]:
        out[nm] = x + 0.5
    return out


def _same_shape(out, kw):
    want = np.shape(kw["x"] if "x" in kw else kw["x0"])
    assert shape_of(out) == want, (shape_of(out), want)


_shape_bad = Bad(np.zeros((2, D + 1)), ("(2, 4)",), "not the other's shape")
REFERENCE = [
    Spec("marginal", lambda **kw: marginal(**kw),
         [Arg("schedule", st.sampled_from(SCHEDS), _ref_sched_bad),
          Arg("t", st.floats(0.0, 1.0), _t_bad)]),  # fmt: skip
    Spec("transition", lambda **kw: transition(**kw),
         [Arg("schedule", st.none(), _ref_sched_bad)] + _pair_args, check=_coef_shape,
         valid=_pair_kwargs(SCHEDS), base=_pair_base(SCHEDS)),  # fmt: skip
    Spec("posterior", lambda **kw: posterior(**kw),
         [Arg("schedule", st.none(), _ref_sched_bad)] + _pair_args, check=_coef_shape,
         valid=_pair_kwargs(SCHEDS), base=_pair_base(SCHEDS), finite_output=False),  # fmt: skip
    Spec("ddpm_step_kernel", lambda **kw: ddpm_step_kernel(**kw),
         [Arg("schedule", st.just(DISC), _disc_bad), Arg("n", st.integers(1, 20), _n_bad(20))]),
    Spec("ddpm_posterior", lambda **kw: ddpm_posterior(**kw),
         [Arg("schedule", st.just(DISC), _disc_bad), Arg("n", st.integers(2, 20), _n_bad(20)),
          Arg("variance", st.sampled_from(["fixed_small", "fixed_large"]),
              choice_of(["fixed_small", "fixed_large"])[1])]),  # fmt: skip
    Spec("sample_marginal", lambda **kw: sample_marginal(**kw),
         [Arg("schedule", st.none(), _ref_sched_bad), Arg("t", st.none(), _t_bad[:-2]),
          Arg("x0", st.none(), _x_bad), Arg("rng", st.none(), _rng_bad),
          Arg("noise", st.none(), [Bad(np.zeros((1, 2)), ("(1, 2)",), "wrong shape"),
                                   Bad(np.full((2, 2), np.nan), ("nan",), "NaN")])],
         valid=_sample_kwargs(),
         base=_sample_kwargs().filter(lambda kw: kw["noise"] is None and len(kw["x0"]) > 0
                                      and np.ndim(kw["t"]) == 0)),  # fmt: skip
    Spec("GaussianKernel", lambda **kw: GaussianKernel(**kw),
         [Arg("mean_coef", st.floats(0.0, 1.0), real_scalar(scalar_only=False)[1]),
          Arg("var", st.floats(0.0, 2.0), real_scalar(0.0, scalar_only=False)[1])],
         finite_output=False),  # fmt: skip
    Spec("GaussianKernel.mean", lambda x: KERNEL.mean(x), [Arg("x", points(D), _x_bad)],
         check=_same_shape),  # fmt: skip
    Spec("GaussianKernel.mean[batch]", lambda x: BATCH_KERNEL.mean(x),
         [Arg("x", _xy(n=3).map(lambda kw: kw["x"]), _x_bad[:2] + [_shape_bad])],
         check=_same_shape),  # fmt: skip
    Spec("GaussianKernel.sample", lambda x, rng: KERNEL.sample(x, rng),
         [Arg("x", points(D), _x_bad), Arg("rng", _rng_valid, _rng_bad)], check=_same_shape),
    Spec("GaussianKernel.log_prob", lambda x, y: KERNEL.log_prob(y, x),
         [Arg("x", st.none(), _x_bad[:2] + [_shape_bad]),
          Arg("y", st.none(), _x_bad[:2] + [_shape_bad])], valid=_xy(("x", "y")),
         check=lambda out, kw: shape_of(out) == np.shape(kw["x"])[:-1]),  # fmt: skip
    Spec("PosteriorCoefficients.mean", lambda x0, x_t: POST.mean(x0, x_t),
         [Arg("x0", st.none(), _x_bad[:2] + [_shape_bad]),
          Arg("x_t", st.none(), _x_bad[:2] + [_shape_bad])], valid=_xy(("x0", "x_t")),
         check=_same_shape),  # fmt: skip
    Spec("PosteriorCoefficients.sample", lambda x0, x_t, rng: POST.sample(x0, x_t, rng),
         [Arg("x0", st.none(), _x_bad[:2]), Arg("x_t", st.none(), _x_bad[:2] + [_shape_bad]),
          Arg("rng", st.none(), _rng_bad)],
         valid=st.tuples(_xy(("x0", "x_t")), _rng_valid).map(lambda p: {**p[0], "rng": p[1]}),
         check=_same_shape),  # fmt: skip
]

# ---------------------------------------------------------------------------- the torch twin

RING = ring8()
TMIX = TorchMixture.from_reference(RING, device="cpu")


@st.composite
def _fs_kwargs(draw):
    x0 = np.asarray(draw(points(D)), dtype=np.float64)
    t = draw(st.one_of(st.floats(0.0, 1.0),
                       st.just(None).map(lambda _: np.full(x0.shape[0], 0.5))))  # fmt: skip
    return {"schedule": draw(st.sampled_from(TWINS)), "x0": x0, "t": t,
            "noise": np.ones_like(x0)}  # fmt: skip


@st.composite
def _predict_kwargs(draw):
    x = draw(points(2))
    n = np.shape(x)[0]
    t = draw(st.one_of(st.floats(1e-3, 1.0), st.just(np.full(n, 0.5))))
    return {"x": x, "t": t,
            "prediction": draw(st.sampled_from([None, "eps", "x0", "v", "score", "velocity"]))}


_tmodel = tm.TorchExactModel(TMIX, torch_schedule(VP))
TORCH = [
    Spec("torch.forward_sample", lambda **kw: tm.forward_sample(**kw),
         [Arg("schedule", st.none(), _torch_sched_bad), Arg("t", st.none(), _t_bad[:-2]),
          Arg("x0", st.none(), _x_bad),
          Arg("noise", st.none(), [Bad(np.zeros((1, 2)), ("(1, 2)",), "wrong shape"),
                                   Bad(np.full((2, 2), np.nan), ("nan",), "NaN")])],
         valid=_fs_kwargs(), base=_fs_kwargs().filter(lambda kw: len(kw["x0"]) > 0
                                                      and np.ndim(kw["t"]) == 0)),  # fmt: skip
    Spec("torch.posterior_coefficients", lambda **kw: tm.posterior_coefficients(**kw),
         [Arg("schedule", st.none(), _torch_sched_bad)] + _pair_args, check=_coef_shape,
         valid=_pair_kwargs(TWINS), base=_pair_base(TWINS)),  # fmt: skip
    Spec("TorchExactModel", lambda **kw: tm.TorchExactModel(**kw),
         [Arg("target", st.just(TMIX), [Bad(RING, ("GaussianMixture",), "a reference target"),
                                        NONE]),
          Arg("schedule", st.just(torch_schedule(VP)), _torch_sched_bad),
          Arg("prediction", st.sampled_from(list(tm.PREDICTIONS)),
              choice_of(tm.PREDICTIONS)[1] + [Bad(["eps"], ("['eps']",), "a list")])],
         finite_output=False),  # fmt: skip
    Spec("TorchExactModel.predict", lambda **kw: _tmodel.predict(**kw),
         [Arg("x", st.none(), bad_points(2)),
          Arg("t", st.none(), _t_bad + [Bad(np.full(7, 0.5), ("(7,)",), "not the batch shape")]),
          Arg("prediction", st.none(), choice_of(tm.PREDICTIONS)[1][:-2])],
         valid=_predict_kwargs(), check=lambda out, kw: shape_of(out) == np.shape(kw["x"]),
         base=_predict_kwargs().filter(lambda kw: np.ndim(kw["t"]) == 0)),  # fmt: skip
]


@st.composite
def _conv_kwargs(draw, fn):
    x = draw(points(D, scale=2.0))
    n = np.shape(x)[0]
    val = np.random.default_rng(n).standard_normal((n, D))
    kw = {"alpha": draw(st.floats(0.05, 1.0)), "sigma": draw(st.floats(0.05, 1.0)),
          "d_alpha": draw(st.floats(-5, -0.1)), "d_sigma": draw(st.floats(0.1, 5))}  # fmt: skip
    preds = list(tm.PREDICTIONS)
    if fn == "from_x0_eps":
        kw.update(x0=x, eps=val, target=draw(st.sampled_from(preds)))
    else:
        kw.update(value=val, x_t=x, source=draw(st.sampled_from(preds)))
    return kw


def _conv_specs(name, ref_fn, torch_fn, arrays, names):
    lvl_bad = real_scalar(0.0, scalar_only=False)[1]
    d_bad = real_scalar(scalar_only=False)[1]
    shape_bad = Bad(np.full(7, 0.5), ("(7,)",), "not the leading shape (n <= 6)")
    args = [Arg(a, st.none(), bad_points(D)[:-1]) for a in arrays]
    args += [Arg(a, st.none(), choice_of(tm.PREDICTIONS)[1]) for a in names]
    args += [Arg(a, st.none(), lvl_bad + [shape_bad]) for a in ("alpha", "sigma")]
    args += [Arg(a, st.none(), d_bad + [shape_bad]) for a in ("d_alpha", "d_sigma")]
    valid = _conv_kwargs(name)
    # the derivatives matter for the velocity only: an invalid one is tested where it is used
    base = valid.filter(lambda kw: "velocity" in (kw.get("source"), kw.get("target")))

    def check(out, kw):
        for arr in out if isinstance(out, tuple) else (out,):
            assert shape_of(arr) == np.shape(kw.get("x_t", kw.get("x0"))), (name, kw)

    return [Spec(f"{impl}.{name}", fn, args, check=check, valid=valid, base=base)
            for impl, fn in (("reference", ref_fn), ("torch", torch_fn))]  # fmt: skip


CONV = [*_conv_specs("to_x0_eps", lambda **kw: to_x0_eps(**kw), lambda **kw: tm.to_x0_eps(**kw),
                     ["value", "x_t"], ["source"]),
        *_conv_specs("from_x0_eps", lambda **kw: from_x0_eps(**kw),
                     lambda **kw: tm.from_x0_eps(**kw), ["x0", "eps"], ["target"])]  # fmt: skip
TABLES = REFERENCE + TORCH + CONV


@pytest.mark.parametrize("spec", TABLES, ids=lambda s: s.id)
@fuzz_settings(VALID_EXAMPLES)
@given(data=st.data())
def test_valid_calls(spec, data):
    expect_valid(spec, data.draw(spec.valid_kwargs()))


@pytest.mark.parametrize("spec,name", params(TABLES))
@fuzz_settings()
@given(data=st.data())
def test_invalid_argument_is_named(spec, name, data):
    expect_rejected(spec, data.draw(spec.base_kwargs()), name, data.draw(spec.arg(name).bad()))


@pytest.mark.parametrize("name", ["s", "t"])
@fuzz_settings()
@given(data=st.data())
def test_posterior_rejected_alike(name, data):
    i = data.draw(st.integers(0, len(SCHEDS) - 1))
    kw = {"s": data.draw(st.floats(0.05, 0.3)), "t": data.draw(st.floats(0.6, 0.9))}
    kw[name] = data.draw(st.sampled_from(REFERENCE[2].arg(name).invalid)).value
    r = outcome(posterior, SCHEDS[i], **kw)
    t = outcome(tm.posterior_coefficients, TWINS[i], **kw)
    assert r[0] is not None and r[0] is t[0], (name, kw, r, t)
    assert name in t[1], t


@pytest.mark.parametrize("fn", ["to_x0_eps", "from_x0_eps"])
@fuzz_settings()
@given(data=st.data())
def test_conversions_rejected_alike(fn, data):
    ref = next(s for s in CONV if s.id == f"reference.{fn}")
    tw = next(s for s in CONV if s.id == f"torch.{fn}")
    arg = data.draw(st.sampled_from(ref.args))
    kw = data.draw(ref.base_kwargs())
    bad = data.draw(arg.bad())
    kw[arg.name] = bad.value
    r, t = outcome(ref.fn, **kw), outcome(tw.fn, **kw)
    assert r[0] is not None and r[0] is t[0], (fn, arg.name, bad, r, t)
    assert arg.name in t[1], (fn, arg.name, t)
