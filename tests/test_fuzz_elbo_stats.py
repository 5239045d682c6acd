"""Fuzz suite (issue 22, inputs), the bound, likelihoods and statistics: reference.elbo
(gaussian_kl, discretized_gaussian_log_likelihood, bits_per_dim, loss_weights, ddpm_elbo, vdm_elbo,
their Gaussian closed forms, l_simple), reference.likelihood (flow_map, pf_ode_log_likelihood,
irreducible_loss), reference.stats (the four tests, mmd_null, responsibility_sample_size) and the
torch counterparts (accelerated.likelihood, accelerated.stats). Valid input gives finite results;
one invalid argument gives a ValueError/TypeError naming it, its constraint and the value; the
reference and the twin reject alike. Timesteps, grids and guidance are in test_fuzz_samplers.py.
Machinery and catalogues: tests/fuzz_api.py."""

import math

import mpmath as mp
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
)
from hypothesis import given
from hypothesis import strategies as st

from diffusion_oracle.reference import (
    DiscreteSchedule,
    ExactModel,
    Gaussian,
    VPLinear,
    bits_per_dim,
    ddpm_elbo,
    discretized_gaussian_log_likelihood,
    flow_map,
    gaussian_ddpm_elbo,
    gaussian_kl,
    gaussian_vdm_elbo,
    irreducible_loss,
    l_simple,
    loss_weights,
    pf_ode_log_likelihood,
    ring8,
    vdm_elbo,
)
from diffusion_oracle.reference import stats as rst

torch = pytest.importorskip("torch")
from diffusion_oracle.accelerated import likelihood as tl  # noqa: E402
from diffusion_oracle.accelerated import stats as tst  # noqa: E402
from diffusion_oracle.accelerated.model import TorchExactModel  # noqa: E402
from diffusion_oracle.accelerated.schedules import torch_schedule  # noqa: E402
from diffusion_oracle.accelerated.targets import TorchMixture  # noqa: E402

RING = ring8()
TMIX = TorchMixture.from_reference(RING, device="cpu")
VP, DISC = VPLinear(), DiscreteSchedule.linear(6, 1e-3, 0.3)
TVP, TDISC = torch_schedule(VP), torch_schedule(DISC)
GAUSS = Gaussian(np.array([0.5, -0.5]), np.array([[1.0, 0.3], [0.3, 0.5]]))
_fin = real_scalar(scalar_only=False)[1]
_pos = real_scalar(0.0, lo_open=True)[1]
_unit_open = real_scalar(0.0, 1.0, lo_open=True, hi_open=True)[1]
_t01 = real_scalar(0.0, 1.0)[1]
_seed_bad = [BOOL, Bad(-1, ("-1",), "negative"), Bad(2.5, ("2.5", "float"), "float"),
             Bad("0", ("str", "'0'"), "str")]  # fmt: skip
_x2_bad = [b for b in bad_points(2) if b.why != "a scalar"]

# ---------------------------------------------------------------------------- primitives


@st.composite
def _kl_kwargs(draw):
    n = draw(st.sampled_from([None, 0, 1, 4]))

    def one(lo, hi):
        if n is None:
            return draw(st.floats(lo, hi))
        return np.array([draw(st.floats(lo, hi)) for _ in range(n)])

    return {"mean1": one(-10, 10), "log_var1": one(-30, 30), "mean2": one(-10, 10),
            "log_var2": one(-30, 30)}  # fmt: skip


def _kl_check(out, kw):
    assert (np.asarray(out.numpy() if torch.is_tensor(out) else out) >= 0).all(), out


_bc_bad = Bad(np.zeros(7), ("(7,)",), "does not broadcast with the others (n = 4)")
_KL_ARGS = [Arg(a, st.none(), _fin + [_bc_bad]) for a in ("mean1", "log_var1", "mean2", "log_var2")]
_kl_base = _kl_kwargs().filter(lambda kw: np.shape(kw["mean1"]) == (4,))


@st.composite
def _dgl_kwargs(draw):
    levels = draw(st.sampled_from([2, 3, 256]))
    k = np.array([draw(st.integers(0, levels - 1)) for _ in range(draw(st.integers(0, 5)))])
    x = k * (2.0 / (levels - 1)) - 1.0
    return {"x": x, "mean": draw(st.floats(-1.5, 1.5)), "log_var": draw(st.floats(-12, 3)),
            "levels": levels}  # fmt: skip


_DGL_ARGS = [
    Arg("x", st.none(), [Bad(np.array([0.3]), ("0.3",), "off the 256 levels"),
                         Bad(np.array([1.5]), ("1.5",), "outside [-1, 1]"),
                         Bad(np.array([np.nan]), ("nan",), "NaN"), Bad("1", ("str",), "str")]),
    Arg("mean", st.none(), _fin[:-1]), Arg("log_var", st.none(), _fin[:-1]),
    Arg("levels", st.none(), integer(2)[1])]  # fmt: skip
_dgl_base = _dgl_kwargs().filter(lambda kw: kw["levels"] == 256 and len(kw["x"]) > 0)

PRIMITIVES = [
    Spec("reference.gaussian_kl", lambda **kw: gaussian_kl(**kw), _KL_ARGS, check=_kl_check,
         valid=_kl_kwargs(), base=_kl_base),  # fmt: skip
    Spec("torch.gaussian_kl", lambda **kw: tl.gaussian_kl(**kw), _KL_ARGS, check=_kl_check,
         valid=_kl_kwargs(), base=_kl_base),  # fmt: skip
    Spec("reference.discretized_gaussian_log_likelihood",
         lambda **kw: discretized_gaussian_log_likelihood(**kw), _DGL_ARGS,
         valid=_dgl_kwargs(), base=_dgl_base, finite_output=False),  # fmt: skip
    Spec("torch.discretized_gaussian_log_likelihood",
         lambda **kw: tl.discretized_gaussian_log_likelihood(**kw), _DGL_ARGS,
         valid=_dgl_kwargs(), base=_dgl_base, finite_output=False),  # fmt: skip
    Spec("bits_per_dim", lambda **kw: bits_per_dim(**kw),
         [Arg("nats", st.floats(0, 1e4), _fin[:-1]), Arg("d", st.integers(1, 3072), integer(1)[1]),
          Arg("levels", st.sampled_from([None, 2, 256]), integer(2)[1][:3] + integer(2)[1][4:]),
          Arg("data_range", st.just((-1.0, 1.0)),
              [Bad((1.0, -1.0), ("1.0", "-1.0"), "lo > hi"), Bad(1.0, ("1.0",), "not a pair"),
               Bad((0.0, np.inf), ("inf",), "inf"), Bad((0, 1, 2), ("(0, 1, 2)",), "a triple")])],
         base=st.fixed_dictionaries({"nats": st.floats(0, 10), "d": st.integers(1, 9),
                                     "levels": st.just(256),
                                     "data_range": st.just((-1.0, 1.0))})),  # fmt: skip
    Spec("loss_weights", lambda **kw: loss_weights(**kw),
         [Arg("schedule", st.just(DISC), [Bad(VP, ("VPLinear",), "continuous"), NONE]),
          Arg("prediction", st.sampled_from(["x0", "eps", "v", "score"]),
              choice_of(["x0", "eps", "v", "score"])[1]),
          Arg("variance", st.sampled_from(["fixed_large", "learned_range", np.full(6, 0.1)]),
              choice_of(["fixed_small", "fixed_large", "learned_range"])[1][:2]
              + [Bad(np.full(5, 0.1), ("(5,)",), "not T variances"),
                 Bad(np.full(6, -0.1), ("-0.1",), "negative variances")])],
         finite_output=True),  # fmt: skip
]

# ---------------------------------------------------------------------------- the bound

REF_MODEL = ExactModel(RING, DISC)
REF_VP_MODEL = ExactModel(RING, VP)
T_MODEL = TorchExactModel(TMIX, TDISC)
T_VP_MODEL = TorchExactModel(TMIX, TVP)
# on the 256 levels of [-1, 1]: valid for the discretized decoder too
_x0 = points(2, scale=0.6).map(lambda x: np.clip(np.round(
    (np.asarray(x, dtype=np.float64).reshape(-1, 2) + 1.0) * 127.5) / 127.5 - 1.0, -1.0, 1.0))
_x0_some = _x0.filter(lambda x: len(x) >= 2)
_dec_var_bad = [b for b in _pos if b.value is not None]


def _terms_check(out, kw):
    assert out.prior.shape == (len(kw["x0"]),) and out.decoder.shape == (len(kw["x0"]),)


BOUND = [
    Spec("reference.ddpm_elbo", lambda **kw: ddpm_elbo(REF_MODEL, DISC, **kw),
         [Arg("x0", _x0_some, _x2_bad[:2] + _x2_bad[3:]),
          Arg("variance", st.sampled_from(["fixed_small", "fixed_large", "learned_range"]),
              choice_of(["fixed_small", "fixed_large", "learned_range"])[1][:2]),
          Arg("decoder", st.sampled_from(["gaussian", "discretized"]),
              choice_of(["gaussian", "discretized"])[1]),
          Arg("prior_var", st.floats(0.1, 10), _pos), Arg("decoder_var", st.none(), _dec_var_bad),
          Arg("rng", st.integers(0, 9), _seed_bad)], check=_terms_check),  # fmt: skip
    Spec("torch.ddpm_elbo", lambda **kw: tl.ddpm_elbo(T_MODEL, TDISC, **kw),
         [Arg("x0", _x0_some, _x2_bad[:2] + _x2_bad[3:]),
          Arg("variance", st.sampled_from(["fixed_small", "fixed_large"]),
              choice_of(["fixed_small", "fixed_large"])[1][:2]),
          Arg("decoder", st.sampled_from(["gaussian", "discretized"]),
              choice_of(["gaussian", "discretized"])[1]),
          Arg("prior_var", st.floats(0.1, 10), _pos), Arg("decoder_var", st.none(), _dec_var_bad)],
         check=_terms_check),  # fmt: skip
    Spec("reference.vdm_elbo", lambda **kw: vdm_elbo(REF_VP_MODEL, VP, **kw),
         [Arg("x0", _x0_some, _x2_bad[:2] + _x2_bad[3:]),
          Arg("t_min", st.floats(1e-3, 0.5), _unit_open),
          Arg("prior_var", st.floats(0.1, 10), _pos),
          Arg("decoder_var", st.none(), _dec_var_bad), Arg("rng", st.integers(0, 9), _seed_bad)],
         check=_terms_check),  # fmt: skip
    Spec("torch.vdm_elbo", lambda **kw: tl.vdm_elbo(T_VP_MODEL, TVP, **kw),
         [Arg("x0", _x0_some, _x2_bad[:2] + _x2_bad[3:]),
          Arg("t_min", st.floats(1e-3, 0.5), _unit_open),
          Arg("prior_var", st.floats(0.1, 10), _pos),
          Arg("decoder_var", st.none(), _dec_var_bad)], check=_terms_check),  # fmt: skip
    Spec("gaussian_ddpm_elbo", lambda **kw: gaussian_ddpm_elbo(GAUSS, **kw),
         [Arg("schedule", st.just(DISC), [Bad(VP, ("VPLinear",), "continuous"), NONE]),
          Arg("variance", st.sampled_from(["fixed_small", "fixed_large", "optimal"]),
              choice_of(["fixed_small", "fixed_large", "learned_range"])[1][:2]),
          Arg("prior_var", st.floats(0.1, 10), _pos),
          Arg("decoder_var", st.none(), _dec_var_bad)]),  # fmt: skip
    Spec("gaussian_vdm_elbo", lambda **kw: gaussian_vdm_elbo(GAUSS, **kw),
         [Arg("schedule", st.just(VP), [Bad("vp", ("str",), "a name"), NONE]),
          Arg("t_min", st.floats(1e-3, 0.5), _unit_open),
          Arg("prior_var", st.floats(0.1, 10), _pos),
          Arg("decoder_var", st.none(), _dec_var_bad)]),  # fmt: skip
    Spec("l_simple", lambda **kw: l_simple(REF_MODEL, DISC, **kw),
         [Arg("x0", _x0_some, _x2_bad[:2] + _x2_bad[3:]),
          Arg("rng", st.integers(0, 9), _seed_bad),
          Arg("n_timesteps", st.none(), [Bad(np.array([0, 1]), ("0",), "below 1"),
                                         Bad(np.array([1, 9]), ("9",), "above T"),
                                         Bad(np.array([1.5, 2.0]), ("float",), "floats"),
                                         Bad(np.array([1]), ("(1,)",), "not one per example")])],
         base=st.fixed_dictionaries({"x0": st.just(np.zeros((2, 2))), "rng": st.just(0),
                                     "n_timesteps": st.just(None)})),  # fmt: skip
]

# ---------------------------------------------------------------------------- likelihood

_x2 = points(2, n_max=3, scale=1.0).map(lambda x: np.asarray(x, dtype=np.float64).reshape(-1, 2))
_FLOW_ARGS = [Arg("x", _x2, _x2_bad), Arg("t", st.floats(0.05, 1.0), _t01),
              Arg("s", st.floats(0.0, 0.04), _t01),
              Arg("rtol", st.just(1e-6), _pos), Arg("atol", st.just(1e-6), _pos)]  # fmt: skip
_PF_ARGS = [Arg("x", _x2, _x2_bad), Arg("t0", st.floats(0.0, 0.1), _t01),
            Arg("t1", st.floats(0.5, 1.0), _t01 + [Bad(0.0, ("0.0",), "not after t0")]),
            Arg("prior", st.sampled_from(["exact", "gaussian"]),
                choice_of(["exact", "gaussian"])[1]),
            Arg("divergence", st.just("exact"), choice_of(["exact", "hutchinson"])[1]),
            Arg("rtol", st.just(1e-6), _pos), Arg("atol", st.just(1e-6), _pos)]  # fmt: skip
_IL_ARGS = [Arg("t", st.floats(0.05, 1.0), _t01),
            Arg("prediction", st.sampled_from(["x0", "eps", "v", "score", "velocity"]),
                choice_of(["x0", "eps", "v", "score", "velocity"])[1]),
            Arg("n", st.integers(2, 300), integer(2)[1])]  # fmt: skip
_pf_base = st.fixed_dictionaries({"x": st.just(np.zeros((1, 2))), "t0": st.just(0.0),
                                  "t1": st.just(1.0), "prior": st.just("exact"),
                                  "divergence": st.just("exact"), "rtol": st.just(1e-6),
                                  "atol": st.just(1e-6)})  # fmt: skip
LIKELIHOOD = [
    Spec("reference.flow_map", lambda **kw: flow_map(RING, VP, **kw), _FLOW_ARGS),
    Spec("torch.flow_map", lambda **kw: tl.flow_map(TMIX, TVP, **kw), _FLOW_ARGS),
    Spec("reference.pf_ode_log_likelihood", lambda **kw: pf_ode_log_likelihood(RING, VP, **kw),
         _PF_ARGS + [Arg("n_probes", st.none(), integer(1)[1])], finite_output=False,
         base=_pf_base.map(lambda kw: {**kw, "divergence": "hutchinson", "n_probes": 2})),
    Spec("torch.pf_ode_log_likelihood", lambda **kw: tl.pf_ode_log_likelihood(TMIX, TVP, **kw),
         _PF_ARGS + [Arg("n_probes", st.none(), integer(1)[1])], finite_output=False,
         base=_pf_base.map(lambda kw: {**kw, "divergence": "hutchinson", "n_probes": 2})),
    Spec("reference.irreducible_loss", lambda **kw: irreducible_loss(RING, VP, rng=0, **kw),
         _IL_ARGS),
    Spec("torch.irreducible_loss", lambda **kw: tl.irreducible_loss(TMIX, TVP, **kw), _IL_ARGS),
]
for _s in LIKELIHOOD[2:4]:  # valid: the exact divergence (n_probes unused), no n_probes drawn
    _s.valid = st.fixed_dictionaries({a.name: a.valid for a in _s.args if a.name != "n_probes"})

# ---------------------------------------------------------------------------- statistics

_samples = points(2, n_max=40, scale=1.5).map(
    lambda x: np.asarray(x, dtype=np.float64).reshape(-1, 2)).filter(lambda x: len(x) >= 2)
_samples_bad = _x2_bad + [Bad(np.zeros((1, 2)), ("(1, 2)",), "one sample"),
                          Bad(np.zeros((0, 2)), ("(0, 2)",), "no sample")]  # fmt: skip
_alpha = ("alpha", st.floats(1e-4, 0.5), real_scalar(0.0, 1.0, lo_open=True, hi_open=True)[1])


def _stats_specs(impl, mod, target, seed_bad):
    rng = ("rng", st.integers(0, 99), seed_bad)
    return [
        Spec(f"{impl}.responsibility_test", lambda _m=mod, **kw: _m.responsibility_test(
            target, **kw), [Arg("x", _samples, _samples_bad), Arg(*_alpha),
                            Arg("null_n", st.integers(2, 500), integer(2)[1]), Arg(*rng)],
             finite_output=False),  # fmt: skip
        Spec(f"{impl}.projected_ks_test", lambda _m=mod, **kw: _m.projected_ks_test(target, **kw),
             [Arg("x", _samples, _samples_bad), Arg(*_alpha),
              Arg("n_proj", st.integers(1, 8), integer(1)[1]), Arg(*rng)], finite_output=False),
        Spec(f"{impl}.nll_test", lambda _m=mod, **kw: _m.nll_test(target, **kw),
             [Arg("x", _samples, _samples_bad), Arg(*_alpha),
              Arg("null_n", st.integers(2, 500), integer(2)[1]), Arg(*rng)], finite_output=False),
        Spec(f"{impl}.mmd_test", lambda _m=mod, **kw: _m.mmd_test(target, replicates=5, **kw),
             [Arg("x", _samples, _samples_bad), Arg(*_alpha), Arg(*rng)], finite_output=False),
        Spec(f"{impl}.mmd_null", lambda _m=mod, **kw: _m.mmd_null(target, **kw),
             [Arg("n", st.integers(2, 30), integer(2)[1]),
              Arg("replicates", st.integers(1, 5), integer(1)[1]), Arg(*rng)],
             finite_output=False),  # fmt: skip
    ]


STATS = _stats_specs("reference", rst, RING, _seed_bad)
STATS += _stats_specs("torch", tst, TMIX, _seed_bad)
STATS.append(Spec("responsibility_sample_size", lambda **kw: rst.responsibility_sample_size(**kw),
                  [Arg("w", st.floats(0.01, 0.99), _unit_open),
                   Arg("delta_w", st.floats(1e-3, 0.1), _pos), Arg(*_alpha),
                   Arg("K", st.integers(1, 256), integer(1)[1]),
                   Arg("power", st.floats(0.5, 0.99), _unit_open)],
                  finite_output=False))  # fmt: skip
STATS.append(Spec("targets: the tests need an exact mixture",
                  lambda target: rst.nll_test(target, np.zeros((3, 2)), null_n=10),
                  [Arg("target", st.just(RING), [Bad("ring8", ("str",), "a name"),
                                                 Bad(TMIX, ("TorchMixture",), "a torch target")])],
                  finite_output=False))  # fmt: skip

TABLES = PRIMITIVES + BOUND + LIKELIHOOD + STATS


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


def _twins():
    ids = {s.id for s in TABLES}
    names = {i.split(".", 1)[1] for i in ids if i.startswith("reference.")}
    return sorted(n for n in names if f"torch.{n}" in ids)


@pytest.mark.parametrize("fn", _twins())
@fuzz_settings()
@given(data=st.data())
def test_reference_and_torch_reject_alike(fn, data):
    ref = next(s for s in TABLES if s.id == f"reference.{fn}")
    tw = next(s for s in TABLES if s.id == f"torch.{fn}")
    shared = [a for a in tw.args if a.name in {b.name for b in ref.args}]
    arg = data.draw(st.sampled_from(shared))
    kw = data.draw(tw.base_kwargs())
    bad = data.draw(arg.bad())
    kw[arg.name] = bad.value
    r, t = outcome(ref.fn, **kw), outcome(tw.fn, **kw)
    assert r[0] is not None and r[0] is t[0], (fn, arg.name, bad, r, t)


# ---------------------------------------------------------------------------- KL at float64's edge


def _kl_exact(m1, lv1, m2, lv2):
    mp.mp.dps = 50
    u = mp.mpf(lv1) - mp.mpf(lv2)
    return 0.5 * (mp.expm1(u) - u + (mp.mpf(m1) - mp.mpf(m2)) ** 2 * mp.exp(-mp.mpf(lv2)))


@pytest.mark.parametrize("impl", ["reference", "torch"])
def test_gaussian_kl_never_a_silent_nan_or_inf(impl):
    """Equal means with e^{-log_var2} beyond float64 are a KL of exactly 0 (was 0 * inf = NaN);
    a huge mean gap against a huge variance is finite (was inf * 0 = NaN); a KL whose exact value
    exceeds float64 (u = log_var1 - log_var2 = 1000: e^1000 / 2) is a ValueError naming the
    argument, never a silent inf. Expected values from 50-digit mpmath."""
    kl = gaussian_kl if impl == "reference" else tl.gaussian_kl

    def f(*a):
        out = kl(*(np.float64(v) if impl == "reference" else torch.tensor(v, dtype=torch.float64)
                   for v in a))  # fmt: skip
        return float(out)

    assert f(1.0, -1000.0, 1.0, -1000.0) == 0.0
    for args in [(1e300, 1000.0, -1e300, 1000.0), (3.0, -700.0, 0.0, -700.0),
                 (0.0, 700.0, 0.0, 0.0)]:  # fmt: skip
        want = float(_kl_exact(*args))
        assert math.isfinite(want)
        assert f(*args) == pytest.approx(want, rel=1e-12), args
    with pytest.raises(ValueError, match=r"^log_var1 - log_var2 must .* got .* = 1000\.0"):
        f(0.0, 1000.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"^mean1 - mean2 must .* got .*1e\+300"):
        f(1e300, 0.0, 0.0, -10.0)
    assert _kl_exact(0.0, 1000.0, 0.0, 0.0) > mp.mpf("1e308")


def test_boolean_options_of_the_bound():
    """progress="yes" drew a tqdm bar (any truthy value was taken)."""
    for bad in boolean()[1]:
        kind, msg = outcome(ddpm_elbo, REF_MODEL, DISC, np.zeros((2, 2)), progress=bad)
        assert kind is TypeError and msg.startswith("progress must be a bool"), (bad, msg)
