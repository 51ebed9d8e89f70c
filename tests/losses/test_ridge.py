"""The shared cross-batch ridge kernel against float64 references (lstsq, recursive least squares, hand-made CE)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gsp_hub.losses.ridge import class_disjoint_halves, cross_batch_ridge_ce, cross_predict, ridge_fit


def lstsq_ridge(attributes: torch.Tensor, targets: torch.Tensor, ridge: float) -> torch.Tensor:
    """Independent reference: least squares on the Tikhonov-augmented system [A; √λ I] W = [Y; 0] (float64)."""
    a, y = attributes.double(), targets.double()
    k = a.shape[1]
    augmented_a = torch.cat([a, ridge**0.5 * torch.eye(k, dtype=torch.float64)])
    augmented_y = torch.cat([y, torch.zeros(k, y.shape[1], dtype=torch.float64)])
    return torch.linalg.lstsq(augmented_a, augmented_y, driver="gelsd").solution


def simplex_rows(n: int, k: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    return torch.softmax(3 * torch.randn(n, k, generator=generator, dtype=dtype), dim=1)


@pytest.mark.parametrize("n, k", [(6, 16), (16, 6), (9, 9)])
@pytest.mark.parametrize("form", ["auto", "dual", "primal"])
def test_ridge_fit_equals_lstsq_reference(n: int, k: int, form: str) -> None:
    g = torch.Generator().manual_seed(n * 100 + k)
    a, y = simplex_rows(n, k, g), torch.randn(n, 5, generator=g, dtype=torch.float64)
    expected = lstsq_ridge(a, y, 0.05)
    assert torch.allclose(ridge_fit(a, y, 0.05, form), expected, atol=1e-10, rtol=0)
    fp32 = ridge_fit(a.float(), y.float(), 0.05, form)
    assert fp32.dtype == torch.float32
    assert torch.allclose(fp32.double(), expected, atol=2e-4, rtol=1e-4)


def test_dual_equals_primal() -> None:
    g = torch.Generator().manual_seed(0)
    for n, k in [(4, 32), (32, 4), (12, 12)]:
        a, y = simplex_rows(n, k, g), torch.randn(n, 7, generator=g, dtype=torch.float64)
        dual, primal = ridge_fit(a, y, 0.05, "dual"), ridge_fit(a, y, 0.05, "primal")
        assert (dual - primal).abs().max() < 1e-12


def test_batched_fit_and_zero_padding_are_exact() -> None:
    g = torch.Generator().manual_seed(1)
    a, y = simplex_rows(3 * 8, 5, g).view(3, 8, 5), torch.randn(3, 8, 4, generator=g, dtype=torch.float64)
    batched = ridge_fit(a, y, 0.1)
    for i in range(3):
        assert torch.allclose(batched[i], lstsq_ridge(a[i], y[i], 0.1), atol=1e-10, rtol=0)
        for form in ("dual", "primal"):  # zero rows appended to A and Y leave W unchanged
            padded = ridge_fit(F.pad(a[i], (0, 0, 0, 3)), F.pad(y[i], (0, 0, 0, 3)), 0.1, form)
            assert torch.allclose(padded, batched[i], atol=1e-12, rtol=0)


def test_recursive_least_squares_reaches_the_batch_ridge_solution() -> None:
    """xml.md §3.2: the RLS recursion over successive batches equals the ridge fit on their concatenation."""
    g = torch.Generator().manual_seed(2)
    ridge, k, d = 0.05, 6, 3
    batches = [(simplex_rows(5, k, g), torch.randn(5, d, generator=g, dtype=torch.float64)) for _ in range(5)]
    precision_inv = torch.eye(k, dtype=torch.float64) / ridge  # P_0 = I / λ
    weights = torch.zeros(k, d, dtype=torch.float64)
    for a, t in batches:
        precision_inv = torch.linalg.inv(torch.linalg.inv(precision_inv) + a.T @ a)
        weights = weights + precision_inv @ a.T @ (t - a @ weights)
    all_a = torch.cat([a for a, _ in batches])
    all_t = torch.cat([t for _, t in batches])
    assert torch.allclose(ridge_fit(all_a, all_t, ridge), weights, atol=1e-9, rtol=0)


def test_halves_are_class_disjoint_for_any_batch_order() -> None:
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(7).repeat_interleave(4)[torch.randperm(28, generator=g)] * 3 + 5  # 7 classes, odd count
    reference_half = None
    for _ in range(20):
        permuted = labels[torch.randperm(labels.numel(), generator=g)]
        idx1, idx2 = class_disjoint_halves(permuted)
        classes1, classes2 = set(permuted[idx1].tolist()), set(permuted[idx2].tolist())
        assert not classes1 & classes2
        assert sorted(torch.cat([idx1, idx2]).tolist()) == list(range(labels.numel()))
        assert torch.all(idx1.diff() > 0) and torch.all(idx2.diff() > 0)
        assert reference_half is None or (classes1, classes2) == reference_half  # depends on classes only
        reference_half = (classes1, classes2)
    assert reference_half == ({5, 11, 17, 23}, {8, 14, 20})


def test_eight_by_four_batch_gives_four_classes_per_half() -> None:
    idx1, idx2 = class_disjoint_halves(torch.arange(8).repeat(4))
    assert idx1.numel() == idx2.numel() == 16


def test_halves_reject_bad_labels() -> None:
    with pytest.raises(ValueError, match="at least 2 distinct classes"):
        class_disjoint_halves(torch.full((6,), 3))
    with pytest.raises(TypeError, match="1-D integer"):
        class_disjoint_halves(torch.zeros(4))
    with pytest.raises(ValueError, match="partition"):
        cross_predict(torch.rand(4, 3), torch.rand(4, 2), (torch.tensor([0, 1]), torch.tensor([1, 2])))
    with pytest.raises(ValueError, match="ridge must be > 0"):
        ridge_fit(torch.rand(4, 3), torch.rand(4, 2), 0.0)


def test_cross_predict_uses_the_other_half_only() -> None:
    g = torch.Generator().manual_seed(4)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 2])
    a, t = simplex_rows(11, 8, g), torch.randn(11, 4, generator=g, dtype=torch.float64)
    idx1, idx2 = class_disjoint_halves(labels)  # unequal halves: 7 and 4 samples
    predictions = cross_predict(a, t, (idx1, idx2), 0.05)
    assert torch.allclose(predictions[idx2], a[idx2] @ lstsq_ridge(a[idx1], t[idx1], 0.05), atol=1e-10, rtol=0)
    assert torch.allclose(predictions[idx1], a[idx1] @ lstsq_ridge(a[idx2], t[idx2], 0.05), atol=1e-10, rtol=0)
    perturbed = t.clone()
    perturbed[idx2] += 1.0  # the targets of half 2 do not reach its own predictions
    assert torch.equal(cross_predict(a, perturbed, (idx1, idx2), 0.05)[idx2], predictions[idx2])


def reference_cross_batch_ce(a, labels, v, ridge, scale, margin):
    """float64 loop reference of the ZSR / XML kernel."""
    a, v = a.double(), v.double()
    classes = sorted(set(labels.tolist()))
    first = [i for i, y in enumerate(labels.tolist()) if classes.index(y) % 2 == 0]
    second = [i for i, y in enumerate(labels.tolist()) if classes.index(y) % 2 == 1]
    losses = []
    for fit_half, predict_half in ((first, second), (second, first)):
        weights = lstsq_ridge(a[fit_half], v[labels[fit_half]], ridge)
        for i in predict_half:
            logits = scale * v @ (a[i] @ weights)
            logits[labels[i]] -= scale * margin
            losses.append(torch.logsumexp(logits, 0) - logits[labels[i]])
    return torch.stack(losses).mean()


@pytest.mark.parametrize("margin", [0.0, 0.2])
def test_cross_batch_ce_matches_float64_reference(margin: float) -> None:
    g = torch.Generator().manual_seed(5)
    labels = torch.arange(6).repeat(3)
    a, v = simplex_rows(18, 10, g), torch.randn(6, 8, generator=g, dtype=torch.float64) * 0.5
    loss = cross_batch_ridge_ce(a, labels, v, 0.05, 9.5, margin)
    assert torch.allclose(loss, reference_cross_batch_ce(a, labels, v, 0.05, 9.5, margin), atol=1e-10, rtol=0)
    loss32 = cross_batch_ridge_ce(a.float(), labels, v.float(), 0.05, 9.5, margin)
    assert loss32.dtype == torch.float32 and abs(loss32.item() - loss.item()) < 1e-4


def test_cross_batch_ce_gradcheck() -> None:
    g = torch.Generator().manual_seed(6)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3])
    a = simplex_rows(7, 5, g).requires_grad_()
    v = (torch.randn(4, 3, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a_, v_: cross_batch_ridge_ce(a_, labels, v_, 0.05, 9.5), (a, v))


def test_bf16_autocast_solves_in_fp32() -> None:
    g = torch.Generator().manual_seed(7)
    labels = torch.arange(8).repeat(4)
    a, v = simplex_rows(32, 16, g, torch.float32), torch.randn(8, 12, generator=g)
    expected = cross_batch_ridge_ce(a, labels, v)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = cross_batch_ridge_ce(a.bfloat16(), labels, v)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert abs(loss.item() - expected.item()) < 2e-2 * max(1.0, abs(expected.item()))
