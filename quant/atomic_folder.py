"""Atomic publication of a finished output folder, and the cleanup of folders a failed write created.

:func:`publish_folder` renames a folder written next to its destination into
place (replacing an earlier one); :func:`remove_empty_folders` removes the
parent folders a write created when it fails. The checkpoint and the
bit-accuracy report both write this way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["publish_folder", "remove_empty_folders"]


def publish_folder(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out`` (a sibling), replacing an earlier ``out``.

    Each step is a rename on one file system: a reader sees the old folder or
    the new one, never a half-written one; the replaced folder is removed last.
    """
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "replaced")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove the folders this call created (deepest first) if they are still empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            break
