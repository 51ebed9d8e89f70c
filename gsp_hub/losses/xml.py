"""XML: cross-batch metric learning with prototype attributes (a reconstruction, see shared/spec/xml.md).

Each batch is split into two class-disjoint halves; the prototypes' linear (ridge) predictor is fitted on one half
and must express the other half, and vice versa. The cross-batch error is added to a base DML loss exactly as GSP
adds ZSR (:class:`~gsp_hub.losses.GSPLoss`):

    L = (1 − w)·L_base(z, y) + w·L_xbatch(a, y[, z])        (convex=True; L_base + w·L_xbatch otherwise)

Targets of the fit (``target``), an inferred choice the paper's abstract does not settle:

* ``'class_embeddings'`` (default, the variant with code in the authors' framework): targets are learnable class
  embeddings V[y], scored by softmax CE over all classes — the ZSR kernel, so the regulariser *is*
  :class:`~gsp_hub.losses.ZeroShotRegularizer`; XML differs from GSP + ZSR only by its pooling ('proto').
* ``'sample_embeddings'`` (experimental): targets are the batch's own embeddings z; the predictions ẑ are scored by
  the base loss with ẑ as anchors and z as references (same label = positive), so the base loss must accept
  ``ref_emb`` / ``ref_labels`` (PML pair losses do).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from gsp_hub.losses.combined import GSPLoss, LossTerms
from gsp_hub.losses.ridge import class_disjoint_halves, cross_predict
from gsp_hub.losses.zsr import ZeroShotRegularizer

__all__ = ["SampleCrossBatchRegularizer", "XMLLoss"]

XMLTarget = Literal["class_embeddings", "sample_embeddings"]


class SampleCrossBatchRegularizer(nn.Module):
    """Cross-predict the batch's own embeddings and score the predictions with a metric loss.

    ``forward(attributes (B, K), labels (B,), embeddings (B, D)) -> scalar``: ẑ = cross-batch ridge prediction of z
    from the attributes, loss = ``pair_loss(ẑ, y, ref_emb=z, ref_labels=y)`` (fp32).
    """

    def __init__(self, pair_loss: nn.Module, ridge: float = 0.05) -> None:
        super().__init__()
        if not ridge > 0:
            raise ValueError(f"ridge must be > 0, got {ridge!r}.")
        self.pair_loss = pair_loss
        self.ridge = float(ridge)

    def forward(self, attributes: Tensor, labels: Tensor, embeddings: Tensor) -> Tensor:
        embeddings = embeddings.float()
        predictions = cross_predict(attributes, embeddings, class_disjoint_halves(labels), self.ridge)
        return self.pair_loss(predictions.float(), labels, ref_emb=embeddings, ref_labels=labels)


class XMLLoss(GSPLoss):
    """Base DML loss plus the XML cross-batch prototype regulariser.

    Args:
        base_loss: a ``loss(embeddings, labels)`` module (see :func:`gsp_hub.losses.create_loss`).
        num_classes: number of training classes (rows of V); required for ``target='class_embeddings'``.
        embed_dim: width of V; required for ``target='class_embeddings'``.
        weight: w, the weight of the cross-batch term (0.1).
        ridge: λ of the closed-form fit (0.05).
        scale, margin: CE softmax scale (9.5) and margin (0.0), ``'class_embeddings'`` only.
        target: ``'class_embeddings'`` or ``'sample_embeddings'`` (module docstring).
        convex: combine as (1 − w)·base + w·xbatch (True, the framework default) or base + w·xbatch.

    ``forward(embeddings (B, D), labels (B,), attributes (B, K)) -> scalar``; :meth:`terms` also returns the parts.
    Batches need at least two classes. ``attributes=None`` skips the cross-batch term, as in :class:`GSPLoss`.
    """

    def __init__(
        self,
        base_loss: nn.Module,
        num_classes: int | None = None,
        embed_dim: int | None = None,
        *,
        weight: float = 0.1,
        ridge: float = 0.05,
        scale: float = 9.5,
        margin: float = 0.0,
        target: XMLTarget = "class_embeddings",
        convex: bool = True,
    ) -> None:
        if target == "class_embeddings":
            if num_classes is None or embed_dim is None:
                raise ValueError(
                    f"target='class_embeddings' needs num_classes and embed_dim (the class-embedding table), got "
                    f"num_classes={num_classes!r}, embed_dim={embed_dim!r}."
                )
            regularizer: nn.Module = ZeroShotRegularizer(num_classes, embed_dim, ridge, scale, margin)
        elif target == "sample_embeddings":
            regularizer = SampleCrossBatchRegularizer(base_loss, ridge)
        else:
            raise ValueError(f"target must be 'class_embeddings' or 'sample_embeddings', got {target!r}.")
        super().__init__(base_loss, regularizer, weight, convex)
        self.target: XMLTarget = target

    def terms(self, embeddings: Tensor, labels: Tensor, attributes: Tensor | None = None) -> LossTerms:
        """Total loss and its parts (see :class:`GSPLoss`); the sample target also feeds z to the regulariser."""
        if self.target == "class_embeddings" or attributes is None:
            return super().terms(embeddings, labels, attributes)
        base_only = super().terms(embeddings, labels, None)  # validates shapes; total = (1 − w)·base (convex)
        cross_batch = self.regularizer(attributes, labels, embeddings)
        return LossTerms(base_only.total + self.weight * cross_batch, base_only.base, cross_batch)

    def extra_repr(self) -> str:
        return f"target={self.target!r}, {super().extra_repr()}"
