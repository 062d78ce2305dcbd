"""Operation counts agree with a hand count; energy interpolation matches the cited table."""

import pytest

from inhibitron.hw.opcount import HOROWITZ_45NM, baseline_ops, energy_pj, inhibitor_ops, summarize


def test_energy_table_anchors():
    t = HOROWITZ_45NM
    assert t.add(8) == pytest.approx(0.03) and t.add(32) == pytest.approx(0.1)
    assert t.mul(8, 8) == pytest.approx(0.2) and t.mul(32, 32) == pytest.approx(3.1)
    assert t.add(20) == pytest.approx(0.065)        # halfway between 8 and 32 bits
    assert t.mul(16, 16) == pytest.approx(0.2 + 2.9 * 192 / 960)


def test_inhibitor_hand_count():
    # n = 2 queries/keys, d = 3, L = 2, 8-bit: per (i, j): 3 subs, 3 abs, 3 score adds;
    # per (i, j): row-sum add, z - t, relu compare; per (i, j, l): 2 add/sub + 2 compares
    # + 1 accumulate; per row: divider steps + threshold add; per output: 1 round + 2 sat.
    ops = inhibitor_ops(n=2, d=3)
    s = summarize(ops)
    n, d = 2, 3
    z_bits = 8 + 2
    div_steps = (z_bits + 1 + 2) * n
    hand_adds = (3 * n * n * d) + (3 * n * n) + (5 * n * n * d) + div_steps + n + 3 * n * d
    assert s["muls"] == 0
    assert s["adds"] == hand_adds == 36 + 12 + 60 + 26 + 2 + 18


def test_baseline_hand_count():
    # per (i, j): d mults + d adds (scores), 3 mults (x*M, square, e*rec) + 6 adds (max, mx-s, B-r, +C,
    # row sum, p rounding);
    # per (i, j, l): 1 mult + 1 add (mixing); per row: 33 divider steps; per output: 3 adds.
    n, d = 2, 3
    s = summarize(baseline_ops(n=n, d=d))
    assert s["muls"] == n * n * d + 3 * n * n + n * n * d == 36
    assert s["adds"] == n * n * d + 6 * n * n + 33 * n + n * n * d + 3 * n * d == 12 + 24 + 66 + 12 + 18


def test_valid_length_scales_pairwise_ops():
    full = summarize(baseline_ops(n=8, d=4))
    half = summarize(baseline_ops(n=8, d=4, valid_len=4))
    assert half["muls"] < full["muls"]
    assert energy_pj(inhibitor_ops(n=8, d=4)) < energy_pj(baseline_ops(n=8, d=4))


def test_opcount_errors():
    with pytest.raises(ValueError, match=r"n must be a positive integer, not 0"):
        inhibitor_ops(n=0, d=4)
    with pytest.raises(ValueError, match=r"valid_len must be in 1..4, not 5"):
        baseline_ops(n=4, d=4, valid_len=5)
