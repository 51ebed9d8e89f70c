"""Distillation losses against float64 references: dense KL, LeTKD total, Hinton KD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

import gsp_hub.models.cifar_resnet  # noqa: F401  (registers cifar_resnet*)
from gsp_hub.kd import DecisionTargets, LeTKDTargets, PenultimateCodebook
from gsp_hub.losses import HintonKDLoss, LeTKDLoss, dense_kl, hinton_kd
from gsp_hub.models.taps import INTERMEDIATE, PENULTIMATE, TeacherTaps, insert_letkd_layers


def _reference_dense_kl(logits: np.ndarray, targets: np.ndarray) -> float:
    """Loop over locations of a (B, K, h, w) map in (b, i, j) order; 0 * log 0 = 0."""
    batch, codes, height, width = logits.shape
    total, row = 0.0, 0
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                s = logits[b, :, i, j].astype(np.float64)
                log_q = s - s.max() - np.log(np.exp(s - s.max()).sum())
                p = targets[row]
                total += sum(p[k] * (math.log(p[k]) - log_q[k]) for k in range(codes) if p[k] > 0)
                row += 1
    return total / row


def test_dense_kl_equals_float64_loop_and_kl_div_batchmean() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 6, 3, 2)) * 3
    targets = rng.dirichlet(np.ones(6), size=12)
    targets[::3, 2] = 0.0  # zero targets contribute nothing
    targets /= targets.sum(1, keepdims=True)
    value = dense_kl(torch.tensor(logits, dtype=torch.float32), torch.tensor(targets, dtype=torch.float32))
    assert value.item() == pytest.approx(_reference_dense_kl(logits, targets), rel=1e-5)
    flat = torch.tensor(logits).permute(0, 2, 3, 1).reshape(-1, 6)
    kl_div = F.kl_div(F.log_softmax(flat, 1), torch.tensor(targets), reduction="batchmean")
    assert value.item() == pytest.approx(kl_div.item(), rel=1e-5)
    uniform_logits = torch.zeros(4, 4096)
    one_hot = torch.eye(4096)[:4]
    assert dense_kl(uniform_logits, one_hot).item() == pytest.approx(math.log(4096), rel=1e-6)  # spec check 7
    with pytest.raises(ValueError, match="num_codes=5"):
        dense_kl(torch.randn(12, 6), torch.rand(12, 5))


def test_hinton_kd_equals_float64_reference() -> None:
    rng = np.random.default_rng(1)
    student, teacher = rng.normal(size=(5, 7)) * 4, rng.normal(size=(5, 7)) * 4
    temperature = 4.0

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p_t, p_s = softmax(teacher / temperature), softmax(student / temperature)
    reference = temperature**2 * (p_t * (np.log(p_t) - np.log(p_s))).sum(1).mean()
    s32, t32 = torch.tensor(student, dtype=torch.float32), torch.tensor(teacher, dtype=torch.float32)
    assert hinton_kd(s32, t32, temperature).item() == pytest.approx(reference, rel=1e-5)

    labels = torch.tensor([0, 3, 6, 1, 2])
    s32.requires_grad_()
    out = HintonKDLoss()(s32, labels, t32)
    ce = -np.log(softmax(student)[np.arange(5), labels.numpy()]).mean()
    assert out.loss.item() == pytest.approx(0.1 * ce + 0.9 * reference, rel=1e-5)
    assert out.parts["kd"].item() == pytest.approx(reference, rel=1e-5)
    out.loss.backward()
    assert s32.grad is not None
    with pytest.raises(ValueError, match="same classes"):
        hinton_kd(torch.randn(2, 3), torch.randn(2, 4))


def test_letkd_loss_total_and_gradient_paths() -> None:
    torch.manual_seed(0)
    student = insert_letkd_layers(timm.create_model("cifar_resnet20"), input_size=(3, 32, 32), pen_codes=16,
                                  inter_codes=20)
    teacher = TeacherTaps(timm.create_model("cifar_resnet8x4"), grid_sizes=student.grid_sizes)
    targets = LeTKDTargets(
        PenultimateCodebook(torch.randn(16, 256) * 3),
        DecisionTargets(torch.randn(5, 256), torch.randn(5), torch.randn(20, 5),
                        torch.softmax(torch.randn(20, 20), 1), subclasses_per_class=2),
    )
    criterion = LeTKDLoss(targets, pen_weight=1.0, inter_weight=0.5)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 9, 3, 3])
    logits, tap_logits = student(images, return_tap_logits=True)
    maps = teacher(images).maps
    out = criterion(logits, labels, tap_logits, maps)

    expected_pen = dense_kl(tap_logits[PENULTIMATE].double(), targets.penultimate(maps[PENULTIMATE]).double())
    inter_targets = targets.intermediate(maps[INTERMEDIATE], labels)
    expected_int = dense_kl(tap_logits[INTERMEDIATE].double(), inter_targets.double())
    expected = F.cross_entropy(logits.double(), labels) + expected_pen + 0.5 * expected_int
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(out.parts) == {"ce", "kl_penultimate", "kl_intermediate", "template_acc_penultimate",
                              "template_acc_intermediate"}
    out.loss.backward()
    layers = student.tap_layers
    assert layers[PENULTIMATE].match.weight.grad.abs().sum() > 0
    assert layers[INTERMEDIATE].match.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())

    with pytest.raises(ValueError, match="letKD-1"):
        criterion(logits, labels, {PENULTIMATE: tap_logits[PENULTIMATE]}, maps)
