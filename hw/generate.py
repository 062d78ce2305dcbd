"""Verilog generation of the attention core: ``<name>.v`` + ``<name>.json``.

:func:`generate` validates the configuration (a :class:`CoreConfig` raises
before anything is elaborated), elaborates the AXI-Stream top level
(:class:`~inhibitron.hw.axis.AxiStreamInhibitorCore`), converts it with
Amaranth's Verilog back end *without* source-location attributes (so the
file holds no absolute path and is byte-for-byte reproducible), and writes a
JSON description of the ports, widths, cycle formulas and formats. Both files
are written only after both texts exist, so a failure leaves nothing behind.

:func:`lint` runs ``verilator --lint-only -Wall`` with the named waivers of
``hw/verilator_waivers.vlt`` (each justified there).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .core import CoreConfig
from .shell_io import shell_slice_latency

__all__ = ["GeneratedCore", "WAIVERS", "convert_verilog", "core_description", "core_verilog", "generate",
           "drop_zero_width_wires", "lint", "time_zero_events"]

#: Verilator waiver file used by :func:`lint` (and by the cocotb builds).
WAIVERS = Path(__file__).with_name("verilator_waivers.vlt")

#: Version of the JSON description layout.
DESCRIPTION_VERSION = 1


@dataclass(frozen=True)
class GeneratedCore:
    """Paths written by :func:`generate`."""

    verilog: Path
    description: Path
    config: CoreConfig


#: Yosys's Verilog back end starts every ``always @*`` block with a dummy
#: read of a register that it declares as ``reg \$auto$verilog_backend...$N = 0;``,
#: so that the declaration's initialisation wakes each block at time 0.
_TIME0_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S*)\s+= 0;$", re.M)


def time_zero_events(text: str) -> str:
    """Make every ``always @*`` block of Yosys-written Verilog run at time 0 in SystemVerilog mode.

    In Verilog-2005 a declaration initialiser is an assignment at time 0 and
    wakes the blocks that read the register; in SystemVerilog (``iverilog
    -g2012``, cocotb's Icarus runner, ``.sv`` compiles) it happens before time
    0 without an event, so no ``always @*`` block runs until one of its inputs
    changes: combinational values stay X, registers without reset load that X
    at the first edges and never lose it, and in a design at rest (every input
    idle) the X persists and reaches ``tready``. An ``initial`` assignment (an
    X -> 0 change at time 0) wakes them in both languages; synthesis sees the
    same initial value 0.
    """
    # (an escaped identifier ends at white space: keep one before ";" and "=")
    return _TIME0_TRIGGER.sub(r"\1reg \2 ;\n\1initial \2 = 1'b0;", text)


#: A declaration of a zero-width wire as Yosys writes it: ``wire [-1:0] name;``.
_ZERO_WIDTH = re.compile(r"^[ \t]*wire \[-1:0\] (\\\S+ |[A-Za-z_][A-Za-z0-9_$]*);\n", re.M)


def drop_zero_width_wires(text: str) -> str:
    """Remove the declarations of zero-width wires that nothing references.

    An index signal over one element (``Signal(range(1))``: the bank of a
    one-row array, the column of a one-column array) has zero bits; Yosys
    still declares it, as ``wire [-1:0] x;``, which Verilog reads as a
    two-bit *ascending* range (Verilator: ASCRANGE). Nothing can read or
    drive a zero-width value, so such a declaration is never referenced and
    is dropped; one that is referenced (never seen) is kept for lint to flag.
    """
    def in_module(module) -> str:
        body = module.group(0)

        def unreferenced(match) -> str:
            name = match.group(1).strip()
            rest = body[:match.start()] + body[match.end():]
            used = re.search(re.escape(name) + r"(?![A-Za-z0-9_$\[])", rest)
            return match.group(0) if used else ""

        return _ZERO_WIDTH.sub(unreferenced, body)

    # names are local to a module: look for references inside each one
    return re.sub(r"^module .*?^endmodule$", in_module, text, flags=re.M | re.S)


def convert_verilog(component, *, name: str, strip_internal_attrs: bool = True) -> str:
    """``amaranth.back.verilog.convert`` (no source locations), then :func:`time_zero_events`
    and :func:`drop_zero_width_wires`."""
    from amaranth.back import verilog

    text = verilog.convert(component, name=name, emit_src=False,
                           strip_internal_attrs=strip_internal_attrs)
    return drop_zero_width_wires(time_zero_events(text))


def core_verilog(config: CoreConfig) -> str:
    """Verilog text of the AXI-Stream core for ``config`` (deterministic, no paths)."""
    from .axis import AxiStreamInhibitorCore

    if not isinstance(config, CoreConfig):
        raise TypeError(f"config must be a CoreConfig, not {config!r}")
    top = AxiStreamInhibitorCore(config)
    text = convert_verilog(top, name=config.name)
    header = (f"// {config.name}: Inhibitron inhibitor-attention core (generated; do not edit)\n"
              f"// config: {json.dumps(config.to_dict(), sort_keys=True)}\n")
    return header + text


def core_description(config: CoreConfig) -> dict:
    """JSON-ready description: ports, widths, latency/cycle formulas, formats."""
    w = config.widths
    n, d, R, C = config.seq_len, config.head_dim, config.rows, config.cols
    ports = []

    def port(name, direction, width, meaning):
        ports.append({"name": name, "direction": direction, "width": width, "meaning": meaning})

    port("clk", "in", 1, "clock (rising edge)")
    port("rst", "in", 1, "synchronous reset, active high")
    for s, bits, what in (("q", config.qk_bits, "Q"), ("k", config.qk_bits, "K"),
                          ("v", config.v_bits, "V")):
        port(f"s_axis_{s}_tdata", "in", d * bits,
             f"one row of {what}: code l (signed {bits} bits) at [l*{bits} +: {bits}]")
        port(f"s_axis_{s}_tvalid", "in", 1, "AXI-Stream valid")
        port(f"s_axis_{s}_tready", "out", 1, "AXI-Stream ready")
        port(f"s_axis_{s}_tlast", "in", 1, "ignored (heads are n rows)")
    layout = config.descriptor_layout
    meaning = {"length": f"L (1..{n})", "theta": "theta",
               "shift": f"output shift r (0..{config.out_shift_max} useful)"}
    fields = ", ".join(
        f"{meaning[name]} ({'signed' if f.shape.signed else 'unsigned'} {f.width} bits) "
        f"at [{f.offset} +: {f.width}]" for name, f in layout)
    port("s_axis_desc_tdata", "in", layout.size, f"per-head descriptor: {fields}")
    port("s_axis_desc_tvalid", "in", 1, "AXI-Stream valid")
    port("s_axis_desc_tready", "out", 1, "AXI-Stream ready")
    port("s_axis_desc_tlast", "in", 1, "ignored")
    port("m_axis_h_tdata", "out", d * config.out_bits,
         f"one row of H: code l (signed {config.out_bits} bits) at "
         f"[l*{config.out_bits} +: {config.out_bits}]")
    port("m_axis_h_tvalid", "out", 1, "AXI-Stream valid")
    port("m_axis_h_tready", "in", 1, "AXI-Stream ready")
    port("m_axis_h_tlast", "out", 1, "last row (n - 1) of a head")
    return {
        "version": DESCRIPTION_VERSION,
        "module": config.name,
        "generator": "inhibitron.hw.generate",
        "config": config.to_dict(),
        "formats": {"q": f"s{config.qk_bits}", "k": f"s{config.qk_bits}",
                    "v": f"s{config.v_bits}", "h": f"s{config.out_bits}",
                    "theta": f"s{w.theta_bits}", "out_shift": f"u{config.shift_bits}"},
        "out_shift_max": config.out_shift_max,
        "widths": {k: v for k, v in vars(w).items()},
        "ports": ports,
        "arrays": {"score": f"{R}x{C} L1PE", "mix": f"{R}x{C} SoftThresholdPE",
                   "multipliers": 0},
        "cycles": {
            "row_blocks": config.row_blocks,
            "score_job_cycles": config.score_job_cycles,
            "mix_job_cycles": config.mix_job_cycles,
            "pair_period": config.pair_period,
            "z_slot_latency": config.z_slot_latency,
            "cycles_per_two_heads": config.cycles_per_two_heads,
            "cycles_per_head": config.cycles_per_head,
            "ideal_utilization": round(config.ideal_utilization, 6),
            "formula": ("cycles_per_two_heads = max(ceil(n/R) * pair_period, 2*n*d); "
                        "pair_period = max(2*(max(ceil(n/C)*d, z_bits+4) + 1), "
                        "2*(ceil(d/C)*n + 1), ceil(n/C)*d + ceil(d/C)*n + z_slot_latency); "
                        "z_slot_latency = z_bits + R + C + 13; "
                        "cycles_per_head = ceil(cycles_per_two_heads / 2)"),
            "first_row_latency": config.first_row_latency,
            "latency_formula": ("first_row_latency = cycles from the last Q/K row of an isolated "
                                "head accepted to its first H beat = d + ceil(n/C)*d + "
                                f"ceil(d/C)*n + z_bits + 2*(R+C) + {config.LATENCY_STAGES}"
                                + (f" + {shell_slice_latency(config.head_dim)} (the stream "
                                   "slices: shell_io.shell_slice_latency(d))"
                                   if config.stream_slices else "")),
        },
        "stream_order": "Q, K, V: rows 0..n-1 of each head; one descriptor per head; "
                        "H: rows 0..n-1, tlast on row n-1; heads in input order",
    }


def generate(config: CoreConfig, out_dir) -> GeneratedCore:
    """Write ``<out_dir>/<name>.v`` and ``<out_dir>/<name>.json``; return their paths.

    Raises
    ------
    TypeError, ValueError
        Invalid configuration (nothing is written).
    """
    text = core_verilog(config)
    desc = json.dumps(core_description(config), indent=2, sort_keys=True) + "\n"
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output directory {os.fspath(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    vpath = out / f"{config.name}.v"
    jpath = out / f"{config.name}.json"
    vpath.write_text(text, encoding="utf-8")
    jpath.write_text(desc, encoding="utf-8")
    return GeneratedCore(vpath, jpath, config)


def lint(verilog_path, *, top: str | None = None) -> str:
    """``verilator --lint-only -Wall`` with :data:`WAIVERS`; return its output.

    Raises
    ------
    RuntimeError
        Verilator reported a warning or error (the message holds its output).
    inhibitron.hw.toolchain.ToolchainError
        Verilator is not installed (the message says what to install).
    """
    from .toolchain import find_verilator

    verilator = find_verilator()
    verilog_path = Path(verilog_path)
    cmd = [*verilator.command, "--lint-only", "-Wall", str(WAIVERS), str(verilog_path)]
    if top:
        cmd += ["--top-module", top]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or "%Warning" in output or "%Error" in output:
        raise RuntimeError(f"verilator lint of {verilog_path.name} failed:\n{output}")
    return output
