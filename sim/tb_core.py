"""cocotb testbench of the generated AXI-Stream inhibitor-attention core.

Structure (STYLE.md): **drivers** (one per input stream: Q, K, V, descriptor)
and a **monitor** (H stream) are cycle-level state machines stepped by one
coroutine, a **model** (:func:`inhibitron.sim.stimulus.golden_outputs`, i.e.
``quant.golden``) precomputes every expected row before the clock starts, and
a **scoreboard** compares each received row with its expectation as it
arrives and keeps the first mismatches by (head, row, column) with both
values.

Speed (DESIGN.md): one ``await FallingEdge(clk)`` per cycle. At the falling
edge every output of the core is settled, and ``tready``/``tvalid`` of the
core are register outputs that do not depend combinationally on the
testbench's inputs, so the testbench decides there which beats the next
rising edge transfers and writes the inputs for that edge. Ports are wide
packed vectors (a whole row per beat); handles are resolved once.

Parameters come from the JSON file named by ``INHIBITRON_TB_PARAMS``::

    {"config": {...CoreConfig...}, "stimulus": "heads.npz", "result": "result.json",
     "idle_prob": 0.0, "stall_prob": 0.0, "seed": 0, "max_report": 20}

and the result (elements compared, mismatches, cycles per head, ...) is
written as JSON to ``result``; the test fails on any mismatch.
"""

from __future__ import annotations

import json
import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, First

from inhibitron.hw.core import CoreConfig
from inhibitron.sim.stimulus import Head, golden_outputs, pack_desc, pack_rows

PARAMS_ENV = "INHIBITRON_TB_PARAMS"


def reader(handle, *, wide: bool = False):
    """A fast zero-argument reader of ``handle`` as an unsigned int.

    Uses the GPI handle directly (resolved once) instead of building a
    ``LogicArray`` per read; falls back to the public API.
    """
    raw = getattr(handle, "_handle", None)
    if raw is None or not hasattr(raw, "get_signal_val_binstr"):
        return lambda: int(handle.value.to_unsigned()) if wide else int(handle.value == 1)
    if wide:
        binstr = raw.get_signal_val_binstr
        return lambda: int(binstr(), 2)
    return raw.get_signal_val_long


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


class StreamDriver:
    """Drives an AXI-Stream slave port with a list of beats, optional idle cycles."""

    def __init__(self, dut, prefix: str, beats: list[int], idle_prob: float, rng: random.Random):
        self.data = getattr(dut, f"{prefix}_tdata")
        self.valid = getattr(dut, f"{prefix}_tvalid")
        self.ready = getattr(dut, f"{prefix}_tready")
        self.read_ready = reader(self.ready)
        self.beats = beats
        self.pos = 0
        self.idle_prob = idle_prob
        self.rng = rng
        self.presenting = False
        self.valid_now = 0
        self.valid.value = 0
        getattr(dut, f"{prefix}_tlast").value = 0

    def step(self) -> None:
        """At the falling edge: write the inputs that the coming rising edge samples.

        The core's ``tready`` is a register output, so reading it now tells
        whether the beat presented now is transferred by the coming edge.
        Once presented, a beat stays until it is transferred (AXI rule); idle
        cycles are only inserted between beats.
        """
        if not self.presenting:
            if self.pos >= len(self.beats) or (self.idle_prob and self.rng.random() < self.idle_prob):
                if self.valid_now:
                    self.valid.value = 0
                    self.valid_now = 0
                return
            self.data.value = self.beats[self.pos]
            if not self.valid_now:
                self.valid.value = 1
                self.valid_now = 1
            self.presenting = True
        if self.read_ready():
            self.pos += 1
            self.presenting = False

    @property
    def done(self) -> bool:
        return self.pos >= len(self.beats)

    @property
    def blocked(self) -> bool:
        """Done, or holding a beat the core does not accept (nothing to decide)."""
        return self.pos >= len(self.beats) or (self.presenting and not self.read_ready())


class Scoreboard:
    """Compares received H rows with the model's rows; keeps the first mismatches."""

    def __init__(self, expected: np.ndarray, out_bits: int, max_report: int):
        self.expected = expected                       # (H, n, d) int64
        self.heads, self.n, self.d = expected.shape
        self.out_bits = out_bits
        self.mask = (1 << out_bits) - 1
        self.exp_packed = [pack_rows(expected[h], out_bits) for h in range(self.heads)]
        self.compared = 0
        self.mismatches = 0
        self.report: list[dict] = []
        self.max_report = max_report
        self.last_errors: list[str] = []

    def check(self, head: int, row: int, value: int, last: int) -> None:
        self.compared += self.d
        if row == self.n - 1 and not last:
            self.last_errors.append(f"head {head}: tlast missing on row {row}")
        if row != self.n - 1 and last:
            self.last_errors.append(f"head {head}: tlast on row {row}")
        if value == self.exp_packed[head][row]:
            return
        bits = self.out_bits
        for col in range(self.d):
            got = (value >> (col * bits)) & self.mask
            if got >> (bits - 1):
                got -= 1 << bits
            want = int(self.expected[head, row, col])
            if got != want:
                self.mismatches += 1
                if len(self.report) < self.max_report:
                    self.report.append({"head": head, "row": row, "col": col,
                                        "got": got, "expected": want})


class StreamMonitor:
    """Samples the H master port; applies random backpressure."""

    def __init__(self, dut, scoreboard: Scoreboard, stall_prob: float, rng: random.Random):
        self.data = dut.m_axis_h_tdata
        self.valid = dut.m_axis_h_tvalid
        self.last = dut.m_axis_h_tlast
        self.ready = dut.m_axis_h_tready
        self.read_valid = reader(self.valid)
        self.read_last = reader(self.last)
        self.read_data = reader(self.data, wide=True)
        self.sb = scoreboard
        self.stall_prob = stall_prob
        self.rng = rng
        self.head = 0
        self.row = 0
        self.ready_now = 0
        self.last_cycles: list[int] = []
        self.ready.value = 0

    def step(self, cycle: int) -> None:
        """At the falling edge: decide ``tready`` for the coming edge and take the beat."""
        ready = 0 if (self.stall_prob and self.rng.random() < self.stall_prob) else 1
        if ready != self.ready_now:
            self.ready.value = ready
            self.ready_now = ready
        if ready and self.read_valid():
            self.sb.check(self.head, self.row, self.read_data(), self.read_last())
            self.row += 1
            if self.row == self.sb.n:
                self.last_cycles.append(cycle)
                self.row = 0
                self.head += 1

    @property
    def done(self) -> bool:
        return self.head >= self.sb.heads


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
    drivers = [
        StreamDriver(dut, "s_axis_q", [b for h in heads for b in pack_rows(h.q, cfg.qk_bits)],
                     idle, rng),
        StreamDriver(dut, "s_axis_k", [b for h in heads for b in pack_rows(h.k, cfg.qk_bits)],
                     idle, rng),
        StreamDriver(dut, "s_axis_v", [b for h in heads for b in pack_rows(h.v, cfg.v_bits)],
                     idle, rng),
        StreamDriver(dut, "s_axis_desc", descs, idle, rng),
    ]
    sb = Scoreboard(expected, cfg.out_bits, params.get("max_report", 20))
    mon = StreamMonitor(dut, sb, stall, rng)

    Clock(dut.clk, 10, unit="ns").start()
    clk_fall = FallingEdge(dut.clk)
    dut.rst.value = 1
    for _ in range(3):
        await clk_fall
    dut.rst.value = 0

    # When every driver is blocked and no output is offered, nothing can change until
    # a tready or tvalid of the core changes: wait for that instead of each cycle.
    wake = First(*[drv.ready.value_change for drv in drivers], dut.m_axis_h_tvalid.value_change)
    max_cycles = params.get("max_cycles") or (len(heads) + 2) * (
        cfg.cycles_per_head + 4 * cfg.seq_len * cfg.head_dim + 2000) * (1 + int(4 * (idle + stall)))
    cycle = 0
    wall = time.perf_counter()
    t_start = get_sim_time("ns")
    while not mon.done:
        if all(drv.blocked for drv in drivers) and not mon.read_valid():
            await wake
            await clk_fall
            cycle = int(get_sim_time("ns") - t_start) // 10
        else:
            await clk_fall
            cycle += 1
        for drv in drivers:
            drv.step()
        mon.step(cycle)
        if cycle > max_cycles:
            break
    wall = time.perf_counter() - wall

    lasts = mon.last_cycles
    steady = [b - a for a, b in zip(lasts, lasts[1:])]
    result = {
        "config": cfg.to_dict(),
        "heads": len(heads),
        "labels": sorted(set(h.label for h in heads)),
        "elements_compared": sb.compared,
        "mismatches": sb.mismatches,
        "first_mismatches": sb.report,
        "tlast_errors": sb.last_errors[:10],
        "cycles": cycle,
        "head_done_cycles": lasts,
        "cycles_per_head": steady,
        "timed_out": not mon.done,
        "wall_s": wall,
        "cycles_per_s": cycle / wall if wall > 0 else None,
        "elements_per_s": sb.compared / wall if wall > 0 else None,
        "idle_prob": idle,
        "stall_prob": stall,
    }
    with open(params["result"], "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    assert not result["timed_out"], (
        f"timed out after {cycle} cycles: {mon.head} of {len(heads)} heads received")
    assert sb.mismatches == 0, (
        f"{sb.mismatches} mismatching elements of {sb.compared}; first: " +
        "; ".join(f"head {m['head']} row {m['row']} col {m['col']}: got {m['got']}, "
                  f"expected {m['expected']}" for m in sb.report))
    assert not sb.last_errors, sb.last_errors[:5]
