"""A split's embeddings written to disk one batch at a time: galleries larger than memory, resumable.

:func:`embed_split_to_disk` embeds an evaluation split as :func:`~gsp_hub.train.evaluation.embed_split` does, but
holds one gathered batch at a time: the main process writes each batch's rows into arrays preallocated on disk, and
every process gets them back as read-only memory maps, which :func:`gsp_hub.metrics.retrieval_metrics` reads one
block of rows at a time (with ``bf16_screening=False``). The directory holds:

* ``embeddings.npy`` (N, D) float32 and ``labels.npy`` (N,) int64, ``.npy`` arrays (``np.load(path,
  mmap_mode="r")``), present only when complete;
* ``progress.json``: ``{"fingerprint", "total_rows", "dim", "rows", "complete"}``, whose embeddings these are and how
  many leading rows are on disk, rewritten atomically (:func:`gsp_hub.io.write_json`);
* ``embeddings.partial.npy`` and ``labels.partial.npy``, the arrays being filled (``np.lib.format.open_memmap``),
  while the split is being embedded.

Guarantees:

* Nothing incomplete looks complete: the partial arrays become ``embeddings.npy`` and ``labels.npy`` by
  ``os.replace`` once every row is written, flushed and recorded.
* Nothing recorded is lost: the rows that ``progress.json`` counts were flushed (``memmap.flush``) before it was
  written (every ``progress_every_s`` seconds), so a process killed at any point leaves at most the rows embedded
  since then to embed again.
* A rerun with the same fingerprint resumes at the first unrecorded row without loading the batches before it
  (``accelerator.skip_first_batches``), and a complete directory is returned without running the network. A
  directory of another fingerprint or row count raises ValueError before any work; ``overwrite=True`` deletes its
  arrays and starts again.
* Order: the evaluation loader is sequential (:func:`gsp_hub.train.data.eval_loader`), and accelerate gives
  process p of P the batches p, p + P, ... (the last ones padded with rows from the start, ``even_batches``), which
  the gather puts back in rank order: the gathered rows come in dataset order, and the rows past N (the padding) are
  dropped. A rerun with another batch size or number of processes resumes at the last whole step (P batches) before
  the recorded row, embedding those few rows again.
* One writer per directory: the main process holds the directory's run lock (:mod:`gsp_hub.train.run_lock`,
  ``.gsp_hub-run.lock``) while it embeds; a second process on the same directory stops with ``RunFolderInUse``.
* Only the main process writes; every process takes part in the gathers and returns memory maps of the final files,
  so the directory must be visible to all of them (one machine, or a shared file system).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import Accelerator
from datasets import Dataset
from torch import Tensor, nn
from torch.utils.data import DataLoader

from gsp_hub.io import write_json
from gsp_hub.train.evaluation import gathered_batches
from gsp_hub.train.run_lock import hold_run_lock

__all__ = ["EMBEDDINGS_FILE", "LABELS_FILE", "PROGRESS_FILE", "check_embeddings_directory", "embed_split_to_disk",
           "split_fingerprint"]

logger = logging.getLogger(__name__)

EMBEDDINGS_FILE = "embeddings.npy"
LABELS_FILE = "labels.npy"
PROGRESS_FILE = "progress.json"
_PARTIAL = {EMBEDDINGS_FILE: "embeddings.partial.npy", LABELS_FILE: "labels.partial.npy"}
_PROGRESS_KEYS = {"fingerprint", "total_rows", "dim", "rows", "complete"}


def split_fingerprint(model: nn.Module, data_config: Mapping[str, Any], rows: Dataset, **settings: Any) -> str:
    """SHA-256 (hex) of what determines a split's embeddings: the model with its preprocessing ``data_config``
    (:func:`gsp_hub.index.embedding.model_fingerprint`: architecture, hyperparameters, every weight), the split's rows
    (their ``datasets`` fingerprint, which follows the data files and every selection made of them, and their count)
    and ``settings`` that change the outputs (e.g. the split's name, the mixed precision)."""
    from gsp_hub.index.embedding import model_fingerprint

    description = {"model": model_fingerprint(model, dict(data_config)), "rows": rows._fingerprint,
                   "num_rows": len(rows), "settings": settings}
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()


def check_embeddings_directory(directory: str | os.PathLike[str], argument: str = "directory") -> Path:
    """``directory`` as a Path, checked to be a folder or absent (it is created); ``argument`` names it in the
    error."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{argument} {path} is a file; the embeddings need a folder: pass a folder path (it is "
                         "created if absent)")
    return path


def embed_split_to_disk(network: nn.Module, loader: DataLoader, accelerator: Accelerator,
                        directory: str | os.PathLike[str], *, fingerprint: str, overwrite: bool = False,
                        channels_last: bool = False, progress_every_s: float = 10.0) -> tuple[np.memmap, np.ndarray]:
    """Embeddings (N, D) float32, as a read-only memory map of ``directory/embeddings.npy``, and labels (N,) int64 of
    a prepared sequential evaluation loader of N rows; the network returns embeddings (B, D) or a tuple starting with
    them. Resumes or reuses ``directory`` when its ``progress.json`` holds ``fingerprint`` (e.g.
    :func:`split_fingerprint`); see the module notes for the layout and the guarantees. ``progress_every_s``: seconds
    between two records of the rows written (0: after every batch)."""
    directory = check_embeddings_directory(directory)
    total_rows = len(loader.dataset)
    if total_rows == 0:
        raise ValueError("the split to embed has no rows; pick a split with images")
    with hold_run_lock(directory, "directory") if accelerator.is_main_process else nullcontext():  # one writer
        return _embed_to_directory(network, loader, accelerator, directory, fingerprint, total_rows,
                                   overwrite=overwrite, channels_last=channels_last, progress_every_s=progress_every_s)


def _embed_to_directory(network: nn.Module, loader: DataLoader, accelerator: Accelerator, directory: Path,
                        fingerprint: str, total_rows: int, *, overwrite: bool, channels_last: bool,
                        progress_every_s: float) -> tuple[np.memmap, np.ndarray]:
    """:func:`embed_split_to_disk` once ``directory`` is checked and locked."""
    progress = None if overwrite else _read_progress(directory)
    if progress is not None and (progress["fingerprint"], progress["total_rows"]) != (fingerprint, total_rows):
        raise ValueError(
            f"{directory} holds the embeddings of another model or data set (fingerprint {progress['fingerprint']}, "
            f"{progress['total_rows']} rows), not of this one (fingerprint {fingerprint}, {total_rows} rows); pass "
            "another directory, or overwrite it (gsp-hub eval --overwrite-embeddings)")
    rows_per_step = getattr(loader, "total_batch_size", None) or loader.batch_size
    start = _resume_row(directory, progress, total_rows, rows_per_step)
    accelerator.wait_for_everyone()  # every process has read the directory before the main process changes it
    if start == total_rows:
        logger.info("%s holds the complete embeddings of this split: nothing to embed", directory)
        if accelerator.is_main_process and not progress["complete"]:
            _finish(directory, progress)  # the previous run stopped between its last record and the renames
    else:
        if start:
            logger.info("%s: resuming at row %d of %d", directory, start, total_rows)
        arrays = (_PartialArrays(directory, fingerprint, total_rows, progress if start else None, start,
                                 progress_every_s) if accelerator.is_main_process else None)
        batches = accelerator.skip_first_batches(loader, start // rows_per_step) if start else loader
        row = start
        for (embeddings,), labels in gathered_batches(network, batches, accelerator, channels_last=channels_last):
            count = min(len(labels), total_rows - row)  # a skipped loader's gather keeps the padding: drop it here
            if arrays is not None:
                arrays.write(row, embeddings[:count], labels[:count])
            row += count
        if arrays is not None:
            arrays.finish()
    accelerator.wait_for_everyone()
    return np.load(directory / EMBEDDINGS_FILE, mmap_mode="r"), np.load(directory / LABELS_FILE)


class _PartialArrays:
    """The main process's side of :func:`embed_split_to_disk`: the partial arrays, filled row by row, and the
    progress file that records them."""

    def __init__(self, directory: Path, fingerprint: str, total_rows: int, progress: dict[str, Any] | None,
                 rows: int, progress_every_s: float) -> None:
        """Resumes at ``rows`` with the partial arrays that ``progress`` describes; without ``progress``, deletes
        the directory's arrays and records 0 rows of ``fingerprint``."""
        self.directory, self.progress_every_s = directory, progress_every_s
        self.progress = {"fingerprint": fingerprint, "total_rows": total_rows, "dim": None, "rows": 0,
                         "complete": False}
        self.embeddings: np.memmap | None = None
        self.labels: np.memmap | None = None
        if progress is None:
            directory.mkdir(parents=True, exist_ok=True)
            for name in (EMBEDDINGS_FILE, LABELS_FILE):
                (directory / name).unlink(missing_ok=True)
                (directory / _PARTIAL[name]).unlink(missing_ok=True)
            self._record()
        else:
            self.progress.update(dim=progress["dim"], rows=rows)
            self.embeddings, self.labels = (np.lib.format.open_memmap(directory / _PARTIAL[name], mode="r+")
                                            for name in (EMBEDDINGS_FILE, LABELS_FILE))
        self.recorded_at = time.monotonic()

    def write(self, row: int, embeddings: Tensor, labels: Tensor) -> None:
        """Write embeddings (B, D) and labels (B,) at ``row``; record the rows written when ``progress_every_s``
        has passed since the last record."""
        dim = embeddings.shape[1]
        if self.embeddings is None:
            self.progress["dim"] = dim
            total_rows = self.progress["total_rows"]
            self.embeddings = np.lib.format.open_memmap(self.directory / _PARTIAL[EMBEDDINGS_FILE], mode="w+",
                                                        dtype=np.float32, shape=(total_rows, dim))
            self.labels = np.lib.format.open_memmap(self.directory / _PARTIAL[LABELS_FILE], mode="w+",
                                                    dtype=np.int64, shape=(total_rows,))
        elif dim != self.progress["dim"]:
            raise ValueError(f"the network gives {dim}-d embeddings but {self.directory} holds "
                             f"{self.progress['dim']}-d ones of the same fingerprint; pass another directory")
        self.embeddings[row:row + len(embeddings)] = embeddings.numpy()
        self.labels[row:row + len(labels)] = labels.numpy()
        self.progress["rows"] = row + len(embeddings)
        if time.monotonic() - self.recorded_at >= self.progress_every_s:
            self._record()

    def finish(self) -> None:
        """Record every row, then rename the arrays to their final names and mark the directory complete."""
        self._record()
        self.embeddings = self.labels = None  # unmapped
        _finish(self.directory, self.progress)

    def _record(self) -> None:
        """Flush the arrays, then rewrite ``progress.json``: the rows it counts are on disk."""
        for array in (self.embeddings, self.labels):
            if array is not None:
                array.flush()
        write_json(self.directory / PROGRESS_FILE, self.progress)
        self.recorded_at = time.monotonic()


def _finish(directory: Path, progress: dict[str, Any]) -> None:
    """Rename the partial arrays still present to their final names (embeddings last), then mark ``progress``
    complete."""
    for name in (LABELS_FILE, EMBEDDINGS_FILE):
        partial = directory / _PARTIAL[name]
        if partial.exists():
            os.replace(partial, directory / name)
    write_json(directory / PROGRESS_FILE, {**progress, "complete": True})


def _read_progress(directory: Path) -> dict[str, Any] | None:
    """The directory's ``progress.json``; None if absent. A file that is not one raises ValueError."""
    path = directory / PROGRESS_FILE
    if not path.is_file():
        return None
    try:
        progress = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a progress file of gsp_hub's embeddings ({error}); pass another "
                         "directory, or overwrite it (gsp-hub eval --overwrite-embeddings)") from error
    if not isinstance(progress, dict) or progress.keys() != _PROGRESS_KEYS:
        raise ValueError(f"{path} is not a progress file of gsp_hub's embeddings (keys {sorted(_PROGRESS_KEYS)}); "
                         "pass another directory, or overwrite it (gsp-hub eval --overwrite-embeddings)")
    return progress


def _resume_row(directory: Path, progress: dict[str, Any] | None, total_rows: int, rows_per_step: int) -> int:
    """The first row to embed: the rows ``progress`` records (rounded down to a whole step of ``rows_per_step``)
    when the arrays they were written to are on disk with the recorded shapes, else 0. ``total_rows``: nothing left
    to embed (the final renames may be left to do, see :func:`_finish`)."""
    if progress is None or not progress["rows"]:
        return 0
    rows, dim = progress["rows"], progress["dim"]
    done = rows == total_rows
    paths = [directory / (name if done and not (directory / _PARTIAL[name]).exists() else _PARTIAL[name])
             for name in (EMBEDDINGS_FILE, LABELS_FILE)]
    if [_shape(path) for path in paths] != [(total_rows, dim), (total_rows,)]:
        return 0
    return rows if done else rows - rows % rows_per_step


def _shape(path: Path) -> tuple[int, ...] | None:
    """The shape of the ``.npy`` array at ``path`` (its header only); None if absent or unreadable."""
    try:
        return np.load(path, mmap_mode="r").shape
    except (OSError, ValueError):
        return None
