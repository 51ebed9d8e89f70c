"""Pure tensor operations shared by layers, losses and training callbacks: torch only, no gsp_hub state.

* :func:`unit_ball` — project rows into the unit ball (GSP's prototype space, CCP's default normalisation).
* :func:`greedy_k_center` — greedy k-center (farthest-point) selection, batched over independent groups. Used to
  initialise GSP prototypes from pooled embeddings and to re-initialise CCP proxies (one group per class). Greedy
  k-center is a 2-approximation of the k-center objective (the largest distance from a candidate to its nearest
  center) and costs O(k * n * D) per group.

The exact transport solver, the package's flagship kernel, keeps its own module: :mod:`gsp_hub.layers.transport`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gsp_hub.checks import check_int

__all__ = ["greedy_k_center", "unit_ball"]


def unit_ball(x: Tensor) -> Tensor:
    """Project the rows of ``x`` (..., D) into the unit ball: x / max(1, ||x||); shorter rows are unchanged."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=1.0)


def _check_points(name: str, points: Tensor, expected: str) -> None:
    """Raise unless ``points`` is a floating tensor of rank 2 or 3 with finite values."""
    if not isinstance(points, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got {type(points).__name__}.")
    if points.ndim not in (2, 3) or not points.is_floating_point():
        raise ValueError(
            f"{name} must be a floating tensor of shape {expected}, got shape {tuple(points.shape)} "
            f"and dtype {points.dtype}."
        )
    if not bool(torch.isfinite(points).all()):
        raise ValueError(f"{name} must contain only finite values, got NaN or inf entries.")


def _lower_to_point(distances: Tensor, candidates: Tensor, point: Tensor) -> Tensor:
    """Element-wise min of ``distances`` (G, n) and the squared distances of ``candidates`` (G, n, D) to ``point`` (G, D)."""
    return torch.minimum(distances, (candidates - point[:, None, :]).square().sum(dim=-1))


@torch.no_grad()
def greedy_k_center(
    candidates: Tensor, k: int, seeds: Tensor | None = None, *, return_indices: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Pick ``k`` candidates per group by farthest-point traversal.

    Every candidate keeps its squared L2 distance to the nearest center so far (the seeds, or +inf without seeds).
    ``k`` times, the candidate with the largest distance is picked (the lowest index on ties, so without seeds the
    first pick is candidate 0) and becomes a center. Seeds only mark covered regions and are never output; a
    candidate is picked at most once.

    Args:
        candidates: (G, n, D) groups of n candidates, or (n, D) for a single group.
        k: number of picks per group, 1 <= k <= n.
        seeds: optional (G, m, D) (or (m, D) with 2-D candidates) already-covered points, m >= 1.
        return_indices: also return the picked candidate indices.

    Returns:
        picks: (k * G, D) stacked pick-major (row ``pick * G + group``), or (k, D) for 2-D candidates; detached.
        indices (only with ``return_indices``): (k, G) candidate index of every pick, or (k,) for 2-D candidates.
    """
    _check_points("candidates", candidates, "(G, n, D) or (n, D)")
    single_group = candidates.ndim == 2
    groups = candidates[None] if single_group else candidates
    num_groups, num_candidates, dim = groups.shape
    check_int("k", k, minimum=1, maximum=num_candidates, meaning=f"n = {num_candidates} candidates per group",
              fix="pass more candidates or ask for fewer picks")
    distances = groups.new_full((num_groups, num_candidates), float("inf"))
    if seeds is not None:
        expected = f"(m, {dim})" if single_group else f"({num_groups}, m, {dim})"
        _check_points("seeds", seeds, expected)
        seed_groups = seeds[None] if single_group else seeds
        if seed_groups.ndim != 3 or seed_groups.shape[0] != num_groups or seed_groups.shape[2] != dim:
            raise ValueError(
                f"seeds must have shape {expected} to match candidates of shape {tuple(candidates.shape)}, "
                f"got {tuple(seeds.shape)}."
            )
        seed_groups = seed_groups.to(groups.dtype)
        for seed_index in range(seed_groups.shape[1]):
            distances = _lower_to_point(distances, groups, seed_groups[:, seed_index])
    group_index = torch.arange(num_groups, device=groups.device)
    picked = []
    for _ in range(k):
        index = distances.argmax(dim=1)
        picked.append(index)
        distances = _lower_to_point(distances, groups, groups[group_index, index])
        distances[group_index, index] = -float("inf")
    indices = torch.stack(picked)  # (k, G)
    picks = groups[group_index[None, :], indices].reshape(k * num_groups, dim)
    if single_group:
        indices = indices[:, 0]
    return (picks, indices) if return_indices else picks
