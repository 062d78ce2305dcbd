"""The baseline's integer softmax attention: contract examples, float error bound, errors."""

import doctest

import numpy as np
import pytest

from inhibitron.quant import baseline_golden as bg
from inhibitron.quant.baseline_golden import (DEFAULT_CONSTANTS, baseline_attention_int,
                                              error_bound_lsb, float_softmax_attention,
                                              score_mult_for_scale)


def test_doctests():
    assert doctest.testmod(bg).failed == 0


def test_constants_of_the_contract():
    c = DEFAULT_CONSTANTS
    assert (c.B, c.C, c.e_max, c.e_bits, c.p_frac) == (250, 32722, 95222, 17, 7)
    assert c.exp_rel_error() < 0.004  # the I-BERT polynomial on (-ln 2, 0]


def test_exp_int_tracks_exp():
    c = DEFAULT_CONSTANTS
    u = np.arange(0, 17 << 7)
    e = c.exp_int(u)
    ref = c.e_max * np.exp(-u * np.log(2) / 128) / (c.e_max * bg.IBERT_A * (np.log(2) / 128) ** 2)
    big = e > 1000
    assert np.all(np.abs(e[big] / ref[big] - 1) < 0.01)
    assert np.all(np.diff(e) <= 0)  # monotone non-increasing
    assert c.exp_int([17 << 7])[0] == 0


@pytest.mark.parametrize("n,d,L", [(8, 8, 8), (16, 32, 5), (32, 64, 32), (16, 16, 1)])
def test_golden_within_documented_bound_of_float(n, d, L):
    rng = np.random.default_rng(n * 1000 + d + L)
    worst, means = 0.0, []
    for _ in range(10):
        q, k, v = (rng.integers(-128, 128, (n, d)) for _ in range(3))
        M = score_mult_for_scale((rng.uniform(1, 6) / 128) ** 2 / np.sqrt(d))
        tr = baseline_attention_int(q, k, v, L, score_mult=M, out_shift=7, out_bits=16,
                                    return_trace=True)
        assert tr.p.min() >= 0 and tr.p.max() <= 128
        assert np.all(tr.p[:, L:] == 0)
        f = float_softmax_attention(q, k, v, L, score_mult=M, out_shift=7)
        err = np.abs(tr.h - f)
        worst = max(worst, float(err.max()))
        means.append(float(err.mean()))
    bound = error_bound_lsb(valid_len=L, n=n, v_max_abs=128, out_shift=7)
    assert worst <= bound
    assert np.mean(means) < 1.0  # typical error below one output LSB


def test_single_valid_key_copies_v():
    rng = np.random.default_rng(1)
    q, k, v = (rng.integers(-128, 128, (4, 8)) for _ in range(3))
    h = baseline_attention_int(q, k, v, 1, score_mult=65535, out_shift=7)
    assert np.array_equal(h, np.broadcast_to(v[0], h.shape))


def test_golden_errors():
    z = np.zeros((2, 2), dtype=int)
    with pytest.raises(ValueError, match=r"q\[\(0, 1\)\] = 128 is outside the signed 8-bit range"):
        baseline_attention_int([[0, 128], [0, 0]], z, z, 1, score_mult=1, out_shift=7)
    with pytest.raises(ValueError, match=r"valid_len must be in 1..2, not 3"):
        baseline_attention_int(z, z, z, 3, score_mult=1, out_shift=7)
    with pytest.raises(ValueError, match=r"score_mult must be an unsigned 16-bit integer"):
        baseline_attention_int(z, z, z, 1, score_mult=1 << 16, out_shift=7)
    with pytest.raises(TypeError, match=r"v must be an integer array"):
        baseline_attention_int(z, z, z * 0.5, 1, score_mult=1, out_shift=7)
    with pytest.raises(ValueError, match=r"p_bits must be an integer in 2..17, not 40"):
        bg.SoftmaxConstants(p_bits=40)
