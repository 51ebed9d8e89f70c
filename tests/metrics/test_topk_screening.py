"""The certified bfloat16 screening of the k-NN search: its error bound against float64, and its results against the
plain float32 search and a float64 brute force, including queries that fail the certificate and fall back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gsp_hub.metrics import nearest_neighbors, retrieval_metrics
from gsp_hub.metrics.topk import _Bf16Screen


def clustered(seed: int, num_points: int, dim: int, num_classes: int, spread: float) -> torch.Tensor:
    """(num_points, dim) float32 Gaussian clusters, not normalised (the search normalises for cosine)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    points = centres[rng.integers(0, num_classes, num_points)] + spread * rng.normal(size=(num_points, dim))
    return torch.from_numpy(points).float()


def float64_top_scores(queries: torch.Tensor, gallery: torch.Tensor, k: int, leave_one_out: bool) -> torch.Tensor:
    """(Q, k) the k best float64 cosine scores of every query, best first (the oracle of the ranking quality)."""
    scores = F.normalize(queries.double(), dim=1) @ F.normalize(gallery.double(), dim=1).T
    if leave_one_out:
        scores.fill_diagonal_(-torch.inf)
    return scores.topk(k, dim=1).values


def float64_scores_of(queries: torch.Tensor, gallery: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """(Q, k) float64 cosine scores of the given neighbours."""
    normalised_queries, normalised_gallery = F.normalize(queries.double(), dim=1), F.normalize(gallery.double(), dim=1)
    return torch.einsum("qd,qkd->qk", normalised_queries, normalised_gallery[neighbors])


@pytest.mark.parametrize("dim", [16, 512, 2048])
def test_bf16_error_bound_holds_against_float64(dim: int) -> None:
    """|bf16 block score - exact score| <= E(s') for every pair, also for rows with a wide dynamic range."""
    generator = torch.Generator().manual_seed(dim)
    points = torch.randn(300, dim, generator=generator)
    points *= torch.logspace(-3, 3, dim)[torch.randperm(dim, generator=generator)]
    points[:50] = torch.randn(50, dim, generator=generator)  # and some ordinary rows
    screen = _Bf16Screen(points, points, block=300, k=5)
    approximate = screen(slice(0, 300), slice(0, 300))[:300, :300].double()
    exact = F.normalize(points.double(), dim=1) @ F.normalize(points.double(), dim=1).T
    bound = screen.query_bound.double()[:, None] + screen.output_rounding * approximate.abs()
    assert ((approximate - exact).abs() <= bound).all()
    assert bound.max() < 0.05  # and the bound is tight enough to be useful


@pytest.mark.parametrize("leave_one_out, chunk_size", [(True, 256), (True, 97), (False, 256)])
def test_screened_search_equals_the_float32_search(leave_one_out: bool, chunk_size: int) -> None:
    points = clustered(0, 2400, 64, 300, spread=1.5)
    queries, gallery = (points, None) if leave_one_out else (points[:700], points[700:])
    reference_gallery = points if leave_one_out else gallery
    exact = nearest_neighbors(queries, gallery, k=10, chunk_size=chunk_size, bf16_screening=False)
    screened = nearest_neighbors(queries, gallery, k=10, chunk_size=chunk_size, bf16_screening=True)
    # the same neighbours, up to the order of scores that differ only in the last float32 bit
    assert (screened == exact).all(1).float().mean() > 0.995
    found = float64_scores_of(queries, reference_gallery, screened)
    best = float64_top_scores(queries, reference_gallery, 10, leave_one_out)
    assert torch.allclose(found, best, rtol=0, atol=1e-6)
    if leave_one_out:
        assert not (screened == torch.arange(len(points))[:, None]).any()


def test_queries_failing_the_certificate_are_searched_exactly() -> None:
    """A tight cluster (cosines within the bf16 resolution of each other, still distinct in float32) cannot be
    ranked by bf16 scores: its queries fail the certificate and the exact fallback must still find their true
    neighbours."""
    points = torch.cat([clustered(1, 600, 32, 40, spread=0.8), clustered(2, 200, 32, 1, spread=1e-2)])
    screen = _Bf16Screen(points, points, block=800, k=8)
    approximate = screen(slice(600, 800), slice(0, 800))[:200, :800].float()
    approximate[:, 600:].fill_diagonal_(-torch.inf)
    top = approximate.topk(8 + 32, dim=1).values
    assert not screen.certifies(slice(600, 800), top).any()  # the fallback is exercised

    screened = nearest_neighbors(points, k=8, chunk_size=128, bf16_screening=True)
    exact = nearest_neighbors(points, k=8, chunk_size=128, bf16_screening=False)
    best = float64_top_scores(points, points, 8, True)
    assert torch.allclose(float64_scores_of(points, points, screened), best, rtol=0, atol=1e-6)
    assert (screened == exact).all(1).float().mean() > 0.99


def test_duplicated_rows_rank_by_lower_index_when_screened() -> None:
    base = clustered(3, 500, 24, 60, spread=1.0)
    points = torch.cat([base, base, base])  # row i, i + 500 and i + 1000 are identical: exact ties
    neighbors = nearest_neighbors(points, k=6, chunk_size=200, bf16_screening=True)
    copies = neighbors % 500
    for row in range(len(points)):
        for first in range(6):
            for second in range(first + 1, 6):
                if copies[row, first] == copies[row, second]:
                    assert neighbors[row, first] < neighbors[row, second]
    assert (copies[:, :2] == (torch.arange(len(points)) % 500)[:, None]).all()  # its own two copies come first


def test_screened_metrics_equal_the_exact_metrics() -> None:
    points = clustered(4, 3000, 48, 500, spread=1.2)
    labels = torch.from_numpy(np.arange(3000) % 500)
    exact = retrieval_metrics(points, labels, chunk_size=512, bf16_screening=False)
    screened = retrieval_metrics(points, labels, chunk_size=512, bf16_screening=True)
    assert exact.keys() == screened.keys()
    for key in exact:
        assert screened[key] == pytest.approx(exact[key], abs=1e-6), key


def test_bf16_screening_must_be_a_bool_or_none() -> None:
    with pytest.raises(TypeError, match="bf16_screening must be True, False or None"):
        retrieval_metrics(torch.eye(4).repeat(2, 1), torch.arange(8) % 4, ks=(1,), bf16_screening="yes")
    with pytest.raises(TypeError, match="bf16_screening must be True, False or None"):
        nearest_neighbors(torch.eye(4), k=1, bf16_screening=1)
