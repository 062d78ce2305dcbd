"""The output rounder (hw/shell.OutputRounder) in amaranth.sim against the numerics contract.

``h = saturate(round_half_up_shift(acc, r), out_bits)`` (docs/numerics.md, step 6), for
every shift the input can carry, on every accumulator value of narrow formats and on the
extremes, the saturation edges and random values of a wide one; ``valid`` and the tag
come out :attr:`OutputRounder.latency` cycles later.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from inhibitron.hw.shell import OutputRounder
from inhibitron.quant.rounding import round_half_up_shift, saturate


def _cases(acc_bits: int, shift_bits: int, out_bits: int, rng, random_per_shift: int):
    """(acc, r) pairs: every acc when the format is narrow, else the edges and random values."""
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    hmin, hmax = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    cases = []
    for r in range(1 << shift_bits):
        if acc_bits <= 10:
            accs = range(lo, hi + 1)
        else:
            # around every value where the rounded result crosses a saturation bound
            edges = [lo, lo + 1, -1, 0, 1, hi - 1, hi]
            for bound in (hmax, hmin):
                centre = (2 * bound + 1) << max(r - 1, 0) if r else bound
                edges += [centre + k for k in (-2, -1, 0, 1, 2)]
            accs = [a for a in edges if lo <= a <= hi]
            accs += rng.integers(lo, hi + 1, random_per_shift).tolist()
        cases += [(int(a), r) for a in accs]
    return cases


def _run(acc_bits: int, shift_bits: int, out_bits: int, *, seed: int = 0, random_per_shift: int = 64):
    rng = np.random.default_rng(seed)
    tag_width = 5
    dut = OutputRounder(acc_bits=acc_bits, shift_bits=shift_bits, out_bits=out_bits,
                        tag_width=tag_width)
    cases = _cases(acc_bits, shift_bits, out_bits, rng, random_per_shift)
    # inputs with gaps: a valid beat on about 3 of 4 cycles
    schedule = []
    for i, case in enumerate(cases):
        while rng.random() < 0.25:
            schedule.append(None)
        schedule.append((i, *case))
    schedule += [None] * (OutputRounder.latency + 1)
    seen = []

    async def bench(ctx):
        for t, item in enumerate(schedule):
            if item is None:
                ctx.set(dut.i_valid, 0)
                ctx.set(dut.i_acc, int(rng.integers(-(1 << (acc_bits - 1)), 1 << (acc_bits - 1))))
            else:
                i, acc, r = item
                ctx.set(dut.i_valid, 1)
                ctx.set(dut.i_acc, acc)
                ctx.set(dut.i_shift, r)
                ctx.set(dut.i_tag, i % (1 << tag_width))
            await ctx.tick()
            if ctx.get(dut.o_valid):
                seen.append((t, ctx.get(dut.o_h), ctx.get(dut.o_tag)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()

    issued = [(t, item) for t, item in enumerate(schedule) if item is not None]
    assert len(seen) == len(issued), f"{len(seen)} outputs for {len(issued)} valid inputs"
    bad = []
    for (t_in, (i, acc, r)), (t_out, h, tag) in zip(issued, seen):
        want = int(saturate(round_half_up_shift(np.array([acc]), r), out_bits)[0])
        assert t_out - t_in == OutputRounder.latency - 1, f"case {i}: {t_out - t_in + 1} cycles"
        assert tag == i % (1 << tag_width), f"case {i}: tag {tag}"
        if h != want:
            bad.append(f"case {i}: acc {acc}, r {r}: h {h}, want {want}")
    assert not bad, f"{len(bad)} of {len(issued)} mismatches, first: " + "; ".join(bad[:5])
    return len(issued)


@pytest.mark.parametrize("acc_bits, shift_bits, out_bits", [
    (9, 3, 8),      # every acc x every shift; saturates only for r = 0
    (10, 4, 4),     # narrow output: saturates at most shifts
    (4, 3, 8),      # accumulator narrower than the output: never saturates
])
def test_rounder_exhaustive(acc_bits, shift_bits, out_bits):
    n = _run(acc_bits, shift_bits, out_bits)
    assert n == (1 << acc_bits) << shift_bits


def test_rounder_wide_accumulator_edges_and_random():
    # the mixing array's accumulator in the default 8-bit core is about this wide;
    # shifts reach past the accumulator (every value of a 5-bit r is exact)
    assert _run(26, 5, 8, seed=1) > 32 * 64
