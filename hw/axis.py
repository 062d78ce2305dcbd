"""AXI-Stream top level of the attention core (the module ``inhibitron generate`` writes).

Renames the Amaranth streams of :class:`~inhibitron.hw.core.InhibitorAttentionCore`
to AXI4-Stream port names so the core drops into Vivado/LiteX/etc. designs:

=====================  =========  ==========================================
port                   direction  meaning
=====================  =========  ==========================================
``clk``, ``rst``       in         clock; synchronous active-high reset
``s_axis_q_t*``        slave      Q rows: ``tdata`` = d codes of ``qk_bits``
``s_axis_k_t*``        slave      K rows (same layout)
``s_axis_v_t*``        slave      V rows: d codes of ``v_bits``
``s_axis_desc_t*``     slave      per-head descriptor: ``tdata`` =
                                  ``{r, theta, L}`` (``L`` in the low
                                  ``bits(n)`` bits, then signed ``theta``,
                                  then the unsigned output shift ``r``,
                                  ``CoreConfig.shift_bits`` wide)
``m_axis_h_t*``        master     H rows: d codes of ``out_bits``; ``tlast``
                                  on row ``n - 1`` of each head
=====================  =========  ==========================================

Code ``l`` of a row is ``tdata[l*bits +: bits]`` (two's complement). The
input ``tlast`` signals are accepted for AXI compatibility and ignored:
heads are delimited by counting ``n`` rows (documented waiver in
``hw/verilator_waivers.vlt``).
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .core import CoreConfig, InhibitorAttentionCore

__all__ = ["AxiStreamInhibitorCore"]


class AxiStreamInhibitorCore(wiring.Component):
    """:class:`InhibitorAttentionCore` with AXI-Stream port names.

    Parameters
    ----------
    config : CoreConfig

    Members
    -------
    s_axis_{q,k,v,desc}_tdata, _tvalid, _tlast : In
    s_axis_{q,k,v,desc}_tready : Out(1)
    m_axis_h_tdata, _tvalid, _tlast : Out
    m_axis_h_tready : In(1)
    """

    def __init__(self, config: CoreConfig):
        self._MustUse__silence = True
        self._core = InhibitorAttentionCore(config)
        self._core._MustUse__silence = True
        core = self._core
        members = {}
        for name in ("q", "k", "v", "desc"):
            width = len(getattr(core, name).payload.as_value())
            members[f"s_axis_{name}_tdata"] = In(width)
            members[f"s_axis_{name}_tvalid"] = In(1)
            members[f"s_axis_{name}_tready"] = Out(1)
            members[f"s_axis_{name}_tlast"] = In(1)
        members["m_axis_h_tdata"] = Out(len(core.h.payload.data.as_value()))
        members["m_axis_h_tvalid"] = Out(1)
        members["m_axis_h_tready"] = In(1)
        members["m_axis_h_tlast"] = Out(1)
        super().__init__(members)
        self._MustUse__silence = False

    config = property(lambda self: self._core.config)
    core = property(lambda self: self._core, doc="The wrapped InhibitorAttentionCore.")

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self._core
        for name in ("q", "k", "v", "desc"):
            port = getattr(core, name)
            m.d.comb += [
                port.payload.as_value().eq(getattr(self, f"s_axis_{name}_tdata")),
                port.valid.eq(getattr(self, f"s_axis_{name}_tvalid")),
                getattr(self, f"s_axis_{name}_tready").eq(port.ready),
            ]
        m.d.comb += [
            self.m_axis_h_tdata.eq(core.h.payload.data.as_value()),
            self.m_axis_h_tlast.eq(core.h.payload.last),
            self.m_axis_h_tvalid.eq(core.h.valid),
            core.h.ready.eq(self.m_axis_h_tready),
        ]
        return m
