"""Pure integer rescaling functions with explicit rounding modes.

Every rescale of the numerics contract (``docs/numerics.md``) is one of
these. All functions take integer array_likes (or Python ints), broadcast
numpy-style and return int64 arrays; none of them uses floating point, so
they are exact for every int64 input whose intermediate stays inside int64
(the callers' widths guarantee that, see
:meth:`inhibitron.quant.formats.AttentionFormats.widths`).

Right shifts by ``r`` (division by ``2**r``):

* :func:`floor_shift` -- ``floor(x / 2**r)``; hardware: arithmetic shift.
* :func:`trunc_shift` -- ``trunc(x / 2**r)`` (toward zero); sign-magnitude shift.
* :func:`round_half_up_shift` -- ``floor(x / 2**r + 1/2)``; add ``2**(r-1)``, then
  arithmetic shift (the output rescale of the contract).
* :func:`round_half_even_shift` -- nearest, ties to even.

Division by a positive integer ``den`` (the masked row mean):
:func:`div_round_half_up` ``= floor((2*num + den) / (2*den))``,
:func:`div_round_half_even`, :func:`div_floor`, :func:`div_trunc`,
:func:`div_ceil` (a reciprocal rounded up).

Range limiting: :func:`saturate` (clamp to a ``bits``-wide format),
:func:`clamp`, :func:`out_of_range` (where :func:`saturate` would change a
value; for counting saturations), and :func:`wrap` (what a register
*without* saturation would hold, two's complement; only for tests and
diagnostics).

Float to integer: :func:`rint_half_even` (checked, int64) and
:func:`round_half_even` (float-valued, unchecked; for diagnostics that count
what a quantizer would saturate).

Examples
--------
>>> round_half_up_shift([5, 6, 7, -5, -6, -7], 2).tolist()     # x/4 = 1.25 1.5 1.75 ...
[1, 2, 2, -1, -1, -2]
>>> round_half_even_shift([2, 6, -2, -6], 2).tolist()          # 0.5 1.5 -0.5 -1.5
[0, 2, 0, -2]
>>> div_round_half_up([7, 8, 9], 2).tolist()                   # 3.5 4 4.5
[4, 4, 5]
>>> saturate([-200, 5, 200], 8).tolist()
[-128, 5, 127]
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "MAX_SHIFT",
    "clamp",
    "div_ceil",
    "div_floor",
    "div_round_half_even",
    "div_round_half_up",
    "div_trunc",
    "floor_shift",
    "out_of_range",
    "rint_half_even",
    "round_half_even",
    "round_half_even_shift",
    "round_half_up_shift",
    "saturate",
    "trunc_shift",
    "wrap",
]


#: Largest right shift the shift functions take. Larger shifts need no
#: separate case: :func:`round_half_up_shift` by ``MAX_SHIFT`` already gives 0
#: for every ``|x| < 2**61``, as any larger shift would.
MAX_SHIFT = 62


def _ints(name: str, x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.dtype == np.uint64:
        if arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"{name} has a value above the int64 range")
    return arr.astype(np.int64, copy=False)


def _shift(r) -> np.ndarray:
    r = _ints("shift", r)
    if np.any(r < 0) or np.any(r > MAX_SHIFT):
        raise ValueError(f"shift must be in 0..{MAX_SHIFT}, got {r.tolist()!r}")
    return r


def _den(den) -> np.ndarray:
    den = _ints("den", den)
    if np.any(den <= 0):
        raise ValueError(f"den must be a positive integer, got {den.tolist()!r}")
    return den


def floor_shift(x, r) -> np.ndarray:
    """``floor(x / 2**r)``: arithmetic right shift (round toward minus infinity).

    >>> floor_shift([5, -5, 4, -4], 1).tolist()
    [2, -3, 2, -2]
    """
    return np.right_shift(_ints("x", x), _shift(r))


def trunc_shift(x, r) -> np.ndarray:
    """``trunc(x / 2**r)``: right shift rounding toward zero.

    >>> trunc_shift([5, -5, 4, -4], 1).tolist()
    [2, -2, 2, -2]
    """
    x = _ints("x", x)
    r = _shift(r)
    mag = np.right_shift(np.abs(x), r)
    return np.where(x < 0, -mag, mag)


def round_half_up_shift(x, r) -> np.ndarray:
    """``floor(x / 2**r + 1/2)``: round to nearest, ties toward plus infinity.

    The output rescale of the contract (step 6): add ``2**(r-1)`` then shift
    right arithmetically; ``r = 0`` is the identity.

    >>> round_half_up_shift([1, 2, 3, -1, -2, -3], 1).tolist()   # 0.5 1 1.5 -0.5 -1 -1.5
    [1, 1, 2, 0, -1, -1]
    >>> round_half_up_shift([3, -3], 0).tolist()
    [3, -3]
    """
    x = _ints("x", x)
    r = _shift(r)
    half = np.where(r > 0, np.left_shift(np.int64(1), np.maximum(r - 1, 0)), 0)
    return np.right_shift(x + half, r)


def round_half_even_shift(x, r) -> np.ndarray:
    """``x / 2**r`` rounded to nearest, ties to even (banker's rounding).

    >>> round_half_even_shift([1, 3, 5, -1, -3, -5], 1).tolist()   # 0.5 1.5 2.5 ...
    [0, 2, 2, 0, -2, -2]
    """
    x = _ints("x", x)
    r = _shift(r)
    up = round_half_up_shift(x, r)
    mask = np.left_shift(np.int64(1), r) - 1
    half = np.where(r > 0, np.left_shift(np.int64(1), np.maximum(r - 1, 0)), -1)
    tie = (r > 0) & (np.bitwise_and(x, mask) == half)
    return np.where(tie & (np.bitwise_and(up, 1) == 1), up - 1, up)


def div_floor(num, den) -> np.ndarray:
    """``floor(num / den)`` for ``den > 0``.

    >>> div_floor([7, -7], 2).tolist()
    [3, -4]
    """
    return np.floor_divide(_ints("num", num), _den(den))


def div_trunc(num, den) -> np.ndarray:
    """``trunc(num / den)`` for ``den > 0`` (toward zero).

    >>> div_trunc([7, -7], 2).tolist()
    [3, -3]
    """
    num = _ints("num", num)
    den = _den(den)
    mag = np.floor_divide(np.abs(num), den)
    return np.where(num < 0, -mag, mag)


def div_ceil(num, den) -> np.ndarray:
    """``ceil(num / den)`` for ``den > 0`` (round toward plus infinity).

    For ``num >= 0`` it equals ``(num + den - 1) // den``, the rounded-up
    reciprocal ``ceil(2**k / den)`` of a softmax normalisation.

    >>> div_ceil([7, -7, 6, 0], 2).tolist()
    [4, -3, 3, 0]
    >>> div_ceil(1 << 16, [3, 65536, 65537]).tolist()
    [21846, 1, 1]
    """
    return -np.floor_divide(-_ints("num", num), _den(den))


def div_round_half_up(num, den) -> np.ndarray:
    """``floor((2*num + den) / (2*den))``: ``num/den`` rounded, ties toward plus infinity.

    The masked row mean of the contract (step 2): ``m = S/L`` rounded half up,
    one exact integer division per row (a shift-subtract divider in hardware).
    For ``den = 2**k`` it equals :func:`round_half_up_shift` ``(num, k)``.

    >>> div_round_half_up([0, 1, 2, 3, 4, 5], 3).tolist()   # 0 .33 .67 1 1.33 1.67
    [0, 0, 1, 1, 1, 2]
    >>> div_round_half_up([-3, -2, -1], 2).tolist()          # -1.5 -1 -0.5
    [-1, -1, 0]
    """
    num = _ints("num", num)
    den = _den(den)
    return np.floor_divide(2 * num + den, 2 * den)


def div_round_half_even(num, den) -> np.ndarray:
    """``num/den`` rounded to nearest, ties to even, for ``den > 0``.

    >>> div_round_half_even([1, 3, 5, -1, -3], 2).tolist()   # 0.5 1.5 2.5 -0.5 -1.5
    [0, 2, 2, 0, -2]
    """
    num = _ints("num", num)
    den = _den(den)
    q, rem = np.divmod(num, den)  # num = q*den + rem, 0 <= rem < den
    twice = 2 * rem
    up = (twice > den) | ((twice == den) & (np.bitwise_and(q, 1) == 1))
    return q + up


def clamp(x, lo, hi) -> np.ndarray:
    """``min(max(x, lo), hi)`` elementwise (integers; ``lo <= hi``).

    >>> clamp([-5, 0, 5], -2, 3).tolist()
    [-2, 0, 3]
    """
    x = _ints("x", x)
    lo = _ints("lo", lo)
    hi = _ints("hi", hi)
    if np.any(lo > hi):
        raise ValueError(f"clamp: lo > hi ({lo.tolist()!r} > {hi.tolist()!r})")
    return np.minimum(np.maximum(x, lo), hi)


def _range(bits, signed: bool) -> tuple[int, int]:
    """``(lo, hi)`` of a ``bits``-wide format (checked: 2..62 signed, 1..62 unsigned)."""
    bits = int(bits)
    if bits < (2 if signed else 1) or bits > 62:
        raise ValueError(f"bits must be in {2 if signed else 1}..62, not {bits}")
    lo = -(1 << (bits - 1)) if signed else 0
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    return lo, hi


def saturate(x, bits, *, signed: bool = True) -> np.ndarray:
    """Clamp to the full range of a ``bits``-wide format.

    Signed: ``[-2**(bits-1), 2**(bits-1) - 1]``; unsigned: ``[0, 2**bits - 1]``.

    >>> saturate([-129, -128, 127, 128], 8).tolist()
    [-128, -128, 127, 127]
    >>> saturate([-1, 255, 256], 8, signed=False).tolist()
    [0, 255, 255]
    """
    lo, hi = _range(bits, signed)
    return np.minimum(np.maximum(_ints("x", x), lo), hi)


def out_of_range(x, bits, *, signed: bool = True) -> np.ndarray:
    """Boolean mask: where ``x`` lies outside a ``bits``-wide format.

    True exactly where :func:`saturate` would change an integer value. ``x``
    may be integer or float (e.g. :func:`round_half_even` of ``x / scale``,
    to count what a quantizer saturates); NaN is never out of range.

    >>> out_of_range([-129, -128, 127, 128], 8).tolist()
    [True, False, False, True]
    >>> out_of_range([-1.0, 255.0, 256.0, float("nan")], 8, signed=False).tolist()
    [True, False, True, False]
    """
    lo, hi = _range(bits, signed)
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"x must be an integer or float array, got dtype {arr.dtype}")
    return (arr > hi) | (arr < lo)


def wrap(x, bits, *, signed: bool = True) -> np.ndarray:
    """Keep the low ``bits`` bits (what a register without saturation holds).

    >>> wrap([127, 128, -129, 256], 8).tolist()
    [127, -128, 127, 0]
    >>> wrap([-1, 256], 8, signed=False).tolist()
    [255, 0]
    """
    bits = int(bits)
    if bits < 1 or bits > 62:
        raise ValueError(f"bits must be in 1..62, not {bits}")
    low = np.bitwise_and(_ints("x", x), (1 << bits) - 1)
    if signed:
        low = np.where(low >= (1 << (bits - 1)), low - (1 << bits), low)
    return low


def rint_half_even(x) -> np.ndarray:
    """Float to integer, round half to even (``numpy.rint``), as int64.

    The rounding of every float-to-code conversion (input quantization,
    ``theta = rint(delta / s_z)``, weight quantization). NaN/Inf are errors.

    >>> rint_half_even([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999]).tolist()
    [0, 2, 2, 0, -2, 2]
    """
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("rint_half_even: input contains NaN or Inf")
    if np.any(np.abs(x) >= 2.0**62):
        raise ValueError("rint_half_even: input beyond the int64 range")
    return np.rint(x).astype(np.int64)


def round_half_even(x) -> np.ndarray:
    """Float to the nearest integer, ties to even (``numpy.rint``), as float64.

    The rounding of :func:`rint_half_even` without its checks: NaN and Inf
    pass through and there is no int64 range limit. For diagnostics (how many
    values would a quantizer saturate, with :func:`out_of_range`), never for
    codes that enter the datapath.

    >>> round_half_even([0.5, 1.5, 2.5, -0.5, -1.5, 1e300]).tolist()
    [0.0, 2.0, 2.0, -0.0, -2.0, 1e+300]
    """
    return np.rint(np.asarray(x, dtype=np.float64))
