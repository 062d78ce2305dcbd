"""The stream shell: the blocks around a systolic array that every attention core needs.

One job: the reusable pieces between a core's streams and its arrays, so
that each core's ``elaborate`` reads as its own stages. Used by the
inhibitor core (:mod:`inhibitron.hw.core`) and the dot-product baseline
(:mod:`inhibitron.hw.baseline`):

* :func:`bram` -- a block-RAM-friendly memory whose ports never collide;
* :class:`SlotFlags` -- a two-slot "full"/"busy" flag register with
  registered set and clear pulses (double buffering by head or block slot);
* :class:`OutputRounder` -- the contract's output stage: round half up by a
  run-time shift ``r``, then saturate to the output format (registered,
  three stages, with a user tag carried alongside);
* :class:`BlockCollector` -- a mixing array's results through one rounder
  per row, collected into row slices and written into the output block
  slots of a :class:`~inhibitron.hw.shell_io.BlockEmitter`;
* :class:`JobSequencer` -- the step/tile counters of an array stage's job
  (``tiles`` reductions of ``steps`` steps), with registered terminal flags;
* :func:`terminal_flags` -- registered "last step" flags of a sequencer.

Every block is a :class:`~amaranth.lib.wiring.Component` (or a plain
memory); none multiplies.
"""


from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .pe import check_int

__all__ = ["BlockCollector", "JobSequencer", "OutputRounder", "SlotFlags", "bram",
           "terminal_flags"]


def bram(shape, depth: int) -> Memory:
    """A zero-initialised memory whose read and write ports never collide.

    The ``no_rw_check`` attribute lets Yosys map it to block RAM without the
    soft read-during-write bypass it otherwise builds between two RAM ports;
    callers guarantee that no address is read and written in the same cycle.
    """
    return Memory(shape=shape, depth=depth, init=[], attrs={"no_rw_check": 1})


def terminal_flags(m, prefix: str, start, run, inner, inner_len: int, outer, outer_len: int):
    """Registered ``inner == inner_len - 1`` and ``outer == outer_len - 1`` flags.

    For a sequencer whose ``inner`` counter runs ``0 .. inner_len - 1`` once per
    step of ``outer`` (``0 .. outer_len - 1``) while ``run`` is high, both
    counters starting at 0 when ``start`` is high. The flags are computed one
    cycle early from the counters' next values, so they are plain flip-flops
    (no comparator in front of the logic they drive).
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


class JobSequencer(wiring.Component):
    """Counters of one array job: ``tiles`` tiles of ``steps`` steps, one step per cycle.

    A ``start`` pulse (only while not :attr:`run`) starts a job the next
    cycle: :attr:`step` runs ``0 .. steps - 1`` for each :attr:`tile`
    ``0 .. tiles - 1``, and :attr:`base` is ``tile * stride`` (an adder, no
    multiplier). :attr:`step_last` / :attr:`tile_last` are registers
    (:func:`terminal_flags`), so the ends of a tile and of the job
    (:attr:`tile_end`, :attr:`job_end`, one gate each) are ready early in
    the cycle for the slot logic they drive. :attr:`run` falls after the job's
    last step.

    Parameters
    ----------
    steps, tiles : int
        Steps per tile and tiles per job.
    stride : int
        Increment of :attr:`base` per tile.
    base_bits : int
        Width of :attr:`base`.
    name : str
        Prefix of the flag registers' names.

    Members
    -------
    start : In(1)
    run : Out(1)
        A step is issued this cycle.
    step : Out(range(steps)), tile : Out(range(tiles)), base : Out(base_bits)
    step_last, tile_last : Out(1)
        ``step == steps - 1``, ``tile == tiles - 1`` (registers).
    tile_end, job_end : Out(1)
        Combinational: ``run & step_last`` and ``tile_end & tile_last``.
    """

    def __init__(self, *, steps: int, tiles: int, stride: int, base_bits: int,
                 name: str = "job"):
        self._MustUse__silence = True
        self._steps = check_int("steps", steps, minimum=1)
        self._tiles = check_int("tiles", tiles, minimum=1)
        self._stride = check_int("stride", stride, minimum=0)
        self._base_bits = check_int("base_bits", base_bits, minimum=1)
        self._name = name
        super().__init__({
            "start": In(1), "run": Out(1),
            "step": Out(range(max(2, steps))), "tile": Out(range(max(2, tiles))),
            "base": Out(base_bits),
            "step_last": Out(1), "tile_last": Out(1), "tile_end": Out(1), "job_end": Out(1),
        })
        self._MustUse__silence = False

    steps = property(lambda self: self._steps)
    tiles = property(lambda self: self._tiles)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.start):
            m.d.sync += [self.run.eq(1), self.tile.eq(0), self.step.eq(0), self.base.eq(0)]
        ilast, olast = terminal_flags(m, self._name, self.start, self.run, self.step,
                                      self._steps, self.tile, self._tiles)
        m.d.comb += [self.step_last.eq(ilast), self.tile_last.eq(olast),
                     self.tile_end.eq(self.run & ilast), self.job_end.eq(self.tile_end & olast)]
        with m.If(self.run):
            m.d.sync += self.step.eq(self.step + 1)
            with m.If(self.tile_end):
                m.d.sync += [self.step.eq(0), self.tile.eq(self.tile + 1),
                             self.base.eq(self.base + self._stride)]
            with m.If(self.job_end):
                m.d.sync += self.run.eq(0)
        return m


class SlotFlags(wiring.Component):
    """Two one-bit flags (slot 0 and 1) set and cleared by one-cycle pulses.

    The pulses are registered once before they reach the flags, so the logic
    that raises them (a producer's or a consumer's end of job) is not in
    front of the other side's start condition. That is safe for the
    handshakes of a double buffer: a slot is set only by its producer after
    being seen clear and cleared only by its consumer after being seen set,
    and both sides alternate between the two slots, so the delay only makes
    the other side start one cycle later.

    Members
    -------
    set, clr : In(2)
        Set / clear pulse per slot (bit ``s`` for slot ``s``); both may be
        driven bit by bit from several places (they default to 0).
    flags : Out(2)
        The flags (reset to 0).
    after : Out(2)
        Combinational: the flags' next value, ``(flags | set') & ~clr'`` with
        the registered pulses ``set'``/``clr'``. A user that keeps its own
        condition as a register computes it from ``after`` (one cycle ahead).
    """

    set: In(2)
    clr: In(2)
    flags: Out(2)
    after: Out(2)

    def elaborate(self, platform):
        m = Module()
        set_pending = Signal(2)
        clr_pending = Signal(2)
        m.d.comb += self.after.eq((self.flags | set_pending) & ~clr_pending)
        m.d.sync += [set_pending.eq(self.set), clr_pending.eq(self.clr),
                     self.flags.eq(self.after)]
        return m


class OutputRounder(wiring.Component):
    """``h = sat(floor((acc + 2**(r-1)) / 2**r))`` for a run-time ``r`` (``h = acc`` for ``r = 0``).

    The rounding of ``docs/numerics.md`` (step 6: round half up, then saturate
    to the signed output format), in three registered stages with no adder in
    front of the barrel shifter:

    1. ``acc``, ``r``, ``valid`` and ``tag`` are registered;
    2. ``t = (2 * acc) >> r = floor(acc / 2**(r-1))`` (arithmetic shift);
    3. ``h = sat((t + 1) >> 1)``, with the two range checks made on ``t``
       beside a narrow ``(out_bits + 1)``-bit adder:
       ``floor((t+1)/2) > hmax <=> t >= 2*hmax + 1`` and
       ``floor((t+1)/2) < hmin <=> t < 2*hmin - 1``.

    Every value of the ``shift`` input is exact: ``r >= acc_bits`` gives 0.

    Parameters
    ----------
    acc_bits : int
        Width of the signed accumulator input.
    shift_bits : int
        Width of the unsigned shift input ``r``.
    out_bits : int
        Width of the signed, saturated output ``h``.
    tag_width : int
        Width of a user tag carried alongside (0 for none).

    Members
    -------
    i_valid : In(1)
    i_acc : In(signed(acc_bits))
    i_shift : In(unsigned(shift_bits))
    i_tag : In(tag_width)
    o_valid : Out(1)
        ``i_valid`` delayed by :attr:`latency`.
    o_h : Out(signed(out_bits))
        The rounded, saturated value (a register).
    o_tag : Out(tag_width)
        ``i_tag`` delayed by :attr:`latency`.
    """

    #: Cycles from an input to its output.
    latency = 3

    def __init__(self, *, acc_bits: int, shift_bits: int, out_bits: int, tag_width: int = 0):
        self._MustUse__silence = True
        self._acc_bits = check_int("acc_bits", acc_bits, minimum=1)
        self._shift_bits = check_int("shift_bits", shift_bits, minimum=1)
        self._out_bits = check_int("out_bits", out_bits, minimum=2)
        self._tag_width = check_int("tag_width", tag_width, minimum=0)
        super().__init__({
            "i_valid": In(1), "i_acc": In(signed(acc_bits)), "i_shift": In(unsigned(shift_bits)),
            "i_tag": In(tag_width),
            "o_valid": Out(1), "o_h": Out(signed(out_bits)), "o_tag": Out(tag_width),
        })
        self._MustUse__silence = False

    acc_bits = property(lambda self: self._acc_bits)
    shift_bits = property(lambda self: self._shift_bits)
    out_bits = property(lambda self: self._out_bits)
    tag_width = property(lambda self: self._tag_width)

    def elaborate(self, platform):
        m = Module()
        ob = self._out_bits
        hmin, hmax = -(1 << (ob - 1)), (1 << (ob - 1)) - 1
        # stage 1: registered inputs
        acc = Signal.like(self.i_acc, name="acc", reset_less=True)
        r = Signal.like(self.i_shift, name="acc_shift", reset_less=True)
        ok1 = Signal(name="acc_ok")
        tag1 = Signal(self._tag_width, name="acc_tag", reset_less=True)
        m.d.sync += [acc.eq(self.i_acc), r.eq(self.i_shift), ok1.eq(self.i_valid),
                     tag1.eq(self.i_tag)]
        # stage 2: barrel shifter, t = (2 * acc) >> r
        t = Signal(signed(self._acc_bits + 1), name="shifted", reset_less=True)
        ok2 = Signal(name="shifted_ok")
        tag2 = Signal(self._tag_width, name="shifted_tag", reset_less=True)
        m.d.sync += [t.eq(Cat(Const(0, 1), acc).as_signed() >> r), ok2.eq(ok1), tag2.eq(tag1)]
        # stage 3: (t + 1) >> 1, saturated; when in range it is bits 1..ob of t + 1
        above = t >= 2 * hmax + 1
        below = t < 2 * hmin - 1
        low = Signal(ob + 1, name="round")
        if len(t) < ob + 1:
            # an accumulator narrower than the output: sign-extend t before the slice
            m.d.comb += low.eq(Cat(t, t[-1].replicate(ob + 1 - len(t))) + 1)
        else:
            m.d.comb += low.eq(t[:ob + 1] + 1)
        m.d.sync += [self.o_h.eq(Mux(above, hmax, Mux(below, hmin, low[1:].as_signed()))),
                     self.o_valid.eq(ok2), self.o_tag.eq(tag2)]
        return m


class BlockCollector(wiring.Component):
    """An ``R x C`` mixing array's results -> rounded rows -> output block slot writes.

    Row ``r`` of the array emits the ``C`` results of a tile on consecutive
    cycles (column 0 first, :class:`~inhibitron.hw.systolic.SystolicArray`).
    Each goes through an :class:`OutputRounder` (round half up by the
    run-time shift of its output slot, saturate; three stages); the ``C``
    rounded codes of a row are collected and written as one slice (the tile's)
    of row ``r`` of the output slot named by the tag. The write (row, slot,
    slice enable, data) is registered once more, and the slot is committed
    with the write of row ``R - 1``'s last slice of the block (tag ``last``).

    Parameters
    ----------
    rows, cols : int
        The array shape ``R x C``.
    slices : int
        Tiles (slices) per output row, ``ceil(d / C)``.
    acc_bits, shift_bits, out_bits : int
        As for :class:`OutputRounder`.

    Members
    -------
    i_valid : In(rows)
    i_acc : In(ArrayLayout(signed(acc_bits), rows))
    i_col : In(ArrayLayout(range(cols), rows))
    i_tag : In(ArrayLayout(tag_layout, rows))
        The array's ``out_valid``, ``out_data``, ``out_col``, ``out_tag``; the
        array's tag must be :attr:`tag_layout` (``tile``, output ``oslot``,
        ``last`` tile of the block).
    shift : In(ArrayLayout(unsigned(shift_bits), 2))
        The output shift ``r`` of each output slot's head.
    w_row, w_slot, w_en, w_data, commit : Out
        To the :class:`~inhibitron.hw.shell_io.BlockEmitter`'s write side
        (registers).

    Latency: a result on ``i_acc`` at ``t`` is written at ``t + 4``
    (``OutputRounder.latency`` + the write register).
    """

    #: Cycles from a row's last result to its write.
    latency = OutputRounder.latency + 1

    @staticmethod
    def tag_layout_for(slices: int) -> data.StructLayout:
        """The array tag the collector reads: ``{"tile", "oslot", "last"}``."""
        return data.StructLayout({"tile": range(max(2, slices)), "oslot": 1, "last": 1})

    def __init__(self, *, rows: int, cols: int, slices: int, acc_bits: int, shift_bits: int,
                 out_bits: int):
        self._MustUse__silence = True
        self._rows = check_int("rows", rows, minimum=1)
        self._cols = check_int("cols", cols, minimum=1)
        self._slices = check_int("slices", slices, minimum=1)
        self._acc_bits = check_int("acc_bits", acc_bits, minimum=1)
        self._shift_bits = check_int("shift_bits", shift_bits, minimum=1)
        self._out_bits = check_int("out_bits", out_bits, minimum=2)
        self.tag_layout = self.tag_layout_for(slices)
        self._row_bits = max(1, (rows - 1).bit_length())
        super().__init__({
            "i_valid": In(rows),
            "i_acc": In(data.ArrayLayout(signed(acc_bits), rows)),
            "i_col": In(data.ArrayLayout(range(cols), rows)),
            "i_tag": In(data.ArrayLayout(self.tag_layout, rows)),
            "shift": In(data.ArrayLayout(unsigned(shift_bits), 2)),
            "w_row": Out(self._row_bits),
            "w_slot": Out(1),
            "w_en": Out(slices),
            "w_data": Out(data.ArrayLayout(signed(out_bits), slices * cols)),
            "commit": Out(2),
        })
        self._MustUse__silence = False

    def elaborate(self, platform):
        m = Module()
        R, C, nL, ob = self._rows, self._cols, self._slices, self._out_bits
        rtag = data.StructLayout({"mix": self.tag_layout, "row_end": 1})
        wr_data, wr_addr, wr_en = 0, 0, 0
        last_req = last_slot = None
        for r in range(R):
            tag0 = self.i_tag[r]
            m.submodules[f"rounder{r}"] = rnd = OutputRounder(
                acc_bits=self._acc_bits, shift_bits=self._shift_bits, out_bits=ob,
                tag_width=rtag.size)
            rin = data.View(rtag, rnd.i_tag)
            m.d.comb += [rnd.i_valid.eq(self.i_valid[r]), rnd.i_acc.eq(self.i_acc[r]),
                         rnd.i_shift.eq(Mux(tag0.oslot, self.shift[1], self.shift[0])),
                         rin.mix.eq(tag0), rin.row_end.eq(self.i_col[r] == C - 1)]
            rout = data.View(rtag, rnd.o_tag)
            h_val, h_ok, h_tag = rnd.o_h, rnd.o_valid, rout.mix
            coll = Signal(data.ArrayLayout(signed(ob), C), name=f"collect{r}", reset_less=True)
            if C > 1:
                with m.If(h_ok):
                    m.d.sync += coll.as_value().eq(Cat(coll.as_value()[ob:], h_val))
            row_data = Cat(coll.as_value()[ob:], h_val)
            # The row's last column leaves the rounder: its tag flag is a flip-flop, so
            # no compare sits in front of the write multiplexer.
            req = h_ok & rout.row_end
            wr_data = wr_data | Mux(req, row_data, 0)
            wr_addr = wr_addr | Mux(req, Cat(Const(r, self._row_bits), h_tag.oslot), 0)
            wr_en = wr_en | Mux(req, (Const(1, nL) << h_tag.tile)[:nL], 0)
            if r == R - 1:
                last_req = req & h_tag.last
                last_slot = h_tag.oslot
        # The row write is registered once more (address, data, enables); the slot is
        # committed with it.
        slice_data = Signal(C * ob, reset_less=True)
        ow_addr = Signal(self._row_bits + 1, reset_less=True)
        ow_en = Signal(nL)
        ow_full = Signal(2)
        m.d.sync += [ow_addr.eq(wr_addr), ow_en.eq(wr_en), slice_data.eq(wr_data),
                     ow_full.eq(Mux(last_req, Const(1, 2) << last_slot, 0))]
        m.d.comb += [self.w_row.eq(ow_addr[:-1]), self.w_slot.eq(ow_addr[-1]),
                     self.w_en.eq(ow_en), self.commit.eq(ow_full),
                     # every slice gets the same data; the enabled one (the tile) keeps it
                     self.w_data.as_value().eq(Cat(*[slice_data for _ in range(nL)]))]
        return m
