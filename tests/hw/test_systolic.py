"""amaranth.sim tests of the PEs and the generic systolic array."""

import functools

import numpy as np
import pytest
from amaranth.hdl import signed
from amaranth.sim import Simulator

from inhibitron.hw.pe import L1PE, ProcessingElement, SoftThresholdPE
from inhibitron.hw.systolic import SystolicArray


def softthr(x, y):
    return np.where(x > y, x - y, np.where(x < -y, x + y, 0))


def run_array(array, a_steps, b_steps, lengths, *, gaps=()):
    """Feed tiles (list of (K, R) and (K, C) operand arrays) back to back.

    ``gaps``: set of tile indices preceded by 3 idle cycles. Returns the list
    of (tile index, row, col, value) in output order and the cycle of each.
    """
    R, C = array.rows, array.cols
    results = []

    async def feed(ctx):
        for tile, (A, B) in enumerate(zip(a_steps, b_steps)):
            if tile in gaps:
                ctx.set(array.valid, 0)
                for _ in range(3):
                    await ctx.tick()
            K = A.shape[0]
            for s in range(K):
                ctx.set(array.a, [int(x) for x in A[s]])
                ctx.set(array.b, [int(x) for x in B[s]])
                ctx.set(array.valid, 1)
                ctx.set(array.first, s == 0)
                ctx.set(array.last, s == K - 1)
                ctx.set(array.tag, tile)
                await ctx.tick()
        ctx.set(array.valid, 0)

    async def collect(ctx):
        cycle = 0
        while True:
            await ctx.tick()
            cycle += 1
            valid = ctx.get(array.out_valid)
            for r in range(R):
                if valid >> r & 1:
                    results.append((ctx.get(array.out_tag[r]), r, ctx.get(array.out_col[r]),
                                    ctx.get(array.out_data[r]), cycle))

    sim = Simulator(array)
    sim.add_clock(1e-8)
    sim.add_testbench(feed)
    sim.add_testbench(collect, background=True)
    total = sum(A.shape[0] for A in a_steps) + 4 * len(a_steps) + R + C + 10
    sim.run_until(total * 1e-8)
    return results


@pytest.mark.parametrize("rows,cols,pipelined", [(2, 3, True), (3, 2, False), (1, 1, True)])
def test_l1_array_back_to_back(rows, cols, pipelined):
    rng = np.random.default_rng(1)
    width, K = 5, 7
    array = SystolicArray(pe=functools.partial(L1PE, width=width, length=K, pipelined=pipelined,
                                               tag_width=3), rows=rows, cols=cols)
    lo, hi = -(1 << width - 1), (1 << width - 1)
    As = [rng.integers(lo, hi, (K, rows)) for _ in range(4)]
    Bs = [rng.integers(lo, hi, (K, cols)) for _ in range(4)]
    As[0][:] = lo  # extremes: |lo - (hi-1)| is the largest term
    Bs[0][:] = hi - 1
    res = run_array(array, As, Bs, [K] * 4, gaps={2})
    assert len(res) == 4 * rows * cols
    for tile, r, c, value, _ in res:
        expect = int(np.abs(As[tile][:, r] - Bs[tile][:, c]).sum())
        assert value == expect, (tile, r, c)
    # Timing contract: result (r, c) of tile 0 at latency + r + c after its last step.
    first = {(r, c): cyc for tile, r, c, _, cyc in res if tile == 0}
    for (r, c), cyc in first.items():
        assert cyc - first[(0, 0)] == r + c


def test_softthreshold_array():
    rng = np.random.default_rng(2)
    v_bits, zb_bits, K, R, C = 4, 3, 6, 2, 2
    for v_shift, z_shift in [(0, 0), (2, 0), (0, 2)]:
        array = SystolicArray(pe=functools.partial(SoftThresholdPE, v_bits=v_bits, zb_bits=zb_bits,
                                                   v_shift=v_shift, z_shift=z_shift, length=K,
                                                   tag_width=2), rows=R, cols=C)
        Zs = [rng.integers(0, 1 << zb_bits, (K, R)) for _ in range(3)]
        Vs = [rng.integers(-(1 << v_bits - 1), 1 << v_bits - 1, (K, C)) for _ in range(3)]
        res = run_array(array, Zs, Vs, [K] * 3)
        assert len(res) == 3 * R * C
        for tile, r, c, value, _ in res:
            x = Vs[tile][:, c] << v_shift
            y = Zs[tile][:, r] << z_shift
            assert value == int(softthr(x, y).sum()), (v_shift, z_shift, tile, r, c)


def test_array_latency_exact():
    array = SystolicArray(pe=functools.partial(L1PE, width=4, length=4), rows=2, cols=2)
    A = [np.ones((4, 2), dtype=int)]
    B = [np.zeros((4, 2), dtype=int)]
    res = run_array(array, A, B, [4])
    # the last step is presented during cycle 3 (cycles counted from 0), the testbench
    # sees outputs after `cycle` ticks, i.e. during cycle `cycle`.
    cyc = {(r, c): cy for _, r, c, _, cy in res}
    assert cyc[(0, 0)] == 3 + array.latency
    assert cyc[(1, 1)] == 3 + array.latency + 2


def test_parameter_errors():
    with pytest.raises(ValueError, match="rows must be a positive integer, not 0"):
        SystolicArray(pe=functools.partial(L1PE, width=4, length=4), rows=0, cols=2)
    with pytest.raises(TypeError, match="pe must return a ProcessingElement"):
        SystolicArray(pe=lambda: 3, rows=1, cols=1)
    with pytest.raises(ValueError, match="width must be a positive integer, not -1"):
        L1PE(width=-1, length=4)
    with pytest.raises(TypeError, match="length must be an integer, not 2.5"):
        L1PE(width=4, length=2.5)
    with pytest.raises(ValueError, match="v_shift must be a non-negative integer"):
        SoftThresholdPE(v_bits=4, zb_bits=3, v_shift=-1, length=4)


def test_custom_pe_protocol():
    """A user PE (here: acc += a + b) only implements term()."""
    from amaranth.hdl import Signal

    class AddPE(ProcessingElement):
        def __init__(self):
            super().__init__(a_shape=signed(4), b_shape=signed(4), acc_shape=signed(10),
                             term_shape=signed(5), term_latency=0, tag_width=2)

        def term(self, m, a, b):
            s = Signal(signed(5))
            m.d.comb += s.eq(a + b)
            return s

    array = SystolicArray(pe=AddPE, rows=2, cols=2)
    A = [np.array([[1, -2], [3, 4]]), np.array([[-8, 7], [0, 1]])]
    B = [np.array([[5, 6], [-7, 0]]), np.array([[1, 1], [2, 2]])]
    res = run_array(array, A, B, [2, 2])
    for tile, r, c, value, _ in res:
        assert value == int((A[tile][:, r] + B[tile][:, c]).sum())
    assert array.latency == 2
