"""Float64 numpy reference of inhibitor attention (Brännvall, AAAI-24, Eq. 1-3).

For one head with queries ``Q`` (n_q x d), keys ``K`` (n_k x d) and values
``V`` (n_k x d_v)::

    Z[i,j]  = (gamma / sqrt(d)) * sum_k |Q[i,k] - K[j,k]|                       (1)
    Zb[i,j] = relu(Z[i,j] - mean_j Z[i,j] - delta)                              (3)
    H[i,l]  = eta * sum_j relu(V+[j,l] - Zb[i,j]) + min(V-[j,l] + Zb[i,j], 0)   (2)

with ``V+ = max(V, 0)`` and ``V- = min(V, 0)``. The summand of (2) is the
soft-threshold ``sign(v) * max(|v| - z, 0)``: a key far from the query
(large ``Zb``) inhibits its value.

With a key mask, padded keys take no part in the row mean nor in the sum of
(2) (``mean_over="valid"``, this project's semantics). ``mean_over="all"``
reproduces the thesis code (tonytonfisk2/MSc2024), whose row mean includes
the padded keys' scores; padded keys are still excluded from the sum.

This module is the float anchor of the verification pyramid: the PyTorch
module matches it to 1e-6 and the integer golden model is bounded against it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["InhibitorTrace", "check_quantizable", "inhibitor_attention", "qkv_lead_shape", "soft_threshold",
           "validate_qkv"]

_MEAN_OVER = ("valid", "all")


class InhibitorTrace(NamedTuple):
    """Intermediates of one call, for tracing and tests.

    Members
    -------
    z : (..., n_q, n_k) float64
        Scaled Manhattan scores of Eq. 1 (padded keys included, unmasked).
    mean : (..., n_q, 1) float64
        Row mean of ``z`` that Eq. 3 subtracts.
    zb : (..., n_q, n_k) float64
        Thresholded scores of Eq. 3; ``+inf`` at padded keys (fully inhibited).
    h : (..., n_q, d_v) float64
        Output of Eq. 2.
    """

    z: np.ndarray
    mean: np.ndarray
    zb: np.ndarray
    h: np.ndarray


def soft_threshold(v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The summand of Eq. 2: ``relu(v+ - z) + min(v- + z, 0)``.

    Equals ``sign(v) * max(|v| - z, 0)`` for ``z >= 0`` (tested). Elementwise,
    broadcasting; float64 out.

    >>> soft_threshold(np.array([3.0, -3.0, 1.0]), np.array([1.0, 1.0, 2.0]))
    array([ 2., -2.,  0.])
    """
    v = np.asarray(v, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    return np.maximum(np.maximum(v, 0.0) - z, 0.0) + np.minimum(np.minimum(v, 0.0) + z, 0.0)


def _as_float_array(name: str, x) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} contains NaN or Inf (first at index {tuple(int(i) for i in bad)}); "
            "inhibitor attention needs finite inputs"
        )
    return arr


def qkv_lead_shape(q, k, v) -> tuple[int, ...]:
    """Check that q (..., n_q, d), k (..., n_k, d), v (..., n_k, d_v) fit together.

    Shared by the float reference and the integer golden model (same messages).
    Returns the broadcast leading (batch/head) shape.

    Raises
    ------
    ValueError
        Mismatched head dimension d, mismatched key count, or leading
        dimensions that do not broadcast.
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must share the head dimension d: q has d={q.shape[-1]}, k has d={k.shape[-1]}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same number of keys: k has {k.shape[-2]}, v has {v.shape[-2]}"
        )
    try:
        return np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(
            "leading (batch/head) dimensions of q, k, v do not broadcast: "
            f"q {q.shape}, k {k.shape}, v {v.shape}"
        ) from None


def validate_qkv(q, k, v, mask=None):
    """Check shapes and values of an inhibitor-attention call; return float64 arrays.

    Parameters
    ----------
    q : array_like, shape (..., n_q, d)
    k : array_like, shape (..., n_k, d)
    v : array_like, shape (..., n_k, d_v)
    mask : array_like of bool, shape (..., n_k), optional
        True marks a valid key. Its leading dimensions broadcast against
        those of ``q`` (use ``(B, 1, n_k)`` for ``(B, H, n, d)`` arrays).

    Returns
    -------
    q, k, v : float64 arrays; mask : bool array broadcast to ``lead + (n_k,)``
    or ``None``.

    Raises
    ------
    ValueError
        Naming the tensor: fewer than 2 dimensions, mismatched head dimension
        ``d`` between ``q`` and ``k``, mismatched key count between ``k`` and
        ``v``, non-broadcastable leading dimensions, empty sizes, NaN/Inf, a
        mask of the wrong shape, or a mask row with no valid key.
    """
    q = _as_float_array("q", q)
    k = _as_float_array("k", k)
    v = _as_float_array("v", v)
    for name, arr in (("q", q), ("k", k), ("v", v)):
        if arr.ndim < 2:
            raise ValueError(f"{name} must have shape (..., n, d), got shape {arr.shape}")
        if 0 in arr.shape[-2:]:
            raise ValueError(f"{name} has an empty sequence or head dimension: shape {arr.shape}")
    lead = qkv_lead_shape(q, k, v)
    n_k = k.shape[-2]
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != np.bool_:
            if not np.all((m == 0) | (m == 1)):
                raise ValueError("mask must be boolean (or 0/1): True marks a valid key")
            m = m.astype(bool)
        if m.ndim < 1 or m.shape[-1] != n_k:
            raise ValueError(
                f"mask must have shape (..., n_k) with n_k={n_k} keys, got shape {m.shape}"
            )
        try:
            m = np.broadcast_to(m, lead + (n_k,))
        except ValueError:
            raise ValueError(
                f"mask shape {m.shape} does not broadcast to the leading dimensions {lead} "
                f"of q/k/v plus n_k={n_k} (for (B, H, n, d) inputs use a (B, 1, n) mask)"
            ) from None
        empty = ~m.any(axis=-1)
        if empty.any():
            where = tuple(int(i) for i in np.argwhere(empty)[0])
            raise ValueError(
                f"mask has no valid key at leading index {where}: every row of the "
                "mean in Eq. 3 needs at least one valid key"
            )
        mask = m
    return q, k, v, mask


def check_quantizable(gamma, eta, *, name: str = "layer") -> None:
    """Raise ``ValueError`` naming the head unless every ``gamma > 0`` and ``eta != 0``.

    :func:`inhibitor_attention` is the mathematics and accepts any finite
    ``gamma``, ``eta``, ``delta``: ``gamma <= 0`` turns inhibition into
    attraction (or makes every score 0), ``eta = 0`` makes ``H`` identically
    0. The quantized core cannot represent either (``gamma / sqrt(d)`` is
    folded into the positive Q/K scale, ``eta`` into a non-zero output
    scale), so ``inhibitron export`` (:func:`inhibitron.quant.calibrate.fold_layer`)
    and ``inhibitron report`` refuse them; this is the same check, for
    callers of the reference that want the export's assumptions.

    Parameters
    ----------
    gamma, eta : float or array_like (H,)
        Per-head parameters (scalars count as one head).
    name : str
        Label of the layer in the message.

    Examples
    --------
    >>> check_quantizable([0.3, 0.2], [1.0, 0.5])
    >>> check_quantizable([0.3, -0.1], [1.0, 0.5], name="layer 2")
    Traceback (most recent call last):
    ...
    ValueError: layer 2 head 1: gamma = -0.1; quantization needs gamma > 0 (gamma/sqrt(d) is folded into the positive Q/K scale)
    """
    g = np.atleast_1d(_as_float_array("gamma", gamma)).reshape(-1)
    e = np.atleast_1d(_as_float_array("eta", eta)).reshape(-1)
    for h in range(max(g.size, e.size)):
        if h < g.size and not g[h] > 0:
            raise ValueError(f"{name} head {h}: gamma = {float(g[h])!r}; quantization needs gamma > 0 "
                             "(gamma/sqrt(d) is folded into the positive Q/K scale)")
        if h < e.size and e[h] == 0:
            raise ValueError(f"{name} head {h}: eta = 0 makes the head's output identically 0; "
                             "no output scale can be folded")


def _per_head(name: str, x, lead: tuple[int, ...]) -> np.ndarray:
    arr = _as_float_array(name, x)
    try:
        return np.broadcast_to(arr, lead)[..., None, None]
    except ValueError:
        raise ValueError(
            f"{name} of shape {arr.shape} does not broadcast to the leading "
            f"(batch/head) dimensions {lead} of q"
        ) from None


def inhibitor_attention(
    q,
    k,
    v,
    gamma=1.0,
    eta=1.0,
    delta=0.0,
    mask=None,
    *,
    mean_over: str = "valid",
    return_trace: bool = False,
):
    """Inhibitor attention, Eq. 1-3, in float64.

    Parameters
    ----------
    q : array_like, shape (..., n_q, d)
        Queries. Any leading batch/head dimensions.
    k : array_like, shape (..., n_k, d)
        Keys.
    v : array_like, shape (..., n_k, d_v)
        Values.
    gamma, eta, delta : float or array_like broadcastable to ``q.shape[:-2]``
        Score scale, output scale and threshold shift of one head each
        (e.g. shape ``(H,)`` for ``(B, H, n, d)`` inputs). Any finite value
        is accepted (this is the mathematics); the quantized core further
        needs ``gamma > 0`` and ``eta != 0``, which :func:`check_quantizable`
        checks as ``inhibitron export`` does.
    mask : array_like of bool, shape (..., n_k), optional
        True marks a valid key; padded keys take no part in the row mean
        (unless ``mean_over="all"``) nor in the sum of Eq. 2.
    mean_over : {"valid", "all"}
        Keys averaged by the row mean of Eq. 3: only valid keys (default) or
        all keys, padded ones included (the thesis code's behaviour).
    return_trace : bool
        Return an :class:`InhibitorTrace` of the intermediates instead of ``H``.

    Returns
    -------
    H : ndarray, shape (broadcast leading dims, n_q, d_v), float64
        (or an :class:`InhibitorTrace` when ``return_trace``).

    Raises
    ------
    ValueError
        See :func:`validate_qkv`; also for a bad ``mean_over`` or per-head
        parameters that do not broadcast.

    Examples
    --------
    >>> q = np.array([[0.0, 0.0], [2.0, 0.0]])
    >>> inhibitor_attention(q, q, q, gamma=np.sqrt(2), delta=0.0)
    array([[1., 0.],
           [2., 0.]])
    """
    if mean_over not in _MEAN_OVER:
        raise ValueError(f"mean_over must be one of {_MEAN_OVER}, not {mean_over!r}")
    q, k, v, mask = validate_qkv(q, k, v, mask)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    d = q.shape[-1]
    gamma = _per_head("gamma", gamma, lead)  # (..., 1, 1)
    eta = _per_head("eta", eta, lead)
    delta = _per_head("delta", delta, lead)

    # Eq. 1: (..., n_q, 1, d) - (..., 1, n_k, d) -> (..., n_q, n_k)
    z = gamma / np.sqrt(d) * np.abs(q[..., :, None, :] - k[..., None, :, :]).sum(axis=-1)
    if mask is None:
        valid = np.ones(z.shape[:-2] + (1, z.shape[-1]), dtype=bool)
    else:
        valid = mask[..., None, :]  # (..., 1, n_k)
    valid = np.broadcast_to(valid, z.shape)
    if mean_over == "valid":
        mean = np.where(valid, z, 0.0).sum(axis=-1, keepdims=True) / valid.sum(axis=-1, keepdims=True)
    else:
        mean = z.mean(axis=-1, keepdims=True)
    # Eq. 3; padded keys are fully inhibited (+inf makes every summand 0).
    zb = np.where(valid, np.maximum(z - mean - delta, 0.0), np.inf)
    # Eq. 2: (..., n_q, n_k, 1) against (..., 1, n_k, d_v), summed over keys.
    contrib = soft_threshold(v[..., None, :, :], zb[..., :, :, None])
    h = eta * contrib.sum(axis=-2)
    if return_trace:
        return InhibitorTrace(z=z, mean=mean, zb=zb, h=h)
    return h
