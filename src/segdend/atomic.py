"""Crash-safe file writes: every file segdend writes (cache, checkpoints, metrics, reports).

Readers see either the old file or the whole new one. This module raises plain OSError;
:mod:`segdend.checkpoint` turns it into the project's one-line errors for run files, and the
data layer into "this source failed, try the next".
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write_bytes"]

# Cache and run files are data, not secrets; mkstemp's private 0600 mode would make a cache
# directory shared through SEGDEND_CACHE_DIR unreadable to everyone but its first writer.
_FILE_MODE = 0o644


def atomic_write_bytes(path: Path, data: bytes | bytearray | memoryview, *,
                       _before_rename: Callable[[], None] | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the
    temporary file is then renamed over ``path``. A failure at any point (a full disk, an
    interrupt) removes the temporary file and leaves ``path`` untouched.

    Parameters
    ----------
    path : Path
        The file to create or replace. Its parent directory is created if needed.
    data : bytes-like
        The complete new content.
    _before_rename : callable, optional
        Test hook called between the fsync and the rename (to simulate a crash there).

    Raises
    ------
    OSError
        If the directory cannot be created or the file cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), _FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if _before_rename is not None:
            _before_rename()
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Persist a rename by syncing its directory, where the platform allows it."""
    # Windows cannot open directories, and some file systems refuse to sync them; the rename
    # has already happened, so durability is best-effort here.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
