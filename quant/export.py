"""The quantized checkpoint: a directory with a JSON manifest and integer tensors.

Layout (``docs/export.md`` describes every field)::

    <out>/manifest.json          format_version, model config, per layer and head:
                                 formats, scales, shifts, thresholds; per-channel
                                 weight scales; SHA-256 of every other file
    <out>/layer_00.safetensors   integer tensors of layer 0 (int8/int16/int32)
    <out>/mem/layer_00/*.hex     $readmemh images of those tensors (optional)
    <out>/onnx/*.onnx            extra files (the exporter's ONNX graphs), hashed too

Per layer, the safetensors file holds the Q/K/V/O projection weights
(``q.weight`` ... ``(out, in)``, signed ``weight_bits``, per output channel),
their biases at the accumulator scale (``q.bias``, int32:
``bias_code = rint(bias / (input_scale * weight_scale[c]))``) and the per-head
integers of the attention core (``attention.theta``, ``attention.v_shift``,
``attention.z_shift``, ``attention.out_shift``, int32).

Writing is atomic: everything goes to a temporary directory next to ``out``,
which is renamed into place at the end; an error (or a crash) at any point
leaves no ``out`` and no temporary directory behind (tested by injecting an
exception). An existing ``out`` is refused unless ``force``.

Loading verifies the manifest's own content hash, the format version, the
SHA-256 of every file (naming the file on mismatch), dtypes, shapes, code
ranges and finite scales, and rebuilds the :class:`LayerQuant` records and the
integer model (:class:`QuantizedLayer.attention_block`).

numpy + safetensors only; :func:`build_checkpoint` (from a PyTorch student)
imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .formats import IntFormat, LayerQuant
from .golden import dequantize_output, inhibitor_attention_int, quantize_inputs, valid_len_from_mask

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "CheckpointError",
    "QuantizedLinear",
    "QuantizedLayer",
    "QuantizedCheckpoint",
    "write_checkpoint",
    "load_checkpoint",
    "build_checkpoint",
    "calibrate_student",
    "check_finite_parameters",
    "export_student",
    "onnx_files",
    "quantize_linear",
    "sqnr_db",
    "canonical_json",
    "sha256_file",
]

#: Version of the checkpoint layout written by this code (bump on incompatible change).
FORMAT_VERSION = 1
#: Name of the manifest inside a checkpoint directory.
MANIFEST_NAME = "manifest.json"
#: Names of the projections, in manifest order.
PROJECTIONS = ("q", "k", "v", "o")
#: Width of the bias codes.
BIAS_BITS = 32
_HEAD_TENSORS = ("theta", "v_shift", "z_shift", "out_shift")


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read; the message names the file, tensor or field."""


def canonical_json(obj) -> str:
    """The JSON text of the manifest: sorted keys, one-space indent, ASCII, ``\\n`` at the end.

    Floats are written by ``repr`` (shortest round-trip), so every float64
    scale reads back bit-identical. NaN/Inf are refused.
    """
    return json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _content_hash(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()


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
        for name in _HEAD_TENSORS:
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
# Writing
# ---------------------------------------------------------------------------


def _layer_file(i: int) -> str:
    return f"layer_{i:02d}.safetensors"


def _layer_manifest(layer: QuantizedLayer, tensor_file: str) -> dict:
    lq = layer.attention
    projections = {}
    for p in PROJECTIONS:
        lin = layer.projections[p]
        projections[p] = {
            "weight": f"{p}.weight",
            "bias": f"{p}.bias" if lin.bias is not None else None,
            "in_features": lin.in_features,
            "out_features": lin.out_features,
            "weight_bits": lin.weight_bits,
            "weight_dtype": str(lin.weight.dtype),
            "weight_scale": [float(s) for s in lin.weight_scale],
            "act_bits": lin.act_bits,
            "input_scale": lin.input_scale,
        }
    widths = {k: int(v) for k, v in vars(lq.widths(layer.seq_len)).items()}
    return {
        "index": layer.index,
        "tensor_file": tensor_file,
        "seq_len": layer.seq_len,
        "attention": lq.to_dict(),
        "derived": {  # informational: recomputed from "attention" on load and compared
            name: [float(x) for x in getattr(lq, name)] for name in ("s_z", "s_w", "gamma", "eta", "delta")
        },
        "widths": widths,
        "head_tensors": {name: f"attention.{name}" for name in _HEAD_TENSORS},
        "projections": projections,
    }


def _memory_images(layer: QuantizedLayer, tmp: Path, tensor_file: str) -> list[dict]:
    from .memimage import write_memimage

    entries = []
    widths = layer.attention.widths(layer.seq_len)
    folder = Path("mem") / tensor_file.split(".")[0]
    for p in PROJECTIONS:
        lin = layer.projections[p]
        items = [(f"{p}.weight", lin.weight, lin.weight_bits)]
        if lin.bias is not None:
            items.append((f"{p}.bias", lin.bias, BIAS_BITS))
        for name, values, width in items:
            rel = folder / (name.replace(".", "_") + ".hex")
            entry = write_memimage(tmp / rel, values, width=width, tensor=f"{tensor_file}:{name}")
            entries.append({"path": rel.as_posix(), **entry})
    # The threshold register of each head, at the core's width (signed z_bits + 1).
    rel = folder / "attention_theta.hex"
    entry = write_memimage(tmp / rel, layer.attention.theta, width=widths.theta_bits,
                           tensor=f"{tensor_file}:attention.theta")
    entries.append({"path": rel.as_posix(), **entry})
    return entries


def write_checkpoint(
    out_dir: str | os.PathLike,
    checkpoint: QuantizedCheckpoint,
    *,
    extra_files: Mapping[str, bytes] | None = None,
    memory_images: bool = True,
    force: bool = False,
) -> Path:
    """Write a quantized checkpoint directory atomically.

    Parameters
    ----------
    out_dir : path-like
        The directory to create. Its parent is created if needed.
    checkpoint : QuantizedCheckpoint
    extra_files : mapping of relative POSIX path -> bytes, optional
        More files (e.g. ``"onnx/layer_00_float.onnx"``), listed and hashed in
        the manifest.
    memory_images : bool
        Also write ``$readmemh`` images under ``mem/``.
    force : bool
        Replace an existing ``out_dir`` (a directory) instead of refusing.

    Returns
    -------
    Path of the written directory.

    Raises
    ------
    CheckpointError
        ``out_dir`` exists and ``force`` is False (or it is a file), a bad
        extra-file path, or invalid data. Nothing is left behind on any error.
    """
    out = Path(out_dir)
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise CheckpointError(f"output path {str(out)!r} exists and is not a directory; refusing to replace it")
        if not force:
            raise CheckpointError(
                f"output directory {str(out)!r} already exists; pass --force (force=True) to replace it"
            )
    if not isinstance(checkpoint, QuantizedCheckpoint):
        raise TypeError(f"checkpoint must be a QuantizedCheckpoint, not {type(checkpoint).__name__}")
    extra_files = dict(extra_files or {})
    for rel in extra_files:
        p = Path(rel)
        if p.is_absolute() or ".." in p.parts or not p.parts or rel in (MANIFEST_NAME,) or rel.startswith("mem/"):
            raise CheckpointError(f"extra file path {rel!r} must be relative, inside the checkpoint, not reserved")
    from safetensors.numpy import save as st_save

    created = [p for p in reversed(out.absolute().parents) if not p.exists()]  # parents we create
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except BaseException:
        _remove_empty(created)
        raise
    try:
        files: dict[str, Path] = {}
        layers_json = []
        images: list[dict] = []
        for layer in checkpoint.layers:
            name = _layer_file(layer.index)
            blob = st_save(layer.tensors(), metadata={"format": "inhibitron-quantized"})
            (tmp / name).write_bytes(blob)
            files[name] = tmp / name
            layers_json.append(_layer_manifest(layer, name))
            if memory_images:
                images.extend(_memory_images(layer, tmp, name))
        for img in images:
            files[img["path"]] = tmp / img["path"]
        for rel, data in sorted(extra_files.items()):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes(data))
            files[rel] = path
        from inhibitron import __version__

        manifest = {
            "format_version": FORMAT_VERSION,
            "producer": {"name": "inhibitron", "version": __version__},
            "model": dict(checkpoint.model),
            "calibration": dict(checkpoint.calibration),
            "layers": layers_json,
            "memory_images": images,
            "files": [
                {"path": rel, "sha256": sha256_file(path), "bytes": path.stat().st_size}
                for rel, path in sorted(files.items())
            ],
        }
        try:
            manifest["manifest_sha256"] = _content_hash(manifest)
            text = canonical_json(manifest)
        except ValueError as exc:  # NaN/Inf somewhere in the model description
            raise CheckpointError(f"the manifest cannot be written as JSON: {exc}") from None
        (tmp / MANIFEST_NAME).write_text(text, encoding="ascii")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "replaced")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise
    return out


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders this call created (deepest first) if they are still empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            break


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _get(d: Mapping, key: str, where: str, types=None):
    if not isinstance(d, Mapping) or key not in d:
        raise CheckpointError(f"{where}: missing field {key!r}")
    value = d[key]
    if types is not None and not isinstance(value, types):
        raise CheckpointError(f"{where}: field {key!r} has the wrong type {type(value).__name__}")
    return value


def load_checkpoint(path: str | os.PathLike, *, verify: bool = True) -> QuantizedCheckpoint:
    """Read and verify a checkpoint directory written by :func:`write_checkpoint`.

    Parameters
    ----------
    path : path-like
        The checkpoint directory (or its ``manifest.json``).
    verify : bool
        Check the SHA-256 of every listed file (default; only turn off for
        checkpoints you have just verified).

    Returns
    -------
    QuantizedCheckpoint
        With the LayerQuant records, the integer projections and the manifest.

    Raises
    ------
    CheckpointError
        Missing directory or manifest, invalid JSON, an unknown
        ``format_version``, a manifest whose content hash does not match, a
        missing file or one whose SHA-256 differs (naming the file), a tensor
        missing or of the wrong dtype/shape, codes outside their format,
        non-finite scales, or integers that disagree with the manifest.
    """
    root = Path(path)
    if root.name == MANIFEST_NAME and root.is_file():
        root = root.parent
    if not root.is_dir():
        raise CheckpointError(f"checkpoint directory {str(root)!r} does not exist")
    mpath = root / MANIFEST_NAME
    if not mpath.is_file():
        raise CheckpointError(f"{str(root)!r} is not a quantized checkpoint: it has no {MANIFEST_NAME}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{mpath} is not valid JSON ({exc}); the manifest is corrupted") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{mpath}: the manifest must be a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{mpath}: unknown format_version {version!r}; this inhibitron reads format_version "
            f"{FORMAT_VERSION} (a newer inhibitron may have written it)"
        )
    recorded = manifest.get("manifest_sha256")
    if recorded != _content_hash(manifest):
        raise CheckpointError(
            f"{mpath}: content hash mismatch (manifest_sha256 {recorded!r}): the manifest was "
            "modified or corrupted after it was written"
        )
    listed = {}
    for entry in _get(manifest, "files", str(mpath), list):
        rel = _get(entry, "path", f"{mpath} files", str)
        p = Path(rel)
        if p.is_absolute() or ".." in p.parts:
            raise CheckpointError(f"{mpath}: file path {rel!r} points outside the checkpoint")
        listed[rel] = entry
        fpath = root / rel
        if not fpath.is_file():
            raise CheckpointError(f"checkpoint file {rel!r} listed in the manifest is missing from {str(root)!r}")
        if verify:
            digest = sha256_file(fpath)
            if digest != entry.get("sha256"):
                raise CheckpointError(
                    f"checkpoint file {rel!r}: SHA-256 mismatch (manifest {entry.get('sha256')!r}, "
                    f"file {digest!r}); the file is corrupted or was modified"
                )

    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    layers = []
    for i, lj in enumerate(_get(manifest, "layers", str(mpath), list)):
        where = f"{mpath} layer {i}"
        index = _get(lj, "index", where, int)
        tfile = _get(lj, "tensor_file", where, str)
        if tfile not in listed:
            raise CheckpointError(f"{where}: tensor file {tfile!r} is not listed (and hashed) in 'files'")
        try:
            tensors = load_file(str(root / tfile))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"tensor file {tfile!r} cannot be read: {exc}") from None
        try:
            lq = LayerQuant.from_dict(_get(lj, "attention", where, dict))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: invalid attention record: {exc}") from None

        def tensor(name: str, dtype=None, shape=None, *, _t=tensors, _f=tfile):
            if name not in _t:
                raise CheckpointError(f"tensor {name!r} is missing from {_f!r}")
            arr = _t[name]
            if dtype is not None and arr.dtype != np.dtype(dtype):
                raise CheckpointError(f"tensor {name!r} in {_f!r} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
            if shape is not None and tuple(arr.shape) != tuple(shape):
                raise CheckpointError(f"tensor {name!r} in {_f!r} has shape {arr.shape}, expected {tuple(shape)}")
            return arr

        for name in _HEAD_TENSORS:
            ref = _get(_get(lj, "head_tensors", where, dict), name, where, str)
            arr = tensor(ref, np.int32, (lq.num_heads,))
            if not np.array_equal(arr.astype(np.int64), getattr(lq, name)):
                raise CheckpointError(
                    f"tensor {ref!r} in {tfile!r} disagrees with the manifest's {name} "
                    f"({arr.tolist()} vs {getattr(lq, name).tolist()})"
                )
        derived = _get(lj, "derived", where, dict)
        for name, values in derived.items():
            if not hasattr(lq, name) or list(map(float, getattr(lq, name))) != values:
                raise CheckpointError(f"{where}: derived {name!r} disagrees with the attention record")
        projections = {}
        pj_all = _get(lj, "projections", where, dict)
        for p in PROJECTIONS:
            pw = f"{where} projection {p}"
            pj = _get(pj_all, p, pw, dict)
            out_f, in_f = _get(pj, "out_features", pw, int), _get(pj, "in_features", pw, int)
            wbits = _get(pj, "weight_bits", pw, int)
            try:
                wdtype = IntFormat(wbits).dtype
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{pw}: {exc}") from None
            weight = tensor(_get(pj, "weight", pw, str), wdtype, (out_f, in_f))
            bname = pj.get("bias")
            bias = tensor(bname, np.int32, (out_f,)) if bname is not None else None
            scale = _get(pj, "weight_scale", pw, list)
            try:
                projections[p] = QuantizedLinear(
                    name=f"layer {index} {p}", weight=weight,
                    weight_scale=np.array(scale, dtype=np.float64), bias=bias,
                    input_scale=_get(pj, "input_scale", pw, (int, float)), weight_bits=wbits,
                    act_bits=_get(pj, "act_bits", pw, int),
                )
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{pw} ({tfile}): {exc}") from None
        try:
            layers.append(QuantizedLayer(index=index, attention=lq, projections=projections,
                                         seq_len=_get(lj, "seq_len", where, int)))
        except ValueError as exc:
            raise CheckpointError(f"{where}: {exc}") from None
    try:
        return QuantizedCheckpoint(
            layers=tuple(layers), model=_get(manifest, "model", str(mpath), dict),
            calibration=manifest.get("calibration", {}), manifest=manifest, path=root,
        )
    except ValueError as exc:
        raise CheckpointError(f"{mpath}: {exc}") from None


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
        bias = np.rint(b / acc_scale)
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


def check_finite_parameters(model) -> None:
    """Raise ``ValueError`` naming the first parameter (and index) with NaN or Inf."""
    import torch

    for name, param in model.named_parameters():
        bad = ~torch.isfinite(param.detach())
        if bool(bad.any()):
            idx = tuple(int(i) for i in torch.nonzero(bad)[0])
            raise ValueError(
                f"parameter {name} contains NaN or Inf (first at index {idx}); refusing to quantize "
                "and export a broken model"
            )


def sqnr_db(reference, approx) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(sum ref^2 / sum (ref - approx)^2)`` in dB."""
    ref = np.asarray(reference, dtype=np.float64)
    err = ref - np.asarray(approx, dtype=np.float64)
    noise = float(np.sum(err * err))
    signal = float(np.sum(ref * ref))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def calibrate_student(
    model,
    input_ids,
    attention_mask,
    *,
    formats=None,
    seq_len: int = 128,
    act_bits: int = 8,
    observer: str = "minmax",
    shared_shifts: bool | str = "ab",
    progress: bool = False,
) -> dict:
    """Calibrate every layer of a student on real inputs (one forward pass).

    Records, per layer, the Q/K/V of the attention core, its float output H,
    the hidden states entering Q/K/V and the context entering O (valid tokens
    only); folds each layer with :func:`inhibitron.quant.calibrate.fold_layer`
    (a :class:`~inhibitron.quant.qat.QATInhibitorAttention` keeps its own
    record: what it trained with is what is exported); measures the SQNR of
    the golden model against the float H.

    Parameters
    ----------
    model : student (``to_inhibitor``), possibly with QAT layers
    input_ids : LongTensor (B, n)
    attention_mask : Tensor (B, n), 1 for real tokens (right padding)
    formats : AttentionFormats, default 8/8/8
    seq_len : int
        ``n`` of the core the records are sized for.
    act_bits : int
        Width of the projection input activations.
    observer : {"minmax", "percentile", "mse"}
        Range observer of Q, K, V.
    shared_shifts : "ab", True or False
        Shift policy of :func:`~inhibitron.quant.calibrate.fold_layer`: per-head
        ``r`` with ``a``/``b`` shared (default: one generated core serves the
        layer), one ``(a, b, r)`` per layer, or all per head.
    progress : bool
        Show a tqdm bar over layers.

    Returns
    -------
    dict with ``layer_quants``, ``input_scales``, ``context_scales`` (lists,
    one per layer) and ``sqnr_db`` (float per layer, golden vs float H).

    Raises
    ------
    FormatTooNarrowError
        A format is too narrow for the data (names it, suggests a width).
    """
    import torch
    from tqdm.auto import tqdm

    from inhibitron.model.capture import capture_qkv
    from inhibitron.model.surgery import attention_modules, iter_inhibitors

    from .calibrate import MinMaxObserver, fold_layer, observe_layer
    from .formats import AttentionFormats
    from .golden import golden_from_float
    from .qat import QATInhibitorAttention

    formats = AttentionFormats() if formats is None else formats
    if input_ids.shape[1] > seq_len:
        raise ValueError(f"calibration inputs have {input_ids.shape[1]} tokens, more than seq_len={seq_len}")
    act_qmax = IntFormat(act_bits).qmax
    inhibitors = [m for _, m in iter_inhibitors(model)]
    records: list[dict] = [{} for _ in inhibitors]
    handles = []
    for i, ((_, _, mod), inhib) in enumerate(zip(attention_modules(model), inhibitors)):
        def pre(_m, args, kwargs, i=i):
            x = args[0] if args else kwargs["hidden_states"]
            records[i]["hidden"] = x.detach()

        def post(_m, _inp, out, i=i):
            records[i]["h"] = out.detach()

        handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(inhib.register_forward_hook(post))
    try:
        captured = capture_qkv(model, input_ids, attention_mask)
    finally:
        for h in handles:
            h.remove()

    mask = attention_mask.bool()
    mask_np = mask.cpu().numpy()
    length = valid_len_from_mask(mask_np)[:, None]  # (B, 1)
    out = {"layer_quants": [], "input_scales": [], "context_scales": [], "sqnr_db": []}
    bar = tqdm(list(enumerate(zip(captured, inhibitors, records))), desc="calibrating", unit="layer",
               disable=not progress)
    for i, (layer, inhib, rec) in bar:
        name = f"layer {i}"
        if isinstance(inhib, QATInhibitorAttention):
            lq = inhib.current_layer_quant()
        else:
            q_obs, k_obs, v_obs = observe_layer(layer, observer=observer, bits=formats, name=name)
            h_obs = MinMaxObserver(name=f"{name} h", head_axis=-3).update(rec["h"], mask)
            with torch.no_grad():
                lq = fold_layer(inhib.gamma, inhib.eta, inhib.effective_delta(), q_obs, k_obs, v_obs, h_obs,
                                formats, head_dim=inhib.head_dim, seq_len=seq_len,
                                shared_shifts=shared_shifts, name=name)
        hid = rec["hidden"].double().cpu().numpy()[mask_np]  # (tokens, hidden)
        hq = rec["h"].double().cpu().numpy()  # (B, H, n, d)
        ctx = np.swapaxes(hq, 1, 2)[mask_np]  # (tokens, H, d)
        for what, arr in (("hidden states", hid), ("context", ctx)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name}: the {what} contain NaN or Inf; the model's weights are broken")
        s_in = float(np.abs(hid).max()) / act_qmax or 1.0
        s_ctx = float(np.abs(ctx).max()) / act_qmax or 1.0
        gold = golden_from_float(layer["q"], layer["k"], layer["v"], length, lq)  # (B, H, n, d)
        qmask = mask_np[:, None, :, None]
        sq = sqnr_db(np.where(qmask, hq, 0.0), np.where(qmask, gold, 0.0))
        out["layer_quants"].append(lq)
        out["input_scales"].append(s_in)
        out["context_scales"].append(s_ctx)
        out["sqnr_db"].append(sq)
    return out


def onnx_files(model, layer_quants: Sequence[LayerQuant]) -> tuple[dict[str, bytes], list[str]]:
    """ONNX graphs of every layer: ``onnx/layer_XX_float.onnx`` and ``..._qdq.onnx``.

    Returns ``(files, notes)``; a QDQ graph is skipped (with a note) when a
    format is wider than QuantizeLinear supports.
    """
    from inhibitron.model.surgery import iter_inhibitors

    from .onnx_export import check_model, float_graph, qdq_graph

    files, notes = {}, []
    for (i, inhib), lq in zip(iter_inhibitors(model), layer_quants):
        fg = float_graph(inhib, name=f"layer_{i:02d}_float")
        check_model(fg)
        files[f"onnx/layer_{i:02d}_float.onnx"] = fg.SerializeToString(deterministic=True)
        try:
            qg = qdq_graph(lq, name=f"layer_{i:02d}_qdq")
        except ValueError as exc:
            notes.append(f"layer {i}: no QDQ graph: {exc}")
            continue
        check_model(qg)
        files[f"onnx/layer_{i:02d}_qdq.onnx"] = qg.SerializeToString(deterministic=True)
    return files, notes


def export_student(
    model,
    out_dir: str | os.PathLike,
    *,
    input_ids,
    attention_mask,
    formats=None,
    weight_bits: int = 8,
    act_bits: int = 8,
    seq_len: int = 128,
    observer: str = "minmax",
    shared_shifts: bool | str = "ab",
    onnx: bool = True,
    memory_images: bool = True,
    force: bool = False,
    calibration_notes: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> tuple[Path, dict]:
    """Calibrate a student on real inputs and write its quantized checkpoint.

    Returns
    -------
    (path, report) : the checkpoint directory and the calibration result of
    :func:`calibrate_student` (plus ``notes``).

    Raises
    ------
    CheckpointError
        ``out_dir`` exists without ``force`` (checked before any work).
    ValueError
        NaN/Inf in a parameter (named, checked before any work).
    FormatTooNarrowError, ValueError
        See :func:`calibrate_student`, :func:`build_checkpoint`.
    """
    out = Path(out_dir)
    if out.exists() and not force:
        raise CheckpointError(f"output directory {str(out)!r} already exists; pass --force (force=True) to replace it")
    check_finite_parameters(model)
    cal = calibrate_student(model, input_ids, attention_mask, formats=formats, seq_len=seq_len, act_bits=act_bits,
                            observer=observer, shared_shifts=shared_shifts, progress=progress)
    notes: list[str] = []
    extra: dict[str, bytes] = {}
    if onnx:
        extra, notes = onnx_files(model, cal["layer_quants"])
    calibration = {
        "observer": observer,
        "shared_shifts": shared_shifts,
        "sequences": int(input_ids.shape[0]),
        "tokens": int(attention_mask.sum()),
        "padded_length": int(input_ids.shape[1]),
        "sqnr_db": [None if not math.isfinite(x) else round(x, 4) for x in cal["sqnr_db"]],
        "notes": notes,
        **dict(calibration_notes or {}),
    }
    ckpt = build_checkpoint(model, cal["layer_quants"], cal["input_scales"], cal["context_scales"], seq_len=seq_len,
                            weight_bits=weight_bits, act_bits=act_bits, calibration=calibration)
    path = write_checkpoint(out, ckpt, extra_files=extra, memory_images=memory_images, force=force)
    cal["notes"] = notes
    return path, cal
