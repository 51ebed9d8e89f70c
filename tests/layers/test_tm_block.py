"""Template-matching block (reconstruction): identity at alpha = 0, class grouping, label losses vs hand-computed CE."""

from __future__ import annotations

import copy
import math

import pytest
import timm
import torch
import torch.nn.functional as F

import gsp_hub.models.cifar_resnet  # noqa: F401  (registers cifar_resnet*)
from gsp_hub.layers import LeTKDLayer, TMBlock
from gsp_hub.losses import tm_loss
from gsp_hub.models.taps import INTERMEDIATE, PENULTIMATE, tm_student


def test_parameter_count_matches_spec_formula() -> None:
    block = TMBlock(64, 100, templates_per_class=1)
    assert isinstance(block, LeTKDLayer)
    assert sum(p.numel() for p in block.parameters()) == 2 * 100 * 64 + 2 * 100 + 2  # 13,002 (tm_block.md 7.6)


def test_alpha_zero_student_gives_bit_identical_logits() -> None:
    bare = timm.create_model("cifar_resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = bare(x)
        student = tm_student(copy.deepcopy(bare), input_size=(3, 32, 32), alpha=0.0,
                             taps=(PENULTIMATE, INTERMEDIATE)).eval()
        logits, tap_logits = student(x, return_tap_logits=True)
    assert torch.equal(logits, expected)
    assert tap_logits[INTERMEDIATE].shape == (2, 10, 8, 8) and tap_logits[PENULTIMATE].shape == (2, 10, 8, 8)


def test_class_major_grouping_and_pooling_modes() -> None:
    logits = torch.randn(2, 3 * 4, 2, 2)
    block_max = TMBlock(5, 3, templates_per_class=4, class_pool="max")
    block_lse = TMBlock(5, 3, templates_per_class=4, class_pool="lse")
    for c in range(3):  # channel c * m + j is template j of class c
        torch.testing.assert_close(block_max.class_scores(logits)[:, c], logits[:, 4 * c : 4 * c + 4].amax(1))
        torch.testing.assert_close(block_lse.class_scores(logits)[:, c], logits[:, 4 * c : 4 * c + 4].logsumexp(1))
    single = torch.randn(2, 3, 2, 2)
    for pool in ("max", "lse", "none"):
        torch.testing.assert_close(TMBlock(5, 3, class_pool=pool).class_scores(single), single)


def test_dense_and_image_label_losses_equal_hand_computed_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 2, 2, dtype=torch.float64)  # m = 1, 2x2 toy map
    labels = torch.tensor([2, 0])
    dense = TMBlock(4, 3, class_pool="none", label_mode="dense").label_loss(logits, labels)
    total = 0.0
    for b in range(2):
        for i in range(2):
            for j in range(2):
                scores = logits[b, :, i, j]
                total += -(scores[labels[b]] - torch.logsumexp(scores, 0)).item()
    assert dense.item() == pytest.approx(total / 8, rel=1e-10)

    image = TMBlock(4, 3, class_pool="none", label_mode="image").label_loss(logits, labels)
    pooled = logits.mean((2, 3))
    expected = sum(-(pooled[b, labels[b]] - torch.logsumexp(pooled[b], 0)).item() for b in range(2)) / 2
    assert image.item() == pytest.approx(expected, rel=1e-10)


def test_tm_loss_and_classifier_reset_guard() -> None:
    student = tm_student(timm.create_model("cifar_resnet20"), input_size=(3, 32, 32), templates_per_class=2)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([1, 2, 3, 4])
    logits, tap_logits = student(images, return_tap_logits=True)
    out = tm_loss(logits, labels, tap_logits, student.tap_layers, lambda_tm=0.5)
    block = student.tap_layers[INTERMEDIATE]
    expected = F.cross_entropy(logits, labels) + 0.5 * block.label_loss(tap_logits[INTERMEDIATE], labels)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    out.loss.backward()
    assert block.match.weight.grad is not None and block.match.scale.grad is not None
    assert tap_logits[INTERMEDIATE].shape[1] == 20 and math.isfinite(out.parts["tm_intermediate"].item())
    with pytest.raises(ValueError, match="tied to 10 classes"):
        student.reset_classifier(5)
    student.reset_classifier(10)
    with pytest.raises(ValueError, match="class_pool='none' needs templates_per_class=1"):
        TMBlock(8, 4, templates_per_class=2, class_pool="none")
    with pytest.raises(ValueError, match="label_mode"):
        TMBlock(8, 4, label_mode="pixel")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pass num_classes"):
        tm_student(timm.create_model("cifar_resnet20", num_classes=0), input_size=(3, 32, 32))
