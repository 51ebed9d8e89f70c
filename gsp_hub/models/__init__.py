"""timm-facing architectures. Importing this package registers every gsp_hub model with timm."""

from gsp_hub.models.cifar_resnet import CifarResNet, load_cifar10_weights
from gsp_hub.models.letkd import letkd_cifar_resnet20
from gsp_hub.models.metric_net import MetricNet
from gsp_hub.models.registry import NAMED_MODELS, data_cfg_of_backbone

__all__ = [
    "CifarResNet",
    "MetricNet",
    "NAMED_MODELS",
    "data_cfg_of_backbone",
    "letkd_cifar_resnet20",
    "list_gsp_models",
    "load_cifar10_weights",
]


def list_gsp_models() -> list[str]:
    """Names of every timm architecture that gsp_hub registers."""
    import timm

    return [name for name in timm.list_models() if timm.models.model_entrypoint(name).__module__.startswith("gsp_hub.")]
