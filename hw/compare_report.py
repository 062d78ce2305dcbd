"""The efficiency study's report: Markdown tables and PNG plots from the rows of the sweep.

:func:`write_report` turns the rows of :func:`inhibitron.hw.compare.run_study`
(and optionally :func:`~inhibitron.hw.compare.run_pes`) into
``docs/efficiency.md`` with its plots in ``docs/img/`` and the raw rows as
``docs/efficiency.json``. It runs no tool; cycle and energy figures come with
the rows, the operation tables from :mod:`inhibitron.hw.opcount`. The plots
are :mod:`inhibitron.hw.compare_plots`, the switching-activity energy section
:mod:`inhibitron.hw.energy_report` (its names are re-exported here).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .compare import KINDS, StudyPoint, _predicted_dsp
from .compare_plots import write_plots
from .devices import get_device
from .energy_report import ENERGY_BEGIN, ENERGY_COMMAND, ENERGY_END, energy_section, write_energy_section
from .opcount import baseline_ops, inhibitor_ops, summarize

__all__ = ["write_report", "load_rows", "pes_path", "ROW_KEYS", "TIMING_TARGETS_MHZ", "L1PE_LUT4_TARGET",
           # re-exported from compare_plots and energy_report
           "write_plots", "ENERGY_BEGIN", "ENERGY_END", "ENERGY_COMMAND", "energy_section",
           "write_energy_section"]


def _fmt(v, nd=0):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}"


def _pair(rows, d, s):
    get = {r["kind"]: r for r in rows if r["d"] == d and r["size"] == s}
    return get.get("inhibitor"), get.get("baseline")


def _ratio(a, b, nd=2):
    if a is None or b is None or not b:
        return "–"
    return f"{a / b:.{nd}f}"


def write_report(rows: list[dict], path: Path | str = "docs/efficiency.md", *,
                 command: str = "inhibitron compare", device: str = "ecp5-85f",
                 freq_mhz: float = 150.0, pe_rows: list[dict] | None = None,
                 extra_sections: str = "", note: str = "") -> Path:
    """Write the Markdown report (tables + PNG plots in ``<dir>/img``) and the raw rows as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img_dir = path.parent / "img"
    stem = path.stem
    files = write_plots(rows, img_dir, stem)
    dev = get_device(device)
    dims = sorted({r["d"] for r in rows})
    sizes = sorted({r["size"] for r in rows})
    n0 = rows[0]["n"] if rows else 64
    bits = rows[0]["bits"] if rows else 8
    L = []
    L.append("# Efficiency: inhibitor attention vs dot-product attention on an FPGA\n")
    L.append(f"Produced by `{command}` on {time.strftime('%Y-%m-%d')}; raw rows in "
             f"`{path.with_suffix('.json').name}`. Device {dev.part} ({dev.package}, speed "
             f"{dev.speed}): {dev.lut4:,} LUT4, {dev.dsp} MULT18X18D, {dev.bram} DP16KD. "
             f"Yosys `synth_ecp5` + nextpnr-ecp5 (YoWASP builds), seed 1 (the next seed when routing stalls; each row's seed is in the JSON), target "
             f"{freq_mhz:g} MHz, each core inside the I/O wrapper of `hw/wrapper_io.py` "
             f"(resources below are the core's own; Fmax is register to register of the "
             f"placed design). {bits}-bit Q/K/V/H codes, n = {n0} keys per head, "
             f"valid length L = n.\n")
    if note:
        L.append(note.rstrip() + "\n")

    # headline
    head = []
    for d in dims:
        for s in sizes:
            inh, base = _pair(rows, d, s)
            if inh and base and inh.get("fits") and base.get("fits"):
                head.append((d, s, inh, base))
    if head:
        d, s, inh, base = max(head, key=lambda t: (t[1], t[0]))
        L.append("## Headline\n")
        L.append(f"At {s}x{s}, d = {d} (largest size measured for both): the baseline needs "
                 f"**{_ratio(base['lut4_sites'], inh['lut4_sites'])}x the LUT4 sites** "
                 f"({_fmt(base['lut4_sites'])} vs {_fmt(inh['lut4_sites'])}), "
                 f"**{base['dsp']} DSPs vs {inh['dsp']}**, runs at "
                 f"{_fmt(base['fmax_mhz'], 1)} MHz vs {_fmt(inh['fmax_mhz'], 1)} MHz "
                 f"(inhibitor/baseline Fmax {_ratio(inh['fmax_mhz'], base['fmax_mhz'])}x), takes "
                 f"{_fmt(base['cycles_per_head'])} vs {_fmt(inh['cycles_per_head'])} cycles per "
                 f"head, i.e. {_fmt(base['heads_per_s'])} vs {_fmt(inh['heads_per_s'])} heads/s; "
                 f"arithmetic energy per head {base['energy_pj_per_head'] / 1e3:,.1f} nJ vs "
                 f"{inh['energy_pj_per_head'] / 1e3:,.1f} nJ "
                 f"(baseline/inhibitor {_ratio(base['energy_pj_per_head'], inh['energy_pj_per_head'])}x).\n")

    # largest fitting array
    L.append("## Largest array that fits\n")
    for kind in KINDS:
        for d in dims:
            fit = [r["size"] for r in rows if r["kind"] == kind and r["d"] == d and r.get("fits")]
            nofit = [r for r in rows if r["kind"] == kind and r["d"] == d and r.get("fits") is False]
            txt = f"- {kind}, d = {d}: largest measured fit {max(fit)}x{max(fit)}" if fit else \
                f"- {kind}, d = {d}: no size measured"
            if nofit:
                first = min(nofit, key=lambda r: r["size"])
                txt += f"; {first['size']}x{first['size']} does not fit ({first['limit']})"
            L.append(txt)
    cap = max((s for s in range(1, 65)
               if _predicted_dsp(StudyPoint("baseline", s, s, s)) <= dev.dsp), default=0)
    L.append(f"- DSP cap of the baseline: two MAC arrays (one MULT18X18D per PE each) plus three "
             f"per softmax lane (one lane per row): 2 S^2 + 3 S multipliers, so at most "
             f"{cap}x{cap} on {dev.dsp} DSPs. `baseline-fabric` maps every product to LUTs instead "
             f"(`inhibitron capacity --kinds baseline-fabric`). The inhibitor uses no DSP at all; "
             f"its cap is logic.\n")

    # per-d tables
    for d in dims:
        L.append(f"## d = {d}\n")
        L.append("| array | LUT4 sites inh / base (ratio) | FF inh / base | DSP inh / base | "
                 "BRAM inh / base | Fmax MHz inh / base | cycles/head inh / base | "
                 "heads/s inh / base |")
        L.append("|---|---|---|---|---|---|---|---|")
        for s in sizes:
            inh, base = _pair(rows, d, s)
            if not inh and not base:
                continue
            inh, base = inh or {}, base or {}

            def g(r, k, nd=0):
                if r.get("fits") is False:
                    return "no fit"
                return _fmt(r.get(k), nd)

            L.append(
                f"| {s}x{s} | {g(inh, 'lut4_sites')} / {g(base, 'lut4_sites')} "
                f"({_ratio(base.get('lut4_sites'), inh.get('lut4_sites'))}x) "
                f"| {g(inh, 'ff')} / {g(base, 'ff')} | {g(inh, 'dsp')} / {g(base, 'dsp')} "
                f"| {g(inh, 'bram')} / {g(base, 'bram')} "
                f"| {g(inh, 'fmax_mhz', 1)} / {g(base, 'fmax_mhz', 1)} "
                f"| {_fmt(inh.get('cycles_per_head'))} / {_fmt(base.get('cycles_per_head'))} "
                f"| {g(inh, 'heads_per_s')} / {g(base, 'heads_per_s')} |")
        L.append("")
    other_flow = [r for r in rows if r.get("fits") and (r.get("router") or r.get("placer"))]
    if other_flow:
        L.append("Routed with other nextpnr options than the defaults (the default router "
                 "did not finish):\n")
        for r in other_flow:
            opts = ", ".join(f"--{k} {r[k]}" for k in ("router", "placer") if r.get(k))
            L.append(f"- {r['kind']} {r['size']}x{r['size']} d = {r['d']}: {opts}, "
                     f"seed {r.get('seed')}")
        L.append("")
    missing = [r for r in rows if r.get("fits") is None and r.get("limit")]
    if missing:
        L.append("Not measured (the cycle and energy columns are from the formulas):\n")
        for r in missing:
            L.append(f"- {r['kind']} {r['size']}x{r['size']} d = {r['d']}: {r['limit']}")
        L.append("")
    L.append(f"![resources vs size](img/{files[0]})\n")
    L.append(f"![Fmax vs size](img/{files[1]})\n")

    if pe_rows:
        L.append("## Single PEs (8-bit, reduction length 64, I/O-wrapped, target 200 MHz)\n")
        L.append("| PE | LUT4 | CCU2C | LUT4 sites | FF | DSP | Fmax MHz |")
        L.append("|---|---|---|---|---|---|---|")
        for r in pe_rows:
            L.append(f"| {r['pe']} | {r['lut4']} | {r['carry']} | {r['lut4_sites']} | {r['ff']} "
                     f"| {r['dsp']} | {_fmt(r['fmax_mhz'], 1)} |")
        L.append("")

    # energy
    L.append("## Arithmetic energy per head\n")
    L.append("Operation counts from `hw/opcount.py` (algorithmic: one entry per operation of "
             "each integer contract, by bit width; the same for every array size), weighted by "
             "Horowitz, ISSCC 2014, 45 nm: int8 add 0.03 pJ, int32 add 0.1 pJ, int8 mult 0.2 pJ, "
             "int32 mult 3.1 pJ; adds interpolated linearly in the width, multiplies linearly in "
             "the product of the operand widths. Memory traffic and control are not counted "
             "(both cores read the same Q, K, V and write the same H).\n")
    L.append("| n | d | inhibitor adds | inhibitor nJ | baseline adds | baseline mults | "
             "baseline nJ | baseline / inhibitor |")
    L.append("|---|---|---|---|---|---|---|---|")
    for d in dims:
        for n in sorted({n0, 128, 512}):
            si = summarize(inhibitor_ops(n=n, d=d, qk_bits=bits, v_bits=bits, out_bits=bits))
            sb = summarize(baseline_ops(n=n, d=d, qk_bits=bits, v_bits=bits, out_bits=bits))
            L.append(f"| {n} | {d} | {si['adds']:,} | {si['energy_pj'] / 1e3:,.2f} | "
                     f"{sb['adds']:,} | {sb['muls']:,} | {sb['energy_pj'] / 1e3:,.2f} | "
                     f"{sb['energy_pj'] / si['energy_pj']:.2f}x |")
    L.append("")
    L.append(f"![energy per head](img/{files[2]})\n")

    # critical paths
    cps = [r for r in rows if r.get("critical_path")]
    if cps:
        L.append("## Critical paths\n")
        L.append("| design | Fmax MHz | path ns (logic / routing) | levels | from -> to |")
        L.append("|---|---|---|---|---|")
        for r in cps:
            cp = r["critical_path"]
            L.append(f"| {r['kind']} {r['size']}x{r['size']} d={r['d']} | {_fmt(r['fmax_mhz'], 1)} "
                     f"| {cp['delay_ns']:.2f} ({cp['logic_ns']:.2f} / {cp['routing_ns']:.2f}) "
                     f"| {cp['logic_levels']} | `{cp['from_cell'][:60]}` -> `{cp['to_cell'][:60]}` |")
        L.append("")

    L.append(_timing_section(rows, pe_rows))

    if extra_sections:
        L.append(extra_sections.rstrip() + "\n")

    saved_energy = path.parent / "energy.json"   # sim.energy_run.bench_energy's saved results
    if saved_energy.exists():
        L.append(energy_section(json.loads(saved_energy.read_text()), source=saved_energy.name))

    L.append("## How to read this\n")
    L.append(
        "- **Same array, same interfaces, same engineering.** Both cores use the generic "
        "output-stationary `SystolicArray` of `hw/systolic.py` and the same stream shell "
        "(`hw/shell*.py`: loaders, descriptor slots, job control, output rounder and emitter). "
        "The inhibitor has an L1 array and a soft-threshold array; the engineered baseline "
        "two MAC arrays (`Q K^T` and `P V`) and one I-BERT integer softmax lane per array row "
        "(3 multipliers and a divider each), its stages overlapped across row blocks and heads "
        "like the inhibitor's (`docs/baseline.md`). Both take Q/K/V rows and a per-head "
        "descriptor on streams and return H rows.\n"
        "- **Cycles.** Both cores' cycles per head are their configs' formulas, equal to the "
        "cosimulated counts; at n = 128, d = 64 both arrays of both cores are busy more than "
        "99 % of the time, so the cycle counts are within a few percent and heads/s follows "
        "Fmax.\n"
        "- **Timing effort.** Both cores have registered control, `no_rw_check` block RAMs "
        "whose read register the flow retimes into the RAM (`hw/ecp5_outreg.py`); the "
        "baseline's multipliers get their operand and product registers inside the DSP "
        "(`hw/ecp5_dspreg.py`).\n"
        "- **LUT4 sites** count `LUT4 + 2 x CCU2C` of the core (a carry cell occupies two "
        "LUT4 sites); the I/O wrapper (input shift register, XOR tree) is excluded.\n"
        "- **Energy** has two models. The operation count (section \"Arithmetic energy per "
        "head\") weights the additions and multiplications each contract prescribes by a "
        "45 nm ASIC table: the work, not a measurement of either core. The switching-activity "
        "model (section \"Energy per head from switching activity\", when `energy.json` "
        "exists) counts the toggles of every net of each core's LUT4 netlist under "
        "simulation and weights them by assumed FPGA coefficients: it sees control, "
        "buffering, memories and the clock tree too.\n")
    text = "\n".join(L) + "\n"
    path.write_text(text)
    # ``from_cache`` says how this run got a row, not what was measured: left out,
    # so re-rendering from saved results rewrites the JSON byte for byte.
    saved = [{k: v for k, v in r.items() if k != "from_cache"} for r in rows]
    path.with_suffix(".json").write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")
    if pe_rows:
        pes_path(path).write_text(json.dumps(pe_rows, indent=1, sort_keys=True) + "\n")
    return path


def pes_path(path: Path | str) -> Path:
    """Where :func:`write_report` saves the single-PE rows of the report ``path`` (or of its
    rows' JSON): ``<stem>_pes.json`` beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}_pes.json")


#: Keys every saved row has (the raw rows of :func:`write_report`'s JSON).
ROW_KEYS = ("kind", "size", "d", "n", "bits", "fits", "cycles_per_head", "energy_pj_per_head")


def load_rows(path: Path | str) -> list[dict]:
    """The raw rows saved beside an earlier report (its ``.json``), checked for the row keys.

    (The report's single-PE rows, if it had them, are beside it: :func:`pes_path`.)
    Raises ``ValueError`` naming the file and what is wrong with it.
    """
    path = Path(path)
    try:
        rows = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read rows from {str(path)!r}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{str(path)!r} holds no rows (expected a JSON list of objects)")
    for i, row in enumerate(rows):
        missing = [k for k in ROW_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise ValueError(f"{str(path)!r}: row {i} lacks {', '.join(missing)}")
        if row["kind"] not in KINDS:
            raise ValueError(f"{str(path)!r}: row {i} has kind {row['kind']!r}, not one of "
                             f"{', '.join(KINDS)}")
    return rows


#: Timing targets of the inhibitor core on ECP5-85F speed 6 (MHz): required, aimed for.
TIMING_TARGETS_MHZ = (150.0, 200.0)
#: Size target of the L1 PE (LUT4 sites, 8-bit codes).
L1PE_LUT4_TARGET = 60


def _timing_section(rows: list[dict], pe_rows: list[dict] | None) -> str:
    """Markdown: the inhibitor core's Fmax against the targets, and where its critical path is."""
    need, aim = TIMING_TARGETS_MHZ
    inh = sorted((r for r in rows if r["kind"] == "inhibitor" and r.get("fmax_mhz")),
                 key=lambda r: (r["d"], r["size"]))
    L = ["## Timing closure of the inhibitor core\n",
         f"Targets: the full core (8x8 PEs per array, 8-bit codes, d = 64) at >= {need:g} MHz, "
         f"aiming for {aim:g} MHz, on ECP5-85F speed 6; the L1 PE at <= {L1PE_LUT4_TARGET} "
         "LUT4 sites.\n"]
    if inh:
        L.append(f"| core | Fmax MHz | >= {need:g} | >= {aim:g} | critical path (ns: logic / routing) |")
        L.append("|---|---|---|---|---|")
        for r in inh:
            cp = r.get("critical_path") or {}
            path = (f"`{cp.get('from_cell', '?')[:48]}` -> `{cp.get('to_cell', '?')[:48]}` "
                    f"({cp.get('logic_ns', 0):.2f} / {cp.get('routing_ns', 0):.2f})") if cp else "–"
            L.append(f"| {r['size']}x{r['size']} d={r['d']} n={r['n']} | {r['fmax_mhz']:.1f} "
                     f"| {'yes' if r['fmax_mhz'] >= need else 'no'} "
                     f"| {'yes' if r['fmax_mhz'] >= aim else 'no'} | {path} |")
        L.append("")
    if pe_rows:
        l1 = next((p for p in pe_rows if p["pe"].startswith("L1")), None)
        if l1:
            L.append(f"L1 PE: {l1['lut4_sites']} LUT4 sites ({l1['lut4']} LUT4 + {l1['carry']} "
                     f"CCU2C), {'within' if l1['lut4_sites'] <= L1PE_LUT4_TARGET else 'over'} "
                     f"the {L1PE_LUT4_TARGET}-site target, {l1['fmax_mhz']:.0f} MHz alone.\n")
    L.append(
        "How the core is pipelined (details in `docs/hardware.md`, section Timing):\n\n"
        "- **Block RAM.** Every block-RAM read is followed by one fabric register, and "
        "the flow (`hw/ecp5_outreg.py`) retimes that register into the DP16KD's own output "
        "register (`REGMODE = OUTREG`) before nextpnr: Yosys maps block RAM without it, and "
        "the unregistered read costs about 6 ns of clock-to-output on its own. The memories "
        "carry `no_rw_check` (no address is read and written in the same cycle), so no "
        "read-during-write bypass sits between the RAM and that register.\n"
        "- **Control.** Stream `ready`s, the start conditions of the score and mixing "
        "sequencers and the output-slot checks are flip-flops computed from the next values "
        "of their inputs; the slot flags' set and clear pulses are registered once; "
        "terminal counts are registered one cycle early.\n"
        "- **Datapath.** The row statistics and the output rounder take their operands from "
        "registers; the rounder's saturation checks run beside a narrow (out_bits + 1)-bit "
        "adder.\n"
        "- **Measurement.** The I/O wrapper's input shift register ends in a landing "
        "register per bit, so wrapper wires do not set the clock.\n")
    return "\n".join(L)

