"""Machinery of the fuzz suite of the public API (tests/test_fuzz_*.py, issue 22 "Inputs").

Each public callable is described by a :class:`Spec`: its arguments, each an :class:`Arg` with a
hypothesis strategy of valid values (from the documented domain) and a catalogue of invalid ones,
each invalid value paired with the fragments its error message must show (the offending value,
its type or its shape). The tests then assert, per (callable, argument):

- valid input: the call returns within the time limit, and every number in the result is finite
  and of the documented shape (``Spec.check``);
- one argument invalid, the others valid: a ValueError or TypeError (never another exception, a
  hang, a silent NaN/inf or silent acceptance) whose message names the argument, states a
  constraint ("must", "needs", ...) and shows the offending value.

Examples per test come from the hypothesis profile (``EXAMPLES``): ``ci`` keeps the whole fuzz
suite under a minute on one core, ``nightly`` (``make fuzz``) draws many more.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import signal
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

try:  # the torch twin is optional
    import torch
except ImportError:  # pragma: no cover - torch is installed in .venv
    torch = None

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
# examples per (callable, argument) test; ci and dev keep the whole suite bounded on one core
EXAMPLES = {"ci": 8, "dev": 8, "stress": 60, "nightly": 250}.get(PROFILE, 8)
# examples of the valid-input tests (one per callable)
VALID_EXAMPLES = {"ci": 10, "dev": 10, "stress": 80, "nightly": 400}.get(PROFILE, 10)
TIME_LIMIT = 20.0  # seconds per call: anything longer is a hang


def _profile():
    try:
        return settings.get_profile(PROFILE)
    except Exception:  # noqa: BLE001 - an unregistered name: hypothesis' defaults
        return settings()


def fuzz_settings(n: int = EXAMPLES):
    return settings(
        _profile(),
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much],  # fmt: skip
    )


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so no ``except Exception`` in the code swallows it."""


@contextmanager
def time_limit(seconds: float = TIME_LIMIT):
    def _alarm(signum, frame):
        raise Hang(f"call did not return within {seconds} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------- arguments


@dataclasses.dataclass
class Bad:
    """An invalid value and the fragments (any one suffices) the message must show for it."""

    value: Any
    shows: tuple[str, ...]
    why: str = ""

    def __repr__(self):
        v = self.value
        if isinstance(v, np.ndarray):
            v = f"array(shape={v.shape}, dtype={v.dtype})"
        return f"Bad({v!r}: {self.why})"


@dataclasses.dataclass
class Arg:
    name: str
    valid: st.SearchStrategy
    invalid: list[Bad] | st.SearchStrategy = dataclasses.field(default_factory=list)
    # the name the message must contain (default: the argument's own)
    says: str | None = None

    def bad(self) -> st.SearchStrategy:
        if isinstance(self.invalid, st.SearchStrategy):
            return self.invalid
        return st.sampled_from(self.invalid)


@dataclasses.dataclass
class Spec:
    """A public callable: ``fn(**kwargs)``; ``check(result, kwargs)`` asserts the documented
    shape; ``valid`` optionally builds the whole valid kwargs at once (dependent arguments)."""

    id: str
    fn: Callable[..., Any]
    args: list[Arg]
    check: Callable[[Any, dict], None] | None = None
    valid: st.SearchStrategy | None = None
    finite_output: bool = True
    # a documented error valid input may meet (a regex its message must match), e.g. levels too
    # small for float64 (design decision 61)
    documented: str | None = None
    # the valid kwargs the invalid-argument tests start from (default: ``valid``); away from
    # the documented errors, so that the one invalid argument is what the call meets
    base: st.SearchStrategy | None = None

    def valid_kwargs(self) -> st.SearchStrategy:
        if self.valid is not None:
            return self.valid
        return st.fixed_dictionaries({a.name: a.valid for a in self.args})

    def base_kwargs(self) -> st.SearchStrategy:
        return self.base if self.base is not None else self.valid_kwargs()

    def arg(self, name: str) -> Arg:
        return next(a for a in self.args if a.name == name)

    def cases(self):
        """(spec, argument) pairs that have invalid values: the test parameters."""
        return [(self, a.name) for a in self.args if a.invalid]


def params(specs):
    """pytest parameters (spec, argument name) with readable ids."""
    import pytest

    return [pytest.param(s, a, id=f"{s.id}-{a}") for spec in specs for s, a in spec.cases()]


# ---------------------------------------------------------------------------- catalogues

BOOL = Bad(True, ("bool",), "bool where a number is expected")
STR = Bad("0.5", ("str",), "str where a number is expected")
NONE = Bad(None, ("None", "object"), "None")
COMPLEX = Bad(0.5 + 0.5j, ("complex",), "complex")
NAN = Bad(float("nan"), ("nan",), "NaN")
INF = Bad(float("inf"), ("inf",), "inf")
NINF = Bad(float("-inf"), ("-inf",), "-inf")
NOT_SCALAR = Bad(np.array([0.5, 0.5]), ("shape", "scalar", "(2,)"), "an array for a scalar")


def _show(v) -> tuple[str, ...]:
    """How a number may appear in a message: repr, %g, int form."""
    out = {repr(v), f"{v:g}", str(v)}
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e16:
        out.add(str(int(v)))
    return tuple(out)


def real_scalar(lo=-math.inf, hi=math.inf, *, lo_open=False, hi_open=False, valid=None,
                allow_inf=False, scalar_only=True):  # fmt: skip
    """A real scalar in [lo, hi] (open ends as given): (valid strategy, invalid catalogue)."""
    if valid is None:
        a = -1e6 if lo == -math.inf else lo
        b = 1e6 if hi == math.inf else hi
        valid = st.floats(a, b, exclude_min=lo_open, exclude_max=hi_open, allow_nan=False,
                          allow_infinity=False)  # fmt: skip
    bad = [BOOL, STR, NONE, COMPLEX, NAN]
    if not allow_inf:
        bad += [INF, NINF]
    if scalar_only:
        bad.append(NOT_SCALAR)
    if lo > -math.inf:
        for v in ([lo] if lo_open else []) + [lo - 1.0 - abs(lo), lo - 1e-3 * (1 + abs(lo))]:
            bad.append(Bad(v, _show(v), f"below {lo}"))
    if hi < math.inf:
        for v in ([hi] if hi_open else []) + [hi + 1.0 + abs(hi), hi + 1e-3 * (1 + abs(hi))]:
            bad.append(Bad(v, _show(v), f"above {hi}"))
    return valid, bad


def integer(lo=None, hi=None, *, valid=None):
    """An integer in [lo, hi]: (valid strategy, invalid catalogue)."""
    if valid is None:
        valid = st.integers(lo if lo is not None else -100, hi if hi is not None else 100)
    bad = [BOOL, Bad("3", ("str",), "str"), Bad(2.5, ("float", "2.5"), "non-integer float"),
           Bad(None, ("None",), "None"), Bad(float("nan"), ("float", "nan"), "NaN")]  # fmt: skip
    if lo is not None:
        bad.append(Bad(lo - 1, _show(lo - 1), f"below {lo}"))
        bad.append(Bad(lo - 1000, _show(lo - 1000), f"below {lo}"))
    if hi is not None:
        bad.append(Bad(hi + 1, _show(hi + 1), f"above {hi}"))
    return valid, bad


def choice_of(options):
    """One of ``options`` (strings): (valid strategy, invalid catalogue)."""
    opts = sorted(options)
    bad = [Bad("", ("''",), "empty string"), Bad("bogus", ("'bogus'",), "unknown name"),
           Bad(opts[0].upper() + "_", (repr(opts[0].upper() + "_"),), "unknown name"),
           Bad(None, ("None",), "None"), Bad(1, ("1",), "int for a name")]  # fmt: skip
    return st.sampled_from(opts), bad


def boolean():
    bad = [Bad("yes", ("str", "'yes'"), "str for a bool"), Bad(None, ("None",), "None"),
           Bad(2, ("int", "2"), "int for a bool")]  # fmt: skip
    return st.booleans(), bad


def points(d: int, *, n_max: int = 6, scale: float = 5.0, name_shape="x") -> st.SearchStrategy:
    """Valid (n, d) float64 arrays, n >= 0 (empty batches are valid), sometimes a
    non-contiguous view, float32 or integer-valued."""

    @st.composite
    def draw(dr):
        n = dr(st.integers(0, n_max))
        seed = dr(st.integers(0, 2**32 - 1))
        x = scale * np.random.default_rng(seed).standard_normal((n, d))
        form = dr(st.sampled_from(["c", "fortran", "strided", "f32", "readonly", "list"]))
        if form == "fortran":
            x = np.asfortranarray(x)
        elif form == "strided":
            x = np.repeat(x, 2, axis=1)[:, ::2]
        elif form == "f32":
            x = x.astype(np.float32)
        elif form == "readonly":
            x.setflags(write=False)
        elif form == "list":
            x = x.tolist() if n else np.zeros((0, d))
        return x

    return draw()


def bad_points(d: int) -> list[Bad]:
    """Invalid (n, d) inputs: non-finite entries, wrong dtypes, wrong last axis, no axis."""
    x = np.zeros((3, d))
    nan = x.copy()
    nan[1, 0] = np.nan
    inf = x.copy()
    inf[2, -1] = np.inf
    return [
        Bad(nan, ("nan",), "NaN entry"),
        Bad(inf, ("inf",), "inf entry"),
        Bad(np.zeros((3, d + 1)), (f"{d + 1})", f"{d + 1}]"), "wrong d"),
        Bad(np.zeros((3, d), dtype=complex), ("complex",), "complex dtype"),
        Bad(np.zeros((3, d), dtype=bool), ("bool",), "bool dtype"),
        Bad(np.full((3, d), "a"), ("dtype", "str", "<U1"), "strings"),
        Bad(None, ("None", "object"), "None"),
        Bad(np.float64(0.5), ("()", "scalar", "shape"), "a scalar"),
    ]


# ---------------------------------------------------------------------------- assertions

CONSTRAINT = re.compile(r"\b(must|needs?|cannot|expected|should|only|requires?|is too|outside|"
                        r"invalid|not a|not an|unknown|at least|at most|exceeds?)\b")  # fmt: skip


def numbers_of(out):
    """Every float array in a result (arrays, tensors, numbers, tuples, dataclasses, dicts)."""
    if out is None or isinstance(out, (str, bytes, bool)):
        return
    if torch is not None and isinstance(out, torch.Tensor):
        if out.is_floating_point():
            yield out.detach().cpu().double().numpy()
        return
    if isinstance(out, np.ndarray):
        if out.dtype.kind in "fc":
            yield out
        return
    if isinstance(out, (float, np.floating)):
        yield np.asarray(out)
        return
    if isinstance(out, (tuple, list)):
        for v in out:
            yield from numbers_of(v)
        return
    if isinstance(out, dict):
        for v in out.values():
            yield from numbers_of(v)
        return
    if dataclasses.is_dataclass(out):
        for f in dataclasses.fields(out):
            yield from numbers_of(getattr(out, f.name))


def assert_finite(out, what=""):
    for arr in numbers_of(out):
        assert np.isfinite(arr).all(), f"{what}: silent non-finite output {arr.ravel()[:6]}"


def run(spec: Spec, kwargs: dict):
    with time_limit():
        return spec.fn(**kwargs)


def outcome(fn, *args, **kwargs):
    """(exception class or None, message) of a call under the time limit."""
    try:
        with time_limit():
            fn(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)
    return None, ""


def expect_rejected(spec: Spec, kwargs: dict, name: str, bad: Bad):
    """The call with ``kwargs[name] = bad.value`` raises ValueError/TypeError naming ``name``,
    the constraint and the value."""
    arg = spec.arg(name)
    kwargs = dict(kwargs)
    kwargs[name] = bad.value
    try:
        out = run(spec, kwargs)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        says = arg.says or name
        # as a word: a plain substring test passes for t, s, x, mu in any message ("must")
        named = re.search(rf"(?<![A-Za-z0-9_]){re.escape(says)}(?![A-Za-z0-9_])", msg)
        assert named, f"{spec.id}: message does not name {says!r} for {bad!r}: {msg!r}"
        assert CONSTRAINT.search(msg), f"{spec.id}: message states no constraint: {msg!r}"
        assert any(f in msg for f in bad.shows), (
            f"{spec.id}: message does not show the value ({' or '.join(bad.shows)}) for "
            f"{bad!r}: {msg!r}"
        )
        return type(exc), msg
    except Hang:
        raise AssertionError(f"{spec.id}: hang on {name}={bad!r}") from None
    except Exception as exc:  # noqa: BLE001 - the point: no other exception type
        raise AssertionError(
            f"{spec.id}: {name}={bad!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    bad_nums = [a for a in numbers_of(out) if not np.isfinite(a).all()]
    kind = "a silent NaN/inf" if bad_nums else "silent acceptance"
    raise AssertionError(f"{spec.id}: {name}={bad!r} was accepted ({kind})")


def expect_valid(spec: Spec, kwargs: dict):
    try:
        out = run(spec, kwargs)
    except Hang:
        raise AssertionError(f"{spec.id}: hang on valid input") from None
    except ValueError as exc:
        if spec.documented and re.search(spec.documented, str(exc)):
            return None
        raise
    if spec.finite_output:
        assert_finite(out, spec.id)
    if spec.check is not None:
        spec.check(out, kwargs)
    return out


def shape_of(out) -> tuple:
    return tuple(np.shape(out)) if not (torch is not None and torch.is_tensor(out)) else tuple(
        out.shape)  # fmt: skip
