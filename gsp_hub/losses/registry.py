"""Base metric-learning losses by name: ``create_loss('ms', num_classes=..., embed_dim=...)``.

The losses are pytorch-metric-learning modules with the ``loss(embeddings (B, D), labels (B,)) -> scalar`` API:

* ``contrastive``: the XBM paper's contrastive loss on cosine similarity s ("C1" in shared/spec/gsp.md §8): positive
  pairs ``max(0, 1 - s)``, negative pairs ``max(0, s - 0.5)``, summed over all pairs and divided by B.
* ``ms``: multi-similarity (alpha=2, beta=50, base=0.5).
* ``proxy_anchor``: proxy-anchor (margin=0.1, alpha=32); its proxies (num_classes, embed_dim) are parameters.
* ``xbm``: a cross-batch memory of past embeddings around a pair loss (``base='contrastive'`` by default,
  ``memory_size=1024``); its queue position is part of ``state_dict`` so that training resumes exactly.

Keyword arguments of :func:`create_loss` override the defaults above. Adding a loss is one function decorated with
``@register_loss("name")`` taking ``(num_classes, embed_dim, **kwargs)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pytorch_metric_learning import distances, losses, reducers
from torch import Tensor, nn

from gsp_hub.checks import check_kwargs
from gsp_hub.registry import Registry

__all__ = ["XBM", "SumPerAnchorReducer", "check_loss_kwargs", "create_loss", "list_losses", "register_loss"]

LossFactory = TypeVar("LossFactory", bound=Callable[..., nn.Module])

_LOSSES: Registry[nn.Module] = Registry("loss", plural="losses")


def register_loss(name: str) -> Callable[[LossFactory], LossFactory]:
    """Decorator adding a loss factory ``(num_classes, embed_dim, **kwargs) -> nn.Module`` under ``name``."""
    return _LOSSES.register(name)


def list_losses() -> list[str]:
    """Sorted names accepted by :func:`create_loss`."""
    return _LOSSES.names()


def create_loss(name: str, *, num_classes: int, embed_dim: int, **kwargs: Any) -> nn.Module:
    """Build the base loss registered as ``name`` for ``num_classes`` training classes and ``embed_dim``-wide
    embeddings.

    ``kwargs`` override the loss's defaults (e.g. ``create_loss('ms', ..., alpha=1.0)``). Pass fp32 embeddings: PML
    casts the parameters of proxy losses to the input dtype permanently.
    """
    factory = _LOSSES.get(name)
    try:
        return factory(num_classes, embed_dim, **kwargs)
    except TypeError as error:
        raise ValueError(f"loss {name!r} does not accept the keyword arguments {sorted(kwargs)}: {error}") from error


def check_loss_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    """ValueError, before anything is built, for an unknown loss ``name`` or a key of ``kwargs`` (the keyword
    arguments of :func:`create_loss`) that its factory does not take; a factory with ``**kwargs`` takes any."""
    check_kwargs("loss_kwargs", kwargs, _LOSSES.get(name), supplied=("num_classes", "embed_dim"))


class SumPerAnchorReducer(reducers.SumReducer):
    """Sum of every pair loss divided by the number of anchors B (the reduction of XBM's contrastive loss)."""

    def element_reduction(self, losses: Tensor, loss_indices: Any, embeddings: Tensor, labels: Tensor) -> Tensor:
        return losses.sum() / len(embeddings)


class XBM(losses.CrossBatchMemory):
    """PML's ``CrossBatchMemory`` whose queue position and fill state are saved in ``state_dict``.

    PML keeps the memory tensors as buffers but ``queue_idx`` / ``has_been_filled`` as plain attributes; without them
    a resumed run would overwrite the wrong memory rows.
    """

    def get_extra_state(self) -> dict[str, Any]:
        return {"queue_idx": int(self.queue_idx), "has_been_filled": bool(self.has_been_filled)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.queue_idx = int(state["queue_idx"])
        self.has_been_filled = bool(state["has_been_filled"])


@register_loss("contrastive")
def contrastive(num_classes: int, embed_dim: int, pos_margin: float = 1.0, neg_margin: float = 0.5) -> nn.Module:
    """Contrastive loss on cosine similarity, summed over pairs and divided by B."""
    return losses.ContrastiveLoss(
        pos_margin=pos_margin,
        neg_margin=neg_margin,
        distance=distances.CosineSimilarity(),
        reducer=SumPerAnchorReducer(),
    )


@register_loss("ms")
def multi_similarity(
    num_classes: int, embed_dim: int, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5
) -> nn.Module:
    """Multi-similarity loss (cosine similarity, mean over anchors)."""
    return losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base)


@register_loss("proxy_anchor")
def proxy_anchor(num_classes: int, embed_dim: int, margin: float = 0.1, alpha: float = 32.0) -> nn.Module:
    """Proxy-anchor loss with one learnable proxy per training class."""
    return losses.ProxyAnchorLoss(num_classes, embed_dim, margin=margin, alpha=alpha)


@register_loss("xbm")
def cross_batch_memory(
    num_classes: int, embed_dim: int, base: str = "contrastive", memory_size: int = 1024, **base_kwargs: Any
) -> nn.Module:
    """Cross-batch memory of the last ``memory_size`` embeddings around the pair loss ``base``."""
    if base == "xbm":
        raise ValueError("loss 'xbm' needs a pair loss as base (e.g. base='contrastive' or 'ms'), got base='xbm'.")
    inner = create_loss(base, num_classes=num_classes, embed_dim=embed_dim, **base_kwargs)
    if type(inner).__name__ not in losses.CrossBatchMemory.supported_losses():
        raise ValueError(
            f"loss 'xbm' needs a pair-based base loss; base={base!r} builds {type(inner).__name__}, which "
            "CrossBatchMemory does not support. Use base='contrastive' or base='ms'."
        )
    return XBM(inner, embed_dim, memory_size=memory_size)
