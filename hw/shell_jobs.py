"""Job control of a core's two array stages, shared by both cores.

One job: decide when an array may start its next job, and drive the
step/tile counters, the slot bookkeeping and the array's control inputs while
it runs. Both cores are built of the same two stages around different
arithmetic:

* the **score stage** (:class:`ScoreJobControl`): a job computes the scores of
  one row block of ``R`` queries against all ``n`` keys of its head (``n / C``
  tiles of ``d`` steps), reading Q and K from the head slot's loaders, into
  one of two *score block* slots (the inhibitor's ``z`` memory, the
  baseline's score memory);
* the **mixing stage** (:class:`MixJobControl`): a job streams one block of
  per-key weights (the inhibitor's clipped ``z``, the baseline's unnormalised
  ``exp`` codes), ``n`` keys per tile for ``ceil(d / C)`` tiles, against ``V``
  of its head, into one of two output block slots of the
  :class:`~inhibitron.hw.shell_io.BlockEmitter`.

What differs between the cores -- the PEs, the row statistics or softmax
between the stages, and the per-row datapath in front of the mixing array
(threshold and clip; reciprocal multiply and round) -- stays in each core.
:func:`delayed` and :func:`connect_mix_back_end` are two more pieces both
cores used to write out by hand.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .pe import check_int
from .shell import BlockCollector, JobSequencer

__all__ = ["MixJobControl", "ScoreJobControl", "connect_mix_back_end", "connect_mix_stage",
           "connect_score_stage", "delayed"]


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


def connect_score_stage(m: Module, sctl, qld, kld, desc, dst_flags, score) -> None:
    """Wire a :class:`ScoreJobControl` to the Q/K loaders, descriptor slots, score slot flags and array.

    ``qld``/``kld`` are the Q and K :class:`~inhibitron.hw.shell_io.RowLoader`
    (rows interleaved over the array's rows / columns), ``desc`` the
    :class:`~inhibitron.hw.shell_io.DescriptorSlots`, ``dst_flags`` the
    :class:`~inhibitron.hw.shell.SlotFlags` claiming the score slots, and
    ``score`` the :class:`~inhibitron.hw.systolic.SystolicArray`. The
    block-RAM read data is registered once before the array (on ECP5 that
    register becomes the DP16KD output register, :mod:`inhibitron.hw.ecp5_outreg`);
    the array's control from ``sctl`` is aligned with it.
    """
    m.d.comb += [sctl.q_full_next.eq(qld.full_next), sctl.k_full_next.eq(kld.full_next),
                 sctl.desc_full_next.eq(desc.first_full_next),
                 sctl.dst_busy_after.eq(dst_flags.after),
                 dst_flags.set.eq(sctl.dst_set), qld.clr.eq(sctl.head_clr),
                 kld.clr.eq(sctl.head_clr), desc.first_clr.eq(sctl.head_clr),
                 qld.r_slot.eq(sctl.head), qld.r_index.eq(sctl.q_index),
                 kld.r_slot.eq(sctl.head), kld.r_index.eq(sctl.k_index)]
    for r, q in enumerate(qld.r_data):
        m.d.comb += score.a[r].eq(delayed(m, q, 1, f"q_d{r}_", reset_less=True))
    for c, k in enumerate(kld.r_data):
        m.d.comb += score.b[c].eq(delayed(m, k, 1, f"k_d{c}_", reset_less=True))
    m.d.comb += [score.valid.eq(sctl.a_valid), score.first.eq(sctl.a_first),
                 score.last.eq(sctl.a_last), score.tag.eq(sctl.a_tag)]


def connect_mix_stage(m: Module, mctl, *, src_full, src_busy, vld, desc, emit) -> None:
    """Wire a :class:`MixJobControl` to the source slot flags, the V loader, descriptors and emitter.

    ``src_full``/``src_busy`` are the :class:`~inhibitron.hw.shell.SlotFlags`
    of the source block slots (both released at a job's end), ``vld`` the V
    :class:`~inhibitron.hw.shell_io.RowLoader` (read by the job, released
    with the descriptor after a head's last block), ``desc`` the
    :class:`~inhibitron.hw.shell_io.DescriptorSlots` (the shift ``r`` of each
    head slot) and ``emit`` the :class:`~inhibitron.hw.shell_io.BlockEmitter`.
    The source slots' head, next head and last-block inputs stay the core's.
    """
    m.d.comb += [mctl.src_full_after.eq(src_full.after),
                 mctl.head_full_next.eq(vld.full_next), mctl.out_busy_next.eq(emit.busy_next),
                 mctl.head_shift[0].eq(desc.slots[0].shift),
                 mctl.head_shift[1].eq(desc.slots[1].shift),
                 emit.claim.eq(mctl.claim), emit.claim_last.eq(mctl.claim_last),
                 src_full.clr.eq(mctl.src_clr), src_busy.clr.eq(mctl.src_clr),
                 vld.clr.eq(mctl.head_clr), desc.clr.eq(mctl.head_clr),
                 vld.r_slot.eq(mctl.head), vld.r_index.eq(mctl.v_index)]


class ScoreJobControl(wiring.Component):
    """Start, count and bookkeep the jobs of a score array.

    A job scores one row block (queries ``block * R .. block * R + R - 1``;
    blocks are counted inside) of head slot :attr:`head` against all keys,
    into score block slot :attr:`dst`.
    It starts (:attr:`start`, one cycle, only while no job runs) when Q, K
    and the descriptor of the head slot are loaded, the destination slot is
    free and at least ``min_gap`` cycles have passed since the last job
    ended; that condition is a register computed from the *next* values of
    the flags, so the start is one gate. On start the destination slot is
    claimed (:attr:`dst_set`) and the head slot, the last-block flag and the
    head's descriptor fields (:attr:`head_info`, any layout) are copied into
    the destination slot's registers (:attr:`slot_head`, :attr:`slot_last`,
    :attr:`slot_info`), so later stages select between two registers and not
    through the head slot. At the job's end the destination toggles, the
    block advances, and after the head's last block the head slot toggles
    and its Q and K are released (:attr:`head_clr`).

    Parameters
    ----------
    steps : int
        Steps per tile: the head dimension ``d``.
    tiles : int
        Key tiles per job, ``ceil(n / C)``.
    blocks : int
        Row blocks per head, ``ceil(n / R)``.
    q_index_bits, k_index_bits : int
        Widths of the Q and K read indices within a head slot
        (``RowLoader.index_bits``).
    info_layout : Layout
        Layout of the descriptor fields copied per score slot.
    min_gap : int
        Idle cycles forced between two jobs (0: back to back).

    Members
    -------
    q_full_next, k_full_next, desc_full_next : In(2)
        Q, K and the descriptor of each head slot loaded, next cycle.
    dst_busy_after : In(2)
        Each score slot claimed, next cycle (``SlotFlags.after``).
    head_info : In(ArrayLayout(info_layout, 2))
        The descriptor fields of each head slot.

    start : Out(1)
        A job starts (combinational).
    run, step, step_last, tile_last, job_end : Out
        The job's :class:`JobSequencer`.
    head, block_last, dst : Out(1)
        Head slot, "last row block of the head" and score slot of the running
        (or next) job.
    q_index, k_index : Out
        Q and K rows to read this step: ``block * d + step`` and
        ``tile * d + step``.
    dst_set, head_clr : Out(2)
        Claim pulse for the score slot flags; release pulse for the Q and K
        loaders' head slot.
    slot_head, slot_last : Out(2)
        Head slot and last-block flag of the block in each score slot;
        :attr:`slot_head_next` is :attr:`slot_head` next cycle.
    slot_info : Out(ArrayLayout(info_layout, 2))
        The descriptor fields of each score slot's head.
    a_valid, a_first, a_last : Out(1), a_tag : Out(tag_layout)
        The array's control, aligned with the Q/K read data registered once
        (two cycles after the step); ``a_tag`` is ``{"slot", "first", "last"}``:
        score slot, first and last key tile.
    """

    #: The score array's tag: score slot, first and last key tile of the job.
    tag_layout = data.StructLayout({"slot": 1, "first": 1, "last": 1})

    def __init__(self, *, steps: int, tiles: int, blocks: int, q_index_bits: int,
                 k_index_bits: int, info_layout, min_gap: int = 0):
        self._MustUse__silence = True
        self._steps = check_int("steps", steps, minimum=1)
        self._tiles = check_int("tiles", tiles, minimum=1)
        self._blocks = check_int("blocks", blocks, minimum=1)
        self._q_index_bits = check_int("q_index_bits", q_index_bits, minimum=1)
        self._k_index_bits = check_int("k_index_bits", k_index_bits, minimum=1)
        self._min_gap = check_int("min_gap", min_gap, minimum=0)
        super().__init__({
            "q_full_next": In(2), "k_full_next": In(2), "desc_full_next": In(2),
            "dst_busy_after": In(2), "head_info": In(data.ArrayLayout(info_layout, 2)),
            "start": Out(1), "run": Out(1), "step": Out(range(max(2, steps))),
            "step_last": Out(1), "tile_last": Out(1), "job_end": Out(1),
            "head": Out(1), "block_last": Out(1, init=int(blocks == 1)), "dst": Out(1),
            "q_index": Out(q_index_bits), "k_index": Out(k_index_bits),
            "dst_set": Out(2), "head_clr": Out(2),
            "slot_head": Out(2), "slot_last": Out(2), "slot_head_next": Out(2),
            "slot_info": Out(data.ArrayLayout(info_layout, 2)),
            "a_valid": Out(1), "a_first": Out(1), "a_last": Out(1),
            "a_tag": Out(self.tag_layout),
        })
        self._MustUse__silence = False

    def elaborate(self, platform):
        m = Module()
        d, nI = self._steps, self._blocks
        m.submodules.seq = seq = JobSequencer(steps=d, tiles=self._tiles, stride=d,
                                              base_bits=self._k_index_bits + 1, name="s")
        m.d.comb += [self.run.eq(seq.run), self.step.eq(seq.step),
                     self.step_last.eq(seq.step_last), self.tile_last.eq(seq.tile_last),
                     self.job_end.eq(seq.job_end)]
        head, dst, blast = self.head, self.dst, self.block_last
        block = Signal(range(max(2, nI)), name="block")
        qbase = Signal(self._q_index_bits + 1, name="qbase")      # block * d
        m.d.comb += [self.q_index.eq((qbase + seq.step)[:self._q_index_bits]),
                     self.k_index.eq((seq.base + seq.step)[:self._k_index_bits])]

        # ok == gap over & Q, K, descriptor of the head slot loaded & score slot
        # free, registered from the next values of its inputs (below).
        ok = Signal(name="ok")
        m.d.comb += [self.start.eq(~seq.run & ok), seq.start.eq(self.start)]
        with m.If(self.start):
            m.d.comb += self.dst_set.bit_select(dst, 1).eq(1)
            info = Mux(head, self.head_info[1].as_value(), self.head_info[0].as_value())
            for i in range(2):
                with m.If(dst == i):
                    m.d.sync += [self.slot_head[i].eq(head), self.slot_last[i].eq(blast),
                                 self.slot_info[i].eq(info)]
        m.d.comb += self.slot_head_next.eq(
            Cat(*[Mux(self.start & (dst == i), head, self.slot_head[i]) for i in range(2)]))
        with m.If(seq.job_end):
            m.d.sync += dst.eq(~dst)
            with m.If(blast):
                m.d.sync += [block.eq(0), qbase.eq(0), head.eq(~head)]
                m.d.comb += self.head_clr.bit_select(head, 1).eq(1)
            with m.Else():
                m.d.sync += [block.eq(block + 1), qbase.eq(qbase + d)]
        head_n = Mux(seq.job_end & blast, ~head, head)
        block_n = Mux(seq.job_end, Mux(blast, 0, block + 1), block)
        m.d.sync += blast.eq(block_n == nI - 1)
        dst_n = Mux(seq.job_end, ~dst, dst)
        ready_n = (self.q_full_next.bit_select(head_n, 1)
                   & self.k_full_next.bit_select(head_n, 1)
                   & self.desc_full_next.bit_select(head_n, 1)
                   & ~self.dst_busy_after.bit_select(dst_n, 1))
        if self._min_gap:
            # Cycles left before the next job may start; its next value is 0 when no
            # job ends now and gap <= 1 (no subtractor in front of ok).
            gap = Signal(range(self._min_gap + 2), name="gap")
            with m.If(gap != 0):
                m.d.sync += gap.eq(gap - 1)
            with m.If(seq.job_end):
                m.d.sync += gap.eq(self._min_gap)
            ready_n = ready_n & Mux(seq.job_end, 0, gap <= 1)
        m.d.sync += ok.eq(ready_n)

        # Control aligned with the read data (one cycle), then registered once more
        # with it: the block-RAM outputs feed a register, not the PEs (on ECP5 that
        # register becomes the DP16KD output register, hw/ecp5_outreg.py).
        tag = Signal(self.tag_layout, name="rd_tag")
        valid, first, last = Signal(name="rd_valid"), Signal(name="rd_first"), Signal(name="rd_last")
        m.d.sync += [valid.eq(seq.run), first.eq(seq.step == 0), last.eq(seq.step_last),
                     tag.slot.eq(dst), tag.first.eq(seq.tile == 0), tag.last.eq(seq.tile_last)]
        m.d.comb += [self.a_valid.eq(delayed(m, valid, 1, "a_valid_d")),
                     self.a_first.eq(delayed(m, first, 1, "a_first_d")),
                     self.a_last.eq(delayed(m, last, 1, "a_last_d")),
                     self.a_tag.eq(delayed(m, tag, 1, "a_tag_d"))]
        return m


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
