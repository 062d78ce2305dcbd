"""Golden model vs its scalar-loop twin, bit-exact: random and extreme codes, every L."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest
from golden_loop import one_head

from inhibitron.quant import golden as G
from inhibitron.quant.formats import AttentionFormats, HeadQuant, LayerQuant
from inhibitron.quant.golden import GoldenTrace, inhibitor_attention_int

FIELDS = GoldenTrace._fields


def test_doctests():
    result = doctest.testmod(G)
    assert result.failed == 0 and result.attempted >= 2


def _compare_with_loop(q, k, v, L, theta, a, b, r, qk_bits, v_bits, out_bits):
    """Run the golden model once on stacked heads and the loop twin per head; assert bit-exact."""
    tr = inhibitor_attention_int(q, k, v, L, theta=theta, v_shift=a, z_shift=b, out_shift=r,
                                 qk_bits=qk_bits, v_bits=v_bits, out_bits=out_bits, return_trace=True)
    for name in FIELDS:
        assert getattr(tr, name).dtype == np.int64, name
    lead = tr.h.shape[:-2]
    L, theta, a, b, r = (np.broadcast_to(x, lead) for x in (L, theta, a, b, r))
    qb, kb, vb = (np.broadcast_to(x, lead + x.shape[-2:]) for x in (q, k, v))
    for idx in np.ndindex(*lead):
        ref = one_head(qb[idx].tolist(), kb[idx].tolist(), vb[idx].tolist(), int(L[idx]),
                       theta=int(theta[idx]), a=int(a[idx]), b=int(b[idx]), r=int(r[idx]), out_bits=out_bits)
        for name in FIELDS:
            got = getattr(tr, name)[idx]
            want = np.array(ref[name], dtype=object)
            if not np.array_equal(got, want.astype(np.int64)):
                bad = np.argwhere(got != want.astype(np.int64))[0]
                pytest.fail(f"{name} differs at head {idx}, element {tuple(bad)}: golden "
                            f"{got[tuple(bad)]}, loop {want[tuple(bad)]} (L={L[idx]}, theta={theta[idx]}, "
                            f"a={a[idx]}, b={b[idx]}, r={r[idx]})")
    return tr


# (qk_bits, v_bits, out_bits, d, n, a, b, r)
CONFIGS = [
    (2, 2, 2, 1, 1, 0, 0, 0),
    (4, 4, 8, 3, 5, 0, 0, 0),
    (4, 6, 4, 2, 7, 0, 1, 2),
    (8, 8, 8, 4, 6, 0, 2, 3),
    (8, 8, 8, 5, 8, 2, 0, 5),
    (8, 4, 6, 3, 6, 3, 0, 1),
    (12, 12, 12, 4, 5, 0, 3, 7),
    (16, 8, 16, 3, 6, 0, 9, 4),
    (16, 16, 16, 4, 5, 1, 0, 10),
    (6, 16, 3, 2, 9, 0, 0, 20),
]


def _rand_codes(rng, bits, shape):
    return rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), shape)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "q{}v{}o{}_d{}_n{}_a{}b{}r{}".format(*c))
def test_random_every_valid_length(cfg):
    qk_bits, v_bits, out_bits, d, n, a, b, r = cfg
    rng = np.random.default_rng(hash(cfg) % 2**32)
    fmt = AttentionFormats(qk_bits, v_bits, out_bits)
    lo, hi = fmt.theta_range(d)
    # One head per valid length L = 1..n, three random draws each, thetas spread over the range.
    lengths = np.tile(np.arange(1, n + 1), 3)  # (3n,)
    heads = lengths.size
    q = _rand_codes(rng, qk_bits, (heads, n, d))
    k = _rand_codes(rng, qk_bits, (heads, n, d))
    v = _rand_codes(rng, v_bits, (heads, n, d + 1))  # d_v != d on purpose
    z_scale = d * 2 ** (qk_bits - 1)
    theta = rng.integers(max(lo, -z_scale), min(hi, z_scale) + 1, heads)
    _compare_with_loop(q, k, v, lengths, theta, a, b, r, qk_bits, v_bits, out_bits)


def _extreme_cases(qk_bits, v_bits):
    qmin, qmax = -(2 ** (qk_bits - 1)), 2 ** (qk_bits - 1) - 1
    vmin, vmax = -(2 ** (v_bits - 1)), 2 ** (v_bits - 1) - 1
    for qv, kv, vv in itertools.product((qmin, qmax, 0), (qmin, qmax), (vmin, vmax)):
        yield qv, kv, vv


@pytest.mark.parametrize("qk_bits, v_bits, out_bits", [(2, 2, 2), (4, 8, 4), (8, 8, 8), (12, 12, 12),
                                                       (16, 16, 16), (8, 16, 2), (16, 4, 16)])
def test_extreme_codes_every_length_and_threshold(qk_bits, v_bits, out_bits):
    """All codes at the min/max of every format, mixed per key, with extreme thresholds and shifts."""
    n, d = 6, 3
    fmt = AttentionFormats(qk_bits, v_bits, out_bits)
    lo, hi = fmt.theta_range(d)
    cases = list(_extreme_cases(qk_bits, v_bits))
    qmin, qmax = fmt.q.qmin, fmt.q.qmax
    vmin, vmax = fmt.v.qmin, fmt.v.qmax
    for a, b, r in ((0, 0, 0), (3, 0, 1), (0, 5, 4), (0, 0, 40), (2, 0, 13)):
        for theta in (lo, -1, 0, 1, hi):
            q_list, k_list, v_list, L_list = [], [], [], []
            for qv, kv, vv in cases:
                for L in range(1, n + 1):
                    q_list.append(np.full((n, d), qv))
                    k_list.append(np.full((n, d), kv))
                    v_list.append(np.full((n, d), vv))
                    L_list.append(L)
            # Mixed extremes: keys alternate min/max, half the queries at max, values alternate sign.
            alt = np.where(np.arange(n)[:, None] % 2 == 0, qmin, qmax) * np.ones((n, d), dtype=np.int64)
            valt = np.where(np.arange(n)[:, None] % 3 == 0, vmin, vmax) * np.ones((n, d), dtype=np.int64)
            qmix = np.where(np.arange(n)[:, None] < n // 2, qmax, qmin) * np.ones((n, d), dtype=np.int64)
            for L in range(1, n + 1):
                q_list += [qmix, alt]
                k_list += [alt, qmix]
                v_list += [valt, -valt - 1]
                L_list += [L, L]
            _compare_with_loop(np.stack(q_list), np.stack(k_list), np.stack(v_list), np.array(L_list),
                               theta, a, b, r, qk_bits, v_bits, out_bits)


def test_extreme_values_reach_and_respect_the_derived_widths():
    """Worst cases: z and the accumulator hit their format limits exactly and never exceed them."""
    for qk_bits, v_bits, d, n in ((4, 4, 4, 8), (8, 8, 32, 16), (16, 16, 64, 8)):
        fmt = AttentionFormats(qk_bits, v_bits, 32)
        for a in (0, 3):
            w = fmt.widths(head_dim=d, seq_len=n, v_shift=a)
            q = np.full((n, d), fmt.q.qmax)
            k = np.full((n, d), fmt.q.qmin)
            v = np.full((n, d), fmt.v.qmin)
            tr = inhibitor_attention_int(q, k, v, n, theta=fmt.theta_range(d)[1], v_shift=a, z_shift=0,
                                         out_shift=0, qk_bits=qk_bits, v_bits=v_bits, out_bits=32,
                                         return_trace=True)
            assert tr.z.max() == d * (2**qk_bits - 1) < 2**w.z_bits
            assert tr.row_sum.max() == n * d * (2**qk_bits - 1) < 2**w.sum_bits
            # theta_max: nothing inhibited, every summand is v << a = -2**(v_bits-1+a)
            assert tr.acc.min() == -n * 2 ** (v_bits - 1 + a) >= -(2 ** (w.acc_bits - 1))
            tr = inhibitor_attention_int(q, k, -v - 1, n, theta=fmt.theta_range(d)[1], v_shift=a,
                                         z_shift=0, out_shift=0, qk_bits=qk_bits, v_bits=v_bits,
                                         out_bits=32, return_trace=True)
            assert tr.acc.max() == n * (2 ** (v_bits - 1) - 1) * 2**a <= 2 ** (w.acc_bits - 1) - 1


def test_output_saturates_at_both_ends():
    n, d = 4, 2
    v = np.full((n, d), 127)
    kw = dict(theta=2**9 - 1, v_shift=0, z_shift=0, out_shift=1, qk_bits=8, v_bits=8, out_bits=4)
    q = np.zeros((n, d), dtype=np.int64)
    tr = inhibitor_attention_int(q, q, v, n, return_trace=True, **kw)
    assert np.all(tr.acc == 4 * 127) and np.all(tr.h == 7)
    tr = inhibitor_attention_int(q, q, -v - 1, n, return_trace=True, **kw)
    assert np.all(tr.acc == -4 * 128) and np.all(tr.h == -8)


def test_rounding_of_output_is_half_up():
    n, d = 1, 4
    q = np.zeros((n, d), dtype=np.int64)
    kw = dict(theta=0, v_shift=0, z_shift=0, qk_bits=4, v_bits=8, out_bits=8)
    v = np.array([[3, -3, 5, -5]])  # / 2 -> 1.5 -1.5 2.5 -2.5
    assert inhibitor_attention_int(q, q, v, 1, out_shift=1, **kw).tolist() == [[2, -1, 3, -2]]


def test_mean_is_rounded_half_up_for_non_power_of_two_lengths():
    # z row = [0, 1, 2] for L = 2 -> S = 1, S/L = 0.5 -> m = 1 ; L = 3 -> S = 3, m = 1
    q = np.array([[0]])
    k = np.array([[0], [1], [2]])
    v = np.zeros((3, 1), dtype=np.int64)
    kw = dict(theta=0, v_shift=0, z_shift=0, out_shift=0, qk_bits=4, v_bits=4, out_bits=4)
    for L, m in ((1, 0), (2, 1), (3, 1)):
        assert inhibitor_attention_int(q, k, v, L, return_trace=True, **kw).mean.tolist() == [m]
    k = np.array([[0], [0], [1], [1], [1], [3], [0]])  # L = 5: S = 3 -> 0.6 -> 1; L = 6: S = 6 -> 1
    v = np.zeros((7, 1), dtype=np.int64)
    assert inhibitor_attention_int(q, k, v, 5, return_trace=True, **kw).mean.tolist() == [1]
    k = np.array([[0], [0], [0], [0], [0], [2], [7]])  # L = 6: S = 2, 2/6 = .33 -> 0; L = 7: 9/7 -> 1
    assert inhibitor_attention_int(q, k, v, 6, return_trace=True, **kw).mean.tolist() == [0]
    assert inhibitor_attention_int(q, k, v, 7, return_trace=True, **kw).mean.tolist() == [1]


def test_padded_keys_change_nothing_but_their_scores():
    rng = np.random.default_rng(3)
    n, d, L = 10, 4, 6
    q, k = _rand_codes(rng, 8, (2, n, d)), _rand_codes(rng, 8, (2, n, d))
    v = _rand_codes(rng, 8, (2, n, d))
    kw = dict(theta=[-3, 5], v_shift=0, z_shift=1, out_shift=3, qk_bits=8, v_bits=8, out_bits=8)
    base = inhibitor_attention_int(q, k, v, L, return_trace=True, **kw)
    k2, v2 = k.copy(), v.copy()
    k2[:, L:] = _rand_codes(rng, 8, (2, n - L, d))
    v2[:, L:] = _rand_codes(rng, 8, (2, n - L, d))
    other = inhibitor_attention_int(q, k2, v2, L, return_trace=True, **kw)
    for name in ("row_sum", "mean", "threshold", "acc", "h"):
        assert np.array_equal(getattr(base, name), getattr(other, name)), name
    assert np.array_equal(base.z[..., :L], other.z[..., :L])


def test_broadcasting_batch_heads_and_shapes():
    rng = np.random.default_rng(5)
    B, H, n, d = 2, 3, 5, 4
    q = _rand_codes(rng, 8, (B, H, n, d))
    k = _rand_codes(rng, 8, (B, H, n, d))
    v = _rand_codes(rng, 8, (B, H, n, 2))
    L = np.array([[3], [5]])  # (B, 1)
    theta = np.array([-2, 0, 7])  # (H,)
    r = np.array([0, 2, 4])
    tr = inhibitor_attention_int(q, k, v, L, theta=theta, v_shift=0, z_shift=1, out_shift=r,
                                 qk_bits=8, v_bits=8, out_bits=8, return_trace=True)
    assert tr.z.shape == tr.zb.shape == (B, H, n, n)
    assert tr.row_sum.shape == tr.mean.shape == tr.threshold.shape == (B, H, n)
    assert tr.acc.shape == tr.h.shape == (B, H, n, 2)
    for bi, hi in itertools.product(range(B), range(H)):
        one = inhibitor_attention_int(q[bi, hi], k[bi, hi], v[bi, hi], int(L[bi, 0]), theta=int(theta[hi]),
                                      v_shift=0, z_shift=1, out_shift=int(r[hi]), qk_bits=8, v_bits=8,
                                      out_bits=8)
        assert np.array_equal(one, tr.h[bi, hi])
    # shared keys/values broadcast against per-head queries; n_q != n_k is allowed
    h = inhibitor_attention_int(q[:, :, :2], k[0, 0], v[0, 0], 4, theta=0, v_shift=0, z_shift=0,
                                out_shift=0, qk_bits=8, v_bits=8, out_bits=8)
    assert h.shape == (B, H, 2, 2)
    assert np.array_equal(inhibitor_attention_int(q, k, v, L, theta=theta, v_shift=0, z_shift=1, out_shift=r,
                                                  qk_bits=8, v_bits=8, out_bits=8), tr.h)


def test_accepts_any_integer_dtype():
    q = np.array([[1, -2], [3, 4]], dtype=np.int8)
    kw = dict(theta=1, v_shift=0, z_shift=0, out_shift=0, qk_bits=8, v_bits=8, out_bits=8)
    h8 = inhibitor_attention_int(q, q, q, 2, **kw)
    h64 = inhibitor_attention_int(q.astype(np.int64), q.astype(np.int16), q.astype(np.int32), 2, **kw)
    assert h8.dtype == np.int64 and np.array_equal(h8, h64)


KW = dict(theta=0, v_shift=0, z_shift=0, out_shift=0, qk_bits=4, v_bits=4, out_bits=4)


@pytest.mark.parametrize("change, exc, match", [
    (dict(q=np.array([[0, 8], [0, 0]])), ValueError,
     r"q has code 8 at index \(0, 1\), outside the s4 range \[-8, 7\]"),
    (dict(k=np.array([[0, 0], [-9, 0]])), ValueError, r"k has code -9 at index \(1, 0\)"),
    (dict(v=np.array([[0, 0], [0, 100]])), ValueError, r"v has code 100 at index \(1, 1\)"),
    (dict(q=np.zeros((2, 2))), TypeError, "q must be an integer array of s4 codes, got dtype float64"),
    (dict(v=np.zeros((2, 2), dtype=bool)), TypeError, "v must be an integer array"),
    (dict(q=np.zeros(2, dtype=int)), ValueError, r"q must have shape \(\.\.\., n, d\)"),
    (dict(q=np.zeros((2, 0), dtype=int)), ValueError, "q has an empty sequence or head dimension"),
    (dict(k=np.zeros((2, 3), dtype=int)), ValueError, "q and k must share the head dimension d"),
    (dict(v=np.zeros((3, 2), dtype=int)), ValueError, "k and v must have the same number of keys"),
    (dict(q=np.zeros((3, 2, 2), dtype=int), k=np.zeros((4, 2, 2), dtype=int)), ValueError,
     "leading .* do not broadcast"),
    (dict(valid_len=0), ValueError, r"valid_len must be >= 1, got 0"),
    (dict(valid_len=3), ValueError, r"valid_len must be in 1..n_k=2, got 3"),
    (dict(valid_len=1.0), TypeError, "valid_len must be an integer"),
    (dict(valid_len=[1, 2, 1]), ValueError, "valid_len of shape .* does not broadcast"),
    (dict(v_shift=-1), ValueError, "v_shift must be >= 0"),
    (dict(out_shift=-2), ValueError, "out_shift must be >= 0"),
    (dict(v_shift=1, z_shift=2), ValueError, "at most one of v_shift and z_shift may be nonzero"),
    (dict(theta=32), ValueError, r"theta=32 at index \(\) is outside the threshold range \[-32, 31\] "
     r"\(signed 6 bits for qk_bits=4, d=2\)"),
    (dict(theta=-33), ValueError, "outside the threshold range"),
    (dict(theta=0.5), TypeError, "theta must be an integer"),
    (dict(qk_bits=1), ValueError, r"qk_bits must be in 2..32 \(a signed code width\), not 1"),
    (dict(out_bits=33), ValueError, r"out_bits must be in 2..32 \(a signed code width\), not 33"),
    (dict(v_shift=60), ValueError, "mix_bits would be 65 bits .* at most 62"),
])
def test_validation_errors(change, exc, match):
    args = dict(q=np.zeros((2, 2), dtype=int), k=np.zeros((2, 2), dtype=int), v=np.zeros((2, 2), dtype=int),
                valid_len=1, **KW)
    args.update(change)
    q, k, v, L = args.pop("q"), args.pop("k"), args.pop("v"), args.pop("valid_len")
    with pytest.raises(exc, match=match):
        inhibitor_attention_int(q, k, v, L, **args)


def _layer(num_heads=2, d=4, **fmt):
    heads = [HeadQuant(s_qk=0.125 * (h + 1), s_v=0.0625, s_h=-0.2, theta=h - 1, v_shift=0, z_shift=1, out_shift=2)
             for h in range(num_heads)]
    return LayerQuant(formats=AttentionFormats(**fmt), head_dim=d, heads=heads, name="layer 7")


def test_quantize_inputs_rint_and_saturation_per_head():
    lq = _layer()
    q = np.zeros((2, 3, 4))
    q[0, 0, :] = [0.0625, 0.1875, -0.3125, 100.0]  # head 0 scale 1/8: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2, sat
    q[1, 0, :] = [0.125, 0.375, -0.625, -100.0]  # head 1 scale 1/4: the same codes, saturating low
    qi, ki, vi = G.quantize_inputs(q, q, q, lq)
    assert qi[0, 0].tolist() == [0, 2, -2, 127]
    assert qi[1, 0].tolist() == [0, 2, -2, -128]
    assert np.array_equal(qi, ki) and vi.dtype == np.int64
    assert G.dequantize_output(np.ones((2, 3, 4), dtype=int), lq)[1, 0, 0] == -0.2


def test_golden_from_float_matches_manual_pipeline():
    lq = _layer()
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(3, 2, 5, 4)) for _ in range(3))
    L = np.array([[2], [5], [4]])
    hf, tr = G.golden_from_float(q, k, v, L, lq, return_trace=True)
    qi, ki, vi = G.quantize_inputs(q, k, v, lq)
    h = inhibitor_attention_int(qi, ki, vi, L, **lq.golden_kwargs())
    assert np.array_equal(tr.h, h)
    assert np.array_equal(hf, h * lq.s_h[:, None, None])
    assert np.array_equal(G.golden_from_float(q, k, v, L, lq), hf)


@pytest.mark.parametrize("fn, args, match", [
    (G.quantize_inputs, (np.zeros((3, 5, 4)), np.zeros((2, 5, 4)), np.zeros((2, 5, 4))),
     r"q must have shape \(\.\.\., num_heads=2, n, d=4\) for layer 7, got shape \(3, 5, 4\)"),
    (G.quantize_inputs, (np.zeros((2, 5, 4)), np.zeros((2, 5, 3)), np.zeros((2, 5, 4))),
     r"k must have shape"),
    (G.quantize_inputs, (np.zeros((2, 5, 4)), np.zeros((2, 5, 4)), np.full((2, 5, 4), np.inf)),
     r"v contains NaN or Inf \(first at index \(0, 0, 0\)\)"),
    (G.dequantize_output, (np.zeros((3, 5, 4), dtype=int),), r"h must have shape"),
])
def test_float_helpers_errors(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args, _layer())


def test_valid_len_from_mask():
    assert G.valid_len_from_mask(np.array([[1, 1, 0], [1, 0, 0]])).tolist() == [2, 1]
    with pytest.raises(ValueError, match=r"mask row \(0,\) is not a prefix mask"):
        G.valid_len_from_mask([[True, False, True]])
    with pytest.raises(ValueError, match=r"mask row \(1,\) has no valid key"):
        G.valid_len_from_mask([[True, False], [False, False]])
    with pytest.raises(ValueError, match="mask must be boolean"):
        G.valid_len_from_mask([[2, 0]])


def test_numerics_doc_examples():
    """The examples of docs/numerics.md run as doctests (they are part of the contract)."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "docs" / "numerics.md"
    result = doctest.testfile(str(path), module_relative=False, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 15


def test_golden_needs_numpy_only():
    """quant.golden (and the formats/rounding it uses) never import torch."""
    import subprocess
    import sys

    code = ("import sys, inhibitron.quant.golden, inhibitron.quant.rounding, inhibitron.quant.calibrate; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
