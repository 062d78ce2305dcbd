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
from inhibitron.hw.stream_slice import RegisterSlice


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

@pytest.mark.parametrize("idle,slow", [(0.0, 0), (0.0, 12), (0.4, 6)])
def test_descriptor_slots(idle, slow):
    """Two consumers: a fast first one (first_full, first_clr) and a slower last one (full, clr).

    Each must read every descriptor once, in order; the first one runs up to
    two heads ahead of the last and must never see a slot's previous
    descriptor (it would, were it waiting on ``full``).
    """
    layout = data.StructLayout({"length": unsigned(4), "theta": signed(6), "shift": unsigned(3)})
    dut = DescriptorSlots(layout)
    rng = np.random.default_rng(5 + slow)
    descs = [dict(length=int(rng.integers(0, 16)), theta=int(rng.integers(-32, 32)),
                  shift=int(rng.integers(0, 8))) for _ in range(9)]
    got = {"first": [], "last": []}

    async def producer(ctx):
        for desc in descs:
            await _put(ctx, dut.i, layout.const(desc), rng, idle)

    def consumer(which, flags, clr, delay):
        async def run(ctx):
            for h in range(len(descs)):
                slot = h % 2
                # (the last consumer is done with a head after the first one, as in a core)
                while not (ctx.get(flags) >> slot) & 1 or (which == "last" and len(got["first"]) <= h):
                    await ctx.tick()
                for _ in range(int(rng.integers(0, delay + 1))):
                    await ctx.tick()
                value = ctx.get(dut.slots[slot])
                got[which].append(dict(length=value.length, theta=value.theta, shift=value.shift))
                ctx.set(clr, 1 << slot)
                await ctx.tick()
                ctx.set(clr, 0)
                await ctx.tick()
        return run

    _run(dut, producer, consumer("first", dut.first_full, dut.first_clr, 0),
         consumer("last", dut.full, dut.clr, slow))
    assert got["first"] == descs
    assert got["last"] == descs


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


# --------------------------------------------------------- shell_jobs: job control

def test_score_job_control_walks_blocks_heads_and_slots():
    """Jobs start only when Q, K, descriptor and a score slot are ready; blocks and heads advance;
    each slot keeps its head's descriptor fields; the minimum gap separates jobs."""
    from amaranth.lib import data

    from inhibitron.hw.shell_jobs import ScoreJobControl

    d, tiles, blocks, gap = 3, 2, 2, 4
    info = data.StructLayout({"length": 4})
    dut = ScoreJobControl(steps=d, tiles=tiles, blocks=blocks, q_index_bits=3, k_index_bits=3,
                          info_layout=info, min_gap=gap)
    jobs = []

    async def tb(ctx):
        ctx.set(dut.head_info[0].length, 5)
        ctx.set(dut.head_info[1].length, 9)
        ctx.set(dut.dst_busy_after, 0)
        for _ in range(5):                    # nothing loaded: no job
            await ctx.tick()
            assert not ctx.get(dut.start)
        ctx.set(dut.q_full_next, 0b11)
        ctx.set(dut.k_full_next, 0b11)
        ctx.set(dut.desc_full_next, 0b11)
        end = None
        for cycle in range(200):
            if ctx.get(dut.start):
                jobs.append((cycle, ctx.get(dut.head), ctx.get(dut.dst), ctx.get(dut.block_last)))
            if ctx.get(dut.run):           # Q row: block * d + step; K row: tile * d + step
                step, block = ctx.get(dut.step), (len(jobs) - 1) % blocks
                assert ctx.get(dut.q_index) == block * d + step
                assert (ctx.get(dut.k_index) - step) % d == 0 and ctx.get(dut.k_index) < tiles * d
            if ctx.get(dut.job_end):
                end = cycle
            await ctx.tick()
            if len(jobs) == 4 and end is not None and cycle > end + 1:
                break
        # slot 0 holds the block of the third job (head 1), slot 1 the fourth's (head 1)
        assert ctx.get(dut.slot_head) == 0b11
        assert ctx.get(dut.slot_info[0].length) == 9 and ctx.get(dut.slot_info[1].length) == 9

    _run(dut, tb)
    assert [(h, s, last) for _, h, s, last in jobs] == [(0, 0, 0), (0, 1, 1), (1, 0, 0), (1, 1, 1)]
    starts = [c for c, *_ in jobs]
    # a job runs tiles * d cycles; the next starts after the gap (and the registered start check)
    assert all(b - a >= tiles * d + gap for a, b in zip(starts, starts[1:]))


def test_mix_job_control_claims_releases_and_delays():
    """A mixing job starts when its source slot, V and an output slot are ready; it claims the output
    slot, latches the head's shift, releases the source (and the head after its last block), and the
    array control follows the read by array_delay cycles."""
    from inhibitron.hw.shell_jobs import MixJobControl

    n, tiles, delay = 4, 2, 3
    dut = MixJobControl(steps=n, tiles=tiles, v_index_bits=4, shift_bits=3, array_delay=delay)
    seen = {"claim": [], "src_clr": [], "head_clr": [], "rd": [], "a": []}

    async def tb(ctx):
        ctx.set(dut.head_shift[0], 5)
        ctx.set(dut.head_shift[1], 2)
        ctx.set(dut.src_head, 0b10)            # slot 0 holds head 0, slot 1 head 1
        ctx.set(dut.src_head_next, 0b10)
        ctx.set(dut.src_last, 0b11)
        ctx.set(dut.head_full_next, 0b11)
        ctx.set(dut.src_full_after, 0b01)      # only slot 0 is full
        for cycle in range(60):
            if cycle == 20:
                ctx.set(dut.src_full_after, 0b10)
            for key in ("claim", "src_clr", "head_clr"):
                if ctx.get(getattr(dut, key)):
                    seen[key].append((cycle, ctx.get(getattr(dut, key))))
            if ctx.get(dut.rd_valid):
                seen["rd"].append(cycle)
            if ctx.get(dut.a_valid):
                seen["a"].append(cycle)
            await ctx.tick()
        assert ctx.get(dut.out_shift[0]) == 5 and ctx.get(dut.out_shift[1]) == 2

    _run(dut, tb)
    assert [m for _, m in seen["claim"]] == [0b01, 0b10]          # output slots 0 then 1
    assert [m for _, m in seen["src_clr"]] == [0b01, 0b10]        # source slots released in turn
    assert [m for _, m in seen["head_clr"]] == [0b01, 0b10]       # heads 0 and 1 (last blocks)
    assert len(seen["rd"]) == 2 * n * tiles
    assert seen["a"] == [c + delay for c in seen["rd"]]


# -------------------------------------------------------------- RegisterSlice

@pytest.mark.parametrize("full_rate", [False, True])
@pytest.mark.parametrize("idle,stall", [(0.0, 0.0), (0.3, 0.4)])
def test_register_slice_passes_every_beat_in_order(full_rate, idle, stall):
    dut = RegisterSlice(data.ArrayLayout(signed(4), 3), full_rate=full_rate)
    rng = np.random.default_rng(11)
    beats = [int(x) for x in rng.integers(0, 1 << 12, 40)]
    got, cycles = [], {}

    async def producer(ctx):
        for b in beats:
            await _put(ctx, dut.i, b, rng, idle)

    async def consumer(ctx):
        cycle = 0
        while len(got) < len(beats):
            ready = int(rng.random() >= stall)
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid,
                                                           dut.o.payload.as_value())
            cycle += 1
            if valid and ready:
                got.append(payload)
                cycles.setdefault("first", cycle)
                cycles["last"] = cycle

    _run(dut, producer, consumer)
    assert got == beats
    if not idle and not stall:
        # one beat per cycle (full rate) or per two cycles (light), after the latency
        per_beat = 1 if full_rate else 2
        assert cycles["first"] == dut.latency + 1
        assert cycles["last"] - cycles["first"] == per_beat * (len(beats) - 1)


@pytest.mark.parametrize("full_rate", [False, True])
def test_register_slice_has_no_path_across(full_rate):
    """i.ready does not follow o.ready, nor o.valid/o.payload i.valid/i.payload, in a cycle."""
    dut = RegisterSlice(data.ArrayLayout(signed(4), 2), full_rate=full_rate)
    rng = np.random.default_rng(3)

    async def tb(ctx):
        for _ in range(200):
            seen = set()
            for ready in (0, 1):
                ctx.set(dut.o.ready, ready)
                for valid in (0, 1):
                    ctx.set(dut.i.valid, valid)
                    ctx.set(dut.i.payload.as_value(), int(rng.integers(0, 256)))
                    seen.add((ctx.get(dut.i.ready), ctx.get(dut.o.valid),
                              ctx.get(dut.o.payload.as_value())))
            assert len(seen) == 1, seen
            ctx.set(dut.o.ready, int(rng.integers(0, 2)))
            ctx.set(dut.i.valid, int(rng.integers(0, 2)))
            await ctx.tick()

    _run(dut, tb)


def test_register_slice_errors():
    with pytest.raises(TypeError, match=r"full_rate must be a bool, not 1"):
        RegisterSlice(unsigned(4), full_rate=1)
