"""Put a gsp_hub pooling into any timm model, in place of its global pooling, keeping every other weight.

::

    model = timm.create_model("resnet50", pretrained=True)   # any timm classifier, pretrained or not
    swap_pooling(model, "gsp", num_prototypes=64)             # its average pooling is now GSP; the classifier stays
    logits = model(images)                                    # (B, 1000)

Where the global pooling sits, by model family:

* CNNs, ConvNeXt and Swin: the model's one pooling :class:`timm.layers.SelectAdaptivePool2d` (``global_pool`` of
  ResNet / EfficientNet, ``head.global_pool`` of the ConvNeXt and Swin heads), whatever its input layout (NCHW, or
  Swin's NHWC) and whether it flattens (ConvNeXt's head normalises the (B, C, 1, 1) result before flattening).
* ViT family (ViT, DeiT, EVA, ...): the ``attn_pool`` slot, which their ``forward_head`` uses instead of class-token
  or average pooling; the prefix tokens (class, register) are left out of the pooled set.

The pooling becomes a :class:`SwappedPool` that gives the replaced pooling's output shape, so the rest of the head
(norm, classifier) runs unchanged. timm's own ``reset_classifier`` rebuilds a ResNet's pooling and empties a ViT's
``attn_pool``: swap after it. A swapped model trains, saves its ``state_dict`` and exports with ``torch.export`` /
ONNX; to publish a pooled model on the Hub, use :class:`~gsp_hub.models.MetricNet` (timm's Hub format records only
timm's own pooling names).

One factory makes every gsp_hub pooling: :func:`gsp_hub.layers.create_pool`, called here and by
:class:`~gsp_hub.models.MetricNet` (what ``gsp-hub train --backbone resnet50 --pretrained`` builds: timm's pretrained
backbone, then the same pooling module). MetricNet differs in where the pooling sits, not in how it is made: it embeds
every location (the papers' head, 2048 -> 512 for ResNet-50) before pooling, where a swapped pooling pools the
backbone's own channels for the model's classifier.
"""

from __future__ import annotations

from typing import Any, Literal

from timm.layers import SelectAdaptivePool2d
from torch import Tensor, nn

from gsp_hub.layers import create_pool

__all__ = ["SwappedPool", "swap_pooling"]

InputFormat = Literal["NCHW", "NHWC", "NLC"]


class SwappedPool(nn.Module):
    """A gsp_hub pooling in the place of a timm model's global pooling.

    Takes the layout the replaced pooling took — a map (B, C, H, W) (``NCHW``) or (B, H, W, C) (``NHWC``), or tokens
    (B, N, C) (``NLC``, the first ``num_prefix_tokens`` left out) — and returns what it returned: (B, C), or
    (B, C, 1, 1) with ``keep_dims``. ``pool`` (a :func:`gsp_hub.layers.create_pool` module) sees tokens (B, N, C).
    """

    def __init__(self, pool: nn.Module, name: str, input_fmt: InputFormat, keep_dims: bool = False,
                 num_prefix_tokens: int = 0) -> None:
        super().__init__()
        self.pool = pool
        self.name = name
        self.input_fmt: InputFormat = input_fmt
        self.keep_dims = keep_dims
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: Tensor) -> Tensor:
        if self.input_fmt == "NCHW":
            tokens = x.flatten(2).transpose(1, 2)
        elif self.input_fmt == "NHWC":
            tokens = x.flatten(1, 2)
        else:
            tokens = x[:, self.num_prefix_tokens :]
        pooled = self.pool(tokens)
        return pooled[:, :, None, None] if self.keep_dims else pooled

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_fmt={self.input_fmt}, keep_dims={self.keep_dims}"


def _layout_of(pooling: SelectAdaptivePool2d) -> tuple[InputFormat, bool]:
    """(input format, keeps the 1 x 1 spatial dims) of a timm pooling: its fast variants hold both on the inner
    module (``dim`` and a bool ``flatten``), the others take NCHW and flatten with an ``nn.Flatten``."""
    inner = pooling.pool
    if isinstance(getattr(inner, "flatten", None), bool):
        return ("NHWC" if tuple(inner.dim) == (1, 2) else "NCHW"), not inner.flatten
    return "NCHW", not isinstance(pooling.flatten, nn.Flatten)


def _pooling_slots(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(dotted name, module) of every module that globally pools the model's features (a swapped one included)."""
    return [
        (name, module) for name, module in model.named_modules()
        if isinstance(module, SwappedPool) or (isinstance(module, SelectAdaptivePool2d) and not module.is_identity())
    ]


def swap_pooling(model: nn.Module, pool: str, **pool_kwargs: Any) -> nn.Module:
    """Replace the global pooling of timm ``model`` by the gsp_hub pooling ``pool`` (a :func:`create_pool` name:
    ``gsp``, ``proto``, ``gem``, ``avg``, ``max``; ``pool_kwargs`` go to it), in place; returns ``model``.

    Every existing weight is kept; the new pooling's parameters (e.g. GSP's prototypes) are fresh and train with the
    model. Raises ValueError, before changing anything, for an unknown pooling or a model whose global pooling is
    not found (one timm ``SelectAdaptivePool2d``, or a ViT-family ``attn_pool`` slot).
    """
    width = int(model.num_features)
    new_pool = create_pool(pool, width, **pool_kwargs)
    if isinstance(getattr(model, "global_pool", None), str) and hasattr(model, "attn_pool"):
        # ViT family: forward_head pools through attn_pool when it is set; ViT drops the prefix tokens itself
        # unless pool_include_prefix, EVA hands them over.
        prefix = int(getattr(model, "num_prefix_tokens", 0)) if getattr(model, "pool_include_prefix", True) else 0
        model.attn_pool = SwappedPool(new_pool, pool, "NLC", num_prefix_tokens=prefix)
        return model
    slots = _pooling_slots(model)
    if len(slots) != 1:
        found = [name for name, _ in slots]
        raise ValueError(
            f"model {type(model).__name__} has {len(slots)} global poolings that swap_pooling can replace {found}; "
            "it needs exactly one timm SelectAdaptivePool2d (CNN, ConvNeXt, Swin heads) or a ViT-family attn_pool "
            "slot. A model built with global_pool='' has none (build it with its default pooling); for a gsp_hub "
            "MetricNet use model.reset_classifier(num_classes, global_pool=...)."
        )
    name, old = slots[0]
    input_fmt, keep_dims = (old.input_fmt, old.keep_dims) if isinstance(old, SwappedPool) else _layout_of(old)
    parent_name, _, child_name = name.rpartition(".")
    model.get_submodule(parent_name).register_module(child_name, SwappedPool(new_pool, pool, input_fmt, keep_dims))
    return model
