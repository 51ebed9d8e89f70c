"""Crash-safe checkpoints: a checkpoint folder exists under its final name only when every file in it is complete.

``checkpoints/checkpoint_<N>`` is written as ``checkpoints/.checkpoint_<N>.partial`` — accelerate's
``save_state(output_dir=...)`` (model, optimizer, scheduler, samplers, RNG states), then the run's own state — and
completed by a manifest written last (:data:`MANIFEST_NAME`: every file's name, size and SHA-256, the optimizer step
and the gsp_hub version). Every file and the folder are fsynced, the folder is renamed into place, and only then are
checkpoints beyond the kept number deleted, oldest first: a kill at any moment leaves the previous complete
checkpoint, also with a limit of one.

:class:`CheckpointWriter` splits a save in two. The training thread does only what must see the live state: the
files of the ``.partial`` folder (the tensors serialised). Hashing, fsync, the manifest, the rename that publishes
the checkpoint and the deletion of old ones run in one background thread, overlapping the next training steps.
That thread is joined before the next save, before an export, at the end of the run and on any exception
(:meth:`CheckpointWriter.wait`, :meth:`CheckpointWriter.finished_on_exit`); its failure is raised there as a
:class:`CheckpointError` naming the checkpoint, never lost.

On resume, :func:`latest_checkpoint` takes the newest folder whose files match its manifest; a partial or corrupt
newer folder is reported in one line (which file, why) and skipped. A write that fails for lack of space or
permission (ENOSPC, EDQUOT, EROFS, EACCES) becomes one error naming the folder, the cause and the space a checkpoint
needs; the partial folder is removed and nothing complete is touched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gsp_hub.io import write_json

__all__ = [
    "MANIFEST_NAME",
    "CheckpointError",
    "CheckpointWriter",
    "checkpoint_numbers",
    "checkpoint_problem",
    "latest_checkpoint",
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
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file() and path.name != MANIFEST_NAME)


class CheckpointWriter:
    """Writes a run's numbered checkpoints into ``checkpoints_dir`` (module docstring); every process makes one and
    calls :meth:`save` at the same points.

    Args:
        accelerator: the run's ``Accelerator`` (its ``save_state`` writes the model, optimizer, scheduler, RNGs).
        checkpoints_dir: the run's checkpoint folder; numbering continues after the highest ``checkpoint_<N>``.
        keep: complete checkpoints kept; older ones are deleted once a new one is in place.
        version: the gsp_hub version recorded in each manifest.
    """

    def __init__(self, accelerator: Any, checkpoints_dir: Path, *, keep: int, version: str) -> None:
        self.accelerator, self.checkpoints_dir, self.keep, self.version = accelerator, checkpoints_dir, keep, version
        self.next_number = max(checkpoint_numbers(checkpoints_dir), default=-1) + 1
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gsp_hub-checkpoint")
        self._finishing: Future[Path] | None = None

    def save(self, write_run_state: Callable[[Path], None], *, step: int) -> Path:
        """Save the live state as the next checkpoint at optimizer step ``step``; returns its final folder.

        Waits for the previous checkpoint first, raising its failure. On return the live state is written (into
        the ``.partial`` folder) and may change again; the main process completes the checkpoint in the background.
        ``write_run_state(folder)`` writes the run's own files (main process only)."""
        if self.accelerator.is_main_process:
            self.wait()
        number, self.next_number = self.next_number, self.next_number + 1
        final = self.checkpoints_dir / f"checkpoint_{number}"
        staging = self.checkpoints_dir / f".checkpoint_{number}.partial"
        if self.accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)  # left by a save that was killed
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        try:
            self.accelerator.save_state(output_dir=str(staging))
            self.accelerator.wait_for_everyone()
            if self.accelerator.is_main_process:
                write_run_state(staging)
        except (OSError, RuntimeError) as error:
            if self.accelerator.is_main_process:
                shutil.rmtree(staging, ignore_errors=True)
            raise _write_error(error, self.checkpoints_dir, final) from error
        if self.accelerator.is_main_process:
            self._finishing = self._worker.submit(_finish, staging, final, step=step, keep=self.keep,
                                                  version=self.version)
        return final

    def wait(self) -> None:
        """Block until the checkpoint being completed in the background is in place (nothing to wait for on the
        other processes); a :class:`CheckpointError` naming it if it could not be completed."""
        finishing, self._finishing = self._finishing, None
        if finishing is not None:
            finishing.result()

    @contextlib.contextmanager
    def finished_on_exit(self) -> Iterator[None]:
        """:meth:`wait` when the block ends. On an exception in the block the checkpoint is still completed (the
        run's progress), and its failure, if any, is added as a note to that exception."""
        try:
            yield
        except BaseException as error:
            try:
                self.wait()
            except CheckpointError as failure:
                error.add_note(f"also: {failure}")
            raise
        self.wait()


def _finish(staging: Path, final: Path, *, step: int, keep: int, version: str) -> Path:
    """The background half of a save: fsync and hash every file of ``staging``, write the manifest last, rename the
    folder to ``final``, delete the complete checkpoints beyond ``keep``. A failure removes ``staging`` and becomes a
    :class:`CheckpointError` naming ``final``."""
    checkpoints_dir = final.parent
    try:
        _complete(staging, step=step, version=version)
        os.replace(staging, final)
        _fsync(checkpoints_dir)
        _delete_old(checkpoints_dir, keep)
    except Exception as error:
        shutil.rmtree(staging, ignore_errors=True)
        converted = _write_error(error, checkpoints_dir, final)
        if isinstance(converted, CheckpointError):
            raise converted from error
        raise CheckpointError(f"cannot complete checkpoint {final} ({type(error).__name__}: {error}); --resume "
                              f"latest continues from the newest complete checkpoint.") from error
    logger.info("step %d: checkpoint saved to %s", step, final)
    return final


def _complete(folder: Path, *, step: int, version: str) -> None:
    """fsync and hash every file (one after the other: this runs beside the training steps), then write the
    manifest (sizes and SHA-256) last and fsync the folder."""
    entries: dict[str, dict[str, Any]] = {}
    for path in _files(folder):
        _fsync(path)
        entries[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
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
