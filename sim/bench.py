"""Benchmarks of the inhibitor core (wired into ``make bench`` by inhibitron.bench).

* :func:`bench_utilization` — PE utilization in steady state (back-to-back
  heads), measured by the cocotb testbench on the Verilator model of the
  generated core: useful PE-cycles per head ``2*n*n*d`` over
  ``2 arrays * R*C * cycles per head``, with cycles per head the distance
  between the last H beats of consecutive heads.
* :func:`bench_cosim_speed` — simulated cycles per second and checked output
  elements per second, cocotb + Verilator vs ``amaranth.sim`` on the same core.
* :func:`bench_standalone_scaling` — cycles per second of the standalone
  testbench (``verilator --binary``) against the core's word-level cells.

Each returns ``{"summary": str, "rows": [dict, ...], "notes": str}``.
Never used as timed assertions in tests.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["bench_utilization", "bench_cosim_speed", "bench_standalone_scaling", "measure_utilization",
           "word_level_cells"]


def measure_utilization(cfg, *, heads: int = 4, build_root=None, seed: int = 0) -> dict:
    """Cosimulate ``heads`` random heads back to back; return cycles and utilization."""
    from .runner import build_core, run_cosim
    from .stimulus import random_heads

    rng = np.random.default_rng(seed)
    stim = random_heads(cfg, heads, rng)
    with tempfile.TemporaryDirectory(dir=build_root) as tmp:
        t0 = time.perf_counter()
        build = build_core(cfg, Path(tmp) / cfg.name)
        build_s = time.perf_counter() - t0
        res = run_cosim(build, stim, name="util", seed=seed)
    steady = res["cycles_per_head"]
    cph = min(steady) if steady else None
    useful = cfg.useful_pe_cycles_per_head
    return {
        "config": f"{cfg.rows}x{cfg.cols}, n={cfg.seq_len}, d={cfg.head_dim}, "
                  f"s{cfg.qk_bits}/s{cfg.v_bits}/s{cfg.out_bits}",
        "heads": heads,
        "bit_exact": bool(res["passed"]),
        "elements_compared": res["elements_compared"],
        "cycles_per_head_measured": cph,
        "cycles_per_head_formula": cfg.cycles_per_head,
        "utilization_measured": useful / (2 * cfg.rows * cfg.cols * cph) if cph else None,
        "utilization_formula": cfg.ideal_utilization,
        "first_head_latency_cycles": res["head_done_cycles"][0] if res["head_done_cycles"] else None,
        "cosim_cycles_per_s": res["cycles_per_s"],
        "cosim_elements_per_s": res["elements_per_s"],
        "verilator_build_s": build_s,
    }


def bench_utilization() -> dict:
    """PE utilization in steady state: n=128, d=64, 8x8 (target >= 90%), plus a tiled case."""
    from inhibitron.hw.core import CoreConfig

    rows = [measure_utilization(CoreConfig(rows=8, cols=8, seq_len=128, head_dim=64,
                                           name="util_8x8_n128_d64"), heads=4)]
    rows.append(measure_utilization(CoreConfig(rows=8, cols=8, seq_len=100, head_dim=32,
                                               name="util_8x8_n100_d32"), heads=4))
    main = rows[0]
    return {
        "summary": (f"Steady-state PE utilization of the 8x8 core at n=128, d=64: "
                    f"{100 * main['utilization_measured']:.2f}% measured "
                    f"({main['cycles_per_head_measured']} cycles/head; formula "
                    f"{main['cycles_per_head_formula']}), bit-exact: {main['bit_exact']}."),
        "rows": rows,
        "notes": ("Utilization = 2*n*n*d useful PE-cycles per head / (2 arrays * R*C * measured "
                  "cycles between the last H beats of consecutive heads), 4 random heads back to "
                  "back at full rate, cocotb + Verilator (sim/bench.py)."),
    }


def _standalone_speed(cfg, *, heads: int) -> dict:
    """The self-checking Verilog testbench (``inhibitron testbench``) under ``verilator --binary``."""
    import tempfile

    from .standalone import run, stimulus_heads, write_testbench

    with tempfile.TemporaryDirectory(prefix="inhibitron-standalone-") as tmp:
        bench = write_testbench(cfg, stimulus_heads(cfg, kind="random", heads=heads), tmp,
                                stimulus="random")
        res = run(bench, "verilator")
    return {"core": cfg.name, "simulator": "standalone testbench, verilator --binary",
            "cycles_per_s": res.get("cycles_per_s"),
            "elements_per_s": (res.get("elements") or 0) * (res.get("cycles_per_s") or 0)
            / max(res.get("cycles") or 1, 1),
            "bit_exact": bool(res["passed"])}


def bench_cosim_speed() -> dict:
    """Cycles/s and checked elements/s: cocotb+Verilator, amaranth.sim and the standalone
    Verilog testbench under ``verilator --binary``, same core."""
    from inhibitron.hw.core import CoreConfig

    from .pysim import run_core_pysim
    from .stimulus import golden_outputs, random_heads

    rows = []
    for cfg, heads, py_heads in [
        (CoreConfig(rows=8, cols=8, seq_len=128, head_dim=64, name="speed_8x8_n128"), 4, 1),
        (CoreConfig(rows=4, cols=4, seq_len=16, head_dim=32, name="speed_4x4_n16"), 40, 4),
    ]:
        ver = measure_utilization(cfg, heads=heads)
        stim = random_heads(cfg, py_heads, np.random.default_rng(1))
        t0 = time.perf_counter()
        out, _, cycles = run_core_pysim(cfg, stim)
        wall = time.perf_counter() - t0
        ok = bool((out == golden_outputs(cfg, stim)).all())
        rows.append({"core": ver["config"], "simulator": "cocotb + Verilator",
                     "cycles_per_s": ver["cosim_cycles_per_s"],
                     "elements_per_s": ver["cosim_elements_per_s"], "bit_exact": ver["bit_exact"]})
        rows.append({"core": ver["config"], "simulator": "amaranth.sim",
                     "cycles_per_s": cycles / wall, "elements_per_s": out.size / wall,
                     "bit_exact": ok})
        rows.append(_standalone_speed(cfg, heads=16 * heads))
    return {
        "summary": (f"cocotb + Verilator simulates the 8x8 core at {rows[0]['cycles_per_s']:.0f} "
                    f"cycles/s ({rows[0]['elements_per_s']:.0f} checked elements/s) vs "
                    f"{rows[1]['cycles_per_s']:.0f} cycles/s in amaranth.sim."),
        "rows": rows,
        "notes": ("Standalone: the run's own cycles/s report (no Python in the loop). "
                  "Others: wall time of the simulation loop only (Verilator build and golden model "
                  "excluded); one await per cycle, wide packed ports, only the top module "
                  "public to VPI."),
    }


#: Yosys script counting the word-level cells a cycle-based simulator evaluates every cycle:
#: the core flattened, processes and memories kept as word-level cells, identical cells merged.
_WORD_CELLS_SCRIPT = ("read_verilog -sv {verilog}; hierarchy -top {top}; proc; flatten; opt -full; wreduce; "
                      "opt_merge -share_all; opt -full; memory -nomap; opt_clean -purge; tee -q -o {stat} stat -json")

#: Flip-flop cell types of the word-level netlist (:data:`_WORD_CELLS_SCRIPT`).
_FF_CELLS = ("$dff", "$dffe", "$sdff", "$sdffe", "$sdffce", "$adff", "$adffe")


def word_level_cells(verilog: Path, top: str) -> dict:
    """Word-level cells of a Verilog core after Yosys' ``proc; flatten; opt -full`` (merged
    duplicates, no technology mapping): ``{"cells": int, "flip_flops": int, "by_type": {type: int}}``
    (``flip_flops`` counts word-level register cells, not bits)."""
    import json

    from inhibitron.hw.synth_reports import module_stat
    from inhibitron.hw.toolchain import run_yosys

    verilog = Path(verilog)
    stat = f"{top}_word_cells.json"
    run_yosys(_WORD_CELLS_SCRIPT.format(verilog=verilog.name, top=top, stat=stat), cwd=verilog.parent)
    mod = module_stat(json.loads((verilog.parent / stat).read_text()), top)
    by_type = dict(mod.get("num_cells_by_type", {}))
    return {"cells": int(mod["num_cells"]), "flip_flops": sum(by_type.get(t, 0) for t in _FF_CELLS),
            "by_type": by_type}


def bench_standalone_scaling(*, repeats: int = 5) -> dict:
    """Why the standalone testbench runs at the speed it does: simulated cycles per second of
    ``verilator --binary`` against the core's word-level cells, 2x2, 4x4 and 8x8 at n = 128, d = 64.

    Verilator evaluates every cell of the model every cycle, so cycles/s x cells (cell
    evaluations per second) is about constant across sizes: it says how many cells a core
    may have to reach a given cycles/s on this machine. Each core runs about a million cycles
    of random heads at full rate; the binaries run ``repeats`` times, alternating, and the
    median counts.
    """
    from inhibitron.hw.core import CoreConfig

    from .standalone import run, stimulus_heads, write_testbench
    from .standalone_run import build

    shapes = [(2, 2, 4), (4, 4, 16), (8, 8, 64)]  # rows, cols, heads (about 1.06M cycles each)
    with tempfile.TemporaryDirectory(prefix="inhibitron-scaling-") as tmp:
        benches, runners, rows = [], [], []
        for r, c, heads in shapes:
            cfg = CoreConfig(rows=r, cols=c, seq_len=128, head_dim=64, name=f"scale_{r}x{c}")
            bench = write_testbench(cfg, stimulus_heads(cfg, kind="random", heads=heads),
                                    Path(tmp) / cfg.name, stimulus="random")
            benches.append(bench)
            runners.append(build(bench, "verilator"))
            rows.append({"core": f"{r}x{c}, n=128, d=64", "PEs (2 arrays)": 2 * r * c,
                         **{k: v for k, v in word_level_cells(bench.verilog, cfg.name).items()
                            if k != "by_type"}})
        speeds: list[list[float]] = [[] for _ in shapes]
        for _ in range(repeats):
            for i, bench in enumerate(benches):
                res = run(bench, "verilator", runner=runners[i])
                if not res["passed"]:
                    raise RuntimeError(f"the standalone testbench of {bench.top} failed:\n{res['output'][-2000:]}")
                speeds[i].append(res["cycles_per_s"])
                rows[i]["cycles"] = res["cycles"]
    for row, s in zip(rows, speeds):
        row["cycles_per_s"] = float(np.median(s))
        row["cell_evaluations_per_s"] = row["cycles_per_s"] * row["cells"]
    rate = float(np.median([row["cell_evaluations_per_s"] for row in rows]))
    big = rows[-1]
    return {
        "summary": (f"verilator --binary evaluates about {rate:.3g} word-level cells per second on this "
                    f"machine (median over 2x2, 4x4, 8x8; each core within "
                    f"{min(r['cell_evaluations_per_s'] for r in rows) / rate:.2f}-"
                    f"{max(r['cell_evaluations_per_s'] for r in rows) / rate:.2f}x of it). The 8x8 core has "
                    f"{big['cells']} cells and runs at {big['cycles_per_s']:.3g} cycles/s; 1M cycles/s would "
                    f"need at most about {round(rate / 1e6)} cells."),
        "rows": rows,
        "notes": ("cells: Yosys `proc; flatten; opt -full; wreduce; opt_merge -share_all; memory -nomap` "
                  "of the generated core (word-level, duplicates merged, no technology mapping); "
                  "flip_flops: word-level register cells among them. cycles_per_s: the testbench's own "
                  f"count over the executable's wall time, median of {repeats} runs alternating between "
                  "the cores, random heads at full rate, bit-exact. cell_evaluations_per_s = "
                  "cycles_per_s x cells."),
    }
