"""Export a PyTorch student: calibrate it on real inputs and write its quantized checkpoint.

:func:`export_student` is the whole job of ``inhibitron export``: refuse a
broken model (:func:`check_finite_parameters`), calibrate every layer
(:func:`inhibitron.quant.calibrate_model.calibrate_student`), quantize the
projections (:func:`inhibitron.quant.projection.build_checkpoint`) and write
the checkpoint with the selected formats
(:func:`inhibitron.quant.checkpoint.write_checkpoint`, formats registered in
:mod:`inhibitron.quant.exporters`).

The checkpoint API is re-exported here for users of the earlier single
module (``from inhibitron.quant.export import load_checkpoint``); new code
imports it from :mod:`inhibitron.quant.checkpoint`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .calibrate_model import calibrate_student
from .checkpoint import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    CheckpointError,
    QuantizedCheckpoint,
    load_checkpoint,
    write_checkpoint,
)
from .exporters import default_formats
from .projection import QuantizedLayer, QuantizedLinear, build_checkpoint

__all__ = [
    "check_finite_parameters",
    "export_student",
    # re-exported from quant.checkpoint / quant.projection / quant.calibrate_model
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "CheckpointError",
    "QuantizedCheckpoint",
    "QuantizedLayer",
    "QuantizedLinear",
    "build_checkpoint",
    "calibrate_student",
    "load_checkpoint",
    "write_checkpoint",
]


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
    export_formats: Sequence[str] | None = None,
    force: bool = False,
    calibration_notes: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> tuple[Path, dict]:
    """Calibrate a student on real inputs and write its quantized checkpoint.

    ``formats`` (the :class:`~inhibitron.quant.formats.AttentionFormats`),
    ``seq_len``, ``act_bits``, ``observer``, ``shared_shifts`` and ``progress``
    go to :func:`calibrate_student`; ``weight_bits`` to :func:`build_checkpoint`.

    Parameters
    ----------
    export_formats : sequence of str, optional
        Optional formats to write besides the tensors (names registered in
        :mod:`inhibitron.quant.exporters`); default: every default format
        (:func:`~inhibitron.quant.exporters.default_formats`, today
        ``memimages`` and ``onnx``).
    onnx, memory_images : bool
        ``False`` drops ``onnx`` / ``memimages`` from the formats.
    force : bool
        Replace an existing ``out_dir``.
    calibration_notes : mapping, optional
        More entries of the manifest's ``calibration``.

    Returns
    -------
    (path, report) : the checkpoint directory and the calibration result of
    :func:`calibrate_student` (plus ``notes``).

    Raises
    ------
    CheckpointError
        ``out_dir`` exists without ``force`` (checked before any work).
    ValueError
        NaN/Inf in a parameter (named, checked before any work); a length-normalised
        student (``length_norm``), which the manifest cannot describe yet.
    FormatTooNarrowError, ValueError
        See :func:`calibrate_student`, :func:`build_checkpoint`.
    """
    out = Path(out_dir)
    if out.exists() and not force:
        raise CheckpointError(f"output directory {str(out)!r} already exists; pass --force (force=True) to replace it")
    check_finite_parameters(model)
    from inhibitron.model.surgery import iter_inhibitors

    for i, inhib in iter_inhibitors(model):
        if inhib.length_norm != "none":
            raise ValueError(
                f"layer {i} has length_norm={inhib.length_norm!r}: the checkpoint manifest has no per-sequence "
                "output shift yet (QAT and the golden model have it: golden_from_float(..., length_norm=...)); "
                "export a student without length normalisation"
            )
    cal = calibrate_student(model, input_ids, attention_mask, formats=formats, seq_len=seq_len, act_bits=act_bits,
                            observer=observer, shared_shifts=shared_shifts, progress=progress)
    dropped = {"onnx": not onnx, "memimages": not memory_images}
    names = default_formats() if export_formats is None else tuple(export_formats)
    names = tuple(n for n in names if not dropped.get(n, False))
    calibration = {
        "observer": observer,
        "shared_shifts": shared_shifts,
        "sequences": int(input_ids.shape[0]),
        "tokens": int(attention_mask.sum()),
        "padded_length": int(input_ids.shape[1]),
        "sqnr_db": [None if not math.isfinite(x) else round(x, 4) for x in cal["sqnr_db"]],
        "notes": [],  # the exporters' notes are appended by write_checkpoint
        **dict(calibration_notes or {}),
    }
    ckpt = build_checkpoint(model, cal["layer_quants"], cal["input_scales"], cal["context_scales"], seq_len=seq_len,
                            weight_bits=weight_bits, act_bits=act_bits, calibration=calibration)
    path, notes = write_checkpoint(out, ckpt, export_formats=names, model=model, force=force, return_notes=True)
    cal["notes"] = list(notes)
    return path, cal
