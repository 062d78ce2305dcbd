"""Bit-true integer golden model of inhibitor attention (the RTL's oracle).

Implements the integer contract of ``docs/numerics.md`` for one head,
vectorized over any leading (batch, head) dimensions. Only numpy integer
arithmetic touches the datapath (int16/int32/int64 chosen from the derived
widths so nothing can overflow; results are int64)::

    1. z[i,j]   = sum_k |q[i,k] - k[j,k]|                     unsigned, exact
    2. S[i]     = sum_{j<L} z[i,j];   m[i] = floor((2*S[i] + L) / (2*L))
    3. t[i]     = m[i] + theta;       zb[i,j] = max(z[i,j] - t[i], 0)
    4. c[i,j,l] = softthr(v[j,l] << a, zb[i,j] << b)          (j < L only)
    5. acc[i,l] = sum_{j<L} c[i,j,l]
    6. h[i,l]   = clamp((acc[i,l] + (2**(r-1) if r else 0)) >> r, out range)

with ``softthr(x, y) = x - y if x > y; x + y if x < -y; else 0``. These are
Eq. 1-3 of Brännvall (AAAI-24) with every scale folded into the formats
(:mod:`inhibitron.quant.formats`). Rows ``i >= L`` (padded queries) follow
the same formulas.

Implementation notes (value-identical to the formulas above, tested against
a scalar-loop twin): the soft-threshold uses ``softthr(x, y) = x - clip(x, -y, y)``;
``zb << b`` is clipped to ``2**(v_bits-1+a)`` (beyond it every summand is 0,
the hardware may do the same) and padded keys get that clip value, so their
summands vanish; the mixing sum runs as a loop over keys on
``(..., n, d_v)`` slices, never materialising ``(..., n, n, d_v)``.

Use :func:`golden_from_float` for float inputs and a
:class:`~inhibitron.quant.formats.LayerQuant`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..model.length_norm import LENGTH_NORMS, length_thresholds
from ..model.reference import qkv_lead_shape
from . import rounding
from .formats import AttentionFormats, IntFormat, LayerQuant

__all__ = [
    "GoldenTrace",
    "dequantize_output",
    "golden_from_float",
    "inhibitor_attention_int",
    "length_exponents",
    "length_out_shift",
    "quantize_inputs",
    "valid_len_from_mask",
]


class GoldenTrace(NamedTuple):
    """Intermediates of :func:`inhibitor_attention_int` (all int64).

    Members
    -------
    z : (..., n_q, n_k)
        Step 1, Manhattan scores (every key, padded ones included).
    row_sum : (..., n_q)
        Step 2, ``S`` over the valid keys.
    mean : (..., n_q)
        Step 2, ``m``.
    threshold : (..., n_q)
        Step 3, ``t = m + theta``.
    zb : (..., n_q, n_k)
        Step 3, ``max(z - t, 0)`` for every key (padded keys included, although
        they do not contribute), neither shifted nor clipped.
    acc : (..., n_q, d_v)
        Step 5, the exact signed accumulator.
    h : (..., n_q, d_v)
        Step 6, the saturated output codes.
    """

    z: np.ndarray
    row_sum: np.ndarray
    mean: np.ndarray
    threshold: np.ndarray
    zb: np.ndarray
    acc: np.ndarray
    h: np.ndarray


def _dtype_for(bits: int) -> type:
    """Smallest signed numpy integer type holding a signed ``bits``-wide value."""
    for dt, width in ((np.int16, 16), (np.int32, 32)):
        if bits <= width:
            return dt
    return np.int64


def _per_head(name: str, x, lead: tuple[int, ...], *, minimum: int | None = None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer (array), got {x!r} of dtype {arr.dtype}")
    try:
        arr = np.broadcast_to(arr.astype(np.int64), lead)
    except ValueError:
        raise ValueError(
            f"{name} of shape {arr.shape} does not broadcast to the leading (batch/head) "
            f"dimensions {lead} of q, k, v"
        ) from None
    if minimum is not None and np.any(arr < minimum):
        bad = tuple(int(i) for i in np.argwhere(arr < minimum)[0])
        raise ValueError(f"{name} must be >= {minimum}, got {int(arr[bad])} at index {bad}")
    return arr


def _check_array(name: str, x, fmt: IntFormat) -> np.ndarray:
    arr = fmt.check(name, x)
    if arr.ndim < 2:
        raise ValueError(f"{name} must have shape (..., n, d), got shape {arr.shape}")
    if 0 in arr.shape[-2:]:
        raise ValueError(f"{name} has an empty sequence or head dimension: shape {arr.shape}")
    return arr


def inhibitor_attention_int(
    q,
    k,
    v,
    valid_len,
    *,
    theta,
    v_shift,
    z_shift,
    out_shift,
    qk_bits: int,
    v_bits: int,
    out_bits: int,
    return_trace: bool = False,
):
    """Integer inhibitor attention, bit-exact to the contract (``docs/numerics.md``).

    Parameters
    ----------
    q : int array_like, shape (..., n_q, d)
        Query codes, signed ``qk_bits``-bit.
    k : int array_like, shape (..., n_k, d)
        Key codes, signed ``qk_bits``-bit.
    v : int array_like, shape (..., n_k, d_v)
        Value codes, signed ``v_bits``-bit.
    valid_len : int array_like broadcastable to the leading dims ``...``
        ``L``, 1..n_k: keys ``j < L`` are valid (key-padding mask). For
        ``(B, H, n, d)`` inputs pass ``(B, 1)`` lengths.
    theta : int array_like broadcastable to ``...``
        Threshold in score LSBs, within ``[-2**z_bits, 2**z_bits - 1]``,
        ``z_bits`` the width of ``z`` (:class:`~inhibitron.quant.formats.DatapathWidths`).
    v_shift, z_shift : int array_like broadcastable to ``...``
        ``a, b >= 0``, at most one of them nonzero per head.
    out_shift : int array_like broadcastable to ``...``
        ``r >= 0``.
    qk_bits, v_bits, out_bits : int
        The formats (2..32 bits each).
    return_trace : bool
        Return a :class:`GoldenTrace` instead of ``h``.

    Returns
    -------
    h : int64 ndarray, shape (..., n_q, d_v)
        Output codes, signed ``out_bits``-bit (saturated). ``...`` is the
        broadcast of the leading dims of ``q``, ``k``, ``v``.

    Raises
    ------
    TypeError
        A tensor or parameter is not integer.
    ValueError
        A code is outside its format (naming the tensor and the first bad
        index), shapes mismatch, ``valid_len`` is outside ``1..n_k``, a
        shift is negative or both shifts of a head are nonzero, ``theta`` is
        out of range, or a derived width exceeds 62 bits.

    Examples
    --------
    Two keys, one valid (``L = 1``): the mean is ``z[i,0]``, so key 0 is
    never inhibited and ``h`` copies ``v[0]``:

    >>> q = [[1, 2], [3, -4]]
    >>> inhibitor_attention_int(q, q, [[5, -6], [7, 8]], 1, theta=0, v_shift=0, z_shift=0,
    ...                         out_shift=0, qk_bits=4, v_bits=5, out_bits=8).tolist()
    [[5, -6], [5, -6]]
    """
    formats = AttentionFormats(qk_bits=qk_bits, v_bits=v_bits, out_bits=out_bits)
    q = _check_array("q", q, formats.q)
    k = _check_array("k", k, formats.k)
    v = _check_array("v", v, formats.v)
    lead = qkv_lead_shape(q, k, v)
    n_q, d = q.shape[-2:]
    n_k, d_v = v.shape[-2:]

    length = _per_head("valid_len", valid_len, lead, minimum=1)
    if np.any(length > n_k):
        bad = tuple(int(i) for i in np.argwhere(length > n_k)[0])
        raise ValueError(
            f"valid_len must be in 1..n_k={n_k}, got {int(length[bad])} at index {bad}"
        )
    a = _per_head("v_shift", v_shift, lead, minimum=0)
    b = _per_head("z_shift", z_shift, lead, minimum=0)
    r = _per_head("out_shift", out_shift, lead, minimum=0)
    both = (a > 0) & (b > 0)
    if np.any(both):
        bad = tuple(int(i) for i in np.argwhere(both)[0])
        raise ValueError(
            f"at most one of v_shift and z_shift may be nonzero per head, got v_shift={int(a[bad])} "
            f"and z_shift={int(b[bad])} at index {bad}"
        )
    theta = _per_head("theta", theta, lead)
    widths = formats.widths(
        head_dim=d, seq_len=n_k, v_shift=int(a.max(initial=0)), z_shift=int(b.max(initial=0)),
        out_shift=int(r.max(initial=0)),
    )
    bad_theta = (theta < widths.theta_min) | (theta > widths.theta_max)
    if np.any(bad_theta):
        bad = tuple(int(i) for i in np.argwhere(bad_theta)[0])
        raise ValueError(
            f"theta={int(theta[bad])} at index {bad} is outside the threshold range "
            f"[{widths.theta_min}, {widths.theta_max}] (signed {widths.theta_bits} bits for "
            f"qk_bits={qk_bits}, d={d})"
        )

    # Flatten the leading dims into G groups (one group = one head of one sequence).
    g = int(np.prod(lead, dtype=np.int64))
    qg = np.broadcast_to(q, lead + (n_q, d)).reshape(g, n_q, d)  # (G, n_q, d)
    kg = np.broadcast_to(k, lead + (n_k, d)).reshape(g, n_k, d)  # (G, n_k, d)
    vg = np.broadcast_to(v, lead + (n_k, d_v)).reshape(g, n_k, d_v)  # (G, n_k, d_v)
    lg, ag, bg, rg, thg = (x.reshape(g) for x in (length, a, b, r, theta))  # (G,)

    # 1. Manhattan scores, one head dimension at a time: (G, n_q, n_k).
    zdt = _dtype_for(widths.z_bits + 1)
    qt = np.ascontiguousarray(np.moveaxis(qg, -1, 0).astype(zdt))  # (d, G, n_q)
    kt = np.ascontiguousarray(np.moveaxis(kg, -1, 0).astype(zdt))  # (d, G, n_k)
    z = np.zeros((g, n_q, n_k), dtype=zdt)
    diff = np.empty_like(z)
    for c in range(d):
        np.subtract(qt[c][:, :, None], kt[c][:, None, :], out=diff)
        np.abs(diff, out=diff)
        z += diff
    z = z.astype(np.int64)

    # 2. Masked row sum and mean rounded half up (exact integer division).
    key_valid = np.arange(n_k)[None, :] < lg[:, None]  # (G, n_k)
    row_sum = np.where(key_valid[:, None, :], z, 0).sum(axis=-1)  # (G, n_q)
    mean = rounding.div_round_half_up(row_sum, lg[:, None])  # (G, n_q) floor((2S + L) / 2L)

    # 3. Threshold and thresholded scores.
    threshold = mean + thg[:, None]  # (G, n_q)
    zb = np.maximum(z - threshold[:, :, None], 0)  # (G, n_q, n_k)

    # 4.-5. Mixing. y = min(zb << b, C) computed without overflow, C = 2**(v_bits-1+a);
    # padded keys get y = C so that softthr(x, C) = 0 for every x in range.
    clip = np.left_shift(np.int64(1), v_bits - 1 + ag)[:, None, None]  # (G, 1, 1)
    bb = bg[:, None, None]
    pre = np.right_shift(clip + np.left_shift(np.int64(1), bb) - 1, bb)  # ceil(C / 2**b)
    y = np.minimum(np.left_shift(np.minimum(zb, pre), bb), clip)  # (G, n_q, n_k)
    y = np.where(key_valid[:, None, :], y, clip)
    mdt = _dtype_for(widths.mix_bits)
    x = np.left_shift(vg, ag[:, None, None]).astype(mdt)  # (G, n_k, d_v)
    yt = np.ascontiguousarray(np.swapaxes(y, 1, 2).astype(mdt))[..., None]  # (G, n_k, n_q, 1)
    neg_yt = -yt
    # acc = sum_j (x_j - clip(x_j, -y_ij, y_ij)) = sum_j x_j - sum_j clip(...)
    adt = _dtype_for(widths.acc_bits + 1)
    clipped_sum = np.zeros((g, n_q, d_v), dtype=adt)
    lo = np.empty((g, n_q, d_v), dtype=mdt)
    for j in range(n_k):
        np.maximum(x[:, None, j, :], neg_yt[:, j], out=lo)  # (G, n_q, d_v)
        np.minimum(lo, yt[:, j], out=lo)
        clipped_sum += lo
    acc = x.sum(axis=1, dtype=np.int64)[:, None, :] - clipped_sum.astype(np.int64)  # (G, n_q, d_v)

    # 6. Round half up by 2**r, saturate.
    h = rounding.saturate(rounding.round_half_up_shift(acc, rg[:, None, None]), out_bits)  # (G, n_q, d_v)

    h = h.reshape(lead + (n_q, d_v))
    if not return_trace:
        return h
    return GoldenTrace(
        z=z.reshape(lead + (n_q, n_k)),
        row_sum=row_sum.reshape(lead + (n_q,)),
        mean=mean.reshape(lead + (n_q,)),
        threshold=threshold.reshape(lead + (n_q,)),
        zb=zb.reshape(lead + (n_q, n_k)),
        acc=acc.reshape(lead + (n_q, d_v)),
        h=h,
    )


# ---------------------------------------------------------------------------
# Float <-> integer for a LayerQuant
# ---------------------------------------------------------------------------


def _float_heads(name: str, x, lq: LayerQuant) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim < 3 or arr.shape[-3] != lq.num_heads or arr.shape[-1] != lq.head_dim:
        raise ValueError(
            f"{name} must have shape (..., num_heads={lq.num_heads}, n, d={lq.head_dim}) for "
            f"{lq.name}, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{name} contains NaN or Inf (first at index {bad})")
    return arr


def quantize_inputs(q, k, v, layer_quant: LayerQuant) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float Q, K, V of one layer to integer codes.

    ``q = clip(rint(Q / s_qk), qk format)`` (numpy ``rint``: round half to
    even; saturating), the same for ``k`` with the shared ``s_qk`` and for
    ``v`` with ``s_v``; scales per head.

    Parameters
    ----------
    q, k, v : float array_like (or CPU torch tensors), shape (..., H, n, d)
        ``H = layer_quant.num_heads``, ``d = layer_quant.head_dim``.
    layer_quant : LayerQuant

    Returns
    -------
    q, k, v : int64 ndarrays of the same shapes.
    """
    q = _float_heads("q", q, layer_quant)
    k = _float_heads("k", k, layer_quant)
    v = _float_heads("v", v, layer_quant)
    fmt = layer_quant.formats
    s_qk = layer_quant.s_qk[:, None, None]  # (H, 1, 1)
    s_v = layer_quant.s_v[:, None, None]
    return fmt.q.quantize(q, s_qk), fmt.k.quantize(k, s_qk), fmt.v.quantize(v, s_v)


def dequantize_output(h, layer_quant: LayerQuant) -> np.ndarray:
    """Output codes ``(..., H, n, d_v)`` to float64: ``H = s_h * h`` per head."""
    h = np.asarray(h)
    if h.ndim < 3 or h.shape[-3] != layer_quant.num_heads:
        raise ValueError(
            f"h must have shape (..., num_heads={layer_quant.num_heads}, n, d_v) for "
            f"{layer_quant.name}, got shape {h.shape}"
        )
    return h.astype(np.float64) * layer_quant.s_h[:, None, None]


def valid_len_from_mask(mask) -> np.ndarray:
    """Lengths ``L`` (int64, shape ``mask.shape[:-1]``) of prefix key masks.

    Raises
    ------
    ValueError
        A row is not a prefix mask (``True`` then ``False``) or has no valid key.

    >>> valid_len_from_mask([[True, True, False], [True, True, True]]).tolist()
    [2, 3]
    """
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        if not np.all((m == 0) | (m == 1)):
            raise ValueError("mask must be boolean (or 0/1): True marks a valid key")
        m = m.astype(bool)
    if m.ndim < 1:
        raise ValueError(f"mask must have shape (..., n), got shape {m.shape}")
    length = m.sum(axis=-1).astype(np.int64)
    prefix = np.arange(m.shape[-1]) < length[..., None]
    if not np.array_equal(prefix, m):
        bad = tuple(int(i) for i in np.argwhere(np.any(prefix != m, axis=-1))[0])
        raise ValueError(
            f"mask row {bad} is not a prefix mask (valid keys must come first, padding last); "
            "the integer core supports key-padding masks only"
        )
    if np.any(length == 0):
        bad = tuple(int(i) for i in np.argwhere(length == 0)[0])
        raise ValueError(f"mask row {bad} has no valid key")
    return length


def length_exponents(length) -> np.ndarray:
    """``e(L) = round(log2 L)`` of every length (int64, same shape), exactly in integers.

    ``e(L)`` counts the thresholds ``isqrt(2**(2k+1)) + 1`` = 2, 3, 6, 12, 23,
    46, 91, 182, ... that ``L`` reaches; ``log2 L`` is never a half-integer for
    an integer ``L``, so there are no ties; ``e(1) = 0``. The same function as
    :func:`inhibitron.model.attention.length_exponent` (tested), without torch.

    >>> length_exponents([1, 2, 3, 5, 6, 11, 12, 45, 46, 90, 91]).tolist()
    [0, 1, 2, 2, 3, 3, 4, 5, 6, 6, 7]
    """
    length = np.asarray(length)
    if not np.issubdtype(length.dtype, np.integer) or np.any(length < 1):
        raise ValueError(f"lengths must be integers >= 1, got {length!r}")
    length = length.astype(np.int64)
    top = max(int(length.max(initial=1)).bit_length(), 1)
    thresholds = np.array(length_thresholds(top), dtype=np.int64)
    return (length[..., None] >= thresholds).sum(axis=-1).astype(np.int64)


def length_out_shift(out_shift, valid_len, *, ref_shift: int = 0) -> np.ndarray:
    """Per (sequence, head) output shift of length normalisation: ``r = r_h + e(L) - r_ref``.

    Parameters
    ----------
    out_shift : int array_like (H,)
        ``r_h`` per head, calibrated on length-normalised outputs.
    valid_len : int array_like broadcastable to ``(..., H)``, e.g. ``(B, 1)``
    ref_shift : int
        ``r_ref``: the exponent ``r_h`` refers to (0: ``r_h`` is the shift of the
        normalised output itself, which is what calibration produces).

    Returns
    -------
    int64 ndarray, the broadcast of ``out_shift`` and ``valid_len``.

    Raises
    ------
    ValueError
        A resulting shift is negative (the core shifts right only).

    >>> length_out_shift([2, 3], [[1], [46]]).tolist()
    [[2, 3], [8, 9]]
    """
    r = np.asarray(out_shift, dtype=np.int64) + length_exponents(valid_len) - int(ref_shift)
    if np.any(r < 0):
        raise ValueError(f"length_out_shift: r_h + e(L) - r_ref is negative ({int(r.min())}); the core "
                         "shifts right only: choose ref_shift <= min(r_h)")
    return r


def golden_from_float(q, k, v, valid_len, layer_quant: LayerQuant, *, return_trace: bool = False,
                      length_norm: str = "none"):
    """Quantize float Q/K/V, run the golden model, dequantize.

    Parameters
    ----------
    q, k, v : float array_like, shape (..., H, n, d)
    valid_len : int array_like broadcastable to ``(..., H)``
        e.g. ``(B, 1)`` for ``(B, H, n, d)`` inputs
        (:func:`valid_len_from_mask` turns a ``(B, n)`` mask into ``(B,)``).
    layer_quant : LayerQuant
    return_trace : bool
        Also return the :class:`GoldenTrace`.
    length_norm : {"none", "pow2"}
        ``"pow2"``: the output shift of each (sequence, head) is
        :func:`length_out_shift` ``(r_h, L)`` = ``r_h + round(log2 L)``, the integer
        form of the float module's factor ``2**-round(log2 L)``
        (:class:`~inhibitron.model.attention.InhibitorAttention`).

    Returns
    -------
    H : float64 ndarray, shape (..., H, n, d)
        ``s_h * h``; with ``return_trace``, ``(H, trace)``.
    """
    if length_norm not in LENGTH_NORMS:
        raise ValueError(f"length_norm must be one of {LENGTH_NORMS}, not {length_norm!r}")
    qi, ki, vi = quantize_inputs(q, k, v, layer_quant)
    kwargs = layer_quant.golden_kwargs()
    if length_norm == "pow2":
        kwargs["out_shift"] = length_out_shift(kwargs["out_shift"], valid_len)
    out = inhibitor_attention_int(qi, ki, vi, valid_len, return_trace=return_trace, **kwargs)
    h = out.h if return_trace else out
    hf = dequantize_output(h, layer_quant)
    return (hf, out) if return_trace else hf
