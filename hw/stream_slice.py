"""A register slice on a stream: the optional buffer stage at a core's boundary.

One job: :class:`RegisterSlice`, an AXI-Stream register slice (no path from
either side to the other) built from Amaranth's
:class:`~amaranth.lib.fifo.SyncFIFOBuffered`, and its latency
(:data:`SLICE_LATENCY`). :func:`inhibitron.hw.shell_io.add_stream_shell`
puts one on every stream of a core when its configuration asks for
``stream_slices``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Shape
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

__all__ = ["RegisterSlice", "SLICE_LATENCY"]

#: Cycles from a beat's handshake at an empty :class:`RegisterSlice` to its output valid,
#: by ``full_rate``.
SLICE_LATENCY = {False: 1, True: 2}


class RegisterSlice(wiring.Component):
    """A register slice on a stream: :attr:`i` in, :attr:`o` out, no path across.

    Every output (``i.ready``, ``o.valid``, ``o.payload``) is a flip-flop or
    one gate after flip-flops, and ``i.valid`` / ``o.ready`` reach only
    flip-flops, through one gate each, so logic on either side never sees the
    other side's wires (an AXI-Stream register slice). Built from Amaranth's
    :class:`~amaranth.lib.fifo.SyncFIFOBuffered`:

    * ``full_rate=False``: its one-register form (a "light" slice), one beat
      per two cycles at most, for streams that carry a beat per two cycles or
      fewer: 1 cycle of latency, a register of the payload's width;
    * ``full_rate=True``: depth 3 (two entries of distributed RAM and the
      output register), one beat per cycle: 2 cycles of latency.

    Parameters
    ----------
    shape : ShapeLike
        The payload.
    full_rate : bool
        See above.

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    """

    def __init__(self, shape, *, full_rate: bool):
        self._MustUse__silence = True
        if not isinstance(full_rate, bool):
            raise TypeError(f"full_rate must be a bool, not {full_rate!r}")
        self._full_rate = full_rate
        self._width = Shape.cast(shape).width
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})
        self._MustUse__silence = False

    full_rate = property(lambda self: self._full_rate)

    @property
    def latency(self) -> int:
        """Cycles from a beat's handshake at :attr:`i` to its ``o.valid`` (an empty slice)."""
        return SLICE_LATENCY[self._full_rate]

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self._width,
                                                    depth=3 if self._full_rate else 1)
        m.d.comb += [fifo.w_data.eq(self.i.payload), fifo.w_en.eq(self.i.valid),
                     self.i.ready.eq(fifo.w_rdy),
                     self.o.payload.eq(fifo.r_data), self.o.valid.eq(fifo.r_rdy),
                     fifo.r_en.eq(self.o.ready)]
        return m
