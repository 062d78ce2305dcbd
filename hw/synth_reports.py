"""Read the tools' reports: Yosys ``stat -json``, nextpnr ``--report`` JSON and nextpnr's log.

Pure functions from parsed JSON or log text to the figures of a
:class:`~inhibitron.hw.synth.SynthResult`; the cell-type tables come from
:mod:`inhibitron.hw.devices`. No tool is run here.
"""

from __future__ import annotations

import re

from .devices import get_family

__all__ = ["parse_yosys_stat", "parse_nextpnr_report", "parse_overuse", "module_stat",
           "premap_multipliers", "yosys_version", "nextpnr_version"]


def module_stat(stat: dict, module: str | None) -> dict:
    """The ``stat -json`` entry of *module*, or of the whole design if *module* is None."""
    mods = stat.get("modules", {})
    if module is None:
        return stat["design"]
    for key in (module, "\\" + module):
        if key in mods:
            return mods[key]
    raise KeyError(f"module {module!r} not in Yosys stat (has {sorted(mods)})")


def parse_yosys_stat(stat: dict, family: str, module: str | None = None) -> dict:
    """Resource counts of *module* (or the whole design) from Yosys ``stat -json``.

    Parameters
    ----------
    stat : dict
        The parsed JSON written by ``tee -o f.json stat -json``.
    family : str
        A family of :data:`inhibitron.hw.devices.FAMILIES` (``"ecp5"`` or ``"ice40"``).
    module : str, optional
        Module name; the design total if omitted.

    Returns
    -------
    dict
        ``lut4``, ``carry``, ``lut4_equiv``, ``ff``, ``dsp``, ``bram`` and
        ``cells`` (all cell types with counts).
    """
    cells = dict(module_stat(stat, module).get("num_cells_by_type", {}))
    fam = get_family(family)

    def count(kind):
        return sum(n for t, n in cells.items() if t in fam.cells[kind])

    out = {k: count(k) for k in ("lut4", "carry", "ff", "dsp", "bram")}
    out["lut4_equiv"] = out["lut4"] + fam.carry_sites * out["carry"]
    out["cells"] = cells
    return out


def premap_multipliers(stat: dict, module: str | None = None) -> int:
    """``$mul``/``$macc`` cells of *module* in a ``stat -json`` taken before technology mapping."""
    cells = module_stat(stat, module).get("num_cells_by_type", {})
    return sum(n for t, n in cells.items() if t in ("$mul", "$macc", "$macc_v2"))


def yosys_version(stat: dict) -> str:
    """Yosys version from the ``creator`` field of ``stat -json``."""
    return stat.get("creator", "").split(" (")[0]


def parse_nextpnr_report(report: dict, family: str) -> dict:
    """Fmax, utilisation and critical path from a nextpnr ``--report`` JSON.

    Returns
    -------
    dict
        ``fmax_mhz`` (slowest clock, or None without clocks), ``fmax_by_clock``,
        ``utilization`` ({cell type: [used, available]} for types in use),
        ``placed_comb``, ``placed_dsp`` and ``critical_path`` (see
        :func:`_summarise_path`) of the slowest clock-to-clock path.
    """
    fam = get_family(family)
    fmax = {name: float(v["achieved"]) for name, v in report.get("fmax", {}).items()}
    util = {k: [int(v["used"]), int(v["available"])]
            for k, v in report.get("utilization", {}).items() if v.get("used")}
    paths = [p for p in report.get("critical_paths", [])
             if p.get("from") != "<async>" and p.get("to") != "<async>"]
    crit = None
    if paths:
        summaries = [_summarise_path(p) for p in paths]
        crit = max(summaries, key=lambda s: s["delay_ns"])
    return {
        "fmax_mhz": min(fmax.values()) if fmax else None,
        "fmax_by_clock": fmax,
        "utilization": util,
        "placed_comb": util.get(fam.placed_comb, [0])[0],
        "placed_dsp": util.get(fam.placed_dsp, [0])[0],
        "critical_path": crit,
    }

def _summarise_path(path: dict) -> dict:
    """Condense one nextpnr critical path: total/logic/routing delay (ns), end points,
    number of logic levels and the HDL source locations along it."""
    segs = path.get("path", [])
    logic = sum(s["delay"] for s in segs if s.get("type") in ("logic", "clk-to-q", "setup"))
    routing = sum(s["delay"] for s in segs if s.get("type") == "routing")
    sources: list[str] = []
    for s in segs:
        for src in s.get("sources", []):
            if src.startswith("/share/"):
                continue  # techmap library files
            if src not in sources:
                sources.append(src)
    cells = []
    for s in segs:
        c = s.get("to", {}).get("cell")
        if s.get("type") == "logic" and c and (not cells or cells[-1] != c):
            cells.append(c)
    return {
        "clock_from": path.get("from"),
        "clock_to": path.get("to"),
        "delay_ns": logic + routing,
        "logic_ns": logic,
        "routing_ns": routing,
        "from_cell": segs[0]["from"]["cell"] if segs else "",
        "to_cell": segs[-1]["to"]["cell"] if segs else "",
        "logic_levels": len(cells),
        "sources": sources[:40],
    }


_UTIL_RE = re.compile(r"^Info:\s+(\S+):\s+(\d+)/\s*(\d+)\s+(\d+)%")


def parse_overuse(log_text: str) -> list[tuple[str, int, int]]:
    """Resources that nextpnr reported as over-used: ``[(cell type, needed, available)]``.

    nextpnr prints a "Device utilisation" table before placement; a line such
    as ``MULT18X18D:      40/     28   142%`` means the design does not fit.
    """
    over = []
    for line in log_text.splitlines():
        m = _UTIL_RE.match(line)
        if m:
            name, used, avail = m.group(1), int(m.group(2)), int(m.group(3))
            if used > avail:
                over.append((name, used, avail))
    return over


_VERSION_RE = re.compile(r"nextpnr-\S+ -- Next Generation Place and Route \(Version ([^)]*)\)")


def nextpnr_version(log_text: str) -> str | None:
    """nextpnr version from its log, or None if the log does not name it."""
    m = _VERSION_RE.search(log_text)
    return m.group(1) if m else None
