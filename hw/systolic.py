"""Generic output-stationary systolic array, parameterised by its PE.

One generator serves the score stage (:class:`~inhibitron.hw.pe.L1PE`), the
mixing stage (:class:`~inhibitron.hw.pe.SoftThresholdPE`) and the dot-product
baseline: PE ``(r, c)`` owns output ``(r, c)`` of a tile and accumulates it
over a reduction of any length ``K >= cols``.

Data flow (``rows`` = R, ``cols`` = C)::

              b[0]      b[1]   ...  b[C-1]        column operands, skewed by c
               |         |            |
    a[0] --> PE(0,0) -> PE(0,1) -> ... PE(0,C-1)  --> out row 0 (C values, serial)
               v         v            v
    a[1] -> [z^-1] PE(1,0) -> ...      PE(1,C-1)  --> out row 1
     ...       ...
    a[R-1] -> [z^-(R-1)] PE(R-1,0) ... PE(R-1,C-1) --> out row R-1

The caller presents one *step* per cycle, unskewed: the row operands
``a[r]`` (``r < R``), the column operands ``b[c]`` (``c < C``) and the control
``valid``/``first``/``last``/``tag``. The array delays row ``r`` by ``r``
cycles and column ``c`` by ``c`` cycles (the skew), so PE ``(r, c)`` sees step
``s`` at cycle ``s + r + c``; operands and control then hop one PE per cycle.

Readout overlaps the next tile: when PE ``(r, c)`` finishes (``done``), its
accumulator is copied into row ``r``'s output register the next cycle, and
the next tile's reduction continues in the same cycle (double buffering by
timing). Because PE ``(r, c+1)`` finishes exactly one cycle after ``(r, c)``,
the ``C`` results of row ``r`` come out of one port per row on ``C``
consecutive cycles, column ``0`` first. Requirement: consecutive reductions
are at least ``C`` steps long (otherwise two results of a row would collide).

Latency: if a step with ``valid & last`` is presented at cycle ``t``, result
``(r, c)`` is on ``out_data[r]`` with ``out_valid[r]`` during cycle
``t + latency + r + c`` where ``latency = pe.term_latency + 2``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .pe import ProcessingElement, check_int

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """Output-stationary ``rows x cols`` systolic array of identical PEs.

    Parameters
    ----------
    pe : callable
        Factory returning a new :class:`~inhibitron.hw.pe.ProcessingElement`
        each call (e.g. ``functools.partial(L1PE, width=8, length=64)``); all
        PEs must have the same shapes.
    rows, cols : int
        Array shape (R, C), positive.
    pipelined_readout : bool
        Read a row's results out through two register stages instead of one:
        pairs of columns are merged and registered first, then the pairs. It
        costs one cycle of :attr:`latency` and keeps the done-flag fan-out and
        the wide OR of a row out of one clock cycle (for large arrays).

    Members
    -------
    a : In(ArrayLayout(pe.a_shape, rows))
        Row operands of one step (unskewed).
    b : In(ArrayLayout(pe.b_shape, cols))
        Column operands of one step (unskewed).
    valid, first, last : In(1)
        Step control (see :class:`~inhibitron.hw.pe.ProcessingElement`).
    tag : In(pe.tag_width)
        User tag of the step; returned with the results of the reduction it ends.
    out_valid : Out(rows)
        Bit ``r``: ``out_data[r]`` holds a result this cycle.
    out_data : Out(ArrayLayout(pe.acc_shape, rows))
        One result per row and cycle.
    out_col : Out(ArrayLayout(range(cols), rows))
        Column index of that result.
    out_tag : Out(ArrayLayout(unsigned(pe.tag_width), rows))
        Tag of that result's reduction.

    Raises
    ------
    TypeError
        If ``pe`` does not build a ``ProcessingElement``.
    ValueError
        If ``rows`` or ``cols`` is not positive, or the PEs differ in shape.
    """

    def __init__(self, *, pe, rows: int, cols: int, pipelined_readout: bool = False):
        self._MustUse__silence = True  # no "never used" warning if validation raises
        self._rows = check_int("rows", rows, minimum=1)
        self._cols = check_int("cols", cols, minimum=1)
        if not isinstance(pipelined_readout, bool):
            raise TypeError(f"pipelined_readout must be a bool, not {pipelined_readout!r}")
        self._pipelined = pipelined_readout
        if not callable(pe):
            raise TypeError(f"pe must be a callable returning a ProcessingElement, not {pe!r}")
        proto = pe()
        if not isinstance(proto, ProcessingElement):
            raise TypeError(f"pe must return a ProcessingElement, not {proto!r}")
        proto._MustUse__silence = True  # a shape prototype, never elaborated
        self._pe = pe
        self._proto = proto
        tag = unsigned(proto.tag_width)
        super().__init__({
            "a": In(data.ArrayLayout(proto.a_shape, rows)),
            "b": In(data.ArrayLayout(proto.b_shape, cols)),
            "valid": In(1), "first": In(1), "last": In(1), "tag": In(tag),
            "out_valid": Out(rows),
            "out_data": Out(data.ArrayLayout(proto.acc_shape, rows)),
            "out_col": Out(data.ArrayLayout(range(cols), rows)),
            "out_tag": Out(data.ArrayLayout(tag, rows)),
        })
        self._MustUse__silence = False

    rows = property(lambda self: self._rows, doc="Number of PE rows (R).")
    cols = property(lambda self: self._cols, doc="Number of PE columns (C).")
    pe_prototype = property(lambda self: self._proto,
                            doc="A PE instance (read its shapes; not elaborated).")

    @property
    def latency(self) -> int:
        """Cycles from a ``last`` step at the inputs to result ``(0, 0)``.

        Result ``(r, c)`` follows ``r + c`` cycles later: ``term_latency + 2 + r + c``
        (one more with ``pipelined_readout``).
        """
        return self._proto.term_latency + 2 + int(self._pipelined)

    def elaborate(self, platform):
        m = Module()
        R, C = self._rows, self._cols
        proto = self._proto

        pes = [[None] * C for _ in range(R)]
        for r in range(R):
            for c in range(C):
                pe = self._pe()
                if (pe.a_shape, pe.b_shape, pe.acc_shape, pe.term_latency, pe.tag_width) != (
                        proto.a_shape, proto.b_shape, proto.acc_shape, proto.term_latency,
                        proto.tag_width):
                    raise ValueError("pe factory must build identical PEs")
                m.submodules[f"pe_{r}_{c}"] = pes[r][c] = pe

        # Skew: row r delayed by r cycles (operand and control), column c by c cycles.
        ctl = [(self.valid, self.first, self.last, self.tag)]
        for r in range(1, R):
            pv, pf, pl, pt = ctl[-1]
            v = Signal(name=f"skew_valid_{r}")
            f = Signal(name=f"skew_first_{r}", reset_less=True)
            last = Signal(name=f"skew_last_{r}", reset_less=True)
            t = Signal(proto.tag_width, name=f"skew_tag_{r}", reset_less=True)
            m.d.sync += [v.eq(pv), f.eq(pf), last.eq(pl), t.eq(pt)]
            ctl.append((v, f, last, t))

        def delayed(value, n, shape, name):
            for i in range(n):
                reg = Signal(shape, name=f"{name}_{i}", reset_less=True)
                m.d.sync += reg.eq(value)
                value = reg
            return value

        for r in range(R):
            a_in = delayed(self.a[r], r, proto.a_shape, f"skew_a{r}")
            v, f, last, t = ctl[r]
            m.d.comb += [pes[r][0].a.eq(a_in), pes[r][0].valid.eq(v), pes[r][0].first.eq(f),
                         pes[r][0].last.eq(last), pes[r][0].tag.eq(t)]
            for c in range(1, C):
                left, pe = pes[r][c - 1], pes[r][c]
                m.d.comb += [pe.a.eq(left.a_out), pe.valid.eq(left.valid_out),
                             pe.first.eq(left.first_out), pe.last.eq(left.last_out),
                             pe.tag.eq(left.tag_out)]
        for c in range(C):
            m.d.comb += pes[0][c].b.eq(delayed(self.b[c], c, proto.b_shape, f"skew_b{c}"))
            for r in range(1, R):
                m.d.comb += pes[r][c].b.eq(pes[r - 1][c].b_out)

        # Row readout: the done pulses of a row are one-hot (consecutive columns).
        acc_width = proto.acc_shape.width
        tag_width = proto.tag_width

        def merge(items):
            """AND-OR of one-hot (valid, value, col, tag) items."""
            value = col = tag = 0
            for ok, v, c, t in items:
                value = value | Mux(ok, v, 0)
                col = col | Mux(ok, c, 0)
                tag = tag | Mux(ok, t, 0)
            return Cat(*[ok for ok, _, _, _ in items]).any(), value, col, tag

        for r in range(R):
            items = [(pes[r][c].done, pes[r][c].result.as_unsigned()[:acc_width], c,
                      pes[r][c].result_tag) for c in range(C)]
            if self._pipelined:
                pairs = []
                for i in range(0, C, 2):
                    ok, v, c, t = merge(items[i:i + 2])
                    regs = (Signal(name=f"rd{r}_{i}_valid"),
                            Signal(acc_width, name=f"rd{r}_{i}_data", reset_less=True),
                            Signal(range(C), name=f"rd{r}_{i}_col", reset_less=True),
                            Signal(tag_width, name=f"rd{r}_{i}_tag", reset_less=True))
                    m.d.sync += [regs[0].eq(ok), regs[1].eq(v), regs[2].eq(c), regs[3].eq(t)]
                    pairs.append(regs)
                items = pairs
            ok, value, col, tag = merge(items)
            m.d.sync += [
                self.out_valid[r].eq(ok),
                self.out_data[r].eq(value),
                self.out_col[r].eq(col),
                self.out_tag[r].eq(tag),
            ]
        return m
