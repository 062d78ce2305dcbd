"""The stream shell's I/O blocks (hw/shell_io.py) in amaranth.sim against naive models.

Each block is driven by async testbenches (an input side and an output side,
with idle cycles and backpressure) and compared with a deliberately obvious
Python model of where every code must land or leave.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from amaranth.sim import Simulator

from inhibitron.hw.shell_io import BlockEmitter, DescriptorSlots, RowLoader


def _pack(codes, bits):
    word = 0
    for i, c in enumerate(codes):
        word |= (int(c) & ((1 << bits) - 1)) << (i * bits)
    return word


async def _put(ctx, port, value, rng, idle):
    """Send one beat on a stream, with random idle cycles before it; return the cycles taken."""
    cycles = 0
    while rng.random() < idle:
        await ctx.tick()
        cycles += 1
    ctx.set(port.payload.as_value() if isinstance(value, int) else port.payload, value)
    ctx.set(port.valid, 1)
    while True:
        _, _, ready = await ctx.tick().sample(port.ready)
        cycles += 1
        if ready:
            break
    ctx.set(port.valid, 0)
    return cycles


def _run(dut, *testbenches, background=(), deadline=200_000):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in background:
        sim.add_testbench(tb, background=True)
    for tb in testbenches:
        sim.add_testbench(tb)
    sim.run_until(deadline * 1e-8)


# ------------------------------------------------------------------ RowLoader

def _loader_model(head, banks, interleave):
    """``{(bank, index): code}`` of one head (rows x row_len codes)."""
    n, d = head.shape
    out = {}
    for j in range(n):
        for k in range(d):
            if interleave == "rows":
                out[(j % banks, (j // banks) * d + k)] = int(head[j, k])
            else:
                out[(k % banks, (k // banks) * n + j)] = int(head[j, k])
    return out


@pytest.mark.parametrize("interleave,n,d,banks", [
    ("rows", 5, 4, 2), ("rows", 4, 1, 1), ("rows", 3, 2, 4),
    ("codes", 5, 4, 2), ("codes", 3, 2, 1), ("codes", 4, 6, 3),
])
@pytest.mark.parametrize("idle,slow", [(0.0, 0), (0.3, 5)])
def test_row_loader(interleave, n, d, banks, idle, slow):
    bits = 5
    dut = RowLoader(shape=signed(bits), row_len=d, rows=n, banks=banks, interleave=interleave)
    rng = np.random.default_rng(n * 100 + d * 10 + banks)
    heads = [rng.integers(-16, 16, size=(n, d)) for _ in range(4)]
    accepts, done = [], []

    async def producer(ctx):
        cycle = 0
        for head in heads:
            for row in head:
                cycle += await _put(ctx, dut.i, _pack(row, bits), rng, idle)
                accepts.append(cycle)

    async def consumer(ctx):
        for h, head in enumerate(heads):
            slot = h % 2
            while not (ctx.get(dut.full) >> slot) & 1:
                await ctx.tick()
            for _ in range(int(rng.integers(0, slow + 1))):      # a slow consumer
                await ctx.tick()
            got = {}
            for (b, idx) in _loader_model(head, banks, interleave):
                ctx.set(dut.r_slot, slot)
                ctx.set(dut.r_index, idx)
                await ctx.tick()
                got[(b, idx)] = ctx.get(dut.r_data[b])
            assert got == _loader_model(head, banks, interleave), f"head {h}"
            ctx.set(dut.clr, 1 << slot)
            await ctx.tick()
            ctx.set(dut.clr, 0)
            done.append(h)

    _run(dut, producer, consumer)
    assert done == list(range(len(heads)))
    if idle == 0 and not slow:
        # full rate inside a head: one beat every cycles_per_row cycles
        for h in range(len(heads)):
            gaps = np.diff(accepts[h * n:(h + 1) * n])
            assert set(gaps.tolist()) <= {dut.cycles_per_row}, (h, gaps)


@pytest.mark.parametrize("kwargs,message", [
    (dict(row_len=0), "row_len must be a positive integer, not 0"),
    (dict(banks=-1), "banks must be a positive integer, not -1"),
    (dict(interleave="cols"), "interleave must be 'rows' or 'codes', not 'cols'"),
])
def test_row_loader_errors(kwargs, message):
    args = dict(dict(shape=signed(4), row_len=4, rows=4, banks=2), **kwargs)
    with pytest.raises(ValueError, match=message):
        RowLoader(**args)


# ------------------------------------------------------------ DescriptorSlots

@pytest.mark.parametrize("idle,slow", [(0.0, 0), (0.4, 6)])
def test_descriptor_slots(idle, slow):
    layout = data.StructLayout({"length": unsigned(4), "theta": signed(6), "shift": unsigned(3)})
    dut = DescriptorSlots(layout)
    rng = np.random.default_rng(5)
    descs = [dict(length=int(rng.integers(0, 16)), theta=int(rng.integers(-32, 32)),
                  shift=int(rng.integers(0, 8))) for _ in range(9)]
    got = []

    async def producer(ctx):
        for desc in descs:
            await _put(ctx, dut.i, layout.const(desc), rng, idle)

    async def consumer(ctx):
        for h in range(len(descs)):
            slot = h % 2
            while not (ctx.get(dut.full) >> slot) & 1:
                await ctx.tick()
            for _ in range(int(rng.integers(0, slow + 1))):
                await ctx.tick()
            value = ctx.get(dut.slots[slot])
            got.append(dict(length=value.length, theta=value.theta, shift=value.shift))
            ctx.set(dut.clr, 1 << slot)
            await ctx.tick()
            ctx.set(dut.clr, 0)
            await ctx.tick()

    _run(dut, producer, consumer)
    assert got == descs


# --------------------------------------------------------------- BlockEmitter

@pytest.mark.parametrize("row_len,slice_len,slices,block_rows,last_rows", [
    (4, 2, 2, 3, 2), (5, 2, 3, 2, 2), (3, 3, 1, 1, 1),
])
@pytest.mark.parametrize("idle,stall", [(0.0, 0.0), (0.3, 0.4)])
def test_block_emitter(row_len, slice_len, slices, block_rows, last_rows, idle, stall):
    bits = 6
    width = slices * slice_len
    dut = BlockEmitter(shape=signed(bits), row_len=row_len, slice_len=slice_len, slices=slices,
                       block_rows=block_rows, last_rows=last_rows)
    rng = np.random.default_rng(row_len * 7 + block_rows)
    blocks_per_head = 2
    heads = 3
    blocks = []                     # (rows of the block as (r, width) codes, last block?)
    for _ in range(heads):
        for b in range(blocks_per_head):
            last = b == blocks_per_head - 1
            blocks.append((rng.integers(-32, 32, size=(last_rows if last else block_rows,
                                                       width)), last))
    expect = [(row[:row_len].tolist(), last and r == len(rows) - 1)
              for rows, last in blocks for r, row in enumerate(rows)]
    got = []
    timing = {}

    async def producer(ctx):
        for i, (rows, last) in enumerate(blocks):
            slot = i % 2
            while (ctx.get(dut.busy) >> slot) & 1:
                await ctx.tick()
            ctx.set(dut.claim, 1 << slot)
            ctx.set(dut.claim_last, last)
            await ctx.tick()
            ctx.set(dut.claim, 0)
            # the rows slice by slice, in a random order, with idle cycles
            writes = [(r, s) for r in range(len(rows)) for s in range(slices)]
            for k in rng.permutation(len(writes)):
                r, s = writes[k]
                while rng.random() < idle:
                    await ctx.tick()
                ctx.set(dut.w_row, r)
                ctx.set(dut.w_slot, slot)
                ctx.set(dut.w_en, 1 << s)
                junk = rng.integers(-32, 32, size=width)     # other slices are not kept
                junk[s * slice_len:(s + 1) * slice_len] = rows[r, s * slice_len:(s + 1) * slice_len]
                ctx.set(dut.w_data.as_value(), _pack(junk, bits))
                await ctx.tick()
            ctx.set(dut.w_en, 0)
            ctx.set(dut.commit, 1 << slot)
            await ctx.tick()
            ctx.set(dut.commit, 0)

    async def monitor(ctx):
        cycle = 0
        while len(got) < len(expect):
            ready = int(rng.random() >= stall)
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload, commit = await ctx.tick().sample(
                dut.o.valid, dut.o.payload, dut.commit)
            cycle += 1
            if commit and "commit" not in timing:
                timing["commit"] = cycle
            if valid and ready:
                got.append(([int(payload.data[c]) for c in range(row_len)], bool(payload.last)))
                timing.setdefault("first", cycle)

    _run(dut, producer, monitor)
    assert got == expect
    if idle == 0 and stall == 0:
        # the first beat is valid dut.latency cycles after the first commit
        assert timing["first"] - timing["commit"] == dut.latency


def test_block_emitter_errors():
    with pytest.raises(ValueError, match="slices \\* slice_len = 4 is less than row_len=5"):
        BlockEmitter(shape=signed(4), row_len=5, slice_len=2, slices=2, block_rows=2, last_rows=2)
    with pytest.raises(ValueError, match="last_rows=3 must be <= block_rows=2"):
        BlockEmitter(shape=signed(4), row_len=4, slice_len=2, slices=2, block_rows=2, last_rows=3)


# ------------------------------------------------------------- BlockCollector

def _round_sat(acc, r, out_bits):
    """The contract's step 6, naively: round half up by r, saturate."""
    half = (1 << (r - 1)) if r else 0
    lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    return min(max((acc + half) >> r, lo), hi)


@pytest.mark.parametrize("rows,cols,slices", [(2, 3, 2), (1, 1, 3), (3, 2, 1)])
def test_block_collector(rows, cols, slices):
    from inhibitron.hw.shell import BlockCollector

    acc_bits, shift_bits, out_bits = 12, 4, 6
    dut = BlockCollector(rows=rows, cols=cols, slices=slices, acc_bits=acc_bits,
                         shift_bits=shift_bits, out_bits=out_bits)
    rng = np.random.default_rng(rows * 10 + cols)
    shifts = [3, 0]
    # two blocks (output slots 0, 1), each: every tile, every row's C results
    blocks = [rng.integers(-(1 << 11), 1 << 11, size=(slices, rows, cols)) for _ in range(2)]
    writes, commits = [], []

    async def array(ctx):
        ctx.set(dut.shift[0], shifts[0])
        ctx.set(dut.shift[1], shifts[1])
        for slot, block in enumerate(blocks):
            for t in range(slices):
                # row r emits column c at cycle r + c (the array's skew)
                for cyc in range(rows + cols):
                    valid = 0
                    for r in range(rows):
                        c = cyc - r
                        if 0 <= c < cols:
                            valid |= 1 << r
                            ctx.set(dut.i_acc[r], int(block[t, r, c]))
                            ctx.set(dut.i_col[r], c)
                            ctx.set(dut.i_tag[r], {"tile": t, "oslot": slot,
                                                   "last": t == slices - 1})
                    ctx.set(dut.i_valid, valid)
                    await ctx.tick()
                ctx.set(dut.i_valid, 0)
                for _ in range(int(rng.integers(0, 3))):   # idle cycles between tiles
                    await ctx.tick()
        for _ in range(10):
            await ctx.tick()

    async def monitor(ctx):
        async for _, _, en, row, slot, wdata, commit in ctx.tick().sample(
                dut.w_en, dut.w_row, dut.w_slot, dut.w_data, dut.commit):
            if en:
                codes = [int(wdata[i]) for i in range(slices * cols)]
                writes.append((int(row), int(slot), int(en), codes))
            if commit:
                commits.append(int(commit))

    _run(dut, array, background=[monitor])
    expect = []
    for slot, block in enumerate(blocks):
        for t in range(slices):
            for r in range(rows):
                row = [_round_sat(int(a), shifts[slot], out_bits) for a in block[t, r]]
                expect.append((r, slot, 1 << t, row * slices))
    assert sorted(writes) == sorted(expect)
    assert commits == [1, 2]


# --------------------------------------------------------------- JobSequencer

@pytest.mark.parametrize("steps,tiles", [(3, 2), (1, 3), (4, 1), (1, 1)])
def test_job_sequencer(steps, tiles):
    from inhibitron.hw.shell import JobSequencer

    dut = JobSequencer(steps=steps, tiles=tiles, stride=5, base_bits=6)
    seen = []

    async def tb(ctx):
        for gap in (0, 2):                   # back to back, then with idle cycles
            for _ in range(gap):
                await ctx.tick()
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            job = []
            while ctx.get(dut.run):
                job.append((ctx.get(dut.step), ctx.get(dut.tile), ctx.get(dut.base),
                            ctx.get(dut.step_last), ctx.get(dut.tile_last), ctx.get(dut.job_end)))
                await ctx.tick()
            seen.append(job)

    _run(dut, tb)
    model = [(s, t, 5 * t, int(s == steps - 1), int(t == tiles - 1),
              int(s == steps - 1 and t == tiles - 1))
             for t in range(tiles) for s in range(steps)]
    assert seen == [model, model]
