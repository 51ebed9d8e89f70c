"""Batch tensors over all processes, with gradients, for losses that compare samples across the whole batch.

Under data parallelism every process holds a slice of the global batch. Pair losses, the cross-batch memory and
ZSR must see the global batch; :func:`gather_with_grad` concatenates the slices in rank order with an
autograd-aware all-gather (``torch.distributed.nn.functional.all_gather``, whose backward sums the gradients of all
processes into each slice). Each process then computes the same global loss; since DDP averages the parameter
gradients over the W processes and each slice receives W times its share, the update equals the single-process
update on the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_functional
from torch import Tensor

__all__ = ["gather_with_grad", "is_distributed"]


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(tensor: Tensor) -> Tensor:
    """(b, ...) on each process -> (W·b, ...) in rank order; gradients flow back to every process's slice.

    Every process must pass the same shape. Integer tensors (labels) are gathered without autograd. A no-op
    outside a multi-process group.
    """
    if not is_distributed():
        return tensor
    if not (tensor.is_floating_point() and tensor.requires_grad):
        slices = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(slices, tensor.contiguous())
        return torch.cat(slices)
    return torch.cat(dist_functional.all_gather(tensor))
