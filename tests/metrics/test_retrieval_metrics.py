"""retrieval_metrics / nearest_neighbors / normalized_mutual_info against independent references:
pytorch-metric-learning's AccuracyCalculator, scikit-learn, brute-force loops, and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from sklearn.metrics import normalized_mutual_info_score

from gsp_hub.metrics import nearest_neighbors, normalized_mutual_info, retrieval_metrics

PML_KEYS = {"precision_at_1": "recall@1", "r_precision": "r_precision", "mean_average_precision_at_r": "map@r"}


def clustered(
    seed: int, num_classes: int, per_class: tuple[int, int], dim: int = 16, spread: float = 0.6
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised Gaussian clusters (N, dim) with class sizes in ``per_class``, shuffled; labels (N,)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(per_class[0], per_class[1] + 1, size=num_classes)
    labels = np.repeat(np.arange(num_classes), sizes)
    points = rng.normal(size=(num_classes, dim))[labels] + spread * rng.normal(size=(len(labels), dim))
    order = rng.permutation(len(labels))
    return F.normalize(torch.from_numpy(points[order]).float(), dim=1), torch.from_numpy(labels[order])


def split_query_gallery(embeddings: torch.Tensor, labels: torch.Tensor, seed: int):
    """In-shop-like split: about a third of every class queries, the rest (at least one item) is the gallery."""
    is_query = torch.zeros(len(labels), dtype=torch.bool)
    generator = torch.Generator().manual_seed(seed)
    for label in labels.unique():
        members = (labels == label).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        is_query[members[: max(1, len(members) // 3)]] = True
    return embeddings[~is_query], labels[~is_query], embeddings[is_query], labels[is_query]


def pml_metrics(query, query_labels, reference=None, reference_labels=None, include=tuple(PML_KEYS)) -> dict:
    calculator = AccuracyCalculator(include=include, k="max_bin_count", device=torch.device("cpu"))
    return calculator.get_accuracy(query, query_labels, reference, reference_labels)


@pytest.mark.parametrize(
    "seed, num_classes, per_class, chunk_size",
    [(0, 12, (2, 9), 2048), (1, 40, (2, 6), 2048), (2, 6, (10, 40), 2048), (3, 30, (2, 8), 48)],
)
@pytest.mark.parametrize("bf16_screening", [False, True])
def test_leave_one_out_equals_pml_accuracy_calculator(seed, num_classes, per_class, chunk_size, bf16_screening) -> None:
    embeddings, labels = clustered(seed, num_classes, per_class)
    ours = retrieval_metrics(embeddings, labels, ks=(1,), chunk_size=chunk_size, bf16_screening=bf16_screening)
    reference = pml_metrics(embeddings, labels)
    assert 0.05 < reference["mean_average_precision_at_r"] < 0.95  # a non-trivial ranking
    for theirs, key in PML_KEYS.items():
        assert ours[key] == pytest.approx(reference[theirs], abs=1e-6), key


@pytest.mark.parametrize("seed, chunk_size", [(4, 2048), (5, 2048), (6, 16)])
@pytest.mark.parametrize("bf16_screening", [False, True])
def test_query_gallery_equals_pml_accuracy_calculator(seed: int, chunk_size: int, bf16_screening: bool) -> None:
    gallery, gallery_labels, queries, query_labels = split_query_gallery(*clustered(seed, 25, (2, 12)), seed)
    distractors, _ = clustered(seed + 50, 5, (3, 3))  # gallery-only classes, as in In-shop
    gallery = torch.cat([gallery, distractors])
    gallery_labels = torch.cat([gallery_labels, torch.arange(100, 105).repeat_interleave(3)])
    ours = retrieval_metrics(
        gallery, gallery_labels, query_embeddings=queries, query_labels=query_labels, ks=(1,), chunk_size=chunk_size,
        bf16_screening=bf16_screening,
    )
    reference = pml_metrics(queries, query_labels, gallery, gallery_labels)
    for theirs, key in PML_KEYS.items():
        assert ours[key] == pytest.approx(reference[theirs], abs=1e-6), key


def tied_points(rng: np.random.Generator, count: int, dim: int = 6) -> torch.Tensor:
    """Unit vectors with four entries of +-0.5, the others 0: every inner product and squared distance is a multiple
    of 0.25, exact in float32 (ours and faiss's alike), so equal scores are common and tie-breaking decides."""
    points = np.zeros((count, dim), dtype=np.float32)
    for row in points:
        row[rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return torch.from_numpy(points)


@pytest.mark.parametrize("seed", range(4))
def test_query_gallery_with_ties_equals_pml_accuracy_calculator(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gallery, queries = tied_points(rng, 150), tied_points(rng, 60)
    gallery_labels = torch.from_numpy(rng.integers(0, 10, 150))
    query_labels = torch.from_numpy(rng.choice(gallery_labels.unique().numpy(), 60))  # every query has positives
    ours = retrieval_metrics(gallery, gallery_labels, query_embeddings=queries, query_labels=query_labels, ks=(1,))
    calculator = AccuracyCalculator(include=tuple(PML_KEYS), k="max_bin_count", device=torch.device("cpu"))
    reference = calculator.get_accuracy(queries, query_labels, gallery, gallery_labels, ref_includes_query=False)
    for theirs, key in PML_KEYS.items():
        assert ours[key] == pytest.approx(reference[theirs], abs=1e-6), key
    reversed_gallery = retrieval_metrics(gallery.flip(0), gallery_labels.flip(0), query_embeddings=queries,
                                         query_labels=query_labels, ks=(1,))
    assert reversed_gallery["map@r"] != pytest.approx(ours["map@r"], abs=1e-6)  # the ties change the ranking


def test_nmi_equals_pml_and_sklearn_on_the_same_clustering() -> None:
    embeddings, labels = clustered(7, 10, (5, 15), spread=0.8)
    ours = retrieval_metrics(embeddings, labels, metrics=("nmi",), distance="euclidean")
    reference = pml_metrics(embeddings, labels, include=("NMI",))
    assert set(ours) == {"nmi"} and 0.2 < ours["nmi"] < 1.0
    assert ours["nmi"] == pytest.approx(reference["NMI"], abs=1e-12)  # same seeded faiss k-means as PML


def test_normalized_mutual_info_equals_sklearn() -> None:
    rng = np.random.default_rng(0)
    cases = [
        (rng.integers(0, 5, 300), rng.integers(0, 7, 300)),
        (rng.integers(-3, 3, 50), rng.integers(10, 12, 50)),
        (np.array([0, 0, 1, 1, 2, 2]), np.array([5, 5, 7, 7, 9, 9])),  # same partition, other ids: 1.0
        (np.zeros(8, int), np.zeros(8, int)),  # one group each: 1.0
        (np.zeros(8, int), np.arange(8)),  # one side a single group: 0.0
    ]
    for labels, assignments in cases:
        assert normalized_mutual_info(labels, assignments) == pytest.approx(
            normalized_mutual_info_score(labels, assignments), abs=1e-12
        )
    with pytest.raises(ValueError, match="labels has 3 items but assignments has 2"):
        normalized_mutual_info(np.arange(3), np.arange(2))


def brute_force_recall(queries, query_labels, gallery, gallery_labels, k: int, leave_one_out: bool) -> float:
    """Plain loop: rank the gallery by float64 cosine similarity (ties by index) and look at the first k."""
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    gallery = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    hits = 0
    for i, query in enumerate(queries):
        others = [j for j in range(len(gallery)) if not (leave_one_out and j == i)]
        ranked = sorted(others, key=lambda j: (-float(query @ gallery[j]), j))
        hits += any(gallery_labels[j] == query_labels[i] for j in ranked[:k])
    return hits / len(queries)


@pytest.mark.parametrize("leave_one_out", [True, False])
def test_recall_at_k_equals_brute_force_loop(leave_one_out: bool) -> None:
    embeddings, labels = clustered(8, 25, (2, 6), spread=2.0)
    if leave_one_out:
        gallery, gallery_labels, queries, query_labels = embeddings, labels, embeddings, labels
        ours = retrieval_metrics(embeddings, labels, ks=(1, 2, 4, 8, 16))
    else:
        gallery, gallery_labels, queries, query_labels = split_query_gallery(embeddings, labels, seed=8)
        ours = retrieval_metrics(gallery, gallery_labels, query_embeddings=queries, query_labels=query_labels,
                                 ks=(1, 2, 4, 8, 16))
    as_numpy = [t.double().numpy() for t in (queries, query_labels, gallery, gallery_labels)]
    for k in (1, 2, 4, 8, 16):
        assert ours[f"recall@{k}"] == brute_force_recall(*as_numpy, k=k, leave_one_out=leave_one_out)
    assert ours["recall@1"] < ours["recall@16"] < 1.0


def brute_force_neighbors(queries: np.ndarray, gallery: np.ndarray, k: int, leave_one_out: bool) -> np.ndarray:
    """Exact float64 squared distances, sorted by (distance, gallery index), the query itself skipped."""
    distances = ((queries[:, None, :].astype(np.float64) - gallery[None, :, :]) ** 2).sum(-1)
    ranked = []
    for i, row in enumerate(distances):
        others = [j for j in range(len(gallery)) if not (leave_one_out and j == i)]
        ranked.append(sorted(others, key=lambda j: (row[j], j))[:k])
    return np.array(ranked)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
def test_nearest_neighbors_ties_go_to_the_lower_index_in_any_chunking(chunk_size: int) -> None:
    """Small-integer points: every distance is exact, so ties abound and the order is fully determined."""
    points = torch.from_numpy(np.random.default_rng(9).integers(-1, 2, size=(40, 3))).float()
    expected = brute_force_neighbors(points.numpy(), points.numpy(), k=6, leave_one_out=True)
    found = nearest_neighbors(points, k=6, distance="euclidean", chunk_size=chunk_size)
    assert found.tolist() == expected.tolist()
    assert not (found == torch.arange(40)[:, None]).any()  # duplicates are neighbours, the query itself is not
    expected = brute_force_neighbors(points[:13].numpy(), points[13:].numpy(), k=9, leave_one_out=False)
    found = nearest_neighbors(points[:13], points[13:], k=9, distance="euclidean", chunk_size=chunk_size)
    assert found.tolist() == expected.tolist()


@pytest.mark.parametrize("chunk_size", [256, 1000])
def test_lists_filled_from_tile_maxima_keep_exact_ties(chunk_size: int) -> None:
    """Blocks wide enough for k tiles: a filling list takes the entries reaching the k-th largest tile maximum
    (not a topk of the block), through the diagonal-first symmetric schedule and the query/gallery one."""
    points = torch.from_numpy(np.random.default_rng(4).integers(-1, 2, size=(600, 3))).float()
    expected = brute_force_neighbors(points.numpy(), points.numpy(), k=7, leave_one_out=True)
    found = nearest_neighbors(points, k=7, distance="euclidean", chunk_size=chunk_size)
    assert found.tolist() == expected.tolist()
    expected = brute_force_neighbors(points[:50].numpy(), points[50:].numpy(), k=7, leave_one_out=False)
    found = nearest_neighbors(points[:50], points[50:], k=7, distance="euclidean", chunk_size=chunk_size)
    assert found.tolist() == expected.tolist()


@pytest.mark.parametrize("leave_one_out", [True, False])
def test_chunk_size_does_not_change_results(leave_one_out: bool) -> None:
    """Identical metrics and neighbours for 1x1 blocks, 7x7 blocks, 32x32 blocks (the symmetric leave-one-out
    schedule over several blocks) and one block. Exact ties are covered by the small-integer test above; here,
    duplicated rows tie up to BLAS rounding (which may differ in the last bit between block shapes), so they are
    checked through the metrics, which cannot tell two copies of the same item apart."""
    embeddings, labels = clustered(10, 8, (2, 7))
    chunk_sizes = (1, 7, 32, len(embeddings) + 5)
    neighbors = [nearest_neighbors(embeddings, k=5, chunk_size=chunk) for chunk in chunk_sizes]
    assert all(torch.equal(found, neighbors[0]) for found in neighbors)
    embeddings, labels = torch.cat([embeddings, embeddings[:5]]), torch.cat([labels, labels[:5]])
    extra = {} if leave_one_out else {"query_embeddings": embeddings[:20], "query_labels": labels[:20]}
    results = [retrieval_metrics(embeddings, labels, ks=(1, 2, 3), chunk_size=chunk, **extra) for chunk in chunk_sizes]
    assert all(result == results[0] for result in results)


def test_ideal_embeddings_give_perfect_scores() -> None:
    labels = torch.arange(5).repeat_interleave(4)
    embeddings = F.one_hot(labels, 5).float() + 0.01 * torch.randn(20, 5, generator=torch.Generator().manual_seed(0))
    perfect = {"recall@1": 1.0, "recall@3": 1.0, "r_precision": 1.0, "map@r": 1.0, "nmi": 1.0}
    metrics = ("recall", "r_precision", "map_at_r", "nmi")
    assert retrieval_metrics(embeddings, labels, ks=(1, 3), metrics=metrics) == pytest.approx(perfect)
    is_query = torch.arange(20) % 4 == 0  # one query per class, three gallery items per class
    ours = retrieval_metrics(embeddings[~is_query], labels[~is_query], query_embeddings=embeddings[is_query],
                             query_labels=labels[is_query], ks=(1, 3), metrics=metrics)
    assert ours == pytest.approx(perfect)


def test_hand_computed_leave_one_out_case() -> None:
    """Points on a line, class A at 0, 1, 2.1 and class B at 1.6, 5 (euclidean ranking):

    a0 -> a1 b0 | a2 b1   R=2: hit, miss   AP = (1/1)/2 = 1/2   RP = 1/2
    a1 -> b0 a0 | a2      R=2: miss, hit   AP = (1/2)/2 = 1/4   RP = 1/2
    a2 -> b0 a1 | a0      R=2: miss, hit   AP = 1/4             RP = 1/2
    b0 -> a2 | a1         R=1: miss        AP = 0               RP = 0     (recall@2 miss)
    b1 -> a2 | b0         R=1: miss        AP = 0               RP = 0     (recall@2 hit)
    """
    embeddings = torch.tensor([[0.0], [1.0], [2.1], [1.6], [5.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    result = retrieval_metrics(embeddings, labels, ks=(1, 2), distance="euclidean")
    assert result == pytest.approx({"recall@1": 1 / 5, "recall@2": 4 / 5, "r_precision": 1.5 / 5, "map@r": 1 / 5})


def test_hand_computed_query_gallery_case() -> None:
    """Query at 0; gallery at 1 (same), 2 (other), 3 (same), 5 (same), 10 (other): R = 3, hits at ranks 1 and 3.

    AP@R = (1/1 + 2/3) / 3 = 5/9, R-precision = 2/3.
    """
    gallery = torch.tensor([[10.0], [3.0], [1.0], [5.0], [2.0]])
    gallery_labels = torch.tensor([1, 0, 0, 0, 1])
    result = retrieval_metrics(gallery, gallery_labels, query_embeddings=torch.zeros(1, 1),
                               query_labels=torch.tensor([0]), ks=(1, 2), distance="euclidean")
    assert result == pytest.approx({"recall@1": 1.0, "recall@2": 1.0, "r_precision": 2 / 3, "map@r": 5 / 9})


def test_inputs_numpy_torch_float64_and_metric_selection() -> None:
    embeddings, labels = clustered(11, 10, (2, 6))
    reference = retrieval_metrics(embeddings, labels)
    assert list(reference) == ["recall@1", "recall@2", "recall@4", "recall@8", "r_precision", "map@r"]
    assert retrieval_metrics(embeddings.numpy(), labels.numpy().astype(np.int32)) == reference
    assert retrieval_metrics(embeddings.double(), labels, dtype=torch.float64) == pytest.approx(reference, abs=1e-12)
    assert retrieval_metrics(embeddings, labels, metrics=("map_at_r",)) == {"map@r": reference["map@r"]}
    assert retrieval_metrics(embeddings, labels, ks=(4, 1), metrics=("recall",)) == {
        "recall@4": reference["recall@4"], "recall@1": reference["recall@1"]
    }


def _errors_case_data():
    embeddings, labels = clustered(12, 4, (3, 3))  # 12 items, 4 classes of 3
    return embeddings, labels


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda e, y: retrieval_metrics(e, y[:11]), ValueError, "labels has 11 entries but embeddings has 12 rows"),
        (lambda e, y: retrieval_metrics(e[:, 0], y), ValueError, r"embeddings must be 2-D \(N, D\), got shape \(12,\)"),
        (lambda e, y: retrieval_metrics(e, y[:, None]), ValueError, "labels must be 1-D"),
        (lambda e, y: retrieval_metrics(e.tolist(), y), TypeError, "embeddings must be a torch.Tensor or numpy"),
        (lambda e, y: retrieval_metrics(e, y.float()), TypeError, r"integer class ids.*\.long\(\)"),
        (lambda e, y: retrieval_metrics(torch.cat([e, e[:2]]), torch.cat([y, torch.tensor([7, 9])])), ValueError,
         r"2 class\(es\) with a single sample \(first: \[7, 9\]\)"),
        (lambda e, y: retrieval_metrics(e, y, ks=(1, 12)), ValueError, "ks contains 12 but each query only has 11"),
        (lambda e, y: retrieval_metrics(e[3:], y[3:], query_embeddings=e[:3], query_labels=y[:3], ks=(10,)),
         ValueError, "ks contains 10 but each query only has 9 gallery items"),
        (lambda e, y: retrieval_metrics(e, y, ks=()), TypeError, "non-empty sequence of positive ints"),
        (lambda e, y: retrieval_metrics(e, y, ks=4), TypeError, "non-empty sequence of positive ints"),
        (lambda e, y: retrieval_metrics(e, y, ks=(0, 1)), ValueError, "positive ints"),
        (lambda e, y: retrieval_metrics(e, y, metrics=("precision",)), ValueError, "metrics: unknown name 'precision'"),
        (lambda e, y: retrieval_metrics(e, y, metrics="recall"), TypeError, "non-empty tuple of names"),
        (lambda e, y: retrieval_metrics(e, y, distance="manhattan"), ValueError, "distance: unknown name"),
        (lambda e, y: retrieval_metrics(e, y, chunk_size=0), ValueError, "chunk_size must be a positive int"),
        (lambda e, y: retrieval_metrics(e, y, dtype=torch.float16), ValueError, "dtype must be torch.float32"),
        (lambda e, y: retrieval_metrics(e, y, query_embeddings=e), ValueError, "without query_labels"),
        (lambda e, y: retrieval_metrics(e, y, query_labels=y), ValueError, "without query_embeddings"),
        (lambda e, y: retrieval_metrics(e, y, query_embeddings=e[:, :8], query_labels=y), ValueError,
         "query_embeddings has dimension 8 but embeddings"),
        (lambda e, y: retrieval_metrics(e, y, query_embeddings=e[:3], query_labels=torch.tensor([0, 5, 6])),
         ValueError, r"query_labels has 2 label\(s\) absent from the gallery labels \(first: \[5, 6\]\)"),
        (lambda e, y: nearest_neighbors(e, k=12), ValueError, "k contains 12 but each query only has 11"),
        # too few rows, or none, in every role (once "max(): Expected reduction dim" or "use ks <= -1")
        (lambda e, y: retrieval_metrics(e[:1], y[:1]), ValueError,
         r"embeddings has 1 row\(s\); leave-one-out retrieval \(every row queries all the others\) needs at least 2; "
         "pass more embeddings, or a separate gallery"),
        (lambda e, y: retrieval_metrics(e[:0], y[:0]), ValueError, r"embeddings has 0 row\(s\); leave-one-out"),
        (lambda e, y: retrieval_metrics(e[:0], y[:0], metrics=("nmi",)), ValueError, r"embeddings has 0 row\(s\)"),
        (lambda e, y: retrieval_metrics(e, y, query_embeddings=e[:0], query_labels=y[:0]), ValueError,
         r"query_embeddings has 0 row\(s\); at least 1 query is needed"),
        (lambda e, y: retrieval_metrics(e[:0], y[:0], query_embeddings=e, query_labels=y), ValueError,
         r"embeddings has 0 row\(s\); the gallery needs at least 1 row"),
        (lambda e, y: nearest_neighbors(e[:1], k=1), ValueError,
         r"queries has 1 row\(s\); searching the rows among themselves \(gallery=None\) needs at least 2"),
        (lambda e, y: nearest_neighbors(e[:0], k=1), ValueError, r"queries has 0 row\(s\); searching the rows"),
        (lambda e, y: nearest_neighbors(e[:0], e, k=1), ValueError, r"queries has 0 row\(s\); at least 1 query"),
        (lambda e, y: nearest_neighbors(e, e[:0], k=1), ValueError, r"gallery has 0 row\(s\); the gallery needs"),
        # width 0 (once silently returned numbers)
        (lambda e, y: retrieval_metrics(e[:, :0], y), ValueError,
         r"embeddings must have at least 1 column \(N, D >= 1\), got shape \(12, 0\)"),
        (lambda e, y: retrieval_metrics(e, y, query_embeddings=e[:, :0], query_labels=y), ValueError,
         r"query_embeddings must have at least 1 column"),
        (lambda e, y: nearest_neighbors(e[:, :0], k=1, distance="euclidean"), ValueError,
         r"queries must have at least 1 column"),
        (lambda e, y: nearest_neighbors(e, e[:, :0], k=1), ValueError, r"gallery must have at least 1 column"),
    ],
)
def test_bad_input_raises_clear_errors(call, error, message) -> None:
    embeddings, labels = _errors_case_data()
    with pytest.raises(error, match=message):
        call(embeddings, labels)


def test_non_finite_embeddings_are_reported_with_row_count() -> None:
    embeddings, labels = _errors_case_data()
    embeddings[3, 0], embeddings[7, 2] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"embeddings has 2 row\(s\) with NaN/inf .*first rows: \[3, 7\]"):
        retrieval_metrics(embeddings, labels)
    huge = torch.full((12, 4), 1e30)  # finite, but its squared norm overflows float32
    with pytest.raises(ValueError, match="12 row"):
        retrieval_metrics(huge, labels, distance="euclidean")


def test_cosine_rejects_zero_and_near_zero_rows_by_index() -> None:
    """Rows shorter than 1e-12 have no usable direction (F.normalize's clamp once ranked them wrongly); euclidean
    distances to them are well defined: the neighbours found have the smallest float64 distances (to float32
    rounding, which cannot tell the zero row from the 1e-13 one)."""
    embeddings, labels = _errors_case_data()
    embeddings[4] = 0.0
    embeddings[9] *= 1e-13
    message = r"has 2 row\(s\) of L2 norm below 1e-12 \(first rows: \[4, 9\]\).*distance='euclidean'"
    with pytest.raises(ValueError, match="embeddings " + message):
        retrieval_metrics(embeddings, labels)
    with pytest.raises(ValueError, match="query_embeddings " + message):
        retrieval_metrics(embeddings[[0, 1, 2]], labels[[0, 1, 2]], query_embeddings=embeddings, query_labels=labels)
    with pytest.raises(ValueError, match="gallery " + message):
        nearest_neighbors(embeddings[:2], embeddings, k=1)
    with pytest.raises(ValueError, match="embeddings " + message):
        retrieval_metrics(embeddings, labels, metrics=("nmi",))
    distances = torch.cdist(embeddings.double(), embeddings.double()).square().fill_diagonal_(torch.inf)
    found = nearest_neighbors(embeddings, k=4, distance="euclidean")
    torch.testing.assert_close(distances.gather(1, found), distances.topk(4, dim=1, largest=False).values,
                               rtol=0, atol=1e-6)


def test_short_rows_are_ranked_by_their_direction() -> None:
    """Rows of norm 1.5e-12 up to 1e3 are normalised by their true norm: the neighbours found have the best float64
    cosine scores (each within float32 rounding of the brute force's score at the same rank)."""
    directions, _ = clustered(13, 8, (3, 5))
    points = directions * torch.logspace(math.log10(1.5e-12), 3, len(directions))[:, None]
    points = points[torch.randperm(len(points), generator=torch.Generator().manual_seed(0))]
    normalised = F.normalize(points.double(), dim=1)
    scores = (normalised @ normalised.T).fill_diagonal_(-torch.inf)
    found = nearest_neighbors(points, k=5)
    torch.testing.assert_close(scores.gather(1, found), scores.topk(5, dim=1).values, rtol=0, atol=1e-6)
