"""LeTKD teacher supervision, built offline from a frozen teacher and kept as buffers (so checkpoints hold it).

Build once over the training set **without augmentation** (normalisation only), every spatial location being
one sample (:func:`collect_teacher_locations`), then :meth:`LeTKDTargets.fit` and :meth:`LeTKDTargets.save`
(one safetensors file, written atomically); later :meth:`LeTKDTargets.load`.

* **Penultimate** (:class:`PenultimateCodebook`): k-means codebook (faiss, K = 4096, 20 iterations, fixed seed,
  all points used) over the teacher's last map, no normalisation. Target of a location f:
  ``softmax(-T * |f - rho_k|^2)`` over the K codewords (T = 1, nearly one-hot).
* **Intermediate** "teacher decisions" (:class:`DecisionTargets`) on the teacher's first block of the last stage:
  LDA (sklearn, svd solver) to ``min(60, C - 1, D)`` dimensions, k-means into 8 sub-classes per class, prototypes
  = per-sub-class means of the k-means assignment, and the transition matrix
  ``S[a, b] = P(nearest prototype overall is b | nearest prototype of the image's class is a)`` (rows sum to 1).
  Target of a location = ``S[k*]`` with k* the nearest of its class's 8 prototypes (a row gather).

Differences from the official code (its defects, letkd.md section 8): the sub-class of a location is chosen with
the stored prototypes both offline (to count S) and online (official: k-means centroids online, means offline);
no rows are dropped; seeds are fixed; a sub-class that received no location gets ``S[a, a] = 1``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from gsp_hub.io import atomic_file
from gsp_hub.models.taps import INTERMEDIATE, PENULTIMATE, TeacherTaps, flatten_locations

__all__ = [
    "DecisionTargets",
    "LeTKDTargets",
    "LocationFeatures",
    "PenultimateCodebook",
    "collect_teacher_locations",
]

_FORMAT = "gsp_hub.letkd_targets"
_CHUNK = 65536


def _kmeans(
    points: torch.Tensor, num_clusters: int, iters: int, seed: int, max_points_per_centroid: int
) -> torch.Tensor:
    """faiss k-means of points (N, D) -> centroids (num_clusters, D) float32."""
    if points.shape[0] < num_clusters:
        raise ValueError(f"k-means needs at least {num_clusters} points (one per cluster), got {points.shape[0]}.")
    data = np.ascontiguousarray(points.detach().cpu().numpy(), dtype=np.float32)
    kmeans = faiss.Kmeans(
        data.shape[1], num_clusters, niter=iters, seed=seed, max_points_per_centroid=max_points_per_centroid,
        verbose=False,
    )
    kmeans.train(data)
    return torch.from_numpy(kmeans.centroids.copy())


def _squared_distances(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """|x_i - c_k|^2 for x (L, D), centers (K, D) -> (L, K), clamped at 0."""
    return (x.pow(2).sum(1, keepdim=True) - 2.0 * x @ centers.T + centers.pow(2).sum(1)).clamp_min(0.0)


class PenultimateCodebook(nn.Module):
    """Codewords (K, D) of the teacher's penultimate locations; ``forward`` gives targets (B*h*w, K).

    Buffers: ``centroids`` (K, D) and ``temperature`` (scalar, 1.0 in every LeTKD config).
    """

    def __init__(self, centroids: torch.Tensor, temperature: float = 1.0) -> None:
        super().__init__()
        if centroids.ndim != 2:
            raise ValueError(f"centroids must be (num_codes, dim), got shape {tuple(centroids.shape)}.")
        self.register_buffer("centroids", centroids.detach().float().clone())
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    @property
    def num_codes(self) -> int:
        return int(self.centroids.shape[0])

    def forward(self, teacher_map: torch.Tensor) -> torch.Tensor:
        """Teacher map (B, D, h, w) -> soft code assignment softmax(-T |f - rho|^2) per location (B*h*w, K)."""
        if teacher_map.ndim != 4 or teacher_map.shape[1] != self.centroids.shape[1]:
            raise ValueError(
                f"teacher_map must be (B, {self.centroids.shape[1]}, h, w) to match the codebook, "
                f"got {tuple(teacher_map.shape)}."
            )
        locations = flatten_locations(teacher_map).float()
        return torch.softmax(-self.temperature * _squared_distances(locations, self.centroids), dim=1)

    @classmethod
    def fit(
        cls,
        features: torch.Tensor,
        num_codes: int = 4096,
        iters: int = 20,
        seed: int = 0,
        temperature: float = 1.0,
        max_points_per_centroid: int = 10_000_000,
    ) -> PenultimateCodebook:
        """k-means (faiss) over teacher locations (N, D); all points used unless N > K * max_points_per_centroid."""
        if features.ndim != 2:
            raise ValueError(f"features must be (num_locations, dim), got shape {tuple(features.shape)}.")
        return cls(_kmeans(features, num_codes, iters, seed, max_points_per_centroid), temperature)


class DecisionTargets(nn.Module):
    """Sub-class "decision" targets of the teacher's intermediate map; ``forward`` gives rows of S (B*h*w, C*k).

    Buffers: ``lda_weight`` (n, D) and ``lda_bias`` (n,) — the LDA projection z = W f + b; ``centers`` (C*k, n),
    sub-class prototypes in class-major order (sub-class j of class c is row c*k + j); ``scores`` (C*k, C*k) = S.
    """

    def __init__(
        self,
        lda_weight: torch.Tensor,
        lda_bias: torch.Tensor,
        centers: torch.Tensor,
        scores: torch.Tensor,
        subclasses_per_class: int = 8,
    ) -> None:
        super().__init__()
        num_subclasses = centers.shape[0]
        if num_subclasses % subclasses_per_class:
            raise ValueError(
                f"centers has {num_subclasses} rows, not a multiple of subclasses_per_class={subclasses_per_class}."
            )
        if lda_weight.shape[0] != centers.shape[1] or lda_bias.shape != (lda_weight.shape[0],):
            raise ValueError(
                f"inconsistent LDA shapes: lda_weight {tuple(lda_weight.shape)}, lda_bias {tuple(lda_bias.shape)}, "
                f"centers {tuple(centers.shape)}."
            )
        if scores.shape != (num_subclasses, num_subclasses):
            raise ValueError(f"scores must be ({num_subclasses}, {num_subclasses}), got {tuple(scores.shape)}.")
        self.subclasses_per_class = int(subclasses_per_class)
        self.register_buffer("lda_weight", lda_weight.detach().float().clone())
        self.register_buffer("lda_bias", lda_bias.detach().float().clone())
        self.register_buffer("centers", centers.detach().float().clone())
        self.register_buffer("scores", scores.detach().float().clone())

    @property
    def num_classes(self) -> int:
        return self.centers.shape[0] // self.subclasses_per_class

    @property
    def num_codes(self) -> int:
        return int(self.centers.shape[0])

    def within_class_mass(self) -> float:
        """Mean over sub-classes a of the S mass on sub-classes of a's own class (1.0: no cross-class sharing)."""
        k = self.subclasses_per_class
        blocks = self.scores.view(self.num_classes, k, self.num_classes, k).diagonal(dim1=0, dim2=2)  # (k, k, C)
        return blocks.sum(1).mean().item()

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """LDA projection of locations (L, D) -> (L, n)."""
        return features.float() @ self.lda_weight.T + self.lda_bias

    def nearest_in_class(self, projected: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Global sub-class id (L,) of the nearest of each location's own-class prototypes; z (L, n), labels (L,)."""
        k = self.subclasses_per_class
        candidates = self.centers.view(self.num_classes, k, -1)[labels]  # (L, k, n)
        nearest = (projected.unsqueeze(1) - candidates).pow(2).sum(-1).argmin(1)
        return labels * k + nearest

    def forward(self, teacher_map: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Teacher map (B, D, h, w) and image labels (B,) -> per-location targets S[k*] (B*h*w, C*k)."""
        if teacher_map.ndim != 4 or teacher_map.shape[1] != self.lda_weight.shape[1]:
            raise ValueError(
                f"teacher_map must be (B, {self.lda_weight.shape[1]}, h, w) to match the LDA projection, "
                f"got {tuple(teacher_map.shape)}."
            )
        if labels.shape != (teacher_map.shape[0],):
            raise ValueError(f"labels must be ({teacher_map.shape[0]},) image labels, got {tuple(labels.shape)}.")
        location_labels = labels.repeat_interleave(teacher_map.shape[2] * teacher_map.shape[3])
        subclass = self.nearest_in_class(self.project(flatten_locations(teacher_map)), location_labels)
        return self.scores.index_select(0, subclass)

    @classmethod
    def fit(
        cls,
        features: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int,
        lda_dim: int = 60,
        subclasses_per_class: int = 8,
        iters: int = 20,
        seed: int = 0,
    ) -> DecisionTargets:
        """Fit from teacher locations (N, D) labelled with their image's class (N,)."""
        if features.ndim != 2 or labels.shape != (features.shape[0],):
            raise ValueError(
                f"features must be (N, D) and labels (N,), got {tuple(features.shape)} and {tuple(labels.shape)}."
            )
        labels = labels.long().cpu()
        counts = torch.bincount(labels, minlength=num_classes)
        if labels.min() < 0 or labels.max() >= num_classes or (counts < subclasses_per_class).any():
            raise ValueError(
                f"every class 0..{num_classes - 1} needs >= {subclasses_per_class} locations (labels in range); "
                f"counts per class: {counts.tolist()}."
            )
        weight, bias = _fit_lda(features.float().cpu(), labels, min(lda_dim, num_classes - 1, features.shape[1]))
        projected = features.float().cpu() @ weight.T + bias
        centers = torch.cat(
            [
                _subclass_means(projected[labels == label], subclasses_per_class, iters, seed + label)
                for label in range(num_classes)
            ]
        )
        targets = cls(weight, bias, centers, torch.zeros(len(centers), len(centers)), subclasses_per_class)
        targets.scores.copy_(_transition_matrix(targets, projected, labels))
        return targets


def _fit_lda(features: torch.Tensor, labels: torch.Tensor, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn LDA (svd solver, no shrinkage) as z = W f + b: weight (dims, D), bias (dims,)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    lda = LinearDiscriminantAnalysis(n_components=dims, solver="svd").fit(features.numpy(), labels.numpy())
    weight = torch.from_numpy(lda.scalings_[:, :dims].T.copy()).float()
    return weight, -(weight @ torch.from_numpy(lda.xbar_).float())


def _subclass_means(points: torch.Tensor, num_subclasses: int, iters: int, seed: int) -> torch.Tensor:
    """k-means of one class's projected locations (n, d) -> per-cluster means of the final assignment (k, d)."""
    centroids = _kmeans(points, num_subclasses, iters, seed, max_points_per_centroid=10_000_000)
    assignment = _squared_distances(points, centroids).argmin(1)
    means = [
        points[assignment == j].mean(0) if (assignment == j).any() else centroids[j] for j in range(num_subclasses)
    ]
    return torch.stack(means)


def _transition_matrix(targets: DecisionTargets, projected: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """S[a, b] = share of the locations of own-class sub-class a whose nearest prototype overall is b."""
    num = targets.num_codes
    pair_counts = torch.zeros(num * num, dtype=torch.float64)
    for start in range(0, len(projected), _CHUNK):
        z, y = projected[start : start + _CHUNK], labels[start : start + _CHUNK]
        constrained = targets.nearest_in_class(z, y)
        unconstrained = _squared_distances(z, targets.centers).argmin(1)
        pair_counts += torch.bincount(constrained * num + unconstrained, minlength=num * num)
    pair_counts = pair_counts.view(num, num)
    empty = (pair_counts.sum(1) == 0).nonzero().squeeze(1)
    pair_counts[empty, empty] = 1.0  # a sub-class no location chose keeps its own mass
    return pair_counts / pair_counts.sum(1, keepdim=True)


@dataclass
class LocationFeatures:
    """Teacher features of every location (N, C) and the label of the image each location comes from (N,)."""

    features: torch.Tensor
    labels: torch.Tensor


def collect_teacher_locations(
    teacher: TeacherTaps,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    max_batches: int | None = None,
) -> dict[str, LocationFeatures]:
    """Run the teacher over (images, labels) batches (no augmentation!) -> per tap, all locations on CPU float32."""
    features: dict[str, list[torch.Tensor]] = {name: [] for name in teacher.taps}
    labels: dict[str, list[torch.Tensor]] = {name: [] for name in teacher.taps}
    device = next(teacher.parameters()).device
    for index, (images, image_labels) in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            break
        for name, grid in teacher(images.to(device)).maps.items():
            features[name].append(flatten_locations(grid).float().cpu())
            labels[name].append(image_labels.long().cpu().repeat_interleave(grid.shape[2] * grid.shape[3]))
    if not any(features.values()):
        raise ValueError("batches yielded no (images, labels) batch; pass the non-augmented training loader.")
    return {name: LocationFeatures(torch.cat(features[name]), torch.cat(labels[name])) for name in teacher.taps}


class LeTKDTargets(nn.Module):
    """Both kinds of targets (either may be ``None``); ``forward(maps, labels)`` -> {tap_name: targets (L, K)}."""

    def __init__(self, penultimate: PenultimateCodebook | None = None, intermediate: DecisionTargets | None = None):
        super().__init__()
        if penultimate is None and intermediate is None:
            raise ValueError("LeTKDTargets needs a penultimate codebook, intermediate decision targets, or both.")
        self.penultimate = penultimate
        self.intermediate = intermediate

    @property
    def taps(self) -> tuple[str, ...]:
        return tuple(name for name in (PENULTIMATE, INTERMEDIATE) if getattr(self, name) is not None)

    def forward(self, maps: Mapping[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher maps {tap_name: (B, D, h, w)} and image labels (B,) -> {tap_name: (B*h*w, K)}."""
        missing = [name for name in self.taps if name not in maps]
        if missing:
            raise ValueError(f"teacher maps for {missing} are missing; build TeacherTaps with taps={self.taps}.")
        out = {}
        if self.penultimate is not None:
            out[PENULTIMATE] = self.penultimate(maps[PENULTIMATE])
        if self.intermediate is not None:
            out[INTERMEDIATE] = self.intermediate(maps[INTERMEDIATE], labels)
        return out

    @classmethod
    def fit(
        cls,
        locations: Mapping[str, LocationFeatures],
        num_classes: int,
        *,
        num_codes: int = 4096,
        lda_dim: int = 60,
        subclasses_per_class: int = 8,
        iters: int = 20,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> LeTKDTargets:
        """Fit the targets for every tap in ``locations`` (from :func:`collect_teacher_locations`)."""
        pen = locations.get(PENULTIMATE)
        inter = locations.get(INTERMEDIATE)
        return cls(
            PenultimateCodebook.fit(pen.features, num_codes, iters, seed, temperature) if pen is not None else None,
            DecisionTargets.fit(inter.features, inter.labels, num_classes, lda_dim, subclasses_per_class, iters, seed)
            if inter is not None
            else None,
        )

    def save(self, path: str | Path) -> None:
        """Write all buffers to one safetensors file, atomically (temp file in the same folder, then replace)."""
        metadata = {"format": _FORMAT, "version": "1"}
        if self.intermediate is not None:
            metadata["subclasses_per_class"] = str(self.intermediate.subclasses_per_class)
        tensors = {name: value.contiguous() for name, value in self.state_dict().items()}
        with atomic_file(path) as temp:
            save_file(tensors, str(temp), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> LeTKDTargets:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"targets file {str(path)!r} does not exist; build it with LeTKDTargets.fit(...).save(path)."
            )
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != _FORMAT:
                raise ValueError(f"{path} is not a LeTKD targets file (metadata format={metadata.get('format')!r}).")
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        penultimate = (
            PenultimateCodebook(tensors["penultimate.centroids"], float(tensors["penultimate.temperature"]))
            if "penultimate.centroids" in tensors
            else None
        )
        intermediate = (
            DecisionTargets(
                *(tensors[f"intermediate.{name}"] for name in ("lda_weight", "lda_bias", "centers", "scores")),
                subclasses_per_class=int(metadata["subclasses_per_class"]),
            )
            if "intermediate.centers" in tensors
            else None
        )
        return cls(penultimate, intermediate)
