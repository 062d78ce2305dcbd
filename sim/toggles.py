"""Switching activity of a core: toggles per net of its gate-level netlist, under cosimulation.

The energy study (:mod:`inhibitron.hw.energy`) needs how often each net of a
core switches while it computes real and random heads. This module

1. **maps the core to a LUT4 netlist** with Yosys (:func:`gate_netlist`):
   ``synth -flatten -noalumacc -lut 4`` up to the fine-grained stage, then
   every cell except multipliers (``$mul``) and memories (``$mem_v2``) is
   mapped to gates and ``abc -lut 4`` packs the logic into 4-input LUTs. Its
   nets are the outputs of LUTs, flip-flops, memory read ports and
   multipliers, each with a fan-out. Carry chains become LUTs (on ECP5 they
   are ``CCU2C`` cells, two LUT4s and a carry each), multipliers stay whole
   (a DSP block on the device) and so do memories (block or distributed
   RAM). The netlist keeps the core's ports, so the core's own testbench
   drives it, bit-exact against the golden model as usual;
2. **meters** what toggles cannot show: for every memory port a flip-flop
   that toggles in each cycle the port is enabled, for every multiplier one
   that toggles in each cycle any of its inputs changed, and one that toggles
   every cycle (the cycle count). Their toggle counts are the accesses,
   active multiplies and cycles;
3. **counts toggles** with Verilator's toggle coverage
   (``--coverage-toggle``, written to ``coverage.dat`` at the end of the run;
   no waveform is dumped), :func:`parse_coverage`;
4. **joins** the counts to the netlist (:func:`activity`): toggles per net
   class (``ff``, ``lut``, ``ram``, ``dsp``, ``input``), fan-out-weighted
   toggles, memory accesses in block-RAM blocks, multiplier activity.

Simulation is zero-delay: glitches (transitions that settle within a cycle,
common in carry chains and multipliers) are not seen. Energy per head is
taken as the difference of two runs (``heads`` and ``1`` head, same
stimulus), so reset, pipeline fill and drain cancel: the steady-state
marginal cost of one more head.

:func:`measure` runs it for a point of the efficiency study
(:class:`inhibitron.hw.compare.StudyPoint`, inhibitor or dot-product
baseline) on ``"real"`` (MiniLM Q/K/V, :data:`~inhibitron.sim.stimulus.REAL_VECTORS`)
or ``"random"`` heads. The netlist is :mod:`inhibitron.sim.gate_netlist`, the
coverage parsing and the join :mod:`inhibitron.sim.toggle_activity` (their
names are re-exported here); this module builds, runs and measures.
"""

from __future__ import annotations

import json
from pathlib import Path

from .gate_netlist import GateNetlist, gate_netlist
from .toggle_activity import BRAM_MIN_DEPTH, activity, parse_coverage

__all__ = ["GateNetlist", "gate_netlist", "parse_coverage", "activity", "build_toggle_model",
           "run_component", "measure", "TOGGLE_ARGS", "BRAM_MIN_DEPTH"]

#: Verilator options of the toggle-counting builds (with the X options of the regular ones).
TOGGLE_ARGS = ("--x-assign", "fast", "--x-initial", "fast", "--coverage-toggle",
               "--coverage-max-width", "65536",
               # a flattened gate netlist: false combinational loops through wide ports
               "-Wno-UNOPTFLAT")


def build_toggle_model(netlist: GateNetlist, build_dir):
    """Build a Verilator model of the netlist with toggle coverage (the shared runner)."""
    from .runner import build_model

    return build_model(netlist.verilog, netlist.top, build_dir, verilator_args=TOGGLE_ARGS)


def run_component(runner, top: str, build_dir, *, test_module: str, name: str,
                  extra_env: dict | None = None) -> dict:
    """Run ``test_module`` (a cocotb module) on a toggle build; return its toggle counts."""
    work = Path(build_dir).resolve() / name
    work.mkdir(parents=True, exist_ok=True)
    cov = work / "coverage.dat"
    if cov.exists():
        cov.unlink()
    runner.test(hdl_toplevel=top, hdl_toplevel_lang="verilog", test_module=test_module,
                build_dir=Path(build_dir).resolve() / "sim", test_dir=work,
                extra_env=extra_env or {}, results_xml=str(work / "results.xml"),
                log_file=work / "sim.log")
    if not cov.exists():
        raise RuntimeError(f"the run wrote no coverage.dat (see {work / 'sim.log'})")
    return parse_coverage(cov)


# ----------------------------------------------------------------------------------------
# the efficiency study's cores on real and random heads
# ----------------------------------------------------------------------------------------

def _heads(cfg, data: str, count: int, seed: int):
    import numpy as np

    from .stimulus import REAL_VECTORS, heads_from_npz, random_heads

    rng = np.random.default_rng(seed)
    if data == "real":
        heads = heads_from_npz(cfg, REAL_VECTORS, rng, count=count)
    elif data == "random":
        heads = random_heads(cfg, count, rng, lengths=[cfg.seq_len])
    else:
        raise ValueError(f"data must be 'real' or 'random', not {data!r}")
    if len(heads) < count:
        raise ValueError(f"{data} data has only {len(heads)} heads, not {count}")
    return heads


def _inhibitor_run(point, netlist, build_dir, heads, name):
    from dataclasses import replace

    from .runner import CosimBuild, run_cosim

    cfg = point.build_config()
    runner = _reuse_runner(netlist, build_dir)
    build = CosimBuild(cfg, Path(build_dir).resolve(), "verilator", runner, netlist.verilog)
    # output shift: the average over the valid keys (r = ceil(log2 L))
    heads = [replace(h, out_shift=min(max(int(h.length - 1).bit_length(), 0),
                                      (1 << cfg.shift_bits) - 1)) for h in heads]
    res = run_cosim(build, heads, name=name)
    if not res["passed"]:
        raise AssertionError(f"the gate netlist of {point.tag} is not bit-exact: "
                             f"{res.get('first_mismatches') or res.get('error')}")
    cov = Path(build_dir).resolve() / name / "coverage.dat"
    return parse_coverage(cov)


def _baseline_run(point, netlist, build_dir, heads, name):
    import numpy as np

    from inhibitron.quant.baseline_golden import baseline_attention_int, score_mult_for_scale

    cfg = point.build_config()
    qmax = 1 << (cfg.qk_bits - 1)
    # softmax argument scale of a typical head: |q|, |k| ~ qmax / 3 map to ~1
    M = score_mult_for_scale((3.0 / qmax) ** 2 / np.sqrt(cfg.head_dim), cfg.constants)
    r = cfg.constants.p_bits - 1            # h in V's LSBs
    stim = []
    for h in heads:
        hh = baseline_attention_int(h.q, h.k, h.v, h.length, score_mult=M, out_shift=r,
                                    qk_bits=cfg.qk_bits, v_bits=cfg.v_bits,
                                    out_bits=cfg.out_bits, constants=cfg.constants)
        stim.append({"q": h.q.tolist(), "k": h.k.tolist(), "v": h.v.tolist(), "L": int(h.length),
                     "M": M, "r": r, "h": hh.tolist()})
    work = Path(build_dir).resolve() / name
    work.mkdir(parents=True, exist_ok=True)
    stim_file, result_file = work / "stimulus.json", work / "result.json"
    stim_file.write_text(json.dumps({"config": cfg.to_dict(), "stall": False, "seed": 0,
                                     "heads": stim}))
    if result_file.exists():
        result_file.unlink()
    runner = _reuse_runner(netlist, build_dir)
    toggles = run_component(runner, netlist.top, build_dir, test_module="inhibitron.sim.tb_baseline",
                            name=name, extra_env={"BASELINE_STIM": str(stim_file),
                                                  "BASELINE_RESULT": str(result_file)})
    res = json.loads(result_file.read_text()) if result_file.exists() else {"stalled": "no result"}
    if res.get("stalled") or res.get("mismatch_count"):
        raise AssertionError(f"the gate netlist of {point.tag} is not bit-exact: "
                             f"{res.get('stalled') or res['mismatches'][:5]}")
    return toggles


_RUNNERS: dict = {}


def _reuse_runner(netlist, build_dir):
    """The toggle build of ``netlist`` in ``build_dir``: built once, reused while the
    netlist and the Verilator options are unchanged (a stamp holds their hash)."""
    import hashlib

    build_dir = Path(build_dir).resolve()
    key = str(build_dir)
    digest = hashlib.sha256(Path(netlist.verilog).read_bytes()
                            + repr(TOGGLE_ARGS).encode()).hexdigest()
    stamp = build_dir / "sim" / "toggle_build.sha256"
    if key in _RUNNERS and _RUNNERS[key][0] == digest:
        return _RUNNERS[key][1]
    if (stamp.exists() and stamp.read_text() == digest
            and (build_dir / "sim" / netlist.top).exists()):
        from cocotb_tools.runner import get_runner

        from .toolchain import setup_verilator

        setup_verilator()
        runner = get_runner("verilator")
    else:
        runner = build_toggle_model(netlist, build_dir)
        stamp.write_text(digest)
    _RUNNERS[key] = (digest, runner)
    return runner


def measure(point, data: str, build_dir, *, heads: int = 3, seed: int = 0) -> dict:
    """Activity of one head of ``point`` on ``data`` (``"real"``/``"random"``), steady state.

    Runs the gate netlist twice under its testbench (bit-exact against the
    golden model): the first head alone, then ``heads`` heads back to back
    at full rate; returns the :func:`activity` of the difference divided by
    ``heads - 1`` (counts per head), with both runs' raw activity.
    """
    if heads < 2:
        raise ValueError(f"heads must be at least 2, not {heads!r}")
    build_dir = Path(build_dir).resolve()
    cfg = point.build_config()
    if point.kind == "inhibitor":
        from inhibitron.hw.generate import generate

        gen = generate(cfg, build_dir / "rtl")
        rtl, top, run = gen.verilog, cfg.name, _inhibitor_run
    else:
        from inhibitron.hw.generate import convert_verilog

        (build_dir / "rtl").mkdir(parents=True, exist_ok=True)
        rtl = build_dir / "rtl" / f"{cfg.name}.v"
        rtl.write_text(convert_verilog(point.build(), name=cfg.name))
        top, run = cfg.name, _baseline_run
    netlist = gate_netlist(rtl, top, build_dir / "gates")
    # the same heads for both cores: made for the inhibitor's configuration of this point
    from dataclasses import replace

    hs = _heads(replace(point, kind="inhibitor").build_config(), data, heads, seed)
    one = activity(netlist, run(point, netlist, build_dir, hs[:1], f"{data}_1"))
    many = activity(netlist, run(point, netlist, build_dir, hs, f"{data}_{heads}"))
    per = _diff(many, one, heads - 1)
    return {"per_head": per, "one": one, "many": many, "heads": heads, "data": data,
            "netlist": {"ff": one["ff_cells"], "lut4": one["lut_cells"], "mul": one["mul_cells"]}}


def _diff(a: dict, b: dict, k: int) -> dict:
    out = {}
    for key, va in a.items():
        vb = b[key]
        if isinstance(va, dict):
            out[key] = {c: (va[c] - vb[c]) / k for c in va}
        elif key in ("ff_cells", "lut_cells", "mul_cells"):
            out[key] = va
        elif key == "nets_counted":
            continue
        else:
            out[key] = (va - vb) / k
    return out


# ----------------------------------------------------------------------------------------
# a plain clocked run (simulator side), for blocks without a stream testbench
# ----------------------------------------------------------------------------------------

CYCLES_ENV = "INHIBITRON_TOGGLE_CYCLES"

try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import RisingEdge
except ImportError:  # pragma: no cover - pytest side without cocotb
    cocotb = None

if cocotb is not None:

    @cocotb.test()
    async def clocked_run(dut):
        """Hold ``rst`` for 2 cycles, then run ``$INHIBITRON_TOGGLE_CYCLES`` cycles; inputs stay 0."""
        import os

        cycles = int(os.environ[CYCLES_ENV])
        dut.rst.value = 1
        Clock(dut.clk, 10, unit="ns").start()
        for _ in range(2):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        for _ in range(cycles):
            await RisingEdge(dut.clk)
