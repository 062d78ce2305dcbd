"""X/Z check of a generated core in a 4-state simulator (Icarus Verilog).

Verilator, the project's cosimulator, is 2-state: with ``--x-initial fast``
every undefined register starts at some value and an X can never be seen.
FPGA engineers simulate IP in 4-state simulators (xsim, Questa, Icarus),
where a register without a defined value is X and an X reaching a
``tready`` hangs any testbench. This module checks, without cocotb, that
no output port bit of a core is X or Z at any cycle after reset release.

It writes a small self-contained Verilog testbench (``iverilog -g2012``,
``timescale 1ns/1ns``) around the core's Verilog that

1. holds ``rst`` high for two clock cycles, then releases it;
2. runs ``cycles`` cycles with a :class:`Pacing`: either every input idle
   (``valid = 0``, data 0) and the output ready (:data:`IDLE`), or whole
   heads sent with random data, random idle cycles between beats and random
   output backpressure (:data:`TRAFFIC`; the AXI rule holds: a beat stays
   presented, unchanged, until it is accepted). Each input stream sends
   heads of ``n`` beats (``tlast`` on the last), the descriptor one beat
   per head with a legal valid length ``L`` in ``1..n`` (the other fields
   random), so the core computes and emits;
3. samples every output port at each falling clock edge after reset release
   and reports the first cycle where a bit is X or Z (``$isunknown``), with
   every port unknown in that cycle, then stops with ``$fatal`` (exit code 1).

Cycle ``0`` is the first clock cycle after reset release (``rst`` is low,
the core's registers still hold their reset values).

With ``diagnose=True`` the testbench also dumps a VCD of the whole design and
runs to the end; :func:`x_signals_from_vcd` then lists every internal signal
that is X/Z at or after reset release, with the first cycle it was, sorted
by that cycle: the earliest ones are where an X enters the design (a root
cause), the later ones are where it propagated to.

Entry points: :func:`xcheck_inhibitor` (``CoreConfig``, the AXI-Stream top
of :func:`inhibitron.hw.generate.core_verilog`), :func:`xcheck_baseline`
(``BaselineConfig``, ``DotProductAttentionCore`` with Amaranth's port names)
and :func:`xcheck` for any :class:`XTarget`. From the shell::

    python -m inhibitron.sim.xcheck --config cfg.json [--baseline] [--traffic] [--diagnose]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

__all__ = [
    "Port", "StreamSpec", "XTarget", "Pacing", "IDLE", "TRAFFIC", "XSignal", "XCheckResult",
    "XCheckError", "parse_ports", "inhibitor_target", "baseline_target", "default_cycles",
    "testbench", "xcheck", "xcheck_inhibitor", "xcheck_baseline", "x_signals_from_vcd",
]

#: Clock period of the testbench (ns) and time at which ``rst`` is released.
PERIOD = 10
_RELEASE = 15          # posedges at 5, 15, 25, ...; rst <= 0 at the second one
_TB_TOP = "xcheck_tb"


class XCheckError(RuntimeError):
    """The testbench could not be built or run (not: the core has an X)."""


@dataclass(frozen=True)
class Port:
    """One port of the top module: ``direction`` is ``"input"`` or ``"output"``."""

    name: str
    direction: str
    width: int


@dataclass(frozen=True)
class StreamSpec:
    """A valid/ready input stream the testbench drives.

    ``beats`` beats make one head (``last`` high on the last one, if the
    stream has a ``last`` port). ``length_field`` = ``(offset, width, n)``
    makes the testbench put a random legal valid length ``1..n`` into
    ``data[offset +: width]`` of every beat (a descriptor).
    """

    name: str
    valid: str
    ready: str
    data: str
    beats: int
    last: str | None = None
    length_field: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class XTarget:
    """A core to check: its Verilog, top module, clock/reset and streams.

    ``out_ready`` are the ready inputs of its output streams (driven high,
    or randomly under :attr:`Pacing.stall`); ``out_valid`` the matching
    valid outputs (beats are counted). ``cycles_per_head`` sizes the
    default run (:func:`default_cycles`). Inputs that belong to no stream
    are tied to 0.
    """

    verilog: str
    top: str
    ports: tuple[Port, ...]
    streams: tuple[StreamSpec, ...]
    out_ready: tuple[str, ...]
    out_valid: tuple[str, ...]
    cycles_per_head: int
    clk: str = "clk"
    rst: str = "rst"

    @property
    def outputs(self) -> tuple[Port, ...]:
        return tuple(p for p in self.ports if p.direction == "output")


@dataclass(frozen=True)
class Pacing:
    """How the testbench drives the inputs.

    ``send`` False: every input idle and the outputs ready. Otherwise a
    beat is withheld with probability ``idle`` each time the stream may
    present a new one, and each output ``ready`` is low with probability
    ``stall`` per cycle; ``seed`` seeds the testbench's ``$random``.
    """

    send: bool = False
    idle: float = 0.0
    stall: float = 0.0
    seed: int = 1

    def __post_init__(self):
        for name in ("idle", "stall"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1), not {value!r}")

    @property
    def name(self) -> str:
        if not self.send:
            return "idle"
        return f"traffic(idle={self.idle:g}, stall={self.stall:g}, seed={self.seed})"


#: Every input idle, outputs ready.
IDLE = Pacing(send=False)
#: Whole heads with random data, 25 % idle beats, 35 % output backpressure.
TRAFFIC = Pacing(send=True, idle=0.25, stall=0.35, seed=1)


@dataclass(frozen=True)
class XSignal:
    """A signal found X/Z by the diagnosis (:func:`x_signals_from_vcd`).

    ``first_x_cycle`` is the first cycle (after reset release) at which it
    was X/Z; ``x_at_end`` whether it still was when the run ended.
    """

    name: str
    first_x_cycle: int
    x_at_end: bool


@dataclass(frozen=True)
class XCheckResult:
    """Outcome of one :func:`xcheck` run.

    Attributes
    ----------
    top, pacing : str
        The module checked and the pacing (:attr:`Pacing.name`).
    cycles : int
        Cycles run after reset release (fewer than asked if it stopped at an X).
    first_x_cycle : int or None
        First cycle at which an output bit was X/Z; None when clean.
    first_x_port : str or None
        The first such port (in port order) in that cycle.
    x_ports : tuple of str
        Every output port with an X/Z bit in that cycle.
    beats_in : dict
        Beats accepted per input stream.
    beats_out : int
        Output beats transferred (``valid & ready``), all output streams.
    x_signals : tuple of XSignal
        With ``diagnose``: every signal that was X/Z after reset release,
        earliest first. Empty otherwise.
    workdir : str
        Folder with the testbench, the log and (diagnose) the VCD.
    """

    top: str
    pacing: str
    cycles: int
    first_x_cycle: int | None
    first_x_port: str | None
    x_ports: tuple[str, ...]
    beats_in: dict
    beats_out: int
    x_signals: tuple[XSignal, ...] = ()
    workdir: str = ""
    log: str = field(default="", repr=False)

    @property
    def clean(self) -> bool:
        """No output bit was X or Z in any cycle run."""
        return self.first_x_cycle is None

    def summary(self) -> str:
        head = (f"{self.top} [{self.pacing}]: {self.cycles} cycles after reset release, "
                f"beats in {self.beats_in}, out {self.beats_out}: ")
        if self.clean:
            text = head + "no output bit X/Z"
        else:
            text = (head + f"first X/Z at cycle {self.first_x_cycle} on {self.first_x_port} "
                    f"(X/Z ports then: {', '.join(self.x_ports)})")
        if self.x_signals:
            lines = [f"  cycle {s.first_x_cycle:>6}  {'end ' if s.x_at_end else '    '}{s.name}"
                     for s in self.x_signals]
            text += (f"\n{len(self.x_signals)} signals X/Z after reset release "
                     f"(first X cycle; 'end' = still X at the end):\n" + "\n".join(lines))
        return text


# ----------------------------------------------------------------------------- ports

_MODULE = re.compile(r"^\s*module\s+(\\\S+|[A-Za-z_][A-Za-z0-9_$]*)\s*\(", re.M)
_PORT = re.compile(r"^\s*(input|output|inout)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?"
                   r"(?:\[(\d+):(\d+)\]\s*)?([A-Za-z_][A-Za-z0-9_$]*)\s*;", re.M)


def parse_ports(verilog: str, top: str) -> tuple[Port, ...]:
    """Ports of module ``top`` in ``verilog`` (Amaranth's/Yosys's output style).

    Raises
    ------
    ValueError
        If the module is not in the text or declares no port.
    """
    for match in _MODULE.finditer(verilog):
        if match.group(1) == top:
            break
    else:
        raise ValueError(f"module {top!r} not found in the Verilog text")
    end = verilog.find("endmodule", match.end())
    body = verilog[match.end():end if end >= 0 else None]
    ports = []
    for m in _PORT.finditer(body):
        msb, lsb = m.group(2), m.group(3)
        width = abs(int(msb) - int(lsb)) + 1 if msb is not None else 1
        ports.append(Port(m.group(4), m.group(1), width))
    if not ports:
        raise ValueError(f"module {top!r} declares no port")
    return tuple(ports)


# ----------------------------------------------------------------------------- targets

def _width(shape) -> int:
    from amaranth.hdl import Shape
    return Shape.cast(shape).width


def inhibitor_target(config) -> XTarget:
    """The AXI-Stream inhibitor core of ``config`` (a :class:`~inhibitron.hw.core.CoreConfig`)."""
    from inhibitron.hw.core import CoreConfig, InhibitorAttentionCore
    from inhibitron.hw.generate import core_verilog

    if not isinstance(config, CoreConfig):
        raise TypeError(f"config must be a CoreConfig, not {config!r}")
    n = config.seq_len
    layout = getattr(config, "descriptor_layout", None)
    if layout is None:
        core = InhibitorAttentionCore(config)
        core._MustUse__silence = True        # read for its layout only, never elaborated
        layout = core.desc_layout
    length = layout["length"]
    streams = tuple(
        StreamSpec(s, f"s_axis_{s}_tvalid", f"s_axis_{s}_tready", f"s_axis_{s}_tdata",
                   beats=1 if s == "desc" else n, last=f"s_axis_{s}_tlast",
                   length_field=(length.offset, _width(length.shape), n) if s == "desc" else None)
        for s in ("q", "k", "v", "desc"))
    text = core_verilog(config)
    return XTarget(verilog=text, top=config.name, ports=parse_ports(text, config.name),
                   streams=streams, out_ready=("m_axis_h_tready",), out_valid=("m_axis_h_tvalid",),
                   cycles_per_head=config.cycles_per_head + config.first_row_latency)


def _convert(component, name: str) -> str:
    """The project's Verilog conversion of a component (the one users get)."""
    from inhibitron.hw.generate import convert_verilog

    return convert_verilog(component, name=name)


def baseline_target(config) -> XTarget:
    """The dot-product baseline of ``config`` (a :class:`~inhibitron.hw.baseline.BaselineConfig`),
    converted as the project converts it (``inhibitron.hw.generate.convert_verilog``:
    Amaranth's ``verilog.convert(dut, name=config.name, emit_src=False)`` with
    time-0 events for its ``always @*`` blocks)."""
    from inhibitron.hw.baseline import BaselineConfig, DotProductAttentionCore

    if not isinstance(config, BaselineConfig):
        raise TypeError(f"config must be a BaselineConfig, not {config!r}")
    dut = DotProductAttentionCore(config)
    n = config.seq_len
    length = dut.desc_layout["length"]
    per_head = getattr(config, "cycles_per_head", None) or dut.cycles_per_head
    cycles = per_head()
    text = _convert(dut, config.name)
    streams = tuple(
        StreamSpec(s, f"{s}__valid", f"{s}__ready", f"{s}__payload",
                   beats=1 if s == "desc" else n,
                   length_field=(length.offset, _width(length.shape), n) if s == "desc" else None)
        for s in ("desc", "q", "k", "v"))
    return XTarget(verilog=text, top=config.name, ports=parse_ports(text, config.name),
                   streams=streams, out_ready=("h__ready",), out_valid=("h__valid",),
                   cycles_per_head=cycles)


def default_cycles(target: XTarget, pacing: Pacing, *, heads: int = 2) -> int:
    """Cycles to run: 100 when idle; with traffic enough for ``heads`` heads
    at the pacing's rates (the core's cycles per head stretched by the idle
    and stall probabilities), plus a margin."""
    if not pacing.send:
        return 100
    stretch = 1.0 / ((1.0 - pacing.idle) * (1.0 - pacing.stall))
    return int(math.ceil(heads * target.cycles_per_head * stretch)) + 200


# ----------------------------------------------------------------------------- testbench

def _rand_expr(width: int, seed: str) -> str:
    words = max(1, -(-width // 32))
    return "{" + ", ".join([f"$random({seed})"] * words) + "}"


#: Testbench styles (:func:`testbench`).
TB_STYLES = ("declaration", "initial")


def testbench(target: XTarget, *, cycles: int, pacing: Pacing = IDLE,
              vcd: str | None = None, style: str = "declaration") -> str:
    """Verilog text of the X-check testbench (module ``xcheck_tb``) for ``target``.

    ``vcd``: dump the whole design into this file and run to the end even
    after an X (diagnosis); otherwise stop with ``$fatal`` at the first X.

    ``style`` is how the testbench gives its registers their first values:
    ``"declaration"`` (``reg rst = 1'b1;``: in SystemVerilog no event at time
    0, so the core gets none from the testbench) or ``"initial"`` (an
    ``initial`` block assigns them, X -> value events at time 0, and reset
    is released with a blocking assignment after the second rising edge,
    like a hand-written ten-line testbench). A core must be X-clean in both.
    """
    if not isinstance(cycles, int) or cycles < 1:
        raise ValueError(f"cycles must be a positive integer, not {cycles!r}")
    if style not in TB_STYLES:
        raise ValueError(f"style must be one of {TB_STYLES}, not {style!r}")
    ports = {p.name: p for p in target.ports}
    for name in (target.clk, target.rst, *target.out_ready, *target.out_valid):
        if name not in ports:
            raise ValueError(f"port {name!r} is not a port of {target.top}")
    driven: dict[str, str] = {target.clk: "clk", target.rst: "rst"}
    lines = [
        "`timescale 1ns/1ns",
        f"// X/Z check of {target.top}: generated by inhibitron.sim.xcheck ({pacing.name})",
        f"module {_TB_TOP};",
        "  reg clk = 1'b0;",
        "  reg rst = 1'b1;",
        f"  always #{PERIOD // 2} clk = ~clk;",
        "  integer cycle = 0;",
        "  integer first_x = -1;",
        "  integer beats_out = 0;",
    ]
    body: list[str] = []
    idle_pct = int(round(pacing.idle * 1000))
    stall_pct = int(round(pacing.stall * 1000))
    for i, s in enumerate(target.streams):
        for name in (s.valid, s.ready, s.data) + ((s.last,) if s.last else ()):
            if name not in ports:
                raise ValueError(f"stream {s.name}: {name!r} is not a port of {target.top}")
        w = ports[s.data].width
        p = f"s{i}"
        seed = f"{p}_seed"
        lines += [
            f"  // stream {s.name}: {s.beats} beat(s) per head",
            f"  reg {p}_valid = 1'b0;",
            f"  reg [{w - 1}:0] {p}_data = {w}'d0;",
            f"  reg {p}_last = 1'b0;",
            f"  wire {p}_ready;",
            f"  integer {p}_beat = 0;",
            f"  integer {p}_accepted = 0;",
            f"  integer {seed} = {pacing.seed * 101 + i};",
        ]
        driven[s.valid] = f"{p}_valid"
        driven[s.data] = f"{p}_data"
        driven[s.ready] = f"{p}_ready"
        if s.last:
            driven[s.last] = f"{p}_last"
        if not pacing.send:
            continue
        fill = [f"        {p}_data <= {_rand_expr(w, seed)};"]
        if s.length_field is not None:
            off, lw, n = s.length_field
            fill.append(f"        {p}_data[{off} +: {lw}] <= 1 + ($unsigned($random({seed})) % {n});")
        body += [
            "  always @(posedge clk) begin",
            f"    if (rst) {p}_valid <= 1'b0;",
            "    else begin",
            f"      if ({p}_valid === 1'b1 && {p}_ready === 1'b1) begin",
            f"        {p}_accepted = {p}_accepted + 1;",
            f"        {p}_beat = ({p}_beat + 1) % {s.beats};",
            "      end",
            f"      if ({p}_valid !== 1'b1 || {p}_ready === 1'b1) begin",
            f"        if (($unsigned($random({seed})) % 1000) < {idle_pct}) {p}_valid <= 1'b0;",
            "        else begin",
            f"          {p}_valid <= 1'b1;",
            f"          {p}_last <= ({p}_beat == {s.beats - 1});",
            *["  " + f for f in fill],
            "        end",
            "      end",
            "    end",
            "  end",
        ]
    for j, name in enumerate(target.out_ready):
        r = f"o{j}_ready"
        lines += [f"  reg {r} = 1'b1;", f"  integer {r}_seed = {pacing.seed * 101 + 50 + j};"]
        driven[name] = r
        if pacing.send and stall_pct:
            body.append(f"  always @(posedge clk) {r} <= "
                        f"(($unsigned($random({r}_seed)) % 1000) >= {stall_pct});")
    outs = target.outputs
    for port in outs:
        if port.name not in driven:
            lines.append(f"  wire [{port.width - 1}:0] out_{port.name};")
            driven[port.name] = f"out_{port.name}"
    conns = []
    for port in target.ports:
        conns.append(f"    .{port.name}({driven.get(port.name, str(port.width) + chr(39) + 'd0')})")
    lines += [f"  {target.top} dut (", ",\n".join(conns), "  );"]
    lines += body
    # Output beats.
    for j, (rdy, vld) in enumerate(zip(target.out_ready, target.out_valid)):
        lines.append(f"  always @(posedge clk) if (!rst && {driven[vld]} === 1'b1 && "
                     f"{driven[rdy]} === 1'b1) beats_out = beats_out + 1;")
    # Reset, the check at each falling edge, the end.
    accepted = ", ".join(f"{s.name}=%0d" for s in target.streams)
    acc_args = ", ".join(f"s{i}_accepted" for i in range(len(target.streams)))
    def finish(ran):
        return ["      $display(\"XCHECK DONE cycles=%0d first_x=%0d out=%0d " + accepted + "\", "
                f"{ran}, first_x, beats_out, {acc_args});"]
    lines += [
        "  initial begin",
        *([f"    $dumpfile(\"{vcd}\");", "    $dumpvars(0, dut);"] if vcd else []),
        "    repeat (2) @(posedge clk);",
        "    rst = 1'b0;" if style == "initial" else "    rst <= 1'b0;",
        "  end",
        "  always @(negedge clk) if (!rst) begin",
        "    if (first_x < 0) begin",
    ]
    for port in outs:
        sig = driven[port.name]
        lines += [
            f"      if ($isunknown({sig})) begin",
            f"        $display(\"XCHECK X cycle=%0d port={port.name} value=%b\", cycle, {sig});",
            "        first_x = cycle;",
            "      end",
        ]
    lines += [
        "      if (first_x >= 0) begin",
        *(["  " + f for f in finish("cycle + 1")] if not vcd else []),
        *(["        $fatal(1, \"XCHECK: output X/Z after reset release\");"] if not vcd else []),
        "      end",
        "    end",
        "    cycle = cycle + 1;",
        f"    if (cycle == {cycles}) begin",
        *finish("cycle"),
        "      if (first_x >= 0) $fatal(1, \"XCHECK: output X/Z after reset release\");",
        "      $finish;",
        "    end",
        "  end",
        "endmodule",
        "",
    ]
    if style == "initial":
        # Move every "reg x = v;" initialiser into the initial block above.
        decl = re.compile(r"^  reg (\[\d+:0\] )?(\w+) = ([^;]+);$")
        text, inits = [], []
        for line in lines:
            m = decl.match(line)
            if m:
                text.append(f"  reg {m.group(1) or ''}{m.group(2)};")
                inits.append(f"    {m.group(2)} = {m.group(3)};")
            elif line == "  initial begin" and inits:
                text += [line, *inits]
                inits = []
            else:
                text.append(line)
        lines = text
    return "\n".join(lines)


# ----------------------------------------------------------------------------- VCD

def x_signals_from_vcd(path, *, release_time: int = _RELEASE, period: int = PERIOD,
                       prefix: str = f"{_TB_TOP}.dut.") -> tuple[XSignal, ...]:
    """Every variable of a VCD that is X/Z at or after ``release_time``.

    The value a signal holds at ``release_time`` (after that instant's
    changes) counts; earlier X (before reset took effect) does not. Times
    are converted to cycles after reset release (``(t - release) // period``).
    Sorted by first X cycle, then name; ``prefix`` is stripped from names.
    """
    names: dict[str, list[str]] = {}
    scope: list[str] = []
    value: dict[str, str] = {}
    first: dict[str, int] = {}
    time = 0
    released = False

    def is_x(v: str) -> bool:
        return any(ch in "xXzZ" for ch in v)

    def mark_release():
        for ident, v in value.items():
            if is_x(v) and ident not in first:
                first[ident] = release_time

    with open(path, encoding="ascii", errors="replace") as fh:
        in_header = True
        for line in fh:
            tok = line.split()
            if not tok:
                continue
            if in_header:
                if tok[0] == "$scope":
                    scope.append(tok[2])
                elif tok[0] == "$upscope":
                    scope.pop()
                elif tok[0] == "$var":
                    ident, ref = tok[3], tok[4]
                    full = ".".join(scope + [ref])
                    if full.startswith(prefix):
                        full = full[len(prefix):]
                    names.setdefault(ident, []).append(full)
                elif tok[0] == "$enddefinitions":
                    in_header = False
                continue
            head = tok[0]
            if head.startswith("#"):
                new_time = int(head[1:])
                if not released and new_time > release_time:
                    mark_release()
                    released = True
                time = new_time
                continue
            if head.startswith("$"):
                continue
            if head[0] in "bBrR":
                v, ident = head[1:], tok[1]
            else:
                v, ident = head[0], head[1:]
            if ident not in names:
                continue
            value[ident] = v
            if released and is_x(v) and ident not in first:
                first[ident] = time
    if not released:
        mark_release()
    out = []
    for ident, t in first.items():
        cycle = max(0, (t - release_time) // period)
        for name in names[ident]:
            out.append(XSignal(name, cycle, is_x(value.get(ident, ""))))
    return tuple(sorted(out, key=lambda s: (s.first_x_cycle, s.name)))


# ----------------------------------------------------------------------------- run

_X_LINE = re.compile(r"XCHECK X cycle=(\d+) port=(\S+)")
_DONE = re.compile(r"XCHECK DONE cycles=(\d+) first_x=(-?\d+) out=(\d+)(.*)")


def xcheck(target: XTarget, *, cycles: int | None = None, pacing: Pacing = IDLE,
           diagnose: bool = False, style: str = "declaration", workdir=None,
           timeout: float = 600) -> XCheckResult:
    """Build and run the X-check testbench of ``target`` in Icarus Verilog.

    Parameters
    ----------
    target : XTarget
        The core (:func:`inhibitor_target`, :func:`baseline_target`).
    cycles : int, optional
        Cycles after reset release; default :func:`default_cycles`.
    pacing : Pacing
        :data:`IDLE`, :data:`TRAFFIC` or any other.
    diagnose : bool
        Dump a VCD, run to the end and list the X/Z signals
        (:attr:`XCheckResult.x_signals`).
    style : str
        How the testbench initialises its registers (:func:`testbench`).
    workdir : path, optional
        Where to write ``tb.v``, ``<top>.v``, the log (and the VCD); a new
        temporary folder by default (kept, its path is in the result).
    timeout : float
        Seconds for the simulation.

    Raises
    ------
    inhibitron.hw.toolchain.ToolchainError
        If Icarus Verilog is not installed.
    XCheckError
        If the testbench does not compile or the simulation does not end.
    """
    from inhibitron.hw.toolchain import require_icarus

    tool = require_icarus()
    iverilog = tool.command[0]
    vvp = str(Path(iverilog).with_name("vvp"))
    if not Path(vvp).exists():
        import shutil
        vvp = shutil.which("vvp") or "vvp"
    if cycles is None:
        cycles = default_cycles(target, pacing)
    work = Path(workdir) if workdir is not None else Path(
        tempfile.mkdtemp(prefix=f"xcheck_{target.top}_"))
    work.mkdir(parents=True, exist_ok=True)
    vcd = "dump.vcd" if diagnose else None
    (work / f"{target.top}.v").write_text(target.verilog)
    (work / "tb.v").write_text(testbench(target, cycles=cycles, pacing=pacing, vcd=vcd,
                                                 style=style))
    build = subprocess.run([iverilog, "-g2012", "-s", _TB_TOP, "-o", "tb.vvp", "tb.v",
                            f"{target.top}.v"], cwd=work, capture_output=True, text=True)
    if build.returncode != 0:
        raise XCheckError(f"iverilog failed in {work}:\n{build.stdout}{build.stderr}")
    try:
        run = subprocess.run([vvp, "-n", "tb.vvp"], cwd=work, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        raise XCheckError(f"simulation of {target.top} did not end within {timeout} s "
                          f"({cycles} cycles, {work})") from None
    log = run.stdout + run.stderr
    (work / "sim.log").write_text(log)
    done = _DONE.search(log)
    if done is None:
        raise XCheckError(f"simulation of {target.top} ended without a result "
                          f"(exit code {run.returncode}, {work}):\n{log[-2000:]}")
    xs = _X_LINE.findall(log)
    first_cycle = int(xs[0][0]) if xs else None
    x_ports = tuple(port for c, port in xs if first_cycle is not None and int(c) == first_cycle)
    accepted = dict(re.findall(r"(\w+)=(\d+)", done.group(4)))
    beats_in = {s.name: int(accepted.get(s.name, 0)) for s in target.streams}
    x_signals = x_signals_from_vcd(work / vcd) if vcd else ()
    if xs and run.returncode == 0:
        raise XCheckError(f"testbench reported an X but exited 0 ({work})")
    return XCheckResult(top=target.top, pacing=f"{pacing.name}, {style} testbench", cycles=int(done.group(1)),
                        first_x_cycle=first_cycle, first_x_port=x_ports[0] if x_ports else None,
                        x_ports=x_ports, beats_in=beats_in, beats_out=int(done.group(3)),
                        x_signals=x_signals, workdir=str(work), log=log)


def xcheck_inhibitor(config, **kwargs) -> XCheckResult:
    """:func:`xcheck` of the AXI-Stream inhibitor core of a ``CoreConfig``."""
    return xcheck(inhibitor_target(config), **kwargs)


def xcheck_baseline(config, **kwargs) -> XCheckResult:
    """:func:`xcheck` of the dot-product baseline of a ``BaselineConfig``."""
    return xcheck(baseline_target(config), **kwargs)


# ----------------------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inhibitron.sim.xcheck",
                                 description="X/Z check of a generated core in Icarus Verilog")
    ap.add_argument("--config", required=True, help="JSON config (CoreConfig or BaselineConfig)")
    ap.add_argument("--baseline", action="store_true", help="the dot-product baseline")
    ap.add_argument("--traffic", action="store_true", help="send heads (default: idle inputs)")
    ap.add_argument("--idle", type=float, default=TRAFFIC.idle)
    ap.add_argument("--stall", type=float, default=TRAFFIC.stall)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cycles", type=int, default=None)
    ap.add_argument("--diagnose", action="store_true", help="list the X/Z internal signals")
    ap.add_argument("--style", choices=TB_STYLES, default="declaration",
                    help="how the testbench initialises its registers")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    with open(args.config, encoding="utf-8") as fh:
        cfg_dict = json.load(fh)
    pacing = (Pacing(send=True, idle=args.idle, stall=args.stall, seed=args.seed)
              if args.traffic else IDLE)
    if args.baseline:
        from inhibitron.hw.baseline import BaselineConfig
        target = baseline_target(BaselineConfig.from_dict(cfg_dict))
    else:
        from inhibitron.hw.core import CoreConfig
        target = inhibitor_target(CoreConfig.from_dict(cfg_dict))
    result = xcheck(target, cycles=args.cycles, pacing=pacing, diagnose=args.diagnose,
                    style=args.style, workdir=args.workdir)
    print(result.summary())
    print(f"(testbench and log in {result.workdir})")
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
