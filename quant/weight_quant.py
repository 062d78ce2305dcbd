"""Symmetric per-channel quantization of a projection weight (``nn.Linear`` layout ``(out, in)``).

:func:`quantize_weight_per_channel` gives integer codes of ``bits`` bits and
one float64 scale per output channel; rounding is half to even
(:meth:`~inhibitron.quant.formats.IntFormat.quantize`).
"""

from __future__ import annotations

import numpy as np

from .formats import IntFormat
from .observers import as_float64

__all__ = ["quantize_weight_per_channel"]


def quantize_weight_per_channel(weight, *, bits: int = 8, axis: int = 0, name: str = "weight"):
    """Symmetric per-channel quantization of a projection weight.

    ``scale[c] = max|W[c]| / qmax``, ``codes = clip(rint(W / scale), qmin, qmax)``
    (round half to even). An all-zero channel gets scale 1.0 (codes 0).

    Parameters
    ----------
    weight : float array_like or torch tensor
        e.g. ``nn.Linear.weight`` of shape ``(out, in)``.
    bits : int
        Signed code width, 2..32.
    axis : int
        The channel axis (0 = output channels of ``nn.Linear``).
    name : str
        The tensor's name, used in error messages.

    Returns
    -------
    codes : ndarray of the smallest integer dtype holding ``bits``
        Same shape as ``weight``.
    scales : float64 ndarray, shape ``(weight.shape[axis],)``

    Raises
    ------
    ValueError
        NaN/Inf in the weight (naming ``name`` and the first bad index), or a
        bad ``axis``/``bits``.

    >>> codes, scales = quantize_weight_per_channel([[1.0, -0.5], [0.0, 0.0]], bits=8, name="q_proj")
    >>> codes.tolist(), scales.tolist()
    ([[127, -64], [0, 0]], [0.007874015748031496, 1.0])
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 32:
        raise ValueError(f"bits must be an integer in 2..32, not {bits!r}")
    w = as_float64(weight)
    if w.ndim < 1:
        raise ValueError(f"{name}: a weight needs at least one dimension, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(w))[0])
        raise ValueError(f"{name} contains NaN or Inf (first at index {bad}); refusing to quantize it")
    if not -w.ndim <= axis < w.ndim:
        raise ValueError(f"{name}: axis={axis} is out of range for a weight of shape {w.shape}")
    fmt = IntFormat(bits)
    wc = np.moveaxis(w, axis, 0)
    absmax = np.abs(wc.reshape(wc.shape[0], -1)).max(axis=1)
    scales = np.where(absmax > 0, absmax / fmt.qmax, 1.0)
    shape = [1] * w.ndim
    shape[axis] = -1
    codes = fmt.quantize(w, scales.reshape(shape)).astype(fmt.dtype)
    return codes, scales

