"""Markdown rendering of the bit-accuracy report (``report.md``).

:func:`render_markdown` turns the numbers computed by
:mod:`inhibitron.quant.report_tables` (and the cosimulation summary) into
the sections listed in :data:`SECTIONS`, linking the PNGs of
:mod:`inhibitron.quant.report_plots`. Pure string formatting.
"""

from __future__ import annotations

import json
import math

__all__ = ["SECTIONS", "fmt_db", "render_markdown"]

#: Section titles of report.md, in order (tests check every one is present).
SECTIONS = (
    "Summary",
    "Core error per layer and head",
    "Attention block error per layer",
    "Saturation and overflow per tensor",
    "Value ranges vs formats",
    "Bit-width sweep",
    "RTL vs golden (cosimulation)",
    "Error histograms",
)



def fmt_db(x: float) -> str:
    """A dB value with one decimal, ``exact`` for +inf."""
    return "exact" if x == math.inf else f"{x:.1f}"


def render_markdown(record, results, sweep, cos, title, ckpt) -> str:
    """The text of ``report.md``: ``record`` (``report.json``), per-layer ``results``, ``sweep``, ``cos``."""
    L = []
    L.append(f"# {title or 'Bit-accuracy report'}\n")
    L.append(f"## {SECTIONS[0]}\n")
    L.append(f"- checkpoint: `{record['checkpoint']}`")
    if record["inputs"]:
        L.append(f"- inputs: {record['inputs']}")
    L.append(f"- {record['sequences']} sequences, {record['tokens']} valid tokens, "
             f"{len(results)} layers x {len(results[0]['heads'])} heads")
    fm = {json.dumps(r["formats"], sort_keys=True) for r in results}
    L.append(f"- formats: {', '.join(sorted(fm))}")
    worst = min(results, key=lambda r: r["sqnr_db"])
    L.append(f"- core SQNR per layer (dB): {', '.join(fmt_db(r['sqnr_db']) for r in results)}; "
             f"worst layer {worst['layer']}")
    total_sat = sum(s["count"] for r in results for s in r["saturation"].values())
    total_ovf = sum(v for r in results for v in r["overflow"].values())
    L.append(f"- saturated values: {total_sat}; internal overflows: {total_ovf}")
    if cos is not None:
        L.append(f"- RTL vs golden: **{cos['mismatches']} mismatches** in {cos['elements_compared']} "
                 f"compared elements")
    else:
        L.append("- RTL vs golden: not measured (pass the JSON of `inhibitron sim --json`)")
    L.append("")

    L.append(f"## {SECTIONS[1]}\n")
    L.append("Integer core (float Q/K/V quantized, golden model, dequantized) against the float64 "
             "reference of Eq. 1-3 with the float gamma/eta/delta, over valid query rows. "
             "LSB = the head's output LSB `|s_h|`.\n")
    L.append("| layer | head | max abs err | mean abs err | max err (LSB) | mean err (LSB) | max abs ref | SQNR (dB) |")
    L.append("|---|---|---|---|---|---|---|---|")
    for r in results:
        for h in r["heads"]:
            L.append(f"| {r['layer']} | {h['head']} | {h['max_abs']:.3g} | {h['mean_abs']:.3g} | "
                     f"{h['max_abs_lsb']:.2f} | {h['mean_abs_lsb']:.3f} | {h['ref_max_abs']:.3g} | "
                     f"{fmt_db(h['sqnr_db'])} |")
    L.append("")

    L.append(f"## {SECTIONS[2]}\n")
    if all(r["block"] is None for r in results):
        L.append("Not measured: the inputs carry no hidden states / float block outputs.\n")
    else:
        L.append("Integer Q/K/V projections + core + integer O projection against the float block "
                 "(both before the residual and LayerNorm).\n")
        L.append("| layer | max abs err | mean abs err | max abs ref | SQNR (dB) |")
        L.append("|---|---|---|---|---|")
        for r in results:
            b = r["block"]
            if b is not None:
                L.append(f"| {r['layer']} | {b['max_abs']:.3g} | {b['mean_abs']:.3g} | {b['ref_max_abs']:.3g} | "
                         f"{fmt_db(b['sqnr_db'])} |")
        L.append("")

    L.append(f"## {SECTIONS[3]}\n")
    L.append("Values clipped by their format (valid tokens only), and internal values beyond the "
             "widths derived in `quant.formats` (must be 0: the widths are exact bounds).\n")
    L.append("| layer | tensor | format | clipped | of | per head |")
    L.append("|---|---|---|---|---|---|")
    for r in results:
        for name, s in r["saturation"].items():
            ph = "" if s["per_head"] is None else ", ".join(str(x) for x in s["per_head"])
            L.append(f"| {r['layer']} | {name} | {s['format']} | {s['count']} | {s['of']} | {ph} |")
        for name, c in r["overflow"].items():
            L.append(f"| {r['layer']} | {name} (overflow) | derived width | {c} | | |")
    L.append("")

    L.append(f"## {SECTIONS[4]}\n")
    L.append("Distribution of `log2 |value / LSB|` of the non-zero values of each tensor against its "
             "format (grey): values left of 0 round to zero, right of the grey bar saturate.\n")
    L.append("![value ranges](ranges.png)\n")

    L.append(f"## {SECTIONS[5]}\n")
    if sweep["sqnr_db"]:
        L.append("SQNR of the integer core per layer with `qk_bits = v_bits = out_bits` = the width, "
                 "re-calibrated (min/max) and re-folded at each width.\n")
        L.append("![bit-width sweep](sweep.png)\n")
        L.append("| layer | " + " | ".join(f"{b} bits" for b in sweep["bits"]) + " |")
        L.append("|---|" + "---|" * len(sweep["bits"]))
        for layer, vals in sweep["sqnr_db"].items():
            L.append(f"| {layer} | " + " | ".join(fmt_db(v) for v in vals) + " |")
    else:
        L.append("No sweep requested.")
    L.append("")

    L.append(f"## {SECTIONS[6]}\n")
    if cos is None:
        L.append("Not measured. Run `inhibitron sim --checkpoint ... --json > sim.json` and pass "
                 "`--cosim sim.json`.\n")
    else:
        L.append(f"**{cos['mismatches']} mismatches** in {cos['elements_compared']} output elements "
                 f"compared bit for bit.\n")
        L.append("| run | simulator | elements compared | mismatches | passed |")
        L.append("|---|---|---|---|---|")
        for r in cos["runs"]:
            L.append(f"| {r['name']} | {r['simulator'] or ''} | {r['elements_compared']} | {r['mismatches']} | "
                     f"{'yes' if r['passed'] else 'NO'} |")
        if cos.get("incomplete_runs"):
            L.append(f"\nIncomplete runs (no result): {', '.join(cos['incomplete_runs'])}")
        L.append("")

    L.append(f"## {SECTIONS[7]}\n")
    for r in results:
        L.append(f"![layer {r['layer']} errors](errors_layer_{r['layer']:02d}.png)\n")
    return "\n".join(L)
