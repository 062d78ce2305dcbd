"""The inhibitor-attention core: two systolic arrays, row statistics, stream I/O.

Implements the integer contract of ``docs/numerics.md`` (Eq. 1-3 of the
paper, folded to integers) for one head at a time, heads back to back; the
architecture, latency and cycle formulas are in ``docs/hardware.md``.

Per head the core takes ``n`` rows of Q, K and V (one row of ``d`` codes per
beat), a descriptor (valid length ``L``, threshold constant ``theta``, output
shift ``r``) and
returns ``n`` rows of H (one row of ``d`` codes per beat, ``last`` on row
``n - 1``). The work is split into row blocks of ``R`` queries; each block
goes through

1. the **score stage** (an ``R x C`` array of :class:`~inhibitron.hw.pe.L1PE`):
   ``ceil(n/C)`` tiles of ``d`` steps produce ``z`` for the block's rows,
   written into a double-buffered score memory while the
   :class:`~inhibitron.hw.rowstats.RowStatistics` units sum them;
2. the row statistics: rounded mean and threshold per row;
3. the **mixing stage** (an ``R x C`` array of
   :class:`~inhibitron.hw.pe.SoftThresholdPE`): ``ceil(d/C)`` tiles of ``n``
   steps over the thresholded scores and V, rounded by the head's run-time
   shift ``r`` (a barrel shifter) and saturated into a double-buffered output
   block, which is streamed out.

The two stages work on consecutive row blocks at the same time; input and
output memories are double-buffered per head, so loading head ``h + 1``
overlaps computing head ``h``. Nothing multiplies: every address is a
concatenation or an incrementing counter, the mean uses a shift-subtract
divider.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from dataclasses import dataclass, fields
from typing import Any, Mapping

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..quant.formats import AttentionFormats, DatapathWidths
from .pe import L1PE, SoftThresholdPE
from .rowstats import RowStatistics, ThresholdClip
from .systolic import SystolicArray

__all__ = ["CoreConfig", "InhibitorAttentionCore", "MANIFEST_VERSIONS"]

#: Manifest layout versions :meth:`CoreConfig.from_manifest` understands.
MANIFEST_VERSIONS = (1,)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _ubits(x: int) -> int:
    return max(1, int(x).bit_length())


def _pow2_bits(x: int) -> int:
    """Address bits for ``x`` entries (at least 1)."""
    return max(1, (int(x) - 1).bit_length())


def _bram(shape, depth: int) -> Memory:
    """A zero-initialised memory whose read and write ports never collide.

    The ``no_rw_check`` attribute lets Yosys map it to block RAM without the
    soft read-during-write bypass it otherwise builds between two RAM ports;
    callers guarantee that no address is read and written in the same cycle.
    """
    return Memory(shape=shape, depth=depth, init=[], attrs={"no_rw_check": 1})


def _flag_after(flags, pending):
    """Next value of a ``_flag_pair`` flag: ``(flags | set_pending) & ~clear_pending``."""
    set_p, clr_p = pending
    return (flags | set_p) & ~clr_p


def _registered_ready(m, ready, *, accept, busy, finishing, last_next, full, pending, slot_next):
    """Drive a loader's ``ready`` register: ``(~busy | finishing) & ~full[slot]``, one cycle ahead.

    ``ready`` (``init=1``) gets the value that expression will have next cycle,
    from the next values of its inputs: ``busy`` next is 1 after ``accept``, 0
    after ``finishing``; ``last_next`` is the loader's registered
    "last step" flag next cycle; ``slot_next`` the slot of the next row; the
    slot flag's next value comes from its pending set/clear (``_flag_after``).
    """
    busy_next = Mux(accept, 1, Mux(finishing, 0, busy))
    m.d.sync += ready.eq((~busy_next | last_next)
                         & ~_flag_after(full, pending).bit_select(slot_next, 1))


def _terminal_flags(m, prefix: str, start, run, inner, inner_len: int, outer, outer_len: int):
    """Registered ``inner == inner_len - 1`` and ``outer == outer_len - 1`` flags.

    For a sequencer whose ``inner`` counter runs ``0 .. inner_len - 1`` once per
    step of ``outer`` (``0 .. outer_len - 1``) while ``run`` is high, both
    counters starting at 0 when ``start`` is high. The flags are computed one
    cycle early from the counters' next values, so they are plain flip-flops.
    """
    ilast = Signal(name=f"{prefix}_inner_last")
    olast = Signal(name=f"{prefix}_outer_last")
    with m.If(start):
        m.d.sync += [ilast.eq(inner_len == 1), olast.eq(outer_len == 1)]
    with m.Elif(run):
        with m.If(ilast):
            m.d.sync += [ilast.eq(inner_len == 1), olast.eq(outer == outer_len - 2)]
        with m.Else():
            m.d.sync += ilast.eq(inner == inner_len - 2)
    return ilast, olast


def _addr(offset, bits: int, slot):
    """``slot * 2**bits + offset`` as a concatenation (``offset < 2**bits``)."""
    offset = offset[:bits]
    if len(offset) < bits:
        offset = Cat(offset, Const(0, bits - len(offset)))
    return Cat(offset, slot)


@dataclass(frozen=True, kw_only=True)
class CoreConfig:
    """Typed, validated configuration of an :class:`InhibitorAttentionCore`.

    All fields are keyword-only; every derived width comes from
    :meth:`inhibitron.quant.formats.AttentionFormats.widths`.

    Parameters
    ----------
    rows, cols : int
        Shape ``R x C`` of both systolic arrays. ``R <= seq_len``,
        ``C <= min(seq_len, head_dim)``.
    seq_len : int
        ``n``: queries = keys per head (any value >= 1, not only powers of two).
    head_dim : int
        ``d``: width of Q, K, V and H rows.
    qk_bits, v_bits, out_bits : int
        Signed formats of q/k, v and h (2..32 bits).
    v_shift, z_shift : int
        The per-layer shifts ``a``, ``b`` of the contract (at most one of them
        nonzero); elaboration-time constants of the mixing PEs.
    name : str
        Verilog module name (an identifier).

    The output shift ``r`` is not a parameter: it is a run-time field of each
    head's descriptor, ``0 <= r <= out_shift_max = acc_bits`` (see
    :attr:`out_shift_max`). :meth:`from_dict` still accepts a legacy
    ``out_shift`` key (checked to be a non-negative integer, then ignored).
    """

    rows: int = 8              # R, PE rows of both arrays
    cols: int = 8              # C, PE columns of both arrays
    seq_len: int = 128         # n, queries = keys per head
    head_dim: int = 64         # d
    qk_bits: int = 8           # signed q/k code width
    v_bits: int = 8            # signed v code width
    out_bits: int = 8          # signed h code width
    v_shift: int = 0           # a: v << a before the soft-threshold
    z_shift: int = 0           # b: zb << b before the soft-threshold
    # r (h = sat((acc + 2**(r-1)) >> r)) is a run-time descriptor field, 0..out_shift_max
    name: str = "inhibitor_attention_core"

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "name":
                if not isinstance(value, str) or not _IDENT.match(value):
                    raise ValueError(f"name must be a Verilog identifier ([A-Za-z_][A-Za-z0-9_]*), "
                                     f"not {value!r}")
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{f.name} must be an integer, not {value!r}")
            minimum = 0 if f.name.endswith("_shift") else 1
            if value < minimum:
                kind = "non-negative" if minimum == 0 else "positive"
                raise ValueError(f"{f.name} must be a {kind} integer, not {value!r}")
        for name in ("qk_bits", "v_bits", "out_bits"):
            if not 2 <= getattr(self, name) <= 32:
                raise ValueError(f"{name} must be in 2..32 (a signed format), not {getattr(self, name)}")
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
    def formats(self) -> AttentionFormats:
        return AttentionFormats(qk_bits=self.qk_bits, v_bits=self.v_bits, out_bits=self.out_bits)

    @property
    def out_shift_max(self) -> int:
        """Largest run-time output shift ``r``: ``acc_bits``.

        Every ``r >= acc_bits`` rounds every accumulator to ``h = 0`` (``|acc| <=
        2**(acc_bits-1)``), so larger shifts are never needed. The descriptor
        field is :attr:`shift_bits` wide; each of its values is exact (values
        above ``acc_bits`` also give 0), and a driver may send
        ``min(r, 2**shift_bits - 1)`` for any larger ``r``
        (:func:`inhibitron.sim.stimulus.pack_desc`).
        """
        return self.formats.widths(head_dim=self.head_dim, seq_len=self.seq_len,
                                   v_shift=self.v_shift, z_shift=self.z_shift).acc_bits

    @property
    def shift_bits(self) -> int:
        """Width of the descriptor's unsigned ``shift`` field: ``bits(out_shift_max)``."""
        return _ubits(self.out_shift_max)

    @property
    def widths(self) -> DatapathWidths:
        """Every internal width (:class:`~inhibitron.quant.formats.DatapathWidths`), for ``r <= out_shift_max``."""
        return self.formats.widths(head_dim=self.head_dim, seq_len=self.seq_len,
                                   v_shift=self.v_shift, z_shift=self.z_shift,
                                   out_shift=self.out_shift_max)

    @property
    def row_blocks(self) -> int:
        """``ceil(n / R)``: row blocks per head."""
        return _ceil_div(self.seq_len, self.rows)

    @property
    def key_tiles(self) -> int:
        """``ceil(n / C)``: score tiles per row block."""
        return _ceil_div(self.seq_len, self.cols)

    @property
    def dim_tiles(self) -> int:
        """``ceil(d / C)``: mixing tiles per row block."""
        return _ceil_div(self.head_dim, self.cols)

    @property
    def zb_max(self) -> int:
        """Clip of ``zb`` before the mixing PEs: ``ceil(2**(v_bits-1+a) / 2**b)``."""
        clip = 1 << (self.v_bits - 1 + self.v_shift)
        return _ceil_div(clip, 1 << self.z_shift)

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
    def block_period(self) -> int:
        """Steady-state cycles per row block (compute-bound, see docs/hardware.md)."""
        s = max(self.score_job_cycles, self.min_score_job_cycles) + 1
        mix = self.mix_job_cycles + 1
        return max(s, mix)

    @property
    def cycles_per_head(self) -> int:
        """Steady-state cycles per head when inputs keep up: ``ceil(n/R) * block_period``.

        The input loaders take ``n*d`` cycles per head for Q and K (one code per
        cycle and stream) and ``n*ceil(d/C)`` for V; when ``n*d`` exceeds this
        figure the core is input-bound (small ``n``) and a head takes ``n*d``.
        """
        return max(self.row_blocks * self.block_period, self.seq_len * self.head_dim)

    @property
    def first_row_latency(self) -> int:
        """Cycles from accepting an isolated head's last Q/K row to its first H beat.

        ``d`` (the loader writes the row) ``+ ceil(n/C)*d`` (score job of row
        block 0) ``+ ceil(d/C)*n`` (its mixing job) ``+ z_bits`` (row-statistics
        divider) ``+ 2*(R + C)`` (the skew of both arrays) ``+ 27`` (register
        stages and handshakes), with the H stream ready and V and the
        descriptor already in. Measured in ``tests/hw/test_latency.py``.
        """
        n, d, R, C = self.seq_len, self.head_dim, self.rows, self.cols
        return (d + self.key_tiles * d + self.dim_tiles * n + self.widths.z_bits
                + 2 * (R + C) + 27)

    @property
    def useful_pe_cycles_per_head(self) -> int:
        """PE-cycles that do useful work per head: ``2 * n * n * d``."""
        return 2 * self.seq_len * self.seq_len * self.head_dim

    @property
    def ideal_utilization(self) -> float:
        """Useful PE-cycles / (2 arrays * R * C * cycles_per_head)."""
        return self.useful_pe_cycles_per_head / (2 * self.rows * self.cols * self.cycles_per_head)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CoreConfig":
        """Build from a plain mapping (e.g. a JSON config file); unknown keys are errors."""
        if not isinstance(data, Mapping):
            raise TypeError(f"core config must be a mapping, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
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
        return cls(**data)

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
        return cls(rows=rows, cols=cols, name=name or f"inhibitor_attention_layer{layer}",
                   **params)


def _stream_in(shape):
    return In(stream.Signature(shape))


class InhibitorAttentionCore(wiring.Component):
    """Systolic inhibitor-attention core for one head at a time (see module docstring).

    Parameters
    ----------
    config : CoreConfig
        Sizes, formats and shifts.

    Members
    -------
    q, k : In(stream.Signature(ArrayLayout(signed(qk_bits), d)))
        One row of Q / K per beat, rows ``0..n-1`` of a head in order.
    v : In(stream.Signature(ArrayLayout(signed(v_bits), d)))
        One row of V per beat.
    desc : In(stream.Signature(StructLayout({"length": range(n + 1), "theta": signed(theta_bits), "shift": unsigned(shift_bits)})))
        One descriptor per head: valid length ``L`` (1..n, keys ``j >= L`` are
        padding), ``theta`` and the output shift ``r``. Every value of the
        ``shift`` field is exact; ``r >= out_shift_max`` gives ``h = 0``.
    h : Out(stream.Signature(StructLayout({"data": ArrayLayout(signed(out_bits), d), "last": 1})))
        One row of H per beat, ``last`` on row ``n - 1`` of each head.

    The four inputs are independent streams; the core buffers two heads of
    each, so a producer may send them in any interleaving.
    """

    def __init__(self, config: CoreConfig):
        self._MustUse__silence = True
        if not isinstance(config, CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        self._config = cfg = config
        w = cfg.widths
        d, n = cfg.head_dim, cfg.seq_len
        self.desc_layout = data.StructLayout({
            "length": range(n + 1), "theta": signed(w.theta_bits),
            "shift": unsigned(cfg.shift_bits)})
        self.h_layout = data.StructLayout({
            "data": data.ArrayLayout(signed(cfg.out_bits), d), "last": 1})
        super().__init__({
            "q": _stream_in(data.ArrayLayout(signed(cfg.qk_bits), d)),
            "k": _stream_in(data.ArrayLayout(signed(cfg.qk_bits), d)),
            "v": _stream_in(data.ArrayLayout(signed(cfg.v_bits), d)),
            "desc": _stream_in(self.desc_layout),
            "h": Out(stream.Signature(self.h_layout)),
        })
        self._MustUse__silence = False

    config = property(lambda self: self._config)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _flag_pair(m, name):
        """Two-slot flag register with set/clear pulses per slot.

        Returns ``(flags, set, clear, (set_pending, clear_pending))``. Set and
        clear pulses are registered once before they reach the flag, so the
        logic that raises them (a producer's or consumer's end of job) is not in
        front of the other side's start condition. That is safe for these
        handshakes: a slot is set only by its producer after being seen clear
        and cleared only by its consumer after being seen set, and both sides
        alternate between the two slots, so a one-cycle delay only makes the
        other side start one cycle later.
        """
        flags = Signal(2, name=name)
        set_ = Signal(2, name=f"{name}_set")
        clr = Signal(2, name=f"{name}_clr")
        set_p = Signal(2, name=f"{name}_set_pending")
        clr_p = Signal(2, name=f"{name}_clr_pending")
        m.d.sync += [set_p.eq(set_), clr_p.eq(clr), flags.eq(_flag_after(flags, (set_p, clr_p)))]
        return flags, set_, clr, (set_p, clr_p)

    # ---------------------------------------------------------------- elaborate

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        w = cfg.widths
        R, C, n, d = cfg.rows, cfg.cols, cfg.seq_len, cfg.head_dim
        nI, nJ, nL = cfg.row_blocks, cfg.key_tiles, cfg.dim_tiles
        zw = w.z_bits
        thw = w.theta_bits
        tw = w.threshold_bits

        # ------------------------------------------------------------ memories
        q_half = _pow2_bits(nI * d)          # address bits inside one head slot
        k_half = _pow2_bits(nJ * d)
        v_half = _pow2_bits(nL * n)
        z_half = _pow2_bits(nJ * C)
        # Every memory is double-buffered by head slot and a slot is never read and
        # written in the same cycle (the full/busy flags order them), so read/write
        # collisions cannot happen: ``no_rw_check`` tells Yosys not to build
        # collision-bypass logic in front of the block RAMs (docs/hardware.md).
        qmem = [_bram(signed(cfg.qk_bits), 2 << q_half) for _ in range(R)]
        kmem = [_bram(signed(cfg.qk_bits), 2 << k_half) for _ in range(C)]
        vmem = [_bram(signed(cfg.v_bits), 2 << v_half) for _ in range(C)]
        zmem = [_bram(unsigned(zw), 2 << z_half) for _ in range(R)]
        omem = _bram(data.ArrayLayout(signed(cfg.out_bits), nL * C), 2 << _pow2_bits(R))
        for i, mem in enumerate(qmem):
            m.submodules[f"qmem{i}"] = mem
        for i, mem in enumerate(kmem):
            m.submodules[f"kmem{i}"] = mem
        for i, mem in enumerate(vmem):
            m.submodules[f"vmem{i}"] = mem
        for i, mem in enumerate(zmem):
            m.submodules[f"zmem{i}"] = mem
        m.submodules.omem = omem

        qfull, qfull_set, qfull_clr, qfull_pend = self._flag_pair(m, "qfull")
        kfull, kfull_set, kfull_clr, kfull_pend = self._flag_pair(m, "kfull")
        vfull, vfull_set, vfull_clr, vfull_pend = self._flag_pair(m, "vfull")
        dfull, dfull_set, dfull_clr, dfull_pend = self._flag_pair(m, "dfull")
        zbusy, zbusy_set, zbusy_clr, zbusy_pend = self._flag_pair(m, "zbusy")   # claimed by a score job
        zfull, zfull_set, zfull_clr, zfull_pend = self._flag_pair(m, "zfull")   # stats done, mix may read
        obusy, obusy_set, obusy_clr, obusy_pend = self._flag_pair(m, "obusy")   # claimed by a mix job
        ofull, ofull_set, ofull_clr, ofull_pend = self._flag_pair(m, "ofull")   # block complete, emit

        # ------------------------------------------------- Q and K loaders
        # A beat (one row of d codes) is shifted out one code per cycle into the
        # bank of its row: Q row i -> bank i mod R at (slot, (i div R)*d + k);
        # K row j -> bank j mod C at (slot, (j div C)*d + k).
        def qk_loader(prefix, port, mems, nbanks, half_bits, full, full_set, full_pend):
            wports = [mem.write_port() for mem in mems]
            buf = Signal(data.ArrayLayout(signed(cfg.qk_bits), d), name=f"{prefix}_buf")
            busy = Signal(name=f"{prefix}_busy")
            kk = Signal(range(d), name=f"{prefix}_k")
            bank = Signal(range(nbanks), name=f"{prefix}_bank")     # of the row being written
            base = Signal(half_bits + 1, name=f"{prefix}_base")     # (row div banks) * d
            slot = Signal(name=f"{prefix}_slot")
            last_row = Signal(name=f"{prefix}_last_row")
            # next row to accept
            nbank = Signal(range(nbanks), name=f"{prefix}_nbank")
            nbase = Signal(half_bits + 1, name=f"{prefix}_nbase")
            nrow = Signal(range(n), name=f"{prefix}_nrow")
            nslot = Signal(name=f"{prefix}_nslot")
            klast = Signal(name=f"{prefix}_klast")   # kk == d - 1, registered
            finishing = busy & klast
            accept = port.valid & port.ready
            # ready is registered, so the load enable of the d-code buffer is one
            # gate after two flip-flops.
            ready = Signal(init=1, name=f"{prefix}_ready")
            m.d.comb += port.ready.eq(ready)
            # kk == d - 2, registered one cycle earlier still, so no comparator
            # sits in front of the ready flip-flop either.
            kpen = Signal(name=f"{prefix}_kpen")
            _registered_ready(m, ready, accept=accept, busy=busy, finishing=finishing,
                              last_next=Mux(accept, d == 1, Mux(busy, kpen, klast)),
                              full=full, pending=full_pend,
                              slot_next=Mux(accept & (nrow == n - 1), ~nslot, nslot))
            with m.If(busy):
                m.d.sync += [klast.eq(kpen), kpen.eq(kk == d - 3)]
            for b, wp in enumerate(wports):
                m.d.comb += [wp.addr.eq(_addr(base + kk, half_bits, slot)),
                             wp.data.eq(buf[0]), wp.en.eq(busy & (bank == b))]
            with m.If(busy):
                m.d.sync += kk.eq(kk + 1)
                with m.If(~ready):
                    m.d.sync += buf.as_value().eq(buf.as_value() >> cfg.qk_bits)
            with m.If(finishing):
                m.d.sync += busy.eq(0)
                with m.If(last_row):
                    m.d.comb += full_set.bit_select(slot, 1).eq(1)
            # The buffer loads whenever the loader is ready (valid or not): it holds
            # nothing needed then, and its d * bits load enables hang off a flip-flop.
            with m.If(ready):
                m.d.sync += buf.eq(port.payload)
            with m.If(accept):
                m.d.sync += [busy.eq(1), kk.eq(0), klast.eq(d == 1), kpen.eq(d == 2),
                             bank.eq(nbank), base.eq(nbase), slot.eq(nslot),
                             last_row.eq(nrow == n - 1)]
                with m.If(nrow == n - 1):
                    m.d.sync += [nrow.eq(0), nbank.eq(0), nbase.eq(0), nslot.eq(~nslot)]
                with m.Else():
                    m.d.sync += nrow.eq(nrow + 1)
                    with m.If(nbank == nbanks - 1):
                        m.d.sync += [nbank.eq(0), nbase.eq(nbase + d)]
                    with m.Else():
                        m.d.sync += nbank.eq(nbank + 1)

        qk_loader("qld", self.q, qmem, R, q_half, qfull, qfull_set, qfull_pend)
        qk_loader("kld", self.k, kmem, C, k_half, kfull, kfull_set, kfull_pend)

        # ------------------------------------------------------------ V loader
        # Row j, code l -> bank l mod C at (slot, (l div C)*n + j); C codes per cycle.
        vw = [mem.write_port() for mem in vmem]
        vbuf = Signal(data.ArrayLayout(signed(cfg.v_bits), nL * C))
        vbusy = Signal()
        vt = Signal(range(nL))                 # dim tile being written
        vaddr = Signal(v_half + 1)             # (vt * n + row) inside the slot
        vslot = Signal()
        vlast_row = Signal()
        vrow = Signal(range(n))                # next row to accept
        vnslot = Signal()
        vtlast = Signal()                      # vt == nL - 1, registered
        vfinishing = vbusy & vtlast
        vaccept = self.v.valid & self.v.ready
        # ready is registered, as for Q/K.
        vready = Signal(init=1)
        m.d.comb += self.v.ready.eq(vready)
        _registered_ready(m, vready, accept=vaccept, busy=vbusy, finishing=vfinishing,
                          last_next=Mux(vaccept, nL == 1, Mux(vbusy, vt == nL - 2, vtlast)),
                          full=vfull, pending=vfull_pend,
                          slot_next=Mux(vaccept & (vrow == n - 1), ~vnslot, vnslot))
        for c, wp in enumerate(vw):
            m.d.comb += [wp.addr.eq(_addr(vaddr, v_half, vslot)), wp.data.eq(vbuf[c]),
                         wp.en.eq(vbusy)]
        with m.If(vbusy):
            m.d.sync += [vt.eq(vt + 1), vtlast.eq(vt == nL - 2), vaddr.eq(vaddr + n)]
            with m.If(~vready):
                m.d.sync += vbuf.as_value().eq(vbuf.as_value() >> (C * cfg.v_bits))
        # As for Q/K: the buffer loads whenever the loader is ready.
        with m.If(vready):
            m.d.sync += vbuf.as_value().eq(self.v.payload.as_value())
        with m.If(vfinishing):
            m.d.sync += vbusy.eq(0)
            with m.If(vlast_row):
                m.d.comb += vfull_set.bit_select(vslot, 1).eq(1)
        with m.If(vaccept):
            m.d.sync += [vbusy.eq(1), vt.eq(0), vtlast.eq(nL == 1),
                         vaddr.eq(vrow), vslot.eq(vnslot), vlast_row.eq(vrow == n - 1)]
            with m.If(vrow == n - 1):
                m.d.sync += [vrow.eq(0), vnslot.eq(~vnslot)]
            with m.Else():
                m.d.sync += vrow.eq(vrow + 1)

        # ---------------------------------------------------- descriptor loader
        d_len = [Signal(range(n + 1), name=f"desc_len{i}") for i in range(2)]
        d_theta = [Signal(signed(thw), name=f"desc_theta{i}") for i in range(2)]
        d_shift = [Signal(cfg.shift_bits, name=f"desc_shift{i}") for i in range(2)]
        dslot = Signal()
        m.d.comb += self.desc.ready.eq(~dfull.bit_select(dslot, 1))
        with m.If(self.desc.valid & self.desc.ready):
            m.d.sync += dslot.eq(~dslot)
            for i in range(2):
                with m.If(dslot == i):
                    m.d.sync += [d_len[i].eq(self.desc.payload.length),
                                 d_theta[i].eq(self.desc.payload.theta),
                                 d_shift[i].eq(self.desc.payload.shift)]
            m.d.comb += dfull_set.bit_select(dslot, 1).eq(1)

        # -------------------------------------------------------- score stage
        jb_bits = _ubits(nJ * C)
        stag = data.StructLayout({"zslot": 1, "first": 1, "last": 1})
        m.submodules.score = score = SystolicArray(
            pe=functools.partial(L1PE, width=cfg.qk_bits, length=d, tag_width=stag.size),
            rows=R, cols=C, pipelined_readout=True)
        q_rd = [mem.read_port() for mem in qmem]
        k_rd = [mem.read_port() for mem in kmem]

        s_run = Signal()
        s_hp = Signal()                        # head slot of the job
        s_blk = Signal(range(nI))              # row block I
        s_blast = Signal(init=int(nI == 1))    # s_blk == nI - 1, registered
        s_qbase = Signal(q_half + 1)           # I * d
        s_kbase = Signal(k_half + 1)           # J * d
        s_tile = Signal(range(nJ))
        s_k = Signal(range(d))
        s_zs = Signal()                        # z slot of the job
        s_gap = Signal(range(cfg.min_score_job_cycles + 2))
        z_hp = [Signal(name=f"zinfo_hp{i}") for i in range(2)]
        z_lastblk = [Signal(name=f"zinfo_last{i}") for i in range(2)]
        # The head's L and theta, copied per z slot when its score job starts (the
        # descriptor slot is full then), so the row statistics and the padding
        # check select between two registers and not through the head slot.
        z_len = [Signal(range(n + 1), name=f"zinfo_len{i}") for i in range(2)]
        z_theta = [Signal(signed(thw), name=f"zinfo_theta{i}") for i in range(2)]

        extra = max(0, cfg.min_score_job_cycles - cfg.score_job_cycles)
        s_can = Signal()
        # s_ok == (s_gap == 0) & qfull[s_hp] & kfull[s_hp] & dfull[s_hp] & ~zbusy[s_zs],
        # registered from the next values of its inputs (defined below), so the
        # start condition is one gate and not a tree of flag multiplexers.
        s_ok = Signal()
        m.d.comb += s_can.eq(~s_run & s_ok)
        with m.If(s_gap != 0):
            m.d.sync += s_gap.eq(s_gap - 1)
        with m.If(s_can):
            m.d.sync += [s_run.eq(1), s_tile.eq(0), s_k.eq(0), s_kbase.eq(0)]
            m.d.comb += zbusy_set.bit_select(s_zs, 1).eq(1)
            for i in range(2):
                with m.If(s_zs == i):
                    m.d.sync += [z_hp[i].eq(s_hp), z_lastblk[i].eq(s_blast),
                                 z_len[i].eq(Mux(s_hp, d_len[1], d_len[0])),
                                 z_theta[i].eq(Mux(s_hp, d_theta[1], d_theta[0]))]
        # Terminal counts are registered one cycle ahead (s_klast == (s_k == d - 1),
        # s_tlast == (s_tile == nJ - 1)): no comparator sits in front of the
        # flag and slot logic they drive.
        s_klast, s_tlast = _terminal_flags(m, "s", s_can, s_run, s_k, d, s_tile, nJ)
        s_tile_end = Signal()
        s_job_end = Signal()
        m.d.comb += [s_tile_end.eq(s_run & s_klast),
                     s_job_end.eq(s_tile_end & s_tlast)]
        with m.If(s_run):
            m.d.sync += s_k.eq(s_k + 1)
            with m.If(s_tile_end):
                m.d.sync += [s_k.eq(0), s_tile.eq(s_tile + 1), s_kbase.eq(s_kbase + d)]
            with m.If(s_job_end):
                m.d.sync += [s_run.eq(0), s_zs.eq(~s_zs), s_gap.eq(extra)]
                with m.If(s_blast):
                    m.d.sync += [s_blk.eq(0), s_qbase.eq(0), s_hp.eq(~s_hp)]
                    m.d.comb += [qfull_clr.bit_select(s_hp, 1).eq(1),
                                 kfull_clr.bit_select(s_hp, 1).eq(1)]
                with m.Else():
                    m.d.sync += [s_blk.eq(s_blk + 1), s_qbase.eq(s_qbase + d)]
        # s_gap's next value is 0 when no job ends now and s_gap <= 1 (no subtractor).
        s_gap_n_zero = Mux(s_job_end, extra == 0, s_gap <= 1)
        s_hp_n = Mux(s_job_end & s_blast, ~s_hp, s_hp)
        s_blk_n = Mux(s_job_end, Mux(s_blast, 0, s_blk + 1), s_blk)
        m.d.sync += s_blast.eq(s_blk_n == nI - 1)
        s_zs_n = Mux(s_job_end, ~s_zs, s_zs)
        m.d.sync += s_ok.eq(s_gap_n_zero
                            & _flag_after(qfull, qfull_pend).bit_select(s_hp_n, 1)
                            & _flag_after(kfull, kfull_pend).bit_select(s_hp_n, 1)
                            & _flag_after(dfull, dfull_pend).bit_select(s_hp_n, 1)
                            & ~_flag_after(zbusy, zbusy_pend).bit_select(s_zs_n, 1))
        for p in q_rd:
            m.d.comb += p.addr.eq(_addr(s_qbase + s_k, q_half, s_hp))
        for p in k_rd:
            m.d.comb += p.addr.eq(_addr(s_kbase + s_k, k_half, s_hp))
        # Control aligned with the read data (one cycle), then both registered once
        # more: the block-RAM outputs feed a register, not the PEs' subtractors
        # (on ECP5 that register becomes the DP16KD output register, see
        # hw/ecp5_outreg.py).
        s_tag = Signal(stag)
        s_valid, s_first, s_last = Signal(), Signal(), Signal()
        m.d.sync += [s_valid.eq(s_run), s_first.eq(s_k == 0), s_last.eq(s_klast),
                     s_tag.zslot.eq(s_zs), s_tag.first.eq(s_tile == 0),
                     s_tag.last.eq(s_tlast)]
        s2_tag = Signal(stag)
        s2_valid, s2_first, s2_last = Signal(), Signal(), Signal()
        m.d.sync += [s2_valid.eq(s_valid), s2_first.eq(s_first), s2_last.eq(s_last),
                     s2_tag.eq(s_tag)]
        for r in range(R):
            qd = Signal(signed(cfg.qk_bits), name=f"q_d{r}", reset_less=True)
            m.d.sync += qd.eq(q_rd[r].data)
            m.d.comb += score.a[r].eq(qd)
        for c in range(C):
            kd = Signal(signed(cfg.qk_bits), name=f"k_d{c}", reset_less=True)
            m.d.sync += kd.eq(k_rd[c].data)
            m.d.comb += score.b[c].eq(kd)
        m.d.comb += [score.valid.eq(s2_valid), score.first.eq(s2_first), score.last.eq(s2_last),
                     score.tag.eq(s2_tag)]

        # ----------------------------------------- score back end: z memory + stats
        thr = [[Signal(signed(tw), name=f"thr{s}_{r}") for r in range(R)] for s in range(2)]
        z_wr = [mem.write_port() for mem in zmem]
        stats_slot = [Signal(name=f"stats_slot{r}") for r in range(R)]
        stats = []
        for r in range(R):
            st = RowStatistics(z_width=zw, max_length=n, theta_width=thw, threshold_width=tw,
                               index_limit=1 << jb_bits)
            m.submodules[f"rowstats{r}"] = st
            stats.append(st)
            tag = data.View(stag, score.out_tag[r])
            # Key index of the result: the row's results come in key order.
            j = Signal(jb_bits, name=f"score_j{r}")
            j_next = Signal(jb_bits, name=f"score_jnext{r}")
            restart = tag.first & (score.out_col[r] == 0)
            m.d.comb += j.eq(Mux(restart, 0, j_next))
            with m.If(score.out_valid[r]):
                m.d.sync += j_next.eq(Mux(restart, 1, j_next + 1))   # j + 1, adder off the mux
            # One register stage between the array and the back end (statistics,
            # z memory): the key index and the restart flag reach the row unit
            # from flip-flops.
            p_valid = Signal(name=f"zres_valid{r}")
            p_first = Signal(name=f"zres_first{r}")
            p_last = Signal(name=f"zres_last{r}")
            p_zs = Signal(name=f"zres_zslot{r}")
            p_z = Signal(zw, name=f"zres_z{r}", reset_less=True)
            p_j = Signal(jb_bits, name=f"zres_j{r}", reset_less=True)
            m.d.sync += [p_valid.eq(score.out_valid[r]), p_first.eq(restart),
                         p_last.eq(tag.last & (score.out_col[r] == C - 1)),
                         p_zs.eq(tag.zslot), p_z.eq(score.out_data[r]), p_j.eq(j)]
            m.d.comb += [
                st.valid.eq(p_valid),
                st.first.eq(p_first),
                st.last.eq(p_last),
                st.z.eq(p_z),
                st.index.eq(p_j),
                st.length.eq(Mux(p_zs, z_len[1], z_len[0])),
                st.theta.eq(Mux(p_zs, z_theta[1], z_theta[0])),
                z_wr[r].addr.eq(_addr(p_j, z_half, p_zs)),
                z_wr[r].data.eq(p_z),
                z_wr[r].en.eq(p_valid),
            ]
            with m.If(st.valid & st.last):
                m.d.sync += stats_slot[r].eq(p_zs)
            with m.If(st.done):
                for s in range(2):
                    with m.If(stats_slot[r] == s):
                        m.d.sync += thr[s][r].eq(st.threshold)
        with m.If(stats[R - 1].done):
            m.d.comb += zfull_set.bit_select(stats_slot[R - 1], 1).eq(1)

        # -------------------------------------------------------- mixing stage
        mtag = data.StructLayout({"tile": range(nL), "oslot": 1, "last": 1})
        m.submodules.mix = mix = SystolicArray(
            pe=functools.partial(SoftThresholdPE, v_bits=cfg.v_bits, zb_bits=_ubits(cfg.zb_max),
                                 v_shift=cfg.v_shift, z_shift=cfg.z_shift, length=n,
                                 tag_width=mtag.size),
            rows=R, cols=C, pipelined_readout=True)
        z_rd = [mem.read_port() for mem in zmem]
        v_rd = [mem.read_port() for mem in vmem]
        m_run = Signal()
        m_zs = Signal()                        # z slot being mixed
        m_os = Signal()                        # output slot being filled
        m_tile = Signal(range(nL))
        m_vbase = Signal(v_half + 1)           # tile * n
        m_j = Signal(range(n))
        o_last = [Signal(name=f"oinfo_last{i}") for i in range(2)]
        # Output shift of the head whose block fills output slot i; the slot stays
        # claimed (obusy) until it is emitted, the descriptor slot may be reused sooner.
        o_shift = [Signal(cfg.shift_bits, name=f"oinfo_shift{i}") for i in range(2)]
        m_hp = Mux(m_zs, z_hp[1], z_hp[0])
        m_lastblk = Mux(m_zs, z_lastblk[1], z_lastblk[0])
        # The running job's head slot and last-block flag, registered at its start.
        mj_hp = Signal()
        mj_lastblk = Signal()
        m_can = Signal()
        # m_ok == zfull[m_zs] & vfull[m_hp] & ~obusy[m_os], registered from the
        # next values of its inputs (below).
        m_ok = Signal()
        m.d.comb += m_can.eq(~m_run & m_ok)
        with m.If(m_can):
            m.d.sync += [m_run.eq(1), m_tile.eq(0), m_vbase.eq(0), m_j.eq(0),
                         mj_hp.eq(m_hp), mj_lastblk.eq(m_lastblk)]
            m.d.comb += obusy_set.bit_select(m_os, 1).eq(1)
            for i in range(2):
                with m.If(m_os == i):
                    m.d.sync += [o_last[i].eq(m_lastblk),
                                 o_shift[i].eq(Mux(m_hp, d_shift[1], d_shift[0]))]
        m_jlast, m_tlast = _terminal_flags(m, "m", m_can, m_run, m_j, n, m_tile, nL)
        m_tile_end = Signal()
        m_job_end = Signal()
        m.d.comb += [m_tile_end.eq(m_run & m_jlast),
                     m_job_end.eq(m_tile_end & m_tlast)]
        with m.If(m_run):
            m.d.sync += m_j.eq(m_j + 1)
            with m.If(m_tile_end):
                m.d.sync += [m_j.eq(0), m_tile.eq(m_tile + 1), m_vbase.eq(m_vbase + n)]
            with m.If(m_job_end):
                m.d.sync += [m_run.eq(0), m_zs.eq(~m_zs), m_os.eq(~m_os)]
                m.d.comb += [zfull_clr.bit_select(m_zs, 1).eq(1),
                             zbusy_clr.bit_select(m_zs, 1).eq(1)]
                with m.If(mj_lastblk):
                    m.d.comb += [vfull_clr.bit_select(mj_hp, 1).eq(1),
                                 dfull_clr.bit_select(mj_hp, 1).eq(1)]
        m_zs_n = Mux(m_job_end, ~m_zs, m_zs)
        m_os_n = Mux(m_job_end, ~m_os, m_os)
        z_hp_n = [Mux(s_can & (s_zs == i), s_hp, z_hp[i]) for i in range(2)]
        m.d.sync += m_ok.eq(_flag_after(zfull, zfull_pend).bit_select(m_zs_n, 1)
                            & _flag_after(vfull, vfull_pend).bit_select(
                                Mux(m_zs_n, z_hp_n[1], z_hp_n[0]), 1)
                            & ~_flag_after(obusy, obusy_pend).bit_select(m_os_n, 1))
        for p in z_rd:
            m.d.comb += p.addr.eq(_addr(m_j, z_half, m_zs))
        for p in v_rd:
            m.d.comb += p.addr.eq(_addr(m_vbase + m_j, v_half, mj_hp))
        # Stage 1 (read data valid): threshold + clip per row; V delayed to match.
        m1_valid, m1_first, m1_last = Signal(), Signal(), Signal()
        m1_pad = Signal()
        m1_zs = Signal()
        m1_tag = Signal(mtag)
        m.d.sync += [m1_valid.eq(m_run), m1_first.eq(m_j == 0), m1_last.eq(m_jlast),
                     m1_pad.eq(m_j >= Mux(m_zs, z_len[1], z_len[0])), m1_zs.eq(m_zs),
                     m1_tag.tile.eq(m_tile), m1_tag.oslot.eq(m_os),
                     m1_tag.last.eq(m_tlast)]
        # ThresholdClip is pipelined (ThresholdClip.latency stages: register the
        # block-RAM read data, subtract, select); control and V follow it.
        clip_lat = ThresholdClip.latency
        mc_valid, mc_first, mc_last, mc_tag = m1_valid, m1_first, m1_last, m1_tag
        for i in range(clip_lat):
            nv, nf, nl = (Signal(name=f"mclip{i}_valid"), Signal(name=f"mclip{i}_first"),
                          Signal(name=f"mclip{i}_last"))
            nt = Signal(mtag, name=f"mclip{i}_tag")
            m.d.sync += [nv.eq(mc_valid), nf.eq(mc_first), nl.eq(mc_last), nt.eq(mc_tag)]
            mc_valid, mc_first, mc_last, mc_tag = nv, nf, nl, nt
        for r in range(R):
            tc = ThresholdClip(z_width=zw, threshold_width=tw, zb_max=cfg.zb_max)
            m.submodules[f"thrclip{r}"] = tc
            m.d.comb += [tc.z.eq(z_rd[r].data), tc.pad.eq(m1_pad),
                         tc.threshold.eq(Mux(m1_zs, thr[1][r], thr[0][r])),
                         mix.a[r].eq(tc.zb)]
        for c in range(C):
            vd = v_rd[c].data
            for i in range(clip_lat):
                nvd = Signal(signed(cfg.v_bits), name=f"v_d{c}_{i}", reset_less=True)
                m.d.sync += nvd.eq(vd)
                vd = nvd
            m.d.comb += mix.b[c].eq(vd)
        m.d.comb += [mix.valid.eq(mc_valid), mix.first.eq(mc_first), mix.last.eq(mc_last),
                     mix.tag.eq(mc_tag)]

        # -------------------------------- mixing back end: round, collect, write block
        # Round half up by the run-time r, then saturate (contract step 6), in
        # registered stages and without an adder in front of the shifter:
        #   stage 0: acc and the head's r registered
        #   stage 1 (barrel shifter): t = (2 * acc) >> r = floor(acc / 2**(r-1))
        #   stage 2 (adder, compare): h = sat((t + 1) >> 1)
        # which equals floor((acc + 2**(r-1)) / 2**r) for r >= 1 and acc for r = 0.
        o_wr = omem.write_port(granularity=C)
        omin, omax = -(1 << (cfg.out_bits - 1)), (1 << (cfg.out_bits - 1)) - 1
        wr_data = 0
        wr_addr = 0
        wr_en = 0
        for r in range(R):
            # stage 0: the accumulator and its head's r, registered.
            tag0 = data.View(mtag, mix.out_tag[r])
            acc = Signal.like(mix.out_data[r], name=f"acc{r}", reset_less=True)
            r_now = Signal(cfg.shift_bits, name=f"acc_shift{r}", reset_less=True)
            a_ok = Signal(name=f"acc_ok{r}")
            a_col = Signal(range(C), name=f"acc_col{r}", reset_less=True)
            tag = Signal(mtag, name=f"acc_tag{r}", reset_less=True)
            m.d.sync += [acc.eq(mix.out_data[r]),
                         r_now.eq(Mux(tag0.oslot, o_shift[1], o_shift[0])),
                         a_ok.eq(mix.out_valid[r]), a_col.eq(mix.out_col[r]), tag.eq(tag0)]
            sh_val = Signal(signed(len(acc) + 1), name=f"shifted{r}", reset_less=True)
            sh_ok = Signal(name=f"shifted_ok{r}")
            sh_col = Signal(range(C), name=f"shifted_col{r}", reset_less=True)
            sh_tag = Signal(mtag, name=f"shifted_tag{r}", reset_less=True)
            m.d.sync += [
                sh_val.eq(Cat(Const(0, 1), acc).as_signed() >> r_now),
                sh_ok.eq(a_ok), sh_col.eq(a_col), sh_tag.eq(tag),
            ]
            # (sh_val + 1) >> 1 saturated, with the two range checks made on sh_val
            # beside a narrow (out_bits + 1)-bit adder instead of after a wide one:
            #   floor((s + 1) / 2) > omax  <=>  s >= 2 * omax + 1
            #   floor((s + 1) / 2) < omin  <=>  s <  2 * omin - 1
            # and when neither holds, the result is bits 1..out_bits of s + 1.
            ob = cfg.out_bits
            above = sh_val >= 2 * omax + 1
            below = sh_val < 2 * omin - 1
            low = Signal(ob + 1, name=f"round{r}")
            m.d.comb += low.eq(sh_val[:ob + 1] + 1)
            h_val = Signal(signed(cfg.out_bits), name=f"hval{r}", reset_less=True)
            h_ok = Signal(name=f"hval_ok{r}")
            h_col = Signal(range(C), name=f"hval_col{r}", reset_less=True)
            h_tag = Signal(mtag, name=f"hval_tag{r}", reset_less=True)
            m.d.sync += [
                h_val.eq(Mux(above, omax, Mux(below, omin, low[1:].as_signed()))),
                h_ok.eq(sh_ok), h_col.eq(sh_col), h_tag.eq(sh_tag),
            ]
            coll = Signal(data.ArrayLayout(signed(cfg.out_bits), C), name=f"collect{r}",
                          reset_less=True)
            if C > 1:
                with m.If(h_ok):
                    m.d.sync += coll.as_value().eq(Cat(coll.as_value()[cfg.out_bits:], h_val))
            row_data = Cat(coll.as_value()[cfg.out_bits:], h_val)
            # h_end == h_ok & (h_col == C - 1), registered beside h_val.
            req = Signal(name=f"owr_req{r}")
            m.d.sync += req.eq(sh_ok & (sh_col == C - 1))
            wr_data = wr_data | Mux(req, row_data, 0)
            wr_addr = wr_addr | Mux(req, Cat(Const(r, _pow2_bits(R)), h_tag.oslot), 0)
            wr_en = wr_en | Mux(req, (Const(1, nL) << h_tag.tile)[:nL], 0)
            if r == R - 1:
                last_req = req & h_tag.last
                last_slot = h_tag.oslot
        # The row write is registered once more (address, data, enables) before the
        # output memory, and the slot's "full" flag is set with it.
        slice_data = Signal(C * cfg.out_bits, reset_less=True)
        ow_addr = Signal(_pow2_bits(R) + 1, reset_less=True)
        ow_en = Signal(nL)
        ow_full = Signal(2)
        m.d.sync += [ow_addr.eq(wr_addr), ow_en.eq(wr_en), slice_data.eq(wr_data),
                     ow_full.eq(Mux(last_req, Const(1, 2) << last_slot, 0))]
        m.d.comb += [o_wr.addr.eq(ow_addr), o_wr.en.eq(ow_en), ofull_set.eq(ow_full)]
        # Every slice gets the same data; the enabled one (the tile) keeps it.
        m.d.comb += o_wr.data.as_value().eq(Cat(*[slice_data for _ in range(nL)]))

        # ---------------------------------------------------------- output stream
        o_rd = omem.read_port()
        oc = Signal()                          # slot being emitted
        orow = Signal(_pow2_bits(R))
        h_last = Signal()
        last_rows = n - (nI - 1) * R           # rows of the last block
        o_is_last = Mux(oc, o_last[1], o_last[0])
        advance = ~self.h.valid | self.h.ready
        m.d.comb += [o_rd.en.eq(advance), o_rd.addr.eq(Cat(orow, oc))]
        # o_avail == ofull[oc] and o_rlast == (orow is the last row of the block), kept as
        # registers from the next values of their inputs, so the output handshake
        # drives the slot and flag updates through one gate.
        o_avail = Signal()
        o_rlast = Signal(init=int(R == 1))
        take = advance & o_avail
        with m.If(advance):
            with m.If(o_avail):
                m.d.sync += [self.h.valid.eq(1), h_last.eq(o_is_last & o_rlast)]
                with m.If(o_rlast):
                    m.d.sync += [orow.eq(0), oc.eq(~oc)]
                    m.d.comb += [ofull_clr.bit_select(oc, 1).eq(1),
                                 obusy_clr.bit_select(oc, 1).eq(1)]
                with m.Else():
                    m.d.sync += orow.eq(orow + 1)
            with m.Else():
                m.d.sync += self.h.valid.eq(0)
        oc_n = Mux(take & o_rlast, ~oc, oc)
        orow_n = Mux(take, Mux(o_rlast, 0, orow + 1), orow)
        o_last_n = [Mux(m_can & (m_os == i), m_lastblk, o_last[i]) for i in range(2)]
        m.d.sync += [
            o_avail.eq(_flag_after(ofull, ofull_pend).bit_select(oc_n, 1)),
            o_rlast.eq(orow_n == Mux(Mux(oc_n, o_last_n[1], o_last_n[0]), last_rows - 1, R - 1)),
        ]
        m.d.comb += [self.h.payload.data.as_value().eq(o_rd.data.as_value()[:d * cfg.out_bits]),
                     self.h.payload.last.eq(h_last)]
        return m
