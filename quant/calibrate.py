"""Calibration: range observers, per-channel weight quantization, folding.

* Observers (:class:`MinMaxObserver`, :class:`PercentileObserver`,
  :class:`MSEObserver`) watch real activations (numpy arrays or CPU torch
  tensors), per tensor or per head, and report a symmetric range ``amax``
  (the float value that maps to the largest code).
* :func:`quantize_weight_per_channel` quantizes a projection weight
  (``nn.Linear`` layout ``(out, in)``) symmetrically per output channel.
* :func:`fold_layer` turns per-head ``gamma``, ``eta``, ``delta`` and the
  observed ranges of Q, K, V (and optionally of the float output H) into a
  :class:`~inhibitron.quant.formats.LayerQuant`, following the policy of
  ``docs/numerics.md`` (section "Folding policy").

numpy only; torch tensors are accepted duck-typed (``.detach().cpu().numpy()``).
"""

from __future__ import annotations

import dataclasses
import math
import numpy as np

from .formats import AttentionFormats, HeadQuant, IntFormat, LayerQuant

__all__ = [
    "FormatTooNarrowError",
    "MSEObserver",
    "MinMaxObserver",
    "Observer",
    "PercentileObserver",
    "choose_shared_exponent",
    "fold_layer",
    "observe_layer",
    "quantize_weight_per_channel",
]


class FormatTooNarrowError(ValueError):
    """A format cannot represent the calibrated data usefully (names the format, suggests a width).

    ``field`` is the offending :class:`AttentionFormats` field (``"qk_bits"``, ``"v_bits"``
    or ``"out_bits"``).
    """

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field if field is not None else message


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


# ---------------------------------------------------------------------------
# Observers
# ---------------------------------------------------------------------------


class Observer:
    """Base class: accumulates ``|x|`` statistics per group, reports ``amax``.

    Parameters
    ----------
    name : str
        Used in error messages (e.g. ``"layer 2 q"``).
    head_axis : int or None
        ``None``: one range for the whole tensor (per-tensor). An axis
        (e.g. ``-3`` for ``(B, H, n, d)``): one range per index along it
        (per-head).

    Call :meth:`update` with each batch (``mask`` optional, broadcastable to
    ``x``; for 4-D ``x`` a 2-D ``(B, n)`` token mask is expanded to
    ``(B, 1, n, 1)``); read :attr:`amax` (float64, shape ``()`` or ``(H,)``).
    """

    def __init__(self, *, name: str = "tensor", head_axis: int | None = None):
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {name!r}")
        if head_axis is not None and (isinstance(head_axis, bool) or not isinstance(head_axis, int)):
            raise TypeError(f"head_axis must be an int or None, not {head_axis!r}")
        self.name = name
        self.head_axis = head_axis
        self.num_groups: int | None = None
        self.last_dim: int | None = None  # the head dimension d of what was observed
        self.count = 0  # values observed (valid ones only)
        self._absmax: np.ndarray | None = None

    def _groups(self, x, mask) -> list[np.ndarray]:
        """Split the valid ``|x|`` values into per-group 1-D arrays."""
        arr = _to_numpy(x)
        if not np.all(np.isfinite(arr)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise ValueError(f"{self.name}: observed tensor contains NaN or Inf (first at index {bad})")
        if mask is not None:
            m = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask).astype(bool)
            if arr.ndim == 4 and m.ndim == 2:
                m = m[:, None, :, None]  # (B, n) token mask -> (B, 1, n, 1)
            try:
                m = np.broadcast_to(m, arr.shape)
            except ValueError:
                raise ValueError(
                    f"{self.name}: mask of shape {m.shape} does not broadcast to the tensor's shape {arr.shape}"
                ) from None
        else:
            m = np.ones(arr.shape, dtype=bool)
        if self.head_axis is None:
            groups = [np.abs(arr[m])]
        else:
            try:
                arr_h = np.moveaxis(arr, self.head_axis, 0)
            except np.exceptions.AxisError:
                raise ValueError(
                    f"{self.name}: head_axis={self.head_axis} is not an axis of a tensor of shape {arr.shape}"
                ) from None
            m_h = np.moveaxis(m, self.head_axis, 0)
            groups = [np.abs(arr_h[h][m_h[h]]) for h in range(arr_h.shape[0])]
        if self.num_groups is None:
            self.num_groups = len(groups)
        elif self.num_groups != len(groups):
            raise ValueError(f"{self.name}: saw {len(groups)} heads, earlier batches had {self.num_groups}")
        if arr.ndim:
            self.last_dim = int(arr.shape[-1])
        return groups

    def update(self, x, mask=None) -> "Observer":
        """Observe one batch; returns ``self``."""
        groups = self._groups(x, mask)
        amax = np.array([g.max() if g.size else 0.0 for g in groups])
        self._absmax = amax if self._absmax is None else np.maximum(self._absmax, amax)
        self.count += sum(g.size for g in groups)
        self._collect(groups)
        return self

    def _collect(self, groups: list[np.ndarray]) -> None:
        """Hook for subclasses that keep samples."""

    def _check_ready(self) -> None:
        if self._absmax is None or self.count == 0:
            raise ValueError(f"{self.name}: observer has seen no (valid) data; call update() first")

    @property
    def absmax(self) -> np.ndarray:
        """Largest ``|x|`` seen, per group."""
        self._check_ready()
        return self._absmax if self.head_axis is not None else self._absmax[0]

    @property
    def amax(self) -> np.ndarray:
        """The calibrated symmetric range (float64, ``()`` or ``(H,)``)."""
        return self.absmax


class MinMaxObserver(Observer):
    """Range = the largest ``|x|`` seen (no clipping).

    >>> obs = MinMaxObserver(head_axis=0).update(np.array([[1.0, -3.0], [0.5, 0.25]]))
    >>> obs.amax.tolist()
    [3.0, 0.5]
    """


class _SamplingObserver(Observer):
    """Keeps up to ``max_samples`` ``|x|`` values per group (deterministic subsampling)."""

    def __init__(self, *, name: str = "tensor", head_axis: int | None = None,
                 max_samples: int = 1 << 18, seed: int = 0):
        super().__init__(name=name, head_axis=head_axis)
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 16:
            raise ValueError(f"max_samples must be an integer >= 16, not {max_samples!r}")
        self.max_samples = max_samples
        self._rng = np.random.default_rng(seed)
        self._samples: list[np.ndarray] | None = None

    def _collect(self, groups):
        if self._samples is None:
            self._samples = [np.empty(0) for _ in groups]
        for h, g in enumerate(groups):
            s = np.concatenate([self._samples[h], g])
            if s.size > self.max_samples:
                s = self._rng.choice(s, self.max_samples, replace=False)
            self._samples[h] = s

    def _per_group(self, fn) -> np.ndarray:
        self._check_ready()
        out = np.array([fn(s) if s.size else 0.0 for s in self._samples])
        return out if self.head_axis is not None else out[0]


class PercentileObserver(_SamplingObserver):
    """Range = the ``percentile`` of ``|x|`` (clips rare outliers).

    Parameters
    ----------
    percentile : float
        In (0, 100]; 100 equals :class:`MinMaxObserver` (up to subsampling).
    max_samples, seed : int
        Per group, values kept (uniform deterministic subsample beyond it).

    >>> obs = PercentileObserver(percentile=50.0).update(np.arange(1.0, 102.0))
    >>> float(obs.amax)
    51.0
    """

    def __init__(self, *, percentile: float = 99.99, name: str = "tensor", head_axis: int | None = None,
                 max_samples: int = 1 << 18, seed: int = 0):
        super().__init__(name=name, head_axis=head_axis, max_samples=max_samples, seed=seed)
        percentile = float(percentile)
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], not {percentile!r}")
        self.percentile = percentile

    @property
    def amax(self) -> np.ndarray:
        return self._per_group(lambda s: float(np.percentile(s, self.percentile)))


class MSEObserver(_SamplingObserver):
    """Range minimising the mean squared quantization error of a ``bits``-wide format.

    Searches ``amax = f * max|x|`` over ``grid`` fractions ``f`` in
    ``[min_fraction, 1]`` (symmetric, ``scale = amax / qmax``, rint, saturating).

    >>> x = np.concatenate([np.linspace(-1, 1, 20001), [40.0]])   # one outlier
    >>> float(MSEObserver(bits=4).update(x).amax) < 40.0
    True
    """

    def __init__(self, *, bits: int = 8, grid: int = 64, min_fraction: float = 0.05, name: str = "tensor",
                 head_axis: int | None = None, max_samples: int = 1 << 16, seed: int = 0):
        super().__init__(name=name, head_axis=head_axis, max_samples=max_samples, seed=seed)
        self.format = IntFormat(bits)
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
            raise ValueError(f"grid must be an integer >= 2, not {grid!r}")
        if not 0.0 < float(min_fraction) < 1.0:
            raise ValueError(f"min_fraction must be in (0, 1), not {min_fraction!r}")
        self.grid = grid
        self.min_fraction = float(min_fraction)

    def _best(self, s: np.ndarray) -> float:
        top = float(s.max())
        if top == 0.0:
            return 0.0
        qmax = self.format.qmax
        best, best_err = top, math.inf
        for f in np.linspace(self.min_fraction, 1.0, self.grid):
            scale = f * top / qmax
            err = float(np.mean((np.minimum(np.rint(s / scale), qmax) * scale - s) ** 2))
            if err < best_err:
                best, best_err = f * top, err
        return best

    @property
    def amax(self) -> np.ndarray:
        return self._per_group(self._best)


# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------


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
    w = _to_numpy(weight)
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


# ---------------------------------------------------------------------------
# Folding
# ---------------------------------------------------------------------------


def _per_head_float(name: str, x, num_heads: int | None, layer: str) -> np.ndarray:
    arr = np.atleast_1d(_to_numpy(x))
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
    amax = np.atleast_1d(_to_numpy(amax))
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


def observe_layer(layer: dict, *, observer: str = "minmax", bits: AttentionFormats | None = None,
                  percentile: float = 99.99, name: str = "layer") -> tuple[Observer, Observer, Observer]:
    """Per-head observers of one captured layer (``{"q","k","v": (B,H,n,d), "mask": (B,n)}``).

    ``observer``: ``"minmax"``, ``"percentile"`` or ``"mse"`` (the MSE one
    targets the widths of ``bits``).
    """
    bits = AttentionFormats() if bits is None else bits
    obs = []
    for key, width in (("q", bits.qk_bits), ("k", bits.qk_bits), ("v", bits.v_bits)):
        o = _make_observer(observer, width, f"{name} {key}", percentile)
        o.update(layer[key], layer.get("mask"))
        obs.append(o)
    return tuple(obs)


def _make_observer(kind: str, bits: int, name: str, percentile: float) -> Observer:
    if kind == "minmax":
        return MinMaxObserver(name=name, head_axis=-3)
    if kind == "percentile":
        return PercentileObserver(percentile=percentile, name=name, head_axis=-3)
    if kind == "mse":
        return MSEObserver(bits=bits, name=name, head_axis=-3)
    raise ValueError(f"observer must be 'minmax', 'percentile' or 'mse', not {kind!r}")

