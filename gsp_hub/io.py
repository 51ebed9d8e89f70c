"""Atomic writes, the one way gsp_hub writes a file or a folder: a reader sees the old content or the new, never a mix.

* :func:`atomic_file` — a temp file next to the target for any writer that takes a path (safetensors, matplotlib,
  ONNX, ``torch.export``); renamed over the target (``os.replace``) only when the writer finished without error.
* :func:`atomic_write_text` / :func:`write_json` — text and indented JSON through :func:`atomic_file`.
* :func:`atomic_directory` — a whole folder (an export, a gallery index) built in a temp folder and swapped in.

A write that fails for lack of space or permission (ENOSPC, EDQUOT, EROFS, EACCES, EPERM) raises one
:class:`DiskWriteError` naming the target, the cause and the free space; the target is left as it was.

Standard library only, so that every command (and ``gsp-hub --help``) can import it for free.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["DiskWriteError", "atomic_directory", "atomic_file", "atomic_write_text", "write_json"]

_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class DiskWriteError(OSError):
    """A write that failed for lack of space or permission: the message names the target, the cause and the free
    space; the target was left as it was (an OSError, so callers that report OSErrors in one line keep doing so)."""


@contextlib.contextmanager
def _disk_errors(target: Path) -> Iterator[None]:
    """Re-raise ENOSPC / EDQUOT / EROFS / EACCES / EPERM inside the block as one :class:`DiskWriteError`."""
    try:
        yield
    except OSError as error:
        if error.errno not in _DISK_ERRORS or isinstance(error, DiskWriteError):
            raise
        existing = next(folder for folder in (target, *target.parents) if folder.exists())
        free = shutil.disk_usage(existing).free / 1e6
        raise DiskWriteError(error.errno, f"cannot write {target} ({os.strerror(error.errno)}; {free:.1f} MB free "
                                          f"there); {target.name} was left as it was: free space or fix the "
                                          f"permissions of {target.parent}, then retry") from error


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temp file in ``path``'s folder (created if absent); on normal exit it replaces ``path``.

    The temp file is hidden (``.<stem>.tmp-*``) and keeps ``path``'s suffix, for writers that choose the format by
    extension. On success it is made readable by everyone (0o644: ``mkstemp`` creates 0o600, and gsp_hub's files are
    meant to be shared) and renamed over ``path``; on an exception it is deleted and ``path`` is left untouched.
    """
    target = Path(path).absolute()
    with _disk_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{target.stem}.tmp-", suffix=target.suffix, dir=target.parent)
        os.close(handle)
        temp = Path(temp_name)
        try:
            yield temp
            os.chmod(temp, 0o644)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_file`."""
    with atomic_file(path) as temp:
        temp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any], *, indent: int = 2) -> None:
    """Atomically write ``data`` as JSON indented by ``indent`` spaces, with a final newline."""
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temp directory; on normal exit it replaces ``directory`` (created if absent).

    The new content is built in ``.<name>.tmp-*`` next to the target and only renamed over it once complete. POSIX
    ``rename`` cannot replace a non-empty directory, so an existing target is first renamed to ``.<name>.old-*`` and
    removed after the swap; a crash between the two renames leaves the complete old content in that backup. On an
    exception the temp directory is deleted and ``directory`` is left untouched.
    """
    target = Path(directory).absolute()
    with _disk_errors(target):
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
