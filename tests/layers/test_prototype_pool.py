"""PrototypePool (XML): GAP limits, simplex attributes vs a loop reference, the convex-combination identity, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gsp_hub.layers.gsp import GSPOutput
from gsp_hub.layers.pooling import create_pool, list_pools
from gsp_hub.layers.prototype import PrototypePool


def reference_attributes(tokens: torch.Tensor, prototypes: torch.Tensor, scale: float) -> torch.Tensor:
    """float64 loop over samples and locations: a_b = mean_j softmax(scale · P f_j / max(1, ‖f_j‖))."""
    tokens, prototypes = tokens.double(), prototypes.double()
    out = torch.zeros(tokens.shape[0], prototypes.shape[0], dtype=torch.float64)
    for b in range(tokens.shape[0]):
        for f in tokens[b]:
            logits = scale * prototypes @ (f / max(1.0, f.norm().item()))
            out[b] += torch.exp(logits - logits.max()) / torch.exp(logits - logits.max()).sum()
    return out / tokens.shape[1]


def test_registered_as_proto() -> None:
    assert "proto" in list_pools()
    pool = create_pool("proto", 16, num_prototypes=4, scale=5.0)
    assert isinstance(pool, PrototypePool) and pool.prototypes.shape == (4, 16) and pool.scale == 5.0


def test_attributes_match_loop_reference_and_lie_on_the_simplex() -> None:
    torch.manual_seed(0)
    pool = PrototypePool(8, num_prototypes=5)
    tokens = torch.randn(3, 7, 8) * torch.tensor([0.3, 1.0, 3.0])[:, None, None]  # norms below and above 1
    out = pool.transport(tokens)
    assert isinstance(out, GSPOutput)
    expected = reference_attributes(tokens, pool.prototypes.detach(), 10.0)
    assert torch.allclose(out.attributes.double(), expected, atol=1e-6, rtol=0)
    assert (out.attributes >= 0).all() and torch.allclose(out.attributes.sum(1), torch.ones(3), atol=1e-6)
    assert torch.equal(out.pooled, tokens.mean(1))
    assert torch.allclose(out.weights, torch.full((3, 7), 1 / 7))


@pytest.mark.parametrize("num_prototypes, scale", [(1, 10.0), (6, 0.0)])
def test_single_prototype_or_uniform_assignment_recovers_gap(num_prototypes: int, scale: float) -> None:
    torch.manual_seed(1)
    pool = PrototypePool(12, num_prototypes=num_prototypes, scale=scale)
    feature_map = torch.randn(2, 12, 3, 4)
    out = pool.transport(feature_map)
    gap = feature_map.mean(dim=(2, 3))
    assert torch.allclose(out.pooled, gap, atol=1e-6)
    assert torch.allclose(pool(feature_map), gap, atol=1e-6)
    assert torch.allclose(out.attributes, torch.full((2, num_prototypes), 1.0 / num_prototypes), atol=1e-7)


def test_gap_is_the_convex_combination_of_soft_centroids() -> None:
    """GAP(f) = Σ_k a_k c_k with c_k = Σ_j p_jk f_j / Σ_j p_jk: the pooled vector lies in the prototypes' hull."""
    torch.manual_seed(2)
    pool = PrototypePool(6, num_prototypes=4, scale=3.0).double()
    tokens = torch.randn(2, 9, 6, dtype=torch.float64)
    assignments = pool.assignments(tokens)  # (B, N, K)
    centroids = assignments.transpose(1, 2) @ tokens / assignments.sum(1)[..., None]  # (B, K, D)
    attributes = pool.transport(tokens).attributes
    assert torch.allclose(torch.einsum("bk,bkd->bd", attributes, centroids), tokens.mean(1), atol=1e-12, rtol=0)


def test_map_and_token_layouts_agree_and_autocast_keeps_fp32_attributes() -> None:
    torch.manual_seed(3)
    pool = PrototypePool(10, num_prototypes=3)
    feature_map = torch.randn(2, 10, 2, 3)
    tokens = feature_map.flatten(2).transpose(1, 2)
    assert torch.allclose(pool.transport(feature_map).attributes, pool.transport(tokens).attributes)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pool.transport(tokens.bfloat16())
    assert out.attributes.dtype == torch.float32 and out.pooled.dtype == torch.bfloat16
    assert torch.allclose(out.attributes, pool.transport(tokens).attributes, atol=2e-2)


class _Attributes(nn.Module):
    """The attributes of a pool as a module output, so that functional_call can vary its prototypes."""

    def __init__(self, pool: PrototypePool) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.pool.transport(tokens).attributes


def test_gradcheck_wrt_tokens_and_prototypes() -> None:
    torch.manual_seed(4)
    attributes = _Attributes(PrototypePool(4, num_prototypes=3, scale=2.0).double())
    tokens = (torch.randn(2, 5, 4, dtype=torch.float64) * 1.5).requires_grad_()  # some norms above 1
    prototypes = attributes.pool.prototypes.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, p: torch.func.functional_call(attributes, {"pool.prototypes": p}, (x,)), (tokens, prototypes)
    )


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="num_prototypes"):
        PrototypePool(8, num_prototypes=0)
    with pytest.raises(ValueError, match="scale"):
        PrototypePool(8, scale=-1.0)
    with pytest.raises(ValueError, match="dim=8"):
        PrototypePool(8).transport(torch.randn(2, 5, 7))
