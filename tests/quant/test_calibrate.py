"""Observers, per-channel weight quantization and the folding policy."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from inhibitron.quant import calibrate as C
from inhibitron.quant import folding, observers, weight_quant
from inhibitron.quant.folding import FormatTooNarrowError, choose_shared_exponent, fold_layer
from inhibitron.quant.formats import AttentionFormats
from inhibitron.quant.observers import MinMaxObserver, MSEObserver, PercentileObserver
from inhibitron.quant.weight_quant import quantize_weight_per_channel


def test_doctests():
    attempted = 0
    for module in (observers, weight_quant, folding):
        result = doctest.testmod(module)
        assert result.failed == 0
        attempted += result.attempted
    assert attempted >= 5


def test_calibrate_reexports_every_name():
    """quant.calibrate keeps the calibration API importable from one place."""
    homes = (observers, weight_quant, folding)
    for name in C.__all__:
        assert any(getattr(m, name, None) is getattr(C, name) for m in homes), name


def test_minmax_per_tensor_and_per_head_with_mask():
    x = np.zeros((2, 3, 4, 5))  # (B, H, n, d)
    x[0, 1, 0, 0] = -7.0
    x[1, 2, 3, 4] = 9.0  # padded token of sequence 1 -> ignored
    x[1, 2, 1, 1] = 2.0
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=bool)
    per_head = MinMaxObserver(head_axis=-3).update(x, mask)
    assert per_head.amax.tolist() == [0.0, 7.0, 2.0]
    assert per_head.last_dim == 5 and per_head.count == 3 * 7 * 5
    per_tensor = MinMaxObserver().update(x, mask).update(x[:1] * 0.5)
    assert float(per_tensor.amax) == 7.0
    assert float(MinMaxObserver().update(x).amax) == 9.0


def test_percentile_and_mse_observers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 2, 1000, 4))
    x[0, 0, 0, 0] = 50.0  # one outlier in head 0
    pct = PercentileObserver(percentile=99.9, head_axis=1).update(x)
    assert pct.amax[0] < 10 and pct.amax[1] < 10
    assert PercentileObserver(percentile=100.0, head_axis=1).update(x).amax[0] == 50.0
    mse = MSEObserver(bits=4, head_axis=1).update(x)
    assert 1.0 < mse.amax[0] < 50.0 and mse.amax[1] <= np.abs(x[0, 1]).max()
    # more bits -> less clipping
    assert MSEObserver(bits=12, head_axis=1).update(x).amax[1] >= mse.amax[1]


def test_sampling_observer_is_deterministic_and_bounded():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5000,))
    a = PercentileObserver(percentile=99.0, max_samples=1000, seed=3)
    b = PercentileObserver(percentile=99.0, max_samples=1000, seed=3)
    for chunk in np.split(x, 5):
        a.update(chunk)
        b.update(chunk)
    assert a.amax == b.amax and a._samples[0].size == 1000
    assert abs(a.amax - np.percentile(np.abs(x), 99.0)) < 0.3


@pytest.mark.parametrize("call, exc, match", [
    (lambda: MinMaxObserver(name="layer 1 q").amax, ValueError, "layer 1 q: observer has seen no"),
    (lambda: MinMaxObserver(name="layer 1 q").update([1.0, np.nan]), ValueError,
     r"layer 1 q: observed tensor contains NaN or Inf \(first at index \(1,\)\)"),
    (lambda: MinMaxObserver(name="v", head_axis=5).update(np.ones((2, 3))), ValueError,
     "v: head_axis=5 is not an axis of a tensor of shape"),
    (lambda: MinMaxObserver(name="v", head_axis=0).update(np.ones((2, 3))).update(np.ones((3, 3))),
     ValueError, "v: saw 3 heads, earlier batches had 2"),
    (lambda: MinMaxObserver(name="k").update(np.ones((2, 3)), np.ones((4,), dtype=bool)), ValueError,
     r"k: mask of shape \(4,\) does not broadcast"),
    (lambda: MinMaxObserver(head_axis="1"), TypeError, "head_axis must be an int or None"),
    (lambda: PercentileObserver(percentile=0), ValueError, r"percentile must be in \(0, 100\]"),
    (lambda: PercentileObserver(max_samples=3), ValueError, "max_samples must be an integer >= 16"),
    (lambda: MSEObserver(grid=1), ValueError, "grid must be an integer >= 2"),
    (lambda: MSEObserver(bits=1), ValueError, "bits must be >= 2"),
])
def test_observer_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_weight_quantization_per_channel():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 10))
    w[3] = 0.0
    codes, scales = quantize_weight_per_channel(w, bits=8, name="layer0.q_proj.weight")
    assert codes.dtype == np.int8 and codes.shape == w.shape and scales.shape == (6,)
    assert scales[3] == 1.0 and not codes[3].any()
    assert np.all(np.abs(codes).max(axis=1)[[0, 1, 2, 4, 5]] == 127)
    err = np.abs(codes * scales[:, None] - w)
    assert np.all(err <= scales[:, None] / 2 + 1e-15)
    codes16, _ = quantize_weight_per_channel(w, bits=12, axis=1)
    assert codes16.dtype == np.int16 and np.abs(codes16).max(axis=0).tolist() == [2047] * 10


def test_weight_quantization_torch_tensor():
    torch = pytest.importorskip("torch")
    lin = torch.nn.Linear(4, 3)
    codes, scales = quantize_weight_per_channel(lin.weight, bits=8, name="lin.weight")
    assert codes.shape == (3, 4) and np.allclose(codes * scales[:, None], lin.weight.detach().numpy(), atol=0.01)


@pytest.mark.parametrize("weight, kw, match", [
    (np.array([[1.0, np.nan]]), dict(name="encoder.layer.3.attention.self.key.weight"),
     r"encoder\.layer\.3\.attention\.self\.key\.weight contains NaN or Inf \(first at index \(0, 1\)\)"),
    (np.array([[np.inf]]), dict(name="v_lin.weight"), "v_lin.weight contains NaN or Inf"),
    (np.ones((2, 2)), dict(axis=2, name="o"), "o: axis=2 is out of range"),
    (np.ones((2, 2)), dict(bits=1), "bits must be an integer in 2..32"),
    (np.float64(1.0), dict(name="s"), "s: a weight needs at least one dimension"),
])
def test_weight_quantization_errors(weight, kw, match):
    with pytest.raises(ValueError, match=match):
        quantize_weight_per_channel(weight, **kw)


def test_choose_shared_exponent():
    assert choose_shared_exponent([0.1, 0.2, 3.9]) == 0
    assert choose_shared_exponent([-2.0, -2.0]) == -2
    assert choose_shared_exponent([1.0, 2.0]) == 2  # tie -> larger
    assert choose_shared_exponent([np.nan, -np.inf, 1.2]) == 1
    assert choose_shared_exponent([np.nan]) == 0


H = 4
D = 32


def _ranges():
    return (np.array([3.0, 4.0, 8.0, 2.0]), np.array([3.5, 3.0, 6.0, 2.5]), np.array([2.0, 3.0, 1.0, 2.5]),
            np.array([5.0, 20.0, 1.0, 7.0]))


@pytest.mark.parametrize("shared", [True, "ab", False])
@pytest.mark.parametrize("fmt", [AttentionFormats(8, 8, 8), AttentionFormats(12, 8, 16), AttentionFormats(16, 16, 16)])
def test_fold_invariants(shared, fmt):
    q, k, v, h = _ranges()
    gamma = np.array([1.0, 0.5, 2.0, 1.3])
    eta = np.array([1.0, -0.7, 2.0, 0.25])
    delta = np.array([-0.5, 0.0, 0.3, -2.0])
    lq = fold_layer(gamma, eta, delta, q, k, v, h, fmt, head_dim=D, shared_shifts=shared, min_levels=0,
                    name="layer 4")
    assert lq.num_heads == H and lq.head_dim == D and lq.name == "layer 4"
    for i, hq in enumerate(lq.heads):
        # powers of two only between V and Z, exactly
        assert math.ldexp(hq.s_v, -hq.v_shift) == math.ldexp(hq.s_z, -hq.z_shift)
        assert not (hq.v_shift and hq.z_shift)
        # gamma/sqrt(d) folded into the shared Q/K scale, eta into the output scale
        assert math.isclose(hq.gamma(D), gamma[i], rel_tol=1e-12)
        assert math.isclose(hq.eta, eta[i], rel_tol=1e-12)
        assert hq.theta == round(delta[i] / hq.s_z) or abs(hq.theta - delta[i] / hq.s_z) <= 0.5
        # every calibrated range fits its format (never shrunk below calibration)
        assert max(q[i], k[i]) / hq.s_qk <= fmt.q.qmax * (1 + 1e-12)
        assert v[i] / hq.s_v <= fmt.v.qmax * (1 + 1e-12)
        assert h[i] / abs(hq.s_h) <= fmt.out.qmax * (1 + 1e-12)
    if shared is True:
        assert lq.shared_shifts is not None
    if shared == "ab":
        assert len(set(lq.v_shift.tolist())) == 1 and len(set(lq.z_shift.tolist())) == 1
    # at least one of each head's two scales is its calibrated one
    for i, hq in enumerate(lq.heads):
        assert math.isclose(hq.s_v, v[i] / fmt.v.qmax) or math.isclose(hq.s_qk, max(q[i], k[i]) / fmt.q.qmax)


def test_fold_output_shift_is_minimal():
    q, k, v, h = _ranges()
    lq = fold_layer(1.0, 1.0, 0.0, q, k, v, h, AttentionFormats(8, 8, 8), head_dim=D, shared_shifts=False,
                    min_levels=0)
    for i, hq in enumerate(lq.heads):
        assert h[i] / abs(hq.s_h) <= 127
        if hq.out_shift > 0:
            assert h[i] / abs(hq.s_h) * 2 > 127  # one shift less would saturate


def test_fold_without_output_range_uses_worst_case():
    q, k, v, _ = _ranges()
    fmt = AttentionFormats(8, 8, 8)
    lq = fold_layer(1.0, 1.0, 0.0, q, k, v, None, fmt, head_dim=D, seq_len=128, min_levels=0)
    a = int(lq.v_shift.max())
    assert lq.shared_shifts[2] == fmt.widths(head_dim=D, seq_len=128, v_shift=a).acc_bits - 8
    with pytest.raises(ValueError, match="without an output range .* pass seq_len="):
        fold_layer(1.0, 1.0, 0.0, q, k, v, None, fmt, head_dim=D)


def test_fold_from_observers_infers_head_dim():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 5, 16))
    obs = [MinMaxObserver(head_axis=-3).update(x * s) for s in (1.0, 1.5, 0.5)]
    lq = fold_layer(1.0, 1.0, -0.5, *obs, None, seq_len=5, min_levels=0)
    assert lq.head_dim == 16 and lq.num_heads == 3


def test_fold_theta_saturates_high_value_identically():
    q, k, v, h = _ranges()
    fmt = AttentionFormats(8, 8, 8)
    lq = fold_layer(1.0, 1.0, 1e9, q, k, v, h, fmt, head_dim=D, min_levels=0)
    assert lq.theta.tolist() == [fmt.theta_range(D)[1]] * H


def test_fold_all_zero_head():
    q, k, v, h = _ranges()
    q[1] = k[1] = v[1] = h[1] = 0.0
    lq = fold_layer(1.0, 1.0, 0.0, q, k, v, h, AttentionFormats(8, 8, 8), head_dim=D, min_levels=4)
    assert lq.heads[1].s_v > 0 and lq.heads[1].s_qk > 0


@pytest.mark.parametrize("change, exc, match", [
    (dict(gamma=np.array([1.0, 1.0, -0.5, 1.0])), ValueError,
     r"layer 3 head 2: gamma = -0.5; quantization needs gamma > 0"),
    (dict(gamma=0.0), ValueError, r"layer 3 head 0: gamma = 0.0; quantization needs gamma > 0"),
    (dict(eta=np.array([1.0, 0.0, 1.0, 1.0])), ValueError, "layer 3 head 1: eta = 0 makes the head"),
    (dict(delta=np.array([0.0, np.nan, 0.0, 0.0])), ValueError, "layer 3 head 1: delta is nan; it must be finite"),
    (dict(delta=np.array([0.0, 0.0])), ValueError, r"layer 3: delta has 2 entries, expected one per head \(4\)"),
    (dict(delta=np.array([0.0, -1e9, 0.0, 0.0])), ValueError,
     r"layer 3 head 1: delta = -1000000000.0 is .* score LSBs, below the threshold range"),
    (dict(v=np.array([1.0, 1.0])), ValueError, "layer 3: the V range has 2 heads, the Q range has 4"),
    (dict(k=np.array([1.0, np.inf, 1.0, 1.0])), ValueError, "layer 3 head 1: the K range is inf"),
    (dict(h=np.array([1.0, 1.0, -1.0, 1.0])), ValueError, "layer 3 head 2: the H range is -1.0"),
    (dict(formats="8/8/8"), TypeError, "formats must be an AttentionFormats"),
    (dict(shared_shifts="abr"), ValueError, "shared_shifts must be True, False or 'ab'"),
    (dict(head_dim=0), ValueError, "head_dim must be a positive integer"),
    (dict(seq_len=2**55), ValueError, "sum_bits would be 68 bits"),
])
def test_fold_errors(change, exc, match):
    q, k, v, h = _ranges()
    args = dict(gamma=1.0, eta=1.0, delta=0.0, q=q, k=k, v=v, h=h, formats=AttentionFormats(8, 8, 8),
                head_dim=D, min_levels=0, name="layer 3")
    args.update(change)
    with pytest.raises(exc, match=match):
        fold_layer(args.pop("gamma"), args.pop("eta"), args.pop("delta"), args.pop("q"), args.pop("k"),
                   args.pop("v"), args.pop("h"), args.pop("formats"), **args)


def test_fold_too_narrow_names_format_and_suggests_width():
    q, k, v, h = _ranges()
    h = np.array([5.0, 2000.0, 0.5, 7.0])  # head 2's output is tiny next to head 1's: shared r starves it
    with pytest.raises(FormatTooNarrowError, match=(
            r"layer 5 head \d: H spans only .* of the 127 positive codes of out_bits=8 because the layer shares "
            r"its shifts \(a, b, r\); at least 4 are needed: use out_bits=17 or fold with shared_shifts='ab' "
            r"\(per-head output shifts\)")):
        fold_layer(1.0, 1.0, 0.0, q, k, v, h, AttentionFormats(8, 8, 8), head_dim=D, shared_shifts=True,
                   name="layer 5")
    # per-head output shifts (the default policy) solve it
    fold_layer(1.0, 1.0, 0.0, q, k, v, h, AttentionFormats(8, 8, 8), head_dim=D, name="layer 5")
    fold_layer(1.0, 1.0, 0.0, q, k, v, h, AttentionFormats(8, 8, 8), head_dim=D, shared_shifts="ab",
               name="layer 5")
    # Q/K starved by the shared a/b of a 3-bit format: gamma differs a lot between heads
    with pytest.raises(FormatTooNarrowError, match=r"head \d: Q/K spans only .* of qk_bits=3 because the layer shares its "
                       r"shifts \(a, b\); .* use qk_bits=\d+ or fold with shared_shifts=False"):
        fold_layer(np.array([1.0, 64.0, 1.0, 1.0]), 1.0, 0.0, q, k, v, None, AttentionFormats(3, 3, 8),
                   head_dim=D, seq_len=8)
    # the suggested width works
    msg = ""
    try:
        fold_layer(1.0, 1.0, 0.0, q, k, v, h, AttentionFormats(8, 8, 8), head_dim=D, shared_shifts=True,
                   name="layer 5")
    except FormatTooNarrowError as exc:
        msg = str(exc)
    width = int(msg.split("use out_bits=")[1].split()[0])
    fold_layer(1.0, 1.0, 0.0, q, k, v, h, AttentionFormats(8, 8, width), head_dim=D, shared_shifts=True,
               name="layer 5")


def test_observe_layer_kinds():
    rng = np.random.default_rng(0)
    layer = {x: rng.normal(size=(2, 3, 6, 8)) for x in "qkv"}
    layer["mask"] = np.array([[1] * 6, [1] * 4 + [0] * 2], dtype=bool)
    for kind in ("minmax", "percentile", "mse"):
        obs = observers.observe_layer(layer, observer=kind, name="layer 0")
        assert [o.amax.shape for o in obs] == [(3,)] * 3 and obs[0].name == "layer 0 q"
    with pytest.raises(ValueError, match="observer must be 'minmax', 'percentile' or 'mse', not 'max'"):
        observers.observe_layer(layer, observer="max")
