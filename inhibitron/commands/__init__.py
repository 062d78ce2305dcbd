"""Subcommands of the ``inhibitron`` CLI; each module exposes ``register(subparsers)``."""
