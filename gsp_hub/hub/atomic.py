"""Atomic replacement of a whole directory: write into a sibling temp directory, then rename it into place.

An interrupted write (exception, kill) leaves either the old directory or the new one, never a mix: the new content is
built in ``.<name>.tmp-*`` next to the target and only renamed over it once complete. POSIX ``rename`` cannot replace a
non-empty directory, so an existing target is first renamed to ``.<name>.old-*`` and removed after the swap; a crash
between the two renames leaves the complete old content in that backup.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_directory"]


@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temp directory; on normal exit it replaces ``directory`` (created if absent).

    On an exception the temp directory is deleted and ``directory`` is left untouched.
    """
    target = Path(directory).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp creates 0o700; an export folder is meant to be shared
        for path in staging.rglob("*"):  # files written through temp files (timm's weights) are 0o600 too
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        if target.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, backup / target.name)
            os.replace(staging, target)
            shutil.rmtree(backup)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
