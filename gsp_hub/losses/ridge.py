"""The cross-batch ridge kernel shared by ZSR (GSP) and XML.

A batch is split into two class-disjoint halves; a ridge (Tikhonov) linear predictor from prototype attributes to
targets is fitted in closed form on one half and predicts the other half, in both directions. Because the halves
share no class, the predictor must generalise to unseen classes, which is what the regularisers reward.

Solves run in float32 (float64 inputs stay float64) with autocast disabled, by Cholesky factorisation of the
smaller of the two Gram matrices: dual ``A Aᵀ + λI`` (n×n) when n <= K, primal ``AᵀA + λI`` (K×K) otherwise. Both
give the same predictor (push-through identity).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["class_disjoint_halves", "cross_batch_ridge_ce", "cross_predict", "ridge_fit"]

RidgeForm = Literal["auto", "dual", "primal"]


def class_disjoint_halves(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Split a batch by class: sorted unique classes alternate between the halves.

    Args:
        labels: (B,) integer class labels with at least two distinct classes.

    Returns:
        ``(idx1, idx2)``: (n1,) and (n2,) int64 indices into the batch, increasing, n1 + n2 = B. Which half a sample
        lands in depends only on its class and the set of classes in the batch, never on the batch order.
    """
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.is_floating_point() or labels.is_complex():
        got = f"{tuple(labels.shape)} {labels.dtype}" if isinstance(labels, Tensor) else type(labels).__name__
        raise TypeError(f"labels must be a 1-D integer tensor (B,), got {got}; pass the class ids of the batch.")
    classes = torch.unique(labels)
    if classes.numel() < 2:
        raise ValueError(
            f"labels must hold at least 2 distinct classes to form class-disjoint halves, got "
            f"{classes.numel()} ({classes.tolist()}); sample batches with several classes (e.g. m-per-class)."
        )
    in_first_half = torch.isin(labels, classes[0::2])
    return in_first_half.nonzero().squeeze(1), (~in_first_half).nonzero().squeeze(1)


def _solve_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, float32 otherwise (fp16/bf16 inputs are promoted)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def ridge_fit(attributes: Tensor, targets: Tensor, ridge: float = 0.05, form: RidgeForm = "auto") -> Tensor:
    """Closed-form ridge regression W = argmin ‖Y − AW‖² + λ‖W‖².

    Args:
        attributes: A, (..., n, K); leading dims are a batch of independent problems.
        targets: Y, (..., n, D) with the same leading dims and n.
        ridge: λ > 0.
        form: ``'dual'`` solves Aᵀ(AAᵀ + λI_n)⁻¹Y, ``'primal'`` (AᵀA + λI_K)⁻¹AᵀY, ``'auto'`` picks the smaller system.

    Returns:
        W, (..., K, D) in float32 (float64 if an input is float64). Zero rows in A and Y (padding) do not change W.
    """
    if attributes.ndim < 2 or targets.ndim != attributes.ndim or attributes.shape[:-1] != targets.shape[:-1]:
        raise ValueError(
            f"attributes (..., n, K) and targets (..., n, D) must share leading dims and n, got "
            f"{tuple(attributes.shape)} and {tuple(targets.shape)}."
        )
    if not (attributes.is_floating_point() and targets.is_floating_point()):
        raise TypeError(f"attributes and targets must be floating point, got {attributes.dtype} and {targets.dtype}.")
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0 so the Gram matrix is positive definite, got {ridge}.")
    if form not in ("auto", "dual", "primal"):
        raise ValueError(f"form must be 'auto', 'dual' or 'primal', got {form!r}.")
    dtype = _solve_dtype(attributes, targets)
    with torch.autocast(device_type=attributes.device.type, enabled=False):
        a, y = attributes.to(dtype), targets.to(dtype)
        n, k = a.shape[-2:]
        if form == "dual" or (form == "auto" and n <= k):
            gram = a @ a.mT + ridge * torch.eye(n, dtype=dtype, device=a.device)
            return a.mT @ torch.cholesky_solve(y, torch.linalg.cholesky(gram))
        gram = a.mT @ a + ridge * torch.eye(k, dtype=dtype, device=a.device)
        return torch.cholesky_solve(a.mT @ y, torch.linalg.cholesky(gram))


def cross_predict(
    attributes: Tensor,
    targets: Tensor,
    halves: tuple[Tensor, Tensor],
    ridge: float = 0.05,
    form: RidgeForm = "auto",
) -> Tensor:
    """Predict each half's targets with the ridge predictor fitted on the other half.

    Both fits run as one batched solve: the halves are zero-padded to the same length, which leaves each fit exact.

    Args:
        attributes: (n, K).
        targets: (n, D).
        halves: ``(idx1, idx2)`` index tensors partitioning ``range(n)`` (see :func:`class_disjoint_halves`).
        ridge, form: as in :func:`ridge_fit`.

    Returns:
        (n, D) predictions in batch order: row i of half h is ``attributes[i] @ W(other half)``.
    """
    if attributes.ndim != 2 or targets.ndim != 2 or attributes.shape[0] != targets.shape[0]:
        raise ValueError(
            f"attributes must be (n, K) and targets (n, D) with the same n, got {tuple(attributes.shape)} and "
            f"{tuple(targets.shape)}."
        )
    idx1, idx2 = halves
    order = torch.cat([idx1, idx2])
    n = attributes.shape[0]
    if idx1.numel() == 0 or idx2.numel() == 0 or order.numel() != n or torch.bincount(order, minlength=n).ne(1).any():
        raise ValueError(
            f"halves must be two non-empty index tensors that partition range({n}), got sizes "
            f"{idx1.numel()} and {idx2.numel()}; build them with class_disjoint_halves(labels)."
        )
    length = max(idx1.numel(), idx2.numel())

    def padded(x: Tensor, idx: Tensor) -> Tensor:
        return F.pad(x[idx], (0, 0, 0, length - idx.numel()))

    stacked_attributes = torch.stack([padded(attributes, idx1), padded(attributes, idx2)])  # (2, m, K)
    stacked_targets = torch.stack([padded(targets, idx1), padded(targets, idx2)])  # (2, m, D)
    weights = ridge_fit(stacked_attributes, stacked_targets, ridge, form)  # (2, K, D)
    with torch.autocast(device_type=attributes.device.type, enabled=False):
        swapped = stacked_attributes.to(weights.dtype) @ weights.flip(0)  # half 1 with W2, half 2 with W1
    predictions = torch.cat([swapped[0, : idx1.numel()], swapped[1, : idx2.numel()]])
    return predictions[torch.argsort(order)]


def cross_batch_ridge_ce(
    attributes: Tensor,
    labels: Tensor,
    class_embeddings: Tensor,
    ridge: float = 0.05,
    scale: float = 9.5,
    margin: float = 0.0,
) -> Tensor:
    """ZSR / XML loss: cross-predict class embeddings from attributes, then softmax CE over all classes.

    Targets of sample i are ``class_embeddings[labels[i]]``; logits are ``scale·⟨v_c, ŷ_i⟩ − scale·margin·[c = y_i]``
    with unnormalised dot products. No stop-gradients: gradients reach the attributes and the class embeddings.

    Args:
        attributes: (B, K) prototype attributes.
        labels: (B,) class ids in ``[0, num_classes)``, at least two classes.
        class_embeddings: V, (num_classes, D) learnable class embeddings.

    Returns:
        Scalar mean cross-entropy (float32, or float64 for float64 inputs).
    """
    if class_embeddings.ndim != 2:
        raise ValueError(f"class_embeddings must be (num_classes, D), got {tuple(class_embeddings.shape)}.")
    halves = class_disjoint_halves(labels)
    if attributes.ndim != 2 or attributes.shape[0] != labels.shape[0]:
        raise ValueError(f"attributes must be (B, K) with B = {labels.shape[0]}, got {tuple(attributes.shape)}.")
    if int(labels.min()) < 0 or int(labels.max()) >= class_embeddings.shape[0]:
        raise ValueError(
            f"labels must lie in [0, {class_embeddings.shape[0]}) to index class_embeddings, got range "
            f"[{int(labels.min())}, {int(labels.max())}]; remap the training classes to 0..num_classes-1."
        )
    predictions = cross_predict(attributes, class_embeddings[labels], halves, ridge)
    with torch.autocast(device_type=attributes.device.type, enabled=False):
        logits = scale * predictions @ class_embeddings.to(predictions.dtype).T  # (B, num_classes)
        if margin:
            logits = logits - scale * margin * F.one_hot(labels, class_embeddings.shape[0]).to(logits.dtype)
        return F.cross_entropy(logits, labels)
