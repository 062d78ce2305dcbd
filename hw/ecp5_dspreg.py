"""Move the flip-flops around an ECP5 hard multiplier into the multiplier (``MULT18X18D`` registers).

An ECP5 ``MULT18X18D`` has optional registers on its operands (``REG_INPUTA_CLK``,
``REG_INPUTB_CLK``) and on its product (``REG_OUTPUT_CLK``). Yosys's
``synth_ecp5`` maps every ``$mul`` to a ``MULT18X18D`` with all of them off
(``"NONE"``) and leaves the registers of the RTL in fabric, so a registered
multiply ``p <= a_r * b_r`` becomes fabric flip-flop -> routing -> combinational
multiplier (about 4.5 ns at speed grade 6) -> routing -> fabric flip-flop, one
of the longest paths of a design. :func:`absorb_dsp_registers` retimes those
flip-flops into the multiplier, on the Yosys JSON netlist, before nextpnr:

* **operand registers** -- when every used ``A``/``B`` bit is driven by a
  ``TRELLIS_FF`` (or is constant 0), the multiplier's input registers take the
  flip-flops' data inputs, with their clock enable and synchronous reset
  (``REG_INPUTx_CE``/``REG_INPUTx_RST`` select one of the block's ``CE0-3``/``RST0-3``).
  A flip-flop that also drives other logic stays for those loads: the
  multiplier's register then holds an identical copy. Both operands or none:
  nextpnr times a multiplier with one registered operand as if neither were.
* **product register** -- when every used ``P`` bit drives the data input of
  one ``TRELLIS_FF`` and nothing else, and those flip-flops have neither clock
  enable nor reset, the multiplier's output register replaces them.

Every move is exactly equivalent, cycle for cycle, from configuration on
(not only after reset). The semantics are those of Lattice's simulation model
of ``MULT18X18D``: each register loads on the rising edge of its clock when its
clock enable is high; a synchronous reset clears it and wins over the clock
enable; all registers power up cleared. The operand's sign flag
(``SIGNEDA``/``SIGNEDB``) travels through the operand register with it, which is
why a sign flag must be constant here. The conditions on each flip-flop follow:
same clock as the others, not inverted; power-up and reset value 0
(``REGSET = "RESET"``); a reset, if any, synchronous (``SRMODE =
"LSR_OVER_CE"``) and not inverted; a clock enable, if any, not inverted; one
clock enable and one reset per operand.

Hardware notes (what nextpnr-ecp5 does with these parameters, checked in its
sources): its packer picks the multiplier's timing model from
``REG_INPUTA_CLK``/``REG_INPUTB_CLK``/``REG_OUTPUT_CLK`` (``MULT18X18D_REGS_NONE``,
``_INPUT``, ``_OUTPUT``, ``_ALL``; one registered operand counts as none), with
all register timing relative to ``CLK0`` -- so the clock goes to ``CLK0``. With
both operand and product registers (``_ALL``) the multiply lies between two of
the block's own registers and nextpnr does not time it: its Fmax then leaves the
multiplier out, which stands on the sysDSP's own rating.
The ECP5 bitstream database (prjtrellis) has bits for ``REG_INPUTx_CE`` and
``REG_INPUTx_RST`` of every multiplier, but none for ``REG_OUTPUT_CE`` and
``REG_OUTPUT_RST`` only on ``MULT18_0``/``MULT18_4``: the product register's
enable and reset selection is not programmable from nextpnr. The product
register is therefore absorbed only from flip-flops without enable or reset,
and every multiplier this pass touches has ``CE0`` tied to 1 and ``RST0`` to 0
(the product register's nominal selection, ``CE0``/``RST0``), with operand
enables and resets on ``CE1-3``/``RST1-3``; a DSP block's four ``CE``/``RST``
lines are shared by its multipliers, and nextpnr keeps a net on the line it is
first seen on, so line 0 stays constant in every block that holds a touched
multiplier.

One condition is about timing, not equivalence: an operand register fed straight
by a block-RAM read without the RAM's output register (``REGMODE = "NOREG"``,
5-6 ns from clock to data) stays in fabric beside the RAM, since in the
multiplier it would add the routing to the multiplier to that path (measured:
137 -> 126 MHz). Run :mod:`inhibitron.hw.ecp5_outreg` first: the register then
moves into the RAM, and the multiplier absorbs its product register only
(``MULT18X18D_REGS_OUTPUT``: the operands' setup time includes the multiply).

Multipliers that fail a condition keep those registers in fabric and are
counted as skipped, with the reason.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from .ecp5_outreg import check_netlist

__all__ = ["DspRegReport", "absorb_dsp_registers"]

_OPERAND_BITS = 18
_PRODUCT_BITS = 36
_REG_CLOCKS = ("REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_INPUTC_CLK", "REG_PIPELINE_CLK",
               "REG_OUTPUT_CLK")
_CONTROLS = tuple(f"{k}{i}" for k in ("CLK", "CE", "RST") for i in range(4))


@dataclass(frozen=True)
class DspRegReport:
    """What :func:`absorb_dsp_registers` did.

    Attributes
    ----------
    inputs : int
        Multipliers whose operand registers were absorbed (``REG_INPUTA_CLK`` and
        ``REG_INPUTB_CLK`` set).
    outputs : int
        Multipliers whose product register was absorbed (``REG_OUTPUT_CLK`` set).
    flip_flops : int
        Fabric flip-flops removed.
    copies : int
        Operand flip-flops that stay in fabric for other loads while a multiplier
        holds a copy.
    skipped : tuple of (cell, side, reason)
        Multipliers (``side`` ``"inputs"`` or ``"output"``) left as they were, with the reason.
    """

    inputs: int
    outputs: int
    flip_flops: int
    copies: int
    skipped: tuple[tuple[str, str, str], ...]


@dataclass(frozen=True)
class _Control:
    """What a flip-flop's register needs: clock net, enable and reset (net or constant), GSR."""

    clk: int
    ce: int | str     # a net, or "1"
    rst: int | str    # a net, or "0"
    gsr: str


class _Netlist:
    """One netlist module with its net users and drivers, kept up to date under edits."""

    def __init__(self, module: dict):
        self.cells = module.setdefault("cells", {})
        self.users: dict[int, list[tuple[str, str]]] = collections.defaultdict(list)
        self.drivers: dict[int, tuple[str, str]] = {}
        for name, cell in self.cells.items():
            for port, bits in cell["connections"].items():
                self._attach(name, cell, port, bits)
        for port, pd in module.get("ports", {}).items():
            for b in pd["bits"]:
                if isinstance(b, int):
                    if pd["direction"] == "input":
                        self.drivers[b] = ("<port>", port)
                    else:
                        self.users[b].append(("<port>", port))

    def _attach(self, name, cell, port, bits):
        out = cell.get("port_directions", {}).get(port) == "output"
        for b in bits:
            if isinstance(b, int):
                if out:
                    self.drivers[b] = (name, port)
                else:
                    self.users[b].append((name, port))

    def _detach(self, name, cell, port):
        out = cell.get("port_directions", {}).get(port) == "output"
        for b in cell["connections"].get(port, []):
            if isinstance(b, int):
                if out:
                    if self.drivers.get(b) == (name, port):
                        del self.drivers[b]
                else:
                    self.users[b].remove((name, port))

    def connect(self, name: str, port: str, bits: list, direction: str = "input") -> None:
        """(Re)connect input or output *port* of cell *name* to *bits*."""
        cell = self.cells[name]
        if port in cell["connections"]:
            self._detach(name, cell, port)
        if "port_directions" in cell:
            cell["port_directions"].setdefault(port, direction)
        cell["connections"][port] = list(bits)
        self._attach(name, cell, port, bits)

    def remove(self, name: str) -> None:
        cell = self.cells[name]
        for port in cell["connections"]:
            self._detach(name, cell, port)
        del self.cells[name]


def _param(cell: dict, name: str, default: str) -> str:
    v = cell.get("parameters", {}).get(name, default)
    return v.strip() if isinstance(v, str) else str(v)


def _ff_control(cell: dict) -> _Control | str:
    """The register a ``TRELLIS_FF`` implements, or why a multiplier register cannot copy it."""
    conn = cell["connections"]
    if _param(cell, "CLKMUX", "CLK") != "CLK":
        return "inverted clock"
    clk = conn.get("CLK", ["x"])[0]
    if not isinstance(clk, int):
        return "constant clock"
    if _param(cell, "REGSET", "RESET") != "RESET":
        return "power-up/reset value 1"
    if _param(cell, "LSRMODE", "LSR") != "LSR":
        return "preload mode"
    gsr = _param(cell, "GSR", "ENABLED")
    if gsr not in ("ENABLED", "DISABLED"):
        return f"GSR mode {gsr!r}"
    lsr = conn.get("LSR", ["0"])[0]
    inv = _param(cell, "LSRMUX", "LSR") == "INV"
    if isinstance(lsr, int):
        if inv:
            return "inverted reset"
        if _param(cell, "SRMODE", "LSR_OVER_CE") != "LSR_OVER_CE":
            return "asynchronous reset"
        rst: int | str = lsr
    elif (lsr == "1") != inv:
        return "held in reset"
    else:
        rst = "0"
    cemux = _param(cell, "CEMUX", "1")
    ce_net = conn.get("CE", ["1"])[0]
    if cemux == "1":
        ce: int | str = "1"
    elif cemux == "0":
        return "never enabled"
    elif isinstance(ce_net, int):
        if cemux == "INV":
            return "inverted clock enable"
        ce = ce_net
    elif (ce_net == "1") != (cemux == "INV"):
        ce = "1"
    else:
        return "never enabled"
    return _Control(clk=clk, ce=ce, rst=rst, gsr=gsr)


def _plan_operands(net: _Netlist, name: str):
    """([(pin, flip-flop)], {"A": control, "B": control}) for the operand registers, or a reason."""
    cell = net.cells[name]
    conn = cell["connections"]
    moves: list[tuple[str, str]] = []
    controls: dict[str, _Control] = {}
    for x in "AB":
        if conn.get(f"SIGNED{x}", ["x"]) not in (["0"], ["1"]):
            return None, f"SIGNED{x} is not constant"
        found = set()
        for i in range(_OPERAND_BITS):
            pin = f"{x}{i}"
            bit = conn.get(pin, ["0"])[0]
            if not isinstance(bit, int):
                if bit != "0":
                    return None, f"{pin} is constant {bit!r}"
                continue
            drv = net.drivers.get(bit)
            if drv is None:
                return None, f"{pin} is undriven"
            src, port = drv
            if src == "<port>":
                return None, f"{pin} comes from module port {port}"
            kind = net.cells[src]["type"]
            if kind != "TRELLIS_FF":
                return None, f"{pin} is driven by a {kind}"
            ctl = _ff_control(net.cells[src])
            if isinstance(ctl, str):
                return None, f"{pin} is registered with {ctl}"
            d = net.cells[src]["connections"]["DI"][0]
            ram, port = net.drivers.get(d, ("<port>", "")) if isinstance(d, int) else ("<port>", "")
            if ram != "<port>" and net.cells[ram]["type"] == "DP16KD" and \
                    _param(net.cells[ram], f"REGMODE_{port[2:3]}", "NOREG") == "NOREG":
                return None, f"{pin} is registered straight from an unregistered block-RAM read"
            found.add(ctl)
            moves.append((pin, src))
        if not found:
            return None, f"operand {x} is constant"
        if len(found) != 1:
            return None, f"operand {x} registers differ in clock, enable or reset"
        (controls[x],) = found
    if controls["A"].clk != controls["B"].clk:
        return None, "operands registered on different clocks"
    if controls["A"].gsr != controls["B"].gsr:
        return None, "operand registers differ in GSR"
    return moves, controls


def _plan_product(net: _Netlist, name: str):
    """([(pin, flip-flop)], control) for the product register, or (None, reason)."""
    conn = net.cells[name]["connections"]
    moves: list[tuple[str, str]] = []
    found = set()
    for i in range(_PRODUCT_BITS):
        pin = f"P{i}"
        bit = conn.get(pin, ["x"])[0]
        if not isinstance(bit, int):
            continue
        users = net.users.get(bit, [])
        if not users:
            continue
        if len(users) != 1:
            return None, f"{pin} has {len(users)} loads"
        user, port = users[0]
        if user == "<port>":
            return None, f"{pin} drives module port {port}"
        kind = net.cells[user]["type"]
        if kind != "TRELLIS_FF" or port != "DI":
            return None, f"{pin} drives {port} of a {kind}"
        ctl = _ff_control(net.cells[user])
        if isinstance(ctl, str):
            return None, f"{pin} is registered with {ctl}"
        if ctl.ce != "1" or ctl.rst != "0":
            return None, f"{pin} is registered with a clock enable or reset"
        found.add(ctl)
        moves.append((pin, user))
    if not moves:
        return None, "product unused"
    if len(found) != 1:
        return None, "product registers differ in clock or GSR"
    (ctl,) = found
    return moves, ctl


def _absorb(net: _Netlist, name: str, operands, product) -> tuple[int, list[str]]:
    """Apply the plans to multiplier *name*; return (flip-flops removed, operand flip-flops used)."""
    params = net.cells[name].setdefault("parameters", {})
    clk = operands[1]["A"].clk if operands else product[1].clk
    net.connect(name, "CLK0", [clk])
    ce_lines: dict = {}
    rst_lines: dict = {}

    def line(lines, kind, sig):
        if sig not in lines:
            lines[sig] = f"{kind}{len(lines)}"
            net.connect(name, lines[sig], [sig])
        return lines[sig]

    line(ce_lines, "CE", "1")          # line 0: the product register's enable and reset
    line(rst_lines, "RST", "0")
    removed = 0
    sources: list[str] = []
    if operands:
        moves, controls = operands
        for x, ctl in controls.items():
            params[f"REG_INPUT{x}_CLK"] = "CLK0"
            params[f"REG_INPUT{x}_CE"] = line(ce_lines, "CE", ctl.ce)
            params[f"REG_INPUT{x}_RST"] = line(rst_lines, "RST", ctl.rst)
        params["GSR"] = controls["A"].gsr
        for pin, ff in moves:
            net.connect(name, pin, net.cells[ff]["connections"]["DI"])
        sources = list(dict.fromkeys(ff for _, ff in moves))
        for ff in sources:
            if not net.users.get(net.cells[ff]["connections"]["Q"][0]):
                net.remove(ff)
                removed += 1
    if product:
        moves, ctl = product
        params["REG_OUTPUT_CLK"] = "CLK0"
        params["REG_OUTPUT_CE"] = "CE0"
        params["REG_OUTPUT_RST"] = "RST0"
        params["GSR"] = ctl.gsr
        for pin, ff in moves:
            q = net.cells[ff]["connections"]["Q"]
            net.remove(ff)
            net.connect(name, pin, q, "output")
            removed += 1
    return removed, sources


def absorb_dsp_registers(netlist: dict) -> DspRegReport:
    """Absorb the fabric registers around each ``MULT18X18D`` into its own registers, in place.

    Parameters
    ----------
    netlist : dict
        A Yosys JSON netlist after ``synth_ecp5`` (``{"modules": {...}}``), modified in place.

    Returns
    -------
    DspRegReport

    Raises
    ------
    ValueError
        If *netlist* is not a Yosys JSON netlist.
    """
    check_netlist(netlist)
    inputs = outputs = removed = copies = 0
    skipped = []
    for module in netlist["modules"].values():
        mults = sorted(n for n, c in module.get("cells", {}).items() if c.get("type") == "MULT18X18D")
        if not mults:
            continue
        net = _Netlist(module)
        sources: set[str] = set()
        for name in mults:
            cell = net.cells[name]
            if any(_param(cell, p, "NONE") != "NONE" for p in _REG_CLOCKS) or any(
                    isinstance(b, int) for p in _CONTROLS for b in cell["connections"].get(p, [])):
                skipped.append((name, "inputs", "already registered"))
                continue
            op_moves, op_ctl = _plan_operands(net, name)
            if op_moves is None:
                skipped.append((name, "inputs", op_ctl))
            p_moves, p_ctl = _plan_product(net, name)
            if p_moves is not None and op_moves is not None and (
                    op_ctl["A"].clk != p_ctl.clk or op_ctl["A"].gsr != p_ctl.gsr):
                p_moves, p_ctl = None, "product registered on another clock or GSR than the operands"
            if p_moves is None:
                skipped.append((name, "output", p_ctl))
            if op_moves is None and p_moves is None:
                continue
            r, used = _absorb(net, name,
                              (op_moves, op_ctl) if op_moves is not None else None,
                              (p_moves, p_ctl) if p_moves is not None else None)
            removed += r
            sources.update(used)
            inputs += op_moves is not None
            outputs += p_moves is not None
        copies += sum(ff in net.cells for ff in sources)
    return DspRegReport(inputs=inputs, outputs=outputs, flip_flops=removed, copies=copies,
                        skipped=tuple(skipped))
