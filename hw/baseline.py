"""Dot-product attention baseline core: ``softmax(Q K^T / sqrt(d)) V`` in integers, pipelined.

The baseline the inhibitor core is measured against (issues 5 and 11). It
computes the contract of :mod:`inhibitron.quant.baseline_golden`
(``docs/baseline.md``) bit-exactly and is engineered like the inhibitor core:
the same stream shell (:mod:`inhibitron.hw.shell_io`: row loaders and
descriptor slots double-buffered by head, the block output emitter, the
output rounders), the same generic
:class:`~inhibitron.hw.systolic.SystolicArray`, here of
:class:`~inhibitron.hw.mac_pe.MacPE` (``acc += a * b``, operand and product
registers: a DSP with its pipeline registers), and three stages working on
consecutive row blocks of ``R`` queries at the same time:

1. the **score stage** (``R x C`` MAC array): ``n/C`` tiles of ``d`` steps give
   ``s = q . k`` for the block's rows, written into a score memory
   double-buffered by block, the row maxima over the valid keys kept on the
   fly;
2. the **softmax stage** (``R`` lanes, one per query row, each one element per
   cycle): an exp pass over the block's ``n`` keys
   (``e = poly(rr) >> zq``, the polynomial a ``2**F``-entry ROM, one
   multiplier ``(mx - s) * M``) writing ``e`` into an exp memory
   double-buffered by block and summing it, then ``R`` restoring dividers
   (``rec = ceil(2**RB / sum)``, ``RB + 1`` cycles);
3. the **mixing stage** (``R x C`` MAC array): ``d/C`` tiles of ``n`` steps over
   ``p = (e * rec + 2**(RB-PF-1)) >> (RB-PF)`` (the normalisation is a
   multiplier per lane in front of the array, so ``p`` is never stored) and V,
   rounded by the head's ``r`` and saturated into the output block.

The score memory is held from a block's score job to the end of its exp
pass, the exp memory from its exp pass to the end of its mixing job, so both
arrays run back to back when ``n + ~50 <= (n/C) d`` (the softmax lanes keep
up); the cycle model is :meth:`BaselineConfig.cycles_per_head`.

Streams (``amaranth.lib.stream``; payloads are packed rows, element 0 in the
least significant bits), as the inhibitor core:

``desc``  In: ``length`` (L, 1..n), ``score_mult`` (M, unsigned ``m_bits``),
          ``shift`` (r, the output shift, 0..``out_shift_max``, saturating);
          one per head.
``q``, ``k``, ``v``  In: ``n`` rows each of ``d`` signed codes per head.
``h``  Out: ``n`` rows of ``d`` signed ``out_bits`` codes; ``last`` on the final row.
"""

from __future__ import annotations

from functools import partial

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .baseline_config import BaselineConfig
from .mac_pe import MacPE, multiply
from .shell import BlockCollector, SlotFlags, bram, terminal_flags
from .shell_io import add_stream_shell, slot_bits
from .shell_jobs import (MixJobControl, ScoreJobControl, connect_mix_back_end,
                         connect_mix_stage, connect_score_stage, delayed)
from .systolic import SystolicArray

__all__ = ["BaselineConfig", "DotProductAttentionCore"]


class DotProductAttentionCore(wiring.Component):
    """Integer softmax-attention core on two MAC systolic arrays (see module docstring).

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

    The four inputs are independent streams; the core buffers two heads of
    each, so a producer may send them in any interleaving.
    """

    #: Registers from the exp pass's score read address to its exp code.
    EXP_LATENCY = BaselineConfig.EXP_LATENCY
    #: Registers from the mixing stage's read address to ``p`` at the array.
    NORM_LATENCY = BaselineConfig.NORM_LATENCY

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
        R, C, n, d = cfg.rows, cfg.cols, cfg.seq_len, cfg.head_dim
        nI, nJ, nL = n // R, n // C, d // C
        sb, eb, pb = cfg.score_bits, cst.e_bits, cst.p_bits
        F, SH, RB, PF = cst.exp_frac_bits, cst.score_shift, cst.recip_bits, cst.p_frac
        mul = cfg.multipliers

        # ------------------------------------------------ input/output shell
        qld, kld, vld, desc, emit = add_stream_shell(
            m, self, qk_bits=cfg.qk_bits, v_bits=cfg.v_bits, out_bits=cfg.out_bits, rows=R,
            cols=C, seq_len=n, head_dim=d, last_rows=R, slices=cfg.stream_slices)
        q_half, k_half, v_half = qld.index_bits, kld.index_bits, vld.index_bits

        # Score memory (s per row and key) and exp memory (e), one bank per PE row,
        # each double-buffered by row block; a slot is never read and written in
        # the same cycle (the flags order the stages): no_rw_check block RAMs.
        blk_half = slot_bits(n)
        smem = [bram(signed(sb), 2 << blk_half) for _ in range(R)]
        emem = [bram(unsigned(eb), 2 << blk_half) for _ in range(R)]
        for r in range(R):
            m.submodules[f"smem{r}"] = smem[r]
            m.submodules[f"emem{r}"] = emem[r]
        m.submodules.sbusy = sbusy = SlotFlags()      # score slot claimed by a score job
        m.submodules.sfull = sfull = SlotFlags()      # scores and row maxima complete
        m.submodules.ebusy = ebusy = SlotFlags()      # exp slot claimed by an exp pass
        m.submodules.efull = efull = SlotFlags()      # exp codes and reciprocals complete

        # -------------------------------------------------------- score stage
        # A job scores one row block against all keys into one score slot
        # (shell_jobs.ScoreJobControl); each score slot keeps its head's L and M.
        sinfo = data.StructLayout({"length": range(n + 1), "mult": cst.m_bits})
        m.submodules.sctl = sctl = ScoreJobControl(
            steps=d, tiles=nJ, blocks=nI, q_index_bits=q_half, k_index_bits=k_half,
            info_layout=sinfo)
        stag = sctl.tag_layout
        m.submodules.score = score = SystolicArray(
            pe=partial(MacPE, a_bits=cfg.qk_bits, b_bits=cfg.qk_bits, length=d,
                       input_register=True, tag_width=stag.size, multiplier=mul,
                       fabric_register=mul == "dsp"),
            rows=R, cols=C, pipelined_readout=True)
        for i, slot in enumerate(desc.slots):
            m.d.comb += [sctl.head_info[i].length.eq(slot.length),
                         sctl.head_info[i].mult.eq(slot.score_mult)]
        connect_score_stage(m, sctl, qld, kld, desc, sbusy, score)
        b_hp, b_last = sctl.slot_head, sctl.slot_last
        b_len = [sctl.slot_info[i].length for i in range(2)]
        b_mult = [sctl.slot_info[i].mult for i in range(2)]

        # ------------------------------- score back end: score memory, row maxima
        jb = slot_bits(n)
        s_wr = [mem.write_port() for mem in smem]
        mx = [[Signal(signed(sb), name=f"mx{s}_{r}") for r in range(R)] for s in range(2)]
        for r in range(R):
            tag = data.View(stag, score.out_tag[r])
            j = Signal(jb + 1, name=f"score_j{r}")
            j_next = Signal(jb + 1, name=f"score_jnext{r}")
            restart = tag.first & (score.out_col[r] == 0)
            m.d.comb += j.eq(Mux(restart, 0, j_next))
            with m.If(score.out_valid[r]):
                m.d.sync += j_next.eq(Mux(restart, 1, j_next + 1))
            # One register stage between the array and the back end.
            p_valid = Signal(name=f"sres_valid{r}")
            p_first = Signal(name=f"sres_first{r}")
            p_last = Signal(name=f"sres_last{r}")
            p_ss = Signal(name=f"sres_slot{r}")
            p_s = Signal(signed(sb), name=f"sres_s{r}", reset_less=True)
            p_j = Signal(jb + 1, name=f"sres_j{r}", reset_less=True)
            # Row maximum over the valid keys j < L (key 0 is always valid and first);
            # j < L is registered with the score, so only the compare with the
            # running maximum sits in front of it.
            p_valid_key = Signal(name=f"sres_validkey{r}", reset_less=True)
            m.d.sync += [p_valid.eq(score.out_valid[r]), p_first.eq(restart),
                         p_last.eq(tag.last & (score.out_col[r] == C - 1)),
                         p_ss.eq(tag.slot), p_s.eq(score.out_data[r]), p_j.eq(j),
                         p_valid_key.eq(j < Mux(tag.slot, b_len[1], b_len[0]))]
            m.d.comb += [s_wr[r].addr.eq(Cat(p_j[:blk_half], p_ss)), s_wr[r].data.eq(p_s),
                         s_wr[r].en.eq(p_valid)]
            for s in range(2):
                with m.If(p_valid & (p_ss == s)):
                    with m.If(p_first | (p_valid_key & (p_s > mx[s][r]))):
                        m.d.sync += mx[s][r].eq(p_s)
            if r == R - 1:
                with m.If(p_valid & p_last):
                    m.d.comb += sfull.set.bit_select(p_ss, 1).eq(1)

        # ------------------------------------------------------- softmax stage
        # Exp pass: key j of every row of the block per cycle (R lanes), then the
        # R dividers. x_ss: score slot read, x_es: exp slot written.
        x_run = Signal()
        x_ss = Signal()
        x_es = Signal()
        x_j = Signal(range(max(2, n)))
        x_drain = Signal()                     # waiting for the pipeline and the dividers
        x_cnt = Signal(range(self.EXP_LATENCY + RB + 4))
        e_hp = [Signal(name=f"einfo_hp{i}") for i in range(2)]
        e_last = [Signal(name=f"einfo_last{i}") for i in range(2)]
        xm = [Signal(signed(sb), name=f"x_mx{r}") for r in range(R)]
        x_mult = Signal(cst.m_bits)
        x_len = Signal(range(n + 1))
        x_ok = Signal()
        x_can = Signal()
        m.d.comb += x_can.eq(~x_run & ~x_drain & x_ok)
        x_jlast, _ = terminal_flags(m, "x", x_can, x_run, x_j, n, Const(0, 1), 1)
        x_pass_end = Signal()
        m.d.comb += x_pass_end.eq(x_run & x_jlast)
        with m.If(x_can):
            m.d.sync += [x_run.eq(1), x_j.eq(0),
                         x_mult.eq(Mux(x_ss, b_mult[1], b_mult[0])),
                         x_len.eq(Mux(x_ss, b_len[1], b_len[0]))]
            m.d.sync += [xm[r].eq(Mux(x_ss, mx[1][r], mx[0][r])) for r in range(R)]
            m.d.comb += ebusy.set.bit_select(x_es, 1).eq(1)
            for i in range(2):
                with m.If(x_es == i):
                    m.d.sync += [e_hp[i].eq(Mux(x_ss, b_hp[1], b_hp[0])),
                                 e_last[i].eq(Mux(x_ss, b_last[1], b_last[0]))]
        with m.If(x_run):
            m.d.sync += x_j.eq(x_j + 1)
        with m.If(x_pass_end):
            # every score of the slot has been read: the score stage may reuse it
            m.d.sync += [x_run.eq(0), x_drain.eq(1), x_cnt.eq(0), x_ss.eq(~x_ss)]
            m.d.comb += [sfull.clr.bit_select(x_ss, 1).eq(1),
                         sbusy.clr.bit_select(x_ss, 1).eq(1)]
        x_done = Signal()
        div_steps = RB + 1
        with m.If(x_drain):
            m.d.sync += x_cnt.eq(x_cnt + 1)
            with m.If(x_cnt == self.EXP_LATENCY + 1 + div_steps):
                m.d.sync += [x_drain.eq(0), x_es.eq(~x_es)]
                m.d.comb += [x_done.eq(1), efull.set.bit_select(x_es, 1).eq(1)]
        x_ss_n = Mux(x_pass_end, ~x_ss, x_ss)
        x_es_n = Mux(x_done, ~x_es, x_es)
        m.d.sync += x_ok.eq(sfull.after.bit_select(x_ss_n, 1)
                            & ~ebusy.after.bit_select(x_es_n, 1))

        # The exp pipeline (per lane): read s (1), register it twice (2, 3),
        # x = mx - s (4), register x (5), the two halves of x * M (6), register them
        # (7), u (8), zq/rr split + ROM read of poly(rr) (9), e (10).
        xs_valid = Signal(self.EXP_LATENCY + 1)
        xs_pad = Signal(self.EXP_LATENCY + 1)
        xs_j = [Signal(jb, name=f"xj{i}") for i in range(self.EXP_LATENCY + 1)]
        m.d.sync += [xs_valid.eq(Cat(x_run, xs_valid[:-1])),
                     xs_pad.eq(Cat(x_j >= x_len, xs_pad[:-1])), xs_j[0].eq(x_j)]
        m.d.sync += [xs_j[i].eq(xs_j[i - 1]) for i in range(1, self.EXP_LATENCY + 1)]
        e_valid = xs_valid[self.EXP_LATENCY - 1]       # e registered, written this cycle
        e_j = xs_j[self.EXP_LATENCY - 1]
        poly = [((cst.B - rr) ** 2 + cst.C) for rr in range(1 << F)]
        s_rd = [mem.read_port() for mem in smem]
        e_wr = [mem.write_port() for mem in emem]
        row_sum = [Signal(cfg.sum_bits, name=f"row_sum{r}") for r in range(R)]
        rec = [[Signal(cfg.recip_width, name=f"rec{s}_{r}") for r in range(R)] for s in range(2)]
        div_run = Signal()
        div_i = Signal(range(div_steps + 1))
        # the last exp code is summed at x_cnt == EXP_LATENCY - 1; the dividers load
        # the sums at x_cnt == EXP_LATENCY and run RB + 1 steps.
        div_load = x_drain & (x_cnt == self.EXP_LATENCY)
        with m.If(div_load):
            m.d.sync += [div_run.eq(1), div_i.eq(0)]
        with m.If(div_run):
            m.d.sync += div_i.eq(div_i + 1)
            with m.If(div_i == div_steps - 1):
                m.d.sync += div_run.eq(0)
        zq_bits = max(1, (eb).bit_length())
        for r in range(R):
            m.d.comb += s_rd[r].addr.eq(Cat(x_j[:blk_half], x_ss))
            s_q = Signal(signed(sb), name=f"x_sq{r}", reset_less=True)
            sr = Signal(signed(sb), name=f"x_s{r}", reset_less=True)
            x_q = Signal(sb + 1, name=f"x_xq{r}", reset_less=True)
            xr = Signal(sb + 1, name=f"x_x{r}", reset_less=True)
            ur = Signal(sb + 1 + cst.m_bits, name=f"x_u{r}", reset_less=True)
            zq = Signal(zq_bits, name=f"x_zq{r}", reset_less=True)
            er = Signal(eb, name=f"x_e{r}", reset_less=True)
            rom = Memory(shape=unsigned(eb), depth=1 << F, init=poly)
            m.submodules[f"exp_rom{r}"] = rom
            rom_rd = rom.read_port()
            # s: the block RAM's output register (s_q), then a fabric register; x = mx - s
            # (x_q), then x again (the multipliers' operand registers): the RAM,
            # the subtractor and the DSP blocks each get a cycle of their own.
            m.d.sync += [s_q.eq(s_rd[r].data), sr.eq(s_q),
                         x_q.eq(xm[r] - sr),                # >= 0 on valid keys
                         xr.eq(x_q)]
            # u = x * M as two registered products of at most 17 x m_bits bits (one
            # hard multiplier each, its product register inside the DSP), registered
            # again in the fabric and added in the next stage: no carry chain behind
            # a multiplier's output in the same cycle.
            lo = min(17, len(xr))
            ul = Signal(lo + cst.m_bits, name=f"x_ul{r}", reset_less=True)
            ul_f = Signal(lo + cst.m_bits, name=f"x_ulf{r}", reset_less=True)
            m.d.sync += [ul.eq(multiply(xr[:lo], x_mult, kind=mul)), ul_f.eq(ul)]
            if len(xr) > lo:
                uh = Signal(len(xr) - lo + cst.m_bits, name=f"x_uh{r}", reset_less=True)
                uh_f = Signal(len(xr) - lo + cst.m_bits, name=f"x_uhf{r}", reset_less=True)
                m.d.sync += [uh.eq(multiply(xr[lo:], x_mult, kind=mul)), uh_f.eq(uh),
                             ur.eq(ul_f + (uh_f << lo))]
            else:
                m.d.sync += ur.eq(ul_f)
            big = (ur >> (SH + F)) >= eb
            m.d.comb += rom_rd.addr.eq((ur >> SH)[:F])
            m.d.sync += zq.eq(Mux(big, eb, (ur >> (SH + F))[:zq_bits]))
            # zq >= eb exactly when big: the clip flag is registered beside zq, with
            # the pad flag of the same key, so only the shift sits in front of er.
            zclip = Signal(name=f"x_zclip{r}", reset_less=True)
            m.d.sync += zclip.eq(xs_pad[self.EXP_LATENCY - 3] | big)
            m.d.sync += er.eq(Mux(zclip, 0, rom_rd.data >> zq))
            m.d.comb += [e_wr[r].addr.eq(Cat(e_j[:blk_half], x_es)), e_wr[r].data.eq(er),
                         e_wr[r].en.eq(e_valid)]
            with m.If(x_can):
                m.d.sync += row_sum[r].eq(0)
            with m.Elif(e_valid):
                m.d.sync += row_sum[r].eq(row_sum[r] + er)
            # Restoring divider: rec = floor((2**RB + sum - 1) / sum), MSB first.
            dividend = Signal(RB + 1, name=f"div_n{r}")
            rem = Signal(cfg.sum_bits + 1, name=f"div_rem{r}")
            quot = Signal(RB + 1, name=f"div_q{r}")
            with m.If(div_load):
                m.d.sync += [dividend.eq((1 << RB) + row_sum[r] - 1), rem.eq(0), quot.eq(0)]
            with m.If(div_run):
                trial = Cat(dividend[-1], rem[:-1])
                m.d.sync += dividend.eq(dividend << 1)
                with m.If(trial >= row_sum[r]):
                    m.d.sync += [rem.eq(trial - row_sum[r]), quot.eq(Cat(1, quot[:-1]))]
                with m.Else():
                    m.d.sync += [rem.eq(trial), quot.eq(Cat(0, quot[:-1]))]
            with m.If(x_done):
                for s in range(2):
                    with m.If(x_es == s):
                        m.d.sync += rec[s][r].eq(quot)

        # -------------------------------------------------------- mixing stage
        # A job mixes one exp block slot into one output block slot
        # (shell_jobs.MixJobControl); between the exp read and the array sits the
        # per-row normalisation e * rec, rounded to p (NORM_LATENCY - 1 stages).
        norm = self.NORM_LATENCY - 1
        m.submodules.mctl = mctl = MixJobControl(steps=n, tiles=nL, v_index_bits=v_half,
                                                 shift_bits=cfg.shift_bits, array_delay=norm)
        m.submodules.mix = mix = SystolicArray(
            pe=partial(MacPE, a_bits=pb, a_signed=False, b_bits=cfg.v_bits, length=n,
                       input_register=True, tag_width=mctl.tag_layout.size, multiplier=mul,
                       fabric_register=mul == "dsp"),
            rows=R, cols=C, pipelined_readout=True)
        m.submodules.collect = collect = BlockCollector(
            rows=R, cols=C, slices=nL, acc_bits=len(mix.out_data[0]), shift_bits=cfg.shift_bits,
            out_bits=cfg.out_bits)
        e_rd = [mem.read_port() for mem in emem]
        # Head slot of each exp slot next cycle (the exp pass writes it on its start).
        e_hp_n = [Mux(x_can & (x_es == i), Mux(x_ss, b_hp[1], b_hp[0]), e_hp[i])
                  for i in range(2)]
        m.d.comb += [mctl.src_head.eq(Cat(*e_hp)), mctl.src_head_next.eq(Cat(*e_hp_n)),
                     mctl.src_last.eq(Cat(*e_last))]
        connect_mix_stage(m, mctl, src_full=efull, src_busy=ebusy, vld=vld, desc=desc, emit=emit)
        for r in range(R):
            m.d.comb += e_rd[r].addr.eq(Cat(mctl.step[:blk_half], mctl.src))
        # Stage 1: read data valid. Then per lane: register e (2: the block RAM's
        # own output register), register e and rec (3: the multiplier's input
        # registers), e * rec (4), round to p (5) -> array; V and control delayed
        # to match.
        shp = RB - PF
        for r in range(R):
            # e and its row's reciprocal (selected by the slot that travels with the
            # read): e is registered twice, since the flow moves the first register
            # into the block RAM and the multiplier needs one of its own.
            e_q = Signal(eb, name=f"m_eq{r}", reset_less=True)
            rr_q = Signal(cfg.recip_width, name=f"m_recq{r}", reset_less=True)
            er = Signal(eb, name=f"m_e{r}", reset_less=True)
            rr = Signal(cfg.recip_width, name=f"m_rec{r}", reset_less=True)
            prod = Signal(eb + cfg.recip_width, name=f"m_erec{r}", reset_less=True)
            p = Signal(pb, name=f"m_p{r}", reset_less=True)
            m.d.sync += [e_q.eq(e_rd[r].data), rr_q.eq(Mux(mctl.rd_src, rec[1][r], rec[0][r])),
                         er.eq(e_q), rr.eq(rr_q),
                         prod.eq(multiply(er, rr, kind=mul)),
                         p.eq(((prod + (1 << (shp - 1))) >> shp)[:pb])]
            m.d.comb += mix.a[r].eq(p)
        for c in range(C):
            m.d.comb += mix.b[c].eq(delayed(m, vld.r_data[c], norm, f"v_d{c}_", reset_less=True))
        m.d.comb += [mix.valid.eq(mctl.a_valid), mix.first.eq(mctl.a_first),
                     mix.last.eq(mctl.a_last), mix.tag.eq(mctl.a_tag)]

        # ------------------------- mixing back end: round, collect, write the block
        connect_mix_back_end(m, mix, collect, emit, mctl.out_shift)
        return m
