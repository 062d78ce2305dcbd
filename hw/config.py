"""Configuration of the inhibitor-attention core: sizes, formats, widths, layouts, cycles.

One job: :class:`CoreConfig` is the typed, validated description of one
:class:`~inhibitron.hw.core.InhibitorAttentionCore`, and the one place the
hardware, the testbenches, the Verilog description (``generate``) and the
cycle model read every derived quantity from:

* widths: :attr:`CoreConfig.widths` (all of them from
  :meth:`inhibitron.quant.formats.AttentionFormats.widths`, the contract's
  single derivation);
* stream layouts: :attr:`CoreConfig.descriptor_layout` (the per-head
  descriptor ``{length, theta, shift}``), :meth:`CoreConfig.row_layout`
  (a row of codes), :attr:`CoreConfig.h_layout`; the packing of a descriptor
  word (:meth:`CoreConfig.pack_descriptor`) and the JSON port description are
  derived from the layout, not written again;
* cycle formulas: :attr:`CoreConfig.cycles_per_head`,
  :attr:`CoreConfig.first_row_latency` (``docs/hardware.md``).

Nothing here elaborates hardware; it needs amaranth only for the layouts.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from ..quant.formats import AttentionFormats, DatapathWidths
from .shell_io import shell_slice_latency

__all__ = ["CoreConfig", "MANIFEST_VERSIONS", "ceil_div", "check_identifier"]

#: Manifest layout versions :meth:`CoreConfig.from_manifest` understands.
MANIFEST_VERSIONS = (1,)

#: Keys of :meth:`CoreConfig.to_dict` that belong to the formats.
_FORMAT_KEYS = ("qk_bits", "v_bits", "out_bits")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for integers (``b > 0``).

    >>> ceil_div(23, 5), ceil_div(20, 5)
    (5, 4)
    """
    return -(-a // b)


def check_identifier(name: str, value) -> str:
    """Check that ``value`` is a Verilog identifier (``[A-Za-z_][A-Za-z0-9_]*``)."""
    if not isinstance(value, str) or not _IDENT.match(value):
        raise ValueError(f"{name} must be a Verilog identifier ([A-Za-z_][A-Za-z0-9_]*), "
                         f"not {value!r}")
    return value


@dataclass(frozen=True, kw_only=True)
class CoreConfig:
    """Typed, validated configuration of an :class:`InhibitorAttentionCore`.

    All fields are keyword-only; every derived width comes from
    :meth:`inhibitron.quant.formats.AttentionFormats.widths`. Build it from a
    flat mapping (a JSON config file: ``qk_bits``, ``v_bits``, ``out_bits``
    beside the sizes) with :meth:`from_dict`.

    Parameters
    ----------
    rows, cols : int
        Shape ``R x C`` of both systolic arrays. ``R <= seq_len``,
        ``C <= min(seq_len, head_dim)``.
    seq_len : int
        ``n``: queries = keys per head (any value >= 1, not only powers of two).
    head_dim : int
        ``d``: width of Q, K, V and H rows.
    formats : AttentionFormats
        Signed code widths ``qk_bits`` (q, k), ``v_bits`` (v) and ``out_bits``
        (h), each 2..32; readable back as :attr:`qk_bits`, :attr:`v_bits`,
        :attr:`out_bits`.
    v_shift, z_shift : int
        The per-layer shifts ``a``, ``b`` of the contract (at most one of them
        nonzero); elaboration-time constants of the mixing PEs.
    name : str
        Verilog module name (an identifier).
    stream_slices : bool
        A register slice on every stream at the core's boundary
        (:class:`inhibitron.hw.stream_slice.RegisterSlice`): nothing outside
        reaches the handshake logic, for timing closure inside a larger
        design; :attr:`first_row_latency` grows by
        :func:`~inhibitron.hw.shell_io.shell_slice_latency`, the steady state
        is unchanged. Off by default.

    The output shift ``r`` is not a parameter: it is a run-time field of each
    head's descriptor, ``0 <= r <= out_shift_max = acc_bits`` (see
    :attr:`out_shift_max`). :meth:`from_dict` still accepts a legacy
    ``out_shift`` key (checked to be a non-negative integer, then ignored).
    """

    rows: int = 8              # R, PE rows of both arrays
    cols: int = 8              # C, PE columns of both arrays
    seq_len: int = 128         # n, queries = keys per head
    head_dim: int = 64         # d
    formats: AttentionFormats = field(default_factory=AttentionFormats)  # q/k, v, h code widths
    v_shift: int = 0           # a: v << a before the soft-threshold
    z_shift: int = 0           # b: zb << b before the soft-threshold
    # r (h = sat((acc + 2**(r-1)) >> r)) is a run-time descriptor field, 0..out_shift_max
    name: str = "inhibitor_attention_core"
    stream_slices: bool = False  # register slices on the core's streams

    #: The constant of :attr:`first_row_latency`: register stages and handshakes
    #: on the way from the last Q/K row to the first H beat.
    LATENCY_STAGES = 27

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "name":
                check_identifier("name", value)
                continue
            if f.name == "formats":
                if not isinstance(value, AttentionFormats):
                    raise TypeError(f"formats must be an AttentionFormats, not {value!r}")
                continue
            if f.name == "stream_slices":
                if not isinstance(value, bool):
                    raise TypeError(f"stream_slices must be a bool, not {value!r}")
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{f.name} must be an integer, not {value!r}")
            minimum = 0 if f.name.endswith("_shift") else 1
            if value < minimum:
                kind = "non-negative" if minimum == 0 else "positive"
                raise ValueError(f"{f.name} must be a {kind} integer, not {value!r}")
        if self.v_shift and self.z_shift:
            raise ValueError(f"at most one of v_shift and z_shift may be nonzero, got "
                             f"v_shift={self.v_shift} and z_shift={self.z_shift}")
        if self.rows > self.seq_len:
            raise ValueError(f"array rows={self.rows} is larger than the sequence allows: "
                             f"rows must be <= seq_len={self.seq_len}")
        if self.cols > self.seq_len:
            raise ValueError(f"array cols={self.cols} is larger than the sequence allows: "
                             f"cols must be <= seq_len={self.seq_len} (a mixing reduction is "
                             f"seq_len steps and a PE row emits one result per cycle)")
        if self.cols > self.head_dim:
            raise ValueError(f"array cols={self.cols} must be <= head_dim={self.head_dim} "
                             f"(a score reduction is head_dim steps and a PE row emits one "
                             f"result per cycle)")
        if self.rows * self.cols > 4096:
            raise ValueError(f"array of {self.rows}x{self.cols} PEs is unreasonably large "
                             f"(at most 4096 PEs)")
        # Raises a ValueError naming the width if anything exceeds the contract's limit.
        self.widths  # noqa: B018

    # -- derived quantities -------------------------------------------------

    @property
    def qk_bits(self) -> int:
        """Signed width of the q and k codes."""
        return self.formats.qk_bits

    @property
    def v_bits(self) -> int:
        """Signed width of the v codes."""
        return self.formats.v_bits

    @property
    def out_bits(self) -> int:
        """Signed width of the h codes."""
        return self.formats.out_bits

    @property
    def widths(self) -> DatapathWidths:
        """Every internal width (:class:`~inhibitron.quant.formats.DatapathWidths`), for ``r <= out_shift_max``."""
        w = self.formats.widths(head_dim=self.head_dim, seq_len=self.seq_len,
                                v_shift=self.v_shift, z_shift=self.z_shift)
        return self.formats.widths(head_dim=self.head_dim, seq_len=self.seq_len,
                                   v_shift=self.v_shift, z_shift=self.z_shift,
                                   out_shift=w.acc_bits)

    @property
    def out_shift_max(self) -> int:
        """Largest run-time output shift ``r``: ``acc_bits``.

        Every ``r >= acc_bits`` rounds every accumulator to ``h = 0`` (``|acc| <=
        2**(acc_bits-1)``), so larger shifts are never needed. The descriptor
        field is :attr:`shift_bits` wide; each of its values is exact (values
        above ``acc_bits`` also give 0), and :meth:`pack_descriptor` sends
        ``min(r, 2**shift_bits - 1)`` for any larger ``r``.
        """
        return self.widths.acc_bits

    @property
    def shift_bits(self) -> int:
        """Width of the descriptor's unsigned ``shift`` field: ``bits(out_shift_max)``."""
        return self.widths.shift_bits

    # -- stream layouts -----------------------------------------------------

    def row_layout(self, bits: int) -> data.ArrayLayout:
        """One row of ``head_dim`` signed ``bits``-bit codes, code ``l`` at bits ``[l*bits +: bits]``."""
        return data.ArrayLayout(signed(bits), self.head_dim)

    @property
    def descriptor_layout(self) -> data.StructLayout:
        """The per-head descriptor: valid length ``L``, threshold ``theta``, output shift ``r``.

        ``length`` is unsigned ``length_bits`` (``L`` in 1..n), ``theta``
        signed ``theta_bits``, ``shift`` unsigned ``shift_bits``; fields in
        this order from bit 0.
        """
        w = self.widths
        return data.StructLayout({"length": unsigned(w.length_bits),
                                  "theta": signed(w.theta_bits),
                                  "shift": unsigned(w.shift_bits)})

    @property
    def h_layout(self) -> data.StructLayout:
        """One output beat: a row of ``out_bits`` codes and the head's ``last`` flag."""
        return data.StructLayout({"data": self.row_layout(self.out_bits), "last": 1})

    def pack_descriptor(self, *, length: int, theta: int, shift: int) -> int:
        """The descriptor word (an unsigned int) of one head, laid out by :attr:`descriptor_layout`.

        ``shift`` values above the field's range saturate to its largest value
        (exact: every ``r >= out_shift_max`` gives ``h = 0``).

        Raises
        ------
        ValueError
            ``length`` outside ``1..seq_len``, ``theta`` outside ``theta_bits``,
            ``shift`` negative.
        """
        w = self.widths
        if not 1 <= length <= self.seq_len:
            raise ValueError(f"descriptor length must be in 1..{self.seq_len}, not {length}")
        if not w.theta_min <= theta <= w.theta_max:
            raise ValueError(f"descriptor theta={theta} does not fit signed {w.theta_bits} bits")
        if shift < 0:
            raise ValueError(f"descriptor shift must be >= 0, not {shift}")
        shift = min(shift, (1 << w.shift_bits) - 1)
        const = self.descriptor_layout.const({"length": length, "theta": theta, "shift": shift})
        return const.as_value().value

    @property
    def row_blocks(self) -> int:
        """``ceil(n / R)``: row blocks per head."""
        return ceil_div(self.seq_len, self.rows)

    @property
    def key_tiles(self) -> int:
        """``ceil(n / C)``: score tiles per row block."""
        return ceil_div(self.seq_len, self.cols)

    @property
    def dim_tiles(self) -> int:
        """``ceil(d / C)``: mixing tiles per row block."""
        return ceil_div(self.head_dim, self.cols)

    @property
    def zb_max(self) -> int:
        """Clip of ``zb`` before the mixing PEs: ``ceil(2**(v_bits-1+a) / 2**b)`` (``widths.zb_mix_max``)."""
        return self.widths.zb_mix_max

    @property
    def score_job_cycles(self) -> int:
        """Cycles the score array spends on one row block: ``ceil(n/C) * d``."""
        return self.key_tiles * self.head_dim

    @property
    def mix_job_cycles(self) -> int:
        """Cycles the mixing array spends on one row block: ``ceil(d/C) * n``."""
        return self.dim_tiles * self.seq_len

    @property
    def min_score_job_cycles(self) -> int:
        """Shortest score job the row-statistics divider keeps up with."""
        return self.widths.z_bits + 4

    @property
    def z_slot_latency(self) -> int:
        """Cycles a z slot is held beyond its score and mixing jobs: ``z_bits + R + C + 13``.

        From the end of a block's score job to the start of its mixing job
        (the score array's drain, a register stage, the row-statistics
        divider, the slot flags) and from the end of the mixing job until the
        next score job may claim the slot again. Measured (cosim, nine shapes
        from 1x1 to 8x8) and checked in ``tests/sim/test_cosim.py``.
        """
        return self.widths.z_bits + self.rows + self.cols + 13

    @property
    def pair_period(self) -> int:
        """Steady-state cycles per *two* row blocks (compute-bound, see docs/hardware.md).

        The largest of three bounds:

        * the score array, ``2 * (max(ceil(n/C)*d, z_bits + 4) + 1)`` (a job and
          a one-cycle gap; the divider needs ``z_bits + 4`` cycles per job);
        * the mixing array, ``2 * (ceil(d/C)*n + 1)``;
        * the double-buffered z memory: a block's slot is claimed by its score
          job and freed after its mixing job, so block ``i + 2`` starts no
          sooner than ``ceil(n/C)*d + ceil(d/C)*n + z_slot_latency`` after block ``i``.
        """
        s, mix = self.score_job_cycles, self.mix_job_cycles
        return max(2 * (max(s, self.min_score_job_cycles) + 1), 2 * (mix + 1),
                   s + mix + self.z_slot_latency)

    @property
    def cycles_per_two_heads(self) -> int:
        """Steady-state cycles per two consecutive heads: ``max(ceil(n/R) * pair_period, 2*n*d)``.

        Exact when inputs keep up, the output is never stalled and a head has
        at least two row blocks (checked against the cosimulation); with one
        (``n <= R``) a lower bound (measured up to 2 cycles more). When
        ``ceil(n/R)`` and ``pair_period`` are both odd, consecutive heads
        alternate around the mean; the input loaders take ``n*d`` cycles per
        head for Q and K (one code per cycle and stream), which bounds small
        ``n``.
        """
        return max(self.row_blocks * self.pair_period, 2 * self.seq_len * self.head_dim)

    @property
    def cycles_per_head(self) -> int:
        """Steady-state cycles per head: ``ceil(cycles_per_two_heads / 2)``.

        Exact when :attr:`cycles_per_two_heads` is even; otherwise the heads
        alternate around ``cycles_per_two_heads / 2`` and this is that mean
        rounded up.
        """
        return ceil_div(self.cycles_per_two_heads, 2)

    @property
    def first_row_latency(self) -> int:
        """Cycles from accepting an isolated head's last Q/K row to its first H beat.

        ``d`` (the loader writes the row) ``+ ceil(n/C)*d`` (score job of row
        block 0) ``+ ceil(d/C)*n`` (its mixing job) ``+ z_bits`` (row-statistics
        divider) ``+ 2*(R + C)`` (the skew of both arrays) ``+``
        :attr:`LATENCY_STAGES` (register stages and handshakes) ``+`` the
        stream slices' latency with :attr:`stream_slices`, with the H stream
        ready and V and the descriptor already in. Measured in
        ``tests/hw/test_latency.py``.
        """
        n, d, R, C = self.seq_len, self.head_dim, self.rows, self.cols
        slices = shell_slice_latency(d) if self.stream_slices else 0
        return (d + self.key_tiles * d + self.dim_tiles * n + self.widths.z_bits
                + 2 * (R + C) + self.LATENCY_STAGES + slices)

    @property
    def useful_pe_cycles_per_head(self) -> int:
        """PE-cycles that do useful work per head: ``2 * n * n * d``."""
        return 2 * self.seq_len * self.seq_len * self.head_dim

    @property
    def ideal_utilization(self) -> float:
        """Useful PE-cycles / (2 arrays * R * C * cycles_per_head)."""
        return self.useful_pe_cycles_per_head / (2 * self.rows * self.cols * self.cycles_per_head)

    def to_dict(self) -> dict[str, Any]:
        """Flat plain-JSON form (the config-file keys; formats as ``qk_bits``, ``v_bits``, ``out_bits``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "formats":
                out.update(self.formats.to_dict())
            else:
                out[f.name] = getattr(self, f.name)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CoreConfig":
        """Build from a flat mapping (e.g. a JSON config file); unknown keys are errors.

        Missing keys take their defaults; ``qk_bits``, ``v_bits`` and
        ``out_bits`` form :attr:`formats`.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"core config must be a mapping, not {type(data).__name__}")
        known = {f.name for f in fields(cls)} - {"formats"} | set(_FORMAT_KEYS)
        data = dict(data)
        if "out_shift" in data:
            # Legacy key (r was an elaboration-time constant before it became a
            # descriptor field): checked, then ignored.
            r = data.pop("out_shift")
            if not isinstance(r, int) or isinstance(r, bool) or r < 0:
                raise ValueError(f"out_shift must be a non-negative integer, not {r!r}")
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown core config key(s) {unknown}; known: {sorted(known)}")
        defaults = AttentionFormats()
        formats = AttentionFormats(**{k: data.pop(k, getattr(defaults, k)) for k in _FORMAT_KEYS})
        return cls(formats=formats, **data)

    def replace(self, **changes) -> "CoreConfig":
        """A copy with ``changes`` applied; accepts the flat keys of :meth:`to_dict`."""
        return type(self).from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_json(cls, path) -> "CoreConfig":
        """Read a JSON config file (see :meth:`to_dict` for the keys)."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"core config file {path!r} does not exist")
        with open(path, encoding="utf-8") as fh:
            try:
                obj = json.load(fh)
            except json.JSONDecodeError as exc:
                raise ValueError(f"core config file {path!r} is not valid JSON: {exc}") from None
        return cls.from_dict(obj)

    @classmethod
    def from_manifest(cls, manifest, *, layer: int, rows: int = 8, cols: int = 8,
                      seq_len: int | None = None, name: str | None = None) -> "CoreConfig":
        """Configuration for one layer of an exported quantized checkpoint.

        Parameters
        ----------
        manifest : path or mapping
            A checkpoint directory, its ``manifest.json`` or the parsed manifest.
        layer : int
            Layer index.
        rows, cols : int
            Array shape.
        seq_len : int, optional
            ``n``; default: the manifest's ``max_seq_len``.
        name : str, optional
            Module name; default ``inhibitor_attention_layer<layer>``.

        The heads of the layer must share ``v_shift`` and ``z_shift``; their
        output shifts ``r`` may differ (a run-time descriptor field, taken per
        head from ``LayerQuant.out_shift``).

        Raises
        ------
        ValueError
            Unknown manifest version, missing layer, heads with different
            ``v_shift``/``z_shift``.
        FileNotFoundError
            No manifest at ``manifest``.
        """
        from ._manifest import layer_core_params
        params = layer_core_params(manifest, layer=layer, seq_len=seq_len)
        return cls.from_dict(dict(params, rows=rows, cols=cols,
                                  name=name or f"inhibitor_attention_layer{layer}"))
