"""``$readmemh`` images of packed rows: rows of signed codes as hex lines, and back.

A row of ``count`` signed ``bits``-bit codes is packed like the cores'
stream ports: code ``l`` at bits ``[l*bits +: bits]`` (two's complement),
the row written as ``ceil(count*bits/4)`` hex digits, most significant first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["hex_rows", "unpack_hex", "write_memh"]

_HEX = np.array(list("0123456789abcdef"))


def hex_rows(codes, bits: int) -> list[str]:
    """Each row of ``codes`` (``(rows, count)`` ints) packed like the ports, as hex digits.

    Code ``l`` of a row occupies bits ``[l*bits +: bits]`` (two's complement),
    the whole row is ``ceil(count*bits/4)`` hex digits, most significant first
    (vectorized; equal to ``f"{v:0{digits}x}"`` of
    :func:`~inhibitron.sim.stimulus.pack_rows`).

    >>> hex_rows([[1, -1], [-2, 3]], 4)
    ['f1', '3e']
    """
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (rows, count), not shape {codes.shape}")
    rows, count = codes.shape
    width = count * bits
    digits = -(-width // 4)
    unsigned = codes & ((1 << bits) - 1)
    bitarr = ((unsigned[:, :, None] >> np.arange(bits)) & 1).reshape(rows, width)  # LSB first
    bitarr = np.pad(bitarr, ((0, 0), (0, digits * 4 - width)))
    nibbles = bitarr.reshape(rows, digits, 4) @ np.array([1, 2, 4, 8])
    chars = _HEX[nibbles[:, ::-1]]
    return ["".join(r) for r in chars]


def unpack_hex(text: str, bits: int, count: int) -> np.ndarray:
    """Inverse of one :func:`hex_rows` line: ``count`` signed ``bits``-bit codes.

    >>> unpack_hex("f1", 4, 2).tolist()
    [1, -1]
    """
    value = int(text, 16)
    codes = [(value >> (i * bits)) & ((1 << bits) - 1) for i in range(count)]
    return np.array([c - (1 << bits) if c >> (bits - 1) else c for c in codes], dtype=np.int64)


def write_memh(path: Path, lines: list[str], comment: str) -> None:
    """Write a ``$readmemh`` file: a ``// comment`` line, then one line per entry."""
    path.write_text(f"// {comment}\n" + "\n".join(lines) + "\n", encoding="utf-8")
