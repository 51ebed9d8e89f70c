"""Exact ties in nearest_neighbors and retrieval_metrics, fuzzed over chunk sizes 1, 2, 3, 7, 48, 2048 and the
automatic block size, and bf16 screening on and off, against a float64 brute force ranked by (-score, index); and the
float32 search over many blocks (full running lists, blocks that do not divide the data, padded tiles).

Where every score is exact in float32 (cosine of rows with power-of-two norms and few-bit entries, euclidean of small
integers), ties are real ties and the order must be exactly the lower-index rule in every chunking. Where it is not
(cosine of arbitrary small-integer rows: normalisation rounds), only the documented guarantee is checked: the
neighbours found have the best float64 scores to within float32 rounding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from gsp_hub.metrics import nearest_neighbors, retrieval_metrics

CHUNK_SIZES = (1, 2, 3, 7, 48, 2048, None)  # 48: two blocks, the second ragged; 2048 and None: one block
SEEDS = range(2)
NUM_ROWS, NUM_QUERIES = 56, 12  # galleries of 44 or 55 rows: longer than the bf16 screening's candidate lists (up to
# k + 32 = 40 entries here), which it needs to run at all

# small integer rows of squared norm 1, 4 or 16: normalised entries are multiples of 1/16, so normalising, bf16
# rounding and every dot product are exact; 820 rows, 730 directions, only 33 distinct cosines between them
EXACT_COSINE_ROWS = np.array(
    [row for row in itertools.product(range(-3, 4), repeat=5) if sum(x * x for x in row) in (1, 4, 16)]
)


def exact_cosine_rows(rng: np.random.Generator, num_rows: int) -> torch.Tensor:
    """(num_rows, 5) float32 rows drawn (with repeats) from EXACT_COSINE_ROWS, scaled by powers of two."""
    rows = EXACT_COSINE_ROWS[rng.integers(0, len(EXACT_COSINE_ROWS), num_rows)]
    return torch.from_numpy(rows * 2.0 ** rng.integers(-3, 4, (num_rows, 1))).float()


def small_integer_rows(rng: np.random.Generator, num_rows: int) -> torch.Tensor:
    """(num_rows, 4) float32 rows with entries in {-2, ..., 2}, none all zero."""
    rows = rng.integers(-2, 3, (num_rows, 4))
    rows[~rows.any(1), 0] = 1
    return torch.from_numpy(rows).float()


def float64_scores(queries: torch.Tensor, gallery: torch.Tensor, distance: str) -> np.ndarray:
    """(Q, G) float64 scores, larger = nearer: cosine, or minus the squared euclidean distance."""
    q, g = queries.double().numpy(), gallery.double().numpy()
    if distance == "cosine":
        return (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    return -((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)


def brute_force_ranking(scores: np.ndarray, leave_one_out: bool) -> np.ndarray:
    """(Q, G or G - 1) gallery indices of every row sorted by (-score, index), the query itself left out."""
    rankings = []
    for query, row in enumerate(scores):
        order = np.lexsort((np.arange(len(row)), -row))  # last key first: by -score, then by index
        rankings.append(order[order != query] if leave_one_out else order)
    return np.array(rankings)


def brute_force_metrics(ranking: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                        ks: tuple[int, ...], leave_one_out: bool) -> dict[str, float]:
    """recall@k, R-precision and MAP@R from full rankings, by plain loops."""
    hits = gallery_labels[ranking] == query_labels[:, None]
    results = {f"recall@{k}": float(np.mean([row[:k].any() for row in hits])) for k in ks}
    precisions, average_precisions = [], []
    for query, row in enumerate(hits):
        relevant = int((gallery_labels == query_labels[query]).sum()) - int(leave_one_out)
        first = row[:relevant]
        precisions.append(first.sum() / relevant)
        average_precisions.append(sum(first[:i + 1].sum() / (i + 1) for i in range(relevant) if first[i]) / relevant)
    return results | {"r_precision": float(np.mean(precisions)), "map@r": float(np.mean(average_precisions))}


def searches(points: torch.Tensor):
    """(queries, gallery or None, reference gallery, leave_one_out) for both modes of the search."""
    return searches_of(points, NUM_QUERIES)


def searches_of(points: torch.Tensor, num_queries: int):
    """As :func:`searches`, the first ``num_queries`` rows querying the others in query/gallery mode."""
    yield points, None, points, True
    yield points[:num_queries], points[num_queries:], points[num_queries:], False


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_exact_ties_follow_the_lower_index_rule_in_every_chunking(seed: int, distance: str) -> None:
    rng = np.random.default_rng(seed)
    points = exact_cosine_rows(rng, NUM_ROWS) if distance == "cosine" else small_integer_rows(rng, NUM_ROWS)
    k = int(rng.integers(3, 9))
    screenings = (False, True) if distance == "cosine" else (False,)  # bf16 screening is for cosine only
    for queries, gallery, reference_gallery, leave_one_out in searches(points):
        scores = float64_scores(queries, reference_gallery, distance)
        expected = brute_force_ranking(scores, leave_one_out)[:, :k]
        assert (np.diff(np.sort(scores, axis=1), axis=1) == 0).sum() > len(scores)  # many exact ties
        for chunk_size, screening in itertools.product(CHUNK_SIZES, screenings):
            found = nearest_neighbors(queries, gallery, k=k, distance=distance, chunk_size=chunk_size,
                                      bf16_screening=screening)
            assert found.tolist() == expected.tolist(), (chunk_size, screening)


@pytest.mark.parametrize("seed", SEEDS)
def test_metrics_on_exact_ties_equal_the_brute_force_in_every_chunking(seed: int) -> None:
    """Labels drawn at random, so the metrics depend on which of several tied items comes first."""
    rng = np.random.default_rng(seed + 100)
    points = exact_cosine_rows(rng, NUM_ROWS)
    # 7 rows per class, one of them among the first 8 (queries); R <= 6 keeps the screening's lists short
    labels = np.concatenate([np.arange(8), rng.permutation(np.arange(NUM_ROWS - 8) % 8)])
    ks = (1, 2, 4)
    for queries, gallery, reference_gallery, leave_one_out in searches(points):
        query_labels, gallery_labels = (labels, labels) if leave_one_out else np.split(labels, [NUM_QUERIES])
        ranking = brute_force_ranking(float64_scores(queries, reference_gallery, "cosine"), leave_one_out)
        expected = brute_force_metrics(ranking, query_labels, gallery_labels, ks, leave_one_out)
        extra = {} if leave_one_out else {"query_embeddings": queries, "query_labels": torch.from_numpy(query_labels)}
        for chunk_size, screening in itertools.product(CHUNK_SIZES, (False, True)):
            found = retrieval_metrics(reference_gallery, torch.from_numpy(gallery_labels), ks=ks,
                                      chunk_size=chunk_size, bf16_screening=screening, **extra)
            assert found == pytest.approx(expected, abs=1e-12), (chunk_size, screening)


@pytest.mark.parametrize("seed", [0])
def test_rounded_cosine_ties_only_swap_scores_equal_to_float32_rounding(seed: int) -> None:
    """Arbitrary small-integer rows: normalisation rounds, so mathematically equal cosines may be ordered either
    way (see "Ties" in gsp_hub.metrics.retrieval). In every chunking the neighbours must still have the best float64
    scores, each within float32 rounding of the brute force's score at the same rank."""
    rng = np.random.default_rng(seed + 200)
    points = small_integer_rows(rng, NUM_ROWS)
    k = 8
    for queries, gallery, reference_gallery, leave_one_out in searches(points):
        scores = float64_scores(queries, reference_gallery, "cosine")
        best = np.take_along_axis(scores, brute_force_ranking(scores, leave_one_out)[:, :k], 1)
        for chunk_size, screening in itertools.product(CHUNK_SIZES, (False, True)):
            found = nearest_neighbors(queries, gallery, k=k, chunk_size=chunk_size, bf16_screening=screening)
            if leave_one_out:
                assert not (found == torch.arange(len(queries))[:, None]).any()
            assert all(len(set(row)) == k for row in found.tolist())
            np.testing.assert_allclose(np.take_along_axis(scores, found.numpy(), 1), best, rtol=0, atol=1e-6)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_float32_search_over_many_blocks_equals_the_brute_force(distance: str) -> None:
    """1,200 rows with exact ties everywhere (duplicated directions), searched by the float32 search alone in blocks
    of 256 (full lists screened by tile maxima), 333 (ragged blocks, padded rows and columns), 1,000 and the
    automatic size (one block): neighbours and metrics equal the float64 brute force's."""
    rng = np.random.default_rng(7)
    points = exact_cosine_rows(rng, 1200) if distance == "cosine" else small_integer_rows(rng, 1200)
    labels = rng.permutation(np.arange(1200) % 120)  # 10 rows per label
    ks = (1, 4, 10)
    for queries, gallery, reference_gallery, leave_one_out in searches_of(points, num_queries=200):
        scores = float64_scores(queries, reference_gallery, distance)
        ranking = brute_force_ranking(scores, leave_one_out)
        query_labels, gallery_labels = (labels, labels) if leave_one_out else np.split(labels, [200])
        expected = brute_force_metrics(ranking, query_labels, gallery_labels, ks, leave_one_out)
        extra = {} if leave_one_out else {"query_embeddings": queries, "query_labels": torch.from_numpy(query_labels)}
        for chunk_size in (256, 333, 1000, None):
            found = nearest_neighbors(queries, gallery, k=10, distance=distance, chunk_size=chunk_size,
                                      bf16_screening=False)
            assert found.tolist() == ranking[:, :10].tolist(), chunk_size
            metrics = retrieval_metrics(reference_gallery, torch.from_numpy(gallery_labels), ks=ks, distance=distance,
                                        chunk_size=chunk_size, bf16_screening=False, **extra)
            assert metrics == pytest.approx(expected, abs=1e-12), chunk_size
