"""Move the register after an ECP5 block-RAM read into the block RAM (``REGMODE=OUTREG``).

An ECP5 ``DP16KD`` has an optional output register per port. Without it
(``REGMODE_x = "NOREG"``) the read data leaves the RAM 5-6 ns after the
clock edge (speed grade 6, nextpnr's timing database), which caps any design
that registers it in fabric at about 140 MHz. With it, the data leaves the
RAM's own register shortly after the edge, one cycle later.

Yosys's ``synth_ecp5`` always maps block RAM with ``NOREG``: its
``memory_libmap`` has no notion of an output pipeline register. The cores of
this project therefore register every block-RAM read once more in fabric
(``q_d``/``k_d`` in :mod:`inhibitron.hw.core`, ``ThresholdClip``'s first
stage, ...), which gives the RTL the two-cycle read latency of an
output-registered RAM; :func:`absorb_output_registers` then retimes those
fabric registers into the RAM, on the Yosys JSON netlist, before nextpnr.

A port's registers are absorbed only when the transformation is exactly
equivalent, cycle for cycle, after reset:

* every used ``DOx`` bit drives one ``TRELLIS_FF`` data input and nothing else;
* each such flip-flop is clocked by the RAM port's own clock net, not
  inverted, and has no set/reset (``LSR`` tied to 0);
* all of them share one clock-enable (a net, or none), which becomes the
  RAM's output clock-enable ``OCEx``.

Ports that fail any condition are left as they are and counted as skipped.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

__all__ = ["AbsorbReport", "absorb_output_registers"]

#: Data output bits per DP16KD port.
_DO_BITS = 18


@dataclass(frozen=True)
class AbsorbReport:
    """What :func:`absorb_output_registers` did.

    Attributes
    ----------
    ports : int
        RAM ports whose output register was absorbed (``REGMODE_x`` set to ``OUTREG``).
    flip_flops : int
        Fabric flip-flops removed (one per absorbed data bit).
    skipped : tuple of (cell, port, reason)
        Unregistered RAM read ports that were left alone, with the reason.
    """

    ports: int
    flip_flops: int
    skipped: tuple[tuple[str, str, str], ...]


def _sinks(module: dict) -> dict[int, list[tuple[str, str]]]:
    """Net bit -> [(cell name or ``"<port>"``, input port name)] for one netlist module."""
    sinks: dict[int, list[tuple[str, str]]] = collections.defaultdict(list)
    for name, cell in module.get("cells", {}).items():
        dirs = cell.get("port_directions", {})
        for port, bits in cell["connections"].items():
            if dirs.get(port) == "output":
                continue
            for b in bits:
                if isinstance(b, int):
                    sinks[b].append((name, port))
    for port, pd in module.get("ports", {}).items():
        if pd["direction"] != "input":
            for b in pd["bits"]:
                if isinstance(b, int):
                    sinks[b].append(("<port>", port))
    return sinks


def _absorb_port(cells: dict, sinks: dict, ram: str, x: str) -> tuple[int, str | None]:
    """Try to absorb port ``x`` ("A"/"B") of RAM cell *ram*; return (flip-flops moved, reason if not)."""
    cell = cells[ram]
    conn = cell["connections"]
    clk = conn.get(f"CLK{x}")
    if cell["parameters"].get(f"CLK{x}MUX", f"CLK{x}") != f"CLK{x}":
        return 0, "inverted RAM clock"
    ffs = []
    for i in range(_DO_BITS):
        bits = conn.get(f"DO{x}{i}")
        if not bits or not isinstance(bits[0], int):
            continue
        users = sinks.get(bits[0], [])
        if not users:
            continue
        if len(users) != 1:
            return 0, f"DO{x}{i} has {len(users)} loads"
        user, pin = users[0]
        if user == "<port>" or cells[user]["type"] != "TRELLIS_FF" or pin != "DI":
            return 0, f"DO{x}{i} drives {pin} of a {'module port' if user == '<port>' else cells[user]['type']}"
        ff = cells[user]
        if ff["connections"].get("CLK") != clk or ff["parameters"].get("CLKMUX", "CLK").strip() != "CLK":
            return 0, f"DO{x}{i} is registered on another clock"
        if ff["connections"].get("LSR", ["0"]) != ["0"]:
            return 0, f"DO{x}{i} is registered with a set/reset"
        ffs.append((i, user))
    if not ffs:
        return 0, "read data unused"
    enables = set()
    for _, user in ffs:
        ff = cells[user]
        mux = ff["parameters"].get("CEMUX", "1").strip()
        if mux == "1":
            enables.add(("1",))
        elif mux == "CE":
            enables.add(tuple(ff["connections"]["CE"]))
        else:
            return 0, f"clock-enable mode {mux!r}"
    if len(enables) != 1:
        return 0, "registers with different clock enables"
    (enable,) = enables
    cell["parameters"][f"REGMODE_{x}"] = "OUTREG"
    conn[f"OCE{x}"] = list(enable)
    for i, user in ffs:
        conn[f"DO{x}{i}"] = list(cells[user]["connections"]["Q"])
        del cells[user]
    return len(ffs), None


def check_netlist(netlist) -> None:
    """Raise ``ValueError`` unless ``netlist`` is a Yosys JSON netlist (``{"modules": {...}}``)."""
    if not isinstance(netlist, dict) or not isinstance(netlist.get("modules"), dict):
        raise ValueError("netlist must be a Yosys JSON netlist with a 'modules' object")


def absorb_output_registers(netlist: dict) -> AbsorbReport:
    """Absorb fabric read registers into ``DP16KD`` output registers, in place.

    Parameters
    ----------
    netlist : dict
        A Yosys JSON netlist after ``synth_ecp5`` (``{"modules": {...}}``), modified in place.

    Returns
    -------
    AbsorbReport
    """
    check_netlist(netlist)
    ports = moved = 0
    skipped = []
    for module in netlist["modules"].values():
        cells = module.get("cells", {})
        rams = sorted(n for n, c in cells.items() if c.get("type") == "DP16KD")
        if not rams:
            continue
        sinks = _sinks(module)
        for ram in rams:
            for x in "AB":
                if cells[ram]["parameters"].get(f"REGMODE_{x}", "NOREG") != "NOREG":
                    continue
                if cells[ram]["connections"].get(f"WE{x}", ["0"]) != ["0"] and not any(
                        isinstance(b[0], int) and sinks.get(b[0])
                        for p, b in cells[ram]["connections"].items() if p.startswith(f"DO{x}")):
                    continue  # a write-only port
                n, why = _absorb_port(cells, sinks, ram, x)
                if why is None:
                    ports += 1
                    moved += n
                elif why != "read data unused":
                    skipped.append((ram, x, why))
    return AbsorbReport(ports=ports, flip_flops=moved, skipped=tuple(skipped))
