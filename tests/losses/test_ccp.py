"""CCP: losses vs PML and float64 loops, proxy re-initialisation (grouping, seeding, brute force, optimiser reset),
the plateau rule and the projection schedule."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch
from pytorch_metric_learning.losses import ProxyAnchorLoss, ProxyNCALoss
from torch import nn

from gsp_hub.layers.ops import greedy_k_center
from gsp_hub.losses import (
    CCPLoss,
    CCPSchedule,
    PlateauRule,
    c1_contrastive_loss,
    ccp_sizes,
    create_loss,
    group_by_class,
    multi_proxy_anchor_loss,
    project_embeddings,
    reinit_proxies_,
)


def batch(seed: int, num_classes: int = 5, size: int = 16, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(size, dim, generator=g), torch.randint(0, num_classes, (size,), generator=g)


# --------------------------------------------------------------------------------------------------- loss values


@pytest.mark.parametrize("proxy_loss", ["proxy_anchor", "proxy_nca"])
def test_one_proxy_per_class_equals_pml(proxy_loss: str) -> None:
    embeddings, labels = batch(0)
    loss = CCPLoss(5, 8, proxies_per_class=1, proxy_loss=proxy_loss, pair_weight=0.0, normalization="l2")
    reference = ProxyAnchorLoss(5, 8) if proxy_loss == "proxy_anchor" else ProxyNCALoss(5, 8, softmax_scale=10.0)
    reference.proxies.data.copy_(loss.proxies.data)
    assert torch.allclose(loss(embeddings, labels), reference(embeddings, labels), atol=1e-5)


def loop_proxy_anchor(x, y, proxies, proxy_labels, margin, alpha):
    """float64 loop: every proxy is an anchor (Proxy-Anchor with several proxies per class)."""
    x, proxies = x.double(), proxies.double()
    pos_total, neg_total, with_pos = 0.0, 0.0, 0
    for r, p in enumerate(proxies):
        pos = [math.exp(-alpha * (float(x[i] @ p) - margin)) for i in range(len(x)) if y[i] == proxy_labels[r]]
        neg = [math.exp(alpha * (float(x[i] @ p) + margin)) for i in range(len(x)) if y[i] != proxy_labels[r]]
        with_pos += bool(pos)
        pos_total += math.log1p(sum(pos))
        neg_total += math.log1p(sum(neg))
    return pos_total / with_pos + neg_total / len(proxies)


def loop_proxy_nca(x, y, proxies, proxy_labels, scale):
    """float64 loop: −log of the summed softmax mass of the sample's class proxies, squared Euclidean distances."""
    x, proxies = x.double(), proxies.double()
    losses = []
    for i in range(len(x)):
        weights = [math.exp(-scale * float((x[i] - p).square().sum())) for p in proxies]
        positive = sum(w for w, c in zip(weights, proxy_labels.tolist()) if c == y[i])
        losses.append(-math.log(positive / sum(weights)))
    return sum(losses) / len(losses)


def loop_c1(x, y, references=None, reference_labels=None):
    """C1 by hand: Σ over ordered pairs (i ≠ j in-batch) of (1 − s)₊ for positives, (s − 0.5)₊ for negatives, / B."""
    in_batch = references is None
    references = x if in_batch else references
    reference_labels = y if in_batch else reference_labels
    total = 0.0
    for i in range(len(x)):
        for j in range(len(references)):
            if in_batch and i == j:
                continue
            s = float(x[i].double() @ references[j].double())
            total += max(0.0, 1 - s) if y[i] == reference_labels[j] else max(0.0, s - 0.5)
    return total / len(x)


@pytest.mark.parametrize("normalization", ["unit_ball", "l2"])
def test_multi_proxy_losses_match_loops(normalization: str) -> None:
    embeddings, labels = batch(1)
    for proxy_loss in ("proxy_anchor", "proxy_nca"):
        loss = CCPLoss(5, 8, proxies_per_class=3, proxy_loss=proxy_loss, normalization=normalization)
        x = project_embeddings(embeddings, normalization)
        proxies = project_embeddings(loss.proxies.detach(), normalization)
        assert loss.proxy_labels.tolist() == [r % 5 for r in range(15)]  # pick-major layout
        if proxy_loss == "proxy_anchor":
            proxy_term = loop_proxy_anchor(x, labels, proxies, loss.proxy_labels, 0.1, 32.0)
        else:
            proxy_term = loop_proxy_nca(x, labels, proxies, loss.proxy_labels, 10.0)
        expected = proxy_term + 0.1 * loop_c1(x, labels)
        assert abs(loss(embeddings, labels).item() - expected) < 1e-4 * max(1.0, expected), proxy_loss


def test_pml_pair_loss_as_proxy_term_is_the_official_ccp() -> None:
    embeddings, labels = batch(2)
    c1 = c1_contrastive_loss()
    loss = CCPLoss(5, 8, proxies_per_class=2, proxy_loss=c1)
    assert loss.pair_loss is c1  # same base in both terms
    x = project_embeddings(embeddings, "unit_ball")
    proxies = project_embeddings(loss.proxies.detach(), "unit_ball")
    expected = loop_c1(x, labels, proxies, loss.proxy_labels) + 0.1 * loop_c1(x, labels)
    assert abs(loss(embeddings, labels).item() - expected) < 1e-4 * max(1.0, expected)
    assert abs(multi_proxy_anchor_loss(x.double(), labels, proxies.double(), loss.proxy_labels).item()
               - loop_proxy_anchor(x, labels, proxies, loss.proxy_labels, 0.1, 32.0)) < 1e-9


def test_c1_by_name_is_the_c1_instance_in_both_terms() -> None:
    embeddings, labels = batch(2)
    torch.manual_seed(0)
    named = CCPLoss(5, 8, proxies_per_class=2, proxy_loss="c1")
    torch.manual_seed(0)
    given = CCPLoss(5, 8, proxies_per_class=2, proxy_loss=c1_contrastive_loss())
    assert named.pair_loss is named.reference_loss and named.proxy_loss_name == "c1"
    assert torch.equal(named(embeddings, labels), given(embeddings, labels))


def test_bf16_embeddings_keep_fp32_proxies_and_gradients_reach_them() -> None:
    embeddings, labels = batch(3)
    loss = CCPLoss(5, 8, proxies_per_class=2, proxy_loss="proxy_nca")
    value = loss(embeddings.bfloat16().requires_grad_(), labels)
    value.backward()
    assert value.dtype == torch.float32 and loss.proxies.dtype == torch.float32
    assert loss.proxies.grad is not None and loss.proxies.grad.abs().sum() > 0


def test_loss_rejects_bad_inputs() -> None:
    loss = CCPLoss(5, 8, proxies_per_class=2)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        loss(torch.randn(4, 8), torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        loss(torch.randn(4, 7), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="proxy_loss"):
        CCPLoss(5, 8, proxy_loss="soft_triple")
    assert ccp_sizes(999) == (8, 12) and ccp_sizes(1000) == (4, 7)
    assert CCPLoss(20, 4).proxies.shape == (160, 4)


def test_registered_as_a_loss() -> None:
    loss = create_loss("ccp", num_classes=6, embed_dim=8, proxy_loss="proxy_nca", proxies_per_class=2)
    assert isinstance(loss, CCPLoss) and loss.proxies.shape == (12, 8) and loss.proxy_loss_name == "proxy_nca"


# --------------------------------------------------------------------------------------------- re-initialisation


def covering_radius(points: torch.Tensor, centers: torch.Tensor) -> float:
    return torch.cdist(points.double(), centers.double()).min(dim=1).values.max().item()


def test_reinit_is_per_class_seeded_k_center_in_pick_major_layout() -> None:
    num_classes, per_class, dim = 3, 3, 4
    loss = CCPLoss(num_classes, dim, proxies_per_class=per_class)
    g = torch.Generator().manual_seed(4)
    loss.best_proxies.copy_(0.5 * torch.randn(num_classes * per_class, dim, generator=g))
    counts = [7, 4, 6]  # unbalanced: classes are padded cyclically inside
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    order = torch.randperm(labels.numel(), generator=g)
    labels = labels[order]
    embeddings = 2 * torch.randn(labels.numel(), dim, generator=g)
    new = reinit_proxies_(loss, embeddings, labels)
    assert torch.equal(new, loss.proxies.detach())
    for c in range(num_classes):
        candidates = loss.project(embeddings[labels == c])  # this class only, its input order
        seeds = loss.project(loss.best_proxies[c::num_classes])
        rows = new[c::num_classes]  # rows r with r % C == c, in pick order
        assert torch.equal(rows, greedy_k_center(candidates, per_class, seeds=seeds))
        assert all(any(torch.equal(row, candidate) for candidate in candidates) for row in rows)
        # brute force over all P-subsets: the seeded greedy radius is within 2x of the optimum
        optimum = min(covering_radius(candidates, torch.cat([candidates[list(subset)], seeds]))
                      for subset in itertools.combinations(range(len(candidates)), per_class))
        assert covering_radius(candidates, torch.cat([rows, seeds])) <= 2 * optimum + 1e-6


def test_first_raw_reinit_with_zero_seeds_picks_the_largest_norm_first() -> None:
    loss = CCPLoss(2, 3, proxies_per_class=1)
    embeddings = torch.tensor([[1.0, 0, 0], [0, 5.0, 0], [0, 0, 2.0], [3.0, 0, 0], [0, 0, -1.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    reinit_proxies_(loss, embeddings, labels, kcenter_space="raw")
    assert torch.equal(loss.proxies.detach(), torch.tensor([[0, 5.0, 0], [3.0, 0, 0]]))


def test_group_by_class_pads_cyclically_and_requires_every_class() -> None:
    embeddings = torch.arange(6.0)[:, None]
    labels = torch.tensor([1, 0, 1, 1, 0, 1])
    grouped = group_by_class(embeddings, labels, 2, min_per_class=5)
    assert grouped[:, :, 0].tolist() == [[1, 4, 1, 4, 1], [0, 2, 3, 5, 0]]
    with pytest.raises(ValueError, match="classes \\[2\\] have none"):
        group_by_class(embeddings, labels, 3)


def make_training(seed: int = 5):
    """A small embedding head + CCP loss trained a few Adam steps, so that every state tensor is non-zero."""
    torch.manual_seed(seed)
    head = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8))
    loss = CCPLoss(4, 8, proxies_per_class=2, proxy_loss="proxy_nca")
    optimizer = torch.optim.Adam([*head.parameters(), *loss.parameters()], lr=1e-2)
    inputs, labels = torch.randn(16, 6), torch.arange(4).repeat(4)
    for _ in range(3):
        optimizer.zero_grad()
        loss(head(inputs), labels).backward()
        optimizer.step()
    return head, loss, optimizer, inputs, labels


def test_reinit_zeroes_the_adam_state_of_the_proxies_only() -> None:
    head, loss, optimizer, inputs, labels = make_training()
    head_state = {k: v.clone() for k, v in optimizer.state[head[0].weight].items()}
    with torch.no_grad():
        reinit_proxies_(loss, head(inputs), labels, optimizer)
    state = optimizer.state[loss.proxies]
    assert set(state) >= {"step", "exp_avg", "exp_avg_sq"}
    assert all(not value.any() for value in state.values())
    assert all(torch.equal(head_state[k], v) for k, v in optimizer.state[head[0].weight].items())
    # the next step is a fresh Adam step on the proxies: |update| = lr · |g| / (|g| + eps) ≈ lr
    before = loss.proxies.detach().clone()
    optimizer.zero_grad()
    loss(head(inputs), labels).backward()
    moved = loss.proxies.grad.abs() > 1e-4
    optimizer.step()
    step = (loss.proxies.detach() - before).abs()
    assert moved.any() and torch.allclose(step[moved], torch.full_like(step[moved], 1e-2), rtol=1e-2)


def test_reinit_rejects_an_optimizer_without_the_proxies() -> None:
    head, loss, _, inputs, labels = make_training()
    with pytest.raises(ValueError, match="does not hold ccp_loss.proxies"):
        reinit_proxies_(loss, head(inputs).detach(), labels, torch.optim.Adam(head.parameters()))


# ------------------------------------------------------------------------------------------- plateau and schedule


def test_plateau_fires_exactly_after_patience_non_improving_checks() -> None:
    rule = PlateauRule(patience=3, min_delta=1e-5)
    values = [0.1, 0.2, 0.2, 0.2 + 1e-6, float("nan"), 0.3, 0.25, 0.3, 0.29, 0.1, 0.1, 0.1, 0.2]
    fired = [rule.update(v) for v in values]
    # 0.2 + 1e-6 is below min_delta and NaN never improves: the 3rd stale check fires; after firing best restarts
    assert fired == [False, False, False, False, True, False, False, False, True, False, False, False, False]
    assert rule.num_fired == 2 and rule.best == 0.2
    resumed = PlateauRule(patience=3)
    resumed.load_state_dict(rule.state_dict())
    assert [resumed.update(v) for v in (0.1, 0.1, 0.1)] == [rule.update(v) for v in (0.1, 0.1, 0.1)] == [
        False, False, True]
    keep = PlateauRule(patience=2, mode="min", reset_best_on_fire=False)
    assert [keep.update(v) for v in (1.0, 2.0, 2.0, 0.5, 3.0)] == [False, False, True, False, False]


def test_schedule_projects_with_anchor_restore_and_proximal_gradient() -> None:
    head, loss, optimizer, inputs, labels = make_training()
    schedule = CCPSchedule(patience=2, lam=2e-4, lam_decay=0.5)
    assert schedule.proximal_weight == 0.0 and schedule.proximal_penalty(head).item() == 0.0

    def pool_fn() -> tuple[torch.Tensor, torch.Tensor]:
        head.eval()
        with torch.no_grad():
            return head(inputs), labels

    assert schedule.observe(0.5, head, loss) is False  # best: snapshot of the current weights and proxies
    best = {k: v.clone() for k, v in head.state_dict().items()}
    assert torch.equal(loss.best_proxies, loss.proxies.detach())
    with torch.no_grad():
        for p in head.parameters():
            p.add_(1.0)  # training moves on without improving
    assert schedule.observe(0.4, head, loss) is False
    assert schedule.observe(0.5, head, loss) is True
    schedule.project_(head, loss, optimizer, pool_fn)
    assert schedule.round == 1 and schedule.proximal_weight == pytest.approx(1e-4)  # λ0 · decay^1
    assert all(torch.equal(head.state_dict()[k], best[k]) for k in best)  # restored
    assert all(torch.equal(schedule.anchor[name], best[name]) for name, _ in head.named_parameters())
    assert not optimizer.state[loss.proxies]["exp_avg"].any()
    # proximal gradient: λ(θ − θ_anchor), on network weights only
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p))
    head.zero_grad()
    loss.proxies.grad = None
    schedule.proximal_penalty(head).backward()
    for name, p in head.named_parameters():
        assert torch.allclose(p.grad, 1e-4 * (p.detach() - best[name]), atol=1e-9)
    assert loss.proxies.grad is None
    # checkpoint round trip through a weights-only load
    buffer = io.BytesIO()
    torch.save(schedule.state_dict(), buffer)
    buffer.seek(0)
    restored = CCPSchedule(patience=2, lam=2e-4, lam_decay=0.5)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.round == 1 and torch.equal(restored.proximal_penalty(head), schedule.proximal_penalty(head))


def test_schedule_without_restore_keeps_training_weights() -> None:
    head, loss, optimizer, inputs, labels = make_training()
    schedule = CCPSchedule(patience=1, restore_best_weights=False, kcenter_space="raw")
    schedule.observe(0.5, head, loss)
    with torch.no_grad():
        head[0].weight.add_(1.0)
    current = head[0].weight.detach().clone()
    assert schedule.observe(0.1, head, loss)
    schedule.project_(head, loss, optimizer, lambda: (head(inputs).detach(), labels))
    assert torch.equal(head[0].weight, current) and schedule.proximal_weight == 2e-4
    assert not torch.equal(schedule.anchor["0.weight"], current)
    with pytest.raises(ValueError, match="unwrapped model"):
        schedule.proximal_penalty(nn.Linear(6, 8))  # names differ, e.g. a DDP wrapper's 'module.' prefix
