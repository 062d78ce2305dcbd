"""hls4ml layer: a PyTorch model with InhibitorAttention converts with
``hls4ml.converters.convert_from_pytorch_model``; ``compile()``/``predict()``
(g++ C simulation of the HLS kernel) equals quant.golden bit for bit, with
key-padding masks of every valid length, extremes and real MiniLM codes."""

import numpy as np
import pytest

pytest.importorskip("hls4ml", reason="the hls4ml layer needs hls4ml 1.3 (extra 'integration')")
torch = pytest.importorskip("torch")

import hls4ml  # noqa: E402
from torch import nn  # noqa: E402

from inhibitron.hw import hls4ml_layer as HL  # noqa: E402
from inhibitron.model.attention import InhibitorAttention  # noqa: E402
from inhibitron.quant.formats import AttentionFormats, HeadQuant, LayerQuant  # noqa: E402
from inhibitron.quant.golden import dequantize_output, inhibitor_attention_int, quantize_inputs  # noqa: E402
from inhibitron.sim.stimulus import REAL_VECTORS  # noqa: E402


class Masked(nn.Module):
    def __init__(self, attn):
        super().__init__()
        self.attn = attn

    def forward(self, q, k, v, key_mask):
        return self.attn(q, k, v, key_mask)


class Unmasked(nn.Module):
    def __init__(self, attn):
        super().__init__()
        self.attn = attn

    def forward(self, q, k, v):
        return self.attn(q, k, v)


def _lq(fmt, H, d, *, seed, a=0, b=0, thetas=None):
    rng = np.random.default_rng(seed)
    w = fmt.widths(head_dim=d, seq_len=16, v_shift=a, z_shift=b)
    heads = []
    for h in range(H):
        theta = int(thetas[h]) if thetas is not None else int(rng.integers(-d * 4, d * 2))
        heads.append(HeadQuant(s_qk=float(rng.uniform(0.02, 0.2)), s_v=float(rng.uniform(0.01, 0.1)),
                               s_h=float(rng.uniform(0.01, 0.1)), v_shift=a, z_shift=b,
                               theta=int(np.clip(theta, w.theta_min, w.theta_max)),
                               out_shift=int(rng.integers(0, 5))))
    return LayerQuant(formats=fmt, head_dim=d, heads=heads)


def assert_bit_exact(got, want, what):
    got = np.asarray(got).reshape(want.shape)
    bad = np.argwhere(got != want)
    if len(bad):
        lines = [f"index {tuple(int(i) for i in b)}: got {got[tuple(b)]}, expected {want[tuple(b)]}"
                 for b in bad[:10]]
        pytest.fail(f"{what}: {len(bad)} of {want.size} codes differ:\n" + "\n".join(lines))


def _predict(hmodel, *arrays):
    B = arrays[0].shape[0]
    return np.asarray(hmodel.predict([np.ascontiguousarray(x.reshape(B, -1), dtype=np.float64)
                                      for x in arrays]))


def _codes(rng, fmt, shape, *, extremes=True):
    qlo, qhi = -(1 << (fmt.qk_bits - 1)), (1 << (fmt.qk_bits - 1)) - 1
    vlo, vhi = -(1 << (fmt.v_bits - 1)), (1 << (fmt.v_bits - 1)) - 1
    q, k = rng.integers(qlo, qhi + 1, shape), rng.integers(qlo, qhi + 1, shape)
    v = rng.integers(vlo, vhi + 1, shape)
    if extremes:  # batch item 0: the largest scores and values at both ends
        q[0], k[0], v[0] = qlo, qhi, vlo
        q[1, :, ::2], k[1, :, ::2], v[1, :, 1::2] = qhi, qlo, vhi
    return q, k, v


@pytest.mark.parametrize("fmt,H,n,d,a,b", [
    (AttentionFormats(8, 8, 8), 2, 8, 4, 1, 0),     # 8-bit, v_shift
    (AttentionFormats(4, 4, 4), 3, 5, 3, 0, 1),     # 4-bit, non-power-of-two n and d, z_shift
])
def test_masked_every_length(tmp_path, fmt, H, n, d, a, b):
    lq = _lq(fmt, H, d, seed=n, a=a, b=b)
    model = Masked(InhibitorAttention(H, d)).eval()
    hmodel = HL.convert(model, [(H, n, d)] * 3 + [(n,)], tmp_path / "prj", layer_quants=lq)
    assert [layer.class_name for layer in hmodel.get_layers()][-1] == "InhibitorAttention"
    hmodel.compile()
    rng = np.random.default_rng(1)
    lengths = np.array(list(range(1, n + 1)) * 2)  # every valid length, twice
    B = len(lengths)
    q, k, v = _codes(rng, fmt, (B, H, n, d))
    mask = np.arange(n)[None, :] < lengths[:, None]
    got = _predict(hmodel, q, k, v, mask)
    want = inhibitor_attention_int(q, k, v, lengths[:, None], **lq.golden_kwargs())
    assert_bit_exact(got, want, "hls4ml predict vs golden")
    assert np.abs(want).max() >= (1 << (fmt.out_bits - 1)) - 1  # saturation reached
    # the mask matters: the same codes with every key valid give other outputs
    full = inhibitor_attention_int(q, k, v, n, **lq.golden_kwargs())
    assert np.any(full != want)


def test_real_minilm_codes(tmp_path):
    """The 12 real MiniLM heads (16 tokens, d = 32) as one 12-head layer, masks 14 and 16."""
    z = np.load(REAL_VECTORS)
    qc, kc, vc = (z[name].astype(np.int64) for name in ("q", "k", "v"))
    H, n, d = qc.shape
    fmt = AttentionFormats(int(z["qk_bits"]), int(z["v_bits"]), 8)
    lq = _lq(fmt, H, d, seed=3, a=2, thetas=z["theta"])
    model = Masked(InhibitorAttention(H, d)).eval()
    hmodel = HL.convert(model, [(H, n, d)] * 3 + [(n,)], tmp_path / "prj", layer_quants=lq)
    hmodel.compile()
    lengths = np.array([int(z["length"].min()), n])
    q, k, v = (np.stack([x, x]) for x in (qc, kc, vc))
    mask = np.arange(n)[None, :] < lengths[:, None]
    got = _predict(hmodel, q, k, v, mask)
    want = inhibitor_attention_int(q, k, v, lengths[:, None], **lq.golden_kwargs())
    assert_bit_exact(got, want, "hls4ml predict vs golden (real MiniLM)")
    assert np.count_nonzero(want) > want.size // 4


def test_qat_module_unmasked_end_to_end(tmp_path):
    """A QATInhibitorAttention brings its own record; no mask (L = n); dequantized
    predictions equal the QAT module's own forward."""
    from inhibitron.quant.qat import QATInhibitorAttention

    H, n, d = 2, 7, 4
    lq = _lq(AttentionFormats(6, 8, 10), H, d, seed=9, b=2)
    qat = QATInhibitorAttention.from_float(InhibitorAttention(H, d), lq, frozen=True, seq_len=n)
    qat = qat.double().eval()
    model = Unmasked(qat).eval()
    rng = np.random.default_rng(4)
    qf, kf, vf = (rng.normal(0, 1.0, (3, H, n, d)) for _ in range(3))
    with torch.no_grad():
        ref = qat(*(torch.from_numpy(x) for x in (qf, kf, vf))).numpy()
    hmodel = HL.convert(model, [(H, n, d)] * 3, tmp_path / "prj")
    hmodel.compile()
    q, k, v = quantize_inputs(qf, kf, vf, lq)
    got = _predict(hmodel, q, k, v).reshape(3, H, n, d).astype(np.int64)
    want = inhibitor_attention_int(q, k, v, n, **lq.golden_kwargs())
    assert_bit_exact(got, want, "hls4ml predict vs golden (QAT, no mask)")
    np.testing.assert_array_equal(dequantize_output(got, lq), ref)


def test_comparison_can_fail():
    want = np.zeros((1, 2, 3, 2), dtype=np.int64)
    got = want.copy()
    got[0, 1, 2, 0] = 1
    with pytest.raises(pytest.fail.Exception, match=r"1 of 12 codes differ:\nindex \(0, 1, 2, 0\)"):
        assert_bit_exact(got, want, "x")


def test_prepare_errors_and_plain_tracer():
    H, d = 2, 4
    lq = _lq(AttentionFormats(8, 8, 8), H, d, seed=0)
    model = Masked(InhibitorAttention(H, d))
    # hls4ml's own tracer traces *through* a plain InhibitorAttention (torch.fx
    # proxies reach its input checks): why prepare() re-types the module
    with pytest.raises(ValueError, match="got Proxy"):
        hls4ml.converters.convert_from_pytorch_model(
            model, hls_config={"Model": {"Precision": "ap_fixed<16,6>", "ReuseFactor": 1},
                               "InputShape": [(H, 3, d)] * 3 + [(3,)]}, output_dir="/nonexistent")
    with pytest.raises(ValueError, match="has no LayerQuant"):
        HL.prepare(model)
    with pytest.raises(ValueError, match="has no InhibitorAttention"):
        HL.prepare(nn.Linear(2, 2), lq)
    with pytest.raises(ValueError, match="LayerQuant has 2 heads of dim 4, the module 3"):
        HL.prepare(Masked(InhibitorAttention(3, d)), lq)
    per_head_ab = LayerQuant(formats=lq.formats, head_dim=d, heads=[
        HeadQuant(s_qk=0.1, s_v=0.1, s_h=0.1, theta=0, v_shift=1),
        HeadQuant(s_qk=0.1, s_v=0.1, s_h=0.1, theta=0, z_shift=1)])
    with pytest.raises(ValueError, match="shared by the heads"):
        HL._core_config(per_head_ab, 4)
    prepared = HL.prepare(model, lq)
    assert prepared is model
    assert type(model.attn).__name__ == "InhibitorAttention"
    assert isinstance(model.attn, InhibitorAttention)
    from hls4ml.utils.torch import HLS4MLModule
    assert isinstance(model.attn, HLS4MLModule)
    assert model.attn.hls4ml_layer_quant is lq
