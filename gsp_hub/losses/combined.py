"""The GSP training loss: a base DML loss on the embeddings plus the zero-shot regulariser on the attributes.

    L = (1 - w)·L_base(z, y) + w·L_ZSR(a, y)       (convex=True, w = 0.1: the paper framework's default)
    L = L_base(z, y) + w·L_ZSR(a, y)               (convex=False)

Until the GSP prototypes are initialised the attributes carry no information, so the regulariser is skipped
(``attributes=None``); the base term keeps its weight, as in the official framework where ZSR is then a constant.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from torch import Tensor, nn

__all__ = ["GSPLoss", "LossTerms"]


class LossTerms(NamedTuple):
    """The combined loss and its parts (scalars); ``regularizer`` is None when it was skipped or absent."""

    total: Tensor
    base: Tensor
    regularizer: Tensor | None


class GSPLoss(nn.Module):
    """Base loss plus an attribute regulariser: ``forward(embeddings (B, D), labels (B,), attributes (B, K) | None)``.

    Args:
        base_loss: a ``loss(embeddings, labels)`` module (see :func:`gsp_hub.losses.create_loss`).
        regularizer: a ``loss(attributes, labels)`` module such as :class:`~gsp_hub.losses.ZeroShotRegularizer`,
            or None for the base loss alone.
        weight: w, the regulariser's weight; in [0, 1] when ``convex``.
        convex: combine as (1 - w)·base + w·reg (True) or base + w·reg (False).

    Embeddings and attributes are cast to float32 first (PML casts its parameters to the input dtype).
    """

    def __init__(
        self, base_loss: nn.Module, regularizer: nn.Module | None = None, weight: float = 0.1, convex: bool = True
    ) -> None:
        super().__init__()
        if not callable(base_loss):
            raise TypeError(f"base_loss must be a loss(embeddings, labels) module, got {type(base_loss).__name__}.")
        if not 0.0 <= weight <= (1.0 if convex else math.inf):
            raise ValueError(f"weight must lie in [0, 1] with convex=True (>= 0 otherwise), got {weight!r}.")
        self.base_loss = base_loss
        self.regularizer = regularizer
        self.weight = float(weight)
        self.convex = convex

    @property
    def class_weights(self) -> Tensor | None:
        """The base loss's class weights, its ``proxies`` Parameter ((C, D) for proxy-anchor, (C * P, D) for CCP),
        or None for a loss without proxies. GSP's ``init='weights_kcenter'`` picks its prototypes among them."""
        proxies = getattr(self.base_loss, "proxies", None)
        return proxies if isinstance(proxies, Tensor) else None

    @property
    def base_weight(self) -> float:
        """Weight of the base term: 1 - w (convex) or 1, and 1 without a regulariser."""
        return 1.0 - self.weight if self.convex and self.regularizer is not None else 1.0

    def terms(self, embeddings: Tensor, labels: Tensor, attributes: Tensor | None = None) -> LossTerms:
        """Total loss and its parts for embeddings (B, D), labels (B,) and attributes (B, K) or None (skip)."""
        if embeddings.ndim != 2 or labels.ndim != 1 or embeddings.shape[0] != labels.shape[0]:
            raise ValueError(
                f"expected embeddings (B, D) and labels (B,) with the same B, got {tuple(embeddings.shape)} and "
                f"{tuple(labels.shape)}."
            )
        base = self.base_loss(embeddings.float(), labels)
        if self.regularizer is None or attributes is None:
            return LossTerms(self.base_weight * base, base, None)
        if attributes.ndim != 2 or attributes.shape[0] != labels.shape[0]:
            raise ValueError(
                f"attributes must be (B, K) with B = {labels.shape[0]}, got {tuple(attributes.shape)}; pass the "
                "pool's GSPOutput.attributes (model.forward_head(..., return_aux=True))."
            )
        regularizer = self.regularizer(attributes.float(), labels)
        return LossTerms(self.base_weight * base + self.weight * regularizer, base, regularizer)

    def forward(self, embeddings: Tensor, labels: Tensor, attributes: Tensor | None = None) -> Tensor:
        """Scalar total loss (see :meth:`terms`)."""
        return self.terms(embeddings, labels, attributes).total

    def extra_repr(self) -> str:
        return f"weight={self.weight}, convex={self.convex}"
