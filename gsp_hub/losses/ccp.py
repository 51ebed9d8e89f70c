"""CCP: proxy-based DML with several proxies per class (shared/spec/ccp.md §3).

    L = proxy_weight · L_proxy(samples ↔ proxies) + pair_weight · L_pair(samples ↔ samples in the batch)

Embeddings and proxies are projected inside the loss (``normalization``: unit ball x / max(1, ‖x‖), the CCP
default, or the unit sphere). Proxies are one ``(num_classes·P, D)`` parameter stacked pick-major: row r belongs to
class ``r % num_classes``. Proxy terms:

* ``'proxy_anchor'``: Proxy-Anchor (margin δ, scale α) with every proxy its own anchor; P = 1 with
  ``normalization='l2'`` equals pytorch-metric-learning's ``ProxyAnchorLoss``.
* ``'proxy_nca'``: NCA over the proxies with squared Euclidean distances and softmax scale 1/temperature (ProxyNCA++),
  the class probability being the sum over its P proxies (PML ``NCALoss`` with ``ref_emb``).
* any PML loss instance: used as ``loss(emb, y, ref_emb=proxies, ref_labels=proxy_labels)`` — the official CCP
  (C1, C2, MS, Triplet as the base pair loss); then it is also the in-batch pair loss unless ``pair_loss`` is given.
  ``'c1'`` names the C1 instance (:func:`c1_contrastive_loss`), so that the official C1-CCP needs no Python.

The default in-batch pair loss is C1 (contrastive, positive margin 1, negative margin 0.5 on dot products of the
projected vectors, summed over ordered pairs and divided by the batch size). The proximal term and the proxy
re-initialisation live in :mod:`gsp_hub.losses.ccp_schedule`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import DotProductSimilarity, LpDistance
from pytorch_metric_learning.losses import BaseMetricLossFunction, ContrastiveLoss, NCALoss
from torch import Tensor, nn

from gsp_hub.layers.ops import unit_ball
from gsp_hub.losses.registry import SumPerAnchorReducer, register_loss

__all__ = [
    "CCPLoss",
    "c1_contrastive_loss",
    "ccp_sizes",
    "multi_proxy_anchor_loss",
    "project_embeddings",
]

Normalization = Literal["unit_ball", "l2"]
ProxyLossName = Literal["proxy_anchor", "proxy_nca", "c1"]


def ccp_sizes(num_classes: int) -> tuple[int, int]:
    """(proxies per class P, candidate-pool size b per class): (8, 12) below 1000 classes, (4, 7) from 1000 on."""
    return (8, 12) if num_classes < 1000 else (4, 7)


def project_embeddings(x: Tensor, normalization: Normalization) -> Tensor:
    """Project rows of x (..., D): ``'unit_ball'`` x / max(1, ‖x‖) (norms ≤ 1 pass unchanged), ``'l2'`` x / ‖x‖."""
    if normalization == "unit_ball":
        return unit_ball(x)
    if normalization == "l2":
        return F.normalize(x, dim=-1)
    raise ValueError(f"normalization must be 'unit_ball' or 'l2', got {normalization!r}.")


def c1_contrastive_loss(pos_margin: float = 1.0, neg_margin: float = 0.5) -> ContrastiveLoss:
    """C1 on pre-projected inputs: Σ_pos (1 − s)₊ + Σ_neg (s − 0.5)₊ over ordered pairs, / B, s = dot product."""
    return ContrastiveLoss(
        pos_margin=pos_margin,
        neg_margin=neg_margin,
        distance=DotProductSimilarity(normalize_embeddings=False),
        reducer=SumPerAnchorReducer(),
    )


def _log_one_plus_sum_exp(logits: Tensor) -> Tensor:
    """log(1 + Σ_i exp(logits[i, r])) per column r of logits (B, R); -inf entries drop out, gradients stay finite."""
    return torch.logsumexp(torch.cat([logits, logits.new_zeros(1, logits.shape[1])]), dim=0)


def multi_proxy_anchor_loss(
    embeddings: Tensor,
    labels: Tensor,
    proxies: Tensor,
    proxy_labels: Tensor,
    margin: float = 0.1,
    alpha: float = 32.0,
) -> Tensor:
    """Proxy-Anchor with any number of proxies per class, on dot products of already projected vectors.

    Args:
        embeddings: (B, D); labels: (B,); proxies: (R, D); proxy_labels: (R,).

    Returns:
        Σ_{r with positives} log(1 + Σ_{i∈pos(r)} e^{−α(s_ir − δ)}) / #(r with positives)
        + Σ_r log(1 + Σ_{i∈neg(r)} e^{α(s_ir + δ)}) / R.
    """
    similarities = embeddings @ proxies.T  # (B, R)
    positive = labels[:, None] == proxy_labels[None, :]
    pos_terms = _log_one_plus_sum_exp((-alpha * (similarities - margin)).masked_fill(~positive, -math.inf))
    neg_terms = _log_one_plus_sum_exp((alpha * (similarities + margin)).masked_fill(positive, -math.inf))
    num_with_positives = positive.any(dim=0).sum().clamp(min=1)
    return pos_terms.sum() / num_with_positives + neg_terms.sum() / proxies.shape[0]


@register_loss("ccp")
class CCPLoss(nn.Module):
    """Chance-constraint proxies: multi-proxy loss plus an in-batch pair term.

    Args:
        num_classes: Cls, number of training classes (labels in ``[0, Cls)``).
        embed_dim: D.
        proxies_per_class: P; ``None`` = 8 below 1000 classes, 4 otherwise (:func:`ccp_sizes`).
        proxy_loss: ``'proxy_anchor'``, ``'proxy_nca'``, ``'c1'`` or a PML loss used with ``ref_emb`` (module
            docstring).
        pair_loss: PML loss for the in-batch term; ``None`` = the ``proxy_loss`` instance if one was given, else C1.
        proxy_weight, pair_weight: weights of the two terms (1.0, 0.1).
        normalization: ``'unit_ball'`` (CCP) or ``'l2'``, applied to embeddings and proxies before both terms. Given
            PML losses should therefore not normalise again (e.g. ``DotProductSimilarity(normalize_embeddings=False)``).
        margin, alpha: Proxy-Anchor δ and α (0.1, 32).
        temperature: ProxyNCA++ temperature (0.1); the NCA softmax scale is 1 / temperature.

    Shapes: ``forward(embeddings (B, D), labels (B,)) -> scalar``. ``proxies`` (Cls·P, D) is the parameter to optimise;
    buffers ``proxy_labels`` (Cls·P,) and ``best_proxies`` (Cls·P, D, the seeds of the next re-initialisation).
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        proxies_per_class: int | None = None,
        proxy_loss: ProxyLossName | BaseMetricLossFunction = "proxy_anchor",
        pair_loss: BaseMetricLossFunction | None = None,
        *,
        proxy_weight: float = 1.0,
        pair_weight: float = 0.1,
        normalization: Normalization = "unit_ball",
        margin: float = 0.1,
        alpha: float = 32.0,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        if not (isinstance(num_classes, int) and num_classes >= 2):
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}.")
        if not (isinstance(embed_dim, int) and embed_dim >= 1):
            raise ValueError(f"embed_dim must be an int >= 1, got {embed_dim!r}.")
        if proxies_per_class is None:
            proxies_per_class = ccp_sizes(num_classes)[0]
        if not (isinstance(proxies_per_class, int) and proxies_per_class >= 1):
            raise ValueError(f"proxies_per_class must be an int >= 1 or None, got {proxies_per_class!r}.")
        if normalization not in ("unit_ball", "l2"):
            raise ValueError(f"normalization must be 'unit_ball' or 'l2', got {normalization!r}.")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        proxy_loss_name = proxy_loss if isinstance(proxy_loss, str) else type(proxy_loss).__name__
        if proxy_loss == "c1":
            proxy_loss = c1_contrastive_loss()
        if isinstance(proxy_loss, str):
            if proxy_loss not in ("proxy_anchor", "proxy_nca"):
                raise ValueError(
                    f"proxy_loss must be 'proxy_anchor', 'proxy_nca', 'c1' or a pytorch-metric-learning loss, "
                    f"got {proxy_loss!r}."
                )
            reference_loss: BaseMetricLossFunction | None = None
            if proxy_loss == "proxy_nca":
                distance = LpDistance(power=2, normalize_embeddings=False)
                reference_loss = NCALoss(softmax_scale=1.0 / temperature, distance=distance)
            pair_loss = c1_contrastive_loss() if pair_loss is None else pair_loss
        elif isinstance(proxy_loss, BaseMetricLossFunction):
            reference_loss = proxy_loss
            pair_loss = proxy_loss if pair_loss is None else pair_loss
        else:
            raise TypeError(
                f"proxy_loss must be 'proxy_anchor', 'proxy_nca', 'c1' or a pytorch_metric_learning loss instance, "
                f"got {type(proxy_loss).__name__}."
            )
        self.num_classes, self.embed_dim, self.proxies_per_class = num_classes, embed_dim, proxies_per_class
        self.proxy_loss_name = proxy_loss_name
        self.reference_loss = reference_loss  # None for the built-in Proxy-Anchor
        self.pair_loss = pair_loss
        self.proxy_weight, self.pair_weight = proxy_weight, pair_weight
        self.normalization: Normalization = normalization
        self.margin, self.alpha = margin, alpha
        num_proxies = num_classes * proxies_per_class
        self.proxies = nn.Parameter(nn.init.kaiming_normal_(torch.empty(num_proxies, embed_dim), mode="fan_out"))
        self.register_buffer("proxy_labels", torch.arange(num_proxies) % num_classes, persistent=False)
        self.register_buffer("best_proxies", torch.zeros(num_proxies, embed_dim))

    def project(self, x: Tensor) -> Tensor:
        """Apply this loss's normalisation to rows of x (..., D)."""
        return project_embeddings(x, self.normalization)

    @torch.no_grad()
    def snapshot_best_proxies_(self) -> None:
        """Remember the current proxies as the best ones (seeds of the next re-initialisation)."""
        self.best_proxies.copy_(self.proxies)

    def proxy_term(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Samples ↔ proxies loss on projected embeddings (B, D)."""
        proxies = self.project(self.proxies)
        if self.reference_loss is None:
            return multi_proxy_anchor_loss(embeddings, labels, proxies, self.proxy_labels, self.margin, self.alpha)
        return self.reference_loss(embeddings, labels, ref_emb=proxies, ref_labels=self.proxy_labels)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Loss for embeddings (B, D) and labels (B,) in ``[0, num_classes)`` -> scalar (fp32)."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"embeddings must be (B, {self.embed_dim}), got {tuple(embeddings.shape)}.")
        if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0] or labels.is_floating_point():
            raise ValueError(
                f"labels must be integer (B,) with B = {embeddings.shape[0]}, got {tuple(labels.shape)} {labels.dtype}."
            )
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got range [{int(labels.min())}, {int(labels.max())}]; "
                "remap the training classes to 0..num_classes-1."
            )
        projected = self.project(embeddings.float())  # fp32: PML losses cast their state to the input dtype
        loss = self.proxy_weight * self.proxy_term(projected, labels)
        if self.pair_weight:
            loss = loss + self.pair_weight * self.pair_loss(projected, labels)
        return loss

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embed_dim={self.embed_dim}, proxies_per_class={self.proxies_per_class}, "
            f"proxy_loss={self.proxy_loss_name!r}, proxy_weight={self.proxy_weight}, pair_weight={self.pair_weight}, "
            f"normalization={self.normalization!r}"
        )
