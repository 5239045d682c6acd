"""Fuzz suite (issue 22, inputs), schedules: every reference schedule's constructor and public
methods (log_snr_diff, t_from_log_snr, the DiscreteSchedule constructors and index maps,
rescale_zero_terminal_snr, get_schedule, karras_sigmas) and the torch twins (torch_schedule, each
Torch* class and its methods). Valid input from the documented domains gives results of the
documented shape without a NaN (an infinite limit at an end point, e.g. log_snr(0) = +inf, is
documented); one invalid argument gives a ValueError/TypeError naming it, its constraint and the
value; the reference and the twin reject the same bad input with the same exception type.
Machinery and catalogues: tests/fuzz_api.py."""

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
    boolean,
    choice_of,
    expect_rejected,
    expect_valid,
    fuzz_settings,
    integer,
    numbers_of,
    outcome,
    params,
    real_scalar,
    shape_of,
)
from hypothesis import given
from hypothesis import strategies as st

from diffusion_oracle.reference import (
    EDM,
    SCHEDULES,
    DiscreteSchedule,
    Flow,
    SubVP,
    VEGeometric,
    VPCosine,
    VPLinear,
    get_schedule,
    karras_sigmas,
    rescale_zero_terminal_snr,
)

torch = pytest.importorskip("torch")
from diffusion_oracle.accelerated import schedules as tsch  # noqa: E402

_pos = real_scalar(0.0, lo_open=True)[1]
_nonneg = real_scalar(0.0)[1]
_fin = real_scalar()[1]
_unit_beta = real_scalar(0.0, 1.0, lo_open=True)[1]


def _betas_bad():
    return [Bad(np.array([0.1, 1.5]), ("1.5",), "above 1"),
            Bad(np.array([0.0, 0.1]), ("0.0",), "zero"),
            Bad(np.array([0.2, -0.1]), ("-0.1",), "negative"),
            Bad(np.array([1.0, 0.5]), ("1.0",), "1 before the last"),
            Bad(np.array([0.1, np.nan]), ("nan",), "NaN"),
            Bad(np.array([0.1, np.inf]), ("inf",), "inf"),
            Bad(np.zeros(0), ("(0,)",), "empty"), Bad(np.full((2, 2), 0.1), ("(2, 2)",), "2-D"),
            Bad(0.1, ("()",), "a scalar"), Bad("0.1", ("str",), "str"),
            Bad(np.array([True, False]), ("bool",), "bool"),
            Bad(np.array([0.1 + 0j]), ("complex",), "complex"), NONE]  # fmt: skip


@st.composite
def _betas(draw):
    T = draw(st.integers(1, 40))
    g = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    b = np.exp(g.uniform(np.log(1e-6), np.log(0.9), T))
    if T >= 2 and draw(st.booleans()):
        b[-1] = 1.0  # zero terminal SNR
    return b


# ---------------------------------------------------------------------------- constructors


def _pair(name, ref, tw, args, valid=None):
    """Specs of a reference constructor and its torch twin (same arguments)."""
    out = [Spec(f"reference.{name}", lambda _c=ref, **kw: _c(**kw), args, valid=valid,
                finite_output=False)]  # fmt: skip
    if tw is not None:
        out.append(Spec(f"torch.{name}", lambda _c=tw, **kw: _c(**kw), args, valid=valid,
                        finite_output=False))  # fmt: skip
    return out


_beta_args = [Arg("beta_min", st.floats(1e-3, 1.0), _pos + [Bad(50.0, ("50",), "> beta_max")]),
              Arg("beta_max", st.floats(1.5, 50.0), _pos + [Bad(1e-4, ("0.0001",), "< min")])]
_sigma_args = [Arg("sigma_min", st.floats(1e-4, 0.5),
                   _pos + [Bad(1e5, ("100000",), "> sigma_max")]),
               Arg("sigma_max", st.floats(1.0, 1e4), _pos + [Bad(1e-5, ("1e-05",), "< min")])]

CTORS = [
    *_pair("VPLinear", VPLinear, tsch.TorchVPLinear, _beta_args),
    *_pair("SubVP", SubVP, tsch.TorchSubVP, _beta_args),
    *_pair("VPCosine", VPCosine, tsch.TorchVPCosine, [Arg("s", st.floats(0.0, 1.0), _nonneg)]),
    *_pair("VEGeometric", VEGeometric, tsch.TorchVEGeometric, _sigma_args),
    *_pair("EDM", EDM, tsch.TorchEDM, _sigma_args + [
        Arg("rho", st.floats(0.5, 20.0), _pos + [Bad(1e-4, ("0.0001",), "too small: overflow")])]),
    *_pair("DiscreteSchedule", DiscreteSchedule, tsch.TorchDiscrete,
           [Arg("betas", _betas(), _betas_bad())]),
    Spec("DiscreteSchedule(name)", lambda name: DiscreteSchedule([0.1, 0.2], name=name),
         [Arg("name", st.text(max_size=5), [Bad(3, ("int",), "int"), NONE])],
         finite_output=False),  # fmt: skip
]
_T = ("T", st.integers(1, 200), integer(1)[1])
for _meth, _b0, _b1 in (("linear", (1e-5, 1e-2), (1e-2, 1.0)),
                        ("scaled_linear", (1e-5, 1e-2), (1e-2, 1.0)),
                        ("sigmoid", (1e-5, 1e-2), (1e-2, 1.0))):  # fmt: skip
    CTORS.append(Spec(
        f"DiscreteSchedule.{_meth}", lambda _m=_meth, **kw: getattr(DiscreteSchedule, _m)(**kw),
        [Arg(*_T), Arg("beta_start", st.floats(*_b0), _unit_beta),
         Arg("beta_end", st.floats(*_b1), _unit_beta)], finite_output=False))  # fmt: skip
CTORS += [
    Spec("DiscreteSchedule.cosine", lambda **kw: DiscreteSchedule.cosine(**kw),
         [Arg(*_T), Arg("s", st.floats(0.0, 1.0), _nonneg),
          Arg("max_beta", st.floats(0.01, 1.0), real_scalar(0.0, 1.0, lo_open=True)[1])],
         finite_output=False),  # fmt: skip
    Spec("DiscreteSchedule.log_snr_linear", lambda **kw: DiscreteSchedule.log_snr_linear(**kw),
         [Arg(*_T),
          Arg("log_snr_max", st.floats(0.0, 30.0), _fin + [Bad(-40.0, ("-40",), "< min"),
                                                          Bad(1000.0, ("1000",), "beta_1 = 0")]),
          Arg("log_snr_min", st.floats(-30.0, -0.5), _fin + [Bad(40.0, ("40",), "> max"),
                                                            Bad(-1e4, ("-10000",), "beta = 1")])],
         finite_output=False),  # fmt: skip
    Spec("DiscreteSchedule.from_alpha_bar", lambda alpha_bar: DiscreteSchedule.from_alpha_bar(
        alpha_bar), [Arg("alpha_bar", _betas().map(lambda b: np.exp(np.cumsum(np.log1p(-np.minimum(
            b, 0.5))))), [Bad(np.array([0.5, 0.9]), ("0.9",), "increasing"),
                          Bad(np.array([1.5, 0.5]), ("1.5",), "above 1"),
                          Bad(np.array([0.0, 0.0]), ("0.0",), "zero before the last"),
                          Bad(np.array([0.5, np.nan]), ("nan",), "NaN"),
                          Bad(np.zeros(0), ("(0,)",), "empty"), Bad("0.5", ("str",), "str"),
                          Bad(np.ones((2, 2)) * 0.5, ("(2, 2)",), "2-D"), NONE])],
         finite_output=False),  # fmt: skip
    Spec("rescale_zero_terminal_snr", lambda schedule: rescale_zero_terminal_snr(schedule),
         [Arg("schedule", st.integers(2, 100).map(DiscreteSchedule.linear),
              [Bad(VPLinear(), ("VPLinear",), "continuous"), Bad("ddpm-linear", ("str",), "name"),
               Bad(DiscreteSchedule([0.3]), ("1",), "T = 1"), NONE])],
         finite_output=False),  # fmt: skip
    Spec("get_schedule", lambda name: get_schedule(name),
         [Arg("name", st.sampled_from(sorted(SCHEDULES)),
              choice_of(SCHEDULES)[1] + [Bad(["vp-linear"], ("['vp-linear']",), "a list")])],
         finite_output=False),  # fmt: skip
    Spec("torch_schedule", lambda schedule: tsch.torch_schedule(schedule),
         [Arg("schedule", st.sampled_from(sorted(SCHEDULES)).map(get_schedule),
              [Bad("vp-linear", ("str",), "name"), NONE, Bad(3, ("int",), "int")])],
         finite_output=False),  # fmt: skip
]


def _check_karras(out, kw):
    n = kw.get("n")
    assert shape_of(out) == (n + bool(kw.get("append_zero", True)),)
    assert (np.diff(out) < 0).all() and out[0] > 0, out


_karras_n = ("n", st.integers(2, 100), integer(2)[1])
_az = ("append_zero", st.booleans(), boolean()[1])
CALLS = [
    Spec("karras_sigmas", lambda **kw: karras_sigmas(**kw),
         [Arg(*_karras_n), *_sigma_args,
          Arg("rho", st.floats(0.5, 20.0), _pos + [Bad(1e-4, ("0.0001",), "overflow")]),
          Arg(*_az)], check=_check_karras),  # fmt: skip
    Spec("EDM.karras_grid", lambda **kw: EDM().karras_grid(**kw), [Arg(*_karras_n), Arg(*_az)],
         check=_check_karras),  # fmt: skip
]


@pytest.mark.parametrize("spec", CTORS + CALLS, ids=lambda s: s.id)
@fuzz_settings(VALID_EXAMPLES)
@given(data=st.data())
def test_valid_construction(spec, data):
    expect_valid(spec, data.draw(spec.valid_kwargs()))


@pytest.mark.parametrize("spec,name", params(CTORS + CALLS))
@fuzz_settings()
@given(data=st.data())
def test_invalid_constructor_argument_is_named(spec, name, data):
    expect_rejected(spec, data.draw(spec.base_kwargs()), name, data.draw(spec.arg(name).bad()))


_TWINS = sorted({s.id.split(".", 1)[1] for s in CTORS if s.id.startswith("torch.")})


@pytest.mark.parametrize("cls_name", _TWINS)
@fuzz_settings()
@given(data=st.data())
def test_reference_and_torch_constructors_reject_alike(cls_name, data):
    ref = next(s for s in CTORS if s.id == f"reference.{cls_name}")
    tw = next(s for s in CTORS if s.id == f"torch.{cls_name}")
    arg = data.draw(st.sampled_from(ref.args))
    kw = data.draw(ref.valid_kwargs())
    bad = data.draw(arg.bad())
    kw[arg.name] = bad.value
    r, t = outcome(ref.fn, **kw), outcome(tw.fn, **kw)
    assert r[0] is not None and r[0] is t[0], (cls_name, arg.name, bad, r, t)
    assert arg.name in t[1], (cls_name, arg.name, bad, t)


# ---------------------------------------------------------------------------- methods

SCHEDS = {
    "VPLinear": VPLinear(), "SubVP": SubVP(0.2, 10.0), "VPCosine": VPCosine(),
    "VPCosine(s=0)": VPCosine(0.0), "VEGeometric": VEGeometric(), "EDM": EDM(), "Flow": Flow(),
    "Discrete": DiscreteSchedule.cosine(20),
    "ZeroSNR": rescale_zero_terminal_snr(DiscreteSchedule.linear(16)),
}  # fmt: skip
TWINS = {k: tsch.torch_schedule(v) for k, v in SCHEDS.items()}
SHARED = ("alpha", "sigma", "log_snr", "d_alpha", "d_sigma", "d_log_snr", "f", "g_squared")
REF_ONLY = ("log_alpha", "log_sigma", "snr", "d_snr", "g", "sigma_edm")


@st.composite
def _times(draw, n=None):
    """t in [0, 1]: a scalar (end points and grid nodes included) or an array of 0..5 times."""
    pick = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 1 / 16, 15 / 16, 1 / 20]), st.floats(0, 1))
    if n is None and draw(st.booleans()):
        return draw(pick)
    m = draw(st.integers(0, 5)) if n is None else n
    return np.array([draw(pick) for _ in range(m)], dtype=np.float64)


def _t_bad():
    return real_scalar(0.0, 1.0, scalar_only=False)[1] + [
        Bad(np.array([0.5, 1.5]), ("1.5",), "an entry above 1"),
        Bad(np.array([True, False]), ("bool",), "bool array"),
        Bad(np.array(["0.5"]), ("dtype", "<U3"), "str array")]  # fmt: skip


def _no_nan(out, kw):
    want = np.broadcast_shapes(*(np.shape(v) for v in kw.values()))
    assert shape_of(out) == want, (shape_of(out), want)
    for arr in numbers_of(out):
        assert not np.isnan(arr).any(), f"silent NaN {arr} for {kw}"


def _method_specs(table, impl, methods):
    """{(impl, schedule): [Spec of each method]}: the tests loop over one schedule's methods
    inside one hypothesis test (one test per method would cost its overhead 200 times)."""
    out = {}
    for key, sch in table.items():
        specs = [Spec(f"{impl}.{key}.{m}", lambda _s=sch, _m=m, **kw: getattr(_s, _m)(**kw),
                      [Arg("t", _times(), _t_bad())], check=_no_nan, finite_output=False)
                 for m in methods]  # fmt: skip
        specs.append(Spec(
            f"{impl}.{key}.log_snr_diff", lambda _s=sch, **kw: _s.log_snr_diff(**kw),
            [Arg("s", _times(3), _t_bad() + [Bad(np.full(7, 0.5), ("(7,)",), "no broadcast")]),
             Arg("t", _times(3), _t_bad() + [Bad(np.full(7, 0.5), ("(7,)",), "no broadcast")])],
            check=_no_nan, finite_output=False))  # fmt: skip
        out[f"{impl}.{key}"] = specs
    return out


METHODS = _method_specs(SCHEDS, "reference", SHARED + REF_ONLY)
METHODS.update(_method_specs(TWINS, "torch", SHARED))


@pytest.mark.parametrize("key", sorted(METHODS))
@fuzz_settings(VALID_EXAMPLES)
@given(data=st.data())
def test_valid_method_calls(key, data):
    """Every method of one schedule on one drawn valid t (and (s, t) for log_snr_diff)."""
    t = data.draw(_times())
    pair = {"s": data.draw(_times(3)), "t": data.draw(_times(3))}
    for spec in METHODS[key]:
        expect_valid(spec, pair if spec.id.endswith("log_snr_diff") else {"t": t})


@pytest.mark.parametrize("key", sorted(METHODS))
@fuzz_settings()
@given(data=st.data())
def test_invalid_method_argument_is_named(key, data):
    """Every method of one schedule on one drawn invalid t (or s)."""
    bad = data.draw(st.sampled_from(_t_bad()))
    pair = {"s": data.draw(_times(3)), "t": data.draw(_times(3))}
    for spec in METHODS[key]:
        if spec.id.endswith("log_snr_diff"):
            name = data.draw(st.sampled_from(["s", "t"]))
            expect_rejected(spec, pair, name, data.draw(spec.arg(name).bad()))
        else:
            expect_rejected(spec, {"t": 0.5}, "t", bad)


@pytest.mark.parametrize("key", sorted(SCHEDS))
@fuzz_settings()
@given(data=st.data())
def test_reference_and_twin_methods_reject_alike(key, data):
    bad = data.draw(st.sampled_from(_t_bad() + [Bad(np.full(7, 0.5), ("(7,)",), "")]))
    for method in SHARED + ("log_snr_diff",):
        kw = {"t": bad.value}
        if method == "log_snr_diff":
            kw = {"s": np.full(3, 0.25), "t": bad.value}
            if data.draw(st.booleans()):
                kw = {"s": bad.value, "t": np.full(3, 0.75)}
        elif bad.value is not None and np.shape(bad.value) == (7,):
            continue  # any shape is a valid t for a one-argument method
        r = outcome(getattr(SCHEDS[key], method), **kw)
        t = outcome(getattr(TWINS[key], method), **kw)
        assert r[0] is not None and r[0] is t[0], (key, method, bad, r, t)


# ---------------------------------------------------------------------------- inverses, indices


@st.composite
def _log_snrs(draw, sch):
    lo, hi = sch.log_snr_range()
    a, b = (max(lo, -40.0), min(hi, 40.0))
    pick = st.one_of(st.floats(a, b), st.sampled_from([v for v in (lo, hi, a, b)]))
    if draw(st.booleans()):
        return draw(pick)
    return np.array([draw(pick) for _ in range(draw(st.integers(0, 4)))], dtype=np.float64)


def _log_snr_bad(sch):
    lo, hi = sch.log_snr_range()
    bad = [BOOL, Bad("1.0", ("str",), "str"), NONE, NAN, Bad(1 + 1j, ("complex",), "complex"),
           Bad(np.array([0.0, np.nan]), ("nan",), "NaN entry"),
           Bad(np.array([True]), ("bool",), "bool array")]  # fmt: skip
    if np.isfinite(lo):
        bad += [Bad(lo - 1.0, _show(lo - 1.0), "below lambda(1)"), Bad(-np.inf, ("-inf",), "-inf")]
    if np.isfinite(hi):
        bad += [Bad(hi + 1.0, _show(hi + 1.0), "above lambda(0)"), Bad(np.inf, ("inf",), "inf")]
    return bad


def _show(v):
    return (repr(float(v)), f"{v:g}", f"{v:.4g}")


def _inverse_specs():
    out = []
    for key, sch in SCHEDS.items():
        if key == "ZeroSNR":  # lambda jumps to -inf on the last interval: a documented gap
            continue
        out.append(Spec(f"reference.{key}.t_from_log_snr",
                        lambda _s=sch, **kw: _s.t_from_log_snr(**kw),
                        [Arg("log_snr", _log_snrs(sch), _log_snr_bad(sch))],
                        check=_in_unit))  # fmt: skip
        out.append(Spec(f"torch.{key}.t_from_log_snr",
                        lambda _s=TWINS[key], **kw: _s.t_from_log_snr(**kw),
                        [Arg("log_snr", _log_snrs(sch), _log_snr_bad(sch)),
                         Arg("iterations", st.integers(1, 64), integer(1)[1])],
                        check=_in_unit))  # fmt: skip
    return out


def _in_unit(out, kw):
    arr = out.numpy() if torch.is_tensor(out) else np.asarray(out)
    assert arr.shape == np.shape(kw["log_snr"]) and ((arr >= 0) & (arr <= 1)).all(), (arr, kw)


DISC = SCHEDS["Discrete"]
_n_bad = integer(0, 20)[1] + [Bad(np.array([1, 25]), ("25",), "an entry above T"),
                              Bad(np.array([0.5]), ("float",), "float array")]  # fmt: skip
INDEX = [
    *_inverse_specs(),
    Spec("reference.t_from_sigma_edm", lambda sigma_edm: VPLinear().t_from_sigma_edm(sigma_edm),
         [Arg("sigma_edm", st.floats(0.01, 100.0), real_scalar(0.0, lo_open=True,
                                                              scalar_only=False)[1])],
         check=lambda out, kw: None),  # fmt: skip
    Spec("DiscreteSchedule.t_of", lambda n: DISC.t_of(n),
         [Arg("n", st.integers(0, 20), _n_bad)]),
    Spec("DiscreteSchedule.log_snr_at", lambda n: DISC.log_snr_at(n),
         [Arg("n", st.integers(1, 20), _n_bad)]),
    Spec("DiscreteSchedule.index_of", lambda t: DISC.index_of(t),
         [Arg("t", st.integers(0, 20).map(lambda n: n / 20),
              _t_bad() + [Bad(0.51, ("0.51",), "off the grid")])]),
    Spec("VPLinear.beta", lambda t: VPLinear().beta(t), [Arg("t", _times(), _t_bad())]),
]


@pytest.mark.parametrize("spec", INDEX, ids=lambda s: s.id)
@fuzz_settings(VALID_EXAMPLES)
@given(data=st.data())
def test_valid_inverse_and_index(spec, data):
    expect_valid(spec, data.draw(spec.valid_kwargs()))


@pytest.mark.parametrize("spec,name", params(INDEX))
@fuzz_settings()
@given(data=st.data())
def test_invalid_inverse_or_index_argument_is_named(spec, name, data):
    expect_rejected(spec, data.draw(spec.base_kwargs()), name, data.draw(spec.arg(name).bad()))


@pytest.mark.parametrize("key", sorted(k for k in SCHEDS if k != "ZeroSNR"))
@fuzz_settings()
@given(data=st.data())
def test_inverse_rejected_alike(key, data):
    bad = data.draw(st.sampled_from(_log_snr_bad(SCHEDS[key])))
    r = outcome(SCHEDS[key].t_from_log_snr, bad.value)
    t = outcome(TWINS[key].t_from_log_snr, bad.value)
    assert r[0] is not None and r[0] is t[0], (key, bad, r, t)
