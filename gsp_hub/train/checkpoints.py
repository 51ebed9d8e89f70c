"""Crash-safe checkpoints: a checkpoint folder exists under its final name only when every file in it is complete.

``checkpoints/checkpoint_<N>`` is written as ``checkpoints/.checkpoint_<N>.partial`` — accelerate's
``save_state(output_dir=...)`` (model, optimizer, scheduler, samplers, RNG states), then the run's own state — and
completed by a manifest written last (:data:`MANIFEST_NAME`: every file's name, size and SHA-256, the optimizer step
and the gsp_hub version). Every file and the folder are fsynced, the folder is renamed into place, and only then are
checkpoints beyond the kept number deleted, oldest first: a kill at any moment leaves the previous complete
checkpoint, also with a limit of one.

On resume, :func:`latest_checkpoint` takes the newest folder whose files match its manifest; a partial or corrupt
newer folder is reported in one line (which file, why) and skipped. A write that fails for lack of space or
permission (ENOSPC, EDQUOT, EROFS, EACCES) becomes one error naming the folder, the cause and the space a checkpoint
needs; the partial folder is removed and nothing complete is touched.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gsp_hub.io import write_json

__all__ = [
    "MANIFEST_NAME",
    "CheckpointError",
    "checkpoint_numbers",
    "checkpoint_problem",
    "latest_checkpoint",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "gsp_hub_manifest.json"
_FORMAT = "gsp_hub.checkpoint/1"
_SPACE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read: the message names the folder, the file and the cause."""


def checkpoint_numbers(directory: Path) -> list[int]:
    """The numbers i of the ``checkpoint_<i>`` folders in ``directory`` (complete or not; partial saves excluded)."""
    if not directory.is_dir():
        return []
    return [int(match.group(1)) for path in directory.iterdir()
            if (match := re.fullmatch(r"checkpoint_(\d+)", path.name))]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file() and path.name != MANIFEST_NAME)


def write_checkpoint(accelerator: Any, checkpoints_dir: Path, number: int, write_run_state: Callable[[Path], None],
                     *, step: int, keep: int, version: str) -> Path:
    """Save the run as ``checkpoints_dir/checkpoint_<number>`` (module docstring); every process calls it.

    ``write_run_state(folder)`` writes the run's own files (main process only); ``keep`` complete checkpoints are
    kept, the older ones deleted after the new one is in place. Returns the checkpoint folder."""
    final = checkpoints_dir / f"checkpoint_{number}"
    staging = checkpoints_dir / f".checkpoint_{number}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)  # left by a save that was killed
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(output_dir=str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_run_state(staging)
            _complete(staging, step=step, version=version)
            os.replace(staging, final)
            _fsync(checkpoints_dir)
            _delete_old(checkpoints_dir, keep)
    except (OSError, RuntimeError) as error:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        raise _write_error(error, checkpoints_dir, final) from error
    accelerator.wait_for_everyone()
    return final


def _file_entry(path: Path) -> dict[str, Any]:
    """fsync ``path``; its manifest entry (size, SHA-256)."""
    _fsync(path)
    return {"size": path.stat().st_size, "sha256": _sha256(path)}


def _complete(folder: Path, *, step: int, version: str) -> None:
    """fsync every file and hash it (files in parallel threads: hashlib and fsync release the GIL), then write the
    manifest (sizes and SHA-256) last and fsync the folder."""
    files = _files(folder)
    with ThreadPoolExecutor(max_workers=max(1, min(len(files), os.cpu_count() or 1))) as pool:
        entries = dict(zip((path.relative_to(folder).as_posix() for path in files), pool.map(_file_entry, files)))
    write_json(folder / MANIFEST_NAME, {"format": _FORMAT, "step": step, "gsp_hub_version": version, "files": entries})
    _fsync(folder / MANIFEST_NAME)
    _fsync(folder)


def _delete_old(checkpoints_dir: Path, keep: int) -> None:
    """Delete the oldest complete checkpoints beyond ``keep`` (never the newest ``keep`` complete ones)."""
    complete = [number for number in sorted(checkpoint_numbers(checkpoints_dir))
                if checkpoint_problem(checkpoints_dir / f"checkpoint_{number}", verify_hashes=False) is None]
    for number in complete[: max(0, len(complete) - keep)]:
        shutil.rmtree(checkpoints_dir / f"checkpoint_{number}")


def _write_error(error: BaseException, checkpoints_dir: Path, final: Path) -> BaseException:
    """One clear error for a failed write for lack of space or permission (else ``error`` itself)."""
    code = getattr(error, "errno", None)
    free = shutil.disk_usage(checkpoints_dir).free if checkpoints_dir.exists() else 0
    previous = [checkpoints_dir / f"checkpoint_{number}" for number in checkpoint_numbers(checkpoints_dir)]
    needed = max((sum(path.stat().st_size for path in _files(folder)) for folder in previous), default=0)
    out_of_space = code in (errno.ENOSPC, errno.EDQUOT) or (code is None and needed and free < needed)
    if code not in _SPACE_ERRORS and not out_of_space:
        return error
    cause = os.strerror(errno.ENOSPC) if out_of_space else os.strerror(code)
    space = f"; a checkpoint needs about {needed / 1e6:.1f} MB, {free / 1e6:.1f} MB are free" if needed else ""
    return CheckpointError(f"cannot write checkpoint {final} ({cause}{space}); the previous complete checkpoint is "
                           f"kept. Free space or choose another --output-dir, then --resume latest.")


def checkpoint_problem(folder: Path, *, verify_hashes: bool = True) -> str | None:
    """None if ``folder`` is a complete checkpoint (every file of its manifest present, of the recorded size and,
    with ``verify_hashes``, SHA-256); else why not, naming the file."""
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        return f"no {MANIFEST_NAME} (its save was interrupted, or it predates checksummed checkpoints)"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as error:
        return f"{MANIFEST_NAME} is unreadable ({error})"
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["size"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {entry['size']}"
        if verify_hashes and _sha256(path) != entry["sha256"]:
            return f"{name} does not match its SHA-256 in the manifest (the file was changed or damaged)"
    return None


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete checkpoint in ``checkpoints_dir`` (verified), or None; newer incomplete or corrupt ones
    are reported in one warning line each and skipped."""
    for number in sorted(checkpoint_numbers(checkpoints_dir), reverse=True):
        folder = checkpoints_dir / f"checkpoint_{number}"
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning("skipping checkpoint %s: %s", folder, problem)
    return None
