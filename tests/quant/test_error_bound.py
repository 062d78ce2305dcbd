"""Golden model vs the float reference: the documented error bound and the SQNR floors.

(a) On already-quantized codes, elementwise
    ``|h - clamp(H_ref / s_h)| <= 1/2 + floor(L/2) * 2**(b - r)``
    (``+ L/2 * 2**(b - r)`` when the reference uses the unrounded delta),
    random codes in several formats with every L, and real MiniLM Q/K/V of
    every layer.
(b) End-to-end SQNR on real MiniLM Q/K/V: 16-bit beats 8-bit by > 40 dB,
    8-bit > 20 dB and 16-bit > 65 dB in every layer (docs/numerics.md).
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from inhibitron.quant import sqnr as S
from inhibitron.quant.calibrate import MinMaxObserver, fold_layer, observe_layer
from inhibitron.quant.formats import AttentionFormats, HeadQuant, LayerQuant
from inhibitron.quant.golden import inhibitor_attention_int, quantize_inputs, valid_len_from_mask
from inhibitron.model.reference import inhibitor_attention

#: float64 slack of the reference (relative to the output magnitude, in LSBs)
EPS = 1e-7


def test_doctests():
    result = doctest.testmod(S)
    assert result.failed == 0 and result.attempted >= 1


def _check_bound(h, ref, bound):
    excess = np.abs(h - ref) - (bound + EPS * (1 + np.abs(ref)))
    if np.any(excess > 0):
        idx = tuple(int(i) for i in np.argwhere(excess > 0)[0])
        pytest.fail(f"error bound violated at {idx}: golden {h[idx]}, reference {ref[idx]:.6f}, "
                    f"bound {np.broadcast_to(bound, h.shape)[idx]:.6f}")
    return float(np.max(np.abs(h - ref) - 0.5))


# (qk_bits, v_bits, out_bits, d, n, a, b, r)
RANDOM_CONFIGS = [
    (8, 8, 8, 8, 12, 0, 0, 4),
    (8, 8, 8, 8, 12, 0, 3, 2),
    (8, 8, 8, 8, 12, 2, 0, 6),
    (4, 4, 4, 4, 9, 0, 2, 0),  # b > r: the mean rounding dominates; 4-bit output saturates
    (4, 8, 6, 6, 10, 0, 1, 5),
    (12, 12, 12, 16, 16, 0, 0, 8),
    (16, 16, 16, 8, 11, 1, 0, 10),
    (16, 8, 16, 8, 7, 0, 5, 3),
]


@pytest.mark.parametrize("cfg", RANDOM_CONFIGS, ids=lambda c: "q{}v{}o{}_d{}_n{}_a{}b{}r{}".format(*c))
def test_bound_random_every_length(cfg):
    qk_bits, v_bits, out_bits, d, n, a, b, r = cfg
    rng = np.random.default_rng(sum(cfg))
    fmt = AttentionFormats(qk_bits, v_bits, out_bits)
    H = n  # head h has valid length L = h + 1
    heads = []
    for h in range(H):
        s_v = float(np.exp(rng.uniform(-4, 1)))
        s_w = math.ldexp(s_v, -a)
        s_z = math.ldexp(s_w, b)
        gamma = float(np.exp(rng.uniform(-1, 1)))
        eta = float(rng.choice([-1, 1]) * np.exp(rng.uniform(-1, 1)))
        heads.append(HeadQuant(s_qk=s_z * math.sqrt(d) / gamma, s_v=s_v, s_h=eta * math.ldexp(s_w, r),
                               theta=int(rng.integers(-d * 2 ** (qk_bits - 2), d * 2 ** (qk_bits - 3))),
                               v_shift=a, z_shift=b, out_shift=r))
    lq = LayerQuant(formats=fmt, head_dim=d, heads=heads, name="random")
    B = 3
    q = rng.integers(fmt.q.qmin, fmt.q.qmax + 1, (B, H, n, d))
    k = rng.integers(fmt.q.qmin, fmt.q.qmax + 1, (B, H, n, d))
    # keys close to the queries for one batch entry, so that few keys are inhibited
    k[0] = np.clip(q[0] + rng.integers(-2, 3, (H, n, d)), fmt.q.qmin, fmt.q.qmax)
    v = rng.integers(fmt.v.qmin, fmt.v.qmax + 1, (B, H, n, d))
    L = np.arange(1, H + 1)  # (H,) -> every valid length
    h = inhibitor_attention_int(q, k, v, L, **lq.golden_kwargs())
    ref = S.reference_lsb(q, k, v, L, lq)
    bound = S.error_bound_lsb(L, b, r)[:, None, None]  # (H, 1, 1)
    _check_bound(h, ref, bound)
    # with the unrounded delta the threshold rounding adds L/2 score LSBs
    delta = lq.delta + lq.s_z * rng.uniform(-0.5, 0.5, H)
    ref_d = S.reference_lsb(q, k, v, L, lq, delta=delta)
    _check_bound(h, ref_d, S.error_bound_lsb(L, b, r, delta_rounding=True)[:, None, None])


def test_mean_rounding_term_is_attained():
    """The bound is tight: a crafted row errs by exactly its mean-rounding term floor(L/2) * 2**(b-r)."""
    # ceil(L/2) keys at score 0, floor(L/2) at score 1: S/L = floor(L/2)/L, m rounds it by floor(L/2)/L
    # score LSBs; theta = -1 keeps every zb > 0 (no ReLU clipping) and large equal values keep every key
    # active, so all L summands err by the same floor(L/2)/L * 2**b and add up.
    for L in range(1, 16):
        d, b, r = 1, 4, 0
        k = (np.arange(L) >= (L + 1) // 2).astype(np.int64)[:, None]  # (L, 1) scores 0 or 1
        q = np.zeros((1, 1), dtype=np.int64)
        v = np.full((L, 1), 100, dtype=np.int64)
        lq = LayerQuant(formats=AttentionFormats(4, 8, 16), head_dim=d,
                        heads=[HeadQuant(s_qk=1.0, s_v=1.0, s_h=1.0, theta=-1, z_shift=b, out_shift=r)])
        h = inhibitor_attention_int(q[None], k[None], v[None], L, **lq.golden_kwargs())
        ref = S.reference_lsb(q[None], k[None], v[None], L, lq)
        err = float(np.abs(h - ref).max())
        assert math.isclose(err, (L // 2) * 2**b, rel_tol=1e-12, abs_tol=1e-9), (L, err)
        assert err <= S.error_bound_lsb(L, b, r) + EPS


@pytest.mark.parametrize("fmt", [AttentionFormats(8, 8, 8), AttentionFormats(12, 12, 12),
                                 AttentionFormats(16, 16, 16), AttentionFormats(6, 8, 10)],
                         ids=lambda f: f"q{f.qk_bits}v{f.v_bits}o{f.out_bits}")
def test_bound_real_minilm_every_layer(minilm_layers, fmt):
    rng = np.random.default_rng(7)
    for i, layer in enumerate(minilm_layers):
        q, k, v, mask = layer["q"], layer["k"], layer["v"], layer["mask"]
        H = q.shape[1]
        # a varied set of per-head parameters around the student's initialisation
        gamma = np.exp(rng.uniform(-1, 1, H))
        eta = rng.choice([-1.0, 1.0], H) * np.exp(rng.uniform(-1, 1, H))
        delta = rng.uniform(-1.5, 0.5, H)
        ref_f = inhibitor_attention(q, k, v, gamma, eta, delta, mask=mask[:, None, :])
        h_obs = MinMaxObserver(head_axis=-3).update(ref_f, mask)
        lq = fold_layer(gamma, eta, delta, *observe_layer(layer, bits=fmt), h_obs, fmt, min_levels=0,
                        name=f"layer {i}")
        qi, ki, vi = quantize_inputs(q, k, v, lq)
        L = valid_len_from_mask(mask)[:, None]  # (B, 1)
        h = inhibitor_attention_int(qi, ki, vi, L, **lq.golden_kwargs())
        lead_L = np.broadcast_to(L, h.shape[:2])[..., None, None]
        bz = lq.z_shift[:, None, None]
        br = lq.out_shift[:, None, None]
        _check_bound(h, S.reference_lsb(qi, ki, vi, L, lq), S.error_bound_lsb(lead_L, bz, br))
        _check_bound(h, S.reference_lsb(qi, ki, vi, L, lq, delta=delta),
                     S.error_bound_lsb(lead_L, bz, br, delta_rounding=True))


def test_sqnr_real_minilm_8_vs_16_bit(minilm_layers):
    f8, f16 = AttentionFormats(8, 8, 8), AttentionFormats(16, 16, 16)
    rows = S.sqnr_report(minilm_layers, (f8, f16))
    assert len(rows) == 2 * len(minilm_layers)
    by = {(r.layer, r.formats): r for r in rows}
    for i in range(len(minilm_layers)):
        s8, s16 = by[(i, f8)], by[(i, f16)]
        assert s16.sqnr_db > s8.sqnr_db + 40.0, (i, s8, s16)
        assert s8.sqnr_db > 20.0 and s8.min_head_sqnr_db > 12.0, s8
        assert s16.sqnr_db > 65.0 and s16.min_head_sqnr_db > 55.0, s16
        assert s8.saturated < 0.01 and s16.saturated < 0.01
    table = S.format_sqnr_table(rows)
    assert table.count("\n") == len(minilm_layers) + 1 and "q16/v16/o16" in table


def test_sqnr_per_head_shifts_help(minilm_layers):
    f8 = AttentionFormats(8, 8, 8)
    shared = S.sqnr_report(minilm_layers[:2], (f8,), shared_shifts=True)
    per_head_r = S.sqnr_report(minilm_layers[:2], (f8,), shared_shifts="ab")
    for s, p in zip(shared, per_head_r):
        assert p.min_head_sqnr_db >= s.min_head_sqnr_db - 0.5


def test_sqnr_helpers():
    assert S.sqnr_db([1.0, 2.0], [1.0, 2.0]) == math.inf
    assert math.isclose(S.sqnr_db([3.0, 4.0], [3.0, 4.5]), 10 * math.log10(25 / 0.25))
    assert S.sqnr_db([1.0, 100.0], [1.5, 0.0], mask=[True, False]) == pytest.approx(10 * math.log10(4))
    with pytest.raises(ValueError, match="gamma: a list must have one entry per layer"):
        S.sqnr_report([{}, {}], gamma=[1.0])
