"""Range observers: per-tensor or per-head symmetric ranges of real activations.

:class:`MinMaxObserver`, :class:`PercentileObserver` and :class:`MSEObserver`
watch batches (numpy arrays or CPU torch tensors, e.g. Q/K/V shaped
``(B, H, n, d)`` with a ``(B, n)`` token mask) and report a symmetric range
``amax`` (float64, shape ``()`` per tensor or ``(H,)`` per head: the float
value that maps to the largest code). :func:`observe_layer` builds the three
observers of one captured layer.

numpy only; torch tensors are accepted duck-typed (``.detach().cpu().numpy()``).
"""

from __future__ import annotations

import math

import numpy as np

from .formats import AttentionFormats, IntFormat

__all__ = [
    "MSEObserver",
    "MinMaxObserver",
    "Observer",
    "PercentileObserver",
    "as_float64",
    "observe_layer",
]


def as_float64(x) -> np.ndarray:
    """``x`` (array_like or torch tensor, without importing torch) as a float64 numpy array."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


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
        arr = as_float64(x)
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

