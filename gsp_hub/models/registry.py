"""timm registration of the MetricNet family: ``metric_net`` (any backbone) and named backbone + pool pairs.

timm has no plug-in discovery: importing this module (``import gsp_hub`` does it) registers the entrypoints.
``default_cfgs`` must exist before the ``register_model`` calls because timm reads it at registration time.
Each named model takes its preprocessing (input size, mean, std, interpolation, crop) from its backbone's
default pretrained config, so ``timm.data.resolve_model_data_config(model)`` gives the backbone's transform. The zoo's
pretrained tags (:mod:`gsp_hub.models.zoo`, e.g. ``gsp_tf_efficientnet_lite0.tin200``) add an ``hf_hub_id``, their
own preprocessing, and the constructor arguments their weights need.

Every config is complete for timm's contract: ``pool_size`` (the ``forward_features`` grid at ``input_size``),
``first_conv``, ``classifier`` and ``fixed_input_size`` (true for ViT-family backbones, which then take timm's
``img_size`` / ``dynamic_img_size`` arguments). ``features_only=True`` returns every level of the backbone's
``feature_info`` unless ``out_indices`` chooses (timm's ``FeatureGetterNet`` over ``forward_intermediates``).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
from collections.abc import Sequence
from typing import Any, Callable

import timm
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from gsp_hub.models.metric_net import INPUT_SIZE_ARGS, MetricNet
from gsp_hub.models.zoo import local_zoo_folder, zoo_model_args, zoo_pretrained_cfgs

__all__ = [
    "NAMED_MODELS",
    "accepts_output_stride",
    "backbone_of",
    "data_cfg_of_backbone",
    "default_pool",
    "metric_net",
    "unknown_model_error",
]

# name -> (backbone, pool). The gap_* twins are the same networks with average pooling (the baselines).
NAMED_MODELS: dict[str, tuple[str, str]] = {
    f"{prefix}_{backbone}": (backbone, pool)
    for backbone in ("resnet18", "resnet50", "tf_efficientnet_lite0", "vit_small_patch16_224", "convnext_tiny",
                     "test_resnet")  # test_resnet: timm's 0.4M-parameter ResNet, the default job's backbone
    for prefix, pool in (("gsp", "gsp"), ("gap", "avg"))
}
_DATA_FIELDS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std", "fixed_input_size")
# features_only=True: timm's FeatureGetterNet over forward_intermediates, every feature level by default.
_FEATURE_CFG: dict[str, Any] = dict(feature_cls="getter", out_indices=None)
_METRIC_NET_BACKBONE = inspect.signature(MetricNet).parameters["backbone"].default


def unknown_model_error(name: str, argument: str) -> ValueError:
    """The error for a ``name`` that timm does not know, given as ``argument`` (``--backbone``, ``--model``, ...),
    with the closest registered architectures as suggestions."""
    architecture = name.split(".")[0]  # a pretrained tag (resnet50.a1_in1k) is not part of the architecture
    close = difflib.get_close_matches(architecture.lower(), timm.list_models(), n=3)
    suggestion = f"did you mean {' or '.join(map(repr, close))}?" if close else "no registered name is close to it."
    return ValueError(f"{argument} {name!r} is not a timm architecture; {suggestion} (timm.list_models() lists "
                      "them all, `gsp-hub models` the gsp_hub ones.)")


@functools.lru_cache(maxsize=None)
def _feature_stride(backbone: str) -> tuple[float, float]:
    """Pixels per location (rows, columns) of ``backbone``'s final feature map: input / pool size of its pretrained
    config, or (ViT-family configs give no pool size) the reduction of its last ``feature_info`` level, read from
    the model built on the meta device (no memory, no weights)."""
    cfg = timm.get_pretrained_cfg(backbone)
    if cfg.pool_size:
        return cfg.input_size[1] / cfg.pool_size[0], cfg.input_size[2] / cfg.pool_size[1]
    with torch.device("meta"):
        reduction = timm.create_model(backbone, num_classes=0).feature_info[-1]["reduction"]
    return float(reduction), float(reduction)


def data_cfg_of_backbone(backbone: str, input_size: Sequence[int] | None = None) -> dict[str, Any]:
    """Pretrained-config fields of a MetricNet over timm ``backbone``: its preprocessing (input_size, mean, std,
    ...) and ``fixed_input_size``, its first conv (under ``backbone.``) and the ``pool_size`` of the feature map at
    ``input_size`` (C, H, W; default: the backbone's own)."""
    cfg = timm.get_pretrained_cfg(backbone)
    if cfg is None:
        raise unknown_model_error(backbone, "backbone")
    fields = {name: getattr(cfg, name) for name in _DATA_FIELDS}
    if input_size is not None:
        fields["input_size"] = tuple(input_size)
    fields["first_conv"] = f"backbone.{cfg.first_conv}" if cfg.first_conv else None
    stride = _feature_stride(backbone)
    fields["pool_size"] = tuple(math.ceil(side / step) for side, step in zip(fields["input_size"][1:], stride))
    return fields


def _lift_input_size_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``img_size`` / ``dynamic_img_size`` of ``backbone_kwargs`` moved to the top level, where
    timm's factory reads them (a top-level value wins: timm's exports record the current size there)."""
    backbone_kwargs = dict(kwargs.get("backbone_kwargs") or {})
    lifted = {name: backbone_kwargs.pop(name) for name in INPUT_SIZE_ARGS if name in backbone_kwargs}
    if not lifted:
        return kwargs
    return {**lifted, **kwargs, "backbone_kwargs": backbone_kwargs}


def backbone_of(model: str, backbone: str) -> str | None:
    """The timm backbone that ``timm.create_model(model, backbone=backbone)`` builds: ``backbone`` for
    ``metric_net``, the fixed one of a named ``gsp_*`` / ``gap_*`` model (a zoo tag aside); None for other names
    (Hub or local folders, architectures outside gsp_hub)."""
    architecture = model.split(".", 1)[0]
    if architecture == "metric_net":
        return backbone
    return NAMED_MODELS[architecture][0] if architecture in NAMED_MODELS else None


def accepts_output_stride(backbone: str, output_stride: int) -> bool:
    """Whether timm builds ``backbone`` with ``output_stride`` (tried on the meta device: no memory, no weights).
    ViT-family constructors have no such argument; some CNNs allow only their own stride (VGG: 32)."""
    try:
        with torch.device("meta"):
            timm.create_model(backbone, num_classes=0, output_stride=output_stride)
    except (TypeError, AssertionError, ValueError):
        return False
    return True


def default_pool(model: str) -> str | None:
    """The pooling ``timm.create_model(model)`` builds when no ``pool`` is given: MetricNet's default for
    ``metric_net``, the named pool of a ``gsp_*`` / ``gap_*`` model (a zoo tag ``.tin200`` aside); None for a model
    outside gsp_hub."""
    architecture = model.split(".", 1)[0]
    if architecture == "metric_net":
        return inspect.signature(MetricNet).parameters["pool"].default
    return NAMED_MODELS[architecture][1] if architecture in NAMED_MODELS else None


# The zoo tags come first and every untagged config is marked with timm's "*" (the explicit default): the bare
# name keeps building the untrained default architecture, and only "<name>.<tag>" selects a zoo model's weights.
default_cfgs = generate_default_cfgs(
    {
        **{
            name: {"num_classes": 0, "classifier": "head",
                   **data_cfg_of_backbone(NAMED_MODELS[name.split(".")[0]][0], fields["input_size"]), **fields}
            for name, fields in zoo_pretrained_cfgs(NAMED_MODELS).items()
        },
        "metric_net.*": dict(num_classes=0, classifier="head", license="apache-2.0",
                             **data_cfg_of_backbone(_METRIC_NET_BACKBONE)),
        **{
            f"{name}.*": dict(num_classes=0, classifier="head", license="apache-2.0", **data_cfg_of_backbone(backbone))
            for name, (backbone, _) in NAMED_MODELS.items()
        },
    }
)


def _build(variant: str, pretrained: bool, backbone: str, **kwargs: Any) -> MetricNet:
    """``build_model_with_cfg(MetricNet, ...)`` with the input-size arguments where timm's factory reads them; a
    failed ``pretrained=True`` says where weights do exist (:func:`_pretrained_error`)."""
    try:
        return build_model_with_cfg(MetricNet, variant, pretrained, feature_cfg=dict(_FEATURE_CFG),
                                    backbone=backbone, **_lift_input_size_args(kwargs))
    except (RuntimeError, FileNotFoundError) as error:
        explained = _pretrained_error(variant, backbone, kwargs.get("pretrained_cfg"), error) if pretrained else None
        if explained is None:
            raise
        raise explained from error


def _pretrained_error(variant: str, backbone: str, tag: object, error: Exception) -> Exception | None:
    """The error of ``timm.create_model(variant[.tag], pretrained=True)``: with no weights of its own, name
    ``backbone_pretrained=True`` and the zoo tags; a zoo tag missing offline, name the repository's ``zoo/`` copy;
    None for any other failure."""
    tags = [name for name in zoo_pretrained_cfgs([variant])]
    if isinstance(tag, str) and f"{variant}.{tag}" in tags:
        name = f"{variant}.{tag}"
        try:
            copy = f"the repository's copy loads offline: timm.create_model('local-dir:{local_zoo_folder(name)}', " \
                   "pretrained=True) or gsp_hub.load_model"
        except FileNotFoundError:
            copy = "this installation has no zoo/ copy of it (install gsp_hub from a checkout of its repository)"
        return FileNotFoundError(f"the weights of {name} are neither in the local Hugging Face cache nor reachable "
                                 f"({type(error).__name__}); {copy}({name!r}).")
    if "No pretrained weights exist" not in str(error):
        return None
    zoo = f"; published weights: {', '.join(tags)}" if tags else ""
    return RuntimeError(f"{variant} has no pretrained weights of its own; pass backbone_pretrained=True to start "
                        f"from the timm weights of its {backbone} backbone{zoo}.")


@register_model
def metric_net(pretrained: bool = False, backbone: str = _METRIC_NET_BACKBONE, **kwargs: Any) -> MetricNet:
    """MetricNet over any timm ``backbone`` (default pool: GSP); preprocessing follows the backbone."""
    if kwargs.get("pretrained_cfg") is None and kwargs.get("pretrained_cfg_overlay") is None:
        kwargs["pretrained_cfg_overlay"] = data_cfg_of_backbone(backbone)
    return _build("metric_net", pretrained, backbone, **kwargs)


def _named_entrypoint(name: str, backbone: str, pool: str) -> Callable[..., MetricNet]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> MetricNet:
        kwargs.setdefault("pool", pool)
        zoo_args = zoo_model_args(name, kwargs.get("pretrained_cfg"))
        model = _build(name, pretrained, backbone, **{**zoo_args, **kwargs})
        model._model_args = {**getattr(model, "_model_args", {}), **zoo_args}  # recorded in exports' model_args
        return model

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"MetricNet: timm {backbone} backbone, {pool} pooling."
    return entrypoint


for _name, (_backbone, _pool) in NAMED_MODELS.items():
    globals()[_name] = register_model(_named_entrypoint(_name, _backbone, _pool))
