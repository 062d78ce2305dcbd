"""Building and running the standalone testbench from Python (the tests, the CLI, the benchmarks).

``run.sh`` does the same without Python. :func:`build` compiles the
testbench with Verilator or Icarus, :func:`run` runs it with plusargs and
:func:`parse_result` reads the ``RESULT`` line it prints last.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from typing import TYPE_CHECKING

from inhibitron.hw.toolchain import TESTBENCH_VERILATOR_OPTIONS

if TYPE_CHECKING:
    from .standalone import StandaloneBench

__all__ = ["build", "parse_result", "run", "VERILATOR_OPTIONS"]

#: Verilator options of the testbench build, the same in ``run.sh`` (one list with the
#: FuseSoC target: :data:`inhibitron.hw.toolchain.TESTBENCH_VERILATOR_OPTIONS`).
VERILATOR_OPTIONS = TESTBENCH_VERILATOR_OPTIONS


def build(bench: StandaloneBench, simulator: str = "verilator", *, jobs: int = 1,
          timeout: float = 1800) -> list[str]:
    """Compile the testbench; return the command that runs it (plusargs to be appended).

    Raises
    ------
    ValueError
        Unknown simulator.
    inhibitron.hw.toolchain.ToolchainError
        The simulator is not installed.
    RuntimeError
        The build failed (the message holds the tail of its log).
    """
    from inhibitron.hw.toolchain import find_verilator, require_icarus

    d = bench.directory
    if simulator == "verilator":
        tool = find_verilator()
        cmd = [*tool.command, "--binary", *VERILATOR_OPTIONS, "-j", str(jobs),
               "--top-module", bench.top, "-Mdir", "obj_verilator", "-o", bench.top,
               bench.verilog.name, bench.testbench.name]
        runner = [str(d / "obj_verilator" / bench.top)]
    elif simulator == "icarus":
        tool = require_icarus()
        cmd = [*tool.command, "-g2012", "-s", bench.top, "-o", f"{bench.top}.vvp",
               bench.verilog.name, bench.testbench.name]
        runner = [*tool.runtime, "-n", str(d / f"{bench.top}.vvp")]
    else:
        raise ValueError(f"simulator must be 'verilator' or 'icarus', not {simulator!r}")
    log = d / f"build_{simulator}.log"
    env = dict(os.environ)
    env.setdefault("MAKEFLAGS", f"-j{jobs}")
    proc = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=timeout, env=env)
    log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"building the {simulator} testbench failed ({proc.returncode}); "
                           f"log {log}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return runner


_RESULT = re.compile(r"^RESULT (PASS|FAIL)(.*)$", re.M)


def parse_result(text: str) -> dict:
    """The fields of the testbench's ``RESULT`` line (``{"status": "PASS", "cycles": ..}``)
    plus ``mismatch_lines`` (``MISMATCH ...``), ``stall`` (the ``STALL`` line or None).

    >>> parse_result("RESULT PASS heads=2 rows=8 cycles=77")["cycles"]
    77
    """
    found = _RESULT.findall(text)
    res: dict = {"status": found[-1][0] if found else None}
    if found:
        for key, val in re.findall(r"(\w+)=(\S+)", found[-1][1]):
            res[key] = int(val) if val.lstrip("-").isdigit() else val
    res["mismatch_lines"] = re.findall(r"^MISMATCH .*$", text, re.M)
    res["tlast_lines"] = re.findall(r"^TLAST .*$", text, re.M)
    stall = re.findall(r"^STALL: .*$", text, re.M)
    res["stall"] = stall[0] if stall else None
    return res


def run(bench: StandaloneBench, simulator: str = "verilator", *, idle: int = 0, stall: int = 0,
        seed: int = 1, runner: list[str] | None = None, extra: tuple[str, ...] = (),
        memdir=None, timeout: float = 1800) -> dict:
    """Build (unless ``runner`` is given) and run the testbench; return its parsed result.

    ``idle``/``stall`` are per mille. The result has ``passed`` (exit status
    0 and ``RESULT PASS``), ``returncode``, the ``RESULT`` fields
    (``cycles``, ``elements``, ``mismatches``, ...), ``wall_s`` (the
    simulation executable alone, without the build), ``cycles_per_s`` and
    ``output`` (its stdout + stderr). ``memdir``: read the ``.memh`` files
    from there instead (same sizes: the head count is compiled in).
    """
    if runner is None:
        runner = build(bench, simulator)
    cmd = [*runner, f"+memdir={memdir or bench.directory}", f"+idle={idle}", f"+stall={stall}",
           f"+seed={seed}", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=bench.directory, capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - t0
    output = proc.stdout + proc.stderr
    (bench.directory / f"sim_{simulator}.log").write_text(output, encoding="utf-8")
    res = parse_result(output)
    res.update(returncode=proc.returncode, wall_s=wall, output=output, simulator=simulator,
               passed=proc.returncode == 0 and res["status"] == "PASS")
    cycles = res.get("cycles")
    res["cycles_per_s"] = cycles / wall if isinstance(cycles, int) and wall > 0 else None
    return res
