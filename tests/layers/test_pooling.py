"""The pool registry and the simple pools against hand-written references."""

from __future__ import annotations

import pytest
import torch

from gsp_hub.layers import AvgPool, GeM, MaxPool, create_pool, list_pools, register_pool, to_tokens

DIM = 6


def feature_map(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, DIM, 3, 4, generator=torch.Generator().manual_seed(seed))


def test_builtin_pools_are_registered() -> None:
    assert {"avg", "max", "gem", "gsp"} <= set(list_pools())
    assert list_pools() == sorted(list_pools())


@pytest.mark.parametrize("name", list_pools())
def test_every_registered_pool_runs_forward_and_backward_from_defaults(name: str) -> None:
    pool = create_pool(name, DIM)
    x = feature_map().requires_grad_()
    pooled = pool(x)
    assert pooled.shape == (2, DIM)
    torch.testing.assert_close(pool(to_tokens(x, DIM)), pooled, rtol=0, atol=1e-6)
    loss = pooled.square().sum()
    if hasattr(pool, "transport"):  # prototype pools: the prototypes are trained through the attributes
        attributes = pool.transport(x).attributes
        loss = loss + (attributes * torch.arange(attributes.shape[1], dtype=attributes.dtype)).sum()
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for parameter_name, parameter in pool.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name


def test_avg_and_max_match_torch_reductions() -> None:
    x = feature_map()
    torch.testing.assert_close(AvgPool(DIM)(x), x.mean(dim=(2, 3)))
    torch.testing.assert_close(MaxPool(DIM)(x), x.amax(dim=(2, 3)))


def test_gem_matches_a_python_loop_and_learns_p() -> None:
    x = feature_map().abs().double()
    pool = GeM(DIM, p=2.5, eps=1e-6).double()
    expected = torch.tensor(
        [
            [(sum(max(v, 1e-6) ** 2.5 for v in x[b, c].flatten().tolist()) / 12) ** (1 / 2.5) for c in range(DIM)]
            for b in range(2)
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(pool(x), expected, rtol=1e-12, atol=0)
    assert isinstance(pool.p, torch.nn.Parameter)
    torch.testing.assert_close(GeM(DIM, p=1.0)(x.float()), x.float().clamp(min=1e-6).mean(dim=(2, 3)))


def test_gem_clamps_negative_features() -> None:
    x = -feature_map().abs()
    torch.testing.assert_close(GeM(DIM, eps=1e-3)(x), torch.full((2, DIM), 1e-3))


def test_create_pool_passes_keyword_arguments() -> None:
    pool = create_pool("gsp", DIM, num_prototypes=4, transport_ratio=0.5, gamma=2.0, memory_size=8)
    assert (pool.num_prototypes, pool.transport_ratio, pool.gamma) == (4, 0.5, 2.0)
    assert create_pool("gem", DIM, p=4.0).p.item() == 4.0


def test_unknown_pool_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match="unknown pool 'mean'; available pools: attn, avg, .*gem, gsp, max"):
        create_pool("mean", DIM)


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="a pool named 'avg' is already registered"):
        register_pool("avg")(AvgPool)


@pytest.mark.parametrize(
    "shape", [(2, DIM + 1, 3, 4), (2, 12, DIM + 1), (2, DIM), (2, 3, 4, DIM)]
)
def test_wrong_feature_shape_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=rf"expected local features of shape \(B, {DIM}, H, W\) or \(B, N, {DIM}\)"):
        AvgPool(DIM)(torch.randn(*shape))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: AvgPool(0), "dim must be an int >= 1 .* got 0"),
        (lambda: MaxPool(2.5), "dim must be an int >= 1 .* got 2.5"),
        (lambda: GeM(DIM, p=0.0), "p must be > 0 .* got 0.0"),
        (lambda: GeM(DIM, eps=-1.0), "eps must be > 0 .* got -1.0"),
    ],
)
def test_bad_constructor_arguments_raise(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_attention_pool_starts_as_average_pooling_and_its_weights_sum_to_one():
    torch.manual_seed(0)
    pool = create_pool("attn", 8)
    tokens = torch.randn(3, 10, 8, dtype=torch.float64)
    pool = pool.double()
    torch.testing.assert_close(pool(tokens), tokens.mean(dim=1))
    with torch.no_grad():
        pool.score.weight.normal_()
    weights = pool.location_weights(tokens)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3, dtype=torch.float64))
    expected = torch.stack([sum(weights[b, j] * tokens[b, j] for j in range(10)) for b in range(3)])  # brute force
    torch.testing.assert_close(pool(tokens), expected)
    assert torch.autograd.gradcheck(pool, (tokens.clone().requires_grad_(),))
