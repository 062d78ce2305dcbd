"""Atomic publication of a finished output folder, and the cleanup of folders a failed write created.

A write makes its folder with :func:`temp_folder_beside` (a temporary folder
next to the destination), fills it, and :func:`publish_folder` renames it into
place (replacing an earlier one); on failure it removes the temporary folder
and :func:`remove_empty_folders` the parent folders it created. The checkpoint
and the bit-accuracy report both write this way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["publish_folder", "remove_empty_folders", "temp_folder_beside"]


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


def temp_folder_beside(out: Path) -> tuple[Path, list[Path]]:
    """A new empty folder ``.<name>.tmp-*`` next to ``out``, creating ``out``'s missing parents.

    Returns the folder and the parents this call created (deepest last), for
    :func:`remove_empty_folders` after a failed write; if the folder cannot be
    made, those parents are removed again and the error propagates.
    """
    created = [p for p in reversed(out.absolute().parents) if not p.exists()]  # parents we create
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except BaseException:
        remove_empty_folders(created)
        raise
    return tmp, created
