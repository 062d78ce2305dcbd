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
and :func:`xcheck` for any :class:`XTarget`. This module builds and runs the
check; the targets and pacing are :mod:`inhibitron.sim.xcheck_target`, the
testbench text :mod:`inhibitron.sim.xcheck_tb`, the VCD diagnosis
:mod:`inhibitron.sim.xcheck_vcd` (their names are re-exported here). From
the shell::

    python -m inhibitron.sim.xcheck --config cfg.json [--baseline] [--traffic] [--diagnose]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .xcheck_target import (IDLE, TRAFFIC, Pacing, Port, StreamSpec, XTarget, baseline_target,
                            default_cycles, inhibitor_target, parse_ports)
from .xcheck_tb import PERIOD, TB_STYLES, TB_TOP, testbench
from .xcheck_vcd import XSignal, x_signals_from_vcd

__all__ = [
    "Port", "StreamSpec", "XTarget", "Pacing", "IDLE", "TRAFFIC", "XSignal", "XCheckResult",
    "XCheckError", "parse_ports", "inhibitor_target", "baseline_target", "default_cycles",
    "testbench", "xcheck", "xcheck_inhibitor", "xcheck_baseline", "x_signals_from_vcd",
    "PERIOD", "TB_STYLES",
]


class XCheckError(RuntimeError):
    """The testbench could not be built or run (not: the core has an X)."""


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
    build = subprocess.run([iverilog, "-g2012", "-s", TB_TOP, "-o", "tb.vvp", "tb.v",
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
