"""Length normalisation in the integer contract: r = r_h + round(log2 L) per (sequence, head);
the QAT module equals the golden model bit for bit and tracks the float module."""

import numpy as np
import pytest
import torch

from inhibitron.model.attention import InhibitorAttention, length_exponent
from inhibitron.quant.calibrate import MinMaxObserver, fold_layer
from inhibitron.quant.formats import AttentionFormats
from inhibitron.quant.golden import golden_from_float, length_exponents, length_out_shift, valid_len_from_mask
from inhibitron.quant.qat import QATInhibitorAttention

H, D, N = 4, 8, 13
#: Valid lengths on both sides of each threshold of e(L) up to n = 13 (e = 0, 1, 2, 2, 3, 3, 4, 4).
LENGTHS = (1, 2, 3, 5, 6, 11, 12, 13)


def test_length_exponents_equal_the_float_modules():
    lengths = np.arange(1, 1 << 14)
    assert length_exponents(lengths).tolist() == [length_exponent(int(n)) for n in lengths]
    assert length_exponents(np.array([[1, 6], [5, 12]])).tolist() == [[0, 3], [2, 4]]


@pytest.mark.parametrize("bad", [np.array([0, 3]), np.array([1.5])])
def test_length_exponents_refuse_bad_lengths(bad):
    with pytest.raises(ValueError, match="lengths must be integers >= 1"):
        length_exponents(bad)


def test_length_out_shift_adds_e_and_refuses_a_left_shift():
    assert length_out_shift([0, 2, 5], np.array(LENGTHS)[:, None]).tolist() == [
        [e, e + 2, e + 5] for e in (0, 1, 2, 2, 3, 3, 4, 4)]
    assert length_out_shift([3], [[46]], ref_shift=2).tolist() == [[7]]
    with pytest.raises(ValueError, match=r"r_h \+ e\(L\) - r_ref is negative \(-1\)"):
        length_out_shift([0, 1], [[2]], ref_shift=2)


def test_golden_refuses_a_bad_length_norm():
    with pytest.raises(ValueError, match=r"length_norm must be one of \('none', 'pow2'\), not 'log2'"):
        golden_from_float(np.zeros((1, H, 2, D)), np.zeros((1, H, 2, D)), np.zeros((1, H, 2, D)), [[2]],
                          None, length_norm="log2")


def _module(seed):
    torch.manual_seed(seed)
    m = InhibitorAttention(H, D, length_norm="pow2").double()
    with torch.no_grad():
        m.gamma.uniform_(0.5, 2.0)
        m.eta.uniform_(-2.0, 2.0)
        m.delta.uniform_(-1.0, 1.0)
    return m


def _inputs(seed):
    g = torch.Generator().manual_seed(seed)
    B = len(LENGTHS)
    q, k, v = (torch.randn(B, H, N, D, generator=g, dtype=torch.float64) * s for s in (1.0, 1.3, 0.7))
    mask = torch.arange(N)[None, :] < torch.tensor(LENGTHS)[:, None]
    return q, k, v, mask


def _fold(m, q, k, v, mask, bits):
    """Calibrate on the normalised float output (what calibrate_student observes)."""
    obs = [MinMaxObserver(head_axis=-3).update(t, mask) for t in (q, k, v)]
    with torch.no_grad():
        hobs = MinMaxObserver(head_axis=-3).update(m(q, k, v, mask), mask)
    return fold_layer(m.gamma, m.eta, m.effective_delta(), *obs, hobs, AttentionFormats(*bits),
                      name="layer 0", min_levels=0)


@pytest.mark.parametrize("bits", [(8, 8, 8), (4, 5, 6), (12, 10, 16)])
@pytest.mark.parametrize("frozen", [True, False])
def test_qat_with_pow2_equals_golden_bit_for_bit(bits, frozen):
    m = _module(1)
    q, k, v, mask = _inputs(2)
    lq = _fold(m, q, k, v, mask, bits)
    qat = QATInhibitorAttention.from_float(m, lq, frozen=frozen).eval()
    assert qat.length_norm == "pow2" and qat.to_float().length_norm == "pow2"
    out = qat(q, k, v, mask).detach().numpy()
    L = valid_len_from_mask(mask.numpy())[:, None]  # (B, 1)
    expected = golden_from_float(q.numpy(), k.numpy(), v.numpy(), L, lq, length_norm="pow2")
    assert out.tobytes() == expected.tobytes()  # bit for bit
    # Not the contract without normalisation: the shift depends on the sequence.
    plain = golden_from_float(q.numpy(), k.numpy(), v.numpy(), L, lq)
    assert not np.array_equal(expected, plain)
    np.testing.assert_array_equal(expected[0], plain[0])  # L = 1: e = 0, the same shift


def test_qat_with_pow2_tracks_the_float_module():
    """At 16 bits the integer output is the float module's normalised output to within a few LSB."""
    m = _module(3)
    q, k, v, mask = _inputs(4)
    lq = _fold(m, q, k, v, mask, (16, 16, 16))
    qat = QATInhibitorAttention.from_float(m, lq, frozen=True).eval()
    with torch.no_grad():
        out, ref = qat(q, k, v, mask), m(q, k, v, mask)
    valid = mask[:, None, :, None].expand_as(ref)
    err = (out - ref)[valid].abs().max()
    assert err < 1e-2 * ref[valid].abs().max(), float(err)


def test_export_refuses_a_length_normalised_student(tmp_path):
    """The checkpoint manifest has no per-sequence shift: exporting would silently drop the factor."""
    from inhibitron.model.surgery import to_inhibitor
    from inhibitron.quant.export import export_student

    from tiny_models import make_teacher

    student = to_inhibitor(make_teacher(), length_norm="pow2")
    ids = torch.randint(3, 90, (2, 8))
    with pytest.raises(ValueError, match="layer 0 has length_norm='pow2': the checkpoint manifest has no"):
        export_student(student, tmp_path / "ckpt", input_ids=ids, attention_mask=torch.ones_like(ids))
    assert not (tmp_path / "ckpt").exists()
