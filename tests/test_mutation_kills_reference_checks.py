"""Mutation kill tests for reference/_checks.py (issue 22, docs/mutation.md): the shared input
validation. Each helper against its documented contract (DESIGN.md convention 12: the error names
the argument, the constraint and the offending value); the expected messages are written out
here, the accepted values compared with what NumPy itself makes of the input."""

import numpy as np
import pytest

from diffusion_oracle.reference._checks import (
    _r,
    _show,
    as_float,
    boolean,
    choice,
    finite,
    finite_scalar,
    in_interval,
    nonneg_scalar,
    order_choice,
    positive,
    positive_int,
    positive_scalar,
    scalar_out,
)


def msg(fn, *args, exc=ValueError, **kw):
    with pytest.raises(exc) as e:
        fn(*args, **kw)
    assert type(e.value) is exc
    return str(e.value)


def test_r_shows_numpy_scalars_as_python_numbers():
    assert _r(np.float64(1.0)) == "1.0"
    assert _r(np.int64(3)) == "3"
    assert _r(np.array(2.5)) == "2.5"  # a 0-d array
    assert _r(np.float32(0.5)) == "0.5"
    assert _r(np.array([1.0, 2.0])) == "array([1., 2.])"  # not 0-d: plain repr
    assert _r("a") == "'a'" and _r(1.5) == "1.5"


def test_show_summarises_arrays():
    assert _show(3.0) == "3.0"
    assert _show(np.array(2)) == "2"
    assert _show([1.0, 2.0]) == "array(shape=(2,), dtype=float64, values=[1.0, 2.0])"
    assert _show(np.arange(4)) == "array(shape=(4,), dtype=int64, values=[0, 1, 2, 3])"
    assert _show(np.arange(5.0)) == (
        "array(shape=(5,), dtype=float64, values=[0.0, 1.0, 2.0, 3.0, ...])"
    )  # more than four entries: elided
    assert _show(np.arange(6.0).reshape(2, 3)) == (
        "array(shape=(2, 3), dtype=float64, values=[0.0, 1.0, 2.0, 3.0, ...])"
    )


def test_as_float():
    out = as_float([1, 2], "x")
    assert out.dtype == np.float64 and out.tolist() == [1.0, 2.0]
    assert as_float(np.uint8(7), "x").dtype == np.float64
    f = np.array([1.5, 2.5])
    assert as_float(f, "x") is f  # no copy for float64
    assert as_float(np.float32(0.25), "x").dtype == np.float64
    assert (
        msg(as_float, "1", "x", exc=TypeError)
        == "x must be a real number or array of reals, got str"
    )
    assert msg(as_float, b"1", "y", exc=TypeError) == (
        "y must be a real number or array of reals, got bytes"
    )
    assert msg(as_float, np.array([True]), "z", exc=TypeError) == (
        "z must have a real numeric dtype (integer or floating), got dtype bool"
    )
    assert msg(as_float, 1j, "w", exc=TypeError) == (
        "w must have a real numeric dtype (integer or floating), got dtype complex128"
    )
    assert msg(as_float, [None], "v", exc=TypeError) == (
        "v must have a real numeric dtype (integer or floating), got dtype object"
    )


def test_finite():
    assert finite([1.0, -2.0], "x").tolist() == [1.0, -2.0]
    assert msg(finite, [1.0, np.inf, np.nan], "x") == (
        "x must be finite, got inf (in array(shape=(3,), dtype=float64, values=[1.0, inf, nan]))"
    )
    assert msg(finite, np.nan, "y") == "y must be finite, got nan (in nan)"
    assert msg(finite, "a", "s", exc=TypeError).startswith("s must be a real number")


@pytest.mark.parametrize(
    "closed, lo_in, hi_in, text",
    [("both", True, True, "[0.0, 1.0]"), ("left", True, False, "[0.0, 1.0)"),
     ("right", False, True, "(0.0, 1.0]"), ("neither", False, False, "(0.0, 1.0)")],
)  # fmt: skip
def test_in_interval_each_closure(closed, lo_in, hi_in, text):
    ok = in_interval([0.5, 0.25], "t", 0.0, 1.0, closed=closed)
    assert ok.tolist() == [0.5, 0.25]
    for end, inside in ((0.0, lo_in), (1.0, hi_in)):
        if inside:
            assert in_interval(end, "t", 0.0, 1.0, closed=closed) == end
        else:
            assert msg(in_interval, [0.5, end], "t", 0.0, 1.0, closed=closed) == (
                f"t must lie in {text}, got {end!r}"
            )
    assert msg(in_interval, [0.5, -0.5, 2.0], "t", 0.0, 1.0, closed=closed) == (
        f"t must lie in {text}, got -0.5"
    )
    assert msg(in_interval, 1.5, "u", 0.0, 1.0, closed=closed) == f"u must lie in {text}, got 1.5"
    # the default is closed on both sides
    assert in_interval(1.0, "t", 0.0, 1.0) == 1.0 and in_interval(0.0, "t", 0.0, 1.0) == 0.0
    assert msg(in_interval, np.nan, "t", 0.0, 1.0).startswith("t must be finite")


def test_positive_and_scalars():
    assert positive([1e-300, 2.0], "x").tolist() == [1e-300, 2.0]
    assert msg(positive, [1.0, 0.0, -1.0], "x") == "x must be > 0, got 0.0"
    assert msg(positive, -2, "y") == "y must be > 0, got -2.0"
    assert msg(positive, np.nan, "z") == "z must be finite, got nan (in nan)"
    assert msg(positive, "a", "w", exc=TypeError).startswith("w must be a real number")
    assert positive_scalar(np.array(2.5), "s") == 2.5 and type(positive_scalar(3, "s")) is float
    assert msg(positive_scalar, [1.0, 2.0], "s") == "s must be a scalar, got shape (2,)"
    assert msg(positive_scalar, 0.0, "s") == "s must be > 0, got 0.0"
    assert finite_scalar(-2, "f") == -2.0 and type(finite_scalar(np.int64(1), "f")) is float
    assert msg(finite_scalar, [[1.0]], "f") == "f must be a scalar, got shape (1, 1)"
    assert msg(finite_scalar, np.inf, "f").startswith("f must be finite, got inf")
    assert nonneg_scalar(0.0, "n") == 0.0 and nonneg_scalar(2, "n") == 2.0
    assert msg(nonneg_scalar, -0.5, "n") == "n must be >= 0, got -0.5"
    assert msg(nonneg_scalar, [0.5], "n") == "n must be a scalar, got shape (1,)"


def test_positive_int():
    assert positive_int(1, "n") == 1 and type(positive_int(np.int64(3), "n")) is int
    assert positive_int(2, "n", minimum=2) == 2
    assert msg(positive_int, 0, "n") == "n must be >= 1, got 0"
    assert msg(positive_int, 1, "n", minimum=2) == "n must be >= 2, got 1"
    assert msg(positive_int, np.int64(-1), "n") == "n must be >= 1, got -1"
    assert msg(positive_int, True, "n", exc=TypeError) == "n must be an integer, got bool True"
    assert msg(positive_int, 2.0, "k", exc=TypeError) == "k must be an integer, got float 2.0"
    assert msg(positive_int, "2", "k", exc=TypeError) == "k must be an integer, got str '2'"


def test_order_choice():
    assert (
        order_choice(2, "order", {1, 2, 3}) == 2
        and type(order_choice(np.int64(1), "o", {1})) is int
    )
    assert msg(order_choice, 4, "order", {3, 1, 2}) == "order must be one of [1, 2, 3], got 4"
    assert msg(order_choice, False, "order", {0, 1}, exc=TypeError) == (
        "order must be an integer, got bool False"
    )
    assert msg(order_choice, 1.0, "order", {1}, exc=TypeError) == (
        "order must be an integer, got float 1.0"
    )


def test_boolean_and_choice():
    assert boolean(True, "b") is True and boolean(np.bool_(False), "b") is False
    assert type(boolean(np.bool_(True), "b")) is bool
    assert msg(boolean, 1, "flag", exc=TypeError) == "flag must be a bool, got int 1"
    assert msg(boolean, "yes", "flag", exc=TypeError) == "flag must be a bool, got str 'yes'"
    assert choice("eps", "p", {"eps", "x0"}) == "eps"
    assert msg(choice, "v", "p", {"x0", "eps"}) == "p must be one of ['eps', 'x0'], got 'v'"
    assert msg(choice, 1, "p", {"x0"}) == "p must be one of ['x0'], got 1"


def test_scalar_out():
    out = scalar_out(np.array(2.5), np.array(0.1))
    assert type(out) is float and out == 2.5
    assert type(scalar_out(np.array([2.5]).reshape(()), 0.3)) is float
    arr = np.array([1.0, 2.0])
    assert scalar_out(arr, np.array([0.0, 1.0])) is arr
    assert scalar_out(arr[:1], [0.5]) is not None and isinstance(
        scalar_out(arr[:1], [0.5]), np.ndarray
    )
