"""``$readmemh`` memory images of integer tensors, for FPGA block-RAM preloads.

One file per tensor: a header of ``//`` comments (which ``$readmemh`` in
Verilog, Verilator and Yosys skip), then one word per line, in row-major
order (last index fastest), as ``ceil(width / 4)`` lower-case hex digits of
the value's ``width``-bit two's complement::

    // inhibitron memory image
    // tensor: layer_00.safetensors:q.weight
    // shape: 384 x 384 (row-major, last index fastest)
    // word: signed 8-bit two's complement, 2 hex digits
    // depth: 147456 words
    7f
    e0
    ...

The bytes depend only on the arguments (no dates, no paths, ``\\n`` line
ends): the same tensor gives the same file. :func:`read_memimage` reads it
back (and is what testbenches can use). :func:`write_checkpoint_images` is
the ``memimages`` exporter (:mod:`inhibitron.quant.exporters`): the images
of every tensor an FPGA design preloads, per layer of a checkpoint.

>>> text = memimage_text([-1, 5, -128], width=8, tensor="t")
>>> text.splitlines()[-3:]
['ff', '05', '80']
>>> read_memimage_text(text, width=8).tolist()
[-1, 5, -128]
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .exporters import ExportJob, ExportResult
from .projection import BIAS_BITS, PROJECTIONS

__all__ = ["memimage_text", "read_memimage", "read_memimage_text", "write_checkpoint_images", "write_memimage"]

_HEADER = "// inhibitron memory image"


def _check_width(width) -> int:
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or not 1 <= width <= 64:
        raise ValueError(f"width must be an integer in 1..64, not {width!r}")
    return int(width)


def memimage_text(values, *, width: int, tensor: str, signed: bool = True) -> str:
    """The text of a ``$readmemh`` image of an integer tensor.

    Parameters
    ----------
    values : int array_like, any shape
        Written flattened in row-major order.
    width : int
        Word width in bits, 1..64.
    tensor : str
        The tensor's name, written in the header.
    signed : bool
        Two's-complement words (values in ``[-2**(w-1), 2**(w-1) - 1]``) or
        unsigned (``[0, 2**w - 1]``).

    Raises
    ------
    ValueError
        A value does not fit the word (naming the tensor, the index, the value
        and the range), a non-integer array or a bad width.
    """
    width = _check_width(width)
    arr = np.asarray(values)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"memory image of {tensor}: values must be integers, got dtype {arr.dtype}")
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"memory image of {tensor}: values above the int64 range")
    flat = arr.astype(np.int64).reshape(-1)
    bad = (flat < lo) | (flat > hi)
    if bad.any():
        i = int(np.argmax(bad))
        idx = tuple(int(j) for j in np.unravel_index(i, arr.shape)) if arr.ndim else ()
        raise ValueError(
            f"memory image of {tensor}: value {int(flat[i])} at index {idx} does not fit a "
            f"{'signed' if signed else 'unsigned'} {width}-bit word [{lo}, {hi}]"
        )
    digits = (width + 3) // 4
    words = (flat.astype(object) & ((1 << width) - 1)).tolist() if width == 64 else (
        np.bitwise_and(flat, (1 << width) - 1).tolist())
    shape = " x ".join(str(s) for s in arr.shape) if arr.ndim else "scalar"
    kind = f"signed {width}-bit two's complement" if signed else f"unsigned {width}-bit"
    lines = [
        _HEADER,
        f"// tensor: {tensor}",
        f"// shape: {shape} (row-major, last index fastest)",
        f"// word: {kind}, {digits} hex digits",
        f"// depth: {flat.size} words",
    ]
    fmt = f"%0{digits}x"
    lines.extend(fmt % x for x in words)
    return "\n".join(lines) + "\n"


def write_memimage(path: str | os.PathLike, values, *, width: int, tensor: str, signed: bool = True) -> dict:
    """Write :func:`memimage_text` to ``path``; return its manifest entry.

    Returns
    -------
    dict
        ``{"tensor", "width", "signed", "depth", "shape"}`` (the caller adds
        the path relative to its checkpoint).
    """
    text = memimage_text(values, width=width, tensor=tensor, signed=signed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="ascii", newline="\n") as f:
        f.write(text)
    arr = np.asarray(values)
    return {"tensor": tensor, "width": int(width), "signed": bool(signed), "depth": int(arr.size),
            "shape": [int(s) for s in arr.shape]}


_WORD = re.compile(r"^[0-9a-fA-F]+$")


def read_memimage_text(text: str, *, width: int, signed: bool = True, name: str = "memory image") -> np.ndarray:
    """Parse a ``$readmemh`` image (comments and blank lines skipped) to int64 values.

    Raises
    ------
    ValueError
        A line that is not a hex word of at most ``width`` bits (naming
        ``name`` and the line number).
    """
    width = _check_width(width)
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        if not _WORD.match(line) or int(line, 16) >> width:
            raise ValueError(f"{name} line {lineno}: {raw!r} is not a {width}-bit hex word")
        x = int(line, 16)
        if signed and x >> (width - 1):
            x -= 1 << width
        out.append(x)
    return np.array(out, dtype=np.int64)


def read_memimage(path: str | os.PathLike, *, width: int, signed: bool = True) -> np.ndarray:
    """Read a file written by :func:`write_memimage` (flat int64 array)."""
    path = Path(path)
    return read_memimage_text(path.read_text(encoding="ascii"), width=width, signed=signed, name=str(path))


def write_checkpoint_images(job: ExportJob) -> ExportResult:
    """The ``memimages`` exporter: ``mem/layer_XX/*.hex`` for every layer of ``job.checkpoint``.

    Per layer: the four projection weights (``weight_bits`` words), their
    biases (32-bit words) and the per-head thresholds at the core's register
    width (signed ``theta_bits``). Returns the files and the manifest's
    ``memory_images`` section (``path``, ``tensor``, ``width``, ``signed``,
    ``depth``, ``shape`` per image).
    """
    entries = []
    for layer in job.checkpoint.layers:
        tensor_file = f"layer_{layer.index:02d}.safetensors"
        folder = Path("mem") / tensor_file.split(".")[0]
        items = []
        for p in PROJECTIONS:
            lin = layer.projections[p]
            items.append((f"{p}.weight", lin.weight, lin.weight_bits))
            if lin.bias is not None:
                items.append((f"{p}.bias", lin.bias, BIAS_BITS))
        # The threshold register of each head, at the core's width (signed z_bits + 1).
        items.append(("attention.theta", layer.attention.theta, layer.attention.widths(layer.seq_len).theta_bits))
        for name, values, width in items:
            rel = folder / (name.replace(".", "_") + ".hex")
            entry = write_memimage(job.out_dir / rel, values, width=width, tensor=f"{tensor_file}:{name}")
            entries.append({"path": rel.as_posix(), **entry})
    return ExportResult(files=tuple(e["path"] for e in entries), manifest={"memory_images": entries})
