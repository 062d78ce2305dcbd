"""The synthesis cache: a hash of a run's inputs, and the saved result it validates.

:func:`synthesize <inhibitron.hw.synth.synthesize>` saves its
:class:`~inhibitron.hw.synth_result.SynthResult` as ``<out>/<top>.synth.json``
with :func:`design_hash` of its inputs in ``design_hash``; a later run with
the same hash returns the saved result without running a tool. The hash
covers the Verilog without its source-location attributes, the top module,
device, frequency, seed and the flow options (``extra``). Changing what is
hashed invalidates every saved result (``build/compare``, the figures behind
``docs/efficiency.md``): the trailing version tag ``v3`` says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from collections.abc import Sequence

from .devices import Device
from .synth_result import SynthResult

__all__ = ["design_hash", "load_cached"]

_SRC_ATTR = re.compile(rb'\(\* src = "[^"]*" \*\)')


#: A multiplication in Verilog text (``a * b``, ``$signed(a) * $signed(b)``), not an
#: attribute bracket ``(* ... *)``.
_MUL_OP = re.compile(rb"[\w\])]\s*\*\s*[\w($'(]")


def has_multiplier(verilog: Sequence[Path]) -> bool:
    """Whether any of the Verilog files multiplies (conservative: a false "yes" costs a cache miss).

    Flow options that only change designs with multipliers (the ECP5 DSP
    register pass) enter the cache key only for such designs, so adding
    them does not invalidate the saved results of multiplier-free cores.
    """
    return any(_MUL_OP.search(_SRC_ATTR.sub(b"", Path(v).read_bytes())) for v in verilog)


def design_hash(verilog: Sequence[Path], top: str, device: Device, freq: float, seed: int,
                extra: str = "") -> str:
    """16 hex digits of SHA-256 over the inputs of one run (see the module docstring)."""
    h = hashlib.sha256()
    for v in verilog:
        # Source-location attributes (absolute paths and line numbers of the Python
        # that emitted the Verilog) do not change the netlist; they are not hashed.
        h.update(_SRC_ATTR.sub(b"", Path(v).read_bytes()))
    h.update(f"|{top}|{device.name}|{freq}|{seed}|{extra}|v3".encode())
    return h.hexdigest()[:16]


def load_cached(result_path: Path, digest: str, *, name: str) -> SynthResult | None:
    """The result saved at *result_path* if it was made from inputs hashing to *digest*.

    Its ``design`` is renamed to *name* (the name is not part of the hash).
    Returns None when there is no such file, it is unreadable, or the hash differs.
    """
    if not result_path.is_file():
        return None
    try:
        old = SynthResult.from_json(result_path.read_text())
    except (ValueError, TypeError, KeyError):
        return None
    if old.design_hash != digest:
        return None
    return dataclasses.replace(old, design=name) if old.design != name else old
