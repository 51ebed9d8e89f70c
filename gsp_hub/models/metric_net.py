"""MetricNet: any timm backbone -> map of local features -> per-location embedding -> pooling -> (classifier).

The backbone runs without its global pooling (``reset_classifier(0, '')``), so that the per-location layers of its
head still apply (ConvNeXt's final norm, MobileNetV3's ``conv_head``, EVA's ``fc_norm``) and every parameter is used.
Its output becomes a channels-last map of local features, whatever the backbone family: CNNs give NCHW maps (permuted),
Swin gives NHWC maps, ViTs give NLC tokens whose prefix tokens (class, register) are dropped and whose patch tokens are
laid out on their grid. A per-location linear embedding maps each location to ``embed_dim``; a pooling from
:func:`gsp_hub.layers.create_pool` (GSP by default) turns the set of locations into one vector.

MetricNet is an ordinary timm model (timm's own ``tests/test_models.py`` markers ``base``, ``cfg`` and ``features``
pass on every gsp_hub name):

* ``forward_features(x)`` -> (B, h, w, num_features) map (``output_fmt = 'NHWC'``, as Swin), ``num_features`` =
  the backbone's width; ``forward_head(map, pre_logits=True)`` -> (B, head_hidden_size) embedding;
* ``reset_classifier(num_classes, global_pool)`` changes the classifier and, given ``global_pool``, the pooling
  (``''``: none, the forward then returns the embedded map);
* ``feature_info``, ``forward_intermediates`` and ``prune_intermediate_layers`` delegate to the backbone, so
  ``timm.create_model(name, features_only=True)`` gives the backbone's feature maps (all levels by default);
* ``set_input_size`` and the ``img_size`` / ``dynamic_img_size`` arguments reach ViT-family backbones.

So timm's factory, Hub export (``save_for_hf``), ``hf-hub:`` / ``local-dir:`` loading, ``resolve_model_data_config``
and transformers' ``TimmWrapper`` all work unchanged. TorchScript is not supported (GSP's transport solve is not
scriptable); ``torch.export`` and ONNX (:mod:`gsp_hub.export`) are the supported compile paths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import timm
import torch
from timm.models import get_model_traits
from timm.models._input import update_model_input_size  # timm 1.0.31: records a resize in the model's traits / args
from torch import nn

from gsp_hub.layers import GSPOutput, create_pool

__all__ = ["MetricNet", "feature_grid"]

#: The pooling name that disables pooling (timm's convention): the forward returns the embedded map.
NO_POOLING = ""
#: timm's input-size arguments, given to the model (timm's factory passes them) and forwarded to the backbone.
INPUT_SIZE_ARGS = ("img_size", "dynamic_img_size")


def feature_grid(num_locations: int, image_hw: tuple[int, int]) -> tuple[int, int]:
    """The feature-map shape (H, W) of ``num_locations`` = H * W locations over an image of ``image_hw`` (h, w)
    pixels: of all factorisations, the one whose aspect ratio H / W is closest to h / w (backbones reduce both
    sides by the same stride, so e.g. 6 locations of a 64 x 96 image are 2 x 3)."""
    if num_locations < 1:
        raise ValueError(f"num_locations must be >= 1, got {num_locations}.")
    target = math.log(image_hw[0] / image_hw[1])
    pairs = [(rows, num_locations // rows) for rows in range(1, num_locations + 1) if num_locations % rows == 0]
    return min(pairs, key=lambda pair: abs(math.log(pair[0] / pair[1]) - target))


class MetricNet(nn.Module):
    """Metric-learning network over any timm backbone.

    Args:
        backbone: timm model name of the feature extractor (built with ``num_classes=0``).
        pool: pooling name for :func:`gsp_hub.layers.create_pool` (``gsp``, ``avg``, ``max``, ``gem``, ...).
        embed_dim: width of the per-location linear embedding; 0 pools the backbone features directly.
        num_classes: size of an optional linear classifier on the pooled embedding (0: none).
        backbone_pretrained: load the backbone's timm pretrained weights (needs them cached offline).
        in_chans: input image channels.
        backbone_kwargs: extra keyword arguments for ``timm.create_model(backbone, ...)`` (e.g. ``output_stride``).
        global_pool: timm's name for the pooling, used by timm's factory and exports; given, it replaces ``pool``
            (``''``: no pooling, ``forward`` returns the embedded map (B, h, w, head_hidden_size)).
        img_size, dynamic_img_size: timm's input-size arguments of ViT-family backbones, passed to the backbone
            (they replace the same keys of ``backbone_kwargs``).
        **pool_kwargs: forwarded to the pooling (e.g. ``num_prototypes``, ``transport_ratio``, ``gamma``).

    Not scriptable with TorchScript (GSP's transport solve); use ``torch.export`` or ONNX (:mod:`gsp_hub.export`).
    """

    output_fmt = "NHWC"

    def __init__(
        self,
        backbone: str = "resnet50",
        pool: str = "gsp",
        embed_dim: int = 512,
        num_classes: int = 0,
        backbone_pretrained: bool = False,
        in_chans: int = 3,
        backbone_kwargs: dict[str, Any] | None = None,
        global_pool: str | None = None,
        img_size: int | Sequence[int] | None = None,
        dynamic_img_size: bool | None = None,
        **pool_kwargs: Any,
    ) -> None:
        super().__init__()
        if embed_dim < 0:
            raise ValueError(f"embed_dim must be >= 0 (0 keeps the backbone width), got {embed_dim}.")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 means no classifier), got {num_classes}.")
        input_size_args = {"img_size": img_size, "dynamic_img_size": dynamic_img_size}
        backbone_kwargs = {**(backbone_kwargs or {}), **{k: v for k, v in input_size_args.items() if v is not None}}
        self.backbone = timm.create_model(
            backbone, pretrained=backbone_pretrained, num_classes=0, in_chans=in_chans, **backbone_kwargs
        )
        # Built with its default pooling first (keeps pretrained key names, e.g. EVA's fc_norm), then un-pooled.
        self.backbone.reset_classifier(0, "")
        self.in_chans = in_chans
        self.dynamic_img_size = bool(getattr(self.backbone, "dynamic_img_size", False))
        self.num_prefix_tokens = int(getattr(self.backbone, "num_prefix_tokens", 0))
        self.channels_last_output = getattr(self.backbone, "output_fmt", "NCHW") == "NHWC"
        self.num_features = int(getattr(self.backbone, "head_hidden_size", self.backbone.num_features))
        self.embed: nn.Module = nn.Linear(self.num_features, embed_dim) if embed_dim else nn.Identity()
        self.head_hidden_size = embed_dim or self.num_features
        self.feature_info = [
            dict(info, module=f"backbone.{info['module']}") for info in getattr(self.backbone, "feature_info", [])
        ]
        self.global_pool = pool if global_pool is None else global_pool
        self._pool_kwarg_names = tuple(pool_kwargs)
        self.pool = self._create_pool(self.global_pool, **pool_kwargs)
        self.num_classes = num_classes
        self.head: nn.Module = nn.Linear(self.head_hidden_size, num_classes) if num_classes else nn.Identity()

    def _create_pool(self, name: str, **pool_kwargs: Any) -> nn.Module:
        return nn.Identity() if name == NO_POOLING else create_pool(name, self.head_hidden_size, **pool_kwargs)

    def _local_features(self, features: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """The un-pooled backbone output (NCHW / NHWC map or NLC tokens) -> (B, h, w, num_features)."""
        if features.ndim == 4:
            return features if self.channels_last_output else features.permute(0, 2, 3, 1)
        if features.ndim == 3:
            patches = features[:, self.num_prefix_tokens :]
            return patches.unflatten(1, feature_grid(patches.shape[1], image_hw))
        raise ValueError(
            f"backbone {type(self.backbone).__name__}.forward_features returned shape {tuple(features.shape)}; "
            "MetricNet needs a spatial map (B, C, H, W) / (B, H, W, C) or tokens (B, N, C). "
            "Choose a backbone whose forward_features keeps the spatial dimensions."
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> map of local backbone features (B, h, w, num_features), channels last."""
        features = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        return self._local_features(features, (x.shape[-2], x.shape[-1]))

    def forward_head(
        self, x: torch.Tensor, pre_logits: bool = False, return_aux: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, GSPOutput | None]:
        """Local features (B, h, w, num_features) (or tokens (B, N, num_features)) -> embedding
        (B, head_hidden_size), or logits (B, num_classes). Without pooling (``global_pool=''``) the embedded map
        (B, h, w, head_hidden_size), or per-location logits.

        With ``return_aux=True`` also returns the pooling's :class:`GSPOutput` (attributes (B, K), weights (B, N))
        for pools that compute one (``gsp``, ``proto``), else ``None``.
        """
        embedded = self.embed(x)
        aux: GSPOutput | None = None
        if self.global_pool == NO_POOLING:
            pooled = embedded
        else:
            tokens = embedded.flatten(1, 2) if embedded.ndim == 4 else embedded
            if return_aux and hasattr(self.pool, "transport"):
                aux = self.pool.transport(tokens)
                pooled = aux.pooled
            else:
                pooled = self.pool(tokens)
        out = pooled if pre_logits else self.head(pooled)
        return (out, aux) if return_aux else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> embeddings (B, head_hidden_size) when ``num_classes == 0``, else logits."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        **kwargs: Any,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The backbone's ``forward_intermediates`` (``indices`` of ``feature_info``; None: all; an int: the last
        n); ``kwargs`` go to it too (e.g. ``stop_early``). Returns the intermediate maps, or with
        ``intermediates_only=False`` also the final ``forward_features`` map (B, h, w, num_features) first."""
        result = self.backbone.forward_intermediates(
            x, indices=indices, norm=norm, output_fmt=output_fmt, intermediates_only=intermediates_only, **kwargs
        )
        if intermediates_only:
            return result
        final, intermediates = result
        features = self.backbone.forward_head(final, pre_logits=True)
        return self._local_features(features, (x.shape[-2], x.shape[-1])), intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the backbone's layers after the last of ``indices`` (and, with ``prune_head``, the embedding,
        pooling and classifier), for a feature extractor; returns the kept feature indices."""
        kept = self.backbone.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=prune_head)
        if prune_head:
            self.embed = nn.Identity()
            self.reset_classifier(0, NO_POOLING)
        return kept

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (0 removes it) and, given ``global_pool``, the pooling: a :func:`create_pool`
        name with its default settings, or ``''`` for none. The current pooling is kept when the name is
        unchanged."""
        if global_pool is not None and global_pool != self.global_pool:
            self.pool = self._create_pool(global_pool)
            self.global_pool = global_pool
            recorded = getattr(self, "_model_args", {})  # timm's record for exports: the old pool's settings go
            self._model_args = {k: v for k, v in recorded.items() if k not in self._pool_kwarg_names}
            self._pool_kwarg_names = ()
        self.num_classes = num_classes
        self.head = nn.Linear(self.head_hidden_size, num_classes) if num_classes else nn.Identity()

    def set_input_size(
        self, img_size: int | Sequence[int] | None = None, patch_size: int | Sequence[int] | None = None
    ) -> None:
        """Resize a ViT-family backbone's input (position embeddings resampled); recorded for exports."""
        if not hasattr(self.backbone, "set_input_size"):
            raise TypeError(
                f"backbone {type(self.backbone).__name__} has no set_input_size (only ViT-family timm backbones "
                "resize); CNN backbones take any input size as they are."
            )
        self.backbone.set_input_size(img_size=img_size, patch_size=patch_size)
        update_model_input_size(self, get_model_traits(self.backbone)["img_size"])
        if patch_size is not None:
            recorded = getattr(self, "_model_args", {})
            self._model_args = {
                **recorded, "backbone_kwargs": {**recorded.get("backbone_kwargs", {}), "patch_size": patch_size}
            }

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)
