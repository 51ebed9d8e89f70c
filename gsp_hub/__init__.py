"""gsp_hub: transport- and prototype-based pooling, metric learning and distillation as timm models.

``import gsp_hub`` registers every gsp_hub architecture with timm, so that ``timm.create_model('gsp_resnet50')``
and ``timm.create_model('hf-hub:org/name')`` work for them (:mod:`gsp_hub.timm_registration`: at once if timm is
imported, else right after it is). The names below and the sub-packages (``gsp_hub.hub``, ...) import their module
on first use, so ``import gsp_hub`` itself loads neither torch nor timm.
"""

from typing import TYPE_CHECKING

from gsp_hub.lazy_exports import lazy_exports
from gsp_hub.timm_registration import register_with_timm

if TYPE_CHECKING:
    from gsp_hub import models
    from gsp_hub.hub import from_pretrained, load_model
    from gsp_hub.layers import GSP, GSPOutput, create_pool, list_pools, partial_transport
    from gsp_hub.models import MetricNet, list_gsp_models, swap_pooling

__version__ = "0.1.0"

__all__ = [
    "GSP",
    "GSPOutput",
    "MetricNet",
    "create_pool",
    "from_pretrained",
    "list_gsp_models",
    "list_pools",
    "load_model",
    "partial_transport",
    "swap_pooling",
    "models",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "gsp_hub.hub": ("from_pretrained", "load_model"),
        "gsp_hub.layers": ("GSP", "GSPOutput", "create_pool", "list_pools", "partial_transport"),
        "gsp_hub.models": ("MetricNet", "list_gsp_models", "swap_pooling"),
    },
    submodules=("data", "export", "hub", "index", "kd", "layers", "losses", "metrics", "models", "train", "viz"),
)

register_with_timm()
