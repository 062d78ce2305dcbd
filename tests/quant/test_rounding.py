"""Table-driven tests of every rounding mode and saturation case of quant.rounding."""

from __future__ import annotations

import doctest
from fractions import Fraction

import numpy as np
import pytest

from inhibitron.quant import rounding as R


def test_doctests():
    result = doctest.testmod(R, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 10


# (x, r, floor, trunc, half_up, half_even) -- every tie and sign case at r = 1, 2, plus r = 0.
SHIFT_TABLE = [
    # x/2**r = exact
    (8, 2, 2, 2, 2, 2),
    (-8, 2, -2, -2, -2, -2),
    (0, 3, 0, 0, 0, 0),
    # below half
    (5, 2, 1, 1, 1, 1),  # 1.25
    (-5, 2, -2, -1, -1, -1),  # -1.25
    # ties
    (6, 2, 1, 1, 2, 2),  # 1.5
    (2, 2, 0, 0, 1, 0),  # 0.5
    (10, 2, 2, 2, 3, 2),  # 2.5
    (-2, 2, -1, 0, 0, 0),  # -0.5
    (-6, 2, -2, -1, -1, -2),  # -1.5
    (-10, 2, -3, -2, -2, -2),  # -2.5
    (1, 1, 0, 0, 1, 0),  # 0.5
    (3, 1, 1, 1, 2, 2),  # 1.5
    (-1, 1, -1, 0, 0, 0),  # -0.5
    (-3, 1, -2, -1, -1, -2),  # -1.5
    # above half
    (7, 2, 1, 1, 2, 2),  # 1.75
    (-7, 2, -2, -1, -2, -2),  # -1.75
    # r = 0 is the identity
    (7, 0, 7, 7, 7, 7),
    (-7, 0, -7, -7, -7, -7),
    # int64 extremes stay exact
    (2**61 + 2**10, 10, 2**51 + 1, 2**51 + 1, 2**51 + 1, 2**51 + 1),
    (-(2**62), 62, -1, -1, -1, -1),
]


@pytest.mark.parametrize("x, r, floor, trunc, half_up, half_even", SHIFT_TABLE)
def test_shift_table(x, r, floor, trunc, half_up, half_even):
    assert int(R.floor_shift(x, r)) == floor
    assert int(R.trunc_shift(x, r)) == trunc
    assert int(R.round_half_up_shift(x, r)) == half_up
    assert int(R.round_half_even_shift(x, r)) == half_even


# (num, den, floor, trunc, half_up, half_even)
DIV_TABLE = [
    (7, 7, 1, 1, 1, 1),
    (0, 5, 0, 0, 0, 0),
    (1, 3, 0, 0, 0, 0),  # 0.333
    (2, 3, 0, 0, 1, 1),  # 0.667
    (3, 2, 1, 1, 2, 2),  # 1.5 tie
    (5, 2, 2, 2, 3, 2),  # 2.5 tie
    (-3, 2, -2, -1, -1, -2),  # -1.5 tie
    (-5, 2, -3, -2, -2, -2),  # -2.5 tie
    (-1, 3, -1, 0, 0, 0),
    (-2, 3, -1, 0, -1, -1),
    (127, 128, 0, 0, 1, 1),
    (64, 128, 0, 0, 1, 0),  # 0.5 tie
    (191, 127, 1, 1, 2, 2),  # 1.504
    (190, 127, 1, 1, 1, 1),  # 1.496
    (2**55 + 1, 3, (2**55 + 1) // 3, (2**55 + 1) // 3, (2**55 + 1) // 3, (2**55 + 1) // 3),
]


@pytest.mark.parametrize("num, den, floor, trunc, half_up, half_even", DIV_TABLE)
def test_div_table(num, den, floor, trunc, half_up, half_even):
    assert int(R.div_floor(num, den)) == floor
    assert int(R.div_trunc(num, den)) == trunc
    assert int(R.div_round_half_up(num, den)) == half_up
    assert int(R.div_round_half_even(num, den)) == half_even


# (num, den, ceil) -- exact, below/above half, ties, negatives, the reciprocal of a softmax row sum.
CEIL_TABLE = [
    (7, 7, 1),
    (0, 5, 0),
    (1, 3, 1),
    (2, 3, 1),
    (3, 2, 2),
    (-3, 2, -1),
    (-1, 3, 0),
    (-7, 7, -1),
    (1 << 16, 3, 21846),
    (1 << 16, 1 << 16, 1),
    (1 << 16, (1 << 16) + 1, 1),
    (2**61, 3, (2**61 + 2) // 3),
]


@pytest.mark.parametrize("num, den, ceil", CEIL_TABLE)
def test_div_ceil_table(num, den, ceil):
    assert int(R.div_ceil(num, den)) == ceil
    if num >= 0:
        assert int(R.div_ceil(num, den)) == (num + den - 1) // den


def test_div_ceil_exhaustive_against_fractions():
    x = np.arange(-300, 301)
    for den in range(1, 20):
        assert R.div_ceil(x, den).tolist() == [-((-int(v)) // den) for v in x], den


def _exact(num: int, den: int, mode: str) -> int:
    f = Fraction(num, den)
    fl = f.numerator // f.denominator
    frac = f - fl
    if mode == "floor":
        return fl
    if mode == "trunc":
        return fl if f >= 0 or frac == 0 else fl + 1
    if mode == "half_up":
        return fl + (1 if frac >= Fraction(1, 2) else 0)
    if mode == "half_even":
        if frac > Fraction(1, 2) or (frac == Fraction(1, 2) and fl % 2 == 1):
            return fl + 1
        return fl
    raise AssertionError(mode)


def test_exhaustive_against_fractions():
    x = np.arange(-300, 301)
    for r in range(0, 7):
        for fn, mode in ((R.floor_shift, "floor"), (R.trunc_shift, "trunc"),
                         (R.round_half_up_shift, "half_up"), (R.round_half_even_shift, "half_even")):
            assert fn(x, r).tolist() == [_exact(int(v), 2**r, mode) for v in x], (mode, r)
    for den in range(1, 20):
        for fn, mode in ((R.div_floor, "floor"), (R.div_trunc, "trunc"),
                         (R.div_round_half_up, "half_up"), (R.div_round_half_even, "half_even")):
            assert fn(x, den).tolist() == [_exact(int(v), den, mode) for v in x], (mode, den)


def test_mean_division_equals_shift_for_powers_of_two():
    s = np.arange(0, 5000)
    for k in range(0, 9):
        assert np.array_equal(R.div_round_half_up(s, 2**k), R.round_half_up_shift(s, k))


def test_broadcasting_of_shift_arrays():
    x = np.array([[5], [-5]])
    r = np.array([0, 1, 2])
    assert R.round_half_up_shift(x, r).tolist() == [[5, 3, 1], [-5, -2, -1]]
    assert R.round_half_even_shift(x, r).tolist() == [[5, 2, 1], [-5, -2, -1]]


# (x, bits, signed, saturated, wrapped)
SAT_TABLE = [
    (0, 2, True, 0, 0),
    (1, 2, True, 1, 1),
    (2, 2, True, 1, -2),
    (-2, 2, True, -2, -2),
    (-3, 2, True, -2, 1),
    (127, 8, True, 127, 127),
    (128, 8, True, 127, -128),
    (-128, 8, True, -128, -128),
    (-129, 8, True, -128, 127),
    (10**6, 16, True, 32767, 10**6 - 15 * 65536),
    (-(10**6), 16, True, -32768, -(10**6) + 15 * 65536),
    (255, 8, False, 255, 255),
    (256, 8, False, 255, 0),
    (-1, 8, False, 0, 255),
    (2**40, 32, True, 2**31 - 1, 0),
]


@pytest.mark.parametrize("x, bits, signed, saturated, wrapped", SAT_TABLE)
def test_saturate_and_wrap(x, bits, signed, saturated, wrapped):
    assert int(R.saturate(x, bits, signed=signed)) == saturated
    assert int(R.wrap(x, bits, signed=signed)) == wrapped


def test_clamp():
    assert R.clamp([-9, -1, 0, 4, 9], -1, 4).tolist() == [-1, -1, 0, 4, 4]
    assert R.clamp([3, 3], [0, 5], [2, 9]).tolist() == [2, 5]


# (x, bits, signed, out of range) -- the same boundaries as SAT_TABLE, integer and float.
RANGE_TABLE = [
    (1, 2, True, False),
    (2, 2, True, True),
    (-2, 2, True, False),
    (-3, 2, True, True),
    (127, 8, True, False),
    (128, 8, True, True),
    (-128, 8, True, False),
    (-129, 8, True, True),
    (255, 8, False, False),
    (256, 8, False, True),
    (-1, 8, False, True),
    (127.0, 8, True, False),
    (128.0, 8, True, True),
    (-129.0, 8, True, True),
    (float("nan"), 8, True, False),
    (float("inf"), 8, True, True),
    (-1e300, 32, True, True),
    (2**61 - 1, 62, True, False),
    (2**61, 62, True, True),
    (-(2**60) - 1, 61, True, True),
]


@pytest.mark.parametrize("x, bits, signed, outside", RANGE_TABLE)
def test_out_of_range_table(x, bits, signed, outside):
    assert bool(R.out_of_range(x, bits, signed=signed)) is outside


def test_out_of_range_is_where_saturate_changes_the_value():
    x = np.arange(-600, 601)
    for bits, signed in ((2, True), (5, True), (8, True), (1, False), (4, False), (9, False)):
        changed = R.saturate(x, bits, signed=signed) != x
        assert np.array_equal(R.out_of_range(x, bits, signed=signed), changed), (bits, signed)


@pytest.mark.parametrize("x, expected", [
    (0.5, 0.0), (1.5, 2.0), (2.5, 2.0), (-0.5, 0.0), (-1.5, -2.0), (-2.5, -2.0), (0.49999999, 0.0),
    (1e15 + 0.5, 1e15), (1e300, 1e300), (-np.inf, -np.inf),
])
def test_round_half_even_float(x, expected):
    got = R.round_half_even(x)
    assert got.dtype == np.float64 and float(got) == expected
    if np.isfinite(x) and abs(x) < 2**62:
        assert float(got) == float(R.rint_half_even(x))


def test_round_half_even_keeps_nan():
    assert np.isnan(R.round_half_even([np.nan])).tolist() == [True]


@pytest.mark.parametrize("x, expected", [
    (0.5, 0), (1.5, 2), (2.5, 2), (3.5, 4), (-0.5, 0), (-1.5, -2), (-2.5, -2),
    (0.49999999, 0), (0.50000001, 1), (-2.4, -2), (1e15 + 0.5, 10**15),
])
def test_rint_half_even(x, expected):
    assert int(R.rint_half_even(x)) == expected


@pytest.mark.parametrize("fn, args, exc, match", [
    (R.floor_shift, (1.5, 1), TypeError, "x must be an integer array"),
    (R.round_half_up_shift, ([1], -1), ValueError, "shift must be in 0..62"),
    (R.round_half_up_shift, ([1], 63), ValueError, "shift must be in 0..62"),
    (R.round_half_even_shift, ([1], 0.5), TypeError, "shift must be an integer"),
    (R.div_round_half_up, ([1], 0), ValueError, "den must be a positive integer"),
    (R.div_round_half_even, ([1], [-2]), ValueError, "den must be a positive integer"),
    (R.div_floor, ([True], 2), TypeError, "num must be an integer array"),
    (R.clamp, ([1], 3, 2), ValueError, "clamp: lo > hi"),
    (R.saturate, ([1], 1), ValueError, "bits must be in 2..62"),
    (R.wrap, ([1], 0), ValueError, "bits must be in 1..62"),
    (R.div_ceil, ([1], 0), ValueError, "den must be a positive integer"),
    (R.div_ceil, ([1.5], 2), TypeError, "num must be an integer array"),
    (R.out_of_range, ([1], 1), ValueError, "bits must be in 2..62"),
    (R.out_of_range, ([1], 63), ValueError, "bits must be in 2..62"),
    (R.out_of_range, ([True], 8), TypeError, "x must be an integer or float array"),
    (R.rint_half_even, ([np.nan],), ValueError, "NaN or Inf"),
    (R.rint_half_even, ([1e300],), ValueError, "beyond the int64 range"),
])
def test_errors(fn, args, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args)
