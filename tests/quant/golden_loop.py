"""Obviously-correct scalar-loop twin of the integer contract (tests only).

Written directly from the six steps of ``docs/numerics.md`` with Python
integers (unbounded, so no overflow can hide) and no shortcut: no clipping of
``zb``, no ``x - clip(x, -y, y)`` identity, padded keys simply skipped. It
shares no code with :mod:`inhibitron.quant.golden`.
"""

from __future__ import annotations


def softthr(x: int, y: int) -> int:
    """Soft threshold of the contract, ``y >= 0``."""
    assert y >= 0
    if x > y:
        return x - y
    if x < -y:
        return x + y
    return 0


def one_head(q, k, v, L, *, theta, a, b, r, out_bits):
    """One head: q (n_q x d), k (n_k x d), v (n_k x d_v) nested lists of ints.

    Returns a dict of nested lists: z, row_sum, mean, threshold, zb, acc, h.
    """
    n_q, n_k = len(q), len(k)
    d, d_v = len(q[0]), len(v[0])
    assert 1 <= L <= n_k and a >= 0 and b >= 0 and r >= 0 and not (a and b)
    z = [[sum(abs(q[i][c] - k[j][c]) for c in range(d)) for j in range(n_k)] for i in range(n_q)]
    row_sum, mean, threshold, zb, acc, h = [], [], [], [], [], []
    lo, hi = -(2 ** (out_bits - 1)), 2 ** (out_bits - 1) - 1
    for i in range(n_q):
        s = sum(z[i][j] for j in range(L))
        m = (2 * s + L) // (2 * L)  # S/L rounded half up; Python // is floor
        t = m + theta
        row_sum.append(s)
        mean.append(m)
        threshold.append(t)
        zb.append([max(z[i][j] - t, 0) for j in range(n_k)])
        acc_row, h_row = [], []
        for col in range(d_v):
            total = 0
            for j in range(L):
                total += softthr(v[j][col] * 2**a, zb[i][j] * 2**b)
            acc_row.append(total)
            rounded = (total + (2 ** (r - 1) if r > 0 else 0)) // 2**r
            h_row.append(min(max(rounded, lo), hi))
        acc.append(acc_row)
        h.append(h_row)
    return dict(z=z, row_sum=row_sum, mean=mean, threshold=threshold, zb=zb, acc=acc, h=h)
