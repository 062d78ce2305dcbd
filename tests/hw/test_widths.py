"""The hardware's widths are the contract's: PEs and row statistics agree with AttentionFormats.widths.

The PEs size their accumulators from their own parameters (they are generic
components); these tests tie them to the one derivation,
:meth:`inhibitron.quant.formats.AttentionFormats.widths`, for the shapes the
core builds them with.
"""

import pytest

from inhibitron.hw.config import CoreConfig
from inhibitron.hw.pe import L1PE, SoftThresholdPE
from inhibitron.hw.rowstats import RowStatistics

SHAPES = [
    dict(rows=2, cols=2, seq_len=5, head_dim=4, qk_bits=4, v_bits=4, out_bits=6),
    dict(rows=8, cols=8, seq_len=128, head_dim=64),
    dict(rows=3, cols=5, seq_len=23, head_dim=24, v_shift=2),
    dict(rows=2, cols=4, seq_len=8, head_dim=12, qk_bits=12, z_shift=3),
    dict(rows=1, cols=1, seq_len=1, head_dim=1, qk_bits=16, v_bits=16, out_bits=16),
]


def _silent(component):
    component._MustUse__silence = True     # inspected, never elaborated
    return component


@pytest.mark.parametrize("shape", SHAPES)
def test_pe_accumulators_are_the_contract_widths(shape):
    cfg = CoreConfig.from_dict(shape)
    w = cfg.widths
    l1 = _silent(L1PE(width=cfg.qk_bits, length=cfg.head_dim))
    assert l1.acc_shape.width == w.z_bits and not l1.acc_shape.signed
    st = _silent(SoftThresholdPE(v_bits=cfg.v_bits, zb_bits=w.zb_mix_bits, v_shift=cfg.v_shift,
                                 z_shift=cfg.z_shift, length=cfg.seq_len))
    assert st.acc_shape.width == w.acc_bits and st.acc_shape.signed


@pytest.mark.parametrize("shape", SHAPES)
def test_row_sum_width_is_the_contract_width(shape):
    cfg = CoreConfig.from_dict(shape)
    w = cfg.widths
    st = _silent(RowStatistics(z_width=w.z_bits, max_length=cfg.seq_len, theta_width=w.theta_bits,
                               threshold_width=w.threshold_bits, sum_width=w.sum_bits))
    assert st.sum_width == w.sum_bits
    # the generic default is the looser bound for arbitrary z_bits-bit scores
    loose = _silent(RowStatistics(z_width=w.z_bits, max_length=cfg.seq_len,
                                  theta_width=w.theta_bits, threshold_width=w.threshold_bits))
    assert loose.sum_width >= w.sum_bits


def test_descriptor_fields_are_the_contract_widths():
    cfg = CoreConfig.from_dict(SHAPES[2])
    w = cfg.widths
    layout = cfg.descriptor_layout
    assert [(name, f.width, f.offset) for name, f in layout] == [
        ("length", w.length_bits, 0), ("theta", w.theta_bits, w.length_bits),
        ("shift", w.shift_bits, w.length_bits + w.theta_bits)]
    word = cfg.pack_descriptor(length=23, theta=-5, shift=w.acc_bits + 100)
    assert word & ((1 << w.length_bits) - 1) == 23
    assert (word >> w.length_bits) & ((1 << w.theta_bits) - 1) == (-5) % (1 << w.theta_bits)
    assert word >> (w.length_bits + w.theta_bits) == (1 << w.shift_bits) - 1   # saturated r
    with pytest.raises(ValueError, match="descriptor length must be in 1..23, not 0"):
        cfg.pack_descriptor(length=0, theta=0, shift=0)
