"""Integer formats of an inhibitor-attention layer and every width derived from them.

This module is the single source of truth for *what the numbers are*; the
contract they obey is ``docs/numerics.md``. Everything here is a typed,
validated, frozen dataclass, numpy only (no torch):

* :class:`IntFormat` -- a two's-complement (or unsigned) integer format with
  its full code range and symmetric float quantize/dequantize helpers.
* :class:`AttentionFormats` -- the three user-chosen widths of the attention
  core (``qk_bits``, ``v_bits``, ``out_bits``) and, via
  :meth:`AttentionFormats.widths`, every derived internal width
  (:class:`DatapathWidths`) so that nothing can overflow.
* :func:`check_code_bits` -- the one validated range of a code width
  (``CODE_BITS_MIN..CODE_BITS_MAX``) for every entry point.

The per-layer quantization records (:class:`HeadQuant`, :class:`LayerQuant`)
are in :mod:`inhibitron.quant.layer_quant` (also importable from here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

__all__ = [
    "CODE_BITS_MAX",
    "CODE_BITS_MIN",
    "MAX_DATAPATH_BITS",
    "check_code_bits",
    "AttentionFormats",
    "DatapathWidths",
    "IntFormat",
    "signed_bits",
    "unsigned_bits",
]

#: Widest internal value the golden model (numpy int64) and the contract allow.
#: Checked by :meth:`AttentionFormats.widths`; 62 leaves one bit of headroom
#: for the rounding adder of the output stage.
MAX_DATAPATH_BITS = 62

#: The legal range of every user-chosen code width (``qk_bits``, ``v_bits``,
#: ``out_bits``) at every entry point: formats, core and baseline configs, CLI.
#: A configuration can still be refused when a *derived* width exceeds
#: :data:`MAX_DATAPATH_BITS` (the message names that width).
CODE_BITS_MIN, CODE_BITS_MAX = 2, 32


def _check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, not {value}")
    return value


def check_code_bits(name: str, value) -> int:
    """Check one user-chosen signed code width: an integer in ``CODE_BITS_MIN..CODE_BITS_MAX``.

    Returns the width as an ``int``; the error names ``name`` and the range.

    >>> check_code_bits("qk_bits", 8)
    8
    >>> check_code_bits("v_bits", 1)
    Traceback (most recent call last):
    ...
    ValueError: v_bits must be in 2..32 (a signed code width), not 1
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not CODE_BITS_MIN <= int(value) <= CODE_BITS_MAX:
        raise ValueError(f"{name} must be in {CODE_BITS_MIN}..{CODE_BITS_MAX} "
                         f"(a signed code width), not {value}")
    return int(value)


def _check_float(name: str, value, *, positive: bool = False, nonzero: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, not {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, not {value!r}")
    if nonzero and value == 0:
        raise ValueError(f"{name} must be nonzero, not {value!r}")
    return value


def unsigned_bits(max_value: int) -> int:
    """Bits of an unsigned register that holds every integer in ``[0, max_value]``.

    >>> [unsigned_bits(v) for v in (0, 1, 2, 255, 256)]
    [1, 1, 2, 8, 9]
    """
    max_value = _check_int("max_value", max_value, minimum=0)
    return max(1, max_value.bit_length())


def signed_bits(min_value: int, max_value: int) -> int:
    """Bits of a two's-complement register that holds every integer in ``[min_value, max_value]``.

    >>> [signed_bits(-128, 127), signed_bits(-129, 0), signed_bits(0, 128), signed_bits(0, 0)]
    [8, 9, 9, 1]
    """
    min_value = _check_int("min_value", min_value)
    max_value = _check_int("max_value", max_value)
    if min_value > max_value:
        raise ValueError(f"min_value {min_value} > max_value {max_value}")
    need_neg = (-min_value - 1).bit_length() + 1 if min_value < 0 else 1
    need_pos = max_value.bit_length() + 1 if max_value > 0 else 1
    return max(need_neg, need_pos)


# ---------------------------------------------------------------------------
# IntFormat
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IntFormat:
    """An integer format: ``bits`` wide, two's complement when ``signed``.

    Full range: signed ``[-2**(bits-1), 2**(bits-1) - 1]``, unsigned
    ``[0, 2**bits - 1]`` (no code is reserved; symmetric float quantization
    simply never produces ``qmin`` of a signed format unless it saturates).

    Parameters
    ----------
    bits : int
        Width in bits, 1..62 (2..62 when signed).
    signed : bool
        Two's complement (default) or unsigned.

    Examples
    --------
    >>> f = IntFormat(8)
    >>> f.qmin, f.qmax
    (-128, 127)
    >>> f.quantize([0.5, 1.5, -2.5, 300.0], scale=1.0).tolist()   # rint: half to even, saturate
    [0, 2, -2, 127]
    >>> f.dequantize([2, -2], scale=0.25).tolist()
    [0.5, -0.5]
    """

    bits: int  # width in bits
    signed: bool = True  # two's complement when True

    def __post_init__(self):
        if not isinstance(self.signed, (bool, np.bool_)):
            raise TypeError(f"signed must be a bool, not {self.signed!r}")
        object.__setattr__(self, "signed", bool(self.signed))
        lo = 2 if self.signed else 1
        object.__setattr__(self, "bits", _check_int("bits", self.bits, minimum=lo, maximum=MAX_DATAPATH_BITS))

    @property
    def qmin(self) -> int:
        """Smallest code."""
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        """Largest code."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def dtype(self) -> np.dtype:
        """Smallest numpy integer dtype that holds every code (for storage)."""
        width = next(w for w in (8, 16, 32, 64) if self.bits <= w)
        return np.dtype(f"int{width}" if self.signed else f"uint{width}")

    def __str__(self) -> str:
        return f"{'s' if self.signed else 'u'}{self.bits}"

    def contains(self, codes) -> np.ndarray:
        """Elementwise: is each code inside ``[qmin, qmax]``? (bool array)"""
        codes = np.asarray(codes)
        return (codes >= self.qmin) & (codes <= self.qmax)

    def check(self, name: str, codes) -> np.ndarray:
        """Return ``codes`` as int64 after checking they are integers inside the format.

        Raises
        ------
        TypeError
            ``codes`` is not an integer array.
        ValueError
            A code is out of range; the message names ``name``, the first bad
            index, its value and the format's range.
        """
        arr = np.asarray(codes)
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{name} must be an integer array of {self} codes, got dtype {arr.dtype}")
        if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            bad = np.argwhere(arr > np.iinfo(np.int64).max)[0]
            raise ValueError(
                f"{name} has code {int(arr[tuple(bad)])} at index {tuple(int(i) for i in bad)}, "
                f"outside the {self} range [{self.qmin}, {self.qmax}]"
            )
        arr = arr.astype(np.int64, copy=False)
        ok = self.contains(arr)
        if not ok.all():
            bad = tuple(int(i) for i in np.argwhere(~ok)[0])
            raise ValueError(
                f"{name} has code {int(arr[bad])} at index {bad}, "
                f"outside the {self} range [{self.qmin}, {self.qmax}]"
            )
        return arr

    def quantize(self, x, scale) -> np.ndarray:
        """Float to codes: ``clip(rint(x / scale), qmin, qmax)`` as int64.

        Rounding is numpy ``rint``: round half to even (the only float-to-int
        rounding of the project, see ``docs/numerics.md``). Saturates.

        Parameters
        ----------
        x : array_like, float
            Values; must be finite.
        scale : float or array_like broadcastable to ``x``
            Positive float LSB size(s).
        """
        x = np.asarray(x, dtype=np.float64)
        scale = np.asarray(scale, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("quantize: x contains NaN or Inf")
        if not np.all(np.isfinite(scale)) or not np.all(scale > 0):
            raise ValueError(f"quantize: scale must be finite and > 0, got {scale!r}")
        return np.clip(np.rint(x / scale), self.qmin, self.qmax).astype(np.int64)

    def dequantize(self, codes, scale) -> np.ndarray:
        """Codes to float64: ``codes * scale``."""
        return np.asarray(codes, dtype=np.float64) * np.asarray(scale, dtype=np.float64)


# ---------------------------------------------------------------------------
# AttentionFormats and derived widths
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DatapathWidths:
    """Every internal width of the attention core for one configuration.

    Derived by :meth:`AttentionFormats.widths` from the exact value range of
    each quantity (so each is tight for power-of-two ``d`` and ``n``); the
    closed-form upper bounds are given per member. ``D = ceil(log2 d)``,
    ``N = ceil(log2 n)``, ``a``/``b``/``r`` the shifts.

    Members
    -------
    z_bits : int
        Unsigned score ``z = sum_k |q - k|`` in ``[0, d*(2**qk_bits - 1)]``;
        ``<= qk_bits + D``. (The difference ``q - k`` is signed ``qk_bits + 1``,
        its absolute value unsigned ``qk_bits``.)
    sum_bits : int
        Unsigned row sum ``S`` of up to ``n`` scores; ``<= z_bits + N``.
    divider_bits : int
        Unsigned numerator ``2*S + L`` of the rounded mean; ``<= sum_bits + 2``.
    mean_bits : int
        Unsigned mean ``m`` in ``[0, z_max]``; ``= z_bits``.
    theta_bits : int
        Signed threshold constant ``theta`` in ``[-2**z_bits, 2**z_bits - 1]``;
        ``= z_bits + 1``.
    threshold_bits : int
        Signed ``t = m + theta``; ``<= z_bits + 2``.
    zb_bits : int
        Unsigned ``zb = max(z - t, 0)`` before clipping; ``<= z_bits + 2``.
    zb_clip : int
        The value-identical clip of ``zb << b`` before the mixing PEs:
        ``2**(v_bits - 1 + a)`` (every summand is 0 beyond it).
    mix_bits : int
        Signed mixing operands ``v << a``, ``min(zb << b, zb_clip)`` and the
        soft-threshold result; ``= v_bits + a + 1`` for the clipped ``zb``
        (it reaches ``+2**(v_bits-1+a)``), the summand itself fits ``v_bits + a``.
    acc_bits : int
        Signed accumulator of ``n`` summands; ``<= v_bits + a + N``.
    round_bits : int
        Signed ``acc + 2**(r-1)`` of the output rounding; ``<= max(acc_bits, r) + 1``
        (``acc_bits + 1`` whenever ``r <= acc_bits``).
    length_bits : int
        Unsigned valid length ``L`` in ``[0, n]`` (the descriptor field and the
        mask compare); ``= bits(n)``.
    shift_bits : int
        Unsigned output shift ``r`` in ``[0, acc_bits]`` (the descriptor field):
        every ``r >= acc_bits`` rounds every accumulator to 0, so larger shifts
        are never needed; ``= bits(acc_bits)``.
    zb_mix_max : int
        The clip of ``zb`` *before* its shift by ``b``:
        ``ceil(zb_clip / 2**b)``, so ``min(zb, zb_mix_max) << b`` reaches
        ``zb_clip`` and nothing wider is ever formed (a value, not a width).
    zb_mix_bits : int
        Unsigned clipped ``zb`` operand of the mixing PEs: ``bits(zb_mix_max)``.
    """

    z_bits: int
    sum_bits: int
    divider_bits: int
    mean_bits: int
    theta_bits: int
    threshold_bits: int
    zb_bits: int
    zb_clip: int
    mix_bits: int
    acc_bits: int
    round_bits: int
    length_bits: int
    shift_bits: int
    zb_mix_max: int
    zb_mix_bits: int

    @property
    def theta_min(self) -> int:
        """Smallest allowed ``theta``."""
        return -(1 << (self.theta_bits - 1))

    @property
    def theta_max(self) -> int:
        """Largest allowed ``theta``."""
        return (1 << (self.theta_bits - 1)) - 1


@dataclass(frozen=True)
class AttentionFormats:
    """The user-chosen widths of an inhibitor-attention core.

    Parameters
    ----------
    qk_bits : int
        Signed width of the query and key codes (shared scale per head),
        ``CODE_BITS_MIN..CODE_BITS_MAX`` (2..32).
    v_bits : int
        Signed width of the value codes, 2..32.
    out_bits : int
        Signed width of the output codes ``h`` (saturating), 2..32.

    Examples
    --------
    >>> f = AttentionFormats(qk_bits=8, v_bits=8, out_bits=8)
    >>> w = f.widths(head_dim=32, seq_len=128)
    >>> w.z_bits, w.sum_bits, w.acc_bits
    (13, 20, 15)
    >>> f.q.qmin, f.v.qmax, f.out.qmax
    (-128, 127, 127)
    """

    qk_bits: int = 8  # signed width of q and k
    v_bits: int = 8  # signed width of v
    out_bits: int = 8  # signed width of h

    def __post_init__(self):
        for name in ("qk_bits", "v_bits", "out_bits"):
            object.__setattr__(self, name, check_code_bits(name, getattr(self, name)))

    @property
    def q(self) -> IntFormat:
        """Format of ``q`` and ``k``."""
        return IntFormat(self.qk_bits)

    @property
    def k(self) -> IntFormat:
        """Format of ``k`` (same as ``q``)."""
        return IntFormat(self.qk_bits)

    @property
    def v(self) -> IntFormat:
        """Format of ``v``."""
        return IntFormat(self.v_bits)

    @property
    def out(self) -> IntFormat:
        """Format of ``h``."""
        return IntFormat(self.out_bits)

    def z_max(self, head_dim: int) -> int:
        """Largest score ``z``: ``head_dim * (2**qk_bits - 1)``."""
        head_dim = _check_int("head_dim", head_dim, minimum=1)
        return head_dim * ((1 << self.qk_bits) - 1)

    def theta_range(self, head_dim: int) -> tuple[int, int]:
        """Allowed ``theta``: ``[-2**z_bits, 2**z_bits - 1]`` (signed ``z_bits + 1``)."""
        zb = unsigned_bits(self.z_max(head_dim))
        return -(1 << zb), (1 << zb) - 1

    def widths(self, *, head_dim: int, seq_len: int, v_shift: int = 0, z_shift: int = 0,
               out_shift: int = 0) -> DatapathWidths:
        """Derive every internal width (see :class:`DatapathWidths`).

        Parameters
        ----------
        head_dim : int
            ``d``, >= 1.
        seq_len : int
            ``n``, the number of keys (and queries) of the core, >= 1.
        v_shift, z_shift, out_shift : int
            ``a``, ``b``, ``r`` >= 0 (the largest over the heads served).

        Raises
        ------
        ValueError
            A parameter is out of range, or a width exceeds
            :data:`MAX_DATAPATH_BITS` (the message names it and suggests
            smaller shifts or formats).
        """
        d = _check_int("head_dim", head_dim, minimum=1)
        n = _check_int("seq_len", seq_len, minimum=1)
        a = _check_int("v_shift", v_shift, minimum=0)
        b = _check_int("z_shift", z_shift, minimum=0)
        r = _check_int("out_shift", out_shift, minimum=0)
        z_max = self.z_max(d)
        z_bits = unsigned_bits(z_max)
        sum_bits = unsigned_bits(n * z_max)
        divider_bits = unsigned_bits(2 * n * z_max + n)
        theta_min, theta_max = -(1 << z_bits), (1 << z_bits) - 1
        threshold_bits = signed_bits(theta_min, z_max + theta_max)
        zb_bits = unsigned_bits(z_max - theta_min)
        zb_clip = 1 << (self.v_bits - 1 + a)
        v_lo, v_hi = -(1 << (self.v_bits - 1 + a)), ((1 << (self.v_bits - 1)) - 1) << a
        mix_bits = signed_bits(-zb_clip, zb_clip)
        acc_lo, acc_hi = n * v_lo, n * (v_hi - 0)
        acc_bits = signed_bits(acc_lo, acc_hi)
        half = (1 << (r - 1)) if r > 0 else 0
        round_bits = signed_bits(acc_lo, acc_hi + half)
        # zb << b is clipped before it is shifted (min(zb, ceil(zb_clip / 2**b)) << b),
        # so b does not widen the datapath; it only has to stay a sane shift.
        zb_mix_max = -(-zb_clip >> b) if b <= MAX_DATAPATH_BITS else 1
        widths = DatapathWidths(
            z_bits=z_bits, sum_bits=sum_bits, divider_bits=divider_bits, mean_bits=z_bits,
            theta_bits=z_bits + 1, threshold_bits=threshold_bits, zb_bits=zb_bits, zb_clip=zb_clip,
            mix_bits=mix_bits, acc_bits=acc_bits, round_bits=round_bits,
            length_bits=unsigned_bits(n), shift_bits=unsigned_bits(acc_bits),
            zb_mix_max=zb_mix_max, zb_mix_bits=unsigned_bits(zb_mix_max),
        )
        values = ("zb_clip", "zb_mix_max")
        too_wide = [(k, v) for k, v in vars(widths).items() if k not in values and v > MAX_DATAPATH_BITS]
        if b > MAX_DATAPATH_BITS:
            too_wide.append(("z_shift", b))
        if too_wide:
            name, bits = too_wide[0]
            raise ValueError(
                f"{name} would be {bits} bits (qk_bits={self.qk_bits}, v_bits={self.v_bits}, "
                f"d={d}, n={n}, a={a}, b={b}, r={r}); the contract allows at most "
                f"{MAX_DATAPATH_BITS}: use narrower formats or smaller shifts"
            )
        return widths

    def to_dict(self) -> dict[str, int]:
        """Plain-JSON form."""
        return {"qk_bits": self.qk_bits, "v_bits": self.v_bits, "out_bits": self.out_bits}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AttentionFormats":
        """Inverse of :meth:`to_dict`; unknown or missing keys are errors."""
        _check_keys("AttentionFormats", data, {"qk_bits", "v_bits", "out_bits"})
        return cls(**{k: data[k] for k in ("qk_bits", "v_bits", "out_bits")})


def _check_keys(what: str, data: Mapping[str, Any], keys: set[str], optional: set[str] = frozenset()):
    if not isinstance(data, Mapping):
        raise TypeError(f"{what}: expected a mapping, got {type(data).__name__}")
    missing = sorted(keys - set(data))
    unknown = sorted(set(data) - keys - set(optional))
    if missing:
        raise ValueError(f"{what}: missing key(s) {missing}")
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown}")


_RECORDS = ("LAYER_QUANT_VERSION", "HeadQuant", "LayerQuant")


def __getattr__(name: str):
    """The per-layer records live in :mod:`.layer_quant`; importable from here as before."""
    if name in _RECORDS:
        from . import layer_quant

        return getattr(layer_quant, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
