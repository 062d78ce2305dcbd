"""Writing a quantized checkpoint: the tensors exporter and the atomic write of the whole folder.

:func:`write_layer_tensors` is the ``checkpoint`` exporter (one safetensors
file of integer tensors per layer and the manifest's ``layers`` section);
:func:`write_checkpoint` runs the selected exporters of
:mod:`inhibitron.quant.exporters` in a temporary folder, checks what they
wrote, hashes every file into the manifest and publishes the folder
atomically (:mod:`inhibitron.quant.atomic_folder`): an error leaves nothing
behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .atomic_folder import publish_folder, remove_empty_folders, temp_folder_beside
from .checkpoint_format import CORE_KEYS, FORMAT_VERSION, MANIFEST_NAME, canonical_json, content_hash, sha256_file
from .exporters import ExportJob, ExportResult, resolve_formats
from .projection import HEAD_TENSORS, PROJECTIONS, CheckpointError, QuantizedCheckpoint, QuantizedLayer

__all__ = ["write_checkpoint", "write_layer_tensors"]


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
            if key in CORE_KEYS or key in owners:
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

    tmp, created = temp_folder_beside(out)
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
            manifest["manifest_sha256"] = content_hash(manifest)
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
