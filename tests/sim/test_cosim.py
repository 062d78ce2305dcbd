"""cocotb + Verilator cosimulation of the generated core, bit-exact against quant.golden.

Each configuration is built once (its own build directory) and run twice:
full rate, then with random idle cycles on every input and random output
backpressure. Stimulus: extremes of every format and of theta, every valid
length 1..n, random heads and real MiniLM Q/K/V codes (tests/data).
"""


import zlib

import numpy as np
import pytest

from inhibitron.hw.core import CoreConfig
from inhibitron.sim.runner import X_UNIQUE, build_core, run_cosim
from inhibitron.sim.stimulus import REAL_VECTORS, mixed_heads
from inhibitron.sim.toolchain import have_icarus

REAL = REAL_VECTORS

CI_CONFIGS = {
    # 8-bit, d=32 (MiniLM), non-power-of-two n, 4x4 array smaller than the sequence
    "s8_d32_n12_4x4": dict(rows=4, cols=4, seq_len=12, head_dim=32, qk_bits=8, v_bits=8,
                           out_bits=8),
    # 4-bit inputs, d=64, tiling in both dimensions, v_shift
    "s4_d64_n16_4x4": dict(rows=4, cols=4, seq_len=16, head_dim=64, qk_bits=4, v_bits=4,
                           out_bits=6, v_shift=1),
    # 12-bit inputs, non-power-of-two n and a non-square array, z_shift
    "s12_d32_n10_2x4": dict(rows=2, cols=4, seq_len=10, head_dim=32, qk_bits=12, v_bits=12,
                            out_bits=12, z_shift=2),
    # register slices on every stream (light on Q, K, V and the descriptors)
    "s8_d32_n12_4x4_sl": dict(rows=4, cols=4, seq_len=12, head_dim=32, stream_slices=True),
    # register slices, a full-rate one on V (its loader writes a row per cycle)
    "s6_d3_n5_1x3_sl": dict(rows=1, cols=3, seq_len=5, head_dim=3, qk_bits=6, v_bits=6,
                            out_bits=6, stream_slices=True),
    # 16-bit output wider than the 11-bit accumulator: negative h sign-extended
    "s8_d8_n6_2x2_o16": dict(rows=2, cols=2, seq_len=6, head_dim=8, qk_bits=8, v_bits=8,
                             out_bits=16),
}

# one-PE-wide arrays (rows or cols = 1) and a 1x1 array
NARROW_CONFIGS = {
    "s8_d3_n5_2x1": dict(rows=2, cols=1, seq_len=5, head_dim=3),
    "s6_d3_n5_1x3": dict(rows=1, cols=3, seq_len=5, head_dim=3, qk_bits=6, v_bits=6, out_bits=6),
    "s4_d2_n3_1x1": dict(rows=1, cols=1, seq_len=3, head_dim=2, qk_bits=4, v_bits=4, out_bits=4),
    # one row block per head (n = R): every block is a head's first and last
    "s8_d2_n2_2x1": dict(rows=2, cols=1, seq_len=2, head_dim=2),
}

SLOW_CONFIGS = {
    "s8_d64_n128_8x8": dict(rows=8, cols=8, seq_len=128, head_dim=64),
    "s8_d32_n50_8x4": dict(rows=8, cols=4, seq_len=50, head_dim=32),
    "s16_d8_n9_3x5": dict(rows=3, cols=5, seq_len=9, head_dim=8, qk_bits=16, v_bits=10,
                          out_bits=16, v_shift=3),
}


def _check(res):
    assert res["elements_compared"] > 0
    bad = "; ".join(f"head {m['head']} row {m['row']} col {m['col']}: got {m['got']}, "
                    f"expected {m['expected']}" for m in res.get("first_mismatches", []))
    assert res["passed"], f"{res['mismatches']} mismatches ({bad}) {res.get('error', '')}"
    assert res["mismatches"] == 0


def check_cycle_formula(cfg, steady, *, exact=None):
    """Every two consecutive heads at full rate (``steady``: cycles between their last rows)
    take exactly ``cfg.cycles_per_two_heads`` (``exact``; by default with two or more row
    blocks per head), else at least that (the formula is a lower bound for short heads).
    For either core's configuration."""
    pairs = [a + b for a, b in zip(steady, steady[1:])]
    assert len(pairs) >= 2, steady
    if not (cfg.row_blocks >= 2 if exact is None else exact):
        assert min(pairs) >= cfg.cycles_per_two_heads, (steady, cfg.cycles_per_two_heads)
    else:
        assert pairs == [cfg.cycles_per_two_heads] * len(pairs), (steady, cfg.cycles_per_two_heads)


def cosim(name, kwargs, tmp_path_factory, *, random_count, simulator="verilator",
          every_length=True):
    """The core of ``kwargs`` (a flat config) on mixed heads, at full rate and with idle
    inputs and backpressure: every code bit-exact, the labels' heads all present, the
    steady state against the cycle formula. Returns the config and both results."""
    cfg = CoreConfig.from_dict(dict(kwargs, name=f"core_{name}"))
    rng = np.random.default_rng(zlib.crc32(name.encode()))   # reproducible across runs
    heads = mixed_heads(cfg, rng, random_count=random_count, every_length=every_length,
                        real_path=REAL, real_count=4)
    build = build_core(cfg, tmp_path_factory.mktemp(name), simulator=simulator)
    full = run_cosim(build, heads, name="full", seed=1)
    _check(full)
    bp = run_cosim(build, heads, name="backpressure", idle_prob=0.25, stall_prob=0.35, seed=2)
    _check(bp)
    assert full["elements_compared"] == len(heads) * cfg.seq_len * cfg.head_dim
    check_cycle_formula(cfg, full["cycles_per_head"])
    assert set(full["labels"]) >= {"extreme", "random", "real"} | (
        {"every-length"} if every_length else set())
    return cfg, full, bp


@pytest.mark.cosim
@pytest.mark.parametrize("name", sorted(CI_CONFIGS))
def test_cosim_bit_exact(name, tmp_path_factory):
    cosim(name, CI_CONFIGS[name], tmp_path_factory, random_count=3)


@pytest.mark.cosim
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_CONFIGS))
def test_cosim_bit_exact_large(name, tmp_path_factory):
    kwargs = SLOW_CONFIGS[name]
    cosim(name, kwargs, tmp_path_factory, random_count=4,
          every_length=kwargs["seq_len"] <= 64)


ICARUS_CONFIGS = {
    "icarus_small": dict(rows=2, cols=2, seq_len=5, head_dim=4, qk_bits=4, v_bits=4, out_bits=6),
    # non-power-of-two n and d, a non-square array, v_shift
    "icarus_npot": dict(rows=3, cols=2, seq_len=7, head_dim=6, qk_bits=8, v_bits=6, out_bits=8,
                        v_shift=1),
    # the register slices' memories and registers are X-free after reset too
    "icarus_slices": dict(rows=2, cols=2, seq_len=5, head_dim=2, qk_bits=4, v_bits=4,
                          out_bits=6, stream_slices=True),
}


@pytest.mark.cosim
@pytest.mark.skipif(not have_icarus(), reason="Icarus Verilog (iverilog) is not installed: "
                    "apt-get install iverilog")
@pytest.mark.parametrize("name", sorted(ICARUS_CONFIGS))
def test_cosim_icarus(name, tmp_path_factory):
    """The 4-state simulator: bit-exact from the first cycle after reset, full rate and stalled."""
    cosim(name, ICARUS_CONFIGS[name], tmp_path_factory, random_count=3, simulator="icarus")


@pytest.mark.cosim
@pytest.mark.parametrize("seed", [1, 2])
def test_cosim_verilator_random_x(seed, tmp_path_factory):
    """X-cleanness, second net: Verilator with --x-assign/--x-initial unique, X randomised per seed."""
    cfg = CoreConfig.from_dict(dict(rows=3, cols=2, seq_len=7, head_dim=6, qk_bits=6, v_bits=5,
                                    out_bits=6, name="core_xunique"))
    build = build_core(cfg, tmp_path_factory.mktemp(f"xunique{seed}"), verilator_args=X_UNIQUE)
    rng = np.random.default_rng(seed)
    heads = mixed_heads(cfg, rng, random_count=4)
    res = run_cosim(build, heads, name=f"seed{seed}", idle_prob=0.2, stall_prob=0.2, seed=seed,
                    plusargs=(f"+verilator+seed+{seed}", "+verilator+rand+reset+2"))
    _check(res)


@pytest.mark.cosim
@pytest.mark.parametrize("name", sorted(NARROW_CONFIGS))
def test_cosim_narrow_arrays(name, tmp_path_factory):
    cosim(name, NARROW_CONFIGS[name], tmp_path_factory, random_count=3)
