"""MetricNet: any timm backbone -> local features -> per-location embedding -> pooling -> (classifier).

The backbone runs without its global pooling (``reset_classifier(0, '')``), so that the per-location layers of its
head still apply (ConvNeXt's final norm, MobileNetV3's ``conv_head``, EVA's ``fc_norm``) and every parameter is used.
Its output is turned into a set of local features (tokens), whatever the backbone family: CNNs give NCHW maps,
Swin gives NHWC maps, ViTs give NLC tokens whose prefix tokens (class, register) are dropped. A per-location linear embedding (a 1x1 convolution on a map) maps each token to
``embed_dim``; a pooling from :func:`gsp_hub.layers.create_pool` (GSP by default) turns the set into one vector.

MetricNet honours the timm model contract (``forward_features``, ``forward_head(pre_logits=...)``,
``reset_classifier``, ``get_classifier``, ``num_features``, ``pretrained_cfg``) so that timm's factory, Hub
export (``save_for_hf``), ``hf-hub:`` / ``local-dir:`` loading, ``resolve_model_data_config`` and transformers'
``TimmWrapper`` all work unchanged.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from gsp_hub.layers import GSPOutput, create_pool

__all__ = ["MetricNet"]


class MetricNet(nn.Module):
    """Metric-learning network over any timm backbone.

    Args:
        backbone: timm model name of the feature extractor (built with ``num_classes=0``).
        pool: pooling name for :func:`gsp_hub.layers.create_pool` (``gsp``, ``avg``, ``max``, ``gem``, ...).
        embed_dim: width of the per-location linear embedding; 0 pools the backbone features directly.
        num_classes: size of an optional linear classifier on the pooled embedding (0: none).
        backbone_pretrained: load the backbone's timm pretrained weights (needs them cached offline).
        in_chans: input image channels.
        backbone_kwargs: extra keyword arguments for ``timm.create_model(backbone, ...)`` (e.g. ``img_size``).
        **pool_kwargs: forwarded to the pooling (e.g. ``num_prototypes``, ``transport_ratio``, ``gamma``).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        pool: str = "gsp",
        embed_dim: int = 512,
        num_classes: int = 0,
        backbone_pretrained: bool = False,
        in_chans: int = 3,
        backbone_kwargs: dict[str, Any] | None = None,
        **pool_kwargs: Any,
    ) -> None:
        super().__init__()
        if embed_dim < 0:
            raise ValueError(f"embed_dim must be >= 0 (0 keeps the backbone width), got {embed_dim}.")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 means no classifier), got {num_classes}.")
        self.backbone = timm.create_model(
            backbone,
            pretrained=backbone_pretrained,
            num_classes=0,
            in_chans=in_chans,
            **(backbone_kwargs or {}),
        )
        # Built with its default pooling first (keeps pretrained key names, e.g. EVA's fc_norm), then un-pooled.
        self.backbone.reset_classifier(0, "")
        self.in_chans = in_chans
        self.pool_name = pool
        self.num_prefix_tokens = int(getattr(self.backbone, "num_prefix_tokens", 0))
        self.channels_last_output = getattr(self.backbone, "output_fmt", "NCHW") == "NHWC"
        backbone_dim = int(getattr(self.backbone, "head_hidden_size", self.backbone.num_features))
        self.embed: nn.Module = nn.Linear(backbone_dim, embed_dim) if embed_dim else nn.Identity()
        self.num_features = self.head_hidden_size = embed_dim or backbone_dim
        self.pool = create_pool(pool, self.num_features, **pool_kwargs)
        self.num_classes = num_classes
        self.head: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> local backbone features (B, N, C_backbone)."""
        features = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        if features.ndim == 4:
            if not self.channels_last_output:
                features = features.permute(0, 2, 3, 1)
            return features.flatten(1, 2)
        if features.ndim == 3:
            return features[:, self.num_prefix_tokens :]
        raise ValueError(
            f"backbone {type(self.backbone).__name__}.forward_features returned shape {tuple(features.shape)}; "
            "MetricNet needs a spatial map (B, C, H, W) / (B, H, W, C) or tokens (B, N, C). "
            "Choose a backbone whose forward_features keeps the spatial dimensions."
        )

    def forward_head(
        self, x: torch.Tensor, pre_logits: bool = False, return_aux: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, GSPOutput | None]:
        """Local features (B, N, C_backbone) -> embedding (B, num_features), or logits (B, num_classes).

        With ``return_aux=True`` also returns the pooling's :class:`GSPOutput` (attributes (B, K), weights (B, N))
        for pools that compute one (``gsp``, ``proto``), else ``None``.
        """
        tokens = self.embed(x)
        aux: GSPOutput | None = None
        if return_aux and hasattr(self.pool, "transport"):
            aux = self.pool.transport(tokens)
            pooled = aux.pooled
        else:
            pooled = self.pool(tokens)
        out = pooled if pre_logits else self.head(pooled)
        return (out, aux) if return_aux else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> embeddings (B, num_features) when ``num_classes == 0``, else logits."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (0 removes it). The pooling is fixed at construction."""
        if global_pool is not None and global_pool != self.pool_name:
            raise ValueError(
                f"global_pool={global_pool!r}: MetricNet's pooling is fixed at construction (current: "
                f"{self.pool_name!r}). Create a new model with pool={global_pool!r} instead."
            )
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)
