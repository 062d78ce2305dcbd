"""Stream drivers, monitor, scoreboard and the cycle loop shared by the cocotb testbenches.

One job: the simulator side of every bit-exact cosimulation. A testbench
(:mod:`inhibitron.sim.tb_core`, :mod:`inhibitron.sim.tb_baseline`) names its
core's ports, packs its stimulus into beats, hands its golden rows to a
:class:`Scoreboard` and calls :func:`run_streams`; everything else is here:

* :class:`StreamDriver` -- one valid/ready input stream, a list of beats,
  optional random idle cycles between beats (never inside one: once
  presented, a beat stays until it is taken, the AXI-Stream rule);
* :class:`StreamMonitor` -- the output stream, optional random backpressure,
  each beat handed to the scoreboard;
* :class:`Scoreboard` -- compares every received row with its expectation
  and keeps the first mismatches by (head, row, column) with both values;
* :func:`run_streams` -- one ``await FallingEdge(clk)`` per cycle (at the
  falling edge every output of the core is settled; the cores' ``ready`` and
  ``valid`` outputs are registers, so the testbench decides there what the
  next rising edge transfers), sleeping while nothing can change, and
  failing at once with :class:`StreamStall` -- naming the stalled streams and
  the cycle -- when no beat moves for ``stall_cycles``.

Speed (measured on these machines): a bare ``await`` costs about 3 us and a
wide handle write about 1.6 us, so ports are whole packed rows, handles are
resolved once and read through the GPI handle directly (:func:`reader`).
"""

from __future__ import annotations

import random
import time

import numpy as np
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, First, Timer

from .stimulus import pack_rows

__all__ = ["Scoreboard", "StreamDriver", "StreamMonitor", "StreamStall", "reader", "run_streams",
           "stall_bound"]

#: Clock period of every testbench (ns).
CLOCK_NS = 10


class StreamStall(AssertionError):
    """No beat moved on any stream for the configured bound of cycles."""


def reader(handle, *, wide: bool = False):
    """A fast zero-argument reader of ``handle`` as an unsigned int.

    Uses the GPI handle directly (resolved once) instead of building a
    ``LogicArray`` per read; falls back to the public API. A bit that is X or
    Z reads as an error from the public API (never as a silent 0).
    """
    raw = getattr(handle, "_handle", None)
    if raw is None or not hasattr(raw, "get_signal_val_binstr"):
        return lambda: int(handle.value.to_unsigned()) if wide else int(handle.value == 1)
    if wide:
        binstr = raw.get_signal_val_binstr
        return lambda: int(binstr(), 2)
    return raw.get_signal_val_long


class StreamDriver:
    """Drives one valid/ready input stream with a list of beats.

    Parameters
    ----------
    name : str
        The stream's name in messages.
    data, valid, ready : cocotb handles
        Payload, valid (driven) and ready (read) of the port.
    beats : list[int]
        Packed payloads, in order.
    idle_prob : float
        Probability of an idle cycle before presenting a beat (0 <= p < 1).
    rng : random.Random
    calm_beats : int
        The first ``calm_beats`` beats are sent at full rate (no idle cycles),
        e.g. so that the first head measures the full-rate cycle count.
    """

    def __init__(self, name: str, *, data, valid, ready, beats: list[int], idle_prob: float,
                 rng: random.Random, calm_beats: int = 0):
        self.name = name
        self.data, self.valid, self.ready = data, valid, ready
        self.read_ready = reader(ready)
        self.beats = beats
        self.pos = 0
        self.idle_prob = idle_prob
        self.rng = rng
        self.calm_beats = calm_beats
        self.presenting = False
        self.valid_now = 0
        self.taken_cycles: list[int] = []
        valid.value = 0

    def step(self, cycle: int) -> bool:
        """At the falling edge: write what the coming rising edge samples; True if a beat is taken."""
        if not self.presenting:
            idle = (self.idle_prob and self.pos >= self.calm_beats
                    and self.rng.random() < self.idle_prob)
            if self.pos >= len(self.beats) or idle:
                if self.valid_now:
                    self.valid.value = 0
                    self.valid_now = 0
                return False
            self.data.value = self.beats[self.pos]
            if not self.valid_now:
                self.valid.value = 1
                self.valid_now = 1
            self.presenting = True
        if self.read_ready():
            self.pos += 1
            self.presenting = False
            self.taken_cycles.append(cycle)
            return True
        return False

    @property
    def done(self) -> bool:
        return self.pos >= len(self.beats)

    @property
    def blocked(self) -> bool:
        """Done, or holding a beat the core does not accept (nothing to decide)."""
        return self.pos >= len(self.beats) or (self.presenting and not self.read_ready())

    def state(self) -> str:
        """One phrase for stall messages."""
        if self.done:
            return f"{self.name}: all {len(self.beats)} beats sent"
        return (f"{self.name}: beat {self.pos} of {len(self.beats)} "
                f"{'presented, ready low' if self.presenting else 'not presented'}")


class Scoreboard:
    """Compares received rows with the model's rows; keeps the first mismatches.

    Parameters
    ----------
    expected : ndarray, (heads, n, d) int
        The golden model's output codes.
    out_bits : int
        Signed width of one output code.
    max_report : int
        How many mismatching elements to keep with their values.
    """

    def __init__(self, expected: np.ndarray, out_bits: int, max_report: int = 20):
        self.expected = np.asarray(expected, dtype=np.int64)   # (H, n, d)
        self.heads, self.n, self.d = self.expected.shape
        self.out_bits = out_bits
        self.mask = (1 << out_bits) - 1
        self.exp_packed = [pack_rows(self.expected[h], out_bits) for h in range(self.heads)]
        self.compared = 0
        self.mismatches = 0
        self.report: list[dict] = []
        self.max_report = max_report
        self.last_errors: list[str] = []

    def check(self, head: int, row: int, value: int, last: int) -> None:
        """Compare one row (``value``: ``d`` packed codes) and its ``last`` flag."""
        self.compared += self.d
        if row == self.n - 1 and not last:
            self.last_errors.append(f"head {head}: last missing on row {row}")
        if row != self.n - 1 and last:
            self.last_errors.append(f"head {head}: last on row {row}")
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

    def summary(self) -> str:
        """The failure message: count and the first mismatches by index."""
        return (f"{self.mismatches} mismatching elements of {self.compared}; first: " +
                "; ".join(f"head {m['head']} row {m['row']} col {m['col']}: got {m['got']}, "
                          f"expected {m['expected']}" for m in self.report))


class StreamMonitor:
    """Takes the output stream's beats into a :class:`Scoreboard`; random backpressure.

    Parameters
    ----------
    name : str
        The stream's name in messages.
    data, valid, ready : cocotb handles
        Payload (read), valid (read) and ready (driven).
    last : cocotb handle or None
        A separate ``last`` port; ``None`` when ``last`` is the payload bit
        just above the row (``bit d * out_bits``).
    scoreboard : Scoreboard
    stall_prob : float
        Probability of holding ``ready`` low in a cycle (0 <= p < 1).
    rng : random.Random
    calm_heads : int
        No backpressure until this many heads are received.
    """

    def __init__(self, name: str, *, data, valid, ready, last, scoreboard: Scoreboard,
                 stall_prob: float, rng: random.Random, calm_heads: int = 0):
        self.name = name
        self.read_valid = reader(valid)
        self.read_data = reader(data, wide=True)
        self.read_last = reader(last) if last is not None else None
        self.valid = valid
        self.ready = ready
        self.sb = scoreboard
        self.row_bits = scoreboard.d * scoreboard.out_bits
        self.stall_prob = stall_prob
        self.rng = rng
        self.calm_heads = calm_heads
        self.head = 0
        self.row = 0
        self.ready_now = 0
        self.last_cycles: list[int] = []
        ready.value = 0

    def step(self, cycle: int) -> bool:
        """At the falling edge: decide ``ready`` for the coming edge; True if a beat is taken."""
        stall = (self.stall_prob and self.head >= self.calm_heads
                 and self.rng.random() < self.stall_prob)
        ready = 0 if stall else 1
        if ready != self.ready_now:
            self.ready.value = ready
            self.ready_now = ready
        if not (ready and self.read_valid()):
            return False
        value = self.read_data()
        if self.read_last is None:
            last = (value >> self.row_bits) & 1
            value &= (1 << self.row_bits) - 1
        else:
            last = self.read_last()
        self.sb.check(self.head, self.row, value, last)
        self.row += 1
        if self.row == self.sb.n:
            self.last_cycles.append(cycle)
            self.row = 0
            self.head += 1
        return True

    @property
    def done(self) -> bool:
        return self.head >= self.sb.heads

    def state(self) -> str:
        """One phrase for stall messages."""
        return (f"{self.name}: {self.head} of {self.sb.heads} heads received, row {self.row} "
                f"next, valid {'high' if self.read_valid() else 'low'}")


async def run_streams(dut, *, drivers: list[StreamDriver], monitor: StreamMonitor,
                      stall_cycles: int, reset=None, reset_cycles: int = 3) -> dict:
    """Reset the core, then step every stream once per cycle until the monitor has every head.

    The clock must already run on ``dut.clk``. When every driver is blocked
    and no output is offered, nothing can change until a ready or valid of
    the core does, so the loop sleeps on those (with a timeout) instead of
    stepping each cycle.

    Parameters
    ----------
    drivers, monitor :
        The streams (see :class:`StreamDriver`, :class:`StreamMonitor`).
    stall_cycles : int
        Bound on the cycles without any beat moved; past it the run fails.
    reset : cocotb handle, optional
        Active-high reset held for ``reset_cycles`` (default ``dut.rst``).

    Returns
    -------
    dict
        ``cycles`` (after reset), ``wall_s``, ``cycles_per_s``.

    Raises
    ------
    StreamStall
        No handshake on any stream for ``stall_cycles`` cycles; the message
        names each stream's state and the cycle.
    """
    clk_fall = FallingEdge(dut.clk)
    rst = dut.rst if reset is None else reset
    rst.value = 1
    for _ in range(reset_cycles):
        await clk_fall
    rst.value = 0

    wake = First(*[drv.ready.value_change for drv in drivers], monitor.valid.value_change,
                 Timer(stall_cycles * CLOCK_NS, unit="ns"))
    cycle = 0
    last_move = 0
    wall = time.perf_counter()
    t_start = get_sim_time("ns")
    while not monitor.done:
        if all(drv.blocked for drv in drivers) and not monitor.read_valid():
            await wake
            await clk_fall
            cycle = int(get_sim_time("ns") - t_start) // CLOCK_NS
        else:
            await clk_fall
            cycle += 1
        moved = False
        for drv in drivers:
            moved |= drv.step(cycle)
        moved |= monitor.step(cycle)
        if moved:
            last_move = cycle
        elif cycle - last_move > stall_cycles:
            raise StreamStall(
                f"stalled: no beat moved for {cycle - last_move} cycles (bound {stall_cycles}), "
                f"at cycle {cycle} after reset; " +
                "; ".join([drv.state() for drv in drivers] + [monitor.state()]))
    wall = time.perf_counter() - wall
    return {"cycles": cycle, "wall_s": wall, "cycles_per_s": cycle / wall if wall > 0 else None}


def stall_bound(cycles_per_head: int, *, seq_len: int, head_dim: int, idle_prob: float = 0.0,
                stall_prob: float = 0.0) -> int:
    """Cycles without a handshake after which a run counts as stalled.

    Two full heads' worth of the configuration's cycle formula plus the
    load of one head (``4 * n * d``), widened for random idle cycles and
    backpressure: a healthy core moves some beat well within it.
    """
    base = 2 * cycles_per_head + 4 * seq_len * head_dim + 1000
    return int(base * (1 + 4 * (idle_prob + stall_prob)))
