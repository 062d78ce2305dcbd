"""Length normalisation's exponent ``e(L) = round(log2 L)``, exactly in integers (no torch).

Shared by the float module (:mod:`inhibitron.model.attention`, torch) and the
integer golden model (:mod:`inhibitron.quant.golden`, numpy).
"""

from __future__ import annotations

import math

__all__ = ["LENGTH_NORMS", "length_exponent", "length_thresholds"]

#: Per-sequence output normalisations: none, or ``2**-round(log2 L)``
#: (:mod:`inhibitron.model.attention`).
LENGTH_NORMS = ("none", "pow2")


def length_thresholds(count: int) -> list[int]:
    """The first ``count`` lengths at which ``e(L)`` steps up: 2, 3, 6, 12, 23, 46, 91, 182, ...

    Threshold ``k`` is ``isqrt(2**(2k+1)) + 1``, the least ``L`` with
    ``L**2 > 2**(2k+1)``; ``e(L)`` is the number of thresholds ``L`` reaches.
    """
    return [math.isqrt(1 << (2 * k + 1)) + 1 for k in range(count)]


def length_exponent(length: int) -> int:
    """``e(L) = round(log2 L)`` for a valid length ``L >= 1``, computed exactly in integers.

    ``e(L)`` is the number of ``k >= 0`` with ``L**2 > 2**(2k+1)``, i.e. the
    number of :func:`length_thresholds` that ``L`` reaches (a comparator bank
    in hardware). **Ties cannot occur**: ``log2 L`` is a half-integer only if
    ``L**2`` is an odd power of two, which no integer square is. ``e(1) = 0``
    (factor 1).

    >>> [length_exponent(n) for n in (1, 2, 3, 5, 6, 11, 12, 22, 23, 45, 46, 90, 91, 128)]
    [0, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]

    Raises
    ------
    ValueError
        ``length`` is not an integer >= 1.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be an integer >= 1, not {length!r}")
    e = length.bit_length() - 1  # floor(log2 L)
    return e + 1 if length * length > 1 << (2 * e + 1) else e
