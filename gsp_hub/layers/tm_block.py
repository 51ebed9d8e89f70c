"""Template-matching residual block (Gorgun, Gurbuz & Alatan, BMVC 2022) — a **reconstruction** (tm_block.md).

Reading of a conv block as template matching: a 1x1 conv scores each location against templates, BN + ReLU acts
as a thresholded soft arg-max over them, the next conv embeds the selected templates, and the result is added to
the identity. The TM block ties the templates to the class labels: K = num_classes x templates_per_class cosine
templates in class-major order (channel c*m + j is template j of class c), supervised at every location by the
image label. It is a :class:`~gsp_hub.layers.letkd.LeTKDLayer` with class-indexed templates plus a label loss; no
teacher is involved and the block stays in the model at inference.

Inferred choices (the paper body was not available), exposed as options:

* ``class_pool``: how a class score is read from its m templates: ``max`` (default), ``lse`` (logsumexp), or
  ``none`` (requires m = 1).
* ``label_mode``: ``dense`` (default) = cross-entropy of the class scores at every location against the image
  label, averaged over B*h*w; ``image`` = cross-entropy of the class scores averaged over locations, over B.
* Placement: like the LeTKD intermediate layer, after the first block of the last stage (``taps=("intermediate",)``),
  optionally also at the penultimate map. The block is **added** after the existing block, not replacing it.
* Loss: ``CE(logits, y) + lambda_tm * sum over blocks of label_loss``
  (:func:`gsp_hub.losses.distillation.tm_loss`), lambda_tm = 1.

Training: build :func:`gsp_hub.models.taps.tm_student` ``(timm_model, input_size=..., num_classes=C)`` and train it
as a classifier with :func:`gsp_hub.losses.distillation.tm_loss` (the distillation loop's ``--method tm``: same loop,
no teacher).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from gsp_hub.layers.letkd import LeTKDLayer

__all__ = ["ClassPool", "LabelMode", "TMBlock"]

ClassPool = Literal["max", "lse", "none"]
LabelMode = Literal["dense", "image"]


class TMBlock(LeTKDLayer):
    """Class-indexed template matching: (B, channels, H, W) -> (x_hat, logits (B, num_classes * m, H, W)).

    Args:
        channels: channels of the map the block sits on.
        num_classes: number of classes C the templates are tied to.
        templates_per_class: m templates per class.
        alpha, match_scale, value_scale: as in :class:`~gsp_hub.layers.letkd.LeTKDLayer`.
        class_pool: ``max`` | ``lse`` | ``none`` — class score from the class's m template scores.
        label_mode: ``dense`` | ``image`` — see the module docstring.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        templates_per_class: int = 1,
        alpha: float = 1.0,
        match_scale: float = 3.0,
        value_scale: float = 1.0,
        class_pool: ClassPool = "max",
        label_mode: LabelMode = "dense",
    ) -> None:
        if class_pool not in ("max", "lse", "none"):
            raise ValueError(f"class_pool must be 'max', 'lse' or 'none', got {class_pool!r}.")
        if label_mode not in ("dense", "image"):
            raise ValueError(f"label_mode must be 'dense' or 'image', got {label_mode!r}.")
        if class_pool == "none" and templates_per_class != 1:
            raise ValueError(f"class_pool='none' needs templates_per_class=1, got {templates_per_class}.")
        if num_classes < 1 or templates_per_class < 1:
            raise ValueError(
                f"num_classes and templates_per_class must be >= 1, got {num_classes} and {templates_per_class}."
            )
        super().__init__(channels, num_classes * templates_per_class, alpha, match_scale, value_scale)
        self.num_classes = num_classes
        self.templates_per_class = templates_per_class
        self.class_pool = class_pool
        self.label_mode = label_mode

    def class_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Template logits (B, C*m, h, w) -> class scores (B, C, h, w)."""
        grouped = logits.unflatten(1, (self.num_classes, self.templates_per_class))
        if self.class_pool == "max":
            return grouped.amax(2)
        if self.class_pool == "lse":
            return grouped.logsumexp(2)
        return grouped.squeeze(2)

    def label_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the class scores against the image labels (B,): per location or per image."""
        scores = self.class_scores(logits)
        if self.label_mode == "image":
            return F.cross_entropy(scores.mean((2, 3)), labels)
        location_labels = labels[:, None, None].expand(-1, *scores.shape[2:])
        return F.cross_entropy(scores, location_labels)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, num_classes={self.num_classes}, templates_per_class={self.templates_per_class}, "
            f"class_pool={self.class_pool}, label_mode={self.label_mode}"
        )

