"""Benchmark of the golden model (called by ``make bench``; never by tests).

:func:`bench_golden` times :func:`inhibitron.quant.golden.inhibitor_attention_int`
on one MiniLM-sized layer (12 heads, n = 128, d = 32, int8 codes, valid
length 100) against the float64 reference
:func:`inhibitron.model.reference.inhibitor_attention` on the same data.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from inhibitron.model.reference import inhibitor_attention
from .golden import inhibitor_attention_int

__all__ = ["bench_golden"]


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_golden(*, heads: int = 12, seq_len: int = 128, head_dim: int = 32, bits: int = 8,
                 valid_len: int = 100, repeats: int = 7, float_repeats: int = 3, seed: int = 0) -> dict:
    """Throughput of the golden model on one attention layer.

    Parameters
    ----------
    heads, seq_len, head_dim : int
        Layer size (default: one all-MiniLM-L6-v2 layer, 12 x 128 x 32).
    bits : int
        qk/v/out widths of the random codes.
    valid_len : int
        Key-padding length ``L``.
    repeats, float_repeats : int
        Timed runs (after one warm-up) of the golden model / float reference;
        medians are reported.
    seed : int

    Returns
    -------
    dict with ``heads``, ``seq_len``, ``head_dim``, ``bits``,
    ``golden_s`` (median seconds per layer), ``golden_heads_per_s``,
    ``float_s``, ``float_heads_per_s`` and ``speedup_vs_float``
    (= float_s / golden_s).
    """
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
    q = rng.integers(lo, hi, (heads, seq_len, head_dim))
    k = rng.integers(lo, hi, (heads, seq_len, head_dim))
    v = rng.integers(lo, hi, (heads, seq_len, head_dim))
    theta = rng.integers(-8, 8, heads)
    kwargs = dict(theta=theta, v_shift=0, z_shift=2, out_shift=6, qk_bits=bits, v_bits=bits, out_bits=bits)
    golden_s = _median_seconds(lambda: inhibitor_attention_int(q, k, v, valid_len, **kwargs), repeats)
    mask = np.arange(seq_len) < valid_len
    qf, kf, vf = (x.astype(np.float64) for x in (q, k, v))
    float_s = _median_seconds(lambda: inhibitor_attention(qf, kf, vf, 1.0, 1.0, 0.0, mask=mask),
                              float_repeats)
    return {
        "heads": heads, "seq_len": seq_len, "head_dim": head_dim, "bits": bits, "valid_len": valid_len,
        "golden_s": golden_s, "golden_heads_per_s": heads / golden_s,
        "float_s": float_s, "float_heads_per_s": heads / float_s,
        "speedup_vs_float": float_s / golden_s,
    }


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(bench_golden(), indent=2))
