"""The one command-line entry point: ``inhibitron <subcommand> ...``.

Each subcommand lives in its own module under ``inhibitron/commands/`` and
exposes ``register(subparsers)``, which adds its parser and sets
``func(args) -> int``. Subcommand modules import their heavy dependencies
(torch, amaranth, cocotb) inside ``func`` so that ``inhibitron --help`` is
instant and the hardware commands never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from . import __version__

#: Subcommand modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "inhibitron.commands.demo",
    "inhibitron.commands.distill",
    "inhibitron.commands.export",
    "inhibitron.commands.generate",
    "inhibitron.commands.sim",
    "inhibitron.commands.testbench",
    "inhibitron.commands.report",
    "inhibitron.commands.synth",
    "inhibitron.commands.compare",
    "inhibitron.commands.capacity",
    "inhibitron.commands.bench",
)


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


#: Exit codes (``docs/errors.md``).
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally``/cleanup runs (atomic outputs)."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (``.`` for a relative path with none)."""
    p = path
    while not (p.exists() or p.is_symlink()):
        if p.parent == p:
            break
        p = p.parent
    return p


def _int_at_least(text: str, minimum: int, what: str) -> int:
    """An integer >= ``minimum`` from ``text``, else ``ArgumentTypeError("expected {what}, got ...")``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a positive integer (the message quotes what was given)."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (the message quotes what was given)."""
    return _int_at_least(text, 0, "a non-negative integer")


def max_length_arg(text: str) -> int:
    """argparse type of ``--max-length``: tokens per sentence, at least 3 ([CLS], a token, [SEP])."""
    value = positive_int(text)
    if value < 3:
        raise argparse.ArgumentTypeError(
            f"max-length must be at least 3 ([CLS], one token, [SEP]), got {value}")
    return value


def check_writable_parent(path: Path, option: str) -> None:
    """Raise :class:`UserError` unless the folders above ``path`` exist or can be created.

    Walks up to the nearest existing ancestor: it must be a folder (not a
    file) and writable (a real probe: a temporary folder is created and
    removed, so a read-only file system is caught too).
    """
    base = _first_existing(path.parent)
    if base.exists() and not base.is_dir():
        raise UserError(f"{option} {str(path)!r}: {str(base)!r} is a file, not a folder")
    _probe(base, f"{option} {str(path)!r}: cannot write in {str(base)!r}")


def _probe(folder: Path, message: str) -> None:
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".inhibitron-probe-", dir=folder))
    except OSError as exc:
        raise UserError(f"{message} ({exc.strerror or exc})") from None


def check_output_dir(path, option: str = "--out", *, may_exist: bool = True) -> Path:
    """Check, before any work, that the output folder ``path`` can be written.

    Raises :class:`UserError` naming the option and the path when ``path``
    is a file, when a folder above it is a file, when nothing can be written
    there (read-only file system, no permission) or, unless ``may_exist``,
    when it already exists.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise UserError(f"{option} {str(path)!r} is a file, not a folder")
        if not may_exist:
            raise UserError(f"{option} {str(path)!r} already exists")
        _probe(path, f"{option} {str(path)!r}: cannot write there")
        return path
    check_writable_parent(path, option)
    return path


def check_output_file(path, option: str = "--out") -> Path:
    """Check, before any work, that the file ``path`` can be written (its folder created)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {str(path)!r} is a folder, not a file")
    check_writable_parent(path, option)
    return path


#: Output folders checked by :func:`main` before the command runs, for commands that do not
#: check their own first (the others call :func:`check_output_dir` themselves): command ->
#: argument names.
EARLY_OUTPUT_DIRS = {"distill": ("out",), "demo": ("out",)}


def _check_early_outputs(args) -> None:
    if getattr(args, "print_config", None):  # distill --print-config writes nothing
        return
    for dest in EARLY_OUTPUT_DIRS.get(args.command, ()):
        value = getattr(args, dest, None)
        if value:
            check_output_dir(value, "--" + dest.replace("_", "-"))


def silence_progress() -> None:
    """Turn off every progress bar: ours (tqdm), Hugging Face's and transformers' loading bars."""
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inhibitron",
        description="FPGA co-design toolkit for inhibitor attention: distil, quantize, "
        "generate Verilog, verify bit-exact, measure.",
    )
    parser.add_argument("--version", action="version", version=f"inhibitron {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "no_progress", False):
        silence_progress()
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    else:  # pragma: no cover - signals can only be handled in the main thread
        previous = None
    try:
        _check_early_outputs(args)
        return int(args.func(args) or 0)
    except (UserError, OSError, ValueError) as exc:
        # Clear, named errors from our own validation (and the operating
        # system's, which name the file): no traceback.
        print(f"inhibitron {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Terminated:
        print(f"inhibitron {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"inhibitron {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
