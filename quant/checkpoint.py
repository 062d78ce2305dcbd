"""The quantized checkpoint on disk: manifest + safetensors, hashing, atomic write, verified loading.

Layout (``docs/export.md`` describes every field)::

    <out>/manifest.json          format_version, model config, per layer and head:
                                 formats, scales, shifts, thresholds; per-channel
                                 weight scales; SHA-256 of every other file
    <out>/layer_00.safetensors   integer tensors of layer 0 (int8/int16/int32)
    <out>/mem/layer_00/*.hex     $readmemh images of those tensors (optional)
    <out>/onnx/*.onnx            the ONNX graphs (optional), hashed too

Per layer, the safetensors file holds the Q/K/V/O projection weights
(``q.weight`` ... ``(out, in)``, signed ``weight_bits``, per output channel),
their biases at the accumulator scale (``q.bias``, int32:
``bias_code = rint(bias / (input_scale * weight_scale[c]))``) and the per-head
integers of the attention core (``attention.theta``, ``attention.v_shift``,
``attention.z_shift``, ``attention.out_shift``, int32).

Writing (:func:`write_checkpoint`) runs the exporters of
:mod:`inhibitron.quant.exporters` (the safetensors tensors, :func:`write_layer_tensors`,
always; memory images, ONNX graphs, ... as selected) and is atomic: everything
goes to a temporary directory next to ``out``, which is renamed into place at
the end; an error (or a crash) at any point leaves no ``out`` and no temporary
directory behind (tested by injecting an exception). An existing ``out`` is
refused unless ``force``.

Loading (:func:`load_checkpoint`) verifies the manifest's own content hash,
the format version, the SHA-256 of every file (naming the file on mismatch),
dtypes, shapes, code ranges and finite scales, and rebuilds the
:class:`~inhibitron.quant.formats.LayerQuant` records and the integer model
(:class:`~inhibitron.quant.projection.QuantizedCheckpoint`).

numpy + safetensors only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .exporters import ExportJob, ExportResult, resolve_formats
from .formats import IntFormat, LayerQuant
from .projection import (
    HEAD_TENSORS,
    PROJECTIONS,
    CheckpointError,
    QuantizedCheckpoint,
    QuantizedLayer,
    QuantizedLinear,
)

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "CheckpointError",
    "QuantizedCheckpoint",
    "canonical_json",
    "check_layer_formats",
    "load_checkpoint",
    "sha256_file",
    "write_checkpoint",
    "write_layer_tensors",
]

#: Version of the checkpoint layout written by this code (bump on incompatible change).
FORMAT_VERSION = 1
#: Name of the manifest inside a checkpoint directory.
MANIFEST_NAME = "manifest.json"
#: Top-level manifest keys that belong to the container, not to an exporter.
_CORE_KEYS = frozenset({"format_version", "producer", "model", "calibration", "files", "manifest_sha256"})

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
        "head_tensors": {name: f"attention.{name}" for name in HEAD_TENSORS},
        "projections": projections,
    }


def write_layer_tensors(job: ExportJob) -> ExportResult:
    """The ``checkpoint`` exporter: one safetensors file of integer tensors per layer.

    Returns the files and the manifest's ``layers`` section (every record of
    :class:`~inhibitron.quant.projection.QuantizedLayer` but the integers).
    """
    from safetensors.numpy import save as st_save

    files, layers_json = [], []
    for layer in job.checkpoint.layers:
        name = _layer_file(layer.index)
        blob = st_save(layer.tensors(), metadata={"format": "inhibitron-quantized"})
        (job.out_dir / name).write_bytes(blob)
        files.append(name)
        layers_json.append(_layer_manifest(layer, name))
    return ExportResult(files=tuple(files), manifest={"layers": layers_json})


def _check_relative(rel: str, what: str) -> None:
    p = Path(rel)
    if (not isinstance(rel, str) or p.is_absolute() or ".." in p.parts or not p.parts or rel == MANIFEST_NAME
            or p.as_posix() != rel):
        raise CheckpointError(f"{what} path {rel!r} must be relative, inside the checkpoint, not reserved")


def _files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _run_exporters(tmp: Path, checkpoint: QuantizedCheckpoint, chosen, model) -> tuple[dict, dict, list]:
    """Run the exporters in ``tmp``: ``(files rel -> Path, manifest sections, notes)``."""
    files: dict[str, Path] = {}
    sections: dict[str, Any] = {"memory_images": []}  # format_version 1: always present
    owners: dict[str, str] = {}
    notes: list[str] = []
    for exporter in chosen:
        result = exporter.write(ExportJob(checkpoint=checkpoint, out_dir=tmp, model=model))
        if not isinstance(result, ExportResult):
            raise TypeError(f"exporter {exporter.name!r} returned {type(result).__name__}, not an ExportResult")
        for rel in result.files:
            _check_relative(rel, f"exporter {exporter.name!r}: file")
            if rel in files:
                raise CheckpointError(f"exporter {exporter.name!r}: file {rel!r} was already written by another")
            if not (tmp / rel).is_file():
                raise CheckpointError(f"exporter {exporter.name!r} listed {rel!r} but did not write it")
            files[rel] = tmp / rel
        unlisted = _files_under(tmp) - set(files)
        if unlisted:
            raise CheckpointError(f"exporter {exporter.name!r} wrote files it did not list: {sorted(unlisted)}")
        for key, value in result.manifest.items():
            if key in _CORE_KEYS or key in owners:
                raise CheckpointError(f"exporter {exporter.name!r}: manifest section {key!r} is taken")
            owners[key] = exporter.name
            sections[key] = value
        notes.extend(result.notes)
    return files, sections, notes


def write_checkpoint(
    out_dir: str | os.PathLike,
    checkpoint: QuantizedCheckpoint,
    *,
    export_formats: Sequence[str] | None = None,
    model=None,
    extra_files: Mapping[str, bytes] | None = None,
    memory_images: bool = True,
    force: bool = False,
    return_notes: bool = False,
):
    """Write a quantized checkpoint directory atomically.

    Parameters
    ----------
    out_dir : path-like
        The directory to create. Its parent is created if needed.
    checkpoint : QuantizedCheckpoint
    export_formats : sequence of str, optional
        Optional formats to write besides the tensors (names registered in
        :mod:`inhibitron.quant.exporters`, e.g. ``("memimages", "onnx")``).
        Default: ``("memimages",)`` if ``memory_images`` else none.
    model : torch.nn.Module, optional
        The float student, for formats that need it (``onnx``).
    extra_files : mapping of relative POSIX path -> bytes, optional
        More files, listed and hashed in the manifest.
    memory_images : bool
        Also write ``$readmemh`` images under ``mem/`` (only when
        ``export_formats`` is not given).
    force : bool
        Replace an existing ``out_dir`` (a directory) instead of refusing.
    return_notes : bool
        Also return the exporters' notes (they are in the manifest's
        ``calibration.notes`` too).

    Returns
    -------
    Path of the written directory; with ``return_notes``, ``(path, notes)``.

    Raises
    ------
    CheckpointError
        ``out_dir`` exists and ``force`` is False (or it is a file), a bad
        extra-file path, a format that needs the model without one, or
        invalid data. Nothing is left behind on any error.
    ValueError
        An unknown format name.
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
    if export_formats is None:
        export_formats = ("memimages",) if memory_images else ()
    chosen = resolve_formats(export_formats)
    for exporter in chosen:
        if exporter.needs_model and model is None:
            raise CheckpointError(f"the {exporter.name!r} format needs the float student (model=...)")
    extra_files = dict(extra_files or {})
    for rel in extra_files:
        p = Path(rel)
        if p.is_absolute() or ".." in p.parts or not p.parts or rel in (MANIFEST_NAME,) or rel.startswith("mem/"):
            raise CheckpointError(f"extra file path {rel!r} must be relative, inside the checkpoint, not reserved")

    created = [p for p in reversed(out.absolute().parents) if not p.exists()]  # parents we create
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except BaseException:
        remove_empty_folders(created)
        raise
    try:
        files, sections, notes = _run_exporters(tmp, checkpoint, chosen, model)
        for rel, data in sorted(extra_files.items()):
            if rel in files:
                raise CheckpointError(f"extra file {rel!r} is also written by an exporter")
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes(data))
            files[rel] = path
        from inhibitron import __version__

        calibration = dict(checkpoint.calibration)
        if notes:
            calibration["notes"] = [*calibration.get("notes", []), *notes]
        manifest = {
            "format_version": FORMAT_VERSION,
            "producer": {"name": "inhibitron", "version": __version__},
            "model": dict(checkpoint.model),
            "calibration": calibration,
            **sections,
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
        publish_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty_folders(created)
        raise
    return (out, notes) if return_notes else out


def publish_folder(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out`` (a sibling), replacing an earlier ``out``.

    Each step is a rename on one file system: a reader sees the old folder or
    the new one, never a half-written one; the replaced folder is removed last.
    """
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "replaced")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def remove_empty_folders(folders: list[Path]) -> None:
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
