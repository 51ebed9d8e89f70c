"""ZSR: the zero-shot regulariser of GSP (shared/spec/gsp.md §7).

The batch is split into two class-disjoint halves; a ridge predictor from prototype attributes to learnable class
embeddings V is fitted in closed form on each half and predicts the other half's class embeddings; the predictions
are scored by a softmax cross-entropy over all training classes. The attributes must therefore describe classes the
predictor has not seen, which rewards prototypes that transfer to unseen classes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gsp_hub.checks import check_int
from gsp_hub.losses.ridge import cross_batch_ridge_ce

__all__ = ["CLASS_EMBEDDING_INITS", "ZeroShotRegularizer"]

# init name -> std of V's entries as a function of (num_classes, embed_dim)
CLASS_EMBEDDING_INITS = {
    "he": lambda num_classes, embed_dim: math.sqrt(2.0 / num_classes),
    "unit": lambda num_classes, embed_dim: math.sqrt(1.0 / embed_dim),
}


class ZeroShotRegularizer(nn.Module):
    """Zero-shot regulariser: ``forward(attributes (B, K), labels (B,)) -> scalar`` mean cross-entropy.

    Args:
        num_classes: number of training classes (rows of V); labels must lie in ``[0, num_classes)``.
        embed_dim: width D of the class embeddings V (num_classes, D), initialised He-normal (std sqrt(2/num_classes)).
        ridge: λ > 0 of the closed-form ridge fit (0.05).
        scale: softmax scale s of the unnormalised dot-product logits (9.5).
        margin: additive margin m subtracted from the true-class logit, times s (0.0).
        class_embedding_init: how V starts. ``'he'`` (the TF framework's He-normal, std sqrt(2/num_classes)): rows of
            squared norm about 2D/num_classes, so the logits start near s·2D/num_classes — hundreds with a few
            classes (D = 128, 5 classes: about 490), where ZSR's cross-entropy and gradient swamp the base loss.
            ``'unit'`` (std 1/sqrt(D)): rows of norm about 1, logits within about ±s whatever the number of classes;
            the default job's choice (measured in benchmarks/RESULTS.md, Fashion-Collage).

    V is a learnable parameter and must be in the optimiser. Batches need at least two classes (a ``ValueError``
    otherwise); the ridge solve runs in float32 (float64 for float64 inputs) with autocast disabled.
    """

    def __init__(
        self, num_classes: int, embed_dim: int, ridge: float = 0.05, scale: float = 9.5, margin: float = 0.0,
        class_embedding_init: str = "he",
    ) -> None:
        super().__init__()
        check_int("num_classes", num_classes, minimum=2)
        check_int("embed_dim", embed_dim, minimum=1)
        if not ridge > 0:
            raise ValueError(f"ridge must be > 0 (it keeps the Gram matrix positive definite), got {ridge!r}.")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}.")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.ridge = float(ridge)
        self.scale = float(scale)
        self.margin = float(margin)
        if class_embedding_init not in CLASS_EMBEDDING_INITS:
            raise ValueError(f"class_embedding_init must be one of {sorted(CLASS_EMBEDDING_INITS)}, got "
                             f"{class_embedding_init!r}; 'he' is the TF framework's, 'unit' keeps the logits within "
                             "about ±scale.")
        self.class_embedding_init = class_embedding_init
        std = CLASS_EMBEDDING_INITS[class_embedding_init](num_classes, embed_dim)
        self.class_embeddings = nn.Parameter(torch.randn(num_classes, embed_dim) * std)

    def forward(self, attributes: Tensor, labels: Tensor) -> Tensor:
        """Attributes (B, K) on the simplex and labels (B,) with >= 2 classes -> scalar loss."""
        return cross_batch_ridge_ce(attributes, labels, self.class_embeddings, self.ridge, self.scale, self.margin)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embed_dim={self.embed_dim}, ridge={self.ridge}, scale={self.scale}, "
            f"margin={self.margin}, class_embedding_init={self.class_embedding_init!r}"
        )
