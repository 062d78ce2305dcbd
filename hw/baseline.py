"""Dot-product attention baseline core: ``softmax(Q K^T / sqrt(d)) V`` in integers.

The baseline the inhibitor core is measured against (issue 5). It computes
the contract of :mod:`inhibitron.quant.baseline_golden` (``docs/baseline.md``)
bit-exactly, with the same generic output-stationary
:class:`~inhibitron.hw.systolic.SystolicArray` as the inhibitor core, here
built of :class:`~inhibitron.hw.mac_pe.MacPE` (``acc += a * b``, one hard
multiplier each). One array serves both matrix products (``S = Q K^T`` and
``H = P V``), time-multiplexed, so the DSP count is ``rows * cols + 3``.

Architecture (one head at a time, ``R x C`` array, ``n`` keys, head dim ``d``)::

    desc ──► latch L, M, r
    q, k, v ──► row memories (n x d codes each, one row per beat)
    for each block of R query rows:
        scores   for each tile of C keys: load C K rows (and once R Q rows) into
                 row registers, run d steps; results -> per-row score memories,
                 running row max on the fly
        softmax  per row (one I-BERT unit, 3 multipliers): exp pass over the L
                 valid keys (e written back, row sum), sequential divider
                 rec = ceil(2**RB / sum) (RB + 1 cycles), normalise pass over n keys
                 -> weight memory (R lanes, n deep)
        mixing   for each tile of C head-dim columns: n steps (P lanes x V rows)
                 -> rounding, saturation -> output row registers
        output   R rows on stream ``o``

Streams (``amaranth.lib.stream``; payloads are packed rows, element 0 in the
least significant bits):

``desc``  In: ``length`` (L, 1..n), ``score_mult`` (M, unsigned ``m_bits``),
          ``shift`` (r, the output shift, 0..``out_shift_max``, saturating);
          one per head, accepted when idle.
``q``, ``k``, ``v``  In: ``n`` rows each of ``d`` signed codes.
``h``  Out: ``n`` rows of ``d`` signed ``out_bits`` codes; ``last`` field on the final row.

Cycle count per head: :meth:`BaselineConfig.cycles_per_head` (``hw/baseline_config.py``).
"""

from __future__ import annotations

from functools import partial

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .baseline_config import BaselineConfig
from .mac_pe import MacPE
from .shell import OutputRounder
from .systolic import SystolicArray

__all__ = ["BaselineConfig", "DotProductAttentionCore"]


class DotProductAttentionCore(wiring.Component):
    """Integer softmax-attention core on a MAC systolic array (see module docstring).

    Parameters
    ----------
    config : BaselineConfig

    Members
    -------
    desc : In(stream.Signature(desc_layout))
        Per-head descriptor: ``length``, ``score_mult``, ``shift``.
    q, k : In(stream.Signature(ArrayLayout(signed(qk_bits), head_dim)))
    v : In(stream.Signature(ArrayLayout(signed(v_bits), head_dim)))
    h : Out(stream.Signature(StructLayout({"data": ArrayLayout(signed(out_bits), head_dim), "last": 1})))
    busy : Out(1)
        A head is being processed (descriptor accepted, last row not yet sent).
    """

    def __init__(self, config: BaselineConfig):
        self._MustUse__silence = True  # no "never elaborated" warning if validation raises
        if not isinstance(config, BaselineConfig):
            raise TypeError(f"config must be a BaselineConfig, not {config!r}")
        self._cfg = cfg = config
        self.desc_layout = cfg.descriptor_layout
        self.row_qk = cfg.row_layout(cfg.qk_bits)
        self.row_v = cfg.row_layout(cfg.v_bits)
        self.out_layout = cfg.h_layout
        super().__init__({
            "desc": In(stream.Signature(self.desc_layout)),
            "q": In(stream.Signature(self.row_qk)),
            "k": In(stream.Signature(self.row_qk)),
            "v": In(stream.Signature(self.row_v)),
            "h": Out(stream.Signature(self.out_layout)),
            "busy": Out(1),
        })
        self._MustUse__silence = False

    config = property(lambda self: self._cfg, doc="The :class:`BaselineConfig`.")

    def cycles_per_head(self, valid_len: int | None = None) -> int:
        """:meth:`BaselineConfig.cycles_per_head` of this core's configuration."""
        return self._cfg.cycles_per_head(valid_len)

    # -- hardware -------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        cst = cfg.constants
        n, d, R, C = cfg.seq_len, cfg.head_dim, cfg.rows, cfg.cols
        qb, vb, ob = cfg.qk_bits, cfg.v_bits, cfg.out_bits
        sb = cfg.score_bits
        eb = cst.e_bits
        F, SH, RB, PF = cst.exp_frac_bits, cst.score_shift, cst.recip_bits, cst.p_frac
        nb = cfg.length_bits

        m.submodules.array = arr = SystolicArray(
            pe=partial(MacPE, a_bits=cfg.pe_a_bits, b_bits=cfg.pe_b_bits, length=cfg.pe_length,
                       tag_width=max(1, ceil_log2(max(n, d) // C))),
            rows=R, cols=C)
        acc_bits = cfg.acc_bits
        assert arr.pe_prototype.acc_shape.width == acc_bits
        lat = arr.latency + 1  # + the operand register stage

        # ---------------- descriptor ----------------
        L = Signal(nb)
        M = Signal(cst.m_bits)
        rsh = Signal(cfg.shift_bits)

        # ---------------- input memories ----------------
        q_mem = Memory(shape=unsigned(qb * d), depth=n, init=[])
        k_mem = Memory(shape=unsigned(qb * d), depth=n, init=[])
        v_mem = Memory(shape=unsigned(vb * d), depth=n, init=[])
        m.submodules.q_mem, m.submodules.k_mem, m.submodules.v_mem = q_mem, k_mem, v_mem
        q_wr, k_wr, v_wr = q_mem.write_port(), k_mem.write_port(), v_mem.write_port()
        q_rd, k_rd, v_rd = q_mem.read_port(), k_mem.read_port(), v_mem.read_port()
        q_cnt, k_cnt, v_cnt = Signal(nb), Signal(nb), Signal(nb)

        # ---------------- score / e memories (one per array row) ----------------
        wb = max(sb, eb + 1)
        s_mems = [Memory(shape=unsigned(wb), depth=n, init=[]) for _ in range(R)]
        s_wr, s_rd = [], []
        for r, mem in enumerate(s_mems):
            m.submodules[f"s_mem{r}"] = mem
            s_wr.append(mem.write_port())
            s_rd.append(mem.read_port())
        # running max per row (valid keys only)
        mx = [Signal(signed(sb), name=f"mx{r}") for r in range(R)]
        mx_seen = [Signal(name=f"mx_seen{r}") for r in range(R)]

        # ---------------- weight memory: R lanes x n ----------------
        pb = cst.p_bits
        p_mem = Memory(shape=unsigned(pb * R), depth=n, init=[])
        m.submodules.p_mem = p_mem
        p_wr = p_mem.write_port(granularity=pb)
        p_rd = p_mem.read_port()

        # ---------------- output row registers ----------------
        obuf = [Signal(data.ArrayLayout(signed(ob), d), name=f"obuf{r}") for r in range(R)]

        # ---------------- counters ----------------
        blk = Signal(range(max(n // R, 2)))      # block of query rows
        tile = Signal(range(max(n // C, d // C, 2)))
        step = Signal(range(max(n, d, max(R, C) + 1) + 2))
        drain = Signal(range(lat + R + C + cfg.OUT_PIPE + 4))
        row = Signal(range(max(R, 2)))
        first_tile_load = Signal()

        qregs = [Signal(qb * d, name=f"qreg{r}") for r in range(R)]
        kregs = [Signal(qb * d, name=f"kreg{c}") for c in range(C)]

        # array input defaults
        a_in = [Signal(signed(cfg.pe_a_bits), name=f"a_in{r}") for r in range(R)]
        b_in = [Signal(signed(cfg.pe_b_bits), name=f"b_in{c}") for c in range(C)]
        # one register stage between the operand multiplexers and the array (timing)
        arr_valid, arr_first, arr_last = Signal(), Signal(), Signal()
        arr_tag = Signal.like(arr.tag)
        for r in range(R):
            m.d.sync += arr.a[r].eq(a_in[r])
        for c in range(C):
            m.d.sync += arr.b[c].eq(b_in[c])
        m.d.sync += [arr.valid.eq(arr_valid), arr.first.eq(arr_first), arr.last.eq(arr_last),
                     arr.tag.eq(arr_tag)]
        mode_mix = Signal()  # which stage the array results belong to
        mix_issue = Signal()  # M_RUN read a P word and a V row this cycle
        mix_active = Signal()
        mix_step = Signal(range(max(n, d, max(R, C) + 1) + 2))
        mix_tile = Signal(range(max(n // C, d // C, 2)))

        # ---------------- array result write-back ----------------
        for r in range(R):
            res = arr.out_data[r]
            col = arr.out_tag[r] * C + arr.out_col[r]
            with m.If(arr.out_valid[r] & ~mode_mix):
                m.d.comb += [s_wr[r].addr.eq(col), s_wr[r].data.eq(res.as_signed()),
                             s_wr[r].en.eq(1)]
                with m.If(col < L):
                    with m.If(~mx_seen[r] | (res.as_signed() > mx[r])):
                        m.d.sync += mx[r].eq(res.as_signed())
                    m.d.sync += mx_seen[r].eq(1)
            # mixing results: the shared output stage (round half up by r, saturate),
            # OUT_PIPE = OutputRounder.latency registered stages; the column rides along.
            m.submodules[f"rounder{r}"] = rnd = OutputRounder(
                acc_bits=acc_bits, shift_bits=cfg.shift_bits, out_bits=ob,
                tag_width=ceil_log2(max(n, d) + 1))
            m.d.comb += [rnd.i_valid.eq(arr.out_valid[r] & mode_mix), rnd.i_acc.eq(res),
                         rnd.i_shift.eq(rsh), rnd.i_tag.eq(col)]
            with m.If(rnd.o_valid):
                for l in range(d):
                    with m.If(rnd.o_tag == l):
                        m.d.sync += obuf[r][l].eq(rnd.o_h)

        # ---------------- softmax unit ----------------
        sm_row_data = Signal(wb)
        m.d.comb += sm_row_data.eq(Mux(row == 0, s_rd[0].data, 0))
        if R > 1:
            with m.Switch(row):
                for r in range(R):
                    with m.Case(r):
                        m.d.comb += sm_row_data.eq(s_rd[r].data)
        mx_row = Signal(signed(sb))
        with m.Switch(row):
            for r in range(R):
                with m.Case(r):
                    m.d.comb += mx_row.eq(mx[r])

        # exp pipeline: issue j at stage 0 (address); stages 1..EXP_DEPTH
        e_issue = Signal()
        e_j = Signal(range(n + cfg.EXP_DEPTH + 2))
        ev = Signal(cfg.EXP_DEPTH + 1)       # valid shift register
        ej = [Signal(range(n), name=f"ej{i}") for i in range(cfg.EXP_DEPTH + 1)]
        m.d.sync += ev.eq(Cat(e_issue, ev[:-1]))
        m.d.sync += ej[0].eq(e_j)
        for i in range(1, cfg.EXP_DEPTH + 1):
            m.d.sync += ej[i].eq(ej[i - 1])
        xb = sb + 1
        x1 = Signal(unsigned(xb))                       # stage 2: mx - s
        u_full = Signal(unsigned(xb + cst.m_bits))      # stage 3: x * M
        base4 = Signal(unsigned(cst.B.bit_length()))    # stage 4: B - r
        big4 = Signal()                                 # zq >= e_bits
        zq4 = Signal(range(eb + 1))
        sq5 = Signal(unsigned(2 * cst.B.bit_length()))  # stage 5: (B - r)**2
        big5 = Signal()
        zq5 = Signal(range(eb + 1))
        e6 = Signal(unsigned(eb))                       # stage 6: e
        # stage 1 is the memory read (data valid when ev[0] was issued one cycle earlier)
        s_q = Signal(signed(sb))                                            # stage 1: register
        m.d.sync += s_q.eq(sm_row_data[:sb].as_signed())
        m.d.sync += x1.eq(mx_row - s_q)                                     # -> stage 2
        m.d.sync += u_full.eq(x1 * M)                                       # -> stage 3
        u = u_full >> SH
        m.d.sync += [
            base4.eq(cst.B - u[:F]),
            big4.eq((u >> F) >= eb),
            zq4.eq((u >> F)[:len(zq4)]),
        ]                                                                   # -> stage 4
        m.d.sync += [sq5.eq(base4 * base4), big5.eq(big4), zq5.eq(zq4)]     # -> stage 5
        m.d.sync += e6.eq(Mux(big5, 0, ((sq5 + cst.C) >> zq5)[:eb]))        # -> stage 6
        row_sum = Signal(eb + nb)
        # e6 is valid in the cycle after the stage-6 register load, at ev[EXP_DEPTH - 1].
        # ev[i] is 1 in the cycle when the issue of i+1 cycles ago is in flight; e6 is
        # registered at the clock edge ending cycle issue+5, so it is visible in cycle issue+6.

        # divider: rec = ceil(2**RB / sum) = floor((2**RB + sum - 1) / sum)
        div_n = RB + 1
        dividend = Signal(RB + 1)
        rem = Signal(eb + nb + 1)
        quot = Signal(RB + 1)
        div_i = Signal(range(div_n + 1))
        recip = Signal(RB - eb + 2)

        # normalise pipeline
        n_issue = Signal()
        n_j = Signal(range(n + cfg.NORM_DEPTH + 2))
        nv = Signal(cfg.NORM_DEPTH + 1)
        nj = [Signal(range(n), name=f"nj{i}") for i in range(cfg.NORM_DEPTH + 1)]
        nvalidkey = Signal(cfg.NORM_DEPTH + 1)
        m.d.sync += nv.eq(Cat(n_issue, nv[:-1]))
        m.d.sync += nvalidkey.eq(Cat(n_j < L, nvalidkey[:-1]))
        m.d.sync += nj[0].eq(n_j)
        for i in range(1, cfg.NORM_DEPTH + 1):
            m.d.sync += nj[i].eq(nj[i - 1])
        e_q = Signal(eb)                                                    # stage 1: register
        m.d.sync += e_q.eq(sm_row_data[:eb])
        prod2 = Signal(eb + len(recip))
        m.d.sync += prod2.eq(e_q * recip)                                   # -> stage 2
        shp = RB - PF
        p3 = Signal(pb)
        m.d.sync += p3.eq(Mux(nvalidkey[2], (prod2 + (1 << (shp - 1))) >> shp, 0)[:pb])  # -> 3

        # ---------------- FSM ----------------
        m.d.comb += self.busy.eq(1)
        with m.FSM(name="ctrl"):
            with m.State("IDLE"):
                m.d.comb += [self.busy.eq(0), self.desc.ready.eq(1)]
                with m.If(self.desc.valid):
                    m.d.sync += [L.eq(self.desc.payload.length), M.eq(self.desc.payload.score_mult),
                                 rsh.eq(self.desc.payload.shift),
                                 q_cnt.eq(0), k_cnt.eq(0), v_cnt.eq(0)]
                    m.next = "LOAD"
            with m.State("LOAD"):
                for s, wr, cnt in ((self.q, q_wr, q_cnt), (self.k, k_wr, k_cnt),
                                   (self.v, v_wr, v_cnt)):
                    m.d.comb += [s.ready.eq(cnt < n), wr.addr.eq(cnt), wr.data.eq(s.payload.as_value()),
                                 wr.en.eq(s.valid & (cnt < n))]
                    with m.If(s.valid & (cnt < n)):
                        m.d.sync += cnt.eq(cnt + 1)
                with m.If((q_cnt == n) & (k_cnt == n) & (v_cnt == n)):
                    m.d.sync += [blk.eq(0), tile.eq(0), step.eq(0), first_tile_load.eq(1)]
                    m.next = "S_LOAD"
            # ---- scores ----
            with m.State("S_LOAD"):
                # cycle `step`: read row `step`; data of row step-1 lands in its register
                m.d.comb += [q_rd.addr.eq(blk * R + step), k_rd.addr.eq(tile * C + step),
                             mode_mix.eq(0)]
                with m.If(step == 0):
                    for r in range(R):
                        with m.If(tile == 0):
                            m.d.sync += [mx_seen[r].eq(0)]
                for r in range(R):
                    with m.If(first_tile_load & (step == r + 1)):
                        m.d.sync += qregs[r].eq(q_rd.data)
                for c in range(C):
                    with m.If(step == c + 1):
                        m.d.sync += kregs[c].eq(k_rd.data)
                nload = Mux(first_tile_load, max(R, C), C)
                with m.If(step == nload):
                    m.d.sync += [step.eq(0), first_tile_load.eq(0)]
                    m.next = "S_RUN"
                with m.Else():
                    m.d.sync += step.eq(step + 1)
            with m.State("S_RUN"):
                m.d.comb += mode_mix.eq(0)
                for r in range(R):
                    m.d.comb += a_in[r].eq(qregs[r].word_select(step, qb).as_signed())
                for c in range(C):
                    m.d.comb += b_in[c].eq(kregs[c].word_select(step, qb).as_signed())
                m.d.comb += [arr_valid.eq(1), arr_first.eq(step == 0), arr_last.eq(step == d - 1),
                             arr_tag.eq(tile)]
                with m.If(step == d - 1):
                    m.d.sync += step.eq(0)
                    with m.If(tile == n // C - 1):
                        m.d.sync += [tile.eq(0), drain.eq(0)]
                        m.next = "S_DRAIN"
                    with m.Else():
                        m.d.sync += tile.eq(tile + 1)
                        m.next = "S_LOAD"
                with m.Else():
                    m.d.sync += step.eq(step + 1)
            with m.State("S_DRAIN"):
                m.d.comb += mode_mix.eq(0)
                m.d.sync += drain.eq(drain + 1)
                with m.If(drain == lat + R + C):
                    m.d.sync += [row.eq(0), e_j.eq(0), row_sum.eq(0)]
                    m.next = "SM_EXP"
            # ---- softmax, one row at a time ----
            with m.State("SM_EXP"):
                with m.Switch(row):
                    for r in range(R):
                        with m.Case(r):
                            m.d.comb += s_rd[r].addr.eq(e_j)
                            # write back e (pipeline tail) into the same memory
                            with m.If(ev[cfg.EXP_DEPTH - 1]):
                                m.d.comb += [s_wr[r].addr.eq(ej[cfg.EXP_DEPTH - 1]),
                                             s_wr[r].data.eq(e6), s_wr[r].en.eq(1)]
                with m.If(ev[cfg.EXP_DEPTH - 1]):
                    m.d.sync += row_sum.eq(row_sum + e6)
                m.d.comb += e_issue.eq(e_j < L)
                m.d.sync += e_j.eq(e_j + 1)
                with m.If(e_j == L + cfg.EXP_DEPTH):
                    m.d.sync += [dividend.eq((1 << RB) + row_sum - 1), rem.eq(0), quot.eq(0),
                                 div_i.eq(0)]
                    m.next = "SM_DIV"
            with m.State("SM_DIV"):
                # restoring division, MSB first, one quotient bit per cycle
                trial = Cat(dividend[-1], rem[:-1])
                m.d.sync += [dividend.eq(dividend << 1), div_i.eq(div_i + 1)]
                with m.If(trial >= row_sum):
                    m.d.sync += [rem.eq(trial - row_sum), quot.eq(Cat(1, quot[:-1]))]
                with m.Else():
                    m.d.sync += [rem.eq(trial), quot.eq(Cat(0, quot[:-1]))]
                with m.If(div_i == div_n):
                    m.d.sync += [recip.eq(quot), n_j.eq(0)]
                    m.next = "SM_NORM"
            with m.State("SM_NORM"):
                with m.Switch(row):
                    for r in range(R):
                        with m.Case(r):
                            m.d.comb += s_rd[r].addr.eq(n_j)
                            m.d.comb += p_wr.en.eq(Mux(nv[cfg.NORM_DEPTH - 1], 1 << r, 0))
                m.d.comb += [p_wr.addr.eq(nj[cfg.NORM_DEPTH - 1]), p_wr.data.eq(p3.replicate(R))]
                m.d.comb += n_issue.eq(n_j < n)
                m.d.sync += n_j.eq(n_j + 1)
                with m.If(n_j == n + cfg.NORM_DEPTH):
                    with m.If(row == R - 1):
                        m.d.sync += [tile.eq(0), step.eq(0)]
                        m.next = "M_RUN"
                    with m.Else():
                        m.d.sync += [row.eq(row + 1), e_j.eq(0), row_sum.eq(0)]
                        m.next = "SM_EXP"
            # ---- mixing ----
            with m.State("M_RUN"):
                # cycle `step` reads row `step`; the array gets it one cycle later
                m.d.comb += [mode_mix.eq(1), p_rd.addr.eq(step), v_rd.addr.eq(step),
                             mix_issue.eq(step < n)]
                m.d.sync += step.eq(step + 1)
                with m.If(step == n):
                    m.d.sync += step.eq(0)
                    with m.If(tile == d // C - 1):
                        m.d.sync += [tile.eq(0), drain.eq(0)]
                        m.next = "M_DRAIN"
                    with m.Else():
                        m.d.sync += tile.eq(tile + 1)
            with m.State("M_DRAIN"):
                m.d.comb += mode_mix.eq(1)
                m.d.sync += drain.eq(drain + 1)
                with m.If(drain == lat + R + C + cfg.OUT_PIPE):
                    m.d.sync += row.eq(0)
                    m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += [mode_mix.eq(1), self.h.valid.eq(1),
                             self.h.payload.last.eq((blk == n // R - 1) & (row == R - 1))]
                with m.Switch(row):
                    for r in range(R):
                        with m.Case(r):
                            m.d.comb += self.h.payload.data.eq(obuf[r])
                with m.If(self.h.ready):
                    m.d.sync += row.eq(row + 1)
                    with m.If(row == R - 1):
                        with m.If(blk == n // R - 1):
                            m.next = "IDLE"
                        with m.Else():
                            m.d.sync += [blk.eq(blk + 1), tile.eq(0), step.eq(0),
                                         first_tile_load.eq(1)]
                            m.next = "S_LOAD"

        # mixing operands: registered one cycle behind the read address
        # read data registered once more (block RAM clock-to-output is slow), then muxed
        mix_active2 = Signal()
        mix_step2 = Signal.like(mix_step)
        mix_tile2 = Signal.like(mix_tile)
        p_q = Signal.like(p_rd.data)
        v_q = Signal.like(v_rd.data)
        m.d.sync += [mix_active.eq(mix_issue), mix_step.eq(step), mix_tile.eq(tile),
                     mix_active2.eq(mix_active), mix_step2.eq(mix_step), mix_tile2.eq(mix_tile),
                     p_q.eq(p_rd.data), v_q.eq(v_rd.data)]
        with m.If(mix_active2):
            for r in range(R):
                m.d.comb += a_in[r].eq(p_q.word_select(r, pb).as_unsigned())
            vsl = v_q.word_select(mix_tile2, C * vb)
            for c in range(C):
                m.d.comb += b_in[c].eq(vsl.word_select(c, vb).as_signed())
            m.d.comb += [arr_valid.eq(1), arr_first.eq(mix_step2 == 0),
                         arr_last.eq(mix_step2 == n - 1), arr_tag.eq(mix_tile2)]
        return m
