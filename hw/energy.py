"""Energy per head from switching activity: a coefficient model of an FPGA's dynamic energy.

The second energy model of the efficiency study, beside the operation count of
:mod:`inhibitron.hw.opcount`. Its input is the measured switching activity of
a core's LUT4 netlist while it computes heads (:func:`inhibitron.sim.toggles.measure`,
run for both cores by :mod:`inhibitron.sim.energy_run`,
per head, steady state); its output is picojoules per head::

    E = e_lut  * (LUT output toggles)
      + e_ff   * (flip-flop output toggles)
      + e_clk  * (flip-flops x cycles)                     clock tree and FF clock pins
      + e_wire * sum over nets of (toggles x fan-out)      routed interconnect
      + e_bram * (block-RAM port accesses x 18-kbit blocks spanned)
      + e_lutram * (distributed-RAM port accesses)
      + e_dsp  * (18x18 multiplier-cycles with an input change)

**The coefficients are assumptions, not measurements** (no ECP5 power
figures per resource were available offline; Lattice's Power Calculator,
TN1266, computes from toggle rates but its per-resource tables are not
published). They are set for a 40 nm FPGA at 1.1 V from the rule
``E = C V^2 / 2`` per transition with the capacitances stated in
:class:`EnergyCoefficients`, and chosen so that interconnect dominates, as the
published FPGA power breakdowns find (Shang, Kaviani, Bathala, FPGA 2002:
Virtex-II dynamic power mostly interconnect, then logic and clock; Li, Lin,
He, Chen, Cong, IEEE TCAD 24(11), 2005: interconnect power dominant). Because
they are assumed, every report gives :func:`sensitivity`: the
baseline/inhibitor ratio with each coefficient halved and doubled.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

__all__ = ["EnergyCoefficients", "DEFAULT_COEFFICIENTS", "energy_pj", "sensitivity",
           "COEFFICIENT_NOTES"]


@dataclass(frozen=True)
class EnergyCoefficients:
    """Energy per event, picojoules (see :data:`COEFFICIENT_NOTES` for each assumption)."""

    lut_toggle_pj: float = 0.02          # LUT4 internal nodes per output transition (~30 fF)
    ff_toggle_pj: float = 0.01           # flip-flop data transition (~15 fF)
    clock_pj_per_ff_cycle: float = 0.005  # clock pin + share of the clock tree per FF per cycle
    wire_pj_per_fanout: float = 0.05     # one routed connection (~80 fF of wire + switches)
    bram_access_pj: float = 5.0          # one port access of an 18-kbit DP16KD block
    lutram_access_pj: float = 0.2        # one port access of a distributed-RAM memory
    dsp_op_pj: float = 2.0               # one 18x18 MULT18X18D cycle with new inputs


DEFAULT_COEFFICIENTS = EnergyCoefficients()

#: Where each coefficient comes from (all assumptions; see the module docstring).
COEFFICIENT_NOTES = {
    "lut_toggle_pj": "assumed: C ~ 30 fF of LUT-internal nodes per output transition, CV^2/2 at 1.1 V",
    "ff_toggle_pj": "assumed: C ~ 15 fF per flip-flop output transition",
    "clock_pj_per_ff_cycle": "assumed: ~8 fF of clock pin and local clock tree per FF, every cycle",
    "wire_pj_per_fanout": "assumed: ~80 fF per routed connection (interconnect dominates FPGA "
                          "dynamic power: Shang et al., FPGA 2002; Li et al., TCAD 2005)",
    "bram_access_pj": "assumed: 5 pJ per 18-kbit block-RAM port access (bit lines of a 512x36 array)",
    "lutram_access_pj": "assumed: 0.2 pJ per distributed-RAM (16x4 LUT RAM) port access",
    "dsp_op_pj": "assumed: 2 pJ per 18x18 hard multiply with new operands (Horowitz, ISSCC 2014, "
                 "gives 3.1 pJ for a 32-bit multiply in 45 nm ASIC; a hard DSP is of that order)",
}


def energy_pj(act: dict, coeffs: EnergyCoefficients = DEFAULT_COEFFICIENTS) -> dict:
    """Energy of an activity record (:func:`inhibitron.sim.toggles.activity`), by component, pJ.

    ``act`` holds ``toggles`` and ``fanout_toggles`` per net class, ``ff_cells``,
    ``cycles``, ``bram_block_accesses``, ``lutram_accesses`` and ``mul_active``.
    Returns ``{"lut", "ff", "clock", "wire", "bram", "lutram", "dsp", "total"}``.

    >>> act = {"toggles": {"lut": 100, "ff": 10}, "fanout_toggles": {"lut": 300, "ff": 20},
    ...        "ff_cells": 4, "cycles": 10, "bram_block_accesses": 1, "lutram_accesses": 0,
    ...        "mul_active": 0}
    >>> round(energy_pj(act)["total"], 3)
    23.3
    """
    c = coeffs
    t, f = act["toggles"], act["fanout_toggles"]
    out = {
        "lut": c.lut_toggle_pj * t.get("lut", 0),
        "ff": c.ff_toggle_pj * t.get("ff", 0),
        "clock": c.clock_pj_per_ff_cycle * act["ff_cells"] * act["cycles"],
        "wire": c.wire_pj_per_fanout * sum(f.values()),
        "bram": c.bram_access_pj * act["bram_block_accesses"],
        "lutram": c.lutram_access_pj * act["lutram_accesses"],
        "dsp": c.dsp_op_pj * act["mul_active"],
    }
    out["total"] = sum(out.values())
    return out


def sensitivity(inhibitor: dict, baseline: dict,
                coeffs: EnergyCoefficients = DEFAULT_COEFFICIENTS) -> list[dict]:
    """Baseline/inhibitor energy ratio with each coefficient at 0.5x, 1x and 2x (others fixed)."""
    def ratio(c):
        return energy_pj(baseline, c)["total"] / energy_pj(inhibitor, c)["total"]

    rows = []
    for fld in fields(coeffs):
        v = getattr(coeffs, fld.name)
        rows.append({"coefficient": fld.name, "value_pj": v,
                     "ratio_half": ratio(replace(coeffs, **{fld.name: v / 2})),
                     "ratio": ratio(coeffs),
                     "ratio_double": ratio(replace(coeffs, **{fld.name: v * 2}))})
    return rows
