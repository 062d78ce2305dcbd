"""amaranth.sim tests of the row-statistics unit against the integer contract."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from inhibitron.hw.rowstats import RoundedMeanDivider, RowStatistics, ThresholdClip


def test_divider_exhaustive_small():
    n, qw = 5, 4
    dut = RoundedMeanDivider(sum_width=7, max_length=n, mean_width=qw)
    cases = [(s, L) for L in range(1, n + 1) for s in range(0, L * (2**qw - 1) + 1)]
    out = []

    async def bench(ctx):
        for s, L in cases:
            ctx.set(dut.sum, s)
            ctx.set(dut.length, L)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 1
            while not ctx.get(dut.done):
                await ctx.tick()
                cycles += 1
            assert cycles == dut.latency
            out.append(ctx.get(dut.mean))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    expect = [(2 * s + L) // (2 * L) for s, L in cases]
    assert out == expect


def test_row_statistics_every_length():
    rng = np.random.default_rng(0)
    n, zw, tw = 7, 6, 7
    dut = RowStatistics(z_width=zw, max_length=n, theta_width=tw, threshold_width=zw + 2,
                        index_limit=8)
    rows = []
    for L in range(1, n + 1):
        for z in (rng.integers(0, 2**zw, 8), np.full(8, 2**zw - 1), np.zeros(8, int)):
            rows.append((z, L, int(rng.integers(-(2**(tw - 1)), 2**(tw - 1)))))
    got = []

    async def bench(ctx):
        for z, L, theta in rows:
            ctx.set(dut.length, L)
            ctx.set(dut.theta, theta)
            for j in range(8):            # 8 > n: a padded tile column
                ctx.set(dut.valid, 1)
                ctx.set(dut.first, j == 0)
                ctx.set(dut.last, j == 7)
                ctx.set(dut.z, int(z[j]))
                ctx.set(dut.index, j)
                await ctx.tick()
            ctx.set(dut.valid, 0)
            for _ in range(dut.latency - 1):   # the last score was presented one tick ago
                await ctx.tick()
            assert ctx.get(dut.done)
            got.append(ctx.get(dut.threshold))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    expect = [(2 * int(z[:L].sum()) + L) // (2 * L) + theta for z, L, theta in rows]
    assert got == expect


@pytest.mark.parametrize("zb_max", [1, 5, 64])
def test_threshold_clip(zb_max):
    dut = ThresholdClip(z_width=6, threshold_width=8, zb_max=zb_max)
    cases = [(z, t, p) for z in range(0, 64, 3) for t in range(-128, 128, 7) for p in (0, 1)]
    got = []

    async def bench(ctx):
        for z, t, p in cases:
            ctx.set(dut.z, z)
            ctx.set(dut.threshold, t)
            ctx.set(dut.pad, p)
            await ctx.tick()
            got.append(ctx.get(dut.zb))
        for _ in range(dut.latency - 1):
            await ctx.tick()
            got.append(ctx.get(dut.zb))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    expect = [zb_max if p else min(max(z - t, 0), zb_max) for z, t, p in cases]
    assert dut.latency == 3
    assert got[dut.latency - 1:] == expect


def test_rowstats_errors():
    with pytest.raises(ValueError, match="max_length must be a positive integer, not 0"):
        RoundedMeanDivider(sum_width=4, max_length=0, mean_width=4)
    with pytest.raises(ValueError, match="zb_max must be a positive integer"):
        ThresholdClip(z_width=4, threshold_width=5, zb_max=0)
