"""The integer model of a quantized checkpoint, and its construction from a PyTorch student.

:class:`QuantizedLinear` is one projection with integer weights (signed
``weight_bits``, per output channel) and an int32 bias at the accumulator
scale; :class:`QuantizedLayer` is one self-attention layer (the core's
:class:`~inhibitron.quant.formats.LayerQuant` plus its Q/K/V/O projections,
with :meth:`QuantizedLayer.attention_block` the integer model of the whole
block); :class:`QuantizedCheckpoint` is the model (layers plus the plain-JSON
model and calibration descriptions). :func:`quantize_linear` and
:func:`build_checkpoint` quantize a PyTorch student into one (they import
torch; everything else is numpy).

Reading and writing them on disk is :mod:`inhibitron.quant.checkpoint`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import rounding
from .formats import IntFormat, LayerQuant
from .golden import dequantize_output, inhibitor_attention_int, quantize_inputs, valid_len_from_mask

__all__ = [
    "BIAS_BITS",
    "HEAD_TENSORS",
    "PROJECTIONS",
    "CheckpointError",
    "QuantizedCheckpoint",
    "QuantizedLayer",
    "QuantizedLinear",
    "build_checkpoint",
    "model_description",
    "quantize_linear",
]

#: Names of the projections, in manifest order.
PROJECTIONS = ("q", "k", "v", "o")
#: Width of the bias codes.
BIAS_BITS = 32
#: The per-head integers of the attention core stored as tensors (``attention.<name>``).
HEAD_TENSORS = ("theta", "v_shift", "z_shift", "out_shift")


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read; the message names the file, tensor or field."""


def _finite_scales(name: str, x, *, positive: bool = True) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    bad = ~np.isfinite(arr) | ((arr <= 0) if positive else False)
    if np.any(bad):
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        raise CheckpointError(f"{name} has the invalid scale {float(arr[i])!r} at index {i} (scales must be finite and > 0)")
    return arr


# ---------------------------------------------------------------------------
# The integer model
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class QuantizedLinear:
    """A projection ``y = x W^T + b`` with integer weights and bias.

    Parameters
    ----------
    name : str
        Label used in messages, e.g. ``"layer 0 q"``.
    weight : int ndarray (out, in)
        Signed ``weight_bits``-bit codes; ``W ~= weight_scale[:, None] * weight``.
    weight_scale : float64 ndarray (out,)
        Per-output-channel scales, > 0.
    bias : int ndarray (out,) or None
        Signed 32-bit codes at the accumulator scale
        ``input_scale * weight_scale`` (``b ~= bias * input_scale * weight_scale``).
    input_scale : float
        Scale of the input activation codes (per tensor), > 0.
    weight_bits, act_bits : int
        Widths of the weight codes and of the input activation codes.

    The integer product ``acc = x_codes @ weight.T + bias`` is exact in int64
    (``act_bits + weight_bits + log2(in) + 1 <= 63``, checked).
    """

    name: str
    weight: np.ndarray
    weight_scale: np.ndarray
    bias: np.ndarray | None
    input_scale: float
    weight_bits: int = 8
    act_bits: int = 8

    def __post_init__(self):
        wfmt = IntFormat(self.weight_bits)
        IntFormat(self.act_bits)  # validates act_bits
        w = np.asarray(self.weight)
        if w.ndim != 2:
            raise CheckpointError(f"{self.name} weight must be 2-D (out, in), got shape {w.shape}")
        wfmt.check(f"{self.name} weight", w)
        object.__setattr__(self, "weight", w.astype(wfmt.dtype, copy=False))
        scale = _finite_scales(f"{self.name} weight_scale", self.weight_scale)
        if scale.shape != (w.shape[0],):
            raise CheckpointError(
                f"{self.name} weight_scale must have one scale per output channel ({w.shape[0]}), "
                f"got shape {scale.shape}"
            )
        object.__setattr__(self, "weight_scale", scale)
        if self.bias is not None:
            b = np.asarray(self.bias)
            if b.shape != (w.shape[0],):
                raise CheckpointError(f"{self.name} bias must have shape ({w.shape[0]},), got {b.shape}")
            IntFormat(BIAS_BITS).check(f"{self.name} bias", b)
            object.__setattr__(self, "bias", b.astype(np.int32))
        s_in = float(_finite_scales(f"{self.name} input_scale", self.input_scale))
        object.__setattr__(self, "input_scale", s_in)
        acc_bits = self.act_bits + self.weight_bits + max(1, int(w.shape[1]) - 1).bit_length() + 1
        if acc_bits > 63:
            raise CheckpointError(f"{self.name}: the int64 accumulator would need {acc_bits} bits")

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def acc_scale(self) -> np.ndarray:
        """(out,) float64 scale of the accumulator: ``input_scale * weight_scale``."""
        return self.input_scale * self.weight_scale

    def quantize_input(self, x) -> np.ndarray:
        """Float activations ``(..., in)`` to ``act_bits`` codes (rint, saturating)."""
        return IntFormat(self.act_bits).quantize(x, self.input_scale)

    def forward_int(self, x_codes) -> np.ndarray:
        """Exact int64 accumulator ``x_codes @ weight.T + bias``, shape ``(..., out)``."""
        x = IntFormat(self.act_bits).check(f"{self.name} input", x_codes)
        acc = x @ self.weight.astype(np.int64).T
        if self.bias is not None:
            acc = acc + self.bias.astype(np.int64)
        return acc

    def forward(self, x) -> np.ndarray:
        """Float in, float64 out: quantize, integer product, ``acc * acc_scale``."""
        return self.forward_int(self.quantize_input(x)).astype(np.float64) * self.acc_scale


@dataclass(frozen=True, eq=False)
class QuantizedLayer:
    """One quantized self-attention layer: the core's LayerQuant and its projections.

    Parameters
    ----------
    index : int
        Layer index, bottom-up.
    attention : LayerQuant
        The inhibitor-attention core.
    projections : mapping ``{"q", "k", "v", "o"} -> QuantizedLinear``
        ``q``/``k``/``v`` map hidden states ``(.., hidden)`` to ``H * d``
        features (head-major, as Hugging Face BERT); ``o`` maps the context back.
    seq_len : int
        ``n`` of the core the record was sized for (the datapath widths).
    """

    index: int
    attention: LayerQuant
    projections: Mapping[str, QuantizedLinear]
    seq_len: int

    def __post_init__(self):
        if not isinstance(self.attention, LayerQuant):
            raise TypeError(f"attention must be a LayerQuant, not {type(self.attention).__name__}")
        missing = [p for p in PROJECTIONS if p not in self.projections]
        if missing or set(self.projections) - set(PROJECTIONS):
            raise CheckpointError(
                f"layer {self.index}: projections must be exactly {list(PROJECTIONS)}, "
                f"got {sorted(self.projections)}"
            )
        width = self.attention.num_heads * self.attention.head_dim
        for p in ("q", "k", "v"):
            if self.projections[p].out_features != width:
                raise CheckpointError(
                    f"layer {self.index} {p}: {self.projections[p].out_features} output features, "
                    f"the attention core needs num_heads * head_dim = {width}"
                )
        if self.projections["o"].in_features != width:
            raise CheckpointError(f"layer {self.index} o: {self.projections['o'].in_features} inputs, expected {width}")
        self.attention.widths(self.seq_len)

    def qkv_codes(self, hidden) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hidden states ``(B, n, hidden)`` to the core's q, k, v codes ``(B, H, n, d)``.

        Integer projections, then ``rint(acc * acc_scale / s)`` into the
        core's formats (float64 requantization, see ``docs/export.md``).
        """
        lq = self.attention
        H, d = lq.num_heads, lq.head_dim
        out = []
        for p in ("q", "k", "v"):
            y = self.projections[p].forward(hidden)  # (B, n, H*d) float64
            out.append(np.swapaxes(y.reshape(*y.shape[:-1], H, d), -2, -3))  # (B, H, n, d)
        return quantize_inputs(*out, lq)

    def attention_int(self, q, k, v, valid_len) -> np.ndarray:
        """The golden model on codes ``(..., H, n, d)``; returns output codes (int64)."""
        return inhibitor_attention_int(q, k, v, valid_len, **self.attention.golden_kwargs())

    def attention_block(self, hidden, key_mask=None) -> np.ndarray:
        """The integer model of the whole self-attention block (before residual and LayerNorm).

        Parameters
        ----------
        hidden : float array_like (B, n, hidden)
            The layer's input hidden states.
        key_mask : bool array_like (B, n), optional
            Prefix key-padding mask (default: all valid).

        Returns
        -------
        float64 ndarray (B, n, hidden): ``o(context)`` with context the
        dequantized output of the integer core.
        """
        hidden = np.asarray(hidden, dtype=np.float64)
        B, n = hidden.shape[:2]
        mask = np.ones((B, n), dtype=bool) if key_mask is None else np.asarray(key_mask)
        length = valid_len_from_mask(mask)[:, None]  # (B, 1)
        q, k, v = self.qkv_codes(hidden)
        h = dequantize_output(self.attention_int(q, k, v, length), self.attention)  # (B, H, n, d)
        context = np.swapaxes(h, -2, -3).reshape(B, n, -1)  # (B, n, H*d)
        return self.projections["o"].forward(context)

    def tensors(self) -> dict[str, np.ndarray]:
        """The integer tensors of this layer, as stored in its safetensors file."""
        out: dict[str, np.ndarray] = {}
        for p in PROJECTIONS:
            lin = self.projections[p]
            out[f"{p}.weight"] = np.ascontiguousarray(lin.weight)
            if lin.bias is not None:
                out[f"{p}.bias"] = np.ascontiguousarray(lin.bias.astype(np.int32))
        lq = self.attention
        for name in HEAD_TENSORS:
            out[f"attention.{name}"] = getattr(lq, name).astype(np.int32)
        return out


@dataclass(frozen=True, eq=False)
class QuantizedCheckpoint:
    """A quantized model: per-layer records plus its configuration.

    Parameters
    ----------
    layers : sequence of QuantizedLayer
        Bottom-up; ``layers[i].index == i``.
    model : dict
        Plain-JSON model description (``model_type``, ``num_layers``,
        ``num_heads``, ``head_dim``, ``hidden_size``, ``variant`` and the
        Hugging Face ``config``).
    calibration : dict
        Plain-JSON notes of how it was calibrated (free form).
    manifest : dict
        The manifest as read (empty before writing).
    path : Path or None
        Directory it was read from.
    """

    layers: tuple[QuantizedLayer, ...]
    model: Mapping[str, Any]
    calibration: Mapping[str, Any] = field(default_factory=dict)
    manifest: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self):
        layers = tuple(self.layers)
        if not layers:
            raise CheckpointError("a checkpoint needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, QuantizedLayer):
                raise TypeError(f"layers[{i}] must be a QuantizedLayer, not {type(layer).__name__}")
            if layer.index != i:
                raise CheckpointError(f"layers[{i}] has index {layer.index}; layers must be in order 0..")
        object.__setattr__(self, "layers", layers)

    @property
    def layer_quants(self) -> list[LayerQuant]:
        """The attention records, bottom-up."""
        return [layer.attention for layer in self.layers]


# ---------------------------------------------------------------------------
# From a PyTorch student
# ---------------------------------------------------------------------------


def _projection_modules(model):
    """Per layer: ``{"q", "k", "v", "o"} -> nn.Linear`` of a BERT/DistilBERT (student or teacher)."""
    from inhibitron.model.surgery import attention_modules

    out = []
    for parent, _, mod in attention_modules(model):
        if hasattr(mod, "query"):  # BERT: the output projection is BertSelfOutput.dense
            out.append({"q": mod.query, "k": mod.key, "v": mod.value, "o": parent.output.dense})
        else:  # DistilBERT
            out.append({"q": mod.q_lin, "k": mod.k_lin, "v": mod.v_lin, "o": mod.out_lin})
    return out


def quantize_linear(linear, *, name: str, input_scale: float, weight_bits: int = 8,
                    act_bits: int = 8) -> QuantizedLinear:
    """Quantize an ``nn.Linear`` per output channel, its bias at the accumulator scale.

    Raises
    ------
    ValueError
        NaN/Inf in the weight or bias (naming ``name``), or a bias that does
        not fit 32 bits at the accumulator scale.
    """
    from .calibrate import quantize_weight_per_channel

    codes, scales = quantize_weight_per_channel(linear.weight, bits=weight_bits, axis=0, name=f"{name}.weight")
    bias = None
    if linear.bias is not None:
        b = linear.bias.detach().cpu().double().numpy()
        if not np.all(np.isfinite(b)):
            i = int(np.argwhere(~np.isfinite(b))[0, 0])
            raise CheckpointError(f"{name}.bias contains NaN or Inf (first at index ({i},)); refusing to quantize it")
        acc_scale = float(input_scale) * scales
        bias = rounding.round_half_even(b / acc_scale)  # rint, range-checked below
        fmt = IntFormat(BIAS_BITS)
        if np.any((bias < fmt.qmin) | (bias > fmt.qmax)):
            i = int(np.argmax((bias < fmt.qmin) | (bias > fmt.qmax)))
            raise CheckpointError(
                f"{name}.bias[{i}] = {b[i]!r} is {bias[i]:.4g} accumulator LSBs, outside {BIAS_BITS} bits: "
                f"the input scale {input_scale!r} is too small for it"
            )
        bias = bias.astype(np.int32)
    return QuantizedLinear(name=name, weight=codes, weight_scale=scales, bias=bias, input_scale=float(input_scale),
                           weight_bits=weight_bits, act_bits=act_bits)


def model_description(model) -> dict:
    """Plain-JSON description of a student for the manifest."""
    from inhibitron.model.surgery import iter_inhibitors

    inhibitors = list(iter_inhibitors(model))
    first = inhibitors[0][1]
    cfg = model.config.to_dict()
    return {
        "model_type": cfg.get("model_type"),
        "num_layers": len(inhibitors),
        "num_heads": first.num_heads,
        "head_dim": first.head_dim,
        "hidden_size": cfg.get("hidden_size", cfg.get("dim")),
        "variant": first.variant,
        "config": json.loads(json.dumps(cfg, sort_keys=True, default=str)),
    }


def build_checkpoint(
    model,
    layer_quants: Sequence[LayerQuant],
    input_scales: Sequence[float],
    context_scales: Sequence[float],
    *,
    seq_len: int,
    weight_bits: int = 8,
    act_bits: int = 8,
    calibration: Mapping[str, Any] | None = None,
) -> QuantizedCheckpoint:
    """Quantize a PyTorch student into a :class:`QuantizedCheckpoint`.

    Parameters
    ----------
    model : a student of :func:`inhibitron.model.surgery.to_inhibitor`
    layer_quants : one LayerQuant per layer (from calibration or QAT)
    input_scales : per layer, the scale of the hidden-state codes entering Q/K/V
    context_scales : per layer, the scale of the context codes entering O
    seq_len : int
        ``n`` of the core (datapath widths).
    weight_bits, act_bits : int
        Widths of the projection weights and of their input activations.
    calibration : dict, optional
        Notes written to the manifest.

    Raises
    ------
    ValueError
        NaN/Inf in a weight (naming the parameter), mismatched lengths.
    """
    mods = _projection_modules(model)
    n = len(mods)
    for what, seq in (("layer_quants", layer_quants), ("input_scales", input_scales),
                      ("context_scales", context_scales)):
        if len(seq) != n:
            raise ValueError(f"{what} has {len(seq)} entries, the model has {n} layers")
    names = {id(m): name for name, m in model.named_modules()}
    layers = []
    for i, (proj, lq) in enumerate(zip(mods, layer_quants)):
        qlin = {}
        for p, lin in proj.items():
            s_in = context_scales[i] if p == "o" else input_scales[i]
            qlin[p] = quantize_linear(lin, name=names.get(id(lin), f"layer {i} {p}"), input_scale=s_in,
                                      weight_bits=weight_bits, act_bits=act_bits)
        layers.append(QuantizedLayer(index=i, attention=lq, projections=qlin, seq_len=seq_len))
    return QuantizedCheckpoint(layers=tuple(layers), model=model_description(model),
                               calibration=dict(calibration or {}))
