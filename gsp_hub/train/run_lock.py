"""One run per output folder: an advisory lock that a second run on the same ``--output-dir`` meets before it writes.

Two runs writing into one folder overwrite each other's checkpoints, model and metrics (measured: two copies of
the same job collided on ``checkpoint_0``'s rename, each run's files half the other's). The main process of a run
takes an exclusive ``flock`` on ``<output_dir>/.gsp_hub-run.lock`` (the file holds its PID) for the whole run; a
second run finds it held and stops with one clear error before any work. The kernel releases the lock when the
process ends, however it ends (``kill -9`` included), so a crashed run never blocks its ``--resume`` (DataLoader
worker processes forked during the run share the lock until they exit, which they do within seconds of their
parent's death). The file stays in the run folder (:data:`RUN_LOCK_NAME`) holding the last holder's PID; it is not
a run output. Where ``fcntl`` is missing (Windows) runs are not locked.

    with hold_run_lock(Path("runs/train")):   # OSError if another run holds it
        ...
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None

__all__ = ["RUN_LOCK_NAME", "RunFolderInUse", "hold_run_lock"]

RUN_LOCK_NAME = ".gsp_hub-run.lock"


class RunFolderInUse(OSError):
    """Another process holds the run lock of the output folder."""


@contextmanager
def hold_run_lock(output_dir: Path, argument: str = "--output-dir") -> Iterator[None]:
    """Hold the run lock of ``output_dir`` (created if absent) while the block runs; :class:`RunFolderInUse` (an
    ``OSError``) naming the folder (as ``argument``, the option or parameter that chose it) and the holder's PID if
    another process holds it."""
    if fcntl is None:
        yield
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / RUN_LOCK_NAME
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderInUse(
                f"{argument} {output_dir} is in use by another gsp_hub run (process {holder}); wait for it to end, "
                f"or choose another {argument}."
            ) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(handle)  # closing the descriptor releases the lock
