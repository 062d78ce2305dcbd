"""What the X/Z check drives: a core's ports, its streams and the pacing of its inputs.

An :class:`XTarget` is everything :func:`inhibitron.sim.xcheck_tb.testbench`
needs to know of a core: its Verilog text, its top module, its ports
(:func:`parse_ports`: name, direction, width in bits), the valid/ready input
streams it is fed through (:class:`StreamSpec`: beats per head, the bit
field of a descriptor that holds the valid length) and the valid/ready
ports of its outputs. :func:`inhibitor_target` and :func:`baseline_target`
build one for each core; a :class:`Pacing` says how the inputs are driven
(:data:`IDLE`, :data:`TRAFFIC`) and :func:`default_cycles` how many cycles
that takes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["Port", "StreamSpec", "XTarget", "Pacing", "IDLE", "TRAFFIC", "parse_ports",
           "inhibitor_target", "baseline_target", "default_cycles"]


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
