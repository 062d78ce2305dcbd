"""The float64 reference (Eq. 1-3) against an obviously correct loop implementation."""

import math

import numpy as np
import pytest

from inhibitron.model.reference import inhibitor_attention, soft_threshold


def loop_reference(q, k, v, gamma, eta, delta, mask):
    """One head, plain Python loops straight from the paper's equations."""
    n_q, d = q.shape
    n_k, d_v = v.shape
    valid = [j for j in range(n_k) if mask[j]]
    h = np.zeros((n_q, d_v))
    for i in range(n_q):
        z = [gamma / math.sqrt(d) * sum(abs(q[i, c] - k[j, c]) for c in range(d)) for j in range(n_k)]
        mean = sum(z[j] for j in valid) / len(valid)
        for col in range(d_v):
            acc = 0.0
            for j in valid:
                zb = max(z[j] - mean - delta, 0.0)
                vp, vn = max(v[j, col], 0.0), min(v[j, col], 0.0)
                acc += max(vp - zb, 0.0) + min(vn + zb, 0.0)
            h[i, col] = eta * acc
    return h


def random_case(rng, B, H, n_q, n_k, d, d_v, valid_lens=None, prefix=True):
    q = rng.normal(size=(B, H, n_q, d))
    k = rng.normal(size=(B, H, n_k, d))
    v = rng.normal(size=(B, H, n_k, d_v)) * 2
    gamma = rng.uniform(0.3, 2.0, size=H)
    eta = rng.normal(size=H)
    delta = rng.normal(size=H) * 0.5
    mask = np.ones((B, 1, n_k), dtype=bool)
    for b in range(B):
        L = valid_lens[b] if valid_lens is not None else rng.integers(1, n_k + 1)
        if prefix:
            mask[b, 0, L:] = False
        else:
            keep = rng.permutation(n_k)[:L]
            mask[b, 0] = False
            mask[b, 0, keep] = True
    return q, k, v, gamma, eta, delta, mask


@pytest.mark.parametrize("seed", range(6))
def test_matches_loop_on_random_shapes_masks_and_per_head_params(seed):
    rng = np.random.default_rng(seed)
    B, H = rng.integers(1, 3), rng.integers(1, 4)
    n_q, n_k = rng.integers(1, 7), rng.integers(1, 7)
    d, d_v = rng.integers(1, 6), rng.integers(1, 6)
    q, k, v, gamma, eta, delta, mask = random_case(rng, B, H, n_q, n_k, d, d_v, prefix=bool(seed % 2))
    got = inhibitor_attention(q, k, v, gamma, eta, delta, mask)
    for b in range(B):
        for h in range(H):
            want = loop_reference(q[b, h], k[b, h], v[b, h], gamma[h], eta[h], delta[h], mask[b, 0])
            np.testing.assert_allclose(got[b, h], want, rtol=1e-12, atol=1e-12)


def test_single_valid_key():
    rng = np.random.default_rng(7)
    q, k, v, gamma, eta, delta, mask = random_case(rng, 2, 2, 4, 5, 3, 3, valid_lens=[1, 1])
    got = inhibitor_attention(q, k, v, gamma, eta, delta, mask)
    for b in range(2):
        for h in range(2):
            want = loop_reference(q[b, h], k[b, h], v[b, h], gamma[h], eta[h], delta[h], mask[b, 0])
            np.testing.assert_allclose(got[b, h], want, rtol=1e-12, atol=1e-12)
    # With one key the mean equals its score, so Zb = relu(-delta) for every query.
    trace = inhibitor_attention(q, k, v, gamma, eta, delta, mask, return_trace=True)
    zb0 = trace.zb[..., 0]
    np.testing.assert_allclose(zb0, np.broadcast_to(np.maximum(-delta, 0)[None, :, None], zb0.shape))


def test_no_mask_equals_all_valid_mask():
    rng = np.random.default_rng(3)
    q, k, v, gamma, eta, delta, _ = random_case(rng, 2, 3, 5, 5, 4, 4)
    full = np.ones((2, 1, 5), dtype=bool)
    np.testing.assert_array_equal(
        inhibitor_attention(q, k, v, gamma, eta, delta),
        inhibitor_attention(q, k, v, gamma, eta, delta, full),
    )


@pytest.mark.parametrize("seed", range(4))
def test_padding_invariance(seed):
    """Appending padded keys (any values) changes no output of any query."""
    rng = np.random.default_rng(100 + seed)
    B, H, n, d = 2, 3, 6, 4
    q, k, v, gamma, eta, delta, _ = random_case(rng, B, H, n, n, d, d)
    base = inhibitor_attention(q, k, v, gamma, eta, delta)
    extra = int(rng.integers(1, 5))
    k_pad = np.concatenate([k, rng.normal(size=(B, H, extra, d)) * 100], axis=-2)
    v_pad = np.concatenate([v, rng.normal(size=(B, H, extra, d)) * 100], axis=-2)
    mask = np.concatenate([np.ones((B, 1, n), bool), np.zeros((B, 1, extra), bool)], axis=-1)
    padded = inhibitor_attention(q, k_pad, v_pad, gamma, eta, delta, mask)
    np.testing.assert_allclose(padded, base, rtol=0, atol=1e-12)


def test_mean_over_all_includes_padded_scores():
    rng = np.random.default_rng(5)
    q, k, v, gamma, eta, delta, mask = random_case(rng, 1, 1, 3, 4, 2, 2, valid_lens=[2])
    tr = inhibitor_attention(q, k, v, gamma, eta, delta, mask, mean_over="all", return_trace=True)
    np.testing.assert_allclose(tr.mean[..., 0], tr.z.mean(axis=-1))
    tv = inhibitor_attention(q, k, v, gamma, eta, delta, mask, return_trace=True)
    np.testing.assert_allclose(tv.mean[..., 0], tv.z[..., :2].mean(axis=-1))


def test_soft_threshold_identity():
    """Each summand of Eq. 2 equals sign(v) * max(|v| - z, 0) for z >= 0."""
    rng = np.random.default_rng(11)
    v = np.concatenate([rng.normal(size=5000) * 3, [0.0, 1.0, -1.0, 2.5, -2.5]])
    z = np.concatenate([np.abs(rng.normal(size=5000)) * 2, [0.0, 1.0, 1.0, 2.5, 2.5]])
    np.testing.assert_array_equal(soft_threshold(v, z), np.sign(v) * np.maximum(np.abs(v) - z, 0.0))


def test_summands_in_trace_are_soft_thresholds():
    rng = np.random.default_rng(12)
    q, k, v, gamma, eta, delta, mask = random_case(rng, 1, 2, 4, 4, 3, 3)
    tr = inhibitor_attention(q, k, v, gamma, 1.0, delta, mask, return_trace=True)
    zb = np.where(np.isfinite(tr.zb), tr.zb, 0.0)
    m = mask[:, :, None, :, None]
    summand = np.sign(v[..., None, :, :]) * np.maximum(np.abs(v[..., None, :, :]) - zb[..., None], 0) * m
    np.testing.assert_allclose(tr.h, summand.sum(axis=-2), atol=1e-12)


def test_thresholding_inhibits_far_keys():
    # A key far from the query (large Zb) contributes nothing.
    q = np.array([[0.0]])
    k = np.array([[0.0], [100.0]])
    v = np.array([[1.0], [5.0]])
    h = inhibitor_attention(q, k, v, gamma=1.0, eta=1.0, delta=0.0)
    # z = [0, 100], mean 50: Zb = [0, 50] -> 1 from the near key, 0 from the far one.
    np.testing.assert_allclose(h, [[1.0]])


BAD = [
    (dict(q=np.zeros((3,))), "q must have shape"),
    (dict(k=np.zeros((2, 4, 5))), "share the head dimension d: q has d=3, k has d=5"),
    (dict(v=np.zeros((2, 3, 3))), "same number of keys: k has 4, v has 3"),
    (dict(q=np.full((2, 4, 3), np.nan)), "q contains NaN or Inf"),
    (dict(v=np.full((2, 4, 3), np.inf)), "v contains NaN or Inf"),
    (dict(mask=np.zeros((2, 4), bool)), "mask has no valid key at leading index (0,)"),
    (dict(mask=np.ones((2, 5), bool)), "mask must have shape (..., n_k) with n_k=4"),
    (dict(mask=np.ones((3, 4), bool)), "does not broadcast"),
    (dict(gamma=np.ones(3)), "gamma of shape (3,) does not broadcast"),
    (dict(delta=np.array(np.nan)), "delta contains NaN or Inf"),
    (dict(mean_over="some"), "mean_over must be one of"),
    (dict(q=np.zeros((2, 0, 3))), "q has an empty sequence or head dimension"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_raises_named_error(override, message):
    args = dict(q=np.zeros((2, 4, 3)), k=np.zeros((2, 4, 3)), v=np.zeros((2, 4, 3)))
    args.update(override)
    with pytest.raises(ValueError) as exc:
        inhibitor_attention(**args)
    assert message in str(exc.value)
