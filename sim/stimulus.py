"""Stimulus and golden expectations for the attention core (numpy only, no torch).

A *head* is one unit of work of :class:`~inhibitron.hw.core.InhibitorAttentionCore`:
``q``, ``k`` (``(n, d)`` signed ``qk_bits`` codes), ``v`` (``(n, d)`` signed
``v_bits``), the valid length ``L``, ``theta`` and the output shift ``r``
(all three travel in the head's descriptor, :func:`pack_desc`). The expected output is
always computed by the oracle :func:`inhibitron.quant.golden.inhibitor_attention_int`
(there is no second copy of the contract here).

Packing: a row of ``d`` codes travels as one integer, code ``l`` in bits
``[l*bits, (l+1)*bits)`` (two's complement), which is the layout Amaranth
gives an ``ArrayLayout(signed(bits), d)`` port.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "REAL_VECTORS",
    "Head", "random_heads", "extreme_heads", "golden_outputs", "pack_rows", "unpack_rows",
    "heads_from_npz", "mixed_heads", "pack_desc", "with_shifts",
]

#: Real quantized Q/K/V codes of the MiniLM teacher (package data; written by
#: ``scripts/make_real_vectors.py``).
REAL_VECTORS = Path(__file__).with_name("data") / "minilm_qkv_codes.npz"


@dataclass(frozen=True)
class Head:
    """One head of stimulus: codes ``(n, d)`` int64, ``length`` 1..n, ``theta``, output shift ``r``."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    length: int
    theta: int
    label: str = "random"
    out_shift: int = 0         # r of the head (descriptor field), >= 0


def pack_desc(cfg, head: Head) -> int:
    """The descriptor beat of ``head``, laid out by ``cfg.descriptor_layout``.

    ``L`` in the low bits, then signed ``theta``, then the unsigned ``shift``
    field; an ``r`` beyond the field is sent as the field's maximum, which
    gives the same (all-zero) output (:meth:`CoreConfig.pack_descriptor`).
    """
    return cfg.pack_descriptor(length=int(head.length), theta=int(head.theta),
                               shift=int(head.out_shift))


def with_shifts(cfg, heads, rng: np.random.Generator) -> list[Head]:
    """``heads`` with output shifts varying head to head over ``0..cfg.out_shift_max``.

    Cycles through ``0``, ``out_shift_max``, the descriptor field's maximum
    and random shifts, so back-to-back heads change ``r``; about half the
    random ones lie where the saturation of ``h`` bites (small ``r``).
    """
    from dataclasses import replace
    r_max = cfg.out_shift_max
    fixed = [0, r_max, (1 << cfg.shift_bits) - 1, 1]
    out = []
    for i, h in enumerate(heads):
        if i < len(fixed):
            r = fixed[i]
        elif rng.random() < 0.5:
            r = int(rng.integers(0, max(1, r_max - cfg.out_bits + 2)))
        else:
            r = int(rng.integers(0, r_max + 1))
        out.append(replace(h, out_shift=min(r, (1 << cfg.shift_bits) - 1)))
    return out


def _ranges(cfg):
    qlo, qhi = -(1 << (cfg.qk_bits - 1)), (1 << (cfg.qk_bits - 1)) - 1
    vlo, vhi = -(1 << (cfg.v_bits - 1)), (1 << (cfg.v_bits - 1)) - 1
    w = cfg.widths
    return qlo, qhi, vlo, vhi, w.theta_min, w.theta_max


def _theta(cfg, rng, q, k) -> int:
    """A theta that makes the threshold bite: a random fraction of a typical z."""
    qlo, qhi, _, _, tmin, tmax = _ranges(cfg)
    choice = rng.integers(0, 10)
    if choice == 0:
        return int(tmin)
    if choice == 1:
        return int(tmax)
    typical = int(np.abs(q[:, None, :] - k[None, :, :]).sum(-1).mean()) + 1
    return int(np.clip(rng.integers(-typical, typical + 1) // 2, tmin, tmax))


def random_heads(cfg, count: int, rng: np.random.Generator, *, lengths=None,
                 label: str = "random") -> list[Head]:
    """``count`` heads of uniformly random codes over the full formats.

    ``lengths``: sequence of valid lengths to cycle through (default: random
    in 1..n).
    """
    n, d = cfg.seq_len, cfg.head_dim
    qlo, qhi, vlo, vhi, _, _ = _ranges(cfg)
    heads = []
    for i in range(count):
        q = rng.integers(qlo, qhi + 1, (n, d))
        k = rng.integers(qlo, qhi + 1, (n, d))
        v = rng.integers(vlo, vhi + 1, (n, d))
        if lengths is None:
            length = int(rng.integers(1, n + 1))
        else:
            length = int(lengths[i % len(lengths)])
        heads.append(Head(q, k, v, length, _theta(cfg, rng, q, k), label))
    return heads


def extreme_heads(cfg, rng: np.random.Generator) -> list[Head]:
    """Heads at the extremes of every format and of theta.

    Largest scores (q = min, k = max everywhere), all-equal inputs (z = 0),
    values at both ends of the v format, theta at both ends of its range and
    0, lengths 1 and n; plus random +-extreme sign patterns.
    """
    n, d = cfg.seq_len, cfg.head_dim
    qlo, qhi, vlo, vhi, tmin, tmax = _ranges(cfg)
    full = lambda val: np.full((n, d), val, dtype=np.int64)  # noqa: E731
    heads = []
    for theta in (tmin, 0, tmax):
        for length in (1, n):
            heads.append(Head(full(qlo), full(qhi), full(vlo), length, int(theta), "extreme"))
            heads.append(Head(full(qhi), full(qlo), full(vhi), length, int(theta), "extreme"))
    heads.append(Head(full(0), full(0), full(vhi), n, 0, "extreme"))
    for _ in range(3):
        q = np.where(rng.integers(0, 2, (n, d)) == 1, qhi, qlo)
        k = np.where(rng.integers(0, 2, (n, d)) == 1, qhi, qlo)
        v = np.where(rng.integers(0, 2, (n, d)) == 1, vhi, vlo)
        heads.append(Head(q, k, v, int(rng.integers(1, n + 1)), int(rng.integers(tmin, 1)),
                          "extreme"))
    return heads


def heads_from_npz(cfg, path, rng: np.random.Generator, *, count: int | None = None) -> list[Head]:
    """Real heads from a ``.npz`` of quantized codes (``scripts/make_real_vectors.py``).

    The file holds ``q``, ``k``, ``v`` (``(H, n0, d0)`` int8/int16 codes at the
    bit widths ``qk_bits``/``v_bits`` stored in it), ``length`` and ``theta``.
    Codes are re-scaled to the configuration's formats by arithmetic shifts
    (narrower) or left shifts (wider), and cropped/tiled to ``(n, d)``.
    """
    z = np.load(path)
    src_qk, src_v = int(z["qk_bits"]), int(z["v_bits"])
    qs, ks, vs = z["q"].astype(np.int64), z["k"].astype(np.int64), z["v"].astype(np.int64)
    lengths, thetas = z["length"].astype(np.int64), z["theta"].astype(np.int64)

    def fit(x, src, dst):
        x = x >> (src - dst) if src > dst else x << (dst - src)
        return x

    n, d = cfg.seq_len, cfg.head_dim
    _, _, _, _, tmin, tmax = _ranges(cfg)
    heads = []
    total = len(qs) if count is None else min(count, len(qs))
    for h in range(total):
        def crop(x):
            reps = (-(-n // x.shape[0]), -(-d // x.shape[1]))
            return np.tile(x, reps)[:n, :d]
        q = crop(fit(qs[h], src_qk, cfg.qk_bits))
        k = crop(fit(ks[h], src_qk, cfg.qk_bits))
        v = crop(fit(vs[h], src_v, cfg.v_bits))
        length = int(min(max(lengths[h], 1), n))
        # theta is stored in source z units: rescale like the codes.
        theta = int(fit(np.int64(thetas[h]), src_qk, cfg.qk_bits))
        heads.append(Head(q, k, v, length, int(np.clip(theta, tmin, tmax)), "real"))
    return heads


def mixed_heads(cfg, rng: np.random.Generator, *, random_count: int, every_length: bool = True,
                extremes: bool = True, real_path=None, real_count: int = 4,
                vary_shift: bool = True) -> list[Head]:
    """The standard stimulus mix: extremes, every valid length 1..n, random, real.

    With ``vary_shift`` (default) the output shift ``r`` changes from head to
    head over ``0..out_shift_max`` (:func:`with_shifts`); otherwise every head has ``r = 0``.
    """
    heads = []
    if extremes:
        heads += extreme_heads(cfg, rng)
    if every_length:
        heads += random_heads(cfg, cfg.seq_len, rng, lengths=range(1, cfg.seq_len + 1),
                              label="every-length")
    heads += random_heads(cfg, random_count, rng)
    if real_path is not None:
        heads += heads_from_npz(cfg, real_path, rng, count=real_count)
    if vary_shift:
        heads = with_shifts(cfg, heads, rng)
    return heads


def example_heads(cfg, count: int = 4, seed: int = 0) -> list[Head]:
    """``count`` random heads with output shifts varying head to head (a small demo stimulus)."""
    rng = np.random.default_rng(seed)
    return with_shifts(cfg, random_heads(cfg, count, rng), rng)


def golden_outputs(cfg, heads) -> np.ndarray:
    """Expected ``h`` of every head, ``(H, n, d)`` int64, from ``quant.golden``."""
    from inhibitron.quant.golden import inhibitor_attention_int
    if not heads:
        return np.zeros((0, cfg.seq_len, cfg.head_dim), dtype=np.int64)
    return inhibitor_attention_int(
        np.stack([h.q for h in heads]), np.stack([h.k for h in heads]),
        np.stack([h.v for h in heads]), np.array([h.length for h in heads]),
        theta=np.array([h.theta for h in heads]), v_shift=cfg.v_shift, z_shift=cfg.z_shift,
        out_shift=np.array([h.out_shift for h in heads]), qk_bits=cfg.qk_bits, v_bits=cfg.v_bits, out_bits=cfg.out_bits)


def pack_rows(codes: np.ndarray, bits: int) -> list[int]:
    """Pack each row of ``codes`` (``(rows, count)`` ints) into one integer."""
    codes = np.asarray(codes, dtype=np.int64)
    mask = (1 << bits) - 1
    out = []
    for row in codes:
        value = 0
        for i, c in enumerate(row.tolist()):
            value |= (c & mask) << (i * bits)
        out.append(value)
    return out


def unpack_rows(values, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_rows` (two's complement), ``(len(values), count)`` int64."""
    mask = (1 << bits) - 1
    sign = 1 << (bits - 1)
    out = np.empty((len(values), count), dtype=np.int64)
    for r, value in enumerate(values):
        value = int(value)
        for i in range(count):
            c = (value >> (i * bits)) & mask
            out[r, i] = c - (1 << bits) if c & sign else c
    return out
