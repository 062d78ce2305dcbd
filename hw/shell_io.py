"""The stream shell's I/O blocks: row loaders, descriptor slots, the block output emitter.

One job: the parts of a core between its input/output streams and its
double-buffered memories, shared by the inhibitor core
(:mod:`inhibitron.hw.core`) and the dot-product baseline
(:mod:`inhibitron.hw.baseline`):

* :class:`RowLoader` -- a stream of rows (one head = ``rows`` beats) into
  banked block RAMs with two head slots; rows spread over the banks
  (``interleave="rows"``, one code written per cycle) or codes spread over
  the banks (``interleave="codes"``, ``banks`` codes per cycle);
* :class:`DescriptorSlots` -- a two-slot store of per-head descriptors;
* :class:`BlockEmitter` -- output blocks of ``rows_per_block`` rows, two
  slots, written row slice by row slice, streamed out as one row per beat
  with a ``last`` flag on the final row of a head;
* :func:`shell_slice_latency` -- the latency the optional register slices
  (:class:`~inhibitron.hw.stream_slice.RegisterSlice`, ``stream_slices`` of
  the core configurations) add at the core's boundary.

Every slot is a :class:`~inhibitron.hw.shell.SlotFlags` pair handled the same
way: the producer sets a slot's flag when it is complete, the consumer clears
it when done; every ``ready``/``valid`` the blocks drive is a flip-flop or
one gate after flip-flops. None multiplies; every address is a counter or a
concatenation.
"""

from __future__ import annotations

from typing import NamedTuple

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .pe import check_int
from .shell import SlotFlags, bram
from .stream_slice import SLICE_LATENCY, RegisterSlice

__all__ = ["BlockEmitter", "DescriptorSlots", "RowLoader", "StreamShell", "add_stream_shell",
           "shell_slice_latency", "slot_bits"]


def slot_bits(entries: int) -> int:
    """Address bits of one slot of ``entries`` entries (at least 1)."""
    return max(1, ceil_log2(entries))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class RowLoader(wiring.Component):
    """Rows of a head from a stream into ``banks`` block RAMs, double-buffered by head slot.

    Every head is ``rows`` beats of ``row_len`` codes; heads alternate between
    slots 0 and 1. A slot's :attr:`full` flag is set (via
    :class:`~inhibitron.hw.shell.SlotFlags`, so two cycles after the write of
    the head's last code) when the whole head is in, and the loader does not
    accept a row of a head whose slot is still full: the consumer frees it
    with a ``clr`` pulse.

    Two layouts (``interleave``):

    ``"rows"``
        Row ``i`` goes to bank ``i mod banks`` at slot index
        ``(i div banks) * row_len + k`` for code ``k``. A beat is shifted out
        one code per cycle: ``row_len`` cycles per row (Q and K of the
        inhibitor core: a bank per PE row/column, a code per reduction step).
    ``"codes"``
        Code ``l`` of row ``j`` goes to bank ``l mod banks`` at slot index
        ``(l div banks) * rows + j``; ``banks`` codes are written per cycle,
        ``ceil(row_len / banks)`` cycles per row (V: a bank per PE column).

    Parameters
    ----------
    shape : ShapeLike
        Shape of one code.
    row_len : int
        Codes per row (``d``).
    rows : int
        Rows per head (``n``).
    banks : int
        Number of memories.
    interleave : ``"rows"`` or ``"codes"``
        See above.

    Members
    -------
    i : In(stream.Signature(ArrayLayout(shape, row_len)))
        The rows, in order, heads back to back. ``ready`` is a register.
    r_slot : In(1)
        Head slot read by all banks.
    r_index : In(index_bits)
        Index inside the slot, read by all banks.
    r_data : Out(ArrayLayout(shape, banks))
        Each bank's code at ``(r_slot, r_index)``, one cycle after the address
        (a synchronous read port).
    clr : In(2)
        The consumer is done with a slot (a one-cycle pulse per slot bit).
    full : Out(2)
        The slot holds a complete head.
    full_next : Out(2)
        Combinational: next value of :attr:`full`
        (:attr:`SlotFlags.after <inhibitron.hw.shell.SlotFlags>`), for a
        consumer that keeps its start condition as a register.

    Latency: a beat accepted at cycle ``t`` has its last code written at
    ``t + cycles_per_row``; a head's ``full`` flag rises at
    ``t_last + cycles_per_row + 2``. Throughput: one beat per
    :attr:`cycles_per_row` cycles.
    """

    def __init__(self, *, shape, row_len: int, rows: int, banks: int,
                 interleave: str = "rows"):
        self._MustUse__silence = True
        self._row_len = check_int("row_len", row_len, minimum=1)
        self._rows = check_int("rows", rows, minimum=1)
        self._banks = check_int("banks", banks, minimum=1)
        if interleave not in ("rows", "codes"):
            raise ValueError(f"interleave must be 'rows' or 'codes', not {interleave!r}")
        self._interleave = interleave
        self._shape = shape
        if interleave == "rows":
            self._slot_depth = _ceil_div(rows, banks) * row_len
        else:
            self._slot_depth = _ceil_div(row_len, banks) * rows
        self._index_bits = slot_bits(self._slot_depth)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(shape, row_len))),
            "r_slot": In(1),
            "r_index": In(self._index_bits),
            "r_data": Out(data.ArrayLayout(shape, banks)),
            "clr": In(2),
            "full": Out(2),
            "full_next": Out(2),
        })
        self._MustUse__silence = False

    row_len = property(lambda self: self._row_len)
    rows = property(lambda self: self._rows)
    banks = property(lambda self: self._banks)
    interleave = property(lambda self: self._interleave)
    index_bits = property(lambda self: self._index_bits, doc="Address bits inside one slot.")
    slot_depth = property(lambda self: self._slot_depth, doc="Entries of one slot of one bank.")

    @property
    def cycles_per_row(self) -> int:
        """Cycles per beat: ``row_len`` (``"rows"``) or ``ceil(row_len / banks)`` (``"codes"``)."""
        if self._interleave == "rows":
            return self._row_len
        return _ceil_div(self._row_len, self._banks)

    def elaborate(self, platform):
        m = Module()
        n, d, nb, hb = self._rows, self._row_len, self._banks, self._index_bits
        # A slot is never read and written in the same cycle (the full flags order
        # producer and consumer), so the memories need no collision bypass.
        mems = [bram(self._shape, 2 << hb) for _ in range(nb)]
        for b, mem in enumerate(mems):
            m.submodules[f"bank{b}"] = mem
        wports = [mem.write_port() for mem in mems]
        for b, mem in enumerate(mems):
            rp = mem.read_port()
            m.d.comb += [rp.addr.eq(Cat(self.r_index, self.r_slot)),
                         self.r_data[b].eq(rp.data)]
        m.submodules.full = full = SlotFlags()
        m.d.comb += [full.clr.eq(self.clr), self.full.eq(full.flags),
                     self.full_next.eq(full.after)]

        rowwise = self._interleave == "rows"
        steps = self.cycles_per_row                 # cycles to write one beat
        per_step = 1 if rowwise else nb             # codes written per cycle
        code_bits = data.ArrayLayout(self._shape, 1).size
        buf = Signal(data.ArrayLayout(self._shape, steps * per_step), name="buf")
        busy = Signal()
        # (counters are at least one bit wide: no zero-width wires in the Verilog)
        step = Signal(range(max(2, steps)))
        slot = Signal()
        last_row = Signal()
        nrow = Signal(range(max(2, n)))             # next row to accept
        nslot = Signal()
        slast = Signal()                            # step == steps - 1, registered
        finishing = busy & slast
        accept = self.i.valid & self.i.ready
        # ready is registered: (~busy | finishing) & ~full[slot], one cycle ahead, so
        # the load enable of the row buffer is one gate after two flip-flops.
        ready = Signal(init=1)
        m.d.comb += self.i.ready.eq(ready)
        if rowwise:
            # step == steps - 2, registered one cycle earlier still: no comparator in
            # front of the ready flip-flop.
            spen = Signal()
            last_next = Mux(accept, steps == 1, Mux(busy, spen, slast))
            with m.If(busy):
                m.d.sync += [slast.eq(spen), spen.eq(step == steps - 3)]
        else:
            last_next = Mux(accept, steps == 1, Mux(busy, step == steps - 2, slast))
            with m.If(busy):
                m.d.sync += slast.eq(step == steps - 2)
        slot_next = Mux(accept & (nrow == n - 1), ~nslot, nslot)
        busy_next = Mux(accept, 1, Mux(finishing, 0, busy))
        m.d.sync += ready.eq((~busy_next | last_next) & ~full.after.bit_select(slot_next, 1))

        if rowwise:
            bank = Signal(range(max(2, nb)))        # bank of the row being written
            base = Signal(hb + 1)                   # (row div banks) * row_len
            nbank = Signal(range(max(2, nb)))
            nbase = Signal(hb + 1)
            addr = (base + step)[:hb]
            for b, wp in enumerate(wports):
                m.d.comb += [wp.addr.eq(Cat(addr, slot)), wp.data.eq(buf[0]),
                             wp.en.eq(busy & (bank == b))]
        else:
            addr = Signal(hb + 1)                   # step * rows + row inside the slot
            for b, wp in enumerate(wports):
                m.d.comb += [wp.addr.eq(Cat(addr[:hb], slot)), wp.data.eq(buf[b]),
                             wp.en.eq(busy)]
        with m.If(busy):
            m.d.sync += step.eq(step + 1)
            if not rowwise:
                m.d.sync += addr.eq(addr + n)
            with m.If(~ready):
                m.d.sync += buf.as_value().eq(buf.as_value() >> (per_step * code_bits))
        # The buffer loads whenever the loader is ready (valid or not): it holds
        # nothing needed then, and its load enables hang off a flip-flop.
        with m.If(ready):
            m.d.sync += buf.as_value().eq(self.i.payload.as_value())
        with m.If(finishing):
            m.d.sync += busy.eq(0)
            with m.If(last_row):
                m.d.comb += full.set.bit_select(slot, 1).eq(1)
        with m.If(accept):
            m.d.sync += [busy.eq(1), step.eq(0), slast.eq(steps == 1), slot.eq(nslot),
                         last_row.eq(nrow == n - 1)]
            if rowwise:
                m.d.sync += [spen.eq(steps == 2), bank.eq(nbank), base.eq(nbase)]
            else:
                m.d.sync += addr.eq(nrow)
            with m.If(nrow == n - 1):
                m.d.sync += [nrow.eq(0), nslot.eq(~nslot)]
                if rowwise:
                    m.d.sync += [nbank.eq(0), nbase.eq(0)]
            with m.Else():
                m.d.sync += nrow.eq(nrow + 1)
                if rowwise:
                    with m.If(nbank == nb - 1):
                        m.d.sync += [nbank.eq(0), nbase.eq(nbase + d)]
                    with m.Else():
                        m.d.sync += nbank.eq(nbank + 1)
        return m


class DescriptorSlots(wiring.Component):
    """Two slots of per-head descriptors, filled from a stream in turn, read by two stages.

    Descriptor ``h`` (counting from 0) goes to slot ``h mod 2``. A head's
    descriptor is read by a *first* consumer (the score stage, which copies
    its fields at every job start) and a *last* one (the mixing stage), and
    the first is done with a head before the last is. Each has its own
    :class:`~inhibitron.hw.shell.SlotFlags`: :attr:`first_full` and
    :attr:`full` both rise two cycles after the handshake (the registered
    pulses of :class:`~inhibitron.hw.shell.SlotFlags`); :attr:`first_full`
    falls at a ``first_clr`` pulse, :attr:`full` at a ``clr`` pulse, and only
    then may the slot take the next descriptor (``i.ready`` is
    ``~full[slot]``, one multiplexer after flip-flops).

    The first consumer waits for :attr:`first_full`, not :attr:`full`: after
    it has released head ``h``'s slot, ``full`` stays up until the last
    consumer releases it too, and would otherwise let the first consumer
    start head ``h + 2`` on head ``h``'s descriptor (possible when a head's
    Q and K load faster than the mixing stage finishes the head before).

    Parameters
    ----------
    layout : ShapeLike
        The descriptor payload (e.g. :attr:`CoreConfig.descriptor_layout
        <inhibitron.hw.config.CoreConfig.descriptor_layout>`).

    Members
    -------
    i : In(stream.Signature(layout))
        One descriptor per head.
    slots : Out(ArrayLayout(layout, 2))
        The stored descriptors (registers; valid while the slot is full).
    first_clr, clr : In(2)
        The first / last consumer is done with a slot (one-cycle pulse per slot bit).
    first_full, first_full_next : Out(2)
        The first consumer's flags and (combinational) their next value.
    full, full_next : Out(2)
        The last consumer's flags and their next value.
    """

    def __init__(self, layout):
        self._MustUse__silence = True
        self._layout = layout
        super().__init__({
            "i": In(stream.Signature(layout)),
            "slots": Out(data.ArrayLayout(layout, 2)),
            "first_clr": In(2),
            "clr": In(2),
            "first_full": Out(2),
            "first_full_next": Out(2),
            "full": Out(2),
            "full_next": Out(2),
        })
        self._MustUse__silence = False

    layout = property(lambda self: self._layout)

    def elaborate(self, platform):
        m = Module()
        m.submodules.flags = flags = SlotFlags()
        m.submodules.first_flags = first = SlotFlags()
        slot = Signal()
        m.d.comb += [flags.clr.eq(self.clr), self.full.eq(flags.flags),
                     self.full_next.eq(flags.after),
                     first.clr.eq(self.first_clr), self.first_full.eq(first.flags),
                     self.first_full_next.eq(first.after),
                     self.i.ready.eq(~flags.flags.bit_select(slot, 1))]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += slot.eq(~slot)
            for s in range(2):
                with m.If(slot == s):
                    m.d.sync += self.slots[s].eq(self.i.payload)
            m.d.comb += [flags.set.bit_select(slot, 1).eq(1),
                         first.set.bit_select(slot, 1).eq(1)]
        return m


class BlockEmitter(wiring.Component):
    """Two output block slots of ``block_rows`` rows each, streamed out one row per beat.

    A producer (a mixing stage) *claims* a free slot (``claim`` pulse, saying
    with ``claim_last`` whether the block is its head's last), writes its rows
    slice by slice through the write port, and *commits* it (``commit``
    pulse). The emitter streams the committed slots in turn (0, 1, 0, ...):
    ``block_rows`` beats, or ``last_rows`` for a head's last block, the final
    beat of which carries ``last``. When the slot's last row has been taken the
    slot is free again (:attr:`busy` falls two cycles later).

    The memory row is ``slices * slice_len`` codes wide (written with
    granularity ``slice_len``); a beat carries its first ``row_len`` codes.
    The memory output feeds ``o.payload`` directly (a read enabled by
    ``~o.valid | o.ready``); ``o.valid`` is a register, as are the two flags it
    depends on (slot committed, row is the block's last), computed one cycle
    ahead.

    Parameters
    ----------
    shape : ShapeLike
        Shape of one output code.
    row_len : int
        Codes per beat.
    slice_len, slices : int
        Codes per write slice and slices per row (``slices * slice_len >= row_len``).
    block_rows : int
        Rows of a full block (``R``).
    last_rows : int
        Rows of a head's last block (``1..block_rows``).

    Members
    -------
    o : Out(stream.Signature(StructLayout({"data": ArrayLayout(shape, row_len), "last": 1})))
        The rows.
    claim : In(2)
        A producer takes a free slot (one-cycle pulse per slot bit).
    claim_last : In(1)
        With ``claim``: the block is its head's last.
    busy : Out(2)
        The slot is claimed (from two cycles after ``claim`` until two cycles
        after its last row is taken); claim only a slot whose flag is 0.
    busy_next : Out(2)
        Combinational: next value of :attr:`busy`.
    w_row : In(range(block_rows)), w_slot : In(1)
        Row and slot written.
    w_en : In(slices)
        Slice enables (none: no write).
    w_data : In(ArrayLayout(shape, slices * slice_len))
        The row; the enabled slices keep their codes.
    commit : In(2)
        The slot's rows are all written (one-cycle pulse, at or after the
        last write's cycle).

    Latency: a slot committed at ``t`` (emitter idle) has its first beat
    valid at ``t +`` :attr:`latency`.
    """

    #: Cycles from a ``commit`` pulse to the first beat of the slot (emitter idle).
    latency = 3

    def __init__(self, *, shape, row_len: int, slice_len: int, slices: int, block_rows: int,
                 last_rows: int):
        self._MustUse__silence = True
        self._row_len = check_int("row_len", row_len, minimum=1)
        self._slice_len = check_int("slice_len", slice_len, minimum=1)
        self._slices = check_int("slices", slices, minimum=1)
        self._block_rows = check_int("block_rows", block_rows, minimum=1)
        self._last_rows = check_int("last_rows", last_rows, minimum=1)
        if slices * slice_len < row_len:
            raise ValueError(f"slices * slice_len = {slices * slice_len} is less than "
                             f"row_len={row_len}")
        if last_rows > block_rows:
            raise ValueError(f"last_rows={last_rows} must be <= block_rows={block_rows}")
        self._shape = shape
        self._row_bits = slot_bits(block_rows)
        self.h_layout = data.StructLayout({"data": data.ArrayLayout(shape, row_len), "last": 1})
        super().__init__({
            "o": Out(stream.Signature(self.h_layout)),
            "claim": In(2),
            "claim_last": In(1),
            "busy": Out(2),
            "busy_next": Out(2),
            "w_row": In(self._row_bits),
            "w_slot": In(1),
            "w_en": In(slices),
            "w_data": In(data.ArrayLayout(shape, slices * slice_len)),
            "commit": In(2),
        })
        self._MustUse__silence = False

    row_len = property(lambda self: self._row_len)
    block_rows = property(lambda self: self._block_rows)
    last_rows = property(lambda self: self._last_rows)

    def elaborate(self, platform):
        m = Module()
        R, last_rows = self._block_rows, self._last_rows
        rb = self._row_bits
        mem = bram(data.ArrayLayout(self._shape, self._slices * self._slice_len), 2 << rb)
        m.submodules.mem = mem
        m.submodules.full = full = SlotFlags()     # block complete, emit
        m.submodules.busy = busy = SlotFlags()     # slot claimed by a producer
        m.d.comb += [busy.set.eq(self.claim), full.set.eq(self.commit),
                     self.busy.eq(busy.flags), self.busy_next.eq(busy.after)]
        wr = mem.write_port(granularity=self._slice_len)
        m.d.comb += [wr.addr.eq(Cat(self.w_row, self.w_slot)), wr.en.eq(self.w_en),
                     wr.data.eq(self.w_data)]
        # Is the slot's block the head's last? Recorded at its claim.
        is_last = [Signal(name=f"slot_last{i}") for i in range(2)]
        last_n = [Mux(self.claim[i], self.claim_last, is_last[i]) for i in range(2)]
        for i in range(2):
            m.d.sync += is_last[i].eq(last_n[i])

        rd = mem.read_port()
        oc = Signal()                          # slot being emitted
        orow = Signal(rb)
        h_last = Signal()
        advance = ~self.o.valid | self.o.ready
        m.d.comb += [rd.en.eq(advance), rd.addr.eq(Cat(orow, oc))]
        # avail == full[oc] and rlast == (orow is the last row of the block), kept as
        # registers from the next values of their inputs, so the output handshake
        # drives the slot and flag updates through one gate.
        avail = Signal()
        rlast = Signal(init=int(R == 1))
        take = advance & avail
        with m.If(advance):
            with m.If(avail):
                m.d.sync += [self.o.valid.eq(1),
                             h_last.eq(Mux(oc, is_last[1], is_last[0]) & rlast)]
                with m.If(rlast):
                    m.d.sync += [orow.eq(0), oc.eq(~oc)]
                    m.d.comb += [full.clr.bit_select(oc, 1).eq(1),
                                 busy.clr.bit_select(oc, 1).eq(1)]
                with m.Else():
                    m.d.sync += orow.eq(orow + 1)
            with m.Else():
                m.d.sync += self.o.valid.eq(0)
        oc_n = Mux(take & rlast, ~oc, oc)
        orow_n = Mux(take, Mux(rlast, 0, orow + 1), orow)
        m.d.sync += [
            avail.eq(full.after.bit_select(oc_n, 1)),
            rlast.eq(orow_n == Mux(Mux(oc_n, last_n[1], last_n[0]), last_rows - 1, R - 1)),
        ]
        code_bits = data.ArrayLayout(self._shape, 1).size
        m.d.comb += [self.o.payload.data.as_value().eq(
                         rd.data.as_value()[:self._row_len * code_bits]),
                     self.o.payload.last.eq(h_last)]
        return m



def shell_slice_latency(head_dim: int) -> int:
    """Cycles :func:`add_stream_shell`'s slices add from the last Q/K row to the first H beat.

    Counted, like :attr:`CoreConfig.first_row_latency
    <inhibitron.hw.config.CoreConfig.first_row_latency>`, from the handshake
    at the core's port with Q and K streamed back to back: a light Q/K slice
    (``head_dim >= 2``) takes the last row as soon as its loader has taken
    the row before, ``head_dim - 1`` cycles before the loader takes it (the
    loader writes a row in ``head_dim`` cycles); a full-rate one (``head_dim
    == 1``) passes rows on after its latency. The full-rate H slice adds its
    latency.
    """
    lead = head_dim - 1 if head_dim >= 2 else SLICE_LATENCY[True]
    return lead + SLICE_LATENCY[True]


class StreamShell(NamedTuple):
    """The stream-facing blocks of a core, as made by :func:`add_stream_shell`."""

    q: RowLoader
    k: RowLoader
    v: RowLoader
    desc: DescriptorSlots
    emit: BlockEmitter


def add_stream_shell(m: Module, core, *, qk_bits: int, v_bits: int, out_bits: int, rows: int,
                     cols: int, seq_len: int, head_dim: int, last_rows: int,
                     slices: bool = False) -> StreamShell:
    """Add the loaders, descriptor slots and output emitter of an ``R x C`` core to ``m``.

    ``core`` is the attention core component, with stream ports ``q``, ``k``,
    ``v``, ``desc`` (in) and ``h`` (out) and a ``desc_layout``. Q row ``i``
    goes to bank ``i mod R`` and K row ``j`` to bank ``j mod C``, a code per
    cycle; code ``l`` of V row ``j`` to bank ``l mod C``, ``C`` codes per
    cycle; every memory is double-buffered by head slot. The emitter holds
    two output blocks of ``R`` rows (``last_rows`` for a head's last block),
    ``ceil(d / C)`` slices of ``C`` codes of ``out_bits`` each.

    With ``slices`` every stream passes a
    :class:`~inhibitron.hw.stream_slice.RegisterSlice` at the core's
    boundary: light ones (1 cycle) on Q and K (a row takes ``d`` cycles to
    write), on V unless its loader writes a row per cycle and on the
    descriptors, a full-rate one (2 cycles) on H. The steady state is
    unchanged; an isolated head's first H beat comes
    :func:`shell_slice_latency` cycles later.
    """
    R, C, n, d = rows, cols, seq_len, head_dim
    m.submodules.qld = qld = RowLoader(shape=signed(qk_bits), row_len=d, rows=n, banks=R,
                                       interleave="rows")
    m.submodules.kld = kld = RowLoader(shape=signed(qk_bits), row_len=d, rows=n, banks=C,
                                       interleave="rows")
    m.submodules.vld = vld = RowLoader(shape=signed(v_bits), row_len=d, rows=n, banks=C,
                                       interleave="codes")
    m.submodules.desc = desc = DescriptorSlots(core.desc_layout)
    m.submodules.emit = emit = BlockEmitter(
        shape=signed(out_bits), row_len=d, slice_len=C, slices=-(-d // C), block_rows=R,
        last_rows=last_rows)
    # Each stream: (name, outside end, shell end, may carry a beat per cycle). With
    # slices, a RegisterSlice sits between the two ends: light where the consumer
    # takes a beat per two cycles or fewer (a loader writing a row over several
    # cycles, one descriptor per head), full-rate on H and on a loader that writes
    # a row per cycle.
    streams = [("q", wiring.flipped(core.q), qld.i, qld.cycles_per_row < 2),
               ("k", wiring.flipped(core.k), kld.i, kld.cycles_per_row < 2),
               ("v", wiring.flipped(core.v), vld.i, vld.cycles_per_row < 2),
               ("desc", wiring.flipped(core.desc), desc.i, False),
               ("h", emit.o, wiring.flipped(core.h), True)]
    for name, src, dst, full_rate in streams:
        if slices:
            m.submodules[f"{name}_slice"] = sl = RegisterSlice(src.payload.shape(),
                                                               full_rate=full_rate)
            wiring.connect(m, src, sl.i)
            src = sl.o
        wiring.connect(m, src, dst)
    return StreamShell(qld, kld, vld, desc, emit)
