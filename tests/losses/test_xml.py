"""XMLLoss: the cross-batch predictor vs a float64 closed form, loss combination, gradients end to end."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import ContrastiveLoss, MultiSimilarityLoss

from gsp_hub.layers.prototype import PrototypePool
from gsp_hub.losses import SampleCrossBatchRegularizer, XMLLoss, ZeroShotRegularizer
from gsp_hub.models.metric_net import MetricNet


def closed_form_predictions(a: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, ridge: float) -> torch.Tensor:
    """float64 reference: per half, W = (AᵀA + λI)⁻¹AᵀT fitted on the other classes (explicit inverse)."""
    a, targets = a.double(), targets.double()
    classes = torch.unique(labels)
    first = torch.isin(labels, classes[0::2])
    predictions = torch.empty_like(targets)
    eye = torch.eye(a.shape[1], dtype=torch.float64)
    for fit, predict in ((first, ~first), (~first, first)):
        weights = torch.linalg.inv(a[fit].T @ a[fit] + ridge * eye) @ a[fit].T @ targets[fit]
        predictions[predict] = a[predict] @ weights
    return predictions


def batch(seed: int, num_classes: int = 6, per_class: int = 4, k: int = 8, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat(per_class)[torch.randperm(num_classes * per_class, generator=g)]
    attributes = torch.softmax(2 * torch.randn(labels.numel(), k, generator=g), dim=1)
    embeddings = torch.randn(labels.numel(), d, generator=g)
    return embeddings, labels, attributes


def test_class_embedding_term_equals_float64_closed_form() -> None:
    embeddings, labels, attributes = batch(0)
    loss = XMLLoss(MultiSimilarityLoss(), num_classes=6, embed_dim=16, ridge=0.05, scale=9.5)
    v = loss.regularizer.class_embeddings.detach().double()
    predictions = closed_form_predictions(attributes, v[labels], labels, 0.05)
    expected = torch.nn.functional.cross_entropy(9.5 * predictions @ v.T, labels)
    assert isinstance(loss.regularizer, ZeroShotRegularizer)  # XML's class-embedding target is the ZSR kernel
    assert abs(loss.terms(embeddings, labels, attributes).regularizer.item() - expected.item()) < 1e-5


@pytest.mark.parametrize("convex", [True, False])
def test_total_is_base_plus_weighted_cross_batch_term(convex: bool) -> None:
    embeddings, labels, attributes = batch(1)
    base = MultiSimilarityLoss()
    loss = XMLLoss(base, num_classes=6, embed_dim=16, weight=0.25, convex=convex)
    total = loss(embeddings, labels, attributes)
    expected = (0.75 if convex else 1.0) * base(embeddings, labels) + 0.25 * loss.regularizer(attributes, labels)
    assert torch.allclose(total, expected, atol=1e-6)
    assert torch.allclose(loss(embeddings, labels, None), (0.75 if convex else 1.0) * base(embeddings, labels))


def test_sample_embedding_target_scores_predictions_with_the_base_loss() -> None:
    embeddings, labels, attributes = batch(2)
    base = ContrastiveLoss(pos_margin=1.0, neg_margin=0.5, distance=CosineSimilarity())
    loss = XMLLoss(base, target="sample_embeddings", weight=0.1)
    assert isinstance(loss.regularizer, SampleCrossBatchRegularizer)
    predictions = closed_form_predictions(attributes, embeddings, labels, 0.05).float()
    expected = base(predictions, labels, ref_emb=embeddings, ref_labels=labels)
    terms = loss.terms(embeddings, labels, attributes)
    assert torch.allclose(terms.regularizer, expected, atol=1e-5)
    assert torch.allclose(terms.total, 0.9 * base(embeddings, labels) + 0.1 * expected, atol=1e-5)
    embeddings.requires_grad_()
    attributes.requires_grad_()
    loss(embeddings, labels, attributes).backward()
    assert attributes.grad.abs().sum() > 0 and embeddings.grad.abs().sum() > 0


def test_metric_net_with_proto_pool_trains_backbone_prototypes_and_class_embeddings() -> None:
    torch.manual_seed(3)
    model = MetricNet("test_resnet", pool="proto", embed_dim=32, num_prototypes=8)
    assert isinstance(model.pool, PrototypePool)
    loss = XMLLoss(MultiSimilarityLoss(), num_classes=4, embed_dim=32)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    embeddings, aux = model.forward_head(model.forward_features(torch.randn(8, 3, 64, 64)), return_aux=True)
    loss.regularizer(aux.attributes, labels).backward()  # the XML term alone trains all three
    for name, grad in [("stem", next(model.backbone.parameters()).grad), ("prototypes", model.pool.prototypes.grad),
                       ("class_embeddings", loss.regularizer.class_embeddings.grad)]:
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    optimizer = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.1)
    before = loss.regularizer.class_embeddings.detach().clone()
    optimizer.zero_grad()
    loss(embeddings.detach().requires_grad_(), labels, aux.attributes.detach()).backward()
    optimizer.step()
    assert not torch.equal(before, loss.regularizer.class_embeddings)


def test_bad_inputs_raise() -> None:
    embeddings, labels, attributes = batch(4)
    loss = XMLLoss(MultiSimilarityLoss(), num_classes=6, embed_dim=16)
    with pytest.raises(ValueError, match="at least 2 distinct classes"):
        loss(embeddings, torch.zeros_like(labels), attributes)
    with pytest.raises(ValueError, match="attributes"):
        loss(embeddings, labels, attributes[:-1])
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        loss(embeddings, labels + 1, attributes)
    with pytest.raises(ValueError, match="num_classes"):
        XMLLoss(MultiSimilarityLoss())
    with pytest.raises(ValueError, match="target"):
        XMLLoss(MultiSimilarityLoss(), 6, 16, target="prototypes")
