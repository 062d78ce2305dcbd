"""Configuration of the dot-product baseline core: sizes, formats, widths, layouts, cycles.

One job: :class:`BaselineConfig` is the typed, validated description of one
:class:`~inhibitron.hw.baseline.DotProductAttentionCore` and the one place
its widths (shared MAC PE operands, accumulator, descriptor fields), its
stream layouts and its cycle formula are derived, so the hardware, the
testbench, the synthesis study and the docs read them without building a
component. The integer contract it computes is
:func:`inhibitron.quant.baseline_golden.baseline_attention_int`
(``docs/baseline.md``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from ..quant.baseline_golden import DEFAULT_CONSTANTS, SoftmaxConstants
from ..quant.formats import MAX_DATAPATH_BITS, AttentionFormats, unsigned_bits
from .config import check_identifier
from .mac_pe import mac_acc_bits
from .pe import check_int

__all__ = ["BaselineConfig"]

_FORMAT_KEYS = ("qk_bits", "v_bits", "out_bits")


@dataclass(frozen=True, kw_only=True)
class BaselineConfig:
    """Sizes and formats of a :class:`~inhibitron.hw.baseline.DotProductAttentionCore`.

    Build it from a flat mapping (``qk_bits``, ``v_bits``, ``out_bits`` beside
    the sizes) with :meth:`from_dict`.

    Parameters
    ----------
    rows, cols : int
        Systolic array shape R x C.
    seq_len : int
        ``n``, keys (and query rows) per head; a multiple of ``rows`` and of ``cols``.
    head_dim : int
        ``d``; a multiple of ``cols`` and at least ``cols``.
    formats : AttentionFormats
        Signed widths of Q/K codes, V codes and output codes (the same
        validated range as the inhibitor core; a configuration whose derived
        widths exceed the contract's 62 bits is refused by name).
    name : str
        Verilog module name.
    constants : SoftmaxConstants
        The integer softmax's constants (``docs/baseline.md``).
    """

    rows: int = 4                 # R
    cols: int = 4                 # C
    seq_len: int = 16             # n
    head_dim: int = 16            # d
    formats: AttentionFormats = field(default_factory=AttentionFormats)  # q/k, v, h code widths
    name: str = "baseline_attention_core"
    constants: SoftmaxConstants = field(default_factory=lambda: DEFAULT_CONSTANTS)

    def __post_init__(self):
        for name in ("rows", "cols", "seq_len", "head_dim"):
            check_int(name, getattr(self, name), minimum=1)
        if not isinstance(self.formats, AttentionFormats):
            raise TypeError(f"formats must be an AttentionFormats, not {self.formats!r}")
        if self.seq_len % self.rows or self.seq_len % self.cols:
            raise ValueError(f"seq_len must be a multiple of rows={self.rows} and cols={self.cols}, "
                             f"not {self.seq_len}")
        check_identifier("name", self.name)
        if self.head_dim % self.cols:
            raise ValueError(f"head_dim must be a multiple of cols={self.cols}, not {self.head_dim}")
        if not isinstance(self.constants, SoftmaxConstants):
            raise TypeError(f"constants must be a SoftmaxConstants, not {self.constants!r}")
        for what, bits in (("score_bits", self.score_bits), ("acc_bits", self.acc_bits)):
            if bits > MAX_DATAPATH_BITS:
                raise ValueError(f"{what} would be {bits} bits (qk_bits={self.qk_bits}, "
                                 f"v_bits={self.v_bits}, d={self.head_dim}, n={self.seq_len}); "
                                 f"the contract allows at most {MAX_DATAPATH_BITS}: use "
                                 f"narrower formats")

    # -- formats ----------------------------------------------------------------------
    qk_bits = property(lambda self: self.formats.qk_bits, doc="Signed width of q and k.")
    v_bits = property(lambda self: self.formats.v_bits, doc="Signed width of v.")
    out_bits = property(lambda self: self.formats.out_bits, doc="Signed width of h.")

    # -- derived widths ---------------------------------------------------------------
    @property
    def score_bits(self) -> int:
        """Signed width of a score ``sum_k q*k``: ``2*qk_bits + ceil(log2 d)``."""
        return mac_acc_bits(a_bits=self.qk_bits, a_signed=True, b_bits=self.qk_bits,
                            b_signed=True, length=self.head_dim)

    @property
    def pe_a_bits(self) -> int:
        """Shared PE row operand: signed, holds Q codes and the unsigned weights P."""
        return max(self.qk_bits, self.constants.p_bits + 1)

    @property
    def pe_b_bits(self) -> int:
        """Shared PE column operand: signed, holds K and V codes."""
        return max(self.qk_bits, self.v_bits)

    @property
    def pe_length(self) -> int:
        """Longest reduction of the shared PE: ``max(n, d)``."""
        return max(self.seq_len, self.head_dim)

    @property
    def acc_bits(self) -> int:
        """Signed accumulator width of the shared MAC PE."""
        return mac_acc_bits(a_bits=self.pe_a_bits, a_signed=True, b_bits=self.pe_b_bits,
                            b_signed=True, length=self.pe_length)

    @property
    def out_shift_max(self) -> int:
        """Largest meaningful output shift ``r``: ``acc_bits``.

        Every ``r >= acc_bits`` rounds every accumulator to ``h = 0``, as for
        the inhibitor core; the descriptor field is :attr:`shift_bits` wide and
        every value of it is exact.
        """
        return self.acc_bits

    @property
    def shift_bits(self) -> int:
        """Width of the descriptor's ``shift`` field (``r``): ``bits(out_shift_max)``."""
        return unsigned_bits(self.out_shift_max)

    @property
    def length_bits(self) -> int:
        """Width of the descriptor's ``length`` field (``L`` in 1..n): ``bits(n)``."""
        return unsigned_bits(self.seq_len)

    # -- stream layouts ---------------------------------------------------------------
    @property
    def descriptor_layout(self) -> data.StructLayout:
        """Per-head descriptor: ``length`` (L), ``score_mult`` (M), ``shift`` (r), from bit 0."""
        return data.StructLayout({
            "length": unsigned(self.length_bits),
            "score_mult": unsigned(self.constants.m_bits),
            "shift": unsigned(self.shift_bits),
        })

    def row_layout(self, bits: int) -> data.ArrayLayout:
        """One row of ``head_dim`` signed ``bits``-bit codes."""
        return data.ArrayLayout(signed(bits), self.head_dim)

    @property
    def h_layout(self) -> data.StructLayout:
        """One output beat: a row of ``out_bits`` codes and the head's ``last`` flag."""
        return data.StructLayout({"data": self.row_layout(self.out_bits), "last": 1})

    def pack_descriptor(self, *, length: int, score_mult: int, shift: int) -> int:
        """The descriptor word of one head (``shift`` saturates to the field's maximum)."""
        if not 1 <= length <= self.seq_len:
            raise ValueError(f"descriptor length must be in 1..{self.seq_len}, not {length}")
        if not 0 <= score_mult < (1 << self.constants.m_bits):
            raise ValueError(f"descriptor score_mult={score_mult} does not fit unsigned "
                             f"{self.constants.m_bits} bits")
        if shift < 0:
            raise ValueError(f"descriptor shift must be >= 0, not {shift}")
        shift = min(shift, (1 << self.shift_bits) - 1)
        const = self.descriptor_layout.const(
            {"length": length, "score_mult": score_mult, "shift": shift})
        return const.as_value().value

    # -- cycles -----------------------------------------------------------------------
    #: Pipeline depth of the exp pass (cycles after the last issue).
    EXP_DEPTH = 7
    #: Pipeline depth of the normalise pass.
    NORM_DEPTH = 4
    #: Output rounding stages (:class:`~inhibitron.hw.shell.OutputRounder`).
    OUT_PIPE = 3

    def cycles_per_head(self, valid_len: int | None = None) -> int:
        """Cycles from the descriptor handshake to the last output row, with the
        input rows arriving at full rate and the output never stalled.

        ``n`` load cycles (Q, K, V in parallel) + per block of R rows:
        scores ``(n/C) (C' + d)`` with ``C' = max(R, C)`` for the first tile and
        ``C`` after, + drain, softmax ``R (L + EXP + 1 + (RB + 1) + n + NORM + 1)``,
        mixing ``(d/C) n`` + drain + the output rounder, output ``R``.
        """
        n, d, R, C = self.seq_len, self.head_dim, self.rows, self.cols
        L = n if valid_len is None else valid_len
        lat = 1 + 1 + 2 + R + C  # operand register + array latency (term 1 + 2) + skew, +1
        score = (max(R, C) + 1 + d) + (n // C - 1) * (C + 1 + d) + lat + 1
        soft = R * ((L + self.EXP_DEPTH + 1) + (self.constants.recip_bits + 1 + 1)
                    + (n + self.NORM_DEPTH + 1))
        mix = (d // C) * (n + 1) + lat + 1 + self.OUT_PIPE
        out = R
        return 1 + n + (n // R) * (score + soft + mix + out)

    # -- plain form -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Flat plain-JSON form (formats as ``qk_bits``, ``v_bits``, ``out_bits``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "formats":
                out.update(value.to_dict())
            elif f.name == "constants":
                out[f.name] = dataclasses.asdict(value)
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BaselineConfig":
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys are errors."""
        if not isinstance(d, Mapping):
            raise TypeError(f"baseline config must be a mapping, not {type(d).__name__}")
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)} - {"formats"} | set(_FORMAT_KEYS)
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown BaselineConfig field(s) {unknown}; known: {sorted(names)}")
        if isinstance(d.get("constants"), dict):
            d["constants"] = SoftmaxConstants(**d["constants"])
        defaults = AttentionFormats()
        formats = AttentionFormats(**{k: d.pop(k, getattr(defaults, k)) for k in _FORMAT_KEYS})
        return cls(formats=formats, **d)
