"""Formats, derived widths, HeadQuant/LayerQuant: values, round trips and error messages."""

from __future__ import annotations

import dataclasses
import doctest
import json
import math

import numpy as np
import pytest

from inhibitron.quant import formats as F
from inhibitron.quant.formats import AttentionFormats, HeadQuant, IntFormat, LayerQuant


def test_doctests():
    result = doctest.testmod(F)
    assert result.failed == 0 and result.attempted >= 8


@pytest.mark.parametrize("bits, signed, qmin, qmax, dtype", [
    (2, True, -2, 1, np.int8),
    (4, True, -8, 7, np.int8),
    (8, True, -128, 127, np.int8),
    (9, True, -256, 255, np.int16),
    (16, True, -32768, 32767, np.int16),
    (17, True, -65536, 65535, np.int32),
    (32, True, -(2**31), 2**31 - 1, np.int32),
    (1, False, 0, 1, np.uint8),
    (8, False, 0, 255, np.uint8),
    (12, False, 0, 4095, np.uint16),
])
def test_int_format_ranges(bits, signed, qmin, qmax, dtype):
    f = IntFormat(bits, signed=signed)
    assert (f.qmin, f.qmax, f.dtype) == (qmin, qmax, np.dtype(dtype))
    assert f.contains([qmin, qmax]).all() and not f.contains([qmin - 1]).any() and not f.contains([qmax + 1]).any()
    assert np.array_equal(f.check("x", np.array([qmin, qmax])), [qmin, qmax])


def test_quantize_is_rint_and_saturates():
    f = IntFormat(4)
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 6.49, 7.5, 100.0, -8.5, -100.0])
    assert f.quantize(x, 1.0).tolist() == [0, 2, 2, 0, -2, 6, 7, 7, -8, -8]
    assert f.quantize(x[:3], 0.5).tolist() == [1, 3, 5]
    assert f.dequantize([3, -8], 0.5).tolist() == [1.5, -4.0]
    assert f.quantize([[1.0], [1.0]], np.array([[1.0], [0.25]])).tolist() == [[1], [4]]


@pytest.mark.parametrize("call, exc, match", [
    (lambda: IntFormat(1), ValueError, "bits must be >= 2, not 1"),
    (lambda: IntFormat(0, signed=False), ValueError, "bits must be >= 1, not 0"),
    (lambda: IntFormat(63), ValueError, "bits must be <= 62, not 63"),
    (lambda: IntFormat(8.0), TypeError, "bits must be an integer, not 8.0"),
    (lambda: IntFormat(True), TypeError, "bits must be an integer, not True"),
    (lambda: IntFormat(8, signed="yes"), TypeError, "signed must be a bool"),
    (lambda: IntFormat(4).check("v", [[0, 1], [9, 0]]), ValueError,
     r"v has code 9 at index \(1, 0\), outside the s4 range \[-8, 7\]"),
    (lambda: IntFormat(4, signed=False).check("w", [-1]), ValueError,
     r"w has code -1 at index \(0,\), outside the u4 range \[0, 15\]"),
    (lambda: IntFormat(4).check("v", [0.5]), TypeError, "v must be an integer array of s4 codes"),
    (lambda: IntFormat(4).quantize([np.nan], 1.0), ValueError, "NaN or Inf"),
    (lambda: IntFormat(4).quantize([1.0], 0.0), ValueError, "scale must be finite and > 0"),
    (lambda: IntFormat(4).quantize([1.0], -1.0), ValueError, "scale must be finite and > 0"),
])
def test_int_format_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_frozen():
    f = AttentionFormats()
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.qk_bits = 4


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(qk_bits=1), ValueError, r"qk_bits must be in 2..32 \(a signed code width\), not 1"),
    (dict(v_bits=33), ValueError, r"v_bits must be in 2..32 \(a signed code width\), not 33"),
    (dict(out_bits=8.5), TypeError, "out_bits must be an integer, not 8.5"),
])
def test_attention_formats_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        AttentionFormats(**kwargs)


@pytest.mark.parametrize("bits", [4, 8, 12, 16])
@pytest.mark.parametrize("d", [32, 64])
@pytest.mark.parametrize("n", [8, 16, 32, 64, 128, 256, 512])
def test_widths_table_formulas(bits, d, n):
    """The closed forms of docs/numerics.md hold (tight for power-of-two d, n)."""
    D, N = int(math.log2(d)), int(math.log2(n))
    f = AttentionFormats(qk_bits=bits, v_bits=bits, out_bits=bits)
    for a, b, r in ((0, 0, 0), (3, 0, 5), (0, 4, 9)):
        w = f.widths(head_dim=d, seq_len=n, v_shift=a, z_shift=b, out_shift=r)
        assert w.z_bits == w.mean_bits == bits + D
        assert w.sum_bits == bits + D + N
        assert w.divider_bits == bits + D + N + 1
        assert w.theta_bits == bits + D + 1 and (w.theta_min, w.theta_max) == f.theta_range(d)
        assert w.threshold_bits == bits + D + 2
        assert w.zb_bits == bits + D + 1
        assert w.zb_clip == 2 ** (bits - 1 + a)
        assert w.mix_bits == bits + a + 1
        assert w.acc_bits == bits + a + N
        assert w.acc_bits <= w.round_bits <= max(w.acc_bits, r) + 1


def test_widths_rounding_adder():
    f = AttentionFormats(8, 8, 8)
    assert f.widths(head_dim=32, seq_len=128, out_shift=0).round_bits == 15
    assert f.widths(head_dim=32, seq_len=128, out_shift=7).round_bits == 15  # 16256 + 64 < 2**14
    assert f.widths(head_dim=32, seq_len=128, out_shift=8).round_bits == 16  # 16256 + 128 >= 2**14


def test_widths_non_power_of_two():
    w = AttentionFormats(8, 8, 8).widths(head_dim=24, seq_len=100)
    assert w.z_bits == (24 * 255).bit_length() == 13
    assert w.sum_bits == (100 * 24 * 255).bit_length()
    assert w.acc_bits == 15  # -12800 .. 12700


@pytest.mark.parametrize("kwargs, match", [
    (dict(head_dim=0, seq_len=8), "head_dim must be >= 1, not 0"),
    (dict(head_dim=8, seq_len=0), "seq_len must be >= 1, not 0"),
    (dict(head_dim=8, seq_len=8, v_shift=-1), "v_shift must be >= 0, not -1"),
    (dict(head_dim=8, seq_len=8, out_shift=-1), "out_shift must be >= 0"),
    (dict(head_dim=8, seq_len=8, v_shift=40), r"mix_bits would be 73 bits .* use narrower formats or smaller"),
    (dict(head_dim=8, seq_len=8, z_shift=63), r"z_shift would be 63 bits"),
])
def test_widths_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttentionFormats(32, 32, 32).widths(**kwargs)


def test_bit_helpers():
    assert [F.unsigned_bits(x) for x in (0, 1, 7, 8, 2**40)] == [1, 1, 3, 4, 41]
    assert F.signed_bits(-1, 0) == 1 and F.signed_bits(-2, 1) == 2 and F.signed_bits(-3, 0) == 3
    with pytest.raises(ValueError, match="min_value 2 > max_value 1"):
        F.signed_bits(2, 1)


def _head(**kw):
    base = dict(s_qk=0.25, s_v=0.125, s_h=-0.5, theta=-3, v_shift=0, z_shift=2, out_shift=3)
    base.update(kw)
    return HeadQuant(**base)


def test_head_quant_derived_scales():
    h = _head()
    assert h.s_w == 0.125 and h.s_z == 0.5
    assert h.eta == -0.5 / (0.125 * 8)
    assert h.delta == -1.5
    assert math.isclose(h.gamma(16), 0.5 * 4 / 0.25)
    h2 = _head(v_shift=2, z_shift=0)
    assert h2.s_w == 0.125 / 4 and h2.s_z == h2.s_w
    # the V/Z relation of the contract: s_v * 2**-a == s_z * 2**-b exactly
    for hq in (h, h2):
        assert math.ldexp(hq.s_v, -hq.v_shift) == math.ldexp(hq.s_z, -hq.z_shift)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(s_qk=0.0), ValueError, "s_qk must be > 0, not 0.0"),
    (dict(s_v=-1.0), ValueError, "s_v must be > 0"),
    (dict(s_h=0.0), ValueError, "s_h must be nonzero"),
    (dict(s_h=float("nan")), ValueError, "s_h must be finite"),
    (dict(s_qk="1"), TypeError, "s_qk must be a real number"),
    (dict(theta=1.5), TypeError, "theta must be an integer, not 1.5"),
    (dict(v_shift=-1), ValueError, "v_shift must be >= 0, not -1"),
    (dict(out_shift=63), ValueError, "out_shift must be <= 62"),
    (dict(v_shift=1, z_shift=1), ValueError, "at most one of v_shift and z_shift may be nonzero"),
])
def test_head_quant_errors(kw, exc, match):
    with pytest.raises(exc, match=match):
        _head(**kw)


def _layer(**kw):
    base = dict(formats=AttentionFormats(8, 8, 8), head_dim=32, heads=[_head(), _head(theta=5, s_qk=0.5)],
                name="layer 2")
    base.update(kw)
    return LayerQuant(**base)


def test_layer_quant_arrays_and_json_round_trip():
    lq = _layer()
    assert lq.num_heads == 2 and isinstance(lq.heads, tuple)
    assert lq.shared_shifts == (0, 2, 3)
    assert lq.theta.tolist() == [-3, 5] and lq.theta.dtype == np.int64
    assert lq.s_qk.tolist() == [0.25, 0.5]
    assert np.allclose(lq.gamma, [0.5 * math.sqrt(32) / 0.25, 0.5 * math.sqrt(32) / 0.5])
    kw = lq.golden_kwargs()
    assert kw["qk_bits"] == 8 and kw["z_shift"].tolist() == [2, 2]
    text = json.dumps(lq.to_dict())
    back = LayerQuant.from_dict(json.loads(text))
    assert back == lq and back.s_h.tolist() == lq.s_h.tolist()  # floats survive JSON exactly
    assert lq.widths(128) == AttentionFormats(8, 8, 8).widths(head_dim=32, seq_len=128, z_shift=2, out_shift=3)
    mixed = _layer(heads=[_head(), _head(out_shift=4)])
    assert mixed.shared_shifts is None


@pytest.mark.parametrize("change, exc, match", [
    (dict(formats=(8, 8, 8)), TypeError, "formats must be an AttentionFormats"),
    (dict(head_dim=0), ValueError, "head_dim must be >= 1"),
    (dict(heads=[]), ValueError, "layer 2: heads must be a non-empty sequence of HeadQuant"),
    (dict(heads=[_head(), 3]), TypeError, r"layer 2: heads\[1\] must be a HeadQuant"),
    (dict(heads=[_head(theta=2**13)]), ValueError,
     r"layer 2 head 0: theta=8192 is outside the threshold range \[-8192, 8191\] of qk_bits=8, d=32"),
    (dict(name=3), TypeError, "name must be a str"),
])
def test_layer_quant_errors(change, exc, match):
    with pytest.raises(exc, match=match):
        _layer(**change)


@pytest.mark.parametrize("mutate, exc, match", [
    (lambda d: d.update(version=2), ValueError, "LayerQuant: unknown version 2"),
    (lambda d: d.pop("heads"), ValueError, r"LayerQuant: missing key\(s\) \['heads'\]"),
    (lambda d: d.update(extra=1), ValueError, r"LayerQuant: unknown key\(s\) \['extra'\]"),
    (lambda d: d["heads"][0].pop("theta"), ValueError, r"HeadQuant: missing key\(s\) \['theta'\]"),
    (lambda d: d["heads"][1].update(s_v=-1.0), ValueError, "s_v must be > 0"),
    (lambda d: d["formats"].update(qk_bits=1), ValueError, "qk_bits must be in 2..32"),
    (lambda d: d.update(heads="x"), TypeError, "LayerQuant: heads must be a list"),
])
def test_layer_quant_from_dict_errors(mutate, exc, match):
    data = json.loads(json.dumps(_layer().to_dict()))
    mutate(data)
    with pytest.raises(exc, match=match):
        LayerQuant.from_dict(data)
