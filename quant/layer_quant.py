"""The quantization record of an inhibitor-attention layer: folded constants per head.

One job: the typed, validated, serializable record that export writes and
the golden model, the hardware configuration and the report read:

* :class:`HeadQuant` -- the folded constants of one head: scales ``s_qk``,
  ``s_v``, ``s_h`` (floats, the float meaning of the codes) and the integers
  the hardware sees (``theta``, ``v_shift`` a, ``z_shift`` b, ``out_shift`` r).
* :class:`LayerQuant` -- one attention layer: formats, head dimension and one
  :class:`HeadQuant` per head; serializable with :meth:`LayerQuant.to_dict` /
  :meth:`LayerQuant.from_dict` (plain JSON types, no pickles).

Float meaning of one head (``docs/numerics.md``, section "Scales")::

    Q = s_qk * q,  K = s_qk * k,  V = s_v * v,  H ~= s_h * h
    s_z = gamma * s_qk / sqrt(d)               score LSB (gamma/sqrt(d) folded)
    s_w = s_v * 2**-a = s_z * 2**-b            working unit of the mixing stage
    s_h = eta * s_w * 2**r                     output LSB (eta folded, may be < 0)
    theta = round(delta / s_z)                 threshold in score LSBs

The record stores the independent quantities (``s_qk``, ``s_v``, ``s_h``,
``theta`` and the shifts) and *derives* ``s_z``, ``s_w`` and the folded
``gamma``/``eta``/``delta``, so it cannot be internally inconsistent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .formats import (
    MAX_DATAPATH_BITS,
    AttentionFormats,
    DatapathWidths,
    _check_float,
    _check_int,
    _check_keys,
)

__all__ = ["LAYER_QUANT_VERSION", "HeadQuant", "LayerQuant"]

#: Version of :meth:`LayerQuant.to_dict`'s layout (bump on incompatible change).
LAYER_QUANT_VERSION = 1


_HEAD_KEYS = ("s_qk", "s_v", "s_h", "theta", "v_shift", "z_shift", "out_shift")


@dataclass(frozen=True)
class HeadQuant:
    """Folded quantization constants of one attention head.

    Parameters
    ----------
    s_qk : float
        Scale of the ``q`` and ``k`` codes (``Q = s_qk * q``), > 0.
    s_v : float
        Scale of the ``v`` codes (``V = s_v * v``), > 0.
    s_h : float
        Scale of the output codes (``H ~= s_h * h``), nonzero; carries the sign
        of ``eta``: ``s_h = eta * s_w * 2**out_shift``.
    theta : int
        Integer threshold in score LSBs: ``theta = round(delta / s_z)``.
    v_shift : int
        ``a >= 0``: ``v`` is shifted left by ``a`` in the mixing stage.
    z_shift : int
        ``b >= 0``: ``zb`` is shifted left by ``b``. At most one of ``a``,
        ``b`` is nonzero.
    out_shift : int
        ``r >= 0``: the accumulator is rounded (half up) right by ``r``.

    Derived members (see :class:`LayerQuant` for those that need ``d``):
    ``s_w = s_v * 2**-a`` (working unit), ``s_z = s_w * 2**b`` (score LSB),
    ``eta = s_h / (s_w * 2**r)``, ``delta = theta * s_z`` (the folded delta).
    """

    s_qk: float
    s_v: float
    s_h: float
    theta: int
    v_shift: int = 0
    z_shift: int = 0
    out_shift: int = 0

    def __post_init__(self):
        object.__setattr__(self, "s_qk", _check_float("s_qk", self.s_qk, positive=True))
        object.__setattr__(self, "s_v", _check_float("s_v", self.s_v, positive=True))
        object.__setattr__(self, "s_h", _check_float("s_h", self.s_h, nonzero=True))
        object.__setattr__(self, "theta", _check_int("theta", self.theta))
        for name in ("v_shift", "z_shift", "out_shift"):
            object.__setattr__(self, name, _check_int(name, getattr(self, name), minimum=0,
                                                      maximum=MAX_DATAPATH_BITS))
        if self.v_shift and self.z_shift:
            raise ValueError(
                f"at most one of v_shift and z_shift may be nonzero (the V/Z scale ratio is "
                f"2**(z_shift - v_shift)), got v_shift={self.v_shift}, z_shift={self.z_shift}"
            )

    @property
    def s_w(self) -> float:
        """Working unit of the mixing stage: ``s_v * 2**-v_shift``."""
        return math.ldexp(self.s_v, -self.v_shift)

    @property
    def s_z(self) -> float:
        """Score LSB: ``s_w * 2**z_shift`` (= ``gamma * s_qk / sqrt(d)``)."""
        return math.ldexp(self.s_w, self.z_shift)

    @property
    def eta(self) -> float:
        """Folded output scale: ``s_h / (s_w * 2**out_shift)``."""
        return self.s_h / math.ldexp(self.s_w, self.out_shift)

    @property
    def delta(self) -> float:
        """Folded threshold shift: ``theta * s_z`` (the delta the integers implement)."""
        return self.theta * self.s_z

    def gamma(self, head_dim: int) -> float:
        """Folded score scale: ``s_z * sqrt(d) / s_qk``."""
        head_dim = _check_int("head_dim", head_dim, minimum=1)
        return self.s_z * math.sqrt(head_dim) / self.s_qk

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (floats are written exactly by ``json``'s ``repr``)."""
        return {k: getattr(self, k) for k in _HEAD_KEYS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "HeadQuant":
        """Inverse of :meth:`to_dict`; unknown or missing keys are errors."""
        _check_keys("HeadQuant", data, set(_HEAD_KEYS))
        return cls(**{k: data[k] for k in _HEAD_KEYS})


@dataclass(frozen=True)
class LayerQuant:
    """Quantization record of one inhibitor-attention layer.

    The single source of truth that calibration produces
    (:func:`inhibitron.quant.calibrate.fold_layer`), the golden model consumes
    and the exporters serialize.

    Parameters
    ----------
    formats : AttentionFormats
        ``qk_bits``, ``v_bits``, ``out_bits``.
    head_dim : int
        ``d`` (also the value dimension ``d_v``).
    heads : sequence of HeadQuant
        One per head, in head order; converted to a tuple.
    name : str
        Free-form label used in error messages (e.g. ``"layer 3"``).

    Each head's ``theta`` must lie in ``formats.theta_range(head_dim)``.

    Members
    -------
    num_heads : int
    shared_shifts : tuple[int, int, int] or None
        ``(a, b, r)`` when every head uses the same shifts (then one generated
        core with constant shifts serves the layer), else ``None``.
    theta, v_shift, z_shift, out_shift : (num_heads,) int64 arrays
        Per-head integers, ready for
        :func:`inhibitron.quant.golden.inhibitor_attention_int`.
    s_qk, s_v, s_h, s_z, s_w, gamma, eta, delta : (num_heads,) float64 arrays
    """

    formats: AttentionFormats
    head_dim: int
    heads: tuple[HeadQuant, ...]
    name: str = field(default="layer")

    def __post_init__(self):
        if not isinstance(self.formats, AttentionFormats):
            raise TypeError(f"formats must be an AttentionFormats, not {self.formats!r}")
        object.__setattr__(self, "head_dim", _check_int("head_dim", self.head_dim, minimum=1))
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, not {self.name!r}")
        heads = tuple(self.heads) if isinstance(self.heads, Sequence) else self.heads
        if not isinstance(heads, tuple) or not heads:
            raise ValueError(f"{self.name}: heads must be a non-empty sequence of HeadQuant")
        lo, hi = self.formats.theta_range(self.head_dim)
        for h, head in enumerate(heads):
            if not isinstance(head, HeadQuant):
                raise TypeError(f"{self.name}: heads[{h}] must be a HeadQuant, not {head!r}")
            if not lo <= head.theta <= hi:
                raise ValueError(
                    f"{self.name} head {h}: theta={head.theta} is outside the threshold range "
                    f"[{lo}, {hi}] of qk_bits={self.formats.qk_bits}, d={self.head_dim}"
                )
        object.__setattr__(self, "heads", heads)

    @property
    def num_heads(self) -> int:
        """Number of heads."""
        return len(self.heads)

    @property
    def shared_shifts(self) -> tuple[int, int, int] | None:
        """``(a, b, r)`` if all heads share them, else ``None``."""
        shifts = {(h.v_shift, h.z_shift, h.out_shift) for h in self.heads}
        return shifts.pop() if len(shifts) == 1 else None

    def _ints(self, name: str) -> np.ndarray:
        return np.array([getattr(h, name) for h in self.heads], dtype=np.int64)

    def _floats(self, name: str) -> np.ndarray:
        return np.array([getattr(h, name) for h in self.heads], dtype=np.float64)

    @property
    def theta(self) -> np.ndarray:
        """(num_heads,) int64 thresholds."""
        return self._ints("theta")

    @property
    def v_shift(self) -> np.ndarray:
        """(num_heads,) int64 ``a``."""
        return self._ints("v_shift")

    @property
    def z_shift(self) -> np.ndarray:
        """(num_heads,) int64 ``b``."""
        return self._ints("z_shift")

    @property
    def out_shift(self) -> np.ndarray:
        """(num_heads,) int64 ``r``."""
        return self._ints("out_shift")

    @property
    def s_qk(self) -> np.ndarray:
        """(num_heads,) Q/K scales."""
        return self._floats("s_qk")

    @property
    def s_v(self) -> np.ndarray:
        """(num_heads,) V scales."""
        return self._floats("s_v")

    @property
    def s_h(self) -> np.ndarray:
        """(num_heads,) output scales (signed)."""
        return self._floats("s_h")

    @property
    def s_z(self) -> np.ndarray:
        """(num_heads,) score LSBs."""
        return self._floats("s_z")

    @property
    def s_w(self) -> np.ndarray:
        """(num_heads,) working units."""
        return self._floats("s_w")

    @property
    def gamma(self) -> np.ndarray:
        """(num_heads,) folded gamma ``s_z * sqrt(d) / s_qk``."""
        return np.array([h.gamma(self.head_dim) for h in self.heads], dtype=np.float64)

    @property
    def eta(self) -> np.ndarray:
        """(num_heads,) folded eta."""
        return self._floats("eta")

    @property
    def delta(self) -> np.ndarray:
        """(num_heads,) folded delta ``theta * s_z``."""
        return self._floats("delta")

    def widths(self, seq_len: int, *, extra_out_shift: int = 0) -> DatapathWidths:
        """Datapath widths of a core of ``seq_len`` keys serving every head of this layer.

        ``extra_out_shift`` is added to the largest output shift (length
        normalisation adds up to ``round(log2 seq_len)`` per sequence).
        """
        return self.formats.widths(
            head_dim=self.head_dim, seq_len=seq_len, v_shift=int(self.v_shift.max()),
            z_shift=int(self.z_shift.max()), out_shift=int(self.out_shift.max()) + extra_out_shift,
        )

    def golden_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`inhibitron.quant.golden.inhibitor_attention_int`
        for ``(..., num_heads, n, d)`` inputs (per-head arrays of shape ``(num_heads,)``)."""
        return dict(
            theta=self.theta, v_shift=self.v_shift, z_shift=self.z_shift, out_shift=self.out_shift,
            qk_bits=self.formats.qk_bits, v_bits=self.formats.v_bits, out_bits=self.formats.out_bits,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: ``{"version", "name", "formats", "head_dim", "heads": [...]}``."""
        return {
            "version": LAYER_QUANT_VERSION,
            "name": self.name,
            "formats": self.formats.to_dict(),
            "head_dim": self.head_dim,
            "heads": [h.to_dict() for h in self.heads],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LayerQuant":
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        ValueError
            Unknown ``version``, missing/unknown keys, invalid values (the
            message names the field).
        """
        _check_keys("LayerQuant", data, {"version", "name", "formats", "head_dim", "heads"})
        if data["version"] != LAYER_QUANT_VERSION:
            raise ValueError(
                f"LayerQuant: unknown version {data['version']!r} (this code reads version "
                f"{LAYER_QUANT_VERSION})"
            )
        heads = data["heads"]
        if not isinstance(heads, (list, tuple)):
            raise TypeError(f"LayerQuant: heads must be a list, not {type(heads).__name__}")
        return cls(
            formats=AttentionFormats.from_dict(data["formats"]),
            head_dim=data["head_dim"],
            heads=tuple(HeadQuant.from_dict(h) for h in heads),
            name=data["name"],
        )
