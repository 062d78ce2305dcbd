"""ONNX export: float graph vs PyTorch in onnxruntime, QDQ graph vs golden, checker, reproducible bytes."""

import numpy as np
import onnx
import pytest
import torch

from inhibitron.model.attention import InhibitorAttention
from inhibitron.quant.formats import AttentionFormats, HeadQuant, LayerQuant
from inhibitron.quant.golden import golden_from_float, inhibitor_attention_int, quantize_inputs
from inhibitron.quant.onnx_export import OPSET, check_model, float_graph, qdq_graph, run_model, save_model
from inhibitron.quant.qat import QATInhibitorAttention

H, D = 4, 8

#: The only operators the graphs may use (standard ONNX, default domain).
FLOAT_OPS = {"Unsqueeze", "Sub", "Abs", "ReduceSum", "ReduceMean", "Mul", "Div", "Cast", "Where", "Relu", "Min",
             "Add"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "Cast", "Max", "Min", "Unsqueeze", "Sub", "Abs", "ReduceSum",
           "Where", "Add", "Mul", "Div", "Neg", "Mod"}


def module(variant="valid", seed=0):
    torch.manual_seed(seed)
    m = InhibitorAttention(H, D, variant=variant).eval()
    with torch.no_grad():
        m.gamma.uniform_(0.5, 2.0)
        m.eta.uniform_(-2.0, 2.0)
        (m.delta if variant == "valid" else m.alpha).uniform_(-1.0, 1.0)
    return m


def record(bits=(8, 8, 8)):
    formats = AttentionFormats(*bits)
    lo, hi = formats.theta_range(D)
    shifts = [(0, 0, 0, 0), (max(-40, lo), 2, 0, 3), (17, 0, 3, 1), (min(100, hi), 0, 0, 5)]
    return LayerQuant(
        formats=formats, head_dim=D,
        heads=tuple(HeadQuant(s_qk=0.21 * (h + 1), s_v=0.37, s_h=-0.75 + 0.6 * h, theta=t, v_shift=a, z_shift=b,
                              out_shift=r) for h, (t, a, b, r) in enumerate(shifts)),
        name="layer 3",
    )


def ops(model):
    assert all(n.domain == "" for n in model.graph.node), "custom domain"
    return {n.op_type for n in model.graph.node}


@pytest.mark.parametrize("variant", ["valid", "thesis"])
def test_float_graph_matches_pytorch_to_1e5(variant):
    m = module(variant)
    model = float_graph(m)
    check_model(model)
    assert ops(model) <= FLOAT_OPS
    assert model.opset_import[0].version == OPSET
    g = torch.Generator().manual_seed(1)
    for batch, n in ((2, 7), (3, 13), (1, 1)):  # dynamic B and n
        q, k, v = (torch.randn(batch, H, n, D, generator=g) for _ in range(3))
        mask = torch.rand(batch, n, generator=g) > 0.3  # any pattern, not only prefixes
        mask[:, 0] = True
        with torch.no_grad():
            ref = m(q, k, v, mask).numpy()
        (out,) = run_model(model, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy(), "key_mask": mask.numpy()})
        assert out.dtype == np.float32 and out.shape == ref.shape
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_float_graph_bytes_are_reproducible(tmp_path):
    a = float_graph(module(seed=3)).SerializeToString(deterministic=True)
    b = float_graph(module(seed=3)).SerializeToString(deterministic=True)
    assert a == b
    save_model(float_graph(module(seed=3)), tmp_path / "f.onnx")
    assert (tmp_path / "f.onnx").read_bytes() == a
    assert float_graph(module(seed=4)).SerializeToString(deterministic=True) != a


def codes_as_float(lq, seed, batch=3, n=7):
    """Float32 inputs that are exact multiples of the float32 scales: both quantizers agree."""
    rng = np.random.default_rng(seed)
    f = lq.formats
    q, k = (rng.integers(f.q.qmin, f.q.qmax + 1, size=(batch, H, n, D)) for _ in range(2))
    v = rng.integers(f.v.qmin, f.v.qmax + 1, size=(batch, H, n, D))
    s_qk, s_v = lq.s_qk.astype(np.float32)[:, None, None], lq.s_v.astype(np.float32)[:, None, None]
    return (q * s_qk).astype(np.float32), (k * s_qk).astype(np.float32), (v * s_v).astype(np.float32), (q, k, v)


@pytest.mark.parametrize("bits", [(8, 8, 8), (6, 5, 7), (12, 16, 24), (16, 12, 16), (2, 2, 2)])
def test_qdq_graph_is_bit_exact_to_golden(bits):
    lq = record(bits)
    model = qdq_graph(lq)
    check_model(model)
    assert ops(model) <= QDQ_OPS
    n = 7
    mask = np.arange(n)[None, :] < np.array([n, 4, 1])[:, None]  # prefix masks, L = 7, 4, 1
    length = mask.sum(-1)[:, None]
    # Inputs on the grid: the codes are known and equal in both quantizers.
    q, k, v, (qi, ki, vi) = codes_as_float(lq, seed=sum(bits))
    h, h_int = run_model(model, {"q": q, "k": k, "v": v, "key_mask": mask})
    gold = inhibitor_attention_int(qi, ki, vi, length, **lq.golden_kwargs())
    assert np.array_equal(h_int.astype(np.int64), gold)
    assert h_int.dtype == lq.formats.out.dtype
    # DequantizeLinear in float32: one rounding of h_int * float32(s_h).
    expect = (gold * lq.s_h.astype(np.float32).astype(np.float64)[:, None, None]).astype(np.float32)
    assert np.array_equal(h, expect)
    # Random off-grid inputs (and saturation): golden on the same float inputs.
    rng = np.random.default_rng(5)
    q, k, v = (rng.normal(size=(3, H, n, D)).astype(np.float32) * s for s in (40.0, 40.0, 60.0))
    _, h_int = run_model(model, {"q": q, "k": k, "v": v, "key_mask": mask})
    gold = inhibitor_attention_int(*quantize_inputs(q, k, v, lq), length, **lq.golden_kwargs())
    assert np.array_equal(h_int.astype(np.int64), gold)


def test_qdq_graph_agrees_with_the_qat_module():
    lq = record()
    qat = QATInhibitorAttention(H, D, lq, frozen=True).eval()
    q, k, v, _ = codes_as_float(lq, seed=9)
    mask = np.arange(7)[None, :] < np.array([7, 5, 2])[:, None]
    h, _ = run_model(qdq_graph(lq), {"q": q, "k": k, "v": v, "key_mask": mask})
    ref = qat(torch.from_numpy(q).double(), torch.from_numpy(k).double(), torch.from_numpy(v).double(),
              torch.from_numpy(mask)).numpy()
    assert np.array_equal(ref, golden_from_float(q, k, v, mask.sum(-1)[:, None], lq))
    np.testing.assert_allclose(h, ref, rtol=2**-23, atol=0)  # float32 vs float64 output scale


def test_qdq_graph_bytes_are_reproducible():
    assert qdq_graph(record()).SerializeToString(deterministic=True) == \
        qdq_graph(record()).SerializeToString(deterministic=True)


def test_qdq_graph_errors():
    with pytest.raises(ValueError, match=r"QDQ graph: qk_bits=20 is wider than 16 bits.*use qk_bits <= 16"):
        qdq_graph(record((20, 8, 8)))
    with pytest.raises(ValueError, match=r"QDQ graph: v_bits=17 is wider than 16 bits"):
        qdq_graph(record((8, 17, 8)))
    with pytest.raises(TypeError, match="layer_quant must be a LayerQuant"):
        qdq_graph({"heads": []})


def test_float_graph_refuses_non_finite_parameters():
    m = module()
    with torch.no_grad():
        m.eta[1] = float("nan")
    with pytest.raises(ValueError, match="InhibitorAttention parameter eta contains NaN or Inf"):
        float_graph(m)


def test_checker_rejects_a_broken_graph():
    model = float_graph(module())
    model.graph.node[0].input[0] = "no_such_tensor"
    with pytest.raises(onnx.checker.ValidationError):
        check_model(model)
