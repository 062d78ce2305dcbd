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

#: Values of :attr:`BaselineConfig.multipliers`.
MULTIPLIERS = ("dsp", "fabric")


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
    multipliers : ``"dsp"`` or ``"fabric"``
        How every multiplier is built: ``"dsp"`` writes ``a * b`` (Yosys maps it
        to hard multipliers, ``MULT18X18D`` on ECP5); ``"fabric"`` writes it as
        a sum of shifted partial products (:func:`inhibitron.hw.mac_pe.multiply`),
        so no synthesis tool infers a DSP and the design needs none.
    stream_slices : bool
        A register slice on every stream at the core's boundary, as for the
        inhibitor core (:attr:`CoreConfig.stream_slices
        <inhibitron.hw.config.CoreConfig.stream_slices>`). Off by default.
    """

    rows: int = 4                 # R
    cols: int = 4                 # C
    seq_len: int = 16             # n
    head_dim: int = 16            # d
    formats: AttentionFormats = field(default_factory=AttentionFormats)  # q/k, v, h code widths
    name: str = "baseline_attention_core"
    constants: SoftmaxConstants = field(default_factory=lambda: DEFAULT_CONSTANTS)
    multipliers: str = "dsp"      # "dsp": hard multipliers; "fabric": shift-add in LUTs
    stream_slices: bool = False   # register slices on the core's streams

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
        if not isinstance(self.stream_slices, bool):
            raise TypeError(f"stream_slices must be a bool, not {self.stream_slices!r}")
        if self.multipliers not in MULTIPLIERS:
            raise ValueError(f"multipliers must be one of {MULTIPLIERS}, not {self.multipliers!r}")
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
        """Signed width of a score ``sum_k q*k`` (the score array's accumulator): ``2*qk_bits + ceil(log2 d)``."""
        return mac_acc_bits(a_bits=self.qk_bits, a_signed=True, b_bits=self.qk_bits,
                            b_signed=True, length=self.head_dim)

    @property
    def acc_bits(self) -> int:
        """Signed accumulator width of the mixing array (``sum_j p * v``, ``p`` unsigned ``p_bits``)."""
        return mac_acc_bits(a_bits=self.constants.p_bits, a_signed=False, b_bits=self.v_bits,
                            b_signed=True, length=self.seq_len)

    @property
    def sum_bits(self) -> int:
        """Unsigned width of a row sum of exp codes: ``e_bits + bits(n)``."""
        return self.constants.e_bits + unsigned_bits(self.seq_len)

    @property
    def recip_width(self) -> int:
        """Unsigned width of the reciprocal ``rec = ceil(2**RB / sum)``: ``RB - e_bits + 2``."""
        return self.constants.recip_bits - self.constants.e_bits + 2

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
    #: Registers from the exp pass's score read address to its exp code (hw/baseline.py).
    EXP_LATENCY = 10
    #: Registers from the mixing stage's read address to ``p`` at the array.
    NORM_LATENCY = 5

    @property
    def row_blocks(self) -> int:
        """``n / R``: row blocks per head."""
        return self.seq_len // self.rows

    @property
    def score_job_cycles(self) -> int:
        """Cycles the score array spends on one row block: ``(n/C) * d``."""
        return self.seq_len // self.cols * self.head_dim

    @property
    def mix_job_cycles(self) -> int:
        """Cycles the mixing array spends on one row block: ``(d/C) * n``."""
        return self.head_dim // self.cols * self.seq_len

    @property
    def softmax_job_cycles(self) -> int:
        """Cycles of the softmax stage per row block: ``n + EXP_LATENCY + RB + 4``.

        The exp pass (``n`` keys, one per cycle and lane), the pipeline
        (``EXP_LATENCY``), the restoring dividers (``RB + 1`` steps) and three
        cycles of loading and flags.
        """
        return self.seq_len + self.EXP_LATENCY + self.constants.recip_bits + 4

    @property
    def pair_period(self) -> int:
        """Steady-state cycles per *two* row blocks: the largest of four bounds.

        * the score array, ``2 * ((n/C) d + 1)`` (a job and a one-cycle gap);
        * the mixing array, ``2 * ((d/C) n + 1)``;
        * the softmax stage, ``2 * softmax_job_cycles``;
        * the double-buffered exp memory: a block's slot is claimed by its exp
          pass and freed after its mixing job, so the exp pass of block
          ``i + 2`` starts no sooner than ``softmax_job_cycles + (d/C) n + 3``
          after that of block ``i``.

        (The score memory is freed by the exp pass; its bound never exceeds
        the softmax stage's.)
        """
        s, mix, x = self.score_job_cycles, self.mix_job_cycles, self.softmax_job_cycles
        return max(2 * (s + 1), 2 * (mix + 1), 2 * x, x + mix + 3)

    @property
    def cycles_per_two_heads(self) -> int:
        """Steady-state cycles per two consecutive heads: ``max((n/R) * pair_period, 2 n d)``.

        Exact when the inputs keep up, the output is never stalled and heads
        have enough row blocks (checked against the cosimulation on every CI
        shape); for short heads a lower bound, since a head's descriptor slot
        is held from its first score job to its last mixing job (measured 17
        cycles more on 3x1, n = 3, d = 8; 13 on 3x1, n = 6, d = 9 with
        slices). ``2 n d`` is the Q/K loaders' bound (one code per cycle).
        """
        return max(self.row_blocks * self.pair_period, 2 * self.seq_len * self.head_dim)

    def cycles_per_head(self, valid_len: int | None = None) -> int:
        """Steady-state cycles per head, ``ceil(cycles_per_two_heads / 2)``.

        Heads stream back to back (loading head ``h + 1`` overlaps computing
        head ``h``; the three stages overlap across row blocks and heads). The
        schedule does not depend on the valid length (``valid_len`` is
        accepted for the callers of the sequential baseline and ignored).
        """
        return -(-self.cycles_per_two_heads // 2)

    @property
    def useful_pe_cycles_per_head(self) -> int:
        """PE-cycles that do useful work per head: ``2 * n * n * d`` (both products)."""
        return 2 * self.seq_len * self.seq_len * self.head_dim

    @property
    def ideal_utilization(self) -> float:
        """Useful PE-cycles / (2 arrays * R * C * cycles_per_head)."""
        return self.useful_pe_cycles_per_head / (2 * self.rows * self.cols
                                                 * self.cycles_per_head())

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
