"""Toggle counts of a Verilator run joined to a gate netlist: switching activity per net class.

:func:`parse_coverage` reads Verilator's toggle coverage (``coverage.dat``:
toggles per signal bit); :func:`activity` joins it to a
:class:`~inhibitron.sim.gate_netlist.GateNetlist`: toggles and fan-out-weighted
toggles per net class (``ff``, ``lut``, ``ram``, ``dsp``, ``input``), memory
accesses in 18-kbit block-RAM blocks, multiplier activity in 18x18 blocks,
and the cycle count, for the energy model of :mod:`inhibitron.hw.energy`.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from .gate_netlist import GateNetlist

__all__ = ["BRAM_MIN_DEPTH", "activity", "parse_coverage"]

#: A RAM deeper than this many words is taken to be block RAM (ECP5 ``DP16KD``);
#: shallower ones are distributed RAM (``TRELLIS_DPR16X4``, 16 words) and their
#: read data counts as LUT outputs.
BRAM_MIN_DEPTH = 16

_FF_TYPES = re.compile(r"^\$_(S?DFF|DFFE|SDFFE|SDFFCE|DFFSR|DFFSRE|ALDFF|ALDFFE|DLATCH)")


_COV_LINE = re.compile(r"^C '(.*)' (\d+)\s*$")


def parse_coverage(path) -> dict:
    """Toggle counts from a Verilator ``coverage.dat``: ``{(signal, bit): toggles}``.

    Each bit's points (``0->1`` and ``1->0``, or one point per bit in older
    Verilators) are summed; ``signal`` is the name without hierarchy and
    ``bit`` the index (0 for a scalar).
    """
    counts: dict = defaultdict(int)
    for line in Path(path).read_text(errors="replace").splitlines():
        m = _COV_LINE.match(line)
        if not m:
            continue
        fields = dict(kv.split("\x02", 1) for kv in m.group(1).split("\x01")[1:] if "\x02" in kv)
        if not fields.get("page", "").startswith("v_toggle"):
            continue
        comment = fields.get("o", "")
        sig = comment.split(":", 1)[0]
        bm = re.match(r"^(.*?)\[(\d+)\]$", sig)
        name, bit = (bm.group(1), int(bm.group(2))) if bm else (sig, 0)
        counts[(name.lstrip("\\").strip(), bit)] += int(m.group(2))
    return dict(counts)


def activity(netlist: GateNetlist, toggles: dict, *, bram_min_depth: int = BRAM_MIN_DEPTH,
             clock: str = "clk") -> dict:
    """Join toggle counts to the netlist: activity per class, for the energy model.

    Returns a dict with ``cycles``; ``toggles`` and ``fanout_toggles`` per net
    class (``ff``, ``lut``, ``ram``, ``dsp``, ``input``); ``ff_cells``,
    ``lut_cells``; ``bram_block_accesses`` (accesses of block RAM ports,
    each counted once per 18-kbit ``DP16KD`` block the memory spans);
    ``lutram_accesses``; ``mul_active`` (multiplier-cycles with an input
    change, each weighted by the 18x18 blocks it needs) and ``mul_cells``.
    """
    module = json.loads(Path(netlist.netlist_json).read_text())["modules"][netlist.top]
    driver, fanout = {}, defaultdict(int)
    mem_class = {}
    for cname, cell in module["cells"].items():
        t, dirs = cell["type"], cell.get("port_directions", {})
        if t == "$mem_v2":
            par = cell["parameters"]
            wr = int(par["WR_PORTS"], 2)
            depth = int(par["SIZE"], 2)
            cls = "ram" if wr and depth > bram_min_depth else "lut"
            mem_class[cname] = cls
        elif t == "$mul":
            cls = "dsp"
        elif _FF_TYPES.match(t):
            cls = "ff"
        else:
            cls = "lut"
        for port, bits in cell["connections"].items():
            out = dirs.get(port) == "output" or (t == "$mem_v2" and port == "RD_DATA")
            for b in bits:
                if not isinstance(b, int):
                    continue
                if out:
                    driver[b] = cls
                else:
                    fanout[b] += 1
    for name, port in module["ports"].items():
        for b in port["bits"]:
            if name == clock:           # the clock tree: charged per flip-flop and cycle
                driver[b] = None
            elif isinstance(b, int):
                if port["direction"] == "input":
                    driver.setdefault(b, "input")
                else:
                    fanout[b] += 1
    # toggles per net bit (aliases name the same bit: counted once)
    bit_of = {}
    for name, net in module["netnames"].items():
        off = net.get("offset", 0)
        for i, b in enumerate(net["bits"]):
            if isinstance(b, int):
                bit_of[(name.lstrip("\\"), i + off)] = b
    per_bit: dict = {}
    for key, n in toggles.items():
        b = bit_of.get(key)
        if b is not None:
            per_bit[b] = max(per_bit.get(b, 0), n)
    classes = ("ff", "lut", "ram", "dsp", "input")
    tog = dict.fromkeys(classes, 0)
    ftog = dict.fromkeys(classes, 0)
    for b, n in per_bit.items():
        cls = driver.get(b)
        if cls is None:
            continue
        tog[cls] += n
        ftog[cls] += n * fanout.get(b, 0)
    meter = {name: toggles.get((name, 0), 0) for name in netlist.meters}
    cycles = next(meter[m] for m, info in netlist.meters.items() if info["kind"] == "cycles")
    bram = lutram = mul_active = 0
    for m, info in netlist.meters.items():
        if info["kind"] in ("mem_rd", "mem_wr"):
            if mem_class.get(info["cell"]) == "ram":
                blocks = _bram_blocks(info["width"], info["depth"])
                bram += meter[m] * blocks
            else:
                lutram += meter[m]
        elif info["kind"] == "mul":
            mul_active += meter[m] * _dsp_blocks(info["a_width"], info["b_width"])
    cells = [c["type"] for c in module["cells"].values()]
    return {
        "cycles": cycles, "toggles": tog, "fanout_toggles": ftog,
        "ff_cells": sum(len(c["connections"].get("Q", [])) for c in module["cells"].values()
                        if _FF_TYPES.match(c["type"])),
        "lut_cells": sum(t == "$lut" for t in cells),
        "mul_cells": sum(t == "$mul" for t in cells),
        "bram_block_accesses": bram, "lutram_accesses": lutram, "mul_active": mul_active,
        "nets_counted": len(per_bit),
    }


def _bram_blocks(width: int, depth: int) -> int:
    """``DP16KD`` blocks (18 kbit, at most 36 bits wide at depth 512) a ``width x depth`` RAM spans."""
    if depth <= 512:
        return -(-width // 36)
    return -(-(width * depth) // 18432)


def _dsp_blocks(a: int, b: int) -> int:
    """18x18 multipliers (``MULT18X18D``) an ``a x b``-bit product needs."""
    return -(-a // 18) * -(-b // 18)
