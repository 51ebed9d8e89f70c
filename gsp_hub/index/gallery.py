"""``GalleryIndex``: a searchable gallery of image embeddings with its metadata, saved atomically, appendable.

Usage::

    index = GalleryIndex.build(model, "gallery/", model_id="runs/gsp-r50")   # or a datasets.Dataset
    index.save("gallery.index")
    index = GalleryIndex.load("gallery.index")
    index.append(model, "more_images/")                    # embeds only the new images
    index.save("gallery.index", overwrite=True)
    hits = index.search_images(model, [PIL.Image.open("query.jpg")], k=10)[0]   # list[Neighbour]

On disk an index is a folder, always replaced as a whole (temp folder + rename, :func:`gsp_hub.io.atomic_directory`):

* ``index.json`` — format tag and version, model id, model fingerprint (``config_hash``, see
  :func:`~gsp_hub.index.embedding.model_fingerprint`), preprocessing (``data_config``), faiss settings, the measured
  recall of an approximate structure, and the SHA-256 of every other file;
* ``embeddings.npy`` — (n, dim) float32, L2-normalised; the source of truth (append and rebuilds use it);
* ``metadata.parquet`` — one row per embedding: ``id`` (faiss id = row), ``path`` (image file) or ``dataset`` /
  ``split`` / ``row`` (data set row), ``label`` (None when absent);
* ``index.faiss`` — the approximate structure (HNSW / IVF), saved because building it is slow; the exact ``flat``
  structure is rebuilt from the embeddings on load.

Loading checks the format tag, the checksums, shapes and row counts, and raises a ValueError naming the problem
(foreign folder, corrupt or truncated file) before anything is used; saving refuses to replace a folder that is not
a gallery index, and an existing index unless ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset
from torch import nn

from gsp_hub.checks import check_int
from gsp_hub.hub.loading import file_sha256
from gsp_hub.io import atomic_directory
from gsp_hub.index.embedding import (
    GalleryItem,
    embed_images,
    embed_items,
    gallery_items,
    model_data_config,
    model_fingerprint,
)
from gsp_hub.index.structures import IndexSettings, build_structure, configure_loaded, recall_vs_exact

__all__ = ["FORMAT", "FORMAT_VERSION", "GalleryIndex", "Neighbour", "check_save_target"]

FORMAT = "gsp_hub.gallery_index"
FORMAT_VERSION = 1
HEADER_FILE = "index.json"
EMBEDDINGS_FILE = "embeddings.npy"
METADATA_FILE = "metadata.parquet"
STRUCTURE_FILE = "index.faiss"
EXACT = IndexSettings()  # default structure: flat inner product (exact search)
RECALL_K = 10
RECALL_QUERIES = 1000
_METADATA_FIELDS = ("path", "dataset", "split", "row", "label")
_METADATA_SCHEMA = pa.schema(
    [("id", pa.int64()), ("path", pa.string()), ("dataset", pa.string()), ("split", pa.string()),
     ("row", pa.int64()), ("label", pa.string())]
)


@dataclass(frozen=True)
class Neighbour:
    """One search result: rank (1 = best), cosine ``score``, gallery ``id`` and the gallery item's metadata."""

    rank: int
    score: float
    id: int
    path: str | None
    dataset: str | None
    split: str | None
    row: int | None
    label: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_header(directory: Path) -> dict[str, Any]:
    """The parsed ``index.json`` of a gallery index folder; FileNotFoundError / ValueError for anything else."""
    if not directory.is_dir():
        raise FileNotFoundError(f"gallery index {directory} does not exist (or is not a folder); build one with "
                                "GalleryIndex.build(...).save(folder) or `gsp-hub index build`.")
    header_file = directory / HEADER_FILE
    if not header_file.is_file():
        raise ValueError(f"{directory} is not a gsp_hub gallery index: it has no {HEADER_FILE}.")
    try:
        header = json.loads(header_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{header_file} is corrupt (not valid JSON: {error}); rebuild the index.") from error
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{directory} is not a gsp_hub gallery index: {HEADER_FILE} has no format {FORMAT!r} "
                         f"(found {header.get('format') if isinstance(header, dict) else type(header).__name__!r}).")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory} has gallery index format version {header.get('format_version')!r}; this "
                         f"gsp_hub reads version {FORMAT_VERSION}. Rebuild the index or upgrade gsp_hub.")
    return header


def check_save_target(directory: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """``directory`` as an absolute path if an index may be saved there: it does not exist, or it holds a gallery
    index and ``overwrite`` is True. A folder that is not a gallery index is never replaced."""
    target = Path(directory).expanduser().absolute()
    if not target.exists():
        return target
    try:
        _read_header(target)
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"{target} exists and is not a gsp_hub gallery index; refusing to replace it ({error}). "
                         "Choose a new folder (or delete a damaged index yourself).") from error
    if not overwrite:
        raise FileExistsError(f"{target} already holds a gallery index; pass overwrite=True (--overwrite) to "
                              "replace it, or append to it.")
    return target


class GalleryIndex:
    """L2-normalised gallery embeddings (n, dim), their metadata, and a faiss structure to search them.

    Build with :meth:`build` (from a model and images) or :meth:`from_embeddings`; :meth:`load` / :meth:`save` on
    disk. ``config_hash`` is the fingerprint of the model (and preprocessing) that produced the embeddings; every
    method that takes a model checks it first.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        items: Sequence[GalleryItem],
        *,
        model_id: str,
        config_hash: str,
        data_config: dict[str, Any],
        settings: IndexSettings = EXACT,
        structure: faiss.Index | None = None,
        recall: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2 or embeddings.shape[0] == 0:
            shape = getattr(embeddings, "shape", type(embeddings).__name__)
            raise ValueError(f"embeddings must be a non-empty (n, dim) array, got {shape}.")
        if len(items) != embeddings.shape[0]:
            raise ValueError(f"got {len(items)} metadata items for {embeddings.shape[0]} embeddings; one per row.")
        if not isinstance(settings, IndexSettings):
            raise TypeError(f"settings must be an IndexSettings, got {type(settings).__name__}.")
        norms = np.linalg.norm(embeddings, axis=1)
        if not np.all(np.abs(norms - 1.0) < 1e-3):
            raise ValueError("embeddings must be L2-normalised (inner product = cosine); divide each row by its norm.")
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.items = [GalleryItem(**{field: getattr(item, field) for field in _METADATA_FIELDS}) for item in items]
        self.model_id = model_id
        self.config_hash = config_hash
        self.data_config = data_config
        self.settings = settings
        self.structure = structure if structure is not None else build_structure(self.embeddings, settings)
        self.recall = recall if recall is not None or settings.exact else self._measure_recall()

    # construction -----------------------------------------------------------------------------------------------

    @classmethod
    def from_embeddings(
        cls,
        embeddings: np.ndarray,
        items: Sequence[GalleryItem] | None = None,
        *,
        model_id: str = "embeddings",
        config_hash: str = "",
        data_config: dict[str, Any] | None = None,
        settings: IndexSettings = EXACT,
    ) -> GalleryIndex:
        """An index over given L2-normalised ``embeddings``; ``items`` default to metadata-less rows."""
        items = [GalleryItem() for _ in range(len(embeddings))] if items is None else items
        return cls(embeddings, items, model_id=model_id, config_hash=config_hash, data_config=data_config or {},
                   settings=settings)

    @classmethod
    def build(
        cls,
        model: nn.Module,
        images: str | os.PathLike[str] | Dataset,
        *,
        model_id: str | None = None,
        settings: IndexSettings = EXACT,
        input_size: int | None = None,
        batch_size: int = 64,
        progress: bool = True,
        dataset_name: str | None = None,
        split: str | None = None,
    ) -> GalleryIndex:
        """Embed every image of a folder or ``datasets.Dataset`` with ``model`` and index them.

        Args:
            model: embedding model (``forward_head(forward_features(x), pre_logits=True)`` is used).
            images: a folder (recursively; ``root/<class>/<image>`` gives labels) or a ``datasets.Dataset``.
            model_id: recorded to reload the model for search (export folder or Hub id); default: its Hub id or
                architecture name.
            settings: faiss structure (exact ``flat`` by default).
            input_size: image side; default: the model's timm preprocessing.
            batch_size: images per forward pass. progress: show a progress bar.
            dataset_name / split: how a data set source is recorded in the metadata.
        """
        items = gallery_items(images, name=dataset_name, split=split)
        data_config = model_data_config(model, input_size)
        config_hash = model_fingerprint(model, data_config)
        embeddings = embed_items(model, items, data_config, batch_size=batch_size, progress=progress)
        return cls(embeddings, items, model_id=model_id or _default_model_id(model), config_hash=config_hash,
                   data_config=data_config, settings=settings)

    def check_model(self, model: nn.Module) -> None:
        """Raise ValueError unless ``model`` (with this index's preprocessing) produced this index's embeddings."""
        fingerprint = model_fingerprint(model, self.data_config)
        if fingerprint != self.config_hash:
            raise ValueError(
                f"the model differs from the one that built this index (model {self.model_id!r}, config hash "
                f"{self.config_hash[:12]}..., this model {fingerprint[:12]}...): its embeddings would not be "
                "comparable. Use the same model (same weights and preprocessing), or build a new index."
            )

    def append(
        self,
        model: nn.Module,
        images: str | os.PathLike[str] | Dataset,
        *,
        batch_size: int = 64,
        progress: bool = True,
        dataset_name: str | None = None,
        split: str | None = None,
    ) -> int:
        """Embed only the new ``images`` with ``model`` (checked first) and add them; returns how many were added.

        The search structure is rebuilt from all stored embeddings, so an appended index equals a full rebuild (for
        HNSW / IVF that rebuild, not the embedding, dominates the cost of a small append).
        """
        self.check_model(model)
        items = gallery_items(images, name=dataset_name, split=split)
        embeddings = embed_items(model, items, self.data_config, batch_size=batch_size, progress=progress)
        if embeddings.shape[1] != self.dim:
            raise ValueError(f"new embeddings have {embeddings.shape[1]} dimensions, the index {self.dim}.")
        self.embeddings = np.concatenate([self.embeddings, embeddings])
        self.items.extend(GalleryItem(**{field: getattr(item, field) for field in _METADATA_FIELDS}) for item in items)
        self.structure = build_structure(self.embeddings, self.settings)
        self.recall = None if self.settings.exact else self._measure_recall()
        return len(items)

    # search -----------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of L2-normalised ``queries`` (q, dim): (scores (q, k'), ids (q, k')), k' = min(k, len); id -1 =
        no result (possible with approximate structures)."""
        check_int("k", k, minimum=1, meaning="number of neighbours")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (q, {self.dim}), got {queries.shape}.")
        return self.structure.search(queries, min(k, len(self)))

    def neighbours(self, queries: np.ndarray, k: int = 10) -> list[list[Neighbour]]:
        """:meth:`search` as :class:`Neighbour` lists (one per query, best first)."""
        scores, ids = self.search(queries, k)
        return [
            [
                Neighbour(rank=rank, score=float(score), id=int(index),
                          **{field: getattr(self.items[index], field) for field in _METADATA_FIELDS})
                for rank, (score, index) in enumerate(zip(row_scores, row_ids, strict=True), start=1)
                if index >= 0
            ]
            for row_scores, row_ids in zip(scores, ids, strict=True)
        ]

    def search_images(self, model: nn.Module, images: Sequence[PIL.Image.Image], k: int = 10) -> list[list[Neighbour]]:
        """Embed query images with ``model`` (checked against the index first) and return their neighbours."""
        self.check_model(model)
        return self.neighbours(embed_images(model, images, self.data_config), k)

    def _measure_recall(self) -> dict[str, Any]:
        """Recall@10 of the approximate structure vs exact search, on up to 1000 gallery vectors as queries."""
        generator = np.random.default_rng(0)
        count = min(RECALL_QUERIES, len(self))
        queries = self.embeddings[np.sort(generator.choice(len(self), size=count, replace=False))]
        k = min(RECALL_K, len(self))
        return {"k": k, "queries": count, "recall": recall_vs_exact(self.structure, self.embeddings, queries, k)}

    # persistence ------------------------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the index to ``directory`` atomically (complete new folder, or the old one untouched).

        Raises:
            FileExistsError: ``directory`` is an existing gallery index and ``overwrite`` is False.
            ValueError: ``directory`` exists but is not a gallery index (it is never replaced).
        """
        target = check_save_target(directory, overwrite=overwrite)
        with atomic_directory(target) as staging:
            np.save(staging / EMBEDDINGS_FILE, self.embeddings, allow_pickle=False)
            rows = {"id": list(range(len(self)))}
            rows.update({field: [getattr(item, field) for item in self.items] for field in _METADATA_FIELDS})
            pq.write_table(pa.table(rows, schema=_METADATA_SCHEMA), staging / METADATA_FILE)
            files = [EMBEDDINGS_FILE, METADATA_FILE]
            if not self.settings.exact:
                faiss.write_index(self.structure, str(staging / STRUCTURE_FILE))
                files.append(STRUCTURE_FILE)
            header = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "gsp_hub_version": _package_version(),
                "model_id": self.model_id,
                "config_hash": self.config_hash,
                "data_config": self.data_config,
                "count": len(self),
                "dim": self.dim,
                "metric": "inner product of L2-normalised embeddings (cosine similarity)",
                "settings": self.settings.to_dict(),
                "recall_vs_exact": self.recall,
                "sha256": {name: file_sha256(staging / name) for name in files},
            }
            (staging / HEADER_FILE).write_text(json.dumps(header, indent=2), encoding="utf-8")
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> GalleryIndex:
        """Read an index folder written by :meth:`save`, after checking format, checksums, shapes and counts."""
        folder = Path(directory).expanduser().absolute()
        header = _read_header(folder)
        try:
            settings = IndexSettings(**header["settings"])
            count, dim, checksums = int(header["count"]), int(header["dim"]), dict(header["sha256"])
            model_id, config_hash, data_config = header["model_id"], header["config_hash"], header["data_config"]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{folder / HEADER_FILE} is corrupt (bad or missing entry: {error}); rebuild the index."
            ) from error
        for name, expected in checksums.items():
            file = folder / name
            if not file.is_file():
                raise ValueError(f"gallery index {folder} is incomplete: {name} is missing; rebuild the index.")
            if file_sha256(file) != expected:
                raise ValueError(f"gallery index {folder} is corrupt: {name} does not match the checksum in "
                                 f"{HEADER_FILE}; rebuild the index.")
        embeddings = np.load(folder / EMBEDDINGS_FILE, allow_pickle=False)
        table = pq.read_table(folder / METADATA_FILE)
        if embeddings.shape != (count, dim) or embeddings.dtype != np.float32 or table.num_rows != count:
            raise ValueError(f"gallery index {folder} is inconsistent: {HEADER_FILE} says {count} x {dim}, the files "
                             f"hold {embeddings.shape} embeddings and {table.num_rows} metadata rows; rebuild it.")
        items = [GalleryItem(**{field: row[field] for field in _METADATA_FIELDS}) for row in table.to_pylist()]
        structure = None
        if not settings.exact:
            structure = configure_loaded(faiss.read_index(str(folder / STRUCTURE_FILE)), settings)
            if structure.ntotal != count or structure.d != dim:
                raise ValueError(f"gallery index {folder} is inconsistent: {STRUCTURE_FILE} holds "
                                 f"{structure.ntotal} x {structure.d} vectors, expected {count} x {dim}.")
        return cls(embeddings, items, model_id=model_id, config_hash=config_hash, data_config=data_config,
                   settings=settings, structure=structure, recall=header.get("recall_vs_exact"))


def _package_version() -> str:
    import gsp_hub

    return gsp_hub.__version__


def _default_model_id(model: nn.Module) -> str:
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    return str(cfg.get("hf_hub_id") or cfg.get("architecture") or type(model).__name__)
