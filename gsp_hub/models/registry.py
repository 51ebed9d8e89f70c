"""timm registration of the MetricNet family: ``metric_net`` (any backbone) and named backbone + pool pairs.

timm has no plug-in discovery: importing this module (``import gsp_hub`` does it) registers the entrypoints.
``default_cfgs`` must exist before the ``register_model`` calls because timm reads it at registration time.
Each named model takes its preprocessing (input size, mean, std, interpolation, crop) from its backbone's
default pretrained config, so ``timm.data.resolve_model_data_config(model)`` gives the backbone's transform. The zoo's
pretrained tags (:mod:`gsp_hub.models.zoo`, e.g. ``gsp_tf_efficientnet_lite0.tin200``) add an ``hf_hub_id``, their
own preprocessing, and the constructor arguments their weights need.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable

import timm
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from gsp_hub.models.metric_net import MetricNet
from gsp_hub.models.zoo import zoo_model_args, zoo_pretrained_cfgs

__all__ = ["NAMED_MODELS", "metric_net", "data_cfg_of_backbone", "default_pool", "unknown_model_error"]

# name -> (backbone, pool). The gap_* twins are the same networks with average pooling (the baselines).
NAMED_MODELS: dict[str, tuple[str, str]] = {
    f"{prefix}_{backbone}": (backbone, pool)
    for backbone in ("resnet18", "resnet50", "tf_efficientnet_lite0", "vit_small_patch16_224", "convnext_tiny")
    for prefix, pool in (("gsp", "gsp"), ("gap", "avg"))
}
_DATA_FIELDS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")


def unknown_model_error(name: str, argument: str) -> ValueError:
    """The error for a ``name`` that timm does not know, given as ``argument`` (``--backbone``, ``--model``, ...),
    with the closest registered architectures as suggestions."""
    architecture = name.split(".")[0]  # a pretrained tag (resnet50.a1_in1k) is not part of the architecture
    close = difflib.get_close_matches(architecture.lower(), timm.list_models(), n=3)
    suggestion = f"did you mean {' or '.join(map(repr, close))}?" if close else "no registered name is close to it."
    return ValueError(f"{argument} {name!r} is not a timm architecture; {suggestion} (timm.list_models() lists "
                      "them all, `gsp-hub models` the gsp_hub ones.)")


def data_cfg_of_backbone(backbone: str) -> dict[str, Any]:
    """Preprocessing fields (input_size, mean, std, ...) and first conv of a timm backbone's default config."""
    cfg = timm.get_pretrained_cfg(backbone)
    if cfg is None:
        raise unknown_model_error(backbone, "backbone")
    fields = {name: getattr(cfg, name) for name in _DATA_FIELDS}
    fields["first_conv"] = f"backbone.{cfg.first_conv}" if cfg.first_conv else None
    return fields


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
            name: dict(num_classes=0, classifier="head", **fields)
            for name, fields in zoo_pretrained_cfgs(NAMED_MODELS).items()
        },
        "metric_net.*": dict(num_classes=0, classifier="head", license="apache-2.0"),
        **{
            f"{name}.*": dict(num_classes=0, classifier="head", license="apache-2.0", **data_cfg_of_backbone(backbone))
            for name, (backbone, _) in NAMED_MODELS.items()
        },
    }
)


def _build(variant: str, pretrained: bool, backbone: str, **kwargs: Any) -> MetricNet:
    if kwargs.get("pretrained_cfg") is None and kwargs.get("pretrained_cfg_overlay") is None:
        kwargs["pretrained_cfg_overlay"] = data_cfg_of_backbone(backbone)
    return build_model_with_cfg(MetricNet, variant, pretrained, backbone=backbone, **kwargs)


@register_model
def metric_net(pretrained: bool = False, backbone: str = "resnet50", **kwargs: Any) -> MetricNet:
    """MetricNet over any timm ``backbone`` (default pool: GSP); preprocessing follows the backbone."""
    return _build("metric_net", pretrained, backbone, **kwargs)


def _named_entrypoint(name: str, backbone: str, pool: str) -> Callable[..., MetricNet]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> MetricNet:
        kwargs.setdefault("pool", pool)
        zoo_args = zoo_model_args(name, kwargs.get("pretrained_cfg"))
        model = build_model_with_cfg(MetricNet, name, pretrained, backbone=backbone, **{**zoo_args, **kwargs})
        model._model_args = {**getattr(model, "_model_args", {}), **zoo_args}  # recorded in exports' model_args
        return model

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"MetricNet: timm {backbone} backbone, {pool} pooling."
    return entrypoint


for _name, (_backbone, _pool) in NAMED_MODELS.items():
    globals()[_name] = register_model(_named_entrypoint(_name, _backbone, _pool))
