"""QAT inhibitor attention: forward == golden dequantized output, bit for bit; gradients; swap helper."""

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from inhibitron.model.attention import InhibitorAttention
from inhibitron.model.surgery import iter_inhibitors, to_inhibitor
from inhibitron.quant.calibrate import MinMaxObserver, fold_layer
from inhibitron.quant.formats import AttentionFormats, HeadQuant, LayerQuant
from inhibitron.quant.golden import golden_from_float, inhibitor_attention_int, valid_len_from_mask
from inhibitron.quant.qat import QATInhibitorAttention, qat_layer_quants, to_qat, valid_lengths

H, D, N = 4, 8, 9


def random_module(seed, dtype=torch.float64, variant="valid"):
    torch.manual_seed(seed)
    m = InhibitorAttention(H, D, variant=variant).to(dtype)
    with torch.no_grad():
        m.gamma.uniform_(0.5, 2.0)
        m.eta.uniform_(-2.0, 2.0)
        (m.delta if variant == "valid" else m.alpha).uniform_(-1.0, 1.0)
    return m


def random_qkv(seed, dtype=torch.float64, batch=3, n=N):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, H, n, D, generator=g, dtype=dtype) * s for s in (1.0, 1.3, 0.7))
    mask = torch.ones(batch, n, dtype=torch.bool)
    mask[1, n - 3:] = False
    mask[2, 1:] = False  # a single valid key
    return q, k, v, mask


def fold(m, q, k, v, mask, bits=(8, 8, 8), **kw):
    obs = [MinMaxObserver(head_axis=-3).update(t, mask) for t in (q, k, v)]
    with torch.no_grad():
        hobs = MinMaxObserver(head_axis=-3).update(m(q, k, v, mask), mask)
    return fold_layer(m.gamma, m.eta, m.effective_delta(), *obs, hobs, AttentionFormats(*bits),
                      name="layer 0", min_levels=0, **kw)


def golden(q, k, v, mask, lq):
    L = valid_len_from_mask(mask.numpy())[:, None]  # (B, 1)
    return golden_from_float(q.numpy(), k.numpy(), v.numpy(), L, lq)


@pytest.mark.parametrize("bits", [(8, 8, 8), (4, 5, 6), (12, 10, 16), (16, 16, 16)])
@pytest.mark.parametrize("frozen", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_qat_forward_equals_golden_bit_for_bit(bits, frozen, shared):
    m = random_module(1)
    q, k, v, mask = random_qkv(2)
    lq = fold(m, q, k, v, mask, bits, shared_shifts=shared)
    qat = QATInhibitorAttention.from_float(m, lq, frozen=frozen).eval()
    out = qat(q, k, v, mask)
    assert out.dtype == torch.float64
    expected = golden(q, k, v, mask, lq)
    # Bit for bit in float64, not approximately.
    assert np.array_equal(out.detach().numpy(), expected)
    assert out.detach().numpy().tobytes() == expected.tobytes()


def test_learnable_fold_reproduces_calibrated_record_exactly():
    for dtype in (torch.float32, torch.float64):
        m = random_module(3, dtype)
        q, k, v, mask = random_qkv(4, dtype)
        lq = fold(m, q, k, v, mask)
        qat = QATInhibitorAttention.from_float(m, lq, frozen=False)
        assert qat.current_layer_quant() == lq  # every field, every head


def test_float32_module_matches_golden_and_returns_float32():
    m = random_module(5, torch.float32)
    q, k, v, mask = random_qkv(6, torch.float32)
    lq = fold(m, q, k, v, mask)
    qat = QATInhibitorAttention.from_float(m, lq).eval()
    out = qat(q, k, v, mask)
    assert out.dtype == torch.float32
    assert np.array_equal(out.detach().numpy(), golden(q, k, v, mask, lq).astype(np.float32))


def test_extreme_codes_and_every_valid_length():
    # Inputs at the limits of every format (and beyond: saturation), every L = 1..n.
    lq = LayerQuant(
        formats=AttentionFormats(6, 5, 7), head_dim=D,
        heads=tuple(HeadQuant(s_qk=0.25, s_v=0.5, s_h=-0.75 + h, theta=t, v_shift=a, z_shift=b, out_shift=r)
                    for h, (t, a, b, r) in enumerate([(0, 0, 0, 0), (-40, 2, 0, 3), (17, 0, 3, 1),
                                                      (511, 0, 0, 5)])),
        name="extreme",
    )
    assert lq.formats.theta_range(D) == (-512, 511)  # theta = 511: the top of the range
    qat = QATInhibitorAttention(H, D, lq, frozen=True).double().eval()
    g = torch.Generator().manual_seed(7)
    n = 6
    pick = lambda *shape: torch.tensor([-9.0, -8.0, 7.75, 8.0, 0.0, 3.0])[  # noqa: E731
        torch.randint(0, 6, shape, generator=g)]
    q, k = pick(n, H, n, D), pick(n, H, n, D)
    v = pick(n, H, n, D) * 2
    # Batch item 5 (L = 6), head 0: equal keys and queries, v at +max: the output saturates.
    q[5, 0] = 3.0
    k[5, 0] = 3.0
    v[5, 0] = 100.0
    mask = torch.arange(n)[None, :] < torch.arange(1, n + 1)[:, None]  # row b has L = b + 1
    out = qat(q, k, v, mask).numpy()
    assert np.array_equal(out, golden(q, k, v, mask, lq))
    # And the integer codes themselves match the golden model's.
    codes = np.rint(out / lq.s_h[:, None, None]).astype(np.int64)
    qi, ki, vi = (np.clip(np.rint(t.numpy() / s[:, None, None]), -(1 << (w - 1)), (1 << (w - 1)) - 1)
                  .astype(np.int64) for t, s, w in ((q, lq.s_qk, 6), (k, lq.s_qk, 6), (v, lq.s_v, 5)))
    h = inhibitor_attention_int(qi, ki, vi, np.arange(1, n + 1)[:, None], **lq.golden_kwargs())
    assert np.array_equal(codes, h)
    assert h[5, 0].min() == h.max() == 63  # saturated (acc = 6 * 15 = 90 > 63)


def test_gradients_reach_parameters_and_inputs_and_track_the_float_module():
    m = random_module(8)
    q, k, v, mask = random_qkv(9)
    lq = fold(m, q, k, v, mask, bits=(16, 16, 16))
    qat = QATInhibitorAttention.from_float(m, lq, frozen=False).train()
    qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
    weights = torch.randn(q.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (qat(qq, kk, vv, mask) * weights).sum().backward()
    m.zero_grad()
    qf, kf, vf = (t.clone().requires_grad_() for t in (q, k, v))
    (m(qf, kf, vf, mask) * weights).sum().backward()
    for name in ("gamma", "eta", "delta"):
        g_qat, g_float = getattr(qat, name).grad, getattr(m, name).grad
        assert torch.isfinite(g_qat).all()
        # 16-bit formats: the STE gradient is close to the float one.
        assert torch.allclose(g_qat, g_float, rtol=0.05, atol=0.05 * g_float.abs().max()), name
    for a, b in ((qq, qf), (kk, kf), (vv, vf)):
        assert torch.allclose(a.grad, b.grad, rtol=0.1, atol=0.1 * b.grad.abs().max())
    # Frozen: the parameters get no gradient, the inputs still do.
    qat.zero_grad()
    qat.freeze()
    qq.grad = None
    qat(qq, kk, vv, mask).sum().backward()
    assert qat.gamma.grad is None or not qat.gamma.grad.any()
    assert qq.grad.abs().sum() > 0


def test_freeze_after_training_step_exports_what_it_computes():
    m = random_module(10)
    q, k, v, mask = random_qkv(11)
    lq = fold(m, q, k, v, mask)
    qat = QATInhibitorAttention.from_float(m, lq, frozen=False)
    opt = torch.optim.SGD(qat.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        (qat(q, k, v, mask) - 1.0).pow(2).mean().backward()
        opt.step()
    qat.eval()
    before = qat(q, k, v, mask).detach().numpy()
    new = qat.freeze()
    assert new != lq  # training moved gamma/eta/delta
    assert (new.s_v == lq.s_v).all() and new.shared_shifts == lq.shared_shifts  # the grid is kept
    assert np.array_equal(before, golden(q, k, v, mask, new))
    assert np.array_equal(qat(q, k, v, mask).detach().numpy(), before)


def test_dropout_in_training_only():
    m = random_module(12)
    m.dropout = 0.5
    q, k, v, mask = random_qkv(13)
    lq = fold(m, q, k, v, mask)
    qat = QATInhibitorAttention.from_float(m, lq).train()
    torch.manual_seed(0)
    a = qat(q, k, v, mask)
    assert not np.array_equal(a.detach().numpy(), golden(q, k, v, mask, lq))
    assert np.array_equal(qat.eval()(q, k, v, mask).detach().numpy(), golden(q, k, v, mask, lq))


def test_thesis_variant_without_padding_equals_golden():
    m = random_module(14, variant="thesis")
    q, k, v, mask = random_qkv(15)
    full = torch.ones_like(mask)
    lq = fold(m, q, k, v, full)
    qat = QATInhibitorAttention.from_float(m, lq).eval()
    assert np.array_equal(qat(q, k, v, full).detach().numpy(), golden(q, k, v, full, lq))
    with pytest.raises(ValueError, match="thesis variant averages over all keys"):
        qat(q, k, v, mask)


def test_bad_inputs_name_the_problem():
    m = random_module(16)
    q, k, v, mask = random_qkv(17)
    lq = fold(m, q, k, v, mask)
    qat = QATInhibitorAttention.from_float(m, lq)
    bad = mask.clone()
    bad[0, 2] = False  # a hole: not a prefix
    with pytest.raises(ValueError, match=r"key_mask row 0 is not a prefix mask"):
        qat(q, k, v, bad)
    with pytest.raises(ValueError, match="v contains NaN or Inf"):
        qat(q, k, v.clone().fill_(float("nan")), mask)
    with pytest.raises(ValueError, match="exceed seq_len=4"):
        QATInhibitorAttention.from_float(m, lq, seq_len=4)(q, k, v, mask)
    with pytest.raises(ValueError, match=r"layer_quant has 4 heads of dimension 8, the module has 2 heads"):
        QATInhibitorAttention(2, D, lq)
    with pytest.raises(TypeError, match="layer_quant must be a LayerQuant"):
        QATInhibitorAttention(H, D, {"heads": []})
    with pytest.raises(ValueError, match=r"datapath.s sum_bits is 61 bits .* float64, exact only up to 53 bits"):
        QATInhibitorAttention(H, D, lq, seq_len=1 << 50)
    with torch.no_grad():
        qat.gamma[2] = -1.0
    with pytest.raises(ValueError, match=r"layer 0 head 2: gamma = -1.0; quantization needs gamma > 0"):
        qat(q, k, v, mask)
    assert valid_lengths(None, 2, 5).tolist() == [5, 5]


def test_to_qat_swaps_every_layer_of_a_student():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    student = to_inhibitor(BertModel(cfg).eval())
    ids = torch.randint(0, 50, (2, 7))
    am = torch.ones(2, 7, dtype=torch.long)
    am[1, 5:] = 0
    from inhibitron.model.capture import capture_qkv

    lqs = []
    for (i, inhib), layer in zip(iter_inhibitors(student), capture_qkv(student, ids, am)):
        lqs.append(fold(inhib, layer["q"], layer["k"], layer["v"], layer["mask"]))
    qat_model = to_qat(student, lqs)
    assert all(isinstance(m, QATInhibitorAttention) for _, m in iter_inhibitors(qat_model))
    assert not any(isinstance(m, QATInhibitorAttention) for _, m in iter_inhibitors(student))
    assert qat_model.state_dict().keys() == student.state_dict().keys()
    out = qat_model(input_ids=ids, attention_mask=am).last_hidden_state
    ref = student(input_ids=ids, attention_mask=am).last_hidden_state
    assert torch.isfinite(out).all() and (out - ref).abs().mean() < 0.2 * ref.abs().mean()
    assert qat_layer_quants(qat_model) == lqs
    with pytest.raises(ValueError, match="the model has 2 layers, 1 LayerQuant records were given"):
        to_qat(student, lqs[:1])


def test_qat_equals_golden_on_real_minilm_qkv(minilm_layers):
    # Real Q/K/V of the MiniLM teacher on real text (the quant tests' shared fixture), first and last layer.
    for layer in (minilm_layers[0], minilm_layers[-1]):
        q, k, v = (torch.from_numpy(np.asarray(layer[x], dtype=np.float64)) for x in ("q", "k", "v"))
        mask = torch.from_numpy(np.asarray(layer["mask"], dtype=bool))
        m = InhibitorAttention(q.shape[1], q.shape[-1]).double()
        lq = fold(m, q, k, v, mask)
        qat = QATInhibitorAttention.from_float(m, lq).eval()
        assert np.array_equal(qat(q, k, v, mask).detach().numpy(), golden(q, k, v, mask, lq))
