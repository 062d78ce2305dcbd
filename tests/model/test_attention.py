"""InhibitorAttention (PyTorch) against the float64 reference: values and gradients."""

import numpy as np
import pytest
import torch

from inhibitron.model.attention import InhibitorAttention
from inhibitron.model.reference import inhibitor_attention

B, H, N, D = 2, 3, 6, 4


def make(variant="valid", seed=0, **kw):
    torch.manual_seed(seed)
    m = InhibitorAttention(H, D, variant=variant, **kw).double()
    with torch.no_grad():
        m.gamma.copy_(torch.rand(H) + 0.5)
        m.eta.copy_(torch.randn(H))
        if variant == "valid":
            m.delta.copy_(torch.randn(H) * 0.4)
        else:
            m.alpha.copy_(torch.tensor([0.7, -0.3, 0.2]))
    return m


def inputs(seed=0, lens=(4, 6)):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, N, D, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.zeros(B, N, dtype=torch.bool)
    for b, L in enumerate(lens):
        mask[b, :L] = True
    return q, k, v, mask


def reference_np(m, q, k, v, mask, **over):
    p = dict(
        gamma=m.gamma.detach().numpy(),
        eta=m.eta.detach().numpy(),
        delta=m.effective_delta().detach().numpy(),
    )
    p.update(over)
    return inhibitor_attention(
        q.numpy(), k.numpy(), v.numpy(), p["gamma"], p["eta"], p["delta"],
        None if mask is None else mask.numpy()[:, None, :], mean_over=m.mean_over,
    )


@pytest.mark.parametrize("variant", ["valid", "thesis"])
@pytest.mark.parametrize("lens", [(4, 6), (1, 6), (6, 6)])
def test_values_match_reference(variant, lens):
    m = make(variant).eval()
    q, k, v, mask = inputs(lens=lens)
    got = m(q, k, v, mask).detach().numpy()
    np.testing.assert_allclose(got, reference_np(m, q, k, v, mask), rtol=0, atol=1e-6)
    got_nomask = m(q, k, v).detach().numpy()
    np.testing.assert_allclose(got_nomask, reference_np(m, q, k, v, None), rtol=0, atol=1e-6)


def _finite_difference(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (f(xp) - f(xm)) / (2 * eps)
    return g


@pytest.mark.parametrize("variant", ["valid", "thesis"])
def test_gradients_match_reference(variant):
    m = make(variant, seed=1).eval()
    q, k, v, mask = inputs(seed=1)
    q, k, v = (t.clone().requires_grad_(True) for t in (q, k, v))
    w = torch.randn(B, H, N, D, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    (m(q, k, v, mask) * w).sum().backward()
    wn = w.numpy()
    qn, kn, vn = (t.detach().numpy() for t in (q, k, v))
    gamma, eta = m.gamma.detach().numpy(), m.eta.detach().numpy()
    delta = m.effective_delta().detach().numpy()
    mk = mask.numpy()[:, None, :]

    def loss(**over):
        p = dict(q=qn, k=kn, v=vn, gamma=gamma, eta=eta, delta=delta)
        p.update(over)
        out = inhibitor_attention(p["q"], p["k"], p["v"], p["gamma"], p["eta"], p["delta"], mk,
                                  mean_over=m.mean_over)
        return float((out * wn).sum())

    checks = {
        "gamma": (m.gamma.grad, _finite_difference(lambda x: loss(gamma=x), gamma)),
        "eta": (m.eta.grad, _finite_difference(lambda x: loss(eta=x), eta)),
        "q": (q.grad, _finite_difference(lambda x: loss(q=x), qn)),
        "k": (k.grad, _finite_difference(lambda x: loss(k=x), kn)),
        "v": (v.grad, _finite_difference(lambda x: loss(v=x), vn)),
    }
    d_delta = _finite_difference(lambda x: loss(delta=x), delta)
    if variant == "valid":
        checks["delta"] = (m.delta.grad, d_delta)
    else:
        # delta = -relu(alpha): d/dalpha = -d/ddelta where alpha > 0, and 0 where alpha <= 0.
        alpha = m.alpha.detach().numpy()
        checks["alpha"] = (m.alpha.grad, np.where(alpha > 0, -d_delta, 0.0))
    for name, (got, want) in checks.items():
        assert got is not None, f"no gradient reached {name}"
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6, err_msg=name)
    assert np.abs(m.gamma.grad.numpy()).min() > 0 and np.abs(m.eta.grad.numpy()).min() > 0


def test_thesis_variant_applies_alpha_only_when_positive():
    m = make("thesis")
    np.testing.assert_allclose(m.effective_delta().detach().numpy(), [-0.7, 0.0, -0.2])


def test_padded_keys_do_not_leak_with_large_values():
    m = make().eval()
    q, k, v, mask = inputs(lens=(3, 3))
    base = m(q, k, v, mask)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 3:] = 1e3
    v2[:, :, 3:] = -1e4
    np.testing.assert_allclose(m(q, k2, v2, mask).detach().numpy(), base.detach().numpy(), atol=1e-9)


def test_dropout_only_in_training_and_rescaled():
    m = make(dropout=0.5)
    q, k, v, mask = inputs()
    m.eval()
    a = m(q, k, v, mask)
    np.testing.assert_allclose(a.detach().numpy(), reference_np(m, q, k, v, mask), atol=1e-6)
    m.train()
    torch.manual_seed(0)
    b = m(q, k, v, mask)
    assert not torch.allclose(a, b), "dropout in training mode changed nothing"
    # Training mode without dropout is exactly the evaluation path.
    m0 = make(dropout=0.0).train()
    np.testing.assert_allclose(m0(q, k, v, mask).detach().numpy(), reference_np(m0, q, k, v, mask), atol=1e-6)


def test_float32_close_to_float64():
    m = make().eval()
    q, k, v, mask = inputs()
    out32 = m.float()(q.float(), k.float(), v.float(), mask)
    np.testing.assert_allclose(out32.detach().numpy(), reference_np(m.double(), q, k, v, mask), atol=2e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_heads=0, head_dim=4), "num_heads must be a positive integer, not 0"),
        (dict(num_heads=2, head_dim=2.5), "head_dim must be a positive integer, not 2.5"),
        (dict(num_heads=2, head_dim=4, dropout=1.0), "dropout must be a float in [0, 1)"),
        (dict(num_heads=2, head_dim=4, variant="paper"), "variant must be one of"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError) as exc:
        InhibitorAttention(**kwargs)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda q, k, v, m: (q[0], k, v, m), "q must be a tensor shaped (B, H, n, d)"),
        (lambda q, k, v, m: (q, k[..., :3], v, m), "head dimension d=4: q has 4, k has 3"),
        (lambda q, k, v, m: (q, k, v[:, :, :5], m), "same number of keys: k has 6, v has 5"),
        (lambda q, k, v, m: (q[:, :2], k, v, m), "q has 2 heads in dimension 1, the module has 3"),
        (lambda q, k, v, m: (q, k, v, m[:, :5]), "key_mask must be shaped (B, n_k) = (2, 6)"),
        (lambda q, k, v, m: (q, k, v, torch.zeros_like(m)), "key_mask has no valid key for batch item 0"),
        (lambda q, k, v, m: (q.masked_fill(q > 1, float("nan")), k, v, m), "q contains NaN or Inf"),
        (lambda q, k, v, m: (q, k, v * float("inf"), m), "v contains NaN or Inf"),
    ],
)
def test_forward_errors(change, message):
    m = make()
    with pytest.raises(ValueError) as exc:
        m(*change(*inputs()))
    assert message in str(exc.value)


def test_padded_keys_get_exactly_zero_gradient():
    m = make().train()
    q, k, v, mask = inputs(lens=(3, 6))
    q, k, v = (t.clone().requires_grad_(True) for t in (q, k, v))
    (m(q, k, v, mask) ** 2).sum().backward()
    assert torch.count_nonzero(v.grad[0, :, 3:]) == 0
    assert torch.count_nonzero(k.grad[0, :, 3:]) == 0
    assert torch.count_nonzero(v.grad[0, :, :3]) > 0
