"""The baseline core is bit-exact against its golden model under cocotb + Verilator."""

import pytest

from inhibitron.hw.baseline import BaselineConfig, DotProductAttentionCore
from inhibitron.hw.mac_pe import MacPE
from test_cosim import check_cycle_formula


#: Shapes whose steady state is bound by each term of BaselineConfig.pair_period:
#: the arrays (2x4, 4x4), the softmax stage (2x2 n=8 d=4), the exp memory (1x1 n=8 d=6).
SHAPES = {
    "2x4_n8_d8": dict(rows=2, cols=4, seq_len=8, head_dim=8),
    "4x4_n16_d16": dict(rows=4, cols=4, seq_len=16, head_dim=16),
    "2x2_n8_d4_4bit": dict(rows=2, cols=2, seq_len=8, head_dim=4, qk_bits=4, v_bits=6,
                           out_bits=6),
    "1x1_n8_d6": dict(rows=1, cols=1, seq_len=8, head_dim=6),
    # register slices on every stream
    "2x4_n8_d8_sl": dict(rows=2, cols=4, seq_len=8, head_dim=8, stream_slices=True),
    # short heads (one or two row blocks): the score stage reaches head h + 2 while the
    # mixing stage still holds head h's descriptor slot
    "2x2_n4_d4": dict(rows=2, cols=2, seq_len=4, head_dim=4),
    # 24-bit output wider than the 19-bit accumulator: negative h sign-extended
    "2x2_n6_d8_o24": dict(rows=2, cols=2, seq_len=6, head_dim=8, out_bits=24),
}


def baseline_cosim(cfg, build_dir, *, seed=3, exact=None):
    """Five heads through ``cfg``'s core at full rate and with backpressure: every code
    bit-exact, every row checked, the steady state against the cycle formula
    (:func:`check_cycle_formula`, ``exact`` as there)."""
    from inhibitron.sim.tb_baseline import run_baseline_cosim

    # raises, naming the first mismatching codes, on any mismatch or stall
    res = run_baseline_cosim(cfg, build_dir=build_dir, heads=4, seed=seed)
    assert res["mismatches"] == [] and res["backpressure"]["mismatches"] == []
    assert res["rows_checked"] == 5 * cfg.seq_len
    assert res["backpressure"]["rows_checked"] == 5 * cfg.seq_len
    check_cycle_formula(cfg, res["head_cycles"], exact=exact)


@pytest.mark.cosim
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_baseline_core_bit_exact(name, tmp_path):
    cfg = BaselineConfig.from_dict(dict(SHAPES[name], name=f"baseline_{name}"))
    # the steady-state cycle formula is what the RTL does at full rate: every two
    # consecutive heads take exactly cycles_per_two_heads
    baseline_cosim(cfg, tmp_path / "build")


def test_baseline_fabric_multipliers_have_no_mul_cells():
    """multipliers="fabric" leaves no multiplication in the design (no DSP can be inferred)."""
    from inhibitron.hw.generate import convert_verilog

    kw = dict(rows=2, cols=2, seq_len=4, head_dim=2)
    dsp = convert_verilog(DotProductAttentionCore(BaselineConfig(**kw)), name="b_dsp")
    fabric = convert_verilog(DotProductAttentionCore(BaselineConfig(multipliers="fabric", **kw)),
                             name="b_fabric")
    assert " * " in dsp
    assert " * " not in fabric


def test_baseline_config_errors():
    with pytest.raises(ValueError, match=r"seq_len must be a multiple of rows=4 and cols=4, not 6"):
        BaselineConfig(rows=4, cols=4, seq_len=6, head_dim=8)
    with pytest.raises(ValueError, match=r"head_dim must be a multiple of cols=4, not 6"):
        BaselineConfig(rows=4, cols=4, seq_len=8, head_dim=6)
    with pytest.raises(ValueError, match=r"rows must be a positive integer, not 0"):
        BaselineConfig(rows=0)
    with pytest.raises(ValueError, match=r"unknown BaselineConfig field\(s\) \['theta'\]"):
        BaselineConfig.from_dict({"theta": 1})
    with pytest.raises(ValueError, match=r"multipliers must be one of \('dsp', 'fabric'\), not 'lut'"):
        BaselineConfig(multipliers="lut")
    with pytest.raises(TypeError, match=r"stream_slices must be a bool, not 'no'"):
        BaselineConfig(stream_slices="no")
    with pytest.raises(TypeError, match=r"config must be a BaselineConfig"):
        DotProductAttentionCore({"rows": 2})


def test_mac_pe_errors_and_widths():
    pe = MacPE(a_bits=9, b_bits=8, length=64)
    pe._MustUse__silence = True  # inspected, never elaborated
    assert pe.acc_shape.width == 9 + 8 + 6 and pe.acc_shape.signed
    assert pe.latency == 2
    with pytest.raises(TypeError, match=r"a_signed must be a bool, not 1"):
        MacPE(a_bits=8, b_bits=8, length=4, a_signed=1)
    with pytest.raises(ValueError, match=r"a_bits must be <= 32, not 40"):
        MacPE(a_bits=40, b_bits=8, length=4)
    # the second, fabric product register is one more cycle of the term pipeline
    pe = MacPE(a_bits=9, b_bits=8, length=64, input_register=True, fabric_register=True)
    pe._MustUse__silence = True
    assert (pe.term_latency, pe.latency) == (3, 4)
    with pytest.raises(TypeError, match=r"fabric_register must be a bool, not 'yes'"):
        MacPE(a_bits=8, b_bits=8, length=4, fabric_register="yes")
