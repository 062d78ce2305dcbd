"""Build the generated core and run the cocotb testbench (:mod:`inhibitron.sim.tb_core`).

Wraps ``cocotb_tools.runner.get_runner("verilator")`` (or ``"icarus"``):
one build directory per configuration, ``build(..., always=True)``, then one
``test(...)`` per stimulus set with its parameters passed through a JSON file
named by the environment variable ``INHIBITRON_TB_PARAMS``.

Only the top-level wrapper's signals are made public to VPI: the runner's
default ``--public-flat-rw`` (every signal of the design public, several
times slower on large designs) is removed from the Verilator command and a
control file marks just the top module (``public_flat_rw -module <top>``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .stimulus import Head

__all__ = ["CosimBuild", "build_core", "build_model", "run_cosim", "cosimulate"]


@dataclass
class CosimBuild:
    """A built simulation model of one configuration."""

    config: object
    build_dir: Path
    simulator: str
    runner: object
    verilog: Path


def _lean_verilator(runner):
    """Adjust the runner's Verilator build commands.

    * drop ``--public-flat-rw`` (a control file makes only the top public);
    * pass ``CFG_CXXFLAGS_PCH_I=-include`` to make: the PyPI wheel's
      ``verilated.mk`` leaves it empty, which breaks the precompiled-header
      rules of the parallel (split) build of larger models.
    """
    base = runner._build_command

    def build_command():
        cmds = base()
        cmds[0] = [arg for arg in cmds[0] if arg != "--public-flat-rw"]
        cmds[1] = list(cmds[1]) + ["CFG_CXXFLAGS_PCH_I=-include"]
        return cmds

    runner._build_command = build_command
    return runner


#: Verilator's X options of the regular builds: X and uninitialised state as 0 (fast).
X_FAST = ("--x-assign", "fast", "--x-initial", "fast")
#: A second net for X-cleanness: every X and uninitialised bit gets a random value, chosen
#: at run time from the seed given by the plusargs ``+verilator+seed+N +verilator+rand+reset+2``.
X_UNIQUE = ("--x-assign", "unique", "--x-initial", "unique")


def build_core(config, build_dir, *, simulator: str = "verilator",
               verilator_args: tuple[str, ...] = X_FAST) -> CosimBuild:
    """Generate the Verilog of ``config`` and build a simulation model in ``build_dir``.

    ``verilator_args`` (Verilator only): extra build options, the X options
    by default (:data:`X_FAST`; :data:`X_UNIQUE` randomises X).

    Raises
    ------
    inhibitron.sim.toolchain.ToolchainError
        The simulator (or cocotb) is not installed; the message says what to install.
    ValueError
        Unknown simulator.
    """
    from inhibitron.hw.generate import generate

    if simulator not in ("verilator", "icarus"):
        raise ValueError(f"simulator must be 'verilator' or 'icarus', not {simulator!r}")
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    gen = generate(config, build_dir / "rtl")
    runner = build_model(gen.verilog, config.name, build_dir, simulator=simulator,
                         verilator_args=verilator_args)
    return CosimBuild(config, build_dir, simulator, runner, gen.verilog)


def build_model(verilog, top: str, build_dir, *, simulator: str = "verilator",
                verilator_args: tuple[str, ...] = X_FAST):
    """Build a cocotb simulation model of the Verilog file ``verilog`` (top module ``top``).

    The model goes to ``build_dir/sim`` (log ``build_dir/build.log``). Under
    Verilator, the project's waiver file is used and only ``top`` is made
    public (see the module docstring); ``verilator_args`` are added (the X
    options by default). Returns the cocotb runner, ready for ``test``.

    Raises
    ------
    inhibitron.hw.toolchain.ToolchainError
        The simulator (or cocotb) is not installed.
    RuntimeError
        The build failed; the message holds the tail of the log.
    """
    from inhibitron.hw.generate import WAIVERS

    from .toolchain import require_cocotb, require_icarus, setup_verilator

    require_cocotb()
    if simulator == "verilator":
        setup_verilator()
    else:
        require_icarus()
    from cocotb_tools.runner import get_runner

    build_dir = Path(build_dir).resolve()
    runner = get_runner(simulator)
    if simulator == "verilator":
        public = build_dir / "public.vlt"
        public.write_text("`verilator_config\n"
                          f"public_flat_rw -module \"{top}\" -var \"*\"\n", encoding="utf-8")
        _lean_verilator(runner)
        build = dict(sources=[Path(verilog), WAIVERS, public],
                     build_args=["-O3", *verilator_args])
    else:
        build = dict(sources=[Path(verilog)], timescale=("1ns", "1ps"))
    log = build_dir / "build.log"
    try:
        runner.build(hdl_toplevel=top, build_dir=build_dir / "sim", always=True, log_file=log, **build)
    except Exception as exc:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(f"building the {simulator} model of {top} failed ({exc}); "
                           f"log {log}:\n{tail}") from exc
    return runner


def run_cosim(build: CosimBuild, heads: list[Head], *, name: str = "run", idle_prob: float = 0.0,
              stall_prob: float = 0.0, seed: int = 0, max_report: int = 20,
              plusargs: tuple[str, ...] = ()) -> dict:
    """Run the testbench on ``heads``; return its result dict (see :mod:`.tb_core`).

    ``plusargs`` go to the simulator (e.g. Verilator's random-X seed).

    The result holds ``elements_compared``, ``mismatches``, ``first_mismatches``
    (head, row, col, got, expected), ``cycles_per_head`` and speed figures.
    It is returned even when the testbench failed, with ``"passed": False``.
    """
    from .tb_core import PARAMS_ENV, save_heads

    work = build.build_dir / name
    work.mkdir(parents=True, exist_ok=True)
    stim = work / "heads.npz"
    save_heads(stim, heads)
    result_path = work / "result.json"
    if result_path.exists():
        result_path.unlink()
    params = {"config": build.config.to_dict(), "stimulus": str(stim), "result": str(result_path),
              "idle_prob": idle_prob, "stall_prob": stall_prob, "seed": seed,
              "max_report": max_report}
    params_path = work / "params.json"
    params_path.write_text(json.dumps(params, indent=1), encoding="utf-8")
    xml = build.runner.test(test_module="inhibitron.sim.tb_core", hdl_toplevel=build.config.name,
                            hdl_toplevel_lang="verilog",
                            build_dir=build.build_dir / "sim", test_dir=work,
                            extra_env={PARAMS_ENV: str(params_path)}, plusargs=list(plusargs),
                            results_xml=str(work / "results.xml"), log_file=work / "sim.log",
                            timescale=("1ns", "1ps") if build.simulator == "icarus" else None)
    if not result_path.exists():
        return {"passed": False, "error": f"testbench wrote no result (see {work / 'sim.log'})",
                "mismatches": None, "elements_compared": 0, "name": name, "log": str(work / "sim.log")}
    result = json.loads(result_path.read_text(encoding="utf-8"))
    from cocotb_tools.runner import get_results
    tests, fails = get_results(xml)
    result["passed"] = fails == 0 and result["mismatches"] == 0 and not result["timed_out"]
    result["simulator"] = build.simulator
    result["name"] = name
    result["log"] = str(work / "sim.log")
    return result


def cosimulate(config, heads: list[Head], build_dir, *, simulator: str = "verilator",
               runs=({"name": "full-rate"},)) -> list[dict]:
    """Build once, run each of ``runs`` (dicts of :func:`run_cosim` keywords); return results."""
    build = build_core(config, build_dir, simulator=simulator)
    return [run_cosim(build, heads, **run) for run in runs]
