"""Bit-true integer golden model of the dot-product attention *baseline* core.

The baseline is what the inhibitor is compared against in the efficiency
study: ordinary softmax attention ``softmax(Q K^T / sqrt(d)) V`` on the same
integer inputs, with an I-BERT style integer softmax (Kim et al., "I-BERT:
Integer-only BERT Quantization", ICML 2021, Sec. 3.4): exp by a shift plus a
second-order polynomial, normalisation by an integer reciprocal from a
sequential divider (once per row) and one multiply per element. The contract
is written down in ``docs/baseline.md``; this module and the RTL
(:class:`inhibitron.hw.baseline.DotProductAttentionCore`) implement it. All
arithmetic is numpy int64; for one head (rows ``i``, keys ``j``, valid keys
``j < L``)::

    1. s[i,j]  = sum_k q[i,k] * k[j,k]                        signed, exact
    2. mx[i]   = max_{j<L} s[i,j]
    3. u[i,j]  = ((mx[i] - s[i,j]) * M) >> SH                 u >= 0, "x * S / ln2" in units 2**-F
    4. zq      = u >> F,  r = u & (2**F - 1)
       e[i,j]  = ((B - r)**2 + C) >> zq   if zq < E_BITS  else 0          (j < L)
       e[i,j]  = 0                                                         (j >= L)
    5. sum[i]  = sum_j e[i,j];  rec[i] = ceil(2**RB / sum[i])             (sequential divider)
    6. p[i,j]  = (e[i,j] * rec[i] + 2**(RB-PF-1)) >> (RB - PF)  0 <= p <= 2**PF
    7. acc[i,l]= sum_j p[i,j] * v[j,l]
    8. h[i,l]  = clamp((acc + (2**(r-1) if r else 0)) >> r, out range)    r = out_shift

Every shift, division and saturation is a :mod:`inhibitron.quant.rounding`
function: ``floor_shift`` (steps 3, 4), ``div_ceil`` (5), ``round_half_up_shift``
(6, 8) and ``saturate`` (8).

Constants (``F = 7``, I-BERT's ``a = 0.3585``, ``b = 1.353``, ``c = 0.344``):
``B = round(b * 2**F / ln 2) = 250``, ``C = round(c / (a * (ln 2 / 2**F)**2)) = 32722``,
``E_BITS = 17`` (``(B)**2 + C < 2**17``), ``RB = 32``, ``PF = p_bits - 1`` (``p_bits = 8``).
Per head: ``M`` (unsigned ``m_bits = 16``), the score scale folded with
``1/sqrt(d)`` and ``1/ln 2``: the float softmax argument is ``s * S`` with
``S = M * ln 2 / 2**(F + SH)``; ``SH = score_shift = 16`` is fixed per core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import rounding

__all__ = [
    "IBERT_A", "IBERT_B", "IBERT_C",
    "SoftmaxConstants",
    "BaselineTrace",
    "baseline_attention_int",
    "float_softmax_attention",
    "score_mult_for_scale",
    "error_bound_lsb",
]

#: I-BERT second-order polynomial ``exp(p) ~ a (p + b)**2 + c`` on ``p in (-ln 2, 0]``.
IBERT_A = 0.3585
IBERT_B = 1.353
IBERT_C = 0.344


@dataclass(frozen=True)
class SoftmaxConstants:
    """Integer constants of the integer softmax (all derived from three choices).

    Parameters
    ----------
    exp_frac_bits : int
        ``F``: ``u`` counts units of ``ln 2 / 2**F`` (default 7).
    score_shift : int
        ``SH``: right shift after the score multiplier ``M`` (default 16).
    recip_bits : int
        ``RB``: the reciprocal is ``floor(2**RB / sum)`` (default 32).
    p_bits : int
        Unsigned width of the softmax weights ``p`` (default 8; ``PF = p_bits - 1``).
    m_bits : int
        Unsigned width of the per-head score multiplier ``M`` (default 16).
    """

    exp_frac_bits: int = 7
    score_shift: int = 16
    recip_bits: int = 32
    p_bits: int = 8
    m_bits: int = 16

    def __post_init__(self):
        for name, lo, hi in (("exp_frac_bits", 2, 12), ("score_shift", 0, 40),
                             ("recip_bits", 8, 48), ("p_bits", 2, 17), ("m_bits", 1, 24)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"{name} must be an integer in {lo}..{hi}, not {v!r}")
        if self.recip_bits <= self.e_bits:
            raise ValueError(f"recip_bits must exceed e_bits={self.e_bits}, not {self.recip_bits}")
        if self.e_bits >= self.recip_bits - self.p_frac - 1:
            raise ValueError(f"recip_bits - p_bits must exceed e_bits={self.e_bits} so that "
                             f"p <= 2**(p_bits-1); got recip_bits={self.recip_bits}, "
                             f"p_bits={self.p_bits}")

    @property
    def B(self) -> int:
        """``round(b * 2**F / ln 2)``."""
        return round(IBERT_B * 2 ** self.exp_frac_bits / math.log(2))

    @property
    def C(self) -> int:
        """``round(c / (a * (ln 2 / 2**F)**2))``."""
        return round(IBERT_C / (IBERT_A * (math.log(2) / 2 ** self.exp_frac_bits) ** 2))

    @property
    def e_max(self) -> int:
        """Largest exp code, ``B**2 + C`` (at ``u = 0``)."""
        return self.B ** 2 + self.C

    @property
    def e_bits(self) -> int:
        """Unsigned width of the exp codes ``e``."""
        return self.e_max.bit_length()

    @property
    def p_frac(self) -> int:
        """``PF = p_bits - 1``: ``p = 2**PF`` means weight 1."""
        return self.p_bits - 1

    def exp_int(self, u) -> np.ndarray:
        """Step 4 for non-negative ``u`` (int64 array): the integer exp codes."""
        u = np.asarray(u, dtype=np.int64)
        f = self.exp_frac_bits
        zq = rounding.floor_shift(u, f)  # whole halvings
        r = u & ((1 << f) - 1)  # fraction, units of ln 2 / 2**F
        poly = (self.B - r) ** 2 + self.C
        return np.where(zq < self.e_bits, rounding.floor_shift(poly, np.minimum(zq, self.e_bits)), 0)

    def exp_rel_error(self) -> float:
        """Largest relative error of the polynomial stage, ``max_r |poly(r) a S**2 / exp(-r S) - 1|``,
        ``S = ln 2 / 2**F``, over every ``r`` in ``0 .. 2**F - 1`` (exact enumeration)."""
        s = math.log(2) / 2 ** self.exp_frac_bits
        r = np.arange(2 ** self.exp_frac_bits)
        poly = (self.B - r) ** 2 + self.C
        return float(np.max(np.abs(poly * IBERT_A * s * s / np.exp(-r * s) - 1.0)))


DEFAULT_CONSTANTS = SoftmaxConstants()


class BaselineTrace(NamedTuple):
    """Intermediates of :func:`baseline_attention_int` (int64; shapes ``(..., n_q, n_k)``
    for ``s``, ``e``, ``p``; ``(..., n_q)`` for ``mx``, ``row_sum``, ``recip``;
    ``(..., n_q, d)`` for ``acc`` and ``h``)."""

    s: np.ndarray
    mx: np.ndarray
    e: np.ndarray
    row_sum: np.ndarray
    recip: np.ndarray
    p: np.ndarray
    acc: np.ndarray
    h: np.ndarray


def _ints(name, x, bits, signed=True) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    bad = (arr < lo) | (arr > hi)
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}[{idx}] = {int(arr[idx])} is outside the "
                         f"{'signed' if signed else 'unsigned'} {bits}-bit range [{lo}, {hi}]")
    return arr


def baseline_attention_int(q, k, v, valid_len, *, score_mult, out_shift, qk_bits: int = 8,
                           v_bits: int = 8, out_bits: int = 8,
                           constants: SoftmaxConstants = DEFAULT_CONSTANTS,
                           return_trace: bool = False):
    """Integer softmax attention of one head, bit-exact to ``docs/baseline.md``.

    Parameters
    ----------
    q, k : int array_like, shape (n, d)
        Query and key codes, signed ``qk_bits``.
    v : int array_like, shape (n, d)
        Value codes, signed ``v_bits``.
    valid_len : int
        ``L`` in ``1..n``: keys ``j >= L`` are padding (weight 0).
    score_mult : int
        ``M``, unsigned ``constants.m_bits`` (see :func:`score_mult_for_scale`).
    out_shift : int
        ``r >= 0``; ``r = PF`` gives ``h`` in the units of ``v``.
    qk_bits, v_bits, out_bits : int
        Formats.
    constants : SoftmaxConstants
    return_trace : bool
        Return a :class:`BaselineTrace` instead of ``h``.

    Returns
    -------
    h : int64 ndarray, shape (n, d)
        Signed ``out_bits`` output codes (saturated). All ``n`` query rows are
        computed (rows ``i >= L`` follow the same formulas).

    Raises
    ------
    TypeError, ValueError
        Non-integer input, a code out of its format (named, with its index),
        mismatched shapes, ``valid_len`` outside ``1..n``, ``score_mult`` or
        ``out_shift`` out of range.

    Examples
    --------
    One valid key: its weight is exactly 1 (``p = 2**7``) and ``h = v[0]``:

    >>> baseline_attention_int([[1, 2]], [[3, 4]], [[5, -6]], 1, score_mult=1000,
    ...                        out_shift=7).tolist()
    [[5, -6]]
    """
    cst = constants
    q = _ints("q", q, qk_bits)
    k = _ints("k", k, qk_bits)
    v = _ints("v", v, v_bits)
    if q.ndim != 2 or k.ndim != 2 or v.ndim != 2:
        raise ValueError(f"q, k, v must be 2-D (n, d), got shapes {q.shape}, {k.shape}, {v.shape}")
    n, d = k.shape
    if q.shape[1] != d:
        raise ValueError(f"q and k must share the head dimension: {q.shape} vs {k.shape}")
    if v.shape[0] != n:
        raise ValueError(f"k and v must have the same number of keys: {k.shape} vs {v.shape}")
    L = int(valid_len)
    if not 1 <= L <= n:
        raise ValueError(f"valid_len must be in 1..{n}, not {valid_len!r}")
    M = int(score_mult)
    if not 0 <= M < (1 << cst.m_bits):
        raise ValueError(f"score_mult must be an unsigned {cst.m_bits}-bit integer, not {score_mult!r}")
    r = int(out_shift)
    if not 0 <= r <= 63:
        raise ValueError(f"out_shift must be in 0..63, not {out_shift!r}")

    s = q @ k.T  # (n_q, n_k)  int64, exact
    valid = np.arange(n) < L  # (n_k,)
    mx = np.where(valid[None, :], s, np.iinfo(np.int64).min).max(axis=1)  # (n_q,)
    u = rounding.floor_shift((mx[:, None] - s) * M, cst.score_shift)  # (n_q, n_k), >= 0 on valid keys
    e = np.where(valid[None, :], cst.exp_int(np.maximum(u, 0)), 0)
    row_sum = e.sum(axis=1)  # (n_q,) >= e_max > 0 (the max key has u = 0)
    recip = rounding.div_ceil(1 << cst.recip_bits, row_sum)  # (n_q,)
    p = rounding.round_half_up_shift(e * recip[:, None], cst.recip_bits - cst.p_frac)  # (n_q, n_k) in 0..2**PF
    acc = p @ v  # (n_q, d)
    # r >= 62 rounds every |acc| < 2**61 to 0 (acc is far narrower: |p| <= 2**PF, n * |v|max),
    # so capping r at rounding.MAX_SHIFT changes no result for r = 63.
    h = rounding.saturate(rounding.round_half_up_shift(acc, min(r, rounding.MAX_SHIFT)), out_bits)
    if return_trace:
        return BaselineTrace(s, mx, e, row_sum, recip, p, acc, h)
    return h


def score_mult_for_scale(score_scale: float, constants: SoftmaxConstants = DEFAULT_CONSTANTS) -> int:
    """``M = round(S * 2**(F + SH) / ln 2)`` for a float softmax-argument scale ``S``
    (``S = s_q * s_k / sqrt(d)``), clamped to ``1 .. 2**m_bits - 1``."""
    if not score_scale > 0:
        raise ValueError(f"score_scale must be > 0, not {score_scale!r}")
    m = round(score_scale * 2 ** (constants.exp_frac_bits + constants.score_shift) / math.log(2))
    return int(min(max(m, 1), (1 << constants.m_bits) - 1))


def float_softmax_attention(q, k, v, valid_len, *, score_mult, out_shift,
                            constants: SoftmaxConstants = DEFAULT_CONSTANTS) -> np.ndarray:
    """The float64 softmax attention the integer model approximates, in output LSBs.

    ``h = 2**(PF - r) * softmax_j(s[i,j] * S) @ v`` over the valid keys, with
    ``S = M ln 2 / 2**(F + SH)`` exactly the scale the integer model uses (so
    only the approximations of the integer softmax are measured, not input
    quantisation), no rounding, no saturation.
    """
    cst = constants
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    L = int(valid_len)
    S = score_mult * math.log(2) / 2 ** (cst.exp_frac_bits + cst.score_shift)
    x = (q @ k[:L].T) * S  # (n_q, L)
    x -= x.max(axis=1, keepdims=True)
    w = np.exp(x)
    w /= w.sum(axis=1, keepdims=True)
    return (w @ v[:L]) * 2.0 ** (cst.p_frac - out_shift)


def error_bound_lsb(*, valid_len: int, n: int, v_max_abs: int, out_shift: int,
                    constants: SoftmaxConstants = DEFAULT_CONSTANTS) -> float:
    """Worst-case ``|h_int - h_float|`` in output LSBs (before saturation).

    ``0.5`` (final rounding) plus ``|v|max * 2**(PF - r)`` times the total
    error of the weights ``sum_j |p_j / 2**PF - w_j|``, which is at most:

    * ``2 eps / (1 - eps)`` from a relative error ``eps`` of every exp code,
      ``1 + eps = (1 + eps_poly) * exp(ln 2 / 2**F)`` (``eps_poly`` the exact
      maximum of the polynomial stage; the second factor is the floor of ``u``);
    * ``2 L / e_max`` from the floor of ``poly >> zq`` (at most 1 per key,
      the row sum is at least ``e_max``);
    * ``n 2**e_bits / 2**RB`` from the rounding up of the reciprocal;
    * ``L / 2**(PF + 1)`` from the rounding of ``p``.

    The test suite checks it on random and extreme inputs.
    """
    cst = constants
    eps = (1 + cst.exp_rel_error()) * math.exp(math.log(2) / 2 ** cst.exp_frac_bits) - 1
    weights = (2 * eps / (1 - eps) + 2 * valid_len / cst.e_max
               + n * 2 ** cst.e_bits / 2 ** cst.recip_bits + valid_len / 2 ** (cst.p_frac + 1))
    return 0.5 + v_max_abs * 2.0 ** (cst.p_frac - out_shift) * weights
