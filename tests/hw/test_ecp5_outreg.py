"""Retiming the register after an ECP5 block-RAM read into the RAM (REGMODE=OUTREG)."""

from __future__ import annotations

import copy
import json

import pytest

from inhibitron.hw import synth
from inhibitron.hw.ecp5_outreg import absorb_output_registers

CLK, CE, RST = 2, 3, 4


def _ram(do_nets, **params):
    conn = {"CLKA": [CLK], "CLKB": [CLK], "WEA": [9], "WEB": ["0"], "OCEA": ["1"], "OCEB": ["1"],
            "RSTA": ["0"], "RSTB": ["0"]}
    dirs = {}
    for i in range(18):
        conn[f"DOA{i}"] = [100 + i]
        conn[f"DOB{i}"] = [do_nets[i]] if i < len(do_nets) else [200 + i]
        dirs[f"DOA{i}"] = dirs[f"DOB{i}"] = "output"
    p = {"REGMODE_A": "NOREG", "REGMODE_B": "NOREG"}
    p.update(params)
    return {"type": "DP16KD", "parameters": p, "connections": conn, "port_directions": dirs}


def _ff(d, q, *, clk=CLK, ce=None, lsr="0"):
    conn = {"CLK": [clk], "DI": [d], "LSR": [lsr], "Q": [q]}
    params = {"CEMUX": "1 ", "CLKMUX": "CLK", "GSR": "DISABLED", "LSRMUX": "LSR", "REGSET": "RESET"}
    if ce is not None:
        conn["CE"] = [ce]
        params["CEMUX"] = "CE"
    return {"type": "TRELLIS_FF", "parameters": params, "connections": conn,
            "port_directions": {"CLK": "input", "DI": "input", "LSR": "input", "CE": "input",
                                "Q": "output"}}


def _lut(a, z):
    return {"type": "LUT4", "parameters": {"INIT": "1010101010101010"},
            "connections": {"A": [a], "B": ["0"], "C": ["0"], "D": ["0"], "Z": [z]},
            "port_directions": {"A": "input", "B": "input", "C": "input", "D": "input",
                                "Z": "output"}}


def _netlist(cells):
    return {"modules": {"top": {"ports": {}, "cells": cells, "netnames": {}}}}


def _two_bit_ram(**ff_kw):
    """A RAM whose DOB0/DOB1 (nets 50, 51) each feed one flip-flop (Q nets 60, 61)."""
    cells = {"ram": _ram([50, 51]), "ff0": _ff(50, 60, **ff_kw), "ff1": _ff(51, 61, **ff_kw),
             "use0": _lut(60, 70), "use1": _lut(61, 71)}
    return _netlist(cells)


def test_register_is_absorbed_exactly():
    net = _two_bit_ram()
    rep = absorb_output_registers(net)
    cells = net["modules"]["top"]["cells"]
    assert (rep.ports, rep.flip_flops, rep.skipped) == (1, 2, ())
    ram = cells["ram"]
    assert ram["parameters"]["REGMODE_B"] == "OUTREG"
    assert ram["parameters"]["REGMODE_A"] == "NOREG"      # the write port is untouched
    assert ram["connections"]["OCEB"] == ["1"]
    # the RAM now drives the flip-flops' former outputs, and the flip-flops are gone
    assert ram["connections"]["DOB0"] == [60] and ram["connections"]["DOB1"] == [61]
    assert "ff0" not in cells and "ff1" not in cells
    assert cells["use0"]["connections"]["A"] == [60]


def test_clock_enable_becomes_the_output_enable():
    net = _two_bit_ram(ce=CE)
    assert absorb_output_registers(net).ports == 1
    assert net["modules"]["top"]["cells"]["ram"]["connections"]["OCEB"] == [CE]


@pytest.mark.parametrize("case, reason", [
    ("reset", "set/reset"),
    ("clock", "another clock"),
    ("fanout", "loads"),
    ("logic", "LUT4"),
    ("enables", "different clock enables"),
])
def test_inexact_cases_are_left_alone(case, reason):
    net = _two_bit_ram()
    cells = net["modules"]["top"]["cells"]
    if case == "reset":
        cells["ff1"]["connections"]["LSR"] = [RST]
    elif case == "clock":
        cells["ff1"]["connections"]["CLK"] = [8]
    elif case == "fanout":
        cells["extra"] = _lut(51, 72)
    elif case == "logic":
        cells["ff1"] = _lut(51, 61)
    elif case == "enables":
        cells["ff1"] = _ff(51, 61, ce=CE)
    before = copy.deepcopy(net)
    rep = absorb_output_registers(net)
    assert rep.ports == 0 and rep.flip_flops == 0
    assert len(rep.skipped) == 1 and rep.skipped[0][:2] == ("ram", "B")
    assert reason in rep.skipped[0][2]
    assert net == before


def test_bad_netlist_is_named():
    with pytest.raises(ValueError, match="Yosys JSON netlist"):
        absorb_output_registers({"cells": {}})


RAM_V = """
module ramreg(input clk, input we, input [8:0] wa, input [8:0] ra, input [8:0] wd,
              output reg [8:0] q);
  (* no_rw_check *) reg [8:0] mem [0:511];
  reg [8:0] rd;
  reg [8:0] ra_q;
  always @(posedge clk) begin
    if (we) mem[wa] <= wd;
    ra_q <= ra;
    rd <= mem[ra_q];
    q <= rd;
  end
endmodule
"""


@pytest.mark.synth
def test_flow_registers_the_block_ram_and_gains_fmax(tmp_path):
    v = tmp_path / "ramreg.v"
    v.write_text(RAM_V)
    kw = dict(top="ramreg", device="ecp5-25f", freq_mhz=250, progress=False, wrap=False)
    plain = synth.synthesize(v, out_dir=tmp_path / "plain", bram_outreg=False, **kw)
    reg = synth.synthesize(v, out_dir=tmp_path / "outreg", **kw)
    assert plain.bram == reg.bram == 1 and plain.bram_outreg_ports == 0
    assert reg.bram_outreg_ports == 1
    assert reg.ff == plain.ff - 9                      # the 9 read-data flip-flops moved
    netlist = json.loads((tmp_path / "outreg" / "ramreg.ecp5.json").read_text())
    rams = [c for m in netlist["modules"].values() for c in m.get("cells", {}).values()
            if c["type"] == "DP16KD"]
    assert [c["parameters"]["REGMODE_B"] for c in rams] == ["OUTREG"]
    # the unregistered RAM read (~6 ns clock-to-output) was the critical path
    assert plain.critical_path["from_cell"].startswith("mem")
    assert reg.fmax_mhz > plain.fmax_mhz * 1.2
