"""retrieval_metrics against pytorch-metric-learning's AccuracyCalculator, a brute-force loop, and exact oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from gsp_hub.metrics import nearest_neighbors, normalized_mutual_info, retrieval_metrics

PML_KEYS = {"precision_at_1": "recall@1", "r_precision": "r_precision", "mean_average_precision_at_r": "map@r"}


def clustered(seed: int, num_classes: int, per_class: tuple[int, int], dim: int = 16, spread: float = 0.6):
    """L2-normalised clustered embeddings (N, dim) with uneven class sizes, and their labels (N,)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(per_class[0], per_class[1] + 1, size=num_classes)
    labels = np.repeat(np.arange(num_classes), sizes)
    centers = rng.normal(size=(num_classes, dim))
    points = centers[labels] + spread * rng.normal(size=(len(labels), dim))
    order = rng.permutation(len(labels))
    return F.normalize(torch.from_numpy(points[order]).float(), dim=1), torch.from_numpy(labels[order])


def pml_metrics(query, query_labels, reference=None, reference_labels=None) -> dict[str, float]:
    calculator = AccuracyCalculator(include=tuple(PML_KEYS), k="max_bin_count", device=torch.device("cpu"))
    result = calculator.get_accuracy(query, query_labels, reference, reference_labels, ref_includes_query=False)
    return {ours: result[theirs] for theirs, ours in PML_KEYS.items()}


@pytest.mark.parametrize("seed, num_classes, per_class", [(0, 12, (2, 9)), (1, 30, (2, 5)), (2, 6, (10, 40))])
def test_leave_one_out_equals_pml(seed: int, num_classes: int, per_class: tuple[int, int]) -> None:
    embeddings, labels = clustered(seed, num_classes, per_class)
    ours = retrieval_metrics(embeddings, labels, ks=(1,))
    reference = pml_metrics(embeddings, labels)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("seed", [3, 4])
def test_query_gallery_equals_pml(seed: int) -> None:
    gallery, gallery_labels = clustered(seed, 15, (3, 8))
    queries, query_labels = clustered(seed + 100, 15, (1, 4))
    # same class centres for queries and gallery: rebuild the queries around the gallery's centres
    rng = np.random.default_rng(seed)
    centers = torch.stack([gallery[gallery_labels == c].mean(0) for c in range(15)])
    queries = F.normalize(centers[query_labels] + 0.3 * torch.from_numpy(rng.normal(size=queries.shape)).float(), dim=1)
    ours = retrieval_metrics(gallery, gallery_labels, query_embeddings=queries, query_labels=query_labels, ks=(1,))
    reference = pml_metrics(queries, query_labels, gallery, gallery_labels)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def brute_force_recall(embeddings: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Plain loops: for each item, sort all others by cosine similarity (ties by index) and look at the first k."""
    normalized = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    hits = 0
    for i in range(len(labels)):
        others = [j for j in range(len(labels)) if j != i]
        similarity = [float(normalized[i] @ normalized[j]) for j in others]
        ranked = [others[r] for r in sorted(range(len(others)), key=lambda r: (-similarity[r], others[r]))]
        hits += any(labels[j] == labels[i] for j in ranked[:k])
    return hits / len(labels)


def test_recall_at_k_equals_brute_force_loop() -> None:
    embeddings, labels = clustered(5, 8, (2, 6), spread=1.2)
    ours = retrieval_metrics(embeddings.double(), labels, ks=(1, 2, 4, 8), dtype=torch.float64)
    for k in (1, 2, 4, 8):
        assert ours[f"recall@{k}"] == pytest.approx(brute_force_recall(embeddings.double().numpy(), labels.numpy(), k))


@pytest.mark.parametrize("mode", ["leave_one_out", "query_gallery"])
def test_chunk_size_does_not_change_results(mode: str) -> None:
    embeddings, labels = clustered(6, 10, (2, 7))
    # duplicated rows create exact ties that the deterministic tie-break must resolve identically in every chunking
    embeddings = torch.cat([embeddings, embeddings[:5]])
    labels = torch.cat([labels, labels[:5]])
    extra = {} if mode == "leave_one_out" else {"query_embeddings": embeddings[:20], "query_labels": labels[:20]}
    results = [
        retrieval_metrics(embeddings, labels, chunk_size=chunk, **extra) for chunk in (1, 7, len(embeddings))
    ]
    assert results[0] == results[1] == results[2]
    neighbors = [nearest_neighbors(embeddings, k=5, chunk_size=chunk) for chunk in (1, 7, len(embeddings))]
    assert torch.equal(neighbors[0], neighbors[1]) and torch.equal(neighbors[0], neighbors[2])


def test_ideal_embeddings_give_perfect_scores() -> None:
    labels = torch.arange(5).repeat_interleave(4)
    embeddings = F.one_hot(labels, 5).float()
    assert retrieval_metrics(embeddings, labels, ks=(1, 3)) == {
        "recall@1": 1.0, "recall@3": 1.0, "r_precision": 1.0, "map@r": 1.0
    }


def test_hand_computed_map_at_r() -> None:
    """Query 0 (class 0, R = 2) ranks: item 2 (class 1), item 1 (class 0), item 3 (class 0) on a line.

    AP@R(q0) = (1/2) * (precision@2 for the hit at rank 2) = 0.25; R-precision(q0) = 1/2.
    """
    embeddings = torch.tensor([[0.0], [2.0], [1.0], [3.0], [10.0], [11.0]])
    labels = torch.tensor([0, 0, 1, 0, 1, 1])
    result = retrieval_metrics(embeddings, labels, ks=(1,), distance="euclidean")

    def ap_and_rp(q: int) -> tuple[float, float]:
        others = [j for j in range(6) if j != q]
        ranked = sorted(others, key=lambda j: ((embeddings[q, 0] - embeddings[j, 0]).item() ** 2, j))
        r = int((labels == labels[q]).sum()) - 1
        hits = [labels[j] == labels[q] for j in ranked[:r]]
        ap = sum(sum(hits[: i + 1]) / (i + 1) for i, h in enumerate(hits) if h) / r
        return float(ap), sum(hits) / r

    expected = [ap_and_rp(q) for q in range(6)]
    assert expected[0] == (0.25, 0.5)
    assert result["map@r"] == pytest.approx(np.mean([e[0] for e in expected]))
    assert result["r_precision"] == pytest.approx(np.mean([e[1] for e in expected]))


def test_nmi_matches_sklearn_and_separated_clusters() -> None:
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 200), rng.integers(0, 7, 200)
    assert normalized_mutual_info(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)
    labels = torch.arange(4).repeat_interleave(10)
    embeddings = F.one_hot(labels, 4).float() + 0.01 * torch.randn(40, 4)
    assert retrieval_metrics(embeddings, labels, metrics=("nmi",))["nmi"] == pytest.approx(1.0)


def test_bad_input_raises_clear_errors() -> None:
    embeddings, labels = clustered(7, 4, (3, 3))
    with pytest.raises(ValueError, match="labels has 11 entries but embeddings has 12 rows"):
        retrieval_metrics(embeddings, labels[:11])
    bad = embeddings.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match="1 row"):
        retrieval_metrics(bad, labels)
    with pytest.raises(ValueError, match="single sample"):
        retrieval_metrics(torch.cat([embeddings, embeddings[:1]]), torch.cat([labels, torch.tensor([99])]))
    with pytest.raises(ValueError, match="ks contains 20"):
        retrieval_metrics(embeddings, labels, ks=(1, 20))
    with pytest.raises(ValueError, match="distance"):
        retrieval_metrics(embeddings, labels, distance="manhattan")
    with pytest.raises(ValueError, match="metrics"):
        retrieval_metrics(embeddings, labels, metrics=("precision",))
    with pytest.raises(ValueError, match="query_labels"):
        retrieval_metrics(embeddings, labels, query_embeddings=embeddings)
