"""The inhibitor-attention core: two systolic arrays, row statistics, stream I/O.

Implements the integer contract of ``docs/numerics.md`` (Eq. 1-3 of the
paper, folded to integers) for one head at a time, heads back to back; the
architecture, latency and cycle formulas are in ``docs/hardware.md``.

Per head the core takes ``n`` rows of Q, K and V (one row of ``d`` codes per
beat), a descriptor (valid length ``L``, threshold constant ``theta``, output
shift ``r``) and
returns ``n`` rows of H (one row of ``d`` codes per beat, ``last`` on row
``n - 1``). The work is split into row blocks of ``R`` queries; each block
goes through

1. the **score stage** (an ``R x C`` array of :class:`~inhibitron.hw.pe.L1PE`):
   ``ceil(n/C)`` tiles of ``d`` steps produce ``z`` for the block's rows,
   written into a double-buffered score memory while the
   :class:`~inhibitron.hw.rowstats.RowStatistics` units sum them;
2. the row statistics: rounded mean and threshold per row;
3. the **mixing stage** (an ``R x C`` array of
   :class:`~inhibitron.hw.pe.SoftThresholdPE`): ``ceil(d/C)`` tiles of ``n``
   steps over the thresholded scores and V, rounded by the head's run-time
   shift ``r`` (a barrel shifter) and saturated into a double-buffered output
   block, which is streamed out.

The two stages work on consecutive row blocks at the same time; input and
output memories are double-buffered per head, so loading head ``h + 1``
overlaps computing head ``h``. Nothing multiplies: every address is a
concatenation or an incrementing counter, the mean uses a shift-subtract
divider.
"""

from __future__ import annotations

import functools

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from .config import MANIFEST_VERSIONS, CoreConfig
from .pe import L1PE, SoftThresholdPE
from .rowstats import RowStatistics, ThresholdClip
from .shell import BlockCollector, SlotFlags, bram
from .shell_io import add_stream_shell, slot_bits
from .shell_jobs import (MixJobControl, ScoreJobControl, connect_mix_back_end,
                         connect_mix_stage, connect_score_stage, delayed)
from .systolic import SystolicArray

__all__ = ["CoreConfig", "InhibitorAttentionCore", "MANIFEST_VERSIONS"]

def _addr(offset, bits: int, slot):
    """``slot * 2**bits + offset`` as a concatenation (``offset < 2**bits``)."""
    offset = offset[:bits]
    if len(offset) < bits:
        offset = Cat(offset, Const(0, bits - len(offset)))
    return Cat(offset, slot)


def _stream_in(shape):
    return In(stream.Signature(shape))


class InhibitorAttentionCore(wiring.Component):
    """Systolic inhibitor-attention core for one head at a time (see module docstring).

    Parameters
    ----------
    config : CoreConfig
        Sizes, formats and shifts.

    Members
    -------
    q, k : In(stream.Signature(ArrayLayout(signed(qk_bits), d)))
        One row of Q / K per beat, rows ``0..n-1`` of a head in order.
    v : In(stream.Signature(ArrayLayout(signed(v_bits), d)))
        One row of V per beat.
    desc : In(stream.Signature(StructLayout({"length": range(n + 1), "theta": signed(theta_bits), "shift": unsigned(shift_bits)})))
        One descriptor per head: valid length ``L`` (1..n, keys ``j >= L`` are
        padding), ``theta`` and the output shift ``r``. Every value of the
        ``shift`` field is exact; ``r >= out_shift_max`` gives ``h = 0``.
    h : Out(stream.Signature(StructLayout({"data": ArrayLayout(signed(out_bits), d), "last": 1})))
        One row of H per beat, ``last`` on row ``n - 1`` of each head.

    The four inputs are independent streams; the core buffers two heads of
    each, so a producer may send them in any interleaving.
    """

    def __init__(self, config: CoreConfig):
        self._MustUse__silence = True
        if not isinstance(config, CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        self._config = cfg = config
        self.desc_layout = cfg.descriptor_layout
        self.h_layout = cfg.h_layout
        super().__init__({
            "q": _stream_in(cfg.row_layout(cfg.qk_bits)),
            "k": _stream_in(cfg.row_layout(cfg.qk_bits)),
            "v": _stream_in(cfg.row_layout(cfg.v_bits)),
            "desc": _stream_in(self.desc_layout),
            "h": Out(stream.Signature(self.h_layout)),
        })
        self._MustUse__silence = False

    config = property(lambda self: self._config)

    # ---------------------------------------------------------------- elaborate

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        w = cfg.widths
        R, C, n, d = cfg.rows, cfg.cols, cfg.seq_len, cfg.head_dim
        nI, nJ, nL = cfg.row_blocks, cfg.key_tiles, cfg.dim_tiles
        zw = w.z_bits
        thw = w.theta_bits
        tw = w.threshold_bits

        # ------------------------------------------------ input/output shell
        # Q, K, V loaders and descriptor slots, double-buffered by head slot; the
        # output block slots, claimed by a mixing job, written row by row and
        # streamed out as H (shell_io.add_stream_shell).
        qld, kld, vld, desc, emit = add_stream_shell(
            m, self, qk_bits=cfg.qk_bits, v_bits=cfg.v_bits, out_bits=cfg.out_bits, rows=R,
            cols=C, seq_len=n, head_dim=d, last_rows=n - (nI - 1) * R, slices=cfg.stream_slices)
        q_half, k_half, v_half = qld.index_bits, kld.index_bits, vld.index_bits

        # The score memory: double-buffered by row block (z slot), one bank per row.
        z_half = slot_bits(nJ * C)
        # A slot is never read and written in the same cycle (the flags order them):
        # ``no_rw_check`` memories (docs/hardware.md).
        zmem = [bram(unsigned(zw), 2 << z_half) for _ in range(R)]
        for i, mem in enumerate(zmem):
            m.submodules[f"zmem{i}"] = mem
        m.submodules.zbusy = zbusy = SlotFlags()      # z slot claimed by a score job
        m.submodules.zfull = zfull = SlotFlags()      # z slot's statistics done, mix may read

        # -------------------------------------------------------- score stage
        # A job scores one row block against all keys into one z slot
        # (shell_jobs.ScoreJobControl); each z slot keeps its head's L and theta, so
        # the row statistics and the padding check select between two registers.
        jb_bits = bits_for(nJ * C)
        zinfo = data.StructLayout({"length": range(n + 1), "theta": signed(thw)})
        m.submodules.sctl = sctl = ScoreJobControl(
            steps=d, tiles=nJ, blocks=nI, q_index_bits=q_half, k_index_bits=k_half,
            info_layout=zinfo, min_gap=max(0, cfg.min_score_job_cycles - cfg.score_job_cycles))
        stag = sctl.tag_layout
        m.submodules.score = score = SystolicArray(
            pe=functools.partial(L1PE, width=cfg.qk_bits, length=d, tag_width=stag.size),
            rows=R, cols=C, pipelined_readout=True)
        for i, slot in enumerate(desc.slots):
            m.d.comb += [sctl.head_info[i].length.eq(slot.length),
                         sctl.head_info[i].theta.eq(slot.theta)]
        connect_score_stage(m, sctl, qld, kld, desc, zbusy, score)
        z_hp, z_lastblk = sctl.slot_head, sctl.slot_last
        z_len = [sctl.slot_info[i].length for i in range(2)]
        z_theta = [sctl.slot_info[i].theta for i in range(2)]

        # ----------------------------------------- score back end: z memory + stats
        thr = [[Signal(signed(tw), name=f"thr{s}_{r}") for r in range(R)] for s in range(2)]
        z_wr = [mem.write_port() for mem in zmem]
        stats_slot = [Signal(name=f"stats_slot{r}") for r in range(R)]
        stats = []
        for r in range(R):
            st = RowStatistics(z_width=zw, max_length=n, theta_width=thw, threshold_width=tw,
                               index_limit=1 << jb_bits)
            m.submodules[f"rowstats{r}"] = st
            stats.append(st)
            tag = data.View(stag, score.out_tag[r])
            # Key index of the result: the row's results come in key order.
            j = Signal(jb_bits, name=f"score_j{r}")
            j_next = Signal(jb_bits, name=f"score_jnext{r}")
            restart = tag.first & (score.out_col[r] == 0)
            m.d.comb += j.eq(Mux(restart, 0, j_next))
            with m.If(score.out_valid[r]):
                m.d.sync += j_next.eq(Mux(restart, 1, j_next + 1))   # j + 1, adder off the mux
            # One register stage between the array and the back end (statistics,
            # z memory): the key index and the restart flag reach the row unit
            # from flip-flops.
            p_valid = Signal(name=f"zres_valid{r}")
            p_first = Signal(name=f"zres_first{r}")
            p_last = Signal(name=f"zres_last{r}")
            p_zs = Signal(name=f"zres_zslot{r}")
            p_z = Signal(zw, name=f"zres_z{r}", reset_less=True)
            p_j = Signal(jb_bits, name=f"zres_j{r}", reset_less=True)
            m.d.sync += [p_valid.eq(score.out_valid[r]), p_first.eq(restart),
                         p_last.eq(tag.last & (score.out_col[r] == C - 1)),
                         p_zs.eq(tag.slot), p_z.eq(score.out_data[r]), p_j.eq(j)]
            m.d.comb += [
                st.valid.eq(p_valid),
                st.first.eq(p_first),
                st.last.eq(p_last),
                st.z.eq(p_z),
                st.index.eq(p_j),
                st.length.eq(Mux(p_zs, z_len[1], z_len[0])),
                st.theta.eq(Mux(p_zs, z_theta[1], z_theta[0])),
                z_wr[r].addr.eq(_addr(p_j, z_half, p_zs)),
                z_wr[r].data.eq(p_z),
                z_wr[r].en.eq(p_valid),
            ]
            with m.If(st.valid & st.last):
                m.d.sync += stats_slot[r].eq(p_zs)
            with m.If(st.done):
                for s in range(2):
                    with m.If(stats_slot[r] == s):
                        m.d.sync += thr[s][r].eq(st.threshold)
        with m.If(stats[R - 1].done):
            m.d.comb += zfull.set.bit_select(stats_slot[R - 1], 1).eq(1)

        # -------------------------------------------------------- mixing stage
        # A job mixes one z block slot into one output block slot
        # (shell_jobs.MixJobControl); between the z read and the array sits the
        # per-row threshold and clip (ThresholdClip.latency stages).
        clip_lat = ThresholdClip.latency
        m.submodules.mctl = mctl = MixJobControl(steps=n, tiles=nL, v_index_bits=v_half,
                                                 shift_bits=cfg.shift_bits, array_delay=clip_lat)
        m.submodules.mix = mix = SystolicArray(
            pe=functools.partial(SoftThresholdPE, v_bits=cfg.v_bits, zb_bits=w.zb_mix_bits,
                                 v_shift=cfg.v_shift, z_shift=cfg.z_shift, length=n,
                                 tag_width=mctl.tag_layout.size),
            rows=R, cols=C, pipelined_readout=True)
        m.submodules.collect = collect = BlockCollector(
            rows=R, cols=C, slices=nL, acc_bits=len(mix.out_data[0]), shift_bits=cfg.shift_bits,
            out_bits=cfg.out_bits)
        z_rd = [mem.read_port() for mem in zmem]
        m.d.comb += [mctl.src_head.eq(z_hp), mctl.src_head_next.eq(sctl.slot_head_next),
                     mctl.src_last.eq(z_lastblk)]
        connect_mix_stage(m, mctl, src_full=zfull, src_busy=zbusy, vld=vld, desc=desc, emit=emit)
        for p in z_rd:
            m.d.comb += p.addr.eq(_addr(mctl.step, z_half, mctl.src))
        # Stage 1 (read data valid): threshold + clip per row; V delayed to match.
        m1_pad = Signal()
        m.d.sync += m1_pad.eq(mctl.step >= Mux(mctl.src, z_len[1], z_len[0]))
        for r in range(R):
            tc = ThresholdClip(z_width=zw, threshold_width=tw, zb_max=cfg.zb_max)
            m.submodules[f"thrclip{r}"] = tc
            m.d.comb += [tc.z.eq(z_rd[r].data), tc.pad.eq(m1_pad),
                         tc.threshold.eq(Mux(mctl.rd_src, thr[1][r], thr[0][r])),
                         mix.a[r].eq(tc.zb)]
        for c in range(C):
            m.d.comb += mix.b[c].eq(delayed(m, vld.r_data[c], clip_lat, f"v_d{c}_",
                                            reset_less=True))
        m.d.comb += [mix.valid.eq(mctl.a_valid), mix.first.eq(mctl.a_first),
                     mix.last.eq(mctl.a_last), mix.tag.eq(mctl.a_tag)]

        # -------------------------------- mixing back end: round, collect, write block
        # Each PE row's results go through an OutputRounder (contract step 6: round
        # half up by the head's run-time r, saturate); the rows are collected and
        # written into the output block slot (shell.BlockCollector).
        connect_mix_back_end(m, mix, collect, emit, mctl.out_shift)
        return m
