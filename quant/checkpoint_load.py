"""Loading a quantized checkpoint: every check, then the integer model.

:func:`load_checkpoint` verifies the manifest's own content hash, the
format version, the SHA-256 of every file (naming the file on mismatch),
dtypes, shapes, code ranges and finite scales, cross-checks each layer's
claimed formats (:func:`check_layer_formats`), and rebuilds the
:class:`~inhibitron.quant.layer_quant.LayerQuant` records and the
:class:`~inhibitron.quant.projection.QuantizedCheckpoint`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint_format import FORMAT_VERSION, MANIFEST_NAME, content_hash, sha256_file
from .formats import IntFormat
from .layer_quant import LayerQuant
from .projection import (
    HEAD_TENSORS,
    PROJECTIONS,
    CheckpointError,
    QuantizedCheckpoint,
    QuantizedLayer,
    QuantizedLinear,
)

__all__ = ["check_layer_formats", "load_checkpoint"]


def _get(d: Mapping, key: str, where: str, types=None):
    if not isinstance(d, Mapping) or key not in d:
        raise CheckpointError(f"{where}: missing field {key!r}")
    value = d[key]
    if types is not None and not isinstance(value, types):
        raise CheckpointError(f"{where}: field {key!r} has the wrong type {type(value).__name__}")
    return value


def check_layer_formats(lq: LayerQuant, seq_len: int, widths: Mapping[str, Any], where: str) -> None:
    """Cross-check a layer's claimed formats with the rest of its manifest entry.

    The content hash only proves that the manifest is the one that was
    written *or re-hashed*; a manifest edited to claim other formats (and
    re-hashed) must still be refused. Two checks: the stored datapath
    ``widths`` must equal those recomputed from ``formats`` (they were
    written from the formats the checkpoint was calibrated for), and each
    head's integers must lie in the ranges of the claimed formats (``theta``
    is checked by :class:`LayerQuant`; ``out_shift`` ``r`` in
    ``[0, acc_bits]``).

    Raises
    ------
    CheckpointError
        Naming the layer, the fields that differ and both values.
    """
    try:
        recomputed = {k: int(v) for k, v in vars(lq.widths(seq_len)).items()}
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: the claimed formats give no valid datapath: {exc}") from None
    differ = [k for k in sorted(set(recomputed) | set(widths)) if widths.get(k) != recomputed.get(k)]
    if differ:
        f = lq.formats
        shown = ", ".join(f"{k} {widths.get(k)!r} vs {recomputed.get(k)!r}" for k in differ[:4])
        raise CheckpointError(
            f"{where}: the stored widths disagree with those derived from its formats (qk_bits={f.qk_bits}, "
            f"v_bits={f.v_bits}, out_bits={f.out_bits}): {shown}"
            f"{' ...' if len(differ) > 4 else ''}; the manifest was edited after export"
        )
    acc = recomputed["acc_bits"]
    for h, r in enumerate(lq.out_shift):
        if not 0 <= int(r) <= acc:
            raise CheckpointError(f"{where} head {h}: out_shift r={int(r)} is outside [0, {acc}] (acc_bits of "
                                  f"the claimed formats); the manifest was edited after export")


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
        non-finite scales, integers that disagree with the manifest, or a
        layer whose stored widths or head integers do not fit its claimed
        formats (:func:`check_layer_formats`).
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
    if recorded != content_hash(manifest):
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

        for name in HEAD_TENSORS:
            ref = _get(_get(lj, "head_tensors", where, dict), name, where, str)
            arr = tensor(ref, np.int32, (lq.num_heads,))
            if not np.array_equal(arr.astype(np.int64), getattr(lq, name)):
                raise CheckpointError(
                    f"tensor {ref!r} in {tfile!r} disagrees with the manifest's {name} "
                    f"({arr.tolist()} vs {getattr(lq, name).tolist()})"
                )
        check_layer_formats(lq, _get(lj, "seq_len", where, int), _get(lj, "widths", where, dict), where)
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
