"""Read the core parameters of one layer from a quantized checkpoint's manifest.

The checkpoint layout is :mod:`inhibitron.quant.checkpoint` (``manifest.json``
with ``format_version`` and ``layers[i].attention`` = ``LayerQuant.to_dict()``,
``layers[i].seq_len``). A directory or manifest path is loaded (and its file
hashes verified) with :func:`inhibitron.quant.checkpoint.load_checkpoint`; a
mapping is taken as the parsed manifest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["layer_core_params", "layer_quant"]


def layer_quant(manifest, *, layer: int):
    """``(LayerQuant, seq_len)`` of layer ``layer`` of a checkpoint or parsed manifest.

    Raises
    ------
    ValueError
        Unknown manifest version, missing or malformed layer entry, stored
        widths that disagree with the claimed formats (a ``CheckpointError``).
    FileNotFoundError
        ``manifest`` is a path that does not exist.
    """
    from inhibitron.quant.checkpoint import FORMAT_VERSION, load_checkpoint
    from inhibitron.quant.formats import LayerQuant

    if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
        raise ValueError(f"layer must be a non-negative integer, not {layer!r}")
    if isinstance(manifest, (str, os.PathLike)):
        path = Path(manifest)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {os.fspath(path)!r} does not exist")
        ckpt = load_checkpoint(path)
        if layer >= len(ckpt.layers):
            raise ValueError(f"layer {layer} does not exist: the checkpoint {os.fspath(path)!r} "
                             f"has {len(ckpt.layers)} layer(s)")
        entry = ckpt.layers[layer]
        return entry.attention, int(entry.seq_len)
    if not isinstance(manifest, Mapping):
        raise TypeError(f"manifest must be a path or a mapping, not {type(manifest).__name__}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"unknown manifest format_version {version!r}; this version of "
                         f"inhibitron reads format_version {FORMAT_VERSION}")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise ValueError("manifest has no 'layers' list")
    if layer >= len(layers):
        raise ValueError(f"layer {layer} does not exist: the manifest has {len(layers)} layer(s)")
    entry = layers[layer]
    if not isinstance(entry, Mapping) or "attention" not in entry or "seq_len" not in entry:
        raise ValueError(f"manifest layer {layer} lacks 'attention' or 'seq_len'")
    lq, n = LayerQuant.from_dict(entry["attention"]), int(entry["seq_len"])
    if "widths" in entry:  # written by every exporter; cross-checked against the claimed formats
        from inhibitron.quant.checkpoint import check_layer_formats

        check_layer_formats(lq, n, entry["widths"], f"manifest layer {layer}")
    return lq, n


def layer_core_params(manifest, *, layer: int, seq_len: int | None = None) -> dict:
    """Keyword arguments of :class:`~inhibitron.hw.core.CoreConfig` for one layer.

    The core's ``v_shift``/``z_shift`` are elaboration-time constants of the
    mixing PEs, so every head of the layer must share ``(v_shift, z_shift)``;
    ``theta`` and the output shift ``r`` stay per-head run-time descriptor
    fields (``LayerQuant.theta``, ``LayerQuant.out_shift``).

    Raises
    ------
    ValueError
        The heads' ``v_shift``/``z_shift`` differ (export with
        ``--shifts ab`` or ``shared``), or see :func:`layer_quant`.
    """
    lq, n = layer_quant(manifest, layer=layer)
    ab = {(int(a), int(b)) for a, b in zip(lq.v_shift, lq.z_shift)}
    if len(ab) != 1:
        raise ValueError(f"layer {layer}: heads use different (v_shift, z_shift) {sorted(ab)}; "
                         f"a generated core has per-layer a/b shifts (only r is per head), so "
                         f"export the checkpoint with --shifts ab (shared_shifts='ab') or shared")
    ((a, b),) = ab
    f = lq.formats
    return {"seq_len": int(seq_len if seq_len is not None else n), "head_dim": int(lq.head_dim),
            "qk_bits": f.qk_bits, "v_bits": f.v_bits, "out_bits": f.out_bits,
            "v_shift": a, "z_shift": b}
