"""Retrieval metrics for deep metric learning: Recall@K, R-Precision, MAP@R (MLRC definitions) and NMI.

The numbers equal pytorch-metric-learning's ``AccuracyCalculator(k='max_bin_count')`` (``precision_at_1`` =
``recall@1``, ``r_precision``, ``mean_average_precision_at_r``, ``NMI``), but the nearest-neighbour search is an
exact blocked ``matmul`` (:mod:`gsp_hub.metrics.topk`): only one block of scores exists at a time (by default the
largest within 64 MiB), never ``N x N``; in leave-one-out mode each pair of items is scored once instead of twice;
and on hardware with fast bfloat16 products, large cosine searches are screened in bf16 and the candidates re-scored
in float32, with a certificate that the result is the exact float32 ranking (``bf16_screening``; where bf16 is slow,
as on AVX2-only CPUs, the float32 search runs alone, and ``bf16_screening=False`` forces that anywhere). The same
code runs on CUDA tensors, and a gallery larger than memory can be passed as a float32 ``numpy.memmap``
(``np.load(path, mmap_mode='r')``, with ``bf16_screening=False``, which would copy it to bf16): it is read one block
of rows at a time, in a single sweep while the running lists of all queries fit in 64 MiB.

Definitions, for a query q with label y_q and its gallery neighbours ranked best first:

* R_q = number of gallery items labelled y_q (leave-one-out: the class size minus one, the query itself is not
  a reference). As in PML with ``k='max_bin_count'``, the ranking is long enough for every query, so R_q is never
  capped.
* ``recall@k``: fraction of queries with at least one same-label item among their k nearest neighbours.
* ``r_precision``: mean over queries of (same-label items among the first R_q neighbours) / R_q.
* ``map@r``: mean over queries of (1 / R_q) * sum_{i <= R_q, neighbour i same-label} precision@i.
* ``nmi``: normalised mutual information (arithmetic mean of the entropies, as scikit-learn's default) between
  the query labels and a k-means clustering of the query embeddings (L2-normalised for ``'cosine'``) into as
  many clusters as there are labels (faiss k-means, seed 1234, 20 iterations: the clustering PML runs).

Queries without any same-label reference raise an error, where PML silently leaves them out of its averages. Inputs
that cannot be ranked raise before any work: no rows (or one row, leave-one-out), width 0, NaN/inf values, and for
``'cosine'`` rows shorter than ``MIN_COSINE_NORM`` = 1e-12 (a zero vector has no direction; ``F.normalize`` would
clamp its norm and rank it wrongly), reported by row index. Longer rows are normalised by their true norm.

Ties. Neighbours with equal scores are ranked by lower gallery index, in every chunking and with or without bf16
screening: the result is the stable order by (-score, index) of the scores the search computes. What ``chunk_size``
can change is the last bit of the scores themselves: each block is one BLAS matrix product, whose summation order
depends on the block shape, and cosine scores are products of L2-normalised rows, whose normalisation rounds. So
two cosines equal in exact arithmetic (a query against (1, 1) and against (3, 3), normalised to entries 0.70710677
and 0.70710683; or two different rows at the same angle) can differ by a unit in the last place, and then their
order can depend on ``chunk_size`` and differ from a float64 computation; only scores that agree to within float32
rounding can change places this way. Exact ties stay exact in every chunking when every score is computed without
rounding: euclidean scores of small-integer embeddings (all sums below 2^24), and cosine scores of rows whose norms
are powers of two and whose entries have few significant bits (so normalising and multiplying them is exact).
Making mathematically equal cosines compare equal more often would need other scores (e.g. raw products divided by
the norms afterwards: extra passes over every score block), which the search avoids for speed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .topk import MIN_COSINE_NORM, blocked_topk, squared_norms

__all__ = [
    "DISTANCES",
    "MIN_COSINE_NORM",
    "METRICS",
    "nearest_neighbors",
    "normalized_mutual_info",
    "retrieval_metrics",
]

DISTANCES: tuple[str, ...] = ("cosine", "euclidean")
METRICS: tuple[str, ...] = ("recall", "r_precision", "map_at_r", "nmi")
KMEANS_SEED = 1234
KMEANS_ITERATIONS = 20
_RESULT_KEYS = {"r_precision": "r_precision", "map_at_r": "map@r"}
_NEEDS_A_QUERY = "at least 1 query is needed; pass the query embeddings"
_NEEDS_A_GALLERY_ROW = "the gallery needs at least 1 row to search; pass the gallery embeddings"

ArrayLike = torch.Tensor | np.ndarray


@torch.no_grad()
def retrieval_metrics(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    query_embeddings: ArrayLike | None = None,
    query_labels: ArrayLike | None = None,
    ks: Sequence[int] = (1, 2, 4, 8),
    metrics: Sequence[str] = ("recall", "r_precision", "map_at_r"),
    distance: str = "cosine",
    chunk_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    bf16_screening: bool | None = None,
) -> dict[str, float]:
    """Retrieval metrics of ``embeddings`` (N, D) with integer ``labels`` (N,).

    Without ``query_embeddings`` every item queries all the others (leave-one-out: CUB, Cars, SOP protocol);
    with ``query_embeddings`` (Q, D) and ``query_labels`` (Q,) the queries search ``embeddings`` as the gallery
    (In-shop protocol). ``distance`` is ``'cosine'`` (L2-normalised inner product) or ``'euclidean'`` (squared
    L2, the ranking of PML's faiss ``IndexFlatL2``). Scores are computed in ``dtype`` (float32 or float64) on the
    embeddings' device (CPU or CUDA), one ``chunk_size x chunk_size`` block at a time (None: the largest block whose
    working set fits in ``topk.BLOCK_BUDGET_BYTES`` = 64 MiB, 3,456 for 512-d float32; 2,048 when screening);
    per-query values are averaged in float64. ``bf16_screening=True`` (cosine, float32) finds candidates with bf16
    products and certifies them (same result, about 2x faster where bf16 is fast); ``False`` forces the float32
    search alone; ``None`` screens searches of at least ``topk.SCREENING_MIN_PAIRS`` pairs on devices where
    :func:`~gsp_hub.metrics.topk.screening_available` (CUDA, CPUs with AVX512-BF16 or AMX). The kernels chosen are
    logged at DEBUG level by ``gsp_hub.metrics.topk``.

    Returns a dict with ``recall@k`` for every k in ``ks`` (if ``'recall'`` in ``metrics``), ``r_precision``,
    ``map@r`` and ``nmi``, each a fraction in [0, 1].
    """
    leave_one_out = query_embeddings is None
    _check_choice(distance, DISTANCES, "distance")
    metric_names = _check_metrics(metrics)
    _check_chunk_size(chunk_size)
    _check_screening(bf16_screening)
    if leave_one_out:
        if query_labels is not None:
            raise ValueError(
                "query_labels was given without query_embeddings; pass both for query/gallery retrieval or "
                "neither for leave-one-out retrieval."
            )
        gallery = _as_embeddings(embeddings, "embeddings", dtype, distance, min_rows=2, why=(
            "leave-one-out retrieval (every row queries all the others) needs at least 2; pass more embeddings, or "
            "a separate gallery as embeddings with query_embeddings/query_labels"))
        gallery_labels = _as_labels(labels, "labels", gallery)
        queries, labels_of_queries = gallery, gallery_labels
    else:
        if query_labels is None:
            raise ValueError(
                "query_embeddings was given without query_labels; pass query_labels (one integer label per "
                "query row) as well."
            )
        gallery = _as_embeddings(embeddings, "embeddings", dtype, distance, min_rows=1, why=_NEEDS_A_GALLERY_ROW)
        gallery_labels = _as_labels(labels, "labels", gallery)
        queries = _as_embeddings(query_embeddings, "query_embeddings", dtype, distance, min_rows=1,
                                 why=_NEEDS_A_QUERY)
        labels_of_queries = _as_labels(query_labels, "query_labels", queries)
        if queries.shape[1] != gallery.shape[1]:
            raise ValueError(
                f"query_embeddings has dimension {queries.shape[1]} but embeddings (the gallery) has "
                f"{gallery.shape[1]}; embed both with the same model."
            )
    ks = _check_ks(ks, len(gallery) - int(leave_one_out), leave_one_out) if "recall" in metric_names else ()
    relevant_counts = _same_label_counts(labels_of_queries, gallery_labels, leave_one_out)

    results: dict[str, float] = {}
    ranking_metrics = [name for name in metric_names if name in ("r_precision", "map_at_r")]
    if ks or ranking_metrics:
        depth = max(max(ks, default=0), int(relevant_counts.max()) if ranking_metrics else 0)
        per_query = _per_query_scores(
            queries, gallery, labels_of_queries, gallery_labels, relevant_counts,
            ks=ks, depth=depth, distance=distance, leave_one_out=leave_one_out, chunk_size=chunk_size,
            bf16_screening=bf16_screening,
        )
        wanted = [f"recall@{k}" for k in ks] + [_RESULT_KEYS[name] for name in ranking_metrics]
        results.update({key: per_query[key].mean().item() for key in wanted})
    if "nmi" in metric_names:
        points = F.normalize(queries, dim=1) if distance == "cosine" else queries
        clusters = _kmeans(points, num_clusters=len(torch.unique(labels_of_queries)))
        results["nmi"] = normalized_mutual_info(labels_of_queries.cpu().numpy(), clusters)
    return results


@torch.no_grad()
def nearest_neighbors(
    queries: ArrayLike,
    gallery: ArrayLike | None = None,
    *,
    k: int,
    distance: str = "cosine",
    chunk_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    bf16_screening: bool | None = None,
) -> torch.Tensor:
    """Exact k nearest gallery items (G, D) of every query (Q, D): (Q, k) int64 gallery indices, nearest first.

    ``gallery=None`` searches ``queries`` (N, D) among themselves (N >= 2), each row excluding itself (by index, not
    by distance). Equal scores are ordered by lower gallery index (see "Ties" in the module notes for when
    mathematically equal scores compare equal). Inputs are checked as in :func:`retrieval_metrics`. Memory: one
    block of scores (``chunk_size``, as in :func:`retrieval_metrics`) plus the running top-k lists.
    ``bf16_screening`` as in :func:`retrieval_metrics`.
    """
    _check_choice(distance, DISTANCES, "distance")
    _check_chunk_size(chunk_size)
    _check_screening(bf16_screening)
    leave_one_out = gallery is None
    if leave_one_out:
        query_matrix = gallery_matrix = _as_embeddings(queries, "queries", dtype, distance, min_rows=2, why=(
            "searching the rows among themselves (gallery=None) needs at least 2; pass more rows or a gallery"))
    else:
        query_matrix = _as_embeddings(queries, "queries", dtype, distance, min_rows=1, why=_NEEDS_A_QUERY)
        gallery_matrix = _as_embeddings(gallery, "gallery", dtype, distance, min_rows=1, why=_NEEDS_A_GALLERY_ROW)
    if query_matrix.shape[1] != gallery_matrix.shape[1]:
        raise ValueError(
            f"queries has dimension {query_matrix.shape[1]} but gallery has {gallery_matrix.shape[1]}; "
            "embed both with the same model."
        )
    (k,) = _check_ks((k,), len(gallery_matrix) - int(leave_one_out), leave_one_out, name="k")
    blocks = blocked_topk(query_matrix, gallery_matrix, k, distance=distance, leave_one_out=leave_one_out,
                          chunk_size=chunk_size, bf16_screening=bf16_screening)
    return torch.cat([indices for _, indices in blocks])


def normalized_mutual_info(labels: np.ndarray, assignments: np.ndarray) -> float:
    """NMI between two labellings (N,) of the same items, normalised by the mean of their entropies.

    Same value as ``sklearn.metrics.normalized_mutual_info_score`` (average_method='arithmetic'): 1.0 when both
    labellings are a single group, 0.0 when only one of them is.
    """
    labels, assignments = np.asarray(labels).ravel(), np.asarray(assignments).ravel()
    if len(labels) != len(assignments):
        raise ValueError(
            f"labels has {len(labels)} items but assignments has {len(assignments)}; pass one cluster id per label."
        )
    _, label_codes = np.unique(labels, return_inverse=True)
    _, cluster_codes = np.unique(assignments, return_inverse=True)
    num_labels, num_clusters = label_codes.max(initial=-1) + 1, cluster_codes.max(initial=-1) + 1
    if num_labels == num_clusters <= 1:
        return 1.0
    joint = np.bincount(label_codes * num_clusters + cluster_codes).astype(np.float64)
    label_of_cell, cluster_of_cell = np.divmod(np.nonzero(joint)[0], num_clusters)
    joint = joint[joint > 0]
    label_counts = np.bincount(label_codes).astype(np.float64)
    cluster_counts = np.bincount(cluster_codes).astype(np.float64)
    total = float(len(labels))
    mutual_info = np.sum(
        joint / total * np.log(joint * total / (label_counts[label_of_cell] * cluster_counts[cluster_of_cell]))
    )
    mutual_info = max(float(mutual_info), 0.0)
    if mutual_info == 0.0:
        return 0.0
    label_entropy = -np.sum(label_counts / total * np.log(label_counts / total))
    cluster_entropy = -np.sum(cluster_counts / total * np.log(cluster_counts / total))
    return float(mutual_info / ((label_entropy + cluster_entropy) / 2))


def _per_query_scores(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_labels: torch.Tensor,
    relevant_counts: torch.Tensor,
    *,
    ks: Sequence[int],
    depth: int,
    distance: str,
    leave_one_out: bool,
    chunk_size: int | None,
    bf16_screening: bool | None,
) -> dict[str, torch.Tensor]:
    """Float64 (Q,) per-query values: hit indicators (``recall@k``), R-precision and AP@R (``map@r``).

    Kept per query (O(Q) memory) and averaged once, so that the chunking cannot change the rounding of the mean.
    """
    keys = [f"recall@{k}" for k in ks] + ["r_precision", "map@r"]
    scores = {key: torch.empty(len(queries), dtype=torch.float64, device=queries.device) for key in keys}
    ranks = torch.arange(1, depth + 1, device=queries.device)
    neighbor_blocks = blocked_topk(queries, gallery, depth, distance=distance, leave_one_out=leave_one_out,
                                   chunk_size=chunk_size, bf16_screening=bf16_screening)
    for rows, neighbors in neighbor_blocks:
        hits = gallery_labels[neighbors] == query_labels[rows, None]  # (rows, depth)
        for k in ks:
            scores[f"recall@{k}"][rows] = hits[:, :k].any(1)
        counts = relevant_counts[rows]
        relevant_hits = hits & (ranks[None] <= counts[:, None])  # hits within the first R_q neighbours
        precision_at_hits = relevant_hits.cumsum(1).double() * relevant_hits / ranks
        scores["r_precision"][rows] = relevant_hits.sum(1).double() / counts
        scores["map@r"][rows] = precision_at_hits.sum(1) / counts
    return scores


def _kmeans(points: torch.Tensor, num_clusters: int) -> np.ndarray:
    """Cluster ids (N,) from faiss k-means (seeded, as PML's ``FaissKMeans(niter=20)``)."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError("metrics=('nmi',) clusters with faiss; install it with `pip install faiss-cpu`.") from error
    points = np.ascontiguousarray(points.float().cpu().numpy())
    kmeans = faiss.Kmeans(
        points.shape[1], num_clusters, niter=KMEANS_ITERATIONS, seed=KMEANS_SEED,
        min_points_per_centroid=1,  # only silences faiss' "please provide more points" warning
    )
    kmeans.train(points)
    return kmeans.index.search(points, 1)[1].ravel()


# ---------------------------------------------------------------------------------------------------------------
# Input checks: all run before any work, each error names the argument, the expectation, the value and the fix.


def _as_embeddings(
    values: ArrayLike, name: str, dtype: torch.dtype, distance: str, *, min_rows: int, why: str
) -> torch.Tensor:
    """A finite (N, D) tensor of ``dtype`` on the input's device, with N >= ``min_rows`` (``why`` explains the
    minimum and the fix in the error), D >= 1, and for ``'cosine'`` no row shorter than ``MIN_COSINE_NORM``."""
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}.")
    if isinstance(values, np.ndarray):
        values = _read_only_tensor(values)
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray of shape (N, D), got {type(values).__name__}.")
    if values.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (N, D), got shape {tuple(values.shape)}; flatten or stack the embeddings first."
        )
    if values.dtype == torch.bool or values.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}.")
    if values.shape[1] == 0:
        raise ValueError(
            f"{name} must have at least 1 column (N, D >= 1), got shape {tuple(values.shape)}: width-0 embeddings "
            "carry no information to rank by; check the model output."
        )
    if len(values) < min_rows:
        raise ValueError(f"{name} has {len(values)} row(s); {why}.")
    values = values.detach().to(dtype)
    squares = squared_norms(values)
    finite = torch.isfinite(squares)  # NaN/inf anywhere in a row, or an overflowing square
    if not finite.all():
        bad_rows = (~finite).nonzero().squeeze(1)
        raise ValueError(
            f"{name} has {len(bad_rows)} row(s) with NaN/inf values or squared norms overflowing {dtype} "
            f"(first rows: {bad_rows[:5].tolist()}); fix the model output or drop those rows."
        )
    if distance == "cosine":
        short = squares < MIN_COSINE_NORM**2
        if short.any():
            bad_rows = short.nonzero().squeeze(1)
            raise ValueError(
                f"{name} has {len(bad_rows)} row(s) of L2 norm below {MIN_COSINE_NORM:g} (first rows: "
                f"{bad_rows[:5].tolist()}): zero and near-zero vectors have no direction, so their cosine "
                f"similarity is undefined. Drop those rows (keep = {name}.norm(dim=1) >= {MIN_COSINE_NORM:g}), or "
                "use distance='euclidean'."
            )
    return values


def _read_only_tensor(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` without a copy, also of read-only arrays (``np.load(path, mmap_mode='r')``): the search
    only reads its inputs, so torch's warning about non-writable arrays does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _as_labels(values: ArrayLike, name: str, embeddings: torch.Tensor) -> torch.Tensor:
    """An int64 (N,) tensor on the embeddings' device, one label per embedding row."""
    if isinstance(values, np.ndarray):
        values = _read_only_tensor(values)
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray of shape (N,), got {type(values).__name__}.")
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {tuple(values.shape)}; pass one label per row.")
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class ids, got dtype {values.dtype}; convert with .long().")
    if len(values) != len(embeddings):
        embeddings_name = "query_embeddings" if name.startswith("query") else "embeddings"
        raise ValueError(
            f"{name} has {len(values)} entries but {embeddings_name} has {len(embeddings)} rows; "
            "pass exactly one label per embedding row."
        )
    return values.to(device=embeddings.device, dtype=torch.int64)


def _same_label_counts(query_labels: torch.Tensor, gallery_labels: torch.Tensor, leave_one_out: bool) -> torch.Tensor:
    """R (Q,): gallery items sharing each query's label (without the query itself in leave-one-out mode)."""
    classes, class_sizes = torch.unique(gallery_labels, return_counts=True)
    position = torch.searchsorted(classes, query_labels).clamp(max=len(classes) - 1)
    counts = torch.where(classes[position] == query_labels, class_sizes[position], 0) - int(leave_one_out)
    lonely = torch.unique(query_labels[counts < 1])
    if len(lonely):
        if leave_one_out:
            raise ValueError(
                f"labels has {len(lonely)} class(es) with a single sample (first: {lonely[:10].tolist()}); "
                "leave-one-out retrieval needs at least 2 samples per class. Drop those samples or pass a "
                "separate gallery as embeddings with query_embeddings/query_labels."
            )
        raise ValueError(
            f"query_labels has {len(lonely)} label(s) absent from the gallery labels (first: "
            f"{lonely[:10].tolist()}), {int((counts < 1).sum())} queries in all; such queries cannot retrieve "
            "anything. Drop them, e.g. keep = torch.isin(query_labels, labels)."
        )
    return counts


def _check_ks(ks: Sequence[int], gallery_size: int, leave_one_out: bool, name: str = "ks") -> tuple[int, ...]:
    """Positive ints no larger than the number of references per query."""
    if isinstance(ks, (int, str)) or not isinstance(ks, Sequence) or not ks:
        raise TypeError(f"{name} must be a non-empty sequence of positive ints such as (1, 2, 4, 8), got {ks!r}.")
    if not all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in ks):
        raise ValueError(f"{name} must hold positive ints, got {tuple(ks)!r}.")
    if max(ks) > gallery_size:
        references = "gallery items other than the query" if leave_one_out else "gallery items"
        raise ValueError(
            f"{name} contains {max(ks)} but each query only has {gallery_size} {references}; "
            f"use {name} <= {gallery_size}."
        )
    return tuple(ks)


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    if isinstance(metrics, str) or not isinstance(metrics, Sequence) or not metrics:
        raise TypeError(f"metrics must be a non-empty tuple of names from {METRICS}, got {metrics!r}.")
    for metric in metrics:
        _check_choice(metric, METRICS, "metrics")
    return tuple(metrics)


def _check_choice(value: str, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name}: unknown name {value!r}; choose from {choices}.")


def _check_screening(bf16_screening: bool | None) -> None:
    if bf16_screening is not None and not isinstance(bf16_screening, bool):
        raise TypeError(f"bf16_screening must be True, False or None (automatic), got {bf16_screening!r}.")


def _check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError(
            f"chunk_size must be a positive int (side of the score blocks) or None (the largest block within the "
            f"memory budget), got {chunk_size!r}."
        )
