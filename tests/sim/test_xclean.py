"""Both cores are X-clean in a 4-state simulator (Icarus Verilog), issue 16.

After reset is released no output port bit may be X or Z, with every input
idle and under legal traffic (whole heads, idle cycles, backpressure), for
several configurations of the inhibitor core and of the dot-product
baseline, and with both ways a testbench may initialise its registers
(declaration initialisers: no time-0 event; ``initial`` block: events).
The checker itself (``inhibitron.sim.xcheck``) is checked on a module with
a deliberate X and on the core's Verilog as Amaranth writes it (without the
time-0 events of ``hw.generate``), whose ``tready`` the issue found X.
"""

from __future__ import annotations

import dataclasses

import pytest

from inhibitron.hw.baseline import BaselineConfig
from inhibitron.hw.core import CoreConfig
from inhibitron.hw.toolchain import have_icarus
from inhibitron.sim.xcheck import (
    IDLE, TRAFFIC, Pacing, XTarget, baseline_target, inhibitor_target, parse_ports, xcheck,
)

pytestmark = pytest.mark.icarus


@pytest.fixture(autouse=True)
def _need_icarus():
    if not have_icarus():
        pytest.skip("Icarus Verilog (iverilog) is not installed: apt-get install iverilog")


INHIBITOR = {
    # the issue's core
    "tiny_2x2_n5_d4": CoreConfig.from_dict(dict(rows=2, cols=2, seq_len=5, head_dim=4, qk_bits=4,
                                                v_bits=4, out_bits=6, name="tiny_core")),
    "c3x5_n23_d24": CoreConfig.from_dict(dict(rows=3, cols=5, seq_len=23, head_dim=24,
                                              name="xc_3x5")),
    "c4x4_n16_d16_vshift": CoreConfig.from_dict(dict(rows=4, cols=4, seq_len=16, head_dim=16,
                                                     qk_bits=4, v_bits=4, out_bits=6, v_shift=1,
                                                     name="xc_4x4")),
}
BASELINE = {
    "b2x2_n8_d4": BaselineConfig.from_dict(dict(rows=2, cols=2, seq_len=8, head_dim=4,
                                                name="xb_2x2")),
    "b2x4_n8_d8": BaselineConfig.from_dict(dict(rows=2, cols=4, seq_len=8, head_dim=8,
                                                name="xb_2x4")),
}

_targets: dict[str, XTarget] = {}


def _target(key: str) -> XTarget:
    """Generate each configuration's Verilog once per session."""
    if key not in _targets:
        _targets[key] = (inhibitor_target(INHIBITOR[key]) if key in INHIBITOR
                         else baseline_target(BASELINE[key]))
    return _targets[key]


def _assert_clean(result):
    assert result.clean, result.summary()


@pytest.mark.parametrize("style", ["declaration", "initial"])
@pytest.mark.parametrize("key", list(INHIBITOR))
def test_inhibitor_outputs_defined_after_reset(key, style, tmp_path):
    result = xcheck(_target(key), cycles=100, pacing=IDLE, style=style, workdir=tmp_path)
    _assert_clean(result)
    assert result.cycles == 100


@pytest.mark.parametrize("style", ["declaration", "initial"])
@pytest.mark.parametrize("key", list(BASELINE))
def test_baseline_outputs_defined_after_reset(key, style, tmp_path):
    result = xcheck(_target(key), cycles=100, pacing=IDLE, style=style, workdir=tmp_path)
    _assert_clean(result)
    assert result.cycles == 100


@pytest.mark.parametrize("pacing", [TRAFFIC, Pacing(send=True, seed=3)],
                         ids=["idle_and_backpressure", "full_rate"])
@pytest.mark.parametrize("key", ["tiny_2x2_n5_d4", "b2x2_n8_d4"])
def test_outputs_defined_under_traffic(key, pacing, tmp_path):
    """Whole heads in, rows out: still no X/Z on any output, and the core did work."""
    target = _target(key)
    result = xcheck(target, pacing=pacing, workdir=tmp_path)
    _assert_clean(result)
    n = (INHIBITOR.get(key) or BASELINE[key]).seq_len
    assert result.beats_out >= 2 * n, result.summary()          # two heads came out
    assert all(beats >= 2 for beats in result.beats_in.values()), result.summary()


def test_inhibitor_internal_x_flushes(tmp_path):
    """Diagnosis of the tiny core under traffic: no signal is X when the run ends.

    The only X after reset release are operand pipelines fed by block-RAM
    read registers (no initial value) in the first cycles; they are data,
    gated by ``valid``, and flush within the array's skew.
    """
    cfg = INHIBITOR["tiny_2x2_n5_d4"]
    result = xcheck(_target("tiny_2x2_n5_d4"), pacing=TRAFFIC, diagnose=True, workdir=tmp_path)
    _assert_clean(result)
    assert not [s.name for s in result.x_signals if s.x_at_end], result.summary()
    late = [s for s in result.x_signals if s.first_x_cycle > 2 * (cfg.rows + cfg.cols) + 4]
    assert not late, result.summary()


# ------------------------------------------------------------------ the checker itself

_BAD = """\
module bad_core(clk, rst, i_valid, i_ready, o_data);
  input clk;
  input rst;
  input i_valid;
  output i_ready;
  output [3:0] o_data;
  reg ready_q = 1'b0;
  reg [3:0] data_q;            // no initial value, no reset
  always @(posedge clk) begin
    ready_q <= rst ? 1'b0 : 1'b1;
    if (i_valid) data_q <= 4'd5;
  end
  assign i_ready = ready_q;
  assign o_data = data_q;
endmodule
"""


def test_checker_reports_first_x_port_and_cycle(tmp_path):
    target = XTarget(verilog=_BAD, top="bad_core", ports=parse_ports(_BAD, "bad_core"),
                     streams=(), out_ready=(), out_valid=(), cycles_per_head=10)
    result = xcheck(target, cycles=20, workdir=tmp_path / "run")
    assert not result.clean
    assert (result.first_x_cycle, result.first_x_port, result.x_ports) == (0, "o_data", ("o_data",))
    diag = xcheck(target, cycles=20, diagnose=True, workdir=tmp_path / "diag")
    assert diag.first_x_cycle == 0
    assert {"data_q", "o_data"} <= {s.name for s in diag.x_signals if s.x_at_end}
    assert "ready_q" not in {s.name for s in diag.x_signals}
    assert "first X/Z at cycle 0 on o_data" in diag.summary()


def test_checker_catches_the_issue(tmp_path):
    """Amaranth's text as is (``always @*`` blocks woken only by a declaration
    initialiser) leaves the tiny core's ``tready`` X in an ``initial``-style
    testbench: the checker must see it."""
    from amaranth.back import verilog

    from inhibitron.hw.axis import AxiStreamInhibitorCore

    cfg = INHIBITOR["tiny_2x2_n5_d4"]
    raw = verilog.convert(AxiStreamInhibitorCore(cfg), name=cfg.name, emit_src=False,
                          strip_internal_attrs=True)
    target = dataclasses.replace(_target("tiny_2x2_n5_d4"), verilog=raw)
    result = xcheck(target, cycles=100, style="initial", workdir=tmp_path)
    assert not result.clean
    assert "s_axis_q_tready" in result.x_ports or "m_axis_h_tdata" in result.x_ports, \
        result.summary()


def test_xcheck_reexports_its_parts():
    """Targets, testbench text and VCD diagnosis have their own modules; sim.xcheck keeps their names."""
    from inhibitron.sim import xcheck as X
    from inhibitron.sim import xcheck_target, xcheck_tb, xcheck_vcd

    for module in (xcheck_target, xcheck_tb, xcheck_vcd):
        for name in module.__all__:
            if name in X.__all__:
                assert getattr(X, name) is getattr(module, name), name
    assert {"Port", "Pacing", "testbench", "XSignal", "x_signals_from_vcd"} <= set(X.__all__)
