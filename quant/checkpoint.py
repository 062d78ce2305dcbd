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

numpy + safetensors only. Each part has its own module, re-exported here:
:mod:`inhibitron.quant.checkpoint_format` (names, version, canonical JSON,
hashes), :mod:`inhibitron.quant.checkpoint_write`,
:mod:`inhibitron.quant.checkpoint_load` and
:mod:`inhibitron.quant.atomic_folder` (the atomic folder replacement).
"""

from __future__ import annotations

from .atomic_folder import publish_folder, remove_empty_folders
from .checkpoint_format import FORMAT_VERSION, MANIFEST_NAME, canonical_json, content_hash, sha256_file
from .checkpoint_load import check_layer_formats, load_checkpoint
from .checkpoint_write import write_checkpoint, write_layer_tensors
from .projection import CheckpointError, QuantizedCheckpoint

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
    "content_hash",
    "publish_folder",
    "remove_empty_folders",
]

#: The former private name of :func:`content_hash`.
_content_hash = content_hash
