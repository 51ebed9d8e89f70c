"""The faiss search structures of a gallery: exact inner product, HNSW or IVF, and their recall against exact search.

Embeddings are L2-normalised, so inner product = cosine similarity and every structure uses
``METRIC_INNER_PRODUCT``:

* ``flat`` — ``IndexFlatIP``: exact brute force, the default.
* ``hnsw`` — ``IndexHNSWFlat`` (graph, ``hnsw_m`` links per node, ``ef_construction`` / ``ef_search`` beam widths);
  no training, fast queries, recall tuned by ``ef_search``.
* ``ivf`` — ``IndexIVFFlat`` (k-means coarse quantiser with ``ivf_lists`` cells, ``nprobe`` cells searched);
  needs training on the gallery (at least ``39 * ivf_lists`` vectors to train well).

:func:`recall_vs_exact` measures an approximate structure: the fraction of the exact top-k that it returns.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

from gsp_hub.checks import check_int

__all__ = ["INDEX_KINDS", "IndexSettings", "build_structure", "configure_loaded", "exact_search", "recall_vs_exact"]

INDEX_KINDS = ("flat", "hnsw", "ivf")
_MIN_POINTS_PER_LIST = 39  # faiss warns below this many training points per k-means centroid


@dataclass(frozen=True)
class IndexSettings:
    """Which faiss structure to build and its parameters (ignored by the kinds that do not use them).

    kind: ``flat`` (exact), ``hnsw`` or ``ivf`` (approximate).
    hnsw_m / ef_construction / ef_search: HNSW graph degree, build beam width, query beam width.
    ivf_lists: IVF cells; ``None`` picks ``4 * sqrt(n)`` capped at ``n / 39``. nprobe: IVF cells visited per query.
    """

    kind: str = "flat"
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    ivf_lists: int | None = None
    nprobe: int = 16

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"kind must be one of {INDEX_KINDS} (flat = exact search), got {self.kind!r}.")
        for name in ("hnsw_m", "ef_construction", "ef_search", "nprobe"):
            check_int(name, getattr(self, name), minimum=1)
        if self.ivf_lists is not None:
            check_int("ivf_lists", self.ivf_lists, minimum=1, meaning="or None: automatic")

    @property
    def exact(self) -> bool:
        return self.kind == "flat"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lists_for(self, count: int) -> int:
        """IVF cells for ``count`` gallery vectors."""
        if self.ivf_lists is not None:
            return min(self.ivf_lists, count)
        return max(1, min(int(4 * math.sqrt(count)), count // _MIN_POINTS_PER_LIST))


def _check_embeddings(embeddings: np.ndarray) -> np.ndarray:
    if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2 or embeddings.shape[0] == 0:
        shape = getattr(embeddings, "shape", type(embeddings).__name__)
        raise ValueError(f"embeddings must be a non-empty (n, dim) numpy array, got {shape}.")
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def build_structure(embeddings: np.ndarray, settings: IndexSettings) -> faiss.Index:
    """A faiss index over (n, dim) L2-normalised float32 ``embeddings`` (faiss id = row number)."""
    vectors = _check_embeddings(embeddings)
    count, dim = vectors.shape
    if settings.kind == "flat":
        structure = faiss.IndexFlatIP(dim)
    elif settings.kind == "hnsw":
        structure = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        structure.hnsw.efConstruction = settings.ef_construction
        structure.hnsw.efSearch = settings.ef_search
    else:
        lists = settings.lists_for(count)
        quantizer = faiss.IndexFlatIP(dim)
        structure = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        structure.cp.min_points_per_centroid = 1  # small galleries: no "too few points" warning noise
        structure.train(vectors)
        structure.nprobe = min(settings.nprobe, lists)
    structure.add(vectors)
    return structure


def configure_loaded(structure: faiss.Index, settings: IndexSettings) -> faiss.Index:
    """Re-apply the query-time parameters (ef_search, nprobe) to a structure read from disk."""
    if settings.kind == "hnsw":
        structure.hnsw.efSearch = settings.ef_search
    elif settings.kind == "ivf":
        structure.nprobe = min(settings.nprobe, structure.nlist)
    return structure


def exact_search(embeddings: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner-product search: (scores (q, k), ids (q, k))."""
    structure = faiss.IndexFlatIP(embeddings.shape[1])
    structure.add(_check_embeddings(embeddings))
    return structure.search(_check_embeddings(queries), k)


def recall_vs_exact(
    structure: faiss.Index, embeddings: np.ndarray, queries: np.ndarray, k: int = 10
) -> float:
    """Mean over queries of |approximate top-k ∩ exact top-k| / k (1.0 = identical to exact search)."""
    k = min(k, embeddings.shape[0])
    _, exact_ids = exact_search(embeddings, queries, k)
    _, approximate_ids = structure.search(_check_embeddings(queries), k)
    pairs = zip(exact_ids, approximate_ids, strict=True)
    hits = sum(len(set(exact) & set(found[found >= 0])) for exact, found in pairs)
    return hits / (k * len(queries))
