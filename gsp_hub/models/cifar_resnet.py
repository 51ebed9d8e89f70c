"""CIFAR ResNets (He et al. 2016, Sec. 4.2) as timm models: ``cifar_resnet20/32/44/56/110/8x4/32x4``.

Three stages of basic blocks on a 32x32 input (3x3 stem at stride 1, stages at strides 1, 2, 2; 8x8 final map),
**option-A shortcuts** (identity; where the shape changes, ``x[:, :, ::s, ::s]`` zero-padded in channels, no
parameters), global average pooling and a linear classifier. Depth = 6n + 2 with n blocks per stage.

| model | n | stem | stages | params (10 classes) |
|---|---|---|---|---|
| ``cifar_resnet20`` / 32 / 44 / 56 / 110 | 3 / 5 / 7 / 9 / 18 | 16 | 16, 32, 64 | 0.27M ... 1.73M |
| ``cifar_resnet8x4`` / ``cifar_resnet32x4`` | 1 / 5 | 32 | 64, 128, 256 | 1.17M / 7.37M |

The "x4" widths follow the CRD/RepDistiller CIFAR models (there with option-B shortcuts; here option A, so
the stride-1 channel change 32 -> 64 of their first stage is a zero-padded identity).

Module names equal the key names of the CIFAR-10 checkpoints in ``../shared/data/cifar10-resnets`` (``conv1``,
``bn1``, ``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``, ``linear``), so those files load with ``strict=True``::

    import timm, gsp_hub.models.cifar_resnet  # registers the models
    model = timm.create_model("cifar_resnet56")            # num_classes=10 by default
    load_cifar10_weights(model, "../shared/data/cifar10-resnets/resnet56.safetensors")

(``timm.create_model("cifar_resnet56", pretrained=True, pretrained_cfg_overlay=dict(file=path))`` works too.)
The weights were trained with the ImageNet mean/std normalisation, which is therefore every model's default
``pretrained_cfg`` (``timm.data.resolve_model_data_config(model)``); use the same for students distilled from
them. ``feature_info`` lists the stem and the three stages (``features_only=True`` and ``forward_intermediates``
are supported).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices  # timm 1.0.31: not exported by timm.models
from torch import nn

from gsp_hub.models.zoo import zoo_pretrained_cfgs

__all__ = ["CifarBasicBlock", "CifarResNet", "load_cifar10_weights"]


def _make_global_pool(pool_type: str) -> SelectAdaptivePool2d:
    """timm's head pooling of type ``pool_type``, flattened to (B, C); ``''`` passes the map through unflattened (as
    timm's own models do after ``reset_classifier(0, '')``)."""
    return SelectAdaptivePool2d(pool_type=pool_type, flatten=bool(pool_type))


class CifarBasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus an option-A shortcut: (B, in_chs, H, W) -> (B, out_chs, H/stride, W/stride)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        if out_chs < in_chs:
            raise ValueError(f"option-A shortcuts only pad channels: out_chs={out_chs} must be >= in_chs={in_chs}.")
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU(inplace=True)
        self.stride = stride
        self.pad_before = (out_chs - in_chs) // 2
        self.pad_after = out_chs - in_chs - self.pad_before

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Option A: spatial subsampling by the stride, then zero channels on both sides."""
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad_before or self.pad_after:
            x = F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet with the timm model contract.

    Args:
        blocks_per_stage: n, the number of basic blocks in each of the three stages (depth 6n + 2).
        stage_channels: output channels of the three stages.
        stem_channels: output channels of the 3x3 stem convolution.
        num_classes: classifier outputs (0: no classifier, ``forward`` returns pooled features).
        in_chans: input image channels.
        global_pool: timm pooling type of the head (``avg`` as in the paper; ``''`` keeps the map).
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        blocks_per_stage: int,
        stage_channels: Sequence[int] = (16, 32, 64),
        stem_channels: int = 16,
        num_classes: int = 10,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}.")
        if len(stage_channels) != 3:
            raise ValueError(f"stage_channels must list 3 widths (one per stage), got {tuple(stage_channels)}.")
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.conv1 = nn.Conv2d(in_chans, stem_channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.act1 = nn.ReLU(inplace=True)
        self.feature_info = [dict(num_chs=stem_channels, reduction=1, module="act1")]
        in_chs, reduction = stem_channels, 1
        for index, (out_chs, stride) in enumerate(zip(stage_channels, (1, 2, 2)), start=1):
            blocks = [
                CifarBasicBlock(in_chs if i == 0 else out_chs, out_chs, stride if i == 0 else 1)
                for i in range(blocks_per_stage)
            ]
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
            in_chs, reduction = out_chs, reduction * stride
            self.feature_info.append(dict(num_chs=out_chs, reduction=reduction, module=f"layer{index}"))
        self.num_features = self.head_hidden_size = in_chs
        self.global_pool = _make_global_pool(global_pool)
        self.linear = self._make_classifier(num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        width = self.num_features * self.global_pool.feat_mult()
        return nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^conv1|^bn1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.linear

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (0 removes it) and optionally the pooling type."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = _make_global_pool(global_pool)
        self.linear = self._make_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, in_chans, H, W) -> last-stage map (B, num_features, H/4, W/4), after the final ReLU."""
        x = self.act1(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Images (B, in_chans, H, W) -> the maps of ``feature_info`` levels ``indices`` (None: all four; an int:
        the last n), and unless ``intermediates_only`` first the ``forward_features`` map. ``stop_early`` skips
        the stages after the last one taken; ``norm`` has no effect (no final norm)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW' for a CIFAR ResNet, got {output_fmt!r}.")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        x = self.act1(self.bn1(self.conv1(x)))
        intermediates = [x] if 0 in take_indices else []
        stages = (self.layer1, self.layer2, self.layer3)
        for index, stage in enumerate(stages[:max_index] if stop_early else stages, start=1):
            x = stage(x)
            if index in take_indices:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Replace the stages after the last of ``indices`` by identities (and with ``prune_head`` remove the
        classifier and pooling), for a feature extractor; returns the kept feature indices."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        for index in range(max_index + 1, len(self.feature_info)):
            setattr(self, f"layer{index}", nn.Identity())
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Map (B, num_features, h, w) -> pooled features (B, num_features) or logits (B, num_classes); with
        ``global_pool=''`` the map itself (B, num_features, h, w) for ``pre_logits``."""
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.linear(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def load_cifar10_weights(model: CifarResNet, path: str | Path) -> CifarResNet:
    """Load a ``../shared/data/cifar10-resnets/resnet{20,32,44,56}.safetensors`` file with ``strict=True``.

    The model must have the checkpoint's architecture (its ``blocks_per_stage`` metadata) and 10 classes; call
    ``model.reset_classifier(n)`` afterwards to fine-tune on another label set. Returns ``model``.
    """
    if not isinstance(model, CifarResNet):
        raise TypeError(
            f"model must be a CifarResNet (e.g. timm.create_model('cifar_resnet56')), got {type(model).__name__}."
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"path={str(path)!r} does not exist; expected e.g. ../shared/data/cifar10-resnets/resnet56.safetensors."
        )
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    depth = len(model.layer1)
    if "blocks_per_stage" in metadata and int(metadata["blocks_per_stage"]) != depth:
        raise ValueError(
            f"{path.name} holds a CIFAR ResNet with {metadata['blocks_per_stage']} blocks per stage "
            f"(arch {metadata.get('arch', '?')}) but the model has {depth}; create the matching cifar_resnet model."
        )
    if model.num_classes != 10:
        raise ValueError(
            f"the CIFAR-10 checkpoints have 10 classes but the model has num_classes={model.num_classes}; create it "
            "with num_classes=10, load, then call model.reset_classifier(num_classes)."
        )
    model.load_state_dict(load_file(str(path)), strict=True)
    return model


def cifar_pretrained_cfg(**kwargs: Any) -> dict[str, Any]:
    """timm pretrained-config fields of a CIFAR ResNet (32 px, ImageNet mean / std), overridden by ``kwargs``."""
    return {**dict(
        num_classes=10,
        input_size=(3, 32, 32),
        pool_size=(8, 8),
        crop_pct=1.0,
        interpolation="bilinear",
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        first_conv="conv1",
        classifier="linear",
        paper_ids="arXiv:1512.03385",
    ), **kwargs}


_NAMES = tuple(f"cifar_resnet{depth}" for depth in ("20", "32", "44", "56", "110", "8x4", "32x4"))
# Zoo tags first; the untagged configs are timm's explicit default ("*"), so bare names stay untrained.
default_cfgs = generate_default_cfgs({
    **{name: cifar_pretrained_cfg(**fields) for name, fields in zoo_pretrained_cfgs(_NAMES).items()},
    **{f"{name}.*": cifar_pretrained_cfg() for name in _NAMES},
})


_X4_WIDTHS: dict[str, Any] = dict(stem_channels=32, stage_channels=(64, 128, 256))


def _create(variant: str, pretrained: bool, **kwargs: Any) -> CifarResNet:
    return build_model_with_cfg(CifarResNet, variant, pretrained, feature_cfg=dict(out_indices=(0, 1, 2, 3)), **kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-20: 3 blocks per stage, 16/32/64 channels."""
    return _create("cifar_resnet20", pretrained, blocks_per_stage=3, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-32: 5 blocks per stage, 16/32/64 channels."""
    return _create("cifar_resnet32", pretrained, blocks_per_stage=5, **kwargs)


@register_model
def cifar_resnet44(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-44: 7 blocks per stage, 16/32/64 channels."""
    return _create("cifar_resnet44", pretrained, blocks_per_stage=7, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-56: 9 blocks per stage, 16/32/64 channels."""
    return _create("cifar_resnet56", pretrained, blocks_per_stage=9, **kwargs)


@register_model
def cifar_resnet110(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-110: 18 blocks per stage, 16/32/64 channels."""
    return _create("cifar_resnet110", pretrained, blocks_per_stage=18, **kwargs)


@register_model
def cifar_resnet8x4(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-8x4 (CRD widths): 1 block per stage, 32-channel stem, 64/128/256 channels."""
    return _create("cifar_resnet8x4", pretrained, blocks_per_stage=1, **_X4_WIDTHS, **kwargs)


@register_model
def cifar_resnet32x4(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-32x4 (CRD widths): 5 blocks per stage, 32-channel stem, 64/128/256 channels."""
    return _create("cifar_resnet32x4", pretrained, blocks_per_stage=5, **_X4_WIDTHS, **kwargs)
