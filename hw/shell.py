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
  three stages, with a user tag carried alongside).

Every block is a :class:`~amaranth.lib.wiring.Component` (or a plain
memory); none multiplies.
"""


from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .pe import check_int

__all__ = ["OutputRounder", "SlotFlags", "bram"]


def bram(shape, depth: int) -> Memory:
    """A zero-initialised memory whose read and write ports never collide.

    The ``no_rw_check`` attribute lets Yosys map it to block RAM without the
    soft read-during-write bypass it otherwise builds between two RAM ports;
    callers guarantee that no address is read and written in the same cycle.
    """
    return Memory(shape=shape, depth=depth, init=[], attrs={"no_rw_check": 1})


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
        m.d.comb += low.eq(t[:ob + 1] + 1)
        m.d.sync += [self.o_h.eq(Mux(above, hmax, Mux(below, hmin, low[1:].as_signed()))),
                     self.o_valid.eq(ok2), self.o_tag.eq(tag2)]
        return m
