"""ZeroShotRegularizer against an independent float64 reference of shared/spec/gsp.md §7."""

from __future__ import annotations

import math

import pytest
import torch

from gsp_hub.losses import ZeroShotRegularizer


def reference_zsr(attributes, labels, class_embeddings, ridge=0.05, scale=9.5, margin=0.0):
    """gsp.md §7 written out literally in float64: dual ridge with an explicit solve per half, CE by log-sum-exp."""
    classes = sorted(set(labels.tolist()))
    first = {c for c in classes[0::2]}  # alternate sorted classes between the halves
    halves = [
        [i for i, y in enumerate(labels.tolist()) if y in first],
        [i for i, y in enumerate(labels.tolist()) if y not in first],
    ]
    predictions = [None] * len(labels)
    for fit, predict in ((halves[0], halves[1]), (halves[1], halves[0])):
        a = attributes[fit]
        y = class_embeddings[labels[fit]]
        gram = a @ a.T + ridge * torch.eye(len(fit), dtype=torch.float64)
        weights = a.T @ torch.linalg.solve(gram, y)  # W = Aᵀ (A Aᵀ + λI)⁻¹ Y, (K, D)
        for i in predict:
            predictions[i] = attributes[i] @ weights
    total = 0.0
    for i, y_i in enumerate(labels.tolist()):
        logits = scale * class_embeddings @ predictions[i]
        logits = logits - scale * margin * (torch.arange(len(class_embeddings)) == y_i).double()
        total = total + torch.logsumexp(logits, 0) - logits[y_i]
    return total / len(labels)


def batch(num_classes=6, per_class=3, prototypes=8, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(num_classes * per_class, generator=generator)
    labels = torch.arange(num_classes).repeat_interleave(per_class)[order]
    attributes = torch.softmax(3 * torch.randn(len(labels), prototypes, generator=generator, dtype=dtype), dim=1)
    return attributes, labels


@pytest.mark.parametrize("margin", [0.0, 0.2])
@pytest.mark.parametrize("shape", [(6, 3, 8), (4, 2, 16), (3, 5, 4)])  # n <= K (dual) and n > K (primal) solves
def test_zsr_matches_float64_reference_value_and_gradients(shape, margin):
    num_classes, per_class, prototypes = shape
    attributes, labels = batch(num_classes, per_class, prototypes)
    zsr = ZeroShotRegularizer(num_classes + 2, 12, margin=margin).double()
    attributes.requires_grad_(True)
    loss = zsr(attributes, labels)
    grad_a, grad_v = torch.autograd.grad(loss, (attributes, zsr.class_embeddings))

    v = zsr.class_embeddings.detach().clone().requires_grad_(True)
    a = attributes.detach().clone().requires_grad_(True)
    expected = reference_zsr(a, labels, v, margin=margin)
    ref_a, ref_v = torch.autograd.grad(expected, (a, v))

    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad_a, ref_a, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(grad_v, ref_v, rtol=1e-8, atol=1e-10)
    assert grad_v.abs().sum() > 0  # V is trained (official defect 2)


def test_zsr_float32_close_to_float64():
    attributes, labels = batch()
    zsr = ZeroShotRegularizer(6, 12)
    expected = reference_zsr(attributes, labels, zsr.class_embeddings.detach().double())
    torch.testing.assert_close(zsr(attributes.float(), labels).double(), expected, rtol=1e-4, atol=1e-5)


def test_zsr_hand_computed_toy():
    """4 samples, 2 classes, one-hot attributes: W of each half maps its prototypes to its class embedding."""
    attributes = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    zsr = ZeroShotRegularizer(2, 2, ridge=1.0, scale=1.0).double()
    with torch.no_grad():
        zsr.class_embeddings.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # Half {0,1}: A=[[1,0],[1,0]], Y=[[1,0],[1,0]] -> W = (AᵀA+I)⁻¹AᵀY = [[2/3,0],[0,0]];
    # it predicts class-1 rows a=[0,1] -> 0. Symmetrically class-0 rows are predicted 0 too: all logits 0, CE = log 2.
    assert zsr(attributes, labels).item() == pytest.approx(math.log(2.0), abs=1e-12)
    # Shared prototype mass transfers: rows [0.5, 0.5] of both classes get the same prediction.
    mixed = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    expected = reference_zsr(mixed, labels, zsr.class_embeddings.detach(), ridge=1.0, scale=1.0)
    assert zsr(mixed, labels).item() == pytest.approx(expected.item(), abs=1e-12)


def test_zsr_requires_two_classes():
    zsr = ZeroShotRegularizer(5, 8)
    attributes = torch.softmax(torch.randn(4, 3), dim=1)
    with pytest.raises(ValueError, match="at least 2 distinct classes"):
        zsr(attributes, torch.tensor([2, 2, 2, 2]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_classes=1, embed_dim=4), "num_classes"),
        (dict(num_classes=3, embed_dim=0), "embed_dim"),
        (dict(num_classes=3, embed_dim=4, ridge=0.0), "ridge"),
        (dict(num_classes=3, embed_dim=4, scale=-1.0), "scale"),
    ],
)
def test_zsr_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ZeroShotRegularizer(**kwargs)


def test_zsr_class_embeddings_he_normal_and_in_parameters():
    torch.manual_seed(0)
    zsr = ZeroShotRegularizer(200, 512)
    assert [name for name, _ in zsr.named_parameters()] == ["class_embeddings"]
    assert zsr.class_embeddings.std().item() == pytest.approx((2 / 200) ** 0.5, rel=0.02)


@pytest.mark.parametrize(("init", "expected_std"), [("he", (2 / 5) ** 0.5), ("unit", 128**-0.5)])
def test_class_embedding_init_sets_the_scale_of_v(init, expected_std):
    torch.manual_seed(0)
    zsr = ZeroShotRegularizer(5, 128, class_embedding_init=init)
    assert zsr.class_embeddings.std().item() == pytest.approx(expected_std, rel=0.1)


def test_unit_init_keeps_the_starting_logits_within_the_scale():
    """With 'unit' rows of norm ~1, a perfect prediction of a class embedding scores about scale, not hundreds."""
    torch.manual_seed(0)
    for init, bound in (("unit", 2 * 9.5), ("he", None)):
        v = ZeroShotRegularizer(5, 128, class_embedding_init=init).class_embeddings.detach()
        top_logit = 9.5 * (v * v).sum(1).max().item()
        if bound is not None:
            assert top_logit < bound
        else:
            assert top_logit > 200  # the TF framework's init at 5 classes, D = 128


def test_unknown_class_embedding_init_is_named():
    with pytest.raises(ValueError, match=r"class_embedding_init must be one of \['he', 'unit'\], got 'glorot'"):
        ZeroShotRegularizer(5, 8, class_embedding_init="glorot")
