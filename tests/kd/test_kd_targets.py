"""LeTKD targets: codebook, LDA and sub-class decisions against numpy float64 references; safetensors round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

import gsp_hub.models.cifar_resnet  # noqa: F401  (registers cifar_resnet*)
from gsp_hub.kd import DecisionTargets, LeTKDTargets, PenultimateCodebook, collect_teacher_locations
from gsp_hub.losses import LeTKDLoss
from gsp_hub.models.taps import INTERMEDIATE, PENULTIMATE, TeacherTaps


def test_codebook_targets_equal_float64_softmax_of_negative_squared_distances() -> None:
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(12, 5))
    teacher_map = rng.normal(size=(2, 5, 3, 4))
    codebook = PenultimateCodebook(torch.tensor(centroids, dtype=torch.float32), temperature=0.7)
    targets = codebook(torch.tensor(teacher_map, dtype=torch.float32))
    reference = np.zeros((2 * 3 * 4, 12))
    row = 0
    for b in range(2):
        for i in range(3):
            for j in range(4):
                distances = ((teacher_map[b, :, i, j] - centroids) ** 2).sum(1)
                logits = -0.7 * distances
                reference[row] = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
                row += 1
    np.testing.assert_allclose(targets.numpy(), reference, rtol=1e-4, atol=1e-6)
    on_centroid = codebook(torch.tensor(centroids[3], dtype=torch.float32).view(1, 5, 1, 1) * 1.0)
    assert on_centroid[0].argmax() == 3


def test_codebook_fit_is_seeded_and_a_lloyd_fixed_point() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, 4)) * 20
    points = centres[rng.integers(0, 6, 3000)] + rng.normal(size=(3000, 4))
    first = PenultimateCodebook.fit(torch.tensor(points, dtype=torch.float32), num_codes=6, iters=20, seed=3)
    second = PenultimateCodebook.fit(torch.tensor(points, dtype=torch.float32), num_codes=6, iters=20, seed=3)
    assert torch.equal(first.centroids, second.centroids)
    # Converged k-means (float64 brute force): every centroid is the mean of the points nearest to it.
    found = first.centroids.double().numpy()
    nearest = ((points[:, None] - found[None]) ** 2).sum(-1).argmin(1)
    means = np.stack([points[nearest == k].mean(0) for k in range(6)])
    np.testing.assert_allclose(found, means, atol=1e-3)
    with pytest.raises(ValueError, match="at least 6 points"):
        PenultimateCodebook.fit(torch.tensor(points[:5], dtype=torch.float32), num_codes=6)


def _blobs(num_classes: int, subclasses: int, per_subclass: int, spread: float, seed: int):
    """Class c is centred at 10 e_c; its sub-classes are offset along e_c (kept by LDA), plus isotropic noise."""
    rng = np.random.default_rng(seed)
    dim = num_classes + 2
    features, labels = [], []
    for c in range(num_classes):
        for j in range(subclasses):
            centre = np.zeros(dim)
            centre[c] = 10.0 + 4.0 * (j - (subclasses - 1) / 2)
            features.append(centre + rng.normal(size=(per_subclass, dim)) * spread)
            labels += [c] * per_subclass
    return np.concatenate(features).astype(np.float32), np.array(labels)


def test_lda_projection_equals_sklearn_and_whitens_within_class_scatter() -> None:
    features, labels = _blobs(num_classes=4, subclasses=2, per_subclass=80, spread=1.0, seed=0)
    targets = DecisionTargets.fit(torch.from_numpy(features), torch.from_numpy(labels), num_classes=4,
                                  lda_dim=60, subclasses_per_class=2)
    projected = targets.project(torch.from_numpy(features)).double().numpy()
    assert projected.shape == (len(features), 3)  # min(60, C - 1 = 3, D = 6)
    sklearn_projection = LinearDiscriminantAnalysis(n_components=3).fit(features, labels).transform(features)
    np.testing.assert_allclose(projected, sklearn_projection, rtol=1e-4, atol=1e-4)
    # LDA's defining properties, in float64: identity within-class scatter, diagonal between-class scatter.
    means = np.stack([projected[labels == c].mean(0) for c in range(4)])
    centred = projected - means[labels]
    np.testing.assert_allclose(centred.T @ centred / len(projected), np.eye(3), atol=1e-3)
    counts = np.bincount(labels)
    between = ((means - projected.mean(0)).T * counts) @ (means - projected.mean(0))
    assert np.abs(between - np.diag(np.diag(between))).max() < 1e-3 * np.abs(between).max()


def _numpy_decisions(targets: DecisionTargets, features: np.ndarray, labels: np.ndarray):
    """Brute-force float64 reference: own-class nearest prototype k*, and S from (k*, overall nearest) counts."""
    weight, bias = targets.lda_weight.double().numpy(), targets.lda_bias.double().numpy()
    centers, k = targets.centers.double().numpy(), targets.subclasses_per_class
    z = features.astype(np.float64) @ weight.T + bias
    constrained = np.empty(len(z), dtype=np.int64)
    counts = np.zeros((len(centers), len(centers)))
    for i in range(len(z)):
        distances = ((z[i] - centers) ** 2).sum(1)
        own = distances[labels[i] * k : (labels[i] + 1) * k]
        constrained[i] = labels[i] * k + int(np.argmin(own))
        counts[constrained[i], int(np.argmin(distances))] += 1
    for a in np.where(counts.sum(1) == 0)[0]:
        counts[a, a] = 1.0
    return constrained, counts / counts.sum(1, keepdims=True)


def test_decision_targets_equal_numpy_reference_on_overlapping_subclasses() -> None:
    features, labels = _blobs(num_classes=3, subclasses=3, per_subclass=60, spread=2.5, seed=1)
    targets = DecisionTargets.fit(torch.from_numpy(features), torch.from_numpy(labels), num_classes=3,
                                  subclasses_per_class=3, seed=0)
    constrained, reference_scores = _numpy_decisions(targets, features, labels)
    scores = targets.scores.double().numpy()
    np.testing.assert_allclose(scores, reference_scores, atol=1e-6)
    assert (scores >= 0).all() and np.allclose(scores.sum(1), 1.0)
    assert (constrained // 3 == labels).all()
    off_diagonal = scores - np.diag(np.diag(scores))
    assert off_diagonal.sum() > 0.1  # overlapping sub-classes: S carries cross mass
    own_class_mass = np.mean([scores[a, (a // 3) * 3 : (a // 3) * 3 + 3].sum() for a in range(9)])
    assert targets.within_class_mass() == pytest.approx(own_class_mass, abs=1e-6)

    # Online lookup on a (B, D, h, w) map: rows of S at the own-class nearest prototype, location order b, i, j.
    teacher_map = torch.from_numpy(features[:12]).T.reshape(1, -1, 3, 4)
    image_labels = torch.tensor([int(labels[0])])
    online = targets(teacher_map, image_labels)
    location_features = teacher_map[0].permute(1, 2, 0).reshape(12, -1).numpy()
    expected, _ = _numpy_decisions(targets, location_features, np.full(12, labels[0]))
    np.testing.assert_allclose(online.numpy(), scores[expected], atol=1e-6)


def test_decision_prototypes_are_subclass_means_on_separated_data() -> None:
    features, labels = _blobs(num_classes=4, subclasses=2, per_subclass=50, spread=0.2, seed=2)
    targets = DecisionTargets.fit(torch.from_numpy(features), torch.from_numpy(labels), num_classes=4,
                                  subclasses_per_class=2)
    projected = targets.project(torch.from_numpy(features)).double().numpy()
    truth = projected.reshape(4, 2, 50, -1).mean(2)  # the generated sub-blobs, in generation order
    found = targets.centers.double().numpy().reshape(4, 2, -1)
    for c in range(4):
        gap = np.abs(found[c][:, None] - truth[c][None]).max(-1)  # (found, true)
        assert sorted(gap.min(1)) == pytest.approx([0, 0], abs=1e-4) and set(gap.argmin(1)) == {0, 1}
    np.testing.assert_allclose(targets.scores.numpy(), np.eye(8), atol=1e-6)  # separated: no cross mass
    assert targets.within_class_mass() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs >= 2 locations"):
        DecisionTargets.fit(torch.from_numpy(features), torch.from_numpy(labels), num_classes=5, subclasses_per_class=2)


def _small_targets() -> LeTKDTargets:
    features, labels = _blobs(num_classes=3, subclasses=2, per_subclass=40, spread=1.5, seed=3)
    return LeTKDTargets(
        PenultimateCodebook.fit(torch.from_numpy(features), num_codes=8, seed=0),
        DecisionTargets.fit(
            torch.from_numpy(features), torch.from_numpy(labels), num_classes=3, subclasses_per_class=2
        ),
    )


def test_targets_safetensors_round_trip_and_checkpointing(tmp_path: Path) -> None:
    targets = _small_targets()
    path = tmp_path / "targets" / "rn56.safetensors"
    targets.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["rn56.safetensors"]  # no temp file left behind
    loaded = LeTKDTargets.load(path)
    assert loaded.taps == (PENULTIMATE, INTERMEDIATE) and loaded.intermediate.subclasses_per_class == 2
    for key, value in targets.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    maps = {PENULTIMATE: torch.randn(2, 5, 2, 2), INTERMEDIATE: torch.randn(2, 5, 2, 2)}
    labels = torch.tensor([0, 2])
    for name, value in targets(maps, labels).items():
        assert torch.equal(value, loaded(maps, labels)[name])

    # The buffers travel in the loss module's state_dict (what a training checkpoint stores).
    state = LeTKDLoss(targets).state_dict()
    assert {"targets.penultimate.centroids", "targets.intermediate.scores"} <= set(state)
    fresh = LeTKDLoss(LeTKDTargets.load(path))
    fresh.load_state_dict(state, strict=True)

    penultimate_only = LeTKDTargets(targets.penultimate)
    penultimate_only.save(tmp_path / "pen.safetensors")
    assert LeTKDTargets.load(tmp_path / "pen.safetensors").taps == (PENULTIMATE,)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        LeTKDTargets.load(tmp_path / "missing.safetensors")
    save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a LeTKD targets file"):
        LeTKDTargets.load(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="missing"):
        targets({PENULTIMATE: maps[PENULTIMATE]}, labels)


def test_collect_teacher_locations_flattens_every_location_with_its_image_label() -> None:
    teacher_model = timm.create_model("cifar_resnet20")
    teacher = TeacherTaps(teacher_model, grid_sizes={PENULTIMATE: (4, 4), INTERMEDIATE: (8, 8)})
    batches = [(torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])) for _ in range(3)]
    locations = collect_teacher_locations(teacher, batches, max_batches=2)
    pen, inter = locations[PENULTIMATE], locations[INTERMEDIATE]
    assert pen.features.shape == (2 * 3 * 16, 64) and inter.features.shape == (2 * 3 * 64, 64)
    assert torch.equal(pen.labels[:16], torch.zeros(16, dtype=torch.long))
    assert torch.equal(inter.labels[64:128], torch.ones(64, dtype=torch.long))
    first_map = teacher(batches[0][0]).maps[PENULTIMATE]  # (3, 64, 4, 4)
    torch.testing.assert_close(pen.features[16 + 5], first_map[1, :, 1, 1])  # image 1, row 1, column 1
    with pytest.raises(ValueError, match="no \\(images, labels\\) batch"):
        collect_teacher_locations(teacher, [])
