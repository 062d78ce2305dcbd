"""Drive :class:`~inhibitron.hw.core.InhibitorAttentionCore` in ``amaranth.sim``.

Async testbenches only (``sim.add_testbench``): one driver per input stream, one monitor
on the output stream, run to completion; used by the fast unit tests of the
core and by the cosimulation-speed benchmark (as the baseline against
cocotb + Verilator).
"""

from __future__ import annotations

import numpy as np

from .stimulus import Head, pack_desc, pack_rows

__all__ = ["run_core_pysim"]


def run_core_pysim(cfg, heads: list[Head], *, idle_prob: float = 0.0, stall_prob: float = 0.0,
                   seed: int = 0, max_cycles: int | None = None):
    """Simulate ``heads`` back to back; return ``(outputs, last_cycles, cycles)``.

    Parameters
    ----------
    cfg : CoreConfig
    heads : list of Head
    idle_prob : float
        Probability that an input driver inserts an idle cycle before a beat.
    stall_prob : float
        Probability that the output deasserts ``ready`` in a cycle.
    seed : int
        Seed of the idle/stall pattern.
    max_cycles : int, optional
        Safety limit (default: a generous multiple of the expected cycles).

    Returns
    -------
    outputs : ndarray (H, n, d) int64
        The H rows received, per head.
    last_cycles : list of int
        Cycle at which each head's ``last`` beat was accepted.
    cycles : int
        Total simulated cycles.
    """
    from amaranth.sim import Simulator

    from inhibitron.hw.core import InhibitorAttentionCore

    dut = InhibitorAttentionCore(cfg)
    n, d = cfg.seq_len, cfg.head_dim
    rng = np.random.default_rng(seed)
    nh = len(heads)
    received = []
    last_cycles = []
    if max_cycles is None:
        max_cycles = (nh + 2) * (cfg.cycles_per_head + 4 * n * d + 1000) * (
            1 + int(4 * (idle_prob + stall_prob)))
    state = {"cycle": 0}

    def driver(port, rows_of_head):
        async def run(ctx):
            for h in range(nh):
                for value in rows_of_head(h):
                    while rng.random() < idle_prob:
                        await ctx.tick()
                    ctx.set(port.payload.as_value(), value)
                    ctx.set(port.valid, 1)
                    await ctx.tick().until(port.ready)
                    ctx.set(port.valid, 0)
        return run

    q_rows = [pack_rows(h.q, cfg.qk_bits) for h in heads]
    k_rows = [pack_rows(h.k, cfg.qk_bits) for h in heads]
    v_rows = [pack_rows(h.v, cfg.v_bits) for h in heads]
    descs = [[pack_desc(cfg, h)] for h in heads]

    async def monitor_sampled(ctx):
        data_bits = d * cfg.out_bits
        cycle = 0
        while len(received) < nh * n:
            stall = rng.random() < stall_prob
            ctx.set(dut.h.ready, 0 if stall else 1)
            _, _, valid, payload = await ctx.tick().sample(dut.h.valid, dut.h.payload.as_value())
            cycle += 1
            if cycle > max_cycles:
                raise TimeoutError(f"core did not finish {nh} heads in {max_cycles} cycles "
                                   f"({len(received)} of {nh * n} rows received)")
            if valid and not stall:
                received.append(payload & ((1 << data_bits) - 1))
                if payload >> data_bits & 1:
                    last_cycles.append(cycle)
        state["cycle"] = cycle

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver(dut.q, lambda h: q_rows[h]), background=True)
    sim.add_testbench(driver(dut.k, lambda h: k_rows[h]), background=True)
    sim.add_testbench(driver(dut.v, lambda h: v_rows[h]), background=True)
    sim.add_testbench(driver(dut.desc, lambda h: descs[h]), background=True)
    sim.add_testbench(monitor_sampled)
    sim.run()
    from .stimulus import unpack_rows
    out = unpack_rows(received, cfg.out_bits, d).reshape(nh, n, d)
    return out, last_cycles, state["cycle"]
