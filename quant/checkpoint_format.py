"""The checkpoint's file format: names, version, the manifest's canonical JSON and its hashes.

A checkpoint is a folder (layout: :mod:`inhibitron.quant.checkpoint`) whose
``manifest.json`` (:data:`MANIFEST_NAME`) is written as :func:`canonical_json`
and carries its own content hash (:func:`content_hash`, hex SHA-256 of the
canonical JSON without ``manifest_sha256``) and the SHA-256 of every other
file (:func:`sha256_file`). Writer and reader both use these definitions.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "CORE_KEYS", "canonical_json", "sha256_file", "content_hash"]

#: Version of the checkpoint layout written by this code (bump on incompatible change).
FORMAT_VERSION = 1
#: Name of the manifest inside a checkpoint directory.
MANIFEST_NAME = "manifest.json"
#: Top-level manifest keys that belong to the container, not to an exporter.
CORE_KEYS = frozenset({"format_version", "producer", "model", "calibration", "files", "manifest_sha256"})


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


def content_hash(manifest: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the manifest's canonical JSON without its ``manifest_sha256`` field."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()

