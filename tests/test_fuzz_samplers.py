"""Fuzz suite (issue 22, inputs), samplers and what they run on: the built-in samplers'
constructors and calls (reference and torch twin, rejecting alike), guidance and inpainting
wrappers, grids (make_grid, respaced_grid, Grid, TorchGrid), the exact model, DDIM inversion,
prediction conversions and the training-time samplers. Machinery: tests/fuzz_api.py."""

import numpy as np
import pytest
from fuzz_api import (
    BOOL,
    NAN,
    NONE,
    VALID_EXAMPLES,
    Arg,
    Bad,
    Spec,
    bad_points,
    boolean,
    choice_of,
    expect_rejected,
    expect_valid,
    fuzz_settings,
    integer,
    outcome,
    params,
    points,
    real_scalar,
    shape_of,
)
from hypothesis import given
from hypothesis import strategies as st

from diffusion_oracle.reference import (
    DiscreteSchedule,
    ExactModel,
    Flow,
    LogitNormalTimesteps,
    LogSNRTimesteps,
    UniformTimesteps,
    VPLinear,
    convert,
    from_x0_eps,
    ring8,
    to_x0_eps,
)
from diffusion_oracle.reference import samplers as rs
from diffusion_oracle.reference.grids import Grid, make_grid, respaced_grid
from diffusion_oracle.reference.guidance import CFG, ClassifierGuidance, Replacement

torch = pytest.importorskip("torch")
from diffusion_oracle.accelerated import samplers as ts  # noqa: E402
from diffusion_oracle.accelerated.model import TorchExactModel  # noqa: E402
from diffusion_oracle.accelerated.schedules import torch_schedule  # noqa: E402
from diffusion_oracle.accelerated.targets import TorchMixture  # noqa: E402

VP, FLOW, DISC = VPLinear(), Flow(), DiscreteSchedule.linear(100)
RING = ring8()

# ---------------------------------------------------------------------------- constructors

_nonneg = real_scalar(0.0)
_unit = real_scalar(0.0, 1.0)
_finite = real_scalar(valid=st.floats(0.0, 100.0))
_tmax_valid, _tmax_bad = real_scalar(0.0, allow_inf=True, valid=st.floats(0.0, 100.0))
_positive = real_scalar(0.0, lo_open=True, valid=st.floats(1e-12, 1e-3))
_var = ["fixed_small", "fixed_large", "learned_range"]


def _order_bad(options):
    hi = max(options)
    return [BOOL, Bad(2.0, ("2.0", "float"), "float"), Bad(hi + 1, (str(hi + 1),), "too large"),
            Bad(0, ("0",), "zero"), Bad("2", ("'2'", "str"), "str"), NONE]  # fmt: skip


def _ctor(cls_name, args, ref_only=()):
    """Specs of reference and torch constructors of one sampler class (torch without the
    arguments named in ref_only)."""
    out = []
    for impl, mod in (("reference", rs), ("torch", ts)):
        use = [a for a in args if impl == "reference" or a.name not in ref_only]
        cls = getattr(mod, cls_name)
        out.append(Spec(f"{impl}.{cls_name}", lambda _c=cls, **kw: _c(**kw), use,
                        finite_output=False))  # fmt: skip
    return out


CTORS = [
    *_ctor("DDPM", [Arg("variance", st.sampled_from(_var), choice_of(_var)[1]),
                    Arg("v", _unit[0], _unit[1]),
                    Arg("n_mc", st.integers(1, 50), integer(1)[1])], ref_only=("n_mc",)),
    *_ctor("DDIM", [Arg("eta", st.floats(0.0, 1.0), _nonneg[1])]),
    *_ctor("EDMStochastic", [Arg("S_churn", st.floats(0, 80), _nonneg[1]),
                             Arg("S_tmin", st.floats(0, 1), _nonneg[1]),
                             Arg("S_tmax", _tmax_valid.map(lambda v: v + 1.0), _tmax_bad),
                             Arg("S_noise", st.floats(0, 2), _nonneg[1])]),
    *_ctor("DPMSolverPP3M", [Arg("variant", st.sampled_from(["corrected", "published"]),
                                 choice_of(["corrected", "published"])[1]),
                             Arg("warmup", st.sampled_from(["dpm-solver-3", "diffusers"]),
                                 choice_of(["dpm-solver-3", "diffusers", "k-diffusion"])[1])],
           ref_only=("warmup",)),
    *_ctor("UniPC", [Arg("order", st.sampled_from([1, 2]), _order_bad([1, 2])),
                     Arg("variant", st.sampled_from(["bh1", "bh2"]),
                         choice_of(["bh1", "bh2"])[1])]),
    *_ctor("LMS", [Arg("order", st.sampled_from([1, 2, 3, 4]), _order_bad([1, 2, 3, 4]))]),
    *_ctor("PredictorCorrector", [Arg("snr", st.floats(0, 1), _nonneg[1]),
                                  Arg("n_corrector", st.integers(0, 3), integer(0)[1]),
                                  Arg("variance", st.sampled_from(_var), choice_of(_var)[1])]),
    Spec("reference.ExactODE", lambda **kw: rs.ExactODE(**kw),
         [Arg("rtol", _positive[0], _positive[1]), Arg("atol", _positive[0], _positive[1])],
         finite_output=False),
    Spec("CFG", lambda **kw: CFG(**kw),
         [Arg("sampler", st.just(rs.DDIM()), [Bad("ddim", ("str",), "a name"), NONE]),
          Arg("label", st.integers(0, 7), [BOOL, Bad(1.5, ("1.5",), "float"),
                                           Bad("1", ("'1'", "str"), "str"), NONE]),
          Arg("w", st.floats(0, 10), [NAN, BOOL, Bad("2", ("str",), "str"), NONE]),
          Arg("negative", st.sampled_from([None, 0, 3]),
              [BOOL, Bad(0.5, ("0.5",), "float"), Bad("0", ("'0'", "str"), "str")])],
         finite_output=False),  # fmt: skip
    Spec("ClassifierGuidance", lambda **kw: ClassifierGuidance(**kw),
         [Arg("sampler", st.just(rs.Euler()), [Bad(3, ("int",), "a number")]),
          Arg("label", st.integers(0, 7), [BOOL, Bad(2.5, ("2.5",), "float"), NONE]),
          Arg("scale", st.floats(0, 10), [NAN, BOOL, Bad(float("inf"), ("inf",), "inf")])],
         finite_output=False),  # fmt: skip
    Spec("Replacement", lambda **kw: Replacement(**kw),
         [Arg("mask", st.just(np.array([True, False])),
              [Bad(np.array([0.5, 1.0]), ("0.5", "float"), "not boolean"),
               Bad(np.ones((2, 2), bool), ("(2, 2)",), "2-D"), Bad("x", ("str", "<U1"), "str")]),
          Arg("y", st.floats(-2, 2).map(lambda v: np.array([v])),
              [Bad(np.zeros(2), ("(2,)",), "wrong count"), Bad(np.array([np.nan]), ("nan",), "N")]),
          Arg("variance", st.sampled_from(_var), choice_of(_var)[1])], finite_output=False),
]


@pytest.mark.parametrize("spec", CTORS, ids=lambda s: s.id)
@fuzz_settings(VALID_EXAMPLES)
@given(data=st.data())
def test_valid_construction(spec, data):
    expect_valid(spec, data.draw(spec.valid_kwargs()))


@pytest.mark.parametrize("spec,name", params(CTORS))
@fuzz_settings()
@given(data=st.data())
def test_invalid_constructor_argument_is_named(spec, name, data):
    expect_rejected(spec, data.draw(spec.base_kwargs()), name, data.draw(spec.arg(name).bad()))


_PAIRS = sorted({s.id.split(".", 1)[1] for s in CTORS if s.id.startswith("torch.")})


@pytest.mark.parametrize("cls_name", _PAIRS)
@fuzz_settings()
@given(data=st.data())
def test_reference_and_torch_constructors_reject_alike(cls_name, data):
    ref = next(s for s in CTORS if s.id == f"reference.{cls_name}")
    tw = next(s for s in CTORS if s.id == f"torch.{cls_name}")
    arg = data.draw(st.sampled_from(tw.args))
    kw = data.draw(tw.valid_kwargs())
    kw[arg.name] = data.draw(arg.bad()).value
    r, t = outcome(ref.fn, **kw), outcome(tw.fn, **kw)
    assert r[0] is not None and r[0] is t[0], (cls_name, arg.name, kw[arg.name], r, t)


# ---------------------------------------------------------------------------- sampler calls

TM = TorchMixture.from_reference(RING, device="cpu")


def _model(impl, flow):
    sch, pred = (FLOW, "velocity") if flow else (VP, "eps")
    if impl == "reference":
        return ExactModel(RING, sch, prediction=pred)
    return TorchExactModel(TM, torch_schedule(sch), prediction=pred)


def _grid(flow, steps=4):
    return make_grid(FLOW if flow else VP, steps, "uniform", t_start=0.99 if flow else None)


class _NoPrediction:
    def __call__(self, x, t):
        return x


def _grid_bad():
    return [Bad("uniform", ("str",), "a grid name"), Bad(None, ("None",), "None"),
            Bad(np.linspace(1, 0.1, 5), ("ndarray",), "bare times")]  # fmt: skip


def _call_specs():
    out = []
    for name, sampler in sorted(rs.BUILTIN_SAMPLERS().items()):
        flow = name.startswith("flow")
        for impl, smp in (("reference", sampler), ("torch", ts.torch_sampler(sampler))):
            if smp is None:
                continue
            model = _model(impl, flow)

            def fn(model, x_init, grid, _s=smp):
                return _s(model, x_init, grid, rng=np.random.default_rng(0))

            def check(out, kw):
                assert shape_of(out) == (np.shape(kw["x_init"])[0], 2)

            out.append(Spec(
                f"{impl}.{name}", fn,
                [Arg("model", st.just(model),
                     [Bad(_NoPrediction(), ("prediction",), "no prediction attribute"),
                      Bad(None, ("None",), "None")]),
                 Arg("x_init", points(2, scale=1.0), bad_points(2)),
                 Arg("grid", st.just(_grid(flow)), _grid_bad())],
                check=check))  # fmt: skip
    return out


CALLS = _call_specs()


@pytest.mark.parametrize("spec", CALLS, ids=lambda s: s.id)
@fuzz_settings(max(3, VALID_EXAMPLES // 3))
@given(data=st.data())
def test_valid_sampler_call(spec, data):
    expect_valid(spec, data.draw(spec.valid_kwargs()))


@pytest.mark.parametrize("spec,name", params(CALLS))
@fuzz_settings(max(3, VALID_EXAMPLES // 3))
@given(data=st.data())
def test_invalid_sampler_argument_is_named(spec, name, data):
    expect_rejected(spec, data.draw(spec.base_kwargs()), name, data.draw(spec.arg(name).bad()))


# ---------------------------------------------------------------------------- grids, models

_steps_valid, _steps_bad = integer(2, valid=st.integers(2, 30))
_kinds = ["uniform", "log_snr", "karras"]
_t01 = real_scalar(0.0, 1.0)
_t01_some = [b for b in _t01[1] if b.value is not None]  # None: the default


@st.composite
def _make_grid_kwargs(draw):
    t_end = draw(st.floats(1e-3, 0.3))
    return {"schedule": VP, "steps": draw(_steps_valid), "kind": draw(st.sampled_from(_kinds)),
            "t_start": draw(st.one_of(st.none(), st.floats(t_end + 0.1, 1.0))),
            "t_end": t_end, "final_zero": draw(st.booleans()),
            "rho": draw(st.floats(0.5, 10.0))}  # fmt: skip


def _check_grid(out, kw):
    assert isinstance(out, Grid) and out.steps == kw["steps"], (out, kw)
    assert (np.diff(out.t) < 0).all()


_sched_bad = [Bad("vp-linear", ("str",), "a name"), Bad(None, ("None",), "None"),
              Bad(torch_schedule(VP), ("TorchVPLinear",), "a torch schedule")]  # fmt: skip

OTHERS = [
    Spec("make_grid", lambda **kw: make_grid(**kw),
         [Arg("schedule", st.none(), _sched_bad), Arg("steps", st.none(), integer(1)[1]),
          Arg("kind", st.none(), choice_of(_kinds)[1]),
          Arg("t_start", st.none(), _t01_some + [Bad(0.0, ("0.0",), "not after t_end")]),
          Arg("t_end", st.none(), _t01_some + [Bad(1.0, ("1.0",), "not before t_start")]),
          Arg("final_zero", st.none(), boolean()[1]),
          Arg("rho", st.none(), real_scalar(0.0, lo_open=True)[1])],
         check=_check_grid, valid=_make_grid_kwargs(), finite_output=False),  # fmt: skip
    Spec("respaced_grid", lambda **kw: respaced_grid(**kw),
         [Arg("schedule", st.just(DISC), _sched_bad[:2] + [Bad(VP, ("VPLinear",), "continuous")]),
          Arg("steps", st.integers(1, 100), integer(1)[1] + [Bad(101, ("101",), "above T")]),
          Arg("spacing", st.sampled_from(["leading", "trailing", "linspace"]),
              choice_of(["full", "leading", "trailing", "linspace"])[1]),
          Arg("steps_offset", st.just(0),
              [BOOL, Bad(1.5, ("1.5",), "float"), Bad("1", ("'1'", "str"), "str"),
               Bad(-5, ("-5",), "negative")])], finite_output=False),  # fmt: skip

    Spec("Grid", lambda **kw: Grid(**kw),
         [Arg("schedule", st.just(VP), _sched_bad),
          Arg("t", st.just(np.array([0.9, 0.5, 0.1])),
              [Bad(np.array([0.5, 0.9]), ("0.5",), "increasing"),
               Bad(np.array([1.5, 0.5]), ("1.5",), "outside [0, 1]"),
               Bad(np.array([0.5, np.nan]), ("nan",), "NaN"), Bad(0.5, ("()",), "scalar"),
               Bad(np.ones((2, 2)), ("(2, 2)",), "2-D"), Bad("0.5", ("str",), "str")]),
          Arg("final_zero", st.booleans(), boolean()[1]),
          Arg("family", st.sampled_from(["custom", "uniform"]),
              [Bad("", ("''",), "empty"), Bad(3, ("int",), "int")]),
          Arg("refines", st.booleans(), boolean()[1])], finite_output=False),  # fmt: skip
    Spec("TorchGrid", lambda **kw: ts.TorchGrid(**kw),
         [Arg("schedule", st.just(torch_schedule(VP)),
              [Bad(VP, ("VPLinear",), "a reference schedule"), Bad(None, ("None",), "None")]),
          Arg("t", st.just(np.array([0.9, 0.5, 0.1])),
              [Bad(np.array([0.5, 0.9]), ("0.5",), "increasing"),
               Bad(np.array([1.5, 0.5]), ("1.5",), "outside [0, 1]"),
               Bad(np.array([0.5, np.nan]), ("nan",), "NaN"),
               Bad(np.ones((2, 2)), ("(2, 2)",), "2-D"), Bad("0.5", ("str",), "str")]),
          Arg("final_zero", st.booleans(), boolean()[1])], finite_output=False),  # fmt: skip
    Spec("ExactModel", lambda **kw: ExactModel(**kw),
         [Arg("target", st.just(RING), [Bad("ring8", ("str",), "a name"), NONE]),
          Arg("schedule", st.just(VP), _sched_bad),
          Arg("prediction", st.sampled_from(["eps", "x0", "v", "score", "velocity"]),
              choice_of(["eps", "x0", "v", "score", "velocity"])[1]),
          Arg("bias", st.sampled_from([0.0, np.array([0.1, -0.2])]),
              [NAN, BOOL, Bad(np.zeros(3), ("(3,)",), "wrong d")]),
          Arg("scale", st.floats(-2, 2), real_scalar()[1]),
          Arg("noise_std", st.floats(0, 1), _nonneg[1])], finite_output=False),  # fmt: skip
    Spec("ExactModel.predict",
         lambda x, t, prediction: ExactModel(RING, VP).predict(x, t, prediction),
         [Arg("x", points(2), bad_points(2)),
          Arg("t", st.floats(1e-3, 1.0), _t01[1][:-1] + [Bad(np.full(7, 0.5), ("(7,)",), "shape")]),
          Arg("prediction", st.sampled_from(["eps", "x0", "v", "score", "velocity", None]),
              choice_of(["eps", "x0", "v", "score", "velocity"])[1][:-2])]),  # fmt: skip
    Spec("ddim_invert",
         lambda model, x0, grid, model_time: rs.ddim_invert(model, x0, grid,
                                                            model_time=model_time),
         [Arg("model", st.just(ExactModel(RING, VP)), [Bad(None, ("None",), "None")]),
          Arg("x0", points(2, scale=1.0), bad_points(2)),
          Arg("grid", st.just(make_grid(VP, 4, final_zero=False)), _grid_bad()),
          Arg("model_time", st.sampled_from(["current", "next"]),
              choice_of(["current", "next"])[1])]),  # fmt: skip
]


@st.composite
def _conv_kwargs(draw, fn):
    x = draw(points(3, scale=2.0))
    n = np.shape(x)[0]
    val = np.random.default_rng(n).standard_normal((n, 3))
    kw = {"alpha": draw(st.floats(0.05, 1.0)), "sigma": draw(st.floats(0.05, 1.0)),
          "d_alpha": draw(st.floats(-5, -0.1)), "d_sigma": draw(st.floats(0.1, 5))}  # fmt: skip
    preds = ["eps", "x0", "v", "score", "velocity"]
    if fn == "from_x0_eps":
        kw.update(x0=x, eps=val, target=draw(st.sampled_from(preds)))
    else:
        kw.update(value=val, x_t=x, source=draw(st.sampled_from(preds)))
        if fn == "convert":
            kw["target"] = draw(st.sampled_from(preds))
    return kw


def _conv_spec(name, fn, arrays, names):
    _, lvl_bad = real_scalar(0.0, scalar_only=False)
    _, d_bad = real_scalar(scalar_only=False)
    shape_bad = Bad(np.full(7, 0.5), ("(7,)",), "not the leading shape (n <= 6)")
    args = [Arg(a, st.none(), bad_points(3)) for a in arrays]
    args += [Arg(a, st.none(), choice_of(["eps", "x0", "v", "score", "velocity"])[1])
             for a in names]  # fmt: skip
    args += [Arg("alpha", st.none(), lvl_bad + [shape_bad]),
             Arg("sigma", st.none(), lvl_bad + [shape_bad])]  # fmt: skip
    args += [Arg("d_alpha", st.none(), d_bad + [shape_bad]),
             Arg("d_sigma", st.none(), d_bad + [shape_bad])]  # fmt: skip

    def check(out, kw):
        for arr in out if isinstance(out, tuple) else (out,):
            assert shape_of(arr) == np.shape(kw.get("x_t", kw.get("x0"))), (name, kw)

    return Spec(name, lambda **kw: fn(**kw), args, check=check, valid=_conv_kwargs(name))


CONVERSIONS = [
    _conv_spec("convert", convert, ["value", "x_t"], ["source", "target"]),
    _conv_spec("to_x0_eps", to_x0_eps, ["value", "x_t"], ["source"]),
    _conv_spec("from_x0_eps", from_x0_eps, ["x0", "eps"], ["target"]),
]
# a derivative only matters for the velocity: the other sources/targets ignore it, so an invalid
# one is tested where it is used
# steps_offset shifts the "leading" spacing only (as diffusers' timestep_spacing)
OTHERS[1].base = OTHERS[1].valid_kwargs().filter(lambda kw: kw["spacing"] == "leading")
for _s in CONVERSIONS:
    _s.base = _s.valid.filter(lambda kw: "velocity" in (kw.get("source"), kw.get("target"))
                              and kw.get("source") != kw.get("target"))  # fmt: skip

_n_valid, _n_bad = integer(1, valid=st.integers(1, 20))
_lsnr_bad = [b for b in real_scalar()[1] if b.value is not None]  # None: the schedule's range
TIMESTEPS = [
    Spec("UniformTimesteps", lambda **kw: UniformTimesteps(**kw),
         [Arg("schedule", st.sampled_from([VP, DISC]), _sched_bad),
          Arg("t_min", st.floats(0.0, 0.4), _t01[1] + [Bad(1.0, ("1.0",), "not below t_max")]),
          Arg("t_max", st.floats(0.6, 1.0), _t01[1] + [Bad(0.0, ("0.0",), "not above t_min")])],
         finite_output=False),  # fmt: skip
    Spec("LogSNRTimesteps", lambda **kw: LogSNRTimesteps(**kw),
         [Arg("schedule", st.just(VP), _sched_bad),
          Arg("log_snr_min", st.floats(-9.0, -1.0), _lsnr_bad + [Bad(50.0, ("50",), "> max")]),
          Arg("log_snr_max", st.floats(1.0, 9.0), _lsnr_bad + [Bad(-50.0, ("-50",), "< min")])],
         finite_output=False),  # fmt: skip
    Spec("LogitNormalTimesteps", lambda **kw: LogitNormalTimesteps(**kw),
         [Arg("mu", st.floats(-3, 3), real_scalar()[1]),
          Arg("s", st.floats(0.1, 3), real_scalar(0.0, lo_open=True)[1])],
         finite_output=False),  # fmt: skip
    Spec("UniformTimesteps.sample", lambda n: UniformTimesteps(VP).sample(n, 0),
         [Arg("n", _n_valid, _n_bad)]),
    Spec("LogitNormalTimesteps.sample", lambda n: LogitNormalTimesteps().sample(n, 0),
         [Arg("n", _n_valid, _n_bad)]),
    Spec("LogitNormalTimesteps.pdf", lambda t: LogitNormalTimesteps().pdf(t),
         [Arg("t", st.floats(0.0, 1.0), real_scalar(0.0, 1.0, scalar_only=False)[1])]),
    Spec("LogSNRTimesteps.pdf", lambda t: LogSNRTimesteps(VP, -9.0, 9.0).pdf(t),
         [Arg("t", st.floats(1e-3, 1.0), real_scalar(0.0, 1.0, scalar_only=False)[1])]),
]
TABLES = OTHERS + CONVERSIONS + TIMESTEPS


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


def test_tables_cover_every_builtin_sampler():
    """The call table holds every built-in sampler, and its torch counterpart where one exists:
    a new sampler is fuzzed without editing this file."""
    names = {s.id for s in CALLS}
    for name, smp in rs.BUILTIN_SAMPLERS().items():
        assert f"reference.{name}" in names
        assert (f"torch.{name}" in names) == (ts.torch_sampler(smp) is not None)
