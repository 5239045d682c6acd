"""Fuzz suite (issue 22, inputs), what the other fuzz files leave out: the methods and the
constructor of ELBOTerms (total, mean, stderr, bits_per_dim), TorchExactModel.predict_x0_eps,
ddpm_elbo with a callable variance (reference and torch twin) and with learned_range's ``v``
(scalar or callable), the torch twin's ``generator`` arguments (ddpm_elbo, vdm_elbo,
pf_ode_log_likelihood, irreducible_loss, TorchMixture.sample), pf_ode_log_likelihood's
``exact_probe_variance``, ``probe`` and ``rng``, and t_from_log_snr on zero-terminal-SNR schedules
(log_snr = -inf, the gap below lambda_(T-1) of a discrete one) for the reference and the twin.
Valid input gives finite results of the documented shape; one invalid argument gives a
ValueError/TypeError naming it, its constraint and the value; the reference and the twin reject
alike. Machinery and catalogues: tests/fuzz_api.py."""

import math

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
    ELBOTerms,
    ExactModel,
    Flow,
    Gaussian,
    VPCosine,
    VPLinear,
    ddpm_elbo,
    gaussian_ddpm_elbo,
    loss_weights,
    pf_ode_log_likelihood,
    rescale_zero_terminal_snr,
    ring8,
)

torch = pytest.importorskip("torch")
from diffusion_oracle.accelerated import likelihood as tl  # noqa: E402
from diffusion_oracle.accelerated.model import TorchExactModel  # noqa: E402
from diffusion_oracle.accelerated.schedules import torch_schedule  # noqa: E402
from diffusion_oracle.accelerated.targets import TorchMixture  # noqa: E402

RING = ring8()
TMIX = TorchMixture.from_reference(RING, device="cpu")
VP, DISC = VPLinear(), DiscreteSchedule.linear(6, 1e-3, 0.3)
TVP, TDISC = torch_schedule(VP), torch_schedule(DISC)
REF_MODEL = ExactModel(RING, DISC)
T_MODEL = TorchExactModel(TMIX, TDISC)
T_VP_MODEL = TorchExactModel(TMIX, TVP)
_seed_bad = [BOOL, Bad(-1, ("-1",), "negative"), Bad(2.5, ("2.5", "float"), "float"),
             Bad("0", ("str", "'0'"), "str")]  # fmt: skip
X0 = np.array([[0.5, -0.25], [0.0, 0.75], [-1.0, 1.0]])  # 3 examples, on the 256 levels


def _x0(n_min=1):
    return points(2, n_max=4, scale=0.6).map(
        lambda x: np.clip(np.asarray(x, dtype=np.float64).reshape(-1, 2), -1, 1)
    ).filter(lambda x: len(x) >= n_min)  # fmt: skip


# ---------------------------------------------------------------------------- ELBOTerms


@st.composite
def _terms(draw, n_min=1):
    n = draw(st.integers(n_min, 6))
    k = draw(st.integers(0, 4))
    g = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    return ELBOTerms(scale * g.random(n), scale * g.random((n, k)), scale * g.random(n),
                     draw(st.integers(1, 3072)))  # fmt: skip


_EMPTY = ELBOTerms(np.zeros(0), np.zeros((0, 5)), np.zeros(0), 2)
_no_example = [Bad(_EMPTY, ("n = 0",), "no example (an empty batch's terms)")]


def _bound_terms(impl):
    """Terms of the bound itself (1 to 3 examples, from the reference or the torch twin)."""
    def make(x0):
        if impl == "reference":
            return ddpm_elbo(REF_MODEL, DISC, x0, rng=0)
        return tl.ddpm_elbo(T_MODEL, TDISC, x0, generator=torch.Generator().manual_seed(0))

    return st.sampled_from([X0[:1], X0[:2], X0]).map(make)


def _check_mean(out, kw):
    total = kw["terms"].total
    assert out == pytest.approx(float(total.mean()), rel=1e-12, abs=1e-300)


def _check_stderr(out, kw):
    n = kw["terms"].total.shape[0]
    assert out >= 0.0 and (n > 1 or out == 0.0), (out, n)


_levels_bad = [b for b in integer(2)[1] if b.value is not None]  # None: the density form
_range_bad = [Bad((1.0, -1.0), ("1.0", "-1.0"), "lo > hi"), Bad(1.0, ("1.0",), "not a pair"),
              Bad((0.0, np.inf), ("inf",), "inf"), Bad((0, 1, 2), ("(0, 1, 2)",), "a triple"),
              Bad("ab", ("'ab'",), "a string"), Bad(None, ("None",), "None")]  # fmt: skip
_vec_bad = [Bad(np.zeros((2, 2)), ("(2, 2)",), "2-D"), Bad(np.zeros(5), ("(5,)",), "n = 5 of 2")]

TERMS = [
    Spec("ELBOTerms", lambda **kw: ELBOTerms(**kw),
         [Arg("prior", st.none(), _vec_bad), Arg("decoder", st.none(), _vec_bad),
          Arg("diffusion", st.none(), [Bad(np.zeros(2), ("(2,)",), "1-D"),
                                       Bad(np.zeros((5, 1)), ("(5, 1)",), "n = 5 rows of 2")]),
          Arg("d", st.none(), integer(1)[1])],
         valid=_terms().map(lambda t: {"prior": t.prior, "diffusion": t.diffusion,
                                       "decoder": t.decoder, "d": t.d}),
         base=st.just({"prior": np.ones(2), "diffusion": np.ones((2, 3)),
                       "decoder": np.ones(2), "d": 2}),
         check=lambda out, kw: shape_of(out.total) == np.shape(kw["prior"])),  # fmt: skip
    Spec("ELBOTerms.total", lambda terms: terms.total, [Arg("terms", _terms(0))],
         check=lambda out, kw: shape_of(out) == np.shape(kw["terms"].prior)),  # fmt: skip
    Spec("ELBOTerms.mean", lambda terms: terms.mean(),
         [Arg("terms", st.one_of(_terms(), _bound_terms("reference"), _bound_terms("torch")),
              _no_example, says="n")], check=_check_mean),  # fmt: skip
    Spec("ELBOTerms.stderr", lambda terms: terms.stderr(),
         [Arg("terms", st.one_of(_terms(), _bound_terms("reference"), _bound_terms("torch")),
              _no_example, says="n")], check=_check_stderr),  # fmt: skip
    Spec("ELBOTerms.bits_per_dim", lambda terms, **kw: terms.bits_per_dim(**kw),
         [Arg("terms", _terms(), _no_example, says="n"),
          Arg("levels", st.sampled_from([None, 2, 256, 65536]), _levels_bad),
          Arg("data_range", st.sampled_from([(-1.0, 1.0), (0.0, 1.0), (0, 255)]), _range_bad)]),
]
# the empty batch's terms themselves are valid (an empty batch is valid input to the bound)
for _impl in ("reference", "torch"):
    _f = ddpm_elbo if _impl == "reference" else tl.ddpm_elbo
    TERMS.append(Spec(f"{_impl}.ddpm_elbo on an empty batch: terms of n = 0",
                      lambda _f=_f, _i=_impl, **kw: _f(REF_MODEL if _i == "reference" else T_MODEL,
                                                       DISC if _i == "reference" else TDISC, **kw),
                      [Arg("x0", st.just(np.zeros((0, 2))))],
                      check=lambda out, kw: out.total.shape == (0,)))  # fmt: skip


# ---------------------------------------------------------------------------- predict_x0_eps

ZERO_SNR = {"VPCosine": VPCosine(), "VPCosine(s=0)": VPCosine(0.0), "Flow": Flow(),
            "ZeroSNR": rescale_zero_terminal_snr(DiscreteSchedule.linear(16)),
            "Discrete(beta_T=1)": DiscreteSchedule(np.array([0.1, 0.5, 1.0]))}  # fmt: skip
_MODELS = {k: TorchExactModel(TMIX, torch_schedule(s)) for k, s in
           {"VPLinear": VP, "Discrete": DISC, **ZERO_SNR}.items()}  # fmt: skip


@st.composite
def _x0eps_kwargs(draw):
    x = draw(points(2, scale=draw(st.sampled_from([1.0, 5.0, 1e3]))))
    n = np.shape(x)[0]
    t = draw(st.one_of(st.sampled_from([0.0, 1.0, 0.5, 1e-9, 1 - 1e-12]), st.floats(0, 1),
                       st.floats(0, 1).map(lambda v: np.full(n, v))))  # fmt: skip
    return {"model": draw(st.sampled_from(sorted(_MODELS))), "x": x, "t": t}


def _x0eps_check(out, kw):
    x0, eps = out
    assert shape_of(x0) == shape_of(eps) == np.shape(kw["x"])
    m = _MODELS[kw["model"]]
    torch.testing.assert_close(x0, m.predict(kw["x"], kw["t"], "x0"), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(eps, m.predict(kw["x"], kw["t"], "eps"), rtol=1e-12, atol=1e-12)


_t_bad = real_scalar(0.0, 1.0, scalar_only=False)[1] + [
    Bad(np.array([0.5, 1.5, 0.5]), ("1.5",), "an entry above 1"),
    Bad(np.array([True, False, True]), ("bool",), "bool array"),
    Bad(np.full(7, 0.5), ("(7,)",), "not the batch shape"),
    Bad(torch.tensor([0.5, float("nan"), 0.5]), ("nan",), "NaN tensor")]  # fmt: skip
PREDICT = [
    Spec("TorchExactModel.predict_x0_eps",
         lambda model, **kw: _MODELS[model].predict_x0_eps(**kw),
         [Arg("model", st.none()), Arg("x", st.none(), bad_points(2)),
          Arg("t", st.none(), _t_bad)],
         valid=_x0eps_kwargs(), check=_x0eps_check,
         base=_x0eps_kwargs().map(lambda kw: {**kw, "x": np.ones((3, 2)),
                                              "t": 0.5})),  # fmt: skip
]


# ---------------------------------------------------------------------------- callable variances


def _xp(x):
    return torch if torch.is_tensor(x) else np


def _lv_scalar(x, n):
    return -3.0 - 0.01 * n


def _lv_per_example(x, n):  # (N,)
    return -3.0 + 0.1 * _xp(x).tanh(x[:, 0]) - 0.01 * n


def _lv_column(x, n):  # (N, 1)
    return -3.0 + 0.1 * _xp(x).tanh(x[:, :1])


def _lv_full(x, n):  # (N, d)
    return -2.5 + 0.1 * _xp(x).tanh(x) - 0.02 * n


def _lv_row(x, n):  # (1, d): one per coordinate, shared by the examples
    return -3.0 + 0.0 * x[:1]


_VALID_LV = [_lv_scalar, _lv_per_example, _lv_column, _lv_full, _lv_row]


def _const(value, why):
    def f(x, n):
        return value

    f.__qualname__ = f"returns {why}"
    return f


def _shaped(shape, why, fill=-3.0):
    def f(x, n):
        return np.full(shape, fill)

    f.__qualname__ = f"returns {why}"
    return f


# what a learned variance must not return (N = 3, d = 2 in the base)
_LV_BAD = [Bad(_const(float("nan"), "nan"), ("nan",), "NaN"),
           Bad(_const(float("inf"), "inf"), ("inf",), "inf"),
           Bad(_const(-float("inf"), "-inf"), ("-inf",), "-inf"),
           Bad(_const("a", "str"), ("str",), "str"), Bad(_const(None, "None"), ("object",), "None"),
           Bad(_const(True, "bool"), ("bool",), "bool"),
           Bad(_const(1 + 1j, "complex"), ("complex",), "complex"),
           Bad(_shaped((7,), "(7,)"), ("(7,)",), "7 entries for 3 examples"),
           Bad(_shaped((3, 3), "(3, 3)"), ("(3, 3)",), "d = 3 for d = 2"),
           Bad(_shaped((3, 1, 1), "(3, 1, 1)"), ("(3, 1, 1)",), "an extra axis")]  # fmt: skip
_V_BAD = [Bad(_const(2.0, "2"), ("2.0",), "above 1"),
          Bad(_const(-0.5, "-0.5"), ("-0.5",), "below 0"),
          Bad(_const(float("nan"), "nan"), ("nan",), "NaN"),
          Bad(_const("a", "str"), ("str",), "str"),
          Bad(_shaped((7,), "(7,)", 0.5), ("(7,)",), "7 entries for 3 examples")]  # fmt: skip


def _v_callable(x, n):
    return 0.5 + 0.4 * np.tanh(x[:, 0]) * (n % 2)


_callable_base = st.fixed_dictionaries({"x0": st.just(X0), "variance": st.just(_lv_full)})
CALLABLE = [
    Spec("reference.ddpm_elbo(variance=callable)",
         lambda **kw: ddpm_elbo(REF_MODEL, DISC, rng=0, **kw),
         [Arg("x0", _x0()), Arg("variance", st.sampled_from(_VALID_LV), _LV_BAD)],
         base=_callable_base),  # fmt: skip
    Spec("torch.ddpm_elbo(variance=callable)",
         lambda **kw: tl.ddpm_elbo(T_MODEL, TDISC, generator=np.random.default_rng(0), **kw),
         [Arg("x0", _x0()), Arg("variance", st.sampled_from(_VALID_LV), _LV_BAD)],
         base=_callable_base),  # fmt: skip
    Spec("reference.ddpm_elbo(variance='learned_range', v=...)",
         lambda **kw: ddpm_elbo(REF_MODEL, DISC, variance="learned_range", rng=0, **kw),
         [Arg("x0", _x0()),
          Arg("v", st.one_of(st.floats(0.0, 1.0), st.just(_v_callable)),
              real_scalar(0.0, 1.0)[1] + _V_BAD)],
         base=st.fixed_dictionaries({"x0": st.just(X0), "v": st.just(0.5)})),  # fmt: skip
    Spec("reference.ddpm_elbo(variance=T variances)",
         lambda **kw: ddpm_elbo(REF_MODEL, DISC, rng=0, **kw),
         [Arg("x0", _x0()),
          Arg("variance", st.floats(1e-4, 1.0).map(lambda v: np.full(6, v)),
              [Bad(np.full(5, 0.1), ("(5,)",), "not T variances"),
               Bad(np.full(6, -0.1), ("-0.1",), "negative"),
               Bad(np.full(6, np.inf), ("inf",), "inf"),
               Bad(np.full((6, 1), 0.1), ("(6, 1)",), "2-D")])],
         base=st.fixed_dictionaries({"x0": st.just(X0),
                                     "variance": st.just(np.full(6, 0.1))})),  # fmt: skip
    Spec("torch.ddpm_elbo(variance=..., reduce_diffusion=...)",
         lambda **kw: tl.ddpm_elbo(T_MODEL, TDISC, generator=np.random.default_rng(0), **kw),
         [Arg("variance", st.sampled_from(["fixed_small", "fixed_large", _lv_column]),
              [Bad(np.full(6, 0.1), ("array",), "T variances: the reference's option only"),
               Bad("learned_range", ("'learned_range'",), "the reference's option only"),
               Bad(["fixed_small"], ("['fixed_small']",), "a list"), NONE]),
          Arg("reduce_diffusion", st.booleans(), boolean()[1])],
         check=lambda out, kw: out.diffusion.shape == (1, 1 if kw["reduce_diffusion"] else 5),
         valid=st.fixed_dictionaries({"x0": st.just(X0[:1]), "variance":
                                      st.sampled_from(["fixed_small", _lv_column]),
                                      "reduce_diffusion": st.booleans()}),
         base=st.fixed_dictionaries({"x0": st.just(X0[:1]), "variance": st.just("fixed_small"),
                                     "reduce_diffusion": st.just(False)})),  # fmt: skip
    *(Spec(f"{name}(variance=callable)", fn,
           [Arg("variance", st.just("fixed_large"),
                [Bad(_lv_scalar, ("callable",), "a callable: no closed form")])])
      for name, fn in (("gaussian_ddpm_elbo", lambda **kw: gaussian_ddpm_elbo(
          Gaussian(np.zeros(2), np.eye(2)), DISC, **kw)),
                       ("loss_weights", lambda **kw: loss_weights(DISC, **kw)))),  # fmt: skip
]


@pytest.mark.parametrize("fn", [_lv_scalar, _lv_per_example, _lv_column, _lv_full, _lv_row])
def test_callable_variance_reference_and_torch_agree(fn):
    """Every documented shape of a learned log variance gives the same terms in both (the twin
    read (N,) as per coordinate: a RuntimeError, or the wrong terms when N = d)."""
    for x0 in (X0, X0[:2]):  # N = 2 = d: a (N,) output must still be per example
        ref = ddpm_elbo(REF_MODEL, DISC, x0, variance=fn, rng=np.random.default_rng(3))
        got = tl.ddpm_elbo(T_MODEL, TDISC, x0, variance=fn, generator=np.random.default_rng(3))
        np.testing.assert_allclose(got.total, ref.total, rtol=1e-10)


# ---------------------------------------------------------------------------- torch generators


def _gen_valid(numpy_ok):
    torch_gen = st.integers(0, 99).map(lambda s: torch.Generator().manual_seed(s))
    if numpy_ok:
        return st.one_of(st.none(), torch_gen, st.integers(0, 99).map(np.random.default_rng))
    return st.one_of(st.none(), torch_gen)


def _gen_bad(numpy_ok):
    bad = [Bad(0, ("int",), "a seed"), Bad(7, ("int",), "a seed"), Bad("0", ("str",), "str"),
           Bad(True, ("bool",), "bool"), Bad(object(), ("object",), "an object"),
           Bad(torch.device("cpu"), ("device",), "a device"),
           Bad(1.5, ("float",), "float")]  # fmt: skip
    if not numpy_ok:
        bad.append(Bad(np.random.default_rng(0), ("Generator", "PCG64"), "a NumPy Generator"))
    return bad


def _gen_spec(name, fn, numpy_ok, check=None):
    return Spec(name, fn, [Arg("generator", _gen_valid(numpy_ok), _gen_bad(numpy_ok))],
                check=check)


# the twin's Hutchinson path (forward-mode jvp per stage) costs ~10 ms a step on one core: a
# short, loose solve, enough for the arguments under test (they act before the solve)
_PF_SHORT = {"t0": 0.4, "t1": 0.6, "rtol": 1e-3, "atol": 1e-3}
GENERATORS = [
    _gen_spec("torch.ddpm_elbo(generator)",
              lambda **kw: tl.ddpm_elbo(T_MODEL, TDISC, X0, **kw), True),
    _gen_spec("torch.vdm_elbo(generator)",
              lambda **kw: tl.vdm_elbo(T_VP_MODEL, TVP, X0, t_min=0.01, **kw), True),
    _gen_spec("torch.pf_ode_log_likelihood(generator)",
              lambda **kw: tl.pf_ode_log_likelihood(
                  TMIX, TVP, X0[:1], **_PF_SHORT, divergence="hutchinson", n_probes=2,
                  **kw), False),  # fmt: skip
    _gen_spec("torch.irreducible_loss(generator)",
              lambda **kw: tl.irreducible_loss(TMIX, TVP, 0.5, n=16, **kw), False),
    _gen_spec("TorchMixture.sample(generator)", lambda **kw: TMIX.sample(5, **kw), False,
              check=lambda out, kw: shape_of(out) == (5, 2)),
]


def test_a_torch_generator_gives_reproducible_draws():
    """The same seed gives the same terms; the check added for the argument changes no draw."""
    a = tl.ddpm_elbo(T_MODEL, TDISC, X0, generator=torch.Generator().manual_seed(4))
    b = tl.ddpm_elbo(T_MODEL, TDISC, X0, generator=torch.Generator().manual_seed(4))
    np.testing.assert_array_equal(a.total, b.total)
    s1 = TMIX.sample(4, torch.Generator().manual_seed(1))
    s2 = TMIX.sample(4, torch.Generator().manual_seed(1))
    assert torch.equal(s1, s2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_generator_on_the_wrong_device_is_a_value_error():
    """A CUDA generator where the draws are made on the CPU (a CPU target's samples, the
    probes of the PF-ODE estimator) and a CPU generator for a CUDA target: a ValueError naming
    the argument and the device (was torch's RuntimeError from inside the draw). Where the
    draws follow the generator (ddpm_elbo, vdm_elbo) any device is valid."""
    cuda_gen = torch.Generator(device="cuda").manual_seed(0)
    for call in (lambda g: TMIX.sample(3, g),
                 lambda g: tl.irreducible_loss(TMIX, TVP, 0.5, n=16, generator=g),
                 lambda g: tl.pf_ode_log_likelihood(TMIX, TVP, X0[:1], divergence="hutchinson",
                                                    n_probes=2, rtol=1e-5, atol=1e-5,
                                                    generator=g)):  # fmt: skip
        kind, msg = outcome(call, cuda_gen)
        assert kind is ValueError and msg.startswith("generator must be a torch.Generator on "
                                                     "the cpu device") and "cuda" in msg, msg
    cuda_mix = TorchMixture.from_reference(RING, device="cuda")
    for call in (lambda g: cuda_mix.sample(3, g),
                 lambda g: tl.irreducible_loss(cuda_mix, TVP, 0.5, n=16, generator=g)):
        kind, msg = outcome(call, torch.Generator().manual_seed(0))
        assert kind is ValueError and "cuda device" in msg and "cpu" in msg, msg
        assert outcome(call, cuda_gen) == (None, "")
    for terms in (tl.ddpm_elbo(T_MODEL, TDISC, X0, generator=cuda_gen),
                  tl.vdm_elbo(T_VP_MODEL, TVP, X0, t_min=0.01, generator=cuda_gen)):
        assert np.isfinite(terms.total).all()


# ---------------------------------------------------------------------------- PF-ODE options


def _pfv_check(out, kw):
    var = out.probe_var_exact
    if kw["exact_probe_variance"] and kw["divergence"] == "hutchinson":
        assert var is not None and var.shape == (1,) and (var >= 0).all(), var
    else:
        assert var is None


_PF_FAST = {"x": X0[:1], "t0": 0.05, "t1": 1.0, "rtol": 1e-5, "atol": 1e-5}
PF = [
    Spec("reference.pf_ode_log_likelihood(exact_probe_variance)",
         lambda **kw: pf_ode_log_likelihood(RING, VP, **_PF_FAST, **kw),
         [Arg("exact_probe_variance", st.booleans(), boolean()[1]),
          Arg("probe", st.sampled_from(["rademacher", "gaussian"]),
              choice_of(["rademacher", "gaussian"])[1]),
          Arg("divergence", st.sampled_from(["hutchinson", "exact"])),
          Arg("n_probes", st.integers(2, 3)), Arg("rng", st.integers(0, 9), _seed_bad)],
         check=_pfv_check, finite_output=False,
         base=st.fixed_dictionaries({"exact_probe_variance": st.just(True),
                                     "probe": st.just("rademacher"),
                                     "divergence": st.just("hutchinson"),
                                     "n_probes": st.just(2), "rng": st.just(0)})),  # fmt: skip
    Spec("reference.pf_ode_log_likelihood(divergence='exact', rng)",
         lambda **kw: pf_ode_log_likelihood(RING, VP, divergence="exact", **_PF_FAST, **kw),
         [Arg("rng", st.one_of(st.none(), st.integers(0, 9)), _seed_bad),
          Arg("exact_probe_variance", st.booleans(), boolean()[1])],
         check=lambda out, kw: out.probe_var_exact is None),  # fmt: skip
    Spec("torch.pf_ode_log_likelihood(probe)",
         lambda **kw: tl.pf_ode_log_likelihood(TMIX, TVP, X0[:1], divergence="hutchinson",
                                               n_probes=2, **_PF_SHORT, **kw),
         [Arg("probe", st.sampled_from(["rademacher", "gaussian"]),
              choice_of(["rademacher", "gaussian"])[1])], finite_output=False),  # fmt: skip
]


def test_exact_probe_variance_matches_the_probes_spread():
    """The exact variance of one probe's estimate against the spread of 64 probes (Rademacher
    and Gaussian): the same order (a chi-square spread on 63 degrees of freedom). Off the ring's
    symmetry axes, where M has off-diagonal entries (on one, a Rademacher probe's variance is 0)."""
    for probe in ("rademacher", "gaussian"):
        x = np.array([[0.5, -0.25], [0.3, 0.4]])
        out = pf_ode_log_likelihood(RING, VP, x, t0=0.05, divergence="hutchinson", n_probes=64,
                                    probe=probe, exact_probe_variance=True, rng=1, rtol=1e-6,
                                    atol=1e-6)  # fmt: skip
        ratio = out.probe_std**2 / out.probe_var_exact
        assert ((ratio > 0.4) & (ratio < 2.0)).all(), (probe, ratio)


def test_the_torch_twin_has_no_exact_probe_variance():
    """The twin does not integrate M (its ODELikelihood's probe_var_exact is None): passing the
    option is a TypeError naming it, never silently ignored."""
    kind, msg = outcome(tl.pf_ode_log_likelihood, TMIX, TVP, X0[:1], divergence="hutchinson",
                        exact_probe_variance=True)  # fmt: skip
    assert kind is TypeError and "exact_probe_variance" in msg


# ---------------------------------------------------------------------------- zero terminal SNR

TWINS = {k: torch_schedule(s) for k, s in ZERO_SNR.items()}


def _edge(sch):
    """lambda_(T-1) of a discrete zero-terminal-SNR schedule (-inf for a continuous one)."""
    return float(sch.log_snr_at(sch.T - 1)) if isinstance(sch, DiscreteSchedule) else -math.inf


@st.composite
def _zero_snr_log_snrs(draw, key):
    sch = ZERO_SNR[key]
    edge = _edge(sch)
    nodes = [float(v) for v in sch.log_snr_at(np.arange(sch.T))] if math.isfinite(edge) else []
    lo = edge if math.isfinite(edge) else -1e308
    hi = max(lo, 40.0) if math.isfinite(lo) else 40.0
    pick = st.one_of(st.sampled_from([-math.inf, math.inf, 1e308] + nodes
                                     + ([-1e308, -700.0, -40.0] if lo == -1e308 else [])),
                     st.floats(max(lo, -40.0) if math.isfinite(lo) else -40.0, hi))  # fmt: skip
    if draw(st.booleans()):
        return draw(pick)
    return np.array([draw(pick) for _ in range(draw(st.integers(0, 4)))], dtype=np.float64)


def _zero_snr_bad(key):
    sch = ZERO_SNR[key]
    bad = [BOOL, Bad("1.0", ("str",), "str"), NONE, Bad(float("nan"), ("nan",), "NaN"),
           Bad(1 + 1j, ("complex",), "complex"),
           Bad(np.array([0.0, np.nan]), ("nan",), "NaN entry")]  # fmt: skip
    edge = _edge(sch)
    if math.isfinite(edge):  # the gap (-inf, lambda_(T-1)): lambda jumps there
        below = edge - 1e-6 * (1.0 + abs(edge))
        for v in (below, edge - 1.0, -1e4, -1e308):
            bad.append(Bad(v, (repr(v), f"{v:g}", f"{v:.4g}"), "in the gap below lambda_(T-1)"))
        bad.append(Bad(np.array([edge, -1e4]), ("-10000",), "an array entry in the gap"))
    return bad


def _zero_snr_check(out, kw):
    arr = out.numpy() if torch.is_tensor(out) else np.asarray(out)
    lam = np.asarray(kw["log_snr"], dtype=np.float64)
    assert arr.shape == lam.shape and ((arr >= 0) & (arr <= 1)).all(), (arr, lam)
    assert (arr[lam == -np.inf] >= 1.0 - 1e-15).all(), (arr, lam)  # the noise end
    assert (arr[lam == np.inf] <= 1e-15).all(), (arr, lam)  # the data end


INVERSE = []
for _key in ZERO_SNR:
    INVERSE.append(Spec(f"reference.{_key}.t_from_log_snr",
                        lambda _s=ZERO_SNR[_key], **kw: _s.t_from_log_snr(**kw),
                        [Arg("log_snr", _zero_snr_log_snrs(_key), _zero_snr_bad(_key))],
                        check=_zero_snr_check))  # fmt: skip
    INVERSE.append(Spec(f"torch.{_key}.t_from_log_snr",
                        lambda _s=TWINS[_key], **kw: _s.t_from_log_snr(**kw),
                        [Arg("log_snr", _zero_snr_log_snrs(_key), _zero_snr_bad(_key))],
                        check=_zero_snr_check))  # fmt: skip


@pytest.mark.parametrize("key", sorted(ZERO_SNR))
@fuzz_settings()
@given(data=st.data())
def test_zero_snr_inverse_rejected_alike(key, data):
    bad = data.draw(st.sampled_from(_zero_snr_bad(key)))
    r = outcome(ZERO_SNR[key].t_from_log_snr, bad.value)
    t = outcome(TWINS[key].t_from_log_snr, bad.value)
    assert r[0] is not None and r[0] is t[0], (key, bad, r, t)


@pytest.mark.parametrize("key", sorted(ZERO_SNR))
@fuzz_settings(VALID_EXAMPLES)
@given(data=st.data())
def test_zero_snr_inverse_agrees_with_the_twin(key, data):
    """Where both answer, the reference and the twin give the same t (to the bisection's
    resolution; lambda is flat nowhere in the attained range)."""
    lam = data.draw(_zero_snr_log_snrs(key))
    r = np.asarray(ZERO_SNR[key].t_from_log_snr(lam))
    t = TWINS[key].t_from_log_snr(lam).numpy()
    np.testing.assert_allclose(t, r, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------- the tests

TABLES = TERMS + PREDICT + CALLABLE + GENERATORS + PF + INVERSE


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


@pytest.mark.parametrize("bad", _LV_BAD, ids=lambda b: b.why)
def test_callable_variance_rejected_alike(bad):
    """The reference and the twin reject the same learned variance with the same exception type
    and the same message head (the callable's name and its constraint)."""
    r = outcome(ddpm_elbo, REF_MODEL, DISC, X0, variance=bad.value, rng=0)
    t = outcome(tl.ddpm_elbo, T_MODEL, TDISC, X0, variance=bad.value)
    assert r[0] is not None and r[0] is t[0], (bad, r, t)
    assert r[1].split(" got ")[0] == t[1].split(" got ")[0], (r, t)
