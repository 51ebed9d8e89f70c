"""gsp_hub: transport- and prototype-based pooling, metric learning and distillation as timm models.

``import gsp_hub`` registers every gsp_hub architecture with timm, so that ``timm.create_model('gsp_resnet50')``
and ``timm.create_model('hf-hub:org/name')`` work for them.
"""

from gsp_hub import models
from gsp_hub.hub import from_pretrained, load_model
from gsp_hub.layers import GSP, GSPOutput, create_pool, list_pools, partial_transport
from gsp_hub.models import MetricNet, list_gsp_models

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
    "models",
]
