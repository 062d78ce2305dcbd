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
import sys

from . import __version__

#: Subcommand modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "inhibitron.commands.demo",
    "inhibitron.commands.distill",
    "inhibitron.commands.export",
    "inhibitron.commands.generate",
    "inhibitron.commands.sim",
    "inhibitron.commands.report",
    "inhibitron.commands.synth",
    "inhibitron.commands.compare",
    "inhibitron.commands.bench",
)


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


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
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, ValueError) as exc:
        # Clear, named errors from our own validation: no traceback.
        print(f"inhibitron {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"inhibitron {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
