"""Every layer of gsp_hub: pure nn.Modules and functions, no training logic, no I/O.

Pooling (GSP, PrototypePool, GeM / avg / max and the pool registry behind create_pool), the transport solver
(:mod:`~gsp_hub.layers.transport`), the distillation layers (:mod:`~gsp_hub.layers.letkd`: LeTKDLayer;
:mod:`~gsp_hub.layers.tm_block`: TMBlock) and the pure tensor ops (:mod:`~gsp_hub.layers.ops`: unit_ball, greedy
k-center).
"""

from gsp_hub.layers.gsp import GSP, GSPOutput, prototype_costs
from gsp_hub.layers.letkd import CosineConv1x1, LeTKDLayer
from gsp_hub.layers.ops import greedy_k_center, unit_ball
from gsp_hub.layers.prototype import PrototypePool
from gsp_hub.layers.pooling import AttentionPool, AvgPool, GeM, MaxPool, create_pool, list_pools, register_pool, to_tokens
from gsp_hub.layers.tm_block import TMBlock
from gsp_hub.layers.transport import TransportRoot, partial_transport, partial_transport_factors

__all__ = [
    "GSP",
    "AttentionPool",
    "AvgPool",
    "CosineConv1x1",
    "GSPOutput",
    "GeM",
    "LeTKDLayer",
    "MaxPool",
    "PrototypePool",
    "TMBlock",
    "TransportRoot",
    "create_pool",
    "greedy_k_center",
    "list_pools",
    "partial_transport",
    "partial_transport_factors",
    "prototype_costs",
    "register_pool",
    "to_tokens",
    "unit_ball",
]
