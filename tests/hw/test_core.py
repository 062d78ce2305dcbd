"""The attention core in amaranth.sim against quant.golden (small, fast configs)."""

import numpy as np
import pytest

from inhibitron.hw.core import CoreConfig, InhibitorAttentionCore
from inhibitron.sim.pysim import run_core_pysim
from inhibitron.sim.stimulus import golden_outputs, mixed_heads

CONFIGS = {
    "tiled-2x2-n5": dict(rows=2, cols=2, seq_len=5, head_dim=4, qk_bits=4, v_bits=4, out_bits=6),
    "3x2-n7-vshift": dict(rows=3, cols=2, seq_len=7, head_dim=3, qk_bits=8, v_bits=6, out_bits=5,
                          v_shift=2),
    "2x3-n6-zshift": dict(rows=2, cols=3, seq_len=6, head_dim=5, qk_bits=5, v_bits=8, out_bits=8,
                          z_shift=3),
    "1x1-2bit": dict(rows=1, cols=1, seq_len=3, head_dim=2, qk_bits=2, v_bits=2, out_bits=2),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_core_bit_exact(name):
    cfg = CoreConfig.from_dict(CONFIGS[name])
    rng = np.random.default_rng(7)
    heads = mixed_heads(cfg, rng, random_count=3)
    expect = golden_outputs(cfg, heads)
    for idle, stall in [(0.0, 0.0), (0.3, 0.4)]:
        out, lasts, _ = run_core_pysim(cfg, heads, idle_prob=idle, stall_prob=stall, seed=3)
        bad = np.argwhere(out != expect)
        assert len(bad) == 0, [(tuple(b), int(out[tuple(b)]), int(expect[tuple(b)]))
                               for b in bad[:5]]
        assert len(lasts) == len(heads)


@pytest.mark.parametrize("kwargs,exc,message", [
    (dict(rows=0), ValueError, "rows must be a positive integer, not 0"),
    (dict(head_dim=-3), ValueError, "head_dim must be a positive integer, not -3"),
    (dict(seq_len=4, rows=8), ValueError, "array rows=8 is larger than the sequence allows"),
    (dict(seq_len=4, rows=4, cols=8), ValueError, "array cols=8 is larger than the sequence"),
    (dict(head_dim=4, cols=8), ValueError, "array cols=8 must be <= head_dim=4"),
    (dict(qk_bits=1), ValueError, "qk_bits must be in 2..32"),
    (dict(v_shift=1, z_shift=2), ValueError, "at most one of v_shift and z_shift"),
    (dict(seq_len=2.0), TypeError, "seq_len must be an integer, not 2.0"),
    (dict(stream_slices=1), TypeError, "stream_slices must be a bool, not 1"),
    (dict(name="1bad name"), ValueError, "name must be a Verilog identifier"),
    (dict(qk_bits=32, head_dim=2**31, rows=1, cols=1), ValueError, "would be .* bits"),
])
def test_config_errors(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        CoreConfig.from_dict(kwargs)


def test_config_roundtrip_and_derived():
    cfg = CoreConfig(rows=8, cols=8, seq_len=128, head_dim=64)
    assert CoreConfig.from_dict(cfg.to_dict()) == cfg
    sliced = cfg.replace(stream_slices=True)
    assert CoreConfig.from_dict(sliced.to_dict()) == sliced != cfg
    # slices add latency, never steady-state cycles
    assert sliced.cycles_per_head == cfg.cycles_per_head
    assert (cfg.row_blocks, cfg.key_tiles, cfg.dim_tiles) == (16, 16, 8)
    assert cfg.score_job_cycles == cfg.mix_job_cycles == 1024
    assert cfg.ideal_utilization > 0.9
    with pytest.raises(ValueError, match=r"unknown core config key\(s\) \['bogus'\]"):
        CoreConfig.from_dict({"bogus": 1})
    with pytest.raises(TypeError, match="config must be a CoreConfig"):
        InhibitorAttentionCore({"rows": 2})
