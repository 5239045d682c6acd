"""Fuzz suite (issue 22, inputs), the harness and its front doors: ``verify``'s arguments, the
adapters ``from_k_diffusion`` / ``from_diffusers`` (generic loop) and the command line's
argument parsing. Each bad argument is a ValueError/TypeError naming it (argparse: exit code 2
naming the option) before any sampler runs. Machinery: tests/fuzz_api.py."""

import contextlib
import io

import numpy as np
import pytest
from fuzz_api import (
    BOOL,
    NAN,
    NONE,
    Arg,
    Bad,
    Spec,
    boolean,
    choice_of,
    expect_rejected,
    fuzz_settings,
    params,
    real_scalar,
)
from hypothesis import given
from hypothesis import strategies as st

from diffusion_oracle import DDIM, from_diffusers, from_k_diffusion, verify
from diffusion_oracle.cli import build_parser
from diffusion_oracle.reference import DiscreteSchedule, VPLinear

# a verify run that is quick when it does run (a bad argument silently accepted): tier 1 only
QUICK = {"sampler": DDIM(), "target": "ring8", "schedule": None, "steps": [4, 8],
         "tiers": (1,), "progress": False}  # fmt: skip


def _verify(**kw):
    return verify(**{**QUICK, **kw})


_t01 = [b for b in real_scalar(0.0, 1.0)[1] if b.value is not None]  # None: the default
VERIFY = [
    Spec("verify", _verify, [
        Arg("sampler", st.just(DDIM()), [Bad("ddim", ("str",), "a name"), NONE]),
        Arg("target", st.just("ring8"), [Bad("ring9", ("'ring9'",), "unknown name"),
                                         Bad(3, ("int",), "a number")]),
        Arg("schedule", st.just(None), [Bad("vp-linear", ("str",), "a name")]),
        Arg("steps", st.just([4, 8]),
            [Bad([1, 4], ("1",), "below 2"), Bad([4.5, 8], ("4.5",), "non-integer"),
             Bad([], ("[]",), "empty"), Bad("16", ("'16'",), "a string"),
             Bad([True, 4], ("True",), "bool"), Bad(8, ("8", "int"), "not a collection")]),
        Arg("tiers", st.just((1,)), [Bad((4,), ("4",), "no tier 4"), Bad("1", ("'1'",), "str"),
                                     Bad((1.5,), ("1.5",), "float"), Bad((True,), ("True",), "b")]),
        Arg("grid", st.just(None), choice_of(["uniform", "log_snr", "karras"])[1][:-2]),
        Arg("prediction", st.just("eps"), choice_of(["eps", "x0"])[1]),
        Arg("n_samples", st.just(None), [Bad(1, ("1",), "below 2"), BOOL,
                                         Bad(100.0, ("100.0",), "float")]),
        Arg("tier3_steps", st.just(None), [Bad(1, ("1",), "below 2"), BOOL]),
        Arg("seed", st.just(0), [Bad(-1, ("-1",), "negative"), BOOL, Bad(0.5, ("0.5",), "f"),
                                 NONE]),
        Arg("t_start", st.just(None), _t01),
        Arg("t_end", st.just(None), _t01),
        Arg("dtype", st.just(None), [Bad("float8", ("'float8'",), "unknown dtype"),
                                     Bad(3, ("3",), "a number")]),
        Arg("accept_prior_mismatch", st.just(False), boolean()[1]),
        Arg("progress", st.just(False), boolean()[1]),
        Arg("device", st.just(None), [Bad("nosuch", ("'nosuch'",), "no such device"),
                                      Bad(3.5, ("3.5",), "a number")]),
    ], finite_output=False),  # fmt: skip
]


def _sample(model, x, sigmas, **kw):
    return x


class _Scheduler:  # the generic set_timesteps/step loop of from_diffusers
    def set_timesteps(self, n):
        self.timesteps = np.linspace(99, 0, n).round()

    def step(self, out, k, sample, **kw):
        return (sample,)


DISC = DiscreteSchedule.linear(100)
_stoch_bad = [b for b in boolean()[1] if b.value is not None]  # None: measured (pipelines)
_order_bad = [Bad(-1, ("-1",), "negative"), Bad(0, ("0",), "zero"), NAN, BOOL,
              Bad("two", ("'two'",), "str"), Bad(float("inf"), ("inf",), "inf")]  # fmt: skip
ADAPTERS = [
    Spec("from_k_diffusion",
         lambda **kw: from_k_diffusion(_sample, **kw),
         [Arg("framework", st.sampled_from(["numpy", "torch"]), choice_of(["numpy", "torch"])[1]),
          Arg("name", st.sampled_from([None, "mine"]), [Bad(3, ("int",), "a number")]),
          Arg("order", st.sampled_from([None, 1, 2, 1.5]), _order_bad),
          Arg("stochastic", st.booleans(), _stoch_bad),
          Arg("rho", st.floats(1.0, 10.0), real_scalar(0.0, lo_open=True)[1]),
          Arg("dtype", st.sampled_from(["float32", "float64"]),
              choice_of(["float32", "float64"])[1])], finite_output=False),  # fmt: skip
    Spec("from_diffusers",
         lambda **kw: from_diffusers(_Scheduler, **kw),
         [Arg("schedule", st.just(DISC), [Bad(VPLinear(), ("VPLinear",), "continuous"), NONE]),
          Arg("framework", st.sampled_from(["numpy", "torch"]), choice_of(["numpy", "torch"])[1]),
          Arg("name", st.sampled_from([None, "mine"]), [Bad(3, ("int",), "a number")]),
          Arg("order", st.sampled_from([None, 1, 2]), _order_bad),
          Arg("stochastic", st.booleans(), _stoch_bad),
          Arg("prediction_type", st.sampled_from(["epsilon", "sample", "v_prediction"]),
              choice_of(["epsilon", "sample", "v_prediction"])[1])],
         finite_output=False),  # fmt: skip
]

TABLES = VERIFY + ADAPTERS


@pytest.mark.parametrize("spec,name", params(TABLES))
@fuzz_settings(3)
@given(data=st.data())
def test_invalid_argument_is_named(spec, name, data):
    expect_rejected(spec, data.draw(spec.base_kwargs()), name, data.draw(spec.arg(name).bad()))


# ---------------------------------------------------------------------------- command line

# (option, bad value, what the message must show): every one an exit code 2 naming the option
CLI_BAD = [
    ("--steps", "1,4", "1,4"), ("--steps", "a,b", "a,b"), ("--steps", "", "''"),
    ("--tiers", "4", "4"), ("--tiers", "x", "x"),
    ("--seed", "-1", "-1"), ("--seed", "1.5", "1.5"),
    ("--n-samples", "1", "1"), ("--n-samples", "0", "0"), ("--tier3-steps", "1", "1"),
    ("--jobs", "0", "0"), ("--jobs", "-2", "-2"),
    ("--order", "inf", "inf"), ("--order", "nan", "nan"), ("--order", "-1", "-1"),
    ("--strength", "x", "x"),  # its range (0, 1] is the pipeline's: tests/test_pipeline_cli.py
    ("--begin-index", "-1", "-1"),
    ("--config", "[1]", "[1]"), ("--config", "{bad", "{bad"),
    ("--target", "ring9", "ring9"), ("--grid", "bogus", "bogus"), ("--dtype", "float8", "float8"),
]  # fmt: skip


@pytest.mark.parametrize("option,value,shows", CLI_BAD, ids=[f"{o}={v}" for o, v, _ in CLI_BAD])
def test_cli_rejects_bad_options_naming_them(option, value, shows):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["verify", "ddim", option, value])
    msg = err.getvalue()
    assert exc.value.code == 2, (option, value, msg)
    assert option in msg and shows in msg, (option, value, msg)


@fuzz_settings()
@given(st.integers(2, 64), st.integers(0, 2**31), st.floats(1e-3, 1.0), st.integers(1, 8))
def test_cli_accepts_valid_options(steps, seed, strength, jobs):
    args = build_parser().parse_args(
        ["verify", "ddim", "--steps", f"{steps},{2 * steps}", "--seed", str(seed),
         "--strength", repr(strength), "--jobs", str(jobs), "--tiers", "1,2"])  # fmt: skip
    assert args.steps == [steps, 2 * steps] and args.seed == seed and args.jobs == jobs
    assert args.strength == strength and tuple(args.tiers) == (1, 2)
