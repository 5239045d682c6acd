"""Fuzz suite (issue 22, inputs), targets: GaussianMixture, EmpiricalMixture, Gaussian, the
built-in targets and the torch twin TorchMixture. Valid input from the documented domains gives
finite results of the documented shapes; one invalid argument gives a ValueError/TypeError naming
it, its constraint and the value; the reference and the twin reject the same bad input with the
same exception type. Machinery and catalogues: tests/fuzz_api.py."""

import re

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

from diffusion_oracle import strategies as dst
from diffusion_oracle.reference import (
    EmpiricalMixture,
    Gaussian,
    GaussianMixture,
    aniso64,
    get_target,
    ring8,
)

torch = pytest.importorskip("torch")
from diffusion_oracle.accelerated.targets import TorchMixture  # noqa: E402

D, K = 3, 4


def _mixture():
    g = np.random.default_rng(7)
    covs = np.stack([(q * lam) @ q.T for q, lam in (
        (np.linalg.qr(g.standard_normal((D, D)))[0], np.exp(g.uniform(-3, 0, D)))
        for _ in range(K))])  # fmt: skip
    covs = 0.5 * (covs + covs.transpose(0, 2, 1))
    return GaussianMixture(g.dirichlet(np.ones(K)), 2 * g.standard_normal((K, D)), covs,
                           labels=[0, 1, 1, 2])  # fmt: skip


GM = _mixture()
TM = TorchMixture.from_reference(GM, device="cpu")
GAUSS = Gaussian(GM.means[0], GM.covs[0])

# ---------------------------------------------------------------------------- evaluation


def _level_bad():
    _, bad = real_scalar(0.0, scalar_only=False)
    return bad + [Bad(np.full(7, 0.5), ("(7,)",), "not the batch shape (n <= 6)"),
                  Bad(np.array([True]), ("bool",), "bool array")]  # fmt: skip


def _deriv_bad():
    _, bad = real_scalar(scalar_only=False)
    return bad + [Bad(np.full(7, 0.5), ("(7,)",), "not the batch shape (n <= 6)")]


@st.composite
def _eval_kwargs(draw, d=D, derivs=False, per_point=True, positive_sigma=False, tame=False):
    x = draw(points(d))
    n = np.shape(x)[0]
    levels = dst.noise_levels(1.0, 80.0) if not tame else st.tuples(st.floats(0.05, 1.0),
                                                                    st.floats(0.05, 2.0))
    if per_point and n and draw(st.booleans()):
        pairs = [draw(levels) for _ in range(n)]
        alpha = np.array([a for a, _ in pairs])
        sigma = np.array([s for _, s in pairs])
    else:
        alpha, sigma = draw(levels)
    if positive_sigma:
        sigma = np.maximum(sigma, 1e-3)
    kw = {"x": x, "alpha": alpha, "sigma": sigma}
    if derivs:
        kw["d_alpha"] = draw(st.floats(-50, 50))
        kw["d_sigma"] = draw(st.floats(-50, 50))
    return kw


PER_POINT = {"log_prob": (), "laplacian": (), "posterior_cov_trace": (), "eps_cov_trace": (),
             "velocity_divergence": (), "responsibilities": ("K",), "score": ("d",),
             "denoise": ("d",), "eps": ("d",), "v": ("d",), "velocity": ("d",),
             "posterior_cov": ("d", "d"), "velocity_jacobian": ("d", "d"),
             "class_log_posterior": ("C",)}  # fmt: skip
SHARED = ("log_prob", "responsibilities", "score", "denoise", "eps", "v", "velocity",
          "laplacian", "posterior_cov_trace", "eps_cov_trace", "velocity_divergence")  # fmt: skip
REFERENCE_ONLY = ("posterior_cov", "velocity_jacobian", "class_log_posterior")
# alpha^2 lambda_min + sigma^2 below 1e-150: the scores exceed float64 (design decision 61)
TOO_SMALL = r"^(alpha|sigma) = \S+ is too small \(with (sigma|alpha) = \S+\): the narrowest"
# log p = -inf is the correctly rounded log of an underflowing density (design decision 61), and
# log p(c | x) = -inf a class with no responsibility left: the only non-finite answers
MAY_BE_MINUS_INF = ("log_prob", "class_log_posterior")


def _method_spec(obj, impl, method):
    derivs = method.startswith("velocity")
    sizes = {"K": obj.K, "d": obj.d, "C": 3}

    def fn(**kw):
        return getattr(obj, method)(**kw)

    def check(out, kw):
        n = np.shape(kw["x"])[0]
        want = (n,) + tuple(sizes[s] for s in PER_POINT[method])
        assert shape_of(out) == want, (method, shape_of(out), want)
        arr = out.numpy() if torch.is_tensor(out) else np.asarray(out)
        ok = np.isfinite(arr) | ((arr == -np.inf) if method in MAY_BE_MINUS_INF else False)
        assert ok.all(), f"{impl}.{method}: non-finite output {arr[~ok][:4]} for {kw}"

    args = [Arg("x", points(obj.d), bad_points(obj.d)), Arg("alpha", st.none(), _level_bad()),
            Arg("sigma", st.none(), _level_bad())]  # fmt: skip
    if derivs:
        args += [Arg("d_alpha", st.none(), _deriv_bad()), Arg("d_sigma", st.none(), _deriv_bad())]
    return Spec(f"{impl}.{method}", fn, args, check=check, finite_output=False,
                valid=_eval_kwargs(obj.d, derivs), documented=TOO_SMALL,
                base=_eval_kwargs(obj.d, derivs, tame=True))  # fmt: skip


REF_METHODS = [_method_spec(GM, "GaussianMixture", m) for m in SHARED + REFERENCE_ONLY]
TORCH_METHODS = [_method_spec(TM, "TorchMixture", m) for m in SHARED]


@pytest.mark.parametrize("spec", REF_METHODS + TORCH_METHODS, ids=lambda s: s.id)
@fuzz_settings(VALID_EXAMPLES)
@given(data=st.data())
def test_valid_evaluation_is_finite_and_shaped(spec, data):
    expect_valid(spec, data.draw(spec.valid_kwargs()))


@pytest.mark.parametrize("spec,name", params(REF_METHODS + TORCH_METHODS))
@fuzz_settings()
@given(data=st.data())
def test_invalid_evaluation_argument_is_named(spec, name, data):
    kw = data.draw(spec.base_kwargs())
    expect_rejected(spec, kw, name, data.draw(spec.arg(name).bad()))


@pytest.mark.parametrize("method", SHARED)
@pytest.mark.parametrize("name", ["x", "alpha", "sigma", "d_alpha", "d_sigma"])
@fuzz_settings()
@given(data=st.data())
def test_reference_and_twin_reject_alike(method, name, data):
    ref = next(s for s in REF_METHODS if s.id.endswith(f".{method}"))
    if name not in [a.name for a in ref.args]:
        return
    kw = data.draw(ref.base_kwargs())
    kw[name] = data.draw(ref.arg(name).bad()).value
    r = outcome(getattr(GM, method), **kw)
    t = outcome(getattr(TM, method), **kw)
    assert r[0] is not None and r[0] is t[0], (method, name, kw[name], r, t)
    assert name in r[1] and name in t[1], (r, t)


# ---------------------------------------------------------------------------- wide domain


@fuzz_settings(VALID_EXAMPLES)
@given(dst.gaussian_mixtures(), st.data())
def test_wide_domain_mixtures_give_finite_answers(gm, data):
    """The documented domain (d <= 512, K <= 256, extreme weights, alpha or sigma down to
    1e-300): every quantity finite (log p may be -inf: an underflowing density), in the reference
    and the twin, responsibilities summing to 1."""
    kw = data.draw(_eval_kwargs(gm.d, derivs=True, per_point=True))
    kw["x"] = np.asarray(kw["x"], dtype=np.float64).reshape(-1, gm.d)[:3]
    n = kw["x"].shape[0]
    for k in ("alpha", "sigma"):
        if np.ndim(kw[k]):
            kw[k] = kw[k][:n]
    x, a, s = kw["x"], kw["alpha"], kw["sigma"]
    tm = TorchMixture.from_reference(gm, device="cpu")
    for obj in (gm, tm):
        for q in ("log_prob", "responsibilities", "score", "denoise", "eps", "laplacian",
                  "posterior_cov_trace", "eps_cov_trace"):  # fmt: skip
            try:
                out = getattr(obj, q)(x, a, s)
            except ValueError as exc:  # the documented refusal of levels too small for float64
                assert re.search(TOO_SMALL, str(exc)), (type(obj).__name__, q, str(exc))
                continue
            arr = out.numpy() if torch.is_tensor(out) else np.asarray(out)
            ok = np.isfinite(arr) | ((arr == -np.inf) if q == "log_prob" else False)
            assert ok.all(), (type(obj).__name__, q, gm, a, s)
            if q == "responsibilities" and n:
                assert np.allclose(arr.sum(-1), 1.0, atol=1e-9), (type(obj).__name__, arr)
        try:
            div = obj.velocity_divergence(x, a, s, kw["d_alpha"], kw["d_sigma"])
        except ValueError as exc:
            assert re.search(TOO_SMALL, str(exc)), (type(obj).__name__, str(exc))
            continue
        assert np.isfinite(div.numpy() if torch.is_tensor(div) else div).all()


# ---------------------------------------------------------------------------- construction


@st.composite
def _mixture_kwargs(draw, ctype):
    g = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w = g.dirichlet(np.ones(2))
    means = draw(st.floats(0, 5)) * g.standard_normal((2, 2))
    if ctype == "full":
        covs = np.stack([draw(dst.spd_matrices(2)) for _ in range(2)])
    elif ctype == "diag":
        covs = np.exp(g.uniform(-5, 1, (2, 2)))
    else:
        covs = np.exp(g.uniform(-5, 1, 2))
    return {"weights": w, "means": means, "covs": covs, "covariance_type": ctype}


def _weights_bad():
    return [Bad(np.array([0.4, 0.5]), ("0.9",), "sum 0.9"),
            Bad(np.array([1.5, -0.5]), ("-0.5",), "negative"),
            Bad(np.array([1.0, 0.0]), ("0.0",), "zero"),
            Bad(np.array([0.5, np.nan]), ("nan",), "NaN"),
            Bad(np.full(3, 1 / 3), ("(3,)",), "wrong K"),
            Bad(np.array([True, False]), ("bool",), "bool"),
            Bad("uniform", ("str",), "str"), NONE]  # fmt: skip


def _means_bad():
    return [Bad(np.array([[0.0, np.nan], [1.0, 1.0]]), ("nan",), "NaN"),
            Bad(np.array([[0.0, np.inf], [1.0, 1.0]]), ("inf",), "inf"),
            Bad(np.zeros(2), ("(2,)",), "1-D"), Bad(np.zeros((2, 2), complex), ("complex",), "c"),
            Bad("origin", ("str",), "str"), NONE]  # fmt: skip


def _covs_bad(ctype):
    common = [Bad(np.full((2, 2, 2), np.nan), ("nan",), "NaN"), Bad("eye", ("str",), "str"),
              NONE, Bad(np.zeros((5, 5)), ("(5, 5)",), "wrong shape")]  # fmt: skip
    if ctype == "full":
        return common + [
            Bad(np.array([np.eye(2), [[1.0, 2.0], [2.0, 1.0]]]), ("-1.0", "-0.99"), "indefinite"),
            Bad(np.array([np.eye(2), [[1.0, 0.5], [0.0, 1.0]]]), ("0.5",), "asymmetric"),
            Bad(np.array([np.eye(2), np.zeros((2, 2))]), ("0.0",), "zero matrix")]  # fmt: skip
    if ctype == "diag":
        return common + [Bad(np.array([[1.0, -2.0], [1.0, 1.0]]), ("-2.0",), "negative"),
                         Bad(np.array([[1.0, 0.0], [1.0, 1.0]]), ("0.0",), "zero")]  # fmt: skip
    return common + [Bad(np.array([1.0, -1.0]), ("-1.0",), "negative"),
                     Bad(np.array([0.0, 1.0]), ("0.0",), "zero")]  # fmt: skip


def _ctor_spec(cls, ctype):
    name = cls.__name__

    def fn(**kw):
        if cls is TorchMixture:
            kw["device"] = "cpu"
        return cls(**kw)

    def check(out, kw):
        assert (out.K, out.d) == (2, 2)

    _, ct_bad = choice_of(["full", "diag", "iso"])
    args = [Arg("weights", st.none(), _weights_bad()), Arg("means", st.none(), _means_bad()),
            Arg("covs", st.none(), _covs_bad(ctype)),
            Arg("covariance_type", st.none(), ct_bad)]  # fmt: skip
    return Spec(f"{name}[{ctype}]", fn, args, check=check, valid=_mixture_kwargs(ctype))


CTORS = [_ctor_spec(c, t) for c in (GaussianMixture, TorchMixture) for t in ("full", "diag", "iso")]


@pytest.mark.parametrize("spec", CTORS, ids=lambda s: s.id)
@fuzz_settings(VALID_EXAMPLES)
@given(data=st.data())
def test_valid_construction(spec, data):
    expect_valid(spec, data.draw(spec.valid_kwargs()))


@pytest.mark.parametrize("spec,name", params(CTORS))
@fuzz_settings()
@given(data=st.data())
def test_invalid_construction_argument_is_named(spec, name, data):
    expect_rejected(spec, data.draw(spec.base_kwargs()), name, data.draw(spec.arg(name).bad()))


@pytest.mark.parametrize("ctype", ["full", "diag", "iso"])
@pytest.mark.parametrize("name", ["weights", "means", "covs", "covariance_type"])
@fuzz_settings()
@given(data=st.data())
def test_construction_rejected_alike(ctype, name, data):
    ref, tw = (next(s for s in CTORS if s.id == f"{c}[{ctype}]")
               for c in ("GaussianMixture", "TorchMixture"))  # fmt: skip
    kw = data.draw(ref.valid_kwargs())
    kw[name] = data.draw(ref.arg(name).bad()).value
    r, t = outcome(ref.fn, **kw), outcome(tw.fn, **kw)
    assert r[0] is not None and r[0] is t[0], (name, kw[name], r, t)


# ---------------------------------------------------------------------------- the rest

_n_valid, _n_bad = integer(1, valid=st.integers(1, 50))
_pos_valid, _pos_bad = real_scalar(0.0, lo_open=True, valid=st.floats(1e-3, 10.0))
_fin_valid, _fin_bad = real_scalar(valid=st.floats(-10.0, 10.0))
_level_valid, _level_bad_scalar = real_scalar(0.0, valid=st.floats(0.01, 5.0))


def _rows(out, kw):
    assert shape_of(out) == (kw["n"], D), (shape_of(out), kw)


OTHERS = [
    Spec("GaussianMixture.sample", lambda n: GM.sample(n, 0),
         [Arg("n", _n_valid, _n_bad)], check=_rows),
    Spec("TorchMixture.sample", lambda n: TM.sample(n),
         [Arg("n", _n_valid, _n_bad)], check=_rows),
    Spec("GaussianMixture.diffuse", lambda alpha, sigma: GM.diffuse(alpha, sigma),
         [Arg("alpha", _level_valid, _level_bad_scalar),
          Arg("sigma", _level_valid, _level_bad_scalar)], finite_output=False),
    Spec("GaussianMixture.select", lambda label: GM.select(label),
         [Arg("label", st.sampled_from([0, 1, 2]),
              [Bad(5, ("5",), "no such label"), Bad("1", ("'1'",), "str"),
               Bad(1.5, ("1.5",), "non-integer"), Bad(None, ("None",), "None")])],
         finite_output=False),  # fmt: skip
    Spec("GaussianMixture.marginal", lambda indices: GM.marginal(indices),
         [Arg("indices", st.sampled_from([[0], [0, 2], [1, 2], np.array([True, False, True])]),
              [Bad([3], ("[3]",), "out of range"), Bad([-1], ("[-1]",), "negative"),
               Bad([], ("[]",), "empty"), Bad([0.5], ("0.5",), "non-integer"),
               Bad("0", ("'0'",), "str"), Bad([0, 0], ("[0, 0]",), "repeated")])],
         finite_output=False),  # fmt: skip
    Spec("GaussianMixture.condition",
         lambda A, y, noise_cov: GM.condition(A, y, noise_cov),
         [Arg("A", st.just(np.array([[1.0, 0.0, 0.0]])),
              [Bad(np.ones((1, 4)), ("(1, 4)",), "wrong d"),
               Bad(np.array([[np.nan, 0.0, 0.0]]), ("nan",), "NaN"),
               Bad(np.ones(3), ("(3,)",), "1-D")]),
          Arg("y", st.floats(-3, 3).map(lambda v: np.array([v])),
              [Bad(np.zeros(2), ("(2,)",), "wrong m"), Bad(np.array([np.inf]), ("inf",), "inf")]),
          Arg("noise_cov", st.sampled_from([0.0, 0.1, np.array([[0.2]])]),
              [Bad(-0.1, ("-0.1",), "negative"), Bad(np.eye(2), ("(2, 2)",), "wrong m"),
               Bad(np.array([[-0.5]]), ("-0.5",), "not PSD"), NAN, BOOL])],
         finite_output=False),  # fmt: skip
    Spec("EmpiricalMixture", lambda data, weights: EmpiricalMixture(data, weights),
         [Arg("data", st.just(np.arange(6.0).reshape(3, 2)),
              [Bad(np.zeros((0, 2)), ("(0, 2)",), "no points"), Bad(np.zeros(3), ("(3,)",), "1-D"),
               Bad(np.array([[0.0, np.nan]] * 3), ("nan",), "NaN"), Bad("abc", ("str",), "str")]),
          Arg("weights", st.sampled_from([None, np.full(3, 1 / 3), np.array([0.2, 0.3, 0.5])]),
              [Bad(np.array([0.2, 0.3, 0.6]), ("1.1",), "sum"),
               Bad(np.array([-0.2, 0.6, 0.6]), ("-0.2",), "negative"),
               Bad(np.full(2, 0.5), ("(2,)",), "wrong n")])], finite_output=False),  # fmt: skip
    Spec("Gaussian", lambda mean, cov: Gaussian(mean, cov),
         [Arg("mean", st.just(np.zeros(2)),
              [Bad(np.zeros((2, 1)), ("(2, 1)",), "2-D"), Bad(np.array([0, np.nan]), ("nan",), "N"),
               Bad("0", ("str",), "str")]),
          Arg("cov", st.just(np.eye(2)),
              [Bad(np.array([[1.0, 2.0], [2.0, 1.0]]), ("-1.0",), "indefinite"),
               Bad(np.array([[1.0, 0.5], [0.0, 1.0]]), ("0.5",), "asymmetric"),
               Bad(np.eye(3), ("(3, 3)",), "wrong d"),
               Bad(np.full((2, 2), np.inf), ("inf",), "inf")])],
         finite_output=False),  # fmt: skip
    Spec("Gaussian.diffuse", lambda alpha, sigma: GAUSS.diffuse(alpha, sigma),
         [Arg("alpha", _level_valid, _level_bad_scalar),
          Arg("sigma", _level_valid, _level_bad_scalar)], finite_output=False),
    Spec("Gaussian.velocity",
         lambda x, alpha, sigma, d_alpha, d_sigma: GAUSS.velocity(x, alpha, sigma, d_alpha,
                                                                  d_sigma),
         [Arg("x", points(D), bad_points(D)), Arg("alpha", _level_valid, _level_bad_scalar),
          Arg("sigma", _level_valid, _level_bad_scalar), Arg("d_alpha", _fin_valid, _fin_bad),
          Arg("d_sigma", _fin_valid, _fin_bad)]),  # fmt: skip
    Spec("Gaussian.v", lambda x, alpha, sigma: GAUSS.v(x, alpha, sigma),
         [Arg("x", points(D), bad_points(D)), Arg("alpha", _level_valid, _level_bad_scalar),
          Arg("sigma", _level_valid, _level_bad_scalar)]),  # fmt: skip
    Spec("Gaussian.velocity_jacobian",
         lambda x, alpha, sigma, d_alpha, d_sigma: GAUSS.velocity_jacobian(x, alpha, sigma,
                                                                           d_alpha, d_sigma),
         [Arg("x", points(D), bad_points(D)), Arg("alpha", _level_valid, _level_bad_scalar),
          Arg("sigma", _level_valid, _level_bad_scalar), Arg("d_alpha", _fin_valid, _fin_bad),
          Arg("d_sigma", _fin_valid, _fin_bad)]),  # fmt: skip
    Spec("ring8", lambda radius, std: ring8(radius, std),
         [Arg("radius", st.floats(0.0, 100.0), real_scalar(0.0)[1]),
          Arg("std", _pos_valid, _pos_bad)], finite_output=False),  # fmt: skip
    Spec("aniso64", lambda seed: aniso64(seed),
         [Arg("seed", st.integers(0, 3), integer(0)[1])], finite_output=False),
    Spec("get_target", lambda name: get_target(name),
         [Arg("name", choice_of(["ring8", "bimodal1d", "aniso64"])[0],
              choice_of(["ring8", "bimodal1d", "aniso64"])[1])], finite_output=False),
    Spec("TorchMixture.from_reference",
         lambda mixture, dtype, chunk_elems: TorchMixture.from_reference(
             mixture, device="cpu", dtype=dtype, chunk_elems=chunk_elems),
         [Arg("mixture", st.just(GM), [Bad("ring8", ("str",), "a name"), Bad(None, ("None",), "")]),
          Arg("dtype", st.sampled_from([None, torch.float32, torch.float64]),
              [Bad(torch.float16, ("float16",), "half"), Bad("float64", ("'float64'", "str"), "s"),
               Bad(np.float64, ("float64",), "numpy dtype")]),
          Arg("chunk_elems", st.sampled_from([None, 1, 1000, 2**20]),
              [Bad(0, ("0",), "zero"), Bad(-5, ("-5",), "negative"), Bad(2.5, ("2.5",), "float"),
               Bad(True, ("bool",), "bool"), Bad("big", ("str", "'big'"), "str")])],
         finite_output=False),  # fmt: skip
]


@pytest.mark.parametrize("spec", OTHERS, ids=lambda s: s.id)
@fuzz_settings(VALID_EXAMPLES)
@given(data=st.data())
def test_valid_other_calls(spec, data):
    expect_valid(spec, data.draw(spec.valid_kwargs()))


@pytest.mark.parametrize("spec,name", params(OTHERS))
@fuzz_settings()
@given(data=st.data())
def test_invalid_other_argument_is_named(spec, name, data):
    expect_rejected(spec, data.draw(spec.base_kwargs()), name, data.draw(spec.arg(name).bad()))
