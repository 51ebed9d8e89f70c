"""timm-facing architectures and model wrappers. Importing this package registers every gsp_hub model with timm.

MetricNet, the CIFAR ResNets, the letKD students and their registry / zoo tags, the tapped student / teacher of
distillation (:mod:`~gsp_hub.models.taps`: TappedModel, TeacherTaps, insert_letkd_layers, tm_student), and
:func:`~gsp_hub.models.pool_swap.swap_pooling` (a gsp_hub pooling in any timm model).
"""

from gsp_hub.models.cifar_resnet import CifarResNet, load_cifar10_weights
from gsp_hub.models.letkd import letkd_cifar_resnet20
from gsp_hub.models.metric_net import MetricNet
from gsp_hub.models.pool_swap import SwappedPool, swap_pooling
from gsp_hub.models.registry import NAMED_MODELS, data_cfg_of_backbone
from gsp_hub.models.taps import (
    INTERMEDIATE,
    PENULTIMATE,
    KDTap,
    TapInfo,
    TappedModel,
    TeacherOutput,
    TeacherTaps,
    flatten_locations,
    insert_letkd_layers,
    match_grid,
    resolve_intermediate_module,
    tm_student,
)

__all__ = [
    "INTERMEDIATE",
    "PENULTIMATE",
    "SwappedPool",
    "CifarResNet",
    "KDTap",
    "MetricNet",
    "NAMED_MODELS",
    "TapInfo",
    "TappedModel",
    "TeacherOutput",
    "TeacherTaps",
    "data_cfg_of_backbone",
    "flatten_locations",
    "insert_letkd_layers",
    "letkd_cifar_resnet20",
    "list_gsp_models",
    "load_cifar10_weights",
    "match_grid",
    "resolve_intermediate_module",
    "swap_pooling",
    "tm_student",
]


def list_gsp_models() -> list[str]:
    """Names of every timm architecture that gsp_hub registers."""
    import timm

    return [name for name in timm.list_models() if timm.models.model_entrypoint(name).__module__.startswith("gsp_hub.")]
