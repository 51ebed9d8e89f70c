"""The pure tensor ops: unit_ball against its definition; greedy_k_center against a plain-Python farthest-point loop
and the brute-force optimal k-center radius."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from gsp_hub.layers.ops import greedy_k_center, unit_ball


def test_unit_ball_scales_only_rows_longer_than_one() -> None:
    rows = torch.tensor([[0.3, 0.4], [3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)  # norms 0.5, 5, 0
    projected = unit_ball(rows[None])  # (..., D): leading dimensions are kept
    torch.testing.assert_close(projected[0], torch.tensor([[0.3, 0.4], [0.6, 0.8], [0.0, 0.0]], dtype=torch.float64))


def reference_k_center(candidates: list[list[float]], k: int, seeds: list[list[float]]) -> list[int]:
    """Farthest-point traversal written with Python lists: indices of the k picks."""

    def squared(a: list[float], b: list[float]) -> float:
        return sum((x - y) ** 2 for x, y in zip(a, b))

    centers = list(seeds)
    picks: list[int] = []
    for _ in range(k):
        best_index, best_distance = -1, -1.0
        for index, point in enumerate(candidates):
            if index in picks:
                continue
            distance = min((squared(point, c) for c in centers), default=math.inf)
            if distance > best_distance:
                best_index, best_distance = index, distance
        picks.append(best_index)
        centers.append(candidates[best_index])
    return picks


def covering_radius(points: torch.Tensor, centers: torch.Tensor) -> float:
    """Largest distance from a point to its nearest center (the k-center objective)."""
    return torch.cdist(points, centers).amin(dim=1).max().item()


@pytest.mark.parametrize("with_seeds", [False, True])
def test_matches_reference_loop_for_every_group(with_seeds: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    candidates = torch.randn(3, 20, 4, generator=generator, dtype=torch.float64)
    seeds = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64) if with_seeds else None
    picks, indices = greedy_k_center(candidates, 6, seeds=seeds, return_indices=True)
    assert picks.shape == (6 * 3, 4) and indices.shape == (6, 3)
    for group in range(3):
        expected = reference_k_center(
            candidates[group].tolist(), 6, seeds[group].tolist() if with_seeds else []
        )
        assert indices[:, group].tolist() == expected
        # Pick-major stacking: row pick * G + group.
        torch.testing.assert_close(picks[group::3], candidates[group, expected], rtol=0, atol=0)


def test_single_group_and_seeds_are_not_output() -> None:
    generator = torch.Generator().manual_seed(1)
    points = torch.randn(30, 3, generator=generator)
    picks, indices = greedy_k_center(points[5:], 5, seeds=points[:5], return_indices=True)
    assert picks.shape == (5, 3) and indices.shape == (5,)
    assert indices.tolist() == reference_k_center(points[5:].tolist(), 5, points[:5].tolist())
    torch.testing.assert_close(picks, points[5:][indices], rtol=0, atol=0)
    assert greedy_k_center(points, 1, return_indices=True)[1].tolist() == [0]  # no seeds: first candidate


def test_two_approximation_of_the_optimal_radius() -> None:
    """Greedy radius <= 2 x the brute-force optimum over every k-subset."""
    for seed in range(4):
        points = torch.randn(10, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        k = 3
        optimum = min(covering_radius(points, points[list(subset)]) for subset in itertools.combinations(range(10), k))
        greedy = covering_radius(points, greedy_k_center(points, k))
        assert optimum - 1e-12 <= greedy <= 2 * optimum + 1e-12


def test_duplicates_give_distinct_picks() -> None:
    points = torch.zeros(4, 2)
    _, indices = greedy_k_center(points, 4, return_indices=True)
    assert sorted(indices.tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"candidates": torch.randn(5, 3), "k": 6}, r"k must be an int in \[1, 5\] \(n = 5 .* got 6; pass more"),
        ({"candidates": torch.randn(5, 3), "k": 0}, r"k must be .* got 0"),
        ({"candidates": torch.randn(5), "k": 1}, r"candidates must be .* got shape \(5,\)"),
        ({"candidates": torch.full((5, 3), math.nan), "k": 1}, "candidates must contain only finite values"),
        ({"candidates": torch.randn(2, 5, 3), "k": 2, "seeds": torch.randn(3, 1, 3)}, r"seeds must have shape \(2, m, 3\)"),
        ({"candidates": torch.randn(2, 5, 3), "k": 2, "seeds": torch.randn(4, 3)}, r"seeds must have shape \(2, m, 3\)"),
        ({"candidates": torch.randn(5, 3), "k": 2, "seeds": torch.randn(4, 2)}, r"seeds must have shape \(m, 3\)"),
        ({"candidates": torch.randn(5, 3), "k": 2, "seeds": torch.randn(1, 4, 3)}, r"seeds must have shape \(m, 3\)"),
    ],
)
def test_invalid_arguments_raise(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        greedy_k_center(**arguments)
