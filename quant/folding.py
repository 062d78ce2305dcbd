"""Folding: per-head ``gamma``, ``eta``, ``delta`` and calibrated ranges into a :class:`LayerQuant`.

:func:`fold_layer` follows the policy of ``docs/numerics.md`` (section
"Folding policy"): float scales per head (``s_qk``, ``s_v``, ``s_h``), the
integer shifts ``a``, ``b`` (shared exponent, :func:`choose_shared_exponent`)
and ``r``, and the threshold code ``theta``; a format too narrow for the
calibrated data raises :class:`FormatTooNarrowError`, which suggests a width.
The ranges come from :mod:`inhibitron.quant.observers` (or any ``(H,)`` array).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .formats import AttentionFormats
from .layer_quant import HeadQuant, LayerQuant
from .observers import as_float64

__all__ = ["FormatTooNarrowError", "choose_shared_exponent", "fold_layer"]


class FormatTooNarrowError(ValueError):
    """A format cannot represent the calibrated data usefully (names the format, suggests a width).

    ``field`` is the offending :class:`AttentionFormats` field (``"qk_bits"``, ``"v_bits"``
    or ``"out_bits"``).
    """

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field if field is not None else message


def _per_head_float(name: str, x, num_heads: int | None, layer: str) -> np.ndarray:
    arr = np.atleast_1d(as_float64(x))
    if arr.ndim != 1:
        raise ValueError(f"{layer}: {name} must be a scalar or a 1-D per-head array, got shape {arr.shape}")
    if num_heads is not None:
        if arr.size == 1:
            arr = np.repeat(arr, num_heads)
        elif arr.size != num_heads:
            raise ValueError(f"{layer}: {name} has {arr.size} entries, expected one per head ({num_heads})")
    for h, val in enumerate(arr):
        if not math.isfinite(val):
            raise ValueError(f"{layer} head {h}: {name} is {float(val)!r}; it must be finite")
    return arr


def _amax_of(name: str, obs, layer: str) -> np.ndarray:
    if obs is None:
        return None
    amax = obs.amax if hasattr(obs, "amax") else obs
    amax = np.atleast_1d(as_float64(amax))
    if amax.ndim != 1:
        raise ValueError(f"{layer}: the {name} range must be per head (1-D), got shape {amax.shape}")
    for h, val in enumerate(amax):
        if not (math.isfinite(val) and val >= 0):
            raise ValueError(f"{layer} head {h}: the {name} range is {float(val)!r}; it must be finite and >= 0")
    return amax


def choose_shared_exponent(log2_ratio) -> int:
    """The integer ``e = b - a`` shared by all heads of a layer.

    Minimises ``sum_h |log2_ratio[h] - e|``, the total (log2) coarsening of
    the heads' Q/K or V scales (an integer median); ties go to the larger
    ``e`` (coarser Q/K, finer V). Non-finite entries (heads with an all-zero
    tensor) do not vote; if none is left, ``e = 0``.

    >>> choose_shared_exponent([-1.4, -1.2, 0.3]), choose_shared_exponent([2.0, 5.0])
    (-1, 5)
    """
    x = np.asarray(log2_ratio, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 0
    cands = range(int(math.floor(x.min())), int(math.ceil(x.max())) + 1)
    costs = [(float(np.abs(x - e).sum()), -e) for e in cands]
    return -min(costs)[1]


def fold_layer(
    gamma,
    eta,
    delta,
    q_obs,
    k_obs,
    v_obs,
    h_obs=None,
    formats: AttentionFormats | None = None,
    *,
    head_dim: int | None = None,
    seq_len: int | None = None,
    shared_shifts: bool | str = "ab",
    min_levels: float = 4.0,
    name: str = "layer",
    _suggesting: bool = False,
) -> LayerQuant:
    """Fold per-head ``gamma``, ``eta``, ``delta`` and calibrated ranges into a LayerQuant.

    Policy (``docs/numerics.md``, "Folding policy"): calibrated scales
    ``s_qk0 = max(amax_q, amax_k) / qmax_qk`` and ``s_v0 = amax_v / qmax_v``
    give each head the ratio ``rho = s_z0 / s_v0`` with
    ``s_z0 = gamma * s_qk0 / sqrt(d)``. The contract needs
    ``s_z / s_v = 2**e`` with ``e = b - a`` an integer: shared by the layer
    (:func:`choose_shared_exponent`) or per head (``round(log2 rho)``). Each
    head then *enlarges* whichever of its two scales must grow (never shrinks
    one, so nothing calibrated saturates)::

        s_v = max(s_v0, s_z0 / 2**e);  s_z = s_v * 2**e;  s_qk = s_z * sqrt(d) / gamma
        a = max(-e, 0);  b = max(e, 0);  s_w = s_v * 2**-a
        theta = rint(delta / s_z)                      (round half to even)
        r = max(0, ceil(log2(amax_h / (|eta| * s_w * qmax_out))))   (max over heads if shared)
        s_h = eta * s_w * 2**r

    Without ``h_obs``, ``r`` is chosen so the worst-case accumulator of
    ``seq_len`` keys cannot saturate (``seq_len`` then required).

    Parameters
    ----------
    gamma, eta, delta : float or (H,) array_like
        Per-head parameters of Eq. 1-3 (``gamma > 0``, ``eta != 0``).
    q_obs, k_obs, v_obs : Observer or (H,) array_like
        Per-head symmetric ranges of Q, K, V (Q and K share one scale).
    h_obs : Observer or (H,) array_like, optional
        Per-head range of the float output H (``eta`` included).
    formats : AttentionFormats
        Default ``AttentionFormats()`` (8/8/8).
    head_dim : int, optional
        ``d``; default: the last dimension the observers saw.
    seq_len : int, optional
        ``n`` of the core; when given, the datapath widths are checked.
    shared_shifts : "ab", True or False
        ``"ab"`` (default): ``a`` and ``b`` shared by the layer (constants
        inside the PE array), ``r`` per head (a run-time field of the core's
        head descriptor, like ``theta``), so one generated core serves the
        layer. ``True``: one ``(a, b, r)`` for all heads (the policy before
        the core took ``r`` at run time; costs precision on heads with small
        outputs). ``False``: every shift per head (no single core fits).
    min_levels : float
        Each head's calibrated range must span at least this many codes of
        each format after folding; otherwise :class:`FormatTooNarrowError`.
    name : str
        Layer label for messages and the record.

    Raises
    ------
    ValueError
        ``gamma <= 0`` or ``eta == 0`` (naming layer and head), non-finite
        parameters or ranges, mismatched head counts, ``theta`` outside the
        threshold range.
    FormatTooNarrowError
        A format spans fewer than ``min_levels`` codes for some head (names
        the format and head, suggests a width).
    """
    formats = AttentionFormats() if formats is None else formats
    if not isinstance(formats, AttentionFormats):
        raise TypeError(f"formats must be an AttentionFormats, not {formats!r}")
    amax_q = _amax_of("Q", q_obs, name)
    amax_k = _amax_of("K", k_obs, name)
    amax_v = _amax_of("V", v_obs, name)
    amax_h = _amax_of("H", h_obs, name)
    num_heads = amax_q.size
    for what, arr in (("K", amax_k), ("V", amax_v), ("H", amax_h)):
        if arr is not None and arr.size != num_heads:
            raise ValueError(f"{name}: the {what} range has {arr.size} heads, the Q range has {num_heads}")
    gamma = _per_head_float("gamma", gamma, num_heads, name)
    eta = _per_head_float("eta", eta, num_heads, name)
    delta = _per_head_float("delta", delta, num_heads, name)
    for h in range(num_heads):
        if not gamma[h] > 0:
            raise ValueError(
                f"{name} head {h}: gamma = {float(gamma[h])!r}; quantization needs gamma > 0 (gamma/sqrt(d) "
                "is folded into the positive Q/K scale)"
            )
        if eta[h] == 0:
            raise ValueError(f"{name} head {h}: eta = 0 makes the head's output identically 0; "
                             "no output scale can be folded")
    if head_dim is None:
        dims = {getattr(o, "last_dim", None) for o in (q_obs, k_obs, v_obs)} - {None}
        if len(dims) != 1:
            raise ValueError(f"{name}: pass head_dim= (the observers do not agree on it: {sorted(dims)})")
        head_dim = dims.pop()
    if isinstance(head_dim, bool) or not isinstance(head_dim, (int, np.integer)) or head_dim < 1:
        raise ValueError(f"head_dim must be a positive integer, not {head_dim!r}")
    d = int(head_dim)
    if shared_shifts not in (True, False, "ab") or isinstance(shared_shifts, (int, float)) and \
            not isinstance(shared_shifts, bool):
        raise ValueError(f"shared_shifts must be True, False or 'ab', not {shared_shifts!r}")
    share_ab = shared_shifts is True or shared_shifts == "ab"
    share_r = shared_shifts is True
    min_levels = float(min_levels)
    if not min_levels >= 0:
        raise ValueError(f"min_levels must be >= 0, not {min_levels!r}")

    qk_fmt, v_fmt, out_fmt = formats.q, formats.v, formats.out
    amax_qk = np.maximum(amax_q, amax_k)
    s_qk0 = amax_qk / qk_fmt.qmax
    s_v0 = amax_v / v_fmt.qmax
    s_z0 = gamma * s_qk0 / math.sqrt(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_rho = np.log2(s_z0 / s_v0)
    if share_ab:
        exps = np.full(num_heads, choose_shared_exponent(log_rho), dtype=np.int64)
    else:
        exps = np.where(np.isfinite(log_rho), np.rint(np.nan_to_num(log_rho)), 0).astype(np.int64)

    s_v = np.empty(num_heads)
    for h in range(num_heads):
        cand = max(s_v0[h], math.ldexp(s_z0[h], -int(exps[h])))
        s_v[h] = cand if cand > 0 else 1.0  # all-zero Q, K and V: any scale is exact
    s_z = np.array([math.ldexp(s_v[h], int(exps[h])) for h in range(num_heads)])
    s_qk = s_z * math.sqrt(d) / gamma
    a = np.maximum(-exps, 0)
    b = np.maximum(exps, 0)
    s_w = np.array([math.ldexp(s_v[h], -int(a[h])) for h in range(num_heads)])

    # Output shift.
    if amax_h is not None:
        need = amax_h / (np.abs(eta) * s_w * out_fmt.qmax)
        r = np.array([max(0, math.ceil(math.log2(x))) if x > 0 else 0 for x in need], dtype=np.int64)
    else:
        if seq_len is None:
            raise ValueError(f"{name}: without an output range (h_obs) pass seq_len= to size the output shift")
        acc_bits = formats.widths(head_dim=d, seq_len=seq_len, v_shift=int(a.max())).acc_bits
        r = np.full(num_heads, max(0, acc_bits - out_fmt.bits), dtype=np.int64)
    if share_r:
        r = np.full(num_heads, int(r.max()), dtype=np.int64)
    s_h = eta * np.array([math.ldexp(s_w[h], int(r[h])) for h in range(num_heads)])

    # Threshold.
    lo, hi = formats.theta_range(d)
    theta = np.rint(delta / s_z)
    for h in range(num_heads):
        if theta[h] > hi:
            theta[h] = hi  # value-identical: t >= m + z_max >= z, nothing is ever inhibited
        if theta[h] < lo:
            raise ValueError(
                f"{name} head {h}: delta = {float(delta[h])!r} is {delta[h] / s_z[h]:.4g} score LSBs, below "
                f"the threshold range [{lo}, {hi}] of qk_bits={formats.qk_bits}, d={d}: every key "
                "would be inhibited far beyond any score; check the checkpoint's delta"
            )

    # Usefulness of each format after folding: the worst head of each format.
    if min_levels > 0:
        checks = [("Q/K", "qk_bits", formats.qk_bits, amax_qk, s_qk, qk_fmt.qmax),
                  ("V", "v_bits", formats.v_bits, amax_v, s_v, v_fmt.qmax)]
        if amax_h is not None:
            checks.append(("H", "out_bits", formats.out_bits, amax_h, np.abs(s_h), out_fmt.qmax))
        for what, field_name, bits, amax, scale, qmax in checks:
            levels = np.where(amax > 0, amax / scale, np.inf)
            h = int(np.argmin(levels))
            if levels[h] >= min_levels:
                continue
            shared = ("a, b, r" if share_r else "a, b") if share_ab else ""
            why = f" because the layer shares its shifts ({shared})" if shared else ""
            if _suggesting:
                raise FormatTooNarrowError(field_name)
            # Suggest the smallest width of this format that passes (other formats unchanged).
            fix = None
            for width in range(bits + 1, 33):
                try:
                    fold_layer(gamma, eta, delta, amax_q, amax_k, amax_v, amax_h,
                               dataclasses.replace(formats, **{field_name: width}), head_dim=d, seq_len=seq_len,
                               shared_shifts=shared_shifts, min_levels=min_levels, name=name,
                               _suggesting=True)
                except FormatTooNarrowError as exc:
                    if exc.field == field_name:
                        continue
                fix = width
                break
            advice = [f"use {field_name}={fix}"] if fix is not None else []
            if field_name == "out_bits" and share_r:
                advice.append("fold with shared_shifts='ab' (per-head output shifts)")
            elif field_name != "out_bits" and share_ab:
                advice.append("fold with shared_shifts=False")
            raise FormatTooNarrowError(
                f"{name} head {h}: {what} spans only {levels[h]:.2f} of the {qmax} positive codes of "
                f"{field_name}={bits}{why}; at least {min_levels:g} are needed: "
                + (" or ".join(advice) if advice else "no width up to 32 bits suffices; check the ranges"),
                field=field_name,
            )

    heads = tuple(
        HeadQuant(s_qk=float(s_qk[h]), s_v=float(s_v[h]), s_h=float(s_h[h]), theta=int(theta[h]),
                  v_shift=int(a[h]), z_shift=int(b[h]), out_shift=int(r[h]))
        for h in range(num_heads)
    )
    lq = LayerQuant(formats=formats, head_dim=d, heads=heads, name=name)
    if seq_len is not None:
        lq.widths(seq_len)
    return lq
