"""Prototype pooling (XML): global average pooling read as a convex combination of prototypes.

Every location j is softly assigned to K learnable prototypes, p_j = softmax(scale · P f̃_j) with f̃_j the unit-ball
projection of f_j and P (K, dim) the unnormalised prototype directions (‖P_k‖ acts as a per-prototype temperature).
The image's attributes a = (1/N) Σ_j p_j lie on the simplex, and with the soft centroids
c_k = Σ_j p_jk f_j / Σ_j p_jk the pooled vector is exactly

    GAP(f) = (1/N) Σ_j f_j = Σ_k a_k c_k,

a convex combination of the image's prototypes with barycentric code a. The layer returns GAP(f) and a; the XML
loss (``gsp_hub.losses.XMLLoss``) fits the cross-batch predictor on a. See shared/spec/xml.md §2-§3 (the
assignment follows the authors' framework; the paper itself was not available).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gsp_hub.checks import check_int
from gsp_hub.layers.gsp import GSPOutput
from gsp_hub.layers.ops import unit_ball
from gsp_hub.layers.pooling import register_pool, to_tokens

__all__ = ["PrototypePool"]


@register_pool("proto")
class PrototypePool(nn.Module):
    """Average pooling with prototype attributes: (B, dim, H, W) or (B, N, dim) -> (B, dim).

    Args:
        dim: feature width.
        num_prototypes: K (32).
        scale: softmax scale of the assignment (10); 0 gives uniform assignments 1/K.

    ``prototypes`` (K, dim) is a learnable parameter (Glorot-uniform init, as the framework's Dense kernel); it is
    trained only through the attributes, i.e. by a loss on :meth:`transport` outputs. Assignments and attributes are
    computed in float32 (float64 inputs stay float64) with autocast disabled.
    """

    def __init__(self, dim: int, num_prototypes: int = 32, scale: float = 10.0) -> None:
        super().__init__()
        check_int("dim", dim, minimum=1)
        check_int("num_prototypes", num_prototypes, minimum=1)
        if not scale >= 0:
            raise ValueError(f"scale must be >= 0 (softmax scale of the assignment), got {scale!r}.")
        self.dim = dim
        self.num_prototypes = num_prototypes
        self.scale = float(scale)
        self.prototypes = nn.Parameter(nn.init.xavier_uniform_(torch.empty(num_prototypes, dim)))

    def assignments(self, x: Tensor) -> Tensor:
        """Soft assignments of x (B, dim, H, W) or (B, N, dim) to the prototypes: (B, N, K), rows sum to 1."""
        tokens = to_tokens(x, self.dim)
        compute_dtype = torch.float64 if tokens.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            projected = unit_ball(tokens.to(compute_dtype))
            logits = self.scale * projected @ self.prototypes.to(compute_dtype).T
            return logits.softmax(dim=-1)

    def transport(self, x: Tensor) -> GSPOutput:
        """GAP (B, dim) in the input dtype, attributes a (B, K) and uniform location weights 1/N (B, N)."""
        tokens = to_tokens(x, self.dim)
        attributes = self.assignments(tokens).mean(dim=1)
        weights = attributes.new_full(tokens.shape[:2], 1.0 / tokens.shape[1])
        return GSPOutput(pooled=tokens.mean(dim=1), attributes=attributes, weights=weights)

    def forward(self, x: Tensor) -> Tensor:
        """(B, dim, H, W) or (B, N, dim) -> (B, dim) average-pooled features (no assignment computed)."""
        return to_tokens(x, self.dim).mean(dim=1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_prototypes={self.num_prototypes}, scale={self.scale}"
