"""The base-loss registry (PML losses, XBM) and the GSP loss combination (1 - w)·base + w·ZSR."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from gsp_hub.losses import XBM, GSPLoss, ZeroShotRegularizer, create_loss, list_losses


def embeddings_and_labels(batch=12, dim=8, classes=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=generator), torch.arange(classes).repeat(batch // classes)


@pytest.mark.parametrize("name", list_losses())
def test_every_registered_loss_builds_from_defaults_and_trains(name):
    embeddings, labels = embeddings_and_labels()
    loss_fn = create_loss(name, num_classes=4, embed_dim=8)
    embeddings.requires_grad_(True)
    loss = loss_fn(embeddings, labels)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    assert embeddings.grad.abs().sum() > 0


def test_contrastive_matches_brute_force_pair_loop():
    """C1: sum over ordered pairs of [1 - s]_+ (positives) and [s - 0.5]_+ (negatives), divided by B."""
    embeddings, labels = embeddings_and_labels(batch=9, classes=3)
    similarity = F.normalize(embeddings.double(), dim=1) @ F.normalize(embeddings.double(), dim=1).T
    total = 0.0
    for i, j in itertools.permutations(range(len(labels)), 2):
        s = similarity[i, j].item()
        total += max(0.0, 1.0 - s) if labels[i] == labels[j] else max(0.0, s - 0.5)
    loss = create_loss("contrastive", num_classes=3, embed_dim=8)(embeddings.double(), labels)
    assert loss.item() == pytest.approx(total / len(labels), rel=1e-10)


def test_create_loss_rejects_unknown_names_and_arguments():
    with pytest.raises(ValueError, match="unknown loss 'triplet'.*contrastive, ms, proxy_anchor, xbm"):
        create_loss("triplet", num_classes=3, embed_dim=8)
    with pytest.raises(ValueError, match="'ms' does not accept.*margin"):
        create_loss("ms", num_classes=3, embed_dim=8, margin=0.1)
    with pytest.raises(ValueError, match="pair-based base loss"):
        create_loss("xbm", num_classes=3, embed_dim=8, base="proxy_anchor")


def test_xbm_queue_position_is_part_of_the_state_dict():
    loss_fn = create_loss("xbm", num_classes=4, embed_dim=8, memory_size=20)
    assert isinstance(loss_fn, XBM)
    for seed in range(2):
        loss_fn(*embeddings_and_labels(seed=seed))
    restored = create_loss("xbm", num_classes=4, embed_dim=8, memory_size=20)
    restored.load_state_dict(loss_fn.state_dict())
    assert (restored.queue_idx, restored.has_been_filled) == (4, True)  # 24 rows written into 20 slots
    torch.testing.assert_close(restored.embedding_memory, loss_fn.embedding_memory)
    embeddings, labels = embeddings_and_labels(seed=5)
    torch.testing.assert_close(restored(embeddings, labels), loss_fn(embeddings, labels))


def test_gsp_loss_is_the_convex_combination():
    embeddings, labels = embeddings_and_labels()
    attributes = torch.softmax(torch.randn(12, 6), dim=1)
    base, zsr = create_loss("ms", num_classes=4, embed_dim=8), ZeroShotRegularizer(4, 8)
    terms = GSPLoss(base, zsr, weight=0.1).terms(embeddings, labels, attributes)
    torch.testing.assert_close(terms.base, base(embeddings, labels))
    torch.testing.assert_close(terms.regularizer, zsr(attributes, labels))
    torch.testing.assert_close(terms.total, 0.9 * terms.base + 0.1 * terms.regularizer)
    additive = GSPLoss(base, zsr, weight=0.1, convex=False)(embeddings, labels, attributes)
    torch.testing.assert_close(additive, terms.base + 0.1 * terms.regularizer)
    # prototypes not initialised yet: ZSR skipped, the base keeps its (1 - w) weight as in the official framework
    skipped = GSPLoss(base, zsr, weight=0.1).terms(embeddings, labels, None)
    assert skipped.regularizer is None
    torch.testing.assert_close(skipped.total, 0.9 * terms.base)
    torch.testing.assert_close(GSPLoss(base)(embeddings, labels), terms.base)


def test_gsp_loss_keeps_proxies_float32_under_bf16_embeddings():
    loss_fn = GSPLoss(create_loss("proxy_anchor", num_classes=4, embed_dim=8))
    embeddings, labels = embeddings_and_labels()
    loss_fn(embeddings.bfloat16(), labels)
    assert loss_fn.base_loss.proxies.dtype == torch.float32


def test_gsp_loss_rejects_bad_shapes_and_weights():
    loss_fn = GSPLoss(create_loss("ms", num_classes=4, embed_dim=8), ZeroShotRegularizer(4, 8))
    embeddings, labels = embeddings_and_labels()
    with pytest.raises(ValueError, match="attributes must be \\(B, K\\) with B = 12"):
        loss_fn(embeddings, labels, torch.rand(5, 3))
    with pytest.raises(ValueError, match="embeddings \\(B, D\\) and labels \\(B,\\)"):
        loss_fn(embeddings, labels[:5])
    with pytest.raises(ValueError, match="weight must lie in \\[0, 1\\]"):
        GSPLoss(create_loss("ms", num_classes=4, embed_dim=8), weight=1.5)
