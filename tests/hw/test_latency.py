"""The isolated-head latency formula (CoreConfig.first_row_latency) against amaranth.sim."""

from __future__ import annotations

import numpy as np
import pytest

from inhibitron.hw.core import CoreConfig, InhibitorAttentionCore
from inhibitron.sim.stimulus import pack_desc, pack_rows, random_heads


def _first_row_latency(cfg: CoreConfig) -> int:
    """Cycles between the last Q/K beat accepted and the first H beat, one head, H ready."""
    from amaranth.sim import Simulator

    dut = InhibitorAttentionCore(cfg)
    head = random_heads(cfg, 1, np.random.default_rng(0))[0]
    rows = {"q": pack_rows(head.q, cfg.qk_bits), "k": pack_rows(head.k, cfg.qk_bits),
            "v": pack_rows(head.v, cfg.v_bits), "desc": [pack_desc(cfg, head)]}
    state = {"cycle": 0, "last_in": 0, "first_out": None}

    def driver(name):
        port = getattr(dut, name)

        async def run(ctx):
            for value in rows[name]:
                ctx.set(port.payload.as_value(), value)
                ctx.set(port.valid, 1)
                await ctx.tick().until(port.ready)
                ctx.set(port.valid, 0)
            if name in ("q", "k"):
                state["last_in"] = max(state["last_in"], state["cycle"])
        return run

    async def monitor(ctx):
        ctx.set(dut.h.ready, 1)
        while state["first_out"] is None:
            _, _, valid = await ctx.tick().sample(dut.h.valid)
            state["cycle"] += 1
            if state["cycle"] > 100 * cfg.first_row_latency:
                raise TimeoutError("no H row")
            if valid:
                state["first_out"] = state["cycle"]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for name in ("q", "k", "v", "desc"):
        sim.add_testbench(driver(name), background=True)
    sim.add_testbench(monitor)
    sim.run()
    return state["first_out"] - state["last_in"]


@pytest.mark.parametrize("shape", [(2, 2, 8, 8), (4, 4, 16, 8), (2, 4, 12, 16), (4, 2, 8, 4)])
def test_first_row_latency_formula(shape):
    rows, cols, n, d = shape
    cfg = CoreConfig(rows=rows, cols=cols, seq_len=n, head_dim=d)
    assert _first_row_latency(cfg) == cfg.first_row_latency


@pytest.mark.parametrize("shape", [(2, 2, 8, 8), (2, 4, 12, 16), (1, 1, 4, 1), (2, 1, 6, 1)])
def test_first_row_latency_formula_with_stream_slices(shape):
    """Light Q/K slices (d >= 2) and full-rate ones (d = 1), the full-rate H slice."""
    rows, cols, n, d = shape
    cfg = CoreConfig(rows=rows, cols=cols, seq_len=n, head_dim=d, stream_slices=True)
    plain = cfg.replace(stream_slices=False)
    assert cfg.first_row_latency > plain.first_row_latency
    assert _first_row_latency(cfg) == cfg.first_row_latency
