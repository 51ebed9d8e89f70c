"""Pooling layers and the transport solver: pure nn.Modules and functions, no training logic, no I/O."""

from gsp_hub.layers.gsp import GSP, GSPOutput, prototype_costs, unit_ball
from gsp_hub.layers.kcenter import greedy_k_center
from gsp_hub.layers.prototype import PrototypePool
from gsp_hub.layers.pooling import AvgPool, GeM, MaxPool, create_pool, list_pools, register_pool, to_tokens
from gsp_hub.layers.transport import TransportRoot, partial_transport, partial_transport_factors

__all__ = [
    "GSP",
    "AvgPool",
    "GSPOutput",
    "GeM",
    "MaxPool",
    "PrototypePool",
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
