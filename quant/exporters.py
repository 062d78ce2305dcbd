"""The exporter registry: every export format of a quantized checkpoint, registered in one place.

An *exporter* writes one format of a
:class:`~inhibitron.quant.projection.QuantizedCheckpoint` into the checkpoint
directory. :func:`inhibitron.quant.checkpoint.write_checkpoint` runs the
selected exporters, in registration order, inside its temporary directory (a
failure anywhere leaves nothing behind), lists and hashes every file they
wrote in ``manifest.json`` and merges the manifest sections they return.
``inhibitron export`` builds its format flags from this registry: ``--no-NAME``
for a format written by default, ``--NAME`` for one that is not.

Registered formats
------------------

==============  ========  ==================================================================
name            default   writes (module that owns the format)
==============  ========  ==================================================================
``checkpoint``  always    ``layer_XX.safetensors`` and the manifest's ``layers``
                          (:mod:`inhibitron.quant.checkpoint`)
``onnx``        yes       ``onnx/layer_XX_float.onnx``, ``onnx/layer_XX_qdq.onnx``
                          (:mod:`inhibitron.quant.onnx_export`); needs the PyTorch student
``memimages``   yes       ``mem/layer_XX/*.hex`` ``$readmemh`` images and the manifest's
                          ``memory_images`` (:mod:`inhibitron.quant.memimage`)
==============  ========  ==================================================================

Adding a format
---------------
1. In the module that owns the format (a new ``quant/<format>_export.py`` for
   a new one), write ``def write_<format>(job: ExportJob) -> ExportResult``.
2. Register it below with a three-line wrapper that imports that module
   *inside* the function (``inhibitron --help`` imports this module and must
   not import torch or onnx)::

       @register("qonnx", help="QONNX graphs", default=False, needs_model=False)
       def _qonnx(job: ExportJob) -> ExportResult:
           from .qonnx_export import write_qonnx
           return write_qonnx(job)

3. Test it in ``tests/quant/test_<format>_export.py``: call
   ``write_checkpoint(out, ckpt, export_formats=("<name>",))`` and check the files,
   their bytes across two runs, and ``load_checkpoint`` (which verifies the
   hashes). ``tests/quant/test_exporters.py`` checks the registry itself.

The contract of a writer
------------------------
* Write only under ``job.out_dir``, preferably in a folder named after the
  format (``onnx/``, ``mem/``); return every file written, as a relative POSIX
  path, in :attr:`ExportResult.files`. An unlisted file, a listed file that
  does not exist, or a path claimed by two exporters is an error.
* Bytes depend only on the checkpoint (and the model): no dates, no absolute
  paths, deterministic serialization. The manifest hashes them.
* :attr:`ExportResult.manifest` holds top-level manifest sections the format
  owns (e.g. ``{"memory_images": [...]}``); the core keys (``format_version``,
  ``producer``, ``model``, ``calibration``, ``files``, ``manifest_sha256``)
  are refused.
* :attr:`ExportResult.notes` are one-line remarks (e.g. "layer 3: no QDQ
  graph: ..."); they are appended to the manifest's ``calibration.notes`` and
  printed by ``inhibitron export``.
* Bad input raises an error naming the problem; the export is rolled back.
* ``needs_model=True``: the writer reads ``job.model`` (the float PyTorch
  student); writing such a format without a model is refused up front.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .projection import QuantizedCheckpoint

__all__ = [
    "ExportJob",
    "ExportResult",
    "Exporter",
    "default_formats",
    "exporters",
    "get_exporter",
    "register",
    "resolve_formats",
]


@dataclass(frozen=True)
class ExportJob:
    """What an exporter is given.

    Members
    -------
    checkpoint : QuantizedCheckpoint
        The quantized model to write.
    out_dir : Path
        The checkpoint directory being assembled (a temporary directory that
        is renamed into place at the end). Write only under it.
    model : torch.nn.Module or None
        The float student the checkpoint was built from (``None`` when writing
        a loaded checkpoint); formats registered with ``needs_model=True`` get one.
    """

    checkpoint: QuantizedCheckpoint
    out_dir: Path
    model: Any = None


@dataclass(frozen=True)
class ExportResult:
    """What an exporter returns.

    Members
    -------
    files : tuple of str
        Every file written, relative to ``out_dir``, POSIX separators.
    manifest : mapping
        Top-level manifest sections owned by the format (plain JSON).
    notes : tuple of str
        One-line remarks for the manifest's ``calibration.notes`` and the user.
    """

    files: tuple[str, ...] = ()
    manifest: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Exporter:
    """One registered format.

    Members
    -------
    name : str
        Lower-case identifier (``[a-z][a-z0-9-]*``); the CLI flag is
        ``--no-NAME`` (default formats) or ``--NAME``.
    help : str
        What it writes, as a noun phrase ("the ONNX graphs"); the CLI help reads
        "do not write <help>" / "also write <help>".
    write : callable ``(ExportJob) -> ExportResult``
    default : bool
        Written by ``inhibitron export`` and ``export_student`` unless turned off.
    needs_model : bool
        Needs the float PyTorch student (``ExportJob.model``).
    required : bool
        Always written (the checkpoint itself); no CLI flag.
    """

    name: str
    help: str
    write: Callable[[ExportJob], ExportResult]
    default: bool = True
    needs_model: bool = False
    required: bool = False


_REGISTRY: dict[str, Exporter] = {}
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


def register(name: str, *, help: str, default: bool = True, needs_model: bool = False,
             required: bool = False) -> Callable[[Callable[[ExportJob], ExportResult]], Callable]:
    """Decorator: register ``fn(job) -> ExportResult`` as the writer of format ``name``.

    Raises
    ------
    ValueError
        ``name`` is not a lower-case identifier or is already registered.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"exporter name must match [a-z][a-z0-9-]*, not {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"an exporter named {name!r} is already registered")

    def decorate(fn):
        _REGISTRY[name] = Exporter(name=name, help=help, write=fn, default=bool(default or required),
                                   needs_model=bool(needs_model), required=bool(required))
        return fn

    return decorate


def exporters() -> tuple[Exporter, ...]:
    """Every registered exporter, in registration (= writing) order."""
    return tuple(_REGISTRY.values())


def get_exporter(name: str) -> Exporter:
    """The exporter registered as ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown export format {name!r}; known: {', '.join(_REGISTRY)}") from None


def default_formats() -> tuple[str, ...]:
    """Names of the optional formats written by default (the required ones are always written)."""
    return tuple(e.name for e in _REGISTRY.values() if e.default and not e.required)


def resolve_formats(names: Iterable[str]) -> tuple[Exporter, ...]:
    """The exporters to run for ``names``: the required ones plus those named, in registry order.

    >>> [e.name for e in resolve_formats(["onnx"])]
    ['checkpoint', 'onnx']
    """
    wanted = {get_exporter(n).name for n in names}
    return tuple(e for e in _REGISTRY.values() if e.required or e.name in wanted)


# ---------------------------------------------------------------------------
# The built-in formats (writers import their modules lazily: see the docstring)
# ---------------------------------------------------------------------------


@register("checkpoint", help="the integer tensors (layer_XX.safetensors)", required=True)
def _checkpoint(job: ExportJob) -> ExportResult:
    from .checkpoint import write_layer_tensors

    return write_layer_tensors(job)


@register("onnx", help="the ONNX graphs", needs_model=True)
def _onnx(job: ExportJob) -> ExportResult:
    from .onnx_export import write_onnx_graphs

    return write_onnx_graphs(job)


@register("memimages", help="$readmemh memory images")
def _memimages(job: ExportJob) -> ExportResult:
    from .memimage import write_checkpoint_images

    return write_checkpoint_images(job)


@register("qonnx", help="QONNX graphs (Quant nodes + InhibitorAttention custom op; needs qonnx)",
          default=False)
def _qonnx(job: ExportJob) -> ExportResult:
    from .qonnx_export import write_qonnx

    return write_qonnx(job)
