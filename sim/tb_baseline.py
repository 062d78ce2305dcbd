"""cocotb testbench of the dot-product baseline core, bit-exact against its golden model.

Two parts, as in cocotb's ``examples/matrix_multiplier``:

* the cocotb test :func:`baseline_core_test` (runs inside the simulator): the
  baseline's port names and stimulus handed to the shared drivers, monitor,
  scoreboard and cycle loop of :mod:`inhibitron.sim.streams` (a descriptor
  driver, three row drivers with random idle cycles, an output monitor with
  random back-pressure; tolerance zero against
  :func:`inhibitron.quant.baseline_golden.baseline_attention_int`). The first
  head runs at full rate (no idle cycles, no back-pressure) and measures the
  cycles from its descriptor handshake to its last output row; a run without
  stalls measures the cycles between consecutive heads' last rows (the
  steady state of :meth:`BaselineConfig.cycles_per_head`).
* :func:`run_baseline_cosim` (runs in pytest or a script): emits the Verilog of
  a :class:`~inhibitron.hw.baseline.DotProductAttentionCore`, builds it with
  the shared runner (:func:`inhibitron.sim.runner.build_model`, the project's
  Verilator waivers) and runs the test; stimulus and results travel as JSON.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

__all__ = ["run_baseline_cosim", "baseline_core_test"]

_TEST_MODULE = "inhibitron.sim.tb_baseline"
_STIM_ENV, _RESULT_ENV = "BASELINE_STIM", "BASELINE_RESULT"


# ----------------------------------------------------------------------------------------
# pytest side
# ----------------------------------------------------------------------------------------

def _stimulus(config, heads: int, seed: int) -> list[dict]:
    """``heads + 1`` heads (head 0: the full-rate timing head) with their golden outputs.

    Head 1 has full valid length ``n``, head 2 ``L = 1`` and the format
    extremes, head 3 the sharpest softmax; the rest random ``L``, ``M``, ``r``.
    """
    import numpy as np

    from inhibitron.quant.baseline_golden import baseline_attention_int, score_mult_for_scale

    n, d = config.seq_len, config.head_dim
    rng = np.random.default_rng(seed)
    qmax, vmax = 1 << (config.qk_bits - 1), 1 << (config.v_bits - 1)
    stim = []
    for h in range(heads + 1):
        q = rng.integers(-qmax, qmax, (n, d))
        k = rng.integers(-qmax, qmax, (n, d))
        v = rng.integers(-vmax, vmax, (n, d))
        if h == 2:  # format extremes
            q[0, :] = -qmax
            k[0, :] = -qmax
            v[:, 0] = -vmax
            v[:, -1] = vmax - 1
        L = n if h <= 1 else (1 if h == 2 else int(rng.integers(1, n + 1)))
        scale = (rng.uniform(1, 6) / qmax) ** 2 / np.sqrt(d)
        M = score_mult_for_scale(scale, config.constants)
        if h == 3:
            M = (1 << config.constants.m_bits) - 1  # sharpest softmax
        r = [7, 7, 0, 9][h] if h < 4 else int(rng.integers(0, config.out_shift_max + 1))
        hh = baseline_attention_int(q, k, v, L, score_mult=M, out_shift=r,
                                    qk_bits=config.qk_bits, v_bits=config.v_bits,
                                    out_bits=config.out_bits, constants=config.constants)
        stim.append({"q": q.tolist(), "k": k.tolist(), "v": v.tolist(), "L": L, "M": M, "r": r,
                     "h": hh.tolist()})
    return stim


def run_baseline_cosim(config, *, build_dir, heads: int = 3, seed: int = 0,
                       stall: bool = True) -> dict:
    """Build and run the bit-exact cosimulation of a baseline core.

    The model is built once and run twice on the same stimulus: every head at
    full rate (no idle cycles, no back-pressure), which measures the
    steady-state cycles per head, then (``stall=True``) with random idle
    cycles on the inputs and back-pressure on the output after the first head.

    Parameters
    ----------
    config : BaselineConfig
    build_dir : path
        Build directory (one per configuration).
    heads : int
        Heads to run back to back after the first head (see
        :func:`_stimulus`); codes are random with the format extremes mixed in.
    seed : int
        Stimulus seed.
    stall : bool
        Also run with idle cycles and back-pressure.

    Returns
    -------
    dict
        The full-rate run: ``{"mismatches": [...], "heads": int,
        "cycles_full_rate": int`` (descriptor handshake of head 0 to its last
        row), ``"head_cycles": [...]`` (cycles between the last rows of
        consecutive heads), ``"cycles_formula": int``
        (:meth:`BaselineConfig.cycles_per_head`), ``"cycles_per_two_heads":
        int``, ``"rows_checked": int, "elements_compared": int}``; with
        ``stall``, the stalled run's result under ``"backpressure"``.

    Raises
    ------
    AssertionError
        A row mismatches (the message lists the first ones), or the core stalled.
    """
    from inhibitron.hw.baseline import DotProductAttentionCore
    from inhibitron.hw.generate import convert_verilog

    from .runner import build_model

    build = Path(build_dir).resolve()
    build.mkdir(parents=True, exist_ok=True)
    top = config.name
    vfile = build / f"{top}.v"
    text = convert_verilog(DotProductAttentionCore(config), name=top)
    if not vfile.exists() or vfile.read_text() != text:
        vfile.write_text(text)
    stimulus = _stimulus(config, heads, seed)
    runner = build_model(vfile, top, build)
    results = {}
    for mode in ("full", "backpressure") if stall else ("full",):
        stim_file = build / f"stimulus_{mode}.json"
        result_file = build / f"result_{mode}.json"
        stim_file.write_text(json.dumps({"config": config.to_dict(),
                                         "stall": mode == "backpressure", "seed": seed,
                                         "heads": stimulus}))
        if result_file.exists():
            result_file.unlink()
        runner.test(hdl_toplevel=top, hdl_toplevel_lang="verilog", test_module=_TEST_MODULE,
                    build_dir=build / "sim", test_dir=build,
                    extra_env={_STIM_ENV: str(stim_file), _RESULT_ENV: str(result_file)},
                    log_file=build / f"sim_{mode}.log")
        if not result_file.exists():
            raise AssertionError(f"the cocotb test did not finish; see {build / f'sim_{mode}.log'}")
        res = json.loads(result_file.read_text())
        res["cycles_formula"] = config.cycles_per_head()
        res["cycles_per_two_heads"] = config.cycles_per_two_heads
        if res["stalled"]:
            raise AssertionError(f"{mode}: {res['stalled']}")
        if res["mismatches"]:
            raise AssertionError(f"{mode}: {len(res['mismatches'])} mismatching codes; first: "
                                 f"{res['mismatches'][:5]}")
        results[mode] = res
    out = results["full"]
    if stall:
        out["backpressure"] = results["backpressure"]
    return out


# ----------------------------------------------------------------------------------------
# simulator side
# ----------------------------------------------------------------------------------------

try:
    import cocotb
    from cocotb.clock import Clock
except ImportError:  # pragma: no cover - pytest side without cocotb
    cocotb = None


if cocotb is not None:

    @cocotb.test()
    async def baseline_core_test(dut):
        """Drive every head of the stimulus file; compare every output code with the golden model."""
        import numpy as np

        from inhibitron.hw.baseline_config import BaselineConfig

        from .stimulus import pack_rows
        from .streams import (
            CLOCK_NS,
            Scoreboard,
            StreamDriver,
            StreamMonitor,
            StreamStall,
            run_streams,
            stall_bound,
        )

        stim = json.loads(Path(os.environ[_STIM_ENV]).read_text())
        cfg = BaselineConfig.from_dict(stim["config"])
        heads = stim["heads"]
        n = cfg.seq_len
        rng = random.Random(stim["seed"])
        idle, stall = (0.25, 0.3) if stim["stall"] else (0.0, 0.0)
        bits = {"q": cfg.qk_bits, "k": cfg.qk_bits, "v": cfg.v_bits}

        def driver(name, beats, calm):
            return StreamDriver(name, data=getattr(dut, f"{name}__payload"),
                                valid=getattr(dut, f"{name}__valid"),
                                ready=getattr(dut, f"{name}__ready"), beats=beats,
                                idle_prob=idle, rng=rng, calm_beats=calm)

        descs = [cfg.pack_descriptor(length=h["L"], score_mult=h["M"], shift=h["r"])
                 for h in heads]
        drivers = [driver("desc", descs, 1)] + [
            driver(s, [b for h in heads for b in pack_rows(np.array(h[s]), bits[s])], n)
            for s in "qkv"]
        sb = Scoreboard(np.array([h["h"] for h in heads]), cfg.out_bits, max_report=50)
        mon = StreamMonitor("h", data=dut.h__payload, valid=dut.h__valid, ready=dut.h__ready,
                            last=None, scoreboard=sb, stall_prob=stall, rng=rng, calm_heads=1)

        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        bound = stall_bound(cfg.cycles_per_head(), seq_len=n, head_dim=cfg.head_dim,
                            idle_prob=idle, stall_prob=stall)
        stalled = None
        try:
            await run_streams(dut, drivers=drivers, monitor=mon, stall_cycles=bound)
        except StreamStall as exc:
            stalled = str(exc)
        full_rate = (mon.last_cycles[0] - drivers[0].taken_cycles[0]
                     if mon.last_cycles and drivers[0].taken_cycles else None)
        Path(os.environ[_RESULT_ENV]).write_text(json.dumps({
            "mismatches": sb.report + [{"error": e} for e in sb.last_errors[:10]],
            "mismatch_count": sb.mismatches, "heads": len(heads),
            "rows_checked": sb.compared // cfg.head_dim, "elements_compared": sb.compared,
            "cycles_full_rate": full_rate,
            "head_cycles": [b - a for a, b in zip(mon.last_cycles, mon.last_cycles[1:])],
            "stalled": stalled}))
        assert stalled is None, stalled
        assert sb.mismatches == 0 and not sb.last_errors, sb.summary() + str(sb.last_errors[:5])
