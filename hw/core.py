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
from amaranth.utils import bits_for, ceil_log2

from .config import MANIFEST_VERSIONS, CoreConfig
from .pe import L1PE, SoftThresholdPE
from .rowstats import RowStatistics, ThresholdClip
from .shell import OutputRounder, SlotFlags, bram
from .systolic import SystolicArray

__all__ = ["CoreConfig", "InhibitorAttentionCore", "MANIFEST_VERSIONS"]

def _slot_bits(x: int) -> int:
    """Address bits of one slot of ``x`` entries (at least 1)."""
    return max(1, ceil_log2(x))


def _registered_ready(m, ready, *, accept, busy, finishing, last_next, full, slot_next):
    """Drive a loader's ``ready`` register: ``(~busy | finishing) & ~full[slot]``, one cycle ahead.

    ``ready`` (``init=1``) gets the value that expression will have next cycle,
    from the next values of its inputs: ``busy`` next is 1 after ``accept``, 0
    after ``finishing``; ``last_next`` is the loader's registered
    "last step" flag next cycle; ``slot_next`` the slot of the next row; the
    slot flag's next value is ``full.after`` (a :class:`~inhibitron.hw.shell.SlotFlags`).
    """
    busy_next = Mux(accept, 1, Mux(finishing, 0, busy))
    m.d.sync += ready.eq((~busy_next | last_next)
                         & ~full.after.bit_select(slot_next, 1))


def _terminal_flags(m, prefix: str, start, run, inner, inner_len: int, outer, outer_len: int):
    """Registered ``inner == inner_len - 1`` and ``outer == outer_len - 1`` flags.

    For a sequencer whose ``inner`` counter runs ``0 .. inner_len - 1`` once per
    step of ``outer`` (``0 .. outer_len - 1``) while ``run`` is high, both
    counters starting at 0 when ``start`` is high. The flags are computed one
    cycle early from the counters' next values, so they are plain flip-flops.
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

        # ------------------------------------------------------------ memories
        q_half = _slot_bits(nI * d)          # address bits inside one head slot
        k_half = _slot_bits(nJ * d)
        v_half = _slot_bits(nL * n)
        z_half = _slot_bits(nJ * C)
        # Every memory is double-buffered by head slot and a slot is never read and
        # written in the same cycle (the full/busy flags order them), so read/write
        # collisions cannot happen: ``no_rw_check`` tells Yosys not to build
        # collision-bypass logic in front of the block RAMs (docs/hardware.md).
        qmem = [bram(signed(cfg.qk_bits), 2 << q_half) for _ in range(R)]
        kmem = [bram(signed(cfg.qk_bits), 2 << k_half) for _ in range(C)]
        vmem = [bram(signed(cfg.v_bits), 2 << v_half) for _ in range(C)]
        zmem = [bram(unsigned(zw), 2 << z_half) for _ in range(R)]
        omem = bram(data.ArrayLayout(signed(cfg.out_bits), nL * C), 2 << _slot_bits(R))
        for i, mem in enumerate(qmem):
            m.submodules[f"qmem{i}"] = mem
        for i, mem in enumerate(kmem):
            m.submodules[f"kmem{i}"] = mem
        for i, mem in enumerate(vmem):
            m.submodules[f"vmem{i}"] = mem
        for i, mem in enumerate(zmem):
            m.submodules[f"zmem{i}"] = mem
        m.submodules.omem = omem

        # Two-slot flags (SlotFlags: registered set/clear pulses, ``after`` = next value).
        m.submodules.qfull = qfull = SlotFlags()      # Q of a head slot loaded
        m.submodules.kfull = kfull = SlotFlags()      # K of a head slot loaded
        m.submodules.vfull = vfull = SlotFlags()      # V of a head slot loaded
        m.submodules.dfull = dfull = SlotFlags()      # descriptor of a head slot latched
        m.submodules.zbusy = zbusy = SlotFlags()      # z slot claimed by a score job
        m.submodules.zfull = zfull = SlotFlags()      # z slot's statistics done, mix may read
        m.submodules.obusy = obusy = SlotFlags()      # output slot claimed by a mix job
        m.submodules.ofull = ofull = SlotFlags()      # output block complete, emit

        # ------------------------------------------------- Q and K loaders
        # A beat (one row of d codes) is shifted out one code per cycle into the
        # bank of its row: Q row i -> bank i mod R at (slot, (i div R)*d + k);
        # K row j -> bank j mod C at (slot, (j div C)*d + k).
        def qk_loader(prefix, port, mems, nbanks, half_bits, full):
            wports = [mem.write_port() for mem in mems]
            buf = Signal(data.ArrayLayout(signed(cfg.qk_bits), d), name=f"{prefix}_buf")
            busy = Signal(name=f"{prefix}_busy")
            kk = Signal(range(d), name=f"{prefix}_k")
            bank = Signal(range(nbanks), name=f"{prefix}_bank")     # of the row being written
            base = Signal(half_bits + 1, name=f"{prefix}_base")     # (row div banks) * d
            slot = Signal(name=f"{prefix}_slot")
            last_row = Signal(name=f"{prefix}_last_row")
            # next row to accept
            nbank = Signal(range(nbanks), name=f"{prefix}_nbank")
            nbase = Signal(half_bits + 1, name=f"{prefix}_nbase")
            nrow = Signal(range(n), name=f"{prefix}_nrow")
            nslot = Signal(name=f"{prefix}_nslot")
            klast = Signal(name=f"{prefix}_klast")   # kk == d - 1, registered
            finishing = busy & klast
            accept = port.valid & port.ready
            # ready is registered, so the load enable of the d-code buffer is one
            # gate after two flip-flops.
            ready = Signal(init=1, name=f"{prefix}_ready")
            m.d.comb += port.ready.eq(ready)
            # kk == d - 2, registered one cycle earlier still, so no comparator
            # sits in front of the ready flip-flop either.
            kpen = Signal(name=f"{prefix}_kpen")
            _registered_ready(m, ready, accept=accept, busy=busy, finishing=finishing,
                              last_next=Mux(accept, d == 1, Mux(busy, kpen, klast)),
                              full=full,
                              slot_next=Mux(accept & (nrow == n - 1), ~nslot, nslot))
            with m.If(busy):
                m.d.sync += [klast.eq(kpen), kpen.eq(kk == d - 3)]
            for b, wp in enumerate(wports):
                m.d.comb += [wp.addr.eq(_addr(base + kk, half_bits, slot)),
                             wp.data.eq(buf[0]), wp.en.eq(busy & (bank == b))]
            with m.If(busy):
                m.d.sync += kk.eq(kk + 1)
                with m.If(~ready):
                    m.d.sync += buf.as_value().eq(buf.as_value() >> cfg.qk_bits)
            with m.If(finishing):
                m.d.sync += busy.eq(0)
                with m.If(last_row):
                    m.d.comb += full.set.bit_select(slot, 1).eq(1)
            # The buffer loads whenever the loader is ready (valid or not): it holds
            # nothing needed then, and its d * bits load enables hang off a flip-flop.
            with m.If(ready):
                m.d.sync += buf.eq(port.payload)
            with m.If(accept):
                m.d.sync += [busy.eq(1), kk.eq(0), klast.eq(d == 1), kpen.eq(d == 2),
                             bank.eq(nbank), base.eq(nbase), slot.eq(nslot),
                             last_row.eq(nrow == n - 1)]
                with m.If(nrow == n - 1):
                    m.d.sync += [nrow.eq(0), nbank.eq(0), nbase.eq(0), nslot.eq(~nslot)]
                with m.Else():
                    m.d.sync += nrow.eq(nrow + 1)
                    with m.If(nbank == nbanks - 1):
                        m.d.sync += [nbank.eq(0), nbase.eq(nbase + d)]
                    with m.Else():
                        m.d.sync += nbank.eq(nbank + 1)

        qk_loader("qld", self.q, qmem, R, q_half, qfull)
        qk_loader("kld", self.k, kmem, C, k_half, kfull)

        # ------------------------------------------------------------ V loader
        # Row j, code l -> bank l mod C at (slot, (l div C)*n + j); C codes per cycle.
        vw = [mem.write_port() for mem in vmem]
        vbuf = Signal(data.ArrayLayout(signed(cfg.v_bits), nL * C))
        vbusy = Signal()
        vt = Signal(range(nL))                 # dim tile being written
        vaddr = Signal(v_half + 1)             # (vt * n + row) inside the slot
        vslot = Signal()
        vlast_row = Signal()
        vrow = Signal(range(n))                # next row to accept
        vnslot = Signal()
        vtlast = Signal()                      # vt == nL - 1, registered
        vfinishing = vbusy & vtlast
        vaccept = self.v.valid & self.v.ready
        # ready is registered, as for Q/K.
        vready = Signal(init=1)
        m.d.comb += self.v.ready.eq(vready)
        _registered_ready(m, vready, accept=vaccept, busy=vbusy, finishing=vfinishing,
                          last_next=Mux(vaccept, nL == 1, Mux(vbusy, vt == nL - 2, vtlast)),
                          full=vfull,
                          slot_next=Mux(vaccept & (vrow == n - 1), ~vnslot, vnslot))
        for c, wp in enumerate(vw):
            m.d.comb += [wp.addr.eq(_addr(vaddr, v_half, vslot)), wp.data.eq(vbuf[c]),
                         wp.en.eq(vbusy)]
        with m.If(vbusy):
            m.d.sync += [vt.eq(vt + 1), vtlast.eq(vt == nL - 2), vaddr.eq(vaddr + n)]
            with m.If(~vready):
                m.d.sync += vbuf.as_value().eq(vbuf.as_value() >> (C * cfg.v_bits))
        # As for Q/K: the buffer loads whenever the loader is ready.
        with m.If(vready):
            m.d.sync += vbuf.as_value().eq(self.v.payload.as_value())
        with m.If(vfinishing):
            m.d.sync += vbusy.eq(0)
            with m.If(vlast_row):
                m.d.comb += vfull.set.bit_select(vslot, 1).eq(1)
        with m.If(vaccept):
            m.d.sync += [vbusy.eq(1), vt.eq(0), vtlast.eq(nL == 1),
                         vaddr.eq(vrow), vslot.eq(vnslot), vlast_row.eq(vrow == n - 1)]
            with m.If(vrow == n - 1):
                m.d.sync += [vrow.eq(0), vnslot.eq(~vnslot)]
            with m.Else():
                m.d.sync += vrow.eq(vrow + 1)

        # ---------------------------------------------------- descriptor loader
        d_len = [Signal(w.length_bits, name=f"desc_len{i}") for i in range(2)]
        d_theta = [Signal(signed(thw), name=f"desc_theta{i}") for i in range(2)]
        d_shift = [Signal(cfg.shift_bits, name=f"desc_shift{i}") for i in range(2)]
        dslot = Signal()
        m.d.comb += self.desc.ready.eq(~dfull.flags.bit_select(dslot, 1))
        with m.If(self.desc.valid & self.desc.ready):
            m.d.sync += dslot.eq(~dslot)
            for i in range(2):
                with m.If(dslot == i):
                    m.d.sync += [d_len[i].eq(self.desc.payload.length),
                                 d_theta[i].eq(self.desc.payload.theta),
                                 d_shift[i].eq(self.desc.payload.shift)]
            m.d.comb += dfull.set.bit_select(dslot, 1).eq(1)

        # -------------------------------------------------------- score stage
        jb_bits = bits_for(nJ * C)
        stag = data.StructLayout({"zslot": 1, "first": 1, "last": 1})
        m.submodules.score = score = SystolicArray(
            pe=functools.partial(L1PE, width=cfg.qk_bits, length=d, tag_width=stag.size),
            rows=R, cols=C, pipelined_readout=True)
        q_rd = [mem.read_port() for mem in qmem]
        k_rd = [mem.read_port() for mem in kmem]

        s_run = Signal()
        s_hp = Signal()                        # head slot of the job
        s_blk = Signal(range(nI))              # row block I
        s_blast = Signal(init=int(nI == 1))    # s_blk == nI - 1, registered
        s_qbase = Signal(q_half + 1)           # I * d
        s_kbase = Signal(k_half + 1)           # J * d
        s_tile = Signal(range(nJ))
        s_k = Signal(range(d))
        s_zs = Signal()                        # z slot of the job
        s_gap = Signal(range(cfg.min_score_job_cycles + 2))
        z_hp = [Signal(name=f"zinfo_hp{i}") for i in range(2)]
        z_lastblk = [Signal(name=f"zinfo_last{i}") for i in range(2)]
        # The head's L and theta, copied per z slot when its score job starts (the
        # descriptor slot is full then), so the row statistics and the padding
        # check select between two registers and not through the head slot.
        z_len = [Signal(range(n + 1), name=f"zinfo_len{i}") for i in range(2)]
        z_theta = [Signal(signed(thw), name=f"zinfo_theta{i}") for i in range(2)]

        extra = max(0, cfg.min_score_job_cycles - cfg.score_job_cycles)
        s_can = Signal()
        # s_ok == (s_gap == 0) & qfull[s_hp] & kfull[s_hp] & dfull[s_hp] & ~zbusy[s_zs],
        # registered from the next values of its inputs (defined below), so the
        # start condition is one gate and not a tree of flag multiplexers.
        s_ok = Signal()
        m.d.comb += s_can.eq(~s_run & s_ok)
        with m.If(s_gap != 0):
            m.d.sync += s_gap.eq(s_gap - 1)
        with m.If(s_can):
            m.d.sync += [s_run.eq(1), s_tile.eq(0), s_k.eq(0), s_kbase.eq(0)]
            m.d.comb += zbusy.set.bit_select(s_zs, 1).eq(1)
            for i in range(2):
                with m.If(s_zs == i):
                    m.d.sync += [z_hp[i].eq(s_hp), z_lastblk[i].eq(s_blast),
                                 z_len[i].eq(Mux(s_hp, d_len[1], d_len[0])),
                                 z_theta[i].eq(Mux(s_hp, d_theta[1], d_theta[0]))]
        # Terminal counts are registered one cycle ahead (s_klast == (s_k == d - 1),
        # s_tlast == (s_tile == nJ - 1)): no comparator sits in front of the
        # flag and slot logic they drive.
        s_klast, s_tlast = _terminal_flags(m, "s", s_can, s_run, s_k, d, s_tile, nJ)
        s_tile_end = Signal()
        s_job_end = Signal()
        m.d.comb += [s_tile_end.eq(s_run & s_klast),
                     s_job_end.eq(s_tile_end & s_tlast)]
        with m.If(s_run):
            m.d.sync += s_k.eq(s_k + 1)
            with m.If(s_tile_end):
                m.d.sync += [s_k.eq(0), s_tile.eq(s_tile + 1), s_kbase.eq(s_kbase + d)]
            with m.If(s_job_end):
                m.d.sync += [s_run.eq(0), s_zs.eq(~s_zs), s_gap.eq(extra)]
                with m.If(s_blast):
                    m.d.sync += [s_blk.eq(0), s_qbase.eq(0), s_hp.eq(~s_hp)]
                    m.d.comb += [qfull.clr.bit_select(s_hp, 1).eq(1),
                                 kfull.clr.bit_select(s_hp, 1).eq(1)]
                with m.Else():
                    m.d.sync += [s_blk.eq(s_blk + 1), s_qbase.eq(s_qbase + d)]
        # s_gap's next value is 0 when no job ends now and s_gap <= 1 (no subtractor).
        s_gap_n_zero = Mux(s_job_end, extra == 0, s_gap <= 1)
        s_hp_n = Mux(s_job_end & s_blast, ~s_hp, s_hp)
        s_blk_n = Mux(s_job_end, Mux(s_blast, 0, s_blk + 1), s_blk)
        m.d.sync += s_blast.eq(s_blk_n == nI - 1)
        s_zs_n = Mux(s_job_end, ~s_zs, s_zs)
        m.d.sync += s_ok.eq(s_gap_n_zero
                            & qfull.after.bit_select(s_hp_n, 1)
                            & kfull.after.bit_select(s_hp_n, 1)
                            & dfull.after.bit_select(s_hp_n, 1)
                            & ~zbusy.after.bit_select(s_zs_n, 1))
        for p in q_rd:
            m.d.comb += p.addr.eq(_addr(s_qbase + s_k, q_half, s_hp))
        for p in k_rd:
            m.d.comb += p.addr.eq(_addr(s_kbase + s_k, k_half, s_hp))
        # Control aligned with the read data (one cycle), then both registered once
        # more: the block-RAM outputs feed a register, not the PEs' subtractors
        # (on ECP5 that register becomes the DP16KD output register, see
        # hw/ecp5_outreg.py).
        s_tag = Signal(stag)
        s_valid, s_first, s_last = Signal(), Signal(), Signal()
        m.d.sync += [s_valid.eq(s_run), s_first.eq(s_k == 0), s_last.eq(s_klast),
                     s_tag.zslot.eq(s_zs), s_tag.first.eq(s_tile == 0),
                     s_tag.last.eq(s_tlast)]
        s2_tag = Signal(stag)
        s2_valid, s2_first, s2_last = Signal(), Signal(), Signal()
        m.d.sync += [s2_valid.eq(s_valid), s2_first.eq(s_first), s2_last.eq(s_last),
                     s2_tag.eq(s_tag)]
        for r in range(R):
            qd = Signal(signed(cfg.qk_bits), name=f"q_d{r}", reset_less=True)
            m.d.sync += qd.eq(q_rd[r].data)
            m.d.comb += score.a[r].eq(qd)
        for c in range(C):
            kd = Signal(signed(cfg.qk_bits), name=f"k_d{c}", reset_less=True)
            m.d.sync += kd.eq(k_rd[c].data)
            m.d.comb += score.b[c].eq(kd)
        m.d.comb += [score.valid.eq(s2_valid), score.first.eq(s2_first), score.last.eq(s2_last),
                     score.tag.eq(s2_tag)]

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
                         p_zs.eq(tag.zslot), p_z.eq(score.out_data[r]), p_j.eq(j)]
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
        mtag = data.StructLayout({"tile": range(nL), "oslot": 1, "last": 1})
        m.submodules.mix = mix = SystolicArray(
            pe=functools.partial(SoftThresholdPE, v_bits=cfg.v_bits, zb_bits=w.zb_mix_bits,
                                 v_shift=cfg.v_shift, z_shift=cfg.z_shift, length=n,
                                 tag_width=mtag.size),
            rows=R, cols=C, pipelined_readout=True)
        z_rd = [mem.read_port() for mem in zmem]
        v_rd = [mem.read_port() for mem in vmem]
        m_run = Signal()
        m_zs = Signal()                        # z slot being mixed
        m_os = Signal()                        # output slot being filled
        m_tile = Signal(range(nL))
        m_vbase = Signal(v_half + 1)           # tile * n
        m_j = Signal(range(n))
        o_last = [Signal(name=f"oinfo_last{i}") for i in range(2)]
        # Output shift of the head whose block fills output slot i; the slot stays
        # claimed (obusy) until it is emitted, the descriptor slot may be reused sooner.
        o_shift = [Signal(cfg.shift_bits, name=f"oinfo_shift{i}") for i in range(2)]
        m_hp = Mux(m_zs, z_hp[1], z_hp[0])
        m_lastblk = Mux(m_zs, z_lastblk[1], z_lastblk[0])
        # The running job's head slot and last-block flag, registered at its start.
        mj_hp = Signal()
        mj_lastblk = Signal()
        m_can = Signal()
        # m_ok == zfull[m_zs] & vfull[m_hp] & ~obusy[m_os], registered from the
        # next values of its inputs (below).
        m_ok = Signal()
        m.d.comb += m_can.eq(~m_run & m_ok)
        with m.If(m_can):
            m.d.sync += [m_run.eq(1), m_tile.eq(0), m_vbase.eq(0), m_j.eq(0),
                         mj_hp.eq(m_hp), mj_lastblk.eq(m_lastblk)]
            m.d.comb += obusy.set.bit_select(m_os, 1).eq(1)
            for i in range(2):
                with m.If(m_os == i):
                    m.d.sync += [o_last[i].eq(m_lastblk),
                                 o_shift[i].eq(Mux(m_hp, d_shift[1], d_shift[0]))]
        m_jlast, m_tlast = _terminal_flags(m, "m", m_can, m_run, m_j, n, m_tile, nL)
        m_tile_end = Signal()
        m_job_end = Signal()
        m.d.comb += [m_tile_end.eq(m_run & m_jlast),
                     m_job_end.eq(m_tile_end & m_tlast)]
        with m.If(m_run):
            m.d.sync += m_j.eq(m_j + 1)
            with m.If(m_tile_end):
                m.d.sync += [m_j.eq(0), m_tile.eq(m_tile + 1), m_vbase.eq(m_vbase + n)]
            with m.If(m_job_end):
                m.d.sync += [m_run.eq(0), m_zs.eq(~m_zs), m_os.eq(~m_os)]
                m.d.comb += [zfull.clr.bit_select(m_zs, 1).eq(1),
                             zbusy.clr.bit_select(m_zs, 1).eq(1)]
                with m.If(mj_lastblk):
                    m.d.comb += [vfull.clr.bit_select(mj_hp, 1).eq(1),
                                 dfull.clr.bit_select(mj_hp, 1).eq(1)]
        m_zs_n = Mux(m_job_end, ~m_zs, m_zs)
        m_os_n = Mux(m_job_end, ~m_os, m_os)
        z_hp_n = [Mux(s_can & (s_zs == i), s_hp, z_hp[i]) for i in range(2)]
        m.d.sync += m_ok.eq(zfull.after.bit_select(m_zs_n, 1)
                            & vfull.after.bit_select(
                                Mux(m_zs_n, z_hp_n[1], z_hp_n[0]), 1)
                            & ~obusy.after.bit_select(m_os_n, 1))
        for p in z_rd:
            m.d.comb += p.addr.eq(_addr(m_j, z_half, m_zs))
        for p in v_rd:
            m.d.comb += p.addr.eq(_addr(m_vbase + m_j, v_half, mj_hp))
        # Stage 1 (read data valid): threshold + clip per row; V delayed to match.
        m1_valid, m1_first, m1_last = Signal(), Signal(), Signal()
        m1_pad = Signal()
        m1_zs = Signal()
        m1_tag = Signal(mtag)
        m.d.sync += [m1_valid.eq(m_run), m1_first.eq(m_j == 0), m1_last.eq(m_jlast),
                     m1_pad.eq(m_j >= Mux(m_zs, z_len[1], z_len[0])), m1_zs.eq(m_zs),
                     m1_tag.tile.eq(m_tile), m1_tag.oslot.eq(m_os),
                     m1_tag.last.eq(m_tlast)]
        # ThresholdClip is pipelined (ThresholdClip.latency stages: register the
        # block-RAM read data, subtract, select); control and V follow it.
        clip_lat = ThresholdClip.latency
        mc_valid, mc_first, mc_last, mc_tag = m1_valid, m1_first, m1_last, m1_tag
        for i in range(clip_lat):
            nv, nf, nl = (Signal(name=f"mclip{i}_valid"), Signal(name=f"mclip{i}_first"),
                          Signal(name=f"mclip{i}_last"))
            nt = Signal(mtag, name=f"mclip{i}_tag")
            m.d.sync += [nv.eq(mc_valid), nf.eq(mc_first), nl.eq(mc_last), nt.eq(mc_tag)]
            mc_valid, mc_first, mc_last, mc_tag = nv, nf, nl, nt
        for r in range(R):
            tc = ThresholdClip(z_width=zw, threshold_width=tw, zb_max=cfg.zb_max)
            m.submodules[f"thrclip{r}"] = tc
            m.d.comb += [tc.z.eq(z_rd[r].data), tc.pad.eq(m1_pad),
                         tc.threshold.eq(Mux(m1_zs, thr[1][r], thr[0][r])),
                         mix.a[r].eq(tc.zb)]
        for c in range(C):
            vd = v_rd[c].data
            for i in range(clip_lat):
                nvd = Signal(signed(cfg.v_bits), name=f"v_d{c}_{i}", reset_less=True)
                m.d.sync += nvd.eq(vd)
                vd = nvd
            m.d.comb += mix.b[c].eq(vd)
        m.d.comb += [mix.valid.eq(mc_valid), mix.first.eq(mc_first), mix.last.eq(mc_last),
                     mix.tag.eq(mc_tag)]

        # -------------------------------- mixing back end: round, collect, write block
        # Each PE row's results go through an OutputRounder (contract step 6: round
        # half up by the head's run-time r, saturate), three registered stages. Its
        # tag carries the output-slot tag and "last column of the row", so the row
        # write request below is a flip-flop (no compare in front of the write mux).
        o_wr = omem.write_port(granularity=C)
        rtag = data.StructLayout({"mix": mtag, "row_end": 1})
        wr_data = 0
        wr_addr = 0
        wr_en = 0
        for r in range(R):
            tag0 = data.View(mtag, mix.out_tag[r])
            m.submodules[f"rounder{r}"] = rnd = OutputRounder(
                acc_bits=len(mix.out_data[r]), shift_bits=cfg.shift_bits, out_bits=cfg.out_bits,
                tag_width=rtag.size)
            rin = data.View(rtag, rnd.i_tag)
            m.d.comb += [rnd.i_valid.eq(mix.out_valid[r]), rnd.i_acc.eq(mix.out_data[r]),
                         rnd.i_shift.eq(Mux(tag0.oslot, o_shift[1], o_shift[0])),
                         rin.mix.eq(tag0), rin.row_end.eq(mix.out_col[r] == C - 1)]
            rout = data.View(rtag, rnd.o_tag)
            h_val, h_ok, h_tag = rnd.o_h, rnd.o_valid, rout.mix
            coll = Signal(data.ArrayLayout(signed(cfg.out_bits), C), name=f"collect{r}",
                          reset_less=True)
            if C > 1:
                with m.If(h_ok):
                    m.d.sync += coll.as_value().eq(Cat(coll.as_value()[cfg.out_bits:], h_val))
            row_data = Cat(coll.as_value()[cfg.out_bits:], h_val)
            req = h_ok & rout.row_end            # the row's last column leaves the rounder
            wr_data = wr_data | Mux(req, row_data, 0)
            wr_addr = wr_addr | Mux(req, Cat(Const(r, _slot_bits(R)), h_tag.oslot), 0)
            wr_en = wr_en | Mux(req, (Const(1, nL) << h_tag.tile)[:nL], 0)
            if r == R - 1:
                last_req = req & h_tag.last
                last_slot = h_tag.oslot
        # The row write is registered once more (address, data, enables) before the
        # output memory, and the slot's "full" flag is set with it.
        slice_data = Signal(C * cfg.out_bits, reset_less=True)
        ow_addr = Signal(_slot_bits(R) + 1, reset_less=True)
        ow_en = Signal(nL)
        ow_full = Signal(2)
        m.d.sync += [ow_addr.eq(wr_addr), ow_en.eq(wr_en), slice_data.eq(wr_data),
                     ow_full.eq(Mux(last_req, Const(1, 2) << last_slot, 0))]
        m.d.comb += [o_wr.addr.eq(ow_addr), o_wr.en.eq(ow_en), ofull.set.eq(ow_full)]
        # Every slice gets the same data; the enabled one (the tile) keeps it.
        m.d.comb += o_wr.data.as_value().eq(Cat(*[slice_data for _ in range(nL)]))

        # ---------------------------------------------------------- output stream
        o_rd = omem.read_port()
        oc = Signal()                          # slot being emitted
        orow = Signal(_slot_bits(R))
        h_last = Signal()
        last_rows = n - (nI - 1) * R           # rows of the last block
        o_is_last = Mux(oc, o_last[1], o_last[0])
        advance = ~self.h.valid | self.h.ready
        m.d.comb += [o_rd.en.eq(advance), o_rd.addr.eq(Cat(orow, oc))]
        # o_avail == ofull[oc] and o_rlast == (orow is the last row of the block), kept as
        # registers from the next values of their inputs, so the output handshake
        # drives the slot and flag updates through one gate.
        o_avail = Signal()
        o_rlast = Signal(init=int(R == 1))
        take = advance & o_avail
        with m.If(advance):
            with m.If(o_avail):
                m.d.sync += [self.h.valid.eq(1), h_last.eq(o_is_last & o_rlast)]
                with m.If(o_rlast):
                    m.d.sync += [orow.eq(0), oc.eq(~oc)]
                    m.d.comb += [ofull.clr.bit_select(oc, 1).eq(1),
                                 obusy.clr.bit_select(oc, 1).eq(1)]
                with m.Else():
                    m.d.sync += orow.eq(orow + 1)
            with m.Else():
                m.d.sync += self.h.valid.eq(0)
        oc_n = Mux(take & o_rlast, ~oc, oc)
        orow_n = Mux(take, Mux(o_rlast, 0, orow + 1), orow)
        o_last_n = [Mux(m_can & (m_os == i), m_lastblk, o_last[i]) for i in range(2)]
        m.d.sync += [
            o_avail.eq(ofull.after.bit_select(oc_n, 1)),
            o_rlast.eq(orow_n == Mux(Mux(oc_n, o_last_n[1], o_last_n[0]), last_rows - 1, R - 1)),
        ]
        m.d.comb += [self.h.payload.data.as_value().eq(o_rd.data.as_value()[:d * cfg.out_bits]),
                     self.h.payload.last.eq(h_last)]
        return m
