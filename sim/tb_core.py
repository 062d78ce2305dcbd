"""cocotb testbench of the generated AXI-Stream inhibitor-attention core.

The core-specific part only: the port names, the stimulus file, the model
(:func:`inhibitron.sim.stimulus.golden_outputs`, i.e. ``quant.golden``,
precomputed before the clock starts) and the result file. Drivers, monitor,
scoreboard and the cycle loop (with its stall detection) are the shared
ones of :mod:`inhibitron.sim.streams`.

Parameters come from the JSON file named by ``INHIBITRON_TB_PARAMS``::

    {"config": {...CoreConfig...}, "stimulus": "heads.npz", "result": "result.json",
     "idle_prob": 0.0, "stall_prob": 0.0, "seed": 0, "max_report": 20,
     "stall_cycles": null}

and the result (elements compared, mismatches, cycles per head, ...) is
written as JSON to ``result``; the test fails on any mismatch and when the
core stalls (no beat for ``stall_cycles``, by default
:func:`~inhibitron.sim.streams.stall_bound` of the cycle formula).
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock

from inhibitron.hw.config import CoreConfig
from inhibitron.sim.stimulus import Head, golden_outputs, pack_desc, pack_rows
from inhibitron.sim.streams import (
    CLOCK_NS,
    Scoreboard,
    StreamDriver,
    StreamMonitor,
    StreamStall,
    run_streams,
    stall_bound,
)

PARAMS_ENV = "INHIBITRON_TB_PARAMS"


def load_heads(path) -> list[Head]:
    """Heads saved by :func:`save_heads`."""
    z = np.load(path)
    labels = [str(x) for x in z["label"]] if "label" in z else ["?"] * len(z["q"])
    shifts = z["out_shift"] if "out_shift" in z else np.zeros(len(z["q"]), dtype=np.int64)
    return [Head(z["q"][i], z["k"][i], z["v"][i], int(z["length"][i]), int(z["theta"][i]),
                 labels[i], int(shifts[i])) for i in range(len(z["q"]))]


def save_heads(path, heads: list[Head]) -> None:
    """Save heads as an ``.npz`` (the testbench's stimulus file)."""
    np.savez(path, q=np.stack([h.q for h in heads]), k=np.stack([h.k for h in heads]),
             v=np.stack([h.v for h in heads]), length=np.array([h.length for h in heads]),
             theta=np.array([h.theta for h in heads]),
             out_shift=np.array([h.out_shift for h in heads], dtype=np.int64),
             label=np.array([h.label for h in heads]))


@cocotb.test()
async def core_bit_exact(dut):
    """Stream every head through the core; compare every output bit with quant.golden."""
    with open(os.environ[PARAMS_ENV], encoding="utf-8") as fh:
        params = json.load(fh)
    cfg = CoreConfig.from_dict(params["config"])
    heads = load_heads(params["stimulus"])
    expected = golden_outputs(cfg, heads)               # the model, precomputed
    rng = random.Random(params.get("seed", 0))
    idle, stall = params.get("idle_prob", 0.0), params.get("stall_prob", 0.0)

    descs = [pack_desc(cfg, h) for h in heads]      # {shift r, theta, L} per head

    def driver(prefix, beats):
        return StreamDriver(prefix, data=getattr(dut, f"{prefix}_tdata"),
                            valid=getattr(dut, f"{prefix}_tvalid"),
                            ready=getattr(dut, f"{prefix}_tready"), beats=beats,
                            idle_prob=idle, rng=rng)

    for prefix in ("s_axis_q", "s_axis_k", "s_axis_v", "s_axis_desc"):
        getattr(dut, f"{prefix}_tlast").value = 0
    drivers = [
        driver("s_axis_q", [b for h in heads for b in pack_rows(h.q, cfg.qk_bits)]),
        driver("s_axis_k", [b for h in heads for b in pack_rows(h.k, cfg.qk_bits)]),
        driver("s_axis_v", [b for h in heads for b in pack_rows(h.v, cfg.v_bits)]),
        driver("s_axis_desc", descs),
    ]
    sb = Scoreboard(expected, cfg.out_bits, params.get("max_report", 20))
    mon = StreamMonitor("m_axis_h", data=dut.m_axis_h_tdata, valid=dut.m_axis_h_tvalid,
                        ready=dut.m_axis_h_tready, last=dut.m_axis_h_tlast, scoreboard=sb,
                        stall_prob=stall, rng=rng)

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    bound = params.get("stall_cycles") or stall_bound(
        cfg.cycles_per_head, seq_len=cfg.seq_len, head_dim=cfg.head_dim, idle_prob=idle,
        stall_prob=stall)
    stalled = None
    try:
        run = await run_streams(dut, drivers=drivers, monitor=mon, stall_cycles=bound)
    except StreamStall as exc:
        stalled, run = str(exc), {"cycles": None, "wall_s": None, "cycles_per_s": None}

    lasts = mon.last_cycles
    steady = [b - a for a, b in zip(lasts, lasts[1:])]
    wall = run["wall_s"]
    result = {
        "config": cfg.to_dict(),
        "heads": len(heads),
        "labels": sorted(set(h.label for h in heads)),
        "elements_compared": sb.compared,
        "mismatches": sb.mismatches,
        "first_mismatches": sb.report,
        "tlast_errors": sb.last_errors[:10],
        "cycles": run["cycles"],
        "head_done_cycles": lasts,
        "cycles_per_head": steady,
        "timed_out": stalled is not None,
        "stalled": stalled,
        "wall_s": wall,
        "cycles_per_s": run["cycles_per_s"],
        "elements_per_s": sb.compared / wall if wall else None,
        "idle_prob": idle,
        "stall_prob": stall,
    }
    with open(params["result"], "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    assert stalled is None, stalled
    assert sb.mismatches == 0, sb.summary()
    assert not sb.last_errors, sb.last_errors[:5]
