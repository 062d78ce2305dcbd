"""Job control of a core's mixing stage, shared by both cores.

One job: decide when the mixing array may start on the next block, and drive
the step/tile counters, the slot bookkeeping and the array's control inputs
while it runs. Both cores end the same way: a block of per-key weights
(the inhibitor's clipped ``z``, the baseline's unnormalised ``exp`` codes)
waits in one of two *source* slots; a mixing job streams it, ``n`` keys per
tile for ``ceil(d / C)`` tiles, against ``V`` of its head, into one of two
output block slots of the :class:`~inhibitron.hw.shell_io.BlockEmitter`.
What differs between the cores is only the per-row datapath between the
source memory read and the array input (threshold and clip; reciprocal
multiply and round), which stays in each core.

:class:`MixJobControl` holds the rest: the job's
:class:`~inhibitron.hw.shell.JobSequencer`, which source and output slot are
in use, the head of the running job, the output shift of each output slot's
head, the start condition (registered), the slot claims and releases, and
the array's ``valid``/``first``/``last``/``tag`` delayed to match the
datapath. :func:`delayed` and :func:`connect_mix_back_end` are the two other
pieces both cores used to write out by hand.
"""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .pe import check_int
from .shell import BlockCollector, JobSequencer

__all__ = ["MixJobControl", "connect_mix_back_end", "delayed"]


def delayed(m: Module, value, stages: int, name: str, *, reset_less: bool = False):
    """``value`` registered ``stages`` times (a shift chain); ``value`` itself for 0.

    The registers are named ``{name}{i}`` (``i`` = 0 .. stages - 1) and have
    ``value``'s shape.
    """
    check_int("stages", stages, minimum=0)
    for i in range(stages):
        nxt = Signal.like(value, name=f"{name}{i}", reset_less=reset_less)
        m.d.sync += nxt.eq(value)
        value = nxt
    return value


def connect_mix_back_end(m: Module, mix, collect, emit, shift) -> None:
    """Wire the mixing array's outputs through the collector into the emitter.

    ``mix`` is the :class:`~inhibitron.hw.systolic.SystolicArray` (pipelined
    read-out, tag = :meth:`BlockCollector.tag_layout_for`), ``collect`` its
    :class:`~inhibitron.hw.shell.BlockCollector`, ``emit`` the core's
    :class:`~inhibitron.hw.shell_io.BlockEmitter` and ``shift`` the two
    output slots' run-time shifts (:attr:`MixJobControl.out_shift`).
    """
    m.d.comb += [collect.i_valid.eq(mix.out_valid), collect.i_acc.eq(mix.out_data),
                 collect.i_col.eq(mix.out_col), collect.i_tag.as_value().eq(mix.out_tag),
                 collect.shift.eq(shift),
                 emit.w_row.eq(collect.w_row), emit.w_slot.eq(collect.w_slot),
                 emit.w_en.eq(collect.w_en), emit.w_data.eq(collect.w_data),
                 emit.commit.eq(collect.commit)]


class MixJobControl(wiring.Component):
    """Start, count and bookkeep the jobs of a mixing array.

    A job mixes source slot :attr:`src` into output slot :attr:`oslot`. It
    starts (:attr:`start`, one cycle, only while no job runs) when the source
    slot is full, ``V`` of its head is loaded and the output slot is free;
    that condition is a register computed from the *next* values of the
    flags (``*_next`` / ``src_full_after`` inputs), so it is ready at the
    start of the cycle. On start the output slot is claimed (:attr:`claim`,
    :attr:`claim_last` for a head's last block) and its shift latched from
    the head's descriptor. At the job's end both slot pointers toggle, the
    source slot is released (:attr:`src_clr`) and, after a head's last
    block, its head slot (:attr:`head_clr`: ``V`` and the descriptor).

    Parameters
    ----------
    steps : int
        Keys per tile, ``n``.
    tiles : int
        Tiles per job, ``ceil(d / C)``.
    v_index_bits : int
        Width of the ``V`` read index within a head slot (``RowLoader.index_bits``).
    shift_bits : int
        Width of the output shift ``r``.
    array_delay : int
        Cycles from the source read's data (one cycle after the step is
        issued) to the array input: the core's datapath latency. The
        ``a_*`` outputs are delayed by it.

    Members
    -------
    src_full_after : In(2)
        The source slots' "full" flags as they will be next cycle
        (``SlotFlags.after``).
    src_head, src_head_next : In(2)
        Head slot of the block in each source slot, now and next cycle.
    src_last : In(2)
        The block in each source slot is its head's last.
    head_full_next : In(2)
        ``V`` of each head slot is loaded, next cycle (``RowLoader.full_next``).
    out_busy_next : In(2)
        Each output slot is claimed, next cycle (``BlockEmitter.busy_next``).
    head_shift : In(ArrayLayout(unsigned(shift_bits), 2))
        The output shift ``r`` of each head slot's descriptor.

    start : Out(1)
        A job starts (combinational).
    run, step, tile, base, step_last, tile_last, job_end : Out
        The job's :class:`JobSequencer` (``base = tile * n``, the ``V`` row
        offset of the tile).
    src, oslot : Out(1)
        Source and output slot of the running (or next) job.
    head, last : Out(1)
        Head slot and last-block flag of the running job (registered at start).
    v_index : Out(v_index_bits)
        ``V`` row to read this step: ``base + step``.
    out_shift : Out(ArrayLayout(unsigned(shift_bits), 2))
        Shift ``r`` of the head whose block fills each output slot.
    claim : Out(2), claim_last : Out(1)
        To ``BlockEmitter.claim`` / ``claim_last``.
    src_clr, head_clr : Out(2)
        Release pulses for the source slot flags and the head slot
        (``V`` loader and descriptor).
    rd_valid, rd_src : Out(1)
        The source read's data is valid this cycle, and from which slot
        (registered ``run`` / ``src``, one cycle after the step).
    a_valid, a_first, a_last : Out(1), a_tag : Out(tag_layout)
        The array's control inputs, ``array_delay`` cycles after ``rd_*``;
        ``a_tag`` is ``BlockCollector.tag_layout_for(tiles)``.
    """

    def __init__(self, *, steps: int, tiles: int, v_index_bits: int, shift_bits: int,
                 array_delay: int):
        self._MustUse__silence = True
        self._steps = check_int("steps", steps, minimum=1)
        self._tiles = check_int("tiles", tiles, minimum=1)
        self._v_index_bits = check_int("v_index_bits", v_index_bits, minimum=1)
        self._array_delay = check_int("array_delay", array_delay, minimum=0)
        check_int("shift_bits", shift_bits, minimum=1)
        self.tag_layout = BlockCollector.tag_layout_for(tiles)
        super().__init__({
            "src_full_after": In(2), "src_head": In(2), "src_head_next": In(2),
            "src_last": In(2), "head_full_next": In(2), "out_busy_next": In(2),
            "head_shift": In(data.ArrayLayout(unsigned(shift_bits), 2)),
            "start": Out(1), "run": Out(1),
            "step": Out(range(max(2, steps))), "tile": Out(range(max(2, tiles))),
            "base": Out(v_index_bits + 1),
            "step_last": Out(1), "tile_last": Out(1), "job_end": Out(1),
            "src": Out(1), "oslot": Out(1), "head": Out(1), "last": Out(1),
            "v_index": Out(v_index_bits),
            "out_shift": Out(data.ArrayLayout(unsigned(shift_bits), 2)),
            "claim": Out(2), "claim_last": Out(1), "src_clr": Out(2), "head_clr": Out(2),
            "rd_valid": Out(1), "rd_src": Out(1),
            "a_valid": Out(1), "a_first": Out(1), "a_last": Out(1), "a_tag": Out(self.tag_layout),
        })
        self._MustUse__silence = False

    def elaborate(self, platform):
        m = Module()
        n = self._steps
        m.submodules.seq = seq = JobSequencer(steps=n, tiles=self._tiles, stride=n,
                                              base_bits=self._v_index_bits + 1, name="m")
        m.d.comb += [self.run.eq(seq.run), self.step.eq(seq.step), self.tile.eq(seq.tile),
                     self.base.eq(seq.base), self.step_last.eq(seq.step_last),
                     self.tile_last.eq(seq.tile_last), self.job_end.eq(seq.job_end),
                     self.v_index.eq((seq.base + seq.step)[:self._v_index_bits])]

        src, oslot = Signal(name="src"), Signal(name="oslot")
        m.d.comb += [self.src.eq(src), self.oslot.eq(oslot)]
        # The next job's head slot and last-block flag, read from its source slot.
        head_of_src = self.src_head.bit_select(src, 1)
        last_of_src = self.src_last.bit_select(src, 1)
        # ok == src full & V of its head loaded & output slot free, registered from
        # the next values of its inputs (below), so no comparator sits before start.
        ok = Signal(name="ok")
        m.d.comb += [self.start.eq(~seq.run & ok), seq.start.eq(self.start)]
        with m.If(self.start):
            m.d.sync += [self.head.eq(head_of_src), self.last.eq(last_of_src)]
            m.d.comb += [self.claim.bit_select(oslot, 1).eq(1), self.claim_last.eq(last_of_src)]
            shift = Mux(head_of_src, self.head_shift[1], self.head_shift[0])
            with m.If(oslot):
                m.d.sync += self.out_shift[1].eq(shift)
            with m.Else():
                m.d.sync += self.out_shift[0].eq(shift)
        with m.If(seq.job_end):
            m.d.sync += [src.eq(~src), oslot.eq(~oslot)]
            m.d.comb += self.src_clr.bit_select(src, 1).eq(1)
            with m.If(self.last):
                m.d.comb += self.head_clr.bit_select(self.head, 1).eq(1)
        src_n = Mux(seq.job_end, ~src, src)
        oslot_n = Mux(seq.job_end, ~oslot, oslot)
        m.d.sync += ok.eq(self.src_full_after.bit_select(src_n, 1)
                          & self.head_full_next.bit_select(self.src_head_next.bit_select(src_n, 1), 1)
                          & ~self.out_busy_next.bit_select(oslot_n, 1))

        # The source read's data arrives one cycle after the step; the array's
        # control follows the core's datapath (array_delay more cycles).
        tag = Signal(self.tag_layout, name="rd_tag")
        first, last = Signal(name="rd_first"), Signal(name="rd_last")
        m.d.sync += [self.rd_valid.eq(seq.run), self.rd_src.eq(src),
                     first.eq(seq.step == 0), last.eq(seq.step_last),
                     tag.tile.eq(seq.tile), tag.oslot.eq(oslot), tag.last.eq(seq.tile_last)]
        k = self._array_delay
        m.d.comb += [self.a_valid.eq(delayed(m, self.rd_valid, k, "a_valid_d")),
                     self.a_first.eq(delayed(m, first, k, "a_first_d")),
                     self.a_last.eq(delayed(m, last, k, "a_last_d")),
                     self.a_tag.eq(delayed(m, tag, k, "a_tag_d"))]
        return m
